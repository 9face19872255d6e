"""dpm_jax.prng: Philox keys for dropout masks, drawn from the caller's key."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax import prng


def test_bulk_key_is_philox_and_a_pure_function_of_the_key():
    key = jax.random.key(3)
    a, b = prng.bulk_key(key), prng.bulk_key(key)
    assert str(jax.random.key_impl(a)) == "philox4x32"
    np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
    other = prng.bulk_key(jax.random.key(4))
    assert not np.array_equal(jax.random.key_data(a), jax.random.key_data(other))
    # raw key data (what train_state carries) gives the same key as the typed key
    raw = prng.bulk_key(jax.random.key_data(key))
    np.testing.assert_array_equal(jax.random.key_data(raw), jax.random.key_data(a))


def test_dropout_with_a_bulk_key_keeps_the_rate_and_the_mean():
    """Flax dropout (rate 0.1) with a Philox key: the kept fraction is 0.9 within 5 standard
    errors over 2^20 units, kept units are scaled by 1/0.9, and masks of different keys and
    of different layers (fold_in of the module path) differ."""
    x = jnp.ones((2**20,))
    drop = nn.Dropout(0.1, deterministic=False)
    y = drop.apply({}, x, rngs={"dropout": prng.bulk_key(jax.random.key(0))})
    kept = np.asarray(y != 0)
    se = np.sqrt(0.9 * 0.1 / x.size)
    assert abs(kept.mean() - 0.9) < 5 * se
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.9, rtol=1e-6)
    y2 = drop.apply({}, x, rngs={"dropout": prng.bulk_key(jax.random.key(1))})
    agree = np.mean(kept == np.asarray(y2 != 0))
    assert abs(agree - (0.9**2 + 0.1**2)) < 5 * np.sqrt(0.82 * 0.18 / x.size)


def test_unknown_impl_returns_the_key_unchanged():
    key = jax.random.key(0)
    assert prng.bulk_key(key, impl="no_such_impl") is key


def test_ddpm_dropout_masks_come_from_the_bulk_key():
    """experiments.ddpm's model with a dropout key is the U-Net with dropout drawn from
    ``bulk_key`` of that key: equal to that, and unlike the threefry key's masks."""
    from experiments import config as cfg
    from experiments import ddpm
    from experiments.ddpm_config import PRESETS

    config = cfg.replace(
        PRESETS["small"],
        {"model.dropout": 0.5, "model.ch_mult": (1,), "model.attn_resolutions": ()},
    )
    shapes = jax.eval_shape(lambda k: ddpm.init_params(config, k), jax.random.key(0))
    leaves, tree = jax.tree.flatten(shapes)  # random, not the near-zero init: dropout shows
    keys = jax.random.split(jax.random.key(3), len(leaves))
    params = tree.unflatten(
        [0.3 * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves, strict=True)]
    )
    x = jax.random.normal(jax.random.key(1), (2, *config.image_shape()))
    t = jnp.array([3, 7])
    net = ddpm.network(config)

    @jax.jit
    def outputs(key):
        def with_key(k):
            return net.apply({"params": params}, x, t, train=True, rngs={"dropout": k})

        return ddpm.model_fn(config, params, key)(x, t), with_key(prng.bulk_key(key)), with_key(key)

    out, bulk, threefry = outputs(jax.random.key(2))
    np.testing.assert_array_equal(out, bulk)
    assert not np.allclose(out, threefry)
