"""Parameterisations (eps, x0, posterior mean; fixed and learned-range variances) against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_gaussian import expected_bound_bits

from dpm_jax import gaussian as g
from dpm_jax import likelihood, schedules
from dpm_jax import parameterisation as pz

T = 40


def _schedules():
    return {
        "linear": schedules.linear_schedule(T, 1e-3, 0.2),
        "cosine": schedules.cosine_schedule(T),
        "reference_code": schedules.reference_code_schedule(T),
    }


def _t(n, t):
    return jnp.full((n,), t, jnp.int32)


def _var_output(param, x_t, v):
    """Model output for a variance-predicting parameterisation: (mean part, v everywhere)."""
    return lambda mean_out: (
        (mean_out, jnp.full_like(x_t, v)) if param.outputs_variance else mean_out
    )


@pytest.mark.parametrize("name", ["linear", "cosine", "reference_code"])
def test_conversions_between_eps_x0_and_posterior_mean_are_consistent(name):
    sch = _schedules()[name]
    key = jax.random.PRNGKey(0)
    x0 = jax.random.normal(key, (64, 3))
    eps = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
    t = jax.random.randint(jax.random.fold_in(key, 2), (64,), 1, T + 1)
    x_t = g.q_sample(sch, x0, t, eps)
    np.testing.assert_allclose(pz.x0_from_eps(sch, x_t, t, eps), x0, atol=2e-3)
    np.testing.assert_allclose(pz.eps_from_x0(sch, x_t, t, x0), eps, atol=2e-3, rtol=1e-3)
    post = g.q_posterior(sch, x0, x_t, t)
    np.testing.assert_allclose(pz.posterior_mean_from_x0(sch, x_t, t, x0), post.mean, atol=1e-5)
    # DDPM Eq. 11 is the posterior mean at the x0 implied by eps.
    np.testing.assert_allclose(pz.eps_mean(sch, x_t, t, eps), post.mean, atol=2e-4)
    ok = t > 1  # a_1 = 1, c_1 = 0: the inversion holds everywhere; checked on t > 1 to be strict
    np.testing.assert_allclose(
        pz.x0_from_posterior_mean(sch, x_t, t, post.mean)[ok], x0[ok], atol=2e-3
    )


def test_fixed_and_learned_variances_at_their_ends():
    sch = _schedules()["linear"]
    x = jnp.zeros((T, 2))
    t = jnp.arange(1, T + 1)
    beta = np.asarray(sch.betas)
    tilde = np.asarray(pz.posterior_variance(sch, t))
    assert tilde[0] == 0.0  # beta~_1 = 0, hence the t = 1 conventions
    large = pz.variance(pz.Parameterisation("epsilon", "fixed_large"), sch, x, t, None)[:, 0]
    small = pz.variance(pz.Parameterisation("epsilon", "fixed_small"), sch, x, t, None)[:, 0]
    np.testing.assert_array_equal(large[1:], beta[1:])
    np.testing.assert_array_equal(small[1:], tilde[1:])
    assert large[0] == small[0] == tilde[1]  # DDPM's fixedlarge and iDDPM's clipped log at t = 1
    learned = pz.Parameterisation("epsilon", "learned_range")
    top = pz.variance(learned, sch, x, t, jnp.ones_like(x))[:, 0]
    bottom = pz.variance(learned, sch, x, t, -jnp.ones_like(x))[:, 0]
    mid = pz.variance(learned, sch, x, t, jnp.zeros_like(x))[:, 0]
    np.testing.assert_allclose(top, beta, rtol=1e-5)
    np.testing.assert_allclose(bottom[1:], tilde[1:], rtol=1e-5)
    np.testing.assert_allclose(mid[1:], np.sqrt(beta[1:] * tilde[1:]), rtol=1e-5)


PARAMS = [
    pz.Parameterisation(mean, var)
    for mean in ("epsilon", "x0", "posterior_mean")
    for var in ("fixed_small", "learned_range")
]


@pytest.mark.parametrize("param", PARAMS, ids=lambda p: f"{p.mean}-{p.var}")
def test_oracle_kernel_through_each_parameterisation_has_zero_kl_terms(param):
    """A model that knows each example's x0 and predicts it through the parameterisation gives
    the posterior q(x^(t-1) | x^(t), x0) itself: every KL term of Eq. 14 vanishes."""
    sch = _schedules()["cosine"]
    x0 = jax.random.normal(jax.random.PRNGKey(3), (32, 4))

    def model_fn(x_t, t):
        target = {
            "epsilon": pz.eps_from_x0(sch, x_t, t, x0),
            "x0": x0,
            "posterior_mean": pz.posterior_mean_from_x0(sch, x_t, t, x0),
        }[param.mean]
        return _var_output(param, x_t, -1.0)(target)  # v = -1: beta~_t, the posterior's variance

    reverse_fn = pz.make_reverse_fn(param, sch, model_fn)
    kl = g.kl_per_step(sch, reverse_fn, x0, jax.random.PRNGKey(4))
    assert kl.shape == (T - 1,)
    np.testing.assert_allclose(kl, 0.0, atol=5e-4)  # nats per example, 4 dimensions


@pytest.mark.parametrize(
    "param",
    [
        pz.Parameterisation(m, v)
        for m in ("epsilon", "x0", "posterior_mean")
        for v in ("fixed_large", "learned_range")
    ],
    ids=lambda p: f"{p.mean}-{p.var}",
)
def test_true_reverse_kernel_through_each_parameterisation_gives_the_exact_log_likelihood(param):
    """Unit-variance Gaussian data: the Bayes-optimal eps / x0 / mean predictions with the true
    variance (beta_t: fixed_large, or learned_range at v = 1) give K(x0) = log2 N(x0; 0, I)."""
    sch = _schedules()["reference_code"]

    def model_fn(x_t, t):
        ab = g.alpha_bar(sch, t)[:, None]
        x0_hat = jnp.sqrt(ab) * x_t  # E[x0 | x_t] for N(0, I) data
        target = {
            "epsilon": jnp.sqrt(1.0 - ab) * x_t,  # E[eps | x_t]
            "x0": x0_hat,
            "posterior_mean": pz.posterior_mean_from_x0(sch, x_t, t, x0_hat),
        }[param.mean]
        return _var_output(param, x_t, 1.0)(target)

    reverse_fn = pz.make_reverse_fn(param, sch, model_fn)
    x0 = jnp.array([[0.0, 0.0], [1.0, -2.0], [3.0, 3.0], [-0.3, 0.7]])
    k = expected_bound_bits(sch, reverse_fn, x0)
    np.testing.assert_allclose(k, likelihood.gaussian_null_log_likelihood(x0), atol=5e-4)


def test_readouts_are_the_2015_formulas():
    sch = _schedules()["reference_code"]
    key = jax.random.PRNGKey(5)
    x_t, z_mu, z_sigma = jax.random.normal(key, (3, 8, 2))
    t = jax.random.randint(jax.random.fold_in(key, 1), (8,), 1, T + 1)
    b = np.asarray(sch.betas)[np.asarray(t) - 1][:, None]
    logit = np.log(b) - np.log1p(-b)
    paper = pz.kernel(pz.from_readout("paper"), sch, x_t, t, (z_mu, z_sigma))
    var = 1 / (1 + np.exp(-(np.asarray(z_sigma) + logit)))
    np.testing.assert_allclose(paper.var, var, rtol=1e-5)
    np.testing.assert_allclose(paper.mean, (x_t - z_mu) * (1 - var) + z_mu, rtol=1e-5, atol=1e-6)
    code = pz.kernel(pz.from_readout("reference_code"), sch, x_t, t, (z_mu, z_sigma))
    var = 1 / (1 + np.exp(-(np.asarray(z_sigma) / np.sqrt(T) + logit)))
    np.testing.assert_allclose(code.var, var, rtol=1e-5)
    np.testing.assert_allclose(code.mean, np.sqrt(1 - b) * x_t + np.sqrt(b) * z_mu, rtol=1e-5)


def test_2015_readouts_reach_a_learned_schedule_through_one_beta_lookup():
    """The Swiss roll learns beta_t through the readout. The kernel looks beta_t up once for
    its variance and mean, so the schedule's gradient is bitwise that of the 2015 formulas
    written with one lookup (how the experiments computed it before using this module)."""
    key = jax.random.PRNGKey(7)
    x_t, z_mu, z_sigma = jax.random.normal(key, (3, 8, 2))
    t = jax.random.randint(jax.random.fold_in(key, 1), (8,), 2, T + 1)
    logits = jax.random.normal(jax.random.fold_in(key, 2), (T - 1,)) * 0.1  # beta_2..T

    def loss(logits, kernel_fn):
        sch = schedules.learned_schedule(logits, 1e-4, "geometric")
        k = kernel_fn(sch)
        return jnp.sum(jnp.square(k.mean)) + jnp.sum(jnp.log(k.var))

    for name in ("paper", "reference_code"):

        def ours(sch, name=name):
            return pz.kernel(pz.from_readout(name), sch, x_t, t, (z_mu, z_sigma))

        def one_lookup(sch, name=name):
            b = schedules.beta(sch, t)[:, None]
            z = z_sigma if name == "paper" else z_sigma / np.sqrt(T)
            var = jax.nn.sigmoid(z + jnp.log(b) - jnp.log1p(-b))
            if name == "paper":
                return g.Kernel(mean=(x_t - z_mu) * (1.0 - var) + z_mu, var=var)
            return g.Kernel(mean=jnp.sqrt(1.0 - b) * x_t + jnp.sqrt(b) * z_mu, var=var)

        grad = jax.jit(jax.grad(loss), static_argnums=1)
        np.testing.assert_array_equal(grad(logits, ours), grad(logits, one_lookup))


def test_predictions_of_x0_and_eps_for_every_mean_type():
    """predict_x0 / predict_eps recover the x0 and eps a kernel was built from."""
    sch = _schedules()["linear"]
    key = jax.random.PRNGKey(6)
    x0 = jax.random.normal(key, (16, 3))
    eps = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
    t = jax.random.randint(jax.random.fold_in(key, 2), (16,), 2, T + 1)
    x_t = g.q_sample(sch, x0, t, eps)
    outputs = {
        "epsilon": eps,
        "x0": x0,
        "posterior_mean": pz.posterior_mean_from_x0(sch, x_t, t, x0),
    }
    for mean_type, out in outputs.items():
        param = pz.Parameterisation(mean_type, "fixed_large")
        np.testing.assert_allclose(pz.predict_x0(param, sch, x_t, t, out), x0, atol=3e-3)
        np.testing.assert_allclose(pz.predict_eps(param, sch, x_t, t, out), eps, atol=3e-3)


def _kernel_of(var: str, output):
    """The kernel of an eps model with variance type ``var`` for x of shape (2, 3) at t = 3."""
    sch = schedules.linear_schedule(T)
    return lambda: pz.kernel(
        pz.Parameterisation("epsilon", var), sch, jnp.zeros((2, 3)), _t(2, 3), output
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: pz.Parameterisation("eps", "fixed_large"), "mean must be one of"),
        (lambda: pz.Parameterisation("epsilon", "large"), "var must be one of"),
        (lambda: pz.from_readout("tanh"), "unknown readout"),
        (_kernel_of("learned_range", jnp.zeros((2, 3))), "needs the model to return"),
        (_kernel_of("fixed_small", (jnp.zeros((2, 3)), jnp.zeros((2, 3)))), "is fixed"),
        (_kernel_of("fixed_small", jnp.zeros((2, 6))), "shaped like its input"),
    ],
)
def test_bad_parameterisations_and_outputs_get_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_clipping_the_predicted_x0_is_ddpms_sampler_kernel():
    """clip_x0: the posterior mean at the clipped x0 prediction, the variance unchanged; a
    range the prediction never leaves gives the plain kernel."""
    sch = _schedules()["cosine"]
    param = pz.Parameterisation("epsilon", "fixed_large")
    x_t = jax.random.normal(jax.random.PRNGKey(0), (6, 3)) * 3.0
    t = jnp.array([1, 2, 5, 10, 15, 20])

    def eps_fn(x, tt):
        return jnp.tanh(x)

    plain = pz.make_reverse_fn(param, sch, eps_fn)(x_t, t)
    wide = pz.make_reverse_fn(param, sch, eps_fn, clip_x0=(-1e9, 1e9))(x_t, t)
    np.testing.assert_allclose(wide.mean, plain.mean, rtol=1e-5, atol=1e-5)
    clipped = pz.make_reverse_fn(param, sch, eps_fn, clip_x0=(-1.0, 1.0))(x_t, t)
    x0 = np.clip(pz.x0_from_eps(sch, x_t, t, eps_fn(x_t, t)), -1.0, 1.0)
    np.testing.assert_allclose(
        clipped.mean, pz.posterior_mean_from_x0(sch, x_t, t, x0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(clipped.var, plain.var)
    assert not np.allclose(clipped.mean, plain.mean)  # the prediction did leave [-1, 1]
    with pytest.raises(ValueError, match="low < high"):
        pz.make_reverse_fn(param, sch, eps_fn, clip_x0=(1.0, -1.0))
