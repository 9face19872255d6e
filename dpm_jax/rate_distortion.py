"""DDPM's rate/distortion view of the bound (Ho et al. 2020, Sec. 4.3, Fig. 5).

Read as progressive lossy compression (DDPM Algorithms 3-4), the receiver of x^(t) has been
sent L_T + sum_{s=t+1..T} L_{s-1} nats (the rate) and can estimate x0 as x0_hat(x^(t), t),
at squared error |x0 - x0_hat|^2 (the distortion). :func:`per_step` gives both for every t
on the forward samples that ``gaussian.bound_terms`` uses with the same key, so the rate at
t = 1 plus the decoder term is the exact bound it reports.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax import discretized, gaussian, parameterisation, terms
from dpm_jax.schedules import Schedule
from dpm_jax.shapes import event_sum
from dpm_jax.validation import check_batch


class PerStep(NamedTuple):
    """Means over examples for t = 1..T (index t - 1), nats and squared data units.

    kl: the KL term L_{t-1} at t = 2..T; at t = 1 the decoder term L_0 (``bins`` given) or
      0 (Eq. 44's fixed first step, which does not depend on the model).
    squared_error: mean over elements of (x0 - x0_hat(x^(t), t))^2.
    """

    kl: jax.Array
    squared_error: jax.Array


def per_step(
    schedule: Schedule,
    param: parameterisation.Parameterisation,
    model_fn: parameterisation.ModelFn,
    x0: jax.Array,
    key: chex.PRNGKey,
    *,
    bins: discretized.PixelBins | None = None,
    clip_x0: tuple[float, float] | None = None,
) -> PerStep:
    """Each term of the bound and the distortion of x0_hat at every t, means over ``x0`` (N, ...).

    One network evaluation per t gives both the kernel (``param``) and x0_hat
    (``parameterisation.predict_x0``). x^(t) for t = 2..T uses the keys of
    ``terms.sum_over_steps`` and x^(1) the decoder's ``fold_in(key, T)``, so
    ``kl[1:].sum()`` is the mean of ``gaussian.bound_terms(...).kl`` with the same key and
    ``kl[0]`` its mean decoder term (``bins`` given). ``clip_x0 = (low, high)`` clips x0_hat
    for the distortion only (DDPM's released code measures it so); the terms are the
    model's own.
    """
    check_batch(x0)
    num_steps = schedule.num_steps
    batch = x0.shape[0]

    def at(t, noise):
        """(KL nats, decoder nats, squared error) means at t from x^(t) drawn with noise."""
        tt = jnp.full((batch,), t, jnp.int32)
        x_t = gaussian.q_sample(schedule, x0, tt, noise)
        output = model_fn(x_t, tt)
        model = parameterisation.kernel(param, schedule, x_t, tt, output)
        x0_hat = parameterisation.predict_x0(param, schedule, x_t, tt, output)
        if clip_x0 is not None:
            x0_hat = jnp.clip(x0_hat, *clip_x0)
        chex.assert_equal_shape([x0_hat, model.mean, x0])
        target = gaussian.q_posterior(schedule, x0, x_t, jnp.maximum(tt, 2))
        kl = jnp.mean(event_sum(gaussian.gaussian_kl(target, model)))
        decoder = (
            jnp.zeros((), x0.dtype)
            if bins is None
            else -jnp.mean(event_sum(discretized.log_prob(x0, model.mean, model.var, bins)))
        )
        return kl, decoder, jnp.mean(jnp.square(x0 - x0_hat))

    def later(inputs):
        t, k = inputs
        kl, _, sq = at(t, jax.random.normal(k, x0.shape, x0.dtype))
        return kl, sq

    kl, sq = jax.lax.map(later, terms.steps_and_keys(num_steps, key))
    noise_1 = jax.random.normal(jax.random.fold_in(key, num_steps), x0.shape, x0.dtype)
    _, decoder, sq_1 = at(1, noise_1)
    return PerStep(
        kl=jnp.concatenate([decoder[None], kl]),
        squared_error=jnp.concatenate([sq_1[None], sq]),
    )


def rate(prior: float, kl: np.ndarray) -> np.ndarray:
    """Nats sent once x^(t) is received, t = 1..T: L_T + sum_{s=t+1..T} L_{s-1} (Fig. 5's
    rate). ``kl`` from :class:`PerStep` (index t - 1); at t = T the rate is L_T alone."""
    kl = np.asarray(kl, np.float64)
    after = np.concatenate([np.cumsum(kl[::-1])[::-1][1:], [0.0]])  # sum over s > t
    return prior + after
