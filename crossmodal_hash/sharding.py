"""Device mesh, named shardings, and the one place host data becomes global arrays.

The mesh has a `data` axis (batch parallelism) and a `model` axis (size 1 unless
the config asks for more). Axes are `AxisType.Auto`: new JAX makes
`jax.make_mesh` default to explicit axes, which this code does not use.

State and resident arrays are placed the MaxText way: an array's dimensions
carry logical axis names (a method's `memory_axes`, e.g. SSAH's 'lab_code'
('items', 'bits')), and `config.sharding.logical_axis_rules` maps each name to
a mesh axis (`flax.linen.logical_to_mesh_axes`). The default rules shard the
'items' axis, the T rows of item-indexed memories and of the resident training
arrays, over `data`, and the 'mlp' axis, the hidden width of the wide Dense
layers (CNN-F's fc6/fc7, SSAH's 4096-wide trunks, models/layers.py), over
`model`: with the default mesh (model=1) that split is one way, i.e. none.
Every other name, and every array without names, is replicated. A param's
optimizer state (Adam's moments) has the param's names and sharding.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'
MODEL_AXIS = 'model'
# The logical name of a dimension that indexes training items (rows of the
# memories and of the resident arrays, [T, ...]).
ITEMS = 'items'
# The logical names of a wide Dense layer's dimensions (models/layers.py):
# its hidden width, and a width left whole.
MLP = 'mlp'
EMBED = 'embed'
# `config.sharding.logical_axis_rules`' default: (logical name, mesh axis or
# None) pairs, the first rule naming a free mesh axis wins (MaxText's
# `logical_axis_rules`). Names absent here ('bits', 'embed', ...) replicate.
LOGICAL_AXIS_RULES = ((ITEMS, DATA_AXIS), (MLP, MODEL_AXIS))

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]
# Logical names of an array's dimensions, e.g. ('items', 'bits'); () for none.
LogicalAxes = tuple[str | None, ...]


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


def rules_from_config(config: ml_collections.ConfigDict) -> Rules:
  """`config.sharding.logical_axis_rules` as tuples (JSON gives lists);
  the default rules for a config without a `sharding` section."""
  section = config.get('sharding')
  if section is None:
    return LOGICAL_AXIS_RULES
  rules = []
  for rule in section.logical_axis_rules:
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(
          f'config.sharding.logical_axis_rules: {rule!r} is not a (logical '
          "name, mesh axis) pair such as ('items', 'data').")
    name, axes = rule
    rules.append((name, tuple(axes) if isinstance(axes, list) else axes))
  return tuple(rules)


def logical_sharding(shape: Sequence[int], axes: LogicalAxes,
                     mesh: jax.sharding.Mesh, rules: Rules,
                     what: str = 'an array') -> NamedSharding:
  """The NamedSharding of an array of `shape` whose dimensions are `axes`.

  A dimension that its mesh axes do not divide evenly (JAX shards only even
  splits) is replicated instead, with a warning: e.g. 2,173 Wikipedia items on
  8 devices.

  Args:
    shape: the array's shape.
    axes: a logical name (or None) per leading dimension; () replicates.
    mesh: the mesh.
    rules: (logical name, mesh axis) pairs.
    what: the array's name, for the warning.
  """
  if not axes:
    return replicated(mesh)
  if len(axes) > len(shape):
    raise ValueError(f'{what}: logical axes {axes} name more dimensions than '
                     f'its shape {tuple(shape)} has.')
  spec = list(nn.logical_to_mesh_axes(axes, rules))
  for dim, mesh_axes in enumerate(spec):
    if mesh_axes is None:
      continue
    names = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
    ways = int(np.prod([mesh.shape[n] for n in names]))
    if shape[dim] % ways:
      logging.warning(
          '%s: dimension %d (%s, size %d) does not split evenly over mesh '
          'axes %s (%d devices); it is replicated instead.', what, dim,
          axes[dim], shape[dim], names, ways)
      spec[dim] = None
  return NamedSharding(mesh, P(*spec))


def _is_box(x: Any) -> bool:
  return isinstance(x, nn.LogicallyPartitioned)


def state_shardings(abstract_state: Any,
                    memory_axes: Mapping[str, LogicalAxes],
                    mesh: jax.sharding.Mesh, rules: Rules) -> Any:
  """The NamedSharding of every leaf of a training state.

  Args:
    abstract_state: a `base.TrainState` of arrays or ShapeDtypeStructs (e.g.
      `jax.eval_shape(method.init, ...)`); a leaf boxed in
      `nn.LogicallyPartitioned` (a wide layer's param or its optimizer state,
      traced within `models.layers.logical_boxes`) is placed by its names.
    memory_axes: {memory name: its logical axes}, the method's `memory_axes`;
      a memory it does not name, and every other leaf (unnamed params and
      optimizer states, step, rng), is replicated.
    mesh: the mesh.
    rules: (logical name, mesh axis) pairs.

  Returns:
    A pytree of NamedShardings shaped like `abstract_state` without its
    boxes (`nn.meta.unbox`).
  """
  unknown = sorted(set(memory_axes) - set(abstract_state.memory))
  if unknown:
    raise ValueError(f'memory_axes names memories {unknown} that the state '
                     f'does not hold (it holds {sorted(abstract_state.memory)}).')
  memory = {name: logical_sharding(x.shape, tuple(memory_axes.get(name, ())),
                                   mesh, rules, f'memory {name!r}')
            for name, x in abstract_state.memory.items()}

  def leaf(path, x):
    if not _is_box(x):
      return replicated(mesh)
    return logical_sharding(x.value.shape, tuple(x.names), mesh, rules,
                            f'param {jax.tree_util.keystr(path)}')

  rest = jax.tree_util.tree_map_with_path(
      leaf, abstract_state.replace(memory={}), is_leaf=_is_box)
  return rest.replace(memory=memory)


def put_by_axes(arrays: Mapping[str, Any], axes: Mapping[str, LogicalAxes],
                mesh: jax.sharding.Mesh, rules: Rules) -> dict[str, jax.Array]:
  """Places host arrays by their logical axes (`axes.get(name, ())`).

  Args:
    arrays: {name: [N, ...] host array}.
    axes: {name: logical axes}; a name absent here is replicated.
    mesh: the mesh.
    rules: (logical name, mesh axis) pairs.
  """
  placed = {}
  for name, x in arrays.items():
    x = np.asarray(x)
    target = logical_sharding(x.shape, tuple(axes.get(name, ())), mesh, rules,
                              f'array {name!r}')
    # Each process copies only the rows of its own devices.
    placed[name] = jax.make_array_from_callback(x.shape, target,
                                                lambda index, x=x: x[index])
  return placed


def or_replicated(mesh: jax.sharding.Mesh, *shardings: Any) -> tuple[Any, ...]:
  """Each of `shardings` (a pytree of shardings), or `replicated(mesh)` for a
  None: what the jitted steps place their state and resident arrays by."""
  return tuple(replicated(mesh) if s is None else s for s in shardings)


def shardings_of(tree: Any) -> Any:
  """The `.sharding` of every array of `tree`."""
  return jax.tree.map(lambda x: x.sharding, tree)
