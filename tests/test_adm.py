"""experiments.adm (improved DDPM / ADM runs) and experiments.adm_quality's pieces."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import chain, parameterisation
from experiments import adm, adm_quality
from experiments import config as cfg
from experiments.adm_config import PRESETS, SMALL_RUN

TINY = {"diffusion.steps": 10, "train.steps": 2, "train.checkpoint_every": 2, "eval.num_test": 8}
#: One level of 32 channels: the smallest ADM U-Net, for the sampler tests.
ONE_LEVEL = {
    "model.channel_mult": (1,),
    "model.attention_resolutions": (),
    "model.num_res_blocks": 1,
}


def test_a_class_conditional_upsampler_trains_evaluates_and_draws(tmp_path):
    """One run through both conditioning paths: labels with dropout and a half-size image."""
    config = cfg.replace(
        PRESETS["upsampler"],
        {**SMALL_RUN, **TINY, **ONE_LEVEL, "model.class_cond": True, "model.label_dropout": 0.5},
    )
    r = adm.experiment.run(config, tmp_path)
    assert r["experiment"] == "adm" and r["num_test_examples"] == 8 and r["T"] == 10
    assert np.isfinite(r["nll_bits_per_dim"]) and r["nll_bits_per_dim"] > 0
    assert r["bound_of"] == "p(x | x at half size)" and "half size" in r["nll_bits_per_dim_kind"]
    assert "conditional codelength" in r["nll_bits_per_dim_kind"]
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "l_hybrid" in lines[-1]
    assert (tmp_path / r["figures"][0]).exists()
    assert "NLL (exact bound)" in adm.experiment.report(r)
    x = jnp.arange(2 * 8 * 8, dtype=jnp.float32).reshape(2, 8, 8, 1)
    low = adm.downsample(x)
    assert low.shape == (2, 4, 4, 1)
    np.testing.assert_allclose(low[0, 0, 0, 0], (0 + 1 + 8 + 9) / 4)  # the 2 x 2 area mean
    assert adm.bound_of(PRESETS["cfg"])[0] == "p(x | y)"
    assert adm.bound_of(PRESETS["default"])[0] == "p(x)"


def test_label_dropout_replaces_labels_by_the_null_class_at_its_rate():
    config = cfg.replace(PRESETS["cfg"], {"model.label_dropout": 0.3})
    batch = {"image": np.zeros((4000, 8, 8, 1), np.uint8), "label": np.arange(4000) % 10}
    y = np.asarray(adm.conditioning(config, batch, jax.random.key(0))["y"])
    dropped = y == config.model.null_class
    assert config.model.null_class == 10
    assert abs(dropped.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 4000)
    np.testing.assert_array_equal(y[~dropped], batch["label"][~dropped])
    # Without a key (evaluation, sampling) every label is kept.
    np.testing.assert_array_equal(adm.conditioning(config, batch)["y"], batch["label"])


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="learned_range goes with diffusion.loss=hybrid"):
        cfg.replace(PRESETS["default"], {"diffusion.loss": "simple"})
    with pytest.raises(ValueError, match="learned_range goes with"):
        cfg.replace(PRESETS["simple"], {"diffusion.loss": "hybrid"})
    with pytest.raises(ValueError, match="needs model.class_cond=True"):
        cfg.replace(PRESETS["default"], {"model.label_dropout": 0.1})
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\)"):
        cfg.replace(PRESETS["cfg"], {"model.label_dropout": 1.0})


def _tiny_model():
    config = cfg.replace(PRESETS["small"], {"diffusion.steps": 10, **ONE_LEVEL})
    params = adm.init_params(config, jax.random.key(0))
    # Perturb the zero-initialised output layer so the model is not identically zero.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    params = jax.tree.unflatten(
        tree, [p + 0.02 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    )
    return config, adm.model_fn(config, params)


def test_respaced_sampling_keeps_every_step_exactly_and_takes_a_decreasing_list():
    config, model = _tiny_model()
    key = jax.random.key(1)
    full = adm.generate(config, model, key, 3)
    listed = adm.generate(config, model, key, 3, timesteps=list(range(10, 0, -1)))
    np.testing.assert_array_equal(listed, full)
    kept = chain.uniform_timesteps(10, 4)
    strided = adm.generate(config, model, key, 3, num_steps=4)
    np.testing.assert_array_equal(
        adm.generate(config, model, key, 3, timesteps=kept[::-1].tolist()), strided
    )
    assert float(jnp.max(jnp.abs(strided - full))) > 1e-3  # fewer steps, other samples
    assert np.all(np.isfinite(adm.generate(config, model, key, 3, num_steps=4, method="ddim")))


def test_bad_respacing_lists_and_samplers_are_refused():
    config, model = _tiny_model()
    key = jax.random.key(1)
    with pytest.raises(ValueError, match="strictly decreasing"):
        adm.generate(config, model, key, 2, timesteps=[1, 5, 10])
    with pytest.raises(ValueError, match="strictly decreasing"):
        adm.generate(config, model, key, 2, timesteps=[10, 5, 5, 1])
    with pytest.raises(ValueError, match="must lie in 1..T = 10"):
        adm.generate(config, model, key, 2, timesteps=[11, 5, 1])
    with pytest.raises(ValueError, match="must lie in 1..T = 10"):
        adm.generate(config, model, key, 2, timesteps=[5, 0])
    with pytest.raises(ValueError, match="method must be"):
        adm.generate(config, model, key, 2, method="euler")
    with pytest.raises(ValueError, match="this needs a model with an epsilon output"):
        param = parameterisation.Parameterisation("x0", "fixed_small")
        parameterisation.eps_model(param, model)


def test_classifier_free_model_mixes_the_two_predictions():
    config = cfg.replace(PRESETS["cfg"], {**SMALL_RUN, "diffusion.steps": 10, **ONE_LEVEL})
    params = adm.init_params(config, jax.random.key(0))
    params = jax.tree.map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape), params
    )
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 1))
    t = jnp.array([1, 3, 7, 10], jnp.int32)
    y = jnp.array([0, 3, 5, 9], jnp.int32)
    eps_c, v_c = jax.jit(adm.model_fn(config, params, y=y))(x, t)
    eps_u, _ = jax.jit(adm.model_fn(config, params, y=jnp.full((4,), 10, jnp.int32)))(x, t)
    assert float(jnp.max(jnp.abs(eps_c - eps_u))) > 1e-3  # the label matters
    for s in (0.0, 1.0, 3.0):
        eps, v = jax.jit(adm_quality.cfg_model(config, params, y, s))(x, t)
        np.testing.assert_allclose(eps, eps_u + s * (eps_c - eps_u), atol=1e-5)
        np.testing.assert_allclose(v, v_c, atol=1e-6)
    with pytest.raises(ValueError, match="must be finite"):
        adm_quality.cfg_model(config, params, y, float("nan"))
    with pytest.raises(ValueError, match="must lie in 0..9"):
        adm_quality.cfg_model(config, params, jnp.array([0, 10]), 1.0)


def test_quantised_samples_are_bin_centres_and_the_metrics_see_labels():
    x = jnp.array([-1.7, -1.0, 0.0, 0.001, 0.999, 2.0])
    q = np.asarray(adm_quality.quantise(x))
    np.testing.assert_allclose((q + 1.0) * 127.5, np.round((q + 1.0) * 127.5), atol=1e-4)
    assert q[0] == -1.0 and q[-1] == 1.0
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 4))

    def features_fn(samples):
        logits = jnp.eye(10)[jnp.asarray(samples[:, 0], jnp.int32) % 10]
        return logits, samples

    samples = np.concatenate([np.arange(100)[:, None] % 10, rng.normal(size=(100, 3))], 1)
    row = adm_quality.quality(features_fn, real, samples, labels=np.arange(100) % 10)
    assert row["accuracy"] == 1.0 and row["num_samples"] == 100
    assert row["frechet_distance"] > 0 and row["frechet_distance_bootstrap_se"] > 0


@pytest.mark.slow  # three tiny runs and every study row: minutes on a CPU
def test_the_quality_study_runs_end_to_end_and_resumes(tmp_path):
    runs = {}
    for name, extra in (
        ("hybrid", {}),
        ("simple", {"diffusion.variance": "fixed_large", "diffusion.loss": "simple"}),
        ("cfg", {"model.class_cond": True, "model.label_dropout": 0.2}),
    ):
        config = cfg.replace(PRESETS["small"], {**TINY, **ONE_LEVEL, **extra})
        adm.experiment.run(config, tmp_path / name)
        runs[name] = str(tmp_path / name)
    argv = ["--workdir", str(tmp_path / "q"), *(f"--{k}={v}" for k, v in runs.items())]
    argv += ["--num_samples", "30", "--steps", "5", "--classifier_steps", "5"]
    argv += ["--guidance_steps", "5", "--scales", "0", "2"]
    adm_quality.main(argv)
    data = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert set(data["steps/hybrid"]) == {"ancestral 10", "ancestral 5", "ddim 5"}
    assert set(data["guidance/classifier_free"]) == {"0", "2"}
    assert "| L_hybrid |" in (tmp_path / "q" / "quality.md").read_text()
    seconds = data["steps/hybrid"]["ddim 5"]["seconds"]
    adm_quality.main(argv)  # every row is there: nothing is recomputed
    again = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert again["steps/hybrid"]["ddim 5"]["seconds"] == seconds


def test_guidance_with_a_zero_gradient_changes_nothing_and_a_gradient_moves_samples():
    config, model = _tiny_model()
    key = jax.random.key(4)

    def zero(x, t):
        return jnp.zeros_like(x)

    def up(x, t):  # grad of a "classifier" that prefers bright images
        return jnp.ones_like(x)

    for method in ("ancestral", "ddim"):
        plain = adm.generate(config, model, key, 4, method=method, num_steps=3)
        same = adm.generate(
            config, model, key, 4, method=method, num_steps=3, grad_fn=zero, guidance_scale=5.0
        )
        np.testing.assert_allclose(same, plain, atol=1e-6)
        brighter = adm.generate(
            config, model, key, 4, method=method, num_steps=3, grad_fn=up, guidance_scale=1.0
        )
        assert float(jnp.mean(brighter - plain)) > 1e-3, method


def test_the_documented_study_is_shown_verbatim_with_its_command():
    """docs/adm.md shows the committed study's tables as quality.md renders them."""
    root = Path(__file__).resolve().parents[1]
    data = json.loads((root / "docs/runs/adm/quality/quality.json").read_text())
    page = (root / "docs/adm.md").read_text()
    assert adm_quality.tables(data) in page
    for name in ("simple", "hybrid"):
        assert set(data[f"steps/{name}"]) == {
            "ancestral 1000",
            *(f"{m} {s}" for m in ("ancestral", "ddim") for s in adm_quality.STEPS),
        }
    for name in ("classifier", "classifier_free"):
        assert {float(s) for s in data[f"guidance/{name}"]} == set(adm_quality.SCALES)
