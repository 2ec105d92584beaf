"""SCAHN's fine-grained attention encoder over token or region sequences.

One encoder per modality (Liang et al., ACM MM 2022, and the public MindSpore
code's `CrossModalJointEncoder` post-transformers):

  inputs [B, S] int tokens -> embedding to width D, or
  inputs [B, S, F] float regions / patches / features -> linear map to D
  -> (optional learned position embeddings)
  -> L pre-LayerNorm transformer layers, H heads, ReLU MLP of width M
  -> mean over the valid positions -> L2 normalisation -> [B, D] float32.

The layers follow MindSpore's `nn.transformer.TransformerEncoder`, which the
public code uses with its defaults: LayerNorm before attention and before the
MLP (`post_layernorm_residual=False`), each block's input added back, no final
LayerNorm, dropout 0.1 on the attention weights and on each block's output.

Two choices differ from the public code, on purpose:

* Mean pooling averages the valid positions only. The code averages all S
  positions, padding included, so a text's feature depends on how much padding
  its batch carries; here padding changes nothing (tested).
* Padded queries still attend (Flax masks keys and queries together, and a
  fully masked row attends uniformly); their outputs are never pooled, so they
  cannot reach a valid position's output.

Token ids: 0 is padding; word w of a vocabulary of V words is token w + 1, so
the embedding table has V + 1 rows (`data/synthetic_sequences.py`).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash.models import layers

PAD_TOKEN = 0


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12
                ) -> jax.Array:
  """x / max(||x||, sqrt(eps)) along `axis`; a zero vector stays zero."""
  x = layers.at_least_float32(x)
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps))


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x: [B, S, D] over the positions where mask: [B, S] is true.

  Returns [B, D] in at least float32; a row with no valid position gives 0.
  """
  x = layers.at_least_float32(x)
  weights = mask.astype(x.dtype)[..., None]
  count = jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  return jnp.sum(x * weights, axis=1) / count


class EncoderLayer(nn.Module):
  """One pre-LayerNorm transformer layer: [B, S, D] -> [B, S, D].

  x = x + Dropout(Attention(LN(x)));  x = x + Dropout(MLP(LN(x))).

  Attributes:
    num_heads: H; the width D must be a multiple of it.
    mlp_dim: M, hidden width of the ReLU MLP.
    dropout_rate: dropout on each block's output.
    attention_dropout_rate: dropout on the attention weights.
    layer_norm_eps: LayerNorm epsilon (MindSpore's 1e-5).
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, attention_mask: jax.Array, *,
               train: bool) -> jax.Array:
    """x: [B, S, D]; attention_mask: [B, 1, S, S] bool -> [B, S, D]."""
    width = x.shape[-1]
    norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps,
                                     dtype=self.dtype,
                                     param_dtype=self.param_dtype, name=name)
    y = norm('norm_attention')(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=width, out_features=width,
        dropout_rate=self.attention_dropout_rate, dtype=self.dtype,
        param_dtype=self.param_dtype, name='attention')(
            y, y, mask=attention_mask, deterministic=not train)
    x = x + nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    y = norm('norm_mlp')(x)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='mlp_hidden')(y)
    y = nn.relu(y)
    y = nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='mlp_out')(y)
    return x + nn.Dropout(self.dropout_rate)(y, deterministic=not train)


class SequenceEncoder(nn.Module):
  """Sequence [B, S] tokens or [B, S, F] vectors -> [B, D] unit-norm feature.

  Param tree: 'embed' ({'embedding': [V + 1, D]}) for tokens or 'input_map'
  ({'kernel': [F, D], 'bias': [D]}) for vectors; 'position' ([P, D]) when
  `max_positions`; 'layer_0' ... 'layer_{L-1}' (`EncoderLayer`).

  Dropout draws from the 'dropout' rng collection when `train` is true.

  Attributes:
    width: D, the model width (SCAHN: 1024).
    num_layers: L transformer layers (SCAHN: 2).
    num_heads: H attention heads (SCAHN: 4).
    mlp_dim: M, the MLP width (SCAHN: 2048).
    vocab_size: V for token inputs (ids 0..V, 0 = padding); None for vector
      inputs.
    max_positions: P > 0 adds learned position embeddings for up to P
      positions; 0 adds none (the public code adds none: BERT tokens and
      bottom-up regions already carry their positions).
    dropout_rate: dropout on each block's output.
    attention_dropout_rate: dropout on the attention weights.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  width: int
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 2048
  vocab_size: int | None = None
  max_positions: int = 0
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, mask: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Encodes a batch of sequences.

    Args:
      inputs: [B, S] int token ids in [0, V] (`vocab_size` set), or [B, S, F]
        float vectors.
      mask: [B, S] bool, true at valid positions. None: every position of a
        vector input is valid, and every non-zero token of a token input.
      train: apply dropout (needs the 'dropout' rng).

    Returns:
      [B, D] float32 (at least), L2-normalised; zero for a sequence with no
      valid position.
    """
    if self.width % self.num_heads:
      raise ValueError(f'width ({self.width}) must be a multiple of num_heads '
                       f'({self.num_heads}).')
    if self.vocab_size is not None:
      if inputs.ndim != 2:
        raise ValueError('A token encoder expects [B, S] token ids, got shape '
                         f'{inputs.shape}.')
      if mask is None:
        mask = inputs != PAD_TOKEN
      x = nn.Embed(self.vocab_size + 1, self.width, dtype=self.dtype,
                   param_dtype=self.param_dtype, name='embed')(inputs)
    else:
      if inputs.ndim != 3:
        raise ValueError('A vector encoder expects [B, S, F] inputs, got '
                         f'shape {inputs.shape}.')
      if mask is None:
        mask = jnp.ones(inputs.shape[:2], jnp.bool_)
      # The public code initialises its input maps He-uniform.
      x = nn.Dense(self.width, kernel_init=nn.initializers.he_uniform(),
                   dtype=self.dtype, param_dtype=self.param_dtype,
                   name='input_map')(inputs.astype(self.dtype))
    mask = mask.astype(jnp.bool_)
    length = x.shape[1]
    if self.max_positions:
      if length > self.max_positions:
        raise ValueError(f'Sequences of {length} positions exceed '
                         f'max_positions={self.max_positions}.')
      position = self.param('position', nn.initializers.normal(0.02),
                            (self.max_positions, self.width),
                            self.param_dtype)
      x = x + position[:length].astype(self.dtype)
    attention_mask = nn.make_attention_mask(mask, mask)
    for i in range(self.num_layers):
      x = EncoderLayer(
          num_heads=self.num_heads, mlp_dim=self.mlp_dim,
          dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.attention_dropout_rate,
          dtype=self.dtype, param_dtype=self.param_dtype,
          name=f'layer_{i}')(x, attention_mask, train=train)
    return l2_normalize(masked_mean(x, mask))
