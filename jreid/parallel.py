"""Device mesh, shardings and batch placement for data-parallel training.

One global mesh with a single 'data' axis spans every device of every process. Batches are split
along 'data'; the train state is replicated. With several processes, call `initialize_distributed()`
first (`jreid.main --coordinator=HOST:PORT --num_processes=N --process_id=I`, or `--multihost` on
SLURM / Open MPI / TPU pods) and feed each process its slice of the global batch.
"""

from __future__ import annotations

import os
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


# JAX's own default: a process that has not sent a heartbeat for this long is taken as dead.
DEFAULT_HEARTBEAT_TIMEOUT_S = 100


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None,
                           heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S) -> None:
  """Connects the processes of a job; call before any other JAX call.

  With `coordinator` ('HOST:PORT' of process 0), `num_processes` and `process_id` given, those
  are used (several processes on one machine, or any cluster); with none given, JAX detects them
  from the environment (SLURM, Open MPI, TPU pods). Collectives between processes on CPU go
  through gloo, unless JAX_CPU_COLLECTIVES_IMPLEMENTATION says otherwise.

  A process that dies (SIGKILL, a lost machine) ends the job: JAX's coordination service stops
  every other process once it has missed `heartbeat_timeout_s` of heartbeats (or at once when
  process 0, which holds the service, dies), so no process waits forever in a collective; the
  same command then resumes from the last complete checkpoint.

  Raises:
    ValueError: only some of coordinator / num_processes / process_id are given, or they are
      out of range.
  """
  given = {'--coordinator': coordinator, '--num_processes': num_processes,
           '--process_id': process_id}
  missing = [k for k, v in given.items() if v is None]
  if missing and len(missing) < len(given):
    raise ValueError(f'{", ".join(missing)} missing: pass all of --coordinator=HOST:PORT '
                     '--num_processes=N --process_id=I, or none of them (--multihost: SLURM, '
                     'Open MPI or TPU pods, detected from the environment).')
  if not missing:
    host, _, port = coordinator.rpartition(':')
    if not host or not port.isdigit():
      raise ValueError(f'--coordinator={coordinator!r}: expected HOST:PORT of process 0, e.g. '
                       '--coordinator=localhost:12355.')
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f'--process_id={process_id} with --num_processes={num_processes}: '
                       f'expected 0 <= process_id < num_processes.')
  if heartbeat_timeout_s < 1:
    raise ValueError(f'--heartbeat_timeout={heartbeat_timeout_s}: expected seconds >= 1.')
  if 'JAX_CPU_COLLECTIVES_IMPLEMENTATION' not in os.environ:
    # The all-reduce of a step over the CPU devices of several processes needs a cross-process
    # implementation; GPUs and TPUs use their own (NCCL, ICI) whatever this says.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id,
                             heartbeat_timeout_seconds=int(heartbeat_timeout_s))


def create_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over all devices (or the given ones) with the 'data' axis."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh, what: str = 'batch size') -> None:
  """Raises a clear error when a batch cannot be split evenly over devices and processes."""
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(
        f'{what} {global_batch} is not divisible by the number of devices ({n}); '
        f'choose a multiple of {n} (e.g. --config.batch_size={max(n, global_batch // n * n)}).')
  if global_batch % jax.process_count():
    raise ValueError(f'{what} {global_batch} is not divisible by the number of processes '
                     f'({jax.process_count()}).')


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places this process's part of a global batch on the mesh, split along 'data'."""
  sharding = data_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree on every device of the mesh (replicated train state)."""
  return jax.device_put(tree, replicated_sharding(mesh))
