"""SSAL: Self-Supervised Adversarial Learning for cross-modal retrieval
(Wang et al., MMAsia 2020; SPEC 2.5). A real-valued common space, not
hashing: retrieval ranks by cosine, optionally by Hamming distance of the
embeddings' sign() codes.

No public code exists; every choice below is this implementation's.

Networks (`models/ssal.py`), D = `config.bits` (so sign() codes have D
bits and sit in the same tables as the hashing methods' K):
  projector 'img': the image trunk `model.image_encoder` ('cnnf_small' on
    pixels, 'feature_mlp' on pre-extracted features: Dense + ReLU per
    `model.image_mlp_features`), then a head of Dense + ReLU per
    `model.projector_hidden` and a linear Dense(D); the embedding is
    L2-normalised (the common space is the unit sphere, where cosine is a
    dot product, and neither classifier can tell modalities or rotations
    apart by the embeddings' norms);
  projector 'txt': the BoW trunk 'bow_mlp' (Dense + ReLU per
    `model.text_hidden`, init N(0, `model.init_std`)), then the same head;
  label classifier: one Dense(L) on the common space, SHARED by both
    modalities, so an image and a text of a class are pulled towards the
    same direction; multi-label sigmoid BCE, the mean over [B, L];
  adversary: a modality classifier D -> `model.adversary_hidden` (ReLU) ->
    1 logit ("is an image"), and for pixel inputs a rotation classifier
    D -> `model.adversary_hidden` (ReLU) -> 4 logits (0/90/180/270
    degrees), from the embedding of the rotated image.

Rotations (`random_rotations`): each image of the batch is turned by k * 90
degrees counter-clockwise (`jnp.rot90` over H, W), k in 0..3 drawn per item
from the projector update's key (`Step.rng`, a function of the run's key
and the step: a resumed run draws the same k). Images are normalised with
per-channel statistics, which rotation leaves unchanged, so rotating the
normalised image equals normalising the rotated one. The rotated image goes
through the image projector a second time (same params); only the rotation
classifier sees its embedding. `ssal.rotation`: 'auto' (on for pixel
trunks, `PIXEL_ENCODERS`, which need square images; off otherwise), 'on' or
'off'. For feature inputs (Wikipedia's SIFT vectors) a rotation is
undefined: the method logs so and runs with the modality adversary alone;
the run's report (evaluation.json, `metadata['ssal']`) states which.

Two updates per batch (`update_projector`, then `update_adversary`; the
per-step trainer runs both in one jit, as SCAHN's generator/discriminator):
  projector: label_weight * (BCE(img) + BCE(txt))
             + modality_weight * confusion(modality classifier on img, txt)
             + rotation_weight * confusion(rotation classifier on rotated img)
             with the adversary's params held fixed;
  adversary: 0.5 * (CE(modality(img), 1) + CE(modality(txt), 0))
             + CE(rotation(rotated img), k), on the embeddings of this
             batch's projector update (computed before it, stashed in
             memory as SCAHN stashes its codes: no second forward pass).
`ssal.confusion` chooses how the projector confuses the adversary:
  'uniform' (default): cross-entropy against the uniform target (1/2 for
    the modality logit, 1/4 for each rotation), minimal where the
    classifiers can tell nothing: bounded below, so the projector never
    gains by making the classifiers confidently wrong;
  'reversal': minus the adversary's own losses (ACMR's min-max, what a
    gradient-reversal layer gives), unbounded below.
Both networks use their own optax chain (`base.optimizer_config`:
`ssal.optimizer`, `ssal.adversary_optimizer`; Adam by default).

Training state: params {'proj': {'img', 'txt', 'classifier'}, 'adv'},
opt_state {'proj', 'adv'}, memory: the projector update's embeddings
'step_emb_img' / '_txt' / '_rot' [B, D] and rotations 'step_rotations' [B]
int32, which the adversary update reads (not checkpointed: rewritten before
they are read).
"""
from __future__ import annotations

from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import optax

from crossmodal_hash import losses
from crossmodal_hash.methods import base
from crossmodal_hash.methods import common
from crossmodal_hash.methods import registry
from crossmodal_hash.models import heads
from crossmodal_hash.models import registry as models_registry
from crossmodal_hash.models import ssal as ssal_models

MODALITIES = ('img', 'txt')
ROTATION_CHOICES = ('auto', 'on', 'off')
CONFUSIONS = ('uniform', 'reversal')
# Image trunks that take [B, H, W, C] pixels, where a rotation is defined.
PIXEL_ENCODERS = ('cnnf', 'cnnf_small')


def default_config() -> ml_collections.ConfigDict:
  """SSAL's hyper-parameters (`config.ssal`); see the module docstring."""
  c = ml_collections.ConfigDict()
  c.num_steps = 3000
  c.rotation = 'auto'
  c.confusion = 'uniform'
  c.label_weight = 1.0
  c.modality_weight = 0.1
  c.rotation_weight = 0.1
  c.optimizer = base.optimizer_config(name='adam', learning_rate=1e-3)
  c.adversary_optimizer = base.optimizer_config(name='adam',
                                                learning_rate=1e-3)
  return c


def add_model_defaults(model: ml_collections.ConfigDict
                      ) -> ml_collections.ConfigDict:
  """`model` (with its image trunk and 'bow_mlp' text trunk's fields) with
  SSAL's own: the projector head and the adversary's widths."""
  model.projector_hidden = (512,)
  model.adversary_hidden = (256,)
  return model


def random_rotations(key: jax.Array, images: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
  """Each image turned by its own random multiple of 90 degrees.

  Args:
    key: PRNG key; the draws are a function of it alone.
    images: [B, H, W, C] with H == W.

  Returns:
    (rotated [B, H, W, C], labels [B] int32 in 0..3): image b is
    `jnp.rot90(images[b], labels[b])` (counter-clockwise over H, W).
  """
  labels = jax.random.randint(key, images.shape[:1], 0,
                              ssal_models.NUM_ROTATIONS, jnp.int32)
  return rotate(images, labels), labels


def rotate(images: jax.Array, labels: jax.Array) -> jax.Array:
  """[B, H, W, C] images, [B] int quarter turns -> [B, H, W, C] rotated."""
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError('Rotations need square [B, H, W, C] images; got '
                     f'{list(images.shape)}.')
  out = images
  for k in range(1, ssal_models.NUM_ROTATIONS):
    turned = jnp.rot90(images, k, axes=(1, 2))
    out = jnp.where((labels == k)[:, None, None, None], turned, out)
  return out


# ------------------------------------------------------------------ losses


def adversary_loss(logits: dict[str, jax.Array],
                   rotations: jax.Array | None = None) -> jax.Array:
  """The adversary's loss: modality and (if present) rotation cross-entropy.

  Args:
    logits: `models.ssal.Adversary` outputs: 'modality_img' [B],
      'modality_txt' [B] and optionally 'rotation' [B, 4].
    rotations: [B] int true rotations (with 'rotation').

  Returns:
    0.5 * (mean CE(img, 1) + mean CE(txt, 0)) + mean CE(rotation, labels).
  """
  loss = losses.adversarial_discriminator(logits['modality_img'],
                                          logits['modality_txt'])
  if 'rotation' in logits:
    loss = loss + jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits['rotation'], rotations))
  return loss


def confusion_terms(logits: dict[str, jax.Array], form: str,
                    rotations: jax.Array | None = None
                   ) -> dict[str, jax.Array]:
  """The projector's adversarial terms {'modality', 'rotation' (if present)}.

  'uniform': 0.5 * (mean CE(img, 1/2) + mean CE(txt, 1/2)) and the mean CE
  of the rotation logits against 1/4 each (minima ln 2 and ln 4);
  'reversal': minus the adversary's modality and rotation terms.
  """
  if form == 'uniform':
    terms = {'modality': 0.5 * (
        jnp.mean(losses.sigmoid_cross_entropy(logits['modality_img'], 0.5)) +
        jnp.mean(losses.sigmoid_cross_entropy(logits['modality_txt'], 0.5)))}
    if 'rotation' in logits:
      terms['rotation'] = -jnp.mean(jax.nn.log_softmax(logits['rotation']))
    return terms
  if form == 'reversal':
    terms = {'modality': -losses.adversarial_discriminator(
        logits['modality_img'], logits['modality_txt'])}
    if 'rotation' in logits:
      terms['rotation'] = -jnp.mean(
          optax.softmax_cross_entropy_with_integer_labels(logits['rotation'],
                                                          rotations))
    return terms
  raise ValueError(f'Unknown confusion {form!r}; expected one of '
                   f'{CONFUSIONS}.')


# ------------------------------------------------------------------ method


@registry.METHODS.register('ssal')
class SSAL:
  """SSAL's networks, losses and per-batch training step, from a config."""

  trainer = 'per_step'
  outputs = {'img': 'real', 'txt': 'real'}
  resumable_keys = ()
  # The projector update's embeddings and rotations, read by the adversary
  # update of the same step: a resumed run never reads them before writing.
  unsaved_memories = ('step_emb_img', 'step_emb_txt', 'step_emb_rot',
                      'step_rotations')

  def __init__(self, config: ml_collections.ConfigDict, *, num_labels: int,
               text_dim: int):
    del text_dim  # The text trunk's input width comes from the data.
    self.hp = hp = config.ssal
    self.model = model = config.model
    common.check_choice('config.ssal.rotation', hp.rotation, ROTATION_CHOICES)
    common.check_choice('config.ssal.confusion', hp.confusion, CONFUSIONS)
    pixels = model.image_encoder in PIXEL_ENCODERS
    if hp.rotation == 'on' and not pixels:
      raise ValueError(
          "config.ssal.rotation='on' needs a pixel image trunk "
          f'{PIXEL_ENCODERS}; config.model.image_encoder='
          f'{model.image_encoder!r} takes features, where a rotation is '
          "undefined (use 'auto' or 'off').")
    self.rotation = hp.rotation == 'on' or (hp.rotation == 'auto' and pixels)
    if self.rotation:
      why = (f'image trunk {model.image_encoder!r} takes pixels: the '
             'adversary has a rotation classifier and a modality classifier')
    elif pixels:
      why = "config.ssal.rotation='off': modality adversary alone"
    else:
      why = (f'image trunk {model.image_encoder!r} takes feature vectors, '
             'where a rotation is undefined: modality adversary alone')
    logging.info('SSAL: %s.', why)
    # What the run's report states (harness: evaluation.json metadata).
    self.report = {'rotation_adversary': self.rotation, 'adversary': why}
    if hp.num_steps < 1:
      raise ValueError(f'config.ssal.num_steps={hp.num_steps} must be >= 1.')
    self.num_steps = int(hp.num_steps)
    self.num_labels = num_labels
    self.batch_size = int(config.train.batch_size)
    self.dim = int(config.bits)
    dtype = jnp.dtype(model.compute_dtype)
    head = dict(hidden=tuple(model.projector_hidden), embedding_dim=self.dim,
                dtype=dtype)
    self.projectors = {
        'img': ssal_models.Projector(
            encoder=models_registry.build('image_encoder', model, dtype),
            **head),
        'txt': ssal_models.Projector(
            encoder=models_registry.ENCODERS.get('bow_mlp').build(model,
                                                                  dtype),
            **head)}
    self.classifier = heads.LabelHead(num_labels=num_labels, init_std=None,
                                      dtype=dtype)
    self.adversary = ssal_models.Adversary(
        hidden=tuple(model.adversary_hidden), rotation=self.rotation,
        dtype=dtype)
    self.optimizers = {
        'proj': base.make_optimizer(hp.optimizer, num_steps=self.num_steps),
        'adv': base.make_optimizer(hp.adversary_optimizer,
                                   num_steps=self.num_steps)}
    self.updates = {'projector': self.update_projector,
                    'adversary': self.update_adversary}
    self.inputs = {'projector': ('label', 'image', 'text'), 'adversary': ()}

  # ------------------------------------------------------------ state

  def init(self, rng: jax.Array, data: base.Batch) -> base.TrainState:
    """Initial state for a training set `data` ('image', 'text', 'label').

    Args:
      rng: PRNG key.
      data: the training arrays, [T, ...] each (shapes only).

    Returns:
      A TrainState (module docstring) at step 0.
    """
    if self.rotation and (data['image'].ndim != 4 or
                          data['image'].shape[1] != data['image'].shape[2]):
      raise ValueError(
          'SSAL rotations need square [N, H, W, C] images; the training '
          f"images are {list(data['image'].shape)}. Set "
          "config.ssal.rotation='off' for other inputs.")
    img_key, txt_key, cls_key, adv_key, state_key = jax.random.split(rng, 5)
    sample = {m: jnp.zeros((1,) + data[f].shape[1:], jnp.float32)
              for m, f in (('img', 'image'), ('txt', 'text'))}
    proj = {m: self.projectors[m].init(k, sample[m])['params']
            for m, k in (('img', img_key), ('txt', txt_key))}
    emb = jnp.zeros((1, self.dim), jnp.float32)
    proj['classifier'] = self.classifier.init(cls_key, emb)['params']
    adv = self.adversary.init(adv_key, emb, emb,
                              emb if self.rotation else None)['params']
    params = {'proj': proj, 'adv': adv}
    batch_emb = jnp.zeros((self.batch_size, self.dim), jnp.float32)
    memory = {'step_emb_img': batch_emb, 'step_emb_txt': batch_emb}
    if self.rotation:
      memory['step_emb_rot'] = batch_emb
      memory['step_rotations'] = jnp.zeros((self.batch_size,), jnp.int32)
    return base.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state={n: self.optimizers[n].init(p) for n, p in params.items()},
        memory=memory, rng=state_key)

  # ------------------------------------------------------------ forward

  def embed(self, proj_params: Any, modality: str, x: jax.Array
           ) -> jax.Array:
    """[B, ...] rows of `modality` -> [B, D] unit-norm embeddings."""
    return self.projectors[modality].apply({'params': proj_params[modality]},
                                           x.astype(jnp.float32))

  def projector_loss(self, proj_params: Any, adv_params: Any,
                     batch: base.Batch, key: jax.Array):
    """The projector's loss and its aux (terms, embeddings, rotations).

    Args:
      proj_params: {'img', 'txt', 'classifier'} params.
      adv_params: the adversary's params (held fixed).
      batch: 'image' [B, ...], 'text' [B, V], 'label' [B, L].
      key: the rotations' key.

    Returns:
      (loss, (terms {'label', 'modality'[, 'rotation']}, embeddings
      {'img', 'txt'[, 'rot']} [B, D], rotations [B] int32 or None)).
    """
    hp = self.hp
    emb = {'img': self.embed(proj_params, 'img', batch['image']),
           'txt': self.embed(proj_params, 'txt', batch['text'])}
    rotations = None
    if self.rotation:
      rotated, rotations = random_rotations(key, batch['image'])
      emb['rot'] = self.embed(proj_params, 'img', rotated)
    labels = batch['label'].astype(jnp.float32)
    terms = {'label': sum(
        losses.label_prediction(self.classifier.apply(
            {'params': proj_params['classifier']}, emb[m]), labels, 'bce')
        for m in MODALITIES)}
    logits = self.adversary.apply({'params': adv_params}, emb['img'],
                                  emb['txt'], emb.get('rot'))
    terms.update(confusion_terms(logits, hp.confusion, rotations))
    total = (hp.label_weight * terms['label'] +
             hp.modality_weight * terms['modality'])
    if self.rotation:
      total = total + hp.rotation_weight * terms['rotation']
    return total, (terms, emb, rotations)

  # ------------------------------------------------------------ step

  def update_projector(self, state: base.TrainState, batch: base.Batch,
                       data: base.Batch, step: Any
                      ) -> tuple[base.TrainState, base.Metrics]:
    """The projector update; the batch's embeddings stashed for the adversary.

    Args:
      state: the training state.
      batch: 'image' [B, ...], 'text' [B, V], 'label' [B, L].
      data: the resident training set (unused).
      step: the update's `base.Step`; `step.rng` draws the rotations.

    Returns:
      (state at step + 1, metrics: the loss terms and 'loss').
    """
    del data
    (loss, (terms, emb, rotations)), grads = jax.value_and_grad(
        self.projector_loss, has_aux=True)(state.params['proj'],
                                           state.params['adv'], batch,
                                           step.rng)
    proj, opt = base.apply_optimizer(self.optimizers['proj'], grads,
                                     state.opt_state['proj'],
                                     state.params['proj'])
    stash = {f'step_emb_{m}': jax.lax.stop_gradient(e)
             for m, e in emb.items()}
    if rotations is not None:
      stash['step_rotations'] = rotations
    return state.replace(
        step=state.step + 1, params={**state.params, 'proj': proj},
        opt_state={**state.opt_state, 'proj': opt},
        memory={**state.memory, **stash}), {'loss': loss, **terms}

  def update_adversary(self, state: base.TrainState, batch: base.Batch,
                       data: base.Batch, step: Any
                      ) -> tuple[base.TrainState, base.Metrics]:
    """The adversary update on the embeddings of this batch's projector
    update (computed before it). Returns (state at step + 1, {'loss'})."""
    del batch, data, step
    memory = state.memory

    def loss_fn(adv_params):
      logits = self.adversary.apply(
          {'params': adv_params}, memory['step_emb_img'],
          memory['step_emb_txt'], memory.get('step_emb_rot'))
      return adversary_loss(logits, memory.get('step_rotations'))

    loss, grads = jax.value_and_grad(loss_fn)(state.params['adv'])
    adv, opt = base.apply_optimizer(self.optimizers['adv'], grads,
                                    state.opt_state['adv'],
                                    state.params['adv'])
    return state.replace(step=state.step + 1,
                         params={**state.params, 'adv': adv},
                         opt_state={**state.opt_state, 'adv': opt}), {
                             'loss': loss}

  # ------------------------------------------------------------ outputs

  def encode(self, params: dict[str, Any], modality: str,
             inputs: jax.Array) -> jax.Array:
    """[B, ...] image or text rows -> [B, D] float32 unit-norm embeddings."""
    return self.embed(params['proj'], modality, inputs)
