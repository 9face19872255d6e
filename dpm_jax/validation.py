"""Input checks shared by the public API: clear errors that name the problem and the fix."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

#: Data whose variance lies outside [1 / UNIT_VARIANCE_TOLERANCE, UNIT_VARIANCE_TOLERANCE]
#: (measured over at least MIN_VALUES_FOR_VARIANCE values) gets a warning.
UNIT_VARIANCE_TOLERANCE = 4.0
MIN_VALUES_FOR_VARIANCE = 1000
#: Data beyond this magnitude is refused: its squares overflow float32's precision budget.
MAX_ABS_VALUE = 1e15


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def check_batch(x, name: str = "x0", *, min_rank: int = 2, event_shape=None) -> None:
    """Checks a batch of examples of shape (N, *event_shape): rank, float dtype, finiteness.

    Values are checked only outside jit (tracers carry no values).
    """
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array of shape (batch, ...), got {type(x).__name__}.")
    if len(shape) < min_rank:
        raise ValueError(
            f"{name} must have rank >= {min_rank} with the batch first, e.g. (N, D); "
            f"got shape {tuple(shape)}. Add a batch axis with x[None] if you have one example."
        )
    if event_shape is not None and tuple(shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"{name} must have shape (N, {', '.join(map(str, event_shape))}); got {tuple(shape)}."
        )
    if shape[0] == 0:
        raise ValueError(
            f"{name} is an empty batch (shape {tuple(shape)}); pass one example or more."
        )
    if 0 in tuple(shape[1:]):
        raise ValueError(
            f"{name} has examples with no values (shape {tuple(shape)}); every axis after the "
            "batch needs a size >= 1."
        )
    dtype = np.dtype(x.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):  # bfloat16 and float16 included
        raise TypeError(
            f"{name} must be a floating-point array (got dtype {dtype}); convert with "
            "x.astype(np.float32) after scaling the data."
        )
    if is_concrete(x):
        arr = np.asarray(x, np.float32) if dtype.itemsize < 4 else np.asarray(x)
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(
                f"{name} holds {bad} non-finite value(s) (NaN or inf); clean or drop those "
                "examples before computing bounds or training."
            )
        largest = float(np.max(np.abs(arr)))
        if largest > MAX_ABS_VALUE:
            raise ValueError(
                f"{name} holds values up to {largest:.3g} in magnitude; beyond "
                f"{MAX_ABS_VALUE:.0e} squares and forward samples lose all precision in float32. "
                "Scale the data (the bounds expect about unit variance)."
            )


def warn_if_not_unit_variance(x, name: str = "x0") -> None:
    """Warns (outside jit) when ``x`` is far from unit variance.

    The bound stays valid at any scale, but the paper's K, L_null and K - L_null
    are defined on data scaled to unit variance, so such numbers would not be
    comparable with them.
    """
    if not is_concrete(x) or np.size(x) < MIN_VALUES_FOR_VARIANCE:
        return
    var = float(np.var(np.asarray(x, np.float64)))
    if not 1.0 / UNIT_VARIANCE_TOLERANCE <= var <= UNIT_VARIANCE_TOLERANCE:
        how = (
            f"divide the data by {np.sqrt(var):.4g} (one global constant from the training set)"
            if var > 0
            else "scale the data set by its standard deviation (this batch is constant)"
        )
        warnings.warn(
            f"{name} has variance {var:.4g} over this batch, far from 1. K is still a valid "
            "bound, but the paper reports K and K - L_null on data scaled to unit variance; "
            f"{how} to compare.",
            UserWarning,
            stacklevel=3,
        )


def at_least_float32(x: jax.Array) -> jax.Array:
    """``x`` in float32 when it is a lower-precision float (float16, bfloat16), else as is:
    the bounds and samplers compute in at least float32."""
    return x.astype(jnp.float32) if np.dtype(x.dtype).itemsize < 4 else x


def check_reverse_fn_steps(schedule, reverse_fn, name: str = "reverse_fn") -> None:
    """Refuses a reverse function built for another T than ``schedule``'s.

    Functions made by this library (``gaussian.moment_matched_kernel``,
    ``binomial.moment_matched_rates``, ``parameterisation.make_reverse_fn``) carry their
    ``num_steps``; a user's function without it is not checked here (per-step models
    return NaN for t beyond their T: ``dpm_jax.models.temporal.step_rows``).
    """
    built_for = getattr(reverse_fn, "num_steps", None)
    if built_for is not None and int(built_for) != schedule.num_steps:
        raise ValueError(
            f"{name} was built for T = {built_for} steps but the schedule has T = "
            f"{schedule.num_steps}; build it from this schedule."
        )


def check_timesteps(t, num_steps: int, low: int = 0, name: str = "t", hint: str = "") -> None:
    """Concrete t must lie in low..T (inside jit values cannot be checked); ``hint`` ends the
    message."""
    if not is_concrete(t):
        return
    values = np.asarray(t)
    if values.size and (values.min() < low or values.max() > num_steps):
        raise ValueError(
            f"{name} must lie in {low}..{num_steps} (T = {num_steps}); got values in "
            f"{int(values.min())}..{int(values.max())}.{' ' + hint if hint else ''}"
        )


def check_finite_result(values, what: str, hint: str) -> None:
    """Outside jit, a non-finite result is a ValueError saying where to look (``hint``)."""
    leaves = [v for v in jax.tree.leaves(values) if is_concrete(v)]
    bad = sum(int(np.size(v) - np.count_nonzero(np.isfinite(np.asarray(v)))) for v in leaves)
    if bad:
        raise ValueError(f"{what}: {bad} non-finite value(s). {hint}")


# ----------------------------------------------------------------------------------------------
# Posterior samplers (dpm_jax.conditioning).


def check_noise_var(noise_var, y: jax.Array) -> jax.Array:
    noise_var = jnp.asarray(noise_var, y.dtype)
    try:
        broadcast = np.broadcast_shapes(noise_var.shape, y.shape)
    except ValueError:
        broadcast = None
    if broadcast != tuple(y.shape):
        raise ValueError(
            f"noise_var must be a scalar or broadcast to y's shape {tuple(y.shape)}; got shape "
            f"{tuple(noise_var.shape)}."
        )
    if is_concrete(noise_var):
        nv = np.asarray(noise_var)
        bad = nv[~(nv > 0)]
        if bad.size:
            raise ValueError(
                "noise_var (the variance of the observation noise, y = x + sqrt(noise_var) eps) "
                f"must be > 0 everywhere (inf marks an unobserved element); got {bad.size} "
                f"value(s) that are not, e.g. {bad.flat[0]!r}. For exactly known values use "
                "inpaint()."
            )
    return noise_var


def check_scalar_noise_var(noise_var) -> jax.Array:
    """noise_var as a float32 scalar; > 0 and finite when it holds values."""
    if jnp.ndim(noise_var) != 0:
        raise ValueError(
            "noise_var must be a scalar here: one observation noise level per call, because the "
            "matched step t* it selects is shared by the whole batch (the chain starts at t* "
            f"for every example); got shape {tuple(jnp.shape(noise_var))}. Call once per noise "
            "level, or use denoise() (the paper's approximate factor method) for per-element "
            "noise."
        )
    noise_var = jnp.asarray(noise_var, jnp.float32)
    if is_concrete(noise_var) and not (np.isfinite(noise_var) and noise_var > 0):
        raise ValueError(
            "noise_var (the variance of the observation noise, y = x + sqrt(noise_var) eps) "
            f"must be finite and > 0; got {float(noise_var)!r}. For exactly known values use "
            "inpaint()."
        )
    return noise_var


def check_known(x_known, known_mask) -> None:
    """Rank, dtype, mask shape and dtype; finiteness only where the mask is True."""
    if not hasattr(x_known, "shape"):
        raise TypeError(
            f"x_known must be an array of shape (N, ...); got {type(x_known).__name__}."
        )
    # Rank and dtype first (a zero-strided stand-in: no values needed).
    check_batch(np.broadcast_to(np.zeros((), x_known.dtype), x_known.shape), "x_known")
    mask_shape = getattr(known_mask, "shape", None)
    if mask_shape is None or tuple(mask_shape) != tuple(x_known.shape):
        raise ValueError(
            f"known_mask must have exactly x_known's shape {tuple(x_known.shape)}; got "
            f"{None if mask_shape is None else tuple(mask_shape)}. Broadcast a per-example mask "
            "with jnp.broadcast_to(mask, x_known.shape)."
        )
    if np.dtype(known_mask.dtype) != np.bool_:
        raise TypeError(
            f"known_mask must be boolean (True = known); got dtype {known_mask.dtype}. "
            "Use mask.astype(bool)."
        )
    if is_concrete(x_known) and is_concrete(known_mask):
        # Entries outside the mask are never used and may hold anything (NaN included).
        known = np.asarray(x_known)[np.asarray(known_mask)]
        if not np.all(np.isfinite(known)):
            raise ValueError(
                f"x_known holds {int(np.sum(~np.isfinite(known)))} non-finite value(s) under "
                "known_mask; known values must be finite (unknown entries may be anything)."
            )


def check_sample_shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise TypeError(f"shape must be a tuple of ints (N, *event); got {shape!r}.") from err
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(
            f"shape must be (N, *event) with rank >= 2 and positive sizes; got {shape}. "
            "Use (N, 1) for scalar examples."
        )
    return shape
