"""Sample-quality metrics on features: the Fréchet distance (Heusel et al. 2017) and
improved precision and recall (Kynkäänniemi et al. 2019).

The feature network is the caller's (any ``images -> (N, F)`` function); these are the
metrics on its features, computed on the host in float64.
"""

from __future__ import annotations

import numpy as np


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigh; tiny
    negative eigenvalues from rounding clipped to 0)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _check_gaussian(mean, cov, name: str) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(mean, np.float64)
    cov = np.asarray(cov, np.float64)
    if mean.ndim != 1 or cov.shape != (mean.size, mean.size):
        raise ValueError(
            f"{name}: need a mean (F,) and a covariance (F, F); got {mean.shape} and {cov.shape}."
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise ValueError(f"{name}: the mean and covariance must be finite.")
    if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-10):
        raise ValueError(f"{name}: the covariance must be symmetric.")
    return mean, cov


def frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mean_a, cov_a) and
    N(mean_b, cov_b), exact in float64:

      |mean_a - mean_b|^2 + tr(cov_a + cov_b - 2 (cov_a^(1/2) cov_b cov_a^(1/2))^(1/2)),

    with both square roots by eigen-decomposition of symmetric matrices (no complex parts
    to discard, unlike ``scipy.linalg.sqrtm`` of the non-symmetric cov_a cov_b).
    """
    mean_a, cov_a = _check_gaussian(mean_a, cov_a, "a")
    mean_b, cov_b = _check_gaussian(mean_b, cov_b, "b")
    if mean_a.shape != mean_b.shape:
        raise ValueError(f"feature sizes differ: {mean_a.size} and {mean_b.size}.")
    root_a = _sqrt_psd(cov_a)
    cross = _sqrt_psd(root_a @ cov_b @ root_a)
    value = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross)
    return float(max(value, 0.0))


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean (F,), covariance (F, F) with N - 1 in the denominator) of features (N, F)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (N, F) with N >= 2; got shape {features.shape}.")
    if not np.all(np.isfinite(features)):
        raise ValueError("features must be finite (a NaN or inf reached the feature network).")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(
        features.shape[1], features.shape[1]
    )


def frechet_distance_of_features(features_a, features_b) -> float:
    """:func:`frechet_distance` of the Gaussians fitted to two feature sets (N_a, F), (N_b, F)."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def _pairwise_sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a_i - b_j|^2, shape (len(a), len(b)), float64."""
    sq = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2.0 * a @ b.T
    return np.maximum(sq, 0.0)


def _knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point of the same set."""
    d = _pairwise_sq_distances(features, features)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def _coverage(reference: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Fraction of ``queries`` inside at least one k-NN ball of ``reference``."""
    radii = _knn_radii(reference, k)
    inside = _pairwise_sq_distances(queries, reference) <= radii[None, :]
    return float(np.mean(np.any(inside, axis=1)))


def precision_recall(real_features, fake_features, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): precision = the fraction of
    generated samples inside the real manifold (the union of balls around each real feature
    reaching its k-th nearest real neighbour), recall = the fraction of real samples inside
    the generated manifold. Features (N, F); k = 3 as the paper. O(N^2) memory: meant for
    a few thousand samples."""
    real = np.asarray(real_features, np.float64)
    fake = np.asarray(fake_features, np.float64)
    for name, x in (("real", real), ("fake", fake)):
        if x.ndim != 2 or len(x) <= k or not np.all(np.isfinite(x)):
            raise ValueError(
                f"{name} features must be finite, shape (N, F) with N > k = {k}; got {x.shape}."
            )
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: {real.shape[1]} and {fake.shape[1]}.")
    return _coverage(real, fake, k), _coverage(fake, real, k)
