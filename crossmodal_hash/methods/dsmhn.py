"""DSMHN: Deep Semantic Multimodal Hashing Network (Jin, Li, Tang, TNNLS).

Two modality streams are trained jointly: an image stream (a 2-D CNN, CNN-F or
`cnnf_small`, or an MLP on features) or a video stream (`video3d`, a 3-D conv
encoder over clips of T frames), and a bag-of-words text stream; each ends in
a K-unit tanh layer (CodeNet), whose outputs h are the relaxed hash codes.

Loss of a batch (weights alpha, beta, gamma, eta):
  alpha * inter-modality similarity preservation
  + beta * label preservation: a linear classifier on the codes predicts the
    labels ("codes should be optimal for classification")
  + gamma * quantization mean((sign(h) - h)^2) + eta * bit balance
each averaged over the two modalities.

The paper has no public code, and its abstract leaves these choices open;
ours, each documented and most behind a config switch (`config.dsmhn.*`):
  * Pairs: every batch item against every training item, across modalities,
    DCMH-style: image codes of the batch against the stored text codes of all
    T training items and text codes against the stored image codes, with the
    batch's own rows live (as constants). Each cross-modal pair therefore
    sends gradients to both of its ends. Memories `img_code`, `txt_code`
    ([T, K]) start at zero (an unseen item gives theta = 0: no gradient under
    the likelihood) and are refreshed with each batch's codes.
  * `pairwise`: 'likelihood', mean(softplus(theta) - S theta) with
    theta = 0.5 <h_i, g_j>; or 'contrastive', mean(0.5 S D + 0.5 (1 - S)
    max(0, margin - D)) with D = ||h_i - g_j||^2 / K in [0, 4] (`margin`,
    default 2.0, is DSH's m = 2K). S_ij = 1 if items share a label.
    `pair_weighting` 'balanced' weights similar and dissimilar pairs
    equally (HashNet; `losses.pair_weights`), for single-label data.
  * `classifier`: 'shared' (default), one linear layer K -> L applied to both
    modalities' codes, so both are aligned to the same label hyperplanes; or
    'per_modality', one per stream. It sees the relaxed codes h (the
    quantization term pushes them to +-1). `label_loss`: 'bce' (default,
    multi-label sigmoid cross-entropy) or 'mse' (on the sigmoid).
  * Bit balance on the batch, ||h^T 1||^2 / (B^2 K) (`losses.bit_balance`).
  * Text stream: DCMH's BoW MLP (V -> `model.text_hidden` ReLU -> K).
  * One joint Adam step of both streams and the classifier per batch; one pass
    per epoch at lr = learning_rate * lr_decay^epoch.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from crossmodal_hash import losses
from crossmodal_hash.methods import base
from crossmodal_hash.methods import common
from crossmodal_hash.methods import registry
from crossmodal_hash.models import heads

PAIRWISE_LOSSES = ('likelihood', 'contrastive')
CLASSIFIERS = ('shared', 'per_modality')
MODALITIES = ('img', 'txt')
JOINT = 'joint'


def default_config() -> ml_collections.ConfigDict:
  """DSMHN's hyper-parameters (our defaults; the paper gives none)."""
  c = ml_collections.ConfigDict()
  c.alpha = 1.0  # inter-modality similarity preservation
  c.beta = 1.0  # label preservation (classifier on codes)
  c.gamma = 0.1  # quantization
  c.eta = 0.1  # bit balance
  c.pairwise = 'likelihood'
  c.margin = 2.0  # contrastive only, on ||h - g||^2 / K
  c.pair_weighting = 'none'  # or 'balanced' (losses.pair_weights)
  c.classifier = 'shared'
  c.label_loss = 'bce'
  c.num_epochs = 20
  c.learning_rate = 1e-4
  c.lr_decay = 1.0  # per epoch
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_eps = 1e-8
  return c


@registry.METHODS.register('dsmhn')
class DSMHN(common.PretrainedImageTrunk):
  """DSMHN's streams, classifier, losses, joint update and schedule."""

  trainer = 'alternating'
  # The stored codes, one row per training item (sharding.py).
  memory_axes = {'img_code': ('items', 'bits'), 'txt_code': ('items', 'bits')}
  # The rate does not depend on num_epochs (DCMH's decays over it).
  resumable_keys = ('dsmhn.num_epochs',)

  def __init__(self, config: ml_collections.ConfigDict, *, num_labels: int,
               text_dim: int):
    del text_dim
    self.hp = config.dsmhn
    common.check_choice('config.dsmhn.pairwise', self.hp.pairwise,
                        PAIRWISE_LOSSES)
    common.check_choice('config.dsmhn.classifier', self.hp.classifier,
                        CLASSIFIERS)
    common.check_choice('config.dsmhn.label_loss', self.hp.label_loss,
                        losses.LABEL_LOSSES)
    common.check_choice('config.dsmhn.pair_weighting',
                        self.hp.pair_weighting, losses.PAIR_WEIGHTINGS)
    self.model = config.model
    self.nets = common.code_nets(config, tanh=True)
    self.classifier = heads.LabelHead(
        num_labels, init_std=config.model.init_std,
        dtype=jnp.dtype(config.model.compute_dtype))
    # One Adam chain over both streams and the classifier; the epoch's rate
    # is injected (base.make_optimizer).
    self.optimizer = base.make_optimizer(base.optimizer_config(
        name='adam', b1=self.hp.adam_b1, b2=self.hp.adam_b2,
        eps=self.hp.adam_eps))
    self.bits = config.bits
    self.updates = {JOINT: self.update_joint}
    self.inputs = {JOINT: ('label', 'image', 'text')}

  def _classifier_key(self, modality: str) -> str:
    return 'shared' if self.hp.classifier == 'shared' else modality

  def init(self, rng: jax.Array, data: base.Batch) -> base.TrainState:
    """Initial state for a training set `data` ('image', 'text', 'label').

    Args:
      rng: PRNG key.
      data: the training arrays, [T, ...] each (only shapes are used).

    Returns:
      A TrainState with params {'img', 'txt', 'cls'}, one Adam state 'joint'
      over all of them, and zero memories 'img_code', 'txt_code' [T, K].
    """
    keys = jax.random.split(rng, 4)
    num_items = data['label'].shape[0]
    params = common.init_code_nets(self.nets, keys[:2], data)
    codes = jnp.zeros((1, self.bits), jnp.float32)
    params['cls'] = {
        self._classifier_key(m): self.classifier.init(k, codes)['params']
        for m, k in zip(MODALITIES, keys[2:])}
    memory = {f'{m}_code': jnp.zeros((num_items, self.bits), jnp.float32)
              for m in MODALITIES}
    return base.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state={JOINT: self.optimizer.init(params)}, memory=memory,
        rng=jax.random.fold_in(rng, 1))

  def learning_rate(self, epoch: int) -> float:
    """Epoch e's Adam rate: learning_rate * lr_decay^e."""
    return float(self.hp.learning_rate * self.hp.lr_decay ** epoch)

  def schedule(self, epoch: int) -> list[base.Phase]:
    """One joint pass of both streams and the classifier."""
    return [base.Phase(JOINT, self.learning_rate(epoch), 1)]

  def _pairwise(self, codes, stored, sim):
    weights = losses.pair_weights(sim, self.hp.pair_weighting)
    if self.hp.pairwise == 'likelihood':
      return losses.pairwise_likelihood(codes, stored, sim, weights=weights)
    return losses.pairwise_contrastive(codes, stored, sim, self.hp.margin,
                                       weights)

  def loss_terms(self, params: dict[str, Any], batch: base.Batch,
                 data: base.Batch, memory: dict[str, jax.Array]
                ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """The four terms of a batch, averaged over the modalities, and its codes.

    Args:
      params: {'img', 'txt', 'cls'} params.
      batch: 'index' [B], 'label' [B, L], 'image' [B, ...], 'text' [B, V].
      data: 'label' [T, L] of the whole training set.
      memory: 'img_code', 'txt_code' [T, K] stored codes.

    Returns:
      ({'inter', 'label', 'quantization', 'balance'}: float32 scalars,
       {'img', 'txt'}: [B, K] relaxed codes).
    """
    labels = batch['label'].astype(jnp.float32)
    index = batch['index']
    codes = {m: self.nets[m].apply({'params': params[m]},
                                   common.inputs(batch, m))
             for m in MODALITIES}
    stored = {m: memory[f'{m}_code'].at[index].set(
        jax.lax.stop_gradient(codes[m])) for m in MODALITIES}
    sim = losses.similarity(labels, data['label'])
    logits = {m: self.classifier.apply(
        {'params': params['cls'][self._classifier_key(m)]}, codes[m])
              for m in MODALITIES}
    mean = lambda f: 0.5 * (f('img') + f('txt'))
    terms = {
        'inter': mean(lambda m: self._pairwise(
            codes[m], stored['txt' if m == 'img' else 'img'], sim)),
        'label': mean(lambda m: losses.label_prediction(
            logits[m], labels, self.hp.label_loss)),
        'quantization': mean(lambda m: losses.quantization(codes[m])),
        'balance': mean(lambda m: losses.bit_balance(codes[m])),
    }
    return terms, codes

  def _weighted(self, terms):
    return (self.hp.alpha * terms['inter'] + self.hp.beta * terms['label'] +
            self.hp.gamma * terms['quantization'] +
            self.hp.eta * terms['balance'])

  def update_joint(self, state, batch, data, step):
    """One Adam step of both streams and the classifier; refreshes memories."""
    learning_rate = step.learning_rate

    def loss_fn(params):
      terms, codes = self.loss_terms(params, batch, data, state.memory)
      return self._weighted(terms), (terms, codes)

    state, (terms, codes) = common.gradient_step(
        state, loss_fn, self.optimizer, learning_rate,
        params=MODALITIES + ('cls',), opt=JOINT)
    memory = {f'{m}_code': state.memory[f'{m}_code'].at[batch['index']].set(
        codes[m]) for m in MODALITIES}
    return state.replace(memory=memory), {'loss': self._weighted(terms),
                                          **terms}

  def encode(self, params: dict[str, Any], modality: str,
             inputs: jax.Array) -> jax.Array:
    """[B, ...] images or texts -> [B, K] int8 codes sign(h) in {-1, +1}."""
    return common.encode(self.nets, params, modality, inputs)
