"""Tests of MHTN (methods/mhtn.py, models/mhtn.py) and of the source domain
the per-step family gives it (trainers/source_domain.py)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import conftest

from crossmodal_hash import sharding
from crossmodal_hash import transfer_losses
from crossmodal_hash.data import builtin
from crossmodal_hash.data import synthetic
from crossmodal_hash.methods import base
from crossmodal_hash.methods import mhtn
from crossmodal_hash.trainers import per_step
from crossmodal_hash.trainers import source_domain

BATCH = 32
SOURCE_BATCH = 16


def _config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = 'mhtn'
  config.mhtn = mhtn.default_config()
  config.mhtn.num_steps = 10
  config.mhtn.update(overrides)
  config.model = mhtn.default_model_config()
  config.model.update(dict(stem_widths=(32, 24), semantic_widths=(32, 16),
                           bottleneck=16, discriminator_hidden=(16, 8)))
  config.source_dataset = builtin.synthetic_source_config(
      'synthetic_source_features', num_items=48, num_labels=5,
      feature_dim=24, batch_size=SOURCE_BATCH)
  config.dataset = ml_collections.ConfigDict({'name': 'synthetic_features'})
  config.mesh = ml_collections.ConfigDict({'data': -1, 'model': 1})
  return config


@pytest.fixture(scope='module', name='data')
def _data():
  d = synthetic.generate(BATCH * 2, synthetic.SyntheticConfig(
      num_labels=8, vocab_size=200, feature_dim=24), seed=0)
  s = builtin.load_synthetic_source_features(_config().source_dataset)
  return {'image': d.images, 'text': d.texts, 'label': d.labels,
          'source_image': s.images, 'source_label': s.labels}


@pytest.fixture(scope='module', name='fresh')
def _fresh(data):
  method = mhtn.MHTN(_config(), num_labels=8, text_dim=200)
  return method, jax.jit(method.init)(jax.random.PRNGKey(0), data)


def _batch(data, i=0):
  b = {k: jnp.asarray(data[k][i * BATCH:(i + 1) * BATCH])
       for k in ('image', 'text', 'label')}
  b.update({k: jnp.asarray(data[k][i * SOURCE_BATCH:(i + 1) * SOURCE_BATCH])
            for k in ('source_image', 'source_label')})
  return b


def _step(method):
  return jax.jit(lambda state, batch: per_step.run_updates(
      method, state, batch, {}, state.step))


def test_state_shapes_and_real_valued_outputs(data, fresh):
  method, state = fresh
  net = state.params['net']
  assert set(net) == {'stems_source', 'stems_img', 'stems_txt',
                      'source_classifier', 'semantic', 'discriminator'}
  chex.assert_shape([net['stems_img']['fc0']['kernel'],
                     net['stems_txt']['fc1']['kernel'],
                     net['source_classifier']['kernel'],
                     net['semantic']['logits']['kernel'],
                     net['discriminator']['bottleneck']['kernel'],
                     net['discriminator']['logits']['kernel']],
                    [(24, 32), (32, 24), (24, 5), (16, 8), (16, 16), (8, 2)])
  # BatchNorm without affine after each Dense (Caffe's BatchNorm alone); the
  # text stream's input BatchNorm has a scale and shift.
  assert 'bn0' not in net['stems_img']  # No params.
  assert set(net['stems_txt']['input_bn']) == {'scale', 'bias'}
  stats = state.mutable['net']['batch_stats']
  chex.assert_shape(stats['semantic']['bn1']['mean'], (16,))
  assert 'trunk' not in state.params  # Identity trunk on features.
  assert base.outputs(method) == {'img': 'real', 'txt': 'real'}
  params = base.inference_params(state)
  for modality, field in (('img', 'image'), ('txt', 'text')):
    emb = jax.jit(method.encode, static_argnums=1)(
        params, modality, jnp.asarray(data[field][:5]))
    assert emb.dtype == jnp.float32 and emb.shape == (5, 8)
    np.testing.assert_allclose(emb.sum(axis=1), 1.0, rtol=1e-5)
  centered = mhtn.MHTN(_config(embedding='centered_softmax'), num_labels=8,
                       text_dim=200)
  x = jnp.asarray(data['text'][:5])
  np.testing.assert_allclose(centered.encode(params, 'txt', x),
                             method.encode(params, 'txt', x) - 1 / 8,
                             rtol=1e-6)


def test_loss_terms_are_the_library_losses(data, fresh):
  """Each term of `MHTN.loss` against transfer_losses on the net's outputs."""
  method, state = fresh
  batch = _batch(data)
  total, (terms, _) = jax.jit(method.loss)(state.params['net'], state,
                                           batch)
  net = method.net(5)
  out, _ = jax.jit(lambda v, b: net.apply(
      v, b['source_image'], b['image'], b['text'].astype(jnp.float32),
      jnp.float32(1.0), train=True, mutable=['batch_stats']))(
          {'params': state.params['net'], **state.mutable['net']}, batch)
  stems = out['stems']
  mmd = sum(transfer_losses.multi_kernel_mmd(s, t, kernel_num=1,
                                             kernel_mul=2.0)
            for s, t in zip(stems['source'], stems['img']))
  pair = sum(transfer_losses.paired_l2(i, t)
             for i, t in zip(stems['img'], stems['txt']))
  np.testing.assert_allclose(terms['mmd'], mmd, rtol=1e-5)
  np.testing.assert_allclose(terms['pair'], pair, rtol=1e-5)
  logits = np.asarray(out['modality_logits'])
  target = np.repeat(np.eye(2), BATCH, axis=0)
  bce = np.mean(np.sum(np.logaddexp(0, logits) - target * logits, axis=1))
  np.testing.assert_allclose(terms['modality'], bce, rtol=1e-5)
  want = (terms['source'] + terms['label'] + terms['mmd'] +
          1e-4 * terms['pair'] + 0.1 * terms['modality'])
  np.testing.assert_allclose(total, want, rtol=1e-6)


def test_steps_learn_keep_batch_stats_and_trace_once(data, fresh):
  method, state = fresh
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(
      lambda state, batch: per_step.run_updates(method, state, batch, {},
                                                state.step), n=1))
  first = None
  for i in range(8):
    state, metrics = step(state, _batch(data, i % 2))
    chex.assert_tree_all_finite((state.params, metrics))
    first = first if first is not None else float(metrics['mhtn/label'])
  assert float(metrics['mhtn/label']) < first
  assert int(state.step) == 8
  before = fresh[1].mutable['net']['batch_stats']['stems_img']['bn0']['mean']
  after = state.mutable['net']['batch_stats']['stems_img']['bn0']['mean']
  assert np.abs(np.asarray(after) - np.asarray(before)).max() > 1e-4


def test_optimizer_applies_caffe_multipliers():
  hp = _config(lr=0.1, momentum=0.0, weight_decay=0.5).mhtn
  opt = mhtn.optimizer(hp, num_steps=10)
  params = {'a': {'kernel': jnp.ones(2), 'bias': jnp.ones(2)},
            'discriminator': {'fc0': {'kernel': jnp.ones(2),
                                      'bias': jnp.ones(2)}}}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = opt.update(grads, opt.init(params), params)
  # -lr * lr_mult * (g + decay_mult * wd * w).
  np.testing.assert_allclose(updates['a']['kernel'], -0.1 * 1.5)
  np.testing.assert_allclose(updates['a']['bias'], -0.1 * 2.0)
  d = updates['discriminator']['fc0']
  np.testing.assert_allclose(d['kernel'], -0.1 * 0.1 * 1.5, rtol=1e-6)
  np.testing.assert_allclose(d['bias'], -0.1 * 0.2, rtol=1e-6)
  # Accumulation: the first update of a MultiSteps(2) chain is zero.
  acc = mhtn.optimizer(_config(accumulate_steps=2).mhtn, num_steps=10)
  updates, _ = acc.update(grads, acc.init(params), params)
  assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates))


def test_source_batches_follow_their_own_passes(data):
  """Rows of step s: batch s mod 3 of source pass s div 3, a permutation of
  the 48 source items per pass, reproducible from the run's key; the batch
  holds those rows' features (normalised) and labels."""
  config = _config()
  config.model.image_normalization = 'standardize'
  mesh = sharding.make_mesh(config.mesh)
  target = synthetic.generate(8, synthetic.SyntheticConfig(
      num_labels=8, vocab_size=200, feature_dim=24), seed=0)
  method = mhtn.MHTN(config, num_labels=8, text_dim=200)
  source = source_domain.SourceDomain.open(config, method, target, mesh)
  assert source.num_batches == 3 and source.fields == ('image', 'label')
  rng = jax.random.PRNGKey(3)
  rows = [np.asarray(source.rows(rng, jnp.int32(s))) for s in range(6)]
  for p in (0, 1):
    np.testing.assert_array_equal(np.sort(np.concatenate(rows[3 * p:3 * p + 3])),
                                  np.arange(48))
  assert not np.array_equal(rows[0], rows[3])  # A new order each pass.
  np.testing.assert_array_equal(rows[4], source.rows(rng, jnp.int32(4)))
  batch = jax.jit(lambda d, s: per_step.add_source_batch(
      {}, d, source, rng, s, sharding.batch_sharded(mesh)))(
          per_step.source_data(source), jnp.int32(4))
  np.testing.assert_array_equal(batch['source_index'], rows[4])
  np.testing.assert_array_equal(batch['source_label'],
                                data['source_label'][rows[4]])
  x = data['source_image']
  want = (x[rows[4]] - x.mean(0)) / x.std(0)
  np.testing.assert_allclose(batch['source_image'], want, rtol=1e-4,
                             atol=1e-4)
  assert source.position(7)['next_pass'] == 2
  assert source.position(7)['next_batch'] == 1


def test_source_domain_errors(data):
  mesh = sharding.make_mesh(_config().mesh)
  target = synthetic.generate(8, synthetic.SyntheticConfig(
      num_labels=8, vocab_size=200, feature_dim=32), seed=0)
  config = _config()
  config.model.image_normalization = 'standardize'
  method = mhtn.MHTN(config, num_labels=8, text_dim=200)
  with pytest.raises(ValueError, match=r'shape \(24,\).*\(32,\)'):
    source_domain.SourceDomain.open(config, method, target, mesh)
  del config.source_dataset
  with pytest.raises(ValueError, match='config.source_dataset'):
    source_domain.SourceDomain.open(config, method, target, mesh)


def test_sharded_step_equals_unsharded(data, fresh):
  method, state = fresh
  batch = _batch(data)
  mesh = sharding.make_mesh(_config().mesh)
  assert len(jax.devices()) == 8
  results = []
  for shard in (False, True):
    s, b = state, batch
    if shard:
      s = jax.device_put(state, sharding.replicated(mesh))
      b = jax.device_put(batch, sharding.batch_sharded(mesh))
    step = _step(method)
    for _ in range(2):
      s, metrics = step(s, b)
    results.append(jax.device_get((s, metrics)))
  chex.assert_trees_all_close(results[0], results[1], rtol=2e-4, atol=2e-5)


_TINY_RUN = ','.join([
    'bits=8', 'dataset.num_items=300', 'dataset.num_query=40',
    'dataset.num_train=128', 'dataset.num_val=32', 'dataset.num_labels=8',
    'dataset.vocab_size=200', 'dataset.feature_dim=24',
    'source_dataset.num_items=48', 'source_dataset.num_labels=5',
    'source_dataset.feature_dim=24', 'source_dataset.batch_size=16',
    'model.stem_widths=32;24', 'model.semantic_widths=32;16',
    'model.bottleneck=16', 'model.discriminator_hidden=16;8',
    'mhtn.num_steps=8', 'train.batch_size=32',
    'train.checkpoint_every_steps=3', 'train.checkpoint_every_seconds=0',
    'train.progress=false', 'eval.every_steps=0', 'eval.batch_size=32',
    'eval.plots=false', 'eval.random_baseline=false', 'eval.top_k=10',
    'eval.precision_at=10', 'eval.ndcg_k=10'])


def _tiny_config(*extra):
  import mhtn_synthetic  # pylint: disable=g-import-not-at-top
  return mhtn_synthetic.get_config(','.join((_TINY_RUN,) + extra))


def _resume_matches(tmp_path, *extra):
  config = _tiny_config(*extra)
  straight, resumed, (step, a), b = conftest.killed_and_resumed(config,
                                                                tmp_path)
  assert step == 8 and int(a['step']) == 8
  assert 'batch_stats' in a['mutable']['net']
  chex.assert_trees_all_equal(a, b)
  assert straight['similarity'] == 'cosine'
  assert straight['map'] == resumed['map']
  assert straight['sign_map'] == resumed['sign_map']


def test_a_killed_run_resumes_exactly(tmp_path):
  """configs/mhtn_synthetic.py, tiny, through the per-step trainer: stopped
  after step 5 (last checkpoint at step 3; the source at its pass 1, batch 0)
  and resumed, the final state (params, momentum, BatchNorm statistics)
  equals the straight run's bit for bit, and so do the embeddings."""
  _resume_matches(tmp_path)


@pytest.mark.slow
def test_a_killed_streamed_run_resumes_exactly(tmp_path):
  """The same under the 'stream' placement of the target's images."""
  _resume_matches(tmp_path, 'train.data_placement=stream')
