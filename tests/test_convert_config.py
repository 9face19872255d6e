"""Run directories of the flat-key configs of earlier versions: refused, converted, resumed."""

from __future__ import annotations

import json
import shutil

import pytest

from dpm_jax import rundir
from experiments import all_experiments, convert_config, dead_leaves
from experiments import binary_heartbeat as hb
from experiments import config as cfg
from experiments import swiss_roll as sr

# The Swiss roll's default config as the flat layout saved it (experiments/swiss_roll.py
# before sections).
OLD_SWISS_ROLL = {
    "diffusion_steps": 40,
    "beta_1": 1e-4,
    "learn_schedule": True,
    "schedule_baseline": "geometric",
    "readout": "reference_code",
    "objective": "one_t",
    "num_hidden": 16,
    "rbf_init_width": 1.5,
    "noise_std": 0.25,
    "batch_size": 512,
    "learning_rate": 3e-3,
    "schedule_learning_rate": 1e-3,
    "train_steps": 400_000,
    "grad_clip_norm": 0.0,
    "seed": 0,
    "num_test": 10_000,
    "eval_batch_size": 10_000,
    "checkpoint_every": 50_000,
    "log_every": 5_000,
    "max_skipped_in_a_row": 20,
    "steps_per_call": 1,
    "ema_decay": 0.0,
    "warmup_steps": 0,
    "num_figure_samples": 2_000,
    "ceiling_examples": 2_000,
    "ceiling_reference_size": 20_000,
}
# The config.json files of two runs trained with the flat layout (the default heartbeat and
# dead-leaves configs), as they were written.
OLD_HEARTBEAT = {
    "batch_size": 2000,
    "checkpoint_every": 10000,
    "diffusion_steps": 2000,
    "ema_decay": 0.0,
    "eval_batch_size": 1000,
    "grad_clip_norm": 0.0,
    "learning_rate": 0.01,
    "log_every": 1000,
    "max_skipped_in_a_row": 20,
    "num_figure_samples": 40,
    "num_hidden": 50,
    "num_layers": 3,
    "num_test": 2000,
    "num_validity_samples": 2000,
    "pi": 0.2,
    "readout_basis": 25,
    "seed": 0,
    "steps_per_call": 1,
    "stratified_t": True,
    "train_steps": 100000,
    "warmup_steps": 0,
}
OLD_DEAD_LEAVES = {
    "alpha": 3.0,
    "batch_size": 64,
    "checkpoint_every": 2000,
    "compute_dtype": "float32",
    "conv_features": 32,
    "conv_layers": 4,
    "data_dir": "",
    "data_seed": 0,
    "dataset": "dead_leaves",
    "dense_hidden": 0,
    "dense_layers": 0,
    "dense_output": 2,
    "diffusion_steps": 1000,
    "ema_decay": 0.0,
    "eval_batch_size": 100,
    "grad_clip_norm": 0.0,
    "image_size": 16,
    "learning_rate": 0.001,
    "log_every": 200,
    "max_skipped_in_a_row": 20,
    "min_learning_rate": 0.0001,
    "network": "reference_code",
    "num_posterior_examples": 8,
    "num_samples": 36,
    "num_scales": 3,
    "num_temporal_basis": 10,
    "num_test": 0,
    "num_test_images": 500,
    "num_train_images": 20000,
    "parzen_samples": 0,
    "parzen_validation": 1000,
    "r_max": 16.0,
    "r_min": 1.0,
    "readout": "reference_code",
    "seed": 0,
    "step1_beta": 0.001,
    "steps_per_call": 1,
    "train_steps": 30000,
    "upper_hidden": 32,
    "upper_layers": 2,
    "warmup_steps": 0,
}


def _write_old(workdir, experiment: str, config: dict) -> str:
    rundir.save_run_config(workdir, experiment, config)
    return (workdir / rundir.CONFIG_FILE).read_text()


def _saved(workdir) -> dict:
    return json.loads((workdir / rundir.CONFIG_FILE).read_text())


@pytest.mark.parametrize(
    "name, old, config",
    [
        ("swiss_roll", OLD_SWISS_ROLL, sr.Config()),
        ("binary_heartbeat", OLD_HEARTBEAT, hb.Config()),
        ("dead_leaves", OLD_DEAD_LEAVES, dead_leaves.Config()),
    ],
)
def test_an_old_default_config_converts_to_the_new_default(name, old, config, tmp_path, capsys):
    original = _write_old(tmp_path, name, old)
    convert_config.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "converted to dotted keys" in out
    saved = _saved(tmp_path)
    # Keys added after the flat layout are absent; a resumed run takes their defaults.
    later = ("eval.forward_samples", "eval.inpainting_examples")
    want = {k: v for k, v in cfg.to_json(config).items() if k not in later}
    assert saved == {"experiment": name, "config": want}
    assert (tmp_path / convert_config.BACKUP_FILE).read_text() == original
    if name == "dead_leaves":
        assert "dropped data_dir='', dataset='dead_leaves'" in out
    # Converting again changes nothing.
    convert_config.main([str(tmp_path)])
    assert "already in the dotted layout" in capsys.readouterr().out
    assert _saved(tmp_path) == saved


@pytest.mark.parametrize("name", sorted(n for n, e in all_experiments().items() if e.legacy_keys))
def test_every_experiment_converts_the_flat_form_of_each_preset(name):
    experiment = all_experiments()[name]
    inverse = {new: old for old, new in experiment.legacy_keys.items() if new is not None}
    for preset in experiment.presets.values():
        dotted = {k: v for k, v in cfg.to_json(preset).items() if k in inverse}  # no newer keys
        flat = {inverse[k]: v for k, v in dotted.items()}
        assert cfg.convert_legacy(flat, experiment.legacy_keys) == dotted


def test_unknown_or_invalid_old_configs_are_refused_and_left_alone(tmp_path, capsys):
    for values, message in [
        ({**OLD_SWISS_ROLL, "hidden_units": 3}, "unknown flat config key(s) ['hidden_units']"),
        ({**OLD_SWISS_ROLL, "diffusion_steps": 1}, "diffusion.steps (T) must be >= 2"),
    ]:
        original = _write_old(tmp_path, "swiss_roll", values)
        with pytest.raises(SystemExit) as exit_info:
            convert_config.main([str(tmp_path)])
        assert exit_info.value.code == 1
        assert message in capsys.readouterr().err
        assert (tmp_path / rundir.CONFIG_FILE).read_text() == original
        assert not (tmp_path / convert_config.BACKUP_FILE).exists()
    with pytest.raises(SystemExit):
        convert_config.main([str(tmp_path / "nowhere")])
    assert "does not exist" in capsys.readouterr().err


def test_an_old_run_is_refused_then_converts_and_resumes(tmp_path, capsys):
    """A Swiss roll run whose config.json has the flat keys: resume and --eval_only name the
    conversion command; after it the run resumes from its checkpoint and evaluates."""
    overrides = {
        "train.steps": 20,
        "train.checkpoint_every": 10,
        "train.log_every": 10,
        "eval.num_test": 100,
        "eval.num_figure_samples": 50,
        "eval.ceiling_examples": 50,
        "eval.ceiling_reference_size": 200,
    }
    config = cfg.replace(sr.PRESETS["small"], overrides)
    workdir = tmp_path / "run"
    sr.run(config, workdir)
    final = json.loads((workdir / "results.json").read_text())
    # Make it a run of the earlier version stopped at step 10: flat keys, no checkpoint 20.
    shutil.rmtree(workdir / rundir.CHECKPOINT_DIR / "20")
    inverse = {new: old for old, new in sr.LEGACY_KEYS.items() if new is not None}
    old = {inverse[k]: v for k, v in cfg.to_json(config).items() if k in inverse}  # no newer keys
    assert set(old) == set(OLD_SWISS_ROLL) | {"forward_samples"}  # a key added with sections
    _write_old(workdir, "swiss_roll", old)
    argv = ["--workdir", str(workdir), "--preset", "small"]
    argv += [f"--config.{k}={v}" for k, v in overrides.items()]
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    for extra in ([], ["--eval_only"]):
        with pytest.raises(SystemExit) as exit_info:
            sr.main(argv + extra)
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert f"python -m experiments.convert_config {workdir}" in err and "flat" in err
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before
    convert_config.main([str(workdir)])
    assert _saved(workdir)["config"] == cfg.to_json(config)
    sr.main(argv)  # resumes at step 10 and trains to 20
    resumed = json.loads((workdir / "results.json").read_text())
    assert resumed["train_steps"] == 20 and resumed["K"] == final["K"]
    lines = (workdir / rundir.METRICS_FILE).read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [10, 20]
    sr.main(argv + ["--eval_only"])
    assert json.loads((workdir / "results.json").read_text())["K"] == final["K"]


def test_an_image_run_with_a_flat_config_is_refused_before_its_data_are_made(tmp_path):
    rundir.save_run_config(tmp_path, "dead_leaves", OLD_DEAD_LEAVES)
    with pytest.raises(RuntimeError, match="python -m experiments.convert_config"):
        dead_leaves.experiment.run(dead_leaves.Config(), tmp_path, eval_only=True)
    with pytest.raises(RuntimeError, match="python -m experiments.convert_config"):
        dead_leaves.experiment.figures(dead_leaves.Config(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [rundir.CONFIG_FILE]
