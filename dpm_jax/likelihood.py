"""Units for log-likelihoods: nats -> bits, the null model L_null, summaries with standard errors.

The paper's K (Table 1) is a log-likelihood lower bound, higher is better, on
data scaled to unit variance. Bits per example are the base unit here;
experiments divide by points, pixels or dimensions and say which.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

LN2 = math.log(2.0)


def nats_to_bits(x):
    """Converts a log-likelihood from nats to bits."""
    return x / LN2


def gaussian_null_log_likelihood(x0: jax.Array) -> jax.Array:
    """log2 pi(x0) with pi = N(0, I): the paper's L_null per example, bits, shape (N,).

    For unit-variance data its mean is -(d/2) log2(2 pi e).
    """
    flat = x0.reshape(x0.shape[0], -1)
    d = flat.shape[1]
    return nats_to_bits(-0.5 * d * math.log(2.0 * math.pi) - 0.5 * jnp.sum(flat**2, axis=-1))


def unit_gaussian_entropy_bits(dim: int) -> float:
    """(d/2) log2(2 pi e): minus the log-likelihood of unit-variance Gaussian data under N(0, I)."""
    return 0.5 * dim * math.log2(2.0 * math.pi * math.e)


def mean_and_stderr(values) -> tuple[float, float]:
    """Mean and standard error of the mean (ddof = 1) of per-example values."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("cannot summarise an empty set of values.")
    if not np.all(np.isfinite(v)):
        raise FloatingPointError(
            f"{int(np.sum(~np.isfinite(v)))} of {v.size} per-example values are not finite; "
            "the model or data produced NaN/inf."
        )
    stderr = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(v.mean()), stderr
