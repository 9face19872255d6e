"""log p(x0) of the probability-flow ODE of an epsilon-model (Song et al. 2021, Sec. 4.3, App. D.2).

A discrete schedule of T steps is read as the variance-preserving SDE with the linear
beta(s) = T beta_1 + s T (beta_T - beta_1) on s in [0, 1] (Song et al.'s reading of DDPM:
beta_min = 0.1, beta_max = 20 for DDPM's schedule), alpha_bar(s) = exp(-int_0^s beta), and
the network evaluated at the continuous timestep 1 + s (T - 1). Its probability-flow ODE

  dx/ds = -1/2 beta(s) (x - eps_hat(x, s) / sigma(s)),   sigma(s) = sqrt(1 - alpha_bar(s)),

carries x0 to x(1), and log p(x0) = log N(x(1); 0, I) + int_eps^1 div(dx/ds) ds. ``diffrax``
integrates the state and the divergence together with an adaptive solver (Tsit5, stated
tolerances); the divergence is exact (one Jacobian column per dimension) or Hutchinson's
estimate with Rademacher probes. Densities of continuous data, nats per example.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import chex
import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax import gaussian, likelihood, validation
from dpm_jax.data.images import check_pixels
from dpm_jax.schedules import Schedule

#: ``(x, t) -> eps_hat`` with t a float array (N,) of timesteps on the schedule's 1..T scale.
EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


def vp_coefficients(schedule: Schedule) -> tuple[float, float]:
    """(beta_min, beta_max) of the continuous VP SDE that the discrete linear schedule
    approximates: T beta_1 and T beta_T (read on the host, so this also works under jit).

    Refuses a schedule that is not linear in t (the cosine or a learned one): the linear
    beta(s) would then describe another process than the one the model was trained on.
    """
    betas = np.asarray(schedule.betas, np.float64)
    line = np.linspace(betas[0], betas[-1], len(betas))
    if not np.allclose(betas, line, rtol=1e-4, atol=1e-7):
        raise ValueError(
            "the probability-flow ODE reads the schedule as the VP SDE with a linear beta(s), "
            "so it needs a linear schedule (schedules.linear_schedule, as DDPM); this one departs "
            f"from the line by up to {np.max(np.abs(betas - line)):.3g}."
        )
    return float(len(betas) * betas[0]), float(len(betas) * betas[-1])


def _max_norm(tree) -> jax.Array:
    """The largest absolute entry of a pytree: the step controller's per-element error norm."""
    return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(tree)]))


def _drift(beta_min: float, beta_max: float, num_steps: int, eps_fn: EpsFn):
    """The ODE's vector field x -> dx/ds at s, for x of shape (N, ...)."""

    def field(s, x):
        beta = beta_min + s * (beta_max - beta_min)
        log_ab = -(beta_min * s + 0.5 * (beta_max - beta_min) * s * s)
        sigma = jnp.sqrt(-jnp.expm1(log_ab))
        t = jnp.full((x.shape[0],), 1.0 + s * (num_steps - 1))
        return -0.5 * beta * (x - eps_fn(x, t) / sigma)

    return field


def ode_log_likelihood(
    schedule: Schedule,
    eps_fn: EpsFn,
    x0: jax.Array,
    key: chex.PRNGKey | None = None,
    *,
    num_probes: int = 0,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    s_min: float = 1e-5,
    error_norm: str = "max",
) -> jax.Array:
    """log p(x0) under the probability-flow ODE, nats per example, shape (N,).

    ``num_probes = 0``: the exact divergence (D Jacobian-vector products per evaluation;
    for low-dimensional data); ``num_probes = K > 0``: Hutchinson's estimate with K
    Rademacher probes drawn from ``key`` once per example (an unbiased estimate of log p).
    The solve runs from ``s_min`` (Song et al.: 1e-5) to 1. ``error_norm``: how the step
    controller measures the error of the batch's state: "max" (each example and its
    log-density held to rtol/atol) or "rms" (diffrax's default: the root mean square over
    the batch, so one example may exceed the tolerances about sqrt(N)-fold).
    """
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"the solver tolerances must be positive, got rtol={rtol}, atol={atol}.")
    if error_norm not in ("max", "rms"):
        raise ValueError(f"error_norm must be 'max' or 'rms', got {error_norm!r}.")
    if num_probes < 0:
        raise ValueError(f"num_probes must be >= 0 (0: the exact divergence), got {num_probes}.")
    if num_probes and key is None:
        raise ValueError("Hutchinson's estimate (num_probes > 0) needs a PRNG key.")
    validation.check_batch(x0)
    x0 = validation.at_least_float32(x0)
    beta_min, beta_max = vp_coefficients(schedule)
    field = _drift(beta_min, beta_max, schedule.num_steps, eps_fn)
    n = x0.shape[0]
    dim = math.prod(x0.shape[1:])
    probes = jax.random.rademacher(key, (num_probes, *x0.shape), x0.dtype) if num_probes else None

    def divergence(s, x):
        """(dx/ds, div dx/ds per example); the field acts on each example separately."""
        f, jvp = jax.linearize(lambda y: field(s, y), x)
        if probes is None:
            eye = jnp.eye(dim, dtype=x.dtype).reshape(dim, *x.shape[1:])
            diag = jax.vmap(lambda e: jvp(jnp.broadcast_to(e, x.shape)))(eye)  # (D, N, ...)
            div = jnp.einsum("dnk,dk->n", diag.reshape(dim, n, dim), jnp.eye(dim, dtype=x.dtype))
        else:
            products = jax.vmap(jvp)(probes)  # (K, N, ...)
            div = jnp.mean(jnp.sum((products * probes).reshape(num_probes, n, -1), -1), 0)
        return f, div

    norm = {"norm": _max_norm} if error_norm == "max" else {}
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda s, state, args: divergence(s, state[0])),
        diffrax.Tsit5(),
        t0=s_min,
        t1=1.0,
        dt0=None,
        y0=(x0, jnp.zeros((n,), x0.dtype)),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, **norm),
        max_steps=100_000,
    )
    x1, integral = solution.ys[0][-1], solution.ys[1][-1]
    return gaussian.log_normal(x1, 0.0, 1.0) + integral


def dequantized_bits_per_dim(
    schedule: Schedule,
    eps_fn: EpsFn,
    pixels: jax.Array,
    key: chex.PRNGKey,
    *,
    num_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> jax.Array:
    """An upper bound on the NLL of 8-bit images, bits/dim per example, (N,), by uniform
    dequantisation as Song et al. (2021, App. D.2; Ho et al. 2019, Flow++):

      x = 2 (pixels + u) / 256 - 1,  u ~ U[0, 1)^D,
      -log2 P(pixels) <= -E_u[log2 p(x)] - D log2(2 / 256),

    so bits/dim = -log2 p(x) / D + 7 for one u per example (unbiased for the right-hand side;
    the bound holds in expectation over u). ``pixels`` are integers in [0, 255] of shape
    (N, H, W, C); the model's data space is [-1, 1] (DDPM's). ``num_probes = 0`` makes the
    divergence exact (D passes per evaluation: small images only).
    """
    check_pixels(pixels)
    key_u, key_probe = jax.random.split(key)
    pixels = jnp.asarray(pixels, jnp.float32)
    u = jax.random.uniform(key_u, pixels.shape, jnp.float32)
    x = 2.0 * (pixels + u) / 256.0 - 1.0
    dim = math.prod(pixels.shape[1:])
    log_p = ode_log_likelihood(
        schedule, eps_fn, x, key_probe, num_probes=num_probes, rtol=rtol, atol=atol
    )
    return -likelihood.nats_to_bits(log_p) / dim + 7.0
