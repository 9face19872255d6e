"""Gaussian diffusion math checked against closed forms, Bayes' rule and Monte Carlo."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

from dpm_jax import gaussian as g
from dpm_jax import likelihood, parameterisation, schedules

T = 40


def _schedules():
    perturbation = 0.5 * jax.random.normal(jax.random.PRNGKey(7), (T - 1,))
    return {
        "reference_code": schedules.reference_code_schedule(T),
        "learned_perturbed": schedules.learned_schedule(perturbation, 1e-4),
        "cosine": schedules.cosine_schedule(T),
    }


def true_reverse_kernel(schedule, data_var=1.0):
    """The exact p(x^(t-1) | x^(t)) of Gaussian data N(0, data_var): conditioning a joint Gaussian."""

    def reverse_fn(x_t, t):
        b = g.beta(schedule, t)[:, None]
        v_t = g.alpha_bar(schedule, t)[:, None] * data_var + 1 - g.alpha_bar(schedule, t)[:, None]
        v_prev = (
            g.alpha_bar(schedule, t - 1)[:, None] * data_var
            + 1
            - g.alpha_bar(schedule, t - 1)[:, None]
        )
        mean = jnp.sqrt(1 - b) * v_prev / v_t * x_t
        var = v_prev * b / v_t
        return g.Kernel(mean, jnp.broadcast_to(var, x_t.shape))

    return reverse_fn


def expected_bound_bits(schedule, reverse_fn, x0, num_nodes=16):
    """E over every x^(t) of K(x0), by Gauss-Hermite quadrature (exact for quadratic KLs).

    The KL sums independent per-dimension terms, so one shared node per row gives the
    expectation of the sum. Returns bits, shape (N,).
    """
    nodes, weights = hermegauss(num_nodes)
    weights = weights / weights.sum()
    n, d = x0.shape
    x_rep = jnp.repeat(x0, num_nodes, axis=0)
    noise = jnp.broadcast_to(
        jnp.tile(jnp.asarray(nodes, jnp.float32), n)[:, None], (n * num_nodes, d)
    )
    total_kl = 0.0
    for t in range(2, schedule.num_steps + 1):
        kl = g.kl_term(schedule, reverse_fn, x_rep, t, noise).reshape(n, num_nodes)
        total_kl = total_kl + kl @ jnp.asarray(weights, jnp.float32)
    return likelihood.nats_to_bits(
        -(g.prior_term(schedule, x0) + g.continuous_decoder_term(schedule, x0)) - total_kl
    )


def test_gaussian_kl_matches_formula_and_monte_carlo():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.2, 2.0, 5), rng.uniform(0.2, 2.0, 5)
    kl = np.asarray(
        g.gaussian_kl(
            g.Kernel(jnp.array(m1), jnp.array(v1)), g.Kernel(jnp.array(m2), jnp.array(v2))
        )
    )
    formula = np.log(np.sqrt(v2 / v1)) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5
    np.testing.assert_allclose(kl, formula, rtol=1e-5)
    # Monte Carlo: E_p[log p(x) - log q(x)].
    x = m1 + np.sqrt(v1) * rng.normal(size=(400_000, 5))
    log_p = -0.5 * np.log(2 * np.pi * v1) - (x - m1) ** 2 / (2 * v1)
    log_q = -0.5 * np.log(2 * np.pi * v2) - (x - m2) ** 2 / (2 * v2)
    mc = (log_p - log_q).mean(0)
    se = (log_p - log_q).std(0) / np.sqrt(len(x))
    assert np.all(np.abs(mc - kl) < 5 * se + 1e-6)


def test_q_sample_matches_iterated_forward_kernel():
    """q(x^(t) | x^(0)) in closed form equals T_pi applied t times (Eq. 2), by simulation."""
    sch = schedules.reference_code_schedule(T)
    x0 = jnp.full((200_000, 1), 1.7)
    x = x0
    key = jax.random.PRNGKey(0)
    for t in range(1, T + 1):
        key, k = jax.random.split(key)
        b = sch.betas[t - 1]
        x = jnp.sqrt(1 - b) * x + jnp.sqrt(b) * jax.random.normal(k, x.shape)
        if t in (1, 10, T):
            closed = g.q_sample(sch, x0, t, jax.random.normal(k, x.shape))
            for stat in (jnp.mean, jnp.var):
                np.testing.assert_allclose(stat(x), stat(closed), atol=0.01)
    np.testing.assert_allclose(jnp.mean(x), 1.7 * jnp.sqrt(sch.alphas_cumprod[-1]), atol=0.01)


@pytest.mark.parametrize("t", [2, 5, 20, 40])
def test_posterior_matches_bayes_rule(t):
    """q(x^(t-1) | x^(t), x^(0)) ∝ q(x^(t) | x^(t-1)) q(x^(t-1) | x^(0)), integrated on a grid."""
    sch = schedules.reference_code_schedule(T)
    x0, x_t = 0.8, -0.3
    b = float(sch.betas[t - 1])
    ab_prev = float(g.alpha_bar(sch, t - 1))
    grid = np.linspace(-6, 6, 400_001)
    log_w = -((x_t - np.sqrt(1 - b) * grid) ** 2) / (2 * b) - (
        grid - np.sqrt(ab_prev) * x0
    ) ** 2 / (2 * (1 - ab_prev))
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    mean = (w * grid).sum()
    var = (w * (grid - mean) ** 2).sum()
    post = g.q_posterior(sch, jnp.array([[x0]]), jnp.array([[x_t]]), t)
    np.testing.assert_allclose(float(post.mean[0, 0]), mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(post.var[0, 0]), var, rtol=1e-3)


def test_posterior_at_t1_is_the_data():
    sch = schedules.reference_code_schedule(T)
    x0 = jnp.array([[0.4, -1.2]])
    post = g.q_posterior(sch, x0, jnp.array([[3.0, 3.0]]), 1)
    np.testing.assert_allclose(post.mean, x0, atol=1e-5)
    np.testing.assert_allclose(post.var, 0.0, atol=1e-7)


@pytest.mark.parametrize("name", ["reference_code", "learned_perturbed", "cosine"])
def test_exact_reverse_kernel_bound_equals_log_likelihood(name):
    """Unit-variance Gaussian data, exact reverse kernel: K(x0) = log2 N(x0; 0, I) for every x0,

    and its mean over the data is -(d/2) log2(2 pi e), to well within 1e-3 bits. Expectations over
    x^(t) and over x0 are Gauss-Hermite quadratures, exact for these quadratic integrands.
    """
    sch = _schedules()[name]
    reverse_fn = true_reverse_kernel(sch)
    # Pointwise, including examples far from unit scale.
    x0 = jnp.array([[0.0, 0.0], [1.0, -2.0], [3.0, 3.0], [-0.3, 0.7]])
    k = expected_bound_bits(sch, reverse_fn, x0)
    np.testing.assert_allclose(k, likelihood.gaussian_null_log_likelihood(x0), atol=2e-4)
    # Mean over x0 ~ N(0, I_2) by a product Gauss-Hermite grid.
    nodes, weights = hermegauss(12)
    weights = weights / weights.sum()
    grid = jnp.asarray(np.stack(np.meshgrid(nodes, nodes), -1).reshape(-1, 2), jnp.float32)
    w2 = np.outer(weights, weights).reshape(-1)
    mean_k = float(np.sum(w2 * np.asarray(expected_bound_bits(sch, reverse_fn, grid), np.float64)))
    assert abs(mean_k - (-likelihood.unit_gaussian_entropy_bits(2))) < 1e-3


def test_bound_exact_monte_carlo_matches_log_likelihood():
    """The public lax.scan bound, averaged over data and forward samples, within 4 standard errors."""
    sch = schedules.reference_code_schedule(T)
    x0 = jax.random.normal(jax.random.PRNGKey(1), (50_000, 2))
    k = jax.jit(lambda x, key: g.bound_exact(sch, true_reverse_kernel(sch), x, key))(
        x0, jax.random.PRNGKey(2)
    )
    diff = np.asarray(k - likelihood.gaussian_null_log_likelihood(x0), np.float64)
    mean, se = likelihood.mean_and_stderr(diff)
    assert se < 0.01
    assert abs(mean) < 4 * se


def test_one_step_estimate_is_unbiased_for_the_exact_bound():
    sch = schedules.reference_code_schedule(T)
    x0 = jax.random.normal(jax.random.PRNGKey(3), (100_000, 2))
    fn = true_reverse_kernel(sch)
    est = np.asarray(g.bound_estimate(sch, fn, x0, jax.random.PRNGKey(4)), np.float64)
    exact = np.asarray(g.bound_exact(sch, fn, x0, jax.random.PRNGKey(5)), np.float64)
    m_est, se_est = likelihood.mean_and_stderr(est)
    m_exact, se_exact = likelihood.mean_and_stderr(exact)
    assert abs(m_est - m_exact) < 4 * math.hypot(se_est, se_exact)


@pytest.mark.parametrize("data_var", [0.25, 2.0])
def test_bound_never_exceeds_true_log_likelihood(data_var):
    """Gaussian data of non-unit variance, best Gaussian reverse kernel for t >= 2: E[K] < E[log p]."""
    sch = schedules.reference_code_schedule(T)
    nodes, weights = hermegauss(16)
    weights = weights / weights.sum()
    x0 = jnp.asarray(nodes[:, None] * math.sqrt(data_var), jnp.float32)
    k = np.asarray(expected_bound_bits(sch, true_reverse_kernel(sch, data_var), x0), np.float64)
    expected_k = float(np.sum(weights * k))
    true_ll = -0.5 * math.log2(2 * math.pi * math.e * data_var)
    assert expected_k < true_ll

    # A mis-specified kernel (twice the variance) is worse still.
    def wrong(x_t, t):
        kern = true_reverse_kernel(sch, data_var)(x_t, t)
        return g.Kernel(kern.mean, 2 * kern.var)

    worse = float(np.sum(weights * np.asarray(expected_bound_bits(sch, wrong, x0), np.float64)))
    assert worse < expected_k


@pytest.mark.parametrize("data_var", [1.0, 0.5, 0.1])
def test_entropy_bounds_bracket_true_reverse_entropy(data_var):
    """Eq. 24 against H(X^(t-1) | X^(t)) of Gaussian data with variance <= 1 (closed form)."""
    sch = schedules.reference_code_schedule(T)
    lower, upper = g.entropy_bounds(sch)
    t = np.arange(2, T + 1)
    # Marginal variances v_t = abar_t data_var + 1 - abar_t, v_0 = data_var.
    ab = np.concatenate([[1.0], np.asarray(sch.alphas_cumprod, np.float64)])
    v = ab * data_var + 1 - ab
    b = np.asarray(sch.betas, np.float64)[t - 1]
    true_h = 0.5 * np.log(2 * np.pi * np.e * v[t - 1] * b / v[t])
    assert np.all(np.asarray(lower) <= true_h + 1e-5)
    assert np.all(true_h <= np.asarray(upper) + 1e-5)
    assert np.all(np.asarray(lower) < np.asarray(upper))


def test_sampling_with_exact_kernel_reproduces_the_data_distribution():
    sch = schedules.reference_code_schedule(T)
    x0, traj = jax.jit(
        lambda k: g.sample(sch, true_reverse_kernel(sch), k, (20_000, 2), return_trajectory=True)
    )(jax.random.PRNGKey(0))
    assert traj.shape == (T + 1, 20_000, 2)
    np.testing.assert_array_equal(traj[0], x0)
    for t in (0, T // 2, T):
        np.testing.assert_allclose(jnp.mean(traj[t], 0), 0.0, atol=0.04)
        np.testing.assert_allclose(jnp.var(traj[t], 0), 1.0, atol=0.05)
    x_only = g.sample(sch, true_reverse_kernel(sch), jax.random.PRNGKey(0), (5, 2))
    assert x_only.shape == (5, 2)


def test_readouts_reduce_to_the_forward_kernel_at_zero_coefficients():
    x = jnp.array([[0.5, -1.0]])
    zeros = jnp.zeros_like(x)
    b = 0.1
    sch = schedules.from_betas(jnp.full((T,), b))  # beta_t = b at every t
    t = jnp.array([3])

    def kernel(name, z_mu, z_sigma):
        param = parameterisation.from_readout(name)
        return parameterisation.kernel(param, sch, x, t, (z_mu, z_sigma))

    paper = kernel("paper", zeros, zeros)
    np.testing.assert_allclose(paper.var, b, rtol=1e-5)
    np.testing.assert_allclose(paper.mean, x * (1 - b), rtol=1e-5)
    ref = kernel("reference_code", zeros, zeros)
    np.testing.assert_allclose(ref.var, b, rtol=1e-5)
    np.testing.assert_allclose(ref.mean, x * math.sqrt(1 - b), rtol=1e-5)
    # Eq. 65: z_mu is the fixed point of the mean map.
    z = jnp.array([[2.0, 3.0]])
    fixed = parameterisation.kernel(parameterisation.from_readout("paper"), sch, z, t, (z, zeros))
    np.testing.assert_allclose(fixed.mean, z, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown readout"):
        parameterisation.from_readout("nope")


@pytest.mark.parametrize(
    "x0, error",
    [
        (jnp.array([[0.0, jnp.nan]]), "non-finite"),
        (jnp.array([[0.0, jnp.inf]]), "non-finite"),
        (jnp.zeros((3,)), "rank"),
        (jnp.zeros((3, 2), jnp.int32), "floating-point"),
    ],
)
def test_bad_data_gets_a_clear_error(x0, error):
    sch = schedules.reference_code_schedule(T)
    with pytest.raises((ValueError, TypeError), match=error):
        g.bound_exact(sch, true_reverse_kernel(sch), x0, jax.random.PRNGKey(0))
    with pytest.raises((ValueError, TypeError), match=error):
        g.bound_estimate(sch, true_reverse_kernel(sch), x0, jax.random.PRNGKey(0))


def test_moment_matched_kernel_recovers_the_true_reverse_kernel_of_gaussian_data():
    """With many reference points from N(0, I) it approaches the closed-form reverse kernel."""
    sch = schedules.reference_code_schedule(T)
    reference = jax.random.normal(jax.random.PRNGKey(0), (100_000, 2))
    kernel = g.moment_matched_kernel(sch, reference)
    x_t = jnp.array([[0.3, -0.5], [1.2, 0.8]])
    for t in (2, 20, T):
        tt = jnp.full((2,), t)
        got, want = kernel(x_t, tt), true_reverse_kernel(sch)(x_t, tt)
        np.testing.assert_allclose(got.mean, want.mean, atol=0.02)
        np.testing.assert_allclose(got.var, want.var, rtol=0.05)


def test_kl_per_step_uses_the_same_forward_samples_as_the_exact_bound():
    sch = schedules.reference_code_schedule(T)
    x0 = jax.random.normal(jax.random.PRNGKey(8), (64, 2))
    fn = true_reverse_kernel(sch, 0.5)
    key = jax.random.PRNGKey(9)
    per_step = g.kl_per_step(sch, fn, x0, key)
    assert per_step.shape == (T - 1,)
    k = g.bound_exact(sch, fn, x0, key)
    from_steps = likelihood.nats_to_bits(
        jnp.mean(-(g.prior_term(sch, x0) + g.continuous_decoder_term(sch, x0))) - jnp.sum(per_step)
    )
    np.testing.assert_allclose(jnp.mean(k), from_steps, rtol=1e-5)


def test_terms_in_bits_sum_to_k_and_many_forward_samples_reach_its_expectation():
    """``terms.in_bits``: K is bound_exact's, minus the sum of the terms; averaged over 4,000
    forward trajectories per example (the evaluator's ``forward_samples``), each example's K
    meets its expectation over x^(t) (Gauss-Hermite quadrature) for a wrong reverse kernel."""
    from dpm_jax import evaluation, terms

    sch = schedules.reference_code_schedule(T)
    exact = true_reverse_kernel(sch)

    def wide(x_t, t):  # the true mean with 1.5 times the true variance: K below the truth
        k = exact(x_t, t)
        return g.Kernel(k.mean, 1.5 * k.var)

    x0 = jnp.asarray([[0.3, -1.2], [2.0, 0.5], [-0.7, 0.0]], jnp.float32)
    key = jax.random.PRNGKey(9)
    bits = terms.in_bits(g.bound_terms(sch, wide, x0, key))
    np.testing.assert_array_equal(bits["K"], g.bound_exact(sch, wide, x0, key))
    total = sum(bits[name] for name in terms.TERM_NAMES)
    np.testing.assert_allclose(-total, bits["K"], rtol=1e-5, atol=1e-5)

    fn = evaluation.averaged_over_draws(
        evaluation.per_example_keys(lambda x, k: terms.in_bits(g.bound_terms(sch, wide, x, k))),
        4_000,
    )
    k_avg = np.asarray(jax.jit(fn)(x0, evaluation.example_keys(key, jnp.arange(3)))["K"])
    want = np.asarray(expected_bound_bits(sch, wide, x0))
    assert np.all(want < np.asarray(likelihood.gaussian_null_log_likelihood(x0)))  # wrong kernel
    # One draw's K has a spread of 0.7-0.85 bits here, so the mean of 4,000 is within 0.013
    # (one standard error) of its expectation: 0.06 is about 5 standard errors.
    np.testing.assert_allclose(k_avg, want, atol=0.06)
