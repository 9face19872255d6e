"""Images for the MNIST and CIFAR-10 experiments: loading, batching, preprocessing, units.

Loading. ``load_image_source`` reads a prepared TFDS dataset through ``tfds.data_source``
(array_record files, random access, NumPy only: TensorFlow is not needed to read). Examples
are dicts whose ``"image"`` is uint8 NHWC without the batch axis: (28, 28, 1) for MNIST,
(32, 32, 3) for CIFAR-10. Nothing is downloaded: an unprepared dataset raises
``DatasetNotPrepared`` with the command that prepares it elsewhere.

Batching. Any *source* with ``__len__`` and ``__getitem__`` (optionally ``__getitems__``)
returning dicts with an ``"image"`` key works, so tests use a plain NumPy fake. Training
batches are a pure function of (seed, step): epoch ``e = step // steps_per_epoch`` uses the
permutation ``np.random.default_rng([seed, e]).permutation(n)`` and the ragged tail of each
epoch is dropped, so a run resumed at step s sees the batch an uninterrupted run would.
Evaluation reads sources through ``gather_images`` (``dpm_jax.evaluation`` batches them).

Units. ``pixel`` is an integer in {0, ..., 255}. Dequantised data x = (pixel + u) / 256 with
u ~ U[0, 1) lies in [0, 1); y = 256 x lies in [0, 256). The model sees
z = x * scale + shift (one global scalar scale and shift, so z has mean 0 and variance 1
over the training set). Bounds are in bits; ``bits_per_dim_8bit`` converts a bound on
log2 p_z into the usual negative log-likelihood in bits per dimension of the 8-bit pixels.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax.validation import is_concrete

#: Supported datasets and the (height, width, channels) of one image.
IMAGE_SHAPES: Mapping[str, tuple[int, int, int]] = {
    "mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
}

#: Number of values an 8-bit pixel takes.
NUM_PIXEL_VALUES = 256


class DatasetNotPrepared(RuntimeError):
    """The TFDS dataset is not on disk in a random-access (array_record) format."""


# --------------------------------------------------------------------------------------------
# Loading


def _not_prepared_message(name: str, what: str, root: str, variant: str, err: Exception) -> str:
    sub = os.path.relpath(variant, root)
    return (
        f"TFDS dataset {name!r} {what} in data_dir {root!r} (looked for {variant!r}; TFDS "
        f"said: {err}).\n"
        f"Prepare it in the array_record format on a machine with network access and "
        f"TensorFlow (building TFDS image datasets needs TensorFlow; reading them here does "
        f"not):\n"
        f"    pip install tensorflow tensorflow-datasets\n"
        f"    tfds build {name} --file_format=array_record --data_dir=DIR\n"
        f"or in Python:\n"
        f"    tfds.data_source('{name}', data_dir='DIR',\n"
        f"                     builder_kwargs={{'file_format': 'array_record'}})\n"
        f"(with an explicit data_dir and no file_format, TFDS writes TFRecord files, which "
        f"have no random access). Then copy DIR (it holds {sub}/) to this machine and pass "
        f"its path as the experiment's data_dir."
    )


def load_image_source(
    name: str, split: str, data_dir: str | os.PathLike | None = None
) -> Sequence[dict[str, Any]]:
    """Random-access source of one split of a prepared TFDS image dataset.

    Args:
      name: ``"mnist"`` or ``"cifar10"`` (the keys of ``IMAGE_SHAPES``).
      split: a TFDS split, e.g. ``"train"``, ``"test"`` or ``"train[:1000]"``.
      data_dir: the TFDS data directory; ``None`` means TFDS's default
        (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).

    Returns:
      A sequence (``len``, ``[i]``, ``__getitems__``) of dicts; ``ex["image"]`` is uint8 of
      shape ``IMAGE_SHAPES[name]``. Examples are read and decoded on access, never all at
      once.

    Raises:
      ValueError: unknown ``name`` (or, from TFDS, an unknown split).
      DatasetNotPrepared: the dataset is not prepared under ``data_dir`` in the array_record
        format. Never downloads.
    """
    if name not in IMAGE_SHAPES:
        raise ValueError(f"Unknown image dataset {name!r}; expected one of {sorted(IMAGE_SHAPES)}.")
    import tensorflow_datasets as tfds  # deferred: importing TFDS takes about a second

    data_dir = None if data_dir is None else os.fspath(data_dir)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (KeyError, NotImplementedError, ValueError) as err:
        # What TFDS 4.9.10 raises here (download=False) when the files are missing or are not
        # array_record: an explicit data_dir without the dataset gives NotImplementedError
        # ("Random access data source for file format FileFormat.TFRECORD is not supported",
        # TFRECORD being the builder's default format); data_dir=None (TFDS then asks for
        # array_record) gives KeyError ("`splits` is empty ... not been generated yet"); a
        # dataset prepared only as TFRecord gives NotImplementedError, or with data_dir=None
        # ValueError ("File format is already set to FileFormat.TFRECORD"). The same types
        # also mean other things (an unknown split is a ValueError), so look at the disk
        # and re-raise anything that is not about preparation.
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            what = "is not prepared"
        elif not builder.info.available_file_formats() & set(
            tfds.core.FileFormat.with_random_access()
        ):
            formats = sorted(f.value for f in builder.info.available_file_formats())
            what = f"is prepared only in formats without random access ({', '.join(formats)})"
        else:
            raise
        root = data_dir if data_dir is not None else os.fspath(builder.data_dir_root)
        message = _not_prepared_message(name, what, root, os.fspath(builder.data_dir), err)
        raise DatasetNotPrepared(message) from err


# --------------------------------------------------------------------------------------------
# Batching


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full training batches per epoch, ``num_examples // batch_size`` (the tail is dropped)."""
    num_examples = _check_positive_int(num_examples, "num_examples")
    batch_size = _check_positive_int(batch_size, "batch_size")
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size {batch_size} exceeds the {num_examples} training examples; "
            "use a smaller batch."
        )
    return num_examples // batch_size


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the examples in ``epoch``: ``default_rng([seed, epoch]).permutation(n)``."""
    num_examples = _check_positive_int(num_examples, "num_examples")
    seed = _check_seed(seed)
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}.")
    return np.random.default_rng([seed, int(epoch)]).permutation(num_examples)


def train_batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices (batch_size,) of the examples in training step ``step`` (0-based)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}.")
    per_epoch = steps_per_epoch(num_examples, batch_size)
    epoch, within = divmod(int(step), per_epoch)
    perm = epoch_permutation(num_examples, seed, epoch)
    return perm[within * batch_size : (within + 1) * batch_size]


def gather_images(source, indices) -> np.ndarray:
    """uint8 images (len(indices), H, W, C) of ``source`` at ``indices``, in that order.

    Uses ``source.__getitems__`` (one batched read) when it exists, else ``source[i]``.
    """
    keys = [int(i) for i in np.asarray(indices).reshape(-1)]
    getitems = getattr(source, "__getitems__", None)
    examples = getitems(keys) if getitems is not None else [source[i] for i in keys]
    if len(examples) != len(keys):
        raise ValueError(f"source returned {len(examples)} examples for {len(keys)} indices.")
    arrays = [np.asarray(ex["image"]) for ex in examples]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images in one batch differ in shape: {sorted(shapes)}.")
    batch = np.stack(arrays) if arrays else np.zeros((0, 0, 0, 0), np.uint8)
    if batch.ndim != 4 or batch.dtype != np.uint8:
        raise ValueError(
            f"source images must be uint8 of shape (H, W, C); got dtype {batch.dtype} and "
            f"shape {batch.shape[1:]} per example."
        )
    return batch


def train_batch(source, batch_size: int, seed: int, step: int) -> np.ndarray:
    """uint8 training batch (batch_size, H, W, C) for ``step``; a pure function of its inputs."""
    return gather_images(source, train_batch_indices(len(source), batch_size, seed, step))


def train_batches(
    source, batch_size: int, seed: int, start_step: int = 0, num_steps: int | None = None
) -> Iterator[np.ndarray]:
    """Yields ``train_batch(source, batch_size, seed, step)`` for step = start_step, ...

    Endless when ``num_steps`` is None. Only one batch of images is in memory at a time; the
    epoch permutation (int64, n entries) is computed once per epoch.
    """
    num_examples = len(source)
    per_epoch = steps_per_epoch(num_examples, batch_size)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}.")
    step, end = int(start_step), None if num_steps is None else int(start_step) + num_steps
    epoch, perm = None, None
    while end is None or step < end:
        e, within = divmod(step, per_epoch)
        if e != epoch:
            epoch, perm = e, epoch_permutation(num_examples, seed, e)
        yield gather_images(source, perm[within * batch_size : (within + 1) * batch_size])
        step += 1


# --------------------------------------------------------------------------------------------
# Preprocessing


def check_pixels(pixels, image_shape: tuple[int, int, int] | None = None) -> None:
    """Checks a pixel batch (N, H, W, C): rank, shape and, outside jit, the values.

    uint8 needs no value check. Other integer arrays must lie in [0, 255]; float arrays
    must be finite, integral and in [0, 255] (raw pixel values, not scaled data).
    """
    shape = getattr(pixels, "shape", None)
    if shape is None:
        raise TypeError(f"pixels must be an array (N, H, W, C), got {type(pixels).__name__}.")
    if len(shape) != 4:
        raise ValueError(
            f"pixels must have rank 4, (N, H, W, C) with the batch first; got shape "
            f"{tuple(shape)}. Add a batch axis (x[None]) or a channel axis (x[..., None])."
        )
    if image_shape is not None and tuple(shape[1:]) != tuple(image_shape):
        raise ValueError(f"pixels must have shape (N, {image_shape}); got {tuple(shape)}.")
    dtype = np.dtype(pixels.dtype)
    if dtype == np.uint8 or not is_concrete(pixels):
        return
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise TypeError(f"pixels must be uint8 (or integer/float), got dtype {dtype}.")
    arr = np.asarray(pixels)
    if arr.size == 0:
        return
    if np.issubdtype(dtype, np.floating):
        finite = np.isfinite(arr)
        if not np.all(finite):
            bad = int(arr.size - np.count_nonzero(finite))
            raise ValueError(
                f"pixels hold {bad} non-finite value(s) (NaN or inf); expected 8-bit values "
                "in {0, ..., 255}. Pass the uint8 images from the data source."
            )
        if not np.all(arr == np.floor(arr)):
            raise ValueError(
                "pixels must be whole numbers in {0, ..., 255}; got fractional values. "
                "Pass raw 8-bit pixels, not dequantised or scaled data."
            )
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > NUM_PIXEL_VALUES - 1:
        raise ValueError(
            f"pixels must lie in [0, 255] (8-bit); got range [{lo}, {hi}]. Pass raw 8-bit "
            "pixels, not scaled data."
        )


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


def bits_per_dim_8bit(k_bits_per_example, num_dims: int, scaling: ImageScaling):
    """Negative log-likelihood upper bound of the 8-bit pixels, bits per dimension.

    Args:
      k_bits_per_example: K, a lower bound on E_u log2 p_z(z) for one example (bits, higher is
        better), on the scaled dequantised data z = x * scale + shift (float or array).
      num_dims: D = H * W * C.
      scaling: the ``ImageScaling`` that produced z.

    Returns:
      -K / D - log2(scale / 256), bits per dimension (same shape as K; float for a scalar).

    Derivation. Let y = 256 x = p + u in [0, 256)^D, so z = y * (scale / 256) + shift and
    log2 p_y(y) = log2 p_z(z) + D log2(scale / 256) (change of variables, Jacobian
    (scale / 256)^D). The discrete probability of the pixels p is the mass of their unit
    cube, P(p) = integral_{[0,1)^D} p_y(p + u) du >= 2^(E_u log2 p_y(p + u)) (Jensen), so
      -log2 P(p) / D <= -(E_u log2 p_z + D log2(scale / 256)) / D
                     <= -K / D - log2(scale / 256).
    A model uniform on [0, 256)^D gives exactly 8 bits/dim.
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be >= 1, got {num_dims}.")
    k = np.asarray(k_bits_per_example, dtype=np.float64)
    out = -k / num_dims - math.log2(scaling.scale / NUM_PIXEL_VALUES)
    return float(out) if out.ndim == 0 else out


def check_image_size(height: int, width: int, num_scales: int) -> None:
    """Raises ValueError unless height and width are divisible by 2^(num_scales - 1).

    The multi-scale convolutional network halves the resolution num_scales - 1 times.
    """
    if num_scales < 1:
        raise ValueError(f"num_scales must be >= 1, got {num_scales}.")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}.")
    factor = 2 ** (num_scales - 1)
    if height % factor or width % factor:
        twos = min((height & -height).bit_length(), (width & -width).bit_length())
        raise ValueError(
            f"{num_scales} scales halve the image {num_scales - 1} times, so height and width "
            f"must be divisible by {factor}; got {height}x{width}. Use num_scales <= {twos} for "
            f"this size, or pad/crop the images to a multiple of {factor}."
        )


class ArraySource:
    """An in-memory data source over uint8 images (N, H, W, C), for generated data sets.

    Serves ``{"image": images[i]}`` like a TFDS data source, so the batching functions
    above work unchanged.
    """

    def __init__(self, pixels: np.ndarray):
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim != 4:
            raise ValueError(
                f"ArraySource needs uint8 images (N, H, W, C); got dtype {pixels.dtype} and "
                f"shape {pixels.shape}. Quantise with images.to_uint8 first."
            )
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"image": self.pixels[i]}

    def __getitems__(self, keys) -> list[dict[str, np.ndarray]]:
        return [{"image": self.pixels[k]} for k in keys]


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Quantises values in [0, 1] to 8-bit levels floor(256 v), clipped to {0, ..., 255}."""
    values = np.asarray(values)
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise ValueError("to_uint8 expects finite values in [0, 1].")
    return np.minimum(np.floor(values * NUM_PIXEL_VALUES), NUM_PIXEL_VALUES - 1).astype(np.uint8)
