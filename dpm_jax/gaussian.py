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

Size: about 500 lines, over the project's 400: the forward process, the bound's named
terms and the Gaussian reverse chain all build on one ``Kernel`` type and the same
schedule lookups, and a quarter of the module is docstrings citing the equations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from dpm_jax import chain, discretized, likelihood, terms, validation
from dpm_jax.schedules import Schedule, alpha_bar, beta
from dpm_jax.shapes import event_size, event_sum, per_example, sample_timesteps, t_array
from dpm_jax.validation import check_batch, warn_if_not_unit_variance


class Kernel(NamedTuple):
    """A diagonal Gaussian N(mean, var); both have the shape of x."""

    mean: jax.Array
    var: jax.Array


ReverseFn = Callable[[jax.Array, jax.Array], Kernel]

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
    validation.check_timesteps(t, schedule.num_steps)
    ab = per_example(alpha_bar(schedule, t_array(t, x0.shape[0])), x0)
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def _posterior(b, ab_t, ab_prev) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(a_t, c_t, beta~_t) from beta_t, abar_t and abar_{t-1} of any broadcastable shapes."""
    denom = 1.0 - ab_t
    return (
        jnp.sqrt(ab_prev) * b / denom,
        jnp.sqrt(1.0 - b) * (1.0 - ab_prev) / denom,
        (b * (1.0 - ab_prev) / denom),
    )


def _at_t(schedule: Schedule, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    return beta(schedule, t), alpha_bar(schedule, t), alpha_bar(schedule, t - 1)


def posterior_coefficients(schedule: Schedule, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a_t, c_t) of the posterior mean a_t x0 + c_t x_t of q(x^(t-1) | x^(t), x0), shape of t.

    a_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t), c_t = sqrt(1 - beta_t)(1 - abar_{t-1}) /
    (1 - abar_t) (DDPM Eq. 7). At t = 1, a_1 = 1 and c_1 = 0.
    """
    return _posterior(*_at_t(schedule, t))[:2]


def posterior_variance(schedule: Schedule, t: jax.Array) -> jax.Array:
    """beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t), shape of t (0 at t = 1; DDPM Eq. 7)."""
    return _posterior(*_at_t(schedule, t))[2]


def q_posterior(schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array) -> Kernel:
    """The forward posterior q(x^(t-1) | x^(t), x^(0)) for t in 1..T (the target of Eq. 14's KL).

    By Bayes' rule it is Gaussian with mean a_t x0 + c_t x_t (:func:`posterior_coefficients`)
    and variance beta~_t (:func:`posterior_variance`). The schedule's values are broadcast
    before the arithmetic, as every training run of the project has computed them (so the
    gradients with respect to a learned schedule are bitwise what they were).
    """
    chex.assert_equal_shape([x0, x_t])
    t = t_array(t, x0.shape[0])
    a, c, var = _posterior(*(per_example(v, x0) for v in _at_t(schedule, t)))
    return Kernel(mean=a * x0 + c * x_t, var=jnp.broadcast_to(var, x0.shape))


# ----------------------------------------------------------------------------------------------
# The best Gaussian reverse kernel.


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

    reverse_fn.num_steps = schedule.num_steps  # checked against the schedule it is used with
    return reverse_fn


# ----------------------------------------------------------------------------------------------
# KL, entropies and the bound K.

_NOT_FINITE_HINT = (
    "Check that reverse_fn returns finite means and variances > 0 and that it was built for "
    "this schedule's T."
)


def _guarded(reverse_fn: ReverseFn) -> ReverseFn:
    """``reverse_fn`` with variances <= 0 (or NaN) turned into NaN, so an invalid kernel gives
    a non-finite bound, never a plausible or infinite one."""

    def guarded(x_t, t):
        kernel = reverse_fn(x_t, t)
        return Kernel(kernel.mean, jnp.where(kernel.var > 0, kernel.var, jnp.nan))

    return guarded


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


def log_normal(x: jax.Array, mean, var) -> jax.Array:
    """log N(x; mean, var) summed over each example's elements, nats, shape (N,)."""
    return event_sum(-0.5 * (_LOG_2PI + jnp.log(var) + jnp.square(x - mean) / var))


def prior_term(schedule: Schedule, x0: jax.Array) -> jax.Array:
    """L_T = KL(q(x^(T) | x0) || pi) for pi = N(0, I), nats per example, shape (N,).

    Closed form: H_q(X^(T) | x0) + E_q[log pi(x^(T)) | x0] with a minus sign; about 1e-5
    bits/dim for DDPM's schedule (DDPM Sec. 4).
    """
    d = event_size(x0)
    ab_T = schedule.alphas_cumprod[-1]
    h_T = d * gaussian_entropy(1.0 - ab_T)
    return -h_T - _expected_log_prior(event_sum(jnp.square(x0)), ab_T, d)


def continuous_decoder_term(schedule: Schedule, x0: jax.Array) -> jax.Array:
    """L_0 = -E_q[log p(x0 | x^(1))] with Eq. 44's fixed first step, nats per example, (N,).

    p(x^(0) | x^(1)) = q(x^(1) | x^(0)) pi(x^(0)) / pi(x^(1)) (Eq. 44: the Gaussian kernel is
    reversible with respect to pi = N(0, I)), so the expectation is closed-form:

      L_0 = H_q(X^(1) | x0) - log pi(x0) + E_q[log pi(x^(1)) | x0].

    With :func:`prior_term` this is the exact per-example form of Eq. 14's entropy terms,
    a valid bound for every example whatever its scale (Eq. 14 itself equals it only on
    average over data of exactly unit variance). A density on continuous x0.
    """
    d = event_size(x0)
    x0_sq = event_sum(jnp.square(x0))
    ab_1 = schedule.alphas_cumprod[0]
    log_pi_x0 = -0.5 * d * _LOG_2PI - 0.5 * x0_sq
    return d * gaussian_entropy(1.0 - ab_1) - log_pi_x0 + _expected_log_prior(x0_sq, ab_1, d)


def endpoint_terms(schedule: Schedule, x0: jax.Array) -> jax.Array:
    """-(L_T + L_0) for Eq. 44's decoder in one expression, nats per example, (N,).

    C(x0) = -H_q(X^(1)|x0) + H_q(X^(T)|x0) + log pi(x0) - E_q[log pi(x^(1))|x0]
            + E_q[log pi(x^(T))|x0],
    equal to -(:func:`prior_term` + :func:`continuous_decoder_term`) up to float rounding.
    The one-t training estimate uses this order, the one every training run of the project
    has used, so runs stay bitwise reproducible (a last-bit change of the loss sends a long
    run down another trajectory: 0.09 bits of K for the default Swiss roll).
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


def discretized_decoder_term(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    x0: jax.Array,
    noise: jax.Array,
    bins: discretized.PixelBins,
) -> jax.Array:
    """L_0 = -log p(x0 | x^(1)) at one x^(1) = q_sample(x0, 1, noise), DDPM's discretised
    Gaussian decoder (Sec. 3.3) on the model's kernel at t = 1, nats per example, (N,).

    x0 must lie on the bin centres of ``bins``; the bound is then a codelength of the
    discrete data (no dequantisation, no Jacobian).
    """
    x1 = q_sample(schedule, x0, jnp.ones((x0.shape[0],), jnp.int32), noise)
    model = reverse_fn(x1, jnp.ones((x0.shape[0],), jnp.int32))
    chex.assert_equal_shape([model.mean, model.var, x0])
    return -event_sum(discretized.log_prob(x0, model.mean, model.var, bins))


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


def _kl_fn(schedule: Schedule, reverse_fn: ReverseFn, x0: jax.Array) -> terms.KLFn:
    """The KL term at t with x^(t) drawn from the key (the scan body of every exact bound)."""

    def kl_fn(t, key):
        return kl_term(schedule, reverse_fn, x0, t, jax.random.normal(key, x0.shape, x0.dtype))

    return kl_fn


def _decoder_term(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    x0: jax.Array,
    key: chex.PRNGKey,
    bins: discretized.PixelBins | None,
) -> jax.Array:
    """L_0 by the chosen decoder: Eq. 44's (``bins`` None) or DDPM's discretised one."""
    if bins is None:
        return continuous_decoder_term(schedule, x0)
    noise = jax.random.normal(key, x0.shape, x0.dtype)
    return discretized_decoder_term(schedule, reverse_fn, x0, noise, bins)


def bound_terms(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    x0: jax.Array,
    key: chex.PRNGKey,
    *,
    bins: discretized.PixelBins | None = None,
) -> terms.BoundTerms:
    """L_T, sum_{t=2..T} L_{t-1} and L_0 per example (:class:`dpm_jax.terms.BoundTerms`, nats).

    Every KL term t = 2..T at one forward sample x^(t) ~ q(x^(t) | x0) per t and example (a
    lax.scan; keys split from ``key``), so the sum over t is exact and the only randomness is
    over x^(t). The decoder: Eq. 44's closed form (``bins=None``, a density on continuous
    x0) or DDPM's discretised Gaussian (``bins``, a probability of discrete x0; its x^(1) is
    drawn with ``fold_in(key, T)``).
    """
    check_batch(x0)
    if bins is None:
        warn_if_not_unit_variance(x0)
    validation.check_reverse_fn_steps(schedule, reverse_fn)
    x0 = validation.at_least_float32(x0)
    reverse_fn = _guarded(reverse_fn)
    num_steps = schedule.num_steps
    kl = terms.sum_over_steps(
        _kl_fn(schedule, reverse_fn, x0), num_steps, key, x0.shape[0], x0.dtype
    )
    decoder = _decoder_term(schedule, reverse_fn, x0, jax.random.fold_in(key, num_steps), bins)
    return terms.BoundTerms(prior=prior_term(schedule, x0), kl=kl, decoder=decoder)


def bound_exact(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    x0: jax.Array,
    key: chex.PRNGKey,
    *,
    bins: discretized.PixelBins | None = None,
) -> jax.Array:
    """The bound K of Eq. 14 for each example, summing the KL terms of **all** t = 2..T.

    The sum of :func:`bound_terms`: an unbiased estimate of K(x0) whose only randomness is
    over the forward samples x^(t); the sum over t is exact.

    Returns:
      K in bits per example, shape (N,). It is a lower bound on log2 p(x0) (a density for the
      continuous decoder, a probability of the bins for the discretised one).
    """
    k = terms.to_bits(bound_terms(schedule, reverse_fn, x0, key, bins=bins))
    validation.check_finite_result(k, "the bound K", _NOT_FINITE_HINT)
    return k


def kl_per_step(
    schedule: Schedule, reverse_fn: ReverseFn, x0: jax.Array, key: chex.PRNGKey
) -> jax.Array:
    """The mean over examples of each KL term of Eq. 14, nats per example, shape (T - 1,), t = 2..T.

    Uses the same forward samples as :func:`bound_exact` with the same key, so two reverse
    models evaluated with one key are compared on identical x^(t). Where a bound loses its
    bits, step by step.
    """
    check_batch(x0)
    warn_if_not_unit_variance(x0)
    return terms.mean_per_step(_kl_fn(schedule, reverse_fn, x0), schedule.num_steps, key)


def bound_estimate(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    x0: jax.Array,
    key: chex.PRNGKey,
    *,
    stratified: bool = False,
    bins: discretized.PixelBins | None = None,
) -> jax.Array:
    """A one-t stochastic estimate of K per example, for training, bits, shape (N,).

    Each example draws its own t ~ U{2..T} and x^(t); the KL is weighted by T - 1, the
    number of terms in Eq. 14's sum, so the estimate is unbiased. (The 2015 code weights by
    T, a small conservative bias.) Never report it as the exact K. ``stratified`` spreads t
    evenly over the batch (see :func:`dpm_jax.shapes.sample_timesteps`); each example stays
    unbiased. The prior and decoder terms are added whole (``bins`` as :func:`bound_terms`).
    """
    check_batch(x0)
    if bins is None:
        warn_if_not_unit_variance(x0)
    validation.check_reverse_fn_steps(schedule, reverse_fn)
    x0 = validation.at_least_float32(x0)
    num_steps = schedule.num_steps
    key_t, key_noise = jax.random.split(key)
    t = sample_timesteps(key_t, x0.shape[0], num_steps, stratified)
    noise = jax.random.normal(key_noise, x0.shape, x0.dtype)
    kl = kl_term(schedule, reverse_fn, x0, t, noise)
    if bins is None:  # one expression, so that training is bitwise what it always was
        return likelihood.nats_to_bits(endpoint_terms(schedule, x0) - (num_steps - 1) * kl)
    decoder = _decoder_term(schedule, reverse_fn, x0, jax.random.fold_in(key, 1), bins)
    return terms.to_bits(
        terms.BoundTerms(prior=prior_term(schedule, x0), kl=(num_steps - 1) * kl, decoder=decoder)
    )


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


def _checked(kernel: Kernel, x: jax.Array) -> Kernel:
    if kernel.mean.shape != x.shape:
        raise ValueError(
            f"reverse_fn returned a kernel mean of shape {kernel.mean.shape} for x of shape "
            f"{x.shape}; the mean and variance must have the shape of x."
        )
    return Kernel(kernel.mean, jnp.broadcast_to(kernel.var, x.shape))


def _no_transform(kernel: Kernel, s) -> Kernel:
    return kernel


def _identity(x: jax.Array) -> jax.Array:
    return x


#: The last step x^(1) -> x^(0): Eq. 44's fixed kernel (the 2015 model), a draw from the
#: model's kernel at t = 1, or its mean without noise (DDPM's displayed samples, Sec. 3.2).
FINAL_STEPS = ("eq44", "model", "model_mean")


def sample_chain(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    key: chex.PRNGKey,
    init: Callable[[chex.PRNGKey], jax.Array],
    *,
    transform: Callable[[Kernel, jax.Array], Kernel] = _no_transform,
    clamp: Callable[[jax.Array], jax.Array] = _identity,
    final: str = "eq44",
    start_step: jax.Array | None = None,
    return_trajectory: bool = False,
):
    """The Gaussian reverse chain on :func:`dpm_jax.chain.run`, with a kernel transform.

    x^(T) = init(key); x^(t-1) = clamp(a draw from transform(kernel_t, t - 1)) where kernel_t
    is reverse_fn(x^(t), t) for t >= 2 and the ``final`` step's kernel at t = 1. A
    ``transform`` multiplies each step by a factor (the posterior samplers of
    :mod:`dpm_jax.conditioning`); its second argument is the index s = t - 1 of the state
    drawn. States keep ``init``'s dtype. ``start_step``: see :func:`dpm_jax.chain.run`.
    """
    if final not in FINAL_STEPS:
        raise ValueError(f"final must be one of {FINAL_STEPS}, got {final!r}.")
    validation.check_reverse_fn_steps(schedule, reverse_fn)

    def draw(kernel: Kernel, s, k, like: jax.Array, noiseless: bool = False) -> jax.Array:
        kernel = transform(kernel, s)
        if noiseless:
            return clamp(kernel.mean).astype(like.dtype)
        noise = jax.random.normal(k, like.shape, like.dtype)
        return clamp(kernel.mean + jnp.sqrt(kernel.var) * noise).astype(like.dtype)

    def step_fn(x, t, k):
        return draw(_checked(reverse_fn(x, t_array(t, x.shape[0])), x), t - 1, k, x)

    def final_fn(x1, k):
        if final == "eq44":
            kernel = first_step_kernel(schedule, x1)
        else:
            kernel = _checked(reverse_fn(x1, t_array(1, x1.shape[0])), x1)
        return draw(kernel, jnp.int32(0), k, x1, noiseless=final == "model_mean")

    return chain.run(
        init,
        step_fn,
        final_fn,
        key,
        schedule.num_steps,
        start_step=start_step,
        return_trajectory=return_trajectory,
    )


def sample(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    key: chex.PRNGKey,
    shape: tuple[int, ...],
    *,
    final: str = "eq44",
    return_trajectory: bool = False,
):
    """Ancestral sampling x^(T) ~ pi, x^(t-1) ~ p(x^(t-1) | x^(t)) for t = T..1 (Eq. 5).

    One lax.scan over t = T..2 with ``reverse_fn``; the last step by ``final`` (Eq. 44 by
    default; see :data:`FINAL_STEPS`). For respaced sampling pass the schedule and the
    reverse_fn of :func:`dpm_jax.chain.respace` and
    :func:`dpm_jax.parameterisation.make_reverse_fn`.

    Args:
      shape: (N, *event) of the samples (float32).
      return_trajectory: also return every state, shape (T + 1, N, *event),
        indexed by t (trajectory[0] is x^(0), trajectory[T] is x^(T)).

    Returns:
      x^(0) of shape ``shape``, or (x^(0), trajectory).
    """
    out = sample_chain(
        schedule,
        reverse_fn,
        key,
        lambda k: jax.random.normal(k, shape, jnp.float32),
        final=final,
        return_trajectory=return_trajectory,
    )
    validation.check_finite_result(out, "the samples", _NOT_FINITE_HINT)
    return out
