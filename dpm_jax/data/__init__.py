"""Data: toy generators, TFDS images (MNIST, CIFAR-10) read without TensorFlow, .npz/.npy
files and image folders, real digits shipped with pip packages, dead leaves and the UIUC bark
textures.

Images: loading and pixel checks (``images``), local files (``arrays``), offline digits
(``digits``), deterministic training batches (``batching``), dequantisation and scaling to
model units (``scaling``).
"""

from dpm_jax.data.arrays import fixed_split, load_array_split, load_folder_split
from dpm_jax.data.bark import (
    BARK_CLASSES,
    find_bark_files,
    grid_patches,
    grid_positions,
    load_bark_images,
    load_bark_split,
    load_grey,
    random_patches,
    split_bark_files,
)
from dpm_jax.data.batching import (
    epoch_permutation,
    gather_images,
    steps_per_epoch,
    train_batch,
    train_batch_indices,
    train_batches,
)
from dpm_jax.data.dead_leaves import DeadLeavesConfig, sample_radii
from dpm_jax.data.dead_leaves import generate as generate_dead_leaves
from dpm_jax.data.dead_leaves import train_test as dead_leaves_train_test
from dpm_jax.data.digits import DependencyMissing, load_digits_8x8, load_mnist_5k
from dpm_jax.data.gaussian_mixture import GaussianMixture
from dpm_jax.data.heartbeat import Heartbeat
from dpm_jax.data.images import (
    IMAGE_SHAPES,
    ArraySource,
    DatasetNotPrepared,
    check_image_size,
    check_pixels,
    load_image_source,
    to_uint8,
)
from dpm_jax.data.scaling import (
    ImageScaling,
    dequantize,
    fit_scaling,
    pixel_moments,
    preprocess,
)
from dpm_jax.data.swiss_roll import SwissRoll

__all__ = [
    "BARK_CLASSES",
    "IMAGE_SHAPES",
    "ArraySource",
    "DatasetNotPrepared",
    "DeadLeavesConfig",
    "DependencyMissing",
    "GaussianMixture",
    "Heartbeat",
    "ImageScaling",
    "SwissRoll",
    "check_image_size",
    "check_pixels",
    "dead_leaves_train_test",
    "dequantize",
    "epoch_permutation",
    "find_bark_files",
    "fixed_split",
    "fit_scaling",
    "gather_images",
    "generate_dead_leaves",
    "grid_patches",
    "grid_positions",
    "load_bark_images",
    "load_array_split",
    "load_bark_split",
    "load_digits_8x8",
    "load_folder_split",
    "load_grey",
    "load_image_source",
    "load_mnist_5k",
    "pixel_moments",
    "preprocess",
    "random_patches",
    "sample_radii",
    "split_bark_files",
    "steps_per_epoch",
    "to_uint8",
    "train_batch",
    "train_batch_indices",
    "train_batches",
]
