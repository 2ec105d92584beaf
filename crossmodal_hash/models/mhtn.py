"""MHTN's networks above the frozen image trunk (after the released Caffe
model, PKU-ICST-MIPL/MHTN_TCYB2018 `model.prototxt`).

`MHTNNet` holds:
  * three stems, one per stream: the source images ('source': fc6, fc7),
    the target images ('img': xmedia_img_fc6, fc7) and the texts ('txt':
    xmedia_txt_fc6, fc7, after a BatchNorm with scale and shift of the raw
    input); each layer Dense -> BatchNorm (no affine: Caffe's BatchNorm
    without a Scale layer) -> ReLU, widths `stem_widths` (4096, 4096);
  * the source classifier Dense(C_s) on the source stem (fc8);
  * the shared semantic subnetwork over the target stems' last layer
    (xmedia_fc8, fc9: Dense -> BatchNorm -> ReLU, `semantic_widths`, then
    xmedia_fc10: Dense(C)), run on the images and texts as ONE batch, so its
    BatchNorm statistics are those of both modalities, as the Caffe Concat
    makes them; softmax(fc10) is the common representation;
  * the modality discriminator: a bottleneck Dense(`bottleneck`) on the
    semantic net's last hidden layer before its BatchNorm (xmedia_fc9), the
    gradient reversal layer, then Dense + ReLU per `discriminator_hidden`
    (1024, 1024) and Dense(M) logits, one per modality.
Initialisation: He normal (Caffe's 'msra' filler), biases 0. BatchNorm
momentum 0.9 (moving_average_fraction), epsilon 1e-5.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash import transfer_losses
from crossmodal_hash.models import layers

STREAMS = ('source', 'img', 'txt')
MODALITIES = ('img', 'txt')
_MSRA = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def _wide_inits(index: int) -> dict[str, layers.Initializer]:
  """Layer `index` of a stem or of the semantic net (4096 wide): MSRA
  kernel, zero bias, named `layers.stack_axes(index)`."""
  return layers.dense_kwargs(layers.stack_axes(index), _MSRA,
                             nn.initializers.zeros_init())


def _batch_norm(train: bool, name: str, affine: bool = False,
                dtype: layers.Dtype = jnp.float32) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, use_scale=affine, use_bias=affine,
                      dtype=dtype, name=name)


class Stem(nn.Module):
  """[B, D] -> a list of [B, W_i] activations, Dense -> BN -> ReLU each.

  Attributes:
    widths: the layers' widths (MHTN: (4096, 4096)).
    input_norm: a BatchNorm with scale and shift of the input first (the
      prototxt's text stream).
    dtype: computation dtype.
  """
  widths: Sequence[int]
  input_norm: bool = False
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> list[jax.Array]:
    x = x.astype(self.dtype)
    if self.input_norm:
      x = _batch_norm(train, 'input_bn', affine=True, dtype=self.dtype)(x)
    outs = []
    for i, width in enumerate(self.widths):
      x = nn.Dense(width, dtype=self.dtype, name=f'fc{i}',
                   **_wide_inits(i))(x)
      x = nn.relu(_batch_norm(train, f'bn{i}', dtype=self.dtype)(x))
      outs.append(x)
    return outs


class SemanticNet(nn.Module):
  """[N, W] -> ([N, C] logits, [N, H] the last hidden layer before its BN).

  Attributes:
    widths: hidden widths (MHTN: (4096, 4096)).
    num_classes: C.
    dtype: computation dtype.
  """
  widths: Sequence[int]
  num_classes: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool
              ) -> tuple[jax.Array, jax.Array]:
    pre_bn = x
    for i, width in enumerate(self.widths):
      pre_bn = nn.Dense(width, dtype=self.dtype, name=f'fc{i}',
                        **_wide_inits(i))(x)
      x = nn.relu(_batch_norm(train, f'bn{i}', dtype=self.dtype)(pre_bn))
    logits = nn.Dense(self.num_classes, kernel_init=_MSRA, dtype=self.dtype,
                      name='logits')(x)
    return layers.at_least_float32(logits), pre_bn


class ModalDiscriminator(nn.Module):
  """[N, H] -> [N, M] modality logits, behind a gradient reversal layer.

  Attributes:
    bottleneck: the bottleneck's width (512), below the reversal.
    hidden: the classifier's hidden widths (1024, 1024).
    num_modalities: M.
    dtype: computation dtype.
  """
  bottleneck: int = 512
  hidden: Sequence[int] = (1024, 1024)
  num_modalities: int = 2
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, reversal: jax.Array) -> jax.Array:
    x = nn.Dense(self.bottleneck, kernel_init=_MSRA, dtype=self.dtype,
                 name='bottleneck')(x)
    x = transfer_losses.reverse_gradient(x, reversal)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, kernel_init=_MSRA, dtype=self.dtype,
                           name=f'fc{i}')(x))
    return layers.at_least_float32(nn.Dense(
        self.num_modalities, kernel_init=_MSRA, dtype=self.dtype,
        name='logits')(x))


class MHTNNet(nn.Module):
  """The trainable part of MHTN (module docstring).

  Attributes:
    num_classes: C, the target's labels.
    num_source_classes: C_s, the source's labels.
    stem_widths: each stem's widths.
    semantic_widths: the shared subnetwork's hidden widths.
    bottleneck: the discriminator's bottleneck width.
    discriminator_hidden: the discriminator's hidden widths.
    dtype: computation dtype.
  """
  num_classes: int
  num_source_classes: int
  stem_widths: Sequence[int] = (4096, 4096)
  semantic_widths: Sequence[int] = (4096, 4096)
  bottleneck: int = 512
  discriminator_hidden: Sequence[int] = (1024, 1024)
  dtype: layers.Dtype = jnp.float32

  def setup(self):
    self.stems = {s: Stem(tuple(self.stem_widths), input_norm=s == 'txt',
                          dtype=self.dtype) for s in STREAMS}
    self.source_classifier = nn.Dense(self.num_source_classes,
                                      kernel_init=_MSRA, dtype=self.dtype)
    self.semantic = SemanticNet(tuple(self.semantic_widths), self.num_classes,
                                dtype=self.dtype)
    self.discriminator = ModalDiscriminator(
        self.bottleneck, tuple(self.discriminator_hidden), len(MODALITIES),
        dtype=self.dtype)

  def __call__(self, source: jax.Array, image: jax.Array, text: jax.Array,
               reversal: jax.Array, *, train: bool
              ) -> dict[str, dict[str, jax.Array] | jax.Array]:
    """One forward pass of all streams.

    Args:
      source: [B_s, F] source-image trunk features.
      image: [B, F] target-image trunk features.
      text: [B, V] texts (features or bags of words, float).
      reversal: [] the gradient reversal's scale.
      train: BatchNorm on batch statistics (and updating its averages).

    Returns:
      'stems': {stream: [B(_s), W_i] per layer}; 'source_logits' [B_s, C_s];
      'logits': {'img', 'txt'} [B, C]; 'modality_logits' [2B, M] (images
      first).
    """
    stems = {'source': self.stems['source'](source, train=train),
             'img': self.stems['img'](image, train=train),
             'txt': self.stems['txt'](text, train=train)}
    source_logits = layers.at_least_float32(
        self.source_classifier(stems['source'][-1]))
    joint = jnp.concatenate([stems['img'][-1], stems['txt'][-1]], axis=0)
    logits, hidden = self.semantic(joint, train=train)
    b = image.shape[0]
    return {'stems': stems, 'source_logits': source_logits,
            'logits': {'img': logits[:b], 'txt': logits[b:]},
            'modality_logits': self.discriminator(hidden, reversal)}

  def embed(self, modality: str, x: jax.Array) -> jax.Array:
    """[B, F] trunk features (or texts) -> [B, C] softmax, evaluation mode."""
    feature = self.stems[modality](x, train=False)[-1]
    logits, _ = self.semantic(feature, train=False)
    return jax.nn.softmax(logits, axis=-1)
