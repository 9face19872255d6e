"""Input checks shared by the public API: clear errors that name the problem and the fix."""

from __future__ import annotations

import jax
import numpy as np


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
