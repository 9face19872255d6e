"""Training loop: improvement, checkpoint -> SIGKILL -> resume equality, run bookkeeping."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpm_jax import training
from experiments import common
from experiments import swiss_roll as sr

REPO = Path(__file__).resolve().parents[1]
SMALL = sr.PRESETS["small"]
FAST = dataclasses.replace(
    SMALL, train_steps=120, checkpoint_every=40, log_every=20, num_test=200, num_figure_samples=100
)
FAST_ARGS = [
    "--preset",
    "small",
    "--config.train_steps=120",
    "--config.checkpoint_every=40",
    "--config.log_every=20",
    "--config.num_test=200",
    "--config.num_figure_samples=100",
]

# Runs the experiment in a child process that SIGKILLs itself when it asks for batch KILL_AT.
CHILD = """
import os, signal, sys
from dpm_jax import training
from experiments import swiss_roll

kill_at = int(os.environ["KILL_AT"])
original_fit = training.fit

def fit(**kwargs):
    batch_fn = kwargs["batch_fn"]
    def killing_batch_fn(step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return batch_fn(step)
    kwargs["batch_fn"] = killing_batch_fn
    return original_fit(**kwargs)

training.fit = fit
swiss_roll.main(sys.argv[1:])
"""


def _final_params(workdir: Path, config: sr.Config):
    keys = common.experiment_keys(config.seed)
    tx = sr.make_optimizer(config)
    template = training.create_train_state(sr.init_params(config, keys["init"]), tx, keys["train"])
    state = training.restore_latest(training.checkpoint_manager(workdir), template)
    return state


def test_short_training_run_improves_the_exact_bound(tmp_path):
    config = dataclasses.replace(FAST, train_steps=1000, learning_rate=0.01, checkpoint_every=1000)
    keys = common.experiment_keys(config.seed)
    test_x = np.asarray(sr._data(config).sample(keys["test_data"], config.num_test))
    before = sr.evaluate(config, sr.init_params(config, keys["init"]), test_x, keys["eval"])
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


@pytest.mark.parametrize("kill_at", [50, 95])
def test_sigkill_and_resume_gives_the_uninterrupted_parameters(tmp_path, kill_at):
    """A run killed mid-training resumes from its last complete checkpoint and ends bitwise equal."""
    straight = tmp_path / "straight"
    sr.run(FAST, straight)
    killed = tmp_path / "killed"
    env = {**os.environ, "KILL_AT": str(kill_at), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "--workdir", str(killed)] + FAST_ARGS,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (killed / "results.json").exists()
    sr.main(["--workdir", str(killed)] + FAST_ARGS)  # resume to the end
    a, b = _final_params(straight, FAST), _final_params(killed, FAST)
    assert int(a.step) == int(b.step) == FAST.train_steps
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_incompatible_workdir_is_refused_and_left_untouched(tmp_path):
    workdir = tmp_path / "run"
    sr.run(dataclasses.replace(FAST, train_steps=40), workdir)
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="num_hidden"):
        sr.run(dataclasses.replace(FAST, train_steps=40, num_hidden=8), workdir)
    training.save_run_config(tmp_path / "other", "binary_heartbeat", {})
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
    for field in dataclasses.fields(sr.Config):
        assert f"--config.{field.name}" in out
    with pytest.raises(SystemExit):
        sr.main(["--workdir", "x", "--config.no_such_key=3"])
    assert "unknown config key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sr.main(["--workdir", "x", "--config.diffusion_steps=1"])
    assert "diffusion_steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sr.main(["--workdir", "x", "--config.beta_1=1.5"])
    assert "beta_1" in capsys.readouterr().err


def test_evaluate_per_example_counts_every_example_once():
    data = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    fn = jax.jit(lambda x, key: jnp.sum(x, axis=1))
    out = training.evaluate_per_example(fn, data, jax.random.PRNGKey(0), batch_size=5)
    np.testing.assert_array_equal(out, data.sum(1))


def _nan_loss_case():
    """NaN loss from the 5th step on, seen at a log step (params finite before it)."""
    return (
        optax.sgd(0.1),
        lambda params, batch, key: (jnp.where(batch > 3, jnp.nan, params["w"] ** 2), {}),
        lambda step: jnp.asarray(step, jnp.float32),
        {"checkpoint_every": 2, "log_every": 1},
    )


def _infinite_gradient_case():
    """Finite loss but infinite gradient at the 5th step, seen at a save step."""
    return (
        optax.sgd(0.0),
        lambda params, batch, key: (jnp.sqrt(jnp.abs(params["w"] - batch)), {}),
        lambda step: jnp.float32(1.0 if step == 4 else 5.0),
        {"checkpoint_every": 1, "log_every": 100},
    )


@pytest.mark.parametrize("case", [_nan_loss_case, _infinite_gradient_case])
def test_a_non_finite_step_stops_the_run_and_is_never_checkpointed(tmp_path, case):
    tx, loss_fn, batch_fn, cadence = case()
    state = training.create_train_state({"w": jnp.ones(())}, tx, jax.random.PRNGKey(0))
    with pytest.raises(FloatingPointError, match="step 5"):
        training.fit(
            workdir=tmp_path,
            state=state,
            train_step=training.make_train_step(loss_fn, tx),
            batch_fn=batch_fn,
            num_steps=10,
            **cadence,
        )
    restored = training.restore_latest(training.checkpoint_manager(tmp_path), state)
    assert int(restored.step) == 4 and np.isfinite(float(restored.params["w"]))


def test_resume_tolerates_a_metrics_line_cut_off_by_a_kill(tmp_path):
    path = tmp_path / training.METRICS_FILE
    path.write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "loss": 0.5}\n{"step": 30, "lo')
    training._trim_metrics(path, 20)
    assert path.read_text() == '{"step": 10, "loss": 1.0}\n{"step": 20, "loss": 0.5}\n'


def test_restoring_a_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    tx = optax.sgd(0.1)
    state = training.create_train_state({"w": jnp.ones((3,))}, tx, jax.random.PRNGKey(0))
    manager = training.checkpoint_manager(tmp_path)
    manager.save(1, args=training.ocp.args.StandardSave(state))
    manager.wait_until_finished()
    other = training.create_train_state({"v": jnp.ones((4,))}, tx, jax.random.PRNGKey(0))
    with pytest.raises(RuntimeError, match="does not match this model"):
        training.restore_latest(training.checkpoint_manager(tmp_path), other)


def test_checkpoints_without_config_are_refused(tmp_path):
    (tmp_path / training.CHECKPOINT_DIR).mkdir()
    with pytest.raises(RuntimeError, match="no config.json"):
        training.check_run_compatible(tmp_path, "swiss_roll", {})


@pytest.mark.slow
def test_default_swiss_roll_run_meets_its_acceptance(tmp_path):
    """The default run (about 4 minutes on 2 cores): within 0.75 bits of the truth, never above it."""
    results = sr.run(sr.Config(), tmp_path / "run")
    gap, se = results["gap_true_minus_K"], results["gap_true_minus_K_stderr"]
    assert -2 * se <= gap < 0.75
