"""The 2-D Swiss roll (App. D.1.1) with its exact, numerically integrated log-density.

Generator (before scaling): s ~ U(s_min, s_max), x = (s cos s, s sin s) + noise_std * N(0, I).
The data are then shifted and scaled by one constant, y = (x - m) * c, so that
the mean of the two per-coordinate variances is 1 (Table 1 caption). m and c are
computed from the generator itself (a fine quadrature over s), not from a
sample, so the density of y is known exactly:

  log p_y(y) = log p_x(m + y / c) - 2 log c,
  p_x(x) = 1 / (s_max - s_min) * integral N(x; (s cos s, s sin s), noise_std^2 I) ds.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax.likelihood import nats_to_bits


@dataclasses.dataclass(frozen=True)
class SwissRoll:
    """Swiss roll parameters; ``num_quadrature`` nodes integrate the density over s."""

    noise_std: float = 0.25
    s_min: float = 1.5 * math.pi
    s_max: float = 4.5 * math.pi
    num_quadrature: int = 20_000

    def __post_init__(self):
        if not self.noise_std > 0:
            raise ValueError(
                f"noise_std must be > 0 (got {self.noise_std}); the density needs noise."
            )
        if not self.s_max > self.s_min:
            raise ValueError(f"need s_max > s_min (got {self.s_min}, {self.s_max}).")

    def _nodes(self) -> np.ndarray:
        """Midpoint-rule nodes over [s_min, s_max]."""
        n = self.num_quadrature
        return self.s_min + (np.arange(n) + 0.5) * (self.s_max - self.s_min) / n

    def _curve(self, s):
        return np.stack([s * np.cos(s), s * np.sin(s)], axis=-1)

    def moments(self) -> tuple[np.ndarray, float]:
        """(mean m of shape (2,), scale c) of the unscaled data, by quadrature over s."""
        curve = self._curve(self._nodes())
        mean = curve.mean(axis=0)
        var = curve.var(axis=0) + self.noise_std**2
        return mean, float(1.0 / math.sqrt(var.mean()))

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """``num`` scaled points, shape (num, 2), float32."""
        mean, scale = self.moments()
        key_s, key_n = jax.random.split(key)
        s = jax.random.uniform(key_s, (num,), minval=self.s_min, maxval=self.s_max)
        x = jnp.stack([s * jnp.cos(s), s * jnp.sin(s)], axis=-1)
        x = x + self.noise_std * jax.random.normal(key_n, (num, 2))
        return ((x - mean) * scale).astype(jnp.float32)

    def log_density(self, y, chunk: int = 1024) -> np.ndarray:
        """Exact log2 p(y) of scaled points y (N, 2), bits per 2-D point, float64 numpy."""
        y = np.asarray(y, dtype=np.float64)
        mean, scale = self.moments()
        x = mean + y / scale
        curve = self._curve(self._nodes())  # (M, 2)
        var = self.noise_std**2
        out = np.empty(len(x))
        for start in range(0, len(x), chunk):
            xb = x[start : start + chunk]
            sq = np.sum((xb[:, None, :] - curve[None]) ** 2, axis=-1)  # (B, M)
            log_k = -0.5 * sq / var
            top = log_k.max(axis=1)
            lse = top + np.log(np.exp(log_k - top[:, None]).sum(axis=1))
            out[start : start + chunk] = lse - math.log(len(curve))
        out += -math.log(2.0 * math.pi * var) - 2.0 * math.log(scale)
        return nats_to_bits(out)
