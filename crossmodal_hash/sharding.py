"""Device mesh, named shardings, and the one place host data becomes global arrays.

The mesh has a `data` axis (batch parallelism) and a `model` axis (size 1 unless
the config asks for more). Axes are `AxisType.Auto`: new JAX makes
`jax.make_mesh` default to explicit axes, which this code does not use.
"""
from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'
MODEL_AXIS = 'model'


def make_mesh(mesh_config: ml_collections.ConfigDict,
              devices: list[jax.Device] | None = None) -> jax.sharding.Mesh:
  """Builds the (data, model) mesh from `config.mesh`.

  Args:
    mesh_config: with `data` and `model` axis sizes; -1 for one of them means
      "all remaining devices".
    devices: the devices to use (default: all).

  Returns:
    A mesh with axes ('data', 'model').
  """
  devices = list(devices if devices is not None else jax.devices())
  data, model = int(mesh_config.data), int(mesh_config.model)
  if data == -1 and model == -1:
    raise ValueError('config.mesh: at most one of data/model may be -1.')
  if data == -1:
    data = len(devices) // max(model, 1)
  if model == -1:
    model = len(devices) // max(data, 1)
  if data < 1 or model < 1 or data * model != len(devices):
    raise ValueError(
        f'config.mesh asks for data={mesh_config.data} x '
        f'model={mesh_config.model} devices, but {len(devices)} devices are '
        'available; the product must equal the device count.')
  return jax.make_mesh((data, model), (DATA_AXIS, MODEL_AXIS),
                       axis_types=(AxisType.Auto, AxisType.Auto),
                       devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The leading (batch) axis is split over the `data` mesh axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def data_parallel_size(mesh: jax.sharding.Mesh) -> int:
  return mesh.shape[DATA_AXIS]


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh,
                     what: str = 'config.train.batch_size') -> None:
  """Raises a clear ValueError unless the batch splits evenly over `data`."""
  devices = data_parallel_size(mesh)
  if batch_size % devices:
    raise ValueError(
        f'{what}={batch_size} is not divisible by the {devices} devices of the '
        f"mesh's data axis; choose a multiple of {devices} (or change "
        'config.mesh).')


def put_replicated(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Places a host pytree on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def host_to_global(batch: Any, mesh: jax.sharding.Mesh) -> Any:
  """Turns this process's slice of a batch into global batch-sharded arrays.

  This is the single place where host data becomes global `jax.Array`s. On one
  process it is a sharded `device_put`; with several processes each passes its
  own rows and the global batch is their concatenation in process order.

  Args:
    batch: a pytree of [B_local, ...] NumPy arrays; B_local must be divisible by
      the number of this process's devices on the data axis.
    mesh: the training mesh.

  Returns:
    The same pytree of [B_local * process_count, ...] global arrays.
  """
  sharding = batch_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      batch)
