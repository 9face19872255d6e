"""The multi-scale layers' 3x3 convolution (dpm_jax.models.conv) against XLA's, in value
and in gradient, for every (channels, image size, dtype) the image presets use."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax.models import conv
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


def _grads(fn, x, kernel, weights):
    def loss(x, kernel):
        return jnp.sum(fn(x, kernel).astype(jnp.float32) * weights)

    value = fn(x, kernel)
    return (value, *jax.grad(loss, argnums=(0, 1))(x, kernel))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_chunked_convolution_equals_xla_for_every_preset_shape(dtype):
    """3 images in chunks of 2 (two chunks, one zero image of padding); one program per dtype."""
    tol = {"float32": 2e-5, "bfloat16": 2e-2}[dtype]
    cases = []
    for i, (c_in, c_out, height, width) in enumerate(PRESET_SHAPES):
        keys = jax.random.split(jax.random.key(i), 3)
        x = jax.random.normal(keys[0], (3, height, width, c_in)).astype(dtype)
        kernel = (jax.random.normal(keys[1], (3, 3, c_in, c_out)) / (3 * c_in**0.5)).astype(dtype)
        weights = jax.random.normal(keys[2], (3, height, width, c_out))
        cases.append((x, kernel, weights))

    def both(cases):
        chunked = lambda a, b: conv.cpu_conv3x3(a, b, 2)  # noqa: E731
        return [(_grads(conv.reference_conv3x3, *case), _grads(chunked, *case)) for case in cases]

    for shape, (want, got) in zip(PRESET_SHAPES, jax.jit(both)(cases), strict=True):
        for name, g, w in zip(("output", "input grad", "kernel grad"), got, want, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
            err = np.max(np.abs(g - w)) / np.max(np.abs(w))
            assert err < tol, (shape, dtype, name, err)


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


def test_chunk_size_fits_about_a_mebibyte_and_at_least_one_image():
    assert conv.chunk_size((512, 28, 28, 1), 20, 4) == 16  # 28*28*20*4 bytes per image
    assert conv.chunk_size((200, 32, 32, 3), 100, 4) == 2
    assert conv.chunk_size((4, 512, 512, 64), 64, 4) == 1
    assert conv.chunk_size((3, 4, 4, 1), 8, 4) == 3
