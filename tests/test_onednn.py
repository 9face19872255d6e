"""dpm_jax.onednn.conv2d against XLA's convolution; models.conv2d.Conv against flax's nn.Conv."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import onednn
from dpm_jax.models.conv2d import Conv, PixelDense

needs_onednn = pytest.mark.skipif(not onednn.available(), reason=onednn.status())
DIMS = ("NHWC", "HWIO", "NHWC")


def reference(x, w, strides=(1, 1), padding="SAME"):
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DIMS)


def inputs(n, h, w, c, o, k, seed=0):
    kx, kw, kc = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, (n, h, w, c)) + 0.5
    kernel = jax.random.normal(kw, (k, k, c, o)) / np.sqrt(k * k * c)
    return x, kernel, kc


def close(a, b, tol=1e-5):
    scale = float(jnp.max(jnp.abs(b)))
    assert scale > 0
    np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=tol, rtol=0)


# The U-Nets' convolutions, small: 3 -> C input convolution, 3x3 at stride 1 and 2 (even and
# odd sizes), ADM's 1x1 skip, a non-square image, one image.
CASES = [
    (2, 8, 8, 3, 16, 3, 1),
    (2, 8, 8, 16, 16, 3, 2),
    (2, 7, 9, 8, 4, 3, 2),
    (2, 8, 8, 8, 12, 1, 1),
    (1, 4, 6, 32, 32, 3, 1),
]


def assert_matches_xla(x, kernel, key, strides, padding="SAME", act=lambda y: y):
    """conv2d's value, and the gradients in x and kernel of sum(act(conv) * probe), against
    XLA's convolution."""
    probe = jax.random.normal(key, reference(x, kernel, strides, padding).shape)

    def loss(conv):
        return lambda x, w: jnp.sum(act(conv(x, w, strides, padding)) * probe)

    ours = jax.jit(onednn.conv2d, static_argnums=(2, 3))(x, kernel, strides, padding)
    close(ours, reference(x, kernel, strides, padding))
    grads = jax.jit(jax.grad(loss(onednn.conv2d), (0, 1)))(x, kernel)
    for a, b in zip(grads, jax.grad(loss(reference), (0, 1))(x, kernel), strict=True):
        close(a, b)


@pytest.mark.parametrize("case", CASES)
def test_conv2d_equals_xla_in_value_and_gradients(case):
    x, kernel, key = inputs(*case[:6])
    assert_matches_xla(x, kernel, key, (case[6], case[6]), act=jnp.tanh)


def test_explicit_and_valid_padding_in_value_and_gradients():
    """Paddings and strides that leave input rows unread (VALID and explicit at stride 2):
    their data gradient must be zero there, not left over memory."""
    x, kernel, key = inputs(2, 9, 8, 4, 6, 3)
    for padding in ("VALID", ((2, 0), (1, 3))):
        for s in (1, 2):
            assert_matches_xla(x, kernel, key, (s, s), padding)


def test_forward_mode_vmap_and_second_order():
    """jvp and vmap-of-jvp (the ODE likelihood's exact divergence), a Hessian-vector product
    and per-example kernels (a mapped kernel) against XLA."""
    x, kernel, key = inputs(2, 6, 6, 4, 5, 3)
    tx, tw = jax.random.normal(key, x.shape), jax.random.normal(key, kernel.shape)
    ours = jax.jvp(onednn.conv2d, (x, kernel), (tx, tw))
    theirs = jax.jvp(reference, (x, kernel), (tx, tw))
    close(ours[0], theirs[0])
    close(ours[1], theirs[1])

    def grad_of_grad(conv):  # reverse over reverse: transposes data and weights passes
        inner = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w, (2, 2)))), (0, 1))
        return jax.grad(lambda x, w: sum(jnp.sum(g**2) for g in inner(x, w)), (0, 1))

    for a, b in zip(
        jax.jit(grad_of_grad(onednn.conv2d))(x, kernel),
        grad_of_grad(reference)(x, kernel),
        strict=True,
    ):
        close(a, b)
    _, lin = jax.linearize(lambda x: jnp.sin(onednn.conv2d(x, kernel)), x)
    _, lin_ref = jax.linearize(lambda x: jnp.sin(reference(x, kernel)), x)
    probes = jax.random.normal(key, (3, *x.shape))
    close(jax.jit(jax.vmap(lin))(probes), jax.vmap(lin_ref)(probes))

    def hvp(conv):
        f = lambda w: jnp.sum(jnp.sin(conv(x, w, (2, 2))))  # noqa: E731
        return jax.jvp(jax.grad(f), (kernel,), (tw,))[1]

    close(jax.jit(lambda: hvp(onednn.conv2d))(), hvp(reference))
    kernels = jnp.stack([kernel, 2 * kernel])
    per_example = jax.vmap(lambda x, w: onednn.conv2d(x[None], w)[0])(x, kernels)
    close(per_example, jax.vmap(lambda x, w: reference(x[None], w)[0])(x, kernels))
    grads = jax.vmap(jax.grad(lambda w, x: jnp.sum(onednn.conv2d(x[None], w) ** 2)))(kernels, x)
    close(grads, jax.vmap(jax.grad(lambda w, x: jnp.sum(reference(x[None], w) ** 2)))(kernels, x))


@needs_onednn
def test_cpu_lowering_calls_onednn_for_float32_only():
    x, kernel, _ = inputs(2, 8, 8, 4, 4, 3)
    step = jax.jit(jax.grad(lambda x, w: jnp.sum(onednn.conv2d(x, w) ** 2), (0, 1)))
    text = step.lower(x, kernel).as_text()
    for target in ("DpmConvForward", "DpmConvBackwardData", "DpmConvBackwardWeights"):
        assert target in text
    low = jax.jit(onednn.conv2d).lower(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
    assert "DpmConv" not in low.as_text()
    close(
        onednn.conv2d(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)).astype(jnp.float32),
        reference(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)).astype(jnp.float32),
        tol=1e-2,
    )


def test_modules_are_flax_conv_and_dense():
    """Conv and PixelDense: the parameter trees and initial values of nn.Conv and nn.Dense
    from the same key, and their outputs (PixelDense on images and on vectors)."""
    x, _, _ = inputs(2, 8, 8, 6, 1, 1)
    init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
    pairs = [
        (Conv(10, strides=s, kernel_init=init), nn.Conv(10, (3, 3), s, kernel_init=init), x)
        for s in (1, 2)
    ]
    pairs += [
        (PixelDense(7, kernel_init=init), nn.Dense(7, kernel_init=init), a) for a in (x, x[:, 0, 0])
    ]
    for ours, flax_conv, x in pairs:
        params = ours.init(jax.random.key(3), x)
        flax_params = flax_conv.init(jax.random.key(3), x)
        assert jax.tree.structure(params) == jax.tree.structure(flax_params)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(flax_params), strict=True):
            np.testing.assert_array_equal(a, b)
        params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias
        close(jax.jit(ours.apply)(params, x), flax_conv.apply(params, x))


def test_bad_shapes_say_what_is_wrong():
    x, kernel, _ = inputs(1, 4, 4, 3, 2, 3)
    with pytest.raises(ValueError, match="same C"):
        onednn.conv2d(x, jnp.ones((3, 3, 4, 2)))
    with pytest.raises(ValueError, match=r"x \(N, H, W, C\)"):
        onednn.conv2d(x[0], kernel)


def test_onednn_is_in_use_wherever_it_is_installed():
    """With oneDNN's headers and library installed (the test extra) and a C++ compiler, the
    handler builds and is used: a broken build fails here instead of quietly testing XLA
    against itself."""
    import os
    import shutil
    import sysconfig
    from pathlib import Path

    prefix = Path(sysconfig.get_paths()["data"])
    installed = (prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp").exists()
    if not installed or shutil.which("g++") is None or os.environ.get("DPM_JAX_ONEDNN") == "0":
        pytest.skip(f"oneDNN or g++ absent: {onednn.status()}")
    assert onednn.status() == "oneDNN"


@pytest.mark.parametrize("padding, stride", [("VALID", 1), ("SAME", 1), ("SAME", 2)])
def test_flops_count_every_pass_as_xla_counts_it(padding, stride):
    """Forward, data and weight gradient against XLA's cost analysis of the same three passes
    of lax.conv_general_dilated (taps on the padding not counted); VALID by hand too."""
    x, kernel, _ = inputs(2, 8, 8, 4, 6, 3)
    s = (stride, stride)

    def passes(conv):
        def run(x, w):
            y, vjp = jax.vjp(lambda x, w: conv(x, w, s, padding), x, w)
            return (y, *vjp(jnp.ones_like(y)))

        return run

    ours = onednn.flops(jax.make_jaxpr(passes(onednn.conv2d))(x, kernel))
    xla = jax.jit(passes(reference)).lower(x, kernel).compile().cost_analysis()["flops"]
    assert ours == xla
    if padding == "VALID":
        assert ours == 3 * 2 * (2 * 6 * 6 * 6) * (3 * 3 * 4)
