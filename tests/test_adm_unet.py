"""The ADM U-Net: Table 11's parameter counts, shapes, conditioning and clear errors."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax.models import adm_unet

SMALL = adm_unet.ADMConfig(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(4,),
    num_head_channels=16,
    num_classes=10,
    out_channels=2,
)


@pytest.mark.parametrize(
    "config, shape, published",
    [(adm_unet.IMAGENET64, (64, 64, 3), 296e6), (adm_unet.IMAGENET128, (128, 128, 3), 422e6)],
    ids=["imagenet64", "imagenet128"],
)
def test_presets_have_table_11s_parameter_counts(config, shape, published):
    count = adm_unet.num_parameters(config, shape)
    assert abs(count / published - 1) < 0.01, count


def test_a_small_model_runs_conditioned_on_class_and_starts_at_zero():
    model = adm_unet.ADMUNet(SMALL)
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
    t = jnp.array([1, 50, 999])
    y = jnp.array([0, 3, 9])
    params = jax.jit(model.init)(jax.random.key(1), x, t, y)
    apply = jax.jit(model.apply)
    out = apply(params, x, t, y)
    assert out.shape == (3, 8, 8, 2)
    np.testing.assert_array_equal(out, 0.0)  # the output convolution starts at zero
    # Perturb every parameter: the class label now changes the output.
    noisy = jax.tree.map(lambda p: p + 0.05 * jnp.ones_like(p), params)
    a = apply(noisy, x, t, y)
    b = apply(noisy, x, t, jnp.array([1, 4, 8]))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4
    with pytest.raises(ValueError, match="class-conditional: pass y"):
        model.apply(params, x, t)


def test_an_upsampler_takes_a_low_resolution_image():
    config = dataclasses.replace(SMALL, num_classes=None, low_res_channels=1)
    model = adm_unet.ADMUNet(config)
    x = jnp.zeros((2, 8, 8, 1))
    low = jnp.ones((2, 4, 4, 1))
    params = jax.eval_shape(model.init, jax.random.key(0), x, jnp.array([1, 2]), low_res=low)
    out = jax.eval_shape(model.apply, params, x, jnp.array([1, 2]), low_res=low)
    assert out.shape == (2, 8, 8, 2)
    with pytest.raises(ValueError, match="needs low_res with 1 channels"):
        jax.eval_shape(model.apply, params, x, jnp.array([1, 2]))


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="divisible by 2"):
        adm_unet.check_config(SMALL, (7, 8, 1))
    with pytest.raises(ValueError, match="never occur"):
        adm_unet.check_config(dataclasses.replace(SMALL, attention_resolutions=(3,)), (8, 8, 1))
    with pytest.raises(ValueError, match="heads do not divide"):
        adm_unet.check_config(
            dataclasses.replace(SMALL, num_head_channels=-1, num_heads=5), (8, 8, 1)
        )


def test_the_noise_aware_classifier_gives_logits_and_gradients_in_x():
    classifier = adm_unet.NoisyClassifier(dataclasses.replace(SMALL, num_classes=None), 10)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    t = jnp.array([3, 700])
    params = jax.eval_shape(classifier.init, jax.random.key(1), x, t)
    logits = jax.eval_shape(classifier.apply, params, x, t)
    assert logits.shape == (2, 10)
    grad = jax.eval_shape(jax.grad(lambda x, p: classifier.apply(p, x, t)[:, 3].sum()), x, params)
    assert grad.shape == x.shape
