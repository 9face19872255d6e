"""The importance-weighted bound K_M of Gaussian diffusion (2015 Eq. 9 with M samples).

Eq. 9 writes p(x0) = E_q[p(x^(0..T)) / q(x^(1..T) | x0)] over forward trajectories. With M
trajectories per example, K_M = E[log (1/M) sum_m w_m], w_m = p(x^(0..T)_m) /
q(x^(1..T)_m | x0), is a lower bound on log p(x0) that rises with M towards it (Burda et al.
2016, importance-weighted autoencoders); K_1 has the expectation of the t-summed K of
``gaussian.bound_exact``. One compiled program: a ``lax.scan`` over t walks all N * M
trajectories at once, accumulating each log-weight, so memory does not grow with T.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from dpm_jax import discretized, gaussian, likelihood, validation
from dpm_jax.schedules import Schedule
from dpm_jax.shapes import event_sum


def _log_prior(x) -> jax.Array:
    """log pi(x) for pi = N(0, I), nats, (N,)."""
    return gaussian.log_normal(x, 0.0, 1.0)


def log_weights(
    schedule: Schedule,
    reverse_fn: gaussian.ReverseFn,
    x0: jax.Array,
    key: chex.PRNGKey,
    num_samples: int,
    *,
    bins: discretized.PixelBins | None = None,
) -> jax.Array:
    """log p(x^(0..T)) - log q(x^(1..T) | x0) of ``num_samples`` forward trajectories per
    example, nats, shape (N, num_samples).

    p(x^(T)) = N(0, I); p(x^(t-1) | x^(t)) = ``reverse_fn`` for t = 2..T; the first step is
    Eq. 44's (``bins`` None: p(x0 | x1) = q(x1 | x0) pi(x0) / pi(x1), a density) or DDPM's
    discretised decoder on ``reverse_fn`` at t = 1 (``bins``: a probability of 8-bit data).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples (M) must be >= 1, got {num_samples}.")
    validation.check_batch(x0)
    validation.check_reverse_fn_steps(schedule, reverse_fn)
    x0 = validation.at_least_float32(x0)
    num_steps = schedule.num_steps
    xs = jnp.repeat(x0, num_samples, axis=0)  # (N * M, ...), trajectories of one example adjacent
    batch = xs.shape[0]
    betas = jnp.asarray(schedule.betas, xs.dtype)
    keys = jax.random.split(key, num_steps)

    def forward(x_prev, t, k):
        b = betas[t - 1]
        x_t = jnp.sqrt(1.0 - b) * x_prev + jnp.sqrt(b) * jax.random.normal(
            k, x_prev.shape, x_prev.dtype
        )
        return x_t, gaussian.log_normal(x_t, jnp.sqrt(1.0 - b) * x_prev, b)

    x1, log_q1 = forward(xs, 1, keys[0])
    if bins is None:
        first = _log_prior(xs) - _log_prior(x1)  # log p(x0 | x1) - log q(x1 | x0), Eq. 44
    else:
        kernel = reverse_fn(x1, jnp.ones((batch,), jnp.int32))
        first = event_sum(discretized.log_prob(xs, kernel.mean, kernel.var, bins)) - log_q1

    def step(carry, inputs):
        x_prev, total = carry
        t, k = inputs
        x_t, log_q = forward(x_prev, t, k)
        kernel = reverse_fn(x_t, jnp.full((batch,), t, jnp.int32))
        return (x_t, total + gaussian.log_normal(x_prev, kernel.mean, kernel.var) - log_q), None

    steps = jnp.arange(2, num_steps + 1, dtype=jnp.int32)
    (x_T, total), _ = jax.lax.scan(step, (x1, first), (steps, keys[1:]))
    return (total + _log_prior(x_T)).reshape(x0.shape[0], num_samples)


def importance_weighted_bound(
    schedule: Schedule,
    reverse_fn: gaussian.ReverseFn,
    x0: jax.Array,
    key: chex.PRNGKey,
    num_samples: int,
    *,
    bins: discretized.PixelBins | None = None,
) -> jax.Array:
    """K_M per example in bits, shape (N,): log-mean-exp of :func:`log_weights` over the M
    trajectories (stable for any spread of the weights). A lower bound on log2 p(x0) in
    expectation, tighter as M grows; its only randomness is the trajectories."""
    lw = log_weights(schedule, reverse_fn, x0, key, num_samples, bins=bins)
    return likelihood.nats_to_bits(jax.nn.logsumexp(lw, axis=1) - math.log(num_samples))
