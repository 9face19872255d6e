"""The importance-weighted bound K_M of Gaussian and binomial diffusion (2015 Eq. 9, M samples).

Eq. 9 writes p(x0) = E_q[p(x^(0..T)) / q(x^(1..T) | x0)] over forward trajectories. With M
trajectories per example, K_M = E[log (1/M) sum_m w_m], w_m = p(x^(0..T)_m) /
q(x^(1..T)_m | x0), is a lower bound on log p(x0) that rises with M towards it (Burda et al.
2016, importance-weighted autoencoders); K_1 has the expectation of the t-summed K of
``gaussian.bound_exact`` (``binomial.bound_exact``). One compiled program: a ``lax.scan`` over t walks all N * M
trajectories at once, accumulating each log-weight, so memory does not grow with T.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from dpm_jax import binomial, discretized, gaussian, likelihood, validation
from dpm_jax.schedules import Schedule
from dpm_jax.shapes import event_sum


def _log_prior(x) -> jax.Array:
    """log pi(x) for pi = N(0, I), nats, (N,)."""
    return gaussian.log_normal(x, 0.0, 1.0)


def _repeat(x0: jax.Array, num_samples: int) -> jax.Array:
    """x0 (N, ...) -> (N * M, ...), the M trajectories of one example adjacent."""
    if num_samples < 1:
        raise ValueError(f"num_samples (M) must be >= 1, got {num_samples}.")
    return jnp.repeat(x0, num_samples, axis=0)


def _sum_over_steps(x1: jax.Array, keys: jax.Array, step_fn) -> tuple[jax.Array, jax.Array]:
    """(x^(T), sum over t = 2..T of ``step_fn(x_prev, t, key) -> (x_t, log p(x_prev | x_t) -
    log q(x_t | x_prev))``) from x^(1), one key per step; one ``lax.scan``, so memory does
    not grow with T."""

    def step(carry, inputs):
        x_prev, total = carry
        t, k = inputs
        x_t, log_ratio = step_fn(x_prev, t, k)
        return (x_t, total + log_ratio), None

    steps = jnp.arange(2, keys.shape[0] + 2, dtype=jnp.int32)
    zero = jnp.zeros((x1.shape[0],), x1.dtype)
    (x_T, total), _ = jax.lax.scan(step, (x1, zero), (steps, keys))
    return x_T, total


def _log_weights(x0, key, num_samples: int, num_steps: int, forward, log_reverse, first, log_prior):
    """The trajectory driver of both diffusions, nats, (N, num_samples).

    ``forward(x_prev, t, key) -> (x_t, log q(x_t | x_prev))`` draws one forward step;
    ``log_reverse(x_prev, x_t, t (N,))`` is log p(x_prev | x_t) for t = 2..T;
    ``first(x0, x1, log_q1)`` the first step's log p(x0 | x1) - log q(x1 | x0); ``log_prior``
    log p(x^(T)). All log-densities are summed over the event, one value per trajectory.
    """
    xs = _repeat(x0, num_samples)
    keys = jax.random.split(key, num_steps)

    def step_fn(x_prev, t, k):
        x_t, log_q = forward(x_prev, t, k)
        return x_t, log_reverse(x_prev, x_t, jnp.full((x_t.shape[0],), t, jnp.int32)) - log_q

    x1, log_q1 = forward(xs, 1, keys[0])
    x_T, total = _sum_over_steps(x1, keys[1:], step_fn)
    return (first(xs, x1, log_q1) + total + log_prior(x_T)).reshape(x0.shape[0], num_samples)


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
    example of the Gaussian diffusion, nats, shape (N, num_samples).

    p(x^(T)) = N(0, I); p(x^(t-1) | x^(t)) = ``reverse_fn`` for t = 2..T; the first step is
    Eq. 44's (``bins`` None: p(x0 | x1) = q(x1 | x0) pi(x0) / pi(x1), a density) or DDPM's
    discretised decoder on ``reverse_fn`` at t = 1 (``bins``: a probability of 8-bit data).
    """
    validation.check_batch(x0)
    validation.check_reverse_fn_steps(schedule, reverse_fn)
    x0 = validation.at_least_float32(x0)
    betas = jnp.asarray(schedule.betas, x0.dtype)

    def forward(x_prev, t, k):
        b = betas[t - 1]
        x_t = jnp.sqrt(1.0 - b) * x_prev + jnp.sqrt(b) * jax.random.normal(
            k, x_prev.shape, x_prev.dtype
        )
        return x_t, gaussian.log_normal(x_t, jnp.sqrt(1.0 - b) * x_prev, b)

    def log_reverse(x_prev, x_t, t):
        kernel = reverse_fn(x_t, t)
        return gaussian.log_normal(x_prev, kernel.mean, kernel.var)

    def first(xs, x1, log_q1):
        if bins is None:  # Eq. 44: log q(x1 | x0) + log pi(x0) - log pi(x1) - log q(x1 | x0)
            return _log_prior(xs) - _log_prior(x1)
        kernel = reverse_fn(x1, jnp.ones((xs.shape[0],), jnp.int32))
        return event_sum(discretized.log_prob(xs, kernel.mean, kernel.var, bins)) - log_q1

    return _log_weights(
        x0, key, num_samples, schedule.num_steps, forward, log_reverse, first, _log_prior
    )


def binomial_log_weights(
    schedule: Schedule,
    rate_fn: binomial.RateFn,
    x0: jax.Array,
    pi: float,
    key: chex.PRNGKey,
    num_samples: int,
) -> jax.Array:
    """:func:`log_weights` of the binomial diffusion (Table App.1), nats, (N, num_samples).

    p(x^(T)) = B(pi); p(x^(t-1) | x^(t)) = B(``rate_fn``(x^(t), t)) for t = 2..T; the first
    step is Eq. 44's, the forward kernel itself (reversible with respect to B(pi)).
    """
    binomial.check_binary(x0)
    binomial.check_rate(pi)
    validation.check_reverse_fn_steps(schedule, rate_fn)
    x0 = validation.at_least_float32(x0)
    betas = jnp.asarray(schedule.betas, x0.dtype)

    def log_bernoulli(x, rate):
        return event_sum(binomial.bernoulli_log_prob(x, rate))

    def forward(x_prev, t, k):
        rate = binomial.forward_rate(x_prev, betas[t - 1], pi)
        x_t = jax.random.bernoulli(k, rate).astype(x_prev.dtype)
        return x_t, log_bernoulli(x_t, rate)

    def first(xs, x1, log_q1):
        return log_bernoulli(xs, binomial.forward_rate(x1, betas[0], pi)) - log_q1

    return _log_weights(
        x0,
        key,
        num_samples,
        schedule.num_steps,
        forward,
        lambda x_prev, x_t, t: log_bernoulli(x_prev, rate_fn(x_t, t)),
        first,
        lambda x_T: log_bernoulli(x_T, pi),
    )


def bits_from_log_weights(log_w: jax.Array) -> jax.Array:
    """K_M per example in bits, (N,), from log-weights (N, M) in nats: the log-mean-exp over
    the M trajectories (stable for any spread of the weights)."""
    chex.assert_rank(log_w, 2)
    num_samples = log_w.shape[1]
    return likelihood.nats_to_bits(jax.nn.logsumexp(log_w, axis=1) - math.log(num_samples))


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
    return bits_from_log_weights(log_weights(schedule, reverse_fn, x0, key, num_samples, bins=bins))
