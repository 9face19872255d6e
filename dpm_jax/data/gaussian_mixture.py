"""A 2-D Gaussian mixture with its exact log-density: a ring of equal, isotropic components.

Component k has mean r (cos 2 pi k / K, sin 2 pi k / K) and covariance s^2 I, weights 1/K. The
radius r is set so that, like the scaled Swiss roll, the mean of the two per-coordinate
variances is 1: r^2 / 2 + s^2 = 1. The density is a closed form:

  log p(y) = logsumexp_k [log N(y; mu_k, s^2 I)] - log K.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax.likelihood import nats_to_bits


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
    """``num_components`` Gaussians of std ``component_std`` on a ring (unit total variance)."""

    num_components: int = 8
    component_std: float = 0.3

    def __post_init__(self):
        if self.num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {self.num_components}.")
        if not 0.0 < self.component_std < 1.0:
            raise ValueError(
                f"component_std must lie in (0, 1) so that the ring has a radius at unit total "
                f"variance, got {self.component_std}."
            )

    @property
    def radius(self) -> float:
        """r with r^2 / 2 + s^2 = 1 (the mean per-coordinate variance of the mixture is 1)."""
        return math.sqrt(2.0 * (1.0 - self.component_std**2))

    def means(self) -> np.ndarray:
        """Component means, shape (K, 2), float64."""
        angle = 2.0 * math.pi * np.arange(self.num_components) / self.num_components
        return self.radius * np.stack([np.cos(angle), np.sin(angle)], axis=-1)

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """``num`` points, shape (num, 2), float32."""
        key_k, key_n = jax.random.split(key)
        k = jax.random.randint(key_k, (num,), 0, self.num_components)
        means = jnp.asarray(self.means(), jnp.float32)[k]
        return (means + self.component_std * jax.random.normal(key_n, (num, 2))).astype(jnp.float32)

    def log_density(self, y) -> np.ndarray:
        """Exact log2 p(y) of points y (N, 2), bits per 2-D point, float64 numpy."""
        y = np.asarray(y, dtype=np.float64)
        var = self.component_std**2
        sq = np.sum((y[:, None, :] - self.means()[None]) ** 2, axis=-1)  # (N, K)
        log_k = -0.5 * sq / var - math.log(2.0 * math.pi * var)
        top = log_k.max(axis=1)
        lse = top + np.log(np.exp(log_k - top[:, None]).sum(axis=1))
        return nats_to_bits(lse - math.log(self.num_components))
