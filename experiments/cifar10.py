"""CIFAR-10 (Sec. 3.2, App. D.2, Table 1): Gaussian diffusion with the multi-scale network.

  python -m experiments.cifar10 --workdir runs/cifar10 [--preset small|paper]
  python -m experiments.cifar10 --workdir runs/cifar10 --config.data.data_dir DIR   # prepared TFDS data

T = 1000; the released code's README CIFAR-10 network (13,385,280 parameters), its
schedule, batch 200 and RMSProp schedule. ``--preset paper`` uses the paper's units
(softplus convolutions, tanh dense layers) and readout (Eqs. 64-65) with the same sizes.
Reports the exact test-set bound in the paper's unit (bits per pixel summed over the 3
colours, on unit-variance dequantised data; paper 5.4 +- 0.2) and as bits per dimension
on the 8-bit scale (the unit of DDPM's 3.70). Data: TFDS ``cifar10`` in array_record
format (see docs/images.md).
"""

from __future__ import annotations

import dataclasses

from dpm_jax.models import multiscale
from experiments import config as cfg
from experiments import image_config
from experiments.images import ImageExperiment
from experiments.mnist import SMALL

DESCRIPTION = __doc__.splitlines()[0]
UNITS = "bits per pixel summed over 3 colours (unit-variance dequantised data)"
PAPER = {
    "K": 5.4,
    "K_stderr": 0.2,
    "K_minus_L_null": 11.5,
    "source": "Table 1 (footnote 3: dequantised data)",
}


@dataclasses.dataclass(frozen=True)
class Config(image_config.ImageConfig):
    """CIFAR-10 run: the released code's README configuration (batch 200)."""

    data: image_config.ImageDataConfig = image_config.ImageDataConfig(dataset="cifar10")
    model: image_config.ImageModelConfig = image_config.ImageModelConfig(
        **multiscale.REFERENCE_CIFAR10_SIZES
    )
    train: image_config.ImageTrainConfig = dataclasses.replace(
        image_config.ImageConfig().train, batch_size=200
    )
    eval: image_config.ImageEvalConfig = image_config.ImageEvalConfig(batch_size=100)


PRESETS = {
    "default": Config(),
    "paper": cfg.replace(Config(), {"model.network": "paper", "model.readout": "paper"}),
    "small": cfg.replace(Config(), {**SMALL, "model.upper_layers": 2}),
}


class Cifar10Experiment(ImageExperiment):
    """CIFAR-10 (``python -m experiments.cifar10``)."""

    name = "cifar10"
    description = DESCRIPTION
    units = UNITS
    paper = PAPER
    config_class = Config
    presets = PRESETS
    mutable_keys = (*image_config.MUTABLE_KEYS, *image_config.TFDS_MUTABLE_KEYS)
    legacy_keys = image_config.legacy_keys(image_config.TFDS_LEGACY_KEYS)


experiment = Cifar10Experiment()


def main(argv: list[str] | None = None) -> None:
    experiment.main(argv)


if __name__ == "__main__":
    main()
