"""Item-sharded state: the logical axis rules place memories and resident
arrays, and the wide layers' params over `model`; the sharded steps equal the
replicated ones, a sharded run resumes."""
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import conftest
import dcmh_synthetic
import method_batches
from crossmodal_hash import run_artifacts
from crossmodal_hash import sharding
from crossmodal_hash import data as data_lib  # pylint: disable=unused-import
from crossmodal_hash.methods import registry as method_registry
from crossmodal_hash.models import label
from crossmodal_hash.models import layers
from crossmodal_hash.trainers import alternating
from crossmodal_hash.trainers import harness

FEATURES = ('dataset.name=synthetic_features',
            'model.image_encoder=feature_mlp')
# T = 128 training items: no other dimension of these runs is 128.
DCMH_TINY = ','.join([
    'bits=16', 'dataset.num_items=300', 'dataset.num_query=64',
    'dataset.num_train=128', 'dataset.num_labels=8', 'dataset.vocab_size=200',
    'dataset.feature_dim=48', 'model.text_hidden=64',
    'model.image_mlp_features=64', 'dcmh.num_epochs=2', 'train.batch_size=32',
    'train.checkpoint_every_passes=1', 'train.checkpoint_every_seconds=0',
    'train.progress=false', 'eval.batch_size=64', 'eval.plots=false',
    'eval.random_baseline=false', *FEATURES,
])
SSAH_TINY = ('dataset.num_train=128', *FEATURES)
# (data, model) meshes of the 8 simulated devices.
MESHES = {'data8': (8, 1), 'data4_model2': (4, 2)}


def _mesh(name):
  data, model = MESHES[name]
  return sharding.make_mesh(ml_collections.ConfigDict(
      {'data': data, 'model': model}))


def _method(config):
  return method_registry.METHODS.get(config.method)(
      config, num_labels=config.dataset.num_labels,
      text_dim=config.dataset.vocab_size)


def _dcmh_config(*extra):
  return dcmh_synthetic.get_config(','.join((DCMH_TINY,) + extra))


def _placed(method, arrays, mesh, rules):
  """(state, data) of `method` on `mesh`, placed by `rules`."""
  data = sharding.put_by_axes(arrays, harness.resident_axes(arrays), mesh,
                              rules)
  state = harness.fresh_state(method, 0, data, mesh, pretrained=False,
                              rules=rules)
  return state, data


def _spec(x):
  return tuple(x.sharding.spec)


@pytest.mark.parametrize('method_name', ['ssah', 'dcmh'])
@pytest.mark.parametrize('mesh_name', sorted(MESHES))
def test_each_leaf_is_placed_by_the_rules(tiny_config, method_name,
                                          mesh_name):
  """The shardings a run gives its state and resident arrays (from shapes
  alone; the steps and resume tests below place and restore real ones)."""
  config = (tiny_config(*SSAH_TINY) if method_name == 'ssah'
            else _dcmh_config())
  method, mesh = _method(config), _mesh(mesh_name)
  arrays = method_batches.train_arrays(config)
  rules = sharding.rules_from_config(config)
  assert rules == (('items', 'data'), ('mlp', 'model'))
  state = harness.state_sharding(method, jax.random.PRNGKey(0), arrays, mesh,
                                 rules)
  memories = {'ssah': {'lab_code', 'lab_feat'},
              'dcmh': {'F', 'G', 'B'}}[method_name]
  assert set(method.memory_axes) == set(state.memory) == memories
  for name, s in state.memory.items():  # [T, ...] rows over `data`.
    assert tuple(s.spec) == ('data', None), name
    assert s.shard_shape((128, 16)) == (128 // MESHES[mesh_name][0], 16)
  # Params and optimizer states: replicated but for the wide layers' 'mlp'
  # dimension over `model` (test_wide_layers_split_over_model).
  for s in jax.tree.leaves(state.replace(memory={})):
    assert s.is_fully_replicated or set(s.spec) <= {None, 'model'}
  axes = harness.resident_axes(arrays)
  assert axes == {'label': ('items',), 'text': ('items',),
                  'image': ('items',), 'image_mean': (),
                  'image_inv_scale': ()}
  # No rules: everything replicated.
  plain = harness.state_sharding(method, jax.random.PRNGKey(0), arrays, mesh,
                                 ())
  assert all(s.is_fully_replicated for s in jax.tree.leaves(plain))


def test_uneven_rows_and_unknown_memories():
  mesh = _mesh('data8')
  rules = sharding.LOGICAL_AXIS_RULES
  # 10 rows do not split over 8 devices: replicated (with a warning).
  assert sharding.logical_sharding((10, 4), ('items', 'bits'), mesh,
                                   rules).is_fully_replicated
  assert _spec(jax.ShapeDtypeStruct((16, 4), jnp.float32, sharding=(
      sharding.logical_sharding((16, 4), ('items', 'bits'), mesh, rules)))
              ) == ('data', None)
  # A rule naming the model axis: 4 x 2 devices, columns over `model`.
  two_axes = sharding.logical_sharding(
      (16, 4), ('items', 'bits'), _mesh('data4_model2'),
      rules + (('bits', 'model'),))
  assert tuple(two_axes.spec) == ('data', 'model')
  config = _dcmh_config()
  method = _method(config)
  abstract = jax.eval_shape(method.init, jax.random.PRNGKey(0),
                            method_batches.train_arrays(config))
  with pytest.raises(ValueError, match=r"memories \['H'\]"):
    sharding.state_shardings(abstract, {'H': ('items',)}, mesh, rules)


def _gathers_of_rows(hlo, num_items):
  """The collectives of a compiled HLO text that move [T, ...] rows: an
  all-gather, all-to-all or collective-permute whose result has a dimension
  of `num_items`."""
  found = []
  for line in hlo.splitlines():
    match = re.search(r'= \S+\[([\d,]*)\]\S* (all-gather|all-to-all|'
                      r'collective-permute)(-start)?\(', line)
    if match and str(num_items) in match.group(1).split(','):
      found.append(line.strip()[:160])
  return found


def _steps(method, arrays, mesh, rules, lr):
  """Runs each `begin` hook, then batches 0 and 1 of each network, on `mesh`.

  Returns:
    (the state on the host, the memories' shardings after the steps, the
    [T, ...] row gathers of each network's compiled step).
  """
  state, data = _placed(method, arrays, mesh, rules)
  kwargs = dict(state_sharding=sharding.shardings_of(state),
                data_sharding=sharding.shardings_of(data))
  for hook in alternating.make_begin_fns(method, mesh, **kwargs).values():
    state = hook(state, data)
  gathers = {}
  for network in method.updates:
    fn = alternating.make_steps_fn(method, network, num_steps=1,
                                   batch_size=32, mesh=mesh, **kwargs)
    compiled = fn.lower(state, data, jnp.int32(0), jnp.int32(0),
                        jnp.float32(lr)).compile()
    gathers[network] = _gathers_of_rows(compiled.as_text(),
                                        len(arrays['label']))
    for batch in range(2):
      state, _, finite = compiled(state, data, jnp.int32(0), jnp.int32(batch),
                                  jnp.float32(lr))
      assert bool(finite), network
  return (jax.device_get(state), sharding.shardings_of(state.memory),
          gathers)


@pytest.mark.parametrize('method_name,mesh_name', [
    ('dcmh', 'data4_model2'),
    pytest.param('dcmh', 'data8', marks=pytest.mark.slow),
    pytest.param('ssah', 'data8', marks=pytest.mark.slow),
    pytest.param('ssah', 'data4_model2', marks=pytest.mark.slow),
])
def test_sharded_steps_equal_replicated(tiny_config, method_name, mesh_name):
  """Every update (and DCMH's B refresh) on item-sharded memories and data
  equals the replicated run to float32 rounding: the sums over T (the [B, T]
  pairwise terms, DCMH's column sums) add per-device partial sums, another
  order than one device's. DCMH's SGD keeps those differences at rounding
  size; SSAH's Adam divides each gradient by its own magnitude, so on
  entries whose gradient is itself rounding noise (text-encoder weights of
  absent words) the update differs by up to the rate's scale: atol 1e-4
  after 2 steps at rate 0.01 (2.7e-5 seen). No step moves [T, ...] rows
  between devices. On data=4 x model=2 the default rules also split the
  wide layers' hidden width over `model` (their params stay split)."""
  config = (tiny_config(*SSAH_TINY) if method_name == 'ssah'
            else _dcmh_config())
  method, mesh = _method(config), _mesh(mesh_name)
  arrays = method_batches.train_arrays(config)
  lr = method.schedule(0)[0].learning_rate
  sharded, memory_sharding, gathers = _steps(
      method, arrays, mesh, sharding.rules_from_config(config), lr)
  replicated, _, _ = _steps(method, arrays, mesh, (), lr)
  for name, s in memory_sharding.items():
    assert tuple(s.spec) == ('data', None), name
  assert gathers == {network: [] for network in method.updates}
  if mesh_name == 'data4_model2':
    assert _split(harness.state_sharding(
        method, jax.random.PRNGKey(0), arrays, mesh,
        sharding.rules_from_config(config)).params)
  chex.assert_trees_all_close(sharded, replicated, rtol=1e-5,
                              atol=1e-4 if method_name == 'ssah' else 1e-6)


def _straight_equals_resumed(config, tmp_path):
  """Runs `config` straight through pass 2 in tmp_path/a, and killed after
  pass 1 and resumed for pass 2 in tmp_path/b; asserts that both last
  checkpoints are pass 2's and equal bit for bit; returns b's state."""
  assert alternating.train_and_evaluate(
      config, str(tmp_path / 'a'), stop_after_passes=2) == {
          'stopped_at_pass': 2}
  assert alternating.train_and_evaluate(
      config, str(tmp_path / 'b'), stop_after_passes=1) == {
          'stopped_at_pass': 1}
  alternating.train_and_evaluate(config, str(tmp_path / 'b'),
                                 stop_after_passes=1)
  step_a, state_a = conftest.latest_checkpoint(str(tmp_path / 'a'))
  step_b, state_b = conftest.latest_checkpoint(str(tmp_path / 'b'))
  assert step_a == step_b == 2
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)
  return state_b


def test_sharded_run_resumes_exactly(tmp_path):
  """A run killed after pass 1 (the image net's) and resumed for pass 2 (the
  text net's) saves the state of a run that went straight through pass 2,
  bit for bit; orbax restores the checkpoint onto the rules' shardings, also
  of another mesh."""
  state_b = _straight_equals_resumed(_dcmh_config(), tmp_path)
  other_mesh = _dcmh_config('mesh.data=4', 'mesh.model=2')
  with harness.Run.open(other_mesh, str(tmp_path / 'b'), checkpoint_every=1,
                        eval_every=0) as run:
    restored, start = run.init_or_restore('pass_index', batches_per_unit=4)
    assert start == 2
    for name, x in restored.memory.items():
      assert _spec(x) == ('data', None), name
      assert len(x.sharding.device_set) == 8
      assert x.addressable_shards[0].data.shape == (128 // 4, 16)
    for name in ('label', 'text', 'image'):
      assert _spec(run.device_data[name]) == ('data',), name
    host = jax.device_get(restored)
    for part in ('params', 'memory', 'step', 'rng'):
      jax.tree.map(np.testing.assert_array_equal, getattr(host, part),
                   state_b[part])
  # Restoring for encoding places the memories as the trainer does (split
  # over 'data'), then keeps the params.
  run = run_artifacts.load_run(str(tmp_path / 'b'))
  abstract = run_artifacts._abstract_state(run.method, run.info, run.mesh)  # pylint: disable=protected-access
  for name, x in abstract.memory.items():
    assert _spec(x) == ('data', None), name
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.params),
               state_b['params'])


def _split(tree):
  """{path: spec} of the leaves of a sharding tree that are not replicated."""
  return {jax.tree_util.keystr(path): tuple(s.spec)
          for path, s in jax.tree_util.tree_leaves_with_path(tree)
          if not s.is_fully_replicated}


@pytest.mark.parametrize('method_name', ['ssah', 'dcmh'])
def test_wide_layers_split_over_model(tiny_config, method_name):
  """On data=4 x model=2 the default rules split the wide layers' 'mlp'
  width over `model`: CNN-F's fc6 kernel by columns (and its bias), fc7's by
  rows (the Megatron pair: fc7's bias stays whole), the text trunk's (and
  SSAH's LabNet's) hidden layer by columns; each split param's optimizer
  moments follow it; every other param is replicated. `method.init` itself
  returns plain arrays (the names exist only in the harness's trace), shaped
  like the sharding tree. On data=8, or with rules that do not name 'mlp',
  every param is replicated, as before."""
  config = (tiny_config() if method_name == 'ssah' else _dcmh_config(
      'dataset.name=synthetic', 'model.image_encoder=cnnf_small',
      'dataset.image_size=16'))
  method, rng = _method(config), jax.random.PRNGKey(0)
  arrays = method_batches.train_arrays(config)
  rules = sharding.rules_from_config(config)
  shardings = harness.state_sharding(method, rng, arrays,
                                     _mesh('data4_model2'), rules)
  column, row, bias = (None, 'model'), ('model', None), ('model',)
  text = {'ssah': 'dense', 'dcmh': 'dense_0'}[method_name]
  expected = {"['img']['encoder']['fc6']['kernel']": column,
              "['img']['encoder']['fc6']['bias']": bias,
              "['img']['encoder']['fc7']['kernel']": row,
              f"['txt']['encoder']['{text}']['kernel']": column,
              f"['txt']['encoder']['{text}']['bias']": bias}
  if method_name == 'ssah':
    expected.update({"['lab']['encoder']['dense']['kernel']": column,
                     "['lab']['encoder']['dense']['bias']": bias})
  assert _split(shardings.params) == expected
  # Adam's mu and nu (SSAH), SGD's momentum trace (DCMH), per network.
  moments = _split(shardings.opt_state)
  assert len(moments) == len(expected) * (2 if method_name == 'ssah' else 1)
  for path, spec in moments.items():
    network = re.match(r"\['(\w+)'\]", path).group(1)
    assert spec == expected[f"['{network}']" + path[path.index(
        "['encoder']"):]], path
  # The memories keep their rows over `data`.
  assert set(_split(shardings.memory).values()) == {('data', None)}
  state = jax.eval_shape(method.init, rng, arrays)
  assert not any(isinstance(x, nn.LogicallyPartitioned) for x in
                 jax.tree.leaves(state, is_leaf=lambda x: isinstance(
                     x, nn.LogicallyPartitioned)))
  assert jax.tree.structure(state) == jax.tree.structure(shardings)
  for mesh_name, plain_rules in (('data8', rules),
                                 ('data4_model2', (('items', 'data'),))):
    plain = harness.state_sharding(method, rng, arrays, _mesh(mesh_name),
                                   plain_rules)
    assert _split(plain.replace(memory={})) == {}, mesh_name


@pytest.mark.slow  # SSAH's init alone compiles for 12 s on 2 cores.
@pytest.mark.parametrize('method_name', ['ssah', 'dcmh'])
def test_model_axis_steps_equal_data_axis(tiny_config, method_name):
  """Steps on data=4 x model=2 (the wide layers' hidden width, 64 here,
  split over `model`, the items over `data`) equal the data=8 run (items over
  8 devices, params replicated). The split layers' matmuls and the LRN over
  their channels add partial sums in another order than one device, so the
  results agree to float32 rounding, amplified as in
  test_sharded_steps_equal_replicated (Adam: atol 1e-4; SGD: 1e-6). The
  default suite's check of model-split steps is DCMH's
  test_sharded_steps_equal_replicated[dcmh-data4_model2] (against
  replicated params on the same mesh)."""
  config = (tiny_config(*SSAH_TINY) if method_name == 'ssah'
            else _dcmh_config())
  method = _method(config)
  arrays = method_batches.train_arrays(config)
  rules = sharding.rules_from_config(config)
  lr = method.schedule(0)[0].learning_rate
  split, _, gathers = _steps(method, arrays, _mesh('data4_model2'), rules, lr)
  assert gathers == {n: [] for n in method.updates}
  data8, _, _ = _steps(method, arrays, _mesh('data8'), rules, lr)
  chex.assert_trees_all_close(split, data8, rtol=1e-5,
                              atol=1e-4 if method_name == 'ssah' else 1e-6)


def test_model_sharded_run_resumes_exactly(tmp_path):
  """On data=4 x model=2, a run killed after pass 1 and resumed for pass 2
  saves the state of a run that went straight through, bit for bit (the
  checkpoint holds plain arrays: no partitioning boxes); orbax restores it
  onto data=8, params whole on every device."""
  config = _dcmh_config('mesh.data=4', 'mesh.model=2')
  state_b = _straight_equals_resumed(config, tmp_path)
  with harness.Run.open(config, str(tmp_path / 'b'), checkpoint_every=1,
                        eval_every=0) as run:
    restored, _ = run.init_or_restore('pass_index', batches_per_unit=4)
    kernel = restored.params['img']['encoder']['dense_0']['kernel']
    assert _spec(kernel) == (None, 'model')
    assert kernel.addressable_shards[0].data.shape == (48, 64 // 2)
  # Restored for encoding on data=4 x model=2: the wide layers stay split.
  run = run_artifacts.load_run(str(tmp_path / 'b'),
                               mesh=_mesh('data4_model2'))
  assert _spec(run.params['img']['encoder']['dense_0']['kernel']) == (
      None, 'model')
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.params),
               state_b['params'])
  with harness.Run.open(_dcmh_config(), str(tmp_path / 'b'),
                        checkpoint_every=1, eval_every=0) as run:
    restored, start = run.init_or_restore('pass_index', batches_per_unit=4)
    assert start == 2
    assert all(x.is_fully_replicated
               for x in jax.tree.leaves(restored.params))
    host = jax.device_get(restored)
    for part in ('params', 'memory', 'step', 'rng'):
      jax.tree.map(np.testing.assert_array_equal, getattr(host, part),
                   state_b[part])


def test_split_layer_with_lrn_equals_whole():
  """SSAH's LabNet ends its split layer in an LRN over the channels, a window
  that crosses the split: its output and gradient with the params placed by
  the default rules on data=4 x model=2 (the batch over `data`) equal one
  device's to float32 rounding. This is the default suite's SSAH check of
  the split; SSAH's whole steps against data=8 are
  test_model_axis_steps_equal_data_axis (slow)."""
  encoder = label.LabelEncoder(hidden=64)
  labels = jax.random.bernoulli(jax.random.PRNGKey(1), 0.3,
                                (32, 8)).astype(jnp.float32)
  with layers.logical_boxes():
    boxed = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), labels)
  mesh = _mesh('data4_model2')
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh,
                                          sharding.LOGICAL_AXIS_RULES)
  params = encoder.init(jax.random.PRNGKey(0), labels)
  split = jax.device_put(params, shardings)
  assert _spec(split['params']['dense']['kernel']) == (None, 'model')

  def loss(variables, x):
    y = encoder.apply(variables, x)
    return jnp.sum(jnp.sin(y) * jnp.arange(64.0)), y

  grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (value, out), grads = grad(
      split, jax.device_put(labels, sharding.batch_sharded(mesh)))
  assert _spec(grads['params']['dense']['kernel']) == (None, 'model')
  with jax.default_device(jax.devices()[0]):
    (value_1, out_1), grads_1 = jax.jit(jax.value_and_grad(
        loss, has_aux=True))(jax.device_get(params), labels)
  chex.assert_trees_all_close((value, out, grads), (value_1, out_1, grads_1),
                              rtol=1e-5, atol=1e-6)
