"""The DDPM U-Net (Ho, Jain, Abbeel 2020, Sec. 4 and App. B): (x_t, t) -> per-pixel output.

A Wide-ResNet U-Net like an unmasked PixelCNN++ with group normalisation (32 groups):

* t enters through the Transformer sinusoidal embedding (:func:`timestep_embedding`) and a
  two-layer MLP (width 4 ``ch``, swish), added to every residual block;
* ``len(ch_mult)`` resolutions, halved between them (3x3 stride-2 convolutions) on the way
  down and doubled (nearest neighbour, then a 3x3 convolution) on the way up;
  ``num_res_blocks`` residual blocks per resolution going down, one more going up, each up
  block taking the matching down activation by concatenation (the skip connections);
* single-head self-attention after the residual blocks at ``attn_resolutions``, and in the
  middle (block, attention, block);
* residual block: GroupNorm, swish, 3x3 conv, + Dense(swish(temb)), GroupNorm, swish,
  dropout, 3x3 conv (initialised near zero), a 1x1 projection of the input when the width
  changes;
* output: GroupNorm, swish, 3x3 conv to ``out_channels`` (initialised near zero).

Weights use the released code's initialiser, variance scaling over fan-in plus fan-out
(uniform), with scale 1e-10 where it initialises to (almost) zero (github.com/hojonathanho/
diffusion @ 1e0dceb, ``diffusion_tf/nn.py`` and ``models/unet.py``; read, not copied).
:data:`CIFAR10` is the paper's CIFAR-10 configuration (35.7M parameters as published).

The model is the function of x_t and t that the parameterisations of
:mod:`dpm_jax.parameterisation` read (epsilon, x0, ...); it knows nothing of the schedule.
"""

from __future__ import annotations

import dataclasses
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dpm_jax.models.conv2d import Conv, PixelDense
from dpm_jax.models.group_norm import GroupNorm

NUM_GROUPS = 32  # GroupNorm groups (TF group_norm's default, used by the released code)


def _init(scale: float = 1.0):
    """The released code's ``default_init``: variance scaling, fan_avg, uniform; scale 0 is
    1e-10 (near zero but not exactly, as there)."""
    return nn.initializers.variance_scaling(scale or 1e-10, "fan_avg", "uniform")


def timestep_embedding(t: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal embedding of timesteps t (N,): [sin(t w_k), cos(t w_k)], shape (N, dim).

    w_k = exp(-log(10000) k / (dim/2 - 1)) for k = 0..dim/2 - 1 (Vaswani et al. 2017 as in
    DDPM's code); ``dim`` must be even and >= 4.
    """
    if dim % 2 or dim < 4:
        raise ValueError(f"the timestep embedding's dim must be even and >= 4, got {dim}.")
    half = dim // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)


def upsample_nearest(x: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N, 2H, 2W, C), each pixel repeated 2 x 2 (nearest neighbour, as
    ``jax.image.resize(..., "nearest")`` at scale 2, whose gradient is a scatter-add: 38.8 vs
    10.6 ms forward and backward from (32, 16, 16, 256) on this project's 2-core CPU,
    ``benchmarks/unet_parts.py``)."""
    n, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None], (n, h, 2, w, 2, c)).reshape(n, 2 * h, 2 * w, c)


def _conv(features: int, scale: float = 1.0, strides: int = 1, name: str | None = None):
    return Conv(features, strides=strides, kernel_init=_init(scale), name=name)


class ResnetBlock(nn.Module):
    """GroupNorm, swish, conv; + time embedding; GroupNorm, swish, dropout, conv; skip."""

    out_ch: int
    dropout: float

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, train: bool) -> jax.Array:
        h = GroupNorm(NUM_GROUPS, swish=True, name="norm1")(x)
        h = _conv(self.out_ch, name="conv1")(h)
        h = (
            h
            + nn.Dense(self.out_ch, kernel_init=_init(), name="temb_proj")(nn.swish(temb))[
                :, None, None, :
            ]
        )
        h = GroupNorm(NUM_GROUPS, swish=True, name="norm2")(h)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = _conv(self.out_ch, scale=0.0, name="conv2")(h)
        if x.shape[-1] != self.out_ch:
            x = PixelDense(self.out_ch, kernel_init=_init(), name="nin_shortcut")(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H x W positions, with a residual connection."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        h = GroupNorm(NUM_GROUPS, name="norm")(x)
        q, k, v = (PixelDense(c, kernel_init=_init(), name=n)(h) for n in ("q", "k", "v"))
        n, height, width, _ = x.shape
        q, k, v = (a.reshape(n, height * width, c) for a in (q, k, v))
        w = jax.nn.softmax(jnp.einsum("nic,njc->nij", q, k) * c**-0.5, axis=-1)
        h = jnp.einsum("nij,njc->nic", w, v).reshape(n, height, width, c)
        return x + PixelDense(c, kernel_init=_init(0.0), name="proj_out")(h)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """The U-Net's sizes; ``out_channels`` None: the input's channel count (epsilon or x0
    prediction), twice that for a learned-range variance."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    out_channels: int | None = None


#: DDPM's CIFAR-10 model (``unet2d16b2``: ch 128, ch_mult (1, 2, 2, 2), 2 residual blocks,
#: attention at 16 x 16, dropout 0.1): 35.7M parameters as published.
CIFAR10 = UNetConfig()


def check_config(config: UNetConfig, image_shape: tuple[int, int, int]) -> None:
    """Clear errors for a U-Net that cannot be built for images of ``image_shape`` (H, W, C):
    sizes that do not halve ``len(ch_mult) - 1`` times, an attention resolution that never
    occurs, channel counts GroupNorm's 32 groups do not divide, bad sizes and dropout."""
    height, width, channels = image_shape
    levels = len(config.ch_mult)
    if config.ch < 1 or levels < 1 or min(config.ch_mult) < 1 or config.num_res_blocks < 1:
        raise ValueError(
            "model.ch, every model.ch_mult entry and model.num_res_blocks must be >= 1; got "
            f"ch={config.ch}, ch_mult={config.ch_mult}, num_res_blocks={config.num_res_blocks}."
        )
    factor = 2 ** (levels - 1)
    if height % factor or width % factor:
        raise ValueError(
            f"model.ch_mult has {levels} resolutions, so the image is halved {levels - 1} "
            f"times and height and width must be divisible by {factor}; got {height}x{width}. "
            f"Use at most {_max_levels(height, width)} entries in model.ch_mult, or pad/crop "
            "the images."
        )
    resolutions = [height // 2**i for i in range(levels)]
    missing = [r for r in config.attn_resolutions if r not in resolutions]
    if missing:
        raise ValueError(
            f"model.attn_resolutions {missing} never occur: the U-Net's resolutions (image "
            f"height, halved per level) are {resolutions}. Pick attention resolutions from them."
        )
    for width_ in sorted({config.ch * m for m in config.ch_mult}):
        if width_ % NUM_GROUPS:
            raise ValueError(
                f"GroupNorm's {NUM_GROUPS} groups must divide every block's channels, but "
                f"model.ch * model.ch_mult gives {width_}; use a model.ch that is a multiple "
                f"of {NUM_GROUPS}."
            )
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"model.dropout must lie in [0, 1), got {config.dropout}.")
    if config.out_channels is not None and config.out_channels < 1:
        raise ValueError(f"model.out_channels must be >= 1, got {config.out_channels}.")
    if channels < 1:
        raise ValueError(f"images need at least one channel, got shape {image_shape}.")


def _max_levels(height: int, width: int) -> int:
    levels = 1
    while height % 2**levels == 0 and width % 2**levels == 0:
        levels += 1
    return levels


class UNet(nn.Module):
    """``apply(params, x_t, t, train=False, rngs={"dropout": key})`` -> (N, H, W, out).

    x_t: (N, H, W, C) floats; t: (N,) timesteps, embedded as given (the library's 1-based t).
    Dropout is active only with ``train=True`` (pass a "dropout" rng then).
    """

    config: UNetConfig = CIFAR10

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        chex.assert_rank(x, 4)
        chex.assert_shape(t, (x.shape[0],))
        check_config(cfg, x.shape[1:])
        temb = timestep_embedding(t, cfg.ch)
        temb = nn.Dense(4 * cfg.ch, kernel_init=_init(), name="temb_dense0")(temb)
        temb = nn.Dense(4 * cfg.ch, kernel_init=_init(), name="temb_dense1")(nn.swish(temb))

        hs = [_conv(cfg.ch, name="conv_in")(x)]
        levels = len(cfg.ch_mult)
        for level, mult in enumerate(cfg.ch_mult):
            for block in range(cfg.num_res_blocks):
                h = ResnetBlock(cfg.ch * mult, cfg.dropout, name=f"down_{level}_block_{block}")(
                    hs[-1], temb, train
                )
                if h.shape[1] in cfg.attn_resolutions:
                    h = AttnBlock(name=f"down_{level}_attn_{block}")(h)
                hs.append(h)
            if level != levels - 1:
                hs.append(_conv(h.shape[-1], strides=2, name=f"down_{level}_downsample")(hs[-1]))

        h = hs[-1]
        width = h.shape[-1]
        h = ResnetBlock(width, cfg.dropout, name="mid_block_1")(h, temb, train)
        h = AttnBlock(name="mid_attn")(h)
        h = ResnetBlock(width, cfg.dropout, name="mid_block_2")(h, temb, train)

        for level in reversed(range(levels)):
            for block in range(cfg.num_res_blocks + 1):
                h = jnp.concatenate([h, hs.pop()], axis=-1)
                h = ResnetBlock(
                    cfg.ch * cfg.ch_mult[level], cfg.dropout, name=f"up_{level}_block_{block}"
                )(h, temb, train)
                if h.shape[1] in cfg.attn_resolutions:
                    h = AttnBlock(name=f"up_{level}_attn_{block}")(h)
            if level != 0:
                h = _conv(h.shape[-1], name=f"up_{level}_upsample")(upsample_nearest(h))
        assert not hs, "every skip connection is used once"

        h = GroupNorm(NUM_GROUPS, swish=True, name="norm_out")(h)
        out = cfg.out_channels or x.shape[-1]
        return _conv(out, scale=0.0, name="conv_out")(h)


def num_parameters(config: UNetConfig, image_shape: tuple[int, int, int]) -> int:
    """The U-Net's parameter count for images of ``image_shape``, without computing anything
    (``jax.eval_shape`` of the initialiser)."""
    model = UNet(config)
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
