"""Training loop: improvement, checkpoint -> SIGKILL -> resume equality, run bookkeeping."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpm_jax import checkpoints, evaluation, rundir, train_state
from experiments import common
from experiments import config as cfg
from experiments import swiss_roll as sr

REPO = Path(__file__).resolve().parents[1]
SMALL = sr.PRESETS["small"]
FAST_KEYS = {
    "train.steps": 120,
    "train.checkpoint_every": 40,
    "train.log_every": 20,
    "eval.num_test": 200,
    "eval.num_figure_samples": 100,
}
FAST = cfg.replace(SMALL, FAST_KEYS)
FAST_ARGS = ["--preset", "small", *(f"--config.{k}={v}" for k, v in FAST_KEYS.items())]


def _final_params(workdir: Path, config: sr.Config):
    keys = common.experiment_keys(config.seed)
    tx = sr.make_optimizer(config)
    template = train_state.create_train_state(
        sr.init_params(config, keys["init"]), tx, keys["train"]
    )
    state = checkpoints.restore_latest(checkpoints.checkpoint_manager(workdir), template)
    return state


def test_short_training_run_improves_the_exact_bound(tmp_path):
    config = cfg.replace(
        FAST,
        {"train.steps": 1000, "train.learning_rate": 0.01, "train.checkpoint_every": 1000},
    )
    keys = common.experiment_keys(config.seed)
    test_x = np.asarray(sr.dataset(config).sample(keys["test_data"], config.eval.num_test))
    initial = sr.exact_bound_fn(config, sr.init_params(config, keys["init"]))
    before = sr.evaluate(config, initial, test_x, keys["eval"])
    after = sr.run(config, tmp_path / "run")
    assert after["K"] > before["K"] + 0.3
    # The exact bound never exceeds the true log-likelihood by more than two standard errors.
    assert after["K"] <= after["true_log_likelihood"] + 2 * after["gap_true_minus_K_stderr"]


def test_results_json_and_figure(tmp_path):
    workdir = tmp_path / "run"
    sr.main(["--workdir", str(workdir)] + FAST_ARGS)
    results = json.loads((workdir / "results.json").read_text())
    for key in (
        "experiment",
        "K",
        "K_stderr",
        "K_minus_L_null",
        "L_null",
        "true_log_likelihood",
        "units",
        "num_test_examples",
        "T",
        "train_steps",
        "wall_seconds",
    ):
        assert key in results, key
    assert results["experiment"] == "swiss_roll"
    assert (
        results["T"] == 40 and results["train_steps"] == 120 and results["num_test_examples"] == 200
    )
    assert "bits" in results["units"]
    assert (workdir / results["figures"][0]).stat().st_size > 10_000
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [20, 40, 60, 80, 100, 120]
    # --eval_only evaluates the same checkpoint to the same numbers (same seed and keys).
    sr.main(["--workdir", str(workdir), "--eval_only"] + FAST_ARGS)
    again = json.loads((workdir / "results.json").read_text())
    assert again["K"] == results["K"] and again["train_steps"] == 120


def test_incompatible_workdir_is_refused_and_left_untouched(tmp_path):
    workdir = tmp_path / "run"
    sr.run(cfg.replace(FAST, {"train.steps": 40}), workdir)
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="model.num_hidden"):
        sr.run(cfg.replace(FAST, {"train.steps": 40, "model.num_hidden": 8}), workdir)
    rundir.save_run_config(tmp_path / "other", "binary_heartbeat", {})
    with pytest.raises(RuntimeError, match="binary_heartbeat"):
        sr.run(FAST, tmp_path / "other")
    after = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    assert before == after


def test_eval_only_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    workdir = tmp_path / "empty"
    with pytest.raises(SystemExit) as exit_info:
        sr.main(["--workdir", str(workdir), "--eval_only"])
    assert exit_info.value.code == 1
    assert "no checkpoint" in capsys.readouterr().err
    assert not workdir.exists()


def test_command_line_help_unknown_keys_and_bad_values(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sr.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for key, value in cfg.flatten(sr.Config()).items():
        assert f"--config.{key} " in out and f"default: {value!r}" in out, key
    with pytest.raises(SystemExit) as exit_info:
        sr.main(["--workdir", "x", "--config.train.no_such_key=3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown config key(s) ['train.no_such_key']" in err and "train.steps" in err
    with pytest.raises(SystemExit):
        sr.main(["--workdir", "x", "--config.train_steps=3"])  # a flat key of earlier versions
    assert "unknown config key(s) ['train_steps']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sr.main(["--workdir", "x", "--config.diffusion.steps=1"])
    assert "diffusion.steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sr.main(["--workdir", "x", "--config.diffusion.beta_1=1.5"])
    assert "diffusion.beta_1" in capsys.readouterr().err


def test_evaluate_counts_every_example_once():
    data = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    fn = lambda x, keys: jnp.sum(x, axis=1)  # noqa: E731
    out = evaluation.evaluate(fn, data, jax.random.PRNGKey(0), batch_size=5)
    np.testing.assert_array_equal(out, data.sum(1))


def test_resume_tolerates_a_metrics_line_cut_off_by_a_kill(tmp_path):
    path = tmp_path / rundir.METRICS_FILE
    path.write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "loss": 0.5}\n{"step": 30, "lo')
    rundir.trim_metrics(path, 20)
    assert path.read_text() == '{"step": 10, "loss": 1.0}\n{"step": 20, "loss": 0.5}\n'


def test_restoring_a_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    tx = optax.sgd(0.1)
    state = train_state.create_train_state({"w": jnp.ones((3,))}, tx, jax.random.PRNGKey(0))
    manager = checkpoints.checkpoint_manager(tmp_path)
    checkpoints.save(manager, 1, state)
    manager.wait_until_finished()
    other = train_state.create_train_state({"v": jnp.ones((4,))}, tx, jax.random.PRNGKey(0))
    with pytest.raises(RuntimeError, match="does not match this model"):
        checkpoints.restore_latest(checkpoints.checkpoint_manager(tmp_path), other)


def test_checkpoints_without_config_are_refused(tmp_path):
    (tmp_path / rundir.CHECKPOINT_DIR).mkdir()
    with pytest.raises(RuntimeError, match="no config.json"):
        rundir.check_run_compatible(tmp_path, "swiss_roll", {})


@pytest.mark.slow
def test_default_swiss_roll_run_meets_its_acceptance(tmp_path):
    """The default run (about 4 minutes on 2 cores): within 0.75 bits of the truth, never above it."""
    results = sr.run(sr.Config(), tmp_path / "run")
    gap, se = results["gap_true_minus_K"], results["gap_true_minus_K_stderr"]
    assert -2 * se <= gap < 0.75
