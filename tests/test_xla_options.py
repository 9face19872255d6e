"""Per-compilation XLA options (dpm_jax.xla_options) and the train step compiled with them."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpm_jax import train_state, xla_options

OPTIONS = xla_options.eigen_cpu_kernels()
needs_options = pytest.mark.skipif(
    OPTIONS is None, reason="this jaxlib/backend has no YNNPACK convolution option"
)


def _conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def test_not_applied_off_cpu_or_when_xla_flags_choose(monkeypatch):
    assert xla_options.eigen_cpu_kernels("gpu") is None
    assert xla_options.eigen_cpu_kernels("tpu") is None
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-reduce")
    assert xla_options.eigen_cpu_kernels("cpu") is None


def test_unknown_option_values_are_refused_not_raised():
    bogus = (("xla_cpu_experimental_ynn_fusion_type", "LIBRARY_FUSION_TYPE_NO_SUCH_THING"),)
    assert xla_options._accepted(bogus) is False
    assert xla_options._accepted((("xla_cpu_no_such_option", "1"),)) is False


@needs_options
def test_options_move_convolutions_off_ynnpack_with_the_same_results():
    """Eigen's and YNNPACK's kernels (two libraries) agree on a convolution and its
    gradients, and the options really change which one the program calls."""
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (4, 8, 8, 16))
    w = jax.random.normal(kw, (3, 3, 16, 24)) / 12.0
    g = jax.random.normal(kg, (4, 8, 8, 24))

    def fwd_and_grads(x, w):
        y, vjp = jax.vjp(_conv, x, w)
        return (y, *vjp(g))

    default = jax.jit(fwd_and_grads).lower(x, w).compile()
    eigen = jax.jit(fwd_and_grads, compiler_options=OPTIONS).lower(x, w).compile()
    ynn_convs = [
        line
        for line in eigen.as_text().splitlines()
        if '"__ynn_fusion"' in line and "conv_general_dilated" in line
    ]
    assert ynn_convs == []
    assert any(" convolution(" in line for line in eigen.as_text().splitlines())
    x64, w64, g64 = (np.asarray(a, np.float64) for a in (x, w, g))
    y_ref = _numpy_conv(x64, w64)
    for a, b in zip(default(x, w), eigen(x, w), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(eigen(x, w)[0]), y_ref, rtol=1e-4, atol=1e-4)
    # d/dw of <g, conv(x, w)>: tap (i, j) is sum over pixels of x shifted by (i, j) times g
    xp = np.pad(x64, ((0, 0), (1, 1), (1, 1), (0, 0)))
    dw = np.stack(
        [
            np.stack(
                [np.einsum("nhwi,nhwo->io", xp[:, i : i + 8, j : j + 8], g64) for j in range(3)]
            )
            for i in range(3)
        ]
    )
    np.testing.assert_allclose(np.asarray(eigen(x, w)[2]), dw, rtol=1e-4, atol=1e-3)


def _numpy_conv(x, w):
    """3x3 'SAME' NHWC convolution in float64 by summing the nine shifted taps."""
    n, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(
        np.einsum("nhwi,io->nhwo", xp[:, i : i + h, j : j + wd], w[i, j])
        for i in range(3)
        for j in range(3)
    )


@needs_options
def test_train_step_with_options_takes_the_same_step():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.swish(nn.Conv(8, (3, 3))(x))
            return nn.Conv(2, (3, 3))(x)

    net = Net()
    batch = jax.random.normal(jax.random.key(1), (4, 8, 8, 2))
    params = net.init(jax.random.key(0), batch)

    def loss_fn(params, batch, key):
        noise = jax.random.normal(key, batch.shape)
        return jnp.mean((net.apply(params, batch + noise) - batch) ** 2), {}

    tx = optax.adam(1e-2)
    results = []
    for options in (None, OPTIONS):
        step = train_state.make_train_step(loss_fn, tx, ema_decay=0.9, compiler_options=options)
        state = train_state.create_train_state(
            jax.tree.map(jnp.copy, params), tx, jax.random.key_data(jax.random.key(2))
        )
        for _ in range(3):
            state, metrics = step(state, batch)
        results.append((state, metrics["loss"]))
    (a, loss_a), (b, loss_b) = results
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-5)
    for u, v in zip(jax.tree.leaves(a.ema_params), jax.tree.leaves(b.ema_params), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-5)
