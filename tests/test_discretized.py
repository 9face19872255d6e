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


def _discretised_normal(centres: np.ndarray, half_width: float) -> np.ndarray:
    """P(k) of N(0, 1) data rounded to the nearest centre, the two ends taking the tails."""
    lo = np.concatenate([[-np.inf], centres[1:] - half_width])
    hi = np.concatenate([centres[:-1] + half_width, [np.inf]])
    return stats.norm.cdf(hi) - stats.norm.cdf(lo)


def test_exact_eps_of_discretised_gaussian_data_gives_its_true_log_likelihood():
    """256 levels over [-4, 4] of N(0, 1) data (near unit variance, so beta_t is the true
    reverse variance): with the exact eps = E[eps | x_t] of this discrete distribution
    (a 256-component posterior, computed here) the discrete bound of every KL term and the
    discretised decoder equals log2 P(x0) within Monte Carlo error."""
    centres = np.linspace(-4.0, 4.0, 256)
    half = 4.0 / 255.0
    bins = discretized.PixelBins(-4.0, 4.0, half)
    probs = _discretised_normal(centres, half)
    # sigma_1 = 0.1, three bins: the reverse kernels are Gaussian to far below the test's error.
    sch = schedules.linear_schedule(200, 1e-2, 0.2)
    c = jnp.asarray(centres, jnp.float32)
    log_p = jnp.asarray(np.log(probs), jnp.float32)

    def eps_fn(x_t, t):
        ab = schedules.alpha_bar(sch, t)[:, None, None]
        log_w = log_p - 0.5 * jnp.square(x_t[..., None] - jnp.sqrt(ab) * c) / (1.0 - ab)
        x0_mean = jnp.sum(jax.nn.softmax(log_w, axis=-1) * c, axis=-1)
        return (x_t - jnp.sqrt(ab[..., 0]) * x0_mean) / jnp.sqrt(1.0 - ab[..., 0])

    rng = np.random.default_rng(0)
    index = rng.choice(256, size=(8000, 2), p=probs / probs.sum())
    x0 = jnp.asarray(centres[index], jnp.float32)
    truth = np.log2(probs[index]).sum(axis=1)

    def gap(var, model_fn):
        reverse_fn = pz.make_reverse_fn(pz.Parameterisation("epsilon", var), sch, model_fn)
        k = np.asarray(g.bound_exact(sch, reverse_fn, x0, jax.random.key(5), bins=bins))
        return (truth - k).mean(), (truth - k).std(ddof=1) / np.sqrt(len(k))

    # learned_range at v = 1 is beta_t at every t (fixed_large takes beta~_2 at t = 1).
    exact, se = gap("learned_range", lambda x_t, t: (eps_fn(x_t, t), jnp.ones_like(x_t)))
    assert abs(exact) < 3 * se and se < 0.03, (exact, se)  # bits per example
    # The check has power: beta~_t, the wrong variance for these data, loses bits.
    small, se_small = gap("fixed_small", eps_fn)
    assert small > 5 * se_small, (small, se_small)
