"""Dead leaves (Sec. 3.2, Table 2, Fig. 4): Gaussian diffusion on grey-scale occlusion images.

  python -m experiments.dead_leaves --workdir runs/dead_leaves [--preset small]

Images of occluding disks with power-law radii (``dpm_jax.data.dead_leaves``; 16 x 16
pixels, radii 1-16 px, p(r) ~ r^-3: this project's choice, sized so that training and the
exact evaluation fit in an hour on a 2-core CPU; the paper's generator parameters are
unpublished), grey levels quantised to 8 bits and then dequantised and scaled to unit
variance like the other image experiments. The reverse model is the multi-scale
convolutional network of App. D.2 (convolutional pathway, 3 scales); T = 1000. Reports
the exact bound on a fixed test set of 500 images in bits per pixel, next to the paper's
1.489 bits/pixel on its (different) data.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dpm_jax.data import dead_leaves
from dpm_jax.data.images import ArraySource, to_uint8
from experiments import config as cfg
from experiments import image_config
from experiments.images import ImageExperiment

DESCRIPTION = __doc__.splitlines()[0]
UNITS = "bits per pixel (unit-variance dequantised 8-bit grey levels)"
PAPER = {
    "K": 1.489,
    "K_minus_L_null": 3.536,
    "source": "Table 1 (data of Theis et al. 2012: generator and image size unpublished)",
}
TRAIN_STREAM, TEST_STREAM = dead_leaves.TRAIN_STREAM, dead_leaves.TEST_STREAM


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``data``: the generator (``dpm_jax.data.dead_leaves``) and the data sets' sizes;
    ``seed`` seeds the images (independently of the run's ``seed``)."""

    HELP = {
        "image_size": "side of the square images (pixels)",
        "r_min": "smallest disk radius (pixels)",
        "r_max": "largest disk radius (pixels)",
        "alpha": "exponent of the radius density p(r) ~ r^-alpha (3: scale invariant)",
        "num_train_images": "generated training images (a fixed pool)",
        "num_test_images": "generated test images (an independent stream of data.seed)",
        "seed": "seed of the generated images (independent of the run's seed)",
    }

    image_size: int = 16
    r_min: float = 1.0
    r_max: float = 16.0
    alpha: float = 3.0
    num_train_images: int = 20_000
    num_test_images: int = 500
    seed: int = 0

    def __post_init__(self):
        try:
            self.generator()  # validates the generator's parameters
        except ValueError as e:
            raise ValueError(f"data (the dead-leaves generator): {e}") from None
        cfg.require(self, "data.", ("num_train_images", "num_test_images"), 1)

    def generator(self) -> dead_leaves.DeadLeavesConfig:
        return dead_leaves.DeadLeavesConfig(
            image_size=self.image_size, r_min=self.r_min, r_max=self.r_max, alpha=self.alpha
        )

    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 1)


@dataclasses.dataclass(frozen=True)
class Config(image_config.ImageConfig):
    """Dead-leaves run: generated data, the convolutional pathway on 3 scales."""

    data: DataConfig = DataConfig()
    model: image_config.ImageModelConfig = image_config.GREY_CONV_MODEL
    train: image_config.ImageTrainConfig = dataclasses.replace(
        image_config.ImageConfig().train,
        batch_size=64,
        steps=30_000,
        checkpoint_every=2_000,
        log_every=200,
    )
    eval: image_config.ImageEvalConfig = image_config.ImageEvalConfig(batch_size=100)

    def __post_init__(self):
        super().__post_init__()
        if self.data.num_train_images < self.train.batch_size:
            raise ValueError(
                f"data.num_train_images ({self.data.num_train_images}) must be >= "
                f"train.batch_size ({self.train.batch_size})."
            )


#: The ``small`` presets' images (8 x 8, a few hundred): this experiment's and DDPM's.
SMALL_DATA = {
    "data.image_size": 8,
    "data.r_max": 8.0,
    "data.num_train_images": 256,
    "data.num_test_images": 20,
}

PRESETS = {
    "default": Config(),
    "small": cfg.replace(
        Config(),
        {
            **SMALL_DATA,
            **image_config.SMALL_GREY,
        },
    ),
}


class DeadLeavesExperiment(ImageExperiment):
    """Dead leaves (``python -m experiments.dead_leaves``): generated data."""

    name = "dead_leaves"
    description = DESCRIPTION
    units = UNITS
    paper = PAPER
    config_class = Config
    presets = PRESETS
    mutable_keys = image_config.MUTABLE_KEYS
    legacy_keys = image_config.legacy_keys(
        {
            "dataset": None,  # was always "dead_leaves" (the data are generated)
            "data_dir": None,  # TFDS's folder, unused by generated data
            "image_size": "data.image_size",
            "r_min": "data.r_min",
            "r_max": "data.r_max",
            "alpha": "data.alpha",
            "num_train_images": "data.num_train_images",
            "num_test_images": "data.num_test_images",
            "data_seed": "data.seed",
        }
    )

    def load_split(self, config: Config, split: str) -> ArraySource:
        """The generated ``"train"`` or ``"test"`` images, quantised to 8 bits.

        Train and test come from independent random streams of ``data.seed``, so they never
        overlap and the test set does not depend on ``data.num_train_images``.
        """
        data = config.data
        count, stream = {
            "train": (data.num_train_images, TRAIN_STREAM),
            "test": (data.num_test_images, TEST_STREAM),
        }[split]
        values = dead_leaves.generate(data.generator(), data.seed, count, stream)
        return ArraySource(to_uint8(np.asarray(values)))


experiment = DeadLeavesExperiment()


def main(argv: list[str] | None = None) -> None:
    experiment.main(argv)


if __name__ == "__main__":
    main()
