"""dpm_jax.ddim against Gaussian closed forms: determinism, the data's moments from the
exact eps, and eta = 1 as DDPM's ancestral kernel with beta~_t."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import chain, ddim, gaussian, parameterisation, schedules

SCHED = schedules.linear_schedule(1000, 1e-4, 0.02)
MEAN, SCALE = 0.3, 0.5  # data N(MEAN, SCALE^2 I)


def exact_eps(sched, scale: float = 1.0):
    """E[eps | x_t] of N(MEAN, SCALE^2) data at step t of ``sched``, times ``scale``."""

    def eps_fn(x, t):
        ab = sched.alphas_cumprod[t - 1][:, None]
        var = ab * SCALE**2 + 1.0 - ab
        return scale * jnp.sqrt(1.0 - ab) * (x - jnp.sqrt(ab) * MEAN) / var

    return eps_fn


def _moments(x):
    x = np.asarray(x)
    return x.mean(), x.var()


def test_eta_zero_is_deterministic_and_eta_one_is_not():
    x = jax.random.normal(jax.random.key(0), (4, 2))
    t = jnp.int32(500)
    a, b = (ddim.step(SCHED, exact_eps(SCHED), x, t, jax.random.key(k), 0.0) for k in (1, 2))
    np.testing.assert_array_equal(a, b)
    c = ddim.step(SCHED, exact_eps(SCHED), x, t, jax.random.key(2), 1.0)
    assert np.max(np.abs(np.asarray(c - b))) > 1e-3


def _ddim_moments(count: int):
    kept = chain.uniform_timesteps(SCHED.num_steps, count)
    sched, step_map = chain.respace(SCHED, kept)
    x = ddim.sample(
        sched, exact_eps(SCHED), jax.random.key(3), (20_000, 2), eta=0.0, timestep_map=step_map
    )
    return _moments(x)


def test_the_exact_eps_gives_the_datas_mean_and_variance():
    """Every step kept: deterministic DDIM carries N(0, I) to the data's N(MEAN, SCALE^2)
    (moments within Monte Carlo error plus 1 %). Respaced to fewer steps, the variance
    shrinks (x0_hat is a posterior mean) and the error falls as steps are added."""
    mean, var = _ddim_moments(1000)
    assert abs(mean - MEAN) < 4 * SCALE / np.sqrt(40_000) + 0.005
    assert abs(var / SCALE**2 - 1.0) < 4 * np.sqrt(2 / 40_000) + 0.01
    errors = [abs(_ddim_moments(count)[1] / SCALE**2 - 1.0) for count in (20, 50, 200)]
    assert errors[0] > errors[1] > errors[2], errors


def test_eta_one_is_the_ancestral_kernel_with_the_posterior_variance():
    """From one x_t, the eta = 1 step has the mean and variance of DDPM's kernel with
    beta~_t and the same eps (a deliberately wrong eps, so nothing cancels)."""
    t = 300
    eps_fn = exact_eps(SCHED, scale=0.8)
    x_t = jnp.full((40_000, 1), 0.7)
    out = np.asarray(ddim.step(SCHED, eps_fn, x_t, jnp.int32(t), jax.random.key(4), 1.0))
    param = parameterisation.Parameterisation("epsilon", "fixed_small")
    kernel = parameterisation.make_reverse_fn(param, SCHED, eps_fn)(
        x_t[:1], jnp.full((1,), t, jnp.int32)
    )
    var = float(kernel.var[0, 0])
    assert var == pytest.approx(float(gaussian.posterior_variance(SCHED, jnp.int32(t))), rel=1e-5)
    se = np.sqrt(var / len(out))
    assert abs(out.mean() - float(kernel.mean[0, 0])) < 4 * se
    assert out.var() == pytest.approx(var, rel=4 * np.sqrt(2 / len(out)))


def test_eta_one_with_every_step_matches_ancestral_sampling_in_distribution():
    eps_fn = exact_eps(SCHED, scale=0.9)  # wrong, so both land off the data, in the same place
    ancestral = gaussian.sample(
        SCHED,
        parameterisation.make_reverse_fn(
            parameterisation.Parameterisation("epsilon", "fixed_small"), SCHED, eps_fn
        ),
        jax.random.key(5),
        (20_000, 1),
        final="model_mean",
    )
    stochastic = ddim.sample(SCHED, eps_fn, jax.random.key(6), (20_000, 1), eta=1.0)
    deterministic = ddim.sample(SCHED, eps_fn, jax.random.key(6), (20_000, 1), eta=0.0)
    (ma, va), (ms, vs), (md, vd) = map(_moments, (ancestral, stochastic, deterministic))
    se_var = va * np.sqrt(2 / 20_000) * np.sqrt(2)
    assert abs(ma - ms) < 4 * np.sqrt(2 * va / 20_000)
    assert abs(va - vs) < 4 * se_var
    assert abs(vd - va) > 8 * se_var  # the check has power: eta = 0 differs under a wrong eps


def test_bad_eta_and_a_model_without_eps_are_refused():
    for eta in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eta must be finite and >= 0"):
            ddim.sample(SCHED, exact_eps(SCHED), jax.random.key(0), (2, 1), eta=eta)
    with pytest.raises(ValueError, match="needs a model with an epsilon output"):
        parameterisation.eps_model(parameterisation.Parameterisation("x0"), lambda x, t: x)


def test_clipping_x0_keeps_samples_in_range_and_a_wide_clip_changes_nothing():
    sched = schedules.linear_schedule(20)

    def eps_fn(x, t):  # a poor model whose x0_hat overshoots
        return -2.0 * x

    key = jax.random.key(3)
    plain = ddim.sample(sched, eps_fn, key, (64, 3))
    wide = ddim.sample(sched, eps_fn, key, (64, 3), clip_x0=(-1e9, 1e9))
    np.testing.assert_allclose(wide, plain, rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(plain))) > 1.0
    clipped = ddim.sample(sched, eps_fn, key, (64, 3), clip_x0=(-1.0, 1.0))
    assert float(jnp.max(jnp.abs(clipped))) <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="low < high"):
        ddim.sample(sched, eps_fn, key, (4, 3), clip_x0=(1.0, -1.0))
