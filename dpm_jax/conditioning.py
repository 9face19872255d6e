"""Posterior (conditional) sampling for Gaussian diffusion: multiplying distributions (Sec. 2.5).

Methods, and which are exact:

  * :func:`denoise_exact` -- **exact** posterior sampling for a Gaussian observation
    y = x^(0) + sqrt(noise_var) eps (not the paper's method). sqrt(abar_t) y is distributed
    given x^(0) exactly as the forward state x^(t) when abar_t = 1 / (1 + noise_var), so the
    chain starts at the first step t* that is at least that noisy, x^(t*) = sqrt(abar_t*) y
    plus the missing noise, and runs the *unconditioned* reverse chain from t* to 0. With the
    exact reverse kernel it samples p(x^(0) | y) exactly when abar_t* = 1 / (1 + noise_var),
    and otherwise p(x^(0) | y') for an observation y' made slightly noisier by the added
    noise (:func:`matched_step`); no factor approximation is involved (the only other error is
    Eq. 44's fixed last step, O(beta_1), as in unconditioned sampling).
  * :func:`denoise` -- the paper's Fig. 3 denoising (Sec. 2.5, App. C; the released code's
    ``sampler.py``): the factor r(x) = N(y; x, noise_var) multiplies every reverse step
    (Eq. 22). **Approximate** even with the exact reverse kernel; measured bias below.
  * :func:`inpaint` -- Fig. 5's inpainting: r a delta function on the known pixels, which
    are clamped exactly at every step (the released code); the unknown ones follow the model,
    which sees the clean known values at every noise level. The same Eq. 22 scheme, so
    approximate in general (exact with the exact kernel of data whose known and unknown
    elements are independent). ``method="renoise"`` instead draws the known pixels from the
    forward marginal q(x^(t) | x_known) at every step (SDEdit's and RePaint's replacement);
    also approximate (measured in its docstring).
  * :func:`guided_sample` -- any smooth r through Eq. 61's perturbed mean
    mu~ = f_mu + f_Sigma d log r / dx at x = f_mu (App. C): first order in the step variance,
    on top of Eq. 22's approximation.

The factor methods (Sec. 2.5, App. C) modify every reverse step by a factor r (Eq. 22),

  p~(x^(t-1) | x^(t)) = p(x^(t-1) | x^(t)) r(x^(t-1)) / Z~_(t-1)(x^(t)),

with either the constant factor r(x^(t)) = r(x^(0)) of Eq. 23 (what the paper's experiments
use) or the alternative r(x^(t)) = r(x^(0))^((T - t) / T) of Sec. 2.5.4, which leaves the
starting distribution p~(x^(T)) = pi(x^(T)) unchanged (``schedule_factor=True`` below). Where
the product with a Gaussian step has a closed form it is taken exactly (Sec. 2.5.3): the
product of two Gaussians in :func:`denoise`, the clamp in :func:`inpaint`.

Each sampler is a kernel transform on the one Gaussian chain (:func:`dpm_jax.gaussian.sample_chain`
on :func:`dpm_jax.chain.run`), the chain of :func:`dpm_jax.gaussian.sample`, and draws its
noise from the same key streams: with a factor that is identically 1 (``noise_var = inf``, an all-False mask, a zero
gradient) each factor method returns exactly the unconditioned sample of the same key.
:func:`denoise_exact` scans the same t = T..2 but skips (``lax.cond``) the steps above t*.

Approximation of the factor methods (measured in tests/test_conditioning.py). Eq. 22 agrees
with the exact Eq. 21 only if its normaliser Z~_(t-1)(x^(t)) is proportional to r(x^(t));
App. C argues this for narrow steps, but the mismatch is O(beta_t) per step and accumulates
over the ~1/beta steps, so the chain samples p(x^(0)) r(x^(0)) only approximately, even with
the exact reverse kernel and for T -> infinity. For data distributed as pi = N(0, I) the
constant-factor chain tends, as the steps shrink, to pi r^2 / Z rather than pi r / Z (it
becomes Langevin dynamics whose drift carries the full grad log r but only half of
grad log pi): SNR-1 denoising of N(0, 1) data then samples N(2y/3, 1/3) instead of the
posterior N(y/2, 1/2). With the exact reverse kernel, T = 40 steps and y = 1.5 the measured
(mean, variance) is (0.992, 0.347) against the posterior (0.750, 0.500); the scheduled factor
gives (0.833, 0.409), biased too, differently. Treat both as the paper's heuristic, not as exact posterior
sampling; for a Gaussian observation use :func:`denoise_exact`.

The module is longer than most (about 510 lines, an eighth of them this account): the four
samplers, the kernel transforms they apply and the measured account of which are exact
belong together; their input checks live in :mod:`dpm_jax.validation`.

Conventions as in :mod:`dpm_jax.gaussian`: x has shape (N, *event); t is the paper's 1-based
time; trajectories have shape (T + 1, N, *event) with trajectory[t] = x^(t).
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax.gaussian import Kernel, ReverseFn, sample_chain
from dpm_jax.schedules import Schedule, alpha_bar
from dpm_jax.shapes import t_array
from dpm_jax.validation import (
    check_batch,
    check_known,
    check_noise_var,
    check_sample_shape,
    check_scalar_noise_var,
    is_concrete,
)

#: Where :func:`denoise` starts the chain: the observation y itself (the released code) or
#: x^(T) ~ pi = N(0, I) (the paper's p~(x^(T)) when the factor is scheduled).
STARTS = ("observation", "prior")

GradLogRFn = Callable[[jax.Array, jax.Array], jax.Array]

#: :func:`matched_step` treats abar_t (1 + noise_var) within MATCH_RTOL of 1 as an exact match
#: (extra_var = 0): float32 rounding of a schedule built to hit abar_t = 1 / (1 + noise_var)
#: must neither push t* one step later nor add a spurious extra noise.
MATCH_RTOL = 1e-5


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
    noise_var = check_noise_var(noise_var, y)
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

    return sample_chain(
        schedule, reverse_fn, key, init, transform=condition, return_trajectory=return_trajectory
    )


def matched_step(schedule: Schedule, noise_var) -> tuple[jax.Array, jax.Array]:
    """The step t* where :func:`denoise_exact` starts, and the variance of the noise it adds.

    For the variance-preserving forward process q(x^(t) | x^(0)) =
    N(sqrt(abar_t) x^(0), (1 - abar_t) I), a scaled observation

      sqrt(abar_t) y = sqrt(abar_t) x^(0) + sqrt(abar_t noise_var) eps

    has the law of x^(t) given x^(0) exactly when abar_t noise_var = 1 - abar_t, i.e.
    abar_t = 1 / (1 + noise_var). t* is the first (smallest) t whose noise is at least the
    observation's, abar_t* <= 1 / (1 + noise_var), and

      extra_var = 1 - abar_t* - abar_t* noise_var >= 0

    is the variance that x^(t*) = sqrt(abar_t*) y + sqrt(extra_var) eps' needs on top, so that
    its law given x^(0) is exactly q(x^(t*) | x^(0)). extra_var = 0 when the schedule hits
    the level exactly: abar_t (1 + noise_var) within :data:`MATCH_RTOL` = 1e-5 of 1 counts as
    a hit (float32 rounding), and the variance of x^(t*) given x^(0) is then q's to within
    MATCH_RTOL. Otherwise x^(t*) / sqrt(abar_t*) = y' is an observation of x^(0) with noise
    variance (1 - abar_t*) / abar_t* = noise_var + extra_var / abar_t*.

    Args:
      noise_var: the observation noise variance, a scalar > 0 (may be traced).

    Returns:
      (t_star, extra_var): an int32 scalar in 1..T and a float32 scalar. Inside jit (traced
      noise_var or schedule) a level noisier than x^(T) cannot raise; it gives t_star = T + 1
      and extra_var = NaN, so :func:`denoise_exact` returns NaN.

    Raises:
      ValueError: noise_var not a finite scalar > 0, or no step as noisy as the observation
        (abar_T > 1 / (1 + noise_var)).
    """
    noise_var = check_scalar_noise_var(noise_var)
    num_steps = schedule.num_steps
    ab = schedule.alphas_cumprod  # abar_1..T, non-increasing
    ok = ab * (1.0 + noise_var) <= 1.0 + MATCH_RTOL
    found = jnp.any(ok)
    t_star = jnp.where(found, jnp.argmax(ok) + 1, num_steps + 1).astype(jnp.int32)
    ab_star = ab[jnp.minimum(t_star, num_steps) - 1]
    extra_var = 1.0 - ab_star * (1.0 + noise_var)
    extra_var = jnp.where(extra_var > MATCH_RTOL, extra_var, 0.0)
    extra_var = jnp.where(found, extra_var, jnp.nan)
    if is_concrete(found) and not bool(found):
        raise ValueError(
            f"the observation (noise_var = {float(noise_var):.4g}) is noisier than x^(T): every "
            f"abar_t > 1 / (1 + noise_var) = {1.0 / (1.0 + float(noise_var)):.4g} (abar_T = "
            f"{float(ab[-1]):.4g}), so no step of this schedule matches it; use more steps or a "
            "schedule reaching lower alpha_bar."
        )
    return t_star, extra_var.astype(jnp.float32)


def denoise_exact(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    key: chex.PRNGKey,
    y: jax.Array,
    noise_var,
    *,
    return_trajectory: bool = False,
):
    """Samples p(x^(0) | y) for y = x^(0) + sqrt(noise_var) eps exactly, by starting at step t*.

    Not the paper's method (:func:`denoise` is, approximately). With (t*, extra_var) =
    :func:`matched_step` (schedule, noise_var), the chain starts at

      x^(t*) = sqrt(abar_t*) y + sqrt(extra_var) eps',

    whose law given x^(0) is exactly the forward marginal q(x^(t*) | x^(0)), and then runs the
    unconditioned reverse chain: reverse_fn for t = t*..2 and Eq. 44's kernel
    (:func:`dpm_jax.gaussian.first_step_kernel`) for t = 1. No factor multiplies any step.

    What it samples. Since (x^(0), x^(t*)) then has the forward joint law, the chain samples
    q(x^(0) | x^(t*)) when its kernels are the exact reverse kernels q(x^(t-1) | x^(t)), and:

      * if abar_t* = 1 / (1 + noise_var) (extra_var = 0), x^(t*) = sqrt(abar_t*) y and
        q(x^(0) | x^(t*)) = p(x^(0) | y): exact posterior sampling;
      * otherwise x^(0) ~ p(x^(0) | y') for the noisier observation
        y' = y + sqrt(extra_var / abar_t*) eps' (noise variance noise_var +
        extra_var / abar_t* = (1 - abar_t*) / abar_t*); given y alone its law is that
        posterior averaged over eps'. The gap shrinks with the step size around t*.

    With a learned kernel the result is as good as the model's unconditioned chain from t*.
    Eq. 44's last step is the exact reverse kernel only for data distributed as pi (or
    beta_1 -> 0): an O(beta_1) error, as in unconditioned sampling.

    Cost and compilation. The scan runs over the full t = T..2 with the steps above t* skipped
    by ``lax.cond`` (not evaluated; the state is carried), so the reverse model is called
    t* - 1 times, one compilation serves every noise level (noise_var may be traced under
    jit), and the keys are those of :func:`dpm_jax.gaussian.sample`: eps' from the init key,
    step t from the same per-step key. Under vmap over noise_var the cond becomes a select and
    every step is evaluated. noise_var is one scalar for the batch because t* is shared by
    the scan; per-example levels would need every step evaluated for every example (masking),
    so call once per level instead.

    Args:
      y: (N, *event) observations.
      noise_var: the observation noise variance, a scalar > 0.
      return_trajectory: also return every state, shape (T + 1, *y.shape), trajectory[t] =
        x^(t) for t <= t*, and trajectory[t] = x^(t*) for t >= t* (the chain does not exist
        above t*; use :func:`matched_step` for t*).

    Returns:
      x^(0) of y's shape, or (x^(0), trajectory).

    Raises:
      ValueError: see :func:`matched_step`; also for a badly shaped y or reverse_fn output.
    """
    check_batch(y, "y")
    t_star, extra_var = matched_step(schedule, noise_var)
    ab_star = alpha_bar(schedule, jnp.minimum(t_star, schedule.num_steps))

    def init(k):
        eps = jax.random.normal(k, y.shape, y.dtype)
        return (jnp.sqrt(ab_star) * y + jnp.sqrt(extra_var) * eps).astype(y.dtype)

    return sample_chain(
        schedule, reverse_fn, key, init, start_step=t_star, return_trajectory=return_trajectory
    )


INPAINT_METHODS = ("clamp", "renoise")


def renoised_kernel(
    kernel: Kernel, schedule: Schedule, s: jax.Array, x_known: jax.Array, known_mask: jax.Array
) -> Kernel:
    """On the known elements, the forward marginal q(x^(s) | x_known) instead of the model's
    step: mean sqrt(abar_s) x_known, variance 1 - abar_s (Eq. 4 of DDPM; the replacement of
    SDEdit and RePaint). At s = 0 that is the delta at x_known (abar_0 = 1).
    """
    ab = alpha_bar(schedule, s)
    return Kernel(
        mean=jnp.where(known_mask, jnp.sqrt(ab) * x_known, kernel.mean),
        var=jnp.where(known_mask, (1.0 - ab) * jnp.ones_like(kernel.var), kernel.var),
    )


def inpaint(
    schedule: Schedule,
    reverse_fn: ReverseFn,
    key: chex.PRNGKey,
    x_known: jax.Array,
    known_mask: jax.Array,
    *,
    method: str = "clamp",
    return_trajectory: bool = False,
):
    """Samples the unknown elements given the known ones (Fig. 5; r a delta on the known part).

    ``method="clamp"`` (the paper's Fig. 5 and the released code): known elements are
    clamped to ``x_known`` at every step, x^(T) included: the reverse kernel's mean is set to
    the known value and its variance to 0 there (:func:`clamped_kernel`), and the drawn
    state is then set to ``x_known`` on the mask, so x^(t) equals ``x_known`` bitwise on the
    known elements for every t. The model sees clean known values at every noise level.

    ``method="renoise"`` (the replacement method of SDEdit and RePaint, without RePaint's
    resampling): the known elements of x^(t) are drawn from the forward marginal
    q(x^(t) | x_known) at every step (:func:`renoised_kernel`), x^(T) included, so the model
    sees them at the noise level it was trained on; x^(0) equals ``x_known`` on the mask.

    Unknown elements start from N(0, 1) and follow the model's kernel; for t = 1 the kernel
    is Eq. 44's.

    Neither method samples the exact conditional when known and unknown elements are
    correlated, even with the exact reverse kernel: for 2-D Gaussian data of correlation 0.9
    with x_1 = 1 known (true conditional of x_2: N(0.9, 0.19)), T = 200 or 1000 steps and
    20,000 chains, clamping gave x_2 mean 0.73 and variance 0.31, re-noising 0.62 and 0.31
    (tests/test_conditioning.py pins the direction: both towards the prior). Re-noising's
    gain is for learned models, which have never seen clean pixels at high noise levels.

    Args:
      x_known: (N, *event) floats; only the entries under the mask are used (the others may
        hold anything, NaN included).
      known_mask: boolean array of exactly ``x_known``'s shape.
      method: "clamp" or "renoise" (:data:`INPAINT_METHODS`).
      return_trajectory: also return every state, shape (T + 1, *x_known.shape).

    Returns:
      x^(0) of x_known's shape, or (x^(0), trajectory).
    """
    if method not in INPAINT_METHODS:
        raise ValueError(f"method must be one of {INPAINT_METHODS}, got {method!r}.")
    check_known(x_known, known_mask)
    shape = x_known.shape
    x_safe = jnp.where(known_mask, x_known, 0.0)  # unknown entries may hold NaN

    if method == "clamp":

        def init(k):
            return jnp.where(known_mask, x_known, jax.random.normal(k, shape, x_known.dtype))

        def condition(kernel, s):
            return clamped_kernel(kernel, x_known, known_mask)

        def clamp(x):
            return jnp.where(known_mask, x_known, x)

    else:
        ab_T = alpha_bar(schedule, schedule.num_steps)

        def init(k):
            noise = jax.random.normal(k, shape, x_known.dtype)
            return jnp.where(
                known_mask, jnp.sqrt(ab_T) * x_safe + jnp.sqrt(1 - ab_T) * noise, noise
            )

        def condition(kernel, s):
            return renoised_kernel(kernel, schedule, s, x_safe, known_mask)

        def clamp(x):
            return x

    return sample_chain(
        schedule,
        reverse_fn,
        key,
        init,
        transform=condition,
        clamp=clamp,
        return_trajectory=return_trajectory,
    )


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
    shape = check_sample_shape(shape)
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

    return sample_chain(
        schedule, reverse_fn, key, init, transform=condition, return_trajectory=return_trajectory
    )
