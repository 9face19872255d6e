"""Improved DDPM's training pieces: the hybrid loss's stop-gradient and the unbiased
importance sampling of t, against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import discretized, gaussian, objectives, parameterisation, schedules
from dpm_jax import timestep_sampler as ts

SCHED = schedules.linear_schedule(20, 0.01, 0.3)
LEARNED = parameterisation.Parameterisation("epsilon", "learned_range")


def _model(params):
    """eps_hat = a * x_t, v = b (per element): one parameter for the mean, one for the variance."""
    return lambda x_t, t: (params["a"] * x_t, jnp.full_like(x_t, params["b"]))


def test_the_vlb_term_passes_no_gradient_to_the_mean_output():
    x0 = jax.random.normal(jax.random.key(0), (64, 3))
    params = {"a": jnp.float32(0.3), "b": jnp.float32(0.2)}
    t = jnp.arange(64) % SCHED.num_steps + 1

    def vlb(p):
        eps = jax.random.normal(jax.random.key(1), x0.shape)
        x_t = gaussian.q_sample(SCHED, x0, t, eps)
        out = _model(p)(x_t, t)
        return jnp.mean(objectives.vlb_term(SCHED, LEARNED, out, x0, x_t, t))

    grads = jax.grad(vlb)(params)
    assert float(grads["a"]) == 0.0 and abs(float(grads["b"])) > 1e-4

    # Without the stop-gradient the mean does get one: the check has power.
    def unfrozen(p):
        eps = jax.random.normal(jax.random.key(1), x0.shape)
        x_t = gaussian.q_sample(SCHED, x0, t, eps)
        out = _model(p)(x_t, t)
        return jnp.mean(
            objectives.vlb_term(SCHED, LEARNED, out, x0, x_t, t, stop_mean_gradient=False)
        )

    assert abs(float(jax.grad(unfrozen)(params)["a"])) > 1e-4
    # So the hybrid loss gives the mean exactly L_simple's gradient.
    key = jax.random.key(2)
    hybrid = jax.grad(
        lambda p: jnp.mean(objectives.hybrid_loss(SCHED, LEARNED, _model(p), x0, key))
    )
    simple = jax.grad(
        lambda p: jnp.mean(objectives.hybrid_loss(SCHED, LEARNED, _model(p), x0, key, lam=0.0))
    )
    np.testing.assert_allclose(hybrid(params)["a"], simple(params)["a"], rtol=1e-6)


def test_the_vlb_term_is_the_bounds_term():
    """Against gaussian.kl_term (t >= 2) and the discretised decoder (t = 1) of the same kernel."""
    x0 = (
        jnp.round(jax.random.uniform(jax.random.key(3), (8, 4), minval=-1, maxval=1) * 127.5)
        / 127.5
    )
    bins = discretized.PixelBins(-1.0, 1.0, 1.0 / 255.0)
    model = _model({"a": 0.5, "b": -0.3})
    reverse_fn = parameterisation.make_reverse_fn(LEARNED, SCHED, model)
    noise = jax.random.normal(jax.random.key(4), x0.shape)
    for step in (1, 7, 20):
        t = jnp.full((8,), step)
        x_t = gaussian.q_sample(SCHED, x0, t, noise)
        got = objectives.vlb_term(SCHED, LEARNED, model(x_t, t), x0, x_t, t, bins=bins)
        if step == 1:
            want = gaussian.discretized_decoder_term(SCHED, reverse_fn, x0, noise, bins)
        else:
            want = gaussian.kl_term(SCHED, reverse_fn, x0, t, noise)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_importance_sampled_terms_are_unbiased_for_the_uniform_sum():
    """A fixed model: the weighted mean of L_t at t ~ p matches sum_t L_t / T (and the
    uniform estimate) within Monte Carlo error, for a p far from uniform."""
    x0 = jax.random.normal(jax.random.key(5), (1, 2))
    model = _model({"a": 0.2, "b": 0.5})

    def term(t, key):
        xs = jnp.repeat(x0, t.shape[0], axis=0)
        x_t = gaussian.q_sample(SCHED, xs, t, jax.random.normal(key, xs.shape))
        return objectives.vlb_term(SCHED, LEARNED, model(x_t, t), xs, x_t, t)

    # The exact per-t means by many draws at every t (the "truth" of this check).
    per_t = np.array(
        [float(jnp.mean(term(jnp.full((4000,), s), jax.random.key(s)))) for s in range(1, 21)]
    )
    state = ts.init(SCHED.num_steps, history=10)
    for i in range(10):  # fill every history with losses that make p far from uniform
        t_all = jnp.arange(1, 21)
        state = ts.update(state, t_all, jnp.asarray(per_t) * (1 + 0.1 * i) + t_all)
    p = np.asarray(ts.probabilities(state))
    assert p.max() / p.min() > 3  # far from uniform
    t, w = ts.sample(state, jax.random.key(6), 200_000)
    weighted = np.asarray(w * term(t, jax.random.key(7)))
    uniform_t = jax.random.randint(jax.random.key(8), (200_000,), 1, 21)
    uniform = np.asarray(term(uniform_t, jax.random.key(9)))
    target = per_t.mean()
    se_w = weighted.std() / np.sqrt(len(weighted))
    se_u = uniform.std() / np.sqrt(len(uniform))
    assert abs(weighted.mean() - target) < 4 * np.hypot(se_w, 0.01 * abs(target))
    assert abs(weighted.mean() - uniform.mean()) < 4 * np.hypot(se_w, se_u)


def test_the_sampler_is_uniform_until_every_history_is_full():
    state = ts.init(5, history=2)
    state = ts.update(state, jnp.array([1, 2, 3, 4, 5, 1, 2, 3, 4]), jnp.arange(9.0) + 1)
    np.testing.assert_allclose(ts.probabilities(state), 0.2)
    state = ts.update(state, jnp.array([5]), jnp.array([100.0]))
    p = np.asarray(ts.probabilities(state))
    assert p[4] == p.max() and abs(p.sum() - 1) < 1e-6
    # History rows keep the last two losses, newest last.
    np.testing.assert_allclose(state.losses[0], [1.0, 6.0])
    np.testing.assert_allclose(state.losses[4], [5.0, 100.0])
    with pytest.raises(ValueError, match="history >= 1"):
        ts.init(5, history=0)
