"""SSAH's losses against a float64 NumPy transcription of the official graph.

The transcription follows lelan-li/SSAH (SSAH.py `build_model`, tnet.py, ops.py):
`mse_criterion(x, y) = reduce_mean(l2_loss(x - y))` is 1/2 sum (x - y)^2,
`sce_criterion` a mean of sigmoid cross-entropies, Sim = 0.999 [shares a
label] fed as a float32 placeholder, theta = 1/2 <stored_j, out_i>, and the
squared-residual pairwise term. The networks are transcribed too (LabNet,
TxtNet with its multi-scale fusion and TF1 resize, the discriminators; ImgNet
as the feature-input MLP variant, which the official code does not have), so
each network's loss on one batch is compared end to end, in float64, to 1e-10.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash.methods import ssah

B, T, L, V, K, S, H = 6, 20, 5, 12, 8, 16, 24
WINDOWS = (2, 3, 6)
ALPHA, GAMMA, BETA, ETA, DELTA = 0.7, 1.3, 0.9, 1.1, 0.6


def _config(tiny_config):
  return tiny_config(
      f'bits={K}', f'dataset.num_labels={L}', f'dataset.vocab_size={V}',
      f'dataset.num_train={T}', f'model.semantic_dim={S}',
      f'model.label_hidden={H}', f'model.text_hidden={H}',
      f'model.image_mlp_features={H}', 'model.discriminator_hidden=10;7',
      'model.text_pool_windows=' + ';'.join(map(str, WINDOWS)),
      'model.image_encoder=feature_mlp', 'model.compute_dtype=float64',
      'model.init_std=0.3', 'ssah.pairwise_form=official_code',
      'ssah.reduction=official', 'ssah.sim_positive=0.999',
      'ssah.label_loss=mse', 'ssah.adversarial=official_code',
      'ssah.pair_weighting=none',
      f'ssah.alpha={ALPHA}', f'ssah.gamma={GAMMA}', f'ssah.beta={BETA}',
      f'ssah.eta={ETA}', f'ssah.delta={DELTA}')


def _lrn(x):
  sq = np.pad(x**2, [(0, 0), (2, 2)])
  window = sum(sq[:, i:i + x.shape[1]] for i in range(5))
  return x / (2.0 + 1e-4 * window)**0.75


def _relu(x):
  return np.maximum(x, 0.0)


def _dense(p, x):
  return x @ np.asarray(p['kernel']) + np.asarray(p['bias'])


def _heads(p, feature, head_input):
  """(feature, tanh code, sigmoid label) of a net's semantic feature."""
  return (feature, np.tanh(_dense(p['hash']['dense'], head_input)),
          1.0 / (1.0 + np.exp(-_dense(p['label']['dense'], head_input))))


def lab_net(p, labels):
  """tnet.lab_net: fc1 ReLU LRN, fc2 ReLU = feature, hash/label from it."""
  h = _lrn(_relu(_dense(p['encoder']['dense'], labels)))
  f = _relu(_dense(p['semantic'], h))
  return _heads(p, f, f)


def _resize_tf1(y, size):
  """tf.image.resize_images (TF 1.x bilinear, align_corners=False)."""
  n = y.shape[1]
  src = np.arange(size) * n / size
  lo = np.floor(src).astype(int)
  hi = np.minimum(lo + 1, n - 1)
  return y[:, lo] * (1 - (src - lo)) + y[:, hi] * (src - lo)


def txt_net(p, text):
  """tnet.txt_net: MultiScaleTxt (avg-pool, 1x1 conv without bias, ReLU,
  resize), [1, V, 6, 4096]-style conv = Dense over the (V, C) grid, ReLU, LRN,
  fc2 ReLU = feature, LRN norm2, hash/label heads on norm2."""
  channels = [text]
  for w in WINDOWS:
    pooled = text[:, :(V // w) * w].reshape(B, V // w, w).mean(-1)
    kernel = float(np.asarray(p['encoder']['fusion'][f'branch_{w}']['kernel'])
                   [0, 0])
    channels.append(_resize_tf1(_relu(pooled * kernel), V))
  grid = np.stack(channels, axis=-1).reshape(B, -1)
  h = _lrn(_relu(_dense(p['encoder']['dense'], grid)))
  f = _relu(_dense(p['semantic'], h))
  return _heads(p, f, _lrn(f))


def img_net(p, x):
  """The feature-input ImgNet: Dense ReLU, fc8 ReLU = feature, heads."""
  h = _relu(_dense(p['encoder']['dense_0'], x))
  f = _relu(_dense(p['semantic'], h))
  return _heads(p, f, f)


def dis_net(p, f):
  """tnet.dis_net_IL/TL (keep_prob 1): two ReLU layers, a logit."""
  h = _relu(_dense(p['dense_1'], _relu(_dense(p['dense_0'], f))))
  return _dense(p['logit'], h)[:, 0]


def mse_criterion(x, y):
  return 0.5 * np.sum((x - y)**2)


def sce_criterion(logits, labels):
  return np.mean(np.maximum(logits, 0) - logits * labels +
                 np.log1p(np.exp(-np.abs(logits))))


def pair_term(stored, out, sim):
  """Loss_pair_*: Sim [N, B], theta = 1/2 stored @ out^T."""
  theta = 0.5 * stored @ out.T
  return mse_criterion(sim * theta, np.log1p(np.exp(theta)))


def _setup(tiny_config):
  config = _config(tiny_config)
  method = ssah.SSAH(config, num_labels=L, text_dim=V)
  rng = np.random.default_rng(0)
  labels = (rng.random((T, L)) < 0.35).astype(np.float64)
  labels[np.arange(T), rng.integers(0, L, T)] = 1.0
  # The official graph's inputs are float32 placeholders: float32 values.
  as_f32 = lambda x: x.astype(np.float32).astype(np.float64)
  data = {'label': labels, 'text': as_f32(rng.random((T, V))),
          'image': as_f32(rng.normal(size=(T, 9)))}
  index = rng.permutation(T)[:B]
  batch = {'index': jnp.asarray(index), 'label': jnp.asarray(labels[index]),
           'text': jnp.asarray(data['text'][index]),
           'image': jnp.asarray(data['image'][index])}
  state = method.init(jax.random.PRNGKey(1), data)
  f64 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), t)
  state = state.replace(params=f64(state.params), memory=f64(state.memory))
  # Sim as the official code feeds it: 0.999 in a float32 placeholder.
  sim = ((labels @ labels[index].T > 0) * np.float32(0.999)).astype(
      np.float64)
  np_params = jax.tree.map(np.asarray, state.params)
  return method, state, batch, data, index, sim, np_params


def _total(method, terms):
  return float(method._weighted(terms))  # pylint: disable=protected-access


def test_labnet_loss_equals_the_official_graph(tiny_config):
  with jax.enable_x64(True):
    method, state, batch, data, index, sim, p = _setup(tiny_config)
    terms, _ = method.lab_loss_terms(state.params['lab'], batch,
                                     {'label': jnp.asarray(data['label'])},
                                     state.memory)
    got = _total(method, terms)
  f, h, lab = lab_net(p['lab'], data['label'][index])
  # train_lab_net writes the batch's outputs into H and feat_L first.
  stored_h = np.asarray(state.memory['lab_code']).copy()
  stored_f = np.asarray(state.memory['lab_feat']).copy()
  stored_h[index], stored_f[index] = h, f
  expected = (ALPHA * pair_term(stored_f, f, sim) +
              GAMMA * pair_term(stored_h, h, sim) +
              BETA * mse_criterion(np.sign(h), h) +
              ETA * mse_criterion(data['label'][index], lab))
  np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize('modality', ['img', 'txt'])
def test_modality_loss_equals_the_official_graph(tiny_config, modality):
  with jax.enable_x64(True):
    method, state, batch, data, index, sim, p = _setup(tiny_config)
    terms, _ = method.modality_loss_terms(
        modality, state.params[modality], state.params['dis'][modality],
        batch, {'label': jnp.asarray(data['label'])}, state.memory)
    got = _total(method, terms)
  if modality == 'img':
    f, h, lab = img_net(p['img'], data['image'][index])
  else:
    f, h, lab = txt_net(p['txt'], data['text'][index])
  logits = dis_net(p['dis'][modality], f)
  expected = (
      ALPHA * pair_term(np.asarray(state.memory['lab_feat']), f, sim) +
      GAMMA * pair_term(np.asarray(state.memory['lab_code']), h, sim) +
      BETA * mse_criterion(np.sign(h), h) +
      ETA * mse_criterion(data['label'][index], lab) +
      DELTA * sce_criterion(logits, np.ones_like(logits)))
  np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_discriminator_loss_equals_the_official_graph(tiny_config):
  with jax.enable_x64(True):
    method, state, batch, data, index, _, p = _setup(tiny_config)
    features = {
        'lab': lab_net(p['lab'], data['label'][index])[0],
        'img': img_net(p['img'], data['image'][index])[0],
        'txt': txt_net(p['txt'], data['text'][index])[0],
    }
    got, _ = method.discriminator_loss(
        state.params['dis'], {k: jnp.asarray(v) for k, v in features.items()})
    got = float(got)
  d_i, d_t = p['dis']['img'], p['dis']['txt']
  expected = (sce_criterion(dis_net(d_i, features['img']), 0.0) +
              sce_criterion(dis_net(d_t, features['txt']), 0.0) +
              sce_criterion(dis_net(d_i, features['lab']), 1.0) +
              sce_criterion(dis_net(d_t, features['lab']), 1.0)) / 4.0
  np.testing.assert_allclose(got, expected, rtol=1e-10)
