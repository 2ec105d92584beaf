"""Seeded query / retrieval / train splits, saved with the run and checksummed."""
from __future__ import annotations

import hashlib
import os

import numpy as np

from crossmodal_hash.data import types


def random_split(num_items: int, num_query: int, num_train: int,
                 seed: int) -> types.Split:
  """Draws `num_query` queries; the rest is the retrieval set, from which
  `num_train` training items are drawn (the MIRFLICKR-25K protocol's shape).

  Returns:
    A Split whose index arrays are each sorted ascending (so database order, the
    tie order of evaluation, is the dataset's order).
  """
  if num_query < 1 or num_train < 1:
    raise ValueError(f'num_query={num_query} and num_train={num_train} must be '
                     '>= 1.')
  if num_query >= num_items:
    raise ValueError(f'num_query={num_query} leaves no retrieval items out of '
                     f'{num_items}.')
  if num_train > num_items - num_query:
    raise ValueError(f'num_train={num_train} exceeds the {num_items - num_query}'
                     ' retrieval items it is drawn from.')
  rng = np.random.default_rng(seed)
  order = rng.permutation(num_items)
  query = np.sort(order[:num_query])
  retrieval = np.sort(order[num_query:])
  train = np.sort(rng.choice(retrieval, size=num_train, replace=False))
  return types.Split(query=query.astype(np.int64),
                     retrieval=retrieval.astype(np.int64),
                     train=train.astype(np.int64))


def checksum(split: types.Split) -> str:
  """SHA-256 of the three index arrays."""
  h = hashlib.sha256()
  for name in ('query', 'retrieval', 'train'):
    h.update(name.encode())
    h.update(np.ascontiguousarray(getattr(split, name), np.int64).tobytes())
  return h.hexdigest()


def data_checksum(data: types.MultiModalData) -> str:
  """SHA-256 of a dataset's arrays: what a moved dataset file must still hold.

  Texts and labels always count, and so do images held in memory (features,
  decoded pixels); images read lazily from files (`data.lazy`) count by shape
  and dtype only, so that the check never reads a whole image set.
  """
  h = hashlib.sha256()
  for name in ('images', 'texts', 'labels'):
    array = getattr(data, name)
    h.update(f'{name}{tuple(array.shape)}{np.dtype(array.dtype).str}'.encode())
    if isinstance(array, np.ndarray):
      h.update(np.ascontiguousarray(array).tobytes())
  return h.hexdigest()


def save(path: str, split: types.Split) -> str:
  """Writes the split (atomically) with its checksum; returns the checksum."""
  digest = checksum(split)
  tmp = f'{path}.tmp.npz'
  np.savez(tmp, query=split.query, retrieval=split.retrieval,
           train=split.train, sha256=np.array(digest))
  os.replace(tmp, path)
  return digest


def load(path: str) -> types.Split:
  """Reads a split written by `save`, verifying its checksum."""
  try:
    with np.load(path) as f:
      split = types.Split(query=f['query'], retrieval=f['retrieval'],
                          train=f['train'])
      stored = str(f['sha256'])
  except (OSError, KeyError, ValueError) as e:
    raise ValueError(f'{path}: not a readable split file ({e}).') from e
  if checksum(split) != stored:
    raise ValueError(f'{path}: checksum mismatch; the split file is corrupt.')
  return split


class SplitMismatchError(ValueError):
  """The workdir holds a different split than the run's config draws."""


def reuse_or_save(path: str, split: types.Split, *,
                  write: bool = True) -> types.Split:
  """Reuses the split saved at `path`, or saves `split` there.

  A resumed run must see exactly the split it started with, so an existing file
  must hold `split` itself (checksum verified); anything else is an error and
  nothing is overwritten.

  Args:
    path: `<workdir>/split.npz`.
    split: the split this run's config draws.
    write: save the split when `path` does not exist (only process 0 should).

  Returns:
    The split.
  """
  if os.path.exists(path):
    saved = load(path)
    if checksum(saved) != checksum(split):
      raise SplitMismatchError(
          f'{path} holds a different split (sha256 {checksum(saved)[:12]}, '
          f'{len(saved.query)}/{len(saved.retrieval)}/{len(saved.train)} '
          'query/retrieval/train) than this config draws (sha256 '
          f'{checksum(split)[:12]}, {len(split.query)}/{len(split.retrieval)}/'
          f'{len(split.train)}): a different dataset, protocol or split_seed. '
          'Use another --workdir; nothing was overwritten.')
    return saved
  if write:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save(path, split)
  return split
