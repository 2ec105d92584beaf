"""Tests of methods/scahn.py: its step, schedules, sharding, traces, resume."""
from __future__ import annotations


import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import conftest

from crossmodal_hash import contrastive
from crossmodal_hash import encoding
from crossmodal_hash import run_artifacts
from crossmodal_hash import sharding
from crossmodal_hash.data import synthetic
from crossmodal_hash.evaluation import report
from crossmodal_hash.methods import scahn
from crossmodal_hash.retrieval import index as index_lib
from crossmodal_hash.trainers import per_step

BATCH = 32


def _config(**scahn_overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.bits = 16
  config.scahn = scahn.default_config()
  config.scahn.queue_size = 64
  config.scahn.warmup_steps = 2
  config.scahn.lr = 1e-3
  config.scahn.num_steps = 12
  config.scahn.update(scahn_overrides)
  config.model = scahn.default_model_config()
  config.model.update(dict(width=32, mlp_dim=64, num_layers=1, gcn_input_dim=16,
                           gcn_hidden=16, discriminator_hidden=(32,),
                           patch_size=8, max_text_tokens=16))
  config.mesh = ml_collections.ConfigDict({'data': -1, 'model': 1})
  config.train = ml_collections.ConfigDict({'batch_size': BATCH})
  return config


@pytest.fixture(scope='module', name='data')
def _data():
  d = synthetic.generate(BATCH * 2, synthetic.SyntheticConfig(
      num_labels=8, vocab_size=200, image_size=16), seed=0)
  return {'image': d.images, 'text': d.texts, 'label': d.labels}


@pytest.fixture(scope='module', name='paco')
def _paco(data):
  """SCAHN with the default (PaCo) loss at its initial state, shared."""
  method = _method(_config(), data)
  return method, method.init(jax.random.PRNGKey(0), data)


def _method(config, data):
  return scahn.SCAHN(config, num_labels=data['label'].shape[1],
                     text_dim=data['text'].shape[1])


def _train_step(method, state, batch):
  """Both updates, as the per-step trainer runs them."""
  return per_step.run_updates(method, state, batch, {}, state.step // 2)


def _batch(data, i=0):
  return {k: jnp.asarray(v[i * BATCH:(i + 1) * BATCH]) for k, v in data.items()}


def test_schedule_is_the_codes_dynamic_lr():
  sched = scahn.warmup_exponential_decay(4e-5, 0.9, 3120, 1000)
  for t in (0, 1, 500, 999, 1000, 3119, 3120, 7000):
    want = 4e-5 * np.exp(-0.9 * (t // 3120)) * min(t, 1000) / 1000
    np.testing.assert_allclose(float(sched(t)), want, rtol=1e-6)


def test_init_state_holds_params_graph_and_queues(paco):
  _, state = paco
  assert set(state.params) == {'gen', 'dis'}
  assert set(state.params['gen']) == {'encoders_img', 'encoders_txt',
                                      'hash_layers_img', 'hash_layers_txt',
                                      'paco', 'gcn'}
  assert 'node_embedding' in state.params['gen']['gcn']
  chex.assert_shape(state.memory['label_graph'], (8, 8))
  for d in contrastive.DIRECTIONS:
    chex.assert_shape([state.memory[f'queue_{d}_codes'],
                       state.memory[f'queue_{d}_labels']], [(64, 16), (64, 8)])
  dis = state.params['dis']['nets_img']
  chex.assert_shape([dis['dense_0']['kernel'], dis['logit']['kernel']],
                    [(16, 32), (32, 1)])


@pytest.mark.parametrize('loss', ['paco', 'triplet'])
def test_steps_learn_fill_the_queues_and_trace_once(data, paco, loss):
  if loss == 'paco':
    method, state = paco
  else:
    method = _method(_config(contrastive_loss=loss), data)
    state = method.init(jax.random.PRNGKey(0), data)
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(
      lambda state, batch: _train_step(method, state, batch), n=1))
  losses = []
  for i in range(12):
    previous = state
    state, metrics = step(state, _batch(data, i % 2))
    chex.assert_tree_all_finite((state.params, metrics))
    losses.append(float(metrics['generator/loss']))
  assert np.mean(losses[-3:]) < np.mean(losses[1:4])
  assert int(state.step) == 24  # A generator and a discriminator update each.
  if loss == 'paco':
    # 12 batches of 32 into 64 rows: the pointer went round 6 times, and the
    # newest rows of each queue hold the last batch's key codes (from the
    # step's forward pass, before its update) and labels.
    key = per_step.update_keys(previous.rng, previous.step // 2, 2)[0]
    _, (_, _, codes) = method.generator_loss(
        previous.params['gen'], previous, _batch(data, 1), key)
    # The discriminator step read the generator step's codes.
    for m in ('img', 'txt'):
      np.testing.assert_allclose(state.memory[f'step_codes_{m}'], codes[m],
                                 rtol=1e-4, atol=1e-6)
    for d, (_, key_modality) in contrastive.DIRECTIONS.items():
      assert int(state.memory[f'queue_{d}_pointer']) == 0
      np.testing.assert_allclose(state.memory[f'queue_{d}_codes'][32:],
                                 codes[key_modality], rtol=1e-4, atol=1e-6)
      np.testing.assert_array_equal(state.memory[f'queue_{d}_labels'][32:],
                                    data['label'][32:64])
      np.testing.assert_array_equal(state.memory[f'queue_{d}_codes'][:32],
                                    previous.memory[f'queue_{d}_codes'][:32])


def test_encode_gives_int8_codes(data, paco):
  method, state = paco
  for modality, field in (('img', 'image'), ('txt', 'text')):
    codes = jax.jit(method.encode, static_argnums=1)(
        state.params, modality, jnp.asarray(data[field][:5]))
    assert codes.dtype == jnp.int8 and codes.shape == (5, 16)
    assert set(np.unique(codes)) <= {-1, 1}


def test_generator_clipping_and_gcn_rate():
  hp = _config(grad_clip=1.0, warmup_steps=0, lr=1e-3, gcn_lr=0.5).scahn
  opt = scahn.generator_optimizer(hp)
  params = {'gcn': {'w': jnp.zeros(2)}, 'paco': {'w': jnp.zeros(2)}}
  grads = {'gcn': {'w': jnp.array([30.0, 40.0])},
           'paco': {'w': jnp.array([0.0, 0.0])}}
  updates, _ = opt.update(grads, opt.init(params), params)
  # Adam's first step is -lr * sign(g) whatever the clipping's scale.
  np.testing.assert_allclose(updates['gcn']['w'], [-0.5, -0.5], rtol=1e-5)
  np.testing.assert_allclose(updates['paco']['w'], [0.0, 0.0])
  clipped, _ = optax.clip_by_global_norm(1.0).update(grads, None)
  np.testing.assert_allclose(clipped['gcn']['w'], [0.6, 0.8], rtol=1e-6)


def test_discriminator_weight_decay_is_added_to_gradients():
  hp = _config(warmup_steps=0, dis_lr=1.0, dis_weight_decay=0.5).scahn
  opt = scahn.discriminator_optimizer(hp)
  params = {'w': jnp.array([2.0, -4.0])}
  updates, _ = opt.update({'w': jnp.zeros(2)}, opt.init(params), params)
  # Gradient 0 + 0.5 w; Adam's first step is -lr * sign.
  np.testing.assert_allclose(updates['w'], [-1.0, 1.0], rtol=1e-5)


def test_sharded_step_equals_unsharded(data, paco):
  method, state = paco
  batch = _batch(data)
  mesh = sharding.make_mesh(_config().mesh)
  assert len(jax.devices()) == 8
  results = []
  for shard in (False, True):
    s, b = state, batch
    if shard:
      s = jax.device_put(state, sharding.replicated(mesh))
      b = jax.device_put(batch, sharding.batch_sharded(mesh))
    step = jax.jit(lambda state, batch: _train_step(method, state, batch))
    for _ in range(2):
      s, metrics = step(s, b)
    results.append(jax.device_get((s, metrics)))
  # An attention key bias shifts every logit of a query's softmax by the same
  # amount: its gradient is zero up to rounding, which differs between the
  # two reductions and which Adam scales to full-size steps. Everything else
  # must agree.
  for result in results:
    for m in ('img', 'txt'):
      attention = result[0].params['gen'][f'encoders_{m}']['layer_0'][
          'attention']
      np.testing.assert_allclose(attention['key']['bias'],
                                 state.params['gen'][f'encoders_{m}'][
                                     'layer_0']['attention']['key']['bias'],
                                 atol=1e-3)
      attention['key']['bias'] = None
  chex.assert_trees_all_close(results[0], results[1], rtol=2e-4, atol=2e-5)


def test_bad_choices_are_explained(data):
  with pytest.raises(ValueError, match='config.scahn.contrastive_loss'):
    _method(_config(contrastive_loss='infonce'), data)
  with pytest.raises(ValueError, match='config.scahn.directions'):
    _method(_config(directions=('i2t', 'x2y')), data)
  config = _config()
  config.model.text_input = 'tokens'
  with pytest.raises(ValueError, match='text_vocab_size'):
    _method(config, data)


def test_input_forms(data):
  config = _config()
  config.model.update(dict(image_input='features', text_input='tokens',
                           text_vocab_size=50))
  method = _method(config, data)
  x, mask = method.sequence('img', jnp.ones((3, 7)))
  assert x.shape == (3, 1, 7) and mask is None
  tokens = jnp.array([[4, 9, 0], [0, 0, 0]])
  x, mask = method.sequence('txt', tokens)
  np.testing.assert_array_equal(x, tokens)
  np.testing.assert_array_equal(mask, tokens > 0)
  config.model.update(dict(image_input='regions', text_input='features'))
  method = _method(config, data)
  assert method.sequence('img', jnp.ones((3, 5, 7)))[0].shape == (3, 5, 7)
  assert method.sequence('txt', jnp.ones((3, 10)))[0].shape == (3, 1, 10)
  # The defaults: patches of pixels, bags of words as token sets.
  method = _method(_config(), data)
  x, mask = method.sequence('img', jnp.asarray(data['image'][:2]))
  assert x.shape == (2, 4, 192) and mask is None
  x, mask = method.sequence('txt', jnp.asarray(data['text'][:2]))
  assert x.shape == (2, 16) and x.dtype == jnp.int32
  np.testing.assert_array_equal(
      mask.sum(1), np.minimum(data['text'][:2].sum(1), 16))


_TINY_RUN = ','.join([
    'bits=16', 'dataset.num_items=300', 'dataset.num_query=40',
    'dataset.num_train=128', 'dataset.num_val=0', 'dataset.num_labels=8',
    'dataset.vocab_size=200', 'dataset.image_size=16', 'model.width=32',
    'model.num_layers=1', 'model.mlp_dim=64', 'model.gcn_input_dim=16',
    'model.gcn_hidden=16', 'model.discriminator_hidden=32',
    'model.max_text_tokens=16', 'scahn.queue_size=64', 'scahn.num_steps=8',
    'scahn.warmup_steps=2', 'train.checkpoint_every_steps=3',
    'train.checkpoint_every_seconds=0', 'train.progress=false',
    'eval.every_steps=0', 'eval.batch_size=64', 'eval.plots=false',
    'eval.random_baseline=false'])



def test_a_killed_run_resumes_exactly(tmp_path):
  """configs/scahn_synthetic.py, tiny, through the per-step trainer: stopped
  after step 5 (last checkpoint at step 3) and resumed, the final state
  (params, optimizer counts, queues and their pointers) equals the straight
  run's bit for bit, and so do the codes' mAP."""
  import scahn_synthetic  # pylint: disable=g-import-not-at-top
  config = scahn_synthetic.get_config(_TINY_RUN)
  straight, resumed, (step, a), b = conftest.killed_and_resumed(config,
                                                                tmp_path)
  assert step == 8 and int(a['step']) == 16
  assert int(a['memory']['queue_t2t_pointer']) == (8 * 32) % 64
  assert 'step_codes_img' not in a['memory']  # Rewritten before it is read.
  chex.assert_trees_all_equal(a, b)
  assert straight['map'] == resumed['map']
  # The user path restores the run (its unsaved memories left out, as the
  # trainer saved it) and encodes the retrieval set into the trainer's codes.
  workdir = str(tmp_path / 'b')
  run = run_artifacts.load_run(workdir)
  out = str(tmp_path / 'index')
  encoding.write(run, out, encoding.run_dataset_items(run.info, 'retrieval',
                                                      workdir),
                 ['image', 'text'])
  saved = report.load_codes(f'{workdir}/eval/codes.npz')
  for modality in ('image', 'text'):
    expected = index_lib.HammingIndex(16)
    expected.add(saved[f'{modality}_db'])
    np.testing.assert_array_equal(
        index_lib.load(encoding.index_path(out, modality)).packed,
        expected.packed)
