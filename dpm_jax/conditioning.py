"""Posterior (conditional) sampling for Gaussian diffusion: multiplying distributions (Sec. 2.5).

Sohl-Dickstein et al. 2015, Sec. 2.5 and App. C: to sample p~(x^(0)) ∝ p(x^(0)) r(x^(0)) the
reverse chain is modified so that every step is multiplied by a factor r (Eq. 22),

  p~(x^(t-1) | x^(t)) = p(x^(t-1) | x^(t)) r(x^(t-1)) / Z~_(t-1)(x^(t)),

with either the constant factor r(x^(t)) = r(x^(0)) of Eq. 23 (what the paper's experiments
use) or the alternative r(x^(t)) = r(x^(0))^((T - t) / T) of Sec. 2.5.4, which leaves the
starting distribution p~(x^(T)) = pi(x^(T)) unchanged (``schedule_factor=True`` below). Where
the product with a Gaussian step has a closed form it is taken exactly (Sec. 2.5.3):

  * :func:`denoise` -- r(x) = N(y; x, noise_var), a Gaussian observation; the product of two
    Gaussians (the released code's ``sampler.py`` denoising);
  * :func:`inpaint` -- r(x) a delta function on the known pixels and constant elsewhere
    (Fig. 5); the known pixels are clamped exactly (the released code's inpainting);
  * :func:`guided_sample` -- any smooth r, through the perturbed mean of Eq. 61,
    mu~ = f_mu + f_Sigma d log r / dx evaluated at x = f_mu.

Each sampler is one ``jax.lax.scan`` over t = T..2 with ``reverse_fn`` followed by the fixed
last step of Eq. 44, as :func:`dpm_jax.gaussian.sample`, and draws its noise from the same key
streams: with a factor that is identically 1 (``noise_var = inf``, an all-False mask, a zero
gradient) each returns exactly the unconditioned sample of the same key.

Approximation (measured in tests/test_conditioning.py). Eq. 22 agrees with the exact Eq. 21
only if its normaliser Z~_(t-1)(x^(t)) is proportional to r(x^(t)); App. C argues this for
narrow steps, but the mismatch is O(beta_t) per step and accumulates over the ~1/beta steps,
so the chain samples p(x^(0)) r(x^(0)) only approximately, even with the exact reverse kernel
and for T -> infinity. For data
distributed as pi = N(0, I) the constant-factor chain tends, as the steps shrink, to
pi r^2 / Z rather than pi r / Z (it becomes Langevin dynamics whose drift carries the full
grad log r but only half of grad log pi): SNR-1 denoising of N(0, 1) data then samples
N(2y/3, 1/3) instead of the posterior N(y/2, 1/2). The scheduled factor is biased too,
differently. Treat both as the paper's heuristic, not as exact posterior sampling.

Conventions as in :mod:`dpm_jax.gaussian`: x has shape (N, *event); t is the paper's 1-based
time; trajectories have shape (T + 1, N, *event) with trajectory[t] = x^(t).
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax.gaussian import Kernel, ReverseFn, first_step_kernel
from dpm_jax.schedules import Schedule
from dpm_jax.shapes import t_array
from dpm_jax.validation import check_batch, is_concrete

#: Where :func:`denoise` starts the chain: the observation y itself (the released code) or
#: x^(T) ~ pi = N(0, I) (the paper's p~(x^(T)) when the factor is scheduled).
STARTS = ("observation", "prior")

GradLogRFn = Callable[[jax.Array, jax.Array], jax.Array]


# ----------------------------------------------------------------------------------------------
# One conditioned step.


def factor_exponent(num_steps: int, s, schedule_factor: bool):
    """The power of r(x^(0)) that multiplies the state x^(s), s in 0..T (Sec. 2.5.4).

    1 for the constant factor of Eq. 23; (T - s) / T for the scheduled factor
    r(x^(s)) = r(x^(0))^((T - s)/T), which is 0 at s = T (an unconditioned start) and 1 at
    s = 0. ``s`` may be traced.
    """
    if not schedule_factor:
        return jnp.ones((), jnp.float32)
    return (num_steps - jnp.asarray(s, jnp.float32)) / num_steps


def gaussian_product_kernel(kernel: Kernel, y: jax.Array, noise_var, weight=1.0) -> Kernel:
    """N(x; mean, var) · N(y; x, noise_var / weight), renormalised: the exact product (App. C).

    The product of two Gaussians in x is Gaussian with precision 1/var + weight/noise_var:

      var'  = 1 / (1/var + weight/noise_var),
      mean' = var' (mean/var + weight y/noise_var),

    the released code's ``sigma_new``, ``mu_new`` (``sampler.py``) at weight 1. ``weight`` is
    the exponent of the factor (r^weight multiplies precision by ``weight``; see
    :func:`factor_exponent`). Written in the factor's precision, so var = 0 (a clamped
    element), noise_var = inf (an unobserved element) or weight = 0 leave the kernel unchanged.
    All arguments broadcast against ``kernel.mean``.
    """
    precision = weight / jnp.asarray(noise_var, kernel.mean.dtype)
    gain = kernel.var * precision
    denom = 1.0 + gain
    return Kernel(mean=(kernel.mean + gain * y) / denom, var=kernel.var / denom)


def clamped_kernel(kernel: Kernel, x_known: jax.Array, known_mask: jax.Array) -> Kernel:
    """The step multiplied by a delta factor on the known elements: mean = x_known, var = 0 there.

    r(x) = prod_{i known} delta(x_i - x_known_i) (Fig. 5's inpainting factor); the other
    elements keep the model's kernel. As the released code (``mu[mask] = X_true``,
    ``sigma[mask] = 0``).
    """
    return Kernel(
        mean=jnp.where(known_mask, x_known, kernel.mean),
        var=jnp.where(known_mask, jnp.zeros_like(kernel.var), kernel.var),
    )


def guided_kernel(kernel: Kernel, grad_log_r: jax.Array) -> Kernel:
    """Eq. 61: the step multiplied by a smooth factor r, to first order in the step variance.

    p~(x^(t-1) | x^(t)) ≈ N(x^(t-1); f_mu + f_Sigma · d log r(x) / dx |_(x = f_mu), f_Sigma).

    ``grad_log_r`` is d log r / dx evaluated at x = ``kernel.mean`` (the caller evaluates it
    there; App. C expands log r to first order around the mean of the narrow step). The
    variance is unchanged. For a Gaussian r = N(y; x, s^2) the exact product
    (:func:`gaussian_product_kernel`) has mean mu + var (y - mu)/(s^2 + var), this one
    mu + var (y - mu)/s^2: they differ by var^2 (y - mu) / (s^2 (s^2 + var)) = O(var^2).
    A multiplier on the gradient is what classifier guidance calls the guidance scale.
    """
    if grad_log_r.shape != kernel.mean.shape:
        raise ValueError(
            f"grad log r must have the shape of the kernel mean {kernel.mean.shape}; got "
            f"{grad_log_r.shape}. grad_log_r_fn(x, t) must return an array shaped like x."
        )
    return Kernel(mean=kernel.mean + kernel.var * grad_log_r, var=kernel.var)


# ----------------------------------------------------------------------------------------------
# The chain.


def _checked(kernel: Kernel, x: jax.Array, what: str) -> Kernel:
    if kernel.mean.shape != x.shape:
        raise ValueError(
            f"{what} returned a kernel mean of shape {kernel.mean.shape} for x of shape "
            f"{x.shape}; the mean and variance must have the shape of x."
        )
    return Kernel(kernel.mean, jnp.broadcast_to(kernel.var, x.shape))


def _chain(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    key: chex.PRNGKey,
    init: Callable[[chex.PRNGKey], jax.Array],
    condition: Callable[[Kernel, jax.Array], Kernel],
    clamp: Callable[[jax.Array], jax.Array],
    return_trajectory: bool,
):
    """x^(T) = init(key); for t = T..1, x^(t-1) = clamp(draw from condition(kernel_t, t - 1)).

    kernel_t is reverse_fn(x^(t), t) for t >= 2 and Eq. 44's for t = 1. Same key usage as
    :func:`dpm_jax.gaussian.sample`.
    """
    num_steps = schedule.num_steps
    key_init, key_steps = jax.random.split(key)
    x_T = init(key_init)
    shape = x_T.shape
    keys = jax.random.split(key_steps, num_steps)
    ts = jnp.arange(num_steps, 1, -1, dtype=jnp.int32)

    def draw(kernel, k):
        noise = jax.random.normal(k, shape, x_T.dtype)
        return clamp(kernel.mean + jnp.sqrt(kernel.var) * noise)

    def step(x, inputs):
        t, k = inputs
        kernel = _checked(reverse_fn(x, t_array(t, shape[0])), x, "reverse_fn")
        x = draw(condition(kernel, t - 1), k).astype(x_T.dtype)
        return x, x

    x1, states = jax.lax.scan(step, x_T, (ts, keys[1:]))
    x0 = draw(condition(first_step_kernel(schedule, x1), jnp.int32(0)), keys[0])
    x0 = x0.astype(x_T.dtype)
    if not return_trajectory:
        return x0
    # states[i] is x^(T-1-i); reverse so that trajectory[t] = x^(t).
    trajectory = jnp.concatenate([x0[None], states[::-1], x_T[None]], axis=0)
    return x0, trajectory


def _identity(x):
    return x


# ----------------------------------------------------------------------------------------------
# Input checks.


def _check_noise_var(noise_var, y: jax.Array) -> jax.Array:
    noise_var = jnp.asarray(noise_var, y.dtype)
    try:
        broadcast = np.broadcast_shapes(noise_var.shape, y.shape)
    except ValueError:
        broadcast = None
    if broadcast != tuple(y.shape):
        raise ValueError(
            f"noise_var must be a scalar or broadcast to y's shape {tuple(y.shape)}; got shape "
            f"{tuple(noise_var.shape)}."
        )
    if is_concrete(noise_var):
        nv = np.asarray(noise_var)
        bad = nv[~(nv > 0)]
        if bad.size:
            raise ValueError(
                "noise_var (the variance of the observation noise, y = x + sqrt(noise_var) eps) "
                f"must be > 0 everywhere (inf marks an unobserved element); got {bad.size} "
                f"value(s) that are not, e.g. {bad.flat[0]!r}. For exactly known values use "
                "inpaint()."
            )
    return noise_var


def _check_known(x_known, known_mask) -> None:
    """Rank, dtype, mask shape and dtype; finiteness only where the mask is True."""
    if not hasattr(x_known, "shape"):
        raise TypeError(
            f"x_known must be an array of shape (N, ...); got {type(x_known).__name__}."
        )
    # Rank and dtype first (a zero-strided stand-in: no values needed).
    check_batch(np.broadcast_to(np.zeros((), x_known.dtype), x_known.shape), "x_known")
    mask_shape = getattr(known_mask, "shape", None)
    if mask_shape is None or tuple(mask_shape) != tuple(x_known.shape):
        raise ValueError(
            f"known_mask must have exactly x_known's shape {tuple(x_known.shape)}; got "
            f"{None if mask_shape is None else tuple(mask_shape)}. Broadcast a per-example mask "
            "with jnp.broadcast_to(mask, x_known.shape)."
        )
    if np.dtype(known_mask.dtype) != np.bool_:
        raise TypeError(
            f"known_mask must be boolean (True = known); got dtype {known_mask.dtype}. "
            "Use mask.astype(bool)."
        )
    if is_concrete(x_known) and is_concrete(known_mask):
        # Entries outside the mask are never used and may hold anything (NaN included).
        known = np.asarray(x_known)[np.asarray(known_mask)]
        if not np.all(np.isfinite(known)):
            raise ValueError(
                f"x_known holds {int(np.sum(~np.isfinite(known)))} non-finite value(s) under "
                "known_mask; known values must be finite (unknown entries may be anything)."
            )


def _check_shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise TypeError(f"shape must be a tuple of ints (N, *event); got {shape!r}.") from err
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(
            f"shape must be (N, *event) with rank >= 2 and positive sizes; got {shape}. "
            "Use (N, 1) for scalar examples."
        )
    return shape


# ----------------------------------------------------------------------------------------------
# Public samplers.


def denoise(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    key: chex.PRNGKey,
    y: jax.Array,
    noise_var,
    *,
    start: str | None = None,
    schedule_factor: bool = False,
    return_trajectory: bool = False,
):
    """Samples x^(0) given a noisy observation y = x^(0) + sqrt(noise_var) eps (Fig. 3, App. C).

    The factor r(x) = N(y; x, noise_var) multiplies every reverse step in closed form
    (:func:`gaussian_product_kernel`, Eq. 22 with Eq. 23's r(x^(t)) = r(x^(0))):

      x^(t-1) ~ N(m', v'),  v' = 1 / (1/f_Sigma + w_(t-1)/noise_var),
                            m' = v' (f_mu / f_Sigma + w_(t-1) y / noise_var),

    for t = T..2 with (f_mu, f_Sigma) = reverse_fn(x^(t), t), and for t = 1 with Eq. 44's
    kernel. w_s = 1 (Eq. 23's constant factor, the released code) or, with
    ``schedule_factor=True``, w_s = (T - s)/T (Sec. 2.5.4's r(x^(0))^((T-s)/T)).

    This is Eq. 22 and is only approximately p(x^(0) | y); see the module docstring and
    tests/test_conditioning.py for the measured bias.

    Args:
      y: (N, *event) observations.
      noise_var: the observation noise variance, > 0; a scalar or an array broadcasting to
        y's shape (inf marks an element that was not observed).
      start: ``"observation"`` starts the chain at x^(T) = y (the released code's
        ``sampler.py``); ``"prior"`` draws x^(T) ~ N(0, I) (the paper's p~(x^(T)) for the
        scheduled factor). Default: ``"observation"``, or ``"prior"`` when
        ``schedule_factor`` is set.
      schedule_factor: use r(x^(t)) = r(x^(0))^((T - t)/T) instead of the constant factor.
      return_trajectory: also return every state, shape (T + 1, *y.shape), trajectory[t] =
        x^(t).

    Returns:
      x^(0) of y's shape, or (x^(0), trajectory).
    """
    check_batch(y, "y")
    noise_var = _check_noise_var(noise_var, y)
    if start is None:
        start = "prior" if schedule_factor else "observation"
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; choose one of {STARTS}.")
    num_steps = schedule.num_steps

    def init(k):
        if start == "observation":
            return y
        return jax.random.normal(k, y.shape, y.dtype)

    def condition(kernel, s):
        weight = factor_exponent(num_steps, s, schedule_factor)
        return gaussian_product_kernel(kernel, y, noise_var, weight)

    return _chain(schedule, reverse_fn, key, init, condition, _identity, return_trajectory)


def inpaint(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    key: chex.PRNGKey,
    x_known: jax.Array,
    known_mask: jax.Array,
    *,
    return_trajectory: bool = False,
):
    """Samples the unknown elements given the known ones (Fig. 5; r a delta on the known part).

    Known elements (``known_mask`` True) are clamped to ``x_known`` at every step, x^(T)
    included: the reverse kernel's mean is set to the known value and its variance to 0 there
    (:func:`clamped_kernel`, as the released code), and the drawn state is then set to
    ``x_known`` on the mask, so x^(t) equals ``x_known`` bitwise on the known elements for
    every t. The model sees clean known values at every noise level (they are not re-noised
    to level t). Unknown elements start from N(0, 1) and follow the model's kernel; for t = 1
    the kernel is Eq. 44's.

    Args:
      x_known: (N, *event) floats; only the entries under the mask are used (the others may
        hold anything, NaN included).
      known_mask: boolean array of exactly ``x_known``'s shape.
      return_trajectory: also return every state, shape (T + 1, *x_known.shape).

    Returns:
      x^(0) of x_known's shape, or (x^(0), trajectory).
    """
    _check_known(x_known, known_mask)
    shape = x_known.shape

    def init(k):
        return jnp.where(known_mask, x_known, jax.random.normal(k, shape, x_known.dtype))

    def condition(kernel, s):
        return clamped_kernel(kernel, x_known, known_mask)

    def clamp(x):
        return jnp.where(known_mask, x_known, x)

    return _chain(schedule, reverse_fn, key, init, condition, clamp, return_trajectory)


def guided_sample(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    key: chex.PRNGKey,
    shape: tuple[int, ...],
    grad_log_r_fn: GradLogRFn,
    *,
    scale: float = 1.0,
    schedule_factor: bool = False,
    return_trajectory: bool = False,
):
    """Samples p(x^(0)) r(x^(0)) for a smooth factor r through Eq. 61's perturbed mean.

    x^(T) ~ N(0, I); for t = T..1 the step's kernel (reverse_fn for t >= 2, Eq. 44 for t = 1)
    becomes (:func:`guided_kernel`)

      N(x^(t-1); f_mu + scale · w_(t-1) · f_Sigma · g, f_Sigma),  g = grad_log_r_fn(f_mu, t - 1),

    i.e. the gradient is evaluated at the kernel mean f_mu (a point estimate of x^(t-1)), not
    at x^(t), and the second argument is the index s = t - 1 of the state the factor
    multiplies (0 on the last step), shape (N,). The shift is first order in f_Sigma
    (App. C, Eqs. 52-61), accurate when r varies little over one step's width. w_s = 1 for
    Eq. 23's constant factor or (T - s)/T with ``schedule_factor``. ``scale`` multiplies the
    gradient (r^scale; the "guidance scale" of classifier guidance).

    Args:
      shape: (N, *event) of the samples (float32, as :func:`dpm_jax.gaussian.sample`).
      grad_log_r_fn: (x (N, *event), s (N,) int32) -> d log r / dx, shaped like x.

    Returns:
      x^(0) of ``shape``, or (x^(0), trajectory (T + 1, *shape)) with trajectory[t] = x^(t).
    """
    shape = _check_shape(shape)
    if not callable(grad_log_r_fn):
        raise TypeError(f"grad_log_r_fn must be callable (x, t) -> array; got {grad_log_r_fn!r}.")
    if is_concrete(scale) and not np.all(np.isfinite(np.asarray(scale))):
        raise ValueError(f"scale must be finite; got {scale!r}.")
    num_steps = schedule.num_steps

    def init(k):
        return jax.random.normal(k, shape, jnp.float32)

    def condition(kernel, s):
        grad = jnp.asarray(grad_log_r_fn(kernel.mean, t_array(s, shape[0])))
        if grad.shape != kernel.mean.shape:
            raise ValueError(
                f"grad_log_r_fn(x, t) must return an array of x's shape {kernel.mean.shape}; "
                f"got {grad.shape}."
            )
        weight = scale * factor_exponent(num_steps, s, schedule_factor)
        return guided_kernel(kernel, (weight * grad).astype(kernel.mean.dtype))

    return _chain(schedule, reverse_fn, key, init, condition, _identity, return_trajectory)
