"""SCAHN's networks: the generator (encoders, GCN, hash and PaCo heads) and the
dual discriminator.

The generator follows the public code's `SCAHNGenerator`: one
`attention.SequenceEncoder` per modality gives unit-norm features f [B, D];
hash layers Dense(K) + tanh give the relaxed codes; the GCN over the label
graph gives label classifiers [L, D] whose dot products with f are the label
logits; a Dense(L) of f gives the PaCo classifier logits. The adversarial codes
are the hash layers applied to f without gradient (the code's
`img_hash_g_stoped`), so the adversarial loss trains the hash layers only.

The dual discriminator holds two `discriminator.Discriminator`s K -> 512 -> 1:
'img' takes image codes as real, 'txt' text codes.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash.models import attention
from crossmodal_hash.models import discriminator
from crossmodal_hash.models import graph
from crossmodal_hash.models import layers

MODALITIES = ('img', 'txt')


class Generator(nn.Module):
  """Image and text sequences -> features, codes and label logits.

  Attributes:
    bits: K.
    num_labels: L.
    width: D, the encoders' width (SCAHN: 1024).
    num_layers: transformer layers per encoder (2).
    num_heads: attention heads (4).
    mlp_dim: transformer MLP width (2048).
    dropout_rate: transformer dropout (0.1).
    image_vocab: V for token images (rare), None for vector sequences.
    text_vocab: V for token texts, None for vector sequences.
    image_positions: learned position embeddings of the image encoder (0:
      none).
    text_positions: same for the text encoder.
    gcn_input_dim: F, the label node embedding width (300).
    gcn_hidden: the GCN's hidden width (256).
    dtype: computation dtype.
  """
  bits: int
  num_labels: int
  width: int = 1024
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 2048
  dropout_rate: float = 0.1
  image_vocab: int | None = None
  text_vocab: int | None = None
  image_positions: int = 0
  text_positions: int = 0
  gcn_input_dim: int = 300
  gcn_hidden: int = 256
  dtype: layers.Dtype = jnp.float32

  def setup(self):
    encoder = dict(width=self.width, num_layers=self.num_layers,
                   num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                   dropout_rate=self.dropout_rate,
                   attention_dropout_rate=self.dropout_rate, dtype=self.dtype)
    self.encoders = {
        'img': attention.SequenceEncoder(vocab_size=self.image_vocab,
                                         max_positions=self.image_positions,
                                         **encoder),
        'txt': attention.SequenceEncoder(vocab_size=self.text_vocab,
                                         max_positions=self.text_positions,
                                         **encoder)}
    # The public code initialises its heads He-uniform.
    head = dict(kernel_init=nn.initializers.he_uniform(), dtype=self.dtype)
    self.hash_layers = {m: nn.Dense(self.bits, **head) for m in MODALITIES}
    self.paco = nn.Dense(self.num_labels, **head)
    self.gcn = graph.GCN(num_nodes=self.num_labels,
                         input_dim=self.gcn_input_dim, hidden=self.gcn_hidden,
                         features=self.width, dtype=self.dtype)

  def features(self, modality: str, inputs: jax.Array,
               mask: jax.Array | None = None, *, train: bool = False
              ) -> jax.Array:
    """[B, S(, F)] sequences of `modality` -> [B, D] unit-norm features."""
    return self.encoders[modality](inputs, mask, train=train)

  def codes(self, modality: str, features: jax.Array) -> jax.Array:
    """[B, D] features -> [B, K] relaxed codes in (-1, 1)."""
    return layers.at_least_float32(
        jnp.tanh(self.hash_layers[modality](features)))

  def encode(self, modality: str, inputs: jax.Array,
             mask: jax.Array | None = None) -> jax.Array:
    """[B, S(, F)] -> [B, K] relaxed codes, evaluation mode."""
    return self.codes(modality, self.features(modality, inputs, mask))

  def __call__(self, inputs: dict[str, jax.Array],
               masks: dict[str, jax.Array | None], propagation: jax.Array,
               node_features: jax.Array | None = None, *,
               train: bool = False) -> dict[str, dict[str, jax.Array]]:
    """One forward pass of both modalities.

    Args:
      inputs: {'img': [B, S_i(, F_i)], 'txt': [B, S_t(, F_t)]} sequences.
      masks: {'img': [B, S_i] bool or None, 'txt': ...} valid positions.
      propagation: [L, L] the label graph's `graph.propagation_matrix`.
      node_features: [L, F] fixed label embeddings, or None (learned).
      train: dropout on (the 'dropout' rng).

    Returns:
      {'features', 'codes', 'adv_codes', 'label_logits', 'sup_logits'}, each
      {'img': ..., 'txt': ...}: [B, D], [B, K], [B, K] (gradients reach only
      the hash layers), [B, L] and [B, L].
    """
    classifiers = self.gcn(propagation, node_features, train=train)
    out = {k: {} for k in ('features', 'codes', 'adv_codes', 'label_logits',
                           'sup_logits')}
    for m in MODALITIES:
      f = self.features(m, inputs[m], masks[m], train=train)
      out['features'][m] = f
      out['codes'][m] = self.codes(m, f)
      out['adv_codes'][m] = self.codes(m, jax.lax.stop_gradient(f))
      out['label_logits'][m] = graph.label_logits(f, classifiers)
      out['sup_logits'][m] = layers.at_least_float32(self.paco(f))
    return out


class DualDiscriminator(nn.Module):
  """Two modality discriminators over codes: 'img' (image codes real), 'txt'.

  Attributes:
    hidden: hidden widths of each discriminator (SCAHN: (512,)).
    dtype: computation dtype.
  """
  hidden: Sequence[int] = (512,)
  dtype: layers.Dtype = jnp.float32

  def setup(self):
    self.nets = {m: discriminator.Discriminator(hidden=tuple(self.hidden),
                                                init_std=None,
                                                dtype=self.dtype)
                 for m in MODALITIES}

  def __call__(self, img_codes: jax.Array, txt_codes: jax.Array
              ) -> dict[str, jax.Array]:
    """Codes [B, K] of each modality -> the four [B] logits.

    Returns:
      {'img_on_img', 'img_on_txt', 'txt_on_txt', 'txt_on_img'}: discriminator
      'img' or 'txt' on image or text codes.
    """
    return {'img_on_img': self.nets['img'](img_codes),
            'img_on_txt': self.nets['img'](txt_codes),
            'txt_on_txt': self.nets['txt'](txt_codes),
            'txt_on_img': self.nets['txt'](img_codes)}
