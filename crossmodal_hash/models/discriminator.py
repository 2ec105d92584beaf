"""The modality discriminator of the adversarial methods (SSAH, SSAL, ...)."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash.models import layers


class Discriminator(nn.Module):
  """Features [B, D] -> Dense + ReLU per `hidden` width -> Dense(1) -> [B] logits.

  SSAH: 512 -> 512 ReLU -> 256 ReLU -> 1. Layers are named dense_0, dense_1,
  ... and logit.

  Attributes:
    hidden: widths of the hidden layers.
    init_std: std of the normal kernel initialiser; None = Flax's default.
    bias_std: std of the normal bias initialiser; None = zeros.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  hidden: Sequence[int] = (512, 256)
  init_std: float | None = 0.01
  bias_std: float | None = None
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, D] float -> [B] float32 logits (sigmoid applied by the loss)."""
    x = x.astype(self.dtype)
    for i, width in enumerate(self.hidden):
      x = layers.dense(self, width, f'dense_{i}')(x)
      x = nn.relu(x)
    x = layers.dense(self, 1, 'logit')(x)
    return layers.at_least_float32(x[..., 0])
