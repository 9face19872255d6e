"""DDPM on the Swiss roll: an epsilon-MLP trained with L_simple, its exact bound beside the truth.

  python -m experiments.ddpm_swiss_roll --workdir runs/ddpm_swiss_roll            # T = 40
  python -m experiments.ddpm_swiss_roll --workdir runs/ddpm_swiss_roll_t1000 --preset t1000

The 2015 Swiss roll (``experiments.swiss_roll``) with DDPM's recipe in place of the 2015
model: epsilon prediction (DDPM Eq. 11) by a small MLP conditioned on t
(``dpm_jax.models.EpsilonMLP``), L_simple (Eq. 14), the linear schedule scaled to T (beta
from 1e-4 1000/T to 0.02 1000/T, improved DDPM's rule for T other than 1000), fixed
reverse variances, Adam with gradient clipping and an EMA of the parameters. Same data,
same test points and the same exact evaluation as the 2015 run: K (every KL term t =
2..T, Eq. 44's fixed first step and the prior term, bits per 2-D point), the true
log-likelihood of the generator's density and the gap, and the schedule ceiling.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from dpm_jax import gaussian, objectives, optim, parameterisation, schedules, terms
from dpm_jax.models import EpsilonMLP
from experiments import common, ddpm_config, swiss_roll
from experiments import config as cfg
from experiments import swiss_roll_config as src

DESCRIPTION = __doc__.splitlines()[0]
UNITS = swiss_roll.UNITS
VARIANCES = ddpm_config.VARIANCES


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """``diffusion``: T, DDPM's linear schedule (given at T = 1000, scaled to T) and the variance."""

    HELP = {
        **{k: ddpm_config.DDPMDiffusionConfig.HELP[k] for k in ("steps", "variance")},
        "beta_start": "beta_1 of the linear schedule at T = 1000; multiplied by 1000 / T",
        "beta_end": "beta_T of the linear schedule at T = 1000; multiplied by 1000 / T",
    }
    CHOICES = {"variance": VARIANCES}

    steps: int = 40
    beta_start: float = 1e-4
    beta_end: float = 0.02
    variance: str = "fixed_large"

    def __post_init__(self):
        cfg.require_choice(self, "diffusion.", "variance", VARIANCES)
        if self.steps < 2:
            raise ValueError(f"diffusion.steps (T) must be >= 2, got {self.steps}.")
        scale = 1000 / self.steps
        if not (0.0 < self.beta_start <= self.beta_end and self.beta_end * scale < 1.0):
            raise ValueError(
                "the scaled linear schedule needs 0 < diffusion.beta_start <= "
                f"diffusion.beta_end and beta_end * 1000 / T < 1; got {self.beta_start}, "
                f"{self.beta_end} and T = {self.steps} (beta_T = {self.beta_end * scale:.3g}). "
                "Use a larger T or a smaller beta_end."
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``model``: the epsilon-MLP (``dpm_jax.models.EpsilonMLP``)."""

    HELP = {
        "num_hidden": "units per hidden layer",
        "num_layers": "hidden swish layers, each with the time embedding added",
        "embedding_dim": "size of the sinusoidal timestep embedding (even, >= 4)",
    }

    num_hidden: int = 128
    num_layers: int = 3
    embedding_dim: int = 64

    def __post_init__(self):
        cfg.require(self, "model.", ("num_hidden", "num_layers"), 1)
        if self.embedding_dim < 4 or self.embedding_dim % 2:
            raise ValueError(
                f"model.embedding_dim must be even and >= 4, got {self.embedding_dim}."
            )


@dataclasses.dataclass(frozen=True)
class TrainConfig(cfg.TrainConfig):
    """``train``: the shared keys; Adam with cosine decay to 1 % over train.steps."""

    HELP = {"learning_rate": "Adam's initial learning rate (cosine decay to 1% over train.steps)"}


@dataclasses.dataclass(frozen=True)
class Config:
    """A DDPM Swiss roll run; ``data`` and ``eval`` are the 2015 Swiss roll's sections."""

    HELP = {"seed": "the run's root PRNG seed (the 2015 run's test points for the same seed)"}

    seed: int = 0
    data: src.DataConfig = src.DataConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig(
        batch_size=512,
        learning_rate=1e-3,
        steps=400_000,
        checkpoint_every=50_000,
        log_every=5_000,
        ema_decay=0.999,
        grad_clip_norm=1.0,
    )
    eval: src.EvalConfig = src.Config().eval


PRESETS = {
    "default": Config(),
    "t1000": cfg.replace(Config(), {"diffusion.steps": 1000}),
    "small": cfg.replace(Config(), src.SMALL_RUN),
}
MUTABLE_KEYS = src.MUTABLE_KEYS


def schedule(config: Config) -> schedules.Schedule:
    """DDPM's linear schedule with both ends scaled by 1000 / T (improved DDPM's rule)."""
    d = config.diffusion
    scale = 1000 / d.steps
    return schedules.linear_schedule(d.steps, d.beta_start * scale, d.beta_end * scale)


def _model(config: Config) -> EpsilonMLP:
    m = config.model
    return EpsilonMLP(
        num_hidden=m.num_hidden, num_layers=m.num_layers, embedding_dim=m.embedding_dim
    )


def init_params(config: Config, key: jax.Array) -> dict:
    dummy = jnp.zeros((1, 2), jnp.float32)
    return _model(config).init(key, dummy, jnp.ones((1,), jnp.int32))["params"]


def eps_fn(config: Config, params: dict):
    """``(x_t (N, 2), t (N,)) -> eps_hat (N, 2)``, t on the 1..T scale (floats allowed)."""
    model = _model(config)
    return lambda x_t, t: model.apply({"params": params}, x_t, t)


def reverse_fn(config: Config, params: dict, sched: schedules.Schedule) -> gaussian.ReverseFn:
    """``(x_t, t) -> Kernel``: eps_hat through DDPM Eq. 11 with the fixed variance."""
    param = parameterisation.Parameterisation("epsilon", config.diffusion.variance)
    return parameterisation.make_reverse_fn(param, sched, eps_fn(config, params))


def loss_fn(config: Config, params: dict, batch: jax.Array, key: jax.Array):
    """L_simple: the mean over examples and both coordinates of |eps - eps_hat|^2."""
    mse = jnp.mean(objectives.l_simple(schedule(config), eps_fn(config, params), batch, key))
    return mse, {"l_simple": mse}


def make_optimizer(config: Config) -> optax.GradientTransformation:
    train = config.train
    tx = optax.adam(optax.cosine_decay_schedule(train.learning_rate, max(train.steps, 1), 0.01))
    return optim.with_warmup_and_clipping(
        tx, warmup_steps=train.warmup_steps, clip_norm=train.grad_clip_norm
    )


def exact_bound_fn(config: Config, params: dict):
    """A jitted ``(x0, key) -> {"K", *terms.TERM_NAMES}``, bits per point, all t summed."""
    sched = schedule(config)
    fn = reverse_fn(config, params, sched)
    return jax.jit(lambda x0, key: terms.in_bits(gaussian.bound_terms(sched, fn, x0, key)))


class DDPMSwissRollExperiment(common.Experiment):
    """DDPM's epsilon-model on the Swiss roll (``python -m experiments.ddpm_swiss_roll``)."""

    name = "ddpm_swiss_roll"
    description = DESCRIPTION
    units = UNITS
    paper = {"source": "no published number: compare with experiments.swiss_roll"}
    config_class = Config
    presets = PRESETS
    mutable_keys = MUTABLE_KEYS
    legacy_keys: dict = {}  # no run of it predates sectioned configs

    def run(self, config: Config, workdir: Path, eval_only: bool = False) -> dict:
        start_time = time.time()
        state, keys = common.train_on_generator(
            self,
            config,
            workdir,
            eval_only,
            swiss_roll.dataset(config),
            init_params=init_params,
            make_optimizer=make_optimizer,
            loss_fn=loss_fn,
        )

        def build(params):
            sched = schedule(config)
            title = f"{swiss_roll.data_title(config)}, DDPM epsilon-MLP, T = {sched.num_steps}"
            return sched, reverse_fn(config, params, sched), exact_bound_fn(config, params), title

        return swiss_roll.evaluate_run(
            self, config, workdir, eval_only, state, keys, build, start_time
        )

    def report(self, results: dict) -> str:
        r = results
        return "\n".join(
            [
                f"{swiss_roll.TITLES[r.get('data', 'swiss_roll')]}, DDPM epsilon-MLP, T = {r['T']}, {r['train_steps']} training steps, "
                f"{r['num_test_examples']} test points",
                f"  K (exact holdout bound)  = {r['K']:.3f} +- {r['K_stderr']:.3f} {UNITS}",
                f"  true log-likelihood      = {r['true_log_likelihood']:.3f} +- "
                f"{r['true_log_likelihood_stderr']:.3f} (exact density)",
                f"  gap true - K             = {r['gap_true_minus_K']:.3f} +- "
                f"{r['gap_true_minus_K_stderr']:.3f}",
                f"  schedule ceiling         = {r['K_schedule_ceiling']:.3f} +- "
                f"{r['K_schedule_ceiling_stderr']:.3f} (best Gaussian reverse kernel)",
                f"  wall time {r['wall_seconds']:.0f} s; figure: {r['figures'][0]}",
            ]
        )


experiment = DDPMSwissRollExperiment()


def main(argv: list[str] | None = None) -> None:
    experiment.main(argv)


if __name__ == "__main__":
    main()
