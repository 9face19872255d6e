"""Data: toy generators, and TFDS images (MNIST, CIFAR-10) read without TensorFlow."""

from dpm_jax.data.heartbeat import Heartbeat
from dpm_jax.data.images import (
    IMAGE_SHAPES,
    DatasetNotPrepared,
    ImageScaling,
    bits_per_dim_8bit,
    check_image_size,
    check_pixels,
    dequantize,
    epoch_permutation,
    eval_batches,
    fit_scaling,
    gather_images,
    load_image_source,
    num_eval_batches,
    pixel_moments,
    preprocess,
    steps_per_epoch,
    train_batch,
    train_batch_indices,
    train_batches,
)
from dpm_jax.data.swiss_roll import SwissRoll

__all__ = [
    "IMAGE_SHAPES",
    "DatasetNotPrepared",
    "Heartbeat",
    "ImageScaling",
    "SwissRoll",
    "bits_per_dim_8bit",
    "check_image_size",
    "check_pixels",
    "dequantize",
    "epoch_permutation",
    "eval_batches",
    "fit_scaling",
    "gather_images",
    "load_image_source",
    "num_eval_batches",
    "pixel_moments",
    "preprocess",
    "steps_per_epoch",
    "train_batch",
    "train_batch_indices",
    "train_batches",
]
