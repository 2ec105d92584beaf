"""DCMH: Deep Cross-Modal Hashing (Jiang & Li, CVPR 2017). The baseline.

Networks: an image net (CNN-F up to fc7, `cnnf_small` on CPU, or an MLP on
pre-extracted features for the feature-input variant) and a bag-of-words text
net (V -> 8192 ReLU), each followed by a linear layer of K units (CodeNet with
tanh=False). Their real-valued outputs on the training items are stored as
F (image) and G (text), [T, K] each, and B = sign(F + G) is the one binary
matrix both modalities are pulled towards.

Objective (the paper's; the official code minimises it divided by B * T):
  sum_ij [log(1 + e^theta_ij) - S_ij theta_ij]       theta_ij = 0.5 <F_i, G_j>
  + gamma (||B - F||^2 + ||B - G||^2) + eta (||F^T 1||^2 + ||G^T 1||^2)
S_ij = 1 if items i and j share a label. The image pass minimises the F terms
over batches of images against the stored G (and the text pass the G terms
against the stored F), in the official TF code's normalisation:
  pairwise      mean over [B, T] of softplus(theta) - S theta  (= sum / (B T))
  quantization  ||B_batch - F_batch||^2 / (B T)
  balance       ||F^T 1||^2 / (B T), over all T rows of F with the batch's rows
                live (gradients reach only the batch's outputs)
log(1 + e^theta) is `softplus`, which never overflows.

Schedule (official code): each epoch refreshes B = sign(F + G) (a `begin`
hook), then one image-net pass, then one text-net pass, both plain SGD (no
momentum, no weight decay) at the epoch's learning rate, which decays linearly
from 10^-1.5 to 10^-6 over the run: lr_e = linspace(lr_start, lr_end,
num_epochs)[e], as the TF code's `np.linspace(10**-1.5, 1e-6, MAX_ITER)`.
F and G start as N(0, 1) (TF and PyTorch code) and rows are refreshed with
each batch's outputs before its update.

Choices and differences, documented rather than copied:
  * batches come from a fresh permutation per pass (the official code draws
    a new random subset for every batch);
  * sign(0) is +1 for B and for the codes (MATLAB's e_sign gives 0);
  * the public PyTorch port computes the text pass's balance term on a
    detached G (no gradient); here both passes follow the paper and TF code;
  * `momentum` (default 0, the official plain SGD) adds heavy-ball momentum,
    and `img_weight_decay` / `txt_weight_decay` (default 0, as the TF code)
    L2 weight decay, which the MATLAB release uses (5e-4);
  * the MATLAB release differs from the TF code in ways not followed here:
    text pass first, F and G start at zero, rates logspace(-1.5, -3) and
    zero-mean texts. We follow the TF code, as SPEC 2.2 does.
Trained from scratch (configs/dcmh_synthetic.py) the outputs start near zero,
where the pairwise gradient vanishes; that config documents its higher rate
and smaller eta.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from crossmodal_hash import losses
from crossmodal_hash.methods import base
from crossmodal_hash.methods import common
from crossmodal_hash.methods import registry

# Memory of each modality's stored outputs, and the other modality's.
_STORED = {'img': ('F', 'G'), 'txt': ('G', 'F')}


def default_config() -> ml_collections.ConfigDict:
  """DCMH's hyper-parameters as in the official code."""
  c = ml_collections.ConfigDict()
  c.gamma = 1.0  # quantization ||B - F||^2
  c.eta = 1.0  # bit balance ||F^T 1||^2
  c.num_epochs = 500
  c.lr_start = 10.0 ** -1.5
  c.lr_end = 1e-6
  c.momentum = 0.0
  # L2 weight decay of each net, added to its gradients (the MATLAB release
  # uses 5e-4 for both; the TF and PyTorch code have none).
  c.img_weight_decay = 0.0
  c.txt_weight_decay = 0.0
  # 'balanced': similar and dissimilar pairs weighted equally (HashNet; not
  # in DCMH), for single-label data (losses.pair_weights).
  c.pair_weighting = 'none'
  return c


@registry.METHODS.register('dcmh')
class DCMH(common.PretrainedImageTrunk):
  """DCMH's networks, losses, updates and schedule, built from a config."""

  trainer = 'alternating'
  # F, G and B: one row per training item (sharding.py: rows split over
  # the mesh's `data` axis by default).
  memory_axes = {name: ('items', 'bits') for name in ('F', 'G', 'B')}

  def __init__(self, config: ml_collections.ConfigDict, *, num_labels: int,
               text_dim: int):
    del num_labels, text_dim  # DCMH has no label head; the text net infers V.
    self.hp = config.dcmh
    common.check_choice('config.dcmh.pair_weighting', self.hp.pair_weighting,
                        losses.PAIR_WEIGHTINGS)
    if self.hp.num_epochs < 1:
      raise ValueError(f'config.dcmh.num_epochs={self.hp.num_epochs} must be '
                       '>= 1.')
    self.model = config.model
    self.nets = common.code_nets(config, tanh=False)
    # Plain SGD (heavy-ball with `momentum`, L2 weight decay), one chain per
    # net; the epoch's rate is injected.
    self.optimizers = {
        n: base.make_optimizer(base.optimizer_config(
            name='sgd', momentum=self.hp.momentum,
            weight_decay=self.hp[f'{n}_weight_decay']))
        for n in _STORED}
    self.bits = config.bits
    self.updates = {'img': self.update_img, 'txt': self.update_txt}
    self.inputs = {'img': ('label', 'image'), 'txt': ('label', 'text')}
    self.begin = {'binary_codes': self.refresh_binary_codes}

  def init(self, rng: jax.Array, data: base.Batch) -> base.TrainState:
    """Initial state for a training set `data` ('image', 'text', 'label').

    Args:
      rng: PRNG key.
      data: the training arrays, [T, ...] each (only shapes are used).

    Returns:
      A TrainState with params, SGD states (of {'img': params} and
      {'txt': params}, see `common.gradient_step`), F and G ~ N(0, 1) [T, K] and
      B = sign(F + G).
    """
    keys = jax.random.split(rng, 4)
    num_items = data['label'].shape[0]
    params = common.init_code_nets(self.nets, keys[:2], data)
    memory = {'F': jax.random.normal(keys[2], (num_items, self.bits)),
              'G': jax.random.normal(keys[3], (num_items, self.bits))}
    memory['B'] = binary_codes(memory['F'], memory['G'])
    return base.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state={n: self.optimizers[n].init({n: p})
                   for n, p in params.items()},
        memory=memory, rng=jax.random.fold_in(rng, 1))

  def learning_rate(self, epoch: int) -> float:
    """Epoch e's rate: linspace(lr_start, lr_end, num_epochs)[e]."""
    rates = np.linspace(self.hp.lr_start, self.hp.lr_end, self.hp.num_epochs)
    return float(rates[min(epoch, len(rates) - 1)])

  def schedule(self, epoch: int) -> list[base.Phase]:
    """B refresh, one image-net pass, one text-net pass."""
    lr = self.learning_rate(epoch)
    return [base.Phase('img', lr, 1, begin='binary_codes'),
            base.Phase('txt', lr, 1)]

  def refresh_binary_codes(self, state: base.TrainState,
                           data: base.Batch) -> base.TrainState:
    """The `begin` hook of each epoch: B = sign(F + G)."""
    del data
    memory = dict(state.memory, B=binary_codes(state.memory['F'],
                                               state.memory['G']))
    return state.replace(memory=memory)

  def loss_terms(self, outputs: jax.Array, modality: str, index: jax.Array,
                 sim: jax.Array, memory: dict[str, jax.Array]
                ) -> dict[str, jax.Array]:
    """The image (F) or text (G) pass's terms, normalised as the official code.

    Args:
      outputs: [B, K] the batch's current outputs of `modality`'s net.
      modality: 'img' (outputs are rows of F) or 'txt' (rows of G).
      index: [B] their rows in the training set.
      sim: [B, T] similarity of the batch to every training item.
      memory: 'F', 'G' [T, K] stored outputs, 'B' [T, K] binary codes.

    Returns:
      {'pairwise', 'quantization', 'balance'}: float32 scalars whose sum
      weighted by (1, gamma, eta) is the official code's loss_x (or loss_y).
    """
    mine, other = _STORED[modality]
    num_items, bits = memory[mine].shape
    batch = outputs.shape[0]
    return {
        'pairwise': losses.pairwise_likelihood(
            outputs, memory[other], sim,
            weights=losses.pair_weights(sim, self.hp.pair_weighting)),
        'quantization': losses.quantization_to_target(
            outputs, memory['B'][index]) * (bits / num_items),
        'balance': losses.bit_balance_all_items(
            outputs, memory[mine], index) * (num_items * bits / batch),
    }

  def _weighted(self, terms):
    return (terms['pairwise'] + self.hp.gamma * terms['quantization'] +
            self.hp.eta * terms['balance'])

  def _update(self, modality, state, batch, data, learning_rate):
    index = batch['index']
    sim = losses.similarity(batch['label'], data['label'])
    x = common.inputs(batch, modality)

    def loss_fn(params):
      out = self.nets[modality].apply({'params': params[modality]}, x)
      terms = self.loss_terms(out, modality, index, sim, state.memory)
      return self._weighted(terms), (terms, out)

    state, (terms, out) = common.gradient_step(
        state, loss_fn, self.optimizers[modality], learning_rate,
        params=(modality,),
        opt=modality)
    mine = _STORED[modality][0]
    memory = dict(state.memory)
    memory[mine] = memory[mine].at[index].set(out)
    return state.replace(memory=memory), {'loss': self._weighted(terms),
                                          **terms}

  def update_img(self, state, batch, data, step):
    """One SGD step of the image net; refreshes the batch's rows of F."""
    return self._update('img', state, batch, data, step.learning_rate)

  def update_txt(self, state, batch, data, step):
    """One SGD step of the text net; refreshes the batch's rows of G."""
    return self._update('txt', state, batch, data, step.learning_rate)

  def encode(self, params: dict[str, Any], modality: str,
             inputs: jax.Array) -> jax.Array:
    """[B, ...] images or texts -> [B, K] int8 sign(net(x)) in {-1, +1}."""
    return common.encode(self.nets, params, modality, inputs)


def binary_codes(f: jax.Array, g: jax.Array) -> jax.Array:
  """B = sign(F + G) as float32 in {-1, +1} (sign(0) = +1): [T, K] each."""
  return jnp.where(f + g >= 0, 1.0, -1.0).astype(jnp.float32)
