"""DSMHN: loss terms against NumPy, the joint update, sharding, resume."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import method_batches
import dsmhn_synthetic
import dsmhn_video_synthetic
from crossmodal_hash import losses
from crossmodal_hash.methods import base
from crossmodal_hash.methods import dsmhn
from crossmodal_hash.trainers import alternating

BATCH = 32
DSMHN_TINY = ','.join([
    'bits=16', 'dataset.num_items=400', 'dataset.num_query=64',
    'dataset.num_train=128', 'dataset.num_labels=8', 'dataset.vocab_size=200',
    'dataset.image_size=16', 'dataset.feature_dim=48', 'model.text_hidden=64',
    'model.image_mlp_features=64', 'dsmhn.num_epochs=2',
    'train.batch_size=32', 'train.checkpoint_every_passes=1',
    'train.checkpoint_every_seconds=0',
    'train.progress=false', 'eval.batch_size=64', 'eval.plots=false',
])
# The feature variant: unit tests of the terms need no CNN.
FEATURES = ('dataset.name=synthetic_features',
            'model.image_encoder=feature_mlp')


def _config(*extra, features=True):
  extra = (FEATURES if features else ()) + extra
  return dsmhn_synthetic.get_config(','.join((DSMHN_TINY,) + extra))


def _method(config):
  return dsmhn.DSMHN(config, num_labels=config.dataset.num_labels,
                     text_dim=config.dataset.vocab_size)


def _np_softplus(x):
  return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def test_contrastive_against_numpy():
  rng = np.random.default_rng(0)
  a = np.tanh(rng.normal(size=(4, 6)))
  b = np.tanh(rng.normal(size=(7, 6)))
  sim = (rng.random((4, 7)) > 0.5).astype(np.float64)
  total = 0.0
  for i in range(4):
    for j in range(7):
      d = np.sum((a[i] - b[j])**2) / 6
      total += 0.5 * sim[i, j] * d + 0.5 * (1 - sim[i, j]) * max(0.0, 1.5 - d)
  np.testing.assert_allclose(losses.pairwise_contrastive(a, b, sim, 1.5),
                             total / 28, rtol=1e-5)


def test_contrastive_gradients_pull_similar_and_push_dissimilar():
  a = jnp.array([[0.5, 0.5]])
  b = jnp.array([[-0.5, 0.5]])
  pull = jax.grad(losses.pairwise_contrastive)(a, b, jnp.ones((1, 1)), 2.0)
  push = jax.grad(losses.pairwise_contrastive)(a, b, jnp.zeros((1, 1)), 2.0)
  assert float(pull[0, 0]) > 0 > float(push[0, 0])  # Descent moves a to b.
  far = jax.grad(losses.pairwise_contrastive)(a, -a, jnp.zeros((1, 1)), 0.5)
  np.testing.assert_array_equal(far, 0.0)  # Beyond the margin: no force.


def test_bit_balance_against_numpy():
  codes = np.tanh(np.random.default_rng(1).normal(size=(5, 3)))
  np.testing.assert_allclose(
      losses.bit_balance(codes),
      np.sum(codes.sum(0)**2) / (25 * 3), rtol=1e-6)


@pytest.mark.parametrize('pairwise', ['likelihood', 'contrastive'])
@pytest.mark.parametrize('classifier', ['shared', 'per_modality'])
def test_loss_terms_against_numpy(pairwise, classifier):
  config = _config(f'dsmhn.pairwise={pairwise}',
                   f'dsmhn.classifier={classifier}', 'dsmhn.margin=1.7')
  data = method_batches.train_arrays(config)
  method = _method(config)
  state = method.init(jax.random.PRNGKey(0), data)
  rng = np.random.default_rng(2)
  memory = {k: jnp.asarray(np.tanh(rng.normal(size=v.shape)), jnp.float32)
            for k, v in state.memory.items()}
  batch = method_batches.rows(data, 0, BATCH)
  terms, codes = method.loss_terms(state.params, batch, data, memory)
  h = {m: np.asarray(codes[m], np.float64) for m in ('img', 'txt')}
  labels = data['label'].astype(np.float64)
  s = (labels[:BATCH] @ labels.T > 0).astype(np.float64)

  def pair(x, stored):
    if pairwise == 'likelihood':
      theta = 0.5 * x @ stored.T
      return np.mean(_np_softplus(theta) - s * theta)
    d = ((x**2).sum(1)[:, None] + (stored**2).sum(1)[None] -
         2 * x @ stored.T) / x.shape[1]
    return np.mean(0.5 * s * d + 0.5 * (1 - s) * np.maximum(0, 1.7 - d))

  stored = {m: np.asarray(memory[f'{m}_code'], np.float64).copy()
            for m in ('img', 'txt')}
  for m in stored:
    stored[m][:BATCH] = h[m]
  np.testing.assert_allclose(
      terms['inter'],
      0.5 * (pair(h['img'], stored['txt']) + pair(h['txt'], stored['img'])),
      rtol=1e-4)
  # The classifier on the codes: logits = h W + b, multi-label BCE.
  expected_label = 0.0
  for m in ('img', 'txt'):
    p = state.params['cls']['shared' if classifier == 'shared' else m]
    logits = h[m] @ np.asarray(p['dense']['kernel'], np.float64) + np.asarray(
        p['dense']['bias'], np.float64)
    expected_label += 0.5 * np.mean(_np_softplus(logits) -
                                    labels[:BATCH] * logits)
  np.testing.assert_allclose(terms['label'], expected_label, rtol=1e-5)
  np.testing.assert_allclose(
      terms['quantization'],
      np.mean([np.mean((np.where(h[m] >= 0, 1, -1) - h[m])**2)
               for m in h]), rtol=1e-5)
  np.testing.assert_allclose(
      terms['balance'],
      np.mean([np.sum(h[m].sum(0)**2) / (BATCH**2 * 16) for m in h]),
      rtol=1e-5)
  assert set(state.params['cls']) == ({'shared'} if classifier == 'shared'
                                      else {'img', 'txt'})


def test_classifier_gradient_reaches_the_codes_and_the_streams():
  config = _config('dsmhn.alpha=0', 'dsmhn.gamma=0', 'dsmhn.eta=0')
  data = method_batches.train_arrays(config)
  method = _method(config)
  state = method.init(jax.random.PRNGKey(0), data)

  def label_term(params):
    batch = method_batches.rows(data, 0, BATCH)
    return method.loss_terms(params, batch, data, state.memory)[0]['label']

  grads = jax.grad(label_term)(state.params)
  for name in ('img', 'txt', 'cls'):
    assert float(sum(jnp.sum(jnp.abs(g))
                     for g in jax.tree.leaves(grads[name]))) > 0, name


def test_joint_update_steps_both_streams_and_refreshes_memories():
  config = _config()
  data = method_batches.train_arrays(config)
  method = _method(config)
  state = method.init(jax.random.PRNGKey(0), data)
  batch = method_batches.rows(data, 0, BATCH)
  _, codes = method.loss_terms(state.params, batch, data, state.memory)
  new, metrics = jax.jit(method.update_joint)(state, batch, data,
                                              base.Step(learning_rate=jnp.float32(1e-3)))
  chex.assert_tree_all_finite((new, metrics))
  assert set(metrics) == {'loss', 'inter', 'label', 'quantization',
                          'balance'}
  for name in ('img', 'txt', 'cls'):
    assert not jax.tree.all(jax.tree.map(np.array_equal, state.params[name],
                                         new.params[name])), name
  for m in ('img', 'txt'):
    np.testing.assert_allclose(new.memory[f'{m}_code'][:BATCH], codes[m],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(new.memory[f'{m}_code'][BATCH:], 0.0)


def test_bad_choices_are_rejected():
  with pytest.raises(ValueError, match='dsmhn.pairwise'):
    _method(_config('dsmhn.pairwise=hinge'))
  with pytest.raises(ValueError, match='dsmhn.classifier'):
    _method(_config('dsmhn.classifier=none'))


def test_sharded_steps_equal_unsharded():
  config = _config('dsmhn.pairwise=contrastive', features=False)
  # Adam turns a rounding difference in a near-zero gradient into a step of
  # up to lr, hence the small learning rate.
  one, eight = method_batches.on_one_and_all_devices(
      _method(config), dsmhn.JOINT, config,
      method_batches.train_arrays(config), 1e-4)
  chex.assert_trees_all_close(one, eight, rtol=2e-4, atol=2e-5)


def test_killed_and_resumed_run_ends_identically(tmp_path):
  config = _config()
  straight = alternating.train_and_evaluate(config, str(tmp_path / 'a'))
  assert alternating.train_and_evaluate(
      config, str(tmp_path / 'b'), stop_after_passes=1) == {
          'stopped_at_pass': 1}
  resumed = alternating.train_and_evaluate(config, str(tmp_path / 'b'))
  assert straight['map'] == resumed['map']
  codes_a = np.load(tmp_path / 'a' / 'eval' / 'codes.npz')
  codes_b = np.load(tmp_path / 'b' / 'eval' / 'codes.npz')
  for key in codes_a.files:
    np.testing.assert_array_equal(codes_a[key], codes_b[key])
  records = [json.loads(l) for l in open(tmp_path / 'b' / 'metrics.jsonl')]
  assert [(r['pass'], r['network']) for r in records] == [(0, 'joint'),
                                                          (1, 'joint')]


def test_video_text_run_end_to_end(tmp_path):
  """Clips of 4 frames through the 3-D encoder, on the 8-device mesh."""
  config = dsmhn_video_synthetic.get_config(','.join([
      DSMHN_TINY.replace('dataset.num_items=400', 'dataset.num_items=200'),
      'dataset.num_frames=4', 'model.video_conv_features=4;8',
      'model.video_temporal_pool=1;2', 'model.video_fc_features=32',
      'dsmhn.num_epochs=1']))
  results = alternating.train_and_evaluate(config, str(tmp_path))
  for direction in ('i2t', 't2i', 'i2i', 't2t'):
    assert 0.0 < results['map'][direction] <= 1.0
  codes = np.load(tmp_path / 'eval' / 'codes.npz')
  assert codes['image_query'].shape == (64, 16)
  assert codes['text_db'].shape == (200 - 64, 16)
  assert os.path.exists(tmp_path / 'checkpoints')


def test_synthetic_config_runs_one_step():
  metrics = method_batches.one_step_of_each_network(
      dsmhn_synthetic.get_config('model.text_hidden=64'))
  assert set(metrics) == {dsmhn.JOINT}
