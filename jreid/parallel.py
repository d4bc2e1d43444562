"""Device mesh, shardings and batch placement for data-parallel training.

One global mesh with a single 'data' axis spans every device of every process. Batches are split
along 'data'; the train state is replicated. On several hosts, call `initialize_distributed()` first
(the `--multihost` flag of `jreid.main`) and feed each process its slice of the global batch.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


def initialize_distributed() -> None:
  """Connects the processes of a multi-host job (TPU pods, SLURM/OpenMPI GPU clusters)."""
  jax.distributed.initialize()


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
