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
  `num_query` 0 gives a split without test queries (a file that is only a
  training set, tuned on a validation split carved from it).

  Returns:
    A Split whose index arrays are each sorted ascending (so database order, the
    tie order of evaluation, is the dataset's order).
  """
  if num_query < 0 or num_train < 1:
    raise ValueError(f'num_query={num_query} must be >= 0 and '
                     f'num_train={num_train} >= 1.')
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


def carve_validation(split: types.Split, num_val: int,
                     seed: int) -> types.Split:
  """Moves `num_val` seeded random training items into `val`.

  The validation queries are ranked against the remaining training items
  (the validation database), which are also the items trained on; the
  protocol's query and retrieval sets are unchanged (for Wikipedia, the test
  queries are still ranked against all training items, as published).

  Args:
    split: the protocol's split (its `val` must be empty).
    num_val: V >= 0 (0 returns `split` unchanged).
    seed: the split seed.

  Returns:
    The split with `val` [V] and `train` [T - V], both sorted ascending.
  """
  if num_val == 0:
    return split
  if num_val < 0 or num_val >= len(split.train):
    raise ValueError(f'config.dataset.num_val={num_val} must be in [0, '
                     f'{len(split.train)}), the number of training items.')
  rng = np.random.default_rng([seed, 1])  # Not the stream of random_split.
  chosen = np.zeros(len(split.train), bool)
  chosen[rng.choice(len(split.train), size=num_val, replace=False)] = True
  train = np.asarray(split.train, np.int64)
  return types.Split(query=split.query, retrieval=split.retrieval,
                     train=np.sort(train[~chosen]), val=np.sort(train[chosen]))


def checksum(split: types.Split) -> str:
  """SHA-256 of the index arrays (`val` only when it is not empty)."""
  h = hashlib.sha256()
  for name in ('query', 'retrieval', 'train') + (('val',) if len(split.val)
                                                  else ()):
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
  arrays = [(name, getattr(data, name))
            for name in ('images', 'texts', 'labels')]
  # Extra fields count too (none: the checksum of the three arrays alone).
  arrays += sorted(data.extras.items())
  for name, array in arrays:
    h.update(f'{name}{tuple(array.shape)}{np.dtype(array.dtype).str}'.encode())
    if isinstance(array, np.ndarray):
      h.update(np.ascontiguousarray(array).tobytes())
  return h.hexdigest()


def save(path: str, split: types.Split) -> str:
  """Writes the split (atomically) with its checksum; returns the checksum."""
  digest = checksum(split)
  tmp = f'{path}.tmp.npz'
  np.savez(tmp, query=split.query, retrieval=split.retrieval,
           train=split.train, val=split.val, sha256=np.array(digest))
  os.replace(tmp, path)
  return digest


def load(path: str) -> types.Split:
  """Reads a split written by `save`, verifying its checksum."""
  try:
    with np.load(path) as f:
      split = types.Split(query=f['query'], retrieval=f['retrieval'],
                          train=f['train'],
                          val=f['val'] if 'val' in f else np.zeros(0, np.int64))
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
          f'{len(saved.query)}/{len(saved.retrieval)}/{len(saved.train)}/'
          f'{len(saved.val)} query/retrieval/train/validation) than this '
          f'config draws (sha256 {checksum(split)[:12]}, {len(split.query)}/'
          f'{len(split.retrieval)}/{len(split.train)}/{len(split.val)}): a '
          'different dataset, protocol, num_val or split_seed. Use another '
          '--workdir; nothing was overwritten.')
    return saved
  if write:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save(path, split)
  return split
