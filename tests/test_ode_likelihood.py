"""dpm_jax.ode_likelihood: the probability-flow ODE's log p(x0) against Gaussian closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import ode_likelihood, parameterisation, schedules

SCHED = schedules.linear_schedule(1000, 1e-4, 0.02)
SCALE = 0.5  # data N(0, SCALE^2 I): not unit variance, so the flow moves the points
BETA_MIN, BETA_MAX = ode_likelihood.vp_coefficients(SCHED)


def exact_eps(x, t):
    """E[eps | x_t] of N(0, SCALE^2) data under the continuous VP process at s = (t-1)/(T-1)."""
    s = (t - 1.0) / (SCHED.num_steps - 1)
    ab = jnp.exp(-(BETA_MIN * s + 0.5 * (BETA_MAX - BETA_MIN) * s * s))
    ab = ab.reshape(-1, *([1] * (x.ndim - 1)))
    var = ab * SCALE**2 + 1.0 - ab
    return jnp.sqrt(1.0 - ab) * x / var


def _gaussian_log_density(x):
    return np.sum(-0.5 * np.log(2 * np.pi * SCALE**2) - 0.5 * np.asarray(x) ** 2 / SCALE**2, -1)


def test_exact_eps_gives_the_gaussian_log_density():
    x0 = jnp.array([[0.0, 0.0], [0.5, -1.0], [1.5, 1.0], [-0.2, 0.1]])
    log_p = ode_likelihood.ode_log_likelihood(SCHED, exact_eps, x0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_p, _gaussian_log_density(x0), atol=5e-3)

    # The check has power: the eps of unit-variance data gives that data's density instead.
    def unit_eps(x, t):
        s = (t - 1.0) / (SCHED.num_steps - 1)
        ab = jnp.exp(-(BETA_MIN * s + 0.5 * (BETA_MAX - BETA_MIN) * s * s))[:, None]
        return jnp.sqrt(1.0 - ab) * x

    unit = ode_likelihood.ode_log_likelihood(SCHED, unit_eps, x0)
    np.testing.assert_allclose(
        unit, -np.log(2 * np.pi) - 0.5 * np.sum(np.square(x0), -1), atol=5e-3
    )


def test_hutchinson_estimate_is_unbiased_within_its_standard_error():
    x0 = jnp.array([[0.3, -0.4, 0.8]])
    one_probe = jax.jit(
        lambda key: ode_likelihood.ode_log_likelihood(SCHED, exact_eps, x0, key, num_probes=1)
    )
    estimates = np.array([float(one_probe(jax.random.key(i))[0]) for i in range(20)])
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - _gaussian_log_density(x0)[0]) < 3 * se + 5e-3


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        ({"rtol": 0.0}, "tolerances must be positive"),
        ({"atol": -1e-5}, "tolerances must be positive"),
        ({"num_probes": -1}, "num_probes must be >= 0"),
        ({"num_probes": 2}, "needs a PRNG key"),
    ],
)
def test_bad_settings_are_refused(kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        ode_likelihood.ode_log_likelihood(SCHED, exact_eps, jnp.zeros((1, 2)), **kwargs)


def test_dequantised_bits_per_dim_match_the_closed_form_expectation_over_u():
    """One-pixel images of N(0, SCALE^2) data in [-1, 1]: the mean over u of the reported
    bits/dim equals E_u[-log2 N(2 (p + u) / 256 - 1; 0, SCALE^2)] + 7 (quadrature over u), and
    it bounds the bin's exact NLL, -log2 P(p), from above."""
    from math import erf, log2, sqrt

    n = 256
    for p in (100, 140):
        pixels = jnp.full((n, 1, 1, 1), p, jnp.uint8)
        bpd = ode_likelihood.dequantized_bits_per_dim(
            SCHED, exact_eps, pixels, jax.random.key(p), num_probes=0, rtol=1e-6, atol=1e-6
        )
        u = (np.arange(10_000) + 0.5) / 10_000
        x = 2.0 * (p + u) / 256.0 - 1.0
        log_density = -0.5 * np.log(2 * np.pi * SCALE**2) - 0.5 * x**2 / SCALE**2
        expected = float(np.mean(-log_density / np.log(2.0))) + 7.0
        bpd = np.asarray(bpd)
        se = bpd.std(ddof=1) / np.sqrt(n)
        assert abs(bpd.mean() - expected) < 3 * se + 5e-3, (bpd.mean(), expected, se)

        def cdf(v):
            return 0.5 * (1.0 + erf(v / (SCALE * sqrt(2.0))))

        bin_nll = -log2(cdf(2.0 * (p + 1) / 256.0 - 1.0) - cdf(2.0 * p / 256.0 - 1.0))
        assert expected >= bin_nll - 1e-9


def test_a_schedule_that_is_not_linear_is_refused():
    with pytest.raises(ValueError, match="needs a linear schedule"):
        ode_likelihood.ode_log_likelihood(
            schedules.cosine_schedule(100), exact_eps, jnp.zeros((1, 2))
        )


@pytest.mark.parametrize("mean", ["x0", "posterior_mean", "reference_code"])
def test_a_model_without_eps_output_is_refused(mean):
    var = "reference_code_sigmoid" if mean == "reference_code" else "fixed_large"
    with pytest.raises(ValueError, match="needs a model with an epsilon output"):
        parameterisation.eps_model(parameterisation.Parameterisation(mean, var), lambda x, t: x)


def test_eps_model_takes_the_mean_part_of_a_learned_variance_model():
    param = parameterisation.Parameterisation("epsilon", "learned_range")
    eps_fn = parameterisation.eps_model(param, lambda x, t: (2 * x, -x))
    np.testing.assert_allclose(eps_fn(jnp.ones((2, 3)), jnp.ones((2,))), 2.0)
