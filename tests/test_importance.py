"""dpm_jax.importance: the importance-weighted bound K_M against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import gaussian, importance, likelihood, schedules
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


def test_m_below_one_is_refused():
    with pytest.raises(ValueError, match="num_samples \\(M\\) must be >= 1"):
        importance.log_weights(SCHED, _reverse_fn(), jnp.zeros((2, 2)), jax.random.key(0), 0)
