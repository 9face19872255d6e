"""The command line every experiment shares.

  python -m experiments.<name> --workdir DIR [--preset NAME] [--config.KEY=VALUE ...] [--eval_only]

Config classes are frozen dataclasses whose fields all have defaults;
``--help`` lists every key with its default.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dpm_jax import rundir, runner, sharding, train_state

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _field_parser(default: Any):
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return str


def parse_command_line(
    experiment: str,
    config_cls: type,
    presets: dict[str, Any] | None = None,
    argv: list[str] | None = None,
    description: str | None = None,
) -> tuple[Any, argparse.Namespace]:
    """Parses ``argv`` into (config, args). Unknown keys and bad values exit with a clear message."""
    presets = presets or {}
    base = config_cls()
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{experiment}",
        description=description,
    )
    parser.add_argument("--workdir", required=True, type=Path, help="run directory (created)")
    parser.add_argument(
        "--preset",
        choices=sorted(presets),
        default=None,
        help="start from a named config; --config.KEY overrides apply on top",
    )
    parser.add_argument(
        "--eval_only", action="store_true", help="evaluate the latest checkpoint in --workdir"
    )
    parser.add_argument(
        "--figures",
        action="store_true",
        help="only redraw the figures from the latest checkpoint in --workdir (image experiments)",
    )
    group = parser.add_argument_group("config (override with --config.KEY=VALUE)")
    for field in dataclasses.fields(config_cls):
        default = getattr(base, field.name)
        group.add_argument(
            f"--config.{field.name}",
            dest=f"config__{field.name}",
            type=_field_parser(default),
            default=None,
            metavar=type(default).__name__.upper(),
            help=f"default: {default!r}",
        )
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        keys = [u.split("=")[0] for u in unknown]
        config_keys = [k[len("--config.") :] for k in keys if k.startswith("--config.")]
        if config_keys:
            valid = ", ".join(f.name for f in dataclasses.fields(config_cls))
            parser.error(f"unknown config key(s) {config_keys}; valid keys: {valid}")
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    config = presets[args.preset] if args.preset else base
    overrides = {
        f.name: getattr(args, f"config__{f.name}")
        for f in dataclasses.fields(config_cls)
        if getattr(args, f"config__{f.name}") is not None
    }
    try:
        config = dataclasses.replace(config, **overrides)
    except (ValueError, TypeError) as e:
        parser.error(f"invalid config: {e}")
    return config, args


def fail(message: str) -> None:
    """Prints an error for the user and exits with status 1 (no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def main(module, argv: list[str] | None = None) -> None:
    """The body of every experiment's ``main``: parse, run, print the report.

    ``module`` provides EXPERIMENT, Config, PRESETS, run(config, workdir,
    eval_only) -> results and report(results) -> str.
    """
    sharding.initialize_distributed()  # multi-host: JAX_COORDINATOR_ADDRESS etc.; else no-op
    config, args = parse_command_line(
        module.EXPERIMENT,
        module.Config,
        module.PRESETS,
        argv,
        description=module.__doc__.splitlines()[0],
    )
    if args.figures:
        if not hasattr(module, "figures"):
            fail(f"--figures is not available for {module.EXPERIMENT}; use --eval_only.")
        try:
            paths = module.figures(config, args.workdir)
        except (RuntimeError, FileNotFoundError, ValueError) as e:
            fail(str(e))
        print("\n".join(f"wrote {p}" for p in paths))
        return
    try:
        results = module.run(config, args.workdir, eval_only=args.eval_only)
        command = " ".join(["python -m experiments." + module.EXPERIMENT, *(argv or sys.argv[1:])])
        if jax.process_index() == 0:
            results = {**results, "command": command}
            rundir.write_json_atomic(Path(args.workdir) / "results.json", results)
    except runner.TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(143) from None  # 128 + SIGTERM, what schedulers expect
    except (RuntimeError, FileNotFoundError, ValueError, FloatingPointError) as e:
        fail(str(e))
    print(module.report(results))
    print(f"results: {args.workdir / 'results.json'}")


KEY_NAMES = ("train_data", "test_data", "init", "train", "eval", "figure", "ceiling")


def experiment_keys(seed: int) -> dict[str, jax.Array]:
    """One independent PRNG key per use, all derived from the config's seed."""
    root = jax.random.PRNGKey(seed)
    return {name: jax.random.fold_in(root, i) for i, name in enumerate(KEY_NAMES)}


def fit_settings(config) -> dict:
    """The runner's loop settings (``runner.fit`` keyword arguments) from an experiment config."""
    return {
        "num_steps": config.train_steps,
        "checkpoint_every": config.checkpoint_every,
        "log_every": config.log_every,
        "max_skipped_in_a_row": config.max_skipped_in_a_row,
        "steps_per_call": config.steps_per_call,
        "ema_decay": config.ema_decay,
    }


def train_on_generator(module, config, workdir: Path, eval_only: bool, data):
    """Trains (or, with ``eval_only``, restores) a model on fresh batches from ``data.sample``.

    Batch ``step`` is drawn with a key folded from the step, so a resumed run sees the
    same data; every process draws the whole batch and keeps its rows of it. Trains data
    parallel over every device (``sharding.data_mesh``), through ``runner.train_or_restore``
    like every experiment. ``module`` provides EXPERIMENT, MUTABLE_KEYS, make_optimizer,
    init_params and loss_fn. Returns (state, keys).
    """
    keys = experiment_keys(config.seed)
    tx = module.make_optimizer(config)
    mesh = sharding.data_mesh()
    rows = sharding.process_batch_slice(config.batch_size, mesh)
    sample_batch = jax.jit(lambda k: data.sample(k, config.batch_size))

    def batch_fn(step: int) -> np.ndarray:
        return np.asarray(sample_batch(jax.random.fold_in(keys["train_data"], step)))[rows]

    state = runner.train_or_restore(
        workdir=Path(workdir),
        experiment=module.EXPERIMENT,
        config=config,
        mutable_keys=module.MUTABLE_KEYS,
        state=train_state.create_train_state(
            module.init_params(config, keys["init"]), tx, keys["train"]
        ),
        mesh=mesh,
        eval_only=eval_only,
        loss_fn=functools.partial(module.loss_fn, config),
        tx=tx,
        batch_fn=batch_fn,
        **fit_settings(config),
    )
    return state, keys


def require(config, names, minimum, strict: bool = False) -> None:
    """Raises ValueError naming the first field of ``names`` below ``minimum`` (or not above it)."""
    for name in names:
        value = getattr(config, name)
        if value < minimum or (strict and value == minimum):
            bound = f"> {minimum}" if strict else f">= {minimum}"
            raise ValueError(f"{name} must be {bound}, got {value}.")


def require_training_keys(config) -> None:
    """Checks the keys every experiment's training shares: steps per call, EMA, warmup, clipping."""
    require(config, ("steps_per_call",), 1)
    require(config, ("warmup_steps",), 0)
    if config.grad_clip_norm < 0:
        raise ValueError(
            f"grad_clip_norm must be >= 0 (0 turns clipping off), got {config.grad_clip_norm}."
        )
    train_state.check_ema_decay(config.ema_decay)


def hardware() -> str:
    """The machine in words: CPU count and the JAX devices."""
    kinds = sorted({d.device_kind for d in jax.devices()})
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{jax.device_count()} x {'/'.join(kinds)} ({jax.default_backend()})"
    )


def write_results(
    module,
    config,
    workdir: Path,
    results: dict,
    *,
    state,
    num_test: int,
    start_time: float,
    figures: list[Path],
) -> dict:
    """Adds what every results.json carries (experiment, units, paper, sizes, wall time,
    figures, config) to ``results`` and writes it atomically to ``workdir/results.json``."""
    workdir = Path(workdir)
    results.update(
        experiment=module.EXPERIMENT,
        units=module.UNITS,
        paper=module.PAPER,
        num_test_examples=int(num_test),
        T=config.diffusion_steps,
        train_steps=int(state.step),
        wall_seconds=time.time() - start_time,
        wall_seconds_kind="this invocation (training resumed from a checkpoint counts only its part)",
        hardware=hardware(),
        figures=[str(Path(f).relative_to(workdir)) for f in figures],
        config=rundir.config_to_dict(config),
    )
    if jax.process_index() == 0:  # one writer on multi-host runs
        rundir.write_json_atomic(workdir / "results.json", results)
    return results
