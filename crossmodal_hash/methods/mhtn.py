"""MHTN: Modal-adversarial Hybrid Transfer Network (Huang, Peng and Yuan,
arXiv 1708.04308, TCYB 2018), after the released Caffe model and solver
(PKU-ICST-MIPL/MHTN_TCYB2018 `model.prototxt`, `solver.prototxt`; SPEC 2.6).

Real-valued: the common representation is the softmax of the shared
semantic subnetwork (`outputs = {'img': 'real', 'txt': 'real'}`), ranked by
cosine similarity. `mhtn.embedding='centered_softmax'` gives p - 1/C instead:
sign() of a softmax is +1 everywhere, so sign codes of the paper's embedding
carry nothing, while those of the centred one mark the classes above uniform
(for the sign-code mAP beside the hashing methods).

Data: every step reads a target batch ('image', 'text', 'label') and a
source-domain batch ('source_image', 'source_label'; `source_inputs`, from
`config.source_dataset`, trainers/source_domain.py): a single-modal labelled
image set with its own classes (the paper's ImageNet; the synthetic source
set here).

Networks: a shared frozen image trunk for the source and target images
(`model.image_encoder`: 'identity' for pre-extracted features; a CNN-F
('cnnf', weights from `model.pretrained_cnnf` when named, as the paper's
pretrained AlexNet conv1-5) or 'cnnf_small' on pixels: without a weights
file, a fixed random trunk, never trained), then `models/mhtn.py`'s stems,
source classifier, shared semantic subnetwork and modality discriminator.

One update per step ('mhtn'; Caffe trains everything in one backward pass):
  loss = source_weight * CE(source fc8, source labels)
       + label_weight * (CE(img fc10, labels) + CE(txt fc10, labels))
       + mmd_weight * sum_{l in fc6, fc7} MMD(source stem_l, img stem_l)
       + pair_weight * sum_{l in fc6, fc7} L2(img stem_l, txt stem_l)
       + modality_weight * BCE(discriminator(GRL(bottleneck(fc9))), one-hot
         modality)
CE is softmax cross-entropy (a multi-label row's target spread evenly over
its labels: Caffe's SoftmaxWithLoss for single labels); the stem activations
compared are after ReLU (the prototxt's ReLUs run in place); MMD is
`transfer_losses.multi_kernel_mmd` (the prototxt: kernel_num 1, kernel_mul 2,
bandwidth from the batch); L2 is Caffe's ContrastiveLoss of similar pairs
(half the mean squared distance), weight 1e-4; the modality loss is Caffe's
SigmoidCrossEntropyLoss (summed over the M outputs, averaged over items),
weight 0.1.

Optimiser (solver.prototxt): SGD, rate 0.01 (fixed), momentum 0.9, weight
decay 5e-4 on weights (biases: lr_mult 2, decay_mult 0; the bottleneck and
the discriminator: lr_mult 0.1, their biases 0.2), as Caffe applies them:
the decay is added to the gradient and both are scaled by lr_mult before the
momentum. `mhtn.accumulate_steps` > 1 accumulates that many steps' gradients
per update (optax.MultiSteps; the solver's iter_size 16).

State: params {'net'} (and 'trunk', frozen, for pixel trunks); BatchNorm
statistics in `TrainState.mutable['net']` (checkpointed, so a resumed run
continues exactly).

Deviations from the release, documented:
  * the trunk is frozen whole, BatchNorm included: the prototxt's conv
    layers have lr_mult 0 but their BatchNorm layers still follow batch
    statistics in training; a pixel trunk here is CNN-F (conv1..fc7 when
    pretrained, its fc layers frozen too, the stems start above them) or
    'cnnf_small', with no BatchNorm;
  * two modalities (image, text), not XMedia's five: the discriminator has
    M = 2 outputs and the paired L2 one pair of streams;
  * the gradient reversal's scale is `mhtn.reversal_scale` (1.0), constant,
    or ramped by caffe-grl's formula (`reversal_ramp_steps` > 0,
    `reversal_alpha`): the prototxt's GradientScaler (lower 0, upper 1e5,
    alpha -0.5, max_iter 5000) gives, by that formula, a coefficient <= 0,
    i.e. no reversal and a gradient up to 2.4e4 times the discriminator's,
    which we read as a setting error (caffe-grl asserts alpha >= 0 in debug
    builds);
  * the source stem is initialised like the others (the paper fine-tunes
    AlexNet's fc6-fc8 on ImageNet); the source's classes are its own;
  * the MMD is the biased (V-statistic) estimate over all pairs of the two
    batches; transfer-caffe's MMDLoss source was not at hand to compare
    with (DAN, whose layer it is, also describes a linear-time unbiased
    estimate); `kernel_num`, `kernel_mul` and a fixed bandwidth are
    configurable;
  * the solver runs 11,000 updates of iter_size 16 (176,000 batches of 64
    per stream); the configs here run far fewer and say so.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from crossmodal_hash import losses
from crossmodal_hash import transfer_losses
from crossmodal_hash.methods import base
from crossmodal_hash.methods import registry
from crossmodal_hash.models import mhtn as mhtn_models
from crossmodal_hash.models import registry as models_registry

IDENTITY_TRUNK = 'identity'
EMBEDDINGS = ('softmax', 'centered_softmax')
PRETRAINED_TRUNKS = {('trunk',): 'image_encoder'}
# The discriminator's layers (and the bottleneck below the reversal).
_DISCRIMINATOR = 'discriminator'
# Caffe's weights (lr_mult 1, decay_mult 1): kernels and the text input's
# Scale layer; biases and shifts have lr_mult `bias_lr_mult` and no decay.
_WEIGHTS = ('kernel', 'scale')


def default_config() -> ml_collections.ConfigDict:
  """MHTN's hyper-parameters as in the released model and solver."""
  c = ml_collections.ConfigDict()
  c.num_steps = 11000
  c.lr = 0.01
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.bias_lr_mult = 2.0
  c.discriminator_lr_mult = 0.1
  c.accumulate_steps = 1  # The solver's iter_size is 16.
  c.source_weight = 1.0
  c.label_weight = 1.0
  c.mmd_weight = 1.0
  c.mmd_kernel_num = 1
  c.mmd_kernel_mul = 2.0
  c.mmd_bandwidth = 0.0  # 0: the batch's mean squared distance.
  c.pair_weight = 1e-4
  c.modality_weight = 0.1
  c.reversal_scale = 1.0
  c.reversal_lower = 0.0
  c.reversal_alpha = 10.0
  c.reversal_ramp_steps = 0  # 0: a constant reversal_scale.
  c.embedding = 'softmax'  # Or 'centered_softmax' (p - 1/C).
  return c


def default_model_config() -> ml_collections.ConfigDict:
  """The `config.model` section: MHTN's widths, a feature-input trunk."""
  m = ml_collections.ConfigDict()
  m.image_encoder = IDENTITY_TRUNK
  m.image_normalization = 'standardize'
  m.pretrained_cnnf = ''
  m.stem_widths = (4096, 4096)
  m.semantic_widths = (4096, 4096)
  m.bottleneck = 512
  m.discriminator_hidden = (1024, 1024)
  m.compute_dtype = 'float32'
  return m


def optimizer(hp: ml_collections.ConfigDict, num_steps: int
             ) -> optax.GradientTransformation:
  """Caffe's SGD with per-layer lr_mult / decay_mult (module docstring).

  Weight decay on weights only (kernels, the text input's BatchNorm scale),
  added to the gradient; then each leaf scaled by its lr_mult (biases
  `bias_lr_mult`, the discriminator's leaves `discriminator_lr_mult`, its
  biases both, through optax.multi_transform); then SGD with momentum at the
  scheduled rate; with `accumulate_steps` > 1 inside optax.MultiSteps.
  """
  if hp.accumulate_steps < 1:
    raise ValueError(f'config.mhtn.accumulate_steps={hp.accumulate_steps} '
                     'must be >= 1.')

  def group(path, _) -> str:
    weight = path[-1] in _WEIGHTS
    adversary = any(_DISCRIMINATOR in p for p in path)
    return ('dis_' if adversary else '') + ('weight' if weight else 'bias')

  groups = lambda params: flax.traverse_util.path_aware_map(group, params)
  weights = lambda params: flax.traverse_util.path_aware_map(
      lambda path, _: path[-1] in _WEIGHTS, params)
  lr_mult = {'weight': 1.0, 'bias': hp.bias_lr_mult,
             'dis_weight': hp.discriminator_lr_mult,
             'dis_bias': hp.discriminator_lr_mult * hp.bias_lr_mult}
  c = base.optimizer_config(name='sgd', learning_rate=hp.lr,
                            momentum=hp.momentum)
  chain = optax.chain(
      optax.add_decayed_weights(hp.weight_decay, mask=weights),
      optax.multi_transform({g: optax.scale(m) for g, m in lr_mult.items()},
                            groups),
      base.make_optimizer(c, num_steps=num_steps))
  if hp.accumulate_steps > 1:
    return optax.MultiSteps(chain, every_k_schedule=hp.accumulate_steps)
  return chain


@registry.METHODS.register('mhtn')
class MHTN:
  """MHTN's networks, losses and per-step update, from a config."""

  trainer = 'per_step'
  outputs = {'img': 'real', 'txt': 'real'}
  # The embedding is the softmax over the labels: `config.bits` only names
  # the run.
  width_from_bits = False
  resumable_keys = ('mhtn.num_steps',)
  source_inputs = ('image', 'label')

  def __init__(self, config: ml_collections.ConfigDict, *, num_labels: int,
               text_dim: int):
    del text_dim
    self.hp = hp = config.mhtn
    self.model = model = config.model
    self.num_labels = num_labels
    if hp.num_steps < 1:
      raise ValueError(f'config.mhtn.num_steps={hp.num_steps} must be >= 1.')
    if hp.embedding not in EMBEDDINGS:
      raise ValueError(f'config.mhtn.embedding={hp.embedding!r} is not one of '
                       f'{EMBEDDINGS}.')
    self.num_steps = int(hp.num_steps)
    self.dtype = jnp.dtype(model.compute_dtype)
    self.trunk = (None if model.image_encoder == IDENTITY_TRUNK else
                  models_registry.build('image_encoder', model, self.dtype))
    self.optimizer = optimizer(hp, self.num_steps)
    self.updates = {'mhtn': self.update}
    self.inputs = {'mhtn': ('label', 'image', 'text')}

  def net(self, num_source_labels: int) -> mhtn_models.MHTNNet:
    m = self.model
    return mhtn_models.MHTNNet(
        num_classes=self.num_labels, num_source_classes=num_source_labels,
        stem_widths=tuple(m.stem_widths),
        semantic_widths=tuple(m.semantic_widths), bottleneck=m.bottleneck,
        discriminator_hidden=tuple(m.discriminator_hidden), dtype=self.dtype)

  # ------------------------------------------------------------ state

  def init(self, rng: jax.Array, data: base.Batch) -> base.TrainState:
    """The fresh state for the training arrays `data`.

    Args:
      rng: PRNG key.
      data: 'image' and 'text' (shapes), 'source_image' (shape) and
        'source_label' [S, C_s] (the source's class count).
    """
    trunk_key, net_key, state_key = jax.random.split(rng, 3)
    params = {}
    image = jnp.zeros((2,) + data['image'].shape[1:], jnp.float32)
    if self.trunk is not None:
      params['trunk'] = self.trunk.init(trunk_key, image[:1])['params']
    features = self.features(params, image)
    text = jnp.zeros((2,) + data['text'].shape[1:], jnp.float32)
    net = self.net(data['source_label'].shape[1])
    variables = net.init(net_key, features, features, text, jnp.float32(1.0),
                         train=False)
    params['net'] = variables['params']
    return base.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state={'net': self.optimizer.init(params['net'])}, memory={},
        rng=state_key,
        mutable={'net': {'batch_stats': variables['batch_stats']}})

  def init_pretrained(self, params: dict[str, Any]) -> dict[str, Any]:
    """A fresh run's params with the trunk's weights from
    `model.pretrained_cnnf`, if named."""
    if self.trunk is None:
      return params
    return models_registry.merge_pretrained(params, self.model,
                                            PRETRAINED_TRUNKS)

  def features(self, params: dict[str, Any], images: jax.Array) -> jax.Array:
    """[B, ...] normalised images -> [B, F] frozen trunk features."""
    x = images.astype(jnp.float32)
    if self.trunk is None:
      return x.reshape(x.shape[0], -1)
    out = self.trunk.apply({'params': params['trunk']}, x)
    return jax.lax.stop_gradient(out.reshape(out.shape[0], -1))

  # ------------------------------------------------------------ loss

  def reversal(self, step: jax.Array) -> jax.Array:
    """[] the gradient reversal's scale at optimizer step `step`."""
    hp = self.hp
    return transfer_losses.reversal_scale(
        step, lower=hp.reversal_lower, upper=hp.reversal_scale,
        alpha=hp.reversal_alpha, ramp_steps=hp.reversal_ramp_steps)

  def loss(self, net_params: Any, state: base.TrainState, batch: base.Batch
          ) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
    """(total, (terms, new batch statistics)) of a batch (module docstring).

    Args:
      net_params: the trainable params.
      state: the state (trunk params, BatchNorm statistics, step).
      batch: 'image' [B, ...], 'text' [B, V], 'label' [B, C],
        'source_image' [B_s, ...], 'source_label' [B_s, C_s].
    """
    hp = self.hp
    net = self.net(batch['source_label'].shape[1])
    out, new_stats = net.apply(
        {'params': net_params, **state.mutable['net']},
        self.features(state.params, batch['source_image']),
        self.features(state.params, batch['image']),
        batch['text'].astype(jnp.float32), self.reversal(state.step),
        train=True, mutable=['batch_stats'])
    stems = out['stems']
    labels = batch['label']
    b = labels.shape[0]
    modality = jnp.repeat(jnp.eye(2, dtype=jnp.float32), b, axis=0)
    mmd = lambda s, t: transfer_losses.multi_kernel_mmd(
        s, t, kernel_num=hp.mmd_kernel_num, kernel_mul=hp.mmd_kernel_mul,
        bandwidth=hp.mmd_bandwidth)
    terms = {
        'source': transfer_losses.soft_label_cross_entropy(
            out['source_logits'], batch['source_label']),
        'label': sum(transfer_losses.soft_label_cross_entropy(
            out['logits'][m], labels) for m in mhtn_models.MODALITIES),
        'mmd': sum(mmd(s, t) for s, t in zip(stems['source'], stems['img'])),
        'pair': sum(transfer_losses.paired_l2(i, t)
                    for i, t in zip(stems['img'], stems['txt'])),
        'modality': jnp.mean(jnp.sum(losses.sigmoid_cross_entropy(
            out['modality_logits'], modality), axis=1)),
    }
    total = (hp.source_weight * terms['source'] +
             hp.label_weight * terms['label'] + hp.mmd_weight * terms['mmd'] +
             hp.pair_weight * terms['pair'] +
             hp.modality_weight * terms['modality'])
    return total, (terms, new_stats)

  def update(self, state: base.TrainState, batch: base.Batch,
             data: base.Batch, step: base.Step
            ) -> tuple[base.TrainState, base.Metrics]:
    """One SGD step of everything but the trunk; BatchNorm statistics kept.

    Returns:
      (state at step + 1, metrics: the loss terms and 'loss').
    """
    del data, step
    (loss, (terms, stats)), grads = jax.value_and_grad(
        self.loss, has_aux=True)(state.params['net'], state, batch)
    net, opt = base.apply_optimizer(self.optimizer, grads,
                                    state.opt_state['net'],
                                    state.params['net'])
    return state.replace(step=state.step + 1,
                         params={**state.params, 'net': net},
                         opt_state={'net': opt},
                         mutable={'net': stats}), {'loss': loss, **terms}

  # ------------------------------------------------------------ outputs

  def encode(self, params: dict[str, Any], modality: str,
             inputs: jax.Array) -> jax.Array:
    """[B, ...] images (normalised) or texts -> [B, C] float32 softmax
    (minus 1/C for `mhtn.embedding='centered_softmax'`)."""
    x = (self.features(params, inputs) if modality == 'img' else
         inputs.astype(jnp.float32))
    # The source's class count, from the source classifier's params.
    net = self.net(params['net']['source_classifier']['kernel'].shape[-1])
    p = net.apply({'params': params['net'], **params['mutable']['net']},
                  modality, x, method=mhtn_models.MHTNNet.embed)
    if self.hp.embedding == 'centered_softmax':
      return p - 1.0 / self.num_labels
    return p
