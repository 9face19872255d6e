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
import typing
from typing import Any

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
    """:func:`flatten` with tuples as lists: what ``config.json`` stores and compares."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(config).items()}


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
