"""A code network: any encoder -> one Dense layer of K outputs (DCMH, DSMHN)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash.models import layers


class CodeNet(nn.Module):
  """encoder -> Dense(bits) -> [tanh] -> [B, K] float32.

  DCMH's image net is CNN-F up to fc7 with a linear fc8 of K units and its text
  net a BoW MLP (V -> 8192 ReLU) with a linear K-unit layer: CodeNets with
  `tanh=False`, whose real-valued outputs F, G are binarised by sign. DSMHN's
  streams are CodeNets with `tanh=True` (relaxed codes in (-1, 1)).

  Param tree: {'encoder': ..., 'hash': {'kernel': [E, K], 'bias': [K]}}.

  Attributes:
    encoder: a module mapping the modality's input to [B, E].
    bits: code length K.
    tanh: squash the outputs into (-1, 1); else they are linear.
    init_std: std of the normal kernel initialiser of the code layer; None =
      Flax's default.
    dtype: computation dtype of the code layer.
    param_dtype: parameter dtype of the code layer.
  """
  encoder: nn.Module
  bits: int
  tanh: bool = True
  init_std: float | None = 0.01
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: the encoder's input, e.g. [B, H, W, 3] -> [B, bits] float32."""
    h = self.encoder(x)
    z = layers.dense(self, self.bits, 'hash')(h).astype(jnp.float32)
    return jnp.tanh(z) if self.tanh else z
