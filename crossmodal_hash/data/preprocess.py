"""Image-input normalisation: statistics on the host, applied inside jit."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NORMALIZATIONS = ('standardize', 'mean', 'pretrained_mean')


def image_statistics(images: np.ndarray, mode: str, chunk: int = 1024,
                     mean_image: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel (pixels) or per-dimension (features) mean and inverse scale.

  Args:
    images: [N, H, W, C] uint8 pixels or [N, D] float features (the training
      split; read in chunks so memory stays bounded).
    mode: 'standardize' ((x - mean) / std), 'mean' (x - mean, CNN-F's input)
      or 'pretrained_mean' (x - `mean_image`, the mean image a pretrained
      CNN-F was trained with; nothing is computed).
    chunk: items per chunk.
    mean_image: [H, W, C] float, needed by (and only used by)
      'pretrained_mean'.

  Returns:
    (mean, inv_scale), float32 arrays of shape [C] or [D]; for
    'pretrained_mean', `mean_image` [H, W, C] and ones [C].
  """
  if mode not in NORMALIZATIONS:
    raise ValueError(f'Unknown image normalization {mode!r}; expected one of '
                     f'{NORMALIZATIONS}.')
  if mode == 'pretrained_mean':
    return _pretrained_mean(images, mean_image)
  axes = tuple(range(images.ndim - 1))
  total = np.zeros(images.shape[-1], np.float64)
  total_sq = np.zeros(images.shape[-1], np.float64)
  count = 0
  for start in range(0, len(images), chunk):
    x = np.asarray(images[start:start + chunk], np.float64)
    total += x.sum(axis=axes)
    total_sq += np.square(x).sum(axis=axes)
    count += x.size // x.shape[-1]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
  inv_scale = 1.0 / np.maximum(std, 1e-6) if mode == 'standardize' else (
      np.ones_like(mean))
  return mean.astype(np.float32), inv_scale.astype(np.float32)


def _pretrained_mean(images: np.ndarray, mean_image: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(mean_image, ones [C]) after checking it fits the [N, H, W, C] images."""
  if mean_image is None:
    raise ValueError(
        "config.model.image_normalization='pretrained_mean' subtracts the mean "
        'image of a pretrained CNN-F; name its file in '
        'config.model.pretrained_cnnf.')
  mean_image = np.asarray(mean_image, np.float32)
  if images.ndim != 4 or tuple(images.shape[1:]) != mean_image.shape:
    raise ValueError(
        f'The pretrained mean image is {list(mean_image.shape)} but the images '
        f'are {list(images.shape[1:])}; the pretrained CNN-F takes '
        f'{mean_image.shape[0]} x {mean_image.shape[1]} RGB pixels.')
  return mean_image, np.ones(mean_image.shape[-1], np.float32)


def normalize(images: jax.Array, mean: jax.Array,
              inv_scale: jax.Array) -> jax.Array:
  """(images - mean) * inv_scale as float32; broadcasts over the last axis."""
  return (images.astype(jnp.float32) - mean) * inv_scale
