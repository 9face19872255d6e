"""Keys for bulk random bits (dropout masks): Philox where threefry is slow.

JAX's default threefry2x32 is lowered on CPU as a rolled loop of five passes over memory,
so a dropout mask for a (32, 32, 32, 128) activation took 29.4 ms on this project's 2-core
CPU, against 5.3 ms from philox4x32 (Philox-4x32-10, Salmon et al. 2011, "Parallel random
numbers: as easy as 1, 2, 3"), which XLA fuses into one elementwise kernel (``benchmarks/unet_parts.py``;
the DDPM CIFAR-10 U-Net draws 22 such masks per train step). Philox's
64-bit key is drawn from the given key, so the stream stays a pure function of it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

BULK_IMPL = "philox4x32"


@functools.cache
def _key_words(impl: str) -> int | None:
    """uint32 words in a key of ``impl``; None where this jax lacks ``impl``."""
    try:
        return jax.random.key_data(jax.random.key(0, impl=impl)).shape[-1]
    except (ValueError, TypeError, KeyError):
        return None


def bulk_key(key: jax.Array, impl: str = BULK_IMPL) -> jax.Array:
    """A typed key of ``impl`` drawn from ``key`` (a typed key or raw key data of the
    default impl), for many random bits at once such as dropout masks.

    Where this jax has no ``impl`` (older than 0.10), ``key`` is returned unchanged.
    """
    words = _key_words(impl)
    if words is None:
        return key
    return jax.random.wrap_key_data(jax.random.bits(key, (words,), jnp.uint32), impl=impl)
