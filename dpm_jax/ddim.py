"""DDIM sampling (Song, Meng & Ermon 2021, Eq. 12) on the one chain driver, for epsilon-models.

With x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), one step from t to t - 1 of
a (possibly respaced, ``chain.respace``) schedule is

  x_(t-1) = sqrt(abar_(t-1)) x0_hat + sqrt(1 - abar_(t-1) - sigma_t^2) eps_hat + sigma_t z,
  sigma_t = eta sqrt((1 - abar_(t-1)) / (1 - abar_t)) sqrt(1 - abar_t / abar_(t-1)),

abar_0 = 1. eta = 0 is deterministic (the implicit model); eta = 1 gives sigma_t^2 = beta~_t,
DDPM's ancestral sampler with the posterior variance (in distribution). The last step
(t = 1) returns x0_hat. ADM's Algorithm 2 (classifier guidance) shifts eps_hat before the
step; that is the caller's ``eps_fn``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from dpm_jax import chain, parameterisation, validation
from dpm_jax.schedules import Schedule

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


def _check_eta(eta) -> float:
    eta = float(eta)
    if not (math.isfinite(eta) and eta >= 0.0):
        raise ValueError(f"eta must be finite and >= 0 (0: deterministic DDIM), got {eta}.")
    return eta


def _x0_and_eps(schedule: Schedule, eps_fn: EpsFn, x_t, t_batch, clip_x0):
    """(x0_hat, eps_hat) at x_t; with ``clip_x0 = (low, high)`` x0_hat is clipped and eps_hat
    re-derived from it (the released code's ``clip_denoised`` for DDIM)."""
    eps = eps_fn(x_t, t_batch)
    x0 = parameterisation.x0_from_eps(schedule, x_t, t_batch, eps)
    if clip_x0 is not None:
        x0 = jnp.clip(x0, *clip_x0)
        eps = parameterisation.eps_from_x0(schedule, x_t, t_batch, x0)
    return x0, eps


def step(schedule: Schedule, eps_fn: EpsFn, x_t, t, key, eta: float, clip_x0=None) -> jax.Array:
    """One DDIM step x_t -> x_(t-1) (Eq. 12) at the 1-based step t >= 2 (int32 scalar);
    x_t (N, *event). ``clip_x0``: see :func:`sample`."""
    ab = schedule.alphas_cumprod
    ab_t, ab_prev = ab[t - 1], ab[t - 2]
    t_batch = jnp.full((x_t.shape[0],), t, jnp.int32)
    x0, eps = _x0_and_eps(schedule, eps_fn, x_t, t_batch, clip_x0)
    sigma = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev))
    direction = jnp.sqrt(jnp.maximum(1.0 - ab_prev - sigma**2, 0.0)) * eps
    noise = sigma * jax.random.normal(key, x_t.shape, x_t.dtype)
    return jnp.sqrt(ab_prev) * x0 + direction + noise


def sample(
    schedule: Schedule,
    eps_fn: EpsFn,
    key: chex.PRNGKey,
    shape: tuple[int, ...],
    *,
    eta: float = 0.0,
    timestep_map: jax.Array | None = None,
    clip_x0: tuple[float, float] | None = None,
    return_trajectory: bool = False,
):
    """DDIM samples of shape ``shape`` (N, *event): x^(S) ~ N(0, I), :func:`step` for
    t = S..2, x0_hat at t = 1.

    ``schedule`` of S steps is the model's or a respaced one (``chain.respace(schedule,
    kept)`` returns it and ``timestep_map``; the model then sees the original step
    ``timestep_map[t - 1]``). ``eps_fn(x, t)``: the epsilon prediction
    (``parameterisation.eps_model`` turns a model function into it, refusing a model
    without one). ``clip_x0 = (low, high)``: x0_hat clipped to the data's range at every
    step and eps_hat re-derived from it, as the released code samples DDIM (and as DDPM's
    ancestral sampler clips). Returns x^(0), or (x^(0), trajectory indexed by t).
    """
    eta = _check_eta(eta)
    if clip_x0 is not None and not clip_x0[0] < clip_x0[1]:
        raise ValueError(f"clip_x0 must be (low, high) with low < high, got {clip_x0}.")
    model_eps = eps_fn
    if timestep_map is not None:
        chex.assert_shape(timestep_map, (schedule.num_steps,))
        steps = jnp.asarray(timestep_map)

        def model_eps(x, t):  # the respaced model sees its original timesteps
            return eps_fn(x, steps[t - 1])

    def final(x1, key):
        t_1 = jnp.ones((x1.shape[0],), jnp.int32)
        return _x0_and_eps(schedule, model_eps, x1, t_1, clip_x0)[0]

    out = chain.run(
        lambda k: jax.random.normal(k, shape, jnp.float32),
        lambda x, t, k: step(schedule, model_eps, x, t, k, eta, clip_x0),
        final,
        key,
        schedule.num_steps,
        return_trajectory=return_trajectory,
    )
    validation.check_finite_result(
        out, "the DDIM samples", "Check eps_fn's output and that it was trained on this schedule."
    )
    return out
