"""``Conv``: flax's ``nn.Conv`` (NHWC, HWIO kernel, bias, "SAME" padding) on
:func:`dpm_jax.onednn.conv2d`, so that XLA:CPU runs the U-Nets' convolutions on oneDNN.

Same parameter names, shapes and initialisation as ``nn.Conv`` (``kernel`` drawn by
``kernel_init`` from the same key, ``bias`` zeros), so checkpoints of either load in the other.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

from dpm_jax import onednn


class Conv(nn.Module):
    """y = conv(x, kernel) + bias: (N, H, W, C) -> (N, H', W', features), H' = ceil(H / s)."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: int = 1
    kernel_init: Callable = nn.linear.default_kernel_init
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features)
        )
        bias = self.param("bias", self.bias_init, (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
        return onednn.conv2d(x, kernel, (self.strides, self.strides), "SAME") + bias


class PixelDense(nn.Module):
    """flax's ``nn.Dense`` over the channels of (N, H, W, C) images, as a 1x1 convolution on
    :func:`dpm_jax.onednn.conv2d` (whose gradients need no transposes on XLA:CPU); other
    ranks take ``x @ kernel``. Same parameters as ``nn.Dense``: kernel (C, features), bias."""

    features: int
    kernel_init: Callable = nn.linear.default_kernel_init
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
        if x.ndim != 4:
            return x @ kernel + bias
        return onednn.conv2d(x, kernel[None, None], (1, 1), "VALID") + bias
