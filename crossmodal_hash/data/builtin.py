"""Datasets that need no files: the synthetic generator, in two variants."""
from __future__ import annotations

import ml_collections

from crossmodal_hash.data import registry
from crossmodal_hash.data import synthetic
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
