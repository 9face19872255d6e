"""Bark (Sec. 3.2, Table 1, Fig. 5): Gaussian diffusion on grey-scale bark texture patches.

  python -m experiments.bark --workdir runs/bark --config.data_folder=DIR [--preset small]

The UIUC texture classes T01-T04 (Lazebnik et al. 2005) from an image folder the user
points to (``dpm_jax.data.bark``: where to get them, accepted layouts, the image-level
train/test split). Training uses a fixed pool of random square patches of the training
images; the test set is the fixed non-overlapping patch grid of the held-out images.
8-bit grey levels, dequantised and scaled to unit variance as in the other image
experiments; T = 500 as in the paper; the multi-scale convolutional network of App. D.2.
Reports the exact test bound in bits per pixel (paper: -0.55 on its patches, size
unpublished) and draws the inpainting figure (Fig. 5) with every evaluation.
"""

from __future__ import annotations

import dataclasses

from dpm_jax.data import bark, images
from experiments import common
from experiments import images as image_experiment

EXPERIMENT = "bark"
UNITS = "bits per pixel (unit-variance dequantised 8-bit grey levels)"
PAPER = {"K": -0.55, "K_minus_L_null": 1.5, "source": "Table 1 (patch size unpublished)"}
MUTABLE_KEYS = (*image_experiment.MUTABLE_KEYS, "data_folder")


@dataclasses.dataclass(frozen=True)
class Config(image_experiment.ImageConfig):
    """Bark run: patches of ``patch_size`` pixels from the images in ``data_folder``."""

    dataset: str = "bark"
    data_folder: str = ""
    patch_size: int = 32
    num_train_patches: int = 50_000
    num_test_per_class: int = bark.NUM_TEST_PER_CLASS
    diffusion_steps: int = 500
    conv_features: int = 32
    conv_layers: int = 4
    num_scales: int = 3
    dense_hidden: int = 0
    upper_hidden: int = 32
    upper_layers: int = 2
    batch_size: int = 64
    train_steps: int = 100_000
    eval_batch_size: int = 100

    def image_shape(self) -> tuple[int, int, int]:
        return (self.patch_size, self.patch_size, 1)

    def __post_init__(self):
        super().__post_init__()
        common.require(self, ("patch_size", "num_train_patches"), 1)
        common.require(self, ("num_test_per_class",), 0)


PRESETS = {
    "default": Config(),
    "small": Config(
        patch_size=8,
        num_train_patches=512,
        **image_experiment.SMALL_GREY,
    ),
}


def load_split(config: Config, split: str) -> images.ArraySource:
    """Training patches (a fixed random pool) or the test patch grid, uint8 (N, p, p, 1)."""
    if not config.data_folder:
        raise FileNotFoundError(
            "no bark image folder: pass --config.data_folder=DIR, a folder holding the UIUC "
            "texture classes T01-T04 (the UIUC Texture Database of Lazebnik, Schmid & Ponce "
            "2005; layouts in dpm_jax/data/bark.py)."
        )
    train, test = bark.load_bark_split(
        config.data_folder,
        num_test_per_class=config.num_test_per_class,
        patch_size=config.patch_size,
        as_uint8=True,
    )
    if split == "train":
        patches = bark.random_patches(
            train, config.patch_size, config.num_train_patches, config.seed
        )
    else:
        patches = bark.grid_patches(test, config.patch_size)
    return images.ArraySource(patches)


run, figures, report, main = image_experiment.entry_points(__name__)


if __name__ == "__main__":
    main()
