"""Loss terms shared by the hashing methods.

Every term returns a float32 scalar. The terms SSAH uses take a `reduction`:

  'official': the official SSAH code's reductions, which are also the paper's
    sums. Its `mse_criterion(x, y)` is `reduce_mean(tf.nn.l2_loss(x - y))`, and
    `l2_loss` already returns the scalar 1/2 sum (x - y)^2, so every squared
    term (the code's pairwise residual over [B, N], quantization over [B, K],
    label over [B, L]) is a half-sum. A term the code does not have (the
    paper's pairwise negative log-likelihood, the BCE label option) is the
    paper's plain sum.
  'mean': the mean over the same entries (what this module did before; it
    shifts the terms' relative weights by factors of 100 to 600,000).

Adversarial terms are means in both (the code's `sce_criterion`). A term's
weight in a method's total is a config value, never a constant here.

Stability: log(1 + e^theta) is always `jax.nn.softplus(theta)`, which never
overflows; sigmoid cross-entropies are computed from logits.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from crossmodal_hash.models import layers

# Terms are computed in at least float32 (float64 under x64, for the float64
# reference tests).
_float = layers.at_least_float32

PAIRWISE_FORMS = ('paper', 'official_code')
LABEL_LOSSES = ('mse', 'bce')
REDUCTIONS = ('official', 'mean')
PAIR_WEIGHTINGS = ('none', 'balanced')


def reduce(values: jax.Array, reduction: str, *, squared: bool) -> jax.Array:
  """Reduces a term's entries to a scalar (see the module docstring).

  Args:
    values: the term's entries, e.g. [B, N] pairwise or [B, K] quantization.
    reduction: 'official' (1/2 sum of a squared term, sum of any other) or
      'mean'.
    squared: the entries are squares (the official code's `l2_loss` halves).

  Returns:
    A float32 scalar.
  """
  values = _float(values)
  if reduction == 'mean':
    return jnp.mean(values)
  if reduction == 'official':
    return (0.5 if squared else 1.0) * jnp.sum(values)
  raise ValueError(f'Unknown reduction {reduction!r}; expected one of '
                   f'{REDUCTIONS}.')


def similarity(labels_a: jax.Array, labels_b: jax.Array,
               positive: float = 1.0) -> jax.Array:
  """Pairwise semantic similarity of two label sets.

  Args:
    labels_a: [B, L] multi-hot labels.
    labels_b: [N, L] multi-hot labels.
    positive: the value of a similar pair (1.0 in the papers, 0.999 in the
      official SSAH code).

  Returns:
    [B, N] float32: `positive` where the items share at least one label, else 0.
  """
  shared = jnp.einsum('bl,nl->bn', _float(labels_a), _float(labels_b))
  return jnp.where(shared > 0, positive, 0.0).astype(jnp.float32)


def pair_weights(sim: jax.Array, weighting: str = 'none') -> jax.Array | None:
  """Per-pair weights of a pairwise term, or None for 'none' (all ones).

  'balanced' is HashNet's weighted likelihood (Cao et al., ICCV 2017): the
  similar and the dissimilar pairs of the [B, N] block each carry half of its
  total weight, w = |S| / (2 |S_1|) on similar pairs and |S| / (2 |S_0|) on
  dissimilar ones (|S| = B N), so the weights still sum to B N. Single-label
  data with C balanced classes has about 1/C similar pairs; unweighted, their
  dissimilar pairs dominate every gradient.

  Args:
    sim: [B, N] similarity in [0, 1]; a pair is similar where sim > 0.
    weighting: 'none' or 'balanced'.

  Returns:
    [B, N] float32 weights (constants), or None.
  """
  if weighting == 'none':
    return None
  if weighting != 'balanced':
    raise ValueError(f'Unknown pair weighting {weighting!r}; expected one of '
                     f'{PAIR_WEIGHTINGS}.')
  similar = (sim > 0).astype(jnp.float32)
  total = jnp.float32(sim.size)
  num_similar = jnp.sum(similar)
  w_similar = total / (2.0 * jnp.maximum(num_similar, 1.0))
  w_dissimilar = total / (2.0 * jnp.maximum(total - num_similar, 1.0))
  return jax.lax.stop_gradient(similar * w_similar +
                               (1.0 - similar) * w_dissimilar)


def pairwise_likelihood(a: jax.Array, b: jax.Array, sim: jax.Array,
                        form: str = 'paper', reduction: str = 'mean',
                        weights: jax.Array | None = None) -> jax.Array:
  """Pairwise similarity-preserving loss with theta = 0.5 <a_i, b_j>.

  Args:
    a: [B, D] the batch's features or codes (gradients flow here).
    b: [N, D] the stored features or codes of all training items.
    sim: [B, N] similarity in [0, 1].
    form: 'paper', the negative log-likelihood log(1 + e^theta) - S theta;
      or 'official_code', the official SSAH code's squared residual
      (S theta - log(1 + e^theta))^2.
    reduction: over the [B, N] pairs, see `reduce` ('official': the paper's
      sum, or the code's half-sum of its squared residual).
    weights: optional [B, N] per-pair weights (`pair_weights`).

  Returns:
    A float32 scalar.
  """
  theta = 0.5 * jnp.einsum('bd,nd->bn', _float(a), _float(b))
  weights = 1.0 if weights is None else weights
  if form == 'paper':
    return reduce(weights * (jax.nn.softplus(theta) - sim * theta), reduction,
                  squared=False)
  if form == 'official_code':
    return reduce(weights * jnp.square(sim * theta - jax.nn.softplus(theta)),
                  reduction, squared=True)
  raise ValueError(f'Unknown pairwise form {form!r}; expected one of '
                   f'{PAIRWISE_FORMS}.')


def quantization(codes: jax.Array, reduction: str = 'mean') -> jax.Array:
  """(sign(h) - h)^2 over relaxed codes h: [B, K] in (-1, 1), reduced.

  sign(h) is a constant (the official code feeds it in as `B_batch`).
  """
  codes = _float(codes)
  target = jax.lax.stop_gradient(jnp.where(codes >= 0, 1.0, -1.0))
  return reduce(jnp.square(target - codes), reduction, squared=True)


def bit_balance(codes: jax.Array) -> jax.Array:
  """||h^T 1||^2 / (B^2 K): pushes each bit to be +1 and -1 equally often.

  Args:
    codes: [B, K] relaxed codes.
  """
  codes = _float(codes)
  batch, bits = codes.shape
  return jnp.sum(jnp.square(jnp.sum(codes, axis=0))) / (batch * batch * bits)


def label_prediction(logits: jax.Array, labels: jax.Array,
                     kind: str = 'mse', reduction: str = 'mean') -> jax.Array:
  """Label-prediction loss of a label head.

  Args:
    logits: [B, L] label-head outputs before the sigmoid.
    labels: [B, L] multi-hot targets.
    kind: 'mse', the official code's (sigmoid(logits) - labels)^2; or 'bce',
      the sigmoid binary cross-entropy.
    reduction: over the [B, L] entries, see `reduce`.

  Returns:
    A float32 scalar.
  """
  logits = _float(logits)
  labels = _float(labels)
  if kind == 'mse':
    return reduce(jnp.square(jax.nn.sigmoid(logits) - labels), reduction,
                  squared=True)
  if kind == 'bce':
    return reduce(sigmoid_cross_entropy(logits, labels), reduction,
                  squared=False)
  raise ValueError(f'Unknown label loss {kind!r}; expected one of '
                   f'{LABEL_LOSSES}.')


def sigmoid_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Elementwise -t log sigmoid(x) - (1 - t) log(1 - sigmoid(x)), stable."""
  logits = _float(logits)
  return jax.nn.softplus(logits) - targets * logits


def adversarial_generator(logits: jax.Array) -> jax.Array:
  """The generator's adversarial loss: be classified as 'label' (target 1).

  Args:
    logits: [B] discriminator logits on the generator's features.
  """
  return jnp.mean(sigmoid_cross_entropy(logits, 1.0))


def adversarial_discriminator(real_logits: jax.Array,
                              fake_logits: jax.Array) -> jax.Array:
  """A discriminator's loss: label features are real (1), modality features 0.

  Args:
    real_logits: [B] logits on LabNet's semantic features.
    fake_logits: [B] logits on a modality network's semantic features.

  Returns:
    The mean of the two sigmoid cross-entropies, a float32 scalar.
  """
  return 0.5 * (jnp.mean(sigmoid_cross_entropy(real_logits, 1.0)) +
                jnp.mean(sigmoid_cross_entropy(fake_logits, 0.0)))


def quantization_to_target(codes: jax.Array, target: jax.Array) -> jax.Array:
  """mean((target - h)^2): DCMH's ||B - F||^2 term, as a mean over entries.

  Args:
    codes: [B, K] real-valued outputs h (gradients flow here).
    target: [B, K] the stored binary codes B of the same items, in {-1, +1}
      (a constant: no gradient reaches it).

  Returns:
    A float32 scalar; times B * K it is the official code's sum.
  """
  codes = _float(codes)
  target = jax.lax.stop_gradient(_float(target))
  return jnp.mean(jnp.square(target - codes))


def bit_balance_all_items(codes: jax.Array, stored: jax.Array,
                          index: jax.Array) -> jax.Array:
  """DCMH's ||F^T 1||^2 over all N items, with the batch's rows live.

  The column sums are those of `stored` with rows `index` replaced by `codes`,
  computed as stored.sum(0) - stored[index].sum(0) + codes.sum(0), so no
  [N, K] copy is made. Only `codes` receives gradients.

  Args:
    codes: [B, K] the batch's current outputs.
    stored: [N, K] the stored outputs of all items.
    index: [B] int, distinct rows of `stored` that `codes` replace.

  Returns:
    ||column sums||^2 / (N^2 K), a float32 scalar (0 when every bit is used
    +1 and -1 equally often); times N^2 K it is the official code's sum.
  """
  codes = _float(codes)
  stored = jax.lax.stop_gradient(_float(stored))
  num_items, bits = stored.shape
  others = jnp.sum(stored, axis=0) - jnp.sum(stored[index], axis=0)
  column_sums = others + jnp.sum(codes, axis=0)
  return jnp.sum(jnp.square(column_sums)) / (num_items * num_items * bits)


def pairwise_contrastive(a: jax.Array, b: jax.Array, sim: jax.Array,
                         margin: float,
                         weights: jax.Array | None = None) -> jax.Array:
  """Contrastive pairwise loss on the mean squared code distance.

  With D_ij = ||a_i - b_j||^2 / K (in [0, 4] for codes in [-1, 1]):
    mean(0.5 * S_ij * D_ij + 0.5 * (1 - S_ij) * max(0, margin - D_ij)).
  Similar pairs are pulled together; dissimilar ones pushed at least `margin`
  apart (margin 2 is DSH's m = 2K in squared Hamming units). D is expanded as
  (|a|^2 + |b|^2 - 2 <a, b>) / K, so no [B, N, K] tensor is formed.

  Args:
    a: [B, K] the batch's codes (gradients flow here).
    b: [N, K] codes of the other side (e.g. stored codes of all items).
    sim: [B, N] similarity in [0, 1].
    margin: the distance beyond which dissimilar pairs cost nothing.
    weights: optional [B, N] per-pair weights (`pair_weights`).

  Returns:
    A float32 scalar.
  """
  a = _float(a)
  b = _float(b)
  bits = a.shape[-1]
  dist = (jnp.sum(jnp.square(a), axis=1)[:, None] +
          jnp.sum(jnp.square(b), axis=1)[None, :] -
          2.0 * jnp.einsum('bd,nd->bn', a, b)) / bits
  dist = jnp.maximum(dist, 0.0)  # Rounding can make it slightly negative.
  weights = 1.0 if weights is None else weights
  return 0.5 * jnp.mean(weights * (sim * dist + (1.0 - sim) *
                                   jax.nn.relu(margin - dist)))
