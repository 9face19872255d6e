"""Multi-scale convolutional reverse model and bump-basis readout (App. D.2.1, Eqs. 62-63)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax.models import (
    REFERENCE_CIFAR10_SIZES,
    REFERENCE_MNIST_SIZES,
    MultiScaleConv,
    MultiScaleConvNet,
    bump_basis,
    paper_network,
    reference_code_network,
    reference_leaky_relu,
    temporal_readout,
)

SMALL = {
    "num_temporal_basis": 3,
    "conv_features": 4,
    "conv_layers": 2,
    "dense_hidden": 6,
    "dense_output": 2,
    "upper_hidden": 5,
    "upper_layers": 2,
}


def _num_params(model, shape, num_steps=1000):
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t)["params"]
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


@pytest.mark.parametrize("preset", [paper_network, reference_code_network])
@pytest.mark.parametrize("dense_hidden", [0, 6])
@pytest.mark.parametrize("num_scales", [1, 3])
def test_output_shapes(preset, dense_hidden, num_scales):
    model = preset(7, **{**SMALL, "dense_hidden": dense_hidden, "num_scales": num_scales})
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 12, 3))
    t = jnp.array([1, 7], jnp.int32)
    params = model.init(jax.random.PRNGKey(1), x, t)["params"]
    assert ("dense_0" in params) == (dense_hidden > 0)
    z_mu, z_sigma = model.apply({"params": params}, x, t)
    assert z_mu.shape == x.shape and z_sigma.shape == x.shape
    assert np.all(np.isfinite(z_mu)) and np.all(np.isfinite(z_sigma))


def test_reference_parameter_counts():
    # The released code (Sohl-Dickstein/Diffusion-Probabilistic-Models @ de92b57); untied conv biases are (F, W+2, W+2) as in Blocks.
    mnist = reference_code_network(1000, **REFERENCE_MNIST_SIZES)
    assert _num_params(mnist, (28, 28, 1)) == 1_762_928
    cifar = reference_code_network(1000, **REFERENCE_CIFAR10_SIZES)
    assert _num_params(cifar, (32, 32, 3)) == 13_385_280
    # Breakdown for MNIST: conv W 10,980; conv b 72,000; dense lower 1,679,068; upper 880.
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    params = jax.eval_shape(mnist.init, jax.random.PRNGKey(0), x, jnp.ones((1,), jnp.int32))
    params = params["params"]
    size = lambda tree: sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))  # noqa: E731
    convs = [params[f"conv_{i}"] for i in range(4)]
    assert sum(size(c["kernel_0"]) for c in convs) == 10_980
    assert sum(size(c["bias_0"]) for c in convs) == 72_000
    assert sum(size(params[f"dense_{i}"]) for i in range(4)) == 1_679_068
    assert size(params["upper_0"]) + size(params["upper_1"]) == 880


def _reference_multiscale(x, params, num_scales, activation, untied):
    """Loops over scales: mean pool via reshape, a manual 3x3 zero-padded correlation,
    nearest upsample via np.repeat."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    out = 0.0
    for s in range(num_scales):
        p = 2**s
        down = x.reshape(n, h // p, p, w // p, p, c).mean(axis=(2, 4))
        kernel = np.asarray(params[f"kernel_{s}"], np.float64)
        padded = np.pad(down, ((0, 0), (1, 1), (1, 1), (0, 0)))
        y = np.zeros(down.shape[:3] + (kernel.shape[-1],))
        for di in range(3):
            for dj in range(3):
                window = padded[:, di : di + h // p, dj : dj + w // p, :]
                y += np.einsum("nhwc,cf->nhwf", window, kernel[di, dj])
        bias = np.asarray(params[f"bias_{s}"], np.float64)
        y = y + (bias[1:-1, 1:-1] if untied else bias)
        y = np.asarray(activation(y))
        out = out + np.repeat(np.repeat(y, p, axis=1), p, axis=2)
    return out / num_scales


@pytest.mark.parametrize("untied", [True, False])
def test_multiscale_conv_matches_explicit_loop(untied):
    layer = MultiScaleConv(5, num_scales=3, untied_bias=untied)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 4, 3))
    params = layer.init(jax.random.PRNGKey(1), x)["params"]
    std = math.sqrt(1 / 5) / 9
    assert params["kernel_0"].shape == (3, 3, 3, 5)
    assert params["bias_2"].shape == ((8 // 4 + 2, 4 // 4 + 2, 5) if untied else (5,))
    # Nonzero biases so that the per-location layout is exercised.
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    params = {
        k: (jax.random.normal(keys[int(k[-1])], v.shape) if k.startswith("bias") else v)
        for k, v in params.items()
    }
    got = layer.apply({"params": params}, x)
    want = _reference_multiscale(x, params, 3, lambda y: np.where(y > 0, y, 0.05 * y), untied)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    assert 0.5 * std < float(jnp.std(params["kernel_0"])) < 1.5 * std


def test_multiscale_conv_paper_order():
    # Paper: one softplus after the sum over scales.
    layer = MultiScaleConv(4, num_scales=2, activation=jax.nn.softplus, activation_per_scale=False)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 4, 2))
    params = layer.init(jax.random.PRNGKey(1), x)["params"]
    linear = _reference_multiscale(x, params, 2, lambda y: y, untied=True) * 2
    got = layer.apply({"params": params}, x)
    np.testing.assert_allclose(np.asarray(got), np.logaddexp(0, linear), rtol=1e-5, atol=1e-5)


def test_bump_basis():
    basis = np.asarray(bump_basis(1000, 10))
    assert basis.shape == (1000, 10)
    np.testing.assert_allclose(basis.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(basis[0, :3], [0.8805, 0.1192, 2.95e-4], rtol=2e-3)
    np.testing.assert_allclose(basis[500, 4:6], [0.487, 0.495], atol=1e-3)  # code's t=500
    np.testing.assert_allclose(basis[::-1, ::-1], basis, rtol=1e-5, atol=1e-12)  # symmetric
    small = np.asarray(bump_basis(7, 2))
    assert small.shape == (7, 2)
    np.testing.assert_allclose(small.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="num_basis must be >= 2"):
        bump_basis(100, 1)


def test_temporal_readout_is_explicit_sum():
    basis = bump_basis(9, 4)
    y = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 5, 4))
    t = jnp.array([1, 5, 9])
    got = np.asarray(temporal_readout(y, basis, t))
    b, yy = np.asarray(basis), np.asarray(y)
    want = np.zeros((3, 2, 5))
    for n in range(3):
        for j in range(4):
            want[n] += yy[n, ..., j] * b[int(t[n]) - 1, j]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_indivisible_size_raises():
    layer = MultiScaleConv(4, num_scales=3)
    with pytest.raises(ValueError, match=r"width 6 is not divisible by 2\*\*\(num_scales-1\) = 4"):
        layer.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 6, 1)))
    with pytest.raises(ValueError, match="num_scales <= 3 for a 28x28 image"):
        MultiScaleConv(4, num_scales=4).init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))


def test_time_enters_only_through_readout():
    model = MultiScaleConvNet(num_steps=11, **SMALL)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 2))
    params = {"params": model.init(jax.random.PRNGKey(1), x, jnp.ones((2,), jnp.int32))["params"]}
    y = np.asarray(model.apply(params, x, method="coefficients"))
    assert y.shape == (2, 4, 4, 2, 2, 3)
    basis = np.asarray(bump_basis(11, 3))
    for t in ([1, 11], [6, 2]):
        z_mu, z_sigma = model.apply(params, x, jnp.array(t, jnp.int32))
        g = basis[np.array(t) - 1][:, None, None, None, :]
        np.testing.assert_allclose(
            np.asarray(z_mu), (y[..., 0, :] * g).sum(-1), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            np.asarray(z_sigma), (y[..., 1, :] * g).sum(-1), rtol=1e-5, atol=1e-6
        )


def test_reference_leaky_relu():
    np.testing.assert_allclose(
        np.asarray(reference_leaky_relu(jnp.array([-2.0, 0.0, 3.0]))), [-0.1, 0.0, 3.0]
    )
