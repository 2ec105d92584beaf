"""A small 3-D convolutional encoder of video clips (DSMHN's video stream)."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash.models import layers


class Video3DEncoder(nn.Module):
  """Clips [B, T, H, W, C] -> 3-D conv blocks -> flatten -> Dense stack.

  Block i is Conv3D(conv_features[i], kernel 3 x 3 x 3, stride 1, 'SAME') ->
  ReLU -> max pool of window = stride (temporal_pool[i], 2, 2), 'VALID'. So
  each block halves H and W and divides T by its temporal pool; the map is
  then flattened in (T, H, W, C) order and each fc_features entry adds a Dense
  + ReLU (named fc_0, fc_1, ...). C3D's layout (3 x 3 x 3 kernels everywhere,
  no temporal pooling in the first block), scaled down for synthetic clips.

  Example: 8 x 32 x 32 clips with temporal_pool (1, 2, 2) give 8 x 16 x 16,
  4 x 8 x 8, then 2 x 4 x 4 maps; fc_0 sees 2 * 4 * 4 * conv_features[-1].

  Attributes:
    conv_features: output channels of each 3-D conv block (non-empty).
    temporal_pool: temporal pooling window (= stride) of each block; 1 keeps T.
    fc_features: widths of the Dense + ReLU layers after the flatten.
    init_std: std of the normal kernel initialisers; None = Flax's default.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  conv_features: Sequence[int] = (32, 64, 128)
  temporal_pool: Sequence[int] = (1, 2, 2)
  fc_features: Sequence[int] = (512,)
  init_std: float | None = None
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Encodes clips.

    Args:
      x: [B, T, H, W, C] float, already normalised.

    Returns:
      [B, fc_features[-1]] (or the flattened map if fc_features is empty), in
      `dtype`.
    """
    if x.ndim != 5:
      raise ValueError('Video3DEncoder expects [B, T, H, W, C] clips, got '
                       f'shape {x.shape}.')
    if not self.conv_features:
      raise ValueError('Video3DEncoder.conv_features must name at least one '
                       'block.')
    if len(self.temporal_pool) != len(self.conv_features):
      raise ValueError(f'Video3DEncoder.temporal_pool has '
                       f'{len(self.temporal_pool)} entries; conv_features has '
                       f'{len(self.conv_features)}.')
    x = x.astype(self.dtype)
    for i, (features, pool_t) in enumerate(zip(self.conv_features,
                                               self.temporal_pool)):
      t, h, w = x.shape[1] // pool_t, x.shape[2] // 2, x.shape[3] // 2
      if t < 1 or h < 1 or w < 1:
        raise ValueError(f'Video3DEncoder input is too small: block {i + 1} '
                         f'gets {x.shape[1:4]} and its pool ({pool_t}, 2, 2) '
                         f'leaves {(t, h, w)}.')
      x = nn.Conv(features, kernel_size=(3, 3, 3), padding='SAME',
                  kernel_init=layers.kernel_init(self.init_std),
                  dtype=self.dtype, param_dtype=self.param_dtype,
                  name=f'conv_{i}')(x)
      x = nn.relu(x)
      x = nn.max_pool(x, window_shape=(pool_t, 2, 2), strides=(pool_t, 2, 2),
                      padding='VALID')
    x = x.reshape((x.shape[0], -1))
    for j, features in enumerate(self.fc_features):
      x = nn.relu(layers.dense(self, features, f'fc_{j}')(x))
    return x
