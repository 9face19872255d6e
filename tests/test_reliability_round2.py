"""Reliability, second round: what a new user's bad inputs and habits used to break.

One test (or a few) per item of the issue, numbered as there; each failed before the fix.
Ctrl-C (item 4) is tested with the other signals in ``tests/test_reliability.py``, the
Parzen estimate (item 9) in ``tests/test_parzen.py``, ``--help`` (item 12) in
``tests/test_experiments.py``.
"""

import json
import os
import shutil
import stat

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpm_jax import (
    binomial,
    checkpoints,
    gaussian,
    rundir,
    runner,
    schedules,
    sharding,
    train_state,
)
from dpm_jax.models import NormalizedRBFNetwork
from experiments import common, report
from experiments import config as cfg
from experiments import swiss_roll as sr

TINY = cfg.replace(
    sr.PRESETS["small"],
    {
        "train.steps": 20,
        "train.checkpoint_every": 10,
        "train.log_every": 10,
        "diffusion.steps": 10,
        "train.batch_size": 64,
        "eval.num_test": 100,
        "eval.batch_size": 100,
        "eval.forward_samples": 1,
        "eval.num_figure_samples": 50,
        "eval.ceiling_examples": 50,
        "eval.ceiling_reference_size": 200,
    },
)
TINY_ARGS = ["--preset", "small"] + [
    f"--config.{k}={v}"
    for k, v in cfg.flatten(TINY).items()
    if v != cfg.flatten(sr.PRESETS["small"])[k]
]
KEY = jax.random.PRNGKey(0)


def _state(workdir):
    manager = checkpoints.checkpoint_manager(workdir)
    keys = common.experiment_keys(TINY.seed)
    template = train_state.create_train_state(
        sr.init_params(TINY, keys["init"]), sr.make_optimizer(TINY), keys["train"]
    )
    return manager, template


# 1. A non-finite learning rate -------------------------------------------------------------


def test_a_nan_learning_rate_never_reaches_a_checkpoint(tmp_path):
    tx = optax.sgd(float("nan"))
    start = np.array([0.5, -1.0], np.float32)
    state = train_state.create_train_state({"w": jnp.asarray(start)}, tx, KEY)
    with pytest.raises(FloatingPointError, match="learning rate is finite"):
        runner.fit(
            workdir=tmp_path,
            state=state,
            loss_fn=lambda p, b, k: (jnp.sum(jnp.square(p["w"] - b)), {}),
            tx=tx,
            batch_fn=lambda step: np.ones(2, np.float32),
            mesh=sharding.data_mesh(jax.devices()[:1]),
            num_steps=20,
            checkpoint_every=10,
            log_every=10,
            max_skipped_in_a_row=15,  # checkpoint 10 is written, the run stops at 20
        )
    manager = checkpoints.checkpoint_manager(tmp_path)
    template = train_state.create_train_state({"w": jnp.zeros(2)}, tx, KEY)
    restored = checkpoints.restore_latest(manager, template)
    for leaf in jax.tree.leaves((restored.params, restored.opt_state, restored.ema_params)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    np.testing.assert_array_equal(restored.params["w"], start)  # every step skipped
    assert int(restored.skipped) == 10


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_learning_rate_is_refused_on_the_command_line(value, tmp_path, capsys):
    with pytest.raises(SystemExit):
        sr.main(["--workdir", str(tmp_path / "w"), f"--config.train.learning_rate={value}"])
    assert "train.learning_rate must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


# 2. A directory of other files -------------------------------------------------------------


def test_a_directory_of_the_users_files_is_not_taken_over(tmp_path):
    (tmp_path / rundir.METRICS_FILE).write_text("my own metrics\n")
    (tmp_path / "results.json").write_text('{"mine": 1}')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError, match="not a run directory of this library"):
        sr.run(TINY, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# 3. Two trainings into one workdir ---------------------------------------------------------


def test_a_second_training_into_a_locked_workdir_is_refused(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    with rundir.workdir_lock(tmp_path):  # as another process training there would
        with pytest.raises(RuntimeError, match="another process .* is training"):
            sr.run(TINY, tmp_path)
    assert not (tmp_path / rundir.METRICS_FILE).exists()
    sr.run(TINY, tmp_path)  # the lock ends with its holder
    lines = (tmp_path / rundir.METRICS_FILE).read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [10, 20]


# 5. --eval_only writes beside the training's results ---------------------------------------


def test_eval_only_leaves_the_training_results_and_figures_alone(tmp_path, capsys):
    sr.main(["--workdir", str(tmp_path)] + TINY_ARGS)
    files = ["results.json", "figures/swiss_roll_fig1.png", "figures/swiss_roll_kl_per_step.png"]
    before = {f: (tmp_path / f).read_bytes() for f in files}
    sr.main(["--workdir", str(tmp_path), "--eval_only"] + TINY_ARGS + ["--config.eval.num_test=3"])
    assert {f: (tmp_path / f).read_bytes() for f in files} == before
    (evaluation,) = (tmp_path / rundir.EVALUATIONS_DIR).iterdir()
    r = json.loads((evaluation / "results.json").read_text())
    assert r["num_test_examples"] == 3 and "--eval_only" in r["command"]
    assert all((evaluation / f).exists() for f in r["figures"])
    assert str(evaluation / "results.json") in capsys.readouterr().out


# 6. The report does not drop committed rows ------------------------------------------------


def test_report_refuses_to_drop_documented_rows(tmp_path, monkeypatch, capsys):
    for name in ("swiss_roll", "binary_heartbeat"):
        run = tmp_path / "docs" / "runs" / name
        run.mkdir(parents=True)
        results = {"experiment": name, "units": "bits", "T": 4, "train_steps": 1}
        (run / "results.json").write_text(json.dumps({**results, "K": -1.0, "wall_seconds": 1}))
    monkeypatch.chdir(tmp_path)
    report.main([])
    page = tmp_path / "docs" / "reproduction.md"
    committed = page.read_text()
    with pytest.raises(SystemExit):
        report.main(["docs/runs/swiss_roll"])
    assert "would drop the rows of binary_heartbeat" in capsys.readouterr().err
    assert page.read_text() == committed
    report.main(["docs/runs/swiss_roll", "--output", "other.md"])  # elsewhere: fine
    assert (tmp_path / "other.md").exists() and page.read_text() == committed


# 7. A damaged latest checkpoint ------------------------------------------------------------


def _truncate_data(step_dir):
    for f in step_dir.rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[:10])


def _remove_manifests(step_dir):
    for f in step_dir.rglob("manifest.ocdbt"):
        f.unlink()


def _empty(step_dir):
    shutil.rmtree(step_dir)
    step_dir.mkdir()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """(results, workdir) of one finished TINY run, shared by the cases that copy it."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    return sr.run(TINY, workdir), workdir


@pytest.mark.parametrize("damage", [_truncate_data, _remove_manifests, _empty])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(damage, finished_run, tmp_path):
    straight, finished = finished_run
    work = tmp_path / "damaged"
    shutil.copytree(finished, work)
    damage(work / rundir.CHECKPOINT_DIR / "20")
    with pytest.warns(RuntimeWarning, match="checkpoint 20 .* is damaged"):
        again = sr.run(TINY, work)  # resumes from 10 and retrains 11..20
    assert again["K"] == straight["K"]
    assert (work / checkpoints.DAMAGED_DIR).exists()  # kept, not deleted


def test_a_checkpoint_of_another_model_is_still_an_error_not_a_fallback(finished_run, tmp_path):
    shutil.copytree(finished_run[1], tmp_path / "run")
    manager, _ = _state(tmp_path / "run")
    wider = cfg.replace(TINY, {"model.num_hidden": 8})
    keys = common.experiment_keys(wider.seed)
    template = train_state.create_train_state(
        sr.init_params(wider, keys["init"]), sr.make_optimizer(wider), keys["train"]
    )
    with pytest.raises(RuntimeError, match="does not match this model"):
        checkpoints.restore_latest(manager, template)
    assert not (tmp_path / "run" / checkpoints.DAMAGED_DIR).exists()


# 8. A reverse model or kernel built for another T ------------------------------------------

SCHED10 = schedules.reference_code_schedule(10)


def _rbf_reverse_fn(num_steps: int):
    model = NormalizedRBFNetwork(num_steps=num_steps, num_hidden=4)
    params = model.init(KEY, jnp.zeros((1, 2)), jnp.ones((1,), jnp.int32))

    def reverse_fn(x_t, t):
        mu, sigma = model.apply(params, x_t, t)
        return gaussian.Kernel(x_t + 0 * mu, jnp.full_like(x_t, 0.1) + 0 * sigma)

    return reverse_fn


def test_a_model_built_for_fewer_steps_gives_no_plausible_k():
    x0 = jax.random.normal(KEY, (8, 2))
    with pytest.raises(ValueError, match="non-finite"):
        gaussian.bound_exact(SCHED10, _rbf_reverse_fn(5), x0, KEY)
    k = jax.jit(lambda x: gaussian.bound_exact(SCHED10, _rbf_reverse_fn(5), x, KEY))(x0)
    assert not np.any(np.isfinite(np.asarray(k)))  # under jit: NaN, never a clamped readout
    assert np.all(np.isfinite(gaussian.bound_exact(SCHED10, _rbf_reverse_fn(10), x0, KEY)))


def test_a_kernel_for_another_schedule_and_t_beyond_t_are_refused():
    ref = jax.random.normal(KEY, (50, 2))
    kernel20 = gaussian.moment_matched_kernel(schedules.reference_code_schedule(20), ref)
    with pytest.raises(ValueError, match="built for T = 20 .* T = 10"):
        gaussian.bound_exact(SCHED10, kernel20, ref[:4], KEY)
    rates = binomial.moment_matched_rates(schedules.binomial_schedule(20), jnp.ones((2, 5)), 0.2)
    with pytest.raises(ValueError, match="built for T = 20"):
        binomial.bound_exact(schedules.binomial_schedule(10), rates, jnp.ones((2, 5)), 0.2, KEY)
    for t in (11, -1):
        with pytest.raises(ValueError, match=r"t must lie in 0..10"):
            gaussian.q_sample(SCHED10, ref[:2], jnp.full((2,), t), ref[:2])


# 10. Out-of-range values -------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1.7, -0.2])
def test_binomial_rates_outside_0_1_give_no_finite_k(rate):
    sched = schedules.binomial_schedule(10)
    x0 = jnp.ones((2, 5))
    with pytest.raises(ValueError, match="rates in \\[0, 1\\]"):
        binomial.bound_exact(sched, lambda x, t: jnp.full_like(x, rate), x0, 0.2, KEY)


def test_binomial_sample_refuses_non_binary_known_bits():
    sched = schedules.binomial_schedule(10)
    known = jnp.full((2, 5), 0.5)
    with pytest.raises(ValueError, match="known must be binary"):
        binomial.sample(
            sched, lambda x, t: jnp.full_like(x, 0.2), KEY, (2, 5), 0.2,
            known=known, known_mask=jnp.ones((2, 5), bool),
        )  # fmt: skip


@pytest.mark.parametrize("var", [0.0, -0.1])
def test_a_reverse_variance_at_or_below_zero_is_an_error(var):
    fn = lambda x, t: gaussian.Kernel(x, jnp.full_like(x, var))  # noqa: E731
    with pytest.raises(ValueError, match="variances > 0"):
        gaussian.bound_exact(SCHED10, fn, jax.random.normal(KEY, (4, 2)), KEY)
    if var < 0:  # NaN samples before; a zero variance samples deterministically (finite)
        with pytest.raises(ValueError, match="variances > 0"):
            gaussian.sample(SCHED10, fn, KEY, (4, 2))
    else:
        assert np.all(np.isfinite(gaussian.sample(SCHED10, fn, KEY, (4, 2))))


def test_one_huge_data_value_is_refused():
    x0 = jax.random.normal(KEY, (4, 2)).at[0, 0].set(1e30)
    with pytest.raises(ValueError, match="magnitude"):
        gaussian.bound_exact(SCHED10, _rbf_reverse_fn(10), x0, KEY)


# 11. Low precision, empty batches, unwritable workdirs -------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_data_are_bounded_in_float32(dtype):
    x0 = jax.random.normal(KEY, (6, 2))
    low = x0.astype(dtype)
    k_low = gaussian.bound_exact(SCHED10, _rbf_reverse_fn(10), low, KEY)
    k_f32 = gaussian.bound_exact(SCHED10, _rbf_reverse_fn(10), low.astype(jnp.float32), KEY)
    assert k_low.dtype == jnp.float32
    np.testing.assert_array_equal(k_low, k_f32)


def test_an_empty_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="empty batch"):
        gaussian.bound_exact(SCHED10, _rbf_reverse_fn(10), jnp.zeros((0, 2)), KEY)


def test_a_workdir_that_is_a_file_or_cannot_be_written_is_a_clear_error(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for workdir, phrase in [
        (a_file, "is a file, not a directory"),
        (a_file / "below", "cannot write to --workdir"),
        ("/sys/dpm_jax_no_such_dir", "cannot write to --workdir"),  # EPERM even for root
    ]:
        with pytest.raises(SystemExit) as info:
            sr.main(["--workdir", str(workdir)] + TINY_ARGS)
        assert info.value.code == 1
        err = capsys.readouterr().err
        assert phrase in err and "Traceback" not in err, err


# 13. Strict JSON and the user's umask ------------------------------------------------------


def test_results_hold_null_for_nan_and_files_take_the_umask(tmp_path):
    path = tmp_path / "results.json"
    rundir.write_json_atomic(path, {"K": float("nan"), "nested": {"x": float("inf")}, "ok": 1.5})

    def refuse(constant):
        raise ValueError(f"bare {constant} in strict JSON")

    saved = json.loads(path.read_text(), parse_constant=refuse)
    assert saved["K"] is None and saved["K_not_finite"] == "nan" and saved["ok"] == 1.5
    assert saved["nested"] == {"x": None, "x_not_finite": "inf"}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    sr.run(TINY, tmp_path / "run")
    for name in ("results.json", "config.json", "metrics.jsonl"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o666 & ~mask, name


# Found on the way: a typed jax.random.key in the train state -------------------------------


def test_a_typed_prng_key_is_stored_raw_and_its_checkpoint_restores(tmp_path):
    tx = optax.sgd(0.1)
    typed = train_state.create_train_state({"w": jnp.ones(2)}, tx, jax.random.key(0))
    raw = train_state.create_train_state({"w": jnp.ones(2)}, tx, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(typed.rng, raw.rng)  # same stream either way
    manager = checkpoints.checkpoint_manager(tmp_path)
    checkpoints.save(manager, 3, typed.replace(step=jnp.array(3, jnp.int32)))
    manager.wait_until_finished()
    restored = checkpoints.restore_latest(checkpoints.checkpoint_manager(tmp_path), typed)
    assert int(restored.step) == 3
    np.testing.assert_array_equal(restored.rng, raw.rng)


def test_the_unit_variance_warning_never_says_divide_by_zero():
    from dpm_jax import validation

    with pytest.warns(UserWarning, match="this batch is constant") as record:
        validation.warn_if_not_unit_variance(np.zeros((2000, 2)))
    assert "divide the data by 0" not in str(record[0].message)
    with pytest.warns(UserWarning, match="divide the data by 15"):
        validation.warn_if_not_unit_variance(np.tile([0.0, 30.0], (2000, 1)))
