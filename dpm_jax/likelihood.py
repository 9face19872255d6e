"""Units for log-likelihoods: nats -> bits, the null model L_null, summaries with standard errors,
and bits per dimension of 8-bit data.

The paper's K (Table 1) is a log-likelihood lower bound, higher is better, on
data scaled to unit variance. Bits per example are the base unit here;
experiments divide by points, pixels or dimensions and say which;
:func:`bits_per_dim_8bit` turns K on dequantised, scaled images into the negative
log-likelihood of their 8-bit pixels (the unit of DDPM and VDM).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

LN2 = math.log(2.0)
_PIXEL_VALUES = 256  # values of an 8-bit pixel


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


def bits_per_dim_8bit(k_bits_per_example, num_dims: int, scaling):
    """Negative log-likelihood upper bound of the 8-bit pixels, bits per dimension.

    Args:
      k_bits_per_example: K, a lower bound on E_u log2 p_z(z) for one example (bits, higher is
        better), on the scaled dequantised data z = x * scale + shift (float or array).
      num_dims: D = H * W * C.
      scaling: the ``dpm_jax.data.ImageScaling`` that produced z (its ``scale``).

    Returns:
      -K / D - log2(scale / 256), bits per dimension (same shape as K; float for a scalar).

    Derivation. Let y = 256 x = p + u in [0, 256)^D, so z = y * (scale / 256) + shift and
    log2 p_y(y) = log2 p_z(z) + D log2(scale / 256) (change of variables, Jacobian
    (scale / 256)^D). The discrete probability of the pixels p is the mass of their unit
    cube, P(p) = integral_{[0,1)^D} p_y(p + u) du >= 2^(E_u log2 p_y(p + u)) (Jensen), so
      -log2 P(p) / D <= -(E_u log2 p_z + D log2(scale / 256)) / D
                     <= -K / D - log2(scale / 256).
    A model uniform on [0, 256)^D gives exactly 8 bits/dim.
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be >= 1, got {num_dims}.")
    k = np.asarray(k_bits_per_example, dtype=np.float64)
    out = -k / num_dims - math.log2(scaling.scale / _PIXEL_VALUES)
    return float(out) if out.ndim == 0 else out
