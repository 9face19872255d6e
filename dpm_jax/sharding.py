"""Data parallelism over many devices and many hosts, through JAX's SPMD partitioner.

One mesh axis, ``"data"``, over every (global) device. The train state is replicated,
batches are split along their leading axis, and ``jax.jit`` with ``NamedSharding``
in/out shardings lets XLA insert the all-reduces (no ``pmap``, no hand-written
collectives). A loss that is a mean over the global batch then has the same gradients
as on one device, up to the order of float additions.

Single host::

    mesh = data_mesh()
    state = replicate(state, mesh)
    step = train_state.make_train_step(loss_fn, tx, mesh=mesh)
    state, metrics = step(state, shard_batch(batch, mesh))

Many hosts (one process per host, same program everywhere)::

    initialize_distributed()                      # flags or JAX_COORDINATOR_ADDRESS etc.
    mesh = data_mesh()                            # every device of every process
    rows = process_batch_slice(global_batch_size, mesh)  # the rows this process loads
    batch = host_batch_to_global(load(rows), mesh)
    if is_main_process(): write_results(...)

``dpm_jax.runner.fit`` and ``dpm_jax.evaluation.evaluate`` do all this for every
experiment; evaluation pads the last batch with :func:`pad_to_multiple` and masks the
padding out, so every example counts exactly once.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh named ``"data"`` over ``devices`` (default: every global device).

    Devices are ordered by (process, id), so each process's devices form one contiguous
    block of the batch (see :func:`process_batch_slice`).
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_mesh: no devices given.")
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``"data"``; other axes whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def stacked_batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches stacked on a leading steps axis: the steps whole, the batch axis split."""
    return NamedSharding(mesh, P(None, DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def _num_shards(mesh: Mesh) -> int:
    return int(mesh.shape[DATA_AXIS])


def _leading_size(tree, what: str) -> int:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{what}: the batch has no arrays.")
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if None in sizes:
        raise ValueError(f"{what}: every array of the batch needs a leading batch axis.")
    if len(sizes) != 1:
        raise ValueError(f"{what}: the batch's arrays disagree on the batch size: {sorted(sizes)}.")
    return sizes.pop()


def _check_divisible(size: int, n: int, what: str, kind: str = "batch") -> None:
    if size % n:
        larger = -(-size // n) * n
        example = f"{larger - n} or {larger}" if larger > n else f"{larger}"
        raise ValueError(
            f"{what}: a {kind} of {size} examples cannot be split evenly over {n} devices "
            f"(mesh axis {DATA_AXIS!r}). Choose a batch size divisible by {n} (e.g. "
            f"{example}); for evaluation, pad the last batch with "
            "dpm_jax.sharding.pad_to_multiple and mask the padding out."
        )


def _place(x, sharding: NamedSharding):
    """``x`` (the same full value on every process) placed with ``sharding``."""
    if sharding.mesh.is_multi_process:
        value = np.asarray(x)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
    return jax.device_put(x, sharding)


def shard_batch(batch, mesh: Mesh):
    """A host batch (array or pytree of arrays, the full global batch) split over the mesh.

    The leading axis must be divisible by the number of devices; otherwise a ValueError
    says so and how to fix it. With several processes every process passes the same full
    batch; to load only this process's rows use :func:`host_batch_to_global`.
    """
    _check_divisible(_leading_size(batch, "shard_batch"), _num_shards(mesh), "shard_batch")
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: _place(x, sharding), batch)


def replicate(tree, mesh: Mesh):
    """A pytree (e.g. the train state) copied onto every device of the mesh.

    With several processes every process must pass the same values (same seed).
    """
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: _place(x, sharding), tree)


def process_batch_slice(global_batch_size: int, mesh: Mesh | None = None) -> slice:
    """The rows ``[start, stop)`` of the global batch that this process loads.

    Each process loads its own slice and passes it to :func:`host_batch_to_global`;
    on one process this is the whole batch.
    """
    mesh = data_mesh() if mesh is None else mesh
    _check_divisible(int(global_batch_size), _num_shards(mesh), "process_batch_slice")
    size = int(global_batch_size)
    index_map = batch_sharding(mesh).addressable_devices_indices_map((size,))
    bounds = sorted({idx[0].indices(size)[:2] for idx in index_map.values()})
    start, stop = bounds[0][0], bounds[-1][1]
    covered = sum(b - a for a, b in bounds)
    if covered != stop - start:
        raise ValueError(
            "process_batch_slice: this process's devices hold non-contiguous rows of the "
            "batch; build the mesh with data_mesh(), which orders devices by process."
        )
    return slice(start, stop)


def host_batch_to_global(local_batch, mesh: Mesh, *, stacked: bool = False):
    """A global batch sharded over ``"data"`` from each process's own rows.

    ``local_batch`` holds the rows :func:`process_batch_slice` names for this process
    (array or pytree); its batch axis must be divisible by this process's devices in
    the mesh. The global batch is the processes' slices in process order. With
    ``stacked`` the arrays hold several steps' batches on a leading steps axis (kept
    whole, see :func:`stacked_batch_sharding`) and the batch axis is the second one.
    """
    local_devices = mesh.local_devices
    if not local_devices:
        raise ValueError("host_batch_to_global: this process has no devices in the mesh.")
    axis = 1 if stacked else 0
    by_rows = (
        jax.tree.map(lambda x: np.moveaxis(np.asarray(x), 1, 0), local_batch)
        if stacked
        else local_batch
    )
    rows = _leading_size(by_rows, "host_batch_to_global")
    _check_divisible(rows, len(local_devices), "host_batch_to_global", kind="process-local batch")
    global_rows = rows // len(local_devices) * _num_shards(mesh)
    sharding = stacked_batch_sharding(mesh) if stacked else batch_sharding(mesh)

    def place(x):
        x = np.asarray(x)
        shape = list(x.shape)
        shape[axis] = global_rows
        return jax.make_array_from_process_local_data(sharding, x, tuple(shape))

    return jax.tree.map(place, local_batch)


def pad_to_multiple(batch, n: int) -> tuple[Any, int]:
    """``(padded, num_valid)``: the leading axis padded up to a multiple of ``n``.

    Padding rows are copies of the first example (valid input, so no NaNs); only the
    first ``num_valid`` outputs are real. Mask the rest out with :func:`valid_mask` or
    slice ``[:num_valid]`` -- nothing is ever dropped.
    """
    if int(n) < 1:
        raise ValueError(f"pad_to_multiple: n must be >= 1, got {n}.")
    num_valid = _leading_size(batch, "pad_to_multiple")
    if num_valid == 0:
        raise ValueError("pad_to_multiple: the batch is empty.")
    extra = -num_valid % int(n)

    def pad(x):
        x = np.asarray(x)
        if not extra:
            return x
        return np.concatenate([x, np.repeat(x[:1], extra, axis=0)], axis=0)

    return jax.tree.map(pad, batch), num_valid


def valid_mask(padded_size: int, num_valid: int) -> np.ndarray:
    """Boolean (padded_size,) mask, True for the first ``num_valid`` (real) examples."""
    return np.arange(padded_size) < num_valid


# ----------------------------------------------------------------------------------------------
# Processes.

_ADDRESS_ENV = "JAX_COORDINATOR_ADDRESS"
_NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
_PROCESS_ID_ENV = "JAX_PROCESS_ID"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={value!r} is not an integer.") from e


def _managed_cluster() -> bool:
    """A Slurm or Open MPI launch of more than one task, which jax detects by itself."""
    slurm = "SLURM_JOB_ID" in os.environ and (_env_int("SLURM_NTASKS") or 1) > 1
    ompi = (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1
    return slurm or ompi


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Calls ``jax.distributed.initialize`` when this is one process of several.

    Arguments default to the environment variables ``JAX_COORDINATOR_ADDRESS``
    (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; under
    Slurm or Open MPI with more than one task, jax fills in whatever is missing. With
    none of these (or ``num_processes == 1``) it does nothing: a single process. Must
    run before any other JAX call. CPU processes talk through gloo (jax's default CPU
    collectives). Returns True when the distributed system is (now) initialised.
    """
    if jax.distributed.is_initialized():
        return True
    address = coordinator_address or os.environ.get(_ADDRESS_ENV) or None
    num = num_processes if num_processes is not None else _env_int(_NUM_PROCESSES_ENV)
    pid = process_id if process_id is not None else _env_int(_PROCESS_ID_ENV)
    if num == 1:
        return False
    given = {"coordinator_address": address, "num_processes": num, "process_id": pid}
    if all(v is None for v in given.values()) and not _managed_cluster():
        return False
    missing = [k for k, v in given.items() if v is None]
    if missing and not _managed_cluster():
        raise ValueError(
            f"initialize_distributed: {', '.join(missing)} missing (got "
            f"{', '.join(f'{k}={v!r}' for k, v in given.items() if v is not None)}). Give all "
            f"three, as arguments or as {_ADDRESS_ENV}, {_NUM_PROCESSES_ENV} and "
            f"{_PROCESS_ID_ENV}, or none for a single process."
        )
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    return True


def is_main_process() -> bool:
    """True on process 0 only: the one that writes files, logs and checkpoints metadata."""
    return jax.process_index() == 0
