"""Property-based tests (hypothesis): random bad inputs to the public functions and the
command line get a clear ValueError/TypeError (or the parser's exit) naming the argument;
never a crash inside JAX, never a silent non-finite result.

Examples are bounded (``settings`` below) so the module fits the CI budget; shapes come
from a small set so JAX compiles each program a few times only.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpm_jax import binomial, gaussian, parzen, schedules
from experiments import common
from experiments import config as cfg
from experiments import swiss_roll as sr

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # unit variance: not an error
BOUNDED = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI never flakes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
KEY = jax.random.PRNGKey(0)
T = 4
SCHEDULE = schedules.reference_code_schedule(T)
BINOMIAL = schedules.binomial_schedule(T)

DTYPES = [np.float16, jnp.bfloat16, np.float32, np.float64, np.int32, np.uint8, np.bool_]
SHAPES = [(), (3,), (0, 2), (2, 0), (3, 2), (2, 2, 2)]
VALUES = st.one_of(
    st.floats(-3, 3),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 1e14, 0.0, 0.5, 1.0]),
)


@st.composite
def arrays(draw, dtypes=DTYPES, shapes=SHAPES):
    """An array of a random dtype and shape whose values may be non-finite or huge."""
    dtype, shape = draw(st.sampled_from(dtypes)), draw(st.sampled_from(shapes))
    values = draw(st.lists(VALUES, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    with np.errstate(all="ignore"):
        return jnp.asarray(np.asarray(values, np.float64).reshape(shape)).astype(dtype)


def _clear_or_finite(call, *names: str):
    """``call()`` raises ValueError/TypeError whose message names one of ``names`` (the bad
    arguments), or returns only finite values. Anything else (an error from inside JAX, NaN
    or inf) fails the test."""
    try:
        out = call()
    except (ValueError, TypeError) as e:
        assert any(n in str(e) for n in names), f"the message names none of {names}: {e}"
        return None
    for leaf in jax.tree.leaves(out):
        assert np.all(np.isfinite(np.asarray(leaf, np.float64))), f"non-finite result: {out}"
    return out


def _gaussian_fn(x, t):
    return gaussian.Kernel(mean=0.9 * x, var=jnp.full_like(x, 0.1))


@BOUNDED
@given(x0=arrays())
def test_gaussian_bound_of_random_data(x0):
    k = _clear_or_finite(lambda: gaussian.bound_exact(SCHEDULE, _gaussian_fn, x0, KEY), "x0")
    if k is not None:
        assert k.shape == (x0.shape[0],) and k.dtype == jnp.float32


@BOUNDED
@given(x0=arrays(), data=st.data())
def test_gaussian_bound_estimate_and_discretised_bins(x0, data):
    bins = data.draw(st.sampled_from([None, 256]))
    _clear_or_finite(
        lambda: gaussian.bound_estimate(SCHEDULE, _gaussian_fn, x0, KEY, bins=bins), "x0"
    )


@BOUNDED
@given(
    var=st.sampled_from([0.1, 0.0, -1.0, np.nan, np.inf, 1e-30]),
    mean_scale=st.sampled_from([1.0, np.nan, np.inf, 1e20]),
)
def test_gaussian_bound_and_sampler_with_bad_kernels(var, mean_scale):
    """A reverse kernel with variances <= 0, NaN or inf means: an error, never a number."""

    def fn(x, t):
        return gaussian.Kernel(mean=mean_scale * x, var=jnp.full_like(x, var))

    x0 = jax.random.normal(KEY, (3, 2))
    _clear_or_finite(lambda: gaussian.bound_exact(SCHEDULE, fn, x0, KEY), "reverse_fn")
    _clear_or_finite(lambda: gaussian.sample(SCHEDULE, fn, KEY, (3, 2)), "reverse_fn")


@BOUNDED
@given(t=st.lists(st.integers(-3, 2 * T), min_size=2, max_size=2))
def test_q_sample_with_random_timesteps(t):
    x0 = jax.random.normal(KEY, (2, 3))
    out = _clear_or_finite(lambda: gaussian.q_sample(SCHEDULE, x0, jnp.asarray(t), x0), "t")
    if out is not None:
        assert all(0 <= v <= T for v in t)


@BOUNDED
@given(x0=arrays(), pi=st.sampled_from([0.2, 0.5, 0.0, 1.0, 1.5, -0.1, np.nan]))
def test_binomial_bound_of_random_data(x0, pi):
    def fn(x, t):
        return jnp.full_like(x, 0.3)

    _clear_or_finite(lambda: binomial.bound_exact(BINOMIAL, fn, x0, pi, KEY), "x0", "pi")


@BOUNDED
@given(rate=st.sampled_from([0.3, 1.0, 0.0, 1.7, -0.2, np.nan, np.inf]))
def test_binomial_bound_with_rates_out_of_range(rate):
    x0 = jnp.asarray(np.random.default_rng(0).integers(0, 2, (3, 5)), jnp.float32)
    _clear_or_finite(
        lambda: binomial.bound_exact(BINOMIAL, lambda x, t: jnp.full_like(x, rate), x0, 0.5, KEY),
        "rates",
    )


@BOUNDED
@given(
    samples=arrays(shapes=[(4, 3), (0, 3), (4,), (4, 2)]),
    data=arrays(shapes=[(5, 3), (5, 0)]),
    sigma=st.sampled_from([1e-5, 1e-2, 0.5, 1e6, 0.0, -1.0, np.nan, np.inf]),
)
def test_parzen_with_random_inputs(samples, data, sigma):
    def call():
        return parzen.parzen_log_likelihood(samples, data, sigma)

    try:
        ll = call()
    except (ValueError, TypeError) as e:
        assert any(name in str(e) for name in ("samples", "data", "sigma")), str(e)
        return
    # Finite, or -inf where a tiny sigma underflows the density: never +inf or NaN.
    ll = np.asarray(ll, np.float64)
    assert not np.any(np.isnan(ll)) and not np.any(ll == np.inf), ll


@BOUNDED
@given(
    num_steps=st.sampled_from([2, 3, 1, 0, -5]),
    beta=st.sampled_from([1e-3, 0.5, 0.0, 1.0, 1.5, np.nan]),
)
def test_schedules_with_random_settings(num_steps, beta):
    def call():
        return schedules.reference_code_schedule(num_steps, step1_beta=beta).betas

    try:
        betas = call()
    except (ValueError, TypeError) as e:
        assert "num_steps" in str(e) or "beta" in str(e), str(e)
        return
    betas = np.asarray(betas)
    assert betas.shape == (num_steps,) and np.all((betas > 0) & (betas < 1))


KEYS = list(cfg.flatten(sr.Config()))
VALUE_TEXT = st.sampled_from(
    ["1", "0", "-1", "nan", "inf", "-inf", "1e400", "true", "ten", "", "1,2", "reference_code"]
)


@BOUNDED
@given(
    key=st.one_of(st.sampled_from(KEYS), st.sampled_from(["no_such", "train.no_such", "train"])),
    value=VALUE_TEXT,
)
def test_command_line_with_random_keys_and_values(key, value, capsys):
    argv = ["--workdir", "unused", f"--config.{key}={value}"]
    try:
        config, _ = common.parse_command_line("swiss_roll", sr.Config, sr.PRESETS, argv)
    except SystemExit as e:
        assert e.code == 2
        err = capsys.readouterr().err
        assert key in err and "Traceback" not in err, err
        return
    got = cfg.flatten(config)[key]
    assert not isinstance(got, float) or np.isfinite(got), got
