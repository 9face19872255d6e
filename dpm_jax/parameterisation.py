"""Network output -> reverse kernel p(x^(t-1) | x^(t)) = N(mean, var): the parameterisations.

The 2015 model, DDPM and improved DDPM/ADM share the Gaussian diffusion and differ in what
the network predicts. A :class:`Parameterisation` names a mean type and a variance type;
:func:`kernel` turns a model output into a :class:`~dpm_jax.gaussian.Kernel` for a schedule
and the paper's 1-based t, and :func:`make_reverse_fn` composes a model function with it
into the ``reverse_fn(x_t, t) -> Kernel`` that the bound, the samplers and the posteriors take.

Means (``Parameterisation.mean``):
  * ``"paper"``: Sohl-Dickstein et al. 2015 Eq. 65, mu = (x - z_mu)(1 - Sigma) + z_mu;
  * ``"reference_code"``: the 2015 code's mu = sqrt(1 - beta_t) x + sqrt(beta_t) z_mu
    (github.com/Sohl-Dickstein/Diffusion-Probabilistic-Models @ de92b57, ``model.py``
    ``get_mu_sigma``);
  * ``"epsilon"``: DDPM (Ho et al. 2020) Eq. 11, mu = (x_t - beta_t / sqrt(1 - abar_t) eps)
    / sqrt(alpha_t);
  * ``"x0"``: the posterior mean of q(x^(t-1) | x^(t), x0) at the predicted x0 (DDPM Eq. 7);
  * ``"posterior_mean"``: the network predicts mu directly (DDPM Table 2's mu~ prediction).

Variances (``Parameterisation.var``):
  * ``"paper_sigmoid"``: 2015 Eq. 64, Sigma = sigmoid(z_Sigma + logit beta_t);
  * ``"reference_code_sigmoid"``: the 2015 code's sigmoid(z_Sigma / sqrt(T) + logit beta_t);
  * ``"fixed_small"``: beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) (DDPM Sec. 3.2);
  * ``"fixed_large"``: beta_t (DDPM Sec. 3.2);
  * ``"learned_range"``: improved DDPM (Nichol & Dhariwal 2021) Eq. 15,
    Sigma = exp(v' log beta_t + (1 - v') log beta~_t) with v' = (v + 1) / 2 for the network's
    v (meant to span [-1, 1], not clamped, as the released code).
  beta~_1 = 0, so at t = 1 both ``fixed_small`` and ``fixed_large`` use beta~_2, and
  ``learned_range`` uses log beta~_2 for log beta~_1: DDPM's "fixedlarge" convention and
  improved DDPM's clipped log variance (openai/improved-diffusion ``gaussian_diffusion.py``).

Model output: an array (the mean part) for the fixed variances, a pair (mean part, variance
part) for the others. The 2015 readouts ``"paper"`` and ``"reference_code"`` (Eqs. 64-65 and
the code's variant) are :data:`READOUTS`. Conversions between eps, x0 and the posterior mean
(:func:`x0_from_eps`, :func:`eps_from_x0`, :func:`posterior_mean_from_x0`,
:func:`x0_from_posterior_mean`) and :func:`predict_x0` / :func:`predict_eps` let samplers,
guidance and losses ask for whichever they need.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from dpm_jax.gaussian import Kernel, ReverseFn, posterior_coefficients, posterior_variance
from dpm_jax.schedules import Schedule, alpha_bar, beta
from dpm_jax.shapes import per_example, t_array

MEANS = ("paper", "reference_code", "epsilon", "x0", "posterior_mean")
VARIANCES = (
    "paper_sigmoid",
    "reference_code_sigmoid",
    "fixed_small",
    "fixed_large",
    "learned_range",
)
_VAR_OUTPUT = ("paper_sigmoid", "reference_code_sigmoid", "learned_range")

ModelOutput = jax.Array | tuple[jax.Array, jax.Array]
ModelFn = Callable[[jax.Array, jax.Array], ModelOutput]


@dataclasses.dataclass(frozen=True)
class Parameterisation:
    """What the network predicts: a mean type of :data:`MEANS`, a variance type of :data:`VARIANCES`."""

    mean: str = "epsilon"
    var: str = "fixed_large"

    def __post_init__(self):
        if self.mean not in MEANS:
            raise ValueError(f"mean must be one of {MEANS}, got {self.mean!r}.")
        if self.var not in VARIANCES:
            raise ValueError(f"var must be one of {VARIANCES}, got {self.var!r}.")

    @property
    def outputs_variance(self) -> bool:
        """Whether the model returns a (mean part, variance part) pair."""
        return self.var in _VAR_OUTPUT


#: The 2015 readouts: the paper's Eqs. 64-65 and the released code's variant.
READOUTS = {
    "paper": Parameterisation("paper", "paper_sigmoid"),
    "reference_code": Parameterisation("reference_code", "reference_code_sigmoid"),
}


def from_readout(name: str) -> Parameterisation:
    """The parameterisation of a 2015 readout name (``"paper"`` or ``"reference_code"``)."""
    if name not in READOUTS:
        raise ValueError(f"unknown readout {name!r}; choose one of {tuple(READOUTS)}.")
    return READOUTS[name]


# ----------------------------------------------------------------------------------------------
# Schedule quantities at t, broadcast against x (N, ...).


def _at(values: jax.Array, x: jax.Array) -> jax.Array:
    return per_example(values, x)


def _clipped_posterior_variance(schedule: Schedule, t: jax.Array) -> jax.Array:
    """beta~_t with beta~_2 in place of beta~_1 = 0 (improved DDPM's clipped log variance)."""
    return posterior_variance(schedule, jnp.maximum(t, 2))


def x0_from_eps(schedule: Schedule, x_t, t, eps) -> jax.Array:
    """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t): inverts q_sample (DDPM Eq. 4)."""
    ab = _at(alpha_bar(schedule, t), x_t)
    return (x_t - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)


def eps_from_x0(schedule: Schedule, x_t, t, x0) -> jax.Array:
    """eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t): the noise that gives x_t from x0."""
    ab = _at(alpha_bar(schedule, t), x_t)
    return (x_t - jnp.sqrt(ab) * x0) / jnp.sqrt(1.0 - ab)


def posterior_mean_from_x0(schedule: Schedule, x_t, t, x0) -> jax.Array:
    """The mean a_t x0 + c_t x_t of q(x^(t-1) | x^(t), x0) (DDPM Eq. 7)."""
    a, c = posterior_coefficients(schedule, t)
    return _at(a, x_t) * x0 + _at(c, x_t) * x_t


def x0_from_posterior_mean(schedule: Schedule, x_t, t, mean) -> jax.Array:
    """The x0 whose posterior mean is ``mean``: (mean - c_t x_t) / a_t."""
    a, c = posterior_coefficients(schedule, t)
    return (mean - _at(c, x_t) * x_t) / _at(a, x_t)


def eps_mean(schedule: Schedule, x_t, t, eps) -> jax.Array:
    """DDPM Eq. 11: mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(1 - beta_t)."""
    b = _at(beta(schedule, t), x_t)
    ab = _at(alpha_bar(schedule, t), x_t)
    return (x_t - b / jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(1.0 - b)


# ----------------------------------------------------------------------------------------------
# Output -> kernel.


def split_output(
    param: Parameterisation, output: ModelOutput
) -> tuple[jax.Array, jax.Array | None]:
    """(mean part, variance part or None) of a model output, checked against ``param``."""
    if param.outputs_variance:
        if not (isinstance(output, tuple | list) and len(output) == 2):
            raise ValueError(
                f"variance {param.var!r} needs the model to return (mean part, variance part); "
                f"got {type(output).__name__}."
            )
        return output[0], output[1]
    if isinstance(output, tuple | list):
        raise ValueError(
            f"variance {param.var!r} is fixed: the model must return one array (the mean part), "
            f"got a {type(output).__name__} of {len(output)}. Use var='learned_range' for a "
            "learned variance."
        )
    return output, None


def variance(
    param: Parameterisation, schedule: Schedule, x_t, t, var_out, beta_t=None
) -> jax.Array:
    """The reverse variance for ``param.var`` (see the module docstring), shape of x_t.

    ``beta_t``: beta_t broadcast against x_t for the 2015 sigmoids (looked up when None).
    """
    t = t_array(t, x_t.shape[0])
    if param.var in ("paper_sigmoid", "reference_code_sigmoid"):
        b = _at(beta(schedule, t), x_t) if beta_t is None else beta_t
        z = var_out if param.var == "paper_sigmoid" else var_out / math.sqrt(schedule.num_steps)
        return jax.nn.sigmoid(z + jnp.log(b) - jnp.log1p(-b))
    if param.var == "fixed_small":
        var = _clipped_posterior_variance(schedule, t)
    elif param.var == "fixed_large":
        var = jnp.where(t == 1, _clipped_posterior_variance(schedule, t), beta(schedule, t))
    else:  # learned_range
        frac = (var_out + 1.0) / 2.0
        log_small = _at(jnp.log(_clipped_posterior_variance(schedule, t)), x_t)
        log_large = _at(jnp.log(beta(schedule, t)), x_t)
        return jnp.exp(frac * log_large + (1.0 - frac) * log_small)
    return jnp.broadcast_to(_at(var, x_t), x_t.shape)


def mean(
    param: Parameterisation, schedule: Schedule, x_t, t, mean_out, var, beta_t=None
) -> jax.Array:
    """The reverse mean for ``param.mean``; ``var`` is needed by the paper's Eq. 65 only,
    ``beta_t`` (broadcast against x_t; looked up when None) by the 2015 code's mean."""
    t = t_array(t, x_t.shape[0])
    if param.mean == "paper":
        return (x_t - mean_out) * (1.0 - var) + mean_out
    if param.mean == "reference_code":
        b = _at(beta(schedule, t), x_t) if beta_t is None else beta_t
        return jnp.sqrt(1.0 - b) * x_t + jnp.sqrt(b) * mean_out
    if param.mean == "epsilon":
        return eps_mean(schedule, x_t, t, mean_out)
    if param.mean == "x0":
        return posterior_mean_from_x0(schedule, x_t, t, mean_out)
    return mean_out  # posterior_mean


def kernel(param: Parameterisation, schedule: Schedule, x_t, t, output: ModelOutput) -> Kernel:
    """p(x^(t-1) | x^(t)) = N(mean, var) from the model output at (x_t, t), t in 1..T."""
    mean_out, var_out = split_output(param, output)
    if mean_out.shape != x_t.shape:
        raise ValueError(
            f"the model's mean part has shape {mean_out.shape}, x_t {x_t.shape}; a model must "
            "return per-element outputs shaped like its input."
        )
    # beta_t is looked up once for the 2015 variance and mean, so a learned schedule gets
    # its gradient through one lookup (the sum of both uses, in one order).
    beta_t = _at(beta(schedule, t_array(t, x_t.shape[0])), x_t)
    var = variance(param, schedule, x_t, t, var_out, beta_t)
    return Kernel(mean=mean(param, schedule, x_t, t, mean_out, var, beta_t), var=var)


def make_reverse_fn(
    param: Parameterisation,
    schedule: Schedule,
    model_fn: ModelFn,
    timestep_map: jax.Array | None = None,
    clip_x0: tuple[float, float] | None = None,
) -> ReverseFn:
    """``(x_t, t) -> Kernel``: ``model_fn`` composed with :func:`kernel`.

    ``timestep_map`` (shape (T,), from :func:`dpm_jax.chain.respace`) gives the model the
    original timestep of step t of a respaced ``schedule``: model_fn(x_t, timestep_map[t - 1]).
    ``clip_x0 = (low, high)``: the mean is the posterior mean (DDPM Eq. 7) at the predicted x0
    clipped to [low, high], DDPM's sampler for data known to lie there (``clip_denoised``
    of the released code); the variance is unchanged. Still a valid reverse kernel, so
    bounds computed with it stay bounds.
    """
    if clip_x0 is not None and not clip_x0[0] < clip_x0[1]:
        raise ValueError(f"clip_x0 must be (low, high) with low < high, got {clip_x0}.")

    def reverse_fn(x_t: jax.Array, t: jax.Array) -> Kernel:
        t = t_array(t, x_t.shape[0])
        t_model = t if timestep_map is None else jnp.asarray(timestep_map)[t - 1]
        output = model_fn(x_t, t_model)
        model = kernel(param, schedule, x_t, t, output)
        if clip_x0 is None:
            return model
        x0 = jnp.clip(predict_x0(param, schedule, x_t, t, output), *clip_x0)
        return Kernel(mean=posterior_mean_from_x0(schedule, x_t, t, x0), var=model.var)

    reverse_fn.num_steps = schedule.num_steps  # checked against the schedule it is used with
    return reverse_fn


def predict_x0(param: Parameterisation, schedule: Schedule, x_t, t, output: ModelOutput):
    """The model's prediction of x0 at (x_t, t), for any parameterisation (DDPM Fig. 6's x^0)."""
    t = t_array(t, x_t.shape[0])
    mean_out, _ = split_output(param, output)
    if param.mean == "epsilon":
        return x0_from_eps(schedule, x_t, t, mean_out)
    if param.mean == "x0":
        return mean_out
    return x0_from_posterior_mean(schedule, x_t, t, kernel(param, schedule, x_t, t, output).mean)


def predict_eps(param: Parameterisation, schedule: Schedule, x_t, t, output: ModelOutput):
    """The model's prediction of eps at (x_t, t), for any parameterisation."""
    t = t_array(t, x_t.shape[0])
    if param.mean == "epsilon":
        return split_output(param, output)[0]
    return eps_from_x0(schedule, x_t, t, predict_x0(param, schedule, x_t, t, output))


def eps_model(
    param: Parameterisation, model_fn: ModelFn
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The epsilon prediction of ``model_fn(x, t)`` (any variance type) as a function
    ``(x, t) -> eps_hat``, for what needs eps at any t: the probability-flow ODE (continuous
    t) and DDIM (a respaced t). Refuses a model without an epsilon output (the 2015 readouts,
    x0 or posterior-mean prediction)."""
    if param.mean != "epsilon":
        raise ValueError(
            f"this needs a model with an epsilon output (mean='epsilon'); this one predicts "
            f"mean={param.mean!r}. The probability-flow ODE and DDIM read eps directly; bound "
            "such a model with dpm_jax.importance, or sample it ancestrally (gaussian.sample)."
        )

    def eps_fn(x, t):
        output = model_fn(x, t)
        return output[0] if param.outputs_variance else output

    return eps_fn
