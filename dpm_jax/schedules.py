"""Forward diffusion-rate schedules beta_t, t = 1..T.

Every function returns a :class:`Schedule`: ``betas[t - 1]`` is the paper's
beta_t (the variance of the forward step x^(t-1) -> x^(t), Table App.1) and
``alphas_cumprod[t - 1]`` is abar_t = prod_{s <= t} (1 - beta_s). The 0-based
array index is converted to the paper's 1-based t here and nowhere else.

Schedules:
  * :func:`learned_schedule` -- the paper's Gaussian schedule (Sec. 2.4.1):
    beta_1 fixed small, beta_2..T a logistic perturbation of a baseline whose
    perturbation is a trainable parameter (gradient ascent on K through the
    reparameterised forward samples).
  * :func:`binomial_schedule` -- beta_t = 1 / (T - t + 1) (Sec. 2.4.1).
  * :func:`reference_code_schedule` -- the released 2015 code's fixed
    schedule (``model.py`` ``generate_beta_arr``).
  * :func:`linear_schedule` -- DDPM (Ho et al. 2020).
  * :func:`cosine_schedule` -- improved DDPM (Nichol & Dhariwal 2021).
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np


class Schedule(NamedTuple):
    """Forward rates over t = 1..T (index t - 1), both of shape (T,)."""

    betas: jax.Array
    alphas_cumprod: jax.Array

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]


def _check_num_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int | np.integer) or num_steps < 2:
        raise ValueError(
            f"num_steps T must be an integer >= 2 (got {num_steps!r}): the bound K of Eq. 14 "
            "needs at least one learned reverse step t = 2..T."
        )


def _check_beta(name: str, value: float) -> None:
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must lie strictly inside (0, 1) (got {value!r}).")


def from_betas(betas: jax.Array) -> Schedule:
    """Builds a :class:`Schedule` from beta_1..T (shape (T,)), values in (0, 1]."""
    betas = jnp.asarray(betas, dtype=jnp.float32)
    chex.assert_rank(betas, 1)
    if not isinstance(betas, jax.core.Tracer):
        b = np.asarray(betas)
        _check_num_steps(b.shape[0])
        if not (np.all(np.isfinite(b)) and np.all(b > 0) and np.all(b <= 1)):
            raise ValueError(
                "every beta_t must lie in (0, 1]; got min "
                f"{b.min():.3g}, max {b.max():.3g}. Check the schedule's parameters."
            )
    # cumprod in log space keeps abar_T accurate when it is tiny.
    log_alphas = jnp.log1p(-jnp.minimum(betas, 1.0 - 1e-7))
    alphas_cumprod = jnp.exp(jnp.cumsum(log_alphas))
    alphas_cumprod = jnp.where(jnp.cumsum(betas >= 1.0) > 0, 0.0, alphas_cumprod)
    return Schedule(betas=betas, alphas_cumprod=alphas_cumprod)


def reference_baseline(num_steps: int) -> np.ndarray:
    """The 2015 code's baseline 1 / linspace(T, 2, T): about 1/(T - t + 1), ending at 1/2.

    Keeping beta_T = 1/2 < 1 keeps logit(beta_t) finite for the Eq. 64 readout.
    """
    _check_num_steps(num_steps)
    return 1.0 / np.linspace(num_steps, 2.0, num_steps)


def binomial_schedule(num_steps: int) -> Schedule:
    """beta_t = 1 / (T - t + 1), erasing a fraction 1/T of the signal per step (Sec. 2.4.1).

    beta_T = 1: the last step forgets x^(0) entirely (abar_T = 0).
    """
    _check_num_steps(num_steps)
    t = np.arange(1, num_steps + 1)
    return from_betas(1.0 / (num_steps - t + 1.0))


def reference_code_schedule(num_steps: int, step1_beta: float = 1e-3) -> Schedule:
    """The released 2015 code's fixed schedule (``generate_beta_arr``, perturbation zero).

    beta = m + baseline * (1 - m - 1e-5) with m = 1e-6 everywhere and 1e-6 + step1_beta at t = 1.
    For T = 1000 this gives beta_1 = 0.0020, beta_2 = 0.0010, beta_T = 0.49999.
    """
    _check_num_steps(num_steps)
    _check_beta("step1_beta", step1_beta)
    min_beta = np.full((num_steps,), 1e-6)
    min_beta[0] += step1_beta
    betas = min_beta + reference_baseline(num_steps) * (1.0 - min_beta - 1e-5)
    return from_betas(betas)


def linear_schedule(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """DDPM's linear schedule (Ho et al. 2020, Sec. 4), beta from beta_start to beta_end."""
    _check_num_steps(num_steps)
    _check_beta("beta_start", beta_start)
    _check_beta("beta_end", beta_end)
    return from_betas(np.linspace(beta_start, beta_end, num_steps))


def cosine_schedule(num_steps: int, offset: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Improved DDPM's cosine schedule (Nichol & Dhariwal 2021, Eq. 17), betas clipped at max_beta."""
    _check_num_steps(num_steps)
    _check_beta("max_beta", max_beta)
    s = np.arange(num_steps + 1) / num_steps
    f = np.cos((s + offset) / (1.0 + offset) * np.pi / 2.0) ** 2
    betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, max_beta)
    return from_betas(betas)


def init_learned_perturbation(num_steps: int) -> jax.Array:
    """Zero logit perturbation for beta_2..T, shape (T - 1,): starts at the baseline."""
    _check_num_steps(num_steps)
    return jnp.zeros((num_steps - 1,), jnp.float32)


def geometric_baseline(num_steps: int, beta_1: float, final_noise_var: float = 0.999) -> np.ndarray:
    """beta_1..T whose forward noise variance 1 - abar_t grows geometrically.

    1 - abar_t = beta_1 * r^(t - 1) from beta_1 at t = 1 to ``final_noise_var``
    at t = T, so every step removes the same fraction of the remaining
    signal-to-noise ratio in log space. Shape (T,).
    """
    _check_num_steps(num_steps)
    _check_beta("beta_1", beta_1)
    _check_beta("final_noise_var", final_noise_var)
    if final_noise_var <= beta_1:
        raise ValueError(f"final_noise_var ({final_noise_var}) must exceed beta_1 ({beta_1}).")
    noise_var = beta_1 * (final_noise_var / beta_1) ** (np.arange(num_steps) / (num_steps - 1))
    alphas_cumprod = 1.0 - noise_var
    return 1.0 - alphas_cumprod / np.concatenate([[1.0], alphas_cumprod[:-1]])


BASELINES = ("reference", "geometric")


def learned_schedule(
    perturbation: jax.Array, beta_1: float, baseline: str = "reference"
) -> Schedule:
    """The paper's Gaussian schedule (Sec. 2.4.1), differentiable in ``perturbation``.

    beta_1 is fixed (a small constant that prevents overfitting); for t = 2..T,
    beta_t = sigmoid(logit(baseline_t) + perturbation[t - 2]). The baseline is
    the reference code's 1 / linspace(T, 2, T) (``"reference"``) or
    :func:`geometric_baseline` (``"geometric"``). A logistic perturbation keeps
    every beta_t inside (0, 1) for any parameter value.

    Args:
      perturbation: shape (T - 1,), trainable logits (zeros give the baseline).
      beta_1: the fixed first-step variance, in (0, 1).
      baseline: ``"reference"`` or ``"geometric"``.
    """
    chex.assert_rank(perturbation, 1)
    _check_beta("beta_1", beta_1)
    num_steps = perturbation.shape[0] + 1
    if baseline == "reference":
        base = reference_baseline(num_steps)[1:]
    elif baseline == "geometric":
        base = geometric_baseline(num_steps, beta_1)[1:]
    else:
        raise ValueError(f"unknown baseline {baseline!r}; choose one of {BASELINES}.")
    logits = jnp.log(base / (1.0 - base)) + perturbation
    # Clipped so that float32 never rounds beta_t to 1 (logit beta_t must stay finite).
    learned = jnp.clip(jax.nn.sigmoid(logits), 1e-8, 1.0 - 1e-6)
    betas = jnp.concatenate([jnp.array([beta_1], jnp.float32), learned])
    return from_betas(betas)


def alpha_bar(schedule: Schedule, t: jax.Array) -> jax.Array:
    """abar_t = prod_{s<=t} (1 - beta_s), with abar_0 = 1; t of any integer shape."""
    t = jnp.asarray(t, jnp.int32)
    return jnp.where(t == 0, 1.0, schedule.alphas_cumprod[jnp.maximum(t, 1) - 1])


def beta(schedule: Schedule, t: jax.Array) -> jax.Array:
    """beta_t for 1-based t of any integer shape."""
    return schedule.betas[jnp.asarray(t, jnp.int32) - 1]
