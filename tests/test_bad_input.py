"""Every public entry point refuses bad input with an error that names the problem and the fix.

The cases below also generate the table in docs/reliability.md; after changing them run
``DPM_JAX_WRITE_DOCS=1 python -m pytest tests/test_bad_input.py`` to rewrite it.
"""

import os
import signal
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import (
    binomial,
    checkpoints,
    gaussian,
    parzen,
    rundir,
    runner,
    schedules,
    sharding,
    train_state,
)
from dpm_jax.data import images
from dpm_jax.data.scaling import dequantize
from dpm_jax.models import HeartbeatMLP, MultiScaleConv
from experiments import config as cfg
from experiments import mnist, report
from experiments import swiss_roll as sr

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"

SCHEDULE = schedules.reference_code_schedule(10)
BINOMIAL = schedules.binomial_schedule(10)


def _gaussian_fn(x, t):
    return gaussian.Kernel(mean=x, var=jnp.full_like(x, 0.1))


def _binomial_fn(x, t):
    return jnp.full_like(x, 0.2)


def _unit(n=8, d=4):
    return jax.random.normal(jax.random.PRNGKey(0), (n, d))


def _cli(argv):
    sr.main(["--workdir", "unused"] + argv)


def _other_experiment_workdir(tmp_path):
    rundir.save_run_config(tmp_path, "binary_heartbeat", {})
    sr.run(sr.PRESETS["small"], tmp_path)


def _changed_config_workdir(tmp_path):
    rundir.save_run_config(tmp_path, "swiss_roll", rundir.config_to_dict(sr.PRESETS["small"]))
    sr.run(cfg.replace(sr.PRESETS["small"], {"model.num_hidden": 8}), tmp_path)


def _flat_config_workdir(tmp_path):
    rundir.save_run_config(tmp_path, "swiss_roll", {"diffusion_steps": 40, "train_steps": 300})
    sr.run(sr.PRESETS["small"], tmp_path, eval_only=True)


def _checkpoint_of_another_model(tmp_path):
    import optax

    tx = optax.sgd(0.1)
    state = train_state.create_train_state({"w": jnp.ones((3,))}, tx, jax.random.PRNGKey(0))
    manager = checkpoints.checkpoint_manager(tmp_path)
    checkpoints.save(manager, 1, state)
    manager.wait_until_finished()
    other = train_state.create_train_state({"v": jnp.ones((4,))}, tx, jax.random.PRNGKey(0))
    checkpoints.restore_latest(checkpoints.checkpoint_manager(tmp_path), other)


# (what is wrong, call, expected exception, a phrase the message must contain)
CASES = [
    (
        "Gaussian bound: data of rank 1 (no batch axis)",
        lambda tmp: gaussian.bound_exact(SCHEDULE, _gaussian_fn, jnp.ones(4), jax.random.key(0)),
        ValueError,
        "batch",
    ),
    (
        "Gaussian bound: NaN in the data",
        lambda tmp: gaussian.bound_exact(
            SCHEDULE, _gaussian_fn, _unit().at[0, 0].set(jnp.nan), jax.random.key(0)
        ),
        ValueError,
        "non-finite",
    ),
    (
        "Gaussian bound: integer data",
        lambda tmp: gaussian.bound_exact(
            SCHEDULE, _gaussian_fn, jnp.ones((2, 3), jnp.int32), jax.random.key(0)
        ),
        TypeError,
        "floating-point",
    ),
    (
        "Gaussian bound: data far from unit variance (a warning, the bound stays valid)",
        lambda tmp: gaussian.bound_exact(
            SCHEDULE, _gaussian_fn, 255.0 * _unit(256, 8), jax.random.key(0)
        ),
        UserWarning,
        "unit variance",
    ),
    (
        "Binomial bound: non-binary data",
        lambda tmp: binomial.bound_exact(
            BINOMIAL, _binomial_fn, jnp.full((2, 5), 0.5), 0.2, jax.random.key(0)
        ),
        ValueError,
        "binary",
    ),
    (
        "Binomial bound: equilibrium rate outside (0, 1)",
        lambda tmp: binomial.bound_exact(
            BINOMIAL, _binomial_fn, jnp.ones((2, 5)), 1.5, jax.random.key(0)
        ),
        ValueError,
        "pi",
    ),
    (
        "Schedule: T < 2",
        lambda tmp: schedules.binomial_schedule(1),
        ValueError,
        "T",
    ),
    (
        "Schedule: beta outside (0, 1)",
        lambda tmp: schedules.reference_code_schedule(10, step1_beta=1.5),
        ValueError,
        "step1_beta",
    ),
    (
        "Pixels: NaN",
        lambda tmp: dequantize(np.full((1, 2, 2, 1), np.nan), jax.random.key(0)),
        ValueError,
        "non-finite",
    ),
    (
        "Pixels: already scaled to [0, 1] (fractional values)",
        lambda tmp: dequantize(np.full((1, 2, 2, 1), 0.5), jax.random.key(0)),
        ValueError,
        "whole numbers",
    ),
    (
        "Pixels: one image without a batch axis",
        lambda tmp: dequantize(np.zeros((28, 28, 1), np.uint8), jax.random.key(0)),
        ValueError,
        "rank 4",
    ),
    (
        "Model: image size the multi-scale layer cannot pool",
        lambda tmp: MultiScaleConv(4, num_scales=3).init(jax.random.key(0), jnp.ones((1, 6, 6, 1))),
        ValueError,
        "divisible",
    ),
    (
        "Model: heartbeat sequences of the wrong rank",
        lambda tmp: HeartbeatMLP(5).init(jax.random.key(0), jnp.ones((20,)), jnp.ones((1,), int)),
        AssertionError,
        "rank",
    ),
    (
        "Config: image size and num_scales that do not divide",
        lambda tmp: cfg.replace(mnist.PRESETS["default"], {"model.num_scales": 4}),
        ValueError,
        "num_scales",
    ),
    (
        "Config: impossible value (T = 1)",
        lambda tmp: cfg.replace(sr.PRESETS["default"], {"diffusion.steps": 1}),
        ValueError,
        "diffusion.steps",
    ),
    (
        "Command line: unknown config key",
        lambda tmp: _cli(["--config.train.no_such_key=3"]),
        SystemExit,
        "unknown config key",
    ),
    (
        "Command line: value of the wrong type",
        lambda tmp: _cli(["--config.diffusion.steps=ten"]),
        SystemExit,
        "invalid int value",
    ),
    (
        "Workdir holding another experiment's run",
        _other_experiment_workdir,
        RuntimeError,
        "new --workdir",
    ),
    (
        "Workdir holding a run with a different config",
        _changed_config_workdir,
        RuntimeError,
        "num_hidden",
    ),
    (
        "Workdir holding a run whose config.json has the flat keys of earlier versions",
        _flat_config_workdir,
        RuntimeError,
        "python -m experiments.convert_config",
    ),
    (
        "Checkpoint of a different model",
        _checkpoint_of_another_model,
        RuntimeError,
        "does not match",
    ),
    (
        "Dataset not prepared for TFDS",
        lambda tmp: images.load_image_source("mnist", "train", data_dir=tmp),
        images.DatasetNotPrepared,
        "tfds build",
    ),
    (
        "--eval_only with no checkpoint",
        lambda tmp: sr.run(sr.PRESETS["small"], tmp / "empty", eval_only=True),
        FileNotFoundError,
        "train first",
    ),
]


# ---------------------------------------------------------------- reliability, second round
# One row per item of the issue (numbered as there); the tests that pin each item down in
# detail are in tests/test_reliability_round2.py.

TINY_KEYS = {
    "train.steps": 4,
    "train.checkpoint_every": 2,
    "train.log_every": 2,
    "diffusion.steps": 10,
    "train.batch_size": 16,
    "eval.num_test": 20,
    "eval.batch_size": 20,
    "eval.forward_samples": 1,
    "eval.num_figure_samples": 20,
    "eval.ceiling_examples": 10,
    "eval.ceiling_reference_size": 50,
}
TINY = cfg.replace(sr.PRESETS["small"], TINY_KEYS)
TINY_ARGS = ["--preset", "small", *(f"--config.{k}={v}" for k, v in TINY_KEYS.items())]


class Handled(Exception):
    """Marks a case whose right outcome is not an error: the call returns what happened."""


def _fit(tmp, tx, batch_fn, num_steps=4, max_skipped=3):
    import optax  # noqa: F401  (tx is an optax transformation)

    state = train_state.create_train_state({"w": jnp.ones(2)}, tx, jax.random.PRNGKey(0))
    return runner.fit(
        workdir=tmp,
        state=state,
        loss_fn=lambda p, b, k: (jnp.sum(jnp.square(p["w"] - b)), {}),
        tx=tx,
        batch_fn=batch_fn,
        mesh=sharding.data_mesh(jax.devices()[:1]),
        num_steps=num_steps,
        checkpoint_every=2,
        log_every=2,
        max_skipped_in_a_row=max_skipped,
    )


def _nan_learning_rate_in_the_library(tmp):
    import optax

    _fit(tmp, optax.sgd(float("nan")), lambda step: np.ones(2, np.float32), 6)


def _users_directory(tmp):
    (tmp / "metrics.jsonl").write_text("my own metrics\n")
    (tmp / "results.json").write_text("{}")
    sr.run(TINY, tmp)


def _locked_workdir(tmp):
    with rundir.workdir_lock(tmp):
        sr.run(TINY, tmp)


def _ctrl_c(tmp):
    import optax

    def batch_fn(step):
        if step == 1:
            signal.raise_signal(signal.SIGINT)
        return np.ones(2, np.float32)

    try:
        _fit(tmp, optax.sgd(0.1), batch_fn)
    except runner.TrainingInterrupted as e:
        saved = checkpoints.checkpoint_manager(tmp).latest_step()
        assert e.exit_code == 130 and saved is not None
        return f"exit status 130; {e} (latest checkpoint: {saved})"
    raise AssertionError("Ctrl-C did not stop the training")


def _eval_only(tmp):
    sr.main(["--workdir", str(tmp)] + TINY_ARGS)
    before = (tmp / "results.json").read_bytes()
    sr.main(["--workdir", str(tmp), "--eval_only"] + TINY_ARGS)
    assert (tmp / "results.json").read_bytes() == before
    (written,) = (tmp / rundir.EVALUATIONS_DIR).glob("*/results.json")
    return (
        f"the training's results.json and figures are unchanged; this evaluation's are in "
        f"{written.parent.relative_to(tmp)}/ (printed as 'results: ...')"
    )


def _report_from_one_run(tmp):
    import json

    for name in ("swiss_roll", "binary_heartbeat"):
        run = tmp / "docs" / "runs" / name
        run.mkdir(parents=True)
        row = {"experiment": name, "units": "bits", "T": 4, "train_steps": 1, "K": -1.0}
        (run / "results.json").write_text(json.dumps({**row, "wall_seconds": 1}))
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        report.main(["docs/runs/swiss_roll"])
    finally:
        os.chdir(cwd)


def _damaged_checkpoint(tmp):
    import optax

    state = train_state.create_train_state(
        {"w": jnp.ones(2)}, optax.sgd(0.1), jax.random.PRNGKey(0)
    )
    manager = checkpoints.checkpoint_manager(tmp)
    for step in (1, 2):
        checkpoints.save(manager, step, state.replace(step=step))
    manager.wait_until_finished()
    for f in (tmp / rundir.CHECKPOINT_DIR / "2").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[:10])
    restored = checkpoints.restore_latest(checkpoints.checkpoint_manager(tmp), state)
    assert int(restored.step) == 1


def _kernel_for_another_t(tmp):
    kernel20 = gaussian.moment_matched_kernel(schedules.reference_code_schedule(20), _unit(50))
    gaussian.bound_exact(SCHEDULE, kernel20, _unit(), jax.random.key(0))


def _parzen_far_points(tmp):
    best, means = parzen.select_sigma(np.zeros((10, 3)), np.full((5, 3), 100.0), [1e-3, 1e-2])
    assert best == 1e-2 and np.all(np.isfinite(means))
    return f"select_sigma returns sigma {best} with finite means {means.tolist()}"


def _low_precision(tmp):
    x0 = _unit()
    for dtype in (jnp.float16, jnp.bfloat16):
        low = x0.astype(dtype)
        k = gaussian.bound_exact(SCHEDULE, _gaussian_fn, low, jax.random.key(0))
        same = gaussian.bound_exact(
            SCHEDULE, _gaussian_fn, low.astype(jnp.float32), jax.random.key(0)
        )
        assert k.dtype == jnp.float32 and bool(jnp.all(k == same))
    return "float16 and bfloat16 data are bounded in float32 (K equal to that of the float32 copy)"


def _workdir_is_a_file(tmp):
    (tmp / "f").write_text("x")
    sr.main(["--workdir", str(tmp / "f")] + TINY_ARGS)


def _help_text(tmp):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        sr.main(["--help"])
    text = " ".join(out.getvalue().split())
    start = text.rindex("--config.model.readout")
    return text[start : start + 230]


def _nan_in_results(tmp):
    import json

    rundir.write_json_atomic(tmp / "results.json", {"K": float("nan")})
    saved = json.loads((tmp / "results.json").read_text())
    mode = oct((tmp / "results.json").stat().st_mode & 0o777)
    return f"results.json holds {json.dumps(saved, sort_keys=True)}, mode {mode} (the umask's)"


ROUND_2 = [
    (
        "Round 2, item 1: non-finite learning rate on the command line",
        lambda tmp: _cli(["--config.train.learning_rate=nan"]),
        SystemExit,
        "must be a finite number",
    ),
    (
        "Round 2, item 1: non-finite learning rate given to the library's runner",
        _nan_learning_rate_in_the_library,
        FloatingPointError,
        "learning rate is finite",
    ),
    (
        "Round 2, item 2: workdir holding the user's own files",
        _users_directory,
        RuntimeError,
        "not a run directory",
    ),
    (
        "Round 2, item 3: a second training into a workdir in use",
        _locked_workdir,
        RuntimeError,
        "another process",
    ),
    ("Round 2, item 4: Ctrl-C (SIGINT) during training", _ctrl_c, Handled, "saved"),
    ("Round 2, item 5: --eval_only on a finished run", _eval_only, Handled, "unchanged"),
    (
        "Round 2, item 6: report of one run onto the committed page",
        _report_from_one_run,
        SystemExit,
        "would drop the rows",
    ),
    (
        "Round 2, item 7: damaged latest checkpoint (falls back to the previous one)",
        _damaged_checkpoint,
        RuntimeWarning,
        "falling back to the previous checkpoint",
    ),
    (
        "Round 2, item 8: reverse kernel built for another T",
        _kernel_for_another_t,
        ValueError,
        "built for T = 20",
    ),
    (
        "Round 2, item 8: q_sample with t beyond T",
        lambda tmp: gaussian.q_sample(SCHEDULE, _unit(2), jnp.array([3, 11]), _unit(2)),
        ValueError,
        "t must lie in 0..10",
    ),
    (
        "Round 2, item 9: Parzen at a tiny bandwidth, far points",
        _parzen_far_points,
        Handled,
        "0.01",
    ),
    (
        "Round 2, item 10: binomial reverse rates outside [0, 1]",
        lambda tmp: binomial.bound_exact(
            BINOMIAL, lambda x, t: jnp.full_like(x, 1.7), jnp.ones((2, 5)), 0.2, jax.random.key(0)
        ),
        ValueError,
        "rates in [0, 1]",
    ),
    (
        "Round 2, item 10: reverse variance <= 0",
        lambda tmp: gaussian.bound_exact(
            SCHEDULE, lambda x, t: gaussian.Kernel(x, 0 * x), _unit(), jax.random.key(0)
        ),
        ValueError,
        "variances > 0",
    ),
    (
        "Round 2, item 10: one data value of 1e30",
        lambda tmp: gaussian.bound_exact(
            SCHEDULE, _gaussian_fn, _unit().at[0, 0].set(1e30), jax.random.key(0)
        ),
        ValueError,
        "magnitude",
    ),
    (
        "Round 2, item 11: an empty batch",
        lambda tmp: gaussian.bound_exact(
            SCHEDULE, _gaussian_fn, jnp.zeros((0, 2)), jax.random.key(0)
        ),
        ValueError,
        "empty batch",
    ),
    ("Round 2, item 11: float16 or bfloat16 data", _low_precision, Handled, "in float32"),
    (
        "Round 2, item 11: workdir that is a file",
        _workdir_is_a_file,
        SystemExit,
        "is a file, not a directory",
    ),
    ("Round 2, item 12: --help on a string key", _help_text, Handled, "one of"),
    ("Round 2, item 13: NaN in results.json", _nan_in_results, Handled, "null"),
]


CASES += ROUND_2


def _message(case, tmp_path, capsys) -> str:
    """Runs one case; returns the error (or warning) text, asserting its type."""
    _, call, expected, _ = case
    if expected is Handled:
        return call(tmp_path)
    if issubclass(expected, Warning):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call(tmp_path)
        found = [w for w in caught if issubclass(w.category, expected)]
        assert found, "no warning"
        return str(found[0].message)
    with pytest.raises(expected) as info:
        call(tmp_path)
    if expected is SystemExit:
        return capsys.readouterr().err.strip().splitlines()[-1]
    return str(info.value)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(case, tmp_path, capsys):
    message = _message(case, tmp_path, capsys)
    assert case[3].lower() in message.lower(), message


def _table(messages: list[str]) -> str:
    rows = []
    for (what, _, expected, _), message in zip(CASES, messages, strict=True):
        text = " ".join(message.split()).replace("|", "\\|")
        if len(text) > 300:
            text = text[:297] + "..."
        raises = "nothing: handled" if expected is Handled else f"`{expected.__name__}`"
        rows.append(f"| {what} | {raises} | {text} |")
    return "\n".join(["| bad input | raises | message (or what happens) |", "|---|---|---|", *rows])


def test_reliability_doc_lists_every_case(tmp_path_factory, capsys):
    """Every case has its row; with DPM_JAX_WRITE_DOCS=1 the table is regenerated (each case
    run again; the test above checks each message on every run)."""
    text = DOC.read_text() if DOC.exists() else ""
    start, end = "<!-- bad-input table: start -->", "<!-- bad-input table: end -->"
    if os.environ.get("DPM_JAX_WRITE_DOCS") == "1":
        messages = [_message(c, tmp_path_factory.mktemp("case"), capsys) for c in CASES]
        # Paths of this machine's temporary directories do not belong in the doc.
        table = _table(messages).replace(str(tmp_path_factory.getbasetemp()), "TMP")
        head, rest = text.split(start) if start in text else (text, end)
        tail = rest.split(end, 1)[1] if end in rest else ""
        DOC.write_text(f"{head}{start}\n{table}\n{end}{tail}")
        text = DOC.read_text()
    for what, *_ in CASES:
        assert f"| {what} |" in text, f"{what!r} missing from {DOC}; regenerate it (module doc)"
