"""The one evaluator: a per-example function over a whole data set, on the device mesh.

Example ``i`` (its index in the data set) is evaluated with the key
``jax.random.fold_in(key, i)`` and nothing else random, so its value depends neither on
the evaluation batch size nor on the number of devices or processes. Batches have a
fixed size (one compilation); the last one is padded (``sharding.pad_to_multiple``) and
the padding dropped, so every example counts exactly once. A batch that divides over the
mesh is split over it and the values gathered on every process; otherwise every device
evaluates the whole batch.

Bounds written for a batch and one key, ``fn(x_batch, key) -> (N,)`` (such as
``gaussian.bound_exact``), become per-example functions with :func:`per_example_keys`;
:func:`averaged_over_draws` averages a per-example function over several independent draws
of its randomness (the forward samples x^(t) of an exact bound), which shrinks the Monte
Carlo part of each example's variance and so of the standard error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from dpm_jax import sharding

#: ``fn(x_batch, keys) -> pytree of (N,) arrays``, ``keys`` one PRNG key per example.
PerExampleFn = Callable[[Any, jax.Array], Any]


def example_keys(key: chex.PRNGKey, indices: jax.Array) -> jax.Array:
    """One key per example: ``fold_in(key, index)`` for each global example index."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


def per_example_keys(fn: Callable[[Any, chex.PRNGKey], Any]) -> PerExampleFn:
    """Turns ``fn(x_batch, key) -> pytree of (N,)`` into ``fn(x_batch, keys (N,))``.

    Example ``i`` is computed as a batch of one with ``keys[i]`` alone (a ``jax.vmap``
    over singleton batches, so a network inside ``fn`` still runs batched), so what it
    draws does not depend on the other examples in its batch.
    """

    def one(x, key):
        out = fn(jax.tree.map(lambda a: a[None], x), key)
        return jax.tree.map(lambda v: v[0], out)

    def batched(x_batch, keys):
        return jax.vmap(one)(x_batch, keys)

    return batched


def averaged_over_draws(fn: PerExampleFn, num_draws: int) -> PerExampleFn:
    """``fn`` averaged over ``num_draws`` independent draws per example (each leaf, (N,)).

    Draw m of example i uses ``fold_in(keys[i], m)``; with one draw this is ``fn`` itself
    (same keys, same values). The mean of M unbiased estimates of an example's value (e.g.
    M forward trajectories of Eq. 14's bound) is unbiased with 1/M of their Monte Carlo
    variance; the draws run one after another (``lax.map``), so memory does not grow with M.
    """
    if int(num_draws) != num_draws or num_draws < 1:
        raise ValueError(f"num_draws must be an integer >= 1, got {num_draws!r}.")
    if num_draws == 1:
        return fn
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))

    def averaged(x_batch, keys):
        draws = jax.lax.map(lambda m: fn(x_batch, fold(keys, m)), jnp.arange(num_draws))
        return jax.tree.map(lambda d: jnp.mean(d, axis=0), draws)

    return averaged


def _take(data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return data[indices]


def _head(values, num_valid: int):
    """The first ``num_valid`` (real, not padding) values of each leaf, as float64 numpy."""
    return jax.tree.map(lambda v: np.asarray(v, np.float64)[:num_valid], values)


def evaluate(
    fn: PerExampleFn,
    data,
    key: chex.PRNGKey,
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh | None = None,
    gather: Callable[[Any, np.ndarray], Any] | None = None,
    desc: str = "eval",
):
    """``fn`` over every example of ``data``: a pytree (like ``fn``'s output) of float64 (N,).

    ``fn(x_batch, keys)`` is jitted here; ``keys[j]`` is example ``j``'s key
    (:func:`example_keys` of its global index). ``data`` is an array indexed on its
    first axis, or any sized source read by ``gather(data, indices) -> batch`` (e.g.
    ``dpm_jax.data.batching.gather_images``). ``mesh`` defaults to every device
    (``sharding.data_mesh``); with several processes every process passes the same
    data and gets every value.
    """
    if gather is None:
        data, gather = np.asarray(data), _take
    n = len(data)
    if n == 0:
        raise ValueError("cannot evaluate an empty data set.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    mesh = sharding.data_mesh() if mesh is None else mesh
    batch_size = min(int(batch_size), n)
    split = batch_size % mesh.size == 0
    if not split and jax.process_index() == 0:
        print(
            f"note: evaluation batches of {batch_size} do not divide over {mesh.size} devices; "
            "set the evaluation batch size to a multiple of the device count to split them."
        )
    compiled = jax.jit(lambda x, indices: fn(x, example_keys(key, indices)))
    outputs = []
    for start in tqdm(range(0, n, batch_size), desc=desc, dynamic_ncols=True):
        indices = np.arange(start, min(start + batch_size, n), dtype=np.int32)
        padded, num_valid = sharding.pad_to_multiple((gather(data, indices), indices), batch_size)
        if split:
            values = compiled(*sharding.shard_batch(padded, mesh))
            values = multihost_utils.process_allgather(values, tiled=True)
        else:
            values = compiled(*jax.tree.map(jnp.asarray, padded))
        chex.assert_shape(jax.tree.leaves(values), (batch_size,))  # one value per example
        outputs.append(_head(values, num_valid))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)
