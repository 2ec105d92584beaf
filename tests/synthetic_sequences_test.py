"""Tests of crossmodal_hash.data.synthetic_sequences."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash.data import synthetic
from crossmodal_hash.data import synthetic_sequences as seqs
from crossmodal_hash.models import attention

_CONFIG = synthetic.SyntheticConfig(num_labels=6, vocab_size=200,
                                    image_size=16)
_SEQ = seqs.SequenceConfig(max_tokens=64)


@pytest.fixture(scope='module', name='items')
def _items():
  return seqs.generate(40, _CONFIG, _SEQ, seed=3)


def test_items_match_the_generator_and_each_other(items):
  base = synthetic.generate(40, _CONFIG, 3)
  np.testing.assert_array_equal(items.data.labels, base.labels)
  np.testing.assert_array_equal(items.data.images, base.images)
  assert items.tokens.shape == (40, 64) and items.tokens.dtype == np.int32
  # Item i depends on (seed, i) alone.
  idx = np.array([7, 2, 39])
  np.testing.assert_array_equal(
      seqs.token_sequences(base.labels[idx], idx, _CONFIG, _SEQ, 3),
      items.tokens[idx])
  other_seed = seqs.generate(40, _CONFIG, _SEQ, seed=4)
  assert not np.array_equal(other_seed.tokens, items.tokens)


def test_tokens_are_valid_first_then_padding(items):
  t = items.tokens
  assert t.min() >= 0 and t.max() <= _CONFIG.vocab_size
  valid = t != seqs.PAD_TOKEN
  assert valid[:, 0].all()  # Never empty.
  # No token after the first padding position.
  assert (np.cumsum(~valid, axis=1)[valid] == 0).all()
  assert seqs.PAD_TOKEN == attention.PAD_TOKEN


def test_every_present_label_emits_its_own_words(items):
  world = synthetic._build_world(_CONFIG, 3)  # pylint: disable=protected-access
  label_tokens = 0
  total = 0
  for tokens, labels in zip(items.tokens, items.data.labels):
    words = tokens[tokens > 0] - 1
    total += len(words)
    present_words = set()
    for l in np.flatnonzero(labels):
      own = set(world.label_words[l].tolist())
      assert own & set(words.tolist()), 'a present label emitted no token'
      present_words |= own
    label_tokens += np.isin(words, list(present_words)).sum()
  # With the defaults (4 tokens per label, 4 noise tokens) most tokens are
  # label evidence, but not all.
  assert 0.6 < label_tokens / total < 0.98


def test_sequences_are_cut_to_max_tokens():
  short = seqs.generate(20, _CONFIG, seqs.SequenceConfig(max_tokens=3), 3)
  assert short.tokens.shape == (20, 3)
  assert (short.tokens > 0).all()  # Every item has more than 3 tokens here.


def test_image_patches_layout_numpy_and_jax():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 8, 12, 3), dtype=np.uint8)
  got = seqs.image_patches(images, 4)
  assert got.shape == (2, 6, 48) and got.dtype == np.float32
  for r in range(2):
    for c in range(3):
      want = images[:, 4 * r:4 * r + 4, 4 * c:4 * c + 4].reshape(2, -1)
      np.testing.assert_allclose(got[:, 3 * r + c], want / 127.5 - 1.0,
                                 atol=1e-6)
  np.testing.assert_allclose(seqs.image_patches(jnp.asarray(images), 4), got,
                             atol=1e-6)
  assert got.min() >= -1.0 and got.max() <= 1.0
  with pytest.raises(ValueError, match='must divide the image size 8 x 12'):
    seqs.image_patches(images, 5)
  with pytest.raises(ValueError, match=r'\[N, H, W, C\]'):
    seqs.image_patches(images[..., 0], 4)
  # Float images are already normalised: only rearranged.
  floats = images.astype(np.float32) / 255.0
  np.testing.assert_allclose(seqs.image_patches(floats, 4),
                             (got + 1.0) * 127.5 / 255.0, atol=1e-6)


def test_bow_tokens():
  texts = np.array([[0, 1, 0, 1, 1],
                    [0, 0, 0, 0, 0],
                    [1, 0, 0, 0, 0]], np.uint8)
  np.testing.assert_array_equal(seqs.bow_tokens(texts),
                                [[2, 4, 5], [0, 0, 0], [1, 0, 0]])
  np.testing.assert_array_equal(seqs.bow_tokens(texts, max_tokens=2),
                                [[2, 4], [0, 0], [1, 0]])
  np.testing.assert_array_equal(seqs.bow_tokens(np.zeros((2, 4))),
                                [[0], [0]])
  with pytest.raises(ValueError, match=r'\[N, V\]'):
    seqs.bow_tokens(np.zeros(4))
  # More positions than words in the vocabulary.
  np.testing.assert_array_equal(seqs.bow_tokens(texts[:, :2], max_tokens=3),
                                [[2, 0, 0], [0, 0, 0], [1, 0, 0]])


@pytest.mark.parametrize('max_tokens', [3, 8, 40])
def test_bow_tokens_on_device_equals_numpy(max_tokens):
  texts = (np.random.default_rng(0).random((16, 30)) < 0.2).astype(np.uint8)
  texts[3] = 0
  want = seqs.bow_tokens(texts, max_tokens)
  got = jax.jit(seqs.bow_tokens, static_argnums=1)(jnp.asarray(texts),
                                                   max_tokens)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match='needs max_tokens'):
    seqs.bow_tokens(jnp.asarray(texts))


def test_feature_tokens():
  x = np.arange(6, dtype=np.float32).reshape(2, 3)
  np.testing.assert_array_equal(seqs.feature_tokens(x), x[:, None, :])
  assert seqs.feature_tokens(jnp.asarray(x)).shape == (2, 1, 3)
  with pytest.raises(ValueError, match=r'\[N, D\]'):
    seqs.feature_tokens(x[0])


def test_bad_options_are_explained():
  with pytest.raises(ValueError, match='max_tokens'):
    seqs.SequenceConfig(max_tokens=0)
  with pytest.raises(ValueError, match='noise_tokens'):
    seqs.SequenceConfig(noise_tokens=-1)
  with pytest.raises(ValueError, match=r'labels must be \[2, 6\]'):
    seqs.token_sequences(np.zeros((2, 5)), np.arange(2), _CONFIG, _SEQ, 0)
