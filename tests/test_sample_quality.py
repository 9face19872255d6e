"""dpm_jax.sample_quality: the Fréchet distance against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from dpm_jax import sample_quality


def test_commuting_covariances_give_the_closed_form():
    """Diagonal covariances: |dmu|^2 + sum (sigma_a - sigma_b)^2."""
    mean_a, mean_b = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 2.0, 0.1])
    fd = sample_quality.frechet_distance(mean_a, np.diag(sd_a**2), mean_b, np.diag(sd_b**2))
    assert fd == pytest.approx(np.sum((mean_a - mean_b) ** 2) + np.sum((sd_a - sd_b) ** 2))


def test_rotated_gaussians_match_the_two_dimensional_closed_form():
    """N(0, R diag(a^2, b^2) R^T) against N(0, I): tr(C) + 2 - 2 tr(C^(1/2)) = (a-1)^2 + (b-1)^2
    for any rotation R, and the distance is symmetric."""
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    cov = rot @ np.diag([4.0, 0.25]) @ rot.T
    fd = sample_quality.frechet_distance(np.zeros(2), cov, np.zeros(2), np.eye(2))
    assert fd == pytest.approx((2 - 1) ** 2 + (0.5 - 1) ** 2)
    back = sample_quality.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), cov)
    assert back == pytest.approx(fd)


def test_non_commuting_covariances_match_an_independent_formula():
    """For 2x2 matrices, tr((A^(1/2) B A^(1/2))^(1/2)) = sqrt(tr(AB) + 2 sqrt(det(AB)))."""
    a = np.array([[2.0, 0.6], [0.6, 1.0]])
    b = np.array([[0.5, -0.2], [-0.2, 3.0]])
    ab = a @ b
    cross = np.sqrt(np.trace(ab) + 2 * np.sqrt(np.linalg.det(ab)))
    expected = 1.0 + np.trace(a) + np.trace(b) - 2 * cross
    fd = sample_quality.frechet_distance(np.array([1.0, 0.0]), a, np.zeros(2), b)
    assert fd == pytest.approx(expected, rel=1e-12)


def test_features_of_the_same_gaussian_are_close_and_bad_input_is_refused():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 3))
    y = rng.normal(size=(20_000, 3))
    assert sample_quality.frechet_distance_of_features(x, y) < 0.01
    assert sample_quality.frechet_distance_of_features(x, y + 1.0) == pytest.approx(3.0, abs=0.05)
    with pytest.raises(ValueError, match="N >= 2"):
        sample_quality.feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="finite"):
        sample_quality.feature_statistics(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        sample_quality.frechet_distance(
            np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2)
        )
    with pytest.raises(ValueError, match="feature sizes differ"):
        sample_quality.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_precision_and_recall_on_known_configurations():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(500, 2))
    assert sample_quality.precision_recall(real, real) == (1.0, 1.0)
    # Far away samples: neither covers the other.
    assert sample_quality.precision_recall(real, real + 100.0) == (0.0, 0.0)
    # Mode collapse onto half the data: high precision, recall about a half.
    half = real[real[:, 0] > 0]
    precision, recall = sample_quality.precision_recall(real, half + 0.01)
    assert precision > 0.95 and 0.4 < recall < 0.65
    # By hand: real points 0, 1, 2, 3 on a line (k = 1: radius 1 each) cover the fake at 0.5,
    # not those at 10 and 10.5: precision 1/3. The fake at 0.5 has radius 9.5 (its nearest
    # other fake is 10), which covers every real point: recall 1.
    line = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0], [10.5]])
    assert sample_quality.precision_recall(line, fake, k=1) == (1 / 3, 1.0)
    with pytest.raises(ValueError, match="N > k"):
        sample_quality.precision_recall(real[:3], real)
