"""DDPM's discretised Gaussian decoder against numerical integration, and as a bound term."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from dpm_jax import discretized, schedules
from dpm_jax import gaussian as g
from dpm_jax import parameterisation as pz

BINS = discretized.PixelBins(-1.0, 1.0, 1.0 / 255.0)
CENTRES = np.linspace(-1.0, 1.0, 256)


@pytest.mark.parametrize(
    "mean, std",
    [(0.0, 0.01), (0.3, 0.2), (-0.999, 1e-3), (1.7, 0.05), (-0.5, 2.0), (0.0123, 1e-4)],
)
def test_bin_probabilities_sum_to_one_and_match_numerical_integration(mean, std):
    x = jnp.asarray(CENTRES, jnp.float32)
    log_p = discretized.log_prob(x, jnp.full_like(x, mean), jnp.full_like(x, std**2), BINS)
    p = np.exp(np.asarray(log_p, np.float64))
    assert abs(p.sum() - 1.0) < 1e-6
    edges = np.concatenate([[-np.inf], (CENTRES[:-1] + CENTRES[1:]) / 2, [np.inf]])
    pdf = stats.norm(mean, std).pdf
    # Integrate the bins that hold mass (quad over 256 intervals; the tails by the CDF).
    for i in np.flatnonzero(p > 1e-6):
        lo, hi = edges[i], edges[i + 1]
        if np.isinf(lo):
            ref = stats.norm(mean, std).cdf(hi)
        elif np.isinf(hi):
            ref = stats.norm(mean, std).sf(lo)
        else:
            ref = integrate.quad(pdf, lo, hi, points=[mean] if lo < mean < hi else None)[0]
        np.testing.assert_allclose(p[i], ref, rtol=2e-4, atol=1e-7)


def test_far_tail_bins_are_finite_and_gradients_are_finite():
    x = jnp.asarray([-1.0, 1.0, 0.0], jnp.float32)
    mean = jnp.asarray([0.9, -0.9, 0.5], jnp.float32)
    var = jnp.full((3,), 1e-4, jnp.float32)
    log_p = discretized.log_prob(x, mean, var, BINS)
    assert np.all(np.isfinite(log_p)) and np.all(np.asarray(log_p) < -100)
    grad = jax.grad(lambda m: jnp.sum(discretized.log_prob(x, m, var, BINS)))(mean)
    assert np.all(np.isfinite(grad))


def test_discretized_decoder_term_is_minus_the_log_bin_probability_of_the_kernel():
    """L_0 in the bound equals -log P(bins) of the model's t = 1 kernel at the same x^(1)."""
    sch = schedules.linear_schedule(50)
    param = pz.Parameterisation("x0", "fixed_large")
    x0 = jnp.asarray(np.random.default_rng(0).choice(CENTRES, size=(4, 6)), jnp.float32)
    reverse_fn = pz.make_reverse_fn(param, sch, lambda x_t, t: x_t)
    noise = jax.random.normal(jax.random.PRNGKey(0), x0.shape)
    term = g.discretized_decoder_term(sch, reverse_fn, x0, noise, BINS)
    x1 = g.q_sample(sch, x0, 1, noise)
    kern = reverse_fn(x1, jnp.ones((4,), jnp.int32))
    mean, std = np.asarray(kern.mean, np.float64), np.sqrt(np.asarray(kern.var, np.float64))
    x = np.asarray(x0, np.float64)
    lo = np.where(x < -1 + 1 / 255, -np.inf, x - 1 / 255)
    hi = np.where(x > 1 - 1 / 255, np.inf, x + 1 / 255)
    prob = stats.norm.cdf(hi, mean, std) - stats.norm.cdf(lo, mean, std)
    np.testing.assert_allclose(term, -np.log(prob).sum(-1), rtol=1e-4)


def test_discrete_bound_of_a_point_mass_is_a_valid_codelength():
    """Data that is one pixel value: the model predicting x0 exactly with beta~ variances makes
    every KL term zero, and K = log2 P(x0) <= 0 bits (a probability, not a density)."""
    sch = schedules.linear_schedule(100, 1e-4, 0.05)
    value = CENTRES[100]
    x0 = jnp.full((5, 3), value, jnp.float32)
    param = pz.Parameterisation("x0", "fixed_small")
    reverse_fn = pz.make_reverse_fn(param, sch, lambda x_t, t: jnp.full_like(x_t, value))
    terms = g.bound_terms(sch, reverse_fn, x0, jax.random.PRNGKey(1), bins=BINS)
    np.testing.assert_allclose(terms.kl, 0.0, atol=1e-3)
    k = np.asarray(g.bound_exact(sch, reverse_fn, x0, jax.random.PRNGKey(1), bins=BINS))
    assert np.all(k <= 0.0)
    # The decoder is N(x0, beta~_2) at t = 1: L_0 = -3 log(2 Phi(h / sigma) - 1), h half a bin.
    sigma = np.sqrt(float(pz.posterior_variance(sch, 2)))
    mass = 2 * stats.norm.cdf((1 / 255) / sigma) - 1
    np.testing.assert_allclose(terms.decoder, -3 * np.log(mass), rtol=1e-4)
    np.testing.assert_allclose(-k * np.log(2), terms.prior + terms.decoder + terms.kl, rtol=1e-5)
