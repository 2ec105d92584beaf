"""The grain input pipeline: host batches, workers, global arrays, state.

Usage in a trainer:

  loader = pipeline.train_loader(data, split.train, global_batch_size=128,
                                 seed=config.seed, options=pipeline.Options(
                                     worker_count=4))
  it = loader.global_iterator(mesh)      # dict of [B, ...] jax.Arrays
  it.set_state(meta['data_iterator'])    # on resume (JSON from the checkpoint)
  for _ in range(loader.batches_per_epoch):
    batch = next(it)                     # image, text, label, index
  meta['data_iterator'] = it.get_state()  # JSON; save it with the model

  evaluation = pipeline.eval_loader(data, split.query, global_batch_size=256)
  for batch in evaluation.global_iterator(mesh):
    ...                                  # plus 'mask' [B] bool (False: padding)

The stream is a deterministic function of (data, indices, seed, batch size):
the iterator state is just the index of the next global batch, so a resumed
iterator yields exactly the batches an uninterrupted one would, with any
number of workers, and even with another number of processes. Host batches
become global arrays in `sharding.host_to_global` only, `device_prefetch`
batches ahead of the consumer.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Any, Callable, Iterator, Sequence

import grain
import jax
import numpy as np
from absl import flags

from crossmodal_hash import sharding
from crossmodal_hash.data import batching
from crossmodal_hash.data import types

STATE_FORMAT = 'crossmodal_hash.data_iterator/1'
Batch = batching.Batch


@dataclasses.dataclass(frozen=True)
class Options:
  """How batches are produced (not what they hold: that never changes them).

  Attributes:
    worker_count: grain worker processes (0: read in this process).
    worker_buffer_size: batches each worker prepares ahead.
    read_threads: threads reading batches when worker_count == 0 (grain
      `ReadOptions.num_threads`; 0 reads in the consuming thread).
    prefetch: host batches those threads prepare ahead.
    device_prefetch: global batches transferred ahead of the consumer.
  """
  worker_count: int = 0
  worker_buffer_size: int = 2
  read_threads: int = 1
  prefetch: int = 2
  device_prefetch: int = 2

  def __post_init__(self):
    for name in ('worker_count', 'read_threads', 'prefetch',
                 'device_prefetch'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0; got {getattr(self, name)}.')
    if self.worker_buffer_size < 1:
      raise ValueError('worker_buffer_size must be >= 1.')


def process_shard() -> grain.sharding.ShardOptions:
  """This JAX process's shard (grain's ShardByJaxProcess)."""
  return grain.sharding.ShardByJaxProcess(drop_remainder=True)


class HostIterator:
  """Iterates host batches (dicts of NumPy arrays); checkpointable.

  Worker processes start on the first `next`, so `set_state` right after
  construction costs nothing.
  """

  def __init__(self, loader: Loader, start: int = 0):
    self._loader = loader
    self._next = start
    self._it: Iterator[Batch] | None = None

  def __iter__(self) -> HostIterator:
    return self

  def __next__(self) -> Batch:
    if self._next >= self._loader.num_batches:
      raise StopIteration
    if self._it is None:
      self._it = iter(self._loader.grain_dataset(self._next))
    batch = next(self._it)
    self._next += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable position: the next global batch, and a fingerprint."""
    return dict(self._loader.fingerprint, format=STATE_FORMAT,
                next_batch=self._next)

  def set_state(self, state: dict[str, Any]) -> None:
    """Continues from `state` (from `get_state` of an equal pipeline)."""
    self._loader.check_state(state)
    self.close()
    self._next = int(state['next_batch'])

  def close(self) -> None:
    """Stops the worker processes (if any)."""
    if self._it is not None and hasattr(self._it, 'close'):
      self._it.close()
    self._it = None


class GlobalIterator:
  """Iterates global batches (dicts of [B, ...] `jax.Array`s on the mesh).

  Each process reads only its rows; `sharding.host_to_global` assembles them.
  The state counts batches handed to the consumer, not batches prefetched.
  """

  def __init__(self, host: HostIterator, mesh: jax.sharding.Mesh,
               device_prefetch: int):
    self._host = host
    self._mesh = mesh
    self._size = device_prefetch
    self._queue: collections.deque = collections.deque()
    self._consumed_state = host.get_state()

  def __iter__(self) -> GlobalIterator:
    return self

  def _fill(self) -> None:
    while len(self._queue) < max(1, self._size):
      try:
        batch = next(self._host)
      except StopIteration:
        return
      self._queue.append((sharding.host_to_global(batch, self._mesh),
                          self._host.get_state()))

  def __next__(self) -> dict[str, jax.Array]:
    self._fill()
    if not self._queue:
      raise StopIteration
    batch, self._consumed_state = self._queue.popleft()
    self._fill()
    return batch

  def get_state(self) -> dict[str, Any]:
    return dict(self._consumed_state)

  def set_state(self, state: dict[str, Any]) -> None:
    self._queue.clear()
    self._host.set_state(state)
    self._consumed_state = self._host.get_state()

  def close(self) -> None:
    self._queue.clear()
    self._host.close()


class Loader:
  """A deterministic stream of batches over a split of a dataset."""

  def __init__(self, batches: batching.TrainBatches | batching.EvalBatches,
               options: Options, fingerprint: dict[str, Any],
               make_batches: Callable[[int], grain.MapDataset]):
    self._batches = batches
    self._make_batches = make_batches
    self.options = options
    self.fingerprint = fingerprint
    self.num_batches = len(batches)
    self.batches_per_epoch = getattr(batches, 'batches_per_epoch',
                                     self.num_batches)

  def grain_dataset(self, start: int = 0) -> grain.IterDataset:
    """The grain IterDataset of host batches from global batch `start`."""
    o = self.options
    ds = self._make_batches(start).to_iter_dataset(
        grain.ReadOptions(num_threads=o.read_threads if not o.worker_count
                          else 1, prefetch_buffer_size=o.prefetch))
    if o.worker_count:
      # grain reads its absl flags when it starts workers; outside an absl app
      # (tests, notebooks) they are unparsed, so take their defaults.
      if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=o.worker_count,
          per_worker_buffer_size=o.worker_buffer_size))
    return ds

  def host_iterator(self) -> HostIterator:
    return HostIterator(self)

  def global_iterator(self, mesh: jax.sharding.Mesh) -> GlobalIterator:
    sharding.check_batch_size(self.fingerprint['global_batch_size'], mesh,
                              'the pipeline batch size')
    return GlobalIterator(self.host_iterator(), mesh,
                          self.options.device_prefetch)

  def check_state(self, state: dict[str, Any]) -> None:
    """Raises a clear error unless `state` belongs to an equal pipeline."""
    if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
      raise ValueError(f'Not a {STATE_FORMAT} iterator state: {state!r:.200}')
    different = [f'{k}: saved {state.get(k)!r}, now {v!r}'
                 for k, v in self.fingerprint.items() if state.get(k) != v]
    if different:
      raise ValueError('The saved data-iterator state belongs to a different '
                       'pipeline (' + '; '.join(different) + '); resuming it '
                       'would not continue the same batches.')
    if not 0 <= int(state['next_batch']) <= self.num_batches:
      raise ValueError(f'Iterator state next_batch={state["next_batch"]} is '
                       f'out of range for {self.num_batches} batches.')


def _fingerprint(kind: str, data: types.MultiModalData,
                 indices: np.ndarray | None, global_batch_size: int,
                 **extra: Any) -> dict[str, Any]:
  rows = (np.arange(len(data)) if indices is None else np.asarray(indices))
  digest = hashlib.sha256(np.ascontiguousarray(rows, np.int64).tobytes())
  return dict(kind=kind, num_items=len(rows), indices_sha256=digest.hexdigest(),
              global_batch_size=int(global_batch_size), **extra)


def train_loader(data: types.MultiModalData, indices: np.ndarray | None, *,
                 global_batch_size: int, seed: int,
                 num_epochs: int | None = None,
                 shard: grain.sharding.ShardOptions | None = None,
                 options: Options = Options(),
                 fields: Sequence[str] = batching.FIELDS,
                 transform: Callable[[Batch], Batch] | None = None) -> Loader:
  """Shuffled training batches (drop remainder), a new order every epoch.

  Args:
    data: the dataset (lazy images are read on demand, in the workers).
    indices: [T] dataset rows of the training split (None: all rows).
    global_batch_size: B across all processes; each reads B / process_count.
    seed: the shuffle seed, the same on every process.
    num_epochs: epochs (None: endless); each has floor(T / B) batches.
    shard: this process's part (default: `process_shard()`).
    options: workers and prefetching.
    fields: the batch entries ('image', 'text', 'label', 'index').
    transform: a picklable function applied to each host batch.

  Returns:
    The loader; `batches_per_epoch` batches make one epoch.
  """
  shard = shard or process_shard()
  reader = batching.RowReader(data, indices, fields)

  def make(start: int) -> batching.TrainBatches:
    return batching.TrainBatches(reader, global_batch_size=global_batch_size,
                                 seed=seed, shard=shard, num_epochs=num_epochs,
                                 start=start, transform=transform)

  return Loader(make(0), options,
                _fingerprint('train', data, indices, global_batch_size,
                             seed=int(seed), num_epochs=num_epochs), make)


def eval_loader(data: types.MultiModalData, indices: np.ndarray | None, *,
                global_batch_size: int,
                shard: grain.sharding.ShardOptions | None = None,
                options: Options = Options(),
                fields: Sequence[str] = batching.FIELDS,
                transform: Callable[[Batch], Batch] | None = None) -> Loader:
  """Every item once, in order; the last batch is padded and `mask` marks
  the real items, so nothing is dropped. Arguments as in `train_loader`."""
  shard = shard or process_shard()
  reader = batching.RowReader(data, indices, fields)

  def make(start: int) -> batching.EvalBatches:
    return batching.EvalBatches(reader, global_batch_size=global_batch_size,
                                shard=shard, start=start, transform=transform)

  return Loader(make(0), options,
                _fingerprint('eval', data, indices, global_batch_size), make)
