"""Importance sampling of t for L_vlb (improved DDPM Sec. 3.3, Eq. 18), as pure functions.

p_t ∝ sqrt(E[L_t^2]), estimated from a history of the last ``history`` losses seen at each
t (10 in the paper); uniform until every t has a full history, then mixed with the uniform
distribution by ``uniform_mass`` (0.001 in the released code) so that no p_t is 0. A loss
L_t drawn at t ~ p is weighted by 1 / (T p_t), so the weighted mean estimates the uniform
average over t without bias whatever p is.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp


class SamplerState(NamedTuple):
    """``losses`` (T, H): the last H losses at each t = 1..T (row t - 1), newest last;
    ``counts`` (T,): how many have been seen (capped at H)."""

    losses: jax.Array
    counts: jax.Array


def init(num_steps: int, history: int = 10) -> SamplerState:
    if num_steps < 1 or history < 1:
        raise ValueError(f"need num_steps >= 1 and history >= 1, got {num_steps}, {history}.")
    return SamplerState(
        losses=jnp.zeros((num_steps, history), jnp.float32),
        counts=jnp.zeros((num_steps,), jnp.int32),
    )


def probabilities(state: SamplerState, uniform_mass: float = 0.001) -> jax.Array:
    """p_t, shape (T,): uniform until every t has a full history, then sqrt(mean L_t^2)
    normalised and mixed with ``uniform_mass`` of the uniform distribution."""
    num_steps, history = state.losses.shape
    uniform = jnp.full((num_steps,), 1.0 / num_steps)
    weights = jnp.sqrt(jnp.mean(jnp.square(state.losses), axis=1))
    learned = weights / jnp.maximum(jnp.sum(weights), 1e-30)
    learned = (1.0 - uniform_mass) * learned + uniform_mass * uniform
    ready = jnp.all(state.counts >= history) & (jnp.sum(weights) > 0)
    return jnp.where(ready, learned, uniform)


def sample(
    state: SamplerState, key: chex.PRNGKey, batch: int, uniform_mass: float = 0.001
) -> tuple[jax.Array, jax.Array]:
    """(t (batch,) in 1..T drawn from :func:`probabilities`, weights 1 / (T p_t) (batch,))."""
    p = probabilities(state, uniform_mass)
    index = jax.random.choice(key, p.shape[0], (batch,), p=p)
    return index + 1, 1.0 / (p.shape[0] * p[index])


def update(state: SamplerState, t: jax.Array, losses: jax.Array) -> SamplerState:
    """Appends each example's loss (batch,) to the history of its t (batch,), in order."""
    chex.assert_equal_shape([t, losses])

    def one(state, item):
        ti, li = item
        row = jnp.roll(state.losses[ti - 1], -1).at[-1].set(li)
        history = state.losses.shape[1]
        return SamplerState(
            losses=state.losses.at[ti - 1].set(row),
            counts=state.counts.at[ti - 1].set(jnp.minimum(state.counts[ti - 1] + 1, history)),
        ), None

    state, _ = jax.lax.scan(one, state, (t.astype(jnp.int32), losses.astype(jnp.float32)))
    return state
