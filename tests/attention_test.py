"""Tests of models/attention.py: shapes, padding, dropout, traces."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash.models import attention

_SMALL = dict(width=16, num_layers=2, num_heads=4, mlp_dim=32)


def _jit(model):
  """(init, apply) of `model`, jitted: faster than Flax's eager ops."""
  return (jax.jit(model.init),
          jax.jit(model.apply, static_argnames='train'))


def _vector_inputs(batch=3, length=5, dim=7, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, length, dim))


def test_vector_encoder_shapes_and_unit_norm():
  init, apply = _jit(attention.SequenceEncoder(**_SMALL))
  x = _vector_inputs()
  variables = init(jax.random.key(0), x)
  params = variables['params']
  chex.assert_shape(params['input_map']['kernel'], (7, 16))
  assert set(params) == {'input_map', 'layer_0', 'layer_1'}
  out = apply(variables, x)
  chex.assert_shape(out, (3, 16))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(jnp.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_token_encoder_shapes_and_pad_id():
  init, apply = _jit(attention.SequenceEncoder(vocab_size=20,
                                               max_positions=8, **_SMALL))
  tokens = jnp.array([[3, 4, 5, 0, 0], [1, 20, 0, 0, 0]])
  variables = init(jax.random.key(0), tokens)
  chex.assert_shape([variables['params']['embed']['embedding'],
                     variables['params']['position']], [(21, 16), (8, 16)])
  out = apply(variables, tokens)
  chex.assert_shape(out, (2, 16))
  # The default mask (tokens != 0) equals the explicit one.
  explicit = apply(variables, tokens, tokens > 0)
  np.testing.assert_array_equal(out, explicit)


@pytest.mark.parametrize('vocab', [None, 30])
def test_padding_changes_nothing(vocab):
  """Valid positions give the same output whatever the padding holds or adds."""
  init, apply = _jit(attention.SequenceEncoder(vocab_size=vocab, **_SMALL))
  length, valid = 6, np.array([6, 3, 1])
  if vocab:
    x = jax.random.randint(jax.random.key(1), (3, length), 1, vocab + 1)
  else:
    x = _vector_inputs(length=length, seed=1)
  mask = jnp.arange(length)[None, :] < valid[:, None]
  variables = init(jax.random.key(0), x, mask)
  base = apply(variables, x, mask)
  # Other values in the padded positions.
  if vocab:
    noise = jax.random.randint(jax.random.key(2), x.shape, 1, vocab + 1)
  else:
    noise = 100.0 * _vector_inputs(length=length, seed=2)
  refilled = jnp.where(mask[..., None] if x.ndim == 3 else mask, x, noise)
  np.testing.assert_allclose(apply(variables, refilled, mask), base,
                             rtol=1e-5, atol=1e-6)
  # Four more padded positions.
  pad = [(0, 0), (0, 4)] + [(0, 0)] * (x.ndim - 2)
  longer = jnp.pad(x, pad, constant_values=1 if vocab else 7.0)
  longer_mask = jnp.pad(mask, [(0, 0), (0, 4)])
  np.testing.assert_allclose(apply(variables, longer, longer_mask), base,
                             rtol=1e-5, atol=1e-6)
  # Each row alone, cut to its own length.
  for i, n in enumerate(valid):
    alone = apply(variables, x[i:i + 1, :n])
    np.testing.assert_allclose(alone[0], base[i], rtol=1e-5, atol=1e-6)


def test_empty_sequence_gives_zero():
  init, apply = _jit(attention.SequenceEncoder(vocab_size=5, **_SMALL))
  tokens = jnp.array([[0, 0, 0], [1, 2, 0]])
  out = apply(init(jax.random.key(0), tokens), tokens)
  chex.assert_tree_all_finite(out)
  np.testing.assert_array_equal(out[0], 0.0)


def test_one_token_sequences_of_feature_vectors():
  init, apply = _jit(attention.SequenceEncoder(**_SMALL))
  feats = jax.random.normal(jax.random.key(3), (4, 10))
  out = apply(init(jax.random.key(0), feats[:, None]), feats[:, None])
  chex.assert_shape(out, (4, 16))


def test_dropout_only_in_training():
  init, apply = _jit(attention.SequenceEncoder(**_SMALL))
  x = _vector_inputs()
  variables = init(jax.random.key(0), x)
  eval_a = apply(variables, x, train=False)
  eval_b = apply(variables, x)
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a = apply(variables, x, train=True,
                  rngs={'dropout': jax.random.key(1)})
  train_b = apply(variables, x, train=True,
                  rngs={'dropout': jax.random.key(2)})
  assert not np.allclose(train_a, train_b)
  assert not np.allclose(train_a, eval_a)


def test_jitted_apply_traces_once():
  model = attention.SequenceEncoder(**_SMALL)
  x = _vector_inputs()
  variables = _jit(model)[0](jax.random.key(0), x)
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def encode(variables, x, mask, key):
    return model.apply(variables, x, mask, train=True, rngs={'dropout': key})

  for seed in range(3):
    mask = jnp.arange(5)[None, :] < jnp.array([[5], [seed + 1], [2]])
    chex.assert_shape(encode(variables, x + seed, mask, jax.random.key(seed)),
                      (3, 16))


def test_bad_shapes_are_explained():
  with pytest.raises(ValueError, match='multiple of num_heads'):
    attention.SequenceEncoder(width=10, num_heads=4).init(
        jax.random.key(0), _vector_inputs())
  with pytest.raises(ValueError, match=r'\[B, S\] token ids'):
    attention.SequenceEncoder(vocab_size=5, **_SMALL).init(
        jax.random.key(0), _vector_inputs())
  with pytest.raises(ValueError, match='max_positions=4'):
    attention.SequenceEncoder(max_positions=4, **_SMALL).init(
        jax.random.key(0), _vector_inputs())


def test_masked_mean_and_l2_normalize():
  x = jnp.array([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])
  mask = jnp.array([[True, True, False]])
  np.testing.assert_allclose(attention.masked_mean(x, mask), [[2.0, 2.0]])
  np.testing.assert_allclose(attention.l2_normalize(jnp.array([[3.0, 4.0]])),
                             [[0.6, 0.8]], rtol=1e-6)
  np.testing.assert_array_equal(attention.l2_normalize(jnp.zeros((1, 2))), 0.0)
