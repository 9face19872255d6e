"""The Swiss roll generator and its numerically integrated density."""

import jax
import numpy as np
import pytest

from dpm_jax.data import GaussianMixture, SwissRoll


def test_samples_have_unit_variance_and_zero_mean():
    x = np.asarray(SwissRoll().sample(jax.random.PRNGKey(0), 200_000))
    assert x.shape == (200_000, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(0), 0.0, atol=0.01)
    np.testing.assert_allclose(x.var(0).mean(), 1.0, atol=0.01)


def test_density_integrates_to_one():
    """Riemann sum of p over a grid covering the roll (a wider noise keeps the grid small)."""
    roll = SwissRoll(noise_std=1.0, num_quadrature=4000)
    axis = np.linspace(-3.0, 3.0, 241)
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    density = 2.0 ** roll.log_density(grid)
    cell = (axis[1] - axis[0]) ** 2
    np.testing.assert_allclose(density.sum() * cell, 1.0, atol=2e-3)


def test_density_quadrature_has_converged():
    y = np.asarray(SwissRoll().sample(jax.random.PRNGKey(1), 500))
    coarse = SwissRoll(num_quadrature=20_000).log_density(y)
    fine = SwissRoll(num_quadrature=80_000).log_density(y)
    np.testing.assert_allclose(coarse, fine, atol=1e-4)


def test_density_matches_a_histogram_of_samples():
    """Mean density over a box, from samples versus from the formula."""
    roll = SwissRoll(noise_std=0.5, num_quadrature=4000)
    x = np.asarray(roll.sample(jax.random.PRNGKey(2), 400_000))
    lo, hi = np.array([0.2, -0.6]), np.array([0.6, -0.2])
    frac = np.mean(np.all((x > lo) & (x < hi), axis=1))
    axis_x, axis_y = np.linspace(lo[0], hi[0], 41), np.linspace(lo[1], hi[1], 41)
    grid = np.stack(np.meshgrid(axis_x, axis_y), -1).reshape(-1, 2)
    integral = np.mean(2.0 ** roll.log_density(grid)) * np.prod(hi - lo)
    se = np.sqrt(frac * (1 - frac) / len(x))
    assert abs(frac - integral) < 5 * se + 1e-3


def test_bad_parameters():
    with pytest.raises(ValueError, match="noise_std"):
        SwissRoll(noise_std=0.0)
    with pytest.raises(ValueError, match="s_max"):
        SwissRoll(s_min=3.0, s_max=1.0)


def test_gaussian_mixture_has_unit_variance_and_its_density_integrates_to_one():
    mix = GaussianMixture()
    x = np.asarray(mix.sample(jax.random.PRNGKey(2), 200_000))
    assert x.shape == (200_000, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(0), 0.0, atol=0.01)
    np.testing.assert_allclose(x.var(0).mean(), 1.0, atol=0.01)
    axis = np.linspace(-3.5, 3.5, 281)
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    cell = (axis[1] - axis[0]) ** 2
    np.testing.assert_allclose((2.0 ** mix.log_density(grid)).sum() * cell, 1.0, atol=2e-3)
    # One component alone is the Gaussian's closed form.
    one = GaussianMixture(num_components=1, component_std=0.5)
    y = np.array([[0.1, -0.2]])
    mu = one.means()[0]
    closed = -np.log(2 * np.pi * 0.25) - 0.5 * np.sum((y - mu) ** 2) / 0.25
    np.testing.assert_allclose(one.log_density(y), closed / np.log(2.0), rtol=1e-12)
    with pytest.raises(ValueError, match="component_std must lie in"):
        GaussianMixture(component_std=1.5)
