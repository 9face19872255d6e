"""The DDPM Swiss roll and dead-leaves experiments end to end on their small presets."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax.models import EpsilonMLP
from experiments import config as cfg
from experiments import ddpm_dead_leaves, ddpm_swiss_roll


def test_epsilon_mlp_starts_at_zero_and_checks_its_inputs():
    model = EpsilonMLP(num_hidden=16, num_layers=2, embedding_dim=8)
    x = jax.random.normal(jax.random.key(0), (5, 2))
    t = jnp.arange(1, 6, dtype=jnp.int32)
    params = model.init(jax.random.key(1), x, t)
    np.testing.assert_array_equal(model.apply(params, x, t), 0.0)  # zero-initialised output
    with pytest.raises(AssertionError):
        model.apply(params, x, t[:3])


def test_swiss_roll_eps_model_trains_and_its_bound_stays_below_the_truth(tmp_path):
    config = cfg.replace(
        ddpm_swiss_roll.PRESETS["small"], {"eval.num_test": 300, "eval.forward_samples": 1}
    )
    r = ddpm_swiss_roll.experiment.run(config, tmp_path)
    # L_simple starts at E eps^2 = 1 (output zero) and falls as the model learns.
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["l_simple"] < 0.5
    # A lower bound on the exact log-density of the same test points.
    assert r["gap_true_minus_K"] > -2 * r["gap_true_minus_K_stderr"]
    assert r["K"] <= r["K_schedule_ceiling"] + 3 * r["K_schedule_ceiling_stderr"] + 0.5
    assert len(r["betas"]) == 40 and r["betas"][0] == pytest.approx(1e-4 * 1000 / 40)
    assert "DDPM epsilon-MLP" in ddpm_swiss_roll.experiment.report(r)
    with pytest.raises(ValueError, match="beta_end \\* 1000 / T < 1"):
        cfg.replace(config, {"diffusion.steps": 10})  # beta_T = 0.02 * 100 = 2


def test_dead_leaves_small_preset_runs_on_the_2015_images(tmp_path):
    config = cfg.replace(
        ddpm_dead_leaves.PRESETS["small"],
        {"train.steps": 4, "train.checkpoint_every": 2, "eval.rate_distortion_examples": 0},
    )
    r = ddpm_dead_leaves.experiment.run(config, tmp_path)
    assert r["experiment"] == "ddpm_dead_leaves" and r["num_test_examples"] == 20
    assert np.isfinite(r["nll_bits_per_dim"]) and r["nll_bits_per_dim"] > 0
    assert "rate_distortion" not in r and len(r["figures"]) == 2  # samples, progressive
    # The same generated test images as the 2015 experiment's small preset.
    from experiments import dead_leaves

    ours = ddpm_dead_leaves.experiment.load_split(config, "test")
    theirs = dead_leaves.experiment.load_split(dead_leaves.PRESETS["small"], "test")
    np.testing.assert_array_equal(ours.pixels, theirs.pixels)
