"""dpm_jax.rate_distortion: DDPM Fig. 5's rate and distortion against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax import discretized, gaussian, parameterisation, rate_distortion, schedules

SCHED = schedules.linear_schedule(50, 1e-3, 0.2)


PARAM = parameterisation.Parameterisation("x0", "fixed_large")


def x0_hat(x_t, t):
    """For N(0, I) data: E[x0 | x_t] = sqrt(abar_t) x_t."""
    return jnp.sqrt(schedules.alpha_bar(SCHED, t))[:, None] * x_t


def test_distortion_of_the_posterior_mean_is_the_posterior_variance():
    """x0 ~ N(0, 1): the error of E[x0 | x_t] has variance 1 - abar_t per element."""
    x0 = jax.random.normal(jax.random.key(0), (4000, 2))
    out = rate_distortion.per_step(SCHED, PARAM, x0_hat, x0, jax.random.key(1))
    expected = 1.0 - np.asarray(SCHED.alphas_cumprod)
    # 8,000 squared normals per t: relative standard error sqrt(2 / 8000) = 1.6 %.
    np.testing.assert_allclose(out.squared_error, expected, rtol=0.07)
    assert out.kl.shape == out.squared_error.shape == (50,)
    assert out.kl[0] == 0.0  # Eq. 44's fixed first step: no model term


def test_terms_are_those_of_the_bound_with_the_same_key():
    reverse_fn = parameterisation.make_reverse_fn(PARAM, SCHED, x0_hat)
    bins = discretized.PixelBins(-1.0, 1.0, 1.0 / 255.0)
    pixels = jax.random.randint(jax.random.key(2), (64, 3), 0, 256)
    x0 = pixels.astype(jnp.float32) / 127.5 - 1.0
    key = jax.random.key(3)
    out = rate_distortion.per_step(SCHED, PARAM, x0_hat, x0, key, bins=bins)
    whole = gaussian.bound_terms(SCHED, reverse_fn, x0, key, bins=bins)
    np.testing.assert_allclose(np.sum(out.kl[1:]), np.mean(whole.kl), rtol=1e-5)
    np.testing.assert_allclose(out.kl[0], np.mean(whole.decoder), rtol=1e-5)


def test_rate_counts_the_terms_still_to_come():
    kl = np.array([5.0, 1.0, 2.0, 4.0])  # L_0 (t = 1), L_1, L_2, L_3 (t = 4 = T)
    # t = 1: L_T + L_1 + L_2 + L_3; t = 2: L_T + L_2 + L_3; t = 3: L_T + L_3; t = T: L_T.
    np.testing.assert_allclose(rate_distortion.rate(0.5, kl), [7.5, 6.5, 4.5, 0.5])
