import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import schedules


def test_cumulative_products_match_numpy():
    for sch in (
        schedules.reference_code_schedule(50),
        schedules.linear_schedule(50),
        schedules.cosine_schedule(50),
        schedules.learned_schedule(jnp.linspace(-1, 1, 49), 1e-3),
    ):
        assert sch.betas.shape == sch.alphas_cumprod.shape == (50,)
        expected = np.cumprod(1 - np.asarray(sch.betas, np.float64))
        np.testing.assert_allclose(sch.alphas_cumprod, expected, rtol=1e-5)


def test_binomial_schedule_is_one_over_t_minus_t_plus_one():
    sch = schedules.binomial_schedule(10)
    np.testing.assert_allclose(sch.betas, 1.0 / (10 - np.arange(1, 11) + 1), rtol=1e-6)
    assert float(sch.betas[-1]) == 1.0
    assert float(sch.alphas_cumprod[-1]) == 0.0


def test_reference_code_schedule_matches_the_released_code_values():
    """Values computed from the 2015 code's formula for T = 1000 (Sohl-Dickstein/Diffusion-Probabilistic-Models @ de92b57, ``generate_beta_arr``)."""
    sch = schedules.reference_code_schedule(1000)
    b = np.asarray(sch.betas)
    np.testing.assert_allclose(b[0], 0.00199999, rtol=1e-4)
    np.testing.assert_allclose(b[1:4], [0.00100199, 0.00100299, 0.00100399], rtol=1e-4)
    np.testing.assert_allclose(b[-3:], [0.25012344, 0.33344192, 0.4999955], rtol=1e-5)
    np.testing.assert_allclose(sch.alphas_cumprod[-1], 0.00099161, rtol=1e-3)


def test_linear_and_cosine_schedules():
    lin = schedules.linear_schedule(1000)
    np.testing.assert_allclose([lin.betas[0], lin.betas[-1]], [1e-4, 0.02], rtol=1e-5)
    cos = schedules.cosine_schedule(1000)
    s = 0.008
    f = lambda t: math.cos((t / 1000 + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 500, 900):
        np.testing.assert_allclose(cos.alphas_cumprod[t - 1], f(t) / f(0), rtol=1e-4)
    assert float(cos.betas.max()) <= 0.999 + 1e-6


def test_learned_schedule_starts_at_baseline_and_is_differentiable():
    T = 40
    sch = schedules.learned_schedule(schedules.init_learned_perturbation(T), 1e-4)
    np.testing.assert_allclose(sch.betas[0], 1e-4, rtol=1e-5)
    np.testing.assert_allclose(sch.betas[1:], schedules.reference_baseline(T)[1:], rtol=1e-5)

    def abar_T(p):
        return schedules.learned_schedule(p, 1e-4).alphas_cumprod[-1]

    grad = jax.grad(abar_T)(jnp.zeros((T - 1,)))
    assert np.all(np.asarray(grad) < 0)  # raising any beta_t lowers abar_T
    # Any perturbation keeps the betas inside (0, 1).
    big = schedules.learned_schedule(jnp.full((T - 1,), 30.0), 1e-4)
    assert np.all((np.asarray(big.betas) > 0) & (np.asarray(big.betas) <= 1))


@pytest.mark.parametrize("T", [1, 0, -3])
def test_too_few_steps_is_an_error(T):
    for make in (
        schedules.binomial_schedule,
        schedules.reference_code_schedule,
        schedules.linear_schedule,
        schedules.cosine_schedule,
    ):
        with pytest.raises(ValueError, match="T must be an integer >= 2"):
            make(T)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_betas_outside_unit_interval_are_errors(bad):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        schedules.learned_schedule(jnp.zeros(9), bad)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        schedules.linear_schedule(10, beta_start=bad if bad != 1.0 else 1.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        schedules.from_betas(jnp.array([0.1, bad if bad not in (1.0,) else 0.0, 0.2]))


def test_geometric_baseline_has_geometric_noise_variance():
    betas = schedules.geometric_baseline(30, 1e-4, final_noise_var=0.999)
    noise_var = 1 - np.cumprod(1 - betas)
    ratios = noise_var[1:] / noise_var[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-6)
    np.testing.assert_allclose([noise_var[0], noise_var[-1]], [1e-4, 0.999], rtol=1e-6)
    sch = schedules.learned_schedule(jnp.zeros(29), 1e-4, baseline="geometric")
    np.testing.assert_allclose(sch.betas, betas, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown baseline"):
        schedules.learned_schedule(jnp.zeros(29), 1e-4, baseline="nope")


def test_stratified_timesteps_cover_every_step_and_stay_uniform():
    from dpm_jax.shapes import sample_timesteps

    t = np.asarray(sample_timesteps(jax.random.PRNGKey(0), 39, 40, stratified=True))
    assert sorted(t.tolist()) == list(range(2, 41))
    draws = np.concatenate(
        [np.asarray(sample_timesteps(jax.random.PRNGKey(i), 5, 40, True)) for i in range(4000)]
    )
    counts = np.bincount(draws, minlength=41)[2:]
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()
    plain = np.asarray(sample_timesteps(jax.random.PRNGKey(1), 10_000, 40, stratified=False))
    assert plain.min() == 2 and plain.max() == 40
