"""Guided sampling: classifier guidance (Dhariwal & Nichol 2021, Algorithms 1 and 2) and
classifier-free guidance (Ho & Salimans 2022), as transforms of the reverse model.

* :func:`classifier_guided_reverse_fn` (ADM Algorithm 1, ancestral): the kernel's mean moves
  by s Sigma grad_x log p_phi(y | x_t, t), the gradient taken at x_t (the released code's
  ``condition_mean``); the first-order perturbation of the 2015 paper's Eq. 61
  (``conditioning.guided_kernel``).
* :func:`classifier_guided_eps` (ADM Algorithm 2, DDIM):
  eps' = eps - sqrt(1 - abar_t) s grad_x log p_phi(y | x_t, t).
* :func:`classifier_free_eps`: eps_u + s (eps_c - eps_u) from one model trained with label
  dropout; s = 0 is unconditional, s = 1 conditional, s > 1 guided.
* :func:`classifier_grad`: grad_x log softmax(logits(x, t))[y] of a classifier function.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax import conditioning, validation
from dpm_jax.gaussian import Kernel, ReverseFn
from dpm_jax.schedules import Schedule
from dpm_jax.shapes import per_example

GradFn = Callable[[jax.Array, jax.Array], jax.Array]
EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


def check_scale(scale) -> float:
    """The guidance scale as a float; refuses a scale that is not finite."""
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"the guidance scale must be finite, got {scale}.")
    return scale


def check_labels(labels, num_classes: int) -> jax.Array:
    """Integer class labels (N,) in 0..num_classes - 1 (values checked outside jit)."""
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.ndim != 1:
        raise ValueError(
            f"labels must be integers of shape (N,); got {labels.dtype} {labels.shape}."
        )
    if validation.is_concrete(labels):
        bad = np.asarray(labels)[(np.asarray(labels) < 0) | (np.asarray(labels) >= num_classes)]
        if bad.size:
            raise ValueError(
                f"class labels must lie in 0..{num_classes - 1} (the classifier's classes); "
                f"got {sorted(set(bad.tolist()))[:5]}."
            )
    return labels


def classifier_grad(logits_fn, labels, num_classes: int) -> GradFn:
    """``(x, t) -> grad_x log p(y | x, t)`` for the classifier ``logits_fn(x, t) -> (N,
    num_classes)`` and labels y (N,); the examples are independent, so one gradient of the
    summed log-probabilities gives every example's."""
    labels = check_labels(labels, num_classes)

    def grad_fn(x, t):
        def total(x):
            logits = logits_fn(x, t)
            if logits.shape != (x.shape[0], num_classes):
                raise ValueError(
                    f"the classifier must return logits (N, {num_classes}); got {logits.shape}."
                )
            log_p = jax.nn.log_softmax(logits, axis=-1)
            return jnp.sum(jnp.take_along_axis(log_p, labels[:, None], axis=1))

        return jax.grad(total)(x)

    return grad_fn


def classifier_guided_reverse_fn(reverse_fn: ReverseFn, grad_fn: GradFn, scale) -> ReverseFn:
    """ADM Algorithm 1: N(mu + s Sigma grad_fn(x_t, t), Sigma) in place of N(mu, Sigma)."""
    scale = check_scale(scale)

    def guided(x_t, t) -> Kernel:
        return conditioning.guided_kernel(reverse_fn(x_t, t), scale * grad_fn(x_t, t))

    if hasattr(reverse_fn, "num_steps"):
        guided.num_steps = reverse_fn.num_steps
    return guided


def classifier_guided_eps(schedule: Schedule, eps_fn: EpsFn, grad_fn: GradFn, scale) -> EpsFn:
    """ADM Algorithm 2: eps_hat - sqrt(1 - abar_t) s grad_fn(x_t, t), for DDIM."""
    scale = check_scale(scale)

    def guided(x_t, t):
        ab = per_example(schedule.alphas_cumprod[t - 1], x_t)
        return eps_fn(x_t, t) - jnp.sqrt(1.0 - ab) * scale * grad_fn(x_t, t)

    return guided


def classifier_free_eps(conditional: EpsFn, unconditional: EpsFn, scale) -> EpsFn:
    """eps_u + s (eps_c - eps_u) (Ho & Salimans 2022, Eq. 6 with w = s - 1)."""
    scale = check_scale(scale)

    def guided(x_t, t):
        eps_u = unconditional(x_t, t)
        return eps_u + scale * (conditional(x_t, t) - eps_u)

    return guided
