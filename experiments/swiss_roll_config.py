"""The Swiss roll experiment's config: sections, presets and key tables.

``seed`` and the sections ``data`` (the generator's noise), ``diffusion`` (T as ``steps``
and the learned schedule), ``model`` (the RBF network and its readout), ``train`` (the
shared training keys, the objective and the schedule's learning rate) and ``eval``.
"""

from __future__ import annotations

import dataclasses

from dpm_jax import gaussian, parameterisation, schedules
from experiments import config as cfg

# Training objectives: the one-t estimate (Eq. 14 with t sampled, weight T - 1) or the sum of
# all T - 1 KL terms per example (one forward sample each), lower variance at T times the cost.
OBJECTIVES = {"one_t": gaussian.bound_estimate, "all_t": gaussian.bound_exact}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``data``: the 2-D generator with an exact density: the Swiss roll
    (``dpm_jax.data.SwissRoll``) or a ring of eight Gaussians (``dpm_jax.data.GaussianMixture``),
    both scaled to unit variance."""

    HELP = {
        "name": "the 2-D data: swiss_roll, or gaussian_mixture (eight Gaussians of std 0.3 "
        "on a ring)",
        "noise_std": "std of the Gaussian noise added to the roll (generator units, before "
        "the data are scaled to unit variance); the Swiss roll only",
    }
    #: {field: its allowed values}: what ``__post_init__`` accepts and ``--help`` lists.
    CHOICES = {"name": ("swiss_roll", "gaussian_mixture")}

    name: str = "swiss_roll"
    noise_std: float = 0.25

    def __post_init__(self):
        cfg.require_choice(self, "data.", "name", self.CHOICES["name"])
        cfg.require(self, "data.", ("noise_std",), 0, strict=True)


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """``diffusion``: T (``steps``) and the schedule, beta_1 fixed and beta_2..T learned."""

    HELP = {
        "steps": "T, the number of diffusion steps (the paper's T)",
        "beta_1": "forward noise variance of step t = 1 (fixed, never learned)",
        "learn_schedule": "train beta_2..T (a logistic perturbation of the baseline) with the "
        "model; false: the baseline, fixed",
        "schedule_baseline": "beta_2..T before learning: reference = the 2015 code's "
        "1/(T - t + 1), geometric = 1 - abar_t growing geometrically from beta_1 to 0.999",
    }
    #: {field: its allowed values}: what ``__post_init__`` accepts and ``--help`` lists.
    CHOICES = {"schedule_baseline": schedules.BASELINES}

    steps: int = 40
    beta_1: float = 1e-4
    learn_schedule: bool = True
    schedule_baseline: str = "geometric"

    def __post_init__(self):
        if self.steps < 2:
            raise ValueError(f"diffusion.steps (T) must be >= 2, got {self.steps}.")
        if not 0.0 < self.beta_1 < 1.0:
            raise ValueError(f"diffusion.beta_1 must lie in (0, 1), got {self.beta_1}.")
        choices = self.CHOICES["schedule_baseline"]
        cfg.require_choice(self, "diffusion.", "schedule_baseline", choices)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``model``: the normalised RBF network and its readout (``parameterisation.READOUTS``)."""

    HELP = {
        "num_hidden": "normalised Gaussian RBF units (one hidden layer, shared across t)",
        "rbf_init_width": "initial width of every RBF unit (units of the unit-variance data)",
        "readout": "how the network's (z_mu, z_Sigma) give the reverse kernel: paper = "
        "Eqs. 64-65, reference_code = the released code's variant",
    }
    #: {field: its allowed values}: what ``__post_init__`` accepts and ``--help`` lists.
    CHOICES = {"readout": parameterisation.READOUTS}

    num_hidden: int = 16
    rbf_init_width: float = 1.5
    readout: str = "reference_code"

    def __post_init__(self):
        cfg.require(self, "model.", ("num_hidden",), 1)
        cfg.require(self, "model.", ("rbf_init_width",), 0, strict=True)
        cfg.require_choice(self, "model.", "readout", self.CHOICES["readout"])


@dataclasses.dataclass(frozen=True)
class TrainConfig(cfg.TrainConfig):
    """``train``: the shared keys, the objective and the schedule's own learning rate."""

    HELP = {
        "learning_rate": "Adam's initial learning rate for the RBF network (cosine decay to "
        "1% over train.steps)",
        "objective": "the bound trained on: one_t = Eq. 14 with one t per example (weight "
        "T - 1), all_t = all T - 1 KL terms per example (lower variance, T times the cost)",
        "schedule_learning_rate": "Adam's initial learning rate for the learned schedule's "
        "logits (cosine decay like the network's)",
    }
    #: {field: its allowed values}: what ``__post_init__`` accepts and ``--help`` lists.
    CHOICES = {"objective": OBJECTIVES}

    objective: str = "one_t"
    schedule_learning_rate: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        cfg.require_choice(self, "train.", "objective", self.CHOICES["objective"])
        cfg.require(self, "train.", ("schedule_learning_rate",), 0, strict=True)


@dataclasses.dataclass(frozen=True)
class EvalConfig(cfg.EvalConfig):
    """``eval``: test points, figure samples and the schedule ceiling's sizes."""

    HELP = {
        "num_test": "test points (fresh from the generator) the exact bound K is evaluated on",
        "num_figure_samples": "points in Fig. 1's trajectories (forward: test points; "
        "reverse: samples)",
        "ceiling_examples": "first test points the schedule ceiling (the best Gaussian "
        "reverse kernel for this schedule) is evaluated on",
        "ceiling_reference_size": "fresh data points the ceiling's moment-matched kernel is "
        "fitted to",
    }

    num_figure_samples: int = 2_000
    ceiling_examples: int = 2_000
    ceiling_reference_size: int = 20_000

    def __post_init__(self):
        super().__post_init__()
        sizes = ("num_figure_samples", "ceiling_examples", "ceiling_reference_size")
        cfg.require(self, "eval.", sizes, 1)


@dataclasses.dataclass(frozen=True)
class Config:
    """Swiss roll run. ``diffusion.steps`` is the paper's T; ``train.steps`` counts optimiser steps."""

    HELP = {
        "seed": "the run's root PRNG seed: initialisation, training batches and noise, test "
        "points, evaluation and figures"
    }

    seed: int = 0
    data: DataConfig = DataConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig(
        batch_size=512,
        learning_rate=3e-3,
        steps=400_000,
        checkpoint_every=50_000,
        log_every=5_000,
    )
    # Ten forward trajectories per test point: one leaves K's standard error mostly Monte Carlo.
    eval: EvalConfig = EvalConfig(num_test=10_000, batch_size=10_000, forward_samples=10)


#: The ``small`` presets (tests, seconds on a CPU) of this and the DDPM Swiss roll.
SMALL_RUN = {
    "train.steps": 300,
    "train.checkpoint_every": 100,
    "train.log_every": 50,
    "eval.num_test": 500,
    "eval.num_figure_samples": 300,
    "eval.ceiling_examples": 200,
    "eval.ceiling_reference_size": 2_000,
}

PRESETS = {
    "default": Config(),
    "wide": cfg.replace(Config(), {"model.num_hidden": 64}),
    "small": cfg.replace(Config(), SMALL_RUN),
}
# Keys that may change when a run is resumed: bookkeeping only (train.steps also sets the
# learning-rate schedules, so changing it would change the run).
MUTABLE_KEYS = (
    "train.steps_per_call",
    "train.max_skipped_in_a_row",
    "train.checkpoint_every",
    "train.log_every",
    "eval.num_test",
    "eval.batch_size",
    "eval.num_figure_samples",
    "eval.ceiling_examples",
    "eval.ceiling_reference_size",
    "eval.forward_samples",
)
#: The flat keys of this experiment's config before sections -> dotted keys.
LEGACY_KEYS = {
    **cfg.LEGACY_KEYS,
    "beta_1": "diffusion.beta_1",
    "learn_schedule": "diffusion.learn_schedule",
    "schedule_baseline": "diffusion.schedule_baseline",
    "readout": "model.readout",
    "objective": "train.objective",
    "num_hidden": "model.num_hidden",
    "rbf_init_width": "model.rbf_init_width",
    "noise_std": "data.noise_std",
    "schedule_learning_rate": "train.schedule_learning_rate",
    "num_figure_samples": "eval.num_figure_samples",
    "ceiling_examples": "eval.ceiling_examples",
    "ceiling_reference_size": "eval.ceiling_reference_size",
}
