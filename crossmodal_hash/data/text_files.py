"""Plain-file inputs: matrices (.txt/.npy/.mat), raw tags with a vocabulary."""
from __future__ import annotations

import os

import numpy as np

from crossmodal_hash.data import mat_files
from crossmodal_hash.data import validation

DataFormatError = validation.DataFormatError


def read_matrix(path: str, key: str = '') -> np.ndarray:
  """A numeric matrix from a file, in row-per-item order.

  Args:
    path: `.npy`; `.mat` (v5 or v7.3; the variable `key`, or the only variable
      if `key` is empty); anything else is text: one row per line, values
      separated by whitespace or commas.
    key: the .mat variable.

  Returns:
    The array as stored (MATLAB's view for .mat).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file.')
  ext = os.path.splitext(path)[1].lower()
  if ext == '.mat':
    with mat_files.MatFile(path) as f:
      if not key:
        keys = f.keys()
        if len(keys) != 1:
          raise DataFormatError(f'{path}: holds {len(keys)} variables '
                                f'({", ".join(keys)}); name the one to use.')
        key = keys[0]
      return f.read(key)
  if ext == '.npy':
    try:
      return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
      raise DataFormatError(f'{path}: cannot read the .npy array ({e}); the '
                            'file may be truncated or corrupt.') from e
  try:
    with open(path, encoding='utf-8') as f:
      rows = [line.replace(',', ' ').split() for line in f if line.strip()]
    array = np.array(rows, dtype=np.float64)
  except ValueError as e:
    raise DataFormatError(f'{path}: not a numeric matrix with the same number '
                          f'of values on every line ({e}).') from e
  if array.ndim != 2:
    raise DataFormatError(f'{path}: lines hold different numbers of values.')
  return array


def read_vocabulary(path: str) -> list[str]:
  """One tag per line (blank lines ignored); duplicates are an error."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such vocabulary file.')
  with open(path, encoding='utf-8') as f:
    vocab = [line.strip().lower() for line in f if line.strip()]
  if not vocab:
    raise DataFormatError(f'{path}: the vocabulary is empty.')
  seen = set()
  for word in vocab:
    if word in seen:
      raise DataFormatError(f'{path}: tag {word!r} appears twice in the '
                            'vocabulary.')
    seen.add(word)
  return vocab


def tags_to_bag_of_words(tags_path: str, vocab_path: str) -> np.ndarray:
  """Raw tag lines mapped onto a vocabulary: [N, V] binary uint8.

  Args:
    tags_path: one line per item, its tags separated by whitespace (an empty
      line is an item with no tags). Matching is case-insensitive; tags outside
      the vocabulary are ignored, so an item may get an all-zero vector.
    vocab_path: the vocabulary, one tag per line; column j is line j.

  Returns:
    [N, V] uint8 in {0, 1}.
  """
  vocab = read_vocabulary(vocab_path)
  if not os.path.isfile(tags_path):
    raise FileNotFoundError(f'{tags_path}: no such tag file.')
  with open(tags_path, encoding='utf-8') as f:
    lines = f.read().splitlines()
  if not lines:
    raise DataFormatError(f'{tags_path}: the tag file is empty.')
  return bag_of_words(lines, vocab)


def bag_of_words(lines: list[str], vocab: list[str]) -> np.ndarray:
  """Tag lines ([N] strings, tags separated by whitespace) on `vocab`.

  Case-insensitive; unknown tags are ignored.

  Returns:
    [N, V] uint8 in {0, 1}.
  """
  column = {word: j for j, word in enumerate(vocab)}
  bow = np.zeros((len(lines), len(vocab)), np.uint8)
  for i, line in enumerate(lines):
    cols = [column[t] for t in line.lower().split() if t in column]
    bow[i, cols] = 1
  return bow
