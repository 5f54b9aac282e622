"""Several processes, one job: ``jax.distributed`` start-up and each process's rows.

:func:`initialize` starts ``jax.distributed`` when the environment names several processes
(``MUSE_COORDINATOR`` with ``MUSE_NUM_PROCESSES`` and ``MUSE_PROCESS_ID``; or
``MUSE_DISTRIBUTED=1``, an ``srun`` step, a TPU pod). Each process keeps its own rows.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import NamedSharding

__all__ = ["initialize", "multi_process_env", "is_main_process", "local_rows", "global_batch", "agree", "barrier"]

_started = False


def multi_process_env(env=os.environ) -> dict | None:
    """``jax.distributed.initialize`` arguments the environment asks for, or None (one process)."""
    if env.get("MUSE_DISTRIBUTED") == "1":  # asked for: JAX's own cluster detection (TPU VM slices)
        return {}
    if env.get("MUSE_COORDINATOR"):
        try:
            return {"coordinator_address": env["MUSE_COORDINATOR"],
                    "num_processes": int(env["MUSE_NUM_PROCESSES"]),
                    "process_id": int(env["MUSE_PROCESS_ID"])}
        except (KeyError, ValueError):
            raise ValueError("MUSE_COORDINATOR is set, so MUSE_NUM_PROCESSES and MUSE_PROCESS_ID "
                             "must be integers too") from None
    # Inside an ``srun`` job step of several tasks (not merely an allocation: ``salloc -n 4``
    # sets SLURM_NTASKS for a shell that runs one process).
    if env.get("SLURM_STEP_NUM_TASKS", "1").isdigit() and int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        return {}
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return {}
    return None


def initialize(env=os.environ) -> bool:
    """Start ``jax.distributed`` if the environment describes several processes; True if it did."""
    global _started
    args = multi_process_env(env)
    if args is None or _started:
        return _started
    # CPU devices of different processes talk through gloo (shipped with jaxlib);
    # the setting does nothing for GPU/TPU devices.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**args)
    _started = True
    return True


def is_main_process() -> bool:
    """Process 0 writes the run's files (config, metrics, final weights)."""
    return jax.process_index() == 0


def local_rows(sharding: NamedSharding, global_size: int) -> slice:
    """The contiguous rows of a ``global_size`` batch that this process's devices hold."""
    indices = sharding.addressable_devices_indices_map((global_size,)).values()
    starts = sorted({(ix[0].start or 0, ix[0].stop if ix[0].stop is not None else global_size) for ix in indices})
    lo, hi = starts[0][0], starts[-1][1]
    covered = sum(b - a for a, b in starts)
    if covered != hi - lo:
        raise ValueError(f"this process's batch rows are not contiguous: {starts}")
    return slice(lo, hi)


def global_batch(local_batch, sharding_of, global_size: int):
    """Assemble each process's rows into global arrays sharded by ``sharding_of(ndim)``."""

    def one(x):
        x = np.asarray(x)
        shape = (global_size, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding_of(x.ndim), x, shape)

    return jax.tree.map(one, local_batch)


def agree(value: int) -> int:
    """Process 0's ``value`` on every process (a decision only process 0 may take)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def barrier(name: str) -> None:
    """Wait until every process reaches ``name`` (a no-op in a one-process job)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
