"""Binomial diffusion checked against brute-force enumeration over all paths."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import binomial as bn
from dpm_jax import likelihood, schedules

PI = 0.3


def transition(beta_t, pi=PI):
    """2x2 matrix M[a, b] = q(x_t = b | x_{t-1} = a) of the forward kernel, numpy float64."""
    r = np.array([pi * beta_t, 1 - beta_t + pi * beta_t])  # rate of x_t = 1 given a = 0, 1
    return np.stack([1 - r, r], axis=1)


def toy_reverse_fn(schedule):
    """An arbitrary fixed reverse model: rates depend on x_t, t and the other coordinate."""

    def fn(x_t, t):
        other = x_t[:, ::-1]
        z = 0.7 * x_t - 0.4 * other + 0.05 * t[:, None] - 0.3
        return bn.forward_logit_readout(x_t, z, schedules.beta(schedule, t)[:, None], PI)

    return fn


def log_q_chain(schedule, x0, path):
    """log q(x_1..T | x0) for one example; path has shape (T, D)."""
    total, prev = 0.0, np.asarray(x0)
    for t in range(1, schedule.num_steps + 1):
        m = transition(float(schedule.betas[t - 1]))
        total += np.sum(np.log(m[prev.astype(int), path[t - 1].astype(int)]))
        prev = path[t - 1]
    return total


def log_p_chain(schedule, fn, x0, path):
    """log p(x_0..T) with p(x_T) = B(pi), the model for t >= 2 and Eq. 44 at t = 1."""
    T = schedule.num_steps
    total = np.sum(np.where(path[T - 1] > 0, np.log(PI), np.log(1 - PI)))
    for t in range(T, 1, -1):
        rate = np.asarray(fn(jnp.asarray(path[t - 1][None], jnp.float32), jnp.array([t])))[0]
        x_prev = path[t - 2]
        total += np.sum(np.where(x_prev > 0, np.log(rate), np.log(1 - rate)))
    m = transition(float(schedule.betas[0]))
    total += np.sum(np.log(m[path[0].astype(int), np.asarray(x0).astype(int)]))
    return total


def expected_bound_bits(schedule, fn, x0):
    """K(x0) with E over x^(t) ~ q(x^(t) | x0) by enumerating all 2^D states, bits."""
    d = x0.shape[1]
    states = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=d)), jnp.float32)
    total_kl = 0.0
    for t in range(2, schedule.num_steps + 1):
        rate = bn.marginal_rate(schedule, x0, t, PI)  # (1, D)
        w = jnp.prod(jnp.where(states > 0, rate, 1 - rate), axis=1)
        x_rep = jnp.broadcast_to(x0, states.shape)
        kl = bn.kl_term(schedule, fn, x_rep, states, t, PI)
        total_kl += float(jnp.sum(w * kl))
    return float(
        likelihood.nats_to_bits(
            -(bn.prior_term(schedule, x0, PI) + bn.decoder_term(schedule, x0, PI))[0] - total_kl
        )
    )


def test_marginal_matches_iterated_transition_matrices():
    sch = schedules.binomial_schedule(6)
    for x0 in (0, 1):
        p = np.eye(2)[x0]
        for t in range(1, 7):
            p = p @ transition(float(sch.betas[t - 1]))
            got = bn.marginal_rate(sch, jnp.array([[float(x0)]]), t, PI)
            np.testing.assert_allclose(float(got[0, 0]), p[1], rtol=1e-5)


@pytest.mark.parametrize("t", [1, 2, 4, 6])
def test_posterior_matches_bayes_rule_by_enumeration(t):
    sch = schedules.binomial_schedule(6)
    for x0, x_t in itertools.product((0, 1), repeat=2):
        prior = np.eye(2)[x0]
        for s in range(1, t):
            prior = prior @ transition(float(sch.betas[s - 1]))
        joint = prior * transition(float(sch.betas[t - 1]))[:, x_t]
        want = joint[1] / joint.sum()
        got = bn.q_posterior_rate(sch, jnp.array([[float(x0)]]), jnp.array([[float(x_t)]]), t, PI)
        np.testing.assert_allclose(float(got[0, 0]), want, rtol=1e-5)


def test_bound_equals_brute_force_expectation_over_all_paths():
    """K of Eq. 14 (closed-form pieces, exact expectation) = E_q[log p(x_0..T) / q(x_1..T | x0)]."""
    T, D = 4, 2
    sch = schedules.from_betas(jnp.array([0.1, 0.3, 0.5, 0.6]))
    fn = toy_reverse_fn(sch)
    for x0_tuple in itertools.product((0.0, 1.0), repeat=D):
        x0 = np.array(x0_tuple)
        brute, log_px = 0.0, []
        for bits in itertools.product((0.0, 1.0), repeat=T * D):
            path = np.array(bits).reshape(T, D)
            lq = log_q_chain(sch, x0, path)
            lp = log_p_chain(sch, fn, x0, path)
            brute += math.exp(lq) * (lp - lq)
            log_px.append(lp)
        k = expected_bound_bits(sch, fn, jnp.asarray(x0[None], jnp.float32))
        np.testing.assert_allclose(k, brute / math.log(2), atol=2e-5)
        # And it is a lower bound on the model's exact log-likelihood (sum over all paths).
        log_p_x0 = np.logaddexp.reduce(log_px) / math.log(2)
        assert k <= log_p_x0 + 1e-6


def test_true_reverse_kernel_of_equilibrium_data_gives_the_true_log_likelihood():
    """Bernoulli(pi) data: the forward kernel is its exact reverse, and K(x0) = log2 pi(x0)."""
    sch = schedules.binomial_schedule(12)

    def exact(x_t, t):
        return bn.forward_logit_readout(
            x_t, jnp.zeros_like(x_t), schedules.beta(sch, t)[:, None], PI
        )

    for x0 in ([0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]):
        x0 = jnp.array([x0])
        np.testing.assert_allclose(
            expected_bound_bits(sch, exact, x0), float(bn.null_log_likelihood(x0, PI)[0]), atol=1e-4
        )
    # The lax.scan bound with sampled x^(t), averaged, within 4 standard errors.
    x0 = jax.random.bernoulli(jax.random.PRNGKey(0), PI, (20_000, 3)).astype(jnp.float32)
    k = bn.bound_exact(sch, exact, x0, PI, jax.random.PRNGKey(1))
    diff = np.asarray(k - bn.null_log_likelihood(x0, PI), np.float64)
    mean, se = likelihood.mean_and_stderr(diff)
    assert abs(mean) < 4 * se + 1e-6


def test_one_t_estimate_is_unbiased():
    sch = schedules.binomial_schedule(10)
    fn = toy_reverse_fn(sch)
    x0 = jax.random.bernoulli(jax.random.PRNGKey(2), 0.5, (50_000, 2)).astype(jnp.float32)
    est = np.asarray(bn.bound_estimate(sch, fn, x0, PI, jax.random.PRNGKey(3)), np.float64)
    exact = np.asarray(bn.bound_exact(sch, fn, x0, PI, jax.random.PRNGKey(4)), np.float64)
    (m1, s1), (m2, s2) = likelihood.mean_and_stderr(est), likelihood.mean_and_stderr(exact)
    assert abs(m1 - m2) < 4 * math.hypot(s1, s2)


def test_bernoulli_kl_and_perturbed_rate():
    p, q = jnp.array([0.0, 0.2, 1.0]), jnp.array([0.3, 0.6, 0.9])
    want = [
        math.log(1 / 0.7),
        0.2 * math.log(0.2 / 0.6) + 0.8 * math.log(0.8 / 0.4),
        math.log(1 / 0.9),
    ]
    np.testing.assert_allclose(bn.bernoulli_kl(p, q), want, rtol=1e-5)
    # B(c) times a factor with r(1)/r(0) = 3, renormalised.
    c, d = 0.4, 0.75
    np.testing.assert_allclose(bn.perturbed_rate(c, d), c * 3 / (c * 3 + (1 - c)), rtol=1e-6)


def test_sampling_clamps_known_bits_and_applies_factors():
    sch = schedules.binomial_schedule(20)
    fn = toy_reverse_fn(sch)
    known = jnp.array([[1.0, 0.0]])
    mask = jnp.array([[True, False]])
    x0, traj = bn.sample(
        sch,
        fn,
        jax.random.PRNGKey(0),
        (500, 2),
        PI,
        known=known,
        known_mask=mask,
        return_trajectory=True,
    )
    assert traj.shape == (21, 500, 2)
    assert np.all(np.asarray(traj[:, :, 0]) == 1.0)
    # A strong factor towards 1 on the second bit makes it mostly 1.
    x0f = bn.sample(
        sch, fn, jax.random.PRNGKey(1), (500, 2), PI, factor_rate=jnp.array([[0.5, 0.99]])
    )
    assert float(jnp.mean(x0f[:, 1])) > 0.9


def test_moment_matched_rates_recover_the_forward_kernel_for_equilibrium_data():
    sch = schedules.binomial_schedule(8)
    ref = jax.random.bernoulli(jax.random.PRNGKey(5), PI, (20_000, 2)).astype(jnp.float32)
    fn = bn.moment_matched_rates(sch, ref, PI)
    x_t = jnp.array([[0.0, 1.0], [1.0, 1.0]])
    for t in (2, 5, 8):
        tt = jnp.full((2,), t)
        want = bn.forward_rate(x_t, schedules.beta(sch, tt)[:, None], PI)
        np.testing.assert_allclose(fn(x_t, tt), want, atol=0.02)


@pytest.mark.parametrize(
    "x0, pi, match",
    [
        (jnp.array([[0.0, 0.5]]), PI, "binary"),
        (jnp.array([[0.0, 2.0]]), PI, "binary"),
        (jnp.array([[0.0, jnp.nan]]), PI, "non-finite"),
        (jnp.array([[0.0, 1.0]]), 1.0, r"\(0, 1\)"),
        (jnp.array([[0.0, 1.0]]), -0.1, r"\(0, 1\)"),
    ],
)
def test_bad_input_gets_a_clear_error(x0, pi, match):
    sch = schedules.binomial_schedule(5)
    with pytest.raises(ValueError, match=match):
        bn.bound_exact(sch, toy_reverse_fn(sch), x0, pi, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="T must be an integer >= 2"):
        schedules.binomial_schedule(1)


def test_stratified_one_t_estimate_is_unbiased():
    sch = schedules.binomial_schedule(10)
    fn = toy_reverse_fn(sch)
    x0 = jax.random.bernoulli(jax.random.PRNGKey(6), 0.5, (45_000, 2)).astype(jnp.float32)
    est = np.asarray(
        bn.bound_estimate(sch, fn, x0, PI, jax.random.PRNGKey(7), stratified=True), np.float64
    )
    exact = np.asarray(bn.bound_exact(sch, fn, x0, PI, jax.random.PRNGKey(8)), np.float64)
    (m1, s1), (m2, s2) = likelihood.mean_and_stderr(est), likelihood.mean_and_stderr(exact)
    assert abs(m1 - m2) < 4 * math.hypot(s1, s2)


def test_kl_per_step_matches_the_exact_bound_with_the_same_key():
    sch = schedules.binomial_schedule(12)
    fn = toy_reverse_fn(sch)
    x0 = jax.random.bernoulli(jax.random.PRNGKey(9), 0.5, (64, 2)).astype(jnp.float32)
    key = jax.random.PRNGKey(10)
    per_step = bn.kl_per_step(sch, fn, x0, PI, key)
    assert per_step.shape == (11,)
    k = bn.bound_exact(sch, fn, x0, PI, key)
    from_steps = likelihood.nats_to_bits(
        jnp.mean(-(bn.prior_term(sch, x0, PI) + bn.decoder_term(sch, x0, PI))) - jnp.sum(per_step)
    )
    np.testing.assert_allclose(jnp.mean(k), from_steps, rtol=1e-5)
