"""The image reverse model (App. D.2.1, Fig. D.1): multi-scale convolutions plus a dense pathway.

x^(t) goes through a stack of multi-scale convolution layers and, optionally, a parallel
dense (fully connected) pathway on the flattened image. The two are concatenated per pixel
and mapped by a per-pixel MLP (1x1 convolutions) to 2J coefficients per colour channel,
which the fixed bump basis turns into (z_mu, z_sigma) at time t (Eqs. 62-63). The network
body never sees t. The diffusion readout (Eqs. 64-65, or the reference code's variant) is
applied by the caller.

Two presets: :func:`paper_network` (softplus conv units, tanh dense units, tied conv
biases, one nonlinearity after the sum over scales, as App. D.2.1 describes) and
:func:`reference_code_network` (leaky ReLU with slope 0.05 everywhere, untied per-location
conv biases, a nonlinearity per scale, as in the released code: github.com/Sohl-Dickstein/
Diffusion-Probabilistic-Models @ de92b57, ``regression.py`` and ``model.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dpm_jax.models.conv import conv3x3, conv3x3_bias_act, conv3x3_stack
from dpm_jax.models.temporal import bump_basis, step_rows

Activation = Callable[[jax.Array], jax.Array]

FILTER_SIZE = 3  # the reference code's filter size (regression.py:115); the paper gives none


def reference_leaky_relu(x: jax.Array) -> jax.Array:
    """The reference code's ``LeakyRelu``: x if x > 0 else 0.05 x (regression.py:14-20)."""
    return jnp.where(x > 0, x, 0.05 * x)


def _max_num_scales(height: int, width: int) -> int:
    scales = 1
    while height % 2**scales == 0 and width % 2**scales == 0:
        scales += 1
    return scales


class MultiScaleConv(nn.Module):
    """One multi-scale convolution layer (App. D.2.1, after Barron et al. 2013).

    For each scale s = 0..S-1 the NHWC input is mean-pooled by 2^s (non-overlapping),
    convolved with a 3x3 SAME-padded kernel to ``features`` channels, given a bias, and
    upsampled back to H x W by pixel duplication. With ``activation_per_scale`` (the
    reference code, regression.py:80-111) the output is
    (1/S) sum_s Up_s(act(conv_s(Down_s(x)) + b_s)); without it (the paper's text: "sum,
    then a pointwise soft-ReLU") it is act(sum_s Up_s(conv_s(Down_s(x)) + b_s)).

    Biases: per channel when ``untied_bias`` is False. When True, one bias per output
    location and channel, stored as in the reference code (Blocks' untied bias of a
    'full' convolution) with shape (H/2^s + 2, W/2^s + 2, features); only the interior
    (H/2^s, W/2^s) block is used, the one-pixel border never affects the output. Keeping
    the border reproduces the reference parameter counts exactly.

    Init: kernels N(0, (sqrt(1/features)/9)^2) (the reference's IsotropicGaussian with
    std sqrt(1/num_filters)/filter_size^2), biases 0.

    ``dtype`` is the computation dtype (None: the input's); parameters stay float32.

    Call: ``apply(params, x)`` with x (N, H, W, C); H and W must be divisible by
    2^(S-1). Returns (N, H, W, features).
    """

    features: int
    num_scales: int = 1
    activation: Activation = reference_leaky_relu
    untied_bias: bool = True
    activation_per_scale: bool = True
    dtype: Any = None

    def kernels_and_biases(self, x_shape, dtype) -> list[tuple[jax.Array, jax.Array]]:
        """Per scale s: the kernel (3, 3, C, features) and the bias, broadcastable to
        (H/2^s, W/2^s, features) (the untied bias's interior), in ``dtype``."""
        _, height, width, channels = x_shape
        std = math.sqrt(1.0 / self.features) / FILTER_SIZE**2
        out = []
        for s in range(self.num_scales):
            hs, ws = height // 2**s, width // 2**s
            kernel = self.param(
                f"kernel_{s}",
                nn.initializers.normal(std),
                (FILTER_SIZE, FILTER_SIZE, channels, self.features),
            )
            if self.untied_bias:
                bias = self.param(
                    f"bias_{s}", nn.initializers.zeros, (hs + 2, ws + 2, self.features)
                )
                bias = bias[1:-1, 1:-1]
            else:
                bias = self.param(f"bias_{s}", nn.initializers.zeros, (self.features,))
            out.append((kernel.astype(dtype), bias.astype(dtype)))
        return out

    @nn.compact
    def __call__(self, x: jax.Array, params_only: bool = False):
        """(N, H, W, features); with ``params_only`` the list of :meth:`kernels_and_biases`."""
        chex.assert_rank(x, 4)
        if self.num_scales < 1:
            raise ValueError(f"MultiScaleConv: num_scales must be >= 1, got {self.num_scales}.")
        batch, height, width, channels = x.shape
        factor = 2 ** (self.num_scales - 1)
        for name, size in (("height", height), ("width", width)):
            if size % factor:
                raise ValueError(
                    f"MultiScaleConv: image {name} {size} is not divisible by "
                    f"2**(num_scales-1) = {factor} (num_scales={self.num_scales}); every scale "
                    f"must mean-pool exactly. Use num_scales <= {_max_num_scales(height, width)} "
                    f"for a {height}x{width} image, or crop/pad the image to a multiple of "
                    f"{factor}."
                )
        if params_only:
            dtype = x.dtype if self.dtype is None else self.dtype
            return self.kernels_and_biases(x.shape, dtype)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        acc = 0.0
        for s, (kernel, bias) in enumerate(self.kernels_and_biases(x.shape, x.dtype)):
            pool = 2**s
            down = x.reshape(batch, height // pool, pool, width // pool, pool, channels)
            down = down.mean(axis=(2, 4))
            if self.activation_per_scale:
                y = conv3x3_bias_act(down, kernel, bias, self.activation)
            else:
                y = conv3x3(down, kernel) + bias
            y = jnp.repeat(jnp.repeat(y, pool, axis=1), pool, axis=2)
            acc = acc + y
        if self.activation_per_scale:
            return acc / self.num_scales
        return self.activation(acc)


class _Linear(nn.Module):
    """``nn.Dense``'s parameters (``kernel`` (in, features), ``bias``; the same names and
    initialisation), returned instead of applied."""

    features: int
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
        shape = (in_features, self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return kernel, bias


class MultiScaleConvNet(nn.Module):
    """The image reverse model (App. D.2.1, Fig. D.1; reference ``MLP_conv_dense``).

    * Conv pathway: ``conv_layers`` :class:`MultiScaleConv` layers of ``conv_features``
      channels at full resolution (0 layers turns the pathway off).
    * Dense pathway (off when ``dense_hidden`` is 0): the image flattened in (c, h, w)
      order as in the reference code, an MLP of depth ``dense_layers`` (default: the
      reference code's quirk, ``conv_layers``) with widths [dense_hidden]*(depth-1) +
      [dense_output*H*W] and the activation after every layer including the last, then
      reshaped to (N, H, W, dense_output).
    * Per pixel: concat[conv / sqrt(conv_features), dense / sqrt(dense_output)] (no
      scaling when only one pathway is on), then an MLP of ``upper_layers`` 1x1 layers
      (``dense_activation`` on all but the last, the last linear) to C*2*J coefficients
      laid out [c][m][j], m = 0 for mu and m = 1 for sigma.
    * Readout: z = sum_j y_j g_j(t) with the fixed bumps of Eq. 63 (Eq. 62).

    Dense and 1x1 weights are semi-orthogonal (singular values 1), biases 0; with
    ``zero_init_readout`` the final 1x1 layer starts at zero instead (so the reverse
    kernel starts at the forward one). Conv init as in :class:`MultiScaleConv`.

    Mixed precision: ``dtype`` (e.g. ``jnp.bfloat16``) is the dtype of the convolutions,
    dense layers and activations; parameters stay float32 and the coefficients y are
    cast back to float32, so the readout and everything downstream (bound, KL) is float32.

    Call: ``apply(params, x_t, t)`` with x_t (N, H, W, C) and t (N,) ints in 1..T; returns
    (z_mu, z_sigma), each (N, H, W, C). ``apply(params, x_t, method="coefficients")``
    gives the time-independent coefficients y, (N, H, W, C, 2, J).
    """

    num_steps: int
    num_temporal_basis: int = 10
    conv_features: int = 20
    conv_layers: int = 4
    num_scales: int = 1
    dense_hidden: int = 500
    dense_output: int = 2
    dense_layers: int | None = None
    upper_hidden: int = 20
    upper_layers: int = 2
    conv_activation: Activation = reference_leaky_relu
    dense_activation: Activation = reference_leaky_relu
    untied_bias: bool = True
    conv_activation_per_scale: bool = True
    zero_init_readout: bool = False
    dtype: Any = jnp.float32

    def _dense_depth(self) -> int:
        return self.conv_layers if self.dense_layers is None else self.dense_layers

    @nn.compact
    def coefficients(self, x_t: jax.Array, t: jax.Array | None = None) -> jax.Array:
        """The per-pixel temporal coefficients y (N, H, W, C, 2, J); t is not an input.

        With t (N,): the readout z (N, H, W, C, 2) at each example's t (Eq. 62) instead.
        """
        chex.assert_rank(x_t, 4)
        batch, height, width, channels = x_t.shape
        dense_on = self.dense_hidden > 0 and self._dense_depth() > 0
        conv_on = self.conv_layers > 0
        if self.dense_hidden > 0 and self._dense_depth() < 1:
            raise ValueError(
                "MultiScaleConvNet: the dense pathway's depth defaults to conv_layers (the "
                "reference code's quirk); with conv_layers=0 set dense_layers explicitly, or "
                "dense_hidden=0 to turn the dense pathway off."
            )
        if not (conv_on or dense_on):
            raise ValueError(
                "MultiScaleConvNet: both pathways are off (conv_layers=0 and dense_hidden=0); "
                "turn at least one on."
            )
        if self.upper_layers < 1:
            raise ValueError(
                f"MultiScaleConvNet: upper_layers must be >= 1, got {self.upper_layers}."
            )

        dense_init = nn.initializers.orthogonal()
        zeros = nn.initializers.zeros
        dtype = self.dtype
        x_t = x_t.astype(dtype)
        branches = []
        if conv_on:
            layers = [
                MultiScaleConv(
                    self.conv_features,
                    num_scales=self.num_scales,
                    activation=self.conv_activation,
                    untied_bias=self.untied_bias,
                    activation_per_scale=self.conv_activation_per_scale,
                    dtype=dtype,
                    name=f"conv_{i}",
                )
                for i in range(self.conv_layers)
            ]
            if self.num_scales == 1:  # every layer is act(conv + bias): one chunked stack
                hidden = (*x_t.shape[:3], self.conv_features)
                shapes = [x_t.shape] + [hidden] * (len(layers) - 1)
                params = [
                    layer(jnp.zeros(shape, dtype), params_only=True)[0]
                    for layer, shape in zip(layers, shapes, strict=True)
                ]
                kernels, biases = zip(*params, strict=True)
                h = conv3x3_stack(x_t, kernels, biases, self.conv_activation)
            else:
                h = x_t
                for layer in layers:
                    h = layer(h)
            branches.append((h, self.conv_features))
        if dense_on:
            depth = self._dense_depth()
            h = jnp.transpose(x_t, (0, 3, 1, 2)).reshape(batch, -1)  # (c, h, w) order
            widths = [self.dense_hidden] * (depth - 1) + [self.dense_output * height * width]
            for i, size in enumerate(widths):
                h = nn.Dense(
                    size, kernel_init=dense_init, bias_init=zeros, dtype=dtype, name=f"dense_{i}"
                )(h)
                h = self.dense_activation(h)
            branches.append((h.reshape(batch, height, width, self.dense_output), self.dense_output))
        if len(branches) == 1:
            h = branches[0][0]
        else:
            h = jnp.concatenate([y / math.sqrt(n) for y, n in branches], axis=-1)

        num_basis = self.num_temporal_basis
        for i in range(self.upper_layers - 1):
            h = nn.Dense(
                self.upper_hidden,
                kernel_init=dense_init,
                bias_init=zeros,
                dtype=dtype,
                name=f"upper_{i}",
            )(h)
            h = self.dense_activation(h)
        kernel, bias = _Linear(
            channels * 2 * num_basis,
            kernel_init=zeros if self.zero_init_readout else dense_init,
            name=f"upper_{self.upper_layers - 1}",
        )(h.shape[-1])
        if t is None:
            y = jnp.dot(h, kernel.astype(dtype)) + bias.astype(dtype)
            y = y.astype(jnp.float32)  # the readout, bound and KL stay float32
            return y.reshape(batch, height, width, channels, 2, num_basis)
        # Eq. 62 folded into the last (linear) layer: z = h (W g(t)) + b g(t), per example,
        # in float32 (also under a bfloat16 ``dtype``, where y is rounded to bfloat16 first);
        # the same numbers as temporal_readout(y, ...) to float rounding, without forming y.
        g = step_rows(bump_basis(self.num_steps, num_basis), t)  # (N, J)
        kernel = kernel.reshape(-1, channels * 2, num_basis)
        w_t = jnp.einsum("kmj,nj->nkm", kernel, g)
        b_t = jnp.einsum("mj,nj->nm", bias.reshape(channels * 2, num_basis), g)
        z = jnp.einsum("nhwk,nkm->nhwm", h.astype(jnp.float32), w_t) + b_t[:, None, None, :]
        return z.reshape(batch, height, width, channels, 2)

    def __call__(self, x_t: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        chex.assert_rank(x_t, 4)
        chex.assert_shape(t, (x_t.shape[0],))
        z = self.coefficients(x_t, t)  # (N, H, W, C, 2)
        return z[..., 0], z[..., 1]


PAPER_STYLE: dict[str, Any] = {
    "conv_activation": jax.nn.softplus,
    "dense_activation": jnp.tanh,
    "untied_bias": False,
    "conv_activation_per_scale": False,
}
"""App. D.2.1: softplus conv units, tanh dense and 1x1 units, one nonlinearity after the
sum over scales. The paper says nothing of bias tying; per-channel biases are used."""

REFERENCE_CODE_STYLE: dict[str, Any] = {
    "conv_activation": reference_leaky_relu,
    "dense_activation": reference_leaky_relu,
    "untied_bias": True,
    "conv_activation_per_scale": True,
}
"""The released code: leaky ReLU (slope 0.05) everywhere, untied per-location conv biases,
a nonlinearity per scale before the average over scales."""

REFERENCE_MNIST_SIZES: dict[str, int] = {
    "num_temporal_basis": 10,
    "dense_hidden": 500,
    "dense_output": 2,
    "upper_hidden": 20,
    "conv_features": 20,
    "conv_layers": 4,
    "upper_layers": 2,
    "num_scales": 1,
}
"""The reference code's constructor defaults (model.py:16-32), used for MNIST."""

REFERENCE_CIFAR10_SIZES: dict[str, int] = {
    "num_temporal_basis": 10,
    "dense_hidden": 1000,
    "dense_output": 5,
    "upper_hidden": 100,
    "conv_features": 100,
    "conv_layers": 6,
    "upper_layers": 4,
    "num_scales": 1,
}
"""The reference README's CIFAR-10 command (n_layers_dense_lower=6 matches conv_layers)."""


def paper_network(num_steps: int, **overrides: Any) -> MultiScaleConvNet:
    """A :class:`MultiScaleConvNet` in the paper's style (:data:`PAPER_STYLE`).

    Sizes default to the reference code's (the paper gives none); pass e.g.
    ``**REFERENCE_CIFAR10_SIZES`` or single fields as overrides.
    """
    return MultiScaleConvNet(num_steps=num_steps, **{**PAPER_STYLE, **overrides})


def reference_code_network(num_steps: int, **overrides: Any) -> MultiScaleConvNet:
    """A :class:`MultiScaleConvNet` as the released code builds it (:data:`REFERENCE_CODE_STYLE`).

    Sizes default to the code's MNIST defaults; ``**REFERENCE_CIFAR10_SIZES`` gives its
    README CIFAR-10 network.
    """
    return MultiScaleConvNet(num_steps=num_steps, **{**REFERENCE_CODE_STYLE, **overrides})
