"""SCAHN: Semantic structure enhanced Contrastive Adversarial Hash Network
(Liang et al., ACM MM 2022), after the public MindSpore code (SPEC 2.4).

Networks (`models/scahn.py`): per modality a transformer encoder over a
sequence (`models/attention.py`) -> unit-norm feature f [B, D] -> Dense(K) +
tanh codes; a GCN over the label co-occurrence graph (`models/graph.py`) gives
label classifiers [L, D]; a Dense(L) of f gives the PaCo classifier's logits;
two discriminators K -> 512 -> 1 over codes.

Two updates per batch, as the code's `TrainOneStepCellG` then
`TrainOneStepCellD` (`update_generator`, `update_discriminator`; the per-step
trainer runs both in one jit):
  generator:     w_c * contrastive + w_l * (BCE_img + BCE_txt)
                 + w_a * (-log D_img(txt codes') - log D_txt(img codes'))
                 codes' = the hash layers on stop-gradient features;
                 contrastive = PaCo over i2t, t2i, i2i, t2t with memory queues
                 (then the batch is enqueued), or the code's triplet loss;
                 clipped to global norm 2.0; Adam 4e-5, the GCN 0.2.
  discriminator: -log D_img(img) - log(1 - D_img(txt)) - log D_txt(txt)
                 - log(1 - D_txt(img)) on the generator step's codes (before
                 its update); Adam 1e-4, b1 0.5, b2 0.9, L2 weight decay 1e-4
                 added to the gradients (MindSpore's `weight_decay`).
Every rate follows the code's `SelfMadeDynamicLR`: peak * e^(-decay_rate *
floor(t / decay_steps)) * min(t, warmup_steps) / warmup_steps, t = 0, 1, ...

Inputs (`config.model.image_input`, `text_input`; see
`data/synthetic_sequences.py`): images as 'patches' of [B, H, W, C] pixels,
'features' [B, D] as one-token sequences, or 'regions' [B, S, F]; texts as
'bow' ([B, V] bags of words turned into token sets of at most
`max_text_tokens` words on device, learned embeddings), 'tokens' ([B, S] int,
0 = padding) or 'features' [B, D].

Training state (`base.TrainState`): params {'gen', 'dis'}, opt_state {'gen',
'dis'}, memory: the four queues (`queue_<direction>_codes` [Q, K],
`_labels` [Q, L], `_pointer` []), the label graph's propagation matrix
'label_graph' [L, L] (from the training labels), 'label_embedding' [L, F]
when node embeddings come from a file, and the generator step's codes
'step_codes_img' / '_txt' [B, K] that the discriminator step reads (not
checkpointed: rewritten before they are read). Checkpointing the state
checkpoints the queues, so a resumed run continues exactly.

Choices, documented rather than copied:
  * the label BCE is the paper's (one sigmoid); `label_loss_form=
    'official_code'` applies the code's second sigmoid;
  * mean pooling skips padding (the code averages padded positions too);
  * no pretrained BERT / bottom-up-attention backbones: inputs are sequences
    given by the dataset (SPEC 2.4), embedded by the encoders' input maps;
  * label node embeddings are learned (N(0, 1)) unless
    `config.scahn.label_embeddings` names a .npy file [L, F] (the code reads
    GloVe vectors of the label names);
  * optax's Adam puts epsilon outside the bias correction, MindSpore's inside
    (a 1e-8-level difference).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from crossmodal_hash import contrastive
from crossmodal_hash.data import synthetic_sequences
from crossmodal_hash.methods import base
from crossmodal_hash.methods import common
from crossmodal_hash.methods import registry
from crossmodal_hash.models import graph
from crossmodal_hash.models import hashing_net
from crossmodal_hash.models import scahn as scahn_models

CONTRASTIVE_LOSSES = ('paco', 'triplet')


def _token_sequence(tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
  tokens = tokens.astype(jnp.int32)
  return tokens, tokens != synthetic_sequences.PAD_TOKEN


# Input form -> (model config, [B, ...] rows) -> ([B, S(, F)], [B, S] mask or
# None = all valid); see data/synthetic_sequences.py.
_INPUT_FORMS = {
    'patches': lambda m, x: (synthetic_sequences.image_patches(
        x, m.patch_size), None),
    'features': lambda m, x: (synthetic_sequences.feature_tokens(
        x.astype(jnp.float32)), None),
    'regions': lambda m, x: (x.astype(jnp.float32), None),
    'bow': lambda m, x: _token_sequence(synthetic_sequences.bow_tokens(
        x, m.max_text_tokens)),
    'tokens': lambda m, x: _token_sequence(x),
}
IMAGE_INPUTS = ('patches', 'features', 'regions')
TEXT_INPUTS = ('bow', 'tokens', 'features')
_QUEUE_FIELDS = ('codes', 'labels', 'pointer')


def default_config() -> ml_collections.ConfigDict:
  """SCAHN's hyper-parameters as in the public code (flickr25k.yaml)."""
  c = ml_collections.ConfigDict()
  # The code: 60 epochs; of MIRFLICKR's 10,000 training items in batches of
  # 32, 18,750 steps.
  c.num_steps = 18750
  c.contrastive_loss = 'paco'
  c.directions = ('i2t', 't2i', 'i2i', 't2t')
  c.queue_size = 1024
  c.temperature = 0.05
  c.paco_alpha = 0.07
  c.paco_beta = 1.0
  c.paco_gamma = 1.0
  c.paco_sup_temperature = 1.0
  c.triplet_directions = ('i2t', 't2i')
  c.triplet_margin = 0.3
  c.triplet_weighted = False
  c.label_loss_form = 'paper'
  c.contrastive_weight = 1.0
  c.label_weight = 1.0
  c.adversarial_weight = 1.0
  c.graph_threshold = 0.4
  c.graph_neighbour_weight = 0.25
  c.label_embeddings = ''  # .npy [L, F]; '' = learned node embeddings.
  c.lr = 4e-5
  c.gcn_lr = 0.2
  c.dis_lr = 1e-4
  c.warmup_steps = 1000
  c.decay_rate = 0.9
  c.decay_steps = 3120
  c.grad_clip = 2.0
  c.dis_b1 = 0.5
  c.dis_b2 = 0.9
  c.dis_weight_decay = 1e-4
  return c


def default_model_config() -> ml_collections.ConfigDict:
  """The `config.model` section: SCAHN's sizes and the input forms."""
  m = ml_collections.ConfigDict()
  m.width = 1024
  m.num_layers = 2
  m.num_heads = 4
  m.mlp_dim = 2048
  m.dropout_rate = 0.1
  m.gcn_input_dim = 300
  m.gcn_hidden = 256
  m.discriminator_hidden = (512,)
  m.image_input = 'patches'
  m.patch_size = 8
  m.image_positions = 0  # Learned position embeddings (0: none).
  m.text_input = 'bow'
  m.max_text_tokens = 32
  m.text_vocab_size = 0  # 'tokens' only: ids 1..V.
  m.compute_dtype = 'float32'
  return m


def warmup_exponential_decay(peak: float, decay_rate: float, decay_steps: int,
                             warmup_steps: int) -> optax.Schedule:
  """The code's `SelfMadeDynamicLR` (staircase): an optax schedule of t.

  peak * e^(-decay_rate * floor(t / decay_steps)) * min(t, w) / w; w = 0
  means no warm-up.
  """
  decay = optax.exponential_decay(peak, decay_steps,
                                  float(np.exp(-decay_rate)), staircase=True)
  if warmup_steps <= 0:
    return decay

  def schedule(count):
    warm = jnp.minimum(count, warmup_steps).astype(jnp.float32) / warmup_steps
    return decay(count) * warm

  return schedule


def generator_optimizer(hp: ml_collections.ConfigDict
                       ) -> optax.GradientTransformation:
  """Global-norm clipping, then Adam at `lr` (the GCN's params at `gcn_lr`)."""
  sched = lambda peak: warmup_exponential_decay(peak, hp.decay_rate,
                                                hp.decay_steps, hp.warmup_steps)

  def groups(params):
    return {name: jax.tree.map(lambda _, n=name: 'gcn' if n == 'gcn' else
                               'rest', sub) for name, sub in params.items()}

  clip = (optax.clip_by_global_norm(hp.grad_clip) if hp.grad_clip > 0 else
          optax.identity())
  return optax.chain(clip, optax.multi_transform(
      {'gcn': optax.adam(sched(hp.gcn_lr)), 'rest': optax.adam(sched(hp.lr))},
      groups))


def discriminator_optimizer(hp: ml_collections.ConfigDict
                           ) -> optax.GradientTransformation:
  """L2 weight decay added to the gradients, Adam(b1, b2), scheduled rate."""
  return optax.chain(
      optax.add_decayed_weights(hp.dis_weight_decay),
      optax.scale_by_adam(b1=hp.dis_b1, b2=hp.dis_b2),
      optax.scale_by_learning_rate(warmup_exponential_decay(
          hp.dis_lr, hp.decay_rate, hp.decay_steps, hp.warmup_steps)))


@registry.METHODS.register('scahn')
class SCAHN:
  """SCAHN's networks, losses and per-batch training step, from a config."""

  trainer = 'per_step'
  outputs = {'img': 'binary', 'txt': 'binary'}
  # The run may be extended: no rate depends on the run's length.
  resumable_keys = ('scahn.num_steps',)
  # The generator step's codes, which the discriminator step reads next,
  # within the same step: a resumed run never reads them before rewriting.
  unsaved_memories = ('step_codes_img', 'step_codes_txt')
  # No `memory_axes`: no memory is item-indexed. The queues hold the codes
  # of the last Q batch rows ([Q, K], written in FIFO order, not by item),
  # the label graph is [L, L], the step codes [B, K]: all replicated.

  def __init__(self, config: ml_collections.ConfigDict, *, num_labels: int,
               text_dim: int):
    self.hp = hp = config.scahn
    self.model = model = config.model
    common.check_choice('config.scahn.contrastive_loss', hp.contrastive_loss,
                        CONTRASTIVE_LOSSES)
    common.check_choice('config.scahn.label_loss_form', hp.label_loss_form,
                        contrastive.LABEL_LOSS_FORMS)
    common.check_choice('config.model.image_input', model.image_input,
                        IMAGE_INPUTS)
    common.check_choice('config.model.text_input', model.text_input,
                        TEXT_INPUTS)
    for d in tuple(hp.directions) + tuple(hp.triplet_directions):
      common.check_choice('config.scahn.directions', d,
                          tuple(contrastive.DIRECTIONS))
    text_vocab = {'bow': text_dim, 'tokens': model.text_vocab_size,
                  'features': None}[model.text_input]
    if model.text_input == 'tokens' and text_vocab < 1:
      raise ValueError('config.model.text_vocab_size must be >= 1 for '
                       "text_input='tokens'.")
    self.num_labels = num_labels
    self.bits = config.bits
    dtype = jnp.dtype(model.compute_dtype)
    self.generator = scahn_models.Generator(
        bits=config.bits, num_labels=num_labels, width=model.width,
        num_layers=model.num_layers, num_heads=model.num_heads,
        mlp_dim=model.mlp_dim, dropout_rate=model.dropout_rate,
        text_vocab=text_vocab, image_positions=model.image_positions,
        gcn_input_dim=model.gcn_input_dim, gcn_hidden=model.gcn_hidden,
        dtype=dtype)
    self.discriminator = scahn_models.DualDiscriminator(
        hidden=tuple(model.discriminator_hidden), dtype=dtype)
    self.optimizers = {'gen': generator_optimizer(hp),
                       'dis': discriminator_optimizer(hp)}
    if hp.num_steps < 1:
      raise ValueError(f'config.scahn.num_steps={hp.num_steps} must be >= 1.')
    self.num_steps = int(hp.num_steps)
    self.batch_size = int(config.train.batch_size)
    if hp.contrastive_loss == 'paco' and hp.queue_size % self.batch_size:
      raise ValueError(f'config.scahn.queue_size={hp.queue_size} must be a '
                       'multiple of config.train.batch_size='
                       f'{self.batch_size} (a batch never straddles its end).')
    self.updates = {'generator': self.update_generator,
                    'discriminator': self.update_discriminator}
    self.inputs = {'generator': ('label', 'image', 'text'),
                   'discriminator': ()}

  # ------------------------------------------------------------ inputs

  def sequence(self, modality: str, x: jax.Array
              ) -> tuple[jax.Array, jax.Array | None]:
    """A batch's image or text rows as an encoder input and its mask.

    Args:
      modality: 'img' or 'txt'.
      x: [B, ...] the rows of the 'image' or 'text' field.

    Returns:
      ([B, S(, F)] sequence, [B, S] bool mask or None = all valid).
    """
    form = (self.model.image_input if modality == 'img' else
            self.model.text_input)
    return _INPUT_FORMS[form](self.model, x)

  def _sequences(self, batch: base.Batch):
    pairs = {m: self.sequence(m, batch[field])
             for m, field in (('img', 'image'), ('txt', 'text'))}
    return ({m: p[0] for m, p in pairs.items()},
            {m: p[1] for m, p in pairs.items()})

  # ------------------------------------------------------------ state

  def init(self, rng: jax.Array, data: base.Batch) -> base.TrainState:
    """Initial state for a training set `data` ('image', 'text', 'label').

    Args:
      rng: PRNG key.
      data: the training arrays, [T, ...] each; the labels build the label
        graph (jit-able), the other fields give shapes (one row suffices).

    Returns:
      A TrainState (module docstring) at step 0.
    """
    gen_key, dis_key, queue_key, state_key = jax.random.split(rng, 4)
    memory = {'label_graph': jnp.asarray(graph.propagation_matrix(
        graph.label_adjacency(data['label'], self.hp.graph_threshold,
                              self.hp.graph_neighbour_weight)), jnp.float32)}
    memory.update({name: jnp.zeros((self.batch_size, self.bits), jnp.float32)
                   for name in self.unsaved_memories})
    if self.hp.label_embeddings:
      memory['label_embedding'] = jnp.asarray(graph.load_node_embeddings(
          self.hp.label_embeddings, self.num_labels))
    sample = {f: jnp.asarray(data[f][:1]) for f in ('image', 'text')}
    inputs, masks = self._sequences(sample)
    # Jitted: one compilation is faster than Flax's eager init op by op.
    gen = jax.jit(self.generator.init)(
        gen_key, inputs, masks, memory['label_graph'],
        memory.get('label_embedding'))['params']
    dis = jax.jit(self.discriminator.init)(
        dis_key, jnp.zeros((1, self.bits)), jnp.zeros((1, self.bits)))['params']
    params = {'gen': gen, 'dis': dis}
    if self.hp.contrastive_loss == 'paco':
      memory.update(queues_to_memory(contrastive.init_queues(
          queue_key, self.hp.queue_size, self.bits, self.num_labels,
          tuple(self.hp.directions))))
    return base.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state={n: self.optimizers[n].init(p) for n, p in params.items()},
        memory=memory, rng=state_key)

  # ------------------------------------------------------------ losses

  def generator_loss(self, gen_params: Any, state: base.TrainState,
                     batch: base.Batch, key: jax.Array):
    """The generator's loss and its aux (terms, new queues, codes)."""
    hp = self.hp
    labels = batch['label'].astype(jnp.float32)
    inputs, masks = self._sequences(batch)
    out = self.generator.apply(
        {'params': gen_params}, inputs, masks, state.memory['label_graph'],
        state.memory.get('label_embedding'), train=True,
        rngs={'dropout': key})
    adv = self.discriminator.apply({'params': state.params['dis']},
                                   out['adv_codes']['img'],
                                   out['adv_codes']['txt'])
    terms = {
        'adversarial': contrastive.dual_generator_loss(adv['img_on_txt'],
                                                       adv['txt_on_img']),
        'label': sum(contrastive.multilabel_bce(out['label_logits'][m], labels,
                                                hp.label_loss_form)
                     for m in scahn_models.MODALITIES)}
    queues = {}
    if hp.contrastive_loss == 'paco':
      terms['contrastive'], queues = contrastive.queue_contrastive_loss(
          out['codes'], out['sup_logits'], labels,
          queues_from_memory(state.memory, tuple(hp.directions)),
          directions=tuple(hp.directions), temperature=hp.temperature,
          alpha=hp.paco_alpha, beta=hp.paco_beta, gamma=hp.paco_gamma,
          sup_temperature=hp.paco_sup_temperature)
    else:
      terms['contrastive'] = contrastive.batch_triplet_loss(
          out['codes'], labels, directions=tuple(hp.triplet_directions),
          margin=hp.triplet_margin, weighted=hp.triplet_weighted)
    total = (hp.contrastive_weight * terms['contrastive'] +
             hp.label_weight * terms['label'] +
             hp.adversarial_weight * terms['adversarial'])
    return total, (terms, queues, out['codes'])

  def discriminator_loss(self, dis_params: Any, codes: dict[str, jax.Array]
                        ) -> jax.Array:
    """The dual discriminator's loss on (constant) codes [B, K] per modality."""
    logits = self.discriminator.apply(
        {'params': dis_params}, jax.lax.stop_gradient(codes['img']),
        jax.lax.stop_gradient(codes['txt']))
    return contrastive.dual_discriminator_loss(
        logits['img_on_img'], logits['img_on_txt'], logits['txt_on_txt'],
        logits['txt_on_img'])

  # ------------------------------------------------------------ step

  def update_generator(self, state: base.TrainState, batch: base.Batch,
                       data: base.Batch, step: Any
                      ) -> tuple[base.TrainState, base.Metrics]:
    """The generator step: its loss, its chain, the queues; codes stashed.

    Args:
      state: the training state.
      batch: 'image' [B, ...], 'text' [B, ...], 'label' [B, L].
      data: the resident training set (unused).
      step: the update's `base.Step`; `step.rng` is the dropout key.

    Returns:
      (state at step + 1 with the new generator, queues and the batch's
      codes in 'step_codes_*', metrics: the loss terms and 'loss').
    """
    del data
    (loss, (terms, queues, codes)), grads = jax.value_and_grad(
        self.generator_loss, has_aux=True)(state.params['gen'], state, batch,
                                           step.rng)
    updates, opt = self.optimizers['gen'].update(
        grads, state.opt_state['gen'], state.params['gen'])
    gen = optax.apply_updates(state.params['gen'], updates)
    stash = {f'step_codes_{m}': jax.lax.stop_gradient(codes[m])
             for m in scahn_models.MODALITIES}
    state = state.replace(
        step=state.step + 1, params={**state.params, 'gen': gen},
        opt_state={**state.opt_state, 'gen': opt},
        memory={**state.memory, **queues_to_memory(queues), **stash})
    return state, {'loss': loss, **terms}

  def update_discriminator(self, state: base.TrainState, batch: base.Batch,
                           data: base.Batch, step: Any
                          ) -> tuple[base.TrainState, base.Metrics]:
    """The discriminator step on the codes of this batch's generator step
    (computed before its update, as the code's `TrainOneStepCellD` gets
    them). Returns (state at step + 1, {'loss'})."""
    del batch, data, step
    codes = {m: state.memory[f'step_codes_{m}']
             for m in scahn_models.MODALITIES}
    loss, grads = jax.value_and_grad(self.discriminator_loss)(
        state.params['dis'], codes)
    updates, opt = self.optimizers['dis'].update(
        grads, state.opt_state['dis'], state.params['dis'])
    dis = optax.apply_updates(state.params['dis'], updates)
    return state.replace(step=state.step + 1,
                         params={**state.params, 'dis': dis},
                         opt_state={**state.opt_state, 'dis': opt}), {
                             'loss': loss}

  # ------------------------------------------------------------ codes

  def encode(self, params: dict[str, Any], modality: str,
             inputs: jax.Array) -> jax.Array:
    """[B, ...] image or text rows -> [B, K] int8 codes in {-1, +1}."""
    x, mask = self.sequence(modality, inputs)
    codes = self.generator.apply({'params': params['gen']}, modality, x, mask,
                                 method=scahn_models.Generator.encode)
    return hashing_net.binarize(codes)


def queues_to_memory(queues: dict[str, contrastive.Queue]
                    ) -> dict[str, jax.Array]:
  """{direction: Queue} -> flat memory entries 'queue_<direction>_<field>'."""
  return {f'queue_{d}_{f}': getattr(q, f) for d, q in queues.items()
          for f in _QUEUE_FIELDS}


def queues_from_memory(memory: dict[str, jax.Array], directions
                      ) -> dict[str, contrastive.Queue]:
  """The inverse of `queues_to_memory` for `directions`."""
  return {d: contrastive.Queue(**{f: memory[f'queue_{d}_{f}']
                                  for f in _QUEUE_FIELDS})
          for d in directions}
