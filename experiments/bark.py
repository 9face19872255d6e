"""Bark (Sec. 3.2, Table 1, Fig. 5): Gaussian diffusion on grey-scale bark texture patches.

  python -m experiments.bark --workdir runs/bark --config.data.folder=DIR [--preset small]

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

from dpm_jax.data import bark
from dpm_jax.data.images import ArraySource
from experiments import config as cfg
from experiments import image_config
from experiments.images import ImageExperiment

DESCRIPTION = __doc__.splitlines()[0]
UNITS = "bits per pixel (unit-variance dequantised 8-bit grey levels)"
PAPER = {"K": -0.55, "K_minus_L_null": 1.5, "source": "Table 1 (patch size unpublished)"}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``data``: the image ``folder`` (UIUC T01-T04), the patch size, the training pool and
    the held-out images per class."""

    HELP = {
        "folder": "folder holding the UIUC texture classes T01-T04 (required to run; layouts "
        "in dpm_jax/data/bark.py)",
        "patch_size": "side of the square patches (pixels)",
        "num_train_patches": "random training patches in the fixed pool (drawn with the run's "
        "seed)",
        "num_test_per_class": "last images (file-name order) of each class held out; the test "
        "set is their non-overlapping patch grid",
    }

    folder: str = ""
    patch_size: int = 32
    num_train_patches: int = 50_000
    num_test_per_class: int = bark.NUM_TEST_PER_CLASS

    def __post_init__(self):
        cfg.require(self, "data.", ("patch_size", "num_train_patches"), 1)
        cfg.require(self, "data.", ("num_test_per_class",), 0)

    def image_shape(self) -> tuple[int, int, int]:
        return (self.patch_size, self.patch_size, 1)


@dataclasses.dataclass(frozen=True)
class Config(image_config.ImageConfig):
    """Bark run: patches of ``data.patch_size`` pixels from the images in ``data.folder``."""

    data: DataConfig = DataConfig()
    diffusion: image_config.ImageDiffusionConfig = image_config.ImageDiffusionConfig(steps=500)
    model: image_config.ImageModelConfig = image_config.GREY_CONV_MODEL
    train: image_config.ImageTrainConfig = dataclasses.replace(
        image_config.ImageConfig().train, batch_size=64, steps=100_000
    )
    eval: image_config.ImageEvalConfig = image_config.ImageEvalConfig(batch_size=100)


PRESETS = {
    "default": Config(),
    "small": cfg.replace(
        Config(),
        {"data.patch_size": 8, "data.num_train_patches": 512, **image_config.SMALL_GREY},
    ),
}


class BarkExperiment(ImageExperiment):
    """Bark (``python -m experiments.bark``): patches of the user's UIUC image folder."""

    name = "bark"
    description = DESCRIPTION
    units = UNITS
    paper = PAPER
    config_class = Config
    presets = PRESETS
    mutable_keys = (*image_config.MUTABLE_KEYS, "data.folder")
    legacy_keys = image_config.legacy_keys(
        {
            "dataset": None,  # was always "bark" (the data come from data_folder)
            "data_dir": None,  # TFDS's folder, unused by bark
            "data_folder": "data.folder",
            "patch_size": "data.patch_size",
            "num_train_patches": "data.num_train_patches",
            "num_test_per_class": "data.num_test_per_class",
        }
    )

    def load_split(self, config: Config, split: str) -> ArraySource:
        """Training patches (a fixed random pool) or the test patch grid, uint8 (N, p, p, 1)."""
        data = config.data
        if not data.folder:
            raise FileNotFoundError(
                "no bark image folder: pass --config.data.folder=DIR, a folder holding the UIUC "
                "texture classes T01-T04 (the UIUC Texture Database of Lazebnik, Schmid & Ponce "
                "2005; layouts in dpm_jax/data/bark.py)."
            )
        train, test = bark.load_bark_split(
            data.folder,
            num_test_per_class=data.num_test_per_class,
            patch_size=data.patch_size,
            as_uint8=True,
        )
        if split == "train":
            patches = bark.random_patches(
                train, data.patch_size, data.num_train_patches, config.seed
            )
        else:
            patches = bark.grid_patches(test, data.patch_size)
        return ArraySource(patches)


experiment = BarkExperiment()


def main(argv: list[str] | None = None) -> None:
    experiment.main(argv)


if __name__ == "__main__":
    main()
