"""SSAH's LabNet trunk: multi-hot labels -> a wide ReLU (+ LRN) layer."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash.models import layers


class LabelEncoder(nn.Module):
  """Labels [B, L] -> Dense(hidden) -> ReLU -> [LRN] -> [B, hidden].

  Param tree: {'dense': {'kernel': [L, hidden], 'bias': [hidden]}}.

  Attributes:
    hidden: width of the layer (SSAH: 4096).
    init_std: std of the normal kernel initialiser; None = Flax's default.
    bias_std: std of the normal bias initialiser; None = zeros.
    lrn_final: apply `lrn` after the ReLU (SSAH: yes).
    lrn: LRN hyper-parameters.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  hidden: int = 4096
  init_std: float | None = 0.01
  bias_std: float | None = None
  lrn_final: bool = True
  lrn: layers.LocalResponseNorm = layers.LocalResponseNorm()
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, labels: jax.Array) -> jax.Array:
    """labels: [B, L] multi-hot (any numeric dtype) -> [B, hidden] in `dtype`."""
    x = layers.dense(self, self.hidden, 'dense', axes=layers.COLUMN)(
        labels.astype(self.dtype))
    x = nn.relu(x)
    if self.lrn_final:
      x = self.lrn(x)
    return x
