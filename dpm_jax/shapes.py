"""Batch-shape helpers shared by the diffusion modules: examples on axis 0, events after it."""

from __future__ import annotations

import math

import chex
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


def sample_timesteps(key: chex.PRNGKey, batch: int, num_steps: int, stratified: bool) -> jax.Array:
    """t in 2..T for each of ``batch`` examples, each marginally uniform, shape (batch,).

    ``stratified`` spreads the batch evenly over t (a random offset plus the
    example index, modulo T - 1), so every step's readout sees examples in
    every batch when batch >= T - 1; plain sampling draws t independently.
    """
    span = num_steps - 1
    if stratified:
        offset = jax.random.randint(key, (), 0, span)
        return 2 + (offset + jnp.arange(batch, dtype=jnp.int32)) % span
    return jax.random.randint(key, (batch,), 2, num_steps + 1)
