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
    """``data``: the generator (``dpm_jax.data.SwissRoll``)."""

    noise_std: float = 0.25

    def __post_init__(self):
        cfg.require(self, "data.", ("noise_std",), 0, strict=True)


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """``diffusion``: T (``steps``) and the schedule, beta_1 fixed and beta_2..T learned."""

    steps: int = 40
    beta_1: float = 1e-4
    learn_schedule: bool = True
    schedule_baseline: str = "geometric"

    def __post_init__(self):
        if self.steps < 2:
            raise ValueError(f"diffusion.steps (T) must be >= 2, got {self.steps}.")
        if not 0.0 < self.beta_1 < 1.0:
            raise ValueError(f"diffusion.beta_1 must lie in (0, 1), got {self.beta_1}.")
        cfg.require_choice(self, "diffusion.", "schedule_baseline", schedules.BASELINES)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``model``: the normalised RBF network and its readout (``parameterisation.READOUTS``)."""

    num_hidden: int = 16
    rbf_init_width: float = 1.5
    readout: str = "reference_code"

    def __post_init__(self):
        cfg.require(self, "model.", ("num_hidden",), 1)
        cfg.require(self, "model.", ("rbf_init_width",), 0, strict=True)
        cfg.require_choice(self, "model.", "readout", parameterisation.READOUTS)


@dataclasses.dataclass(frozen=True)
class TrainConfig(cfg.TrainConfig):
    """``train``: the shared keys, the objective and the schedule's own learning rate."""

    objective: str = "one_t"
    schedule_learning_rate: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        cfg.require_choice(self, "train.", "objective", OBJECTIVES)
        cfg.require(self, "train.", ("schedule_learning_rate",), 0, strict=True)


@dataclasses.dataclass(frozen=True)
class EvalConfig(cfg.EvalConfig):
    """``eval``: test points, figure samples and the schedule ceiling's sizes."""

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


PRESETS = {
    "default": Config(),
    "wide": cfg.replace(Config(), {"model.num_hidden": 64}),
    "small": cfg.replace(
        Config(),
        {
            "train.steps": 300,
            "train.checkpoint_every": 100,
            "train.log_every": 50,
            "eval.num_test": 500,
            "eval.num_figure_samples": 300,
            "eval.ceiling_examples": 200,
            "eval.ceiling_reference_size": 2_000,
        },
    ),
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
