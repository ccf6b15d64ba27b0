"""Several processes (one per host, or per GPU) forming one JAX cluster.

Every process runs the same program on the same config. Each one holds the
full host-side data (the dataset, the step's prompt list), samples and scores
only its share of the step's prompts, and the shares are gathered so that every
process sees the same rewards. Only process 0 writes into the run directory;
orbax's checkpoint saves, which every process must join, are the one exception.
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Multi-process runs. Unset fields come from $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES and
    $JAX_PROCESS_ID, or are detected under SLURM (srun with several tasks)."""

    coordinator_address: str | None = None
    """host:port of process 0, reachable from every process."""
    num_processes: int | None = None
    process_id: int | None = None
    detect: bool = False
    """Let JAX detect the cluster (TPU slice, SLURM, Open MPI, Kubernetes) with no variables set."""


def _env_int(name: str) -> int | None:
    return int(os.environ[name]) if os.environ.get(name) else None


def _under_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, detect: bool = False) -> bool:
    """Joins the cluster when one is configured; returns whether this run has several processes.

    Must run before anything else touches JAX devices. Single-process runs (no
    address, no variables, not under SLURM) are left alone.
    """
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    pid = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if address is None and not (detect or _under_slurm()):
        return False
    if address is not None and (num is None or pid is None) and not _under_slurm():
        raise ValueError("a coordinator address needs num_processes and process_id "
                         "(or $JAX_NUM_PROCESSES and $JAX_PROCESS_ID)")
    # CPU-only clusters (tests, CI) need a collectives library for cross-process reductions.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    return jax.process_count() > 1


def is_primary() -> bool:
    """Process 0 writes logs, reports and exports."""
    return jax.process_index() == 0


def to_host(tree):
    """Global arrays (however sharded, over however many processes) -> full numpy values on every process."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def process_part(n: int) -> slice:
    """This process's contiguous part of n items when n need not divide evenly (evaluation sets, the signal
    check's prompts): ceil(n / P) each in process order, so the last parts may be short or empty."""
    per = -(-n // jax.process_count())
    index = jax.process_index()
    return slice(min(index * per, n), min((index + 1) * per, n))


def gather_objects(local: list) -> list:
    """Every process's list concatenated in process order (picklable items of any size, e.g. reward results
    with their error messages), on every process."""
    if jax.process_count() == 1:
        return list(local)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    raw = np.frombuffer(pickle.dumps(list(local)), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.int32(raw.size))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)  # the all-gather needs one shape on every process
    padded[:raw.size] = raw
    rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [item for row, size in zip(rows, sizes) for item in pickle.loads(row[:size].tobytes())]


def barrier(name: str) -> None:
    """Waits until every process gets here (e.g. until process 0 has prepared the run directory)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
    """Process 0's flag on every process, for decisions all processes must take at the same step (stop now):
    a clock or a signal seen by one process alone would leave the others waiting in a collective."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(flag))))
