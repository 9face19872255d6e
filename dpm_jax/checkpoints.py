"""Orbax checkpoints of a :class:`~dpm_jax.train_state.TrainState` in ``workdir/checkpoints``.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so
a write cut short (a kill) is never listed as a step; such leftovers are deleted when
the manager opens. Checkpoints written before the train state had its ``ema_params``
field restore too: the EMA starts at the restored parameters (what an EMA with decay 0,
the only setting such runs had, holds anyway).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from dpm_jax.rundir import CHECKPOINT_DIR
from dpm_jax.train_state import TrainState

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


def _saved_fields(manager: ocp.CheckpointManager, step: int) -> set[str] | None:
    """The top-level names in checkpoint ``step``, or None when orbax cannot say."""
    try:
        meta = manager.item_metadata(step)
    except (ValueError, KeyError, TypeError, FileNotFoundError):
        return None
    tree = getattr(meta, "tree", meta)
    return set(tree.keys()) if hasattr(tree, "keys") else None


def _restore(manager: ocp.CheckpointManager, step: int, template: TrainState) -> TrainState:
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    saved = _saved_fields(manager, step)
    missing = [name for name in ADDED_FIELDS if saved is not None and name not in saved]
    if not missing:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    fields = {
        f.name: getattr(abstract, f.name)
        for f in dataclasses.fields(abstract)
        if f.name not in missing
    }
    restored = manager.restore(step, args=ocp.args.StandardRestore(fields))
    return TrainState(**restored, **{name: ADDED_FIELDS[name](restored) for name in missing})


def restore_latest(manager: ocp.CheckpointManager, template: TrainState) -> TrainState | None:
    """The latest complete checkpoint restored into ``template``'s structure, or None.

    Arrays take the template's shardings (replicate the template on the mesh first).
    """
    step = manager.latest_step()
    if step is None:
        return None
    try:
        return _restore(manager, step, template)
    except (ValueError, KeyError, TypeError) as e:
        raise RuntimeError(
            f"checkpoint {step} in {manager.directory} does not match this model's parameters "
            f"({type(e).__name__}: {str(e)[:300]}). Use a new --workdir for a different model."
        ) from e
