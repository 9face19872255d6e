"""Time-dependent readout through normalised Gaussian bumps (App. D.2.1, Eqs. 62-63).

The image networks never see t. Each per-pixel output is a linear combination of J
fixed "bump" functions of time, z(t) = sum_j y_j g_j(t) (Eq. 62), where the bumps
g_j(t) = exp(-(t - tau_j)^2 / (2 w^2)) / sum_k exp(-(t - tau_k)^2 / (2 w^2)) (Eq. 63)
form a partition of unity over the trajectory.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax.validation import check_timesteps


def step_rows(table: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """Row t - 1 of a per-step ``table`` (T, ...) for each t (N,): shape (N, ...).

    A t outside 1..T (a model built for another T than the schedule's) is a ValueError when
    t is concrete and gives NaN rows under jit, never a clamped row, so the bound comes out
    non-finite rather than plausible and wrong. In range, values and gradients are those of
    ``table[t - 1]`` bit for bit (a ``take(mode="fill")`` or a select compiled to other
    fused arithmetic and changed trained runs by float rounding).
    """
    num_steps = table.shape[0]
    hint = f"This model was built for T = {num_steps}; build it with the schedule's T."
    check_timesteps(t, num_steps, low=1, hint=hint)
    rows = table[t - 1]
    outside = (t < 1) | (t > num_steps)
    # NaN added where t is outside, 0 elsewhere, behind stop_gradient: the rows' values and
    # gradients keep the arithmetic of the plain gather bit for bit (a select did not).
    poison = jnp.where(outside, jnp.nan, 0.0).astype(rows.dtype)
    return rows + jax.lax.stop_gradient(poison.reshape(poison.shape + (1,) * (rows.ndim - 1)))


def bump_basis(num_steps: int, num_basis: int, relative_width: float = 0.5) -> jnp.ndarray:
    """The normalised Gaussian bumps g_j(t) of Eq. 63, as the reference code builds them.

    Follows ``generate_temporal_basis`` (reference ``model.py:317-332``): time is
    rescaled to xx = linspace(-1, 1, T), the centres are tau = linspace(-1, 1, J),
    the Gaussian width is ``relative_width`` times the centre spacing, and every row is
    divided by its sum so the bumps sum to one at each t. The default 0.5 is the code's
    half spacing; the paper's Eq. 63 calls w "the spacing between centres" (1.0). Built
    in float64 numpy and returned as float32.

    Args:
      num_steps: T, the trajectory length (>= 1).
      num_basis: J, the number of bumps (>= 2, so that the centre spacing is defined).
      relative_width: w / (centre spacing), > 0.

    Returns:
      (T, J) array; row t-1 holds g_1..g_J at the paper's time t (t = 1..T).
    """
    if num_steps < 1:
        raise ValueError(f"bump_basis: num_steps must be >= 1, got {num_steps}.")
    if num_basis < 2:
        raise ValueError(
            f"bump_basis: num_basis must be >= 2 (the bump width is half the spacing between "
            f"neighbouring centres, which needs at least two centres), got {num_basis}."
        )
    if not relative_width > 0:
        raise ValueError(f"bump_basis: relative_width must be > 0, got {relative_width}.")
    xx = np.linspace(-1.0, 1.0, num_steps)
    centers = np.linspace(-1.0, 1.0, num_basis)
    width = (centers[1] - centers[0]) * relative_width
    bumps = np.exp(-((xx[:, None] - centers[None, :]) ** 2) / (2.0 * width**2))
    bumps /= bumps.sum(axis=1, keepdims=True)
    return jnp.asarray(bumps, dtype=jnp.float32)


def temporal_readout(y: jax.Array, basis: jax.Array, t: jax.Array) -> jax.Array:
    """Eq. 62: z = sum_j y[..., j] g_j(t), one t per example.

    Args:
      y: (N, ..., J) time-independent coefficients.
      basis: (T, J) bumps from :func:`bump_basis`.
      t: (N,) integer times in 1..T (the paper's t; row t-1 of ``basis``).

    Returns:
      (N, ...) the readout at each example's t.
    """
    chex.assert_rank(basis, 2)
    chex.assert_axis_dimension(y, -1, basis.shape[1])
    chex.assert_shape(t, (y.shape[0],))
    weights = step_rows(basis, t)  # (N, J)
    # A contraction, not sum(y * weights): XLA:CPU fuses the latter with the producing
    # matmul into one slow kernel (3x slower for the MNIST network, issue 16).
    return jnp.einsum("n...j,nj->n...", y, weights)
