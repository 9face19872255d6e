"""Configs as nested frozen dataclasses: sections, dotted keys, command-line values, JSON.

An experiment's config is a frozen dataclass whose fields are leaves (bool, int, float, str,
or a tuple of them) or sections (frozen dataclasses themselves), for example
``config.model.channel_mult`` or ``config.train.steps``. Every leaf has one dotted key, the
name used on the command line (``--config.train.steps=1000``, tuples comma-separated:
``--config.model.channel_mult=1,2,2,2``) and in a run's saved ``config.json``.

Why dataclasses and not ``ml_collections.ConfigDict``: the fields, their types and defaults
are declared once and checked by the type checker; ``__post_init__`` validates each section
where it is defined, so a bad value fails when the config is built, with a message naming
the key; instances are immutable and hashable (safe as static arguments of ``jax.jit``);
and no dependency is added. ConfigDict's late-bound references are not needed here.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from dpm_jax import rundir

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def is_section(value) -> bool:
    """Whether ``value`` is a config section (a dataclass instance)."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def flatten(config, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value} over every leaf of ``config``, in declaration order."""
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        key = f"{prefix}{field.name}"
        if is_section(value):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value
    return out


def to_json(config) -> dict[str, Any]:
    """:func:`flatten` with tuples as lists: what ``config.json`` stores and compares
    (``dpm_jax.rundir.config_to_dict``)."""
    return rundir.config_to_dict(config)


def leaf_types(config_cls: type, prefix: str = "") -> dict[str, Any]:
    """{dotted key: declared type} for every leaf of the config class ``config_cls``."""
    hints = typing.get_type_hints(config_cls)
    out = {}
    for field in dataclasses.fields(config_cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            out.update(leaf_types(kind, f"{prefix}{field.name}."))
        else:
            out[f"{prefix}{field.name}"] = kind
    return out


def _parse_scalar(text: str, kind: type):
    if kind is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    return kind(text.strip()) if kind in (int, float) else text


def parse_value(text: str, kind) -> Any:
    """A command-line string as a value of the declared type (tuples are comma-separated)."""
    if typing.get_origin(kind) is tuple:
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        element = args[0] if args else str
        parts = [p for p in text.split(",") if p.strip()]
        return tuple(_parse_scalar(p, element) for p in parts)
    return _parse_scalar(text, kind)


def type_name(kind) -> str:
    """A short name of a declared type for ``--help`` (INT, FLOAT, INT,INT,...)."""
    if typing.get_origin(kind) is tuple:
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        return f"{(args[0] if args else str).__name__.upper()},..."
    return kind.__name__.upper()


def replace(config, overrides: dict[str, Any]):
    """``config`` with dotted-key ``overrides`` applied (sections rebuilt, so each validates).

    Raises KeyError naming the unknown keys and listing the valid ones.
    """
    valid = flatten(config)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise KeyError(f"unknown config key(s) {unknown}; valid keys: {', '.join(valid)}")
    own, nested = {}, {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            own[key] = value
    for head, sub in nested.items():
        own[head] = replace(getattr(config, head), sub)
    return dataclasses.replace(config, **own) if own else config


def from_json(config, saved: dict[str, Any]):
    """``config`` with the leaves of a saved :func:`to_json` dict (lists back to tuples)."""
    return replace(config, {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


# ----------------------------------------------------------------------------------------------
# Validation and the sections every experiment shares.


def require(section, prefix: str, names, minimum, strict: bool = False) -> None:
    """Raises ValueError naming the dotted key (``prefix`` + field) of the first field of
    ``names`` below ``minimum`` (or, with ``strict``, not above it)."""
    for name in names:
        value = getattr(section, name)
        if not math.isfinite(value):
            raise ValueError(f"{prefix}{name} must be a finite number, got {value}.")
        if value < minimum or (strict and value == minimum):
            bound = f"> {minimum}" if strict else f">= {minimum}"
            raise ValueError(f"{prefix}{name} must be {bound}, got {value}.")


def require_choice(section, prefix: str, name: str, choices) -> None:
    """Raises ValueError naming the dotted key unless the field ``name`` is one of ``choices``."""
    value = getattr(section, name)
    if value not in choices:
        raise ValueError(f"{prefix}{name} must be one of {tuple(choices)}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """``train``: the optimiser and the training loop (``runner.fit``); ``steps`` counts
    optimiser steps (the diffusion's T is ``diffusion.steps``). Experiments subclass it to
    add their own keys and set their defaults where they declare the section."""

    #: {field: its meaning for ``--help``}; subclasses add theirs (``common.parse_command_line``
    #: merges them along the class's bases).
    HELP = {
        "batch_size": "training examples per optimiser step (over all devices and processes)",
        "learning_rate": "initial learning rate, decayed by the experiment's schedule",
        "steps": "optimiser steps to train for (the diffusion's T is diffusion.steps)",
        "checkpoint_every": "optimiser steps between checkpoints in --workdir (one is also "
        "saved at the end and on SIGTERM)",
        "log_every": "optimiser steps between metrics lines (metrics.jsonl) and the "
        "non-finite check",
        "max_skipped_in_a_row": "stop the run when this many steps in a row were skipped for "
        "a non-finite loss or gradient",
        "steps_per_call": "optimiser steps per compiled call (a lax.scan; 1: one step per "
        "call); speed only",
        "ema_decay": "decay of the parameters' EMA that evaluation and sampling use (0: off, "
        "the trained parameters)",
        "warmup_steps": "optimiser updates over which the learning rate ramps up linearly "
        "(0: no warmup)",
        "grad_clip_norm": "gradients clipped to this global L2 norm (0: no clipping)",
    }

    batch_size: int = 64
    learning_rate: float = 1e-3
    steps: int = 1_000
    checkpoint_every: int = 1_000
    log_every: int = 100
    max_skipped_in_a_row: int = 20
    steps_per_call: int = 1  # > 1: that many steps per compiled call (lax.scan)
    ema_decay: float = 0.0  # > 0: evaluate and sample with an EMA of the parameters
    warmup_steps: int = 0  # > 0: learning rates ramp up linearly over these steps
    grad_clip_norm: float = 0.0  # > 0: gradients clipped to this global norm

    def __post_init__(self):
        positive = ("batch_size", "checkpoint_every", "log_every", "max_skipped_in_a_row")
        require(self, "train.", (*positive, "steps_per_call"), 1)
        require(self, "train.", ("steps", "warmup_steps"), 0)
        require(self, "train.", ("learning_rate",), 0, strict=True)
        if not (math.isfinite(self.grad_clip_norm) and self.grad_clip_norm >= 0):
            raise ValueError(
                "train.grad_clip_norm must be a finite number >= 0 (0 turns clipping off), got "
                f"{self.grad_clip_norm}."
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(
                f"train.ema_decay must lie in [0, 1) (0 turns the EMA off), got {self.ema_decay}."
            )


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """``eval``: the test set's size, the evaluation batch and the forward trajectories per
    test example whose bounds are averaged (``dpm_jax.evaluation.averaged_over_draws``);
    experiments subclass it to add figure and ceiling sizes."""

    min_num_test: typing.ClassVar[int] = 1
    #: {field: its meaning for ``--help``}; subclasses add theirs.
    HELP = {
        "num_test": "test examples the exact bound K is evaluated on",
        "batch_size": "test examples per evaluation batch (memory and speed only: K does not "
        "depend on it)",
        "forward_samples": "forward trajectories per test example whose exact bounds are "
        "averaged (lowers K's Monte Carlo error)",
    }

    num_test: int = 1_000
    batch_size: int = 1_000
    forward_samples: int = 1

    def __post_init__(self):
        require(self, "eval.", ("num_test",), self.min_num_test)
        require(self, "eval.", ("batch_size", "forward_samples"), 1)


def _train_keys() -> dict[str, str]:
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "steps"]
    return {name: f"train.{name}" for name in names}


#: Flat keys of the configs before sections (runs started then) -> their dotted keys: the
#: keys every experiment had. Each experiment adds its own (``Experiment.legacy_keys``).
LEGACY_KEYS: dict[str, str | None] = {
    "seed": "seed",
    "diffusion_steps": "diffusion.steps",
    "train_steps": "train.steps",
    **_train_keys(),
    "num_test": "eval.num_test",
    "eval_batch_size": "eval.batch_size",
    "forward_samples": "eval.forward_samples",  # added with sections; no flat run has it
}


def convert_legacy(old: dict[str, Any], table: dict[str, str | None]) -> dict[str, Any]:
    """A saved flat config (no dotted keys) as dotted keys by ``table``.

    ``table`` maps every old key to its dotted key, or to None for a key the experiment no
    longer has (dropped). Raises KeyError listing any old key the table does not know.
    """
    unknown = sorted(set(old) - set(table))
    if unknown:
        raise KeyError(
            f"unknown flat config key(s) {unknown}; the conversion table knows {sorted(table)}"
        )
    return {table[k]: v for k, v in old.items() if table[k] is not None}
