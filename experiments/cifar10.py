"""CIFAR-10 (Sec. 3.2, App. D.2, Table 1): Gaussian diffusion with the multi-scale network.

  python -m experiments.cifar10 --workdir runs/cifar10 [--preset small|paper]
  python -m experiments.cifar10 --workdir runs/cifar10 --config.data_dir DIR   # prepared TFDS data

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
from experiments import images as image_experiment
from experiments.mnist import SMALL

EXPERIMENT = "cifar10"
UNITS = "bits per pixel summed over 3 colours (unit-variance dequantised data)"
PAPER = {
    "K": 5.4,
    "K_stderr": 0.2,
    "K_minus_L_null": 11.5,
    "source": "Table 1 (footnote 3: dequantised data)",
}
MUTABLE_KEYS = image_experiment.MUTABLE_KEYS

_SIZES = multiscale.REFERENCE_CIFAR10_SIZES


@dataclasses.dataclass(frozen=True)
class Config(image_experiment.ImageConfig):
    """CIFAR-10 run: the released code's README configuration."""

    dataset: str = "cifar10"
    batch_size: int = 200
    num_temporal_basis: int = _SIZES["num_temporal_basis"]
    conv_features: int = _SIZES["conv_features"]
    conv_layers: int = _SIZES["conv_layers"]
    num_scales: int = _SIZES["num_scales"]
    dense_hidden: int = _SIZES["dense_hidden"]
    dense_output: int = _SIZES["dense_output"]
    upper_hidden: int = _SIZES["upper_hidden"]
    upper_layers: int = _SIZES["upper_layers"]
    eval_batch_size: int = 100


PRESETS = {
    "default": Config(),
    "paper": Config(network="paper", readout="paper"),
    "small": Config(**{**SMALL, "upper_layers": 2}),
}


run, figures, report, main = image_experiment.entry_points(__name__)


if __name__ == "__main__":
    main()
