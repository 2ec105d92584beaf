"""Datasets that need no files: the synthetic generator in its variants, and
a single-label synthetic source domain (data/synthetic_source.py)."""
from __future__ import annotations

import ml_collections

from crossmodal_hash.data import registry
from crossmodal_hash.data import synthetic
from crossmodal_hash.data import synthetic_source
from crossmodal_hash.data import synthetic_video
from crossmodal_hash.data import types


def synthetic_dataset_config(name: str = 'synthetic', *,
                             num_items: int = 5000, num_query: int = 500,
                             num_train: int = 2000
                            ) -> ml_collections.ConfigDict:
  """The `config.dataset` section of the synthetic demos (all methods).

  24 labels, 1,000-word texts, 32 x 32 images ('synthetic'), 512-d features
  ('synthetic_features') or 8-frame clips ('synthetic_video'); the seeded
  split draws `num_query` queries and `num_train` training items.
  """
  c = ml_collections.ConfigDict()
  c.name = name
  c.seed = 0
  c.num_items = num_items
  c.num_query = num_query
  c.num_train = num_train
  c.split_seed = 0
  c.num_val = 0  # Validation queries carved out of the training set.
  c.num_labels = 24
  c.vocab_size = 1000
  c.image_size = 32
  c.feature_dim = 512  # 'synthetic_features' only.
  c.num_frames = 8  # 'synthetic_video' only.
  c.path = ''
  return c


def _synthetic_config(c: ml_collections.ConfigDict,
                      feature_dim: int | None) -> synthetic.SyntheticConfig:
  return synthetic.SyntheticConfig(num_labels=c.num_labels,
                                   vocab_size=c.vocab_size,
                                   image_size=c.image_size,
                                   feature_dim=feature_dim)


def names(c: ml_collections.ConfigDict) -> tuple[list[str], list[str]]:
  """(vocabulary [V], label names [L]) of a synthetic dataset config.

  The same for 'synthetic', 'synthetic_features' and 'synthetic_video' with
  the same options and seed: word w names column w of the texts.
  """
  config = _synthetic_config(c, None)
  return (synthetic.vocabulary(config, c.seed),
          synthetic.label_names(config, c.seed))


@registry.DATASETS.register('synthetic')
def load_synthetic(c: ml_collections.ConfigDict) -> types.MultiModalData:
  """Synthetic images [N, S, S, 3] uint8, texts [N, V], labels [N, L]."""
  return synthetic.generate(c.num_items, _synthetic_config(c, None), c.seed)


@registry.DATASETS.register('synthetic_features')
def load_synthetic_features(c: ml_collections.ConfigDict
                           ) -> types.MultiModalData:
  """Synthetic pre-extracted image features [N, D] float32, texts, labels."""
  return synthetic.generate(c.num_items, _synthetic_config(c, c.feature_dim),
                            c.seed)


@registry.DATASETS.register('synthetic_video')
def load_synthetic_video(c: ml_collections.ConfigDict) -> types.MultiModalData:
  """Synthetic clips [N, T, S, S, 3] uint8 (`c.num_frames`), texts, labels.

  Item i has the labels and text of item i of 'synthetic' with the same
  options and seed (see `synthetic_video`).
  """
  return synthetic_video.generate_clips(
      c.num_items, _synthetic_config(c, None),
      synthetic_video.VideoConfig(num_frames=c.num_frames), c.seed)


def synthetic_source_config(name: str = 'synthetic_source', *,
                            num_items: int = 4000, num_labels: int = 40,
                            image_size: int = 32, feature_dim: int = 512,
                            seed: int = 1, batch_size: int = 32
                           ) -> ml_collections.ConfigDict:
  """The `config.source_dataset` section of a method with a source domain
  (MHTN): single-label images ('synthetic_source') or image features
  ('synthetic_source_features', `feature_dim`) of their own `num_labels`
  classes (data/synthetic_source.py), `batch_size` of them per step, from
  their own world (`seed`, apart from the target's)."""
  c = ml_collections.ConfigDict()
  c.name = name
  c.seed = seed
  c.num_items = num_items
  c.num_labels = num_labels
  c.image_size = image_size
  c.feature_dim = feature_dim  # 'synthetic_source_features' only.
  c.batch_size = batch_size
  c.path = ''
  return c


@registry.DATASETS.register('synthetic_source')
def load_synthetic_source(c: ml_collections.ConfigDict) -> types.MultiModalData:
  """Source-domain images [N, S, S, 3] uint8, no texts, one-hot labels."""
  return synthetic_source.generate_source(
      c.num_items, synthetic_source.source_config(c.num_labels,
                                                  image_size=c.image_size),
      c.seed)


@registry.DATASETS.register('synthetic_source_features')
def load_synthetic_source_features(c: ml_collections.ConfigDict
                                  ) -> types.MultiModalData:
  """Source-domain image features [N, D] float32, no texts, one-hot labels."""
  return synthetic_source.generate_source(
      c.num_items, synthetic_source.source_config(
          c.num_labels, image_size=c.image_size, feature_dim=c.feature_dim),
      c.seed)
