"""SSAH: Self-Supervised Adversarial Hashing (Li et al., CVPR 2018).

Networks: LabNet (labels -> semantic feature, code, label prediction), ImgNet and
TxtNet (the same heads on an image and a text encoder) and two discriminators
(image-vs-label, text-vs-label) on 512-d semantic features.

Losses of a modality network on a batch (weights alpha, gamma, beta, eta, delta):
  alpha * pairwise(feature, LabNet's stored features of all items, S)
  + gamma * pairwise(code, LabNet's stored codes of all items, S)
  + beta * quantization(code) + eta * label_prediction(logits, labels)
  + delta * adversarial(discriminator(feature) is called "label")
LabNet has the same terms against its own stored features and codes, without
the adversarial one. S_ij = `sim_positive` if items i and j share a label.

Reductions (`reduction`, default 'official'): the official code's
`mse_criterion` is a mean of `tf.nn.l2_loss`, a half-sum, so its squared terms
are 1/2 sums over [B, N] pairs, [B, K] bits and [B, L] labels, as the paper's
sums are; the adversarial terms are means (`sce_criterion`). 'mean' takes
means of everything (see `losses.reduce`).

Paper versus official code, each behind a config switch (default: paper):
  * `pairwise_form`: 'paper' negative log-likelihood, or the code's squared
    residual (see `losses.pairwise_likelihood`).
  * `adversarial`: 'paper' lets the adversarial gradient reach ImgNet/TxtNet;
    'official_code' computes the term on stop-gradient copies (the official code
    feeds stored copies of the features in as inputs), so it never does. The
    official hash-net optimizer is built without a `var_list`, so each ImgNet
    (TxtNet) step also moves the image (text) discriminator toward calling the
    modality's features "label", by the same Adam at the network's learning
    rate with its own moments: 'official_code' does that too ("drift").
  * `label_loss`: the code's squared error ('mse') or 'bce'.
Schedule (official code): each outer epoch trains LabNet for (10, 5) passes,
the discriminators for (1, 1), ImgNet for (15, 7, 5) and TxtNet for (15, 7, 5),
phase i of epoch e at lr = 10^-(a + 0.5 (e + i)), a = 2.0 / 3.0 / 4.5 / 3.5.
Differences from the official code, documented rather than copied: batches are
drawn from a fresh permutation per pass (the code draws a new random subset per
batch); passes run to their count (the code breaks a phase early when an
all-item loss rises, which needs an N x N matrix we never build); with
'official_code' the image discriminator drifts on the batch's stored features
(the code feeds all N stored image features, and the batch's text features);
one Adam bias-correction count per network (TF1 shares one per optimizer).
Architecture as in the official code: new layers draw weights and biases from
N(0, 0.01^2) (`model.init_std`, `model.bias_init_std`); TxtNet's multi-scale
1x1 convolutions have no bias, and its heads read the LRN of its semantic
feature (LabNet's and ImgNet's read the feature itself).
Memories: `lab_code` [T, K] and `lab_feat` [T, 512], LabNet's outputs of every
training item, initialised from N(0, 1) as in the official code and refreshed
with each LabNet batch's outputs before its update. (The code's per-modality
code matrices F and G only feed its printed losses, so they are not kept.)
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
from crossmodal_hash.models import discriminator
from crossmodal_hash.models import hashing_net
from crossmodal_hash.models import label
from crossmodal_hash.models import layers
from crossmodal_hash.models import registry as models_registry
from crossmodal_hash.models import text

ADVERSARIAL_MODES = ('paper', 'official_code')
MODALITIES = ('img', 'txt')
SCHEDULES = ('official', 'interleaved')
NETWORKS = ('lab', 'dis', 'img', 'txt')


def default_config() -> ml_collections.ConfigDict:
  """SSAH's hyper-parameters as in the official code (and the paper's intent)."""
  c = ml_collections.ConfigDict()
  c.alpha = 1.0  # feature-level pairwise term
  c.gamma = 1.0  # code-level pairwise term
  c.beta = 1.0  # quantization
  c.eta = 1.0  # label prediction
  c.delta = 1.0  # adversarial
  c.reduction = 'official'
  c.pairwise_form = 'paper'
  # 'balanced': HashNet's weighting of similar vs dissimilar pairs (not in
  # SSAH; for single-label data, see losses.pair_weights).
  c.pair_weighting = 'none'
  c.label_loss = 'mse'
  c.adversarial = 'paper'
  c.sim_positive = 1.0  # the official code uses 0.999
  c.schedule = 'official'
  c.num_epochs = 10
  c.lab_passes = (10, 5)
  c.dis_passes = (1, 1)
  c.img_passes = (15, 7, 5)
  c.txt_passes = (15, 7, 5)
  # lr of phase i in epoch e: 10 ** -(lr_exponent + lr_step * (e + i)).
  c.lab_lr_exponent = 2.0
  c.dis_lr_exponent = 3.0
  c.img_lr_exponent = 4.5
  c.txt_lr_exponent = 3.5
  c.lr_step = 0.5
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_eps = 1e-8
  # The text side alone (LabNet, the text discriminator and TxtNet): for a
  # dataset loaded without images (dataset.require_images=False), e.g. the
  # real MIRFLICKR-25K tags and labels; codes of texts only, T->T retrieval.
  c.text_only = False
  return c


@registry.METHODS.register('ssah')
class SSAH(common.PretrainedImageTrunk):
  """SSAH's networks, losses, updates and schedule, built from a config."""

  trainer = 'alternating'
  # LabNet's stored codes and features, one row per training item
  # (sharding.py: rows split over the mesh's `data` axis by default).
  memory_axes = {'lab_code': ('items', 'bits'),
                 'lab_feat': ('items', 'semantic')}
  # More epochs continue the same ladder of rates.
  resumable_keys = ('ssah.num_epochs',)

  def __init__(self, config: ml_collections.ConfigDict, *, num_labels: int,
               text_dim: int):
    self.hp = config.ssah
    _check_choice('config.ssah.adversarial', self.hp.adversarial,
                  ADVERSARIAL_MODES)
    _check_choice('config.ssah.pairwise_form', self.hp.pairwise_form,
                  losses.PAIRWISE_FORMS)
    _check_choice('config.ssah.label_loss', self.hp.label_loss,
                  losses.LABEL_LOSSES)
    _check_choice('config.ssah.schedule', self.hp.schedule, SCHEDULES)
    _check_choice('config.ssah.reduction', self.hp.reduction,
                  losses.REDUCTIONS)
    _check_choice('config.ssah.pair_weighting', self.hp.pair_weighting,
                  losses.PAIR_WEIGHTINGS)
    text_only = self.hp.get('text_only', False)
    if text_only and self.hp.schedule != 'official':
      raise ValueError('config.ssah.text_only=True runs the official schedule '
                       "(config.ssah.schedule='official') without ImgNet's "
                       f'passes; got schedule={self.hp.schedule!r}.')
    # The modalities trained and encoded: 'img' and 'txt', or 'txt' alone.
    self.modalities = ('txt',) if text_only else MODALITIES
    self.outputs = {m: 'binary' for m in self.modalities}
    model = self.model = config.model
    dtype = jnp.dtype(model.compute_dtype)
    init = dict(init_std=model.init_std,
                bias_std=model.get('bias_init_std', model.init_std))
    heads = dict(semantic_dim=model.semantic_dim, bits=config.bits,
                 num_labels=num_labels, dtype=dtype, **init)
    self.nets = {
        'lab': hashing_net.HashingNet(
            encoder=label.LabelEncoder(hidden=model.label_hidden, dtype=dtype,
                                       **init),
            **heads),
        'img': hashing_net.HashingNet(
            encoder=models_registry.build('image_encoder', model, dtype,
                                          init['bias_std']), **heads),
        'txt': hashing_net.HashingNet(
            encoder=text.MultiScaleTextEncoder(
                pool_windows=tuple(model.text_pool_windows),
                hidden=model.text_hidden, dtype=dtype, **init),
            semantic_lrn=True, **heads),
    }
    if text_only:
      del self.nets['img']
    self.discriminator = discriminator.Discriminator(
        hidden=tuple(model.discriminator_hidden), dtype=dtype, **init)
    # One optax chain per network (and the 'official_code' drift's Adam of
    # the discriminators); the pass's rate is injected (base.make_optimizer).
    adam = base.optimizer_config(name='adam', b1=self.hp.adam_b1,
                                 b2=self.hp.adam_b2, eps=self.hp.adam_eps)
    self.networks = tuple(n for n in NETWORKS if n != 'img' or not text_only)
    self.optimizers = {name: base.make_optimizer(adam)
                       for name in self.networks + ('dis_drift',)}
    self.bits = config.bits
    self.semantic_dim = model.semantic_dim
    if self.hp.schedule == 'official':
      updates = {'lab': self.update_lab, 'dis': self.update_dis,
                 'img': self.update_img, 'txt': self.update_txt}
      self.updates = {n: updates[n] for n in self.networks}
    else:
      self.updates = {'all': self.update_interleaved}
    # The data fields each update reads: LabNet and TxtNet passes read no
    # image (a streamed run reads none from disk for them).
    self.inputs = {'lab': ('label',), 'dis': ('label', 'image', 'text'),
                   'img': ('label', 'image'), 'txt': ('label', 'text'),
                   'all': ('label', 'image', 'text')}
    if text_only:
      self.inputs['dis'] = ('label', 'text')

  # ---------------------------------------------------------------- state --


  def init(self, rng: jax.Array, data: base.Batch) -> base.TrainState:
    """Initial state for a training set `data` ('image', 'text', 'label').

    Args:
      rng: PRNG key.
      data: the training arrays, [T, ...] each (only shapes are used, plus T).

    Returns:
      A TrainState with params, Adam states and N(0, 1) memories.
    """
    keys = dict(zip(('lab', 'img', 'txt', 'dis_img', 'dis_txt', 'lab_code',
                     'lab_feat'), jax.random.split(rng, 7)))
    num_items = data['label'].shape[0]
    sample = {'lab': lambda: data['label'][:1].astype(jnp.float32),
              'img': lambda: jnp.zeros(data['image'].shape[1:],
                                       jnp.float32)[None],
              'txt': lambda: data['text'][:1].astype(jnp.float32)}
    params = {name: net.init(keys[name], sample[name]())['params']
              for name, net in self.nets.items()}
    feature = jnp.zeros((1, self.semantic_dim), jnp.float32)
    params['dis'] = {
        m: self.discriminator.init(keys[f'dis_{m}'], feature)['params']
        for m in self.modalities}
    opt_state = {name: self.optimizers[name].init(p)
                 for name, p in params.items()}
    if self.hp.adversarial == 'official_code':
      # The hash-net optimizer's own Adam moments of the discriminators.
      opt_state['dis_drift'] = {
          m: self.optimizers['dis_drift'].init(params['dis'][m])
          for m in self.modalities}
    memory = {
        'lab_code': jax.random.normal(keys['lab_code'],
                                      (num_items, self.bits)),
        'lab_feat': jax.random.normal(keys['lab_feat'],
                                      (num_items, self.semantic_dim)),
    }
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=opt_state, memory=memory,
                           rng=jax.random.fold_in(rng, 1))

  # ------------------------------------------------------------- schedule --

  def learning_rate(self, network: str, rung: int) -> float:
    """10^-(a + lr_step * rung) for the network's ladder exponent a."""
    exponent = getattr(self.hp, f'{network}_lr_exponent')
    return float(10.0 ** -(exponent + self.hp.lr_step * rung))

  def schedule(self, epoch: int) -> list[base.Phase]:
    """The phases of outer epoch `epoch`, in order."""
    if self.hp.schedule == 'interleaved':
      return [base.Phase('all', tuple(self.learning_rate(n, epoch)
                                      for n in NETWORKS), 1)]
    phases = []
    for network in self.networks:
      for i, passes in enumerate(getattr(self.hp, f'{network}_passes')):
        phases.append(base.Phase(network, self.learning_rate(network,
                                                             epoch + i),
                                 int(passes)))
    return phases

  # --------------------------------------------------------------- losses --

  def _pairwise(self, a, stored, sim, weights):
    return losses.pairwise_likelihood(a, stored, sim, self.hp.pairwise_form,
                                      self.hp.reduction, weights)

  def _code_terms(self, out, labels):
    """The quantization and label terms of a batch's outputs."""
    return {
        'quantization': losses.quantization(out.code, self.hp.reduction),
        'label': losses.label_prediction(out.label_logits, labels,
                                         self.hp.label_loss,
                                         self.hp.reduction),
    }

  def lab_loss_terms(self, params, batch, data, memory):
    """LabNet's loss terms and the batch's outputs.

    Args:
      params: LabNet params.
      batch: 'index' [B], 'label' [B, L].
      data: 'label' [T, L] of the whole training set.
      memory: the stored memories.

    Returns:
      (terms: dict of scalars, outputs: HashOutputs with [B, ...] fields).
    """
    labels = batch['label'].astype(jnp.float32)
    out = self.nets['lab'].apply({'params': params}, labels)
    # The stored rows of this batch are its current outputs, as constants.
    feats = memory['lab_feat'].at[batch['index']].set(
        jax.lax.stop_gradient(out.feature))
    codes = memory['lab_code'].at[batch['index']].set(
        jax.lax.stop_gradient(out.code))
    sim = losses.similarity(labels, data['label'], self.hp.sim_positive)
    weights = losses.pair_weights(sim, self.hp.pair_weighting)  # Both terms'.
    terms = {
        'pairwise_feature': self._pairwise(out.feature, feats, sim, weights),
        'pairwise_code': self._pairwise(out.code, codes, sim, weights),
        **self._code_terms(out, labels),
    }
    return terms, out

  def modality_loss_terms(self, modality, params, dis_params, batch, data,
                          memory):
    """ImgNet's or TxtNet's loss terms and the batch's outputs.

    Args:
      modality: 'img' or 'txt'.
      params: the modality network's params.
      dis_params: that modality's discriminator params (they receive only the
        adversarial term's gradient: the 'official_code' drift).
      batch: 'index' [B], 'label' [B, L], and 'image' or 'text' [B, ...].
      data: 'label' [T, L] of the whole training set.
      memory: the stored memories ('lab_feat', 'lab_code').

    Returns:
      (terms: dict of scalars, outputs: HashOutputs).
    """
    labels = batch['label'].astype(jnp.float32)
    inputs = batch['image'] if modality == 'img' else batch['text']
    out = self.nets[modality].apply({'params': params},
                                    layers.at_least_float32(inputs))
    sim = losses.similarity(labels, data['label'], self.hp.sim_positive)
    weights = losses.pair_weights(sim, self.hp.pair_weighting)  # Both terms'.
    feature = out.feature
    if self.hp.adversarial == 'official_code':
      feature = jax.lax.stop_gradient(feature)
    logits = self.discriminator.apply({'params': dis_params}, feature)
    terms = {
        'pairwise_feature': self._pairwise(out.feature, memory['lab_feat'],
                                           sim, weights),
        'pairwise_code': self._pairwise(out.code, memory['lab_code'], sim,
                                        weights),
        **self._code_terms(out, labels),
        'adversarial': losses.adversarial_generator(logits),
    }
    return terms, out

  def discriminator_loss(self, dis_params, features):
    """Both discriminators' loss: label features real, modality features fake.

    Args:
      dis_params: {'img': ..., 'txt': ...} ('txt' alone with `text_only`).
      features: 'lab' and each modality's semantic features, [B, 512] each.

    Returns:
      (loss, metrics): the mean of the (four, or two with `text_only`)
      sigmoid cross-entropies.
    """
    d = lambda name, f: self.discriminator.apply({'params': dis_params[name]},
                                                 f)
    per_modality = {
        f'dis_{m}': losses.adversarial_discriminator(d(m, features['lab']),
                                                     d(m, features[m]))
        for m in self.modalities}
    loss = sum(per_modality.values()) * (1.0 / len(per_modality))
    return loss, {'loss': loss, **per_modality}

  def _weighted(self, terms):
    weights = {'pairwise_feature': self.hp.alpha, 'pairwise_code': self.hp.gamma,
               'quantization': self.hp.beta, 'label': self.hp.eta,
               'adversarial': self.hp.delta}
    return sum(weights[k] * v for k, v in terms.items())

  # -------------------------------------------------------------- updates --

  def update_lab(self, state, batch, data, step):
    """One Adam step of LabNet; refreshes 'lab_code' and 'lab_feat'."""
    learning_rate = step.learning_rate

    def loss_fn(p):
      terms, out = self.lab_loss_terms(p, batch, data, state.memory)
      return self._weighted(terms), (terms, out)

    grads, (terms, out) = jax.grad(loss_fn, has_aux=True)(state.params['lab'])
    params, opt = base.apply_optimizer(self.optimizers['lab'], grads,
                                       state.opt_state['lab'],
                                       state.params['lab'], learning_rate)
    memory = dict(state.memory)
    memory['lab_code'] = memory['lab_code'].at[batch['index']].set(out.code)
    memory['lab_feat'] = memory['lab_feat'].at[batch['index']].set(out.feature)
    return _replace(state, 'lab', params, opt, memory), _metrics(terms,
                                                                 self._weighted)

  def _update_modality(self, modality, state, batch, data, learning_rate):

    def loss_fn(p, dis_p):
      terms, _ = self.modality_loss_terms(modality, p, dis_p, batch, data,
                                          state.memory)
      return self._weighted(terms), terms

    dis = state.params['dis'][modality]
    (grads, dis_grads), terms = jax.grad(loss_fn, argnums=(0, 1),
                                         has_aux=True)(
                                             state.params[modality], dis)
    params, opt = base.apply_optimizer(self.optimizers[modality], grads,
                                       state.opt_state[modality],
                                       state.params[modality], learning_rate)
    state = _replace(state, modality, params, opt, state.memory)
    if self.hp.adversarial == 'official_code':
      drift = state.opt_state['dis_drift']
      dis, dis_opt = base.apply_optimizer(self.optimizers['dis_drift'],
                                          dis_grads, drift[modality], dis,
                                          learning_rate)
      state = state.replace(
          params={**state.params,
                  'dis': {**state.params['dis'], modality: dis}},
          opt_state={**state.opt_state,
                     'dis_drift': {**drift, modality: dis_opt}})
    return state, _metrics(terms, self._weighted)

  def update_img(self, state, batch, data, step):
    """One Adam step of ImgNet (and, with 'official_code', the drift)."""
    return self._update_modality('img', state, batch, data,
                                 step.learning_rate)

  def update_txt(self, state, batch, data, step):
    """One Adam step of TxtNet (and, with 'official_code', the drift)."""
    return self._update_modality('txt', state, batch, data,
                                 step.learning_rate)

  def update_dis(self, state, batch, data, step):
    """One Adam step of both discriminators on the batch's fresh features."""
    del data
    learning_rate = step.learning_rate
    p = state.params
    inputs = {'lab': lambda: batch['label'].astype(jnp.float32),
              'img': lambda: layers.at_least_float32(batch['image']),
              'txt': lambda: layers.at_least_float32(batch['text'])}
    features = {n: self.nets[n].apply({'params': p[n]}, inputs[n]())
                for n in ('lab',) + self.modalities}
    features = {k: jax.lax.stop_gradient(v.feature) for k, v in
                features.items()}
    grads, metrics = jax.grad(self.discriminator_loss, has_aux=True)(
        p['dis'], features)
    params, opt = base.apply_optimizer(self.optimizers['dis'], grads,
                                       state.opt_state['dis'], p['dis'],
                                       learning_rate)
    return _replace(state, 'dis', params, opt, state.memory), metrics

  def update_interleaved(self, state, batch, data, step):
    """LabNet, discriminator, ImgNet and TxtNet steps on one batch, in order.

    `step.learning_rate` is [4]: the rates of lab, dis, img, txt.
    """
    metrics = {'loss': 0.0}
    for i, network in enumerate(NETWORKS):
      update = {'lab': self.update_lab, 'dis': self.update_dis,
                'img': self.update_img, 'txt': self.update_txt}[network]
      state, m = update(state, batch, data,
                        step.replace(learning_rate=step.learning_rate[i]))
      metrics.update({f'{network}/{k}': v for k, v in m.items()})
      metrics['loss'] += m['loss']
    return state, metrics

  # --------------------------------------------------------------- encode --

  def encode(self, params: dict[str, Any], modality: str,
             inputs: jax.Array) -> jax.Array:
    """Binary codes of a batch.

    Args:
      params: the state's params.
      modality: 'img', 'txt' or 'lab'.
      inputs: [B, ...] images (preprocessed), texts or labels.

    Returns:
      [B, K] int8 in {-1, +1}.
    """
    out = self.nets[modality].apply({'params': params[modality]},
                                    layers.at_least_float32(inputs))
    return hashing_net.binarize(out.code)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f'{name}={value!r} is not one of {choices}.')


def _replace(state, name, params, opt, memory):
  return state.replace(step=state.step + 1,
                       params={**state.params, name: params},
                       opt_state={**state.opt_state, name: opt}, memory=memory)


def _metrics(terms, weighted):
  return {'loss': weighted(terms), **terms}

