"""Converts a run directory's config.json from the flat keys of earlier versions to dotted keys.

  python -m experiments.convert_config WORKDIR [WORKDIR ...]

Runs started before configs had sections saved flat keys (``train_steps``,
``eval_batch_size``, ...). This version refuses to resume or evaluate such a run (the
keys' meaning changed: ``steps`` is now ``diffusion.steps`` or ``train.steps``) until its
``config.json`` is converted. The conversion maps every saved key through the experiment's
table (``Experiment.legacy_keys``, next to each config); a key the table does not know is
an error and nothing is written. Keys the experiment no longer has (the TFDS ``dataset``
and ``data_dir`` of generated data) are dropped, and the command says so. The converted
values must form a valid config. The old file is kept as ``config.flat.json``; checkpoints,
metrics and results need no conversion. A config that is already dotted is left alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dpm_jax import rundir
from experiments import all_experiments
from experiments import config as cfg

BACKUP_FILE = "config.flat.json"


def convert(workdir: Path) -> str:
    """Converts ``workdir/config.json`` in place (backup in ``config.flat.json``).

    Returns what was done, in words. Raises ValueError (or KeyError, FileNotFoundError)
    with the reason when the file cannot be converted; then nothing is written.
    """
    workdir = Path(workdir)
    path = workdir / rundir.CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is {workdir} a run directory?")
    text = path.read_text()
    try:
        saved = json.loads(text)
        name, old = saved["experiment"], dict(saved["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a run's config file ({type(e).__name__}: {e}).") from e
    experiments = all_experiments()
    if name not in experiments:
        raise ValueError(f"{path} names experiment {name!r}; known: {sorted(experiments)}.")
    experiment = experiments[name]
    if any("." in key for key in old):
        return f"{path}: already in the dotted layout, left unchanged"
    try:
        new = cfg.convert_legacy(old, experiment.legacy_keys)
    except KeyError as e:
        raise ValueError(f"{path} ({name}): {e.args[0]}; nothing was written.") from None
    # Keys added after the flat layout take their defaults: the old run had no such choice.
    reached = {v for v in experiment.legacy_keys.values() if v is not None}
    defaults = cfg.to_json(experiment.config_class())
    new.update({k: v for k, v in defaults.items() if k not in reached and k not in new})
    try:
        cfg.from_json(experiment.config_class(), new)  # the values must form a valid config
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path} ({name}): the converted config is invalid: {e}") from None
    backup = workdir / BACKUP_FILE
    if backup.exists() and backup.read_text() != text:
        raise ValueError(f"{backup} exists and differs from {path}; move it away first.")
    backup.write_text(text)
    rundir.save_run_config(workdir, name, new)
    dropped = sorted(k for k in old if experiment.legacy_keys[k] is None)
    note = f"; dropped {', '.join(f'{k}={old[k]!r}' for k in dropped)}" if dropped else ""
    return f"{path}: {len(new)} keys converted to dotted keys (old file: {backup}){note}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.convert_config", description=__doc__.splitlines()[0]
    )
    parser.add_argument("workdirs", nargs="+", type=Path, metavar="WORKDIR")
    args = parser.parse_args(argv)
    failed = False
    for workdir in args.workdirs:
        try:
            print(convert(workdir))
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed = True
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
