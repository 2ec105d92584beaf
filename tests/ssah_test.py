"""SSAH: state, updates, the adversarial switch, sharded equals unsharded."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash import losses
from crossmodal_hash import sharding
from crossmodal_hash.data import preprocess
from crossmodal_hash.data import synthetic
from crossmodal_hash.methods import base
from crossmodal_hash.methods import ssah
from crossmodal_hash.trainers import alternating

BATCH = 32


def _data(config):
  d = config.dataset
  data = synthetic.generate(
      d.num_train, synthetic.SyntheticConfig(num_labels=d.num_labels,
                                             vocab_size=d.vocab_size,
                                             image_size=d.image_size), d.seed)
  mean, inv_scale = preprocess.image_statistics(data.images, 'standardize')
  return {'image': data.images, 'text': data.texts, 'label': data.labels,
          'image_mean': mean, 'image_inv_scale': inv_scale}


def _batch(data, n=BATCH):
  return {'index': jnp.arange(n, dtype=jnp.int32),
          'label': jnp.asarray(data['label'][:n]),
          'text': jnp.asarray(data['text'][:n]),
          'image': preprocess.normalize(jnp.asarray(data['image'][:n]),
                                        data['image_mean'],
                                        data['image_inv_scale'])}


def _method(config):
  return ssah.SSAH(config, num_labels=config.dataset.num_labels,
                   text_dim=config.dataset.vocab_size)


def test_init_state_shapes(tiny_config):
  config = tiny_config()
  data = _data(config)
  method = _method(config)
  state = method.init(jax.random.PRNGKey(0), data)
  t, k = config.dataset.num_train, config.bits
  chex.assert_shape(state.memory['lab_code'], (t, k))
  chex.assert_shape(state.memory['lab_feat'], (t, config.model.semantic_dim))
  assert set(state.memory) == {'lab_code', 'lab_feat'}
  assert set(state.params) == {'lab', 'img', 'txt', 'dis'}
  assert set(state.params['dis']) == {'img', 'txt'}
  assert set(state.opt_state) == {'lab', 'img', 'txt', 'dis'}
  chex.assert_tree_all_finite(state)
  official = _method(tiny_config('ssah.adversarial=official_code'))
  state = official.init(jax.random.PRNGKey(0), data)
  assert set(state.opt_state) == {'lab', 'img', 'txt', 'dis', 'dis_drift'}


@pytest.mark.parametrize('network', ['lab', 'dis', 'img', 'txt'])
def test_each_update_changes_only_its_network(tiny_config, network):
  config = tiny_config()
  data = _data(config)
  method = _method(config)
  state = method.init(jax.random.PRNGKey(0), data)
  new, metrics = jax.jit(method.updates[network])(state, _batch(data), data,
                                                  base.Step(learning_rate=jnp.float32(1e-3)))
  chex.assert_tree_all_finite((new, metrics))
  assert int(new.step) == 1
  for name in state.params:
    same = jax.tree.all(jax.tree.map(np.array_equal, state.params[name],
                                     new.params[name]))
    assert same == (name != network), name
  memory_written = {'lab_code', 'lab_feat'} if network == 'lab' else set()
  for name in state.memory:
    changed = not np.array_equal(state.memory[name][:BATCH],
                                 new.memory[name][:BATCH])
    assert changed == (name in memory_written), name
    np.testing.assert_array_equal(state.memory[name][BATCH:],
                                  new.memory[name][BATCH:])


def test_memory_rows_hold_the_batch_outputs(tiny_config):
  config = tiny_config()
  data = _data(config)
  method = _method(config)
  state = method.init(jax.random.PRNGKey(0), data)
  batch = _batch(data)
  out = method.nets['lab'].apply({'params': state.params['lab']},
                                 batch['label'].astype(jnp.float32))
  new, _ = method.update_lab(state, batch, data,
                              base.Step(learning_rate=jnp.float32(1e-3)))
  np.testing.assert_allclose(new.memory['lab_code'][:BATCH], out.code,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new.memory['lab_feat'][:BATCH], out.feature,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('modality', ['img', 'txt'])
def test_official_code_drifts_only_that_modalitys_discriminator(
    tiny_config, modality):
  """The official hash-net optimizer has no var_list: an ImgNet step also
  moves the image discriminator (by the adversarial term), and only it."""
  config = tiny_config('ssah.adversarial=official_code', 'ssah.delta=1.0')
  data = _data(config)
  method = _method(config)
  state = method.init(jax.random.PRNGKey(0), data)
  new, _ = jax.jit(method.updates[modality])(state, _batch(data), data,
                                             base.Step(learning_rate=jnp.float32(1e-3)))
  changed = lambda a, b: not jax.tree.all(jax.tree.map(np.array_equal, a, b))
  for m in ('img', 'txt'):
    assert changed(state.params['dis'][m], new.params['dis'][m]) == (
        m == modality), m
    assert changed(state.opt_state['dis_drift'][m],
                   new.opt_state['dis_drift'][m]) == (m == modality), m
  # The discriminators' own optimizer state is untouched.
  assert not changed(state.opt_state['dis'], new.opt_state['dis'])


def test_modality_terms_match_the_loss_library(tiny_config):
  config = tiny_config('ssah.pairwise_form=official_code',
                       'ssah.label_loss=bce', 'ssah.reduction=mean',
                       'ssah.pair_weighting=none')
  data = _data(config)
  method = _method(config)
  state = method.init(jax.random.PRNGKey(0), data)
  batch = _batch(data)
  terms, out = method.modality_loss_terms('txt', state.params['txt'],
                                          state.params['dis']['txt'], batch,
                                          data, state.memory)
  sim = losses.similarity(batch['label'], data['label'])
  np.testing.assert_allclose(
      terms['pairwise_code'],
      losses.pairwise_likelihood(out.code, state.memory['lab_code'], sim,
                                 'official_code'), rtol=1e-6)
  np.testing.assert_allclose(
      terms['label'], losses.label_prediction(out.label_logits,
                                              batch['label'], 'bce'),
      rtol=1e-6)


@pytest.mark.parametrize('modality', ['img', 'txt'])
def test_adversarial_switch_controls_generator_gradient(tiny_config, modality):
  data = None
  grads = {}
  for mode in ('paper', 'official_code'):
    config = tiny_config(f'ssah.adversarial={mode}')
    data = data or _data(config)
    method = _method(config)
    state = method.init(jax.random.PRNGKey(0), data)

    def adversarial(p, method=method, state=state):
      terms, _ = method.modality_loss_terms(modality, p,
                                            state.params['dis'][modality],
                                            _batch(data), data, state.memory)
      return terms['adversarial']

    grads[mode] = jax.grad(adversarial)(state.params[modality])
  norm = lambda g: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(g)))
  assert norm(grads['paper']) > 0.0
  assert norm(grads['official_code']) == 0.0


def test_schedule_follows_the_official_ladders(tiny_config):
  config = tiny_config('ssah.lab_passes=10;5', 'ssah.dis_passes=1;1',
                       'ssah.img_passes=15;7;5', 'ssah.txt_passes=15;7;5',
                       'ssah.img_lr_exponent=4.5', 'ssah.txt_lr_exponent=3.5')
  method = _method(config)
  phases = method.schedule(1)
  assert [(p.network, p.passes) for p in phases] == [
      ('lab', 10), ('lab', 5), ('dis', 1), ('dis', 1), ('img', 15), ('img', 7),
      ('img', 5), ('txt', 15), ('txt', 7), ('txt', 5)]
  rates = [p.learning_rate for p in phases]
  expected = [10**-2.5, 10**-3.0, 10**-3.5, 10**-4.0, 10**-5.0, 10**-5.5,
              10**-6.0, 10**-4.0, 10**-4.5, 10**-5.0]
  np.testing.assert_allclose(rates, expected, rtol=1e-12)


def test_bad_switch_values_are_rejected(tiny_config):
  with pytest.raises(ValueError, match='adversarial'):
    _method(tiny_config('ssah.adversarial=both'))


@pytest.mark.parametrize('network', ['img', 'all'])
def test_sharded_step_equals_unsharded(tiny_config, network):
  extra = ('ssah.schedule=interleaved',) if network == 'all' else ()
  # At init 0.01 some gradients are at rounding level, and Adam scales them to
  # a full step whose sign depends on the reduction order over devices; 0.1
  # keeps every compared update above that noise.
  config = tiny_config('model.init_std=0.1', *extra)
  data = _data(config)
  method = _method(config)
  lr = (1e-3,) * 4 if network == 'all' else 1e-3
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.make_mesh(config.mesh, devices)
    state = jax.device_put(method.init(jax.random.PRNGKey(0), data),
                           sharding.replicated(mesh))
    fn = alternating.make_steps_fn(method, network, num_steps=2,
                                   batch_size=BATCH, mesh=mesh)
    device_data = sharding.put_replicated(data, mesh)
    state, metrics, finite = fn(state, device_data, jnp.int32(0), jnp.int32(0),
                                jnp.asarray(lr, jnp.float32))
    assert bool(finite)
    results.append(jax.device_get((state, metrics)))
  assert len(jax.devices()) == 8
  chex.assert_trees_all_close(results[0], results[1], rtol=2e-4, atol=2e-5)


def test_steps_fn_traces_once(tiny_config):
  config = tiny_config()
  data = _data(config)
  method = _method(config)
  mesh = sharding.make_mesh(config.mesh)
  state = jax.device_put(method.init(jax.random.PRNGKey(0), data),
                         sharding.replicated(mesh))
  chex.clear_trace_counter()
  fn = alternating.make_steps_fn(
      method, 'lab', num_steps=1, batch_size=BATCH, mesh=mesh,
      trace_guard=lambda f: chex.assert_max_traces(f, n=1))
  device_data = sharding.put_replicated(data, mesh)
  for p, first, lr in [(0, 0, 1e-3), (1, 3, 1e-4), (7, 5, 3e-5)]:
    state, _, _ = fn(state, device_data, jnp.int32(p), jnp.int32(first),
                     jnp.float32(lr))
  assert int(state.step) == 3


def test_bf16_compute_keeps_float32_params_and_finite_losses(tiny_config):
  config = tiny_config('model.compute_dtype=bfloat16')
  data = _data(config)
  method = _method(config)
  state = method.init(jax.random.PRNGKey(0), data)
  new, metrics = jax.jit(method.update_img)(state, _batch(data), data,
                                            base.Step(learning_rate=jnp.float32(1e-3)))
  chex.assert_tree_all_finite((new, metrics))
  for leaf in jax.tree.leaves(new.params):
    assert leaf.dtype == jnp.float32
  assert metrics['loss'].dtype == jnp.float32
