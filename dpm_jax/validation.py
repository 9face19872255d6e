"""Input checks shared by the public API: clear errors that name the problem and the fix."""

from __future__ import annotations

import warnings

import jax
import numpy as np

#: Data whose variance lies outside [1 / UNIT_VARIANCE_TOLERANCE, UNIT_VARIANCE_TOLERANCE]
#: (measured over at least MIN_VALUES_FOR_VARIANCE values) gets a warning.
UNIT_VARIANCE_TOLERANCE = 4.0
MIN_VALUES_FOR_VARIANCE = 1000


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
    dtype = np.dtype(x.dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(
            f"{name} must be a floating-point array (got dtype {dtype}); convert with "
            "x.astype(np.float32) after scaling the data."
        )
    if is_concrete(x):
        arr = np.asarray(x)
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(
                f"{name} holds {bad} non-finite value(s) (NaN or inf); clean or drop those "
                "examples before computing bounds or training."
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
        warnings.warn(
            f"{name} has variance {var:.4g} over this batch, far from 1. K is still a valid "
            "bound, but the paper reports K and K - L_null on data scaled to unit variance; "
            f"divide the data by {np.sqrt(var):.4g} (one global constant from the training set) "
            "to compare.",
            UserWarning,
            stacklevel=3,
        )
