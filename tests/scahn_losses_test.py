"""SCAHN's losses and queues against float64 NumPy transcriptions of its code.

The references below follow the public MindSpore code (YI1219/SCAHN-MindSpore,
`src/loss.py` and `src/scahn_model.py`) operation by operation, in float64:
`PaCoLoss.construct`, `TripletLoss.construct` / `cos_distance` /
`get_triplet_mask`, `MultiLabelLoss.construct` (fed the generator's sigmoid
outputs, as `WithLossCellG` does), the adversarial terms of `WithLossCellG` and
`WithLossCellD` (discriminators ending in a sigmoid), and
`SCAHNGenerator.get_queue`'s slide-mask scatter. The library computes the same
quantities from logits, in float64 under `jax.enable_x64`.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash import contrastive

RTOL = 1e-10


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _labels(rng, n, num_labels):
  y = (rng.random((n, num_labels)) < 0.3).astype(np.float64)
  y[np.arange(n), rng.integers(0, num_labels, n)] = 1.0  # >= 1 label each.
  return y


# ------------------------------------------------------ NumPy transcriptions


def _ref_paco(features, labels, sup_logits, bs, k, num_classes, alpha, beta,
              gamma, supt, temperature, base_temperature=None):
  """`PaCoLoss.construct`, with K = the queue size (features: 2 bs + K rows)."""
  base_temperature = (temperature if base_temperature is None else
                      base_temperature)
  mask = (labels[:bs] @ labels.T > 0).astype(np.float64)
  anchor_dot_contrast = features[:bs] @ features.T / temperature
  anchor_dot_contrast = np.concatenate([sup_logits / supt,
                                        anchor_dot_contrast], axis=1)
  logits_max = anchor_dot_contrast.max(1, keepdims=True)
  logits = anchor_dot_contrast - logits_max
  logits_mask = np.ones_like(mask) - np.eye(bs, k + 2 * bs)
  mask = mask * logits_mask
  mask = np.concatenate([labels[:bs] * beta, mask * alpha], axis=1)
  logits_mask = np.concatenate([np.ones((bs, num_classes)),
                                gamma * logits_mask], axis=1)
  exp_logits = np.exp(logits) * logits_mask
  log_prob = logits - np.log(exp_logits.sum(1, keepdims=True) + 1e-12)
  mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
  loss = (temperature / base_temperature) * mean_log_prob_pos
  return -loss.mean()


def _ref_cos_distance(source, target):
  source = source[:, None, :]
  denominator = (np.sqrt((source ** 2).sum(-1)) *
                 np.sqrt((target ** 2).sum(-1)))
  cos_sim = (source * target).sum(-1) / np.clip(denominator, 1e-8,
                                                denominator.max())
  return np.clip(1 - cos_sim, 0, (1 - cos_sim).max())


def _ref_triplet_mask(s_labels, t_labels, bs, flag):
  sim_origin = s_labels @ t_labels.T
  sim = (sim_origin > 0).astype(np.float64)
  ideal_list = -np.sort(-sim_origin, axis=1)
  ph = np.arange(0.0, bs) + 2
  ph = np.reshape(np.tile(ph, (1, bs)), (bs, bs))
  th = np.log2(ph)
  z = np.reshape(((2 ** ideal_list - 1) / th).sum(1), (-1, 1))
  sim_origin = 2 ** sim_origin - 1
  sim_origin = sim_origin / z
  i_equal_j = sim[:, :, None]
  i_equal_k = sim[:, None, :]
  sim_pos = sim_origin[:, :, None]
  sim_neg = sim_origin[:, None, :]
  weight = (sim_pos - sim_neg) * flag
  mask = i_equal_j * (1 - i_equal_k) * flag
  return mask, weight


def _ref_triplet(source, s_labels, target, t_labels, *, alpha=1, beta=1,
                 gamma=1, margin=0.3, reduction='sum'):
  """`TripletLoss.construct` with the config's triplet_* values."""
  bs = source.shape[0]
  flag = (beta - 0.1) * gamma + 0.1
  pairwise_dist = _ref_cos_distance(source, target)
  triplet = pairwise_dist[:, :, None] - pairwise_dist[:, None, :] + margin
  mask, weight = _ref_triplet_mask(s_labels, t_labels, bs, flag)
  if alpha == 10:
    triplet = 10 * weight * mask * triplet
  else:
    triplet = mask * triplet
  triplet = np.clip(triplet, 0, triplet.max())
  valid = (triplet > 1e-16).astype(np.float64)
  if reduction == 'mean':
    return triplet.sum() / (valid.sum() + 1e-16)
  return triplet.sum()


def _ref_multilabel(true, pred):
  """`MultiLabelLoss.construct(true, pred)`."""
  t_loss = (true * np.log(_sigmoid(pred)) +
            (1 - true) * np.log(1 - _sigmoid(pred)))
  return -t_loss.mean(axis=-1).mean()


def _ref_get_queue(queue, queue_l, queue_ptr, q, k, labels, big_k):
  """`get_queue`'s contrast set and its slide-mask scatter update."""
  features = np.concatenate([q, k, queue.copy()])
  target = np.concatenate([labels, labels, queue_l.copy()])
  batch_size = k.shape[0]
  assert big_k % batch_size == 0
  slide = np.arange(0, big_k, 1)
  mask = np.logical_and(slide >= queue_ptr, slide < queue_ptr + batch_size)
  slide = np.nonzero(mask * (slide + 1))[0]
  queue = queue.copy()
  queue_l = queue_l.copy()
  queue[slide] = k
  queue_l[slide] = labels
  return features, target, queue, queue_l, (queue_ptr + batch_size) % big_k


# ------------------------------------------------------------------- tests


@pytest.mark.parametrize('alpha,gamma,supt,base_t', [
    (0.07, 1.0, 1.0, None),  # flickr25k.yaml.
    (0.3, 0.5, 2.0, 0.1),
])
def test_paco_matches_reference(alpha, gamma, supt, base_t):
  rng = np.random.default_rng(0)
  bs, big_k, bits, num_labels = 4, 8, 6, 5
  features = np.tanh(rng.normal(size=(2 * bs + big_k, bits)))
  labels = _labels(rng, 2 * bs + big_k, num_labels)
  sup_logits = rng.normal(size=(bs, num_labels))
  want = _ref_paco(features, labels, sup_logits, bs, big_k, num_labels, alpha,
                   1.0, gamma, supt, 0.05, base_t)
  with jax.enable_x64(True):
    got = contrastive.paco_loss(
        jnp.asarray(features), jnp.asarray(labels), jnp.asarray(sup_logits),
        temperature=0.05, base_temperature=base_t, alpha=alpha, beta=1.0,
        gamma=gamma, sup_temperature=supt)
    assert got.dtype == jnp.float64
  np.testing.assert_allclose(float(got), want, rtol=RTOL)


@pytest.mark.parametrize('weighted', [False, True])
@pytest.mark.parametrize('reduction', ['sum', 'mean'])
def test_triplet_matches_reference(weighted, reduction):
  rng = np.random.default_rng(1)
  bs, bits, num_labels = 6, 8, 4
  source = np.tanh(rng.normal(size=(bs, bits)))
  target = np.tanh(rng.normal(size=(bs, bits)))
  labels = _labels(rng, bs, num_labels)
  want = _ref_triplet(source, labels, target, labels,
                      alpha=10 if weighted else 1, reduction=reduction)
  assert want > 0
  with jax.enable_x64(True):
    got = contrastive.triplet_loss(
        jnp.asarray(source), jnp.asarray(labels), jnp.asarray(target),
        jnp.asarray(labels), margin=0.3, weighted=weighted,
        reduction=reduction)
  np.testing.assert_allclose(float(got), want, rtol=RTOL)


def test_batch_triplet_is_the_codes_two_directions():
  rng = np.random.default_rng(2)
  img = np.tanh(rng.normal(size=(5, 8)))
  txt = np.tanh(rng.normal(size=(5, 8)))
  labels = _labels(rng, 5, 3)
  want = (_ref_triplet(img, labels, txt, labels) +
          _ref_triplet(txt, labels, img, labels))
  with jax.enable_x64(True):
    got = contrastive.batch_triplet_loss(
        {'img': jnp.asarray(img), 'txt': jnp.asarray(txt)},
        jnp.asarray(labels))
  np.testing.assert_allclose(float(got), want, rtol=RTOL)


@pytest.mark.parametrize('form', ['paper', 'official_code'])
def test_multilabel_bce_matches_reference(form):
  rng = np.random.default_rng(3)
  logits = 3.0 * rng.normal(size=(7, 5))
  labels = _labels(rng, 7, 5)
  # The code's generator applies a sigmoid; MultiLabelLoss applies another.
  pred = _sigmoid(logits) if form == 'official_code' else logits
  want = _ref_multilabel(labels, pred)
  with jax.enable_x64(True):
    got = contrastive.multilabel_bce(jnp.asarray(logits), jnp.asarray(labels),
                                     form=form)
  np.testing.assert_allclose(float(got), want, rtol=RTOL)


def test_adversarial_losses_match_reference():
  rng = np.random.default_rng(4)
  # Logits of img_discriminator / txt_discriminator on each modality's codes.
  d_img_img, d_img_txt, d_txt_txt, d_txt_img = 2.0 * rng.normal(size=(4, 9))
  # WithLossCellG: img_pred = D_img(txt), txt_pred = D_txt(img).
  want_g = (-np.log(_sigmoid(d_img_txt)).mean() -
            np.log(_sigmoid(d_txt_img)).mean())
  # WithLossCellD.
  want_d = (-np.log(_sigmoid(d_img_img)).mean() -
            np.log(1 - _sigmoid(d_img_txt)).mean() -
            np.log(1 - _sigmoid(d_txt_img)).mean() -
            np.log(_sigmoid(d_txt_txt)).mean())
  with jax.enable_x64(True):
    got_g = contrastive.dual_generator_loss(jnp.asarray(d_img_txt),
                                            jnp.asarray(d_txt_img))
    got_d = contrastive.dual_discriminator_loss(
        jnp.asarray(d_img_img), jnp.asarray(d_img_txt), jnp.asarray(d_txt_txt),
        jnp.asarray(d_txt_img))
  np.testing.assert_allclose(float(got_g), want_g, rtol=RTOL)
  np.testing.assert_allclose(float(got_d), want_d, rtol=RTOL)


def test_queue_contrastive_matches_reference_over_steps():
  """Three steps of the four directions, queues carried, against the code."""
  rng = np.random.default_rng(5)
  bs, big_k, bits, num_labels = 4, 8, 6, 5
  ref_queues = {d: (rng.normal(size=(big_k, bits)),
                    rng.integers(0, 2, (big_k, num_labels)).astype(np.float64),
                    0) for d in contrastive.DIRECTIONS}
  with jax.enable_x64(True):
    queues = {d: contrastive.Queue(jnp.asarray(q), jnp.asarray(l),
                                   jnp.asarray(p, jnp.int32))
              for d, (q, l, p) in ref_queues.items()}
    step = jax.jit(lambda c, s, y, q: contrastive.queue_contrastive_loss(
        c, s, y, q, temperature=0.05, alpha=0.07))
    for _ in range(3):
      codes = {m: np.tanh(rng.normal(size=(bs, bits))) for m in ('img', 'txt')}
      sup = {m: rng.normal(size=(bs, num_labels)) for m in ('img', 'txt')}
      labels = _labels(rng, bs, num_labels)
      want = 0.0
      for d, (query, key) in contrastive.DIRECTIONS.items():
        q, l, p = ref_queues[d]
        feats, targets, q, l, p = _ref_get_queue(q, l, p, codes[query],
                                                 codes[key], labels, big_k)
        ref_queues[d] = (q, l, p)
        want += _ref_paco(feats, targets, sup[query], bs, big_k, num_labels,
                          0.07, 1.0, 1.0, 1.0, 0.05)
      got, queues = step(jax.tree.map(jnp.asarray, codes),
                         jax.tree.map(jnp.asarray, sup), jnp.asarray(labels),
                         queues)
      np.testing.assert_allclose(float(got), want, rtol=RTOL)
      for d, (q, l, p) in ref_queues.items():
        np.testing.assert_array_equal(np.asarray(queues[d].codes), q)
        np.testing.assert_array_equal(np.asarray(queues[d].labels), l)
        assert int(queues[d].pointer) == p


def test_enqueue_order_and_wraparound():
  size, batch = 6, 2
  queue = contrastive.Queue(codes=jnp.zeros((size, 1)),
                            labels=jnp.zeros((size, 1)),
                            pointer=jnp.zeros((), jnp.int32))
  chex.clear_trace_counter()
  push = jax.jit(chex.assert_max_traces(contrastive.enqueue, n=1))
  for step in range(4):
    values = jnp.arange(batch * step + 1, batch * step + batch + 1,
                        dtype=jnp.float32)[:, None]
    queue = push(queue, values, 10 * values)
  # Batches 1..4 of [1, 2], [3, 4], [5, 6], [7, 8]: the fourth overwrites the
  # first, rows keep their batch order, the pointer wraps to 8 mod 6 = 2.
  np.testing.assert_array_equal(np.asarray(queue.codes)[:, 0],
                                [7, 8, 3, 4, 5, 6])
  np.testing.assert_array_equal(np.asarray(queue.labels)[:, 0],
                                [70, 80, 30, 40, 50, 60])
  assert int(queue.pointer) == 2


def test_enqueue_rejects_a_batch_that_does_not_divide_the_queue():
  queue = contrastive.init_queue(jax.random.key(0), 8, 4, 3)
  with pytest.raises(ValueError, match='multiple of the batch size'):
    contrastive.enqueue(queue, jnp.zeros((3, 4)), jnp.zeros((3, 3)))


def test_init_queue_is_unit_norm_with_binary_labels():
  queues = contrastive.init_queues(jax.random.key(0), 16, 8, 5)
  assert set(queues) == set(contrastive.DIRECTIONS)
  for q in queues.values():
    chex.assert_shape((q.codes, q.labels), [(16, 8), (16, 5)])
    np.testing.assert_allclose(np.linalg.norm(q.codes, axis=1), 1.0,
                               rtol=1e-6)
    assert set(np.unique(q.labels)) <= {0.0, 1.0}
    assert int(q.pointer) == 0
  assert not np.array_equal(queues['i2t'].codes, queues['t2i'].codes)


def test_paco_gradient_reaches_queries_and_classifier_only():
  rng = np.random.default_rng(6)
  bs, bits, num_labels = 4, 6, 3
  labels = jnp.asarray(_labels(rng, bs, num_labels))
  queue = contrastive.init_queue(jax.random.key(1), 8, bits, num_labels)

  def loss(q, k, s):
    f, t = contrastive.contrast_set(q, k, labels, queue)
    return contrastive.paco_loss(f, t, s)

  q, k = (jnp.tanh(jnp.asarray(rng.normal(size=(bs, bits)), jnp.float32))
          for _ in range(2))
  s = jnp.asarray(rng.normal(size=(bs, num_labels)), jnp.float32)
  gq, gk, gs = jax.grad(loss, argnums=(0, 1, 2))(q, k, s)
  chex.assert_tree_all_finite((gq, gs))
  assert float(jnp.abs(gq).sum()) > 0 and float(jnp.abs(gs).sum()) > 0
  np.testing.assert_array_equal(np.asarray(gk), 0.0)
