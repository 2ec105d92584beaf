"""The in-memory form of a paired multi-modal dataset and its protocol split."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class MultiModalData:
  """N paired items: row i of every array describes the same item.

  Attributes:
    images: either pixels, [N, H, W, 3] uint8 in [0, 255], or pre-extracted image
      features, [N, D] float32.
    texts: [N, V] bag-of-words vectors, uint8 in {0, 1} (an all-zero row, an empty
      text, is legal).
    labels: [N, L] multi-hot labels, uint8 in {0, 1}.
  """
  images: np.ndarray
  texts: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    n = {len(self.images), len(self.texts), len(self.labels)}
    if len(n) != 1:
      raise ValueError('images, texts and labels must have the same number of '
                       f'items; got {len(self.images)}, {len(self.texts)}, '
                       f'{len(self.labels)}.')

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def has_pixels(self) -> bool:
    """True for [N, H, W, 3] images, False for [N, D] features."""
    return self.images.ndim == 4

  @property
  def num_labels(self) -> int:
    return self.labels.shape[1]

  @property
  def text_dim(self) -> int:
    return self.texts.shape[1]

  def take(self, indices: np.ndarray) -> 'MultiModalData':
    """The items at `indices` ([M] int), in that order."""
    return MultiModalData(self.images[indices], self.texts[indices],
                          self.labels[indices])


@dataclasses.dataclass(frozen=True)
class Split:
  """Item indices of a retrieval protocol; `train` is drawn from `retrieval`.

  Attributes:
    query: [Q] int64 indices of the query items.
    retrieval: [R] int64 indices of the retrieval (database) items.
    train: [T] int64 indices of the training items.
  """
  query: np.ndarray
  retrieval: np.ndarray
  train: np.ndarray
