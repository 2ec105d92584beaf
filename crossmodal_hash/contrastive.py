"""SCAHN's training pieces: memory queues; contrastive, label, adversarial losses.

Everything here is a pure function of arrays (queues included), so a method can
keep its queues in its training state, jit them, shard them and checkpoint them.

Transcribed from the paper (Liang et al., ACM MM 2022) and the public MindSpore
code (`src/loss.py`, `src/scahn_model.py`):

* Memory queues (`Queue`): per contrastive direction, the last Q (1,024) key
  codes [Q, K] and their labels [Q, L], written in order at a pointer that
  wraps around (`enqueue`). Q must be a multiple of the batch size (the code
  asserts it), so a batch never straddles the end. The code starts the queues
  with random unit-norm codes and random 0/1 labels (`init_queue`).
* Four directions (`DIRECTIONS`): i2t (image queries, text keys and a text
  queue), t2i, i2i and t2t. A direction contrasts each query against the
  batch's queries, the batch's keys (no gradient) and the queue; positives
  share at least one label.
* The paper's parametric contrastive loss (`paco_loss`, PaCo, Cui et al. ICCV
  2021): the [B, L] logits of a learned linear classifier of the query's
  feature join the [B, 2B + Q] code similarities / temperature (0.05) in one
  softmax; the labels are the classifier's positives (weight beta), samples
  sharing a label the contrastive ones (weight alpha), self-contrast removed.
* The code's triplet alternative (`triplet_loss`): cosine distances, margin
  0.3, all (anchor, positive, negative) triplets of the batch, summed; an
  NDCG-weighted variant (the code's `triplet_alpha == 10`).
* Multi-label BCE of the GCN classifiers (`multilabel_bce`): the mean over
  labels and items. The code applies a sigmoid to the logits before its BCE,
  which applies one again; form 'official_code' reproduces that.
* Dual-way adversarial losses on the codes (`dual_generator_loss`,
  `dual_discriminator_loss`): the image discriminator takes image codes as
  real and text codes as fake, the text discriminator the reverse; the
  generator wants each to take the other modality's codes as real.

Every loss returns a scalar in at least float32 (float64 under x64).
"""
from __future__ import annotations

from typing import Mapping

import flax.struct
import jax
import jax.numpy as jnp

from crossmodal_hash import losses
from crossmodal_hash.models import layers

_float = layers.at_least_float32

# Contrastive directions: name -> (query modality, key modality).
DIRECTIONS = {'i2t': ('img', 'txt'), 't2i': ('txt', 'img'),
              'i2i': ('img', 'img'), 't2t': ('txt', 'txt')}
LABEL_LOSS_FORMS = ('paper', 'official_code')
TRIPLET_REDUCTIONS = ('sum', 'mean')


@flax.struct.dataclass
class Queue:
  """A memory queue of past codes and their labels.

  Attributes:
    codes: [Q, K] float32 key codes, oldest overwritten first.
    labels: [Q, L] float32 multi-hot labels of those codes.
    pointer: [] int32, where the next batch is written (a multiple of B).
  """
  codes: jax.Array
  labels: jax.Array
  pointer: jax.Array

  @property
  def size(self) -> int:
    return self.codes.shape[0]


def init_queue(key: jax.Array, size: int, bits: int, num_labels: int) -> Queue:
  """The code's initial queue: unit-norm N(0, I) codes, Bernoulli(1/2) labels.

  Args:
    key: PRNG key.
    size: Q, the number of codes kept (SCAHN: 1,024).
    bits: K.
    num_labels: L.
  """
  code_key, label_key = jax.random.split(key)
  codes = jax.random.normal(code_key, (size, bits), jnp.float32)
  codes = codes / jnp.linalg.norm(codes, axis=1, keepdims=True)
  labels = jax.random.bernoulli(label_key, 0.5, (size, num_labels))
  return Queue(codes=codes, labels=labels.astype(jnp.float32),
               pointer=jnp.zeros((), jnp.int32))


def init_queues(key: jax.Array, size: int, bits: int, num_labels: int,
                directions=tuple(DIRECTIONS)) -> dict[str, Queue]:
  """One `init_queue` per direction, from independent keys."""
  keys = jax.random.split(key, len(directions))
  return {d: init_queue(k, size, bits, num_labels)
          for d, k in zip(directions, keys)}


def enqueue(queue: Queue, codes: jax.Array, labels: jax.Array) -> Queue:
  """Writes a batch at the pointer and advances it (mod Q).

  Args:
    queue: the queue, Q a multiple of B.
    codes: [B, K] key codes (stored without gradient).
    labels: [B, L] their labels.

  Returns:
    The new queue: rows pointer .. pointer + B - 1 hold the batch in order,
    pointer' = (pointer + B) mod Q.
  """
  batch = codes.shape[0]
  if queue.size % batch:
    raise ValueError(f'The queue size ({queue.size}) must be a multiple of '
                     f'the batch size ({batch}).')
  codes = jax.lax.stop_gradient(codes).astype(queue.codes.dtype)
  labels = jax.lax.stop_gradient(labels).astype(queue.labels.dtype)
  start = queue.pointer.astype(jnp.int32)
  zero = jnp.zeros((), jnp.int32)
  return Queue(
      codes=jax.lax.dynamic_update_slice(queue.codes, codes, (start, zero)),
      labels=jax.lax.dynamic_update_slice(queue.labels, labels, (start, zero)),
      pointer=(start + batch) % queue.size)


def contrast_set(queries: jax.Array, keys: jax.Array, labels: jax.Array,
                 queue: Queue) -> tuple[jax.Array, jax.Array]:
  """The samples one direction contrasts its queries with (before enqueuing).

  Args:
    queries: [B, K] the query modality's codes (gradients flow here).
    keys: [B, K] the key modality's codes (no gradient).
    labels: [B, L] the batch's labels.
    queue: the direction's queue, read as it was before this batch.

  Returns:
    features [B + B + Q, K] (queries, keys, queue) and targets [B + B + Q, L].
  """
  features = jnp.concatenate([
      _float(queries), _float(jax.lax.stop_gradient(keys)),
      _float(jax.lax.stop_gradient(queue.codes))])
  targets = jnp.concatenate([_float(labels), _float(labels),
                             _float(queue.labels)])
  return features, targets


def paco_loss(features: jax.Array, targets: jax.Array, sup_logits: jax.Array,
              *, temperature: float = 0.05,
              base_temperature: float | None = None,
              alpha: float = 0.07, beta: float = 1.0, gamma: float = 1.0,
              sup_temperature: float = 1.0) -> jax.Array:
  """Parametric contrastive loss over a contrast set (the code's `PaCoLoss`).

  With B anchors (the first B rows of `features`), M = features.shape[0]:
    z = [sup_logits / sup_temperature, f_a f^T / temperature]   [B, L + M]
    z -= max over the row (a constant)
    w = [beta * y_a, alpha * [y_a y^T > 0] * (1 - I)]           positives
    m = [1, gamma * (1 - I)]                                      denominator
    log p = z - log(sum(m e^z) + 1e-12)
    loss = -(temperature / base_temperature) mean_a sum(w log p) / sum(w)
  I is [B, M] with ones at (a, a), the anchor itself.

  Args:
    features: [M, K], the anchors first (`contrast_set`).
    targets: [M, L] multi-hot labels of `features`.
    sup_logits: [B, L] the anchors' classifier logits.
    temperature: of the code similarities (SCAHN: 0.05).
    base_temperature: None = temperature.
    alpha: weight of the sample positives (SCAHN code: 0.07).
    beta: weight of the class positives (1).
    gamma: weight of the samples in the denominator (1).
    sup_temperature: of the classifier logits (1).

  Returns:
    A scalar. Every anchor needs at least one label (its beta weight keeps
    sum(w) > 0).
  """
  base_temperature = temperature if base_temperature is None else (
      base_temperature)
  features = _float(features)
  targets = _float(targets)
  sup_logits = _float(sup_logits)
  batch, num_labels = sup_logits.shape
  anchor_labels = targets[:batch]
  positive = (anchor_labels @ targets.T > 0).astype(features.dtype)
  logits = jnp.concatenate([sup_logits / sup_temperature,
                            features[:batch] @ features.T / temperature],
                           axis=1)
  logits = logits - jax.lax.stop_gradient(
      jnp.max(logits, axis=1, keepdims=True))
  not_self = 1.0 - jnp.eye(batch, features.shape[0], dtype=features.dtype)
  weights = jnp.concatenate([anchor_labels * beta,
                             positive * not_self * alpha], axis=1)
  denominator = jnp.concatenate(
      [jnp.ones((batch, num_labels), features.dtype), gamma * not_self],
      axis=1)
  log_prob = logits - jnp.log(
      jnp.sum(jnp.exp(logits) * denominator, axis=1, keepdims=True) + 1e-12)
  mean_log_prob = jnp.sum(weights * log_prob, axis=1) / jnp.sum(weights,
                                                                axis=1)
  return -(temperature / base_temperature) * jnp.mean(mean_log_prob)


def cosine_distance(source: jax.Array, target: jax.Array) -> jax.Array:
  """max(0, 1 - cos): source [B, K], target [N, K] -> [B, N].

  The norms' product is floored at 1e-8, as in the code.
  """
  source = _float(source)
  target = _float(target)
  norms = (jnp.linalg.norm(source, axis=1)[:, None] *
           jnp.linalg.norm(target, axis=1)[None, :])
  cos = source @ target.T / jnp.maximum(norms, 1e-8)
  return jax.nn.relu(1.0 - cos)


def ndcg_gains(source_labels: jax.Array, target_labels: jax.Array
              ) -> jax.Array:
  """(2^s_ij - 1) / Z_i, s = shared label counts, Z_i the ideal row DCG.

  Z_i = sum_r (2^s_i(r) - 1) / log2(r + 2) over row i's counts sorted in
  decreasing order (r = 0 .. N - 1); a row without any shared label gets 0.

  Args:
    source_labels: [B, L] multi-hot.
    target_labels: [N, L] multi-hot.

  Returns:
    [B, N].
  """
  shared = _float(source_labels) @ _float(target_labels).T
  ideal = -jnp.sort(-shared, axis=1)
  discount = jnp.log2(jnp.arange(shared.shape[1], dtype=shared.dtype) + 2.0)
  z = jnp.sum((jnp.exp2(ideal) - 1.0) / discount, axis=1, keepdims=True)
  return (jnp.exp2(shared) - 1.0) / jnp.where(z > 0, z, 1.0)


def triplet_loss(source: jax.Array, source_labels: jax.Array,
                 target: jax.Array, target_labels: jax.Array, *,
                 margin: float = 0.3, weighted: bool = False,
                 reduction: str = 'sum') -> jax.Array:
  """The code's triplet loss over all (anchor, positive, negative) triplets.

  For anchor a in `source` and p, n in `target`, with cosine distances d:
    l_apn = [a~p] [a!~n] (d_ap - d_an + margin), ~ = share a label;
    weighted: l_apn *= 10 (g_ap - g_an), g = `ndcg_gains` (the code's
    `triplet_alpha == 10` branch);
  then max(0, l) summed ('sum', as SCAHN calls it) or divided by the number
  of positive terms ('mean'). The [B, N, N] triplet tensor is formed. The
  code's extra factor `(triplet_beta - 0.1) * triplet_gamma + 0.1` on the mask
  and the gains is 1 in its released config and is left out; its NDCG
  normaliser assumes N = B, here it runs over the N targets.

  Args:
    source: [B, K] anchor codes.
    source_labels: [B, L].
    target: [N, K] candidate codes.
    target_labels: [N, L].
    margin: the margin (SCAHN: 0.3).
    weighted: NDCG-weighted triplets.
    reduction: 'sum' or 'mean'.

  Returns:
    A scalar.
  """
  if reduction not in TRIPLET_REDUCTIONS:
    raise ValueError(f'Unknown triplet reduction {reduction!r}; expected one '
                     f'of {TRIPLET_REDUCTIONS}.')
  dist = cosine_distance(source, target)
  loss = dist[:, :, None] - dist[:, None, :] + margin
  sim = (_float(source_labels) @ _float(target_labels).T > 0).astype(
      dist.dtype)
  mask = sim[:, :, None] * (1.0 - sim[:, None, :])
  if weighted:
    gains = ndcg_gains(source_labels, target_labels)
    loss = 10.0 * (gains[:, :, None] - gains[:, None, :]) * mask * loss
  else:
    loss = mask * loss
  loss = jax.nn.relu(loss)
  if reduction == 'sum':
    return jnp.sum(loss)
  num_positive = jnp.sum((loss > 1e-16).astype(loss.dtype))
  return jnp.sum(loss) / (num_positive + 1e-16)


def multilabel_bce(logits: jax.Array, labels: jax.Array,
                   form: str = 'paper') -> jax.Array:
  """Mean sigmoid cross-entropy of label logits [B, L] against labels [B, L].

  'paper': the BCE of sigmoid(logits). 'official_code': the BCE of
  sigmoid(sigmoid(logits)), what the public code computes (its generator
  returns sigmoid outputs, and its `MultiLabelLoss` applies a sigmoid again).
  """
  logits = _float(logits)
  if form == 'official_code':
    logits = jax.nn.sigmoid(logits)
  elif form != 'paper':
    raise ValueError(f'Unknown label loss form {form!r}; expected one of '
                     f'{LABEL_LOSS_FORMS}.')
  return jnp.mean(losses.sigmoid_cross_entropy(logits, _float(labels)))


def dual_generator_loss(img_disc_on_txt: jax.Array,
                        txt_disc_on_img: jax.Array) -> jax.Array:
  """-mean log D_img(txt codes) - mean log D_txt(img codes), from logits [B]."""
  return (losses.adversarial_generator(img_disc_on_txt) +
          losses.adversarial_generator(txt_disc_on_img))


def dual_discriminator_loss(img_disc_on_img: jax.Array,
                            img_disc_on_txt: jax.Array,
                            txt_disc_on_txt: jax.Array,
                            txt_disc_on_img: jax.Array) -> jax.Array:
  """The two discriminators' loss from logits [B]: the code's sum of 4 means.

  -log D_img(img) - log(1 - D_img(txt)) - log D_txt(txt) - log(1 - D_txt(img)),
  each averaged over the batch.
  """
  return 2.0 * (losses.adversarial_discriminator(img_disc_on_img,
                                                 img_disc_on_txt) +
                losses.adversarial_discriminator(txt_disc_on_txt,
                                                 txt_disc_on_img))


def queue_contrastive_loss(codes: Mapping[str, jax.Array],
                           sup_logits: Mapping[str, jax.Array],
                           labels: jax.Array, queues: Mapping[str, Queue], *,
                           directions=tuple(DIRECTIONS), **paco_kwargs
                          ) -> tuple[jax.Array, dict[str, Queue]]:
  """The sum of `paco_loss` over directions, and the queues after the batch.

  Direction 'i2t' contrasts image queries with the text keys of the batch and
  of its queue, then enqueues the text codes; 'i2i' the image codes; etc.

  Args:
    codes: {'img': [B, K], 'txt': [B, K]} relaxed codes.
    sup_logits: {'img': [B, L], 'txt': [B, L]} the PaCo classifier's logits
      of each modality's features.
    labels: [B, L] multi-hot.
    queues: {direction: Queue} for each of `directions`.
    directions: names from `DIRECTIONS`.
    **paco_kwargs: `paco_loss` options (temperature, alpha, ...).

  Returns:
    (scalar loss, {direction: updated Queue}).
  """
  total = 0.0
  new_queues = dict(queues)
  for name in directions:
    query, key = DIRECTIONS[name]
    features, targets = contrast_set(codes[query], codes[key], labels,
                                     queues[name])
    total = total + paco_loss(features, targets, sup_logits[query],
                              **paco_kwargs)
    new_queues[name] = enqueue(queues[name], codes[key], labels)
  return total, new_queues


def batch_triplet_loss(codes: Mapping[str, jax.Array], labels: jax.Array, *,
                       directions=('i2t', 't2i'), **triplet_kwargs
                      ) -> jax.Array:
  """The sum of `triplet_loss` over directions, within the batch (no queue).

  The code's triplet option uses i2t and t2i; 'i2i' and 't2t' are available.
  """
  total = 0.0
  for name in directions:
    query, key = DIRECTIONS[name]
    total = total + triplet_loss(codes[query], labels, codes[key], labels,
                                 **triplet_kwargs)
  return total
