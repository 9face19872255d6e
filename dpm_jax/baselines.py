"""Simple likelihood baselines for 8-bit images: the floor any image model must beat.

* :func:`fit_pixel_categorical` / :func:`pixel_categorical_nll_bits_per_dim`: every pixel
  (and colour) an independent 256-way categorical fitted to the training images with
  add-``smoothing`` (Laplace) counts. Its negative log-likelihood of the test images is
  **exact** (no bound, no Monte Carlo), in bits per dimension of the 8-bit data, the unit of
  DDPM's and VDM's tables and of ``likelihood.bits_per_dim_8bit``.
* The isotropic Gaussian L_null of the paper (``likelihood.gaussian_null_log_likelihood``)
  on the dequantised, scaled data, turned into the same unit by
  ``likelihood.bits_per_dim_8bit``: an upper bound on its 8-bit NLL, as for the model's K.
"""

from __future__ import annotations

import numpy as np

from dpm_jax.data.images import NUM_PIXEL_VALUES

#: Examples counted per chunk when fitting (bounds the index array to ~100 MB for MNIST).
_CHUNK = 16_384


def _as_pixels(pixels, name: str) -> np.ndarray:
    """uint8 (N, ...) with N >= 1, flattened to (N, D)."""
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        raise TypeError(
            f"{name} must be uint8 8-bit pixels (N, H, W, C); got dtype {arr.dtype}. Pass the "
            "raw images of the data source, not scaled or dequantised values."
        )
    if arr.ndim < 2 or arr.shape[0] == 0 or arr[0].size == 0:
        raise ValueError(
            f"{name} must have shape (N, ...) with N >= 1 and values; got {arr.shape}."
        )
    return arr.reshape(arr.shape[0], -1)


def fit_pixel_categorical(train_pixels, smoothing: float = 1.0) -> np.ndarray:
    """log2 P(pixel d = v) for every dimension d and value v: shape (D, 256), float64.

    P(d = v) = (count_d(v) + smoothing) / (N + 256 smoothing) over the N training images.
    """
    if not (np.isfinite(smoothing) and smoothing > 0):
        raise ValueError(f"smoothing must be finite and > 0 (add-one: 1); got {smoothing}.")
    x = _as_pixels(train_pixels, "train_pixels")
    n, dims = x.shape
    offsets = np.arange(dims, dtype=np.int64) * NUM_PIXEL_VALUES
    counts = np.zeros(dims * NUM_PIXEL_VALUES, np.int64)
    for start in range(0, n, _CHUNK):
        idx = offsets[None, :] + x[start : start + _CHUNK].astype(np.int64)
        counts += np.bincount(idx.ravel(), minlength=counts.size)
    counts = counts.reshape(dims, NUM_PIXEL_VALUES).astype(np.float64) + smoothing
    return np.log2(counts) - np.log2(n + NUM_PIXEL_VALUES * smoothing)


def pixel_categorical_nll_bits_per_dim(log2_probs: np.ndarray, test_pixels) -> np.ndarray:
    """Exact -log2 P(x) / D of each test image under :func:`fit_pixel_categorical`'s model:
    shape (N,), bits per dimension."""
    x = _as_pixels(test_pixels, "test_pixels")
    if log2_probs.shape != (x.shape[1], NUM_PIXEL_VALUES):
        raise ValueError(
            f"log2_probs has shape {log2_probs.shape} but the test images have {x.shape[1]} "
            f"dimensions; fit the model on images of the same shape."
        )
    picked = np.take_along_axis(log2_probs[None, :, :], x[:, :, None].astype(np.int64), axis=2)
    return -picked[..., 0].mean(axis=1)
