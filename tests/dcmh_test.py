"""DCMH: loss terms against the official code in NumPy, updates, resume."""
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest
import method_batches
import dcmh_mirflickr
import dcmh_synthetic
from crossmodal_hash import losses
from crossmodal_hash.methods import base
from crossmodal_hash.methods import dcmh
from crossmodal_hash.trainers import alternating

BATCH = 32
# A few seconds per run on 2 CPU cores; batch 32 splits over 8 devices.
DCMH_TINY = ','.join([
    'bits=16', 'dataset.num_items=400', 'dataset.num_query=64',
    'dataset.num_train=128', 'dataset.num_labels=8', 'dataset.vocab_size=200',
    'dataset.image_size=16', 'dataset.feature_dim=48', 'model.text_hidden=64',
    'model.image_mlp_features=64', 'dcmh.num_epochs=2', 'train.batch_size=32',
    'train.checkpoint_every_passes=1', 'train.checkpoint_every_seconds=0',
    'train.progress=false',
    'eval.batch_size=64', 'eval.plots=false',
])


FEATURES = ('dataset.name=synthetic_features',
            'model.image_encoder=feature_mlp')


def _config(*extra):
  return dcmh_synthetic.get_config(','.join((DCMH_TINY,) + extra))


def _method(config):
  return dcmh.DCMH(config, num_labels=config.dataset.num_labels,
                   text_dim=config.dataset.vocab_size)


def _official_loss(cur, other, b_batch, mine_others_sum, s, gamma, eta):
  """The official TF code's loss_x in float64: (sums) / (batch * num_train)."""
  theta = 0.5 * cur @ other.T
  logloss = -np.sum(s * theta - np.log1p(np.exp(theta)))
  quantization = np.sum((b_batch - cur)**2)
  balance = np.sum((cur.sum(0) + mine_others_sum)**2)
  total = logloss + gamma * quantization + eta * balance
  return total / (cur.shape[0] * other.shape[0])


@pytest.mark.parametrize('modality', ['img', 'txt'])
def test_loss_equals_the_official_code(modality):
  rng = np.random.default_rng(0)
  t, b, k, num_labels = 40, 8, 6, 5
  memory = {'F': rng.normal(size=(t, k)), 'G': rng.normal(size=(t, k))}
  memory['B'] = np.where(memory['F'] + memory['G'] >= 0, 1.0, -1.0)
  labels = rng.integers(0, 2, (t, num_labels))
  index = rng.permutation(t)[:b]
  out = rng.normal(size=(b, k))
  s = (labels[index] @ labels.T > 0).astype(np.float64)
  method = _method(_config('dcmh.gamma=0.7', 'dcmh.eta=1.3'))
  terms = method.loss_terms(jnp.asarray(out, jnp.float32), modality,
                            jnp.asarray(index), jnp.asarray(s, jnp.float32),
                            {n: jnp.asarray(v, jnp.float32)
                             for n, v in memory.items()})
  mine, other = ('F', 'G') if modality == 'img' else ('G', 'F')
  others_sum = np.delete(memory[mine], index, axis=0).sum(0)
  expected = _official_loss(out, memory[other], memory['B'][index],
                            others_sum, s, 0.7, 1.3)
  np.testing.assert_allclose(
      terms['pairwise'] + 0.7 * terms['quantization'] +
      1.3 * terms['balance'], expected, rtol=1e-5)
  # The pairwise term alone is the official logloss / (B T).
  theta = 0.5 * out @ memory[other].T
  np.testing.assert_allclose(
      terms['pairwise'],
      np.sum(np.log1p(np.exp(theta)) - s * theta) / (b * t), rtol=1e-5)


def test_gradient_equals_the_matlab_code():
  """d loss / d F_batch is process_DCMH.m's dJdF, divided by B * T."""
  rng = np.random.default_rng(1)
  t, b, k = 30, 6, 4
  memory = {n: rng.normal(size=(t, k)).astype(np.float32) for n in 'FG'}
  memory['B'] = np.sign(memory['F'] + memory['G'])
  index = np.arange(3, 3 + b)
  s = (rng.random((b, t)) > 0.5).astype(np.float32)
  out = rng.normal(size=(b, k)).astype(np.float32)
  method = _method(_config())

  def total(o):
    terms = method.loss_terms(o, 'img', jnp.asarray(index), jnp.asarray(s),
                              {n: jnp.asarray(v) for n, v in memory.items()})
    return terms['pairwise'] + terms['quantization'] + terms['balance']

  grad = jax.grad(total)(jnp.asarray(out))
  f = memory['F'].astype(np.float64).copy()
  f[index] = out
  g = memory['G'].astype(np.float64)
  sigma = 1.0 / (1.0 + np.exp(-0.5 * out @ g.T))
  expected = (0.5 * (sigma - s) @ g + 2 * (out - memory['B'][index]) +
              2 * f.sum(0)[None]) / (b * t)
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


def test_bit_balance_all_items_is_zero_for_balanced_codes():
  codes = jnp.array([[1.0, -1.0], [-1.0, 1.0]])
  stored = jnp.array([[5.0, 5.0], [1.0, 1.0], [-1.0, -1.0], [9.0, 9.0]])
  # Rows 0 and 3 are replaced by the batch: the columns then sum to zero.
  assert float(losses.bit_balance_all_items(codes, stored,
                                            jnp.array([0, 3]))) == 0.0
  value = losses.bit_balance_all_items(codes, stored, jnp.array([0, 1]))
  np.testing.assert_allclose(value, (8.0**2 + 8.0**2) / (16 * 2))


def test_quantization_to_target_has_no_gradient_to_the_target():
  codes = jnp.array([[0.5, -2.0]])
  target = jnp.array([[1.0, -1.0]])
  np.testing.assert_allclose(losses.quantization_to_target(codes, target),
                             (0.25 + 1.0) / 2)
  grad = jax.grad(losses.quantization_to_target, argnums=1)(codes, target)
  np.testing.assert_array_equal(grad, 0.0)


def test_official_schedule_and_linear_learning_rate():
  method = dcmh.DCMH(dcmh_mirflickr.get_config(), num_labels=24, text_dim=1386)
  first, last = method.schedule(0), method.schedule(499)
  assert [(p.network, p.passes, p.begin) for p in first] == [
      ('img', 1, 'binary_codes'), ('txt', 1, None)]
  np.testing.assert_allclose(first[0].learning_rate, 10**-1.5, rtol=1e-12)
  np.testing.assert_allclose(last[1].learning_rate, 1e-6, rtol=1e-12)
  np.testing.assert_allclose(
      method.schedule(100)[0].learning_rate,
      10**-1.5 + (1e-6 - 10**-1.5) * 100 / 499, rtol=1e-12)


@pytest.mark.parametrize('network', ['img', 'txt'])
def test_update_changes_its_network_and_memory_rows(network):
  config = _config(*FEATURES)
  data = method_batches.train_arrays(config)
  method = _method(config)
  state = method.init(jax.random.PRNGKey(0), data)
  chex.assert_shape([state.memory['F'], state.memory['G'],
                     state.memory['B']], (128, 16))
  batch = method_batches.rows(data, 32, BATCH)
  out = method.nets[network].apply({'params': state.params[network]},
                                   batch['image' if network == 'img' else
                                         'text'].astype(jnp.float32))
  new, metrics = jax.jit(method.updates[network])(state, batch, data,
                                                  base.Step(learning_rate=jnp.float32(0.1)))
  chex.assert_tree_all_finite((new, metrics))
  assert int(new.step) == 1
  for name in ('img', 'txt'):
    same = jax.tree.all(jax.tree.map(np.array_equal, state.params[name],
                                     new.params[name]))
    assert same == (name != network), name
  mine = 'F' if network == 'img' else 'G'
  np.testing.assert_allclose(new.memory[mine][32:64], out, rtol=1e-5,
                             atol=1e-6)
  changed = np.any(new.memory[mine] != state.memory[mine], axis=1)
  np.testing.assert_array_equal(np.nonzero(changed)[0], np.arange(32, 64))
  for name in ({'F', 'G', 'B'} - {mine}):
    np.testing.assert_array_equal(new.memory[name], state.memory[name])


def test_refresh_binary_codes():
  config = _config(*FEATURES)
  data = method_batches.train_arrays(config)
  method = _method(config)
  state = method.init(jax.random.PRNGKey(0), data)
  memory = dict(state.memory, F=state.memory['F'] + 3.0)
  new = method.refresh_binary_codes(state.replace(memory=memory), data)
  np.testing.assert_array_equal(
      new.memory['B'], np.where(memory['F'] + memory['G'] >= 0, 1.0, -1.0))


def test_sharded_steps_equal_unsharded():
  config = _config()
  one, eight = method_batches.on_one_and_all_devices(
      _method(config), 'img', config, method_batches.train_arrays(config),
      0.3)
  chex.assert_trees_all_close(one, eight, rtol=2e-4, atol=2e-5)



def test_killed_and_resumed_run_ends_identically(tmp_path):
  """The B refresh of epoch 1 runs again when its pass is redone on resume."""
  config = _config('train.checkpoint_every_passes=2', *FEATURES)
  straight = alternating.train_and_evaluate(config, str(tmp_path / 'a'))
  # 4 passes (img, txt, img, txt): killed after 3, the checkpoint after
  # pass 2 survives and pass 2 (epoch 1's image pass, B refresh first) is
  # redone.
  assert alternating.train_and_evaluate(
      config, str(tmp_path / 'b'), stop_after_passes=3) == {
          'stopped_at_pass': 3}
  resumed = alternating.train_and_evaluate(config, str(tmp_path / 'b'))
  step_a, state_a = conftest.latest_checkpoint(str(tmp_path / 'a'))
  step_b, state_b = conftest.latest_checkpoint(str(tmp_path / 'b'))
  assert step_a == step_b == 4
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)
  assert straight['map'] == resumed['map']
  for direction in ('i2t', 't2i'):
    assert 0.0 < resumed['map'][direction] <= 1.0
  records = [json.loads(l) for l in open(tmp_path / 'b' / 'metrics.jsonl')]
  # The record of the lost pass 2 was cut on resume: each pass once.
  assert [(r['pass'], r['network']) for r in records] == [
      (0, 'img'), (1, 'txt'), (2, 'img'), (3, 'txt')]
  assert records[0]['learning_rate'] > records[-1]['learning_rate']


def test_feature_variant_of_the_synthetic_config_runs_one_step():
  # The pixel variant runs in test_sharded_steps_equal_unsharded.
  config = dcmh_synthetic.get_config(','.join(FEATURES + (
      'model.text_hidden=64', 'model.image_mlp_features=32')))
  metrics = method_batches.one_step_of_each_network(config, feature_dim=48)
  assert set(metrics) == {'img', 'txt'}


def test_mirflickr_config_runs_one_step_of_cnnf_224():
  config = dcmh_mirflickr.get_config('bits=64,model.text_hidden=64')
  assert config.model.image_encoder == 'cnnf'
  # One device: the 8-device path runs in the other tests; here CNN-F's
  # compilation for eight would dominate the suite's time.
  metrics = method_batches.one_step_of_each_network(
      config, image_size=224, devices=jax.devices()[:1])
  assert np.isfinite(metrics['img']['loss'])
