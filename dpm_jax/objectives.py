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

* :func:`vlb_term` and :func:`hybrid_loss`: improved DDPM (Nichol & Dhariwal 2021, Sec. 3.1):
  a model with a learned variance trains on L_hybrid = L_simple + lambda L_vlb, lambda = 0.001,
  where L_vlb's terms see the mean output through a stop-gradient, so L_simple alone trains
  the mean and L_vlb the variance.

``eps_fn(x_t, t) -> eps_hat`` is the model as a function (t the paper's 1-based step).
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from dpm_jax import discretized, gaussian, parameterisation
from dpm_jax.gaussian import posterior_variance, q_sample
from dpm_jax.schedules import Schedule, alpha_bar, beta
from dpm_jax.shapes import event_sum, sample_timesteps, t_array
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


def vlb_term(
    schedule: Schedule,
    param: parameterisation.Parameterisation,
    output: parameterisation.ModelOutput,
    x0: jax.Array,
    x_t: jax.Array,
    t: jax.Array,
    *,
    bins: discretized.PixelBins | None = None,
    stop_mean_gradient: bool = True,
) -> jax.Array:
    """The bound's term at t of a model ``output`` at (x_t, t), nats per example, (N,): the
    KL term L_(t-1) for t >= 2; at t = 1 the decoder's -log p(x0 | x^(1)), DDPM's
    discretised one with ``bins``, else the Gaussian density's.

    ``stop_mean_gradient`` (improved DDPM Sec. 3.1): the mean part of ``output`` enters
    through ``lax.stop_gradient``, so this term trains the variance only.
    """
    t = t_array(t, x0.shape[0])
    mean_out, var_out = parameterisation.split_output(param, output)
    if stop_mean_gradient:
        mean_out = jax.lax.stop_gradient(mean_out)
    frozen = mean_out if var_out is None else (mean_out, var_out)
    model = parameterisation.kernel(param, schedule, x_t, t, frozen)
    kl = event_sum(gaussian.gaussian_kl(gaussian.q_posterior(schedule, x0, x_t, t), model))
    if bins is None:
        decoder = -gaussian.log_normal(x0, model.mean, model.var)
    else:
        decoder = -event_sum(discretized.log_prob(x0, model.mean, model.var, bins))
    return jnp.where(t == 1, decoder, kl)


def hybrid_loss(
    schedule: Schedule,
    param: parameterisation.Parameterisation,
    model_fn: parameterisation.ModelFn,
    x0: jax.Array,
    key: chex.PRNGKey,
    *,
    lam: float = 0.001,
    bins: discretized.PixelBins | None = None,
    t: jax.Array | None = None,
    t_weights: jax.Array | None = None,
) -> jax.Array:
    """L_hybrid = L_simple + lam * L_vlb per example, (N,), improved DDPM Eq. 16 as its code
    computes it: the mean over elements of (eps - eps_hat)^2, plus lam * T times the vlb term
    at the same t in bits per dimension (:func:`vlb_term`, mean output frozen), so that
    T * term is the one-t estimate of L_vlb = sum of all T terms.

    t ~ U{1..T} unless ``t`` (N,) is given, e.g. by ``timestep_sampler.sample``, whose
    ``t_weights`` 1 / (T p_t) then multiply both terms (unbiased for the uniform average).
    ``param`` must have an epsilon mean; ``model_fn(x_t, t)`` returns its output.
    """
    check_batch(x0)
    if param.mean != "epsilon":
        raise ValueError(f"L_hybrid trains an epsilon-model; got mean={param.mean!r}.")
    key_t, key_eps = jax.random.split(key)
    num_steps = schedule.num_steps
    if t is None:
        t = jax.random.randint(key_t, (x0.shape[0],), 1, num_steps + 1)
    eps = jax.random.normal(key_eps, x0.shape, x0.dtype)
    x_t = q_sample(schedule, x0, t, eps)
    output = model_fn(x_t, t)
    eps_hat, _ = parameterisation.split_output(param, output)
    chex.assert_equal_shape([eps_hat, x0])
    mse = jnp.mean(jnp.square(eps - eps_hat).reshape(x0.shape[0], -1), axis=1)
    dims = x0[0].size
    vb_bits_per_dim = vlb_term(schedule, param, output, x0, x_t, t, bins=bins) / (
        dims * jnp.log(2.0)
    )
    loss = mse + lam * num_steps * vb_bits_per_dim
    return loss if t_weights is None else t_weights * loss
