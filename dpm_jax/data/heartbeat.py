"""Binary heartbeat sequences (Sec. 3.1.2, App. D.1.2, Fig. 2).

Length-20 binary sequences with a 1 in every 5th bin and 0 elsewhere; the
first pulse is uniform over the first five bins, so there are 5 distinct
sequences and the true log-likelihood is log2(1/5) = -2.322 bits per sequence.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    length: int = 20
    period: int = 5

    def __post_init__(self):
        if self.period < 1 or self.length < self.period:
            raise ValueError(f"need 1 <= period <= length, got {self.period}, {self.length}.")

    def sequences(self) -> np.ndarray:
        """The ``period`` distinct sequences, shape (period, length), float32; row k has phase k."""
        idx = np.arange(self.length)
        return np.stack([(idx % self.period == k) for k in range(self.period)]).astype(np.float32)

    @property
    def true_log_likelihood(self) -> float:
        """log2 of the probability of every valid sequence, bits per sequence."""
        return -math.log2(self.period)

    @property
    def mean_rate(self) -> float:
        """The fraction of ones, the same for every sequence (up to the last partial period)."""
        return float(self.sequences().mean())

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """``num`` sequences with uniform phases, shape (num, length), float32."""
        phase = jax.random.randint(key, (num,), 0, self.period)
        return jnp.asarray(self.sequences())[phase]

    def is_valid(self, x) -> np.ndarray:
        """Per row of x (N, length): whether it is exactly one of the valid sequences."""
        x = np.asarray(x)
        return np.any(np.all(x[:, None, :] == self.sequences()[None], axis=-1), axis=1)
