"""Checks of loaded arrays, each failing with an error that names the file.

Every loader funnels its arrays through `make_data`, which enforces:
  * the same number of items in images, texts and labels;
  * labels in {0, 1} (multi-hot) with at least one label per item (or, with
    `drop_unlabeled=True`, drops the unlabeled items and says how many);
  * texts either binary bags of words (kept as uint8) or finite float features
    (float32); an all-zero text is legal (an item with no known tag);
  * finite image features; pixel arrays uint8 [N, H, W, 3];
  * split index arrays in range and without duplicates.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from absl import logging

from crossmodal_hash.data import lazy
from crossmodal_hash.data import types


class DataFormatError(ValueError):
  """A dataset file is missing a key, malformed, corrupt or inconsistent."""


def _rows(mask: np.ndarray, limit: int = 5) -> str:
  rows = np.flatnonzero(mask)
  shown = ', '.join(str(r) for r in rows[:limit])
  return shown + (f', ... ({len(rows)} rows)' if len(rows) > limit else '')


def check_counts(where: str, **arrays: Any) -> int:
  """The common item count of `arrays` (leading axes); raises if they differ."""
  counts = {name: len(a) for name, a in arrays.items()}
  if len(set(counts.values())) != 1:
    listed = ', '.join(f'{k}: {v}' for k, v in counts.items())
    raise DataFormatError(f'{where}: inconsistent item counts ({listed}); '
                          'row i of every array must describe item i.')
  return next(iter(counts.values()))


def check_finite(array: np.ndarray, where: str) -> None:
  """Raises if a float array holds NaN or Inf, naming the first bad value.

  Args:
    array: [N, ...] rows of one array of a file.
    where: the file and the array ('wiki.npz:I_tr'); the rows named are rows
      of that array.
  """
  if np.issubdtype(array.dtype, np.floating):
    flat = np.asarray(array).reshape(len(array), -1)
    finite = np.isfinite(flat)
    bad = ~finite.all(axis=1)
    if bad.any():
      row = int(np.flatnonzero(bad)[0])
      column = int(np.flatnonzero(~finite[row])[0])
      value = flat[row, column].item()
      raise DataFormatError(
          f'{where}: row {row} holds {value} at column {column} (rows with '
          f'NaN or Inf: {_rows(bad)}); fix or remove those rows.')


def check_binary(array: np.ndarray, where: str, what: str) -> np.ndarray:
  """`array` as uint8 after checking every value is 0 or 1."""
  if array.dtype == bool:
    return array.astype(np.uint8)
  check_finite(array, where)
  bad_values = (array != 0) & (array != 1)
  if bad_values.any():
    row = np.flatnonzero(bad_values.any(axis=tuple(range(1, array.ndim))))[0]
    value = array[bad_values][0].item()
    raise DataFormatError(
        f'{where}: {what} must be 0 or 1; row {row} holds {value!r} '
        f'({int(bad_values.sum())} values are not binary).')
  return array.astype(np.uint8)


def as_labels(labels: np.ndarray, where: str) -> np.ndarray:
  """[N, L] multi-hot labels as uint8, checking the values are binary."""
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise DataFormatError(f'{where}: labels must be [N, L] multi-hot; got '
                          f'shape {labels.shape}.')
  return check_binary(labels, where, 'labels (multi-hot)')


def class_indices_to_one_hot(classes: np.ndarray, where: str,
                             base: int | None = None) -> np.ndarray:
  """Single-label class indices -> [N, C] one-hot uint8.

  Args:
    classes: [N] or [N, 1] integer class indices.
    where: file and key, for errors.
    base: 0 or 1, the index of the first class; None: 1 if the smallest index
      is 1 (MATLAB's convention), else 0.

  Returns:
    [N, C] uint8 with C = max index - base + 1.
  """
  classes = np.asarray(classes).reshape(-1)
  check_finite(classes, where)
  if classes.size == 0:
    raise DataFormatError(f'{where}: no class indices.')
  fractional = classes != np.round(classes)
  if fractional.any():
    raise DataFormatError(f'{where}: class indices must be integers; got '
                          f'{classes[fractional][0].item()!r}.')
  classes = classes.astype(np.int64)
  if base is None:
    base = 1 if classes.min() == 1 else 0
  if classes.min() < base:
    raise DataFormatError(f'{where}: class index {classes.min()} is below the '
                          f'first class index {base}.')
  one_hot = np.zeros((len(classes), classes.max() - base + 1), np.uint8)
  one_hot[np.arange(len(classes)), classes - base] = 1
  return one_hot


def as_texts(texts: np.ndarray, where: str, *,
             tokens: bool = False) -> np.ndarray:
  """[N, V] texts: a binary bag of words as uint8, else float32 features.

  With `tokens`, [N, T] token sequences instead: integer ids >= 0 (0 pads a
  shorter text), returned as int32.
  """
  texts = np.asarray(texts)
  if tokens:
    if texts.ndim != 2 or not (np.issubdtype(texts.dtype, np.integer) or
                               texts.dtype == bool):
      raise DataFormatError(f'{where}: token sequences must be [N, T] '
                            f'integers; got shape {texts.shape}, dtype '
                            f'{texts.dtype}.')
    if texts.size and (texts.min() < 0 or
                       texts.max() > np.iinfo(np.int32).max):
      raise DataFormatError(f'{where}: token ids must be in [0, 2^31); got '
                            f'{texts.min()} .. {texts.max()}.')
    return texts.astype(np.int32)
  if texts.ndim != 2:
    raise DataFormatError(f'{where}: texts must be [N, V]; got shape '
                          f'{texts.shape}.')
  if texts.dtype == bool:
    return texts.astype(np.uint8)
  check_finite(texts, where)
  if np.all((texts == 0) | (texts == 1)):
    return texts.astype(np.uint8)
  return texts.astype(np.float32)


def as_images(images: Any, where: str) -> Any:
  """Checks pixels ([N, H, W, 3] uint8, maybe lazy) or features ([N, D])."""
  if images.ndim == 4:
    if images.shape[-1] != 3 or images.dtype != np.uint8:
      raise DataFormatError(
          f'{where}: pixel arrays must be [N, H, W, 3] uint8; got shape '
          f'{images.shape}, dtype {images.dtype}.')
    return images
  if images.ndim != 2 or lazy.is_lazy(images):
    raise DataFormatError(f'{where}: images must be [N, H, W, 3] uint8 pixels '
                          f'or [N, D] features; got shape {images.shape}.')
  images = np.asarray(images)
  if not (np.issubdtype(images.dtype, np.number) or images.dtype == bool):
    raise DataFormatError(f'{where}: image features must be numbers; got '
                          f'dtype {images.dtype}.')
  images = images.astype(np.float32)
  check_finite(images, where)
  return images


def no_images(num_items: int) -> np.ndarray:
  """The image side of a text-and-labels-only dataset: [N, 0] float32."""
  return np.zeros((num_items, 0), np.float32)


def as_index(indices: Any, num_items: int, where: str,
             base: int = 0) -> np.ndarray:
  """Split indices as sorted-unique-checked [M] int64, 0-based."""
  indices = np.asarray(indices).reshape(-1)
  if indices.size and (not np.issubdtype(indices.dtype, np.number) or np.any(
      indices != np.round(indices))):
    raise DataFormatError(f'{where}: split indices must be integers.')
  indices = indices.astype(np.int64) - base
  bad = indices[(indices < 0) | (indices >= num_items)]
  if bad.size:
    raise DataFormatError(
        f'{where}: split index {bad[0] + base} is out of range for '
        f'{num_items} items (indices are {base}-based here).')
  if len(np.unique(indices)) != len(indices):
    raise DataFormatError(f'{where}: split indices contain duplicates.')
  return indices


def unlabeled_rows(labels: np.ndarray, where: str, *,
                   drop: bool = False) -> np.ndarray:
  """[N] bool, the all-zero rows of [N, L] `labels`; raises unless `drop`.

  Args:
    labels: [N, L] multi-hot rows of one array.
    where: the file and the array; the rows named are rows of that array.
    drop: return the rows (to drop) instead of raising.
  """
  empty = labels.reshape(len(labels), -1).sum(axis=1) == 0
  if empty.any() and not drop:
    raise DataFormatError(
        f'{where}: {int(empty.sum())} items have no label (all-zero label '
        f'rows {_rows(empty)}); relevance is undefined for them. Remove them, '
        'or set config.dataset.drop_unlabeled=True to drop them.')
  return empty


def make_data(images: Any, texts: np.ndarray, labels: np.ndarray, *,
              where: str, split: types.Split | None = None,
              drop_unlabeled: bool = False,
              names: dict[str, str] | None = None) -> types.MultiModalData:
  """Validates the three arrays and builds the dataset.

  Args:
    images: [N, H, W, 3] uint8 (NumPy or lazy), [N, D] features, or [N, 0].
    texts: [N, V] bag of words or text features.
    labels: [N, L] multi-hot.
    where: the file (or files) read, for error messages.
    split: an optional fixed split over the N items.
    drop_unlabeled: drop items whose label row is all zeros (re-indexing a
      fixed split) instead of raising.
    names: 'images', 'texts', 'labels' -> the array's name in the file, so an
      error names it ('data.npz:image: row 17 holds nan ...').

  Returns:
    The checked `MultiModalData`.
  """
  n = check_counts(where, images=images, texts=texts, labels=labels)
  if n == 0:
    raise DataFormatError(f'{where}: the dataset has no items.')
  at = lambda role: f'{where}:{names[role]}' if names and role in names else (
      f'{where} ({role})')
  images = as_images(images, at('images'))
  texts = as_texts(texts, at('texts'))
  labels = as_labels(labels, at('labels'))
  empty = unlabeled_rows(labels, at('labels'), drop=drop_unlabeled)
  if empty.any():
    keep = np.flatnonzero(~empty)
    logging.warning('%s: dropping %d unlabeled items of %d.', where,
                    int(empty.sum()), n)
    if split is not None:
      new_index = np.full(n, -1, np.int64)
      new_index[keep] = np.arange(len(keep))
      split = types.Split(
          **{k: new_index[v][new_index[v] >= 0] for k, v in (
              ('query', split.query), ('retrieval', split.retrieval),
              ('train', split.train))})
    images = (images.take_rows(keep) if lazy.is_lazy(images)
              else images[keep])
    texts, labels = texts[keep], labels[keep]
  return types.MultiModalData(images=images, texts=texts, labels=labels,
                              split=split)
