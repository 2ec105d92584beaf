"""SSAH's TxtNet trunk: multi-scale fusion of a bag-of-words vector."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash.models import layers


def upsample_linear(x: jax.Array, size: int) -> jax.Array:
  """Linear interpolation along the last axis, TF1 `resize_bilinear` style.

  Output position j reads input position j * n / size (n = x.shape[-1]; no
  half-pixel centres, align_corners=False): the blend of inputs floor(.) and
  floor(.) + 1, the latter clamped to n - 1. This is what the official SSAH
  code's `tf.image.resize_images` (TF 1.x) computes.

  Args:
    x: [..., n] float.
    size: the output length (>= n).

  Returns:
    [..., size], the dtype of `x`.
  """
  n = x.shape[-1]
  src = jnp.arange(size) * (n / size)
  lo = jnp.floor(src).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, n - 1)
  frac = (src - lo).astype(x.dtype)
  return x[..., lo] * (1 - frac) + x[..., hi] * frac


class MultiScaleFusion(nn.Module):
  """Bag-of-words [B, V] -> [B, V, 1 + len(pool_windows)] multi-scale channels.

  Channel 0 is the input itself. Channel 1 + i, for w = pool_windows[i]:
  average pooling along the word axis with window = stride = w ('VALID', the
  last V mod w words are dropped, giving V // w values), a 1x1 convolution with
  one scalar weight (and no bias, as in the official SSAH code; `branch_bias`
  adds one), ReLU, and linear interpolation back to V values (`upsample_linear`:
  TF1's `tf.image.resize_images`, which the official code calls, without
  half-pixel centres).

  Param tree: {'branch_{w}': {'kernel': [1, 1]}} for each w (plus 'bias': [1]
  with `branch_bias`).

  Attributes:
    pool_windows: the pooling windows (SSAH: 5, 10, 15, 30, 50).
    init_std: std of the normal initialiser of the scalar weights; None =
      Flax's default.
    branch_bias: give each branch's 1x1 convolution a bias.
    bias_std: std of the normal initialiser of those biases; None = zeros.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  pool_windows: Sequence[int] = (5, 10, 15, 30, 50)
  init_std: float | None = 0.01
  branch_bias: bool = False
  bias_std: float | None = None
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, V] (any numeric dtype) -> [B, V, 1 + len(pool_windows)] in `dtype`."""
    if x.ndim != 2:
      raise ValueError(f'MultiScaleFusion expects [B, V], got shape {x.shape}.')
    if any(w < 1 for w in self.pool_windows):
      raise ValueError(f'pool_windows must be positive, got {self.pool_windows}.')
    batch, vocab = x.shape
    if self.pool_windows and vocab < max(self.pool_windows):
      raise ValueError(
          f'MultiScaleFusion needs at least max(pool_windows) = '
          f'{max(self.pool_windows)} words, got a vocabulary of {vocab}.')
    xf = layers.at_least_float32(x)
    channels = [x.astype(self.dtype)]
    for w in self.pool_windows:
      length = vocab // w
      pooled = xf[:, :length * w].reshape(batch, length, w).mean(axis=-1)
      y = layers.dense(self, 1, f'branch_{w}', use_bias=self.branch_bias)(
          pooled.astype(self.dtype)[..., None])
      y = nn.relu(y[..., 0])
      y = upsample_linear(y, vocab)
      channels.append(y.astype(self.dtype))
    return jnp.stack(channels, axis=-1)


class MultiScaleTextEncoder(nn.Module):
  """[B, V] -> fusion [B, V, C] -> flatten [B, V * C] -> Dense ReLU [LRN] -> [B, hidden].

  C = 1 + len(pool_windows). The flatten is row-major over (V, C), the layout of
  SSAH's [1, V, C, hidden] convolution kernel. Param tree: {'fusion': ...,
  'dense': {'kernel': [V * C, hidden], 'bias': [hidden]}}.

  Attributes:
    pool_windows: the fusion's pooling windows.
    hidden: width of the Dense layer (SSAH: 4096).
    init_std: std of the normal kernel initialisers; None = Flax's default.
    bias_std: std of the normal bias initialisers; None = zeros.
    lrn_final: apply `lrn` after the ReLU (SSAH: yes).
    lrn: LRN hyper-parameters.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  pool_windows: Sequence[int] = (5, 10, 15, 30, 50)
  hidden: int = 4096
  init_std: float | None = 0.01
  bias_std: float | None = None
  lrn_final: bool = True
  lrn: layers.LocalResponseNorm = layers.LocalResponseNorm()
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, V] bag of words -> [B, hidden] in `dtype`."""
    fused = MultiScaleFusion(
        pool_windows=self.pool_windows,
        init_std=self.init_std,
        bias_std=self.bias_std,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name='fusion')(x)
    y = layers.dense(self, self.hidden, 'dense', axes=layers.COLUMN)(
        fused.reshape((fused.shape[0], -1)))
    y = nn.relu(y)
    if self.lrn_final:
      y = self.lrn(y)
    return y
