"""experiments.ddpm: configs, bad input, training and the exact bits/dim bound end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax.data.scaling import fit_scaling
from experiments import config as cfg
from experiments import ddpm
from experiments.ddpm_config import PRESETS

FAST = {"train.steps": 4, "train.checkpoint_every": 2, "train.log_every": 2, "eval.num_test": 16}


def test_small_preset_end_to_end_and_eval_only_reproduces(tmp_path):
    config = cfg.replace(PRESETS["small"], FAST)
    r = ddpm.experiment.run(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["train_steps"] == 4 and saved["num_test_examples"] == 16
    assert saved["experiment"] == "ddpm" and "bits per dimension" in saved["units"]
    # A codelength of 8-bit data: positive, and at most L_T + KLs + decoder as reported.
    bt = saved["bound_terms"]
    total = bt["prior_L_T"] + bt["kl_sum_t2_to_T"] + bt["decoder_L_0"]
    assert saved["nll_bits_per_dim"] > 0
    np.testing.assert_allclose(saved["nll_bits_per_dim"], total, rtol=1e-6)
    # The 2015 unit is the same bound through the scaling's Jacobian (independent arithmetic).
    train = ddpm.experiment.load_split(config, "train")
    scale = fit_scaling(train).scale
    expected = -(saved["nll_bits_per_dim"] + math.log2(scale / 256))  # one channel
    np.testing.assert_allclose(saved["K_2015_units"], expected, rtol=1e-6)
    assert np.isfinite(saved["pixel_categorical_nll_bits_per_dim_8bit"])
    assert all((tmp_path / f).exists() for f in saved["figures"])
    # DDPM Fig. 5: T rates, each the terms still to come, so they fall with t (KLs >= 0).
    rd = saved["rate_distortion"]
    rate, rmse = np.array(rd["rate_bits_per_dim"]), np.array(rd["distortion_rmse"])
    assert rate.shape == rmse.shape == (config.diffusion.steps,)
    assert np.all(np.diff(rate) <= 1e-6) and np.all(rmse >= 0)
    assert any(f.endswith("_rate_distortion.png") for f in saved["figures"])
    beside = json.loads((tmp_path / "figures" / "ddpm_rate_distortion.json").read_text())
    assert beside == rd
    assert rmse.max() <= 255.0 * math.sqrt(4) / 2 + 1e-3  # clipped x0_hat: at most 2 apart
    assert "NLL (exact bound)" in ddpm.experiment.report(r)
    again = ddpm.experiment.run(config, tmp_path, eval_only=True)
    assert again["nll_bits_per_dim"] == r["nll_bits_per_dim"]
    # --figures redraws the same figures from the checkpoint, without the bound.
    for path in saved["figures"]:
        (tmp_path / path).unlink()
    redrawn = ddpm.experiment.figures(config, tmp_path)
    assert sorted(p.name for p in redrawn) == sorted(Path(f).name for f in saved["figures"])
    assert all(p.exists() for p in redrawn)


def test_flips_are_deterministic_per_step_and_about_half():
    batch = np.arange(2 * 3 * 4).reshape(2, 3, 4, 1).astype(np.uint8)
    batch = np.repeat(batch, 500, axis=0)
    a, b = ddpm.flip_batch(batch, 0, 7), ddpm.flip_batch(batch, 0, 7)
    np.testing.assert_array_equal(a, b)
    flipped = np.all(a == batch[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(flipped | np.all(a == batch, axis=(1, 2, 3)))
    assert 400 < flipped.sum() < 600  # of 1,000 images, p = 1/2
    # A process loading rows 300..599 of the global batch flips them as the whole batch does.
    rows = slice(300, 600)
    np.testing.assert_array_equal(ddpm.flip_batch(batch[rows], 0, 7, rows), a[rows])


def test_training_loss_is_l_simple_and_the_bound_option_is_bits_per_dim():
    config = cfg.replace(PRESETS["small"], FAST)
    params = ddpm.init_params(config, jax.random.key(0))
    batch = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    loss, aux = ddpm.loss_fn(config, params, batch, jax.random.key(1))
    # The output layer starts at zero, so eps_hat = 0 and L_simple = E eps^2 = 1 (the mean of
    # 4,096 squared normals: standard error 0.022).
    assert abs(float(loss) - 1.0) < 0.1 and "l_simple" in aux
    bound = cfg.replace(config, {"diffusion.loss": "bound"})
    loss, aux = ddpm.loss_fn(bound, params, batch, jax.random.key(1))
    assert float(loss) > 0 and "bits_per_dim_estimate" in aux


@pytest.mark.parametrize(
    "overrides, phrase",
    [
        ({"diffusion.mean": "score"}, "diffusion.mean must be one of"),
        ({"diffusion.variance": "learned"}, "diffusion.variance must be one of"),
        ({"diffusion.mean": "x0"}, "diffusion.loss=simple is L_simple"),
        ({"model.attn_resolutions": (3,)}, "model.attn_resolutions [3] never occur"),
        ({"model.ch": 48}, "use a model.ch that is a multiple of 32"),
        ({"model.ch_mult": (1, 2, 2, 2, 2)}, "height and width must be divisible by 16"),
        ({"diffusion.beta_end": 1e-5}, "0 < diffusion.beta_start <= diffusion.beta_end < 1"),
    ],
)
def test_bad_configs_name_the_key_and_the_fix(overrides, phrase):
    with pytest.raises(ValueError, match=phrase.replace("[", r"\[").replace("]", r"\]")):
        cfg.replace(PRESETS["small"], overrides)


def test_presets_build_for_their_images():
    for name, config in PRESETS.items():
        assert config.image_shape()[0] % 2 ** (len(config.model.ch_mult) - 1) == 0, name
    assert PRESETS["cifar10"].model.unet() == ddpm.unet.CIFAR10


@pytest.mark.slow  # full size: the 35.7M-parameter U-Net on a CPU
def test_cifar10_preset_takes_training_steps_on_cpu():
    """Three optimiser steps of the paper's configuration (batch 2): finite L_simple, the
    parameters move, the U-Net maps (N, 32, 32, 3) to (N, 32, 32, 3)."""
    from dpm_jax import sharding, train_state

    config = cfg.replace(PRESETS["cifar10"], {"train.batch_size": 2, "train.warmup_steps": 1})
    params = ddpm.init_params(config, jax.random.key(0))
    assert sum(p.size for p in jax.tree.leaves(params)) == 35_746_307
    x = jnp.zeros((2, 32, 32, 3))
    assert ddpm.model_fn(config, params)(x, jnp.array([1, 999])).shape == (2, 32, 32, 3)
    mesh = sharding.data_mesh()
    tx = ddpm.make_optimizer(config)
    state = sharding.replicate(train_state.create_train_state(params, tx, jax.random.key(1)), mesh)
    step = train_state.make_train_step(
        lambda p, b, k: ddpm.loss_fn(config, p, b, k), tx, mesh, ema_decay=0.9999
    )
    before = np.asarray(jax.tree.leaves(state.params)[0]).copy()
    rng = np.random.default_rng(0)
    for _ in range(3):
        batch = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
        state, metrics = step(state, sharding.host_batch_to_global(batch, mesh))
        assert np.isfinite(float(metrics["loss"])) and int(metrics["skipped_steps"]) == 0
    assert int(state.step) == 3
    assert not np.array_equal(np.asarray(jax.tree.leaves(state.params)[0]), before)


def test_a_uniform_model_over_the_256_levels_reports_8_bits_per_dim(monkeypatch):
    """The unit of the reported bound: P = 1/256 for every element of an RGB image is
    8 bits/dim exactly, and a density 1/scale per dimension in the 2015 unit."""
    from dpm_jax import terms

    config = cfg.replace(
        PRESETS["small"],
        {
            "data.dataset": "cifar10",
            "data.source": "tfds",
            "model.attn_resolutions": (16,),
            "eval.batch_size": 4,
        },
    )
    dims = 32 * 32 * 3

    def uniform_bound_fn(config, params):
        def bound(pixels, key):
            n = pixels.shape[0]
            zero = jnp.zeros((n,), jnp.float32)
            decoder = jnp.full((n,), dims * math.log(256.0), jnp.float32)
            return terms.in_bits(terms.BoundTerms(prior=zero, kl=zero, decoder=decoder))

        return bound

    monkeypatch.setattr(ddpm, "exact_bound_fn", uniform_bound_fn)
    pixels = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    images = [{"image": p} for p in pixels]
    r = ddpm.evaluate(config, None, images, images, jax.random.key(0))
    np.testing.assert_allclose(r["nll_bits_per_dim"], 8.0, rtol=1e-6)
    assert r["nll_bits_per_dim_stderr"] == pytest.approx(0.0, abs=1e-6)
    scale = fit_scaling(images).scale
    np.testing.assert_allclose(r["K_2015_units"], -3 * math.log2(scale), rtol=1e-5)
