"""Improved DDPM / ADM's image config (``experiments.adm``): sections, defaults and presets.

Defaults: improved DDPM's recipe (Nichol & Dhariwal 2021; ``../shared/reference/papers.md``
(c), (d)) on scikit-learn's 8 x 8 digits, sized for a CPU: T = 1000, epsilon prediction with
the learned-range variance, L_hybrid (lambda = 0.001), DDPM's linear schedule (the cosine
schedule is ``diffusion.schedule=cosine``; after 3,000 steps its last step, where beta_T =
0.999, alone cost 4.6 bits/dim of the bound: ``docs/adm.md``), the ADM U-Net
(``dpm_jax.models.adm_unet``: BigGAN up/down-sampling, AdaGN, multi-head attention) at 32
channels, Adam 2e-4, EMA 0.999. Presets change the loss (``simple``: L_simple with the fixed
variance beta_t), add classes (``cfg``: class-conditional with label dropout, for
classifier-free guidance) or a low-resolution input (``upsampler``: 4 x 4 -> 8 x 8 digits;
``mnist_5k_upsampler``: 14 x 14 -> 28 x 28).
"""

from __future__ import annotations

import dataclasses

from dpm_jax import parameterisation
from dpm_jax.data import digits
from dpm_jax.models import adm_unet
from experiments import config as cfg
from experiments.ddpm_config import DDPMDataConfig

SCHEDULES = ("cosine", "linear")
VARIANCES = ("learned_range", "fixed_large", "fixed_small")
LOSSES = ("hybrid", "simple")


@dataclasses.dataclass(frozen=True)
class ADMDataConfig(DDPMDataConfig):
    """``data``: as DDPM's (TFDS, files, or the offline digits with labels), flips off."""

    dataset: str = "mnist"
    source: str = "digits_8x8"
    random_flip: bool = False


@dataclasses.dataclass(frozen=True)
class ADMDiffusionConfig:
    """``diffusion``: T, the schedule, the reverse variance and the loss."""

    HELP = {
        "steps": "T, the number of diffusion steps (improved DDPM also uses 4000)",
        "schedule": "cosine = improved DDPM Eq. 17 (offset 0.008, betas clipped at 0.999); "
        "linear = DDPM's, from beta_start to beta_end",
        "beta_start": "beta_1 of the linear schedule (read with schedule=linear only)",
        "beta_end": "beta_T of the linear schedule (read with schedule=linear only)",
        "variance": "the reverse variance: learned_range = improved DDPM Eq. 15 (the network "
        "outputs v), fixed_large = beta_t, fixed_small = beta~_t",
        "loss": "hybrid = L_simple + lambda L_vlb (improved DDPM Eq. 16; needs "
        "variance=learned_range), simple = L_simple (DDPM Eq. 14; a fixed variance)",
        "hybrid_lambda": "lambda of L_hybrid (improved DDPM: 0.001)",
    }
    CHOICES = {"schedule": SCHEDULES, "variance": VARIANCES, "loss": LOSSES}

    steps: int = 1000
    schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    variance: str = "learned_range"
    loss: str = "hybrid"
    hybrid_lambda: float = 0.001

    def __post_init__(self):
        for name, choices in self.CHOICES.items():
            cfg.require_choice(self, "diffusion.", name, choices)
        if self.steps < 2:
            raise ValueError(f"diffusion.steps (T) must be >= 2, got {self.steps}.")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(
                "the linear schedule needs 0 < diffusion.beta_start <= diffusion.beta_end < 1; "
                f"got {self.beta_start} and {self.beta_end}."
            )
        learned = self.variance == "learned_range"
        if learned != (self.loss == "hybrid"):
            raise ValueError(
                "a learned variance is trained by L_vlb: diffusion.variance=learned_range goes "
                "with diffusion.loss=hybrid, a fixed variance with diffusion.loss=simple; got "
                f"variance={self.variance!r} and loss={self.loss!r}."
            )
        cfg.require(self, "diffusion.", ("hybrid_lambda",), 0, strict=True)

    def parameterisation(self) -> parameterisation.Parameterisation:
        return parameterisation.Parameterisation("epsilon", self.variance)


@dataclasses.dataclass(frozen=True)
class ADMModelConfig:
    """``model``: the ADM U-Net's sizes (``dpm_jax.models.adm_unet``), classes, low-res input."""

    HELP = {
        "model_channels": "channels of the first level (a multiple of GroupNorm's 32 groups)",
        "channel_mult": "channel multiplier per resolution; the image is halved between levels",
        "num_res_blocks": "residual blocks per level",
        "attention_resolutions": "feature-map sides with multi-head self-attention "
        "(comma-separated; the middle block always has it)",
        "num_head_channels": "channels per attention head (ADM: 64); -1: use num_heads",
        "num_heads": "attention heads when num_head_channels is -1",
        "dropout": "dropout rate in the residual blocks during training",
        "resblock_updown": "BigGAN-style residual blocks for up/down-sampling (ADM)",
        "use_scale_shift_norm": "adaptive group normalisation: scale and shift from the "
        "embedding (ADM)",
        "class_cond": "condition on the class label, one of 10 (digits, CIFAR-10): a learned "
        "embedding added to the time's",
        "label_dropout": "probability that a training label is replaced by the null class, so "
        "one model also learns p(x) (classifier-free guidance; needs class_cond)",
        "upsample": "an upsampling model (ADM-U): conditioned on the image area-averaged to "
        "half its side, bilinearly upsampled and concatenated to x_t",
    }

    model_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4,)
    num_head_channels: int = 32
    num_heads: int = 1
    dropout: float = 0.1
    resblock_updown: bool = True
    use_scale_shift_norm: bool = True
    class_cond: bool = False
    label_dropout: float = 0.0
    upsample: bool = False

    def __post_init__(self):
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"model.label_dropout must lie in [0, 1), got {self.label_dropout}.")
        if self.label_dropout and not self.class_cond:
            raise ValueError(
                "model.label_dropout drops class labels: it needs model.class_cond=True."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must lie in [0, 1), got {self.dropout}.")

    @property
    def null_class(self) -> int | None:
        """The label index meaning "no label" (classifier-free guidance), or None."""
        return digits.NUM_CLASSES if self.label_dropout else None

    def adm(self, image_channels: int, learned_variance: bool) -> adm_unet.ADMConfig:
        num_classes = None
        if self.class_cond:
            num_classes = digits.NUM_CLASSES + (1 if self.label_dropout else 0)
        return adm_unet.ADMConfig(
            model_channels=self.model_channels,
            channel_mult=tuple(self.channel_mult),
            num_res_blocks=self.num_res_blocks,
            attention_resolutions=tuple(self.attention_resolutions),
            num_heads=self.num_heads,
            num_head_channels=self.num_head_channels,
            dropout=self.dropout,
            resblock_updown=self.resblock_updown,
            use_scale_shift_norm=self.use_scale_shift_norm,
            num_classes=num_classes,
            low_res_channels=image_channels if self.upsample else 0,
            out_channels=image_channels * (2 if learned_variance else 1),
        )


@dataclasses.dataclass(frozen=True)
class ADMEvalConfig(cfg.EvalConfig):
    """``eval``: the exact bound on the test split and the sample figures."""

    min_num_test = 0
    HELP = {
        "num_test": "test images the exact bound is evaluated on (0: the whole test split; "
        "else its first num_test)",
        "num_samples": "samples in the sample figure (EMA parameters)",
    }

    num_test: int = 0
    batch_size: int = 512
    num_samples: int = 40

    def __post_init__(self):
        super().__post_init__()
        cfg.require(self, "eval.", ("num_samples",), 1)


@dataclasses.dataclass(frozen=True)
class ADMConfig:
    """An improved-DDPM / ADM image run; ``train.steps`` counts optimiser steps, T is
    ``diffusion.steps``."""

    HELP = {"seed": "the run's root PRNG seed"}

    seed: int = 0
    data: ADMDataConfig = ADMDataConfig()
    diffusion: ADMDiffusionConfig = ADMDiffusionConfig()
    model: ADMModelConfig = ADMModelConfig()
    train: cfg.TrainConfig = cfg.TrainConfig(
        batch_size=64,
        learning_rate=2e-4,
        steps=3_000,
        checkpoint_every=500,
        log_every=100,
        ema_decay=0.999,
        warmup_steps=100,
        grad_clip_norm=1.0,
    )
    eval: ADMEvalConfig = ADMEvalConfig()

    def image_shape(self) -> tuple[int, int, int]:
        return self.data.image_shape()

    def network_config(self) -> adm_unet.ADMConfig:
        learned = self.diffusion.variance == "learned_range"
        return self.model.adm(self.image_shape()[-1], learned)

    def __post_init__(self):
        height, width, _ = self.image_shape()
        if self.model.upsample and (height % 2 or width % 2):
            raise ValueError(
                f"model.upsample halves the images' sides; {height} x {width} does not halve."
            )
        try:
            adm_unet.check_config(self.network_config(), self.image_shape())
        except ValueError as e:
            raise ValueError(f"{e} (images of the data section: {self.image_shape()})") from None


#: What the ``small`` preset (for tests) sets.
SMALL_RUN = {
    "diffusion.steps": 20,
    "model.num_res_blocks": 1,
    "train.batch_size": 16,
    "train.steps": 6,
    "train.warmup_steps": 2,
    "train.ema_decay": 0.9,
    "train.checkpoint_every": 3,
    "train.log_every": 3,
    "eval.num_test": 16,
    "eval.num_samples": 10,
}

#: 14 x 14 -> 28 x 28 digits: three levels (28, 14, 7), attention at 7.
MNIST_5K_MODEL = {
    "data.source": "mnist_5k",
    "model.channel_mult": (1, 2, 2),
    "model.attention_resolutions": (7,),
}

PRESETS = {
    "default": ADMConfig(),
    "simple": cfg.replace(
        ADMConfig(), {"diffusion.variance": "fixed_large", "diffusion.loss": "simple"}
    ),
    "cfg": cfg.replace(ADMConfig(), {"model.class_cond": True, "model.label_dropout": 0.2}),
    "upsampler": cfg.replace(ADMConfig(), {"model.upsample": True}),
    "mnist_5k_upsampler": cfg.replace(ADMConfig(), {"model.upsample": True, **MNIST_5K_MODEL}),
    "small": cfg.replace(ADMConfig(), SMALL_RUN),
}

#: Keys a resumed run may change.
MUTABLE_KEYS = (
    "data.data_dir",
    "data.path",
    "train.steps",
    "train.max_skipped_in_a_row",
    "train.steps_per_call",
    "train.checkpoint_every",
    "train.log_every",
    "eval.num_test",
    "eval.batch_size",
    "eval.num_samples",
    "eval.forward_samples",
)
