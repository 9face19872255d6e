"""Gaussian diffusion (Sohl-Dickstein et al. 2015, arXiv:1503.03585 v8), pure functions.

Conventions
  * x0 has shape (N, *event): a batch of N examples; all math is elementwise
    over the event axes and sums over them per example.
  * t is the paper's 1-based time index, an int array of shape (N,) (or a
    scalar), with x^(0) the data and x^(T) the end of the forward process.
  * The reverse model enters as a function ``reverse_fn(x_t, t) -> Kernel``
    returning the mean f_mu and diagonal variance f_Sigma of
    p(x^(t-1) | x^(t)) for t = 2..T; any closed-form kernel can be plugged in.
  * pi(x) = N(x; 0, I) is the end point of the forward process (Table App.1).
  * Log-likelihoods and the bound K are returned in **bits per example**
    (summed over the event axes); KL terms and entropies in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from dpm_jax import likelihood
from dpm_jax.schedules import Schedule, alpha_bar, beta
from dpm_jax.shapes import event_size, event_sum, per_example, sample_timesteps, t_array
from dpm_jax.validation import check_batch, warn_if_not_unit_variance


class Kernel(NamedTuple):
    """A diagonal Gaussian N(mean, var); both have the shape of x."""

    mean: jax.Array
    var: jax.Array


ReverseFn = Callable[[jax.Array, jax.Array], Kernel]

READOUTS = ("paper", "reference_code")
_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------------------------
# Forward process.


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Closed-form forward sample x^(t) ~ q(x^(t) | x^(0)) = N(sqrt(abar_t) x0, (1 - abar_t) I).

    Reparameterised ("frozen noise", Sec. 2.4.1): differentiable in the schedule.

    Args:
      x0: (N, ...) data. t: (N,) ints in 0..T. noise: standard normal, shape of x0.
    """
    chex.assert_equal_shape([x0, noise])
    ab = per_example(alpha_bar(schedule, t_array(t, x0.shape[0])), x0)
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def q_posterior(schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array) -> Kernel:
    """The forward posterior q(x^(t-1) | x^(t), x^(0)) for t in 1..T (the target of Eq. 14's KL).

    By Bayes' rule it is Gaussian with
      var  = beta_t (1 - abar_{t-1}) / (1 - abar_t),
      mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(1 - beta_t) (1 - abar_{t-1}) / (1 - abar_t) x_t.
    """
    chex.assert_equal_shape([x0, x_t])
    t = t_array(t, x0.shape[0])
    b = per_example(beta(schedule, t), x0)
    ab_t = per_example(alpha_bar(schedule, t), x0)
    ab_prev = per_example(alpha_bar(schedule, t - 1), x0)
    denom = 1.0 - ab_t
    mean = (jnp.sqrt(ab_prev) * b / denom) * x0 + (
        jnp.sqrt(1.0 - b) * (1.0 - ab_prev) / denom
    ) * x_t
    var = b * (1.0 - ab_prev) / denom
    return Kernel(mean=mean, var=jnp.broadcast_to(var, x0.shape))


# ----------------------------------------------------------------------------------------------
# Reverse kernel readouts.


def paper_readout(x_t: jax.Array, z_mu: jax.Array, z_sigma: jax.Array, beta_t) -> Kernel:
    """Eqs. 64-65: Sigma = sigmoid(z_Sigma + logit beta_t), mu = (x - z_mu)(1 - Sigma) + z_mu.

    Both are perturbations of the forward kernel; z_mu is the fixed point the
    reverse step relaxes towards. ``beta_t`` broadcasts against x_t.
    """
    var = jax.nn.sigmoid(z_sigma + jnp.log(beta_t) - jnp.log1p(-beta_t))
    mean = (x_t - z_mu) * (1.0 - var) + z_mu
    return Kernel(mean=mean, var=var)


def reference_code_readout(
    x_t: jax.Array, z_mu: jax.Array, z_sigma: jax.Array, beta_t, num_steps: int
) -> Kernel:
    """The 2015 code's readout (``get_mu_sigma``): mu = sqrt(1 - beta_t) x + sqrt(beta_t) z_mu,

    Sigma = sigmoid(z_Sigma / sqrt(T) + logit beta_t).
    """
    var = jax.nn.sigmoid(z_sigma / math.sqrt(num_steps) + jnp.log(beta_t) - jnp.log1p(-beta_t))
    mean = jnp.sqrt(1.0 - beta_t) * x_t + jnp.sqrt(beta_t) * z_mu
    return Kernel(mean=mean, var=var)


def readout(
    kind: str, x_t: jax.Array, z_mu: jax.Array, z_sigma: jax.Array, beta_t, num_steps: int
) -> Kernel:
    """Selects the reverse-kernel readout: ``"paper"`` (Eqs. 64-65) or ``"reference_code"``."""
    if kind == "paper":
        return paper_readout(x_t, z_mu, z_sigma, beta_t)
    if kind == "reference_code":
        return reference_code_readout(x_t, z_mu, z_sigma, beta_t, num_steps)
    raise ValueError(f"unknown readout {kind!r}; choose one of {READOUTS}.")


def moment_matched_kernel(schedule: Schedule, reference_x0: jax.Array) -> ReverseFn:
    """The best diagonal Gaussian reverse kernel for the empirical data ``reference_x0`` (M, D).

    Matches the mean and per-dimension variance of the true reverse step
    q(x^(t-1) | x^(t)) when q(x^(0)) is the empirical distribution of the
    reference points: a mixture over them of the posteriors of Eq. 14's KL,
    weighted by q(x^(0) = r_j | x^(t)). Plugged into :func:`bound_exact` it
    gives the ceiling that any Gaussian reverse model reaches with this
    schedule (up to the empirical approximation; use reference points
    independent of the evaluation data). Memory is O(N M) per call.
    """
    ref = jnp.asarray(reference_x0)
    ref_sq = jnp.sum(jnp.square(ref), axis=-1)

    def reverse_fn(x_t: jax.Array, t: jax.Array) -> Kernel:
        ab = alpha_bar(schedule, t)[:, None]
        ab_prev = alpha_bar(schedule, t - 1)[:, None]
        b = beta(schedule, t)[:, None]
        # log q(x_t | r_j) up to a constant in j: (N, M).
        cross = x_t @ ref.T
        log_w = (jnp.sqrt(ab) * cross - 0.5 * ab * ref_sq[None]) / (1.0 - ab)
        w = jax.nn.softmax(log_w, axis=-1)
        w_ref = w @ ref
        w_ref_sq = w @ jnp.square(ref)
        a = jnp.sqrt(ab_prev) * b / (1.0 - ab)
        c = jnp.sqrt(1.0 - b) * (1.0 - ab_prev) / (1.0 - ab)
        mean = a * w_ref + c * x_t
        var = b * (1.0 - ab_prev) / (1.0 - ab) + jnp.square(a) * jnp.maximum(
            w_ref_sq - jnp.square(w_ref), 0.0
        )
        return Kernel(mean=mean, var=var)

    return reverse_fn


# ----------------------------------------------------------------------------------------------
# KL, entropies and the bound K.


def gaussian_kl(p: Kernel, q: Kernel) -> jax.Array:
    """Elementwise KL(N(p.mean, p.var) || N(q.mean, q.var)) in nats.

    q.var is floored at the smallest normal float, so an underflowed model
    variance gives a huge finite KL rather than NaN.
    """
    q_var = jnp.maximum(q.var, jnp.finfo(jnp.result_type(q.var)).tiny)
    return 0.5 * (
        jnp.log(q_var) - jnp.log(p.var) + (p.var + jnp.square(p.mean - q.mean)) / q_var - 1.0
    )


def gaussian_entropy(var: jax.Array) -> jax.Array:
    """Differential entropy of a 1-D Gaussian of variance ``var``, in nats."""
    return 0.5 * (_LOG_2PI + 1.0 + jnp.log(var))


def _expected_log_prior(x0_sq: jax.Array, ab: jax.Array, dim: int) -> jax.Array:
    """E_q[log pi(x^(t)) | x^(0)] in nats for pi = N(0, I), given |x0|^2 and abar_t."""
    expected_sq = ab * x0_sq + dim * (1.0 - ab)
    return -0.5 * dim * _LOG_2PI - 0.5 * expected_sq


def endpoint_terms(schedule: Schedule, x0: jax.Array) -> jax.Array:
    """The non-KL part of the exact per-example bound, in nats, shape (N,).

    With p(x^(0) | x^(1)) defined by Eq. 44, the bound of Eqs. 12-14 for one
    example is K(x0) = -sum_{t=2..T} E[KL_t] + C(x0), where

      C(x0) = -H_q(X^(1) | x0) + H_q(X^(T) | x0)
              + log pi(x0) - E_q[log pi(x^(1)) | x0] + E_q[log pi(x^(T)) | x0].

    Eq. 14 replaces the pi terms by -H_p(X^(T)), which is the same only on
    average over data of exactly unit variance; this form is a valid bound for
    every example. All terms are closed-form for pi = N(0, I).
    """
    d = event_size(x0)
    x0_sq = event_sum(jnp.square(x0))
    ab_1 = schedule.alphas_cumprod[0]
    ab_T = schedule.alphas_cumprod[-1]
    h_1 = d * gaussian_entropy(1.0 - ab_1)
    h_T = d * gaussian_entropy(1.0 - ab_T)
    log_pi_x0 = -0.5 * d * _LOG_2PI - 0.5 * x0_sq
    return (
        -h_1
        + h_T
        + log_pi_x0
        - _expected_log_prior(x0_sq, ab_1, d)
        + _expected_log_prior(x0_sq, ab_T, d)
    )


def kl_term(
    schedule: Schedule, reverse_fn: ReverseFn, x0: jax.Array, t: jax.Array, noise: jax.Array
) -> jax.Array:
    """KL(q(x^(t-1) | x^(t), x0) || p(x^(t-1) | x^(t))) at one sampled x^(t), nats, shape (N,).

    Its expectation over ``noise`` ~ N(0, I) is the t-th term of Eq. 14; t in 2..T.
    """
    t = t_array(t, x0.shape[0])
    x_t = q_sample(schedule, x0, t, noise)
    target = q_posterior(schedule, x0, x_t, t)
    model = reverse_fn(x_t, t)
    chex.assert_equal_shape([model.mean, model.var, x0])
    return event_sum(gaussian_kl(target, model))


def bound_exact(
    schedule: Schedule, reverse_fn: ReverseFn, x0: jax.Array, key: chex.PRNGKey
) -> jax.Array:
    """The bound K of Eq. 14 for each example, summing the KL terms of **all** t = 2..T.

    One forward sample x^(t) ~ q(x^(t) | x0) per t and example (a lax.scan over
    t; compile time does not grow with T), so the value is an unbiased estimate
    of K(x0) whose only randomness is over x^(t); the sum over t is exact.

    Returns:
      K in bits per example, shape (N,). It is a lower bound on log2 p(x0).
    """
    check_batch(x0)
    warn_if_not_unit_variance(x0)
    num_steps = schedule.num_steps
    keys = jax.random.split(key, num_steps - 1)
    ts = jnp.arange(2, num_steps + 1, dtype=jnp.int32)

    def step(total, inputs):
        t, k = inputs
        noise = jax.random.normal(k, x0.shape, x0.dtype)
        return total + kl_term(schedule, reverse_fn, x0, t, noise), None

    total_kl, _ = jax.lax.scan(step, jnp.zeros((x0.shape[0],), x0.dtype), (ts, keys))
    return likelihood.nats_to_bits(endpoint_terms(schedule, x0) - total_kl)


def kl_per_step(
    schedule: Schedule, reverse_fn: ReverseFn, x0: jax.Array, key: chex.PRNGKey
) -> jax.Array:
    """The mean over examples of each KL term of Eq. 14, nats per example, shape (T - 1,), t = 2..T.

    Uses the same forward samples as :func:`bound_exact` with the same key, so
    two reverse models evaluated with one key are compared on identical x^(t).
    Where a bound loses its bits, step by step.
    """
    check_batch(x0)
    warn_if_not_unit_variance(x0)
    num_steps = schedule.num_steps
    keys = jax.random.split(key, num_steps - 1)
    ts = jnp.arange(2, num_steps + 1, dtype=jnp.int32)

    def one(inputs):
        t, k = inputs
        noise = jax.random.normal(k, x0.shape, x0.dtype)
        return jnp.mean(kl_term(schedule, reverse_fn, x0, t, noise))

    return jax.lax.map(one, (ts, keys))


def bound_estimate(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    x0: jax.Array,
    key: chex.PRNGKey,
    *,
    stratified: bool = False,
) -> jax.Array:
    """A one-t stochastic estimate of K per example, for training, bits, shape (N,).

    Each example draws its own t ~ U{2..T} and x^(t); the KL is weighted by
    T - 1, the number of terms in Eq. 14's sum, so the estimate is unbiased.
    (The 2015 code weights by T, a small conservative bias.) Never report it
    as the exact K. ``stratified`` spreads t evenly over the batch (see
    :func:`dpm_jax.shapes.sample_timesteps`); each example stays unbiased.
    """
    check_batch(x0)
    warn_if_not_unit_variance(x0)
    num_steps = schedule.num_steps
    key_t, key_noise = jax.random.split(key)
    t = sample_timesteps(key_t, x0.shape[0], num_steps, stratified)
    noise = jax.random.normal(key_noise, x0.shape, x0.dtype)
    kl = kl_term(schedule, reverse_fn, x0, t, noise)
    return likelihood.nats_to_bits(endpoint_terms(schedule, x0) - (num_steps - 1) * kl)


def entropy_bounds(schedule: Schedule) -> tuple[jax.Array, jax.Array]:
    """Eq. 24's bounds on the reverse-step entropy H_q(X^(t-1) | X^(t)), nats per dimension.

      H_q(X^(t)|X^(t-1)) + H_q(X^(t-1)|X^(0)) - H_q(X^(t)|X^(0))
          <= H_q(X^(t-1)|X^(t)) <= H_q(X^(t)|X^(t-1)).

    The upper bound assumes data of unit variance (App. A). Returns
    (lower, upper), each of shape (T - 1,), for t = 2..T.
    """
    b = schedule.betas[1:]
    ab_t = schedule.alphas_cumprod[1:]
    ab_prev = schedule.alphas_cumprod[:-1]
    upper = gaussian_entropy(b)
    lower = upper + gaussian_entropy(1.0 - ab_prev) - gaussian_entropy(1.0 - ab_t)
    return lower, upper


# ----------------------------------------------------------------------------------------------
# Sampling.


def first_step_kernel(schedule: Schedule, x1: jax.Array) -> Kernel:
    """p(x^(0) | x^(1)) of Eq. 44: for Gaussian pi it is N(sqrt(1 - beta_1) x1, beta_1 I)."""
    b1 = schedule.betas[0]
    return Kernel(mean=jnp.sqrt(1.0 - b1) * x1, var=jnp.full_like(x1, b1))


def sample(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    key: chex.PRNGKey,
    shape: tuple[int, ...],
    *,
    return_trajectory: bool = False,
):
    """Ancestral sampling x^(T) ~ pi, x^(t-1) ~ p(x^(t-1) | x^(t)) for t = T..1 (Eq. 5).

    One lax.scan over t = T..2 with ``reverse_fn``; the last step uses Eq. 44.

    Args:
      shape: (N, *event) of the samples.
      return_trajectory: also return every state, shape (T + 1, N, *event),
        indexed by t (trajectory[0] is x^(0), trajectory[T] is x^(T)).

    Returns:
      x^(0) of shape ``shape``, or (x^(0), trajectory).
    """
    num_steps = schedule.num_steps
    key_init, key_steps = jax.random.split(key)
    x_T = jax.random.normal(key_init, shape, jnp.float32)
    keys = jax.random.split(key_steps, num_steps)
    ts = jnp.arange(num_steps, 1, -1, dtype=jnp.int32)

    def step(x, inputs):
        t, k = inputs
        kernel = reverse_fn(x, t_array(t, shape[0]))
        x = kernel.mean + jnp.sqrt(kernel.var) * jax.random.normal(k, shape, x.dtype)
        return x, x

    x1, states = jax.lax.scan(step, x_T, (ts, keys[1:]))
    last = first_step_kernel(schedule, x1)
    x0 = last.mean + jnp.sqrt(last.var) * jax.random.normal(keys[0], shape, x1.dtype)
    if not return_trajectory:
        return x0
    # states[i] is x^(T-1-i); reverse so that trajectory[t] = x^(t).
    trajectory = jnp.concatenate([x0[None], states[::-1], x_T[None]], axis=0)
    return x0, trajectory
