"""Datasets that need no files: the synthetic generator, in two variants."""
from __future__ import annotations

import ml_collections

from crossmodal_hash.data import registry
from crossmodal_hash.data import synthetic
from crossmodal_hash.data import types


def _synthetic_config(c: ml_collections.ConfigDict,
                      feature_dim: int | None) -> synthetic.SyntheticConfig:
  return synthetic.SyntheticConfig(num_labels=c.num_labels,
                                   vocab_size=c.vocab_size,
                                   image_size=c.image_size,
                                   feature_dim=feature_dim)


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
