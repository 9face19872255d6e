"""DDPM's training objective and the weights that tie it to the bound (Ho et al. 2020, Sec. 3).

* :func:`l_simple`: Eq. 14, L_simple = E_{t, x0, eps} ||eps - eps_theta(sqrt(abar_t) x0 +
  sqrt(1 - abar_t) eps, t)||^2 with t uniform on 1..T, per example the mean over elements
  (the released code's ``mean_flat``); nats are not its unit: it is an unweighted MSE.
* :func:`eps_kl_weight` and :func:`variance_kl_constant`: Eq. 12. For an epsilon-parameterised
  kernel with a fixed per-step variance sigma_t^2, the bound's KL term at t >= 2 is, per
  element,

    KL(q(x^(t-1) | x^(t), x0) || p) = lambda_t (eps - eps_theta)^2 + c_t,
    lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)),
    c_t = (log(sigma_t^2 / beta~_t) + beta~_t / sigma_t^2 - 1) / 2,

  in nats; c_t = 0 for sigma_t^2 = beta~_t (``fixed_small``). L_simple drops lambda_t and c_t.

``eps_fn(x_t, t) -> eps_hat`` is the model as a function (t the paper's 1-based step).
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from dpm_jax.gaussian import posterior_variance, q_sample
from dpm_jax.schedules import Schedule, alpha_bar, beta
from dpm_jax.shapes import sample_timesteps
from dpm_jax.validation import check_batch

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


def l_simple(schedule: Schedule, eps_fn: EpsFn, x0: jax.Array, key: chex.PRNGKey) -> jax.Array:
    """DDPM Eq. 14 per example, shape (N,): mean over elements of (eps - eps_theta)^2, one
    t ~ U{1..T} and one eps ~ N(0, I) per example."""
    check_batch(x0)
    key_t, key_eps = jax.random.split(key)
    t = sample_timesteps(key_t, x0.shape[0], schedule.num_steps, False)
    eps = jax.random.normal(key_eps, x0.shape, x0.dtype)
    eps_hat = eps_fn(q_sample(schedule, x0, t, eps), t)
    chex.assert_equal_shape([eps_hat, x0])
    return jnp.mean(jnp.square(eps - eps_hat).reshape(x0.shape[0], -1), axis=1)


def eps_kl_weight(schedule: Schedule, t: jax.Array, sigma_sq: jax.Array) -> jax.Array:
    """lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) of DDPM Eq. 12 (t >= 2)."""
    b = beta(schedule, t)
    return jnp.square(b) / (2.0 * sigma_sq * (1.0 - b) * (1.0 - alpha_bar(schedule, t)))


def variance_kl_constant(schedule: Schedule, t: jax.Array, sigma_sq: jax.Array) -> jax.Array:
    """c_t = (log(sigma_t^2 / beta~_t) + beta~_t / sigma_t^2 - 1) / 2 nats per element: the
    KL between two Gaussians of equal means and variances beta~_t and sigma_t^2 (t >= 2)."""
    ratio = posterior_variance(schedule, t) / sigma_sq
    return 0.5 * (ratio - jnp.log(ratio) - 1.0)


def eps_kl_from_mse(
    schedule: Schedule, t: jax.Array, sigma_sq: jax.Array, eps: jax.Array, eps_hat: jax.Array
) -> jax.Array:
    """Eq. 12's right-hand side summed over elements, nats, shape (N,): the bound's KL term
    at t (N,) of an epsilon-model with fixed variance sigma_sq (N,) per example."""
    sq = jnp.sum(jnp.square(eps - eps_hat).reshape(eps.shape[0], -1), axis=1)
    size = eps[0].size
    return eps_kl_weight(schedule, t, sigma_sq) * sq + size * variance_kl_constant(
        schedule, t, sigma_sq
    )
