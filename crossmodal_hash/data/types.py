"""The in-memory form of a paired multi-modal dataset and its protocol split."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

# Where a field's training rows live: on the devices for the whole run
# ('resident'), or read from the host batch by batch ('streamed').
PLACEMENTS = ('resident', 'streamed')
# The fields every dataset has; `MultiModalData.extras` adds others.
CORE_FIELDS = ('image', 'text', 'label')


@dataclasses.dataclass(frozen=True)
class Field:
  """A per-item array a dataset declares.

  Attributes:
    name: the batch key, e.g. 'image', 'text', 'label', 'text_tokens'.
    shape: one item's shape, e.g. (H, W, 3), (V,), (T,) for T tokens.
    dtype: as stored (uint8 pixels are normalised to float32 only when a
      batch reads them).
    placement: 'resident' or 'streamed' (see PLACEMENTS).
  """
  name: str
  shape: tuple[int, ...]
  dtype: np.dtype
  placement: str = 'resident'


@dataclasses.dataclass(frozen=True)
class MultiModalData:
  """N paired items: row i of every array describes the same item.

  Attributes:
    images: either pixels, [N, H, W, 3] uint8 in [0, 255], or pre-extracted image
      features, [N, D] float32.
    texts: [N, V] bag-of-words vectors, uint8 in {0, 1} (an all-zero row, an empty
      text, is legal), [N, D] float32 features, or [N, T] int32 token
      sequences (ids > 0, 0 pads; `validation.as_texts(tokens=True)`).
    labels: [N, L] multi-hot labels, uint8 in {0, 1}.
    split: the dataset's own fixed protocol split (e.g. Wikipedia's 2,173 /
      693), or None when the protocol draws a seeded random split.
    extras: further per-item fields by name, [N, ...] each (e.g.
      'text_tokens' [N, T] int32 beside a bag of words); a method's updates
      read them by declaring them in `Method.inputs`.

  Files the user brings may also give (see `data/formats.py`): images as a lazy
  `data.lazy.LazyArray` (an HDF5 dataset, image files, ArrayRecord shards) that
  reads rows on demand and never holds the whole array in memory; images [N, 0]
  float32 when a dataset has no image side (text and labels only); and texts as
  [N, D] float32 pre-extracted text features instead of a bag of words.
  """
  images: Any
  texts: np.ndarray
  labels: np.ndarray
  split: Split | None = None
  extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    n = {len(self.images), len(self.texts), len(self.labels)}
    if len(n) != 1:
      raise ValueError('images, texts and labels must have the same number of '
                       f'items; got {len(self.images)}, {len(self.texts)}, '
                       f'{len(self.labels)}.')
    for name, array in self.extras.items():
      if name in CORE_FIELDS + ('index',) or name.startswith('image_'):
        raise ValueError(f'extra field {name!r} clashes with a batch key.')
      if len(array) != len(self.labels):
        raise ValueError(f'extra field {name!r} has {len(array)} items; the '
                         f'dataset has {len(self.labels)}.')

  def field(self, name: str) -> Any:
    """The [N, ...] array of field `name` (core or extra)."""
    core = {'image': self.images, 'text': self.texts, 'label': self.labels}
    if name in core:
      return core[name]
    if name not in self.extras:
      raise KeyError(f'The dataset has no field {name!r}; it has '
                     f'{list(core) + list(self.extras)}.')
    return self.extras[name]

  def fields(self, *, stream_images: bool = False) -> dict[str, Field]:
    """The declared fields: name -> Field (images 'streamed' if asked)."""
    out = {}
    for name in CORE_FIELDS + tuple(self.extras):
      array = self.field(name)
      placement = ('streamed' if name == 'image' and stream_images
                   else 'resident')
      out[name] = Field(name, tuple(array.shape[1:]), np.dtype(array.dtype),
                        placement)
    return out

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def has_pixels(self) -> bool:
    """True for [N, H, W, 3] images, False for [N, D] features."""
    return self.images.ndim == 4

  @property
  def has_images(self) -> bool:
    """False when the dataset has no image side (images [N, 0])."""
    return self.images.ndim > 2 or self.images.shape[-1] > 0

  @property
  def num_labels(self) -> int:
    return self.labels.shape[1]

  @property
  def text_dim(self) -> int:
    return self.texts.shape[1]

  def take(self, indices: np.ndarray) -> 'MultiModalData':
    """The items at `indices` ([M] int), in that order (without a fixed split).

    Lazy images stay lazy: their `take_rows` returns a view that reads rows on
    demand.
    """
    images = (self.images.take_rows(indices)
              if hasattr(self.images, 'take_rows') else self.images[indices])
    return MultiModalData(images, self.texts[indices], self.labels[indices],
                          extras={k: v[indices]
                                  for k, v in self.extras.items()})


@dataclasses.dataclass(frozen=True)
class Split:
  """Item indices of a retrieval protocol; `train` is drawn from `retrieval`.

  Attributes:
    query: [Q] int64 indices of the query items.
    retrieval: [R] int64 indices of the retrieval (database) items.
    train: [T] int64 indices of the training items.
    val: [V] int64 indices of the validation queries, carved out of the
      protocol's training set (`splits.carve_validation`): they are not in
      `train`, and are ranked against `train`, the validation database. Empty
      when the run has no validation split.
  """
  query: np.ndarray
  retrieval: np.ndarray
  train: np.ndarray
  val: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(0, np.int64))
