"""Image data for the image experiments: loading and checking 8-bit images.

Loading. ``load_image_source`` reads a prepared TFDS dataset through ``tfds.data_source``
(array_record files, random access, NumPy only: TensorFlow is not needed to read). Examples
are dicts whose ``"image"`` is uint8 NHWC without the batch axis: (28, 28, 1) for MNIST,
(32, 32, 3) for CIFAR-10. Nothing is downloaded: an unprepared dataset raises
``DatasetNotPrepared`` with the command that prepares it elsewhere. Generated data sets
(dead leaves, bark patches) and local files (``dpm_jax.data.arrays``: .npz/.npy arrays and
image folders; ``dpm_jax.data.digits``: real digits shipped with pip packages) are served by
``ArraySource`` in the same form.

Any *source* with ``__len__`` and ``__getitem__`` (optionally ``__getitems__``) returning
dicts with an ``"image"`` key works, so tests use a plain NumPy fake. Batches of a source:
``dpm_jax.data.batching``; dequantisation and scaling to model units:
``dpm_jax.data.scaling``; the units of the bound: ``dpm_jax.likelihood``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

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
# Pixels


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
    """An in-memory data source over uint8 images (N, H, W, C), for generated data sets and
    local files (``dpm_jax.data.arrays``).

    Serves ``{"image": images[i]}`` like a TFDS data source, so the batching functions
    above work unchanged; with ``labels`` (integers, one per image) also ``"label"``.
    """

    def __init__(self, pixels: np.ndarray, labels: np.ndarray | None = None):
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim != 4:
            raise ValueError(
                f"ArraySource needs uint8 images (N, H, W, C); got dtype {pixels.dtype} and "
                f"shape {pixels.shape}. Quantise with images.to_uint8 first."
            )
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(pixels),) or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(
                    f"ArraySource labels must be integers of shape ({len(pixels)},), one per "
                    f"image; got dtype {labels.dtype} and shape {labels.shape}."
                )
        self.pixels = pixels
        self.labels = labels

    def __len__(self) -> int:
        return len(self.pixels)

    def _example(self, i) -> dict[str, np.ndarray]:
        if self.labels is None:
            return {"image": self.pixels[i]}
        return {"image": self.pixels[i], "label": self.labels[i]}

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self._example(i)

    def __getitems__(self, keys) -> list[dict[str, np.ndarray]]:
        return [self._example(k) for k in keys]


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Quantises values in [0, 1] to 8-bit levels floor(256 v), clipped to {0, ..., 255}."""
    values = np.asarray(values)
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise ValueError("to_uint8 expects finite values in [0, 1].")
    return np.minimum(np.floor(values * NUM_PIXEL_VALUES), NUM_PIXEL_VALUES - 1).astype(np.uint8)
