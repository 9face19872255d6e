"""dpm_jax.importance: the importance-weighted bound K_M against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import binomial, gaussian, importance, likelihood, schedules
from dpm_jax.gaussian import Kernel

SCHED = schedules.linear_schedule(20, 0.02, 0.4)


def _reverse_fn(scale: float = 1.0):
    """For N(0, I) data q(x^(t-1) | x^(t)) = N(sqrt(1 - beta_t) x^(t), beta_t) exactly (the
    marginals stay N(0, I)); ``scale`` multiplies its variance."""

    def reverse_fn(x_t, t):
        b = schedules.beta(SCHED, t)[:, None]
        return Kernel(mean=jnp.sqrt(1.0 - b) * x_t, var=jnp.broadcast_to(scale * b, x_t.shape))

    reverse_fn.num_steps = SCHED.num_steps
    return reverse_fn


def test_the_exact_kernel_gives_the_truth_with_zero_weight_variance():
    x0 = jnp.array([[0.0, 0.0], [1.0, -2.0], [3.0, 3.0], [-0.3, 0.7]])
    truth = np.asarray(likelihood.gaussian_null_log_likelihood(x0))
    for m in (1, 10):
        lw = importance.log_weights(SCHED, _reverse_fn(), x0, jax.random.key(m), m)
        assert lw.shape == (4, m)
        np.testing.assert_allclose(np.ptp(np.asarray(lw), axis=1), 0.0, atol=2e-4)
        k_m = importance.importance_weighted_bound(SCHED, _reverse_fn(), x0, jax.random.key(m), m)
        np.testing.assert_allclose(k_m, truth, atol=2e-4)


def test_a_wrong_kernel_rises_with_m_towards_the_truth_and_k1_is_the_t_summed_bound():
    x0 = jax.random.normal(jax.random.key(0), (400, 2))
    truth = float(np.mean(likelihood.gaussian_null_log_likelihood(x0)))
    wrong = _reverse_fn(1.5)
    means, ses = [], []
    for m in (1, 10, 100):
        k = np.asarray(importance.importance_weighted_bound(SCHED, wrong, x0, jax.random.key(1), m))
        means.append(k.mean())
        ses.append(k.std(ddof=1) / np.sqrt(len(k)))
    # The same 400 points in every column, so the differences are paired: compare them.
    assert means[0] < means[1] < means[2] < truth, (means, truth)
    assert means[2] - means[0] > 0.05  # bits per point: M = 100 recovers a visible part
    # K_1 and the exact t-summed K estimate the same expectation.
    k_sum = np.asarray(gaussian.bound_exact(SCHED, wrong, x0, jax.random.key(2)))
    se = np.hypot(ses[0], k_sum.std(ddof=1) / np.sqrt(len(k_sum)))
    assert abs(means[0] - k_sum.mean()) < 4 * se, (means[0], k_sum.mean(), se)
    assert k_sum.mean() < means[1]  # the K < K_10, with the t-summed K itself


def test_m_below_one_is_refused():
    with pytest.raises(ValueError, match="num_samples \\(M\\) must be >= 1"):
        importance.log_weights(SCHED, _reverse_fn(), jnp.zeros((2, 2)), jax.random.key(0), 0)


# Binomial diffusion: the forward kernel is reversible with respect to B(pi), so for
# independent B(pi) data it is the exact reverse kernel and every trajectory's weight is p(x0).
PI = 0.3
BSCHED = schedules.binomial_schedule(15)


def _rate_fn(shift: float = 0.0):
    def rate_fn(x_t, t):
        rate = binomial.forward_rate(x_t, schedules.beta(BSCHED, t)[:, None], PI)
        return jax.nn.sigmoid(jnp.log(rate) - jnp.log1p(-rate) + shift)

    rate_fn.num_steps = BSCHED.num_steps
    return rate_fn


def _bernoulli_data(n: int, dim: int = 6) -> jax.Array:
    return jax.random.bernoulli(jax.random.key(5), PI, (n, dim)).astype(jnp.float32)


def test_binomial_exact_kernel_gives_the_truth_with_zero_weight_variance():
    x0 = _bernoulli_data(8)
    truth = np.asarray(binomial.null_log_likelihood(x0, PI))  # log2 of independent B(pi)
    lw = importance.binomial_log_weights(BSCHED, _rate_fn(), x0, PI, jax.random.key(0), 20)
    assert lw.shape == (8, 20)
    np.testing.assert_allclose(np.ptp(np.asarray(lw), axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(importance.bits_from_log_weights(lw), truth, atol=1e-4)


def test_binomial_wrong_kernel_rises_with_m_and_k1_is_the_t_summed_bound():
    x0 = _bernoulli_data(400)
    truth = float(np.mean(binomial.null_log_likelihood(x0, PI)))
    wrong = _rate_fn(0.7)
    means, ses = [], []
    for m in (1, 10, 100):
        lw = importance.binomial_log_weights(BSCHED, wrong, x0, PI, jax.random.key(1), m)
        k = np.asarray(importance.bits_from_log_weights(lw))
        means.append(k.mean())
        ses.append(k.std(ddof=1) / np.sqrt(len(k)))
    assert means[0] < means[1] < means[2] < truth, (means, truth)
    assert means[2] - means[0] > 0.05
    k_sum = np.asarray(binomial.bound_exact(BSCHED, wrong, x0, PI, jax.random.key(2)))
    se = np.hypot(ses[0], k_sum.std(ddof=1) / np.sqrt(len(k_sum)))
    assert abs(means[0] - k_sum.mean()) < 4 * se, (means[0], k_sum.mean(), se)
    assert k_sum.mean() < means[1]  # the K < K_10, with the t-summed K itself


def test_binomial_refuses_non_binary_data_and_m_below_one():
    with pytest.raises(ValueError, match="binary"):
        importance.binomial_log_weights(
            BSCHED, _rate_fn(), jnp.full((2, 3), 0.5), PI, jax.random.key(0), 2
        )
    with pytest.raises(ValueError, match="num_samples \\(M\\) must be >= 1"):
        importance.binomial_log_weights(
            BSCHED, _rate_fn(), _bernoulli_data(2), PI, jax.random.key(0), 0
        )
