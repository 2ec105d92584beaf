"""Domain-transfer loss terms: gradient reversal, multi-kernel MMD, paired L2.

MHTN (methods/mhtn.py) uses all three, after the released Caffe model
(PKU-ICST-MIPL/MHTN_TCYB2018 `model.prototxt`):

* `reverse_gradient`: caffe-grl's `GradientScaler` layer: the identity
  forward, the gradient times -scale backward, so the layers below it learn to
  confuse the classifier above it while that classifier learns to classify.
  `reversal_scale` gives caffe-grl's ramp of the scale over the run.
* `multi_kernel_mmd`: transfer-caffe's `MMDLoss` between a source and a target
  batch of features: the squared maximum mean discrepancy under a sum of
  Gaussian kernels, the biased (V-statistic) estimate over all pairs of the
  two batches, with bandwidths from the batch (`kernel_bandwidths`).
* `paired_l2`: Caffe's `ContrastiveLoss` on pairs that are all similar
  (the model's constant 'similarity' input of ones): half the mean squared
  distance of the paired rows.

Every term returns a scalar in at least float32 (float64 under x64, for the
float64 reference tests).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from crossmodal_hash.models import layers

_float = layers.at_least_float32


@jax.custom_vjp
def _reverse(x: jax.Array, scale: jax.Array) -> jax.Array:
  return x


def _reverse_fwd(x, scale):
  return x, scale


def _reverse_bwd(scale, g):
  return (-scale * g).astype(g.dtype), jnp.zeros_like(scale)


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def reverse_gradient(x: jax.Array, scale: float | jax.Array = 1.0
                    ) -> jax.Array:
  """The gradient reversal layer: `x` forward, -scale * gradient backward.

  Args:
    x: [...] features (any float dtype).
    scale: [] the reversal's strength (a float or a traced value, e.g.
      `reversal_scale` of the step); no gradient flows to it.

  Returns:
    `x` unchanged; d(loss)/d(x) = -scale * d(loss)/d(output).
  """
  return _reverse(x, jnp.asarray(scale, x.dtype))


def reversal_scale(step: jax.Array, *, lower: float, upper: float,
                   alpha: float, ramp_steps: int) -> jax.Array:
  """caffe-grl's adaptation coefficient at `step` (a float32 scalar).

    p = min(1, step / ramp_steps)
    scale = lower + (upper - lower) * (2 / (1 + exp(-alpha p)) - 1)

  DANN's ramp (alpha 10) rises from `lower` to nearly `upper`; ramp_steps 0
  gives the constant `upper`.
  """
  if ramp_steps <= 0:
    return jnp.asarray(upper, jnp.float32)
  progress = jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / ramp_steps)
  height = upper - lower
  return lower + height * (2.0 / (1.0 + jnp.exp(-alpha * progress)) - 1.0)


def squared_distances(x: jax.Array) -> jax.Array:
  """[N, D] rows -> [N, N] squared Euclidean distances (>= 0)."""
  x = _float(x)
  sq = jnp.sum(jnp.square(x), axis=1)
  dist = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
  return jnp.maximum(dist, 0.0)


def kernel_bandwidths(distances: jax.Array, *, kernel_num: int,
                      kernel_mul: float, bandwidth: float = 0.0
                     ) -> jax.Array:
  """[kernel_num] Gaussian bandwidths (the sigma^2 of exp(-d^2 / sigma^2)).

  The middle kernel's bandwidth is `bandwidth`, or (0, transfer-caffe's
  `fix_gamma: false`) the mean squared distance between distinct rows of the
  joint batch, a constant (no gradient); the others are it times kernel_mul^j
  for j = -(kernel_num // 2), ..., kernel_num - 1 - kernel_num // 2.

  Args:
    distances: [N, N] squared distances of the joint batch.
    kernel_num: number of kernels (>= 1).
    kernel_mul: ratio of neighbouring bandwidths.
    bandwidth: a fixed middle bandwidth; 0 = from the batch.
  """
  if kernel_num < 1:
    raise ValueError(f'kernel_num={kernel_num} must be >= 1.')
  n = distances.shape[0]
  if bandwidth > 0:
    middle = jnp.asarray(bandwidth, distances.dtype)
  else:
    middle = jax.lax.stop_gradient(jnp.sum(distances) / (n * n - n))
  exponents = jnp.arange(kernel_num, dtype=distances.dtype) - kernel_num // 2
  return middle * jnp.power(jnp.asarray(kernel_mul, distances.dtype),
                            exponents)


def multi_kernel_mmd(source: jax.Array, target: jax.Array, *,
                     kernel_num: int = 5, kernel_mul: float = 2.0,
                     bandwidth: float = 0.0) -> jax.Array:
  """Biased estimate of MMD^2 between two batches, multi-kernel Gaussian.

    k(x, y) = sum_j exp(-||x - y||^2 / sigma_j^2)   (`kernel_bandwidths`)
    MMD^2 = mean_{i,i'} k(s_i, s_i') + mean_{j,j'} k(t_j, t_j')
            - 2 mean_{i,j} k(s_i, t_j)

  The means run over all pairs, the diagonal included (the V-statistic): it
  is >= 0 and 0 for identical batches. Memory: one [S + T, S + T] matrix.

  Args:
    source: [S, D] source-domain features.
    target: [T, D] target-domain features.
    kernel_num: number of Gaussian kernels (MHTN's prototxt: 1).
    kernel_mul: ratio of neighbouring bandwidths (2.0).
    bandwidth: fixed middle bandwidth; 0 = the batch's mean squared distance.

  Returns:
    A scalar.
  """
  source, target = _float(source), _float(target)
  s = source.shape[0]
  joint = jnp.concatenate([source, target], axis=0)
  dist = squared_distances(joint)
  sigmas = kernel_bandwidths(dist, kernel_num=kernel_num,
                             kernel_mul=kernel_mul, bandwidth=bandwidth)
  kernel = jnp.sum(jnp.exp(-dist[None] / sigmas[:, None, None]), axis=0)
  return (jnp.mean(kernel[:s, :s]) + jnp.mean(kernel[s:, s:]) -
          2.0 * jnp.mean(kernel[:s, s:]))


def paired_l2(a: jax.Array, b: jax.Array) -> jax.Array:
  """Half the mean over rows of ||a_i - b_i||^2 (Caffe's ContrastiveLoss of
  similar pairs).

  Args:
    a: [B, D] one modality's features of B items.
    b: [B, D] the other modality's features of the same items.
  """
  a, b = _float(a), _float(b)
  return 0.5 * jnp.sum(jnp.square(a - b)) / a.shape[0]


def soft_label_cross_entropy(logits: jax.Array, labels: jax.Array
                            ) -> jax.Array:
  """Mean softmax cross-entropy against the labels spread evenly.

  For one-hot labels it is Caffe's SoftmaxWithLoss; a multi-label row's
  target is uniform over its labels (an all-zero row costs nothing).

  Args:
    logits: [B, C].
    labels: [B, C] multi-hot {0, 1}.
  """
  logits = _float(logits)
  labels = labels.astype(logits.dtype)
  target = labels / jnp.maximum(jnp.sum(labels, axis=1, keepdims=True), 1.0)
  return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits, axis=1),
                           axis=1))
