"""A Dense + ReLU stack (feature-input image encoder, BoW text nets, ...)."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash.models import layers


class MLP(nn.Module):
  """Dense -> ReLU for each width in `features`, optionally LRN at the end.

  Layers are named dense_0, dense_1, ...

  Attributes:
    features: output widths of the Dense layers, in order (non-empty).
    lrn_final: apply `lrn` after the last layer (after its ReLU).
    init_std: std of the normal kernel initialiser; None = Flax's default.
    bias_std: std of the normal bias initialiser; None = zeros.
    activate_final: apply ReLU after the last layer too (False gives a linear
      output layer, e.g. DCMH's BoW -> 8192 -> K text net).
    lrn: LRN hyper-parameters used when `lrn_final`.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  features: Sequence[int]
  lrn_final: bool = False
  init_std: float | None = None
  bias_std: float | None = None
  activate_final: bool = True
  lrn: layers.LocalResponseNorm = layers.LocalResponseNorm()
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, D] float -> [B, features[-1]] in `dtype`."""
    if not self.features:
      raise ValueError('MLP.features must name at least one layer.')
    x = x.astype(self.dtype)
    last = len(self.features) - 1
    for i, width in enumerate(self.features):
      x = layers.dense(self, width, f'dense_{i}', axes=layers.stack_axes(i))(x)
      if i < last or self.activate_final:
        x = nn.relu(x)
    if self.lrn_final:
      x = self.lrn(x)
    return x
