"""The variational bound as named terms, and its sum over t, for any diffusion.

Eq. 14 of Sohl-Dickstein et al. 2015, written as DDPM's Eq. 5 decomposition (both exact):

  K(x0) = -(L_T + sum_{t=2..T} L_{t-1} + L_0),
  L_T     = KL(q(x^(T) | x0) || p(x^(T)))                      the prior term,
  L_{t-1} = E_q KL(q(x^(t-1) | x^(t), x0) || p(x^(t-1) | x^(t)))  the KL terms, t = 2..T,
  L_0     = -E_q log p(x0 | x^(1))                             the decoder term.

:class:`BoundTerms` holds the three per example in nats; :func:`to_bits` gives K in bits and
:func:`in_bits` K with each term in bits.
:func:`sum_over_steps` and :func:`mean_per_step` are the one scan over t = 2..T that every
exact bound of the project uses (Gaussian and binomial), with one key per t split from the
caller's key, so two reverse models evaluated with one key see identical forward samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dpm_jax import likelihood

#: ``kl_fn(t, key) -> (N,)``: the KL term at t (int32 scalar in 2..T) for one forward sample
#: drawn with ``key``, nats per example.
KLFn = Callable[[jax.Array, jax.Array], jax.Array]


class BoundTerms(NamedTuple):
    """The terms of the bound per example, nats, each of shape (N,); K = -(sum of the three)."""

    prior: jax.Array
    kl: jax.Array
    decoder: jax.Array


def to_bits(terms: BoundTerms) -> jax.Array:
    """K = -(L_T + sum_t L_{t-1} + L_0) in bits per example, shape (N,). Higher is better."""
    return likelihood.nats_to_bits(-(terms.prior + terms.decoder) - terms.kl)


#: The names :func:`in_bits` gives the three terms (results.json's ``bound_terms``).
TERM_NAMES = ("prior_L_T", "kl_sum_t2_to_T", "decoder_L_0")


def in_bits(terms: BoundTerms) -> dict[str, jax.Array]:
    """K and the three terms in bits per example, each (N,): ``{"K", *TERM_NAMES}``.

    The terms are losses (positive is worse) and K = -(their sum); K is :func:`to_bits`'s.
    """
    bits = [likelihood.nats_to_bits(v) for v in (terms.prior, terms.kl, terms.decoder)]
    return {"K": to_bits(terms), **dict(zip(TERM_NAMES, bits, strict=True))}


def steps_and_keys(num_steps: int, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """t = 2..T (int32, shape (T - 1,)) and one key per t."""
    return jnp.arange(2, num_steps + 1, dtype=jnp.int32), jax.random.split(key, num_steps - 1)


def sum_over_steps(kl_fn: KLFn, num_steps: int, key: jax.Array, batch: int, dtype) -> jax.Array:
    """sum_{t=2..T} kl_fn(t, k_t), one ``lax.scan`` (memory and compile time flat in T), (N,)."""

    def step(total, inputs):
        t, k = inputs
        return total + kl_fn(t, k), None

    total, _ = jax.lax.scan(step, jnp.zeros((batch,), dtype), steps_and_keys(num_steps, key))
    return total


def mean_per_step(kl_fn: KLFn, num_steps: int, key: jax.Array) -> jax.Array:
    """The mean over examples of each KL term, t = 2..T, shape (T - 1,); the keys of
    :func:`sum_over_steps`, so the terms are those whose sum it returns."""
    return jax.lax.map(lambda inputs: jnp.mean(kl_fn(*inputs)), steps_and_keys(num_steps, key))
