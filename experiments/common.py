"""The experiment interface and the command line every experiment shares.

  python -m experiments.<name> --workdir DIR [--preset NAME] [--config.KEY=VALUE ...] [--eval_only]

An experiment is an :class:`Experiment` object (``experiments.<name>.experiment``): its
name, units, the paper's numbers, its config class (nested frozen dataclasses, dotted
keys: ``experiments.config``), presets, the keys a resumed run may change, the table
that converts configs saved before sections, and ``run``, ``report`` and ``figures``.
``--help`` lists every dotted key with its default and type.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np

from dpm_jax import likelihood, rundir, runner, sharding, terms, train_state
from experiments import config as cfg


class Experiment:
    """What every experiment declares: the command line, resume checks and the conversion
    of old run directories need nothing else.

    Subclasses set the class attributes and implement :meth:`run` and :meth:`report`;
    :meth:`figures` (``--figures``) is optional.
    """

    name: ClassVar[str]  # the module under experiments/ and the name config.json records
    description: ClassVar[str]  # one line for --help
    units: ClassVar[str]
    paper: ClassVar[dict[str, Any]]
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, Any]]
    #: Dotted keys a resumed run may change (bookkeeping that leaves training as it was).
    mutable_keys: ClassVar[tuple[str, ...]]
    #: Every flat key of this experiment's configs before sections -> its dotted key, or
    #: None for a key it no longer has (``python -m experiments.convert_config``).
    legacy_keys: ClassVar[dict[str, str | None]]

    def run(self, config, workdir: Path, eval_only: bool = False) -> dict:
        """Trains (resuming from ``workdir``) or restores, evaluates, writes results.json."""
        raise NotImplementedError

    def report(self, results: dict) -> str:
        """The results as lines for the terminal."""
        raise NotImplementedError

    def figures(self, config, workdir: Path) -> list[Path]:
        """Redraws the figures from the latest checkpoint in ``workdir``; their paths."""
        raise NotImplementedError(f"--figures is not available for {self.name}; use --eval_only.")

    def convert_command(self, workdir) -> str:
        """The command that converts ``workdir``'s config.json from flat keys."""
        return f"python -m experiments.convert_config {workdir}"

    def main(self, argv: list[str] | None = None) -> None:
        """``python -m experiments.<name>``: parse, run, print the report."""
        main(self, argv)

    def __repr__(self) -> str:
        return f"<experiment {self.name}>"


def _converter(kind):
    """An argparse ``type`` for a declared leaf type (its name shows in type errors)."""

    def convert(text: str):
        try:
            return cfg.parse_value(text, kind)
        except ValueError as e:
            if kind is bool:
                raise argparse.ArgumentTypeError(str(e)) from None
            raise

    convert.__name__ = cfg.type_name(kind).lower()
    return convert


def _key_docs(config, prefix: str = "") -> dict[str, tuple[str, tuple]]:
    """{dotted key: (meaning, allowed values or ())} for every leaf of ``config``, from its
    sections' ``HELP`` and ``CHOICES`` class attributes ({field: meaning}, {field: the values
    ``__post_init__`` accepts}); a subclass's entries add to, or override, its bases'."""
    merged = {"HELP": {}, "CHOICES": {}}
    for klass in reversed(type(config).__mro__):
        for name, table in merged.items():
            table.update(vars(klass).get(name, {}))
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if cfg.is_section(value):
            out.update(_key_docs(value, f"{prefix}{field.name}."))
        else:
            choices = tuple(merged["CHOICES"].get(field.name, ()))
            out[prefix + field.name] = (merged["HELP"].get(field.name, ""), choices)
    return out


def parse_command_line(
    experiment: str,
    config_cls: type,
    presets: dict[str, Any] | None = None,
    argv: list[str] | None = None,
    description: str | None = None,
) -> tuple[Any, argparse.Namespace]:
    """Parses ``argv`` into (config, args). Unknown keys and bad values exit with a clear message.

    ``--help`` lists every dotted key with its type, default, meaning and (string keys of a
    fixed set) allowed values (:func:`_key_docs`), and each preset's keys that differ from
    the defaults.
    """
    presets = presets or {}
    defaults = cfg.flatten(config_cls())
    kinds = cfg.leaf_types(config_cls)
    docs = _key_docs(config_cls())

    def shown(value) -> str:  # a value as --config.KEY=VALUE writes it
        if isinstance(value, tuple):
            return ",".join(shown(v) for v in value)
        return str(value).lower() if isinstance(value, bool) else str(value)

    width = max(shutil.get_terminal_size().columns - 2, 40)  # as argparse wraps
    lines = ["presets (--preset NAME): the keys each sets that differ from the defaults"]
    for name, preset in presets.items():
        changed = [f"{k}={shown(v)}" for k, v in cfg.flatten(preset).items() if v != defaults[k]]
        text = f"{name}: {', '.join(changed) or '(the defaults)'}"
        wrap = {"break_long_words": False, "break_on_hyphens": False}
        lines.append(
            textwrap.fill(text, width, initial_indent="  ", subsequent_indent="    ", **wrap)
        )
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{experiment}",
        description=description,
        epilog="\n".join(lines) if presets else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
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
    group = parser.add_argument_group(
        "config (override with --config.KEY=VALUE; tuples comma-separated: 1,2,2)"
    )
    for key, default in defaults.items():
        meaning, choices = docs[key]
        text = f"default: {default!r}"
        if choices:
            text += f" (one of: {', '.join(choices)})"
        if meaning:
            text += f"; {meaning}"
        group.add_argument(
            f"--config.{key}",
            dest=f"config.{key}",
            type=_converter(kinds[key]),
            default=None,
            metavar=cfg.type_name(kinds[key]),
            help=text.replace("%", "%%"),
        )
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        keys = [u.split("=")[0] for u in unknown]
        config_keys = [k[len("--config.") :] for k in keys if k.startswith("--config.")]
        if config_keys:
            parser.error(f"unknown config key(s) {config_keys}; valid keys: {', '.join(defaults)}")
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    config = presets[args.preset] if args.preset else config_cls()
    overrides = {
        key: getattr(args, f"config.{key}")
        for key in defaults
        if getattr(args, f"config.{key}") is not None
    }
    try:
        config = cfg.replace(config, overrides)
    except (ValueError, TypeError) as e:
        parser.error(f"invalid config: {e}")
    return config, args


def fail(message: str) -> None:
    """Prints an error for the user and exits with status 1 (no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def main(experiment: Experiment, argv: list[str] | None = None) -> None:
    """The body of every experiment's ``main``: parse, run (or draw figures), print the report."""
    sharding.initialize_distributed()  # multi-host: JAX_COORDINATOR_ADDRESS etc.; else no-op
    config, args = parse_command_line(
        experiment.name,
        experiment.config_class,
        experiment.presets,
        argv,
        description=experiment.description,
    )
    if args.figures:
        try:
            paths = experiment.figures(config, args.workdir)
        except (RuntimeError, FileNotFoundError, ValueError) as e:
            fail(str(e))
        print("\n".join(f"wrote {p}" for p in paths))
        return
    try:
        results = experiment.run(config, args.workdir, eval_only=args.eval_only)
        command = " ".join(["python -m experiments." + experiment.name, *(argv or sys.argv[1:])])
        path = Path(args.workdir) / results.get("output_dir", ".") / "results.json"
        if jax.process_index() == 0:
            results = {**results, "command": command}
            rundir.write_json_atomic(path, results)
    except runner.TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(e.exit_code) from None  # 143 (SIGTERM) or 130 (Ctrl-C)
    except (RuntimeError, FileNotFoundError, ValueError, FloatingPointError, OSError) as e:
        fail(str(e))
    print(experiment.report(results))
    print(f"results: {path}")


KEY_NAMES = ("train_data", "test_data", "init", "train", "eval", "figure", "ceiling")


def experiment_keys(seed: int) -> dict[str, jax.Array]:
    """One independent PRNG key per use, all derived from the config's seed."""
    root = jax.random.PRNGKey(seed)
    return {name: jax.random.fold_in(root, i) for i, name in enumerate(KEY_NAMES)}


def fit_settings(config) -> dict:
    """The runner's loop settings (``runner.fit`` keyword arguments) from a config's ``train``."""
    train = config.train
    return {
        "num_steps": train.steps,
        "checkpoint_every": train.checkpoint_every,
        "log_every": train.log_every,
        "max_skipped_in_a_row": train.max_skipped_in_a_row,
        "steps_per_call": train.steps_per_call,
        "ema_decay": train.ema_decay,
    }


def train_or_restore(experiment: Experiment, config, workdir: Path, eval_only: bool, **kwargs):
    """``runner.train_or_restore`` for ``experiment``: its name, mutable keys, conversion
    command and ``config.train``'s loop settings; ``kwargs`` are the rest (state, mesh,
    loss_fn, tx, batch_fn)."""
    return runner.train_or_restore(
        workdir=Path(workdir),
        experiment=experiment.name,
        config=config,
        mutable_keys=experiment.mutable_keys,
        eval_only=eval_only,
        convert_command=experiment.convert_command(workdir),
        **fit_settings(config),
        **kwargs,
    )


def check_workdir(experiment: Experiment, config, workdir: Path) -> None:
    """Refuses a workdir of another experiment, an incompatible config or a config saved
    in the flat layout of earlier versions (``rundir.check_run_compatible``; nothing written)."""
    rundir.check_run_compatible(
        workdir,
        experiment.name,
        rundir.config_to_dict(config),
        experiment.mutable_keys,
        rundir.config_defaults(config),
        convert_command=experiment.convert_command(workdir),
    )


def train_on_generator(
    experiment: Experiment,
    config,
    workdir: Path,
    eval_only: bool,
    data,
    *,
    init_params,
    make_optimizer,
    loss_fn,
):
    """Trains (or, with ``eval_only``, restores) a model on fresh batches from ``data.sample``.

    Batch ``step`` is drawn with a key folded from the step, so a resumed run sees the
    same data; every process draws the whole batch and keeps its rows of it. Trains data
    parallel over every device (``sharding.data_mesh``), through ``runner.train_or_restore``
    like every experiment. ``init_params(config, key)``, ``make_optimizer(config)`` and
    ``loss_fn(config, params, batch, key)`` are the experiment's. Returns (state, keys).
    """
    keys = experiment_keys(config.seed)
    tx = make_optimizer(config)
    mesh = sharding.data_mesh()
    batch_size = config.train.batch_size
    rows = sharding.process_batch_slice(batch_size, mesh)
    sample_batch = jax.jit(lambda k: data.sample(k, batch_size))

    def batch_fn(step: int) -> np.ndarray:
        return np.asarray(sample_batch(jax.random.fold_in(keys["train_data"], step)))[rows]

    state = train_or_restore(
        experiment,
        config,
        workdir,
        eval_only,
        state=train_state.create_train_state(init_params(config, keys["init"]), tx, keys["train"]),
        mesh=mesh,
        loss_fn=functools.partial(loss_fn, config),
        tx=tx,
        batch_fn=batch_fn,
    )
    return state, keys


def train_module_on_generator(module, config, workdir: Path, eval_only: bool, data):
    """:func:`train_on_generator` with an experiment module's own ``experiment``,
    ``init_params``, ``make_optimizer`` and ``loss_fn``. Returns (state, keys)."""
    return train_on_generator(
        module.experiment,
        config,
        workdir,
        eval_only,
        data,
        init_params=module.init_params,
        make_optimizer=module.make_optimizer,
        loss_fn=module.loss_fn,
    )


def exact_kind(forward_samples: int, draws: str = "forward sample x^(t)") -> str:
    """results.json's ``K_kind`` of an exact bound: what is summed and what is sampled."""
    averaged = (
        ""
        if forward_samples == 1
        else f", averaged over {forward_samples} independent trajectories per example"
    )
    return (
        f"exact: all KL terms t = 2..T summed, one {draws} per term and example{averaged}; "
        "stderr over test examples"
    )


def bound_terms_results(values: dict, unit: str, per: float = 1.0) -> dict:
    """results.json's ``bound_terms``: the mean and standard error over test examples of each
    term of K (``dpm_jax.terms.in_bits``, bits per example, divided by ``per``)."""
    out = {"unit": unit, "meaning": "losses: K = -(prior_L_T + kl_sum_t2_to_T + decoder_L_0)"}
    for name in terms.TERM_NAMES:
        out[name], out[f"{name}_stderr"] = likelihood.mean_and_stderr(
            np.asarray(values[name]) / per
        )
    return out


def output_dir(workdir: Path, eval_only: bool) -> Path:
    """Where a run writes results.json and figures: the workdir for a training; for
    ``--eval_only`` a new ``workdir/evaluations/<UTC time>`` (``rundir.evaluation_dir``), so
    an evaluation never replaces the training's results or figures."""
    if not eval_only:
        return Path(workdir)
    if jax.process_index() == 0:  # the one writer
        return rundir.evaluation_dir(workdir)
    return Path(workdir) / rundir.EVALUATIONS_DIR / f"process-{jax.process_index()}"


def hardware() -> str:
    """The machine in words: CPU count and the JAX devices."""
    kinds = sorted({d.device_kind for d in jax.devices()})
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{jax.device_count()} x {'/'.join(kinds)} ({jax.default_backend()})"
    )


def write_results(
    experiment: Experiment,
    config,
    workdir: Path,
    results: dict,
    *,
    state,
    num_test: int,
    start_time: float,
    figures: list[Path],
    outdir: Path | None = None,
) -> dict:
    """Adds what every results.json carries (experiment, units, paper, sizes, wall time,
    figures relative to it, config as dotted keys, its folder relative to the workdir) to
    ``results`` and writes it atomically to ``outdir/results.json`` (``outdir``: the
    workdir, or :func:`output_dir`'s folder of an ``--eval_only`` run)."""
    workdir = Path(workdir)
    outdir = workdir if outdir is None else Path(outdir)
    results.update(
        experiment=experiment.name,
        units=experiment.units,
        paper=experiment.paper,
        num_test_examples=int(num_test),
        T=config.diffusion.steps,
        train_steps=int(state.step),
        wall_seconds=time.time() - start_time,
        wall_seconds_kind="this invocation (training resumed from a checkpoint counts only its part)",
        hardware=hardware(),
        figures=[str(Path(f).relative_to(outdir)) for f in figures],
        config=rundir.config_to_dict(config),
        output_dir=str(outdir.relative_to(workdir)),
    )
    if jax.process_index() == 0:  # one writer on multi-host runs
        rundir.write_json_atomic(outdir / "results.json", results)
    return results
