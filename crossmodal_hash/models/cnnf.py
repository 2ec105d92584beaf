"""CNN-F (Chatfield et al., 2014; MatConvNet's imagenet-vgg-f) trunk up to fc7."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash.models import layers


def out_size(size: int, kernel: int, stride: int, pad_lo: int,
             pad_hi: int) -> int:
  """Output length of a conv or pool along one axis (floor division).

  Args:
    size: input length.
    kernel: window length.
    stride: step.
    pad_lo: padding before (top or left).
    pad_hi: padding after (bottom or right).
  """
  return (size + pad_lo + pad_hi - kernel) // stride + 1


class CNNF(nn.Module):
  """Configurable CNN-F trunk: conv1..conv5 and fc6, fc7, all followed by ReLU.

  Layer i (conv{i+1}) is: Conv(conv_features[i], conv_kernels[i] square,
  conv_strides[i], symmetric zero padding conv_paddings[i]) -> ReLU -> [LRN if
  lrn_after[i]] -> [max pool if pool_after[i]]. The map is then flattened in
  (H, W, C) row-major order, so MatConvNet's fc6 filter [6, 6, 256, 4096]
  reshaped to [9216, 4096] is fc6's kernel, and each fc_features entry adds a
  Dense + ReLU (named fc6, fc7, ...).

  The pools are max pools of `pool_window` with `pool_stride` and MatConvNet's
  asymmetric padding `pool_padding` ((0, 1), (0, 1)), which gives, for CNN-F at
  224 x 224: conv1 54 -> pool1 27 -> conv2 27 -> pool2 13 -> conv3-5 13 ->
  pool5 6, so fc6 sees 6 * 6 * 256 = 9216 inputs. Any input size whose
  arithmetic leaves at least one pixel works; fc6's input size follows from it.

  Attributes:
    conv_features: output channels of conv1..convN.
    conv_kernels: square kernel sizes.
    conv_strides: strides.
    conv_paddings: symmetric zero padding of each conv, in pixels.
    lrn_after: apply LRN (after the ReLU, before the pool) after this conv.
    pool_after: max-pool after this conv.
    fc_features: widths of the fully connected layers (fc6, fc7, ...).
    pool_window: max-pool window (square).
    pool_stride: max-pool stride.
    pool_padding: max-pool padding ((top, bottom), (left, right)).
    lrn: the LRN hyper-parameters.
    init_std: std of the normal kernel initialiser; None = Flax's default.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  conv_features: Sequence[int] = (64, 256, 256, 256, 256)
  conv_kernels: Sequence[int] = (11, 5, 3, 3, 3)
  conv_strides: Sequence[int] = (4, 1, 1, 1, 1)
  conv_paddings: Sequence[int] = (0, 2, 1, 1, 1)
  lrn_after: Sequence[bool] = (True, True, False, False, False)
  pool_after: Sequence[bool] = (True, True, False, False, True)
  fc_features: Sequence[int] = (4096, 4096)
  pool_window: int = 3
  pool_stride: int = 2
  pool_padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 1), (0, 1))
  lrn: layers.LocalResponseNorm = layers.LocalResponseNorm()
  init_std: float | None = None
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Runs the trunk.

    Args:
      x: [B, H, W, 3] float, already mean-subtracted.

    Returns:
      [B, fc_features[-1]] (or the flattened conv map if fc_features is empty),
      in `dtype`.
    """
    n = len(self.conv_features)
    for name in ('conv_kernels', 'conv_strides', 'conv_paddings', 'lrn_after',
                 'pool_after'):
      if len(getattr(self, name)) != n:
        raise ValueError(f'CNNF.{name} has {len(getattr(self, name))} entries; '
                         f'conv_features has {n}.')
    if x.ndim != 4:
      raise ValueError(f'CNNF expects [B, H, W, C] images, got shape {x.shape}.')

    x = x.astype(self.dtype)
    kinit = layers.kernel_init(self.init_std)
    for i in range(n):
      k, s, p = self.conv_kernels[i], self.conv_strides[i], self.conv_paddings[i]
      h, w = (out_size(d, k, s, p, p) for d in x.shape[1:3])
      if h < 1 or w < 1:
        raise ValueError(f'CNNF input {x.shape} is too small: conv{i + 1} '
                         f'({k}x{k}, stride {s}, pad {p}) leaves {h}x{w}.')
      x = nn.Conv(
          features=self.conv_features[i],
          kernel_size=(k, k),
          strides=(s, s),
          padding=((p, p), (p, p)),
          kernel_init=kinit,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name=f'conv{i + 1}')(x)
      x = nn.relu(x)
      if self.lrn_after[i]:
        x = self.lrn(x)
      if self.pool_after[i]:
        win, st = self.pool_window, self.pool_stride
        h, w = (out_size(d, win, st, *pad)
                for d, pad in zip(x.shape[1:3], self.pool_padding))
        if h < 1 or w < 1:
          raise ValueError(f'CNNF input is too small: the pool after conv{i + 1}'
                           f' gets {x.shape[1]}x{x.shape[2]} and leaves {h}x{w}.')
        x = nn.max_pool(
            x,
            window_shape=(win, win),
            strides=(st, st),
            padding=tuple(tuple(pad) for pad in self.pool_padding))

    x = x.reshape((x.shape[0], -1))
    for j, features in enumerate(self.fc_features):
      x = layers.dense(self, features, f'fc{n + 1 + j}',
                       axes=layers.stack_axes(j))(x)
      x = nn.relu(x)
    return x


def cnnf_224(dtype: layers.Dtype = jnp.float32,
             param_dtype: layers.Dtype = jnp.float32) -> CNNF:
  """The exact CNN-F trunk (imagenet-vgg-f up to fc7) for 224 x 224 inputs.

  [B, 224, 224, 3] -> [B, 4096]; fc6 sees a 6 x 6 x 256 map.
  """
  return CNNF(dtype=dtype, param_dtype=param_dtype)


def cnnf_small(dtype: layers.Dtype = jnp.float32,
               param_dtype: layers.Dtype = jnp.float32) -> CNNF:
  """A cheap CNN-F-shaped trunk for small images (32 x 32, 64 x 64) on CPU.

  conv 32@5x5, 64@3x3, 3 x 64@3x3, stride 1, 'SAME' padding, LRN and pool after
  conv1 and conv2, pool after conv5; fc 512, 512. At 32 x 32: 32 -> pool 16 ->
  pool 8 -> pool5 4, fc6 sees 4 * 4 * 64 = 1024 inputs; about 15.0 M
  multiply-adds per image. [B, H, W, 3] -> [B, 512].
  """
  return CNNF(
      conv_features=(32, 64, 64, 64, 64),
      conv_kernels=(5, 3, 3, 3, 3),
      conv_strides=(1, 1, 1, 1, 1),
      conv_paddings=(2, 1, 1, 1, 1),
      lrn_after=(True, True, False, False, False),
      pool_after=(True, True, False, False, True),
      fc_features=(512, 512),
      dtype=dtype,
      param_dtype=param_dtype)
