"""Tests of methods/ssal.py and models/ssal.py: shapes, rotations, losses,
the sign of the adversarial term, sharding, and exact resumption."""
from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest

from crossmodal_hash import sharding
from crossmodal_hash.data import synthetic
from crossmodal_hash.methods import base
from crossmodal_hash.methods import ssal
from crossmodal_hash.trainers import per_step

BATCH = 32
# ssal_synthetic.py, tiny: 8 x 8 pixels through cnnf_small, 8 dims.
_TINY_MODEL = ','.join([
    'bits=8', 'model.text_hidden=32', 'model.projector_hidden=16',
    'model.adversary_hidden=16', 'train.batch_size=32'])
# The feature-vector variant (no rotation classifier).
_FEATURE_MODEL = ('model.image_encoder=feature_mlp',
                  'model.image_mlp_features=32')


def _config(*extra: str):
  import ssal_synthetic  # pylint: disable=g-import-not-at-top
  return ssal_synthetic.get_config(','.join((_TINY_MODEL,) + extra))


def _method(config, data):
  return ssal.SSAL(config, num_labels=data['label'].shape[1],
                   text_dim=data['text'].shape[1])


@pytest.fixture(scope='module', name='data')
def _data():
  d = synthetic.generate(BATCH * 2, synthetic.SyntheticConfig(
      num_labels=6, vocab_size=200, image_size=16), seed=0)
  # Every other pixel: 8 x 8 images keep the convolutions cheap.
  return {'image': (d.images[:, ::2, ::2].astype(np.float32) - 128.0) / 64.0,
          'text': d.texts, 'label': d.labels}


@pytest.fixture(scope='module', name='features')
def _features(data):
  """The same items with 24-d image feature vectors."""
  rng = np.random.default_rng(0)
  return {**data, 'image': rng.normal(size=(len(data['label']), 24)).astype(
      np.float32)}


@pytest.fixture(scope='module', name='pixels')
def _pixels(data):
  """SSAL on pixels (with rotations) at its initial state, shared."""
  method = _method(_config(), data)
  return method, jax.jit(method.init)(jax.random.PRNGKey(0), data)


def _batch(data, i=0):
  return {k: jnp.asarray(v[i * BATCH:(i + 1) * BATCH]) for k, v in data.items()}


def _train_step(method, state, batch):
  """Both updates, as the per-step trainer runs them."""
  return per_step.run_updates(method, state, batch, {}, state.step // 2)


# ------------------------------------------------------------------ shapes


def test_pixel_state_encode_and_report(data, pixels):
  method, state = pixels
  assert method.rotation and method.report['rotation_adversary']
  assert set(state.params) == {'proj', 'adv'}
  assert set(state.params['proj']) == {'img', 'txt', 'classifier'}
  assert set(state.params['adv']) == {'modality', 'rotation_classifier'}
  chex.assert_shape(state.params['proj']['classifier']['dense']['kernel'],
                    (8, 6))
  chex.assert_shape(
      state.params['adv']['rotation_classifier']['dense_1']['kernel'], (16, 4))
  chex.assert_shape([state.memory['step_emb_rot'],
                     state.memory['step_rotations']], [(BATCH, 8), (BATCH,)])
  for modality, field in (('img', 'image'), ('txt', 'text')):
    emb = jax.jit(method.encode, static_argnums=1)(
        state.params, modality, jnp.asarray(data[field][:5]))
    assert emb.dtype == jnp.float32 and emb.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_bad_choices_are_explained(data):
  with pytest.raises(ValueError, match='config.ssal.confusion'):
    _method(_config('ssal.confusion=gradient'), data)
  with pytest.raises(ValueError, match='config.ssal.rotation'):
    _method(_config('ssal.rotation=sometimes'), data)
  method = _method(_config(), data)
  with pytest.raises(ValueError, match='square'):
    method.init(jax.random.PRNGKey(0), {**data, 'image': data['image'][:, :4]})


# ------------------------------------------------------------------ rotations


def test_rotations_are_rot90_with_matching_labels():
  image = np.arange(2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2)
  images = np.concatenate([image] * 4)  # [8, 3, 3, 2]
  labels = np.array([0, 1, 2, 3, 3, 2, 1, 0], np.int32)
  got = np.asarray(ssal.rotate(jnp.asarray(images), jnp.asarray(labels)))
  for b in range(8):
    # A quarter turn counter-clockwise: the top row becomes the left column.
    want = images[b]
    for _ in range(labels[b]):
      want = np.stack([want[:, -1 - r] for r in range(3)])
    np.testing.assert_array_equal(got[b], want)
    np.testing.assert_array_equal(got[b], np.rot90(images[b], labels[b]))
  # The hand-made turn of a 2 x 2 image: [[a, b], [c, d]] -> [[b, d], [a, c]].
  small = np.array([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None]
  np.testing.assert_array_equal(
      ssal.rotate(jnp.asarray(small), jnp.array([1]))[0, :, :, 0],
      [[2.0, 4.0], [1.0, 3.0]])


def test_random_rotations_are_per_item_and_reproducible_from_the_key():
  images = jnp.asarray(np.random.default_rng(0).normal(size=(64, 5, 5, 3)),
                       jnp.float32)
  key = jax.random.PRNGKey(7)
  rotated, labels = jax.jit(ssal.random_rotations)(key, images)
  again, labels_again = ssal.random_rotations(key, images)
  np.testing.assert_array_equal(labels, labels_again)
  np.testing.assert_array_equal(rotated, again)
  assert labels.dtype == jnp.int32 and set(np.unique(labels)) == {0, 1, 2, 3}
  for b in range(64):
    np.testing.assert_array_equal(rotated[b],
                                  np.rot90(np.asarray(images[b]), labels[b]))
  _, other = ssal.random_rotations(jax.random.PRNGKey(8), images)
  assert np.any(np.asarray(other) != np.asarray(labels))


# ------------------------------------------------------------------ losses


def _np_bce(logits, targets):
  p = 1.0 / (1.0 + np.exp(-logits))
  return -(targets * np.log(p) + (1 - targets) * np.log(1 - p))


def _np_log_softmax(logits):
  z = logits - logits.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _logits(rng):
  return {'modality_img': 2.0 * rng.normal(size=7),
          'modality_txt': 2.0 * rng.normal(size=7),
          'rotation': 2.0 * rng.normal(size=(7, 4))}


def test_adversary_and_confusion_losses_match_float64_reference():
  rng = np.random.default_rng(0)
  logits = _logits(rng)
  k = rng.integers(0, 4, size=7)
  modality = 0.5 * (_np_bce(logits['modality_img'], 1.0).mean() +
                    _np_bce(logits['modality_txt'], 0.0).mean())
  rotation = -_np_log_softmax(logits['rotation'])[np.arange(7), k].mean()
  want = {
      'adversary': modality + rotation,
      'uniform': {'modality': 0.5 * (_np_bce(logits['modality_img'], 0.5) +
                                     _np_bce(logits['modality_txt'], 0.5)
                                    ).mean(),
                  'rotation': -_np_log_softmax(logits['rotation']).mean()},
      'reversal': {'modality': -modality, 'rotation': -rotation}}
  with jax.enable_x64(True):
    jl = {n: jnp.asarray(v) for n, v in logits.items()}
    got = ssal.adversary_loss(jl, jnp.asarray(k))
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(float(got), want['adversary'], rtol=1e-12)
    for form in ssal.CONFUSIONS:
      terms = ssal.confusion_terms(jl, form, jnp.asarray(k))
      for name in ('modality', 'rotation'):
        np.testing.assert_allclose(float(terms[name]), want[form][name],
                                   rtol=1e-12)
    # Without the rotation classifier, the modality terms alone.
    no_rot = {n: v for n, v in jl.items() if n != 'rotation'}
    np.testing.assert_allclose(float(ssal.adversary_loss(no_rot)), modality,
                               rtol=1e-12)
    assert set(ssal.confusion_terms(no_rot, 'uniform')) == {'modality'}
  # The uniform target's minima: ln 2 and ln 4 at zero logits.
  zero = {'modality_img': jnp.zeros(3), 'modality_txt': jnp.zeros(3),
          'rotation': jnp.zeros((3, 4))}
  terms = ssal.confusion_terms(zero, 'uniform')
  np.testing.assert_allclose(terms['modality'], np.log(2), rtol=1e-6)
  np.testing.assert_allclose(terms['rotation'], np.log(4), rtol=1e-6)


def test_projector_loss_is_the_weighted_sum_of_its_reference_terms(data,
                                                                   pixels):
  method, state = pixels
  batch = _batch(data)
  key = jax.random.PRNGKey(3)
  loss, (terms, emb, rotations) = jax.jit(method.projector_loss)(
      state.params['proj'], state.params['adv'], batch, key)
  p = state.params
  rotated, want_rot = ssal.random_rotations(key, batch['image'])
  np.testing.assert_array_equal(rotations, want_rot)
  np.testing.assert_allclose(
      emb['rot'], jax.jit(method.embed, static_argnums=1)(p['proj'], 'img',
                                                          rotated), atol=1e-6)
  labels = np.asarray(batch['label'], np.float64)
  label = 0.0
  for m in ('img', 'txt'):
    logits = np.asarray(method.classifier.apply(
        {'params': p['proj']['classifier']}, emb[m]), np.float64)
    label += _np_bce(logits, labels).mean()
  adv = jax.tree.map(lambda x: np.asarray(x, np.float64),
                     method.adversary.apply({'params': p['adv']}, emb['img'],
                                            emb['txt'], emb['rot']))
  modality = 0.5 * (_np_bce(adv['modality_img'], 0.5).mean() +
                    _np_bce(adv['modality_txt'], 0.5).mean())
  rotation = -_np_log_softmax(adv['rotation']).mean()
  hp = method.hp
  np.testing.assert_allclose(
      [terms['label'], terms['modality'], terms['rotation'], loss],
      [label, modality, rotation, hp.label_weight * label +
       hp.modality_weight * modality + hp.rotation_weight * rotation],
      rtol=1e-5)


def _trained_adversary(method, state, emb, rotations, steps):
  """`state` with the adversary trained `steps` updates on fixed embeddings;
  (state, its first loss, its last loss)."""
  state = state.replace(memory={
      **state.memory, **{f'step_emb_{m}': e for m, e in emb.items()},
      **({'step_rotations': rotations} if rotations is not None else {})})
  train = jax.jit(lambda s: method.update_adversary(s, {}, {}, None))
  first = None
  for _ in range(steps):
    state, metrics = train(state)
    first = float(metrics['loss']) if first is None else first
  return state, first, float(metrics['loss'])


@pytest.mark.parametrize('form', ssal.CONFUSIONS)
def test_the_adversarial_gradient_confuses_the_adversary(features, form):
  """Against a trained (confident) adversary, the gradient of the projector's
  adversarial term at the embeddings opposes the adversary's own: a step
  along it raises the adversary's loss; 'reversal' is exactly its negative.
  Pixel-free: the classifiers see embeddings [B, D] with a rotation
  classifier forced on (`Adversary(rotation=True)`)."""
  method = _method(_config(f'ssal.confusion={form}',
                           'ssal.adversary_optimizer.learning_rate=0.03',
                           *_FEATURE_MODEL), features)
  method.adversary = method.adversary.clone(rotation=True)
  rng = np.random.default_rng(0)
  # Images and texts from shifted clouds; the "rotated" embeddings shifted
  # by their rotation: an adversary learns to tell them apart.
  rotations = jnp.asarray(rng.integers(0, 4, size=BATCH), jnp.int32)
  shift = np.eye(8)[:4] * 2.0
  emb = {'img': rng.normal(size=(BATCH, 8)) + 1.0,
         'txt': rng.normal(size=(BATCH, 8)) - 1.0,
         'rot': rng.normal(size=(BATCH, 8)) + shift[np.asarray(rotations)]}
  emb = {m: jnp.asarray(e, jnp.float32) for m, e in emb.items()}
  adv = jax.jit(method.adversary.init)(jax.random.PRNGKey(0), emb['img'],
                                       emb['txt'], emb['rot'])['params']
  state = base.TrainState(
      step=jnp.zeros((), jnp.int32), params={'adv': adv},
      opt_state={'adv': method.optimizers['adv'].init(adv)}, memory={},
      rng=jax.random.PRNGKey(1))
  state, first, last = _trained_adversary(method, state, emb, rotations, 40)
  assert last < 0.5 * first  # Confident now.
  adv = state.params['adv']

  def adversary_loss(e):
    return ssal.adversary_loss(method.adversary.apply(
        {'params': adv}, e['img'], e['txt'], e['rot']), rotations)

  def adversarial_term(e):
    terms = ssal.confusion_terms(method.adversary.apply(
        {'params': adv}, e['img'], e['txt'], e['rot']), form, rotations)
    return terms['modality'] + terms['rotation']

  g_adv = jax.jit(jax.grad(adversary_loss))(emb)
  g_term = jax.jit(jax.grad(adversarial_term))(emb)
  for m in emb:  # Each embedding set on its own.
    assert float(jnp.vdot(g_term[m], g_adv[m])) < 0, m
  if form == 'reversal':
    chex.assert_trees_all_close(g_term, jax.tree.map(jnp.negative, g_adv),
                                rtol=1e-6, atol=1e-9)
  stepped = jax.tree.map(lambda e, g: e - 0.5 * g, emb, g_term)
  loss = jax.jit(adversary_loss)
  assert float(loss(stepped)) > float(loss(emb))


@pytest.mark.slow
@pytest.mark.parametrize('form', ssal.CONFUSIONS)
def test_the_projector_gradient_confuses_the_adversary(data, form):
  """The same through the pixel projector's params (rotations drawn)."""
  method = _method(_config(f'ssal.confusion={form}',
                           'ssal.adversary_optimizer.learning_rate=0.03'),
                   data)
  state = jax.jit(method.init)(jax.random.PRNGKey(0), data)
  batch = _batch(data)
  key = jax.random.PRNGKey(1)
  _, (_, emb, rotations) = jax.jit(method.projector_loss)(
      state.params['proj'], state.params['adv'], batch, key)
  state, first, last = _trained_adversary(method, state, emb, rotations, 30)
  assert last < 0.7 * first

  def adversary_loss(proj):
    _, (_, e, k) = method.projector_loss(proj, state.params['adv'], batch,
                                         key)
    return ssal.adversary_loss(method.adversary.apply(
        {'params': state.params['adv']}, e['img'], e['txt'], e['rot']), k)

  def adversarial_term(proj):
    _, (terms, _, _) = method.projector_loss(proj, state.params['adv'],
                                             batch, key)
    return (method.hp.modality_weight * terms['modality'] +
            method.hp.rotation_weight * terms['rotation'])

  proj = state.params['proj']
  g_adv = jax.jit(jax.grad(adversary_loss))(proj)
  g_term = jax.jit(jax.grad(adversarial_term))(proj)
  flat = lambda t: jnp.concatenate([x.ravel() for x in jax.tree.leaves(t)])
  assert float(jnp.vdot(flat(g_term), flat(g_adv))) < 0
  if form == 'reversal':  # Equal weights here: exactly the negative.
    assert method.hp.modality_weight == method.hp.rotation_weight
    chex.assert_trees_all_close(
        g_term, jax.tree.map(lambda g: -method.hp.modality_weight * g, g_adv),
        rtol=1e-4, atol=1e-7)
  stepped = jax.tree.map(lambda p, g: p - 0.1 * g, proj, g_term)
  loss = jax.jit(adversary_loss)
  assert float(loss(stepped)) > float(loss(proj))


# ------------------------------------------------------------------ steps


def test_feature_inputs_learn_without_the_rotation_classifier(features):
  """Feature vectors: no rotation classifier (and the report says why); the
  steps learn, trace once, and each update moves only its own network."""
  method = _method(_config(*_FEATURE_MODEL), features)
  assert not method.rotation
  assert not method.report['rotation_adversary']
  assert 'rotation is undefined' in method.report['adversary']
  with pytest.raises(ValueError, match='rotation is undefined'):
    _method(_config('model.image_encoder=feature_mlp', 'ssal.rotation=on'),
            features)
  state = jax.jit(method.init)(jax.random.PRNGKey(0), features)
  assert set(state.params['adv']) == {'modality'}
  assert 'step_emb_rot' not in state.memory
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(
      lambda state, batch: _train_step(method, state, batch), n=1))
  projector = jax.jit(lambda s, b: method.update_projector(
      s, b, {}, base.Step(rng=jax.random.PRNGKey(0))))
  after, _ = projector(state, _batch(features))
  chex.assert_trees_all_equal(after.params['adv'], state.params['adv'])
  after, _ = jax.jit(lambda s: method.update_adversary(s, {}, {}, None))(state)
  chex.assert_trees_all_equal(after.params['proj'], state.params['proj'])
  losses = []
  for i in range(12):
    state, metrics = step(state, _batch(features, i % 2))
    chex.assert_tree_all_finite((state.params, metrics))
    losses.append(float(metrics['projector/label']))
  assert 'projector/rotation' not in metrics
  assert np.mean(losses[-3:]) < np.mean(losses[:3])
  assert int(state.step) == 24  # A projector and an adversary update each.


@pytest.mark.parametrize('inputs', [
    'features', pytest.param('pixels', marks=pytest.mark.slow)])
def test_sharded_step_equals_unsharded_and_traces_once(request, inputs):
  """2 steps unsharded (one trace) and over 8 devices agree; on pixels (slow)
  the adversary reads the rotations the projector's step key drew."""
  if inputs == 'pixels':
    data = request.getfixturevalue('data')
    method, state = request.getfixturevalue('pixels')
  else:
    data = request.getfixturevalue('features')
    method = _method(_config(*_FEATURE_MODEL), data)
    state = jax.jit(method.init)(jax.random.PRNGKey(0), data)
  mesh = sharding.make_mesh(_config().mesh)
  assert len(jax.devices()) == 8
  results = []
  for shard in (False, True):
    s = jax.device_put(state, sharding.replicated(mesh)) if shard else state
    chex.clear_trace_counter()
    step = jax.jit(chex.assert_max_traces(
        lambda state, batch: _train_step(method, state, batch), n=1))
    for i in range(2):
      b = _batch(data, i)
      key = per_step.update_keys(s.rng, s.step // 2, 2)[0]
      if shard:
        b = jax.device_put(b, sharding.batch_sharded(mesh))
      s, metrics = step(s, b)
      if method.rotation:
        _, want = ssal.random_rotations(key, _batch(data, i)['image'])
        np.testing.assert_array_equal(s.memory['step_rotations'], want)
    results.append(jax.device_get((s, metrics)))
  chex.assert_tree_all_finite(results[0])
  chex.assert_trees_all_close(results[0], results[1], rtol=2e-4, atol=2e-5)


# ------------------------------------------------------------------ runs

_TINY_RUN = ','.join([
    _TINY_MODEL, 'dataset.num_items=300', 'dataset.num_query=40',
    'dataset.num_train=128', 'dataset.num_val=0', 'dataset.num_labels=8',
    'dataset.vocab_size=200', 'dataset.image_size=16', 'ssal.num_steps=8',
    'train.checkpoint_every_steps=3', 'train.checkpoint_every_seconds=0',
    'train.progress=false', 'eval.every_steps=0', 'eval.batch_size=64',
    'eval.plots=false', 'eval.random_baseline=false'])


@pytest.mark.parametrize('inputs', [
    'features', pytest.param('pixels', marks=pytest.mark.slow)])
def test_a_killed_run_resumes_exactly(tmp_path, inputs):
  """configs/ssal_synthetic.py, tiny, through the per-step trainer: stopped
  after step 5 (last checkpoint at step 3) and resumed, the final state
  (params, optimizer counts) equals the straight run's bit for bit, and so
  do the cosine and sign-code mAPs; the report states the adversary. On
  feature vectors (modality adversary alone), and (slow) on pixels with
  rotations."""
  extra = (('dataset.name=synthetic_features', 'dataset.feature_dim=24') +
           _FEATURE_MODEL if inputs == 'features' else ())
  config = _config(_TINY_RUN, *extra)
  straight, resumed, (step, a), b = conftest.killed_and_resumed(config,
                                                                tmp_path)
  assert step == 8 and int(a['step']) == 16
  assert 'step_emb_img' not in a['memory']  # Rewritten before it is read.
  chex.assert_trees_all_equal(a, b)
  assert straight['map'] == resumed['map']
  assert straight['sign_map'] == resumed['sign_map']
  with open(tmp_path / 'a' / 'eval' / 'evaluation.json') as f:
    stated = json.load(f)['ssal']
  assert stated['rotation_adversary'] == (inputs == 'pixels')
