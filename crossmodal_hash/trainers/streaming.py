"""Training passes over data that is not resident on the devices.

The alternating trainer keeps the training set on the devices and jits whole
passes ('device' placement). When the images are lazy (read from files on
demand, e.g. the DCMH release's HDF5 FLICKR-25K.mat) or too large for the
devices, it streams them instead ('stream' placement, this module):

* Only the all-item arrays the methods need stay on the devices: 'label'
  [T, L] (all-item similarities), 'text' [T, V] (their rows split over the
  mesh's `data` axis, `harness.resident_axes`) and the image statistics;
  never 'image'. The methods' updates and `begin` hooks read `data['label']`
  only (init reads the shapes of 'image' and 'text', given one zero image row).
* Each pass reads its batches through the grain pipeline (`data.pipeline`
  `Loader`: read threads or worker processes, prefetch, host batches made
  global arrays in `sharding.host_to_global`): this process's block of each
  global batch, position and image only, and the image only in passes whose
  update declares it (`Method.inputs`); labels and texts are gathered on the
  devices.
* One jitted call per batch runs the method's `updates[network]` with the
  same in/out shardings as the device passes, the state donated.

Batch order: pass p visits the training items in the order of
`pass_permutation(state.rng, p, T)` under both placements, batch b being
items [b B, (b + 1) B) of it (the last T mod B items are not visited). The
order is a pure function of (the run's seed, p), so a streamed run resumes
exactly from a checkpoint's pass index, and a streamed run computes what the
device-resident one computes (up to float reassociation).
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, Sequence

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from crossmodal_hash import sharding
from crossmodal_hash.data import batching
from crossmodal_hash.data import lazy
from crossmodal_hash.data import pipeline
from crossmodal_hash.data import preprocess
from crossmodal_hash.data import types
from crossmodal_hash.methods import base

PLACEMENTS = ('auto', 'device', 'stream')
STATE_FORMAT = 'crossmodal_hash.pass_stream/1'
ORDER = 'jax.random.permutation(fold_in(state.rng, pass_index), num_items)'
# Fields read from the host per batch; the rest is gathered on the devices.
HOST_FIELDS = ('image', 'index')
# The resident arrays that are not per-item (`resident_arrays`).
IMAGE_STATS = ('image_mean', 'image_inv_scale')


def pass_permutation(rng: jax.Array, pass_index: jax.Array,
                     num_items: int) -> jax.Array:
  """[T] int32: the order in which pass `pass_index` visits the T items."""
  return jax.random.permutation(jax.random.fold_in(rng, pass_index),
                                num_items)


def choose_placement(setting: str, images: Any, max_device_bytes: int) -> str:
  """'device' or 'stream' for the training images under `setting`.

  Args:
    setting: `config.train.data_placement`: 'auto', 'device' or 'stream'.
    images: the training images, [T, ...] host or lazy array.
    max_device_bytes: 'auto' streams images larger than this.

  Returns:
    'stream' for 'auto' when the images are lazy or larger than
    `max_device_bytes`; otherwise the setting ('device' for 'auto').
  """
  if setting not in PLACEMENTS:
    raise ValueError(f'config.train.data_placement={setting!r}; expected one '
                     f'of {PLACEMENTS}.')
  if setting != 'auto':
    return setting
  if lazy.is_lazy(images):
    return 'stream'
  nbytes = len(images) * math.prod(images.shape[1:]) * np.dtype(
      images.dtype).itemsize
  return 'stream' if nbytes > max_device_bytes else 'device'


def resident_arrays(train: types.MultiModalData,
                    image_stats: tuple[np.ndarray, np.ndarray], *,
                    with_images: bool) -> dict[str, np.ndarray]:
  """The host arrays a placement puts on the devices.

  Returns:
    'label' [T, L], 'text' [T, V] (or [T, T_max] tokens), every extra field
    of the dataset, 'image_mean' and 'image_inv_scale' [C] (or [D]); with
    `with_images` also 'image' [T, ...] (a lazy array is read whole).
  """
  arrays = {'text': np.asarray(train.texts), 'label': np.asarray(train.labels),
            **{k: np.asarray(v) for k, v in train.extras.items()},
            'image_mean': image_stats[0], 'image_inv_scale': image_stats[1]}
  if with_images:
    arrays['image'] = np.asarray(train.images)
  return arrays


def init_data(resident: dict[str, jax.Array], images: Any) -> dict[str, Any]:
  """`resident` plus one zero image row: what `method.init` reads (shapes)."""
  row = jnp.zeros((1,) + tuple(images.shape[1:]), np.dtype(images.dtype))
  return dict(resident, image=row)


class PassBatches(grain.MapDataset):
  """Element b: this process's block of global batch `start + b` of a pass.

  Global batch b holds the training positions order[b B:(b + 1) B]; process p
  reads rows [p B_local, (p + 1) B_local) of it, 'image' [B_local, ...] as
  stored and 'index' [B_local] int32 (the positions: rows of the memories).
  """

  def __init__(self, reader: batching.RowReader, order: np.ndarray, *,
               global_batch_size: int, shard: grain.sharding.ShardOptions,
               start: int = 0):
    super().__init__()
    if global_batch_size % shard.shard_count:
      raise ValueError(f'global batch size {global_batch_size} is not '
                       f'divisible by the {shard.shard_count} processes.')
    self._reader = reader
    self._order = np.asarray(order, np.int64)
    self._global = global_batch_size
    self._local = global_batch_size // shard.shard_count
    self._offset = shard.shard_index * self._local
    self._num_batches = len(self._order) // global_batch_size
    self._start = start

  def __len__(self) -> int:
    return max(0, self._num_batches - self._start)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    if not 0 <= index < len(self):
      raise IndexError(f'batch {index} out of range for {len(self)} batches.')
    first = (self._start + index) * self._global + self._offset
    batch = self._reader.read(self._order[first:first + self._local])
    batch['index'] = batch['index'].astype(np.int32)
    return batch

  def __str__(self) -> str:
    return (f'PassBatches(items={len(self._order)}, global_batch='
            f'{self._global}, local_batch={self._local}, start={self._start})')


def pass_loader(train: types.MultiModalData, order: np.ndarray, *,
                global_batch_size: int, pass_index: int,
                options: pipeline.Options = pipeline.Options(),
                shard: grain.sharding.ShardOptions | None = None,
                fields: tuple[str, ...] = HOST_FIELDS, start: int = 0
               ) -> pipeline.Loader:
  """The grain loader of one pass: floor(T / B) batches in `order`.

  Args:
    train: the training items (images may be lazy: read in the loader).
    order: [T] int, the pass's permutation of positions 0..T-1.
    global_batch_size: B.
    pass_index: the pass (recorded in the loader's fingerprint).
    options: read threads, worker processes, prefetching.
    shard: this process's part (default `pipeline.process_shard()`).
    fields: the host fields to read (`host_fields` of the update's inputs);
      a pass of an update that reads no image reads none.
    start: the first batch (the per-step family resumes within a pass).
  """
  shard = shard or pipeline.process_shard()
  reader = batching.RowReader(train, None, host_fields(fields))

  def make(first: int) -> PassBatches:
    return PassBatches(reader, order, global_batch_size=global_batch_size,
                       shard=shard, start=start + first)

  digest = hashlib.sha256(np.ascontiguousarray(order, np.int64).tobytes())
  fingerprint = dict(kind='train_pass', pass_index=int(pass_index),
                     num_items=len(order), order_sha256=digest.hexdigest(),
                     global_batch_size=int(global_batch_size),
                     first_batch=int(start))
  return pipeline.Loader(make(0), options, fingerprint, make)


def complete_batch(batch: base.Batch, data: base.Batch,
                   batch_spec: jax.sharding.NamedSharding,
                   fields: tuple[str, ...] = base.ALL_FIELDS) -> base.Batch:
  """The update's batch from a streamed one, inside jit.

  Args:
    batch: 'index' [B] int32 and the host fields read (e.g. 'image' [B, ...]
      raw), batch-sharded.
    data: the resident arrays ('label', 'text', image statistics).
    batch_spec: the batch sharding.
    fields: the fields the update reads (its `inputs`).

  Returns:
    'index' [B], each resident field gathered from `data` ('label' [B, L],
    'text' [B, ...]) and 'image' [B, ...] normalised to float32 (as
    `harness.gather_batch`), only those in `fields`.
  """
  index = batch['index']
  out = {'index': index}
  for field in fields:
    if field == 'image':
      out['image'] = preprocess.normalize(batch['image'], data['image_mean'],
                                          data['image_inv_scale'])
    elif field in batch:
      out[field] = batch[field]
    elif field != 'index':
      out[field] = data[field][index]
  return jax.lax.with_sharding_constraint(out, batch_spec)


def host_fields(fields: tuple[str, ...]) -> tuple[str, ...]:
  """The fields of `fields` read from the host per batch ('index' always)."""
  return ('index',) + tuple(f for f in fields if f in HOST_FIELDS and
                            f != 'index')


def make_step_fn(method: base.Method, network: str, mesh: jax.sharding.Mesh,
                 trace_guard: Callable[[Callable], Callable] | None = None, *,
                 state_sharding: Any = None, data_sharding: Any = None):
  """A jitted update of `network` on one streamed batch.

  Returns:
    step(state, batch, data, learning_rate) -> (state, metrics, finite), as
    `alternating.make_steps_fn`'s run with one batch: `batch` from the pass
    loader (batch-sharded), `data` the resident arrays (placed by
    `data_sharding`), `state` donated and kept on `state_sharding` (None:
    replicated, both); compiles once per network (`trace_guard` may check
    that).
  """
  update = method.updates[network]
  fields = base.batch_fields(method, network)
  batch_spec = sharding.batch_sharded(mesh)
  replicated = sharding.replicated(mesh)
  state_sharding, data_sharding = sharding.or_replicated(
      mesh, state_sharding, data_sharding)

  def step(state, batch, data, learning_rate):
    state, metrics = update(
        state, complete_batch(batch, data, batch_spec, fields), data,
        base.Step(rng=base.step_key(state.rng, state.step),
                  learning_rate=learning_rate))
    finite = base.tree_all_finite((metrics, state.params, state.memory))
    return state, metrics, finite

  return jax.jit(trace_guard(step) if trace_guard else step,
                 in_shardings=(state_sharding, batch_spec, data_sharding,
                               replicated),
                 out_shardings=(state_sharding, replicated, replicated),
                 donate_argnums=0)


def stream_options(config: ml_collections.ConfigDict) -> pipeline.Options:
  """The pipeline's options of `config.train` (worker processes)."""
  return pipeline.Options(worker_count=int(config.train.stream_workers))


def mean_results(results: Sequence[tuple[dict[str, jax.Array], jax.Array]]
                ) -> tuple[dict[str, float], bool]:
  """(metrics averaged over calls as host floats, all finite); one transfer."""
  metrics, finite = zip(*jax.device_get(list(results)))
  mean = {k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}
  return mean, bool(np.all(finite))


class StreamedPasses:
  """Runs streamed passes: `run(state, pass_index, network, lr)`.

  Attributes:
    train: the training items (images may be lazy).
    resident: the resident device arrays (`resident_arrays`, placed by
      `harness.resident_axes`).
    mesh: the mesh.
    batch_size: the global batch B.
    options: the pipeline's threads, workers and prefetching.
  """

  def __init__(self, method: base.Method, train: types.MultiModalData,
               resident: dict[str, jax.Array], mesh: jax.sharding.Mesh, *,
               batch_size: int, options: pipeline.Options,
               compile_steps: bool = True, state_sharding: Any = None):
    """Readers and (with `compile_steps`) one jitted step per update, whose
    state stays on `state_sharding` (None: replicated)."""
    self.train = train
    self.resident = resident
    self.mesh = mesh
    self.batch_size = batch_size
    self.options = options
    self.num_batches = len(train) // batch_size
    self._fields = {n: base.batch_fields(method, n) for n in method.updates}
    self._all_fields = base.batch_fields(method)
    self._steps = ({n: make_step_fn(method, n, mesh,
                                    state_sharding=state_sharding,
                                    data_sharding=sharding.shardings_of(
                                        resident))
                    for n in method.updates} if compile_steps else {})
    self._order = jax.jit(pass_permutation, static_argnums=2,
                          out_shardings=sharding.replicated(mesh))

  def order(self, rng: jax.Array, pass_index: int) -> np.ndarray:
    """[T] int32 host copy of the pass's permutation (as on the devices)."""
    return np.asarray(jax.device_get(
        self._order(rng, jnp.int32(pass_index), len(self.train))))

  def loader(self, rng: jax.Array, pass_index: int, *, start: int = 0,
             fields: tuple[str, ...] | None = None) -> pipeline.Loader:
    """The pass's loader from batch `start`, reading the host `fields` of
    (default) every update's inputs."""
    return pass_loader(self.train, self.order(rng, pass_index),
                       global_batch_size=self.batch_size,
                       pass_index=pass_index, options=self.options,
                       fields=self._all_fields if fields is None else fields,
                       start=start)

  def run(self, state: base.TrainState, pass_index: int, network: str,
          learning_rate: Any,
          on_batch: Callable[[], None] | None = None
         ) -> tuple[base.TrainState, dict[str, float], bool]:
    """One pass of `network`, one jitted step per batch.

    Returns:
      (state, metrics averaged over the pass as host floats, finite).
    """
    loader = self.loader(state.rng, pass_index, fields=self._fields[network])
    step, lr = self._steps[network], jnp.asarray(learning_rate, jnp.float32)
    iterator = loader.global_iterator(self.mesh)
    results = []
    try:
      for batch in iterator:
        state, metrics, finite = step(state, batch, self.resident, lr)
        results.append((metrics, finite))
        if on_batch is not None:
          on_batch()
    finally:
      iterator.close()
    return (state, *mean_results(results))


def iterator_state(train_indices: np.ndarray, batch_size: int,
                   next_pass: int, placement: str, *,
                   next_batch: int = 0) -> dict[str, Any]:
  """The data position saved with a checkpoint.

  Batch order is a function of (seed, pass), so the next pass's index and the
  next batch of it (0 after a whole pass; the per-step family checkpoints
  within passes) are the whole position; the rest identifies the data.
  """
  digest = hashlib.sha256(
      np.ascontiguousarray(train_indices, np.int64).tobytes())
  return {'format': STATE_FORMAT, 'order': ORDER, 'next_pass': int(next_pass),
          'next_batch': int(next_batch), 'num_items': len(train_indices),
          'train_sha256': digest.hexdigest(),
          'global_batch_size': int(batch_size), 'placement': placement}


def check_iterator_state(saved: dict[str, Any] | None,
                         expected: dict[str, Any]) -> None:
  """Raises ValueError unless `saved` continues `expected`'s stream.

  A checkpoint without a saved state (older runs) only has its pass index,
  which is enough: nothing is checked.
  """
  if saved is None:
    return
  keys = ('format', 'order', 'next_pass', 'next_batch', 'num_items',
          'train_sha256', 'global_batch_size')
  different = [f'{k}: checkpoint {saved.get(k)!r}, now {expected[k]!r}'
               for k in keys if saved.get(k) != expected[k]]
  if different:
    raise ValueError('The checkpoint\'s data position does not continue this '
                     'run\'s batches (' + '; '.join(different) + ').')
