"""A synthetic source domain: single-label images of their own label set.

MHTN (SPEC 2.6) transfers from a large single-modal labelled image set (the
paper's ImageNet) to the cross-modal target. This generator gives one with no
downloads, from the machinery of `data/synthetic.py` with a single-label label
model: one topic per class, each topic switching on its own class only, no
background labels and no topic mixing, so every item has exactly one label.

Images are drawn like the target's (same image size, or the same feature
dimension for the pre-extracted-feature variant), from their own world
(`seed`): the same visual primitives (shapes, colours, textures; or the same
kind of CNN-feature-like vectors) but their own classes, so what transfers is
the kind of evidence, not the classes. Items have no text: texts are [N, 0].
Deterministic: a function of (options, seed), item i of (options, seed, i).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from crossmodal_hash.data import synthetic
from crossmodal_hash.data import types


def source_config(num_labels: int, *, image_size: int = 32,
                  feature_dim: int | None = None
                 ) -> synthetic.SyntheticConfig:
  """The generator options of a single-label source set of `num_labels`
  classes (pixels of `image_size`, or features of `feature_dim`)."""
  return synthetic.SyntheticConfig(
      num_labels=num_labels, num_topics=num_labels, labels_per_topic=1,
      background_label_prob=0.0, topic_mix_prob=0.0, image_size=image_size,
      feature_dim=feature_dim, words_per_label=1, shared_words_per_label=0,
      vocab_size=num_labels + 1)


def generate_source(num_items: int, config: synthetic.SyntheticConfig,
                    seed: int) -> types.MultiModalData:
  """N single-label source items.

  Args:
    num_items: N >= 1.
    config: `source_config`'s options.
    seed: the source world's seed (choose one apart from the target's).

  Returns:
    `MultiModalData` with images [N, H, W, 3] uint8 (or [N, D] float32),
    texts [N, 0] float32 (none) and one-hot labels [N, C] uint8.
  """
  data = synthetic.generate(num_items, config, seed)
  if not np.all(data.labels.sum(axis=1) == 1):  # The label model's contract.
    raise AssertionError('synthetic source items must have one label each.')
  return dataclasses.replace(data, texts=np.zeros((num_items, 0), np.float32))
