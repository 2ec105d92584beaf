"""SSAL's networks: a projector per modality and the two-classifier adversary.

A `Projector` maps one modality's input through its trunk (any encoder of
models/registry.py: 'cnnf_small' on pixels, 'feature_mlp' on features, the
'bow_mlp' text trunk) and an MLP head into the common space, where the
embedding is L2-normalised: retrieval ranks by cosine, which is then a dot
product. The `Adversary` holds a modality classifier (image vs text, one
logit) and, for pixel inputs, a rotation classifier (4 logits: 0, 90, 180,
270 degrees), both MLPs over common-space embeddings.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash.models import discriminator
from crossmodal_hash.models import layers
from crossmodal_hash.models import mlp

NUM_ROTATIONS = 4


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """[B, D] -> [B, D] rows scaled to unit L2 norm (zero rows stay zero)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


class Projector(nn.Module):
  """trunk -> (Dense + ReLU per `hidden`) -> Dense(D) -> unit-norm [B, D].

  Param tree: {'encoder': the trunk's, 'head': {'dense_0', ...}}.

  Attributes:
    encoder: the modality's trunk, input [B, ...] -> [B, E].
    hidden: widths of the head's hidden layers (may be empty).
    embedding_dim: D, the common space's width.
    dtype: computation dtype (the embedding is float32 or wider).
  """
  encoder: nn.Module
  hidden: Sequence[int]
  embedding_dim: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: the trunk's input, e.g. [B, H, W, 3] -> [B, D] float32, unit norm."""
    h = self.encoder(x)
    e = mlp.MLP(features=tuple(self.hidden) + (self.embedding_dim,),
                activate_final=False, dtype=self.dtype, name='head')(h)
    return l2_normalize(layers.at_least_float32(e))


class Adversary(nn.Module):
  """Common-space embeddings -> the modality and rotation classifiers' logits.

  Param tree: {'modality': {'dense_0', ..., 'logit'}, and with `rotation`
  'rotation': {'dense_0', ..., 'dense_<n>' (4 logits)}}.

  Attributes:
    hidden: hidden widths of each classifier.
    rotation: whether the rotation classifier exists (pixel inputs).
    dtype: computation dtype.
  """
  hidden: Sequence[int] = (256,)
  rotation: bool = True
  dtype: layers.Dtype = jnp.float32

  def setup(self):
    self.modality = discriminator.Discriminator(
        hidden=tuple(self.hidden), init_std=None, dtype=self.dtype)
    if self.rotation:
      self.rotation_classifier = mlp.MLP(
          features=tuple(self.hidden) + (NUM_ROTATIONS,),
          activate_final=False, dtype=self.dtype)

  def __call__(self, img: jax.Array, txt: jax.Array,
               rotated: jax.Array | None = None) -> dict[str, jax.Array]:
    """Embeddings [B, D] -> logits.

    Args:
      img: [B, D] image embeddings.
      txt: [B, D] text embeddings.
      rotated: [B, D] embeddings of rotated images (with `rotation`).

    Returns:
      {'modality_img': [B], 'modality_txt': [B]} logits of "is an image";
      with `rotation`, also 'rotation': [B, 4] logits of the rotation.
    """
    out = {'modality_img': self.modality(img),
           'modality_txt': self.modality(txt)}
    if self.rotation:
      out['rotation'] = layers.at_least_float32(
          self.rotation_classifier(rotated))
    return out
