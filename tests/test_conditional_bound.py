"""The inpainting samplers' conditional bound (dpm_jax.conditional_bound) against closed forms.

Data: 2-D Gaussian N(0, C), correlation RHO; x_1 known, x_2 hidden. The reverse model is the
diagonal of the exact reverse step (its mean is linear in x^(t)), so each inpainting sampler
draws x_2 from a Gaussian whose mean and variance propagate in closed form step by step. The
bound must lie below that exact log density (the worst bug: a bound above it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import conditional_bound as cb
from dpm_jax import conditioning, gaussian, schedules, terms

T = 20
RHO = 0.9
SCHEDULE = schedules.from_betas(np.linspace(1e-3, 0.4, T))
C = np.array([[1.0, RHO], [RHO, 1.0]])


def _reverse_matrices():
    """A_t (mean = A_t x^(t)) and the diagonal of the exact reverse covariance, t = 1..T."""
    ab = np.concatenate([[1.0], np.asarray(SCHEDULE.alphas_cumprod, np.float64)])
    betas = np.asarray(SCHEDULE.betas, np.float64)
    mats, variances = [np.eye(2)], [np.ones(2)]  # t = 0 placeholders
    for t in range(1, T + 1):
        s_prev = ab[t - 1] * C + (1 - ab[t - 1]) * np.eye(2)
        s_t = ab[t] * C + (1 - ab[t]) * np.eye(2)
        a = np.sqrt(1 - betas[t - 1]) * s_prev @ np.linalg.inv(s_t)
        cov = s_prev - (1 - betas[t - 1]) * s_prev @ np.linalg.inv(s_t) @ s_prev
        mats.append(a)
        variances.append(np.diag(cov))
    return np.stack(mats), np.stack(variances), ab, betas


MATS, VARS, AB, BETAS = _reverse_matrices()


def reverse_fn(x_t, t):
    a = jnp.asarray(MATS, jnp.float32)[t]  # (N, 2, 2)
    return gaussian.Kernel(
        mean=jnp.einsum("nij,nj->ni", a, x_t), var=jnp.asarray(VARS, jnp.float32)[t]
    )


reverse_fn.num_steps = T


def sampler_moments(known: float, method: str) -> tuple[float, float]:
    """Mean and variance of x_2^(0) drawn by conditioning.inpaint, propagated exactly."""
    mean, var = 0.0, 1.0  # x_2^(T) ~ N(0, 1) for both methods
    for t in range(T, 1, -1):
        a = MATS[t]
        if method == "clamp":
            mean = a[1, 0] * known + a[1, 1] * mean
            var = a[1, 1] ** 2 * var + VARS[t][1]
        else:  # x_1^(t) ~ N(sqrt(abar_t) known, 1 - abar_t), fresh at every step
            mean = a[1, 0] * np.sqrt(AB[t]) * known + a[1, 1] * mean
            var = a[1, 0] ** 2 * (1 - AB[t]) + a[1, 1] ** 2 * var + VARS[t][1]
    b1 = BETAS[0]  # Eq. 44's last step
    return np.sqrt(1 - b1) * mean, (1 - b1) * var + b1


@pytest.mark.parametrize("method", conditioning.INPAINT_METHODS)
def test_closed_form_moments_are_what_inpaint_draws(method):
    known = 1.2
    x = jnp.tile(jnp.array([[known, jnp.nan]], jnp.float32), (20_000, 1))
    mask = jnp.tile(jnp.array([[True, False]]), (20_000, 1))
    out = np.asarray(
        conditioning.inpaint(SCHEDULE, reverse_fn, jax.random.key(3), x, mask, method=method)
    )
    mean, var = sampler_moments(known, method)
    se_mean = np.sqrt(var / len(out))
    assert abs(out[:, 1].mean() - mean) < 4 * se_mean
    assert abs(out[:, 1].var() / var - 1) < 4 * np.sqrt(2 / len(out))
    np.testing.assert_array_equal(out[:, 0], np.float32(known))


@pytest.mark.parametrize("method", conditioning.INPAINT_METHODS)
def test_bound_is_below_the_samplers_exact_log_density(method):
    known = 1.2
    mean, var = sampler_moments(known, method)
    draws = 4_000
    for hidden in (mean - 1.5 * np.sqrt(var), mean, mean + 0.7 * np.sqrt(var)):
        x0 = jnp.tile(jnp.array([[known, hidden]], jnp.float32), (draws, 1))
        mask = jnp.tile(jnp.array([[True, False]]), (draws, 1))
        bound = terms.to_bits(
            cb.inpainting_bound(SCHEDULE, reverse_fn, jax.random.key(0), x0, mask, method=method)
        )
        k, se = float(bound.mean()), float(bound.std() / np.sqrt(draws))
        exact = (-0.5 * np.log(2 * np.pi * var) - 0.5 * (hidden - mean) ** 2 / var) / np.log(2)
        assert k < exact + 3 * se, (method, hidden, k, exact, se)
        # Not vacuous. The gap is KL(q || the chain's posterior over x_2^(1:T)); renoising's
        # is larger (x_2 also informs the hidden x_1^(t) draws): 0.07-0.5 and 0.3-0.9 bits.
        assert k > exact - 1.2, (method, hidden, k, exact)


def test_no_known_element_is_the_unconditional_bound():
    x0 = (
        jax.random.normal(jax.random.key(1), (6, 2))
        @ jnp.linalg.cholesky(jnp.asarray(C, jnp.float32)).T
    )
    none = jnp.zeros_like(x0, bool)
    full = gaussian.bound_terms(SCHEDULE, reverse_fn, x0, jax.random.key(2))
    for method in conditioning.INPAINT_METHODS:
        part = cb.inpainting_bound(SCHEDULE, reverse_fn, jax.random.key(2), x0, none, method=method)
        for name in ("prior", "kl", "decoder"):
            np.testing.assert_allclose(
                getattr(part, name), getattr(full, name), rtol=1e-5, atol=1e-5
            )


@pytest.mark.filterwarnings("ignore:x0 has variance")  # constant data on purpose
def test_independent_elements_score_the_hidden_ones_alone():
    """A kernel that treats elements independently: the conditional bound of element 2 is,
    in expectation, the unconditional bound of element 2 on its own, whatever the known one."""

    def diag_fn(x_t, t):
        return gaussian.Kernel(mean=0.9 * x_t, var=jnp.full_like(x_t, 0.05))

    diag_fn.num_steps = T
    draws = 4_000
    for known in (0.3, 5.0):
        x0 = jnp.tile(jnp.array([[known, -1.1]], jnp.float32), (draws, 1))
        mask = jnp.tile(jnp.array([[True, False]]), (draws, 1))
        alone = terms.to_bits(gaussian.bound_terms(SCHEDULE, diag_fn, x0[:, 1:], jax.random.key(5)))
        for method in conditioning.INPAINT_METHODS:
            part = terms.to_bits(
                cb.inpainting_bound(SCHEDULE, diag_fn, jax.random.key(4), x0, mask, method=method)
            )
            se = np.hypot(part.std(), alone.std()) / np.sqrt(draws)
            assert abs(float(part.mean() - alone.mean())) < 4 * se, (known, method)


def test_bad_method_and_mask():
    x0 = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match="method must be one of"):
        cb.inpainting_bound(SCHEDULE, reverse_fn, jax.random.key(0), x0, x0 > 0, method="repaint")
    with pytest.raises(ValueError, match="known_mask must have exactly"):
        cb.inpainting_bound(SCHEDULE, reverse_fn, jax.random.key(0), x0, jnp.zeros((2,), bool))


def test_central_square_is_half_of_each_side():
    from experiments import image_inpainting

    square = image_inpainting.central_square(28, 28)
    rows, cols = np.nonzero(square)
    assert square.sum() == 14 * 14 and (rows.min(), rows.max(), cols.min(), cols.max()) == (
        7,
        20,
        7,
        20,
    )
    assert image_inpainting.central_square(8, 8).sum() == 16
