"""Tests of crossmodal_hash.models: shapes, numerics, dtypes and initialisation."""
from __future__ import annotations

import chex
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash.models import cnnf
from crossmodal_hash.models import discriminator
from crossmodal_hash.models import hashing_net
from crossmodal_hash.models import heads
from crossmodal_hash.models import label
from crossmodal_hash.models import layers
from crossmodal_hash.models import mlp
from crossmodal_hash.models import text

KEY = jax.random.key(0)


def _init_apply(module, x, key=KEY):
  variables = module.init(key, x)
  return variables, module.apply(variables, x)


def _lrn_reference(x, depth_radius, bias, alpha, beta):
  """A plain loop over channels, in float64."""
  x = np.asarray(x, np.float64)
  out = np.empty_like(x)
  channels = x.shape[-1]
  for d in range(channels):
    lo, hi = max(0, d - depth_radius), min(channels, d + depth_radius + 1)
    sqr_sum = np.sum(x[..., lo:hi] ** 2, axis=-1)
    out[..., d] = x[..., d] / (bias + alpha * sqr_sum) ** beta
  return out


# ---------------------------------------------------------------- layers


@pytest.mark.parametrize('depth_radius,bias,alpha,beta,channels', [
    (2, 2.0, 1e-4, 0.75, 16),  # CNN-F.
    (0, 1.0, 1e-2, 0.5, 7),
    (1, 1.0, 1e-2, 0.75, 3),
    (5, 0.5, 1e-3, 1.0, 4),  # Window wider than the channel axis.
])
def test_lrn_matches_numpy_loop(depth_radius, bias, alpha, beta, channels):
  x = 30.0 * jax.random.normal(KEY, (2, 3, channels))
  got = layers.local_response_norm(x, depth_radius, bias, alpha, beta)
  want = _lrn_reference(x, depth_radius, bias, alpha, beta)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_lrn_defaults_dataclass_and_dtype():
  x = 50.0 * jax.random.normal(KEY, (4, 4096))
  want = _lrn_reference(x, 2, 2.0, 1e-4, 0.75)
  np.testing.assert_allclose(layers.LocalResponseNorm()(x), want, rtol=2e-5)
  np.testing.assert_allclose(layers.local_response_norm(x), want, rtol=2e-5)
  y = layers.local_response_norm(x.astype(jnp.bfloat16))
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(y.astype(np.float32), want, rtol=2e-2, atol=1e-2)
  with pytest.raises(ValueError):
    layers.local_response_norm(x, depth_radius=-1)


def test_normal_init_std():
  w = layers.normal_init(0.01)(KEY, (256, 256))
  assert abs(float(jnp.std(w)) - 0.01) < 0.0005
  assert layers.kernel_init(None)(KEY, (4, 4)).shape == (4, 4)


# ---------------------------------------------------------------- CNN-F


def test_cnnf_224_shapes_via_eval_shape():
  model = cnnf.cnnf_224()
  x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, KEY, x)
  params = variables['params']
  assert set(params) == {'conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6',
                         'fc7'}
  shapes = jax.tree_util.tree_map(lambda a: a.shape, params)
  assert shapes['conv1']['kernel'] == (11, 11, 3, 64)
  assert shapes['conv2']['kernel'] == (5, 5, 64, 256)
  assert shapes['conv5']['kernel'] == (3, 3, 256, 256)
  assert shapes['fc6']['kernel'] == (6 * 6 * 256, 4096)
  assert shapes['fc7']['kernel'] == (4096, 4096)

  out, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, capture_intermediates=True), variables, x)
  chex.assert_shape(out, (2, 4096))
  assert out.dtype == jnp.float32
  inter = state['intermediates']
  chex.assert_shape(inter['conv1']['__call__'][0], (2, 54, 54, 64))
  chex.assert_shape(inter['conv2']['__call__'][0], (2, 27, 27, 256))
  chex.assert_shape(inter['conv5']['__call__'][0], (2, 13, 13, 256))


@pytest.mark.parametrize('size,fc6_inputs', [(32, 4 * 4 * 64),
                                             (64, 8 * 8 * 64)])
def test_cnnf_small(size, fc6_inputs):
  model = cnnf.cnnf_small()
  x = jax.random.normal(KEY, (2, size, size, 3))
  variables, out = _init_apply(model, x)
  chex.assert_shape(out, (2, 512))
  chex.assert_tree_all_finite(out)
  assert variables['params']['fc6']['kernel'].shape == (fc6_inputs, 512)
  assert bool(jnp.all(out >= 0))  # ReLU after fc7.


def test_cnnf_rejects_too_small_input_and_bad_config():
  with pytest.raises(ValueError, match='too small'):
    cnnf.cnnf_224().init(KEY, jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match='conv_kernels'):
    cnnf.CNNF(conv_kernels=(3,)).init(KEY, jnp.zeros((1, 32, 32, 3)))


# ---------------------------------------------------------------- MLP, labels


def test_mlp_shapes_and_options():
  x = jax.random.normal(KEY, (3, 20))
  variables, out = _init_apply(mlp.MLP(features=(16, 8)), x)
  assert set(variables['params']) == {'dense_0', 'dense_1'}
  chex.assert_shape(out, (3, 8))
  assert bool(jnp.all(out >= 0))

  model = mlp.MLP(features=(16, 8), lrn_final=True, init_std=0.01)
  variables, out = _init_apply(model, x)
  h = mlp.MLP(features=(16, 8), init_std=0.01).apply(variables, x)
  np.testing.assert_allclose(out, layers.local_response_norm(h), rtol=1e-6)

  _, out = _init_apply(mlp.MLP(features=(32,), activate_final=False), x)
  assert bool(jnp.any(out < 0))


def test_label_encoder():
  labels = jnp.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]], jnp.uint8)
  variables, out = _init_apply(label.LabelEncoder(hidden=64), labels)
  assert set(variables['params']) == {'dense'}
  assert variables['params']['dense']['kernel'].shape == (5, 64)
  chex.assert_shape(out, (2, 64))
  chex.assert_tree_all_finite(out)


# ---------------------------------------------------------------- text


def test_multi_scale_fusion_shapes_and_raw_channel():
  vocab = 123
  x = jax.random.bernoulli(KEY, 0.2, (4, vocab)).astype(jnp.float32)
  model = text.MultiScaleFusion()
  variables, out = _init_apply(model, x)
  chex.assert_shape(out, (4, vocab, 6))
  np.testing.assert_array_equal(out[..., 0], x)
  params = variables['params']
  assert set(params) == {f'branch_{w}' for w in (5, 10, 15, 30, 50)}
  for branch in params.values():
    assert set(branch) == {'kernel'}  # No bias, as in the official code.
    assert branch['kernel'].shape == (1, 1)
  assert bool(jnp.all(out[..., 1:] >= 0))


def test_multi_scale_fusion_branch_values():
  vocab = 20
  x = jnp.arange(2 * vocab, dtype=jnp.float32).reshape(2, vocab)
  model = text.MultiScaleFusion(pool_windows=(5, 20), branch_bias=True)
  variables = model.init(KEY, x)
  variables = jax.tree_util.tree_map(jnp.ones_like, variables)  # w = b = 1.
  out = model.apply(variables, x)
  pooled = np.asarray(x.reshape(2, 4, 5).mean(-1) + 1.0)
  # TF1 resize_bilinear: output j reads input j * 4 / 20, clamped at the end.
  src = np.arange(vocab) * 4 / vocab
  lo = np.floor(src).astype(int)
  hi = np.minimum(lo + 1, 3)
  expected = pooled[:, lo] * (1 - (src - lo)) + pooled[:, hi] * (src - lo)
  np.testing.assert_allclose(out[..., 1], expected, rtol=1e-6)
  # One window over the whole text: the branch is constant per row.
  np.testing.assert_allclose(
      out[..., 2], jnp.broadcast_to(x.mean(-1, keepdims=True) + 1.0, (2, vocab)),
      rtol=1e-6)


def test_multi_scale_fusion_rejects_short_vocabulary():
  with pytest.raises(ValueError, match='max\\(pool_windows\\)'):
    text.MultiScaleFusion().init(KEY, jnp.zeros((2, 49)))


def test_text_encoder_shapes_and_all_zero_text():
  vocab = 60
  x = jax.random.bernoulli(KEY, 0.1, (3, vocab)).astype(jnp.uint8)
  x = x.at[1].set(0)  # An empty text.
  model = text.MultiScaleTextEncoder(hidden=32)
  variables, out = _init_apply(model, x)
  assert set(variables['params']) == {'fusion', 'dense'}
  assert variables['params']['dense']['kernel'].shape == (vocab * 6, 32)
  chex.assert_shape(out, (3, 32))
  chex.assert_tree_all_finite(out)

  net = hashing_net.HashingNet(encoder=model, bits=16, num_labels=5,
                               semantic_dim=24)
  variables = net.init(KEY, x)
  outputs = net.apply(variables, jnp.zeros((2, vocab)))
  chex.assert_tree_all_finite(outputs)


# ---------------------------------------------------------------- heads, D


def test_discriminator():
  x = jax.random.normal(KEY, (5, 24))
  variables, out = _init_apply(discriminator.Discriminator(hidden=(16, 8)), x)
  assert set(variables['params']) == {'dense_0', 'dense_1', 'logit'}
  chex.assert_shape(out, (5,))
  assert out.dtype == jnp.float32

  model = discriminator.Discriminator(hidden=(16,), dtype=jnp.bfloat16)
  variables, out = _init_apply(model, x)
  chex.assert_shape(out, (5,))
  assert out.dtype == jnp.float32


def test_heads():
  x = 10.0 * jax.random.normal(KEY, (4, 32))
  variables, codes = _init_apply(heads.HashHead(bits=12), x)
  assert set(variables['params']) == {'dense'}
  chex.assert_shape(codes, (4, 12))
  assert bool(jnp.all(jnp.abs(codes) < 1.0))
  variables, logits = _init_apply(heads.LabelHead(num_labels=7), x)
  assert set(variables['params']) == {'dense'}
  chex.assert_shape(logits, (4, 7))
  assert logits.dtype == jnp.float32


# ---------------------------------------------------------------- HashingNet


def _feature_net(dtype=jnp.float32, **kwargs):
  encoder = mlp.MLP(features=(64, 48), dtype=dtype)
  return hashing_net.HashingNet(encoder=encoder, bits=16, num_labels=10,
                                dtype=dtype, **kwargs)


def test_hashing_net_outputs():
  x = jax.random.normal(KEY, (6, 40))
  variables, outputs = _init_apply(_feature_net(semantic_dim=32), x)
  assert set(variables['params']) == {'encoder', 'semantic', 'hash', 'label'}
  assert isinstance(outputs, hashing_net.HashOutputs)
  chex.assert_shape([outputs.feature, outputs.code, outputs.label_logits],
                    [(6, 32), (6, 16), (6, 10)])
  chex.assert_tree_all_finite(outputs)
  assert bool(jnp.all(jnp.abs(outputs.code) < 1.0))
  assert bool(jnp.all(outputs.feature >= 0))


def test_hashing_net_with_cnnf_small():
  x = jax.random.normal(KEY, (2, 32, 32, 3))
  net = hashing_net.HashingNet(encoder=cnnf.cnnf_small(), bits=32,
                               num_labels=24)
  variables, outputs = _init_apply(net, x)
  assert set(variables['params']['encoder']) == {
      'conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7'}
  chex.assert_shape([outputs.feature, outputs.code, outputs.label_logits],
                    [(2, 512), (2, 32), (2, 24)])
  chex.assert_tree_all_finite(outputs)


def test_hashing_net_bf16_compute_fp32_params_and_outputs():
  x = jax.random.normal(KEY, (4, 40))
  net = _feature_net(dtype=jnp.bfloat16)
  variables, outputs = _init_apply(net, x)
  for leaf in jax.tree_util.tree_leaves(variables):
    assert leaf.dtype == jnp.float32
  for leaf in jax.tree_util.tree_leaves(outputs):
    assert leaf.dtype == jnp.float32
  chex.assert_tree_all_finite(outputs)
  jaxpr = str(jax.make_jaxpr(net.apply)(variables, x))
  assert 'bf16' in jaxpr
  # Close to the float32 computation with the same params.
  ref = _feature_net().apply(variables, x)
  np.testing.assert_allclose(outputs.code, ref.code, atol=2e-2)


def test_hashing_net_jit_and_pytree_outputs():
  x = jax.random.normal(KEY, (4, 40))
  net = _feature_net()
  variables = net.init(KEY, x)
  outputs = jax.jit(net.apply)(variables, x)
  chex.assert_trees_all_close(outputs, net.apply(variables, x), rtol=1e-5,
                              atol=1e-6)
  assert len(jax.tree_util.tree_leaves(outputs)) == 3


def test_init_std_of_new_layers():
  net = hashing_net.HashingNet(encoder=mlp.MLP(features=(256,)), bits=64,
                               num_labels=24)
  variables = net.init(KEY, jnp.zeros((1, 8)))
  params = variables['params']
  for kernel in (params['semantic']['kernel'], params['hash']['dense']['kernel'],
                 params['label']['dense']['kernel']):
    assert abs(float(jnp.std(kernel)) - 0.01) < 0.001
  np.testing.assert_array_equal(params['hash']['dense']['bias'], 0.0)


def test_init_is_deterministic():
  x = jnp.zeros((2, 40))
  net = _feature_net()
  a = net.init(jax.random.key(3), x)
  b = net.init(jax.random.key(3), x)
  c = net.init(jax.random.key(4), x)
  chex.assert_trees_all_equal(a, b)
  flat_a = traverse_util.flatten_dict(a['params'])
  flat_c = traverse_util.flatten_dict(c['params'])
  assert not np.array_equal(flat_a[('semantic', 'kernel')],
                            flat_c[('semantic', 'kernel')])


def test_binarize():
  codes = jnp.array([[-0.5, 0.0, 0.3, -0.0], [1.0, -1.0, 1e-8, -1e-8]])
  bits = hashing_net.binarize(codes)
  assert bits.dtype == jnp.int8
  np.testing.assert_array_equal(bits, [[-1, 1, 1, 1], [1, -1, 1, -1]])
