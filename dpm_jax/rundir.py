"""A run directory's bookkeeping: the saved config, compatibility checks on resume, JSON files.

A workdir holds ``config.json`` (experiment name and config), ``metrics.jsonl`` (one JSON
line per logged step), ``checkpoints/`` (``dpm_jax.checkpoints``) and the experiment's
results and figures. Nothing here knows which experiment it serves.

A directory that holds files but no ``config.json`` is not a run directory and is never
taken over; a training holds ``workdir/.lock`` (``fcntl.flock``, released by the kernel
when the process dies, so a killed run never leaves a stale lock) so that two trainings
cannot write one workdir. ``--eval_only`` writes under ``workdir/evaluations/`` instead
of over the training's results. JSON files hold no bare NaN (``null`` with the reason)
and are created with the user's umask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import math
import os
import tempfile
import time
from pathlib import Path

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".lock"
EVALUATIONS_DIR = "evaluations"
#: Files an experiment may write before ``config.json`` (the image scaling, the lock).
BEFORE_CONFIG = {"scaling.json", LOCK_FILE}


def _json_safe(obj):
    """``obj`` with every non-finite float replaced by None and ``<key>_not_finite`` saying
    which ("nan", "inf" or "-inf"): strict JSON, which most readers require."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key], out[f"{key}_not_finite"] = None, repr(value)
            else:
                out[key] = _json_safe(value)
        return out
    if isinstance(obj, list | tuple):
        return [
            None if isinstance(v, float) and not math.isfinite(v) else _json_safe(v) for v in obj
        ]
    return obj


def _check_not_a_file(workdir: Path) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir} is a file, not a directory; pass a directory.")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, obj) -> None:
    """Writes JSON to a temporary file in the same folder, then renames it over ``path``.

    Non-finite floats become ``null`` (see :func:`_json_safe`); the file gets the mode an
    ordinary ``open`` would give it (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def config_to_dict(config, prefix: str = "") -> dict:
    """A config dataclass as the flat dict ``config.json`` stores: {dotted key: value}.

    A field holding a dataclass (a section) contributes its fields under its name
    (``train.steps``); tuples become lists, as JSON holds them.
    """
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        key = prefix + field.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(config_to_dict(value, key + "."))
        else:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def config_defaults(config) -> dict:
    """The defaults of ``config``'s dataclass (every field of a config class has one)."""
    return config_to_dict(type(config)())


def _is_flat_layout(saved: dict, requested: dict) -> bool:
    """Whether a saved config predates sections: no dotted key where the requested has some."""
    dotted = lambda keys: any("." in k for k in keys)  # noqa: E731
    return bool(saved) and not dotted(saved) and dotted(requested)


def check_run_compatible(
    workdir: Path,
    experiment: str,
    config: dict,
    mutable_keys=(),
    defaults: dict | None = None,
    convert_command: str | None = None,
) -> None:
    """Refuses a workdir whose saved run is another experiment or an incompatible config.

    ``config`` is :func:`config_to_dict`'s flat dict of dotted keys. Keys in
    ``mutable_keys`` (run length, logging cadence) may change on resume; any other
    difference would make the checkpoint meaningless for this config. A key the saved
    config lacks (added to the config class after the run started) matches when the
    requested value is its entry in ``defaults``, the value that reproduces the old
    behaviour. A saved config of flat keys only (written before configs had sections) is
    refused with a message naming ``convert_command``, the command that converts it.
    Raises before anything in the workdir is touched.
    """
    path = Path(workdir) / CONFIG_FILE
    _check_not_a_file(Path(workdir))
    if not path.exists():
        if (Path(workdir) / CHECKPOINT_DIR).exists():
            raise RuntimeError(
                f"{workdir} holds checkpoints but no {CONFIG_FILE}; it was not written by this "
                "library or was damaged. Use a new --workdir."
            )
        foreign = sorted(p.name for p in Path(workdir).glob("*") if p.name not in BEFORE_CONFIG)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise RuntimeError(
                f"{workdir} already holds files ({shown}) but no {CONFIG_FILE}, so it is not a "
                "run directory of this library; a run there would replace them. Use a new or "
                "empty --workdir (nothing in this one was changed)."
            )
        return
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RuntimeError(f"{path} is not valid JSON ({e}); use a new --workdir.") from e
    if saved.get("experiment") != experiment:
        raise RuntimeError(
            f"{workdir} holds a run of experiment {saved.get('experiment')!r}, not {experiment!r}. "
            "Use a new --workdir (nothing in this one was changed)."
        )
    old = dict(saved.get("config", {}))
    if _is_flat_layout(old, config):
        how = f"`{convert_command}`" if convert_command else "a table of old to dotted keys"
        raise RuntimeError(
            f"{path} has the flat config keys of an earlier version ({sorted(old)[0]!r}, ...), "
            f"not dotted ones; convert it with {how} (keeps a backup), then rerun. Nothing in "
            "the workdir was changed."
        )
    for key, value in (defaults or {}).items():
        old.setdefault(key, value)
    diffs = sorted(
        k for k in set(old) | set(config) if k not in mutable_keys and old.get(k) != config.get(k)
    )
    if diffs:
        detail = ", ".join(
            f"{k}: saved {old.get(k)!r} vs requested {config.get(k)!r}" for k in diffs
        )
        raise RuntimeError(
            f"{workdir} holds a run with a different config ({detail}). Resume with the saved "
            "values or use a new --workdir (nothing in this one was changed)."
        )


def save_run_config(workdir: Path, experiment: str, config: dict) -> None:
    """Writes ``workdir/config.json``: the experiment's name and its config."""
    write_json_atomic(Path(workdir) / CONFIG_FILE, {"experiment": experiment, "config": config})


def trim_metrics(path: Path, last_step: int) -> None:
    """Drops metric lines past the resumed step (about to be re-run) and lines cut off by a kill."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", last_step + 1) <= last_step:
            kept.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def append_metrics(path: Path, step: int, values: dict) -> None:
    """Appends one ``{"step": step, **values}`` line to the metrics log."""
    with Path(path).open("a") as f:
        f.write(json.dumps({"step": step, **values}) + "\n")


def prepare_workdir(workdir: Path) -> Path:
    """Creates ``workdir`` (and its parents); a clear error when it cannot be written."""
    workdir = Path(workdir)
    _check_not_a_file(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test")
        probe.close()
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise RuntimeError(
            f"cannot write to --workdir {workdir} ({reason}"
            f"{': a read-only file system' if e.errno == errno.EROFS else ''}); choose a "
            "directory you can write to."
        ) from None
    return workdir


@contextlib.contextmanager
def workdir_lock(workdir: Path):
    """Holds ``workdir/.lock`` for a training; RuntimeError if another process holds it.

    The lock is an ``fcntl.flock`` on the open file, so it ends with the process however
    it ends (SIGKILL included) and never goes stale.
    """
    path = Path(workdir) / LOCK_FILE
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise RuntimeError(
                f"another process ({holder}) is training in {workdir}; wait for it to finish "
                "or use another --workdir. Two runs in one workdir would mix their metrics "
                "and checkpoints."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def evaluation_dir(workdir: Path) -> Path:
    """A new ``workdir/evaluations/<UTC time>`` for an ``--eval_only`` run's results and
    figures, so they never replace the training's."""
    root = Path(workdir) / EVALUATIONS_DIR
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for n in range(1000):
        path = root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new directory under {root}.")
