"""Orbax checkpoints of a :class:`~dpm_jax.train_state.TrainState` in ``workdir/checkpoints``.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so
a write cut short (a kill) is never listed as a step; such leftovers are deleted when
the manager opens. Checkpoints written before the train state had its ``ema_params``
field restore too: the EMA starts at the restored parameters (what an EMA with decay 0,
the only setting such runs had, holds anyway).

A checkpoint that cannot be read (a data file truncated, a manifest or the metadata
missing, an empty step directory: a disk or a copy gone wrong, not a kill) is moved to
``workdir/damaged_checkpoints/`` with a warning, and the next older one is restored; a
checkpoint of another model (other parameter shapes) is an error, never skipped.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from dpm_jax.rundir import CHECKPOINT_DIR
from dpm_jax.train_state import TrainState

DAMAGED_DIR = "damaged_checkpoints"

#: TrainState fields that older checkpoints lack, with how to fill them from the restored rest.
ADDED_FIELDS = {"ema_params": lambda restored: jax.tree.map(jnp.copy, restored["params"])}


def checkpoint_manager(workdir: Path, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """An orbax manager over ``workdir/checkpoints`` (created; temporary leftovers deleted)."""
    directory = (Path(workdir) / CHECKPOINT_DIR).resolve()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
    )
    return ocp.CheckpointManager(
        directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


def save(manager: ocp.CheckpointManager, step: int, state: TrainState) -> None:
    """Starts an (asynchronous) save of ``state`` as checkpoint ``step``."""
    manager.save(step, args=ocp.args.StandardSave(state))


def _saved_tree(manager: ocp.CheckpointManager, step: int):
    """Checkpoint ``step``'s metadata tree (ArrayMetadata leaves), or None when unreadable."""
    try:
        meta = manager.item_metadata(step)
    except (ValueError, KeyError, TypeError, OSError):
        return None
    tree = getattr(meta, "tree", meta)
    return tree if hasattr(tree, "keys") and jax.tree.leaves(tree) else None


def _shapes(tree) -> list[tuple[int, ...]]:
    return sorted(tuple(leaf.shape) for leaf in jax.tree.leaves(tree))


def _restore(manager, step: int, template: TrainState, saved_tree) -> TrainState:
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    missing = [name for name in ADDED_FIELDS if name not in saved_tree]
    if not missing:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    fields = {
        f.name: getattr(abstract, f.name)
        for f in dataclasses.fields(abstract)
        if f.name not in missing
    }
    restored = manager.restore(step, args=ocp.args.StandardRestore(fields))
    return TrainState(**restored, **{name: ADDED_FIELDS[name](restored) for name in missing})


def _expected_shapes(template: TrainState, saved_tree) -> list[tuple[int, ...]]:
    """The template's array shapes, less the fields an older checkpoint lacks."""
    kept = [
        getattr(template, f.name)
        for f in dataclasses.fields(template)
        if f.name in saved_tree or f.name not in ADDED_FIELDS
    ]
    return _shapes(kept)


def _set_aside(manager: ocp.CheckpointManager, step: int, reason: str) -> Path:
    """Moves damaged checkpoint ``step`` to ``workdir/damaged_checkpoints/`` (process 0)."""
    directory = Path(manager.directory)
    target = directory.parent / DAMAGED_DIR / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(directory / str(step)), str(target))
    warnings.warn(
        f"checkpoint {step} in {directory} is damaged ({reason}); moved it to {target} and "
        "falling back to the previous checkpoint.",
        RuntimeWarning,
        stacklevel=3,
    )
    manager.reload()
    return target


def restore_latest(manager: ocp.CheckpointManager, template: TrainState) -> TrainState | None:
    """The latest readable checkpoint restored into ``template``'s structure, or None.

    Arrays take the template's shardings (replicate the template on the mesh first). A
    damaged checkpoint is set aside (``damaged_checkpoints/``, with a warning) and the next
    older one tried; a checkpoint whose parameter shapes differ from the template's is
    another model's and raises RuntimeError, as does a workdir whose checkpoints are all
    damaged.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    for step in steps:
        saved_tree = _saved_tree(manager, step)
        if saved_tree is None:
            _set_aside(manager, step, "its metadata cannot be read")
            continue
        if _shapes(saved_tree) != _expected_shapes(template, saved_tree):
            raise RuntimeError(
                f"checkpoint {step} in {manager.directory} does not match this model's "
                "parameters (other array shapes). Use a new --workdir for a different model."
            )
        try:
            return _restore(manager, step, template, saved_tree)
        except (ValueError, KeyError, TypeError, OSError) as e:
            _set_aside(manager, step, f"{type(e).__name__}: {str(e)[:200]}")
    if steps:
        raise RuntimeError(
            f"every checkpoint in {manager.directory} ({steps}) is damaged and was moved to "
            f"{Path(manager.directory).parent / DAMAGED_DIR}; nothing can be resumed. Use a "
            "new --workdir, or copy an intact checkpoint back."
        )
    return None
