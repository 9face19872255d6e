"""Every public entry point refuses bad input with an error that names the problem and the fix.

The cases below also generate the table in docs/reliability.md; after changing them run
``DPM_JAX_WRITE_DOCS=1 python -m pytest tests/test_bad_input.py`` to rewrite it.
"""

import os
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import binomial, checkpoints, gaussian, rundir, schedules, train_state
from dpm_jax.data import images
from dpm_jax.data.scaling import dequantize
from dpm_jax.models import HeartbeatMLP, MultiScaleConv
from experiments import config as cfg
from experiments import mnist
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


def _message(case, tmp_path, capsys) -> str:
    """Runs one case; returns the error (or warning) text, asserting its type."""
    _, call, expected, _ = case
    if expected is UserWarning:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call(tmp_path)
        found = [w for w in caught if issubclass(w.category, UserWarning)]
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
        rows.append(f"| {what} | `{expected.__name__}` | {text} |")
    return "\n".join(["| bad input | raises | message |", "|---|---|---|", *rows])


def test_reliability_doc_lists_every_case(tmp_path_factory, capsys):
    messages = [_message(c, tmp_path_factory.mktemp("case"), capsys) for c in CASES]
    table = _table(messages)
    # Paths of this machine's temporary directories do not belong in the doc.
    table = table.replace(str(tmp_path_factory.getbasetemp()), "TMP")
    text = DOC.read_text() if DOC.exists() else ""
    start, end = "<!-- bad-input table: start -->", "<!-- bad-input table: end -->"
    if os.environ.get("DPM_JAX_WRITE_DOCS") == "1":
        head, rest = text.split(start) if start in text else (text, end)
        tail = rest.split(end, 1)[1] if end in rest else ""
        DOC.write_text(f"{head}{start}\n{table}\n{end}{tail}")
        text = DOC.read_text()
    for what, *_ in CASES:
        assert f"| {what} |" in text, f"{what!r} missing from {DOC}; regenerate it (module doc)"
