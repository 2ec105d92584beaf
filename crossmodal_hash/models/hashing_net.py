"""A hashing network: any encoder -> semantic layer -> hash and label heads."""
from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from crossmodal_hash.models import heads
from crossmodal_hash.models import layers


@flax.struct.dataclass
class HashOutputs:
  """What a HashingNet returns; all float32.

  Attributes:
    feature: [B, S] the semantic feature (SSAH's fc8, after ReLU).
    code: [B, K] relaxed hash codes in (-1, 1) (tanh).
    label_logits: [B, L] label logits (sigmoid applied by the losses).
  """
  feature: jax.Array
  code: jax.Array
  label_logits: jax.Array


class HashingNet(nn.Module):
  """encoder -> Dense(semantic_dim) ReLU [-> LRN] -> HashHead and LabelHead.

  SSAH's ImgNet, TxtNet and LabNet are HashingNets around a CNNF (or MLP),
  a MultiScaleTextEncoder and a LabelEncoder. The semantic feature is the
  ReLU output; with `semantic_lrn` (SSAH's TxtNet) the heads read its LRN. The encoder keeps its own dtype
  settings; build it with the same `dtype` as the net for mixed precision.

  Param tree: {'encoder': ..., 'semantic': {'kernel': [E, S], 'bias': [S]},
  'hash': {'dense': ...}, 'label': {'dense': ...}}.

  Attributes:
    encoder: a module mapping the modality's input to [B, E].
    bits: code length K.
    num_labels: number of labels L.
    semantic_dim: width S of the semantic layer (SSAH: 512).
    init_std: std of the normal kernel initialiser of the new layers (semantic
      layer and heads); None = Flax's default.
    bias_std: std of the normal bias initialiser of the new layers; None =
      zeros.
    semantic_lrn: the heads read `lrn(feature)` instead of the feature.
    lrn: LRN hyper-parameters used with `semantic_lrn`.
    dtype: computation dtype of the new layers.
    param_dtype: parameter dtype of the new layers.
  """
  encoder: nn.Module
  bits: int
  num_labels: int
  semantic_dim: int = 512
  init_std: float | None = 0.01
  bias_std: float | None = None
  semantic_lrn: bool = False
  lrn: layers.LocalResponseNorm = layers.LocalResponseNorm()
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> HashOutputs:
    """x: the encoder's input, e.g. [B, H, W, 3] images -> HashOutputs (float32)."""
    h = self.encoder(x)
    feature = layers.dense(self, self.semantic_dim, 'semantic')(h)
    feature = nn.relu(feature)
    head_input = self.lrn(feature) if self.semantic_lrn else feature
    head = dict(init_std=self.init_std, bias_std=self.bias_std,
                dtype=self.dtype, param_dtype=self.param_dtype)
    code = heads.HashHead(self.bits, name='hash', **head)(head_input)
    label_logits = heads.LabelHead(self.num_labels, name='label',
                                   **head)(head_input)
    return HashOutputs(
        feature=layers.at_least_float32(feature),
        code=layers.at_least_float32(code),
        label_logits=layers.at_least_float32(label_logits))


def binarize(codes: jax.Array) -> jax.Array:
  """Sign of relaxed codes, for encoding: [N, K] float -> [N, K] int8 in {-1, +1}.

  sign(0) is +1 (and NaN gives -1), so every bit is set.
  """
  return jnp.where(codes >= 0, 1, -1).astype(jnp.int8)
