"""The one reverse-chain driver, and respacing (a subset of the timesteps, improved DDPM).

Every sampler of the project walks the reverse chain x^(K) -> ... -> x^(0) through
:func:`run`: unconditioned Gaussian sampling (:func:`dpm_jax.gaussian.sample`), every
posterior sampler of :mod:`dpm_jax.conditioning` (a kernel transform on the same chain) and
binomial sampling (:func:`dpm_jax.binomial.sample`). The driver knows nothing about the
distributions: it draws keys, scans ``step_fn`` over t = K..2 and applies ``final_fn`` at
t = 1, so the key usage (and hence every sample) is the same for all of them.

A chain over a respaced schedule (:func:`respace`) walks a subset k_1 < ... < k_S of the
original steps: the same driver over t = S..1 of the respaced schedule, whose model sees the
original timestep k_t (``timestep_map``). Keeping every step gives the original schedule
exactly, so the respaced sampler then equals the full one bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax.schedules import Schedule

InitFn = Callable[[jax.Array], jax.Array]
StepFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
FinalFn = Callable[[jax.Array, jax.Array], jax.Array]


def run(
    init_fn: InitFn,
    step_fn: StepFn,
    final_fn: FinalFn,
    key: jax.Array,
    num_steps: int,
    *,
    start_step: jax.Array | None = None,
    return_trajectory: bool = False,
):
    """x^(K) = init_fn(k); x^(t-1) = step_fn(x^(t), t, k_t) for t = K..2; x^(0) = final_fn(x^(1), k_1).

    One ``lax.scan`` (compile time does not grow with K = ``num_steps``). Keys: the init key
    and K step keys are split from ``key`` (k_1 is the first step key, k_t for t >= 2 the
    (K - t + 2)-th), as every sampler of this project has drawn them. ``t`` is an int32 scalar.

    With ``start_step`` (an int32 scalar in 1..K, may be traced), ``init_fn`` gives
    x^(start_step) and the steps t > start_step are skipped (``lax.cond``: not evaluated,
    the state carried unchanged), so trajectory[t] = x^(start_step) for t >= start_step; one
    compilation serves every start_step.

    Returns x^(0), or (x^(0), trajectory) with trajectory[t] = x^(t), shape (K + 1, *x.shape).
    """
    key_init, key_steps = jax.random.split(key)
    x_start = init_fn(key_init)
    keys = jax.random.split(key_steps, num_steps)
    ts = jnp.arange(num_steps, 1, -1, dtype=jnp.int32)

    def step(x, inputs):
        t, k = inputs
        if start_step is None:
            x = step_fn(x, t, k)
        else:
            x = jax.lax.cond(t <= start_step, step_fn, lambda x, t, k: x, x, t, k)
        return x, x

    x1, states = jax.lax.scan(step, x_start, (ts, keys[1:]))
    x0 = final_fn(x1, keys[0])
    if not return_trajectory:
        return x0
    # states[i] is x^(K-1-i); reverse so that trajectory[t] = x^(t).
    trajectory = jnp.concatenate([x0[None], states[::-1], x_start[None]], axis=0)
    return x0, trajectory


# ----------------------------------------------------------------------------------------------
# Respacing.


def uniform_timesteps(num_steps: int, count: int) -> np.ndarray:
    """``count`` evenly strided steps of 1..T, always 1 and T (improved DDPM's ``space_timesteps``
    with one section), shape (count,), increasing."""
    if not 2 <= count <= num_steps:
        raise ValueError(f"count must lie in 2..T = {num_steps}, got {count}.")
    stride = (num_steps - 1) / (count - 1)
    return np.asarray([round(i * stride) + 1 for i in range(count)], np.int32)


def timesteps_to_kept(timesteps: Sequence[int], num_steps: int) -> np.ndarray:
    """A user's list of timesteps in the order the reverse chain visits them (strictly
    decreasing, in 1..T, e.g. ``[1000, 750, 500, 250, 1]``) as the increasing ``kept`` of
    :func:`respace`; a list that is not strictly decreasing or leaves 1..T is refused."""
    steps = np.asarray(timesteps)
    if steps.ndim != 1 or steps.size < 2 or not np.issubdtype(steps.dtype, np.integer):
        raise ValueError(
            f"a respacing list needs at least 2 integer timesteps, got {np.asarray(timesteps).tolist()}."
        )
    if np.any(np.diff(steps) >= 0):
        raise ValueError(
            "a respacing list must be strictly decreasing (the reverse chain visits the largest "
            f"timestep first), got {steps.tolist()}."
        )
    if steps[0] > num_steps or steps[-1] < 1:
        raise ValueError(
            f"a respacing list's timesteps must lie in 1..T = {num_steps}, got {steps.tolist()}."
        )
    return steps[::-1].astype(np.int32)


def respace(schedule: Schedule, kept: Sequence[int] | np.ndarray) -> tuple[Schedule, jax.Array]:
    """The schedule of the kept steps k_1 < ... < k_S (1-based) and the map t -> k_t.

    abar'_i = abar_{k_i} and beta'_i = 1 - abar_{k_i} / abar_{k_(i-1)} with abar_{k_0} = 1
    (improved DDPM Sec. 4, ``respace.py``). Where k_(i-1) = k_i - 1 the original beta_{k_i} is
    used as it is, which is the same value without the round-off of the ratio; so keeping
    every step returns ``schedule`` exactly. Returns (schedule', timestep_map of shape (S,)).
    """
    kept = np.asarray(kept)
    num_steps = schedule.num_steps
    if (
        kept.ndim != 1
        or kept.size < 2
        or not np.issubdtype(kept.dtype, np.integer)
        or np.any(np.diff(kept) <= 0)
        or kept[0] < 1
        or kept[-1] > num_steps
    ):
        raise ValueError(
            f"kept must be at least 2 strictly increasing integer timesteps in 1..{num_steps}; "
            f"got {kept.tolist() if kept.size < 20 else kept}. See uniform_timesteps()."
        )
    index = jnp.asarray(kept - 1)
    ab = schedule.alphas_cumprod[index]
    ab_prev = jnp.concatenate([jnp.ones((1,), ab.dtype), ab[:-1]])
    adjacent = jnp.asarray(np.concatenate([[kept[0] == 1], np.diff(kept) == 1]))
    betas = jnp.where(adjacent, schedule.betas[index], 1.0 - ab / ab_prev)
    return Schedule(betas=betas, alphas_cumprod=ab), jnp.asarray(kept, jnp.int32)
