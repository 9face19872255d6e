"""Binary heartbeat (Sec. 3.1.2, App. D.1.2, Fig. 2): binomial diffusion on 20-bit sequences.

  python -m experiments.binary_heartbeat --workdir runs/binary_heartbeat

T = 2000 steps of binomial diffusion towards Bernoulli(0.2) (the data's mean
rate) with beta_t = 1/(T - t + 1); the paper's MLP (three hidden layers of 50
sigmoid units shared across time, a readout per step). The reverse rates
perturb the forward kernel's rate in logit space (cf. Eq. 64). Reports the
exact holdout K (bits per sequence) next to the truth, log2(1/5), and the
ceiling of the best factorised reverse kernel with this schedule.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpm_jax import (
    binomial,
    evaluation,
    likelihood,
    optim,
    plotting,
    schedules,
    terms,
    train_state,
)
from dpm_jax.data import Heartbeat
from dpm_jax.models import HeartbeatMLP
from experiments import common
from experiments import config as cfg

DESCRIPTION = __doc__.splitlines()[0]
UNITS = "bits per 20-bit sequence (no scaling)"
PAPER = {"K": -2.414, "K_minus_L_null": 12.024, "source": "Table 1"}


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """``diffusion``: T (``steps``) of binomial diffusion towards Bernoulli(``pi``)."""

    HELP = {
        "steps": "T, the number of binomial diffusion steps (beta_t = 1/(T - t + 1))",
        "pi": "rate of the Bernoulli distribution the forward diffusion ends at (the data's "
        "mean rate is 0.2)",
    }

    steps: int = 2000
    pi: float = 0.2

    def __post_init__(self):
        if self.steps < 2:
            raise ValueError(f"diffusion.steps (T) must be >= 2, got {self.steps}.")
        if not 0.0 < self.pi < 1.0:
            raise ValueError(f"diffusion.pi must lie in (0, 1), got {self.pi}.")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``model``: the MLP; ``readout_basis`` bumps (0: a free readout per step)."""

    HELP = {
        "num_hidden": "sigmoid units per hidden layer (shared across t)",
        "num_layers": "hidden layers of the MLP",
        "readout_basis": "J, Gaussian bumps in t the per-step readout weights are combined "
        "from (0: a free readout per step; else >= 2)",
    }

    num_hidden: int = 50
    num_layers: int = 3
    readout_basis: int = 25

    def __post_init__(self):
        cfg.require(self, "model.", ("num_hidden", "num_layers"), 1)
        if self.readout_basis == 1 or self.readout_basis < 0:
            raise ValueError(
                "model.readout_basis must be 0 (a free readout per step) or >= 2, got "
                f"{self.readout_basis}."
            )


@dataclasses.dataclass(frozen=True)
class TrainConfig(cfg.TrainConfig):
    """``train``: the shared keys and stratified sampling of t."""

    HELP = {
        "learning_rate": "Adam's initial learning rate (cosine decay to 1% over train.steps)",
        "stratified_t": "spread each batch's t evenly over 2..T (false: independent uniform draws)",
    }

    stratified_t: bool = True


@dataclasses.dataclass(frozen=True)
class EvalConfig(cfg.EvalConfig):
    """``eval``: test sequences, and samples for the figure and the validity check."""

    HELP = {
        "num_test": "test sequences (fresh from the generator) the exact bound K is evaluated on",
        "num_figure_samples": "samples Fig. 2 shows next to their initial noise",
        "num_validity_samples": "samples drawn to measure the fraction of valid heartbeats "
        "(at least eval.num_figure_samples are drawn)",
    }

    num_figure_samples: int = 40
    num_validity_samples: int = 2_000

    def __post_init__(self):
        super().__post_init__()
        cfg.require(self, "eval.", ("num_figure_samples", "num_validity_samples"), 1)


@dataclasses.dataclass(frozen=True)
class Config:
    """Heartbeat run. ``diffusion.steps`` is the paper's T; ``train.steps`` counts optimiser steps."""

    HELP = {
        "seed": "the run's root PRNG seed: initialisation, training batches and noise, test "
        "sequences, evaluation and figures"
    }

    seed: int = 0
    diffusion: DiffusionConfig = DiffusionConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig(
        batch_size=2_000,
        learning_rate=1e-2,
        steps=100_000,
        checkpoint_every=10_000,
        log_every=1_000,
    )
    eval: EvalConfig = EvalConfig(num_test=2_000, batch_size=1_000, forward_samples=10)


PRESETS = {
    "default": Config(),
    "small": cfg.replace(
        Config(),
        {
            "diffusion.steps": 50,
            "train.steps": 300,
            "train.checkpoint_every": 100,
            "train.log_every": 50,
            "eval.num_test": 200,
            "eval.num_figure_samples": 10,
        },
    ),
}
MUTABLE_KEYS = (
    "train.steps_per_call",
    "train.max_skipped_in_a_row",
    "train.checkpoint_every",
    "train.log_every",
    "eval.num_test",
    "eval.batch_size",
    "eval.num_figure_samples",
    "eval.num_validity_samples",
    "eval.forward_samples",
)
#: The flat keys of this experiment's config before sections -> dotted keys.
LEGACY_KEYS = {
    **cfg.LEGACY_KEYS,
    "pi": "diffusion.pi",
    "num_hidden": "model.num_hidden",
    "num_layers": "model.num_layers",
    "readout_basis": "model.readout_basis",
    "stratified_t": "train.stratified_t",
    "num_figure_samples": "eval.num_figure_samples",
    "num_validity_samples": "eval.num_validity_samples",
}


def _model(config: Config) -> HeartbeatMLP:
    model = config.model
    return HeartbeatMLP(
        config.diffusion.steps, model.num_hidden, model.num_layers, model.readout_basis
    )


def init_params(config: Config, key: jax.Array) -> dict:
    dummy = jnp.zeros((1, Heartbeat().length), jnp.float32)
    return _model(config).init(key, dummy, jnp.ones((1,), jnp.int32))["params"]


def reverse_fn_from_params(config: Config, params: dict, schedule: schedules.Schedule):
    """``(x_t, t) -> rates``: the MLP's logits perturb the forward kernel's rate."""
    model = _model(config)

    def reverse_fn(x_t, t):
        z = model.apply({"params": params}, x_t, t)
        return binomial.forward_logit_readout(
            x_t, z, schedules.beta(schedule, t)[:, None], config.diffusion.pi
        )

    return reverse_fn


def loss_fn(config: Config, params: dict, batch: jax.Array, key: jax.Array):
    """-K per sequence (bits), one-t estimate with weight T - 1."""
    schedule = schedules.binomial_schedule(config.diffusion.steps)
    fn = reverse_fn_from_params(config, params, schedule)
    k = binomial.bound_estimate(
        schedule, fn, batch, config.diffusion.pi, key, stratified=config.train.stratified_t
    )
    return -jnp.mean(k), {"K_estimate": jnp.mean(k)}


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam with cosine decay; optional clipping and warmup (``dpm_jax.optim``)."""
    train = config.train
    steps = max(train.steps, 1)
    tx = optax.adam(optax.cosine_decay_schedule(train.learning_rate, steps, alpha=0.01))
    return optim.with_warmup_and_clipping(
        tx, warmup_steps=train.warmup_steps, clip_norm=train.grad_clip_norm
    )


def _exact(config: Config, schedule, fn, x, key, desc) -> dict:
    """Exact K and its terms for every example of ``x`` (bits, ``terms.in_bits``), example i
    with keys folded from i, averaged over ``eval.forward_samples`` forward trajectories."""
    bound = evaluation.per_example_keys(
        lambda x0, k: terms.in_bits(binomial.bound_terms(schedule, fn, x0, config.diffusion.pi, k))
    )
    bound = evaluation.averaged_over_draws(bound, config.eval.forward_samples)
    return evaluation.evaluate(bound, x, key, batch_size=config.eval.batch_size, desc=desc)


def evaluate(config: Config, params: dict, test_x: np.ndarray, keys: dict) -> dict:
    """Exact holdout K, the ceiling, L_null and the truth, with standard errors (bits/sequence)."""
    data = Heartbeat()
    pi = config.diffusion.pi
    schedule = schedules.binomial_schedule(config.diffusion.steps)
    values = _exact(
        config,
        schedule,
        reverse_fn_from_params(config, params, schedule),
        test_x,
        keys["eval"],
        "exact K",
    )
    k = values["K"]
    ceiling_fn = binomial.moment_matched_rates(schedule, jnp.asarray(data.sequences()), pi)
    ceiling = _exact(config, schedule, ceiling_fn, test_x, keys["ceiling"], "ceiling")["K"]
    null = np.asarray(binomial.null_log_likelihood(jnp.asarray(test_x), pi), np.float64)
    k_mean, k_se = likelihood.mean_and_stderr(k)
    c_mean, c_se = likelihood.mean_and_stderr(ceiling)
    kn_mean, kn_se = likelihood.mean_and_stderr(k - null)
    truth = data.true_log_likelihood
    return {
        "K": k_mean,
        "K_stderr": k_se,
        "K_kind": common.exact_kind(config.eval.forward_samples),
        "forward_samples": config.eval.forward_samples,
        "bound_terms": common.bound_terms_results(values, UNITS),
        "L_null": float(null.mean()),
        "K_minus_L_null": kn_mean,
        "K_minus_L_null_stderr": kn_se,
        "true_log_likelihood": truth,
        "true_log_likelihood_kind": "exact: log2(1/5), every valid sequence",
        "gap_true_minus_K": truth - k_mean,
        "gap_true_minus_K_stderr": k_se,
        "K_schedule_ceiling": c_mean,
        "K_schedule_ceiling_stderr": c_se,
        "K_schedule_ceiling_kind": "exact bound of the best factorised Bernoulli reverse kernel "
        "(moment matched to the 5 sequences) with this schedule, same test set",
    }


def sample_and_plot(config: Config, params: dict, key: jax.Array, path: Path) -> tuple:
    """Fig. 2: samples next to the initial noise.

    Draws ``eval.num_validity_samples`` sequences (at least as many as the figure shows) and
    returns (fraction of valid heartbeats, its standard error, number drawn); the figure
    shows the first ``eval.num_figure_samples``.
    """
    schedule = schedules.binomial_schedule(config.diffusion.steps)
    fn = reverse_fn_from_params(config, params, schedule)
    count = max(config.eval.num_validity_samples, config.eval.num_figure_samples)
    shape = (count, Heartbeat().length)
    pi = config.diffusion.pi
    sampler = jax.jit(lambda k: binomial.sample(schedule, fn, k, shape, pi, return_trajectory=True))
    x0, trajectory = sampler(key)
    x0, x_T = np.asarray(x0), np.asarray(trajectory[-1])
    shown = config.eval.num_figure_samples
    plotting.heartbeat_figure(path, x0[:shown], x_T[:shown])
    fraction, stderr = likelihood.mean_and_stderr(Heartbeat().is_valid(x0).astype(np.float64))
    return fraction, stderr, count


def run(config: Config, workdir: Path, eval_only: bool = False) -> dict:
    """Trains (resuming from ``workdir``), evaluates the exact K, writes results and the figure."""
    start_time = time.time()
    workdir = Path(workdir)
    data = Heartbeat()
    state, keys = common.train_on_generator(
        experiment,
        config,
        workdir,
        eval_only,
        data,
        init_params=init_params,
        make_optimizer=make_optimizer,
        loss_fn=loss_fn,
    )
    test_x = np.asarray(data.sample(keys["test_data"], config.eval.num_test))
    params = train_state.eval_params(state, config.train.ema_decay)
    results = evaluate(config, params, test_x, keys)
    out = common.output_dir(workdir, eval_only)
    figure = out / "figures" / "binary_heartbeat_fig2.png"
    fraction, stderr, count = sample_and_plot(config, params, keys["figure"], figure)
    results["valid_sample_fraction"] = fraction
    results["valid_sample_fraction_stderr"] = stderr
    results["num_samples"] = count
    # The same check for the best factorised kernel: no factorised model samples only
    # valid heartbeats at this T.
    schedule = schedules.binomial_schedule(config.diffusion.steps)
    pi = config.diffusion.pi
    ceiling_fn = binomial.moment_matched_rates(schedule, jnp.asarray(data.sequences()), pi)
    shape = (count, data.length)
    ceiling_x = jax.jit(lambda k: binomial.sample(schedule, ceiling_fn, k, shape, pi))(
        keys["ceiling"]
    )
    valid = data.is_valid(np.asarray(ceiling_x)).astype(np.float64)
    results["ceiling_valid_sample_fraction"], results["ceiling_valid_sample_fraction_stderr"] = (
        likelihood.mean_and_stderr(valid)
    )
    return common.write_results(
        experiment,
        config,
        workdir,
        results,
        state=state,
        num_test=len(test_x),
        start_time=start_time,
        figures=[figure],
        outdir=out,
    )


def report(results: dict) -> str:
    r = results
    return "\n".join(
        [
            f"Binary heartbeat, T = {r['T']}, {r['train_steps']} training steps, "
            f"{r['num_test_examples']} test sequences",
            f"  K (exact holdout bound)  = {r['K']:.3f} +- {r['K_stderr']:.3f} {UNITS}   "
            f"[paper: {PAPER['K']}]",
            f"  K - L_null               = {r['K_minus_L_null']:.3f} +- {r['K_minus_L_null_stderr']:.3f}"
            f"   [paper: {PAPER['K_minus_L_null']}]",
            f"  true log-likelihood      = {r['true_log_likelihood']:.3f} (exact)",
            f"  schedule ceiling         = {r['K_schedule_ceiling']:.3f} +- "
            f"{r['K_schedule_ceiling_stderr']:.3f} (best factorised reverse kernel, this schedule)",
            f"  gap ceiling - K          = {r['K_schedule_ceiling'] - r['K']:.3f}",
            f"  valid samples            = {r['valid_sample_fraction']:.1%} +- "
            f"{r['valid_sample_fraction_stderr']:.1%} of {r['num_samples']} "
            f"(best factorised kernel: {r['ceiling_valid_sample_fraction']:.1%})",
            f"  wall time {r['wall_seconds']:.0f} s; figure: {r['figures'][0]}",
        ]
    )


class BinaryHeartbeatExperiment(common.Experiment):
    """The binary heartbeat experiment (``python -m experiments.binary_heartbeat``)."""

    name = "binary_heartbeat"
    description = DESCRIPTION
    units = UNITS
    paper = PAPER
    config_class = Config
    presets = PRESETS
    mutable_keys = MUTABLE_KEYS
    legacy_keys = LEGACY_KEYS

    def run(self, config: Config, workdir: Path, eval_only: bool = False) -> dict:
        return run(config, workdir, eval_only)

    def report(self, results: dict) -> str:
        return report(results)


experiment = BinaryHeartbeatExperiment()


def main(argv: list[str] | None = None) -> None:
    experiment.main(argv)


if __name__ == "__main__":
    main()
