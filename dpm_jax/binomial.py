"""Binomial diffusion (Sohl-Dickstein et al. 2015, Table App.1, Sec. 2.4.1), pure functions.

The binary counterpart of :mod:`dpm_jax.gaussian`, with the same conventions:
x0 of shape (N, *event) with values in {0, 1}; t is the paper's 1-based time;
the reverse model enters as ``reverse_fn(x_t, t) -> rates`` (Bernoulli rates
f_b of p(x^(t-1) | x^(t)), the shape of x); log-likelihoods and K are in bits
per example, KL terms in nats.

The forward kernel flips towards an equilibrium Bernoulli(pi):
q(x^(t) | x^(t-1)) = B(x^(t-1) (1 - beta_t) + pi beta_t). The paper's table
uses pi = 0.5; its heartbeat experiment uses the data's mean rate 0.2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax import chain, likelihood, terms, validation
from dpm_jax.schedules import Schedule, alpha_bar, beta
from dpm_jax.shapes import event_sum, per_example, sample_timesteps, t_array
from dpm_jax.validation import check_batch, is_concrete

RateFn = Callable[[jax.Array, jax.Array], jax.Array]

_EPS = 1e-7


def check_binary(x0, name: str = "x0") -> None:
    """Rank, dtype and finiteness as for Gaussian data, and every value 0 or 1."""
    check_batch(x0, name)
    if is_concrete(x0):
        arr = np.asarray(x0)
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(
                f"{name} must be binary (every value 0 or 1) for binomial diffusion; got values "
                f"in [{arr.min():.3g}, {arr.max():.3g}]. Threshold or binarise the data first."
            )


def check_rate(pi: float, name: str = "pi") -> None:
    if not 0.0 < float(pi) < 1.0:
        raise ValueError(f"{name} must lie strictly inside (0, 1), got {pi!r}.")


def _log(p):
    """log of a probability clipped to [eps, 1 - eps]: applied to both p and 1 - p, the two
    clipped masses still sum to 1 (a normalised Bernoulli), so clipping never inflates a
    log-likelihood; clipping at 1 instead would give up to 1 + eps."""
    return jnp.log(jnp.clip(p, _EPS, 1.0 - _EPS))


def _logit(p):
    p = jnp.clip(p, _EPS, 1.0 - _EPS)
    return jnp.log(p) - jnp.log1p(-p)


def bernoulli_log_prob(x, rate):
    """Elementwise log B(x; rate) in nats, for x in {0, 1}."""
    return x * _log(rate) + (1.0 - x) * _log(1.0 - rate)


def bernoulli_entropy(rate):
    """Elementwise entropy of B(rate) in nats (0 at rate 0 or 1)."""
    return -(jax.scipy.special.xlogy(rate, rate) + jax.scipy.special.xlogy(1 - rate, 1 - rate))


def bernoulli_kl(p, q):
    """Elementwise KL(B(p) || B(q)) in nats; exact at p in {0, 1}."""
    return (
        jax.scipy.special.xlogy(p, p)
        - p * _log(q)
        + jax.scipy.special.xlogy(1 - p, 1 - p)
        - (1 - p) * _log(1 - q)
    )


# ----------------------------------------------------------------------------------------------
# Forward process.


def forward_rate(x_prev: jax.Array, beta_t, pi: float) -> jax.Array:
    """Rate of q(x^(t) | x^(t-1)) = B(x^(t-1) (1 - beta_t) + pi beta_t) (Table App.1)."""
    return x_prev * (1.0 - beta_t) + pi * beta_t


def marginal_rate(schedule: Schedule, x0: jax.Array, t: jax.Array, pi: float) -> jax.Array:
    """Rate of q(x^(t) | x^(0)) = B(pi + (x0 - pi) abar_t), t in 0..T, shape of x0."""
    ab = per_example(alpha_bar(schedule, t_array(t, x0.shape[0])), x0)
    return pi + (x0 - pi) * ab


def q_sample(schedule: Schedule, x0, t, pi: float, key: chex.PRNGKey) -> jax.Array:
    """x^(t) ~ q(x^(t) | x^(0)) in closed form, as floats in {0, 1}."""
    rate = marginal_rate(schedule, x0, t, pi)
    return jax.random.bernoulli(key, rate).astype(x0.dtype)


def q_posterior_rate(schedule: Schedule, x0, x_t, t, pi: float) -> jax.Array:
    """Rate of q(x^(t-1) | x^(t), x^(0)) by Bayes' rule, t in 1..T.

    q(x^(t-1) = 1 | ...) ∝ q(x^(t) | x^(t-1) = 1) q(x^(t-1) = 1 | x0).
    """
    chex.assert_equal_shape([x0, x_t])
    t = t_array(t, x0.shape[0])
    b = per_example(beta(schedule, t), x0)
    m = marginal_rate(schedule, x0, t - 1, pi)
    like_1 = jnp.where(x_t > 0.5, 1.0 - b + pi * b, b * (1.0 - pi))
    like_0 = jnp.where(x_t > 0.5, pi * b, 1.0 - pi * b)
    num = like_1 * m
    return num / (num + like_0 * (1.0 - m))


def forward_logit_readout(x_t: jax.Array, z: jax.Array, beta_t, pi: float) -> jax.Array:
    """Reverse rates as a logit-space perturbation of the forward kernel's rate (cf. Eq. 64).

    f_b = sigmoid(z + logit(x_t (1 - beta_t) + pi beta_t)); z = 0 gives the
    forward kernel itself, the exact reverse kernel of Bernoulli(pi) data.
    """
    return jax.nn.sigmoid(z + _logit(forward_rate(x_t, beta_t, pi)))


# ----------------------------------------------------------------------------------------------
# The bound K.


def null_log_likelihood(x0: jax.Array, pi: float) -> jax.Array:
    """log2 of independent Bernoulli(pi) per example (the paper's L_null at pi = mean rate), bits."""
    return likelihood.nats_to_bits(event_sum(bernoulli_log_prob(x0, pi)))


def _expected_log_pi(m: jax.Array, pi: float) -> jax.Array:
    """E[log B(x; pi)] for x ~ B(m), summed over the event axes, nats, (N,)."""
    return event_sum(m * math.log(pi) + (1.0 - m) * math.log1p(-pi))


def prior_term(schedule: Schedule, x0: jax.Array, pi: float) -> jax.Array:
    """L_T = KL(q(x^(T) | x0) || B(pi)) = -H_q(X^(T) | x0) - E_q[log pi(x^(T)) | x0], nats, (N,)."""
    m_T = marginal_rate(schedule, x0, schedule.num_steps, pi)
    return -event_sum(bernoulli_entropy(m_T)) - _expected_log_pi(m_T, pi)


def decoder_term(schedule: Schedule, x0: jax.Array, pi: float) -> jax.Array:
    """L_0 = -E_q[log p(x0 | x^(1))] with Eq. 44's first step, nats per example, (N,).

    The binomial kernel is reversible with respect to B(pi), so p(x^(0) | x^(1)) is the forward
    kernel T_pi(x^(0) | x^(1); beta_1) and L_0 = H_q(X^(1) | x0) - log pi(x0) + E_q[log pi(x^(1))].
    """
    m_1 = marginal_rate(schedule, x0, 1, pi)
    log_pi_x0 = event_sum(bernoulli_log_prob(x0, pi))
    return event_sum(bernoulli_entropy(m_1)) - log_pi_x0 + _expected_log_pi(m_1, pi)


def kl_term(schedule: Schedule, reverse_fn: RateFn, x0, x_t, t, pi: float) -> jax.Array:
    """KL(q(x^(t-1) | x^(t), x0) || p(x^(t-1) | x^(t))) at a given x^(t), nats, shape (N,)."""
    t = t_array(t, x0.shape[0])
    target = q_posterior_rate(schedule, x0, x_t, t, pi)
    model = reverse_fn(x_t, t)
    chex.assert_equal_shape([model, x0])
    return event_sum(bernoulli_kl(target, model))


def _kl_fn(schedule: Schedule, reverse_fn: RateFn, x0, pi: float) -> terms.KLFn:
    def kl_fn(t, key):
        return kl_term(schedule, reverse_fn, x0, q_sample(schedule, x0, t, pi, key), t, pi)

    return kl_fn


def bound_terms(
    schedule: Schedule, reverse_fn: RateFn, x0: jax.Array, pi: float, key: chex.PRNGKey
) -> terms.BoundTerms:
    """L_T, sum_{t=2..T} L_{t-1} and L_0 per example (nats); one x^(t) per t and example."""
    check_binary(x0)
    check_rate(pi)
    validation.check_reverse_fn_steps(schedule, reverse_fn)
    x0 = validation.at_least_float32(x0)
    kl = terms.sum_over_steps(
        _kl_fn(schedule, _guarded(reverse_fn), x0, pi),
        schedule.num_steps,
        key,
        x0.shape[0],
        x0.dtype,
    )
    return terms.BoundTerms(
        prior=prior_term(schedule, x0, pi), kl=kl, decoder=decoder_term(schedule, x0, pi)
    )


def bound_exact(
    schedule: Schedule, reverse_fn: RateFn, x0: jax.Array, pi: float, key: chex.PRNGKey
) -> jax.Array:
    """K of Eq. 14 for each example, all KL terms t = 2..T summed (a lax.scan), bits, shape (N,).

    One forward sample x^(t) ~ q(x^(t) | x0) per t and example; the sum over t is exact.
    """
    k = terms.to_bits(bound_terms(schedule, reverse_fn, x0, pi, key))
    validation.check_finite_result(
        k, "the bound K", "Check that reverse_fn returns rates in [0, 1] and was built for this T."
    )
    return k


def kl_per_step(
    schedule: Schedule, reverse_fn: RateFn, x0: jax.Array, pi: float, key: chex.PRNGKey
) -> jax.Array:
    """Mean over examples of each KL term of Eq. 14, nats per example, shape (T - 1,), t = 2..T.

    Draws the same x^(t) as :func:`bound_exact` with the same key, so two
    reverse models (e.g. a network and :func:`moment_matched_rates`) are
    compared step by step on identical forward samples.
    """
    check_binary(x0)
    check_rate(pi)
    return terms.mean_per_step(_kl_fn(schedule, reverse_fn, x0, pi), schedule.num_steps, key)


def bound_estimate(
    schedule: Schedule,
    reverse_fn: RateFn,
    x0: jax.Array,
    pi: float,
    key: chex.PRNGKey,
    *,
    stratified: bool = False,
) -> jax.Array:
    """One-t estimate of K per example for training (t ~ U{2..T}, weight T - 1), bits, (N,).

    ``stratified`` spreads t evenly over the batch (:func:`dpm_jax.shapes.sample_timesteps`).
    """
    check_binary(x0)
    check_rate(pi)
    num_steps = schedule.num_steps
    key_t, key_x = jax.random.split(key)
    t = sample_timesteps(key_t, x0.shape[0], num_steps, stratified)
    x_t = q_sample(schedule, x0, t, pi, key_x)
    kl = kl_term(schedule, reverse_fn, x0, x_t, t, pi)
    return terms.to_bits(
        terms.BoundTerms(
            prior=prior_term(schedule, x0, pi),
            kl=(num_steps - 1) * kl,
            decoder=decoder_term(schedule, x0, pi),
        )
    )


def moment_matched_rates(schedule: Schedule, reference_x0: jax.Array, pi: float) -> RateFn:
    """The best factorised Bernoulli reverse kernel for the empirical data ``reference_x0`` (M, D).

    Per dimension, the rate of q(x^(t-1)_i = 1 | x^(t)) when q(x^(0)) is the
    empirical distribution: a mixture of the posteriors weighted by
    q(x^(0) = r_j | x^(t)). Its K is the ceiling a factorised reverse model
    reaches with this schedule.
    """
    ref = jnp.asarray(reference_x0)

    def reverse_fn(x_t: jax.Array, t: jax.Array) -> jax.Array:
        rate_t = jax.vmap(lambda r: marginal_rate(schedule, jnp.broadcast_to(r, x_t.shape), t, pi))(
            ref
        )  # (M, N, D)
        log_w = jnp.sum(bernoulli_log_prob(x_t[None], rate_t), axis=-1)  # (M, N)
        w = jax.nn.softmax(log_w, axis=0)
        post = jax.vmap(
            lambda r: q_posterior_rate(schedule, jnp.broadcast_to(r, x_t.shape), x_t, t, pi)
        )(ref)  # (M, N, D)
        return jnp.einsum("mn,mnd->nd", w, post)

    reverse_fn.num_steps = schedule.num_steps  # checked against the schedule it is used with
    return reverse_fn


def _guarded(reverse_fn: RateFn) -> RateFn:
    """``reverse_fn`` with rates outside [0, 1] (or NaN) turned into NaN, so an invalid
    reverse model gives a non-finite bound, never a plausible one."""

    def guarded(x_t, t):
        rate = reverse_fn(x_t, t)
        return jnp.where((rate >= 0) & (rate <= 1), rate, jnp.nan)

    return guarded


# ----------------------------------------------------------------------------------------------
# Sampling and conditioning.


def perturbed_rate(rate: jax.Array, factor_rate: jax.Array) -> jax.Array:
    """B(c) multiplied by a factor r(x_i) and renormalised (Table App.1, App. C).

    With d = r(1) / (r(0) + r(1)), the result is B(c d / (c d + (1 - c)(1 - d))).
    """
    num = rate * factor_rate
    return num / (num + (1.0 - rate) * (1.0 - factor_rate))


def sample(
    schedule: Schedule,
    reverse_fn: RateFn,
    key: chex.PRNGKey,
    shape: tuple[int, ...],
    pi: float,
    *,
    factor_rate: jax.Array | None = None,
    known: jax.Array | None = None,
    known_mask: jax.Array | None = None,
    return_trajectory: bool = False,
):
    """Ancestral sampling x^(T) ~ B(pi), x^(t-1) ~ B(f_b(x^(t), t)), one lax.scan (Eq. 5).

    Conditioning (App. C): ``factor_rate`` d = r(1) / (r(0) + r(1)) per element
    multiplies every reverse step (the perturbed binomial kernel, with the
    paper's constant r(x^(t)) = r(x^(0)) of Eq. 23); ``known`` bits where
    ``known_mask`` is true are clamped exactly at every step, x^(T) included.
    The last step uses Eq. 44's kernel. Returns x^(0), or (x^(0),
    trajectory of shape (T + 1, *shape) indexed by t).
    """
    check_rate(pi)
    validation.check_reverse_fn_steps(schedule, reverse_fn)
    if known_mask is not None:
        if known is None:
            raise ValueError("known_mask needs known, the bits to clamp where it is true.")
        chex.assert_equal_shape([jnp.asarray(known), jnp.asarray(known_mask)])
        if is_concrete(known) and is_concrete(known_mask):
            under_mask = np.asarray(known)[np.asarray(known_mask, bool)]
            if not np.all((under_mask == 0) | (under_mask == 1)):
                raise ValueError(
                    "known must be binary (0 or 1) wherever known_mask is true; got values in "
                    f"[{under_mask.min()}, {under_mask.max()}]. Threshold it first."
                )

    def condition(rate):
        if factor_rate is not None:
            rate = perturbed_rate(rate, factor_rate)
        if known_mask is not None:
            rate = jnp.where(known_mask, known, rate)
        return rate

    def draw(k, rate):
        return jax.random.bernoulli(k, condition(rate)).astype(jnp.float32)

    return chain.run(
        lambda k: draw(k, jnp.full(shape, pi)),
        lambda x, t, k: draw(k, reverse_fn(x, t_array(t, shape[0]))),
        lambda x1, k: draw(k, forward_rate(x1, schedule.betas[0], pi)),
        key,
        schedule.num_steps,
        return_trajectory=return_trajectory,
    )
