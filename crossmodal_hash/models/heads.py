"""Output heads shared by every hashing network."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash.models import layers


class HashHead(nn.Module):
  """Semantic feature [B, S] -> Dense(bits) -> tanh -> codes [B, K] in (-1, 1).

  The tanh is taken in float32, so the codes are float32 whatever `dtype` is.
  Param tree: {'dense': {'kernel': [S, K], 'bias': [K]}}.

  Attributes:
    bits: code length K.
    init_std: std of the normal kernel initialiser; None = Flax's default.
    bias_std: std of the normal bias initialiser; None = zeros.
    dtype: computation dtype of the Dense layer.
    param_dtype: parameter dtype.
  """
  bits: int
  init_std: float | None = 0.01
  bias_std: float | None = None
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, S] float -> [B, bits] float32 in (-1, 1)."""
    x = layers.dense(self, self.bits, 'dense')(x)
    return jnp.tanh(layers.at_least_float32(x))


class LabelHead(nn.Module):
  """Semantic feature [B, S] -> Dense(num_labels) -> logits [B, L] (float32).

  The sigmoid is left to the losses. Param tree:
  {'dense': {'kernel': [S, L], 'bias': [L]}}.

  Attributes:
    num_labels: number of labels L.
    init_std: std of the normal kernel initialiser; None = Flax's default.
    bias_std: std of the normal bias initialiser; None = zeros.
    dtype: computation dtype of the Dense layer.
    param_dtype: parameter dtype.
  """
  num_labels: int
  init_std: float | None = 0.01
  bias_std: float | None = None
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, S] float -> [B, num_labels] float32 logits."""
    x = layers.dense(self, self.num_labels, 'dense')(x)
    return layers.at_least_float32(x)
