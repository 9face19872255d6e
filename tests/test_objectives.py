"""DDPM's L_simple and Eq. 12 against the bound's Gaussian KL terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import gaussian, objectives, schedules
from dpm_jax import parameterisation as pz

T = 50
SCHEDULE = schedules.linear_schedule(T, 1e-3, 0.2)
X0 = jax.random.normal(jax.random.PRNGKey(0), (64, 3, 2))


def _oracle_eps_fn(x0):
    """The true eps of x_t given x0: (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""

    def eps_fn(x_t, t):
        ab = schedules.alpha_bar(SCHEDULE, t)[:, None, None]
        return (x_t - jnp.sqrt(ab) * x0) / jnp.sqrt(1.0 - ab)

    return eps_fn


def test_l_simple_is_zero_for_the_true_eps_and_one_for_predicting_zero():
    loss = objectives.l_simple(SCHEDULE, _oracle_eps_fn(X0), X0, jax.random.PRNGKey(1))
    assert loss.shape == (64,) and float(jnp.max(loss)) < 1e-9
    zero = objectives.l_simple(SCHEDULE, lambda x, t: jnp.zeros_like(x), X0, jax.random.PRNGKey(2))
    # E ||eps||^2 / D = 1: within 5 standard errors (each example's mean of 6 chi^2_1 / 6).
    assert abs(float(jnp.mean(zero)) - 1.0) < 5 * np.sqrt(2 / 6 / 64)


@pytest.mark.parametrize("var", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("t", [2, 7, 30, T])
def test_the_kl_term_of_an_eps_model_is_eq_12(var, t):
    """KL(q(x^(t-1) | x^(t), x0) || p) from the kernel's mean (Eq. 11) equals
    lambda_t ||eps - eps_theta||^2 + D c_t (Eq. 12), for an arbitrary eps_theta."""
    param = pz.Parameterisation("epsilon", var)

    def eps_theta(x_t, tt):
        return 0.7 * x_t + 0.01 * tt[:, None, None] - 0.2

    reverse_fn = pz.make_reverse_fn(param, SCHEDULE, eps_theta)
    noise = jax.random.normal(jax.random.PRNGKey(t), X0.shape)
    tt = jnp.full((64,), t, jnp.int32)
    kl = gaussian.kl_term(SCHEDULE, reverse_fn, X0, tt, noise)
    x_t = gaussian.q_sample(SCHEDULE, X0, tt, noise)
    sigma_sq = reverse_fn(x_t, tt).var[:, 0, 0]
    expected = objectives.eps_kl_from_mse(SCHEDULE, tt, sigma_sq, noise, eps_theta(x_t, tt))
    np.testing.assert_allclose(kl, expected, rtol=2e-4, atol=1e-5)
    constant = objectives.variance_kl_constant(SCHEDULE, tt, sigma_sq)
    if var == "fixed_small":
        np.testing.assert_allclose(constant, 0.0, atol=1e-6)
    else:
        assert bool(jnp.all(constant > 0))
    # With the true eps the KL term is the variance constant alone (zero for beta~_t).
    exact = gaussian.kl_term(
        SCHEDULE, pz.make_reverse_fn(param, SCHEDULE, _oracle_eps_fn(X0)), X0, tt, noise
    )
    np.testing.assert_allclose(exact, 6 * constant, rtol=1e-3, atol=2e-4)
