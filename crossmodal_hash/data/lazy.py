"""Read-only arrays whose rows are read on demand (HDF5, image files, records).

A `LazyArray` looks enough like a NumPy array for the data code: `shape`,
`dtype`, `ndim`, `len()`, and indexing of the leading (item) axis with an int,
a slice, an int array or a boolean mask, which reads just those rows. So
`MultiModalData.images` can be a 20,015 x 224 x 224 x 3 HDF5 dataset of which
only a batch is ever in memory. `take_rows` makes a lazy view (what
`MultiModalData.take` uses), and `np.asarray(lazy)` reads everything, in chunks,
for callers that really want the whole array.

Subclasses implement `_read_rows` and keep whatever handle they open out of
their pickled state, so a lazy array can travel to grain's worker processes.
"""
from __future__ import annotations

import abc
import numbers
from typing import Any

import numpy as np

# Rows per read when a lazy array is read whole.
_CHUNK_BYTES = 64 << 20


class LazyArray(abc.ABC):
  """A read-only array of shape [N, ...] whose rows are read on demand.

  Attributes:
    shape: the full shape, N first.
    dtype: the dtype of the rows `_read_rows` returns.
    origin: where the rows come from (a file and key), for error messages.
  """

  def __init__(self, shape: tuple[int, ...], dtype: Any, origin: str):
    self.shape = tuple(int(s) for s in shape)
    self.dtype = np.dtype(dtype)
    self.origin = origin

  @abc.abstractmethod
  def _read_rows(self, rows: np.ndarray) -> np.ndarray:
    """Reads rows.

    Args:
      rows: [M] int64 row indices in [0, N), in any order, maybe repeated.

    Returns:
      [M, *shape[1:]] array of `dtype`, row j being row `rows[j]`.
    """

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def _row_indices(self, key: Any) -> np.ndarray:
    n = len(self)
    if isinstance(key, slice):
      return np.arange(*key.indices(n), dtype=np.int64)
    rows = np.asarray(key)
    if rows.dtype == bool:
      if rows.shape != (n,):
        raise IndexError(f'{self.origin}: boolean index of shape {rows.shape} '
                         f'for {n} rows.')
      return np.flatnonzero(rows).astype(np.int64)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
      if rows.size == 0:
        return np.zeros(0, np.int64)
      raise IndexError(f'{self.origin}: rows must be indexed by an int, a '
                       f'slice, or a 1-D int or bool array; got {key!r:.80}.')
    rows = rows.astype(np.int64)
    bad = (rows < -n) | (rows >= n)
    if bad.any():
      raise IndexError(f'{self.origin}: row {rows[bad][0]} out of range for '
                       f'{n} rows.')
    return np.where(rows < 0, rows + n, rows)

  def __getitem__(self, key: Any) -> np.ndarray:
    """`a[i]` -> one row; `a[slice]`, `a[int or bool array]` -> [M, ...]."""
    rest = ()
    if isinstance(key, tuple):
      key, rest = key[0], key[1:]
    if isinstance(key, numbers.Integral):
      i = int(key)
      if not -len(self) <= i < len(self):
        raise IndexError(f'{self.origin}: row {i} out of range for '
                         f'{len(self)} rows.')
      out = self._read_rows(np.array([i % len(self)], np.int64))[0]
    else:
      rows = self._row_indices(key)
      out = (self._read_rows(rows) if len(rows) else
             np.zeros((0,) + self.shape[1:], self.dtype))
      rest = (slice(None),) + rest if rest else rest
    return out[rest] if rest else out

  def take_rows(self, indices: np.ndarray) -> LazyArray:
    """A lazy view of rows `indices` ([M] int), in that order."""
    return RowView(self, self._row_indices(np.asarray(indices)))

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    del copy  # A new array is always made.
    row_bytes = max(1, int(np.prod(self.shape[1:])) * self.dtype.itemsize)
    chunk = max(1, _CHUNK_BYTES // row_bytes)
    out = np.empty(self.shape, self.dtype)
    for start in range(0, len(self), chunk):
      stop = min(len(self), start + chunk)
      out[start:stop] = self._read_rows(np.arange(start, stop, dtype=np.int64))
    return out if dtype is None else out.astype(dtype)

  def __repr__(self) -> str:
    return (f'{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, '
            f'origin={self.origin!r})')


class RowView(LazyArray):
  """Rows `indices` of another lazy array, read on demand."""

  def __init__(self, base: LazyArray, indices: np.ndarray):
    super().__init__((len(indices),) + base.shape[1:], base.dtype, base.origin)
    self._base = base
    self._indices = np.asarray(indices, np.int64)

  def _read_rows(self, rows: np.ndarray) -> np.ndarray:
    return self._base._read_rows(self._indices[rows])  # pylint: disable=protected-access


def is_lazy(array: Any) -> bool:
  return isinstance(array, LazyArray)
