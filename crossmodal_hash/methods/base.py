"""The Method protocol: what a method hands to its trainer family.

A method never imports a trainer. It names the family that runs it
(`Method.trainer`: 'alternating' passes or 'per_step'), registers itself in
methods/registry.py, and the trainer calls the pieces below. A new method is
files in methods/ (and models/ for new networks): no trainer edit.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

# The fields of a batch when an update declares none (`Method.inputs`).
ALL_FIELDS = ('index', 'label', 'text', 'image')
# Salts update keys apart from the pass permutations (fold_in(rng, pass)).
_STEP_KEY_SALT = 0x5EED


@flax.struct.dataclass
class Step:
  """What a trainer tells an update about the step it runs.

  Attributes:
    rng: [2] uint32 PRNG key of this update alone (dropout, noise), a
      function of the run's key and the step (`step_key`), so a resumed run
      draws the same numbers; None where a test runs an update by hand.
    learning_rate: the alternating family's rate of the pass, [] float32 (or
      [n] for an update of n networks); None in the per-step family, whose
      rates are optax schedules inside the method's chains.
  """
  rng: jax.Array | None = None
  learning_rate: jax.Array | None = None


def step_key(rng: jax.Array, counter: jax.Array) -> jax.Array:
  """[2] the key of update number `counter` of a run whose key is `rng`."""
  return jax.random.fold_in(jax.random.fold_in(rng, _STEP_KEY_SALT), counter)


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly.

  Attributes:
    step: [] int32, optimizer updates taken (all networks together).
    params: network name -> Flax params.
    opt_state: optimizer name -> optax state.
    memory: name -> stored all-item array, e.g. 'lab_code' [T, K]; refreshed
      row by row as batches pass, and saved with the checkpoint (queues of
      past codes live here too).
    rng: [2] uint32 PRNG key of the run (updates get keys of their own,
      `Step.rng`).
    mutable: network name -> its Flax mutable collections, e.g.
      {'img': {'batch_stats': ...}} of BatchNorm; empty for methods without
      any. Saved with the checkpoint; `inference_params` hands them to
      `encode`.
  """
  step: jax.Array
  params: dict[str, Any]
  opt_state: dict[str, Any]
  memory: dict[str, jax.Array]
  rng: jax.Array
  mutable: dict[str, Any] = dataclasses.field(default_factory=dict)


def inference_params(state: TrainState) -> dict[str, Any]:
  """What `Method.encode` receives: the params, plus 'mutable' (the mutable
  collections) when the method keeps any."""
  if not state.mutable:
    return state.params
  return {**state.params, 'mutable': state.mutable}


@dataclasses.dataclass(frozen=True)
class Phase:
  """`passes` full passes over the training set updating `network`.

  `learning_rate` is a float, or a tuple for an update of several networks.
  `begin`, if set, names a hook `method.begin[begin]` that the trainer runs
  once before the phase's first pass (e.g. DCMH's B = sign(F + G) refresh).
  """
  network: str
  learning_rate: float | tuple[float, ...]
  passes: int
  begin: str | None = None


# update(state, batch, data, step) -> (state, metrics). `batch` holds the
# batch's rows: 'index' [B] int32 plus the fields the update declares in
# `Method.inputs` (images normalised to float32); `data` the whole
# device-resident training set (e.g. 'label' [T, L] for all-item
# similarities); `step` the update's PRNG key and (alternating family) rate.
UpdateFn = Callable[[TrainState, Batch, Batch, Step],
                    tuple[TrainState, Metrics]]
# begin(state, data) -> state: a jit-able refresh of the state (usually of its
# memories) from the whole device-resident training set, run between passes.
BeginFn = Callable[[TrainState, Batch], TrainState]

# What `Method.outputs` may give per modality: ±1 codes compared by Hamming
# distance; real-valued embeddings compared by cosine similarity (the
# evaluators 'periodic_cosine_map' and 'final_cosine_report' of
# trainers/evaluators.py, `config_utils.default_evals(real=True)`).
OUTPUT_KINDS = ('binary', 'real')


class Method(Protocol):
  """The interface of a method, for either trainer family.

  Construction: `METHODS.get(name)(config, num_labels=L, text_dim=V)`; the
  method's hyper-parameters live in `config.<name>`, and it builds its
  networks (models/registry.py) and its optax chains from them.

  Attributes:
    trainer: the family that runs it: 'alternating' (whole passes of one
      update, `schedule`) or 'per_step' (every update on every batch, in
      order, inside one jit: a generator step, then a discriminator step).
    updates: {name: UpdateFn}; per-step methods run them in this order.
    inputs: {update name: the data fields it reads}, e.g. SSAH's
      {'lab': ('label',), 'txt': ('label', 'text'), ...}. Batches hold only
      these (and 'index'), so a streamed pass of an update that reads no
      image reads none from disk, and images are normalised only when read.
      A method without `inputs` gets every field.
    resumable_keys: its config keys that may change when a run resumes
      (e.g. 'ssah.num_epochs'): see `config_utils.resumable_keys`.
    outputs: {modality: 'binary' or 'real'}: what `encode` gives per
      modality ('img', 'txt'), the same kind for both; a method without it
      gives ±1 codes of both. 'real' outputs are [B, D] float32 embeddings
      of any scale (cosine similarity normalises them), evaluated by the
      cosine evaluators (`config_utils.default_evals(real=True)`).
    encode_inputs: (optional) {modality: data field} that `encode` reads,
      default {'img': 'image', 'txt': 'text'}; 'image' is normalised first.
    num_steps: (per-step methods) the run's length in batches.
    begin: (optional) {name: BeginFn}, hooks that phases name (alternating).
    init_pretrained: (optional) params -> params, run on a fresh run's
      params (outside jit): weights from files the config names, e.g. a
      CNN-F trunk (`models.registry.merge_pretrained`).
    source_inputs: (optional, per-step methods) the source-domain fields its
      updates read, e.g. MHTN's ('image', 'label'): each batch then also
      holds 'source_<field>' rows of `config.source_dataset`
      (trainers/source_domain.py).
    unsaved_memories: (optional) memories no loss reads, left out of
      checkpoints.
    memory_axes: (optional) {memory name: logical axis names of its
      dimensions}, e.g. {'F': ('items', 'bits')}: `config.sharding.
      logical_axis_rules` map them to mesh axes (sharding.py; 'items', the T
      rows of an item-indexed memory, split over `data` by default). A memory
      it does not name, like every param and optimizer state, is replicated.
    report: (optional) {name: JSON-able value}, the method's statement of
      choices it made for this run (e.g. SSAL's adversary), written to the
      final report's metadata under the method's name.
    width_from_bits: (optional, default True) whether `config.bits` sets
      the width K of its outputs. False for a method whose outputs have a
      width of their own (MHTN: the softmax over the labels), where runs
      that differ only in `bits` train the same model.

  Networks take a `train` flag: True inside updates (dropout on, with
  `Step.rng` as the 'dropout' key; BatchNorm statistics updated and kept in
  `TrainState.mutable`), False in `encode`.
  """
  trainer: str
  updates: Mapping[str, UpdateFn]
  inputs: Mapping[str, tuple[str, ...]]
  resumable_keys: tuple[str, ...]

  def init(self, rng: jax.Array, data: Batch) -> TrainState:
    """The fresh state for the training arrays `data` (shapes only, plus T).

    A method with pretrained parts loads them here, from files its config
    names (never downloaded).
    """
    ...

  def schedule(self, epoch: int) -> list[Phase]:
    """(alternating) The phases of outer epoch `epoch`, in order."""
    ...

  def encode(self, params: dict[str, Any], modality: str,
             inputs: jax.Array) -> jax.Array:
    """[B, ...] inputs of `modality` -> [B, K] outputs (`train=False`):
    int8 in {-1, +1} for 'binary' outputs, float32 for 'real' ones.
    `params` is `inference_params(state)`."""
    ...


def encode_fields(method: Any) -> dict[str, str]:
  """{modality: the data field `encode` reads}: 'image' and 'text' unless
  the method's `encode_inputs` names others (e.g. 'txt': 'text_tokens')."""
  return {'img': 'image', 'txt': 'text',
          **dict(getattr(method, 'encode_inputs', {}))}


def outputs(method: Any) -> dict[str, str]:
  """{modality: output kind} of `method` ('binary' for both by default)."""
  return dict(getattr(method, 'outputs', {'img': 'binary', 'txt': 'binary'}))


def width_from_bits(method: Any) -> bool:
  """Whether `config.bits` sets the width of `method`'s outputs (a method
  class or instance; True unless it says otherwise)."""
  return bool(getattr(method, 'width_from_bits', True))


def batch_fields(method: Any, update: str | None = None) -> tuple[str, ...]:
  """The fields a batch of `update` (default: of every update) holds.

  'index' and the update's declared `method.inputs[update]`; every field of
  ALL_FIELDS for a method (or update) that declares none.
  """
  inputs = getattr(method, 'inputs', None)
  if inputs is None:
    return ALL_FIELDS
  names = [update] if update is not None else list(method.updates)
  fields = ['index']
  for name in names:
    if name not in inputs:
      return ALL_FIELDS
    fields += [f for f in inputs[name] if f not in fields]
  return tuple(fields)


def optimizer_config(**overrides: Any) -> ml_collections.ConfigDict:
  """An optax chain's settings (`make_optimizer`), defaults overridden.

  Fields: name ('adam', 'adamw' or 'sgd'), learning_rate (the peak),
  b1, b2, eps, momentum (sgd), weight_decay (adamw's decoupled decay; sgd's
  L2 term added to the gradients first; 'adam' refuses it), warmup_steps
  (linear from 0), decay ('constant', 'exponential' or 'cosine' after the
  warm-up), decay_rate and decay_steps (exponential: rate ** (steps /
  decay_steps)), end_value (cosine), clip_global_norm (0: no clipping).
  """
  c = ml_collections.ConfigDict()
  c.name = 'adam'
  c.learning_rate = 1e-4
  c.b1 = 0.9
  c.b2 = 0.999
  c.eps = 1e-8
  c.momentum = 0.0
  c.weight_decay = 0.0
  c.warmup_steps = 0
  c.decay = 'constant'
  c.decay_rate = 1.0
  c.decay_steps = 1
  c.end_value = 0.0
  c.clip_global_norm = 0.0
  c.update(overrides)
  return c


OPTIMIZERS = ('adam', 'adamw', 'sgd')
DECAYS = ('constant', 'exponential', 'cosine')


def make_schedule(c: ml_collections.ConfigDict, num_steps: int
                 ) -> optax.Schedule:
  """The per-step rate of `optimizer_config` `c` over a run of num_steps."""
  if c.decay not in DECAYS:
    raise ValueError(f'optimizer decay={c.decay!r} is not one of {DECAYS}.')
  after = max(1, num_steps - c.warmup_steps)
  if c.decay == 'constant':
    decay = optax.constant_schedule(c.learning_rate)
  elif c.decay == 'exponential':
    decay = optax.exponential_decay(c.learning_rate, c.decay_steps,
                                    c.decay_rate)
  else:
    decay = optax.cosine_decay_schedule(c.learning_rate, after,
                                        alpha=c.end_value / c.learning_rate
                                        if c.learning_rate else 0.0)
  if not c.warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, c.learning_rate, c.warmup_steps)
  return optax.join_schedules([warmup, decay], [c.warmup_steps])


def _with_weight_decay(weight_decay: float,
                       inner: optax.GradientTransformation
                      ) -> optax.GradientTransformation:
  """`inner` on gradients plus weight_decay * params (none at 0)."""
  if not weight_decay:
    return inner
  return optax.chain(optax.add_decayed_weights(weight_decay), inner)


def make_optimizer(c: ml_collections.ConfigDict, *,
                   num_steps: int | None = None
                  ) -> optax.GradientTransformation:
  """An optax chain from `optimizer_config` settings `c`.

  With `num_steps` (the per-step family) the rate is `make_schedule`'s,
  counted by the optimizer state itself; without (the alternating family),
  the rate is a hyper-parameter set per pass (`set_learning_rate`, through
  `optax.inject_hyperparams`), so a ladder of rates never retraces. Global
  norm clipping (`clip_global_norm` > 0) comes first in the chain.
  """
  if c.name not in OPTIMIZERS:
    raise ValueError(f'optimizer name={c.name!r} is not one of '
                     f'{OPTIMIZERS}.')
  if c.name == 'adam' and c.weight_decay:
    raise ValueError(f'optimizer name=adam has no weight decay (got '
                     f'weight_decay={c.weight_decay}): use name=adamw for '
                     "Adam's decoupled decay.")
  factory = {
      'adam': lambda learning_rate: optax.adam(learning_rate, b1=c.b1,
                                               b2=c.b2, eps=c.eps),
      'adamw': lambda learning_rate: optax.adamw(
          learning_rate, b1=c.b1, b2=c.b2, eps=c.eps,
          weight_decay=c.weight_decay),
      'sgd': lambda learning_rate: _with_weight_decay(
          c.weight_decay, optax.sgd(learning_rate, momentum=c.momentum)),
  }[c.name]
  if num_steps is None:
    inner = optax.inject_hyperparams(factory)(learning_rate=0.0)
  else:
    inner = factory(make_schedule(c, num_steps))
  if c.clip_global_norm:
    return optax.chain(optax.clip_by_global_norm(c.clip_global_norm), inner)
  return inner


def set_learning_rate(opt_state: Any, learning_rate: jax.Array) -> Any:
  """`opt_state` of a `make_optimizer` chain without `num_steps`, at rate
  `learning_rate` (the alternating family's pass rate)."""
  # optax.inject_hyperparams' state (InjectStatefulHyperparamsState in
  # optax 0.2.8, InjectHyperparamsState before).
  if 'learning_rate' in getattr(opt_state, 'hyperparams', ()):
    hyperparams = dict(opt_state.hyperparams, learning_rate=jnp.asarray(
        learning_rate, opt_state.hyperparams['learning_rate'].dtype))
    return opt_state._replace(hyperparams=hyperparams)
  if type(opt_state) is tuple:  # A chain's states (not a NamedTuple state).
    return tuple(set_learning_rate(s, learning_rate) for s in opt_state)
  return opt_state


def apply_optimizer(optimizer: optax.GradientTransformation, grads: Any,
                    opt_state: Any, params: Any,
                    learning_rate: jax.Array | None = None
                   ) -> tuple[Any, Any]:
  """One step of `optimizer`: (new params, new state).

  `learning_rate` is the pass's rate for a chain built without `num_steps`
  (set into its injected hyper-parameters first); None for scheduled chains.
  """
  if learning_rate is not None:
    opt_state = set_learning_rate(opt_state, learning_rate)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def tree_all_finite(tree: Any) -> jax.Array:
  """[] bool: every leaf of `tree` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
