"""Host batches as grain `MapDataset`s: seeded global shuffle, process sharding.

Element b of these datasets is this process's part of global batch b, a dict
of NumPy arrays with a leading axis of B_local = B_global / process_count:
  image [B_local, H, W, 3] uint8 or [B_local, D] float32,
  text  [B_local, V] uint8 or float32,
  label [B_local, L] uint8,
  index [B_local] int64, each item's position in the split's index array (the
        row of the trainer's per-item memories),
  mask  [B_local] bool (evaluation batches only: False on padding).

Layout: global batch b holds positions [b B, (b + 1) B) of the epoch's order,
and process p takes the contiguous block [p B_local, (p + 1) B_local) of it, so
the global batch (the concatenation in process order that
`sharding.host_to_global` builds) does not depend on the number of processes.

Training: each epoch visits a fresh grain global shuffle
(`MapDataset.range(N).shuffle(seed).repeat()`, reseeded per epoch) of the N
items and ends with its last full batch (drop remainder: floor(N / B) batches).
Evaluation: the items in order, the last batch padded with zeros and masked.
No JAX here: these objects are pickled into grain's worker processes.
"""
from __future__ import annotations

import math
import sys
from typing import Callable, Sequence

import grain
import numpy as np

from crossmodal_hash.data import lazy
from crossmodal_hash.data import types

FIELDS = ('image', 'text', 'label', 'index')
Batch = dict[str, np.ndarray]


class RowReader:
  """Reads items `indices[k]` of a dataset as arrays, k being positions."""

  def __init__(self, data: types.MultiModalData,
               indices: np.ndarray | None = None,
               fields: Sequence[str] = FIELDS):
    """Describes the rows to read.

    Args:
      data: the dataset (images may be lazy).
      indices: [M] int dataset rows of the split (default: all N rows).
      fields: which of 'image', 'text', 'label', 'index' to return.
    """
    unknown = set(fields) - set(FIELDS)
    if unknown:
      raise ValueError(f'Unknown batch fields {sorted(unknown)}; known: '
                       f'{FIELDS}.')
    self._data = data
    self._indices = (np.arange(len(data), dtype=np.int64) if indices is None
                     else np.asarray(indices, np.int64))
    if self._indices.ndim != 1:
      raise ValueError('indices must be 1-D.')
    if len(self._indices) and (self._indices.min() < 0 or
                               self._indices.max() >= len(data)):
      raise ValueError(f'indices out of range for {len(data)} items.')
    self._fields = tuple(fields)

  def __len__(self) -> int:
    return len(self._indices)

  @property
  def fields(self) -> tuple[str, ...]:
    return self._fields

  def read(self, positions: np.ndarray) -> Batch:
    """Items at `positions` ([M] int in [0, len)): a dict of [M, ...] arrays."""
    positions = np.asarray(positions, np.int64)
    rows = self._indices[positions]
    out = {}
    for field in self._fields:
      if field == 'index':
        out[field] = positions
      else:
        array = getattr(self._data, field + 's')
        out[field] = (array[rows] if lazy.is_lazy(array) or not len(rows)
                      else np.asarray(array[rows]))
    return out

  def zeros(self, count: int) -> Batch:
    """`count` all-zero items (padding) with the fields' shapes and dtypes."""
    out = {}
    for field in self._fields:
      if field == 'index':
        out[field] = np.zeros(count, np.int64)
      else:
        array = getattr(self._data, field + 's')
        out[field] = np.zeros((count,) + tuple(array.shape[1:]), array.dtype)
    return out


def _check_batch(global_batch_size: int, shard_count: int) -> int:
  if global_batch_size < 1:
    raise ValueError(f'batch size must be >= 1; got {global_batch_size}.')
  if global_batch_size % shard_count:
    raise ValueError(f'global batch size {global_batch_size} is not divisible '
                     f'by the {shard_count} processes.')
  return global_batch_size // shard_count


class _HostBatches(grain.MapDataset):
  """Base: element b = this process's block of global batch `start + b`."""

  def __init__(self, reader: RowReader, global_batch_size: int,
               shard: grain.sharding.ShardOptions, num_batches: int,
               start: int, transform: Callable[[Batch], Batch] | None):
    super().__init__()
    self._reader = reader
    self._global = global_batch_size
    self._local = _check_batch(global_batch_size, shard.shard_count)
    self._shard_index = shard.shard_index
    self._num_batches = num_batches
    self._start = start
    self._transform = transform

  def __len__(self) -> int:
    if self._num_batches == sys.maxsize:
      return sys.maxsize
    return max(0, self._num_batches - self._start)

  def _positions(self, batch: int) -> np.ndarray:
    """Epoch-order positions of this process's items of global batch `batch`."""
    first = batch * self._global + self._shard_index * self._local
    return np.arange(first, first + self._local, dtype=np.int64)

  def _batch(self, batch: int) -> Batch:
    raise NotImplementedError

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    if not 0 <= index < len(self):
      raise IndexError(f'batch {index} out of range for {len(self)} batches.')
    out = self._batch(self._start + index)
    return self._transform(out) if self._transform else out

  def __str__(self) -> str:
    return (f'{type(self).__name__}(items={len(self._reader)}, '
            f'global_batch={self._global}, local_batch={self._local}, '
            f'process={self._shard_index}, start={self._start})')


class TrainBatches(_HostBatches):
  """Shuffled, drop-remainder training batches over `num_epochs` epochs."""

  def __init__(self, reader: RowReader, *, global_batch_size: int, seed: int,
               shard: grain.sharding.ShardOptions,
               num_epochs: int | None = None, start: int = 0,
               transform: Callable[[Batch], Batch] | None = None):
    """Describes the batches.

    Args:
      reader: the training items.
      global_batch_size: B, across all processes.
      seed: shuffle seed (every process must pass the same).
      shard: this process's index and the process count.
      num_epochs: epochs to yield (None: forever).
      start: the first global batch (resumption).
      transform: applied to each host batch (in the worker process).
    """
    self.batches_per_epoch = len(reader) // global_batch_size
    if self.batches_per_epoch < 1:
      raise ValueError(f'{len(reader)} training items make no full batch of '
                       f'{global_batch_size}.')
    num_batches = (sys.maxsize if num_epochs is None else
                   num_epochs * self.batches_per_epoch)
    super().__init__(reader, global_batch_size, shard, num_batches, start,
                     transform)
    self._order = (grain.MapDataset.range(len(reader)).shuffle(seed=seed)
                   .repeat(num_epochs))

  def _batch(self, batch: int) -> Batch:
    epoch, within = divmod(batch, self.batches_per_epoch)
    positions = self._positions(within) + epoch * len(self._reader)
    # pylint: disable-next=protected-access
    rows = np.asarray(self._order._getitems(positions.tolist()), np.int64)
    return self._reader.read(rows)


class EvalBatches(_HostBatches):
  """All items in order; the last batch zero-padded, `mask` False there."""

  def __init__(self, reader: RowReader, *, global_batch_size: int,
               shard: grain.sharding.ShardOptions, start: int = 0,
               transform: Callable[[Batch], Batch] | None = None):
    num_batches = math.ceil(len(reader) / global_batch_size)
    super().__init__(reader, global_batch_size, shard, num_batches, start,
                     transform)

  def _batch(self, batch: int) -> Batch:
    positions = self._positions(batch)
    valid = positions < len(self._reader)
    out = self._reader.read(positions[valid])
    if not valid.all():
      pad = self._reader.zeros(int((~valid).sum()))
      out = {k: np.concatenate([out[k], pad[k]]) for k in out}
    out['mask'] = valid
    return out

