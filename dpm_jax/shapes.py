"""Batch-shape helpers shared by the diffusion modules: examples on axis 0, events after it."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def event_sum(x: jax.Array) -> jax.Array:
    """Sums over every axis but the first (batch) one: (N, ...) -> (N,)."""
    return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def event_size(x: jax.Array) -> int:
    """Number of elements of one example."""
    return math.prod(x.shape[1:])


def per_example(values: jax.Array, x: jax.Array) -> jax.Array:
    """Broadcasts a per-example array of shape (N,) against x of shape (N, ...)."""
    return values.reshape(values.shape + (1,) * (x.ndim - 1))


def t_array(t, batch: int) -> jax.Array:
    """A time index (scalar or (N,)) as an int32 array of shape (N,)."""
    return jnp.broadcast_to(jnp.asarray(t, jnp.int32), (batch,))
