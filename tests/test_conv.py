"""The multi-scale layers' 3x3 convolution (dpm_jax.models.conv) against XLA's, in value
and in gradient, for every (channels, image size, dtype) the image presets use."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax.models import conv, multiscale
from experiments import cifar10, dead_leaves, mnist


def preset_convolutions() -> set[tuple[int, int, int, int]]:
    """(C_in, C_out, H, W) of every scale of every conv layer of every image preset."""
    shapes = set()
    for module in (mnist, cifar10, dead_leaves):
        for config in module.PRESETS.values():
            m = config.model
            height, width, colours = config.image_shape()
            for layer in range(m.conv_layers):
                c_in = colours if layer == 0 else m.conv_features
                for s in range(m.num_scales):
                    shapes.add((c_in, m.conv_features, height // 2**s, width // 2**s))
    return shapes


PRESET_SHAPES = sorted(preset_convolutions())


def test_the_preset_shapes_cover_the_released_code_networks():
    # the released code's MNIST and CIFAR-10 networks and the multi-scale dead leaves model
    assert {(1, 20, 28, 28), (20, 20, 28, 28), (3, 100, 32, 32), (100, 100, 32, 32)} <= set(
        PRESET_SHAPES
    )
    assert (32, 32, 4, 4) in PRESET_SHAPES  # dead leaves' third scale


def _grads(fn, weights, *args):
    """fn(*args) and the gradients of sum(fn(*args) * weights) in every argument."""

    def loss(*args):
        return jnp.sum(fn(*args).astype(jnp.float32) * weights)

    return (fn(*args), *jax.grad(loss, argnums=tuple(range(len(args))))(*args))


@pytest.mark.parametrize("dtype", ["float32", pytest.param("bfloat16", marks=pytest.mark.slow)])
def test_chunked_convolutions_equal_xla_for_every_preset_shape(dtype):
    """conv3x3 and act(conv3x3 + bias) (the reference style's layer: leaky ReLU, untied bias;
    every other shape softplus and a tied bias) on 3 images in chunks of 2: two chunks, one
    zero image of padding. Outputs and gradients in every argument equal XLA's (float32) or
    are as close to the float32 result as XLA's own bfloat16 ones; one program per dtype. The presets compute in float32;
    bfloat16 (``model.compute_dtype``) is the slow variant."""
    tol = {"float32": 2e-5, "bfloat16": 1e-2}[dtype]
    cases = []
    for i, (c_in, c_out, height, width) in enumerate(PRESET_SHAPES):
        keys = jax.random.split(jax.random.key(i), 4)
        x = jax.random.normal(keys[0], (3, height, width, c_in)).astype(dtype)
        kernel = (jax.random.normal(keys[1], (3, 3, c_in, c_out)) / (3 * c_in**0.5)).astype(dtype)
        bias_shape = (height, width, c_out) if i % 2 == 0 else (c_out,)
        bias = jax.random.normal(keys[2], bias_shape).astype(dtype)
        weights = jax.random.normal(keys[3], (3, height, width, c_out))
        cases.append((x, kernel, bias, weights))

    def f32(*arrays):
        return [a.astype(jnp.float32) for a in arrays]

    def both(cases):
        out = []
        for i, (x, kernel, bias, weights) in enumerate(cases):
            act = multiscale.reference_leaky_relu if i % 2 == 0 else jax.nn.softplus
            fused = lambda a, b, c, act=act: conv.cpu_conv3x3_bias_act(a, b, c, act, 2)  # noqa: E731
            plain = lambda a, b, c, act=act: conv.reference_conv3x3_bias_act(a, b, c, act)  # noqa: E731
            out.append(
                (
                    _grads(conv.reference_conv3x3, weights, *f32(x, kernel)),
                    _grads(conv.reference_conv3x3, weights, x, kernel),
                    _grads(lambda a, b: conv.cpu_conv3x3(a, b, 2), weights, x, kernel),
                    _grads(plain, weights, *f32(x, kernel, bias)),
                    _grads(plain, weights, x, kernel, bias),
                    _grads(fused, weights, x, kernel, bias),
                )
            )
        return out

    def error(got, want):
        got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
        return np.max(np.abs(got - want)) / np.max(np.abs(want))

    names = ("output", "input grad", "kernel grad", "bias grad")
    for shape, results in zip(PRESET_SHAPES, jax.jit(both)(cases), strict=True):
        exact, xla, got, exact_fused, xla_fused, got_fused = results
        triples = list(zip(names, got, xla, exact, strict=False))
        triples += [
            ("fused " + n, g, x, e)
            for n, g, x, e in zip(names, got_fused, xla_fused, exact_fused, strict=True)
        ]
        for name, g, x, e in triples:
            assert g.dtype == x.dtype == dtype and g.shape == x.shape, (shape, name)
            # float32: equal to XLA's; bfloat16: as close to the float32 result as XLA's is
            err = error(g, e) if dtype == "bfloat16" else error(g, x)
            bound = max(tol, 2 * error(x, e)) if dtype == "bfloat16" else tol
            assert err < bound, (shape, dtype, name, err, bound)


def test_conv3x3_is_the_chunked_convolution_on_cpu_and_checks_shapes():
    x = jax.random.normal(jax.random.key(0), (5, 8, 8, 4))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 6))
    np.testing.assert_allclose(
        conv.conv3x3(x, kernel), conv.reference_conv3x3(x, kernel), rtol=1e-5, atol=1e-5
    )
    if jax.default_backend() == "cpu":
        text = jax.jit(jax.grad(lambda k: conv.conv3x3(x, k).sum())).lower(kernel).as_text()
        assert "while" in text  # the chunked kernel gradient, not XLA's
    with pytest.raises(AssertionError):
        conv.conv3x3(x, jnp.zeros((3, 3, 5, 6)))  # channels do not match
    with pytest.raises(AssertionError):
        conv.conv3x3(x[0], kernel)  # not NHWC


def test_chunk_size_fits_about_half_a_mebibyte_and_at_least_one_image():
    assert conv.chunk_size((512, 28, 28, 1), 20, 4) == 8  # 28*28*20*4 bytes per image
    assert conv.chunk_size((200, 32, 32, 3), 100, 4) == 1
    assert conv.chunk_size((4, 512, 512, 64), 64, 4) == 1
    assert conv.chunk_size((3, 4, 4, 1), 8, 4) == 3


def _value_and_grads(fn, *args):
    """sum(fn(x, kernels, biases) * weights) and its gradients in x, kernels, biases."""

    def loss(x, kernels, biases, weights):
        return jnp.sum(fn(x, kernels, biases) * weights)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(*args)


def test_chunked_stack_equals_the_layer_by_layer_xla_network():
    """conv3x3_stack (the single-scale conv pathway) on the MNIST network's layers (leaky ReLU,
    untied biases) and two CIFAR-10 layers (softplus, tied biases): output and gradients."""
    configs = [
        ((28, 28), [1, 20, 20, 20, 20], multiscale.reference_leaky_relu, True),
        ((32, 32), [3, 100, 100], jax.nn.softplus, False),
    ]
    for (height, width), channels, act, untied in configs:
        keys = iter(jax.random.split(jax.random.key(height), 2 * len(channels) + 2))
        x = jax.random.normal(next(keys), (3, height, width, channels[0]))
        kernels, biases = [], []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            kernels.append(jax.random.normal(next(keys), (3, 3, c_in, c_out)) / (3 * c_in**0.5))
            shape = (height, width, c_out) if untied else (c_out,)
            biases.append(jax.random.normal(next(keys), shape) / 10)
        weights = jax.random.normal(next(keys), (3, height, width, channels[-1]))

        args = (x, kernels, biases, weights)
        got = _value_and_grads(
            lambda x, k, b, act=act: conv.cpu_conv3x3_stack(x, k, b, act, 2), *args
        )
        want = _value_and_grads(
            lambda x, k, b, act=act: conv.reference_conv3x3_stack(x, k, b, act), *args
        )
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert g.shape == w.shape
            err = float(jnp.max(jnp.abs(g - w)) / jnp.max(jnp.abs(w)))
            assert err < 2e-5, (channels, err)
