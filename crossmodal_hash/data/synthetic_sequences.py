"""Sequence inputs for SCAHN's attention encoders, and adapters to sequences.

SCAHN (`models/attention.py`) reads each modality as a sequence. This module
gives the synthetic generator sequence forms, and turns the datasets' usual
forms into sequences:

* **Token sequences** (`token_sequences`, `generate`): item i of the synthetic
  generator (same labels as `synthetic.generate`'s item i) gets a text as an
  ordered sequence of word ids. Each present label emits max(1, Poisson(
  `tokens_per_label`)) tokens drawn from its own word list (its owned and
  shared words, weighted by the list's Zipf-like word probabilities); then
  Poisson(`noise_tokens`) noise tokens are drawn from the generator's noise
  distribution (general words, and label words as confusers); the tokens are
  shuffled (word order carries no label evidence, so an encoder cannot learn
  one) and cut to `max_tokens`. Unlike the bag of words, a token may repeat,
  and an item's sequence is never empty.
* **Images as patch sequences** (`image_patches`): [N, H, W, 3] images
  become [N, (H / p) (W / p), p p 3] float32 non-overlapping p x p patches in
  row-major patch order, uint8 pixels scaled to [-1, 1] (ViT-style, with no
  learned patch encoder beyond the encoder's linear input map; the synthetic
  objects span several patches, so a label's evidence is spread over regions
  that attention must combine). Works on NumPy and JAX
  arrays, so a method can patch a batch on device.
* **Bags of words as token sets** (`bow_tokens`): MIRFLICKR and NUS-WIDE tags
  are [N, V] 0/1 vectors with no order; the present words become tokens in
  increasing word order, padded. Their embeddings are learned (the encoder's
  token embedding); a bag of words has no pretrained text encoder here.
* **Feature vectors as one-token sequences** (`feature_tokens`): Wikipedia's
  128-d SIFT and 10-d LDA vectors, or the synthetic 512-d features, become
  [N, 1, D]. Attention over one token is the identity mix, so the encoder
  reduces to its input map, LayerNorms and MLPs with residuals; the
  comparison with the other methods stays on the same inputs.

Token ids: 0 is padding, word w (column w of the bag of words) is token w + 1
(`attention.PAD_TOKEN`).

Determinism: item i's tokens depend on (seed, i) alone, through
`np.random.SeedSequence(seed, spawn_key=(4, i))` (keys 0-3 are the image and
video generators'), and its labels are `synthetic.generate`'s.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from crossmodal_hash.data import synthetic
from crossmodal_hash.data import types

# pylint: disable=protected-access  # The generator's world and seeding.
_TOKEN_ITEM_KEY = 4
PAD_TOKEN = 0


@dataclasses.dataclass(frozen=True)
class SequenceConfig:
  """Options of the synthetic token sequences.

  Attributes:
    max_tokens: S, the sequence length (longer sequences are cut).
    tokens_per_label: mean tokens a present label emits (at least 1 each).
    noise_tokens: mean noise tokens per sequence.
  """
  max_tokens: int = 32
  tokens_per_label: float = 4.0
  noise_tokens: float = 4.0

  def __post_init__(self):
    if self.max_tokens < 1:
      raise ValueError(f'max_tokens must be >= 1; got {self.max_tokens}.')
    for name in ('tokens_per_label', 'noise_tokens'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0; got {getattr(self, name)}.')


@dataclasses.dataclass(frozen=True)
class SequenceData:
  """The synthetic items with their texts as token sequences as well.

  Attributes:
    data: `synthetic.generate`'s items (images or features, bags of words,
      labels).
    tokens: [N, S] int32 token ids in [0, V], 0 = padding, valid tokens first.
  """
  data: types.MultiModalData
  tokens: np.ndarray


def token_sequences(labels: np.ndarray, indices: np.ndarray,
                    config: synthetic.SyntheticConfig, seq: SequenceConfig,
                    seed: int) -> np.ndarray:
  """Token sequences of the synthetic items `indices` with labels `labels`.

  Args:
    labels: [n, L] multi-hot labels of the items (`synthetic.generate`'s).
    indices: [n] int item indices (each item's random stream).
    config: the generator's options (its word lists).
    seq: sequence options.
    seed: the dataset seed.

  Returns:
    [n, S] int32, S = seq.max_tokens.
  """
  labels = np.asarray(labels)
  if labels.shape != (len(indices), config.num_labels):
    raise ValueError(f'labels must be [{len(indices)}, {config.num_labels}], '
                     f'got {labels.shape}.')
  world = synthetic._build_world(config, int(seed))
  word_prob = world.label_word_prob.astype(np.float64)
  word_prob /= word_prob.sum(axis=1, keepdims=True)
  noise = -np.expm1(world.log_noise_keep.astype(np.float64))
  noise /= noise.sum()
  out = np.full((len(indices), seq.max_tokens), PAD_TOKEN, np.int32)
  for row, (i, item_labels) in enumerate(zip(indices, labels)):
    rng = np.random.default_rng(
        synthetic._seed_sequence(int(seed), _TOKEN_ITEM_KEY, int(i)))
    words = []
    for l in np.flatnonzero(item_labels):
      count = max(1, rng.poisson(seq.tokens_per_label))
      words.append(rng.choice(world.label_words[l], count, p=word_prob[l]))
    words.append(rng.choice(config.vocab_size, rng.poisson(seq.noise_tokens),
                            p=noise))
    words = rng.permutation(np.concatenate(words))[:seq.max_tokens]
    out[row, :len(words)] = words + 1
  return out


def generate(num_items: int, config: synthetic.SyntheticConfig,
             seq: SequenceConfig, seed: int) -> SequenceData:
  """`synthetic.generate(num_items, config, seed)` plus token sequences."""
  data = synthetic.generate(num_items, config, seed)
  tokens = token_sequences(data.labels, np.arange(num_items), config, seq,
                           seed)
  return SequenceData(data=data, tokens=tokens)


def image_patches(images, patch_size: int):
  """Images [N, H, W, C] -> patches [N, (H/p)(W/p), p*p*C] float32.

  Patch (r, c) is sequence position r * (W / p) + c; within a patch, values
  are in (row, column, channel) order. uint8 pixels are scaled to [-1, 1];
  float images (already normalised) keep their values. Accepts NumPy or JAX
  arrays and returns the same kind.
  """
  if images.ndim != 4:
    raise ValueError(f'images must be [N, H, W, C], got shape {images.shape}.')
  n, h, w, c = images.shape
  p = int(patch_size)
  if p < 1 or h % p or w % p:
    raise ValueError(f'patch_size {patch_size} must divide the image size '
                     f'{h} x {w}.')
  x = images.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(n, (h // p) * (w // p), p * p * c)
  if x.dtype == np.uint8:
    return x.astype('float32') / 127.5 - 1.0
  return x.astype('float32')


def bow_tokens(texts, max_tokens: int | None = None):
  """Bags of words [N, V] -> token sets [N, S] int32 (word w is token w + 1).

  Present words, in increasing word order, then padding (0). Accepts NumPy
  arrays, or JAX arrays inside jit (with a static `max_tokens`), and returns
  the same kind; both give the same tokens.

  Args:
    texts: [N, V] bag of words (non-zero = present).
    max_tokens: S; None = the most words of any item (at least 1, NumPy
      only), so no word is lost. With a smaller S an item keeps its S
      lowest-numbered words.

  Returns:
    [N, S] int32.
  """
  xp = np if isinstance(texts, np.ndarray) else jnp
  if texts.ndim != 2:
    raise ValueError(f'texts must be [N, V], got shape {texts.shape}.')
  present = texts != 0
  if max_tokens is None:
    if xp is not np:
      raise ValueError('bow_tokens needs max_tokens for a JAX array.')
    max_tokens = max(1, int(present.sum(axis=1).max(initial=0)))
  if max_tokens < 1:
    raise ValueError(f'max_tokens must be >= 1; got {max_tokens}.')
  vocab = texts.shape[1]
  word = xp.arange(vocab, dtype=xp.int32)
  # Present words sort first, each group by word index.
  order = xp.argsort(xp.where(present, word, vocab + word), axis=1)
  order = order[:, :max_tokens].astype(xp.int32)
  if order.shape[1] < max_tokens:  # Fewer words in the vocabulary than S.
    order = xp.pad(order, [(0, 0), (0, max_tokens - order.shape[1])])
    valid = xp.arange(max_tokens) < vocab
  else:
    valid = True
  keep = xp.take_along_axis(present, order, axis=1) & valid
  return xp.where(keep, order + 1, PAD_TOKEN).astype(xp.int32)


def feature_tokens(features):
  """Feature vectors [N, D] -> one-token sequences [N, 1, D] (NumPy or JAX)."""
  if features.ndim != 2:
    raise ValueError(f'features must be [N, D], got shape {features.shape}.')
  return features[:, None, :]
