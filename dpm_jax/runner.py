"""The one training loop every experiment runs: :func:`fit` and :func:`train_or_restore`.

  * Data parallel over a device mesh (one device, many, or many processes): the state is
    replicated, each call's batch is placed on the mesh from this process's rows.
  * Resumes from the workdir's latest orbax checkpoint; logs metrics (JSON lines) every
    ``log_every`` steps; checkpoints every ``checkpoint_every`` steps; a SIGTERM or a
    first Ctrl-C (SIGINT) saves a final checkpoint and stops cleanly
    (:class:`TrainingInterrupted`); a second Ctrl-C stops at once. One training per
    workdir at a time (``rundir.workdir_lock``).
  * ``steps_per_call`` steps per compiled call (a ``lax.scan``), split at log,
    checkpoint and end steps; the next call's batches load in a background thread.
  * Non-finite steps are skipped inside the step (``dpm_jax.train_state``); too many in
    a row stop the run. The parameters' EMA is updated in the step.

Nothing here knows which experiment or data set it serves.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from dpm_jax import checkpoints, rundir, sharding
from dpm_jax.train_state import LossFn, TrainState, make_multi_step, make_train_step


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM or SIGINT after saving a checkpoint; rerun to resume.

    ``exit_code`` is what the command should exit with: 128 + the signal's number (143 for
    SIGTERM, what schedulers expect; 130 for Ctrl-C, what shells expect).
    """

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


#: The signals that stop a training after a checkpoint (SIGINT: Ctrl-C).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def _stop_flag():
    """Yields a list that receives SIGTERM or SIGINT when they arrive (main thread only).

    A second SIGINT raises KeyboardInterrupt at once, as Ctrl-C twice should.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        if signum == signal.SIGINT and signal.SIGINT in received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _call_size(step: int, steps_per_call: int, boundaries: tuple[int, ...], num_steps: int) -> int:
    """Steps in the call starting at ``step``: ``steps_per_call`` unless a log, checkpoint
    or end step (multiples of ``boundaries``, and ``num_steps``) falls inside, then 1."""
    if steps_per_call < 2:
        return 1
    boundary = min(num_steps, *((step // every + 1) * every for every in boundaries))
    return steps_per_call if step + steps_per_call <= boundary else 1


def _placed_batches(batch_fn: Callable[[int], Any], mesh, step: int, count: int):
    """The batches of steps ``step .. step + count - 1`` on the mesh (stacked when count > 1)."""
    if count == 1:
        return sharding.host_batch_to_global(batch_fn(step), mesh)
    local = [batch_fn(s) for s in range(step, step + count)]
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *local)
    return sharding.host_batch_to_global(stacked, mesh, stacked=True)


def _check_fit_args(num_steps, checkpoint_every, log_every, max_skipped_in_a_row, steps_per_call):
    if min(checkpoint_every, log_every, max_skipped_in_a_row, steps_per_call) < 1 or num_steps < 0:
        raise ValueError(
            "num_steps >= 0, checkpoint_every >= 1, log_every >= 1, max_skipped_in_a_row >= 1 "
            f"and steps_per_call >= 1 are required; got {num_steps}, {checkpoint_every}, "
            f"{log_every}, {max_skipped_in_a_row} and {steps_per_call}."
        )


def fit(
    *,
    workdir: Path,
    state: TrainState,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    batch_fn: Callable[[int], Any],
    mesh: jax.sharding.Mesh,
    num_steps: int,
    checkpoint_every: int,
    log_every: int,
    max_skipped_in_a_row: int = 20,
    steps_per_call: int = 1,
    ema_decay: float = 0.0,
    compiler_options: dict[str, str] | None = None,
    desc: str = "train",
) -> TrainState:
    """Trains until ``state.step == num_steps``, resuming from ``workdir`` if it has a checkpoint.

    ``loss_fn(params, batch, key) -> (loss, aux_metrics)`` is minimised with ``tx``
    (``dpm_jax.train_state.make_train_step``; ``ema_decay`` for the parameters' EMA,
    ``compiler_options`` for the steps' compilation).
    ``batch_fn(step)`` returns this process's rows (``sharding.process_batch_slice``) of
    the global batch of a step, as host arrays; the runner places them on ``mesh``. With
    a deterministic ``batch_fn`` a resumed run sees the same data order. It runs one call
    ahead in a background thread, so loading overlaps the device's work. Runs of
    ``steps_per_call`` steps go in one compiled call wherever no log, checkpoint or end
    step falls inside them. Metrics are fetched from the device every ``log_every`` steps
    only; there the run stops (FloatingPointError) if the last ``max_skipped_in_a_row``
    or more steps were all skipped for non-finite values. On SIGTERM the current step is
    checkpointed and :class:`TrainingInterrupted` is raised; so on the first SIGINT.
    """
    _check_fit_args(num_steps, checkpoint_every, log_every, max_skipped_in_a_row, steps_per_call)
    workdir = Path(workdir)
    metrics_path = workdir / rundir.METRICS_FILE
    options = dict(ema_decay=ema_decay, compiler_options=compiler_options)
    train_step = make_train_step(loss_fn, tx, mesh, **options)
    multi_step = (
        make_multi_step(loss_fn, tx, steps_per_call, mesh, **options)
        if steps_per_call > 1
        else None
    )
    manager = checkpoints.checkpoint_manager(workdir)
    state = sharding.replicate(state, mesh)
    restored = checkpoints.restore_latest(manager, state)
    if restored is not None:
        state = restored
    start = int(state.step)
    if jax.process_index() == 0:
        rundir.trim_metrics(metrics_path, start)
    if start >= num_steps:
        manager.close()
        return state

    def next_call(step: int) -> int:
        return _call_size(step, steps_per_call, (log_every, checkpoint_every), num_steps)

    with (
        _stop_flag() as signals,
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as prefetcher,
        tqdm(total=num_steps, initial=start, desc=desc, dynamic_ncols=True, mininterval=1.0) as bar,
    ):
        step, count = start, next_call(start)
        pending = prefetcher.submit(_placed_batches, batch_fn, mesh, step, count)
        while step < num_steps:
            batch = pending.result()
            done = step + count
            if done < num_steps:  # load the next call's batches while this one runs
                next_count = next_call(done)
                pending = prefetcher.submit(_placed_batches, batch_fn, mesh, done, next_count)
            state, metrics = (train_step if count == 1 else multi_step)(state, batch)
            step = done
            if done < num_steps:
                count = next_count
            if done % log_every == 0 or done == num_steps:
                _log(metrics_path, done, metrics, bar, max_skipped_in_a_row, manager)
            stop = list(signals)  # read once: a signal may arrive between two reads
            if done % checkpoint_every == 0 or done == num_steps or stop:
                checkpoints.save(manager, done, state)
            bar.update(done - bar.n)
            if stop and done < num_steps:
                manager.wait_until_finished()
                manager.close()
                name = signal.Signals(stop[0]).name
                raise TrainingInterrupted(
                    f"stopped by {name} after step {done}; checkpoint {done} saved in "
                    f"{manager.directory}. Run the same command again to resume.",
                    stop[0],
                )
    manager.wait_until_finished()
    manager.close()
    return state


def _log(metrics_path: Path, done: int, metrics: dict, bar, max_skipped_in_a_row: int, manager):
    """Writes one metrics line (process 0) and stops a run stuck on non-finite steps."""
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if jax.process_index() == 0:  # one writer on multi-host runs
        rundir.append_metrics(metrics_path, done, values)
    bar.set_postfix(loss=f"{values['loss']:.4f}", skipped=int(values["skipped_steps"]))
    if values["skipped_in_a_row"] >= max_skipped_in_a_row:
        manager.wait_until_finished()
        raise FloatingPointError(
            f"the last {int(values['skipped_in_a_row'])} steps (to step {done}) all had "
            f"a non-finite loss, gradient or update and were skipped ({int(values['skipped_steps'])} "
            f"skipped in all); parameters are unchanged since the last good step and "
            f"the last checkpoint (step {manager.latest_step()}) in {manager.directory} "
            "is intact. Check that the learning rate is finite and not too large, and check "
            "the data, then resume."
        )


def restore_run(workdir: Path, state: TrainState, mesh, *, flag: str = "--eval_only"):
    """The latest checkpoint in ``workdir`` in ``state``'s structure, replicated on ``mesh``.

    Raises FileNotFoundError (naming ``flag`` to drop) when the workdir has none.
    """
    workdir = Path(workdir)
    restored = None
    if (workdir / rundir.CHECKPOINT_DIR).exists():
        manager = checkpoints.checkpoint_manager(workdir)
        restored = checkpoints.restore_latest(manager, sharding.replicate(state, mesh))
        manager.close()
    if restored is None:
        raise FileNotFoundError(
            f"no checkpoint in {workdir / rundir.CHECKPOINT_DIR}; train first (drop {flag})."
        )
    return restored


def train_or_restore(
    *,
    workdir: Path,
    experiment: str,
    config,
    mutable_keys,
    state: TrainState,
    mesh: jax.sharding.Mesh,
    eval_only: bool,
    convert_command: str | None = None,
    **fit_kwargs,
) -> TrainState:
    """The start of every experiment run.

    Refuses a workdir holding another experiment or an incompatible ``config`` (a config
    dataclass, saved and compared as dotted keys; see ``rundir.check_run_compatible``,
    which names ``convert_command`` for a config saved in the flat layout of earlier
    versions) or a directory of other files, before writing anything; then restores the
    latest checkpoint (``eval_only``) or, holding the workdir's lock, saves the config and
    calls :func:`fit` with ``fit_kwargs``, which resumes.
    """
    workdir = Path(workdir)
    as_dict = rundir.config_to_dict(config)
    rundir.check_run_compatible(
        workdir,
        experiment,
        as_dict,
        mutable_keys,
        rundir.config_defaults(config),
        convert_command=convert_command,
    )
    if eval_only:
        return restore_run(workdir, state, mesh)
    rundir.prepare_workdir(workdir)
    main = jax.process_index() == 0  # the one writer; the others read the checkpoints
    with rundir.workdir_lock(workdir) if main else contextlib.nullcontext():
        if main:
            rundir.save_run_config(workdir, experiment, as_dict)
        return fit(workdir=workdir, state=state, mesh=mesh, desc=experiment, **fit_kwargs)
