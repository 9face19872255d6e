"""MNIST (Sec. 3.2, App. D.2): Gaussian diffusion with the multi-scale convolutional network.

  python -m experiments.mnist --workdir runs/mnist [--preset small|paper]
  python -m experiments.mnist --workdir runs/mnist --config.data_dir DIR   # prepared TFDS data

T = 1000; the released code's network sizes, schedule and RMSProp schedule (the paper
gives none). ``--preset paper`` uses the paper's units (tanh dense layers) and, as the
paper did for MNIST, the dense pathway alone. Reports the exact test-set bound in bits
per pixel on unit-variance data and as bits per dimension on the 8-bit scale; the
paper's MNIST number is a Parzen-window estimate (Table 2), not comparable with K.
Data: TFDS ``mnist`` prepared in array_record format (see docs/images.md).
"""

from __future__ import annotations

import dataclasses

from experiments import images as image_experiment

EXPERIMENT = "mnist"
UNITS = "bits per pixel (unit-variance dequantised data)"
PAPER = {
    "parzen_log_likelihood_bits": 317,
    "parzen_stderr_bits": 2.7,
    "source": "Table 2 (Parzen-window estimate; the paper gives no K for MNIST)",
}
MUTABLE_KEYS = image_experiment.MUTABLE_KEYS


@dataclasses.dataclass(frozen=True)
class Config(image_experiment.ImageConfig):
    """MNIST run: the released code's defaults (model.py, train.py)."""

    dataset: str = "mnist"
    batch_size: int = 512


SMALL = {
    "diffusion_steps": 50,
    "num_temporal_basis": 4,
    "conv_features": 8,
    "conv_layers": 2,
    "dense_hidden": 64,
    "dense_output": 1,
    "upper_hidden": 16,
    "batch_size": 32,
    "train_steps": 200,
    "checkpoint_every": 100,
    "log_every": 50,
    "eval_batch_size": 100,
    "num_samples": 16,
}
PRESETS = {
    "default": Config(),
    "paper": Config(network="paper", readout="paper", conv_layers=0, dense_layers=4),
    "small": Config(**SMALL),
}


run, figures, report, main = image_experiment.entry_points(__name__)


if __name__ == "__main__":
    main()
