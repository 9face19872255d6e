"""The one chain driver and respacing: bit-for-bit equalities and closed-form checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import chain, likelihood, schedules
from dpm_jax import gaussian as g
from dpm_jax import parameterisation as pz

T = 100
EPS_FIXED_LARGE = pz.Parameterisation("epsilon", "fixed_large")


def _optimal_eps_model(schedule):
    """E[eps | x_t] for unit-variance Gaussian data: sqrt(1 - abar_t) x_t (original t)."""
    return lambda x_t, t: jnp.sqrt(1.0 - g.alpha_bar(schedule, t))[:, None] * x_t


def test_uniform_timesteps_are_evenly_strided_and_keep_both_ends():
    np.testing.assert_array_equal(chain.uniform_timesteps(10, 4), [1, 4, 7, 10])
    np.testing.assert_array_equal(chain.uniform_timesteps(1000, 1000), np.arange(1, 1001))
    kept = chain.uniform_timesteps(1000, 50)
    assert kept[0] == 1 and kept[-1] == 1000 and len(np.unique(kept)) == 50
    with pytest.raises(ValueError, match="count must lie"):
        chain.uniform_timesteps(10, 11)


@pytest.mark.parametrize("make", [schedules.linear_schedule, schedules.cosine_schedule])
def test_respaced_schedule_keeps_abar_at_the_kept_steps(make):
    sch = make(T)
    kept = np.array([1, 2, 5, 20, 21, 60, 100])
    new, timestep_map = chain.respace(sch, kept)
    np.testing.assert_array_equal(timestep_map, kept)
    np.testing.assert_array_equal(new.alphas_cumprod, sch.alphas_cumprod[kept - 1])
    # prod of (1 - beta') reproduces abar' (the definition of the respaced betas).
    np.testing.assert_allclose(
        np.cumprod(1.0 - np.asarray(new.betas, np.float64)),
        new.alphas_cumprod,
        rtol=1e-5,
        atol=1e-8,
    )
    # Adjacent kept steps keep their beta exactly.
    np.testing.assert_array_equal(
        np.asarray(new.betas)[[0, 1, 4]], np.asarray(sch.betas)[[0, 1, 20]]
    )


def test_respacing_with_every_step_kept_returns_the_schedule_and_the_full_sampler_bitwise():
    sch = schedules.linear_schedule(T, 1e-3, 0.1)
    new, timestep_map = chain.respace(sch, np.arange(1, T + 1))
    np.testing.assert_array_equal(new.betas, sch.betas)
    np.testing.assert_array_equal(new.alphas_cumprod, sch.alphas_cumprod)
    model = _optimal_eps_model(sch)
    full = pz.make_reverse_fn(EPS_FIXED_LARGE, sch, model)
    respaced = pz.make_reverse_fn(EPS_FIXED_LARGE, new, model, timestep_map)
    key = jax.random.PRNGKey(0)
    for final in g.FINAL_STEPS:
        a, traj_a = g.sample(sch, full, key, (64, 2), final=final, return_trajectory=True)
        b, traj_b = g.sample(new, respaced, key, (64, 2), final=final, return_trajectory=True)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(traj_a, traj_b)


@pytest.mark.parametrize("count", [10, 25])
def test_respaced_sampling_of_unit_gaussian_data_with_the_true_kernel_is_exact(count):
    """For N(0, I) data the true reverse kernel of *any* schedule is eps-optimal with variance
    beta'_t, so the respaced chain must sample N(0, I) whatever steps it keeps."""
    sch = schedules.linear_schedule(1000)
    new, timestep_map = chain.respace(sch, chain.uniform_timesteps(1000, count))
    reverse_fn = pz.make_reverse_fn(EPS_FIXED_LARGE, new, _optimal_eps_model(sch), timestep_map)
    # Eq. 44's last step is the true one for unit-variance data.
    x = np.asarray(g.sample(new, reverse_fn, jax.random.PRNGKey(1), (100_000, 2)), np.float64)
    n = x.size
    assert abs(x.mean()) < 4 / np.sqrt(n)
    assert abs(x.var() - 1.0) < 4 * np.sqrt(2 / n)


def test_binomial_and_gaussian_samplers_share_the_driver_keys():
    """chain.run's key layout: the same key gives the same per-step noise to every sampler."""
    seen = []

    def step_fn(x, t, k):
        seen.append(None)
        return x + jax.random.normal(k, x.shape)

    key = jax.random.PRNGKey(2)
    x0, traj = chain.run(
        lambda k: jax.random.normal(k, (3, 1)),
        step_fn,
        lambda x1, k: x1 + jax.random.normal(k, x1.shape),
        key,
        5,
        return_trajectory=True,
    )
    # Rebuild by hand: init key first, then step keys k_2..k_T in the scan, k_1 last.
    key_init, key_steps = jax.random.split(key)
    keys = jax.random.split(key_steps, 5)
    x = jax.random.normal(key_init, (3, 1))
    states = {5: x}
    for i, t in enumerate(range(5, 1, -1)):
        x = x + jax.random.normal(keys[i + 1], x.shape)
        states[t - 1] = x
    x = x + jax.random.normal(keys[0], x.shape)
    np.testing.assert_allclose(x0, x, rtol=1e-6)  # compiled scan vs eager: float32 round-off
    for t in range(1, 6):
        np.testing.assert_allclose(traj[t], states[t], rtol=1e-6)


def test_ddpm_final_step_is_the_mean_without_noise():
    sch = schedules.linear_schedule(T)
    reverse_fn = pz.make_reverse_fn(EPS_FIXED_LARGE, sch, _optimal_eps_model(sch))
    key = jax.random.PRNGKey(3)
    x0, traj = g.sample(sch, reverse_fn, key, (8, 2), final="model_mean", return_trajectory=True)
    expected = reverse_fn(traj[1], jnp.ones((8,), jnp.int32)).mean
    np.testing.assert_allclose(x0, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="final must be one of"):
        g.sample(sch, reverse_fn, key, (8, 2), final="ddpm")


def test_respace_rejects_bad_subsets():
    sch = schedules.linear_schedule(T)
    for kept in ([5], [3, 2], [0, 5], [1, T + 1], [1.5, 3.0]):
        with pytest.raises(ValueError, match="strictly increasing"):
            chain.respace(sch, np.asarray(kept))


def test_bound_with_respaced_true_kernel_stays_below_the_log_likelihood():
    """A respaced chain is a diffusion of its own: its exact bound with the true kernel of unit
    Gaussian data is the exact log-likelihood (to quadrature precision), never above it."""
    from test_gaussian import expected_bound_bits

    sch = schedules.linear_schedule(1000)
    new, timestep_map = chain.respace(sch, chain.uniform_timesteps(1000, 20))
    reverse_fn = pz.make_reverse_fn(EPS_FIXED_LARGE, new, _optimal_eps_model(sch), timestep_map)
    x0 = jnp.array([[0.0, 0.0], [1.0, -2.0], [2.5, 0.5]])
    k = expected_bound_bits(new, reverse_fn, x0)
    np.testing.assert_allclose(k, likelihood.gaussian_null_log_likelihood(x0), atol=5e-4)
