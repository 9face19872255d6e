"""The ADM U-Net (Dhariwal & Nichol 2021, Sec. 3 and Table 11): (x_t, t[, y]) -> output.

DDPM's U-Net (:mod:`dpm_jax.models.unet`) with ADM's changes:

* multi-head self-attention at several resolutions, ``num_head_channels`` channels per head
  (or a fixed ``num_heads``), also in the middle;
* BigGAN-style up/down-sampling: residual blocks that resample inside (average pooling or
  nearest-neighbour upsampling applied to both branches, ``resblock_updown``);
* adaptive group normalisation (``use_scale_shift_norm``): the time (and class) embedding
  gives a scale and shift applied after the second GroupNorm, h = GN(h) (1 + s) + b;
* class conditioning: a learned embedding of y added to the time embedding;
* an optional low-resolution image, bilinearly upsampled and concatenated to x_t
  (``low_res_channels``; ADM-U, the upsampling model).

Layer for layer as the released code's ``UNetModel`` (openai/guided-diffusion
``unet.py``; read, not copied), so parameter counts compare with Table 11: :data:`IMAGENET64`
and :data:`IMAGENET128`. The network knows nothing of the schedule; with ``out_channels``
twice the image's channels it returns (eps, v) for the learned-range variance.
"""

from __future__ import annotations

import dataclasses
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dpm_jax.models.conv2d import Conv
from dpm_jax.models.group_norm import GroupNorm
from dpm_jax.models.unet import NUM_GROUPS, timestep_embedding, upsample_nearest


@dataclasses.dataclass(frozen=True)
class ADMConfig:
    """The ADM U-Net's sizes. ``attention_resolutions`` are feature-map sizes (e.g. 32, 16,
    8); ``num_head_channels`` > 0 sets the heads by width (64 in ADM), else ``num_heads``.
    ``num_classes`` None: unconditional. ``low_res_channels`` > 0: an upsampler taking a
    low-resolution image of that many channels. ``out_channels`` None: the image's."""

    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 1
    num_head_channels: int = 64
    dropout: float = 0.0
    resblock_updown: bool = True
    use_scale_shift_norm: bool = True
    num_classes: int | None = None
    low_res_channels: int = 0
    out_channels: int | None = None


#: ADM's ImageNet 64x64 model (Table 11; guided-diffusion's flags: 192 channels, 3 blocks,
#: channel_mult 1,2,3,4, attention 32,16,8, 64 channels per head, BigGAN up/down, AdaGN,
#: class-conditional, learned sigma, dropout 0.1).
IMAGENET64 = ADMConfig(
    model_channels=192,
    channel_mult=(1, 2, 3, 4),
    num_res_blocks=3,
    attention_resolutions=(32, 16, 8),
    num_head_channels=64,
    dropout=0.1,
    num_classes=1000,
    out_channels=6,
)

#: ADM's ImageNet 128x128 model (Table 11; 256 channels, 2 blocks, channel_mult 1,1,2,3,4,
#: attention 32,16,8 with 4 heads, BigGAN up/down, AdaGN, class-conditional, learned sigma).
IMAGENET128 = ADMConfig(
    model_channels=256,
    channel_mult=(1, 1, 2, 3, 4),
    num_res_blocks=2,
    attention_resolutions=(32, 16, 8),
    num_heads=4,
    num_head_channels=-1,
    num_classes=1000,
    out_channels=6,
)


def _conv(features: int, kernel: int = 3, zero: bool = False, name: str | None = None):
    init = nn.initializers.zeros if zero else nn.initializers.lecun_normal()
    return Conv(features, (kernel, kernel), kernel_init=init, name=name)


def _resample(x: jax.Array, direction: str) -> jax.Array:
    if direction == "up":
        return upsample_nearest(x)
    if direction == "down":
        return nn.avg_pool(x, (2, 2), strides=(2, 2))
    return x


class ResBlock(nn.Module):
    """GN, SiLU, [resample], conv; + embedding (AdaGN scale and shift, or added); GN, SiLU,
    dropout, zero conv; skip ([resampled], 1x1 conv when the width changes)."""

    out_ch: int
    dropout: float
    use_scale_shift_norm: bool
    resample: str = "none"  # "up", "down" or "none"

    @nn.compact
    def __call__(self, x, emb, train: bool):
        h = GroupNorm(NUM_GROUPS, swish=True, name="in_norm")(x)
        h = _conv(self.out_ch, name="in_conv")(_resample(h, self.resample))
        x = _resample(x, self.resample)
        e = nn.Dense(2 * self.out_ch if self.use_scale_shift_norm else self.out_ch, name="emb")(
            nn.silu(emb)
        )[:, None, None, :]
        if self.use_scale_shift_norm:
            scale, shift = jnp.split(e, 2, axis=-1)
            h = nn.silu(GroupNorm(NUM_GROUPS, name="out_norm")(h) * (1.0 + scale) + shift)
        else:
            h = GroupNorm(NUM_GROUPS, swish=True, name="out_norm")(h + e)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = _conv(self.out_ch, zero=True, name="out_conv")(h)
        if x.shape[-1] != self.out_ch:
            x = _conv(self.out_ch, kernel=1, name="skip")(x)
        return x + h


class AttentionBlock(nn.Module):
    """GN, qkv (1x1), multi-head attention over the positions, zero-initialised projection."""

    num_heads: int

    @nn.compact
    def __call__(self, x):
        n, height, width, c = x.shape
        qkv = nn.Dense(3 * c, name="qkv")(GroupNorm(NUM_GROUPS, name="norm")(x))
        qkv = qkv.reshape(n, height * width, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (N, L, heads, d)
        scale = (c // self.num_heads) ** -0.5
        w = jax.nn.softmax(jnp.einsum("nihd,njhd->nhij", q, k) * scale, axis=-1)
        h = jnp.einsum("nhij,njhd->nihd", w, v).reshape(n, height, width, c)
        return x + nn.Dense(c, kernel_init=nn.initializers.zeros, name="proj_out")(h)


def num_heads(config: ADMConfig, channels: int) -> int:
    """Attention heads at a width: ``channels // num_head_channels``, or ``num_heads``."""
    if config.num_head_channels > 0:
        return channels // config.num_head_channels
    return config.num_heads


def _time_embedding(t: jax.Array, model_channels: int) -> jax.Array:
    """Sinusoidal embedding of t, Dense, SiLU, Dense: (N, 4 model_channels); called inside
    a compact ``__call__``, whose ``time_embed_0`` and ``time_embed_1`` layers it makes."""
    emb = nn.Dense(4 * model_channels, name="time_embed_0")(timestep_embedding(t, model_channels))
    return nn.Dense(4 * model_channels, name="time_embed_1")(nn.silu(emb))


def check_config(config: ADMConfig, image_shape: tuple[int, int, int]) -> None:
    """Clear errors for sizes the network cannot take."""
    height, width, _ = image_shape
    levels = len(config.channel_mult)
    factor = 2 ** (levels - 1)
    if height % factor or width % factor:
        raise ValueError(
            f"channel_mult has {levels} levels, so height and width must be divisible by "
            f"{factor}; got {height}x{width}."
        )
    sizes = [height // 2**i for i in range(levels)]
    missing = [r for r in config.attention_resolutions if r not in sizes]
    if missing:
        raise ValueError(
            f"attention_resolutions {missing} never occur; the feature maps are {sizes}."
        )
    for c in sorted({config.model_channels * m for m in config.channel_mult}):
        if c % NUM_GROUPS:
            raise ValueError(f"GroupNorm's {NUM_GROUPS} groups must divide every width; got {c}.")
        heads = num_heads(config, c)
        if heads < 1 or c % heads:
            raise ValueError(f"{heads} attention heads do not divide {c} channels.")


class ADMUNet(nn.Module):
    """``apply(params, x_t, t, y=None, low_res=None, train=False)`` -> (N, H, W, out)."""

    config: ADMConfig = IMAGENET64

    @nn.compact
    def __call__(self, x, t, y=None, low_res=None, train: bool = False):
        cfg = self.config
        chex.assert_rank(x, 4)
        chex.assert_shape(t, (x.shape[0],))
        check_config(cfg, x.shape[1:])
        out_channels = cfg.out_channels or x.shape[-1]
        mc = cfg.model_channels
        emb = _time_embedding(t, mc)
        if cfg.num_classes is not None:
            if y is None:
                raise ValueError("this model is class-conditional: pass y, labels of shape (N,).")
            emb = emb + nn.Embed(cfg.num_classes, 4 * mc, name="label_emb")(y)
        if cfg.low_res_channels:
            if low_res is None or low_res.shape[-1] != cfg.low_res_channels:
                raise ValueError(
                    f"this upsampler needs low_res with {cfg.low_res_channels} channels."
                )
            up = jax.image.resize(low_res, (*x.shape[:3], low_res.shape[-1]), "bilinear")
            x = jnp.concatenate([x, up], axis=-1)

        def block(h, ch, name, resample="none"):
            return ResBlock(ch, cfg.dropout, cfg.use_scale_shift_norm, resample, name=name)(
                h, emb, train
            )

        def attend(h, name):
            if h.shape[1] in cfg.attention_resolutions:
                h = AttentionBlock(num_heads(cfg, h.shape[-1]), name=name)(h)
            return h

        hs = [_conv(mc, name="conv_in")(x)]
        levels = len(cfg.channel_mult)
        for level, mult in enumerate(cfg.channel_mult):
            for i in range(cfg.num_res_blocks):
                h = attend(block(hs[-1], mc * mult, f"down_{level}_{i}"), f"down_{level}_{i}_attn")
                hs.append(h)
            if level != levels - 1:
                ch = hs[-1].shape[-1]
                if cfg.resblock_updown:
                    hs.append(block(hs[-1], ch, f"down_{level}_resample", "down"))
                else:
                    hs.append(Conv(ch, strides=2, name=f"down_{level}_resample")(hs[-1]))
        h = hs[-1]
        ch = h.shape[-1]
        h = block(h, ch, "mid_0")
        h = AttentionBlock(num_heads(cfg, ch), name="mid_attn")(h)
        h = block(h, ch, "mid_1")
        for level in reversed(range(levels)):
            for i in range(cfg.num_res_blocks + 1):
                h = jnp.concatenate([h, hs.pop()], axis=-1)
                h = attend(
                    block(h, mc * cfg.channel_mult[level], f"up_{level}_{i}"),
                    f"up_{level}_{i}_attn",
                )
            if level:
                if cfg.resblock_updown:
                    h = block(h, h.shape[-1], f"up_{level}_resample", "up")
                else:
                    h = _conv(h.shape[-1], name=f"up_{level}_resample")(_resample(h, "up"))
        h = GroupNorm(NUM_GROUPS, swish=True, name="out_norm")(h)
        return _conv(out_channels, zero=True, name="conv_out")(h)


class AttentionPool(nn.Module):
    """CLIP-style attention pooling: the mean position, with learned positional embeddings,
    attends over all positions; a linear map of its output gives ``out_features``."""

    num_heads: int
    out_features: int

    @nn.compact
    def __call__(self, x):
        n, height, width, c = x.shape
        tokens = x.reshape(n, height * width, c)
        tokens = jnp.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1)
        position = self.param("position", nn.initializers.normal(c**-0.5), (height * width + 1, c))
        tokens = tokens + position[None]
        qkv = nn.Dense(3 * c, name="qkv")(tokens).reshape(
            n, -1, 3, self.num_heads, c // self.num_heads
        )
        q, k, v = qkv[:, :1, 0], qkv[:, :, 1], qkv[:, :, 2]
        w = jax.nn.softmax(jnp.einsum("nihd,njhd->nhij", q, k) * (c // self.num_heads) ** -0.5, -1)
        pooled = jnp.einsum("nhij,njhd->nihd", w, v).reshape(n, c)
        return nn.Dense(self.out_features, name="out")(pooled)


class NoisyClassifier(nn.Module):
    """ADM's noise-aware classifier: the U-Net's downsampling half and middle on (x_t, t),
    then GroupNorm, SiLU and attention pooling to ``num_classes`` logits (the released code's
    ``EncoderUNetModel`` with ``pool="attention"``). ``apply(params, x_t, t) -> (N, classes)``."""

    config: ADMConfig
    num_classes: int

    @nn.compact
    def __call__(self, x, t, train: bool = False):
        cfg = self.config
        chex.assert_rank(x, 4)
        chex.assert_shape(t, (x.shape[0],))
        check_config(cfg, x.shape[1:])
        mc = cfg.model_channels
        emb = _time_embedding(t, mc)

        h = _conv(mc, name="conv_in")(x)
        levels = len(cfg.channel_mult)
        for level, mult in enumerate(cfg.channel_mult):
            for i in range(cfg.num_res_blocks):
                h = ResBlock(
                    mc * mult, cfg.dropout, cfg.use_scale_shift_norm, name=f"down_{level}_{i}"
                )(h, emb, train)
                if h.shape[1] in cfg.attention_resolutions:
                    h = AttentionBlock(num_heads(cfg, h.shape[-1]), name=f"down_{level}_{i}_attn")(
                        h
                    )
            if level != levels - 1:
                h = ResBlock(
                    h.shape[-1],
                    cfg.dropout,
                    cfg.use_scale_shift_norm,
                    "down",
                    name=f"down_{level}_resample",
                )(h, emb, train)
        ch = h.shape[-1]
        h = ResBlock(ch, cfg.dropout, cfg.use_scale_shift_norm, name="mid_0")(h, emb, train)
        h = AttentionBlock(num_heads(cfg, ch), name="mid_attn")(h)
        h = ResBlock(ch, cfg.dropout, cfg.use_scale_shift_norm, name="mid_1")(h, emb, train)
        h = GroupNorm(NUM_GROUPS, swish=True, name="out_norm")(h)
        return AttentionPool(num_heads(cfg, ch), self.num_classes, name="pool")(h)


def num_parameters(config: ADMConfig, image_shape: tuple[int, int, int]) -> int:
    """The parameter count for images of ``image_shape`` (``jax.eval_shape``: no memory)."""
    model = ADMUNet(config)
    n = 1
    args = [
        jax.ShapeDtypeStruct((n, *image_shape), jnp.float32),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    ]
    kwargs = {}
    if config.num_classes is not None:
        kwargs["y"] = jax.ShapeDtypeStruct((n,), jnp.int32)
    if config.low_res_channels:
        h, w, _ = image_shape
        kwargs["low_res"] = jax.ShapeDtypeStruct(
            (n, h // 2, w // 2, config.low_res_channels), jnp.float32
        )
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args, **kwargs)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
