"""dpm_jax.guidance against closed forms: the tilted Gaussian step, the classifier's
gradient, classifier-free mixing, and bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import ddim, guidance, schedules
from dpm_jax.gaussian import Kernel


def _step_error(b: float, scale: float = 1.0) -> float:
    """|ADM's guided mean - the exact tilted mean| for one step of variance b.

    Kernel: the exact reverse step of N(0, 1) data, N(sqrt(1 - b) x_t, b). Classifier:
    log p(y | x) = log N(c; x, v) + const, so grad = (c - x) / v and the exact tilted step
    N(mu, b) N(c; x, v) has mean mu + b (c - mu) / (v + b)."""
    c, v = 1.5, 0.4
    x_t = jnp.array([[0.3], [-0.8]])

    def reverse_fn(x, t):
        return Kernel(mean=jnp.sqrt(1.0 - b) * x, var=jnp.full_like(x, b))

    guided = guidance.classifier_guided_reverse_fn(reverse_fn, lambda x, t: (c - x) / v, scale)
    mean = np.asarray(guided(x_t, jnp.ones((2,), jnp.int32)).mean)
    mu = np.sqrt(1.0 - b) * np.asarray(x_t)
    exact = mu + b * (c - mu) / (v + b)
    return float(np.max(np.abs(mean - exact)))


def test_classifier_guidance_is_the_tilted_gaussian_step_to_first_order():
    errors = [_step_error(b) for b in (0.02, 0.01, 0.005)]
    # Zero at first order: the error is O(b^2), a quarter per halving of the step variance.
    for big, small in zip(errors, errors[1:], strict=False):
        assert 0.2 < small / big < 0.3, errors
    assert errors[-1] < 0.05 * 0.005 * (1.5 - 0.3) / 0.4  # under 5 % of the smallest shift
    # Scale 0 leaves the kernel as it was.
    assert _step_error(0.01, scale=0.0) > 0.01


def test_classifier_grad_matches_the_softmax_formula():
    """Linear logits W x: grad log softmax_y = W_y - sum_k p_k W_k."""
    w = jax.random.normal(jax.random.key(0), (3, 4))
    x = jax.random.normal(jax.random.key(1), (5, 4))
    labels = jnp.array([0, 2, 1, 1, 0])
    grad = guidance.classifier_grad(lambda x, t: x @ w.T, labels, 3)(x, jnp.zeros((5,)))
    p = jax.nn.softmax(x @ w.T, axis=-1)
    np.testing.assert_allclose(grad, w[labels] - p @ w, rtol=1e-5, atol=1e-6)


def test_classifier_free_mixing_and_ddim_guidance():
    cond = lambda x, t: 2.0 * x  # noqa: E731
    uncond = lambda x, t: -x  # noqa: E731
    x = jnp.ones((2, 3))
    t = jnp.ones((2,), jnp.int32)
    np.testing.assert_array_equal(guidance.classifier_free_eps(cond, uncond, 0.0)(x, t), -x)
    np.testing.assert_array_equal(guidance.classifier_free_eps(cond, uncond, 1.0)(x, t), 2 * x)
    np.testing.assert_allclose(guidance.classifier_free_eps(cond, uncond, 3.0)(x, t), 8 * x)
    # Algorithm 2 moves DDIM samples towards the class, not at scale 0.
    sched = schedules.linear_schedule(100, 1e-3, 0.2)

    def eps_fn(x, t):  # exact eps of N(0, 1) data
        return jnp.sqrt(1.0 - sched.alphas_cumprod[t - 1])[:, None] * x

    grad = lambda x, t: (1.5 - x) / 0.4  # noqa: E731
    key = jax.random.key(2)
    plain = ddim.sample(sched, eps_fn, key, (2000, 1))
    same = ddim.sample(
        sched, guidance.classifier_guided_eps(sched, eps_fn, grad, 0.0), key, (2000, 1)
    )
    np.testing.assert_array_equal(plain, same)
    pulled = ddim.sample(
        sched, guidance.classifier_guided_eps(sched, eps_fn, grad, 1.0), key, (2000, 1)
    )
    assert float(jnp.mean(pulled)) > float(jnp.mean(plain)) + 0.5


def test_bad_scales_and_labels_are_refused():
    for scale in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="guidance scale must be finite"):
            guidance.classifier_free_eps(lambda x, t: x, lambda x, t: x, scale)
    with pytest.raises(ValueError, match="class labels must lie in 0..9"):
        guidance.classifier_grad(lambda x, t: x, jnp.array([3, 10]), 10)
    with pytest.raises(ValueError, match="integers of shape"):
        guidance.check_labels(jnp.array([0.5]), 10)
