"""Tests of crossmodal_hash.models.cnnf_weights (imagenet-vgg-f.mat import).

Each test writes a MatConvNet simplenn file with scipy.io.savemat: the real
CNN-F shapes (about 245 MB, written once per module) for the parameter and
forward-pass checks, and a narrow CNN-F (same geometry, few channels) for the
format variants and the errors.
"""
from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io

from crossmodal_hash import sharding
from crossmodal_hash.data import mat_files
from crossmodal_hash.data import preprocess
from crossmodal_hash.data import validation
from crossmodal_hash.methods import registry
from crossmodal_hash.models import cnnf
from crossmodal_hash.models import cnnf_weights
from crossmodal_hash.models import registry as models_registry
from crossmodal_hash.trainers import harness

DataFormatError = validation.DataFormatError

CNNF_CONV = (64, 256, 256, 256, 256)
CNNF_FC = (4096, 4096, 1000)
NARROW_CONV = (8, 16, 16, 16, 16)
NARROW_FC = (32, 32, 10)
LRN_PARAM = [5.0, 2.0, 1e-4, 0.75]
PAD_01 = [0.0, 1.0, 0.0, 1.0]
CNNF_CONFIGS = ('ssah_mirflickr', 'ssah_nuswide', 'ssah_mscoco',
                'ssah_iaprtc12', 'dcmh_mirflickr')


def _narrow_trunk() -> cnnf.CNNF:
  return cnnf.CNNF(conv_features=NARROW_CONV, fc_features=NARROW_FC[:2])


def _conv(name, filters, biases, stride, pad, old_format):
  layer = {'name': name, 'type': 'conv', 'stride': np.array([stride] * 2,
                                                            float),
           'pad': np.array([pad] * 4, float)}
  if old_format:
    layer.update(filters=filters, biases=biases)
  else:
    layer['weights'] = _weights_cell(filters, biases)
  return layer


def _weights_cell(filters, biases):
  """MatConvNet's 1x2 cell {filters, biases}."""
  cell = np.empty((1, 2), object)
  cell[0, 0], cell[0, 1] = filters, biases
  return cell


def _net(conv=CNNF_CONV, fc=CNNF_FC, *, old_format=False, mean='image',
         pool2_pad=(0.0,), seed=0):
  """The layers of a simplenn CNN-F as MatConvNet stores them, and a mean.

  Weights are He-scaled normals, so activations stay O(1) through the trunk.

  Returns:
    (layers: the `layers` cell entries as dicts, mean image: [224, 224, 3] or
    a per-channel [1, 1, 3]).
  """
  rng = np.random.default_rng(seed)
  in_channels = (3,) + tuple(conv[:-1])
  shapes = [(11, 11), (5, 5), (3, 3), (3, 3), (3, 3)]
  geometry = [(4, 0), (1, 2), (1, 1), (1, 1), (1, 1)]
  filters = {f'conv{i + 1}': shapes[i] + (in_channels[i], conv[i])
             for i in range(5)}
  filters['fc6'] = (6, 6, conv[-1], fc[0])
  filters['fc7'] = (1, 1, fc[0], fc[1])
  filters['fc8'] = (1, 1, fc[1], fc[2])
  weights = {}
  for name, shape in filters.items():
    fan_in = np.prod(shape[:3])
    weights[name] = (
        (rng.standard_normal(shape, np.float32) *
         np.float32(np.sqrt(2.0 / fan_in))),
        # Biases as [out], [1, out] and [out, 1] across the layers.
        (rng.standard_normal(shape[-1], np.float32) * 0.1).reshape(
            [(-1,), (1, -1), (-1, 1)][len(weights) % 3]))
  layers = []
  for i in range(5):
    name = f'conv{i + 1}'
    layers += [_conv(name, *weights[name], *geometry[i], old_format),
               {'name': f'relu{i + 1}', 'type': 'relu'}]
    if i < 2:
      layers.append({'name': f'norm{i + 1}',
                     'type': 'normalize' if old_format else 'lrn',
                     'param': np.array(LRN_PARAM)})
    if i in (0, 1, 4):
      layers.append({'name': f'pool{i + 1}', 'type': 'pool', 'method': 'max',
                     'pool': np.array([3.0, 3.0]), 'stride': np.array(2.0),
                     'pad': np.array(PAD_01 if i != 1 else pool2_pad)})
  for j, name in enumerate(('fc6', 'fc7', 'fc8')):
    layers.append(_conv(name, *weights[name], 1, 0, old_format))
    if j < 2:
      layers += [{'name': f'relu{6 + j}', 'type': 'relu'},
                 {'name': f'drop{6 + j}', 'type': 'dropout', 'rate': 0.5}]
  layers.append({'name': 'prob', 'type': 'softmax'})
  if mean == 'image':
    average = rng.uniform(0, 255, (224, 224, 3)).astype(np.float32)
  else:
    average = np.array([[[123.68, 116.78, 103.94]]], np.float32)
  return layers, average


def _save(path, layers, average, *, old_format=False, wrap=False):
  """Writes {'layers', 'meta'} (old format: 'normalization'), or a `net`."""
  cell = np.empty((1, len(layers)), object)
  for i, layer in enumerate(layers):
    cell[0, i] = layer
  normalization = {'averageImage': average,
                   'imageSize': np.array([224.0, 224.0, 3.0])}
  net = {'layers': cell}
  if old_format:
    net['normalization'] = normalization
  else:
    net['meta'] = {'normalization': normalization,
                   'classes': {'name': np.array(['n01440764'], object)}}
  scipy.io.savemat(path, {'net': net} if wrap else net)
  return str(path)


def _weights(layer):
  if 'weights' in layer:
    return layer['weights'][0, 0], layer['weights'][0, 1]
  return layer['filters'], layer['biases']


def _by_name(layers):
  return {layer['name']: layer for layer in layers}


class _Real(NamedTuple):
  path: str
  layers: list[dict[str, Any]]
  average: np.ndarray
  pretrained: cnnf_weights.PretrainedCNNF


@pytest.fixture(name='real', scope='module')
def _real(tmp_path_factory) -> _Real:
  """The real-shaped file, its source layers and mean, and the import."""
  layers, average = _net()
  path = _save(tmp_path_factory.mktemp('vggf') / 'imagenet-vgg-f.mat', layers,
               average)
  return _Real(path, layers, average, cnnf_weights.maybe_load(path, 'cnnf'))


@pytest.fixture(name='narrow')
def _narrow(tmp_path):
  """narrow(mutate, net_kw, **save_kw) -> path of a narrow CNN-F file.

  mutate(layers, mean) -> (layers, mean) edits it before it is written;
  net_kw go to `_net`, save_kw to `_save`.
  """

  def make(mutate=None, net_kw=None, **save_kw):
    layers, average = _net(NARROW_CONV, NARROW_FC, **(net_kw or {}))
    if mutate is not None:
      layers, average = mutate(layers, average)
    return _save(tmp_path / 'net.mat', layers, average, **save_kw)

  return make


def _load_narrow(path):
  return cnnf_weights.load_matconvnet_cnnf(path, trunk=_narrow_trunk())


def _assert_same_as_source(params, layers):
  """Every imported array equals the file's, fc kernels row-major reshaped."""
  source = _by_name(layers)
  for name, leaves in params.items():
    filters, biases = _weights(source[name])
    np.testing.assert_array_equal(leaves['bias'], biases.reshape(-1))
    if name.startswith('conv'):
      np.testing.assert_array_equal(leaves['kernel'], filters)
    else:
      np.testing.assert_array_equal(leaves['kernel'],
                                    filters.reshape(-1, filters.shape[-1]))


# ----------------------------------------------------------- the real file --


def test_params_have_the_model_structure_and_the_file_values(real):
  layers, average, pretrained = real.layers, real.average, real.pretrained
  expected = jax.eval_shape(
      lambda: cnnf.cnnf_224().init(jax.random.key(0),
                                   jnp.zeros((1, 224, 224, 3))))['params']
  got = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                     pretrained.params)
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  assert jax.tree.leaves(got) == jax.tree.leaves(expected)
  assert set(pretrained.params) == {'conv1', 'conv2', 'conv3', 'conv4',
                                    'conv5', 'fc6', 'fc7'}  # no fc8
  _assert_same_as_source(pretrained.params, layers)
  # fc6's row (y * 6 + x) * 256 + c is MatConvNet's F[y, x, c, :].
  fc6 = _weights(_by_name(layers)['fc6'])[0]
  for y, x, c in ((0, 0, 0), (0, 1, 0), (1, 0, 0), (2, 5, 17), (5, 5, 255)):
    np.testing.assert_array_equal(
        pretrained.params['fc6']['kernel'][(y * 6 + x) * 256 + c], fc6[y, x, c])
  np.testing.assert_array_equal(pretrained.mean_image, average)
  assert pretrained.mean_image.dtype == np.float32


def _simplenn_forward(layers, x):
  """vl_simplenn's forward pass in jax.lax, up to fc8 (not included).

  Follows the layer structs as written: convs with [top bottom left right]
  zero padding (fc6 as a 6 x 6 'valid' conv), max pools padded with -inf,
  MatConvNet LRN y = x / (kappa + alpha * sum_{N channels} x^2) ^ beta.
  """
  hi = lax.Precision.HIGHEST
  for layer in layers:
    kind = layer['type']
    if layer['name'] == 'fc8':
      break
    if kind == 'conv':
      filters, biases = _weights(layer)
      t, b, l, r = (int(p) for p in layer['pad'])
      s = int(layer['stride'][0])
      x = lax.conv_general_dilated(
          x, jnp.asarray(filters), (s, s), [(t, b), (l, r)],
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=hi)
      x = x + biases.reshape(-1)
    elif kind == 'relu':
      x = jnp.maximum(x, 0)
    elif kind in ('lrn', 'normalize'):
      n, kappa, alpha, beta = layer['param']
      half = (int(n) - 1) // 2
      sums = lax.reduce_window(x * x, 0.0, lax.add, (1, 1, 1, int(n)),
                               (1, 1, 1, 1),
                               [(0, 0), (0, 0), (0, 0), (half, half)])
      x = x / (kappa + alpha * sums) ** beta
    elif kind == 'pool':
      t, b, l, r = (int(p) for p in np.broadcast_to(layer['pad'], (4,)))
      x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                            [(0, 0), (t, b), (l, r), (0, 0)])
  return x.reshape(x.shape[0], -1)


def test_forward_pass_equals_a_matconvnet_reference(real):
  layers, pretrained = real.layers, real.pretrained
  rng = np.random.default_rng(1)
  pixels = rng.uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
  x = jnp.asarray(pixels - pretrained.mean_image)
  trunk = cnnf.cnnf_224()
  params = {'params': pretrained.params}
  ours = trunk.apply(params, x)
  want = _simplenn_forward(layers, x)
  assert ours.shape == want.shape == (1, 4096)
  scale = float(jnp.abs(want).max())
  assert scale > 0 and float(jnp.mean(want > 0)) > 0.05
  np.testing.assert_allclose(ours, want, rtol=1e-4, atol=1e-5 * scale)
  # conv1 + ReLU alone, from the file's arrays by hand.
  conv1 = trunk.clone(conv_features=CNNF_CONV[:1], conv_kernels=(11,),
                      conv_strides=(4,), conv_paddings=(0,),
                      lrn_after=(False,), pool_after=(False,), fc_features=())
  first = {'params': {'conv1': pretrained.params['conv1']}}
  got = conv1.apply(first, x).reshape(1, 54, 54, 64)
  np.testing.assert_allclose(got, _simplenn_forward(layers[:2], x).reshape(
      1, 54, 54, 64), rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- variants --


def test_older_format_per_channel_mean_and_no_fc8(narrow):
  """filters/biases fields, top-level normalization, [1, 1, 3] mean, no fc8."""

  def dcmh_style(layers, average):
    cut = next(i for i, layer in enumerate(layers) if layer['name'] == 'fc8')
    return layers[:cut], average

  path = narrow(dcmh_style, old_format=True,
                net_kw=dict(old_format=True, mean='channel',
                            pool2_pad=PAD_01))
  params, mean = _load_narrow(path)
  _assert_same_as_source(params, _net(NARROW_CONV, NARROW_FC, old_format=True,
                                      mean='channel')[0])
  assert mean.shape == (224, 224, 3) and mean.dtype == np.float32
  np.testing.assert_allclose(mean[17, 200], [123.68, 116.78, 103.94],
                             rtol=1e-6)


def test_a_net_struct_loads_too(narrow):
  params, mean = _load_narrow(narrow(wrap=True))
  _assert_same_as_source(params, _net(NARROW_CONV, NARROW_FC)[0])
  assert mean.shape == (224, 224, 3)


# ------------------------------------------------------------------ errors --


def _drop(name):
  return lambda layers, avg: ([l for l in layers if l['name'] != name], avg)


def _set(name, **fields):

  def mutate(layers, average):
    layers = [dict(l) for l in layers]
    for layer in layers:
      if layer['name'] == name:
        layer.update(fields)
    return layers, average

  return mutate


def _strip_weights(name):
  return lambda layers, avg: ([
      {k: v for k, v in l.items() if l['name'] != name or k != 'weights'}
      for l in layers], avg)


def _vgg16_names(layers, average):
  renamed = [dict(l, name=l['name'].replace('conv1', 'conv1_1'))
             for l in layers]
  return renamed, average


BAD_FILES = {
    'missing conv3': (_drop('conv3'), 'has no layer conv3'),
    'VGG-16 layer names': (_vgg16_names, 'has no layer conv1 .*conv1_1'),
    'VGG-M conv1 shape': (_set('conv1', weights=_weights_cell(
        np.zeros((7, 7, 3, 96), np.float32), np.zeros(96, np.float32))),
                          r'conv1 has filters of shape \(7, 7, 3, 96\)'),
    'flat fc6': (_set('fc6', weights=_weights_cell(
        np.zeros((1, 1, 576, 32), np.float32), np.zeros(32, np.float32))),
                 r'fc6 has filters of shape \(1, 1, 576, 32\).*\(6, 6, 16, '
                 r'32\)'),
    'wrong bias count': (_set('conv2', weights=_weights_cell(
        np.zeros((5, 5, 8, 16), np.float32), np.zeros(15, np.float32))),
                         'conv2 has biases of shape'),
    'NaN filters': (_set('conv4', weights=_weights_cell(
        np.full((3, 3, 16, 16), np.nan, np.float32), np.zeros(16,
                                                             np.float32))),
                    'conv4 filters hold NaN'),
    'no weights': (_strip_weights('conv5'), 'conv5 has no weights'),
    'conv1 stride 2': (_set('conv1', stride=np.array([2.0, 2.0])),
                       r'conv1 has stride \[2, 2\]'),
    'conv2 pad 1': (_set('conv2', pad=np.array(1.0)), 'conv2 has pad'),
    'pool1 unpadded': (_set('pool1', pad=np.array(0.0)), 'pool1 pools'),
    'average pool': (_set('pool5', method='avg'), 'pool5 is a avg pool'),
    'no LRN after conv1': (_drop('norm1'),
                           "between conv1 and conv2 .*'relu', 'pool'"),
    'LRN alpha': (_set('norm2', param=np.array([5.0, 2.0, 2e-5, 0.75])),
                  'norm2 has LRN param'),
    'empty mean image': (lambda layers, avg: (layers, np.zeros((0, 0))),
                         r'averageImage has shape \(0, 0\)'),
    'mean image size': (lambda layers, avg: (layers, np.zeros((256, 256, 3))),
                        r'averageImage has shape \(256, 256, 3\)'),
}


@pytest.mark.parametrize('case', list(BAD_FILES))
def test_bad_layers_name_the_file_and_the_problem(narrow, case):
  mutate, message = BAD_FILES[case]
  path = narrow(mutate)
  with pytest.raises(DataFormatError, match=message) as error:
    _load_narrow(path)
  assert path in str(error.value)


def test_files_that_are_no_network_name_the_file(tmp_path, narrow):
  text = tmp_path / 'weights.txt'
  text.write_text('not a network\n')
  no_layers = tmp_path / 'features.mat'
  scipy.io.savemat(no_layers, {'I_tr': np.zeros((2, 3))})
  no_meta = tmp_path / 'no_meta.mat'
  layers, _ = _net(NARROW_CONV, NARROW_FC)
  cell = np.empty((1, len(layers)), object)
  cell[0, :] = layers
  scipy.io.savemat(no_meta, {'layers': cell})
  v73 = tmp_path / 'v73.mat'
  mat_files.save_v73(str(v73), {'layers': np.zeros((2, 2), np.float32)})
  with open(narrow(), 'rb') as f:
    whole = f.read()
  truncated = tmp_path / 'truncated.mat'
  truncated.write_bytes(whole[:len(whole) // 2])
  cases = {text: 'not a MATLAB .mat file', no_layers: r'no `layers`.*I_tr',
           no_meta: 'has no mean image', v73: r'v7.3 \(HDF5\)',
           truncated: 'truncated or corrupt'}
  for path, message in cases.items():
    with pytest.raises(DataFormatError, match=message) as error:
      _load_narrow(str(path))
    assert str(path) in str(error.value)
  with pytest.raises(FileNotFoundError, match='missing.mat'):
    cnnf_weights.load_matconvnet_cnnf(str(tmp_path / 'missing.mat'))


# ------------------------------------------------------- wiring in methods --


def _abstract_state(config_name: str, **model):
  config = importlib.import_module(config_name).get_config()
  config.model.update(model)
  method = registry.METHODS.get(config.method)(config, num_labels=24,
                                               text_dim=1386)
  data = {'image': jax.ShapeDtypeStruct((16, 224, 224, 3), jnp.uint8),
          'text': jax.ShapeDtypeStruct((16, 1386), jnp.uint8),
          'label': jax.ShapeDtypeStruct((16, 24), jnp.uint8)}
  return jax.eval_shape(method.init, jax.random.key(0), data)


@pytest.mark.parametrize('config_name', ['ssah_mirflickr', 'dcmh_mirflickr'])
def test_merge_into_replaces_the_image_trunk_of_a_method(real, config_name):
  pretrained = real.pretrained
  params = _abstract_state(config_name).params
  merged = pretrained.merge_into(params)
  for name, leaves in pretrained.params.items():
    for key, value in leaves.items():
      # The file's float32 arrays themselves (cast only if dtypes differed).
      assert np.shares_memory(merged['img']['encoder'][name][key], value)
  assert merged['txt'] is params['txt']
  assert {k: v for k, v in merged['img'].items() if k != 'encoder'} == {
      k: v for k, v in params['img'].items() if k != 'encoder'}
  assert jax.tree.structure(merged) == jax.tree.structure(params)


def test_merge_into_names_the_file_and_the_mismatched_layer(real):
  path, pretrained = real.path, real.pretrained
  small = jax.eval_shape(
      lambda: cnnf.cnnf_small().init(jax.random.key(0),
                                     jnp.zeros((1, 32, 32, 3))))['params']
  with pytest.raises(DataFormatError,
                     match=r'layer img/encoder/conv1/bias has shape \(64,\) in '
                     r'the file but \(32,\) in the model') as error:
    pretrained.merge_into({'img': {'encoder': small}})
  assert path in str(error.value)
  del small['fc7']
  with pytest.raises(DataFormatError, match=r"only in the file: \['fc7/bias'"):
    pretrained.merge_into({'img': {'encoder': small}})
  with pytest.raises(ValueError, match="no 'img/encoder'"):
    pretrained.merge_into({'img': {'trunk': small}})


def test_maybe_load_follows_the_config_values(real):
  assert cnnf_weights.maybe_load('', 'cnnf') is None
  assert cnnf_weights.maybe_load('', 'cnnf_small') is None
  with pytest.raises(ValueError, match="image_encoder='cnnf'"):
    cnnf_weights.maybe_load(real.path, 'cnnf_small')


@pytest.mark.parametrize('config_name', CNNF_CONFIGS)
def test_cnnf_configs_train_from_scratch_by_default(config_name):
  config = importlib.import_module(config_name).get_config()
  assert config.model.image_encoder == 'cnnf'
  assert isinstance(config.model.pretrained_cnnf, str)
  assert not config.model.pretrained_cnnf


# ----------------------------------------------------- pretrained mean image --


def test_pretrained_mean_normalization_subtracts_the_mean_image(real):
  mean_image = real.pretrained.mean_image
  images = np.random.default_rng(2).integers(0, 256, (3, 224, 224, 3),
                                             dtype=np.uint8)
  mean, inv_scale = preprocess.image_statistics(images, 'pretrained_mean',
                                                mean_image=mean_image)
  np.testing.assert_array_equal(mean, mean_image)
  np.testing.assert_array_equal(inv_scale, np.ones(3, np.float32))
  np.testing.assert_allclose(preprocess.normalize(images, mean, inv_scale),
                             images.astype(np.float32) - mean_image)
  with pytest.raises(ValueError, match='config.model.pretrained_cnnf'):
    preprocess.image_statistics(images, 'pretrained_mean')
  with pytest.raises(ValueError, match=r'mean image is \[224, 224, 3\] but the '
                     r'images are \[32, 32, 3\]'):
    preprocess.image_statistics(images[:, :32, :32], 'pretrained_mean',
                                mean_image=mean_image)


# ------------------------------------------------------- wiring in the trainer --


def test_the_trainer_starts_from_the_pretrained_trunk_and_mean(real, tmp_path):
  """A fresh run takes conv1..fc7 and the mean image from the file."""
  config = importlib.import_module('dcmh_synthetic').get_config(','.join((
      'dataset.image_size=224', 'dataset.num_items=24', 'dataset.num_query=4',
      'dataset.num_train=16', 'model.image_encoder=cnnf',
      'model.text_hidden=32', 'model.image_normalization=pretrained_mean',
      f'model.pretrained_cnnf={real.path}', 'train.batch_size=8')))
  data, split = harness.load_data(config, str(tmp_path))
  train = data.take(split.train)
  # One device: CNN-F's compilation for eight would dominate the suite's time.
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  placement, (mean, inv_scale), device_data = harness.place_training_set(
      config, train, mesh, models_registry.mean_image(config.model))
  assert placement == 'device'
  np.testing.assert_array_equal(mean, real.pretrained.mean_image)
  np.testing.assert_array_equal(inv_scale, np.ones(3, np.float32))

  method = registry.METHODS.get('dcmh')(config, num_labels=data.num_labels,
                                        text_dim=data.text_dim)
  # The method's init_pretrained merges the file's trunk (models/registry).
  state = harness.fresh_state(method, config.seed, device_data, mesh)
  trunk = state.params['img']['encoder']
  for name, leaves in real.pretrained.params.items():
    for key, value in leaves.items():
      np.testing.assert_array_equal(np.asarray(trunk[name][key]), value)
  scratch = harness.fresh_state(method, config.seed, device_data, mesh,
                                pretrained=False)
  scratch_fc7 = scratch.params['img']['encoder']['fc7']['kernel']
  assert not np.array_equal(np.asarray(scratch_fc7),
                            real.pretrained.params['fc7']['kernel'])
  # Everything outside the image trunk is the fresh initialisation.
  np.testing.assert_array_equal(
      np.asarray(jax.tree.leaves(state.params['txt'])[0]),
      np.asarray(jax.tree.leaves(scratch.params['txt'])[0]))
