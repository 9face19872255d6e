"""Training infrastructure shared by every experiment.

  * :class:`TrainState`: step, parameters, optimiser state and PRNG key, one pytree.
  * :func:`make_train_step`: a pure, jitted step from a loss function and an optax optimiser.
  * :func:`fit`: the loop -- resume from the workdir's latest orbax checkpoint,
    step, log metrics (JSON lines), checkpoint every N steps, tqdm progress; a
    SIGTERM saves a final checkpoint and stops cleanly (:class:`TrainingInterrupted`).
  * Steps whose loss or gradients are not finite are skipped (parameters and
    optimiser state unchanged) and counted; too many in a row stop the run.
  * :func:`evaluate_per_example`: a per-example function over a whole data set
    in fixed-size batches (the last one padded and masked out).
  * Run bookkeeping: the config saved with the run, compatibility checks on
    resume, atomic JSON writes.

Nothing here knows which experiment or data set it serves.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from dpm_jax import sharding

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs: step, params, optimiser state and the PRNG key.

    ``skipped`` counts steps skipped for non-finite values, ``skipped_in_a_row``
    those since the last good step.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key data, so orbax stores it as a plain array
    skipped: jax.Array
    skipped_in_a_row: jax.Array


def create_train_state(params, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    def zero():  # one buffer per field: the train step donates them
        return jnp.array(0, jnp.int32)

    return TrainState(
        step=zero(),
        params=params,
        opt_state=tx.init(params),
        rng=rng,
        skipped=zero(),
        skipped_in_a_row=zero(),
    )


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint; rerun the command to resume."""


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]]


def _train_step_fn(loss_fn: LossFn, tx: optax.GradientTransformation):
    """The un-jitted step of :func:`make_train_step`."""

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
        rng, step_key = jax.random.split(state.rng)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, step_key
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            (params, opt_state),
            (state.params, state.opt_state),
        )
        skipped = state.skipped + (~finite).astype(jnp.int32)
        in_a_row = jnp.where(finite, 0, state.skipped_in_a_row + 1)
        new_state = TrainState(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            rng=rng,
            skipped=skipped,
            skipped_in_a_row=in_a_row,
        )
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "skipped_steps": skipped,
            "skipped_in_a_row": in_a_row,
            **aux,
        }
        return new_state, metrics

    return train_step


def make_train_step(
    loss_fn: LossFn, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh | None = None
):
    """A pure train step ``(state, batch) -> (state, metrics)``, jitted with the state donated.

    ``loss_fn(params, batch, key) -> (loss, aux_metrics)`` is minimised. The
    step key is split from the state's key, so a resumed run draws the same
    randomness as an uninterrupted one. A step whose loss or gradients are not
    all finite leaves the parameters and optimiser state as they were (the 2015
    code's ``RemoveNotFinite`` did this per parameter) and is counted.

    With a ``mesh`` (``dpm_jax.sharding.data_mesh``) the step is data parallel: the
    state and metrics are replicated over the mesh and the batch is split over its
    ``"data"`` axis (its size must be divisible by the device count); XLA inserts the
    gradient all-reduce. A loss that is a mean over the batch then gives the same
    step as on one device with the same global batch and key.
    """

    train_step = _train_step_fn(loss_fn, tx)
    if mesh is None:
        return jax.jit(train_step, donate_argnums=0)
    state_sharding = sharding.replicated(mesh)
    return jax.jit(
        train_step,
        in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
        out_shardings=(state_sharding, state_sharding),
        donate_argnums=0,
    )


def make_multi_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    steps_per_call: int,
    mesh: jax.sharding.Mesh | None = None,
):
    """``steps_per_call`` train steps in one compiled call: ``(state, batches) -> (state, metrics)``.

    ``batches`` stacks one batch per step on a new leading axis; a ``lax.scan`` runs the
    steps of :func:`make_train_step` in order (same keys, same skipping), so dispatch
    costs once per call. Metrics are those of the last step.
    """
    if steps_per_call < 2:
        raise ValueError(f"steps_per_call must be >= 2 here, got {steps_per_call}.")
    single = _train_step_fn(loss_fn, tx)

    def multi_step(state: TrainState, batches) -> tuple[TrainState, dict]:
        state, metrics = jax.lax.scan(single, state, batches)
        return state, jax.tree.map(lambda m: m[-1], metrics)

    if mesh is None:
        return jax.jit(multi_step, donate_argnums=0)
    state_sharding = sharding.replicated(mesh)
    return jax.jit(
        multi_step,
        in_shardings=(state_sharding, sharding.stacked_batch_sharding(mesh)),
        out_shardings=(state_sharding, state_sharding),
        donate_argnums=0,
    )


def _stack(batches: list):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *batches)


# ----------------------------------------------------------------------------------------------
# Run directory bookkeeping.


def write_json_atomic(path: Path, obj) -> None:
    """Writes JSON to a temporary file in the same folder, then renames it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def config_to_dict(config) -> dict:
    return dataclasses.asdict(config)


def check_run_compatible(workdir: Path, experiment: str, config: dict, mutable_keys=()) -> None:
    """Refuses a workdir whose saved run is another experiment or an incompatible config.

    Keys in ``mutable_keys`` (run length, logging cadence) may change on resume;
    any other difference would make the checkpoint meaningless for this config.
    Raises before anything in the workdir is touched.
    """
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        if (Path(workdir) / CHECKPOINT_DIR).exists():
            raise RuntimeError(
                f"{workdir} holds checkpoints but no {CONFIG_FILE}; it was not written by this "
                "library or was damaged. Use a new --workdir."
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
    old = saved.get("config", {})
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
    write_json_atomic(Path(workdir) / CONFIG_FILE, {"experiment": experiment, "config": config})


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drops metric lines past the resumed step (about to be re-run) and lines cut off by a kill."""
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


# ----------------------------------------------------------------------------------------------
# Checkpoints.


def checkpoint_manager(workdir: Path, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """An orbax manager over ``workdir/checkpoints``.

    Orbax writes each checkpoint into a temporary directory and renames it when
    complete, so a write cut short (a kill) is never listed as a step; such
    leftovers are deleted when the manager opens.
    """
    directory = (Path(workdir) / CHECKPOINT_DIR).resolve()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
    )
    return ocp.CheckpointManager(directory, options=options)


def restore_latest(manager: ocp.CheckpointManager, template: TrainState) -> TrainState | None:
    """The latest complete checkpoint restored into ``template``'s structure, or None."""
    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, KeyError, TypeError) as e:
        raise RuntimeError(
            f"checkpoint {step} in {manager.directory} does not match this model's parameters "
            f"({type(e).__name__}: {str(e)[:300]}). Use a new --workdir for a different model."
        ) from e


# ----------------------------------------------------------------------------------------------
# The loop.


@contextlib.contextmanager
def _sigterm_flag():
    """Yields a list that becomes non-empty when SIGTERM arrives (main thread only)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def fit(
    *,
    workdir: Path,
    state: TrainState,
    train_step: Callable,
    batch_fn: Callable[[int], Any],
    num_steps: int,
    checkpoint_every: int,
    log_every: int,
    max_skipped_in_a_row: int = 20,
    multi_step: Callable | None = None,
    steps_per_call: int = 1,
    desc: str = "train",
) -> TrainState:
    """Trains until ``state.step == num_steps``, resuming from ``workdir`` if it has a checkpoint.

    ``batch_fn(step)`` returns the batch for a global step: with a
    deterministic ``batch_fn`` a resumed run sees the same data order. It runs
    one call ahead in a background thread, so loading overlaps the device's work.
    With ``multi_step`` (:func:`make_multi_step`) runs of ``steps_per_call`` steps
    go in one call wherever no log, checkpoint or end step falls inside them.
    Metrics are fetched from the device every ``log_every`` steps only; there
    the run stops (FloatingPointError) if the last ``max_skipped_in_a_row`` or
    more steps were all skipped for non-finite values. On SIGTERM the current
    step is checkpointed and :class:`TrainingInterrupted` is raised.
    """
    if num_steps < 0 or checkpoint_every < 1 or log_every < 1 or max_skipped_in_a_row < 1:
        raise ValueError(
            "num_steps >= 0, checkpoint_every >= 1, log_every >= 1 and max_skipped_in_a_row >= 1 "
            "are required."
        )
    workdir = Path(workdir)
    metrics_path = workdir / METRICS_FILE
    manager = checkpoint_manager(workdir)
    restored = restore_latest(manager, state)
    if restored is not None:
        state = restored
    start = int(state.step)
    if jax.process_index() == 0:
        _trim_metrics(metrics_path, start)
    if start >= num_steps:
        manager.close()
        return state

    with (
        _sigterm_flag() as sigterm,
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as prefetcher,
        tqdm(total=num_steps, initial=start, desc=desc, dynamic_ncols=True, mininterval=1.0) as bar,
    ):

        def next_call(step: int) -> int:
            """Steps in the call starting at ``step``: up to the next log/save/end step."""
            if multi_step is None or steps_per_call < 2:
                return 1
            boundary = min(
                num_steps,
                (step // log_every + 1) * log_every,
                (step // checkpoint_every + 1) * checkpoint_every,
            )
            return steps_per_call if step + steps_per_call <= boundary else 1

        def load(step: int, count: int):
            if count == 1:
                return batch_fn(step)
            return _stack([batch_fn(s) for s in range(step, step + count)])

        step = start
        count = next_call(step)
        pending = prefetcher.submit(load, step, count)
        while step < num_steps:
            batch = pending.result()
            after = step + count
            if after < num_steps:  # load the next call's batches while this one runs
                next_count = next_call(after)
                pending = prefetcher.submit(load, after, next_count)
            if count == 1:
                state, metrics = train_step(state, batch)
            else:
                state, metrics = multi_step(state, batch)
            step = done = after
            if after < num_steps:
                count = next_count
            logging = done % log_every == 0 or done == num_steps
            saving = done % checkpoint_every == 0 or done == num_steps
            if logging:
                values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if jax.process_index() == 0:  # one writer on multi-host runs
                    with metrics_path.open("a") as f:
                        f.write(json.dumps({"step": done, **values}) + "\n")
                bar.set_postfix(loss=f"{values['loss']:.4f}", skipped=int(values["skipped_steps"]))
                if values["skipped_in_a_row"] >= max_skipped_in_a_row:
                    manager.wait_until_finished()
                    raise FloatingPointError(
                        f"the last {int(values['skipped_in_a_row'])} steps (to step {done}) all had "
                        f"a non-finite loss or gradient and were skipped ({int(values['skipped_steps'])} "
                        f"skipped in all); parameters are unchanged since the last good step and "
                        f"the last checkpoint (step {manager.latest_step()}) in {manager.directory} "
                        "is intact. Lower the learning rate or check the data, then resume."
                    )
            if saving or sigterm:
                manager.save(done, args=ocp.args.StandardSave(state))
            bar.update(done - bar.n)
            if sigterm and done < num_steps:
                manager.wait_until_finished()
                manager.close()
                raise TrainingInterrupted(
                    f"stopped by SIGTERM after step {done}; checkpoint {done} saved in "
                    f"{manager.directory}. Run the same command again to resume."
                )
    manager.wait_until_finished()
    manager.close()
    return state


def train_or_restore(
    *,
    workdir: Path,
    experiment: str,
    config: dict,
    mutable_keys,
    state: TrainState,
    eval_only: bool,
    **fit_kwargs,
) -> TrainState:
    """The start of every experiment run.

    Refuses a workdir holding another experiment or an incompatible config
    (before writing anything); then restores the latest checkpoint
    (``eval_only``) or saves the config and calls :func:`fit`, which resumes.
    """
    workdir = Path(workdir)
    check_run_compatible(workdir, experiment, config, mutable_keys)
    if eval_only:
        restored = None
        if (workdir / CHECKPOINT_DIR).exists():
            restored = restore_latest(checkpoint_manager(workdir), state)
        if restored is None:
            raise FileNotFoundError(
                f"no checkpoint in {workdir / CHECKPOINT_DIR}; train first (drop --eval_only)."
            )
        return restored
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        save_run_config(workdir, experiment, config)
    return fit(workdir=workdir, state=state, desc=experiment, **fit_kwargs)


# ----------------------------------------------------------------------------------------------
# Evaluation.


def evaluate_per_example(
    fn: Callable[[jax.Array, jax.Array], jax.Array],
    data: np.ndarray,
    key: jax.Array,
    batch_size: int,
    desc: str = "eval",
) -> np.ndarray:
    """Applies a jitted ``fn(x_batch, key) -> (batch,)`` to every example of ``data``.

    Batches have a fixed size (one compilation); the last one is padded with
    copies of the first example and the padded outputs are dropped, so every
    example is counted exactly once. Returns float64 numpy of shape (N,).
    """
    data = np.asarray(data)
    n = data.shape[0]
    if n == 0:
        raise ValueError("cannot evaluate an empty data set.")
    batch_size = min(batch_size, n)
    out = []
    for i, start in enumerate(tqdm(range(0, n, batch_size), desc=desc, dynamic_ncols=True)):
        batch = data[start : start + batch_size]
        valid = batch.shape[0]
        if valid < batch_size:
            pad = np.repeat(data[:1], batch_size - valid, axis=0)
            batch = np.concatenate([batch, pad], axis=0)
        values = fn(jnp.asarray(batch), jax.random.fold_in(key, i))
        out.append(np.asarray(values, dtype=np.float64)[:valid])
    return np.concatenate(out)
