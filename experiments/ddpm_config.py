"""DDPM's image config (Ho et al. 2020; ``experiments.ddpm``): sections, defaults and presets.

Defaults are the paper's CIFAR-10 run (``../shared/reference/papers.md`` (b)): the linear
schedule beta from 1e-4 to 0.02 over T = 1000, epsilon prediction with the fixed large
variance beta_t, L_simple, the U-Net of 35.7M parameters (ch 128, ch_mult (1, 2, 2, 2), 2
residual blocks, attention at 16 x 16, dropout 0.1), Adam 2e-4 with 5,000 warmup steps,
gradients clipped at norm 1, EMA 0.9999, batch 128, random horizontal flips, 800k steps.
"""

from __future__ import annotations

import dataclasses

from dpm_jax import parameterisation
from dpm_jax.models import unet
from experiments import config as cfg
from experiments import image_config

MEANS = ("epsilon", "x0", "posterior_mean")
VARIANCES = ("fixed_large", "fixed_small")
LOSSES = ("simple", "bound")


@dataclasses.dataclass(frozen=True)
class DDPMDataConfig(image_config.MnistDataConfig):
    """``data``: as MNIST's (TFDS, a .npz/.npy file, an image folder, or the offline digits),
    any named dataset, plus DDPM's random horizontal flips."""

    HELP = {
        "random_flip": "flip each training image left-right with probability 1/2 (DDPM's "
        "CIFAR-10 augmentation; deterministic per step, so resumes are exact)",
    }

    dataset: str = "cifar10"
    random_flip: bool = True


@dataclasses.dataclass(frozen=True)
class DDPMDiffusionConfig:
    """``diffusion``: T, the linear schedule, what the network predicts, the loss."""

    HELP = {
        "steps": "T, the number of diffusion steps",
        "beta_start": "beta_1 of the linear schedule",
        "beta_end": "beta_T of the linear schedule",
        "mean": "what the network predicts: epsilon (DDPM Eq. 11), x0, or posterior_mean "
        "(DDPM Table 2's mu~ prediction)",
        "variance": "the reverse variance: fixed_large = beta_t, fixed_small = beta~_t "
        "(DDPM Sec. 3.2)",
        "loss": "simple = L_simple (DDPM Eq. 14, epsilon prediction only), bound = the "
        "variational bound L (one t per example, DDPM Table 2's true-bound rows)",
    }
    CHOICES = {"mean": MEANS, "variance": VARIANCES, "loss": LOSSES}

    steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    mean: str = "epsilon"
    variance: str = "fixed_large"
    loss: str = "simple"

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
        if self.loss == "simple" and self.mean != "epsilon":
            raise ValueError(
                f"diffusion.loss=simple is L_simple, an MSE on epsilon: it needs "
                f"diffusion.mean=epsilon, got {self.mean!r}. Use diffusion.loss=bound."
            )

    def parameterisation(self) -> parameterisation.Parameterisation:
        return parameterisation.Parameterisation(self.mean, self.variance)


@dataclasses.dataclass(frozen=True)
class DDPMModelConfig:
    """``model``: the U-Net's sizes (``dpm_jax.models.unet``)."""

    HELP = {
        "ch": "channels of the first level (a multiple of GroupNorm's 32 groups)",
        "ch_mult": "channel multiplier per resolution; the image is halved between levels",
        "num_res_blocks": "residual blocks per level",
        "attn_resolutions": "feature-map sides with a self-attention block (comma-separated; "
        "empty: none but the middle one)",
        "dropout": "dropout rate in the residual blocks during training",
    }

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1

    def unet(self) -> unet.UNetConfig:
        return unet.UNetConfig(
            ch=self.ch,
            ch_mult=tuple(self.ch_mult),
            num_res_blocks=self.num_res_blocks,
            attn_resolutions=tuple(self.attn_resolutions),
            dropout=self.dropout,
        )


@dataclasses.dataclass(frozen=True)
class DDPMEvalConfig(cfg.EvalConfig):
    """``eval``: the exact bound on the test split, the sample grid, the progressive figure."""

    min_num_test = 0
    HELP = {
        "num_test": "test images the exact bound is evaluated on (0: the whole test split; "
        "else its first num_test)",
        "num_samples": "samples in the sample grid (EMA parameters)",
        "num_progressive": "chains in the progressive-generation figure (DDPM Fig. 6)",
        "rate_distortion_examples": "first test images of the rate/distortion figure (DDPM "
        "Fig. 5: one network evaluation per t and image; 0: no figure)",
    }

    num_test: int = 0
    batch_size: int = 256
    num_samples: int = 36
    num_progressive: int = 4
    rate_distortion_examples: int = 32

    def __post_init__(self):
        super().__post_init__()
        cfg.require(self, "eval.", ("num_samples", "num_progressive"), 1)
        cfg.require(self, "eval.", ("rate_distortion_examples",), 0)


@dataclasses.dataclass(frozen=True)
class DDPMConfig:
    """A DDPM image run; ``train.steps`` counts optimiser steps, ``diffusion.steps`` is T."""

    HELP = {"seed": "the run's root PRNG seed"}

    seed: int = 0
    data: DDPMDataConfig = DDPMDataConfig()
    diffusion: DDPMDiffusionConfig = DDPMDiffusionConfig()
    model: DDPMModelConfig = DDPMModelConfig()
    train: cfg.TrainConfig = cfg.TrainConfig(
        batch_size=128,
        learning_rate=2e-4,
        steps=800_000,
        checkpoint_every=5_000,
        log_every=500,
        ema_decay=0.9999,
        warmup_steps=5_000,
        grad_clip_norm=1.0,
    )
    eval: DDPMEvalConfig = DDPMEvalConfig()

    def image_shape(self) -> tuple[int, int, int]:
        return self.data.image_shape()

    def __post_init__(self):
        try:
            unet.check_config(self.model.unet(), self.image_shape())
        except ValueError as e:
            raise ValueError(f"{e} (images of the data section: {self.image_shape()})") from None


#: A small U-Net for the 28 x 28 digits on a CPU: 2 levels of 32 and 64 channels.
SMALL_DIGITS_MODEL = {
    "model.ch": 32,
    "model.ch_mult": (1, 2),
    "model.num_res_blocks": 1,
    "model.attn_resolutions": (14,),
}

#: What the ``small`` presets (8 x 8 images, for tests) set besides their data.
SMALL_RUN = {
    "diffusion.steps": 20,
    "model.ch": 32,
    "model.ch_mult": (1, 2),
    "model.num_res_blocks": 1,
    "model.attn_resolutions": (4,),
    "train.batch_size": 16,
    "train.steps": 20,
    "train.warmup_steps": 5,
    "train.ema_decay": 0.9,
    "train.checkpoint_every": 10,
    "train.log_every": 5,
    "eval.num_samples": 9,
    "eval.num_progressive": 2,
    "eval.batch_size": 128,
    "eval.rate_distortion_examples": 8,
}

PRESETS = {
    "cifar10": DDPMConfig(),
    # DDPM gave no MNIST model; 28 x 28 halves twice: three levels, attention at 14 x 14.
    "mnist": cfg.replace(
        DDPMConfig(),
        {
            "data.dataset": "mnist",
            "data.random_flip": False,
            "model.ch_mult": (1, 2, 2),
            "model.attn_resolutions": (14,),
        },
    ),
    "mnist_5k": cfg.replace(
        DDPMConfig(),
        {
            "data.dataset": "mnist",
            "data.source": "mnist_5k",
            "data.random_flip": False,
            **SMALL_DIGITS_MODEL,
            "train.batch_size": 32,
            "train.steps": 10_000,
            "train.warmup_steps": 500,
            "train.ema_decay": 0.999,
            "train.checkpoint_every": 1_000,
            "train.log_every": 100,
        },
    ),
    "small": cfg.replace(
        DDPMConfig(),
        {
            "data.dataset": "mnist",
            "data.source": "digits_8x8",
            "data.random_flip": False,
            **SMALL_RUN,
        },
    ),
}

#: Keys a resumed DDPM run may change.
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
    "eval.num_progressive",
    "eval.rate_distortion_examples",
    "eval.forward_samples",
)
