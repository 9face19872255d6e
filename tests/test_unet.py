"""The DDPM U-Net: parameter counts from the architecture's description, the embedding's
closed form, shapes, dropout, and clear errors for configs that cannot be built."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax.models import unet


def _count_by_hand(cfg: unet.UNetConfig, image_shape) -> int:
    """Parameters of the U-Net as DDPM (App. B) and its code describe it, counted layer by
    layer without the module: 3x3 conv 9 c_in c_out + c_out, dense c_in c_out + c_out,
    GroupNorm 2c."""
    height, _, channels = image_shape
    conv = lambda i, o: 9 * i * o + o  # noqa: E731
    dense = lambda i, o: i * o + o  # noqa: E731
    temb = 4 * cfg.ch

    def resnet(i, o):
        return (
            2 * i
            + conv(i, o)
            + dense(temb, o)
            + 2 * o
            + conv(o, o)
            + (dense(i, o) if i != o else 0)
        )

    def attn(c):
        return 2 * c + 4 * dense(c, c)

    total = dense(cfg.ch, temb) + dense(temb, temb) + conv(channels, cfg.ch)
    skips, cur, res = [cfg.ch], cfg.ch, height
    for level, mult in enumerate(cfg.ch_mult):
        for _ in range(cfg.num_res_blocks):
            total += resnet(cur, cfg.ch * mult) + (
                attn(cfg.ch * mult) if res in cfg.attn_resolutions else 0
            )
            cur = cfg.ch * mult
            skips.append(cur)
        if level != len(cfg.ch_mult) - 1:
            total += conv(cur, cur)
            skips.append(cur)
            res //= 2
    total += 2 * resnet(cur, cur) + attn(cur)
    for level in reversed(range(len(cfg.ch_mult))):
        for _ in range(cfg.num_res_blocks + 1):
            out = cfg.ch * cfg.ch_mult[level]
            total += resnet(cur + skips.pop(), out) + (
                attn(out) if res in cfg.attn_resolutions else 0
            )
            cur = out
        if level != 0:
            total += conv(cur, cur)
            res *= 2
    assert not skips
    return total + 2 * cur + conv(cur, cfg.out_channels or channels)


SMALL = unet.UNetConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.1)


def test_cifar10_preset_has_the_published_35_7m_parameters():
    n = unet.num_parameters(unet.CIFAR10, (32, 32, 3))
    assert round(n, -5) == 35_700_000  # DDPM Sec. 4: "35.7 million parameters"
    assert n == _count_by_hand(unet.CIFAR10, (32, 32, 3))


@pytest.mark.parametrize(
    "cfg",
    [
        SMALL,
        unet.UNetConfig(
            ch=64, ch_mult=(1, 1, 2), num_res_blocks=2, attn_resolutions=(16, 4), out_channels=6
        ),
    ],
)
def test_parameter_count_matches_the_architecture_counted_by_hand(cfg):
    assert unet.num_parameters(cfg, (16, 16, 3)) == _count_by_hand(cfg, (16, 16, 3))


def test_timestep_embedding_closed_form():
    emb = np.asarray(unet.timestep_embedding(jnp.array([0, 1, 500]), 8))
    np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=0)
    freqs = np.exp(-math.log(10_000) * np.arange(4) / 3)  # 1 ... 1e-4
    for row, t in ((1, 1.0), (2, 500.0)):
        np.testing.assert_allclose(
            emb[row], np.r_[np.sin(t * freqs), np.cos(t * freqs)], rtol=1e-5, atol=1e-5
        )
    with pytest.raises(ValueError, match="even"):
        unet.timestep_embedding(jnp.array([1]), 7)


def test_forward_shapes_near_zero_output_at_init_and_dropout_only_in_training():
    model = unet.UNet(SMALL)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    t = jnp.array([1, 700])
    params = model.init(jax.random.PRNGKey(1), x, t)
    out = model.apply(params, x, t)
    assert out.shape == (2, 16, 16, 3) and bool(jnp.all(jnp.isfinite(out)))
    assert float(jnp.max(jnp.abs(out))) < 1e-3  # the output conv starts at (almost) zero
    # Move the near-zero layers (output, residual branches) off zero so that dropout and t
    # show in the output.
    zero_init = ("conv_out", "conv2", "proj_out")
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: p + 0.05 if any(n in jax.tree_util.keystr(path) for n in zero_init) else p,
        params,
    )
    eval_a, eval_b = model.apply(params, x, t), model.apply(params, x, t)
    np.testing.assert_array_equal(eval_a, eval_b)
    train = model.apply(params, x, t, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(train, eval_a)
    other_t = model.apply(params, x, jnp.array([2, 700]))
    assert not np.allclose(other_t[0], eval_a[0]) and np.allclose(other_t[1], eval_a[1])


@pytest.mark.parametrize(
    ("cfg", "shape", "phrase"),
    [
        (
            unet.UNetConfig(ch=32, ch_mult=(1, 2, 2, 2), attn_resolutions=()),
            (28, 28, 1),
            "divisible by 8",
        ),
        (
            unet.UNetConfig(ch=32, ch_mult=(1, 2), attn_resolutions=(7,)),
            (16, 16, 1),
            "attn_resolutions",
        ),
        (unet.UNetConfig(ch=48, ch_mult=(1, 2), attn_resolutions=()), (16, 16, 1), "GroupNorm"),
        (
            unet.UNetConfig(ch=32, ch_mult=(1,), dropout=1.0, attn_resolutions=()),
            (8, 8, 1),
            "dropout",
        ),
    ],
)
def test_configs_that_cannot_be_built_get_clear_errors(cfg, shape, phrase):
    with pytest.raises(ValueError, match=phrase):
        unet.check_config(cfg, shape)
    with pytest.raises(ValueError, match=phrase):
        unet.num_parameters(cfg, shape)


def test_upsample_nearest_equals_jax_image_resize_and_its_gradient_sums_2x2_blocks():
    x = jax.random.normal(jax.random.key(0), (2, 3, 5, 4))
    y = unet.upsample_nearest(x)
    np.testing.assert_array_equal(y, jax.image.resize(x, (2, 6, 10, 4), "nearest"))
    g = jax.random.normal(jax.random.key(1), y.shape)
    (dx,) = jax.vjp(unet.upsample_nearest, x)[1](g)
    np.testing.assert_allclose(dx, g.reshape(2, 3, 2, 5, 2, 4).sum((2, 4)), rtol=1e-6)
