"""Pixels to model units: dequantisation and one global scale and shift.

``pixel`` is an integer in {0, ..., 255}. Dequantised data x = (pixel + u) / 256 with
u ~ U[0, 1) lies in [0, 1); y = 256 x lies in [0, 256). The model sees
z = x * scale + shift (one global scalar scale and shift, so z has mean 0 and variance 1
over the training set). Bounds are in bits; ``likelihood.bits_per_dim_8bit`` converts a
bound on log2 p_z into the usual negative log-likelihood in bits per dimension of the 8-bit
pixels.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax.data.batching import _check_positive_int, gather_images
from dpm_jax.data.images import NUM_PIXEL_VALUES, check_pixels


def dequantize(pixels, key: jax.Array) -> jax.Array:
    """Uniform dequantisation: x = (pixel + u) / 256, u ~ U[0, 1) i.i.d.; float32 in [0, 1).

    Args:
      pixels: (N, H, W, C) integers in {0, ..., 255} (uint8, or float with integral values).
      key: JAX PRNG key for u.
    """
    check_pixels(pixels)
    p = jnp.asarray(pixels, jnp.float32)
    u = jax.random.uniform(key, p.shape, jnp.float32)
    # In float32, 255 + u rounds up to 256 for u within 2^-17 of 1; keep x < 1.
    x = (p + u) / NUM_PIXEL_VALUES
    return jnp.minimum(x, jnp.nextafter(jnp.float32(1.0), jnp.float32(0.0)))


@dataclasses.dataclass(frozen=True)
class ImageScaling:
    """Global affine map from dequantised x in [0, 1) to model units: z = x * scale + shift.

    ``scale`` is 1 / std(x) and ``shift`` is -mean(x) / std(x) over all training pixels, so
    z has mean 0 and variance 1. Plain floats: ``dataclasses.asdict`` gives JSON.
    """

    scale: float
    shift: float

    def __post_init__(self):
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "shift", float(self.shift))
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {self.scale}.")
        if not math.isfinite(self.shift):
            raise ValueError(f"shift must be finite, got {self.shift}.")

    @classmethod
    def from_moments(cls, mean: float, var: float) -> ImageScaling:
        """Scaling that maps data of this mean and variance (of x) to mean 0, variance 1."""
        if not (math.isfinite(var) and var > 0):
            raise ValueError(f"variance must be finite and > 0, got {var}.")
        std = math.sqrt(var)
        return cls(scale=1.0 / std, shift=-mean / std)

    def apply(self, x):
        """z = x * scale + shift (x dequantised, in [0, 1))."""
        return x * self.scale + self.shift

    def invert(self, z):
        """x = (z - shift) / scale, e.g. to display samples."""
        return (z - self.shift) / self.scale


def pixel_moments(source, chunk_size: int = 1024) -> tuple[float, float]:
    """Exact (mean, variance) of all uint8 pixel values of ``source`` (population variance).

    Streams ``chunk_size`` examples at a time and keeps exact integer sums, so the result is
    exact up to the final division and memory stays at one chunk.
    """
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    n = _check_positive_int(len(source), "len(source)")
    total, total_sq, count = 0, 0, 0
    for start in range(0, n, chunk_size):
        chunk = gather_images(source, np.arange(start, min(start + chunk_size, n)))
        counts = np.bincount(chunk.reshape(-1), minlength=NUM_PIXEL_VALUES)  # int64
        values = np.arange(NUM_PIXEL_VALUES, dtype=np.int64)
        total += int(counts @ values)  # < 2^63 for any chunk below ~10^14 pixels
        total_sq += int(counts @ (values * values))
        count += chunk.size
    mean = total / count
    var = (count * total_sq - total * total) / (count * count)
    return mean, var


def fit_scaling(source, chunk_size: int = 1024) -> ImageScaling:
    """One global scale and shift giving the dequantised training pixels mean 0, variance 1.

    With x = (p + u) / 256, u ~ U[0, 1) independent of the pixel p, the moments over all
    training pixels and the noise are exact:
      mean(x) = (mean(p) + 1/2) / 256,  var(x) = (var(p) + 1/12) / 256^2.
    """
    mean_p, var_p = pixel_moments(source, chunk_size)
    mean_x = (mean_p + 0.5) / NUM_PIXEL_VALUES
    var_x = (var_p + 1.0 / 12.0) / NUM_PIXEL_VALUES**2
    return ImageScaling.from_moments(mean_x, var_x)


def preprocess(pixels, key: jax.Array, scaling: ImageScaling) -> jax.Array:
    """Model inputs z = dequantize(pixels, key) * scale + shift, float32 (N, H, W, C)."""
    return scaling.apply(dequantize(pixels, key))
