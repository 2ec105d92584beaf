"""MATLAB .mat files, v5 (scipy) and v7.3 (HDF5, h5py), as MATLAB shows them.

MATLAB stores arrays column-major. `scipy.io.loadmat` returns a v5 array with
MATLAB's shape; an HDF5 (v7.3) file shows every array with its axes reversed:
MATLAB's 20015 x 24 `LAll` reads as a (24, 20015) h5py dataset, and the DCMH
release's 224 x 224 x 3 x 20015 `images` as (20015, 3, 224, 224). `MatFile`
undoes the reversal, so callers always see MATLAB's shape ("MATLAB view").

Pixel arrays are then put into [N, H, W, 3] order by `pixel_layout`, which finds
the item axis (first or last, of size N) and the channel axis (size 3 or 1,
beside the two spatial axes), so 224x224x3xN, Nx224x224x3, Nx3x224x224 and
3x224x224xN all load. In a v7.3 file they are never read whole: `HDF5Pixels`
reads the rows it is asked for. v5 files (at most 2 GiB) are read whole by
scipy.
"""
from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np
import scipy.io
import scipy.sparse

from crossmodal_hash.data import lazy
from crossmodal_hash.data import validation

DataFormatError = validation.DataFormatError

_V5_MAGIC = b'MATLAB 5.0 MAT-file'
_HEADER_BYTES = 512


class MatFile:
  """Named numeric arrays of a .mat file (v5 or v7.3), in MATLAB's view.

  Attributes:
    path: the file.
    version: '5' or '7.3'.
  """

  def __init__(self, path: str):
    """Opens `path` (v7.3: the HDF5 file; v5: reads it whole).

    Raises:
      FileNotFoundError: no such file.
      DataFormatError: not a .mat file, or corrupt or truncated.
    """
    self.path = path
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path}: no such file.')
    with open(path, 'rb') as f:
      head = f.read(_HEADER_BYTES)
    self._h5 = None
    self._v5: dict[str, Any] = {}
    if h5py.is_hdf5(path):
      self.version = '7.3'
      try:
        self._h5 = h5py.File(path, 'r')
      except OSError as e:
        raise DataFormatError(f'{path}: cannot open the MATLAB v7.3 (HDF5) '
                              f'file: {e}. It may be truncated or corrupt.'
                             ) from e
    elif head.startswith(_V5_MAGIC):
      self.version = '5'
      try:
        self._v5 = scipy.io.loadmat(path)
      except Exception as e:  # scipy raises many types for damaged files.
        raise DataFormatError(f'{path}: cannot read the MATLAB v5 file: '
                              f'{type(e).__name__}: {e}. It may be truncated '
                              'or corrupt.') from e
    else:
      raise DataFormatError(
          f'{path}: not a MATLAB .mat file of version 5 or 7.3 (HDF5); it '
          f'starts with {head[:24]!r}.')

  def keys(self) -> list[str]:
    """The top-level variable names."""
    if self._h5 is not None:
      return sorted(k for k in self._h5.keys() if not k.startswith('#'))
    return sorted(k for k in self._v5 if not k.startswith('__'))

  def __contains__(self, key: str) -> bool:
    return key in self.keys()

  def find(self, candidates: tuple[str, ...], what: str) -> str:
    """The first of `candidates` present; a clear error if none is."""
    for key in candidates:
      if key in self:
        return key
    raise DataFormatError(
        f'{self.path}: missing key for the {what} (looked for '
        f'{", ".join(candidates)}); the file holds: '
        f'{", ".join(self.keys()) or "(nothing)"}.')

  def _h5_dataset(self, key: str) -> h5py.Dataset:
    obj = self._h5[key]
    if not isinstance(obj, h5py.Dataset) or 'MATLAB_sparse' in obj.attrs:
      raise DataFormatError(
          f'{self.path}: {key} is not a full numeric array (a struct, cell or '
          'sparse matrix); save it as a full numeric matrix.')
    return obj

  def shape(self, key: str) -> tuple[int, ...]:
    """The array's shape in MATLAB's view."""
    if key not in self:
      raise DataFormatError(f'{self.path}: missing key {key!r}; the file '
                            f'holds: {", ".join(self.keys())}.')
    if self._h5 is not None:
      return tuple(self._h5_dataset(key).shape[::-1])
    return tuple(np.shape(self._v5[key]))

  def read(self, key: str) -> np.ndarray:
    """The whole array, in MATLAB's view (a NumPy array)."""
    shape = self.shape(key)
    if self._h5 is not None:
      try:
        array = self._h5_dataset(key)[()]
      except OSError as e:
        raise DataFormatError(f'{self.path}: cannot read {key}: {e}. The file '
                              'may be truncated or corrupt.') from e
      return np.asarray(array).transpose()
    array = self._v5[key]
    if scipy.sparse.issparse(array):
      array = array.toarray()
    array = np.asarray(array)
    if array.dtype == object or array.dtype.names:
      raise DataFormatError(f'{self.path}: {key} is not a numeric array (a '
                            'struct or cell array); save it as a full numeric '
                            'matrix.')
    assert array.shape == shape
    return array

  def value(self, key: str) -> Any:
    """A v5 variable as `scipy.io.loadmat` returns it, structs and cells too.

    A struct is a structured array (one field per name), a cell an object
    array, both with MATLAB's shape (a scalar struct is [1, 1]).

    Raises:
      DataFormatError: no such variable, or a v7.3 (HDF5) file, whose structs
        and cells are not read.
    """
    if self._h5 is not None:
      raise DataFormatError(
          f'{self.path}: {key} must be read from a MATLAB v5/v7 file; this is '
          "a v7.3 (HDF5) file. Re-save it in MATLAB with save(..., '-v7').")
    if key not in self:
      raise DataFormatError(f'{self.path}: missing key {key!r}; the file '
                            f'holds: {", ".join(self.keys()) or "(nothing)"}.')
    return self._v5[key]

  def pixels(self, key: str, num_items: int) -> Any:
    """A 4-D pixel array as [N, H, W, 3] uint8 (lazy for v7.3 files)."""
    where = f'{self.path}:{key}'
    axes = pixel_layout(self.shape(key), num_items, where)
    if self._h5 is not None:
      return HDF5Pixels(self.path, key, axes)
    array = self.read(key)
    return _to_rgb(np.transpose(array, axes), where)

  def close(self) -> None:
    if self._h5 is not None:
      self._h5.close()

  def __enter__(self) -> MatFile:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def pixel_layout(shape: tuple[int, ...], num_items: int,
                 where: str) -> tuple[int, int, int, int]:
  """The axes (item, height, width, channel) of a 4-D MATLAB-view pixel array.

  Args:
    shape: the MATLAB-view shape, e.g. (224, 224, 3, N) or (N, 3, 224, 224).
    num_items: N, the number of items (from the label and text arrays).
    where: file and key, for errors.

  Returns:
    Axis indices such that `np.transpose(array, axes)` is [N, H, W, C].
  """
  if len(shape) != 4:
    raise DataFormatError(f'{where}: pixel arrays must be 4-D; got shape '
                          f'{shape}.')
  item = next((a for a in (3, 0) if shape[a] == num_items), None)
  if item is None:
    raise DataFormatError(
        f'{where}: no first or last axis of size {num_items} (the number of '
        f'items) in the image array of shape {shape}: inconsistent item '
        'counts.')
  rest = [a for a in range(4) if a != item]
  if shape[rest[-1]] in (1, 3):
    return (item, rest[0], rest[1], rest[2])
  if shape[rest[0]] in (1, 3):
    return (item, rest[1], rest[2], rest[0])
  raise DataFormatError(
      f'{where}: cannot find the colour-channel axis (size 3 or 1, first or '
      f'last after removing the item axis) in the image array of shape '
      f'{shape}.')


def rows_first(array: np.ndarray, num_items: int, where: str) -> np.ndarray:
  """A 2-D MATLAB-view array as [N, D] (transposed if stored as [D, N])."""
  if array.ndim != 2:
    raise DataFormatError(f'{where}: expected a 2-D [N, D] array; got shape '
                          f'{array.shape}.')
  if array.shape[0] == num_items:
    return array
  if array.shape[1] == num_items:
    return array.T
  raise DataFormatError(f'{where}: shape {array.shape} has no axis of size '
                        f'{num_items} (the number of items): inconsistent item '
                        'counts.')


def infer_num_items(shapes: dict[str, tuple[int, ...]], where: str,
                    prefer: str) -> int:
  """The item count N that every array's first or last axis agrees on.

  Args:
    shapes: name -> MATLAB-view shape of each array (2-D or 4-D).
    where: the file(s), for errors.
    prefer: the array whose first axis wins when several counts fit.

  Returns:
    N.
  """
  common = None
  for shape in shapes.values():
    ends = {shape[0], shape[-1]}
    common = ends if common is None else common & ends
  if not common:
    listed = ', '.join(f'{k} {v}' for k, v in shapes.items())
    raise DataFormatError(f'{where}: inconsistent item counts; no axis length '
                          f'is shared by every array ({listed}).')
  first = shapes[prefer][0]
  return first if first in common else max(common)


def _to_rgb(block: np.ndarray, where: str) -> np.ndarray:
  if block.dtype != np.uint8:
    raise DataFormatError(f'{where}: pixel arrays must be uint8; got '
                          f'{block.dtype}. Save the images as uint8 (0-255).')
  if block.shape[-1] == 1:
    block = np.repeat(block, 3, axis=-1)
  return block


class HDF5Pixels(lazy.LazyArray):
  """[N, H, W, 3] uint8 pixels of a v7.3 .mat / HDF5 dataset, read by rows.

  The file is opened on first use in each process (and never pickled), so the
  array can be sent to grain's worker processes.
  """

  def __init__(self, path: str, key: str, matlab_axes: tuple[int, int, int,
                                                              int]):
    """Describes dataset `key` of `path`.

    Args:
      path: the HDF5 (.mat v7.3) file.
      key: the dataset.
      matlab_axes: (item, height, width, channel) axes in MATLAB's view (see
        `pixel_layout`).
    """
    self._path = path
    self._key = key
    self._file = None
    self._pid = None
    dataset = self._dataset()
    # MATLAB-view axis a is HDF5 axis 3 - a.
    self._axes = tuple(3 - a for a in matlab_axes)
    h5_shape = dataset.shape
    shape = tuple(h5_shape[a] for a in self._axes)
    where = f'{path}:{key}'
    if dataset.dtype != np.uint8:
      raise DataFormatError(f'{where}: pixel arrays must be uint8; got '
                            f'{dataset.dtype}. Save the images as uint8.')
    super().__init__(shape[:3] + (3,), np.uint8, where)

  def _dataset(self) -> h5py.Dataset:
    if self._file is None or self._pid != os.getpid():
      try:
        self._file = h5py.File(self._path, 'r')
      except OSError as e:
        raise DataFormatError(f'{self._path}: cannot open the HDF5 file: {e}. '
                              'It may be truncated or corrupt.') from e
      self._pid = os.getpid()
    return self._file[self._key]

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    state['_file'] = state['_pid'] = None
    return state

  def _read_rows(self, rows: np.ndarray) -> np.ndarray:
    unique, inverse = np.unique(rows, return_inverse=True)
    item_axis = self._axes[0]
    selection = [slice(None)] * 4
    if len(unique) == 1:
      selection[item_axis] = slice(int(unique[0]), int(unique[0]) + 1)
    elif unique[-1] - unique[0] + 1 == len(unique):
      selection[item_axis] = slice(int(unique[0]), int(unique[-1]) + 1)
    else:
      selection[item_axis] = unique.tolist()
    try:
      block = self._dataset()[tuple(selection)]
    except (OSError, ValueError) as e:
      raise DataFormatError(
          f'{self.origin}: cannot read rows {unique[:5].tolist()}: {e}. The '
          'file may be truncated or corrupt.') from e
    block = np.transpose(block, self._axes)
    return _to_rgb(block, self.origin)[inverse.reshape(-1)]


_MATLAB_CLASSES = {
    np.dtype(np.uint8): 'uint8', np.dtype(np.int8): 'int8',
    np.dtype(np.uint16): 'uint16', np.dtype(np.int16): 'int16',
    np.dtype(np.uint32): 'uint32', np.dtype(np.int32): 'int32',
    np.dtype(np.uint64): 'uint64', np.dtype(np.int64): 'int64',
    np.dtype(np.float32): 'single', np.dtype(np.float64): 'double',
}


def save_v73(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Writes numeric arrays as MATLAB's `save(path, ..., '-v7.3')` would.

  An HDF5 file with MATLAB's 512-byte header in the user block; each array is
  stored with its axes reversed (MATLAB is column-major), so `MatFile(path)
  .read(key)` returns `arrays[key]` unchanged.

  Args:
    path: the .mat file to write.
    arrays: name -> array in MATLAB's view (e.g. images [224, 224, 3, N]).
  """
  with h5py.File(path, 'w', userblock_size=_HEADER_BYTES) as f:
    for name, array in arrays.items():
      array = np.asarray(array)
      if array.dtype == bool:
        array, cls = array.astype(np.uint8), 'logical'
      else:
        cls = _MATLAB_CLASSES[array.dtype]
      dataset = f.create_dataset(name, data=array.transpose())
      dataset.attrs['MATLAB_class'] = np.bytes_(cls)
  text = b'MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .'
  header = text.ljust(116, b' ') + b'\0' * 8 + b'\x00\x02' + b'IM'
  with open(path, 'r+b') as f:
    f.write(header.ljust(_HEADER_BYTES, b'\0'))
