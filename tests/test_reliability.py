"""Faults lose nothing: SIGKILL at many points (also mid checkpoint write), SIGTERM, non-finite
steps, and the same seed giving the same results."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from dpm_jax import checkpoints, rundir, runner, sharding, train_state
from experiments import common
from experiments import config as cfg
from experiments import swiss_roll as sr

REPO = Path(__file__).resolve().parents[1]
FAST_KEYS = {
    "train.steps": 120,
    "train.checkpoint_every": 40,
    "train.log_every": 20,
    "eval.num_test": 200,
    "eval.num_figure_samples": 100,
}
FAST = cfg.replace(sr.PRESETS["small"], FAST_KEYS)
FAST_ARGS = ["--preset", "small", *(f"--config.{k}={v}" for k, v in FAST_KEYS.items())]

# The Swiss roll experiment in a child process that kills itself: with SIGKILL when it asks
# for batch KILL_AT, or right after starting the (asynchronous) write of checkpoint
# KILL_ON_SAVE, or with SIGTERM (SIGINT) when it asks for batch TERM_AT (INT_AT).
CHILD = """
import os, signal, sys
import orbax.checkpoint as ocp
from dpm_jax import runner
from experiments import swiss_roll

env = {
    k: int(os.environ[k])
    for k in ("KILL_AT", "KILL_ON_SAVE", "TERM_AT", "INT_AT")
    if k in os.environ
}
original_fit, original_save = runner.fit, ocp.CheckpointManager.save

def fit(**kwargs):
    batch_fn = kwargs["batch_fn"]
    def faulty_batch_fn(step):
        if step == env.get("KILL_AT"):
            os.kill(os.getpid(), signal.SIGKILL)
        if step == env.get("TERM_AT"):
            os.kill(os.getpid(), signal.SIGTERM)
        if step == env.get("INT_AT"):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
        return batch_fn(step)
    kwargs["batch_fn"] = faulty_batch_fn
    return original_fit(**kwargs)

def save(self, step, *args, **kwargs):
    out = original_save(self, step, *args, **kwargs)
    if step == env.get("KILL_ON_SAVE"):
        os.kill(os.getpid(), signal.SIGKILL)
    return out

runner.fit = fit
ocp.CheckpointManager.save = save
swiss_roll.main(sys.argv[1:])
"""


def _run_child(workdir: Path, **faults) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **{k: str(v) for k, v in faults.items()}}
    return subprocess.run(
        [sys.executable, "-c", CHILD, "--workdir", str(workdir)] + FAST_ARGS,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _template(config: sr.Config) -> train_state.TrainState:
    keys = common.experiment_keys(config.seed)
    tx = sr.make_optimizer(config)
    return train_state.create_train_state(sr.init_params(config, keys["init"]), tx, keys["train"])


def _final_state(workdir: Path, config: sr.Config) -> train_state.TrainState:
    return checkpoints.restore_latest(checkpoints.checkpoint_manager(workdir), _template(config))


def _assert_same_state(a: train_state.TrainState, b: train_state.TrainState) -> None:
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# Kill points, in the order one run suffers them: before the first step, mid-interval,
# during a checkpoint write, just before a checkpoint, and during the final write. Twenty
# kills at random moments: test_twenty_random_sigkills (slow) and scripts/sigkill_soak.py.
KILL_POINTS = (
    {"KILL_AT": 0},
    {"KILL_AT": 17},
    {"KILL_ON_SAVE": 40},
    {"KILL_AT": 79},
    {"KILL_ON_SAVE": 120},
)


def test_sigkill_at_many_points_then_resume_gives_the_uninterrupted_parameters(
    straight_run, tmp_path
):
    """One run killed five times (two of them while a checkpoint was being written)
    resumes every time and ends bitwise equal to an uninterrupted run."""
    straight = straight_run[0]
    killed = tmp_path / "killed"
    survived, interrupted_writes = 0, 0
    for fault in KILL_POINTS:
        proc = _run_child(killed, **fault)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.stderr[-2000:])
        partial = list((killed / rundir.CHECKPOINT_DIR).glob("*.orbax-checkpoint-tmp*"))
        interrupted_writes += bool(partial)
        # Every checkpoint orbax lists is complete and restorable.
        manager = checkpoints.checkpoint_manager(killed)
        for step in manager.all_steps():
            assert _restore_step(manager, step) == step
        manager.close()
        survived += 1
    assert not (killed / "results.json").exists()
    sr.main(["--workdir", str(killed)] + FAST_ARGS)  # the sixth start runs to the end
    assert survived == len(KILL_POINTS)
    # The kills right after a write began did catch writes in progress (left as temporary
    # directories, never listed as checkpoints), and the resumed runs cleaned them up.
    assert interrupted_writes >= 1
    assert not list((killed / rundir.CHECKPOINT_DIR).glob("*.orbax-checkpoint-tmp*"))
    _assert_same_state(_final_state(straight, FAST), _final_state(killed, FAST))
    a = json.loads((straight / "results.json").read_text())
    b = json.loads((killed / "results.json").read_text())
    assert a["K"] == b["K"]


def _restore_step(manager, step: int) -> int:
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _template(FAST))
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    return int(state.step)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> tuple[Path, dict]:
    """(workdir, results) of one uninterrupted FAST run, the reference of the others."""
    straight = tmp_path_factory.mktemp("straight") / "run"
    return straight, sr.run(FAST, straight)


@pytest.mark.parametrize(
    ("fault", "signame", "status"), [("TERM_AT", "SIGTERM", 143), ("INT_AT", "SIGINT", 130)]
)
def test_sigterm_or_ctrl_c_saves_a_checkpoint_and_the_resumed_run_matches(
    fault, signame, status, straight_run, tmp_path
):
    """SIGTERM and Ctrl-C (SIGINT) take one path: the step in flight is checkpointed and
    the command exits with 128 + the signal's number (143, what schedulers expect; 130)."""
    stopped = tmp_path / "stopped"
    proc = _run_child(stopped, **{fault: 57})
    assert proc.returncode == status, proc.stderr[-2000:]
    assert f"stopped by {signame}" in proc.stderr and "resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The signal comes while batch 57 is prefetched (during step 57 or 58, 1-based); the
    # step in flight finishes and is checkpointed.
    stopped_at = int(re.search(r"after step (\d+)", proc.stderr).group(1))
    assert stopped_at in (57, 58)
    manager = checkpoints.checkpoint_manager(stopped)
    assert manager.latest_step() == stopped_at
    manager.close()
    sr.main(["--workdir", str(stopped)] + FAST_ARGS)
    _assert_same_state(_final_state(straight_run[0], FAST), _final_state(stopped, FAST))


def test_same_seed_and_config_give_the_same_results_json(straight_run, tmp_path):
    a = straight_run[1]
    b = sr.run(FAST, tmp_path / "b")
    varying = {"wall_seconds"}
    assert {k: v for k, v in a.items() if k not in varying} == {
        k: v for k, v in b.items() if k not in varying
    }


# ----------------------------------------------------------------------------------------------
# Non-finite steps.


def _fit(tmp_path, loss_fn, value_fn, tx, **kwargs):
    """``runner.fit`` on a one-parameter model; batch ``step`` is ``[value_fn(step)]``."""
    state = train_state.create_train_state({"w": jnp.ones(())}, tx, jax.random.PRNGKey(0))
    return runner.fit(
        workdir=tmp_path,
        state=state,
        loss_fn=lambda params, batch, key: loss_fn(params, batch[0], key),
        tx=tx,
        batch_fn=lambda step: np.array([value_fn(step)], np.float32),
        mesh=sharding.data_mesh(jax.devices()[:1]),
        **kwargs,
    )


def test_non_finite_steps_are_skipped_and_counted(tmp_path):
    bad = {3, 4, 8}  # 0-based steps with a NaN batch
    lr = 0.1
    state = _fit(
        tmp_path,
        lambda params, batch, key: (batch * params["w"] ** 2, {}),
        lambda step: np.nan if step in bad else 1.0,
        optax.sgd(lr),
        num_steps=10,
        checkpoint_every=5,
        log_every=1,
    )
    # Each good step multiplies w by (1 - 2 lr); skipped steps leave it alone.
    np.testing.assert_allclose(float(state.params["w"]), (1 - 2 * lr) ** (10 - len(bad)), 1e-6)
    assert int(state.skipped) == 3 and int(state.skipped_in_a_row) == 0
    lines = [json.loads(x) for x in (tmp_path / rundir.METRICS_FILE).read_text().splitlines()]
    assert [int(r["skipped_steps"]) for r in lines] == [0, 0, 0, 1, 2, 2, 2, 2, 3, 3]
    assert [int(r["skipped_in_a_row"]) for r in lines] == [0, 0, 0, 1, 2, 0, 0, 0, 1, 0]


def test_a_gradient_that_is_infinite_with_a_finite_loss_is_skipped(tmp_path):
    state = _fit(
        tmp_path,
        lambda params, batch, key: (jnp.sqrt(jnp.abs(params["w"] - batch)), {}),
        lambda step: 1.0 if step == 0 else 5.0,  # w == batch at step 0
        optax.sgd(0.1),
        num_steps=3,
        checkpoint_every=3,
        log_every=3,
    )
    assert int(state.skipped) == 1 and np.isfinite(float(state.params["w"]))


def test_too_many_skips_in_a_row_stop_the_run_with_its_checkpoint_intact(tmp_path):
    with pytest.raises(FloatingPointError, match="non-finite") as info:
        _fit(
            tmp_path,
            lambda params, batch, key: (jnp.where(batch > 3, jnp.nan, params["w"] ** 2), {}),
            lambda step: step,  # NaN from the 5th step on
            optax.adam(0.1),
            num_steps=50,
            checkpoint_every=2,
            log_every=1,
            max_skipped_in_a_row=3,
        )
    assert "step 7" in str(info.value) and "intact" in str(info.value)
    template = train_state.create_train_state(
        {"w": jnp.ones(())}, optax.adam(0.1), jax.random.PRNGKey(0)
    )
    restored = checkpoints.restore_latest(checkpoints.checkpoint_manager(tmp_path), template)
    assert int(restored.step) == 6 and int(restored.skipped) == 2
    assert np.isfinite(float(restored.params["w"]))


def test_several_steps_per_call_train_the_same_model(straight_run, tmp_path):
    """steps_per_call = 7 (a lax.scan over steps, split at every log and checkpoint step)
    gives the parameters of one step per call, and survives a kill like any run."""
    one_dir, one = straight_run
    grouped = cfg.replace(FAST, {"train.steps_per_call": 7})
    many = sr.run(grouped, tmp_path / "many")
    a, b = _final_state(one_dir, FAST), _final_state(tmp_path / "many", grouped)
    assert int(a.step) == int(b.step) == FAST.train.steps
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(many["K"], one["K"], atol=1e-4)
    lines = (tmp_path / "many" / rundir.METRICS_FILE).read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [20, 40, 60, 80, 100, 120]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["swiss_roll", "dead_leaves"])
def test_twenty_random_sigkills(experiment, tmp_path):
    """scripts/sigkill_soak.py: 20 SIGKILLs at random moments (mid-step and mid-write) over
    one run; every resume succeeds, no checkpoint is corrupt, the final state and K equal
    the uninterrupted run's bitwise. About 5 (Swiss roll) and 10 (dead leaves) minutes."""
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "sigkill_soak.py"), "--experiment", experiment,
         "--kills", "20", "--seed", "1", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["sigkills_delivered"] >= 20 and summary["resumes_ok"] == 20
    assert summary["corrupt_checkpoints"] == 0 and summary["final_state_bitwise_equal"]
    assert summary["killed_during_checkpoint_write"] >= 1
    assert summary["K_killed"] == summary["K_uninterrupted"]
