"""The 3x3 SAME convolution of the multi-scale layers, fast on CPU.

``conv3x3(x, kernel)`` equals ``lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
("NHWC", "HWIO", "NHWC"))`` in value and in gradient. On GPU and TPU it is that call. On
CPU, XLA's convolution runs well inside the cache but its backward pass at small channel
counts is several times slower than its forward pass (issue 16: a 20 -> 20 channel layer on
512 MNIST images, 55 ms forward, about 600 ms forward plus backward). There the
convolution has its own VJP and every pass runs over the batch in chunks that fit the
cache (a ``lax.map`` / ``lax.scan``):

* forward: XLA's convolution, chunk by chunk;
* input gradient: XLA's forward convolution of the output gradient with the kernel flipped
  in space and transposed in channels (dx = dy * rot180(W)^T), chunk by chunk;
* kernel gradient: for each of the 9 taps (i, j), dW[i, j] = sum over pixels of
  x_pad[n, h + i, w + j, :]^T dy[n, h, w, :], nine (pixels x C)^T (pixels x O) matmuls
  per chunk, summed over chunks in float32.

The batch is padded with zero images to a multiple of the chunk size; zero images add
nothing to the kernel gradient and their outputs are dropped.

``conv3x3_stack(x, kernels, biases, act)`` is L layers of act(conv3x3(h, W_l) + b_l), the
single-scale conv pathway (``conv3x3_bias_act``: one layer, the unit of a multi-scale
layer). On CPU each chunk goes through every layer while it is in cache: forward, it saves
each layer's pre-activation; backward, one loop takes each chunk back through the
activations' VJPs, the input gradients and the kernel and bias gradients (float32 sums),
recomputing the layers' inputs from the saved pre-activations.

Limits of the CPU path: it defines reverse mode only (``jax.grad``, ``jax.vjp``; forward
mode, ``jax.jvp`` / ``jax.linearize``, raises, so use :func:`reference_conv3x3` there); a
batch sharded over several CPU devices is gathered by the chunking (GPU and TPU take XLA's
convolution and are not affected). Measured by
``benchmarks/side_by_side.py`` and ``benchmarks/conv_kernels.py`` (docs/performance.md).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
from jax import lax

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
CHUNK_BYTES = 1 << 19
"""Target size of one chunk's input (or output) activations on CPU: 512 KiB, so input and
output fit a 1 MiB L2 cache (8 MNIST images of 20 channels, 1 CIFAR-10 image of 100)."""


def reference_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """XLA's 3x3 SAME convolution: x (N, H, W, C), kernel (3, 3, C, O) -> (N, H, W, O)."""
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMENSION_NUMBERS)


def chunk_size(x_shape: tuple[int, ...], out_channels: int, itemsize: int) -> int:
    """Images per chunk: about :data:`CHUNK_BYTES` of the larger of input and output."""
    _, height, width, channels = x_shape
    per_image = height * width * max(channels, out_channels) * itemsize
    return max(1, min(x_shape[0], CHUNK_BYTES // per_image))


def _chunks(a: jax.Array, chunk: int) -> jax.Array:
    """(N, ...) -> (ceil(N / chunk), chunk, ...), zero images appended."""
    pad = -a.shape[0] % chunk
    if pad:
        a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
    return a.reshape(a.shape[0] // chunk, chunk, *a.shape[1:])


def _unchunk(a: jax.Array, n: int) -> jax.Array:
    return a.reshape(-1, *a.shape[2:])[:n]


def _taps(xc: jax.Array, dc: jax.Array) -> jax.Array:
    """(9, C, O): the kernel gradient of one chunk, tap (i, j) at 3 i + j, float32.

    Nine (pixels x C)^T (pixels x O) matmuls (one matmul over 9C stacked channels was slower).
    """
    _, height, width, channels = xc.shape
    xp = jnp.pad(xc, ((0, 0), (1, 1), (1, 1), (0, 0)))
    d2 = dc.reshape(-1, dc.shape[-1])
    return jnp.stack(
        [
            jnp.dot(
                xp[:, i : i + height, j : j + width].reshape(-1, channels).T,
                d2,
                preferred_element_type=jnp.float32,
            )
            for i in range(3)
            for j in range(3)
        ]
    )


def _identity(h: jax.Array) -> jax.Array:
    return h


def cpu_conv3x3(x: jax.Array, kernel: jax.Array, chunk: int | None = None) -> jax.Array:
    """The chunked convolution with its own VJP (any backend; fast on CPU): the one-layer
    :func:`cpu_conv3x3_stack` with a zero bias and no activation."""
    zero_bias = jnp.zeros(kernel.shape[-1:], x.dtype)
    return cpu_conv3x3_stack(x, [kernel], [zero_bias], _identity, chunk)


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3 SAME convolution, NHWC x HWIO -> NHWC, stride 1.

    Args:
      x: (N, H, W, C) images.
      kernel: (3, 3, C, O), the dtype of ``x``.

    Returns (N, H, W, O): XLA's convolution on GPU and TPU, :func:`cpu_conv3x3` on CPU
    (chosen when the program is lowered, per platform).
    """
    chex.assert_rank(x, 4)
    chex.assert_shape(kernel, (3, 3, x.shape[-1], None))
    return lax.platform_dependent(x, kernel, cpu=cpu_conv3x3, default=reference_conv3x3)


def reference_conv3x3_bias_act(x, kernel, bias, activation):
    """act(conv3x3(x, kernel) + bias) with XLA's convolution; bias broadcasts to (H, W, O)."""
    return activation(reference_conv3x3(x, kernel) + bias)


def cpu_conv3x3_bias_act(x, kernel, bias, activation, chunk: int | None = None):
    """The chunked act(conv + bias) with its own VJP: :func:`cpu_conv3x3_stack` of one layer."""
    return cpu_conv3x3_stack(x, [kernel], [bias], activation, chunk)


def conv3x3_bias_act(x, kernel, bias, activation):
    """act(conv3x3(x, kernel) + bias), one pass per chunk on CPU (forward and backward).

    Args:
      x: (N, H, W, C); kernel: (3, 3, C, O); bias: broadcastable to (H, W, O) (a tied
        (O,) or an untied (H, W, O) bias), all of one dtype.
      activation: an elementwise function (hashable: a module-level function).
    """
    chex.assert_rank(x, 4)
    chex.assert_shape(kernel, (3, 3, x.shape[-1], None))
    return lax.platform_dependent(
        x,
        kernel,
        bias,
        cpu=lambda x, k, b: cpu_conv3x3_bias_act(x, k, b, activation),
        default=lambda x, k, b: reference_conv3x3_bias_act(x, k, b, activation),
    )


def reference_conv3x3_stack(x, kernels, biases, activation):
    """h_0 = x, h_l = act(conv3x3(h_(l-1), kernels[l]) + biases[l]); returns h_L."""
    for kernel, bias in zip(kernels, biases, strict=True):
        x = reference_conv3x3_bias_act(x, kernel, bias, activation)
    return x


def _stack_forward(x, kernels, biases, activation, chunk):
    def one(xc):
        pres = []
        for kernel, bias in zip(kernels, biases, strict=True):
            pres.append(reference_conv3x3(xc, kernel) + bias)
            xc = activation(pres[-1])
        return xc, pres

    out, pres = lax.map(one, _chunks(x, chunk))
    return _unchunk(out, x.shape[0]), pres


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _cpu_conv3x3_stack(x, kernels, biases, activation, chunk):
    return _stack_forward(x, kernels, biases, activation, chunk)[0]


def _cpu_conv3x3_stack_fwd(x, kernels, biases, activation, chunk):
    out, pres = _stack_forward(x, kernels, biases, activation, chunk)
    return out, (x, kernels, biases, pres)


def _cpu_conv3x3_stack_bwd(activation, chunk, residuals, dy):
    x, kernels, biases, pres = residuals
    flipped = [jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2) for k in kernels]

    def one(carry, chunk_args):
        dws, dbs = carry
        xc, pcs, g = chunk_args
        dws, dbs = list(dws), list(dbs)
        for layer in reversed(range(len(kernels))):
            dpre = jax.vjp(activation, pcs[layer])[1](g)[0]
            h_in = xc if layer == 0 else activation(pcs[layer - 1])
            dws[layer] = dws[layer] + _taps(h_in, dpre)
            dbs[layer] = dbs[layer] + jnp.sum(dpre.astype(jnp.float32), axis=0)
            g = reference_conv3x3(dpre, flipped[layer])
        return (dws, dbs), g

    zero = (
        [jnp.zeros((9, *k.shape[2:]), jnp.float32) for k in kernels],
        [jnp.zeros(p.shape[2:], jnp.float32) for p in pres],
    )
    (dws, dbs), dx = lax.scan(one, zero, (_chunks(x, chunk), pres, _chunks(dy, chunk)))
    dkernels = [dw.reshape(k.shape).astype(k.dtype) for dw, k in zip(dws, kernels, strict=True)]
    dbiases = [_reduce_to(db, b) for db, b in zip(dbs, biases, strict=True)]
    return _unchunk(dx, x.shape[0]), dkernels, dbiases


def _reduce_to(db: jax.Array, bias: jax.Array) -> jax.Array:
    """Sum a (H, W, O) float32 gradient down to the bias's broadcast shape and dtype."""
    db = jnp.sum(db, axis=tuple(range(db.ndim - bias.ndim)))
    for axis, size in enumerate(bias.shape):
        if size == 1:
            db = jnp.sum(db, axis=axis, keepdims=True)
    return db.astype(bias.dtype)


_cpu_conv3x3_stack.defvjp(_cpu_conv3x3_stack_fwd, _cpu_conv3x3_stack_bwd)


def cpu_conv3x3_stack(x, kernels, biases, activation, chunk: int | None = None):
    """The chunked stack of act(conv + bias) layers with its own VJP (fast on CPU)."""
    if chunk is None:
        widest = max(k.shape[-1] for k in kernels)
        chunk = chunk_size(x.shape, widest, x.dtype.itemsize)
    return _cpu_conv3x3_stack(x, list(kernels), list(biases), activation, chunk)


def conv3x3_stack(x, kernels, biases, activation):
    """h_L of h_l = act(conv3x3(h_(l-1), kernels[l]) + biases[l]), h_0 = x.

    On CPU every chunk of images goes through all layers while it is in cache, forward and
    backward (the layers' inputs are recomputed from the saved pre-activations).
    """
    chex.assert_rank(x, 4)
    return lax.platform_dependent(
        x,
        list(kernels),
        list(biases),
        cpu=lambda x, k, b: cpu_conv3x3_stack(x, k, b, activation),
        default=lambda x, k, b: reference_conv3x3_stack(x, k, b, activation),
    )
