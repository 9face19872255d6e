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

from dpm_jax.data import dead_leaves, images
from experiments import common
from experiments import images as image_experiment

EXPERIMENT = "dead_leaves"
UNITS = "bits per pixel (unit-variance dequantised 8-bit grey levels)"
PAPER = {
    "K": 1.489,
    "K_minus_L_null": 3.536,
    "source": "Table 1 (data of Theis et al. 2012: generator and image size unpublished)",
}
MUTABLE_KEYS = image_experiment.MUTABLE_KEYS
TRAIN_STREAM, TEST_STREAM = dead_leaves.TRAIN_STREAM, dead_leaves.TEST_STREAM


@dataclasses.dataclass(frozen=True)
class Config(image_experiment.ImageConfig):
    """Dead-leaves run: generated data (``image_size``, ``r_min``..``r_max``, ``alpha``)."""

    dataset: str = "dead_leaves"
    image_size: int = 16
    r_min: float = 1.0
    r_max: float = 16.0
    alpha: float = 3.0
    num_train_images: int = 20_000
    num_test_images: int = 500
    data_seed: int = 0
    conv_features: int = 32
    conv_layers: int = 4
    num_scales: int = 3
    dense_hidden: int = 0
    upper_hidden: int = 32
    upper_layers: int = 2
    batch_size: int = 64
    train_steps: int = 30_000
    checkpoint_every: int = 2_000
    log_every: int = 200
    eval_batch_size: int = 100

    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 1)

    def data_config(self) -> dead_leaves.DeadLeavesConfig:
        return dead_leaves.DeadLeavesConfig(
            image_size=self.image_size, r_min=self.r_min, r_max=self.r_max, alpha=self.alpha
        )

    def __post_init__(self):
        super().__post_init__()
        self.data_config()  # validates the generator's parameters
        common.require(self, ("num_train_images", "num_test_images"), 1)
        if self.num_train_images < self.batch_size:
            raise ValueError(
                f"num_train_images ({self.num_train_images}) must be >= batch_size "
                f"({self.batch_size})."
            )


PRESETS = {
    "default": Config(),
    "small": Config(
        image_size=8,
        r_max=8.0,
        num_train_images=256,
        num_test_images=20,
        **image_experiment.SMALL_GREY,
    ),
}


def load_split(config: Config, split: str) -> images.ArraySource:
    """The generated ``"train"`` or ``"test"`` images, quantised to 8 bits.

    Train and test come from independent random streams of ``data_seed``, so they never
    overlap and the test set does not depend on ``num_train_images``.
    """
    count, stream = {
        "train": (config.num_train_images, TRAIN_STREAM),
        "test": (config.num_test_images, TEST_STREAM),
    }[split]
    values = dead_leaves.generate(config.data_config(), config.data_seed, count, stream)
    return images.ArraySource(images.to_uint8(np.asarray(values)))


run, figures, report, main = image_experiment.entry_points(__name__)


if __name__ == "__main__":
    main()
