"""The trainer of methods that alternate whole per-network passes.

SSAH (LabNet, discriminator, ImgNet, TxtNet passes), DCMH (image-net and
text-net passes around a shared binary matrix) and DSMHN (joint passes of both
streams) all run here: a method contributes its networks, losses, `updates`
and `schedule(epoch)` of Phases (see methods/base.py); this module owns the
rest. Hyper-parameters of method M live in `config.M`, whose `num_epochs` is
the number of outer epochs.

One run, start to end:
  1. load the dataset by name and draw its protocol's split
     (`data.protocols.split_for_run`: the dataset's fixed split or a seeded
     random one), checked against `<workdir>/split.npz` if there;
  2. build the mesh, check the batch sizes and any checkpoint in the workdir
     (an incompatible one, or another split, stops the run before anything is
     written); a fresh run then saves its split with its checksum;
  3. place the training set (`config.train.data_placement`): 'device' puts
     it on every device; 'stream' keeps only labels, texts and image
     statistics there and reads images batch by batch (trainers/streaming.py;
     'auto' streams lazy images and images over `max_device_bytes`);
  4. initialise or restore the state (params, optimizer states, memories, RNG)
     and the data position, the index of the next pass of the schedule;
  5. run the schedule: before a phase's first pass, its `begin` hook if it
     names one (one jitted call over the resident arrays); pass p visits the
     training set in the order of the permutation `fold_in(state.rng, p)`:
     with 'device' placement as jitted calls that each scan over
     `batches_per_call` batches gathered on the devices, with 'stream' one
     jitted step per batch from the grain pipeline (batches split over the
     mesh's `data` axis, the state donated, in both);
  6. after each pass: NaN/Inf check, JSON-lines metrics, progress, checkpoint
     (with the data position), and every `config.eval.every_passes` passes
     mAP@all of the validation queries against the validation database
     (`config.dataset.num_val` > 0; the state is only read), the best state
     by validation mAP kept in `<workdir>/best` (trainers/model_selection.py);
     without a validation split, of the test queries, and nothing selected;
  7. restore the selected params (the best by validation, else the last),
     encode the protocol's queries and retrieval set, read for the first time
     here, and run the evaluation suite (trainers/evaluation_hooks.py): the
     printed table, evaluation.json (saying which checkpoint and why),
     map.json, codes and plots in `<workdir>/eval`. A dataset without test
     queries (a training-set-only file) reports its validation split.

The 'image' modality may be pixels [N, H, W, 3], features [N, D] or video
clips [N, T, H, W, 3]: batches are gathered and normalised over the last axis
the same way, and the method's image encoder decides what it accepts.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from crossmodal_hash import checkpointing
from crossmodal_hash import config_utils
from crossmodal_hash import logging_utils
from crossmodal_hash import run_artifacts
from crossmodal_hash import sharding
from crossmodal_hash.data import pipeline
from crossmodal_hash.data import preprocess
from crossmodal_hash.data import protocols
from crossmodal_hash.data import registry as data_registry
from crossmodal_hash.data import splits
from crossmodal_hash.data import types
from crossmodal_hash.evaluation import suite
from crossmodal_hash.methods import base
from crossmodal_hash.methods import registry as method_registry
from crossmodal_hash.models import cnnf_weights
from crossmodal_hash.trainers import evaluation_hooks
from crossmodal_hash.trainers import model_selection
from crossmodal_hash.trainers import registry
from crossmodal_hash.trainers import streaming


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint of a different configuration."""


class NonFiniteError(FloatingPointError):
  """A pass produced NaN or Inf losses or parameters."""


def _load_data(config: ml_collections.ConfigDict, workdir: str
              ) -> tuple[types.MultiModalData, types.Split]:
  """The dataset and the run's split (see `data.protocols`).

  The dataset's fixed split (Wikipedia, a features file with split arrays) or
  a seeded random one of `config.dataset.num_query` / `num_train`; an existing
  `<workdir>/split.npz` must hold the same split (SplitMismatchError
  otherwise). Nothing is written here: `train_and_evaluate` saves the split
  once the workdir's checkpoint has been checked.
  """
  data = data_registry.DATASETS.get(config.dataset.name)(config.dataset)
  split = protocols.split_for_run(data, config.dataset, workdir, write=False)
  return data, split


def _check_resumable(checkpointer: checkpointing.Checkpointer,
                     config: ml_collections.ConfigDict,
                     split: types.Split, data_sha256: str) -> dict | None:
  """The latest checkpoint's metadata, if compatible with `config`, `split`
  (dataset.path may differ when the data's checksum is the same)."""
  step = checkpointer.latest_step()
  if step is None:
    return None
  meta = checkpointer.read_meta(step)
  different = config_utils.incompatible_keys(
      meta.get('config', {}), config,
      same_data=meta.get('data_sha256') == data_sha256)
  if different:
    saved = config_utils.flatten(meta.get('config', {}))
    ours = config_utils.flatten(config_utils.to_json_dict(config))
    lines = [f'  {k}: checkpoint {saved.get(k, "<absent>")!r}, '
             f'config {ours.get(k, "<absent>")!r}' for k in different[:10]]
    raise IncompatibleCheckpointError(
        f'{checkpointer.directory} holds checkpoint {step} of an incompatible '
        'config:\n' + '\n'.join(lines) +
        '\nUse another --workdir, or the same config. Nothing was overwritten.')
  saved_split = meta.get('split_sha256')
  if saved_split is not None and saved_split != splits.checksum(split):
    raise IncompatibleCheckpointError(
        f'{checkpointer.directory} holds checkpoint {step} of a run on another '
        f'split (sha256 {saved_split[:12]}, this run\'s '
        f'{splits.checksum(split)[:12]}). Use another --workdir; nothing was '
        'overwritten.')
  return meta


def num_epochs(config: ml_collections.ConfigDict) -> int:
  """Outer epochs of the run: `config.<method>.num_epochs`."""
  return int(config[config.method].num_epochs)


def flat_schedule(method: base.Method, epochs: int
                 ) -> list[tuple[int, str, Any, str | None]]:
  """[(epoch, network, learning_rate, begin)] for every pass, in order.

  `begin` is the phase's hook on the phase's first pass and None on the others.
  """
  return [(epoch, phase.network, phase.learning_rate,
           phase.begin if i == 0 else None)
          for epoch in range(epochs)
          for phase in method.schedule(epoch)
          for i in range(phase.passes)]


def make_begin_fns(method: base.Method, mesh: jax.sharding.Mesh
                  ) -> dict[str, Callable]:
  """The method's `begin` hooks, jitted: fn(state, data) -> state (donated)."""
  replicated = sharding.replicated(mesh)
  return {name: jax.jit(fn, in_shardings=replicated, out_shardings=replicated,
                        donate_argnums=0)
          for name, fn in getattr(method, 'begin', {}).items()}


def batches_per_call(setting: int, num_batches: int) -> int:
  """How many batches one jitted call scans over.

  `setting` 0 means automatic: a whole pass on GPU/TPU; one batch on CPU, where
  XLA runs a loop body (a `lax.scan`) on one thread: a cnnf_small gradient
  step at batch 128 took 7.7 s inside a scan and 0.8 s on its own (2 cores).
  The result always divides `num_batches`.
  """
  if setting < 0:
    raise ValueError(f'config.train.batches_per_call={setting} must be >= 0.')
  if setting == 0:
    setting = 1 if jax.default_backend() == 'cpu' else num_batches
  return math.gcd(min(setting, num_batches), num_batches)


def pass_order(rng: jax.Array, data: base.Batch, pass_index: jax.Array,
               first_batch: jax.Array, *, num_steps: int,
               batch_size: int) -> jax.Array:
  """Rows of batches first_batch .. first_batch + num_steps - 1 of a pass.

  Pass p visits the training set in the order of the permutation
  `fold_in(rng, p)`.

  Returns:
    [num_steps * batch_size] int32 row indices, batch after batch.
  """
  order = streaming.pass_permutation(rng, pass_index, data['label'].shape[0])
  return jax.lax.dynamic_slice_in_dim(order, first_batch * batch_size,
                                      num_steps * batch_size)


def gather_batch(data: base.Batch, index: jax.Array,
                 batch_spec: jax.sharding.NamedSharding) -> base.Batch:
  """The batch of rows `index` ([B] int32) of the device-resident `data`.

  Returns:
    'index' [B], 'label' [B, L], 'text' [B, V] as stored, and 'image' [B, ...]
    normalised to float32; every array split over the batch sharding.
  """
  index = jax.lax.with_sharding_constraint(index, batch_spec)
  batch = {
      'index': index,
      'label': data['label'][index],
      'text': data['text'][index],
      'image': preprocess.normalize(data['image'][index], data['image_mean'],
                                    data['image_inv_scale']),
  }
  return jax.lax.with_sharding_constraint(batch, batch_spec)


def make_steps_fn(method: base.Method, network: str, *, num_steps: int,
                  batch_size: int, mesh: jax.sharding.Mesh,
                  trace_guard: Callable[[Callable], Callable] | None = None):
  """A jitted run of `num_steps` consecutive updates of `network`.

  Pass p visits the training set in the order of `pass_order(state.rng, ...)`,
  so any batch of any pass can be recomputed from the state alone: this is
  what makes resumption exact.

  Returns:
    run(state, data, pass_index, first_batch, learning_rate) -> (state,
    metrics, finite): the state after updates on batches first_batch, ...,
    first_batch + num_steps - 1 of pass `pass_index`; their mean metrics; and
    whether every loss, parameter and memory is finite. `state` is donated.
    The pass index, batch offset and learning rate are traced arguments, so
    the function compiles once per network for the whole run; `trace_guard`
    (e.g. `chex.assert_max_traces(n=1)`) wraps it before jit to check that.
  """
  update = method.updates[network]
  batch_spec = sharding.batch_sharded(mesh)
  replicated = sharding.replicated(mesh)

  def run(state, data, pass_index, first_batch, learning_rate):
    order = pass_order(state.rng, data, pass_index, first_batch,
                       num_steps=num_steps, batch_size=batch_size)

    def step(state, index):
      return update(state, gather_batch(data, index, batch_spec), data,
                    learning_rate)

    if num_steps == 1:  # A length-1 scan is still a loop to XLA:CPU.
      state, metrics = step(state, order)
    else:
      state, metrics = jax.lax.scan(step, state,
                                    order.reshape(num_steps, batch_size))
      metrics = jax.tree.map(jnp.mean, metrics)
    finite = base.tree_all_finite((metrics, state.params, state.memory))
    return state, metrics, finite

  return jax.jit(trace_guard(run) if trace_guard else run,
                 in_shardings=replicated, out_shardings=replicated,
                 donate_argnums=0)


def run_pass(steps_fn, state, data, *, pass_index: int, num_batches: int,
             num_steps: int, learning_rate: Any):
  """One pass over the training set as num_batches / num_steps jitted calls.

  Returns:
    (state, metrics averaged over the pass as host floats, finite as a bool).
  """
  lr = jnp.asarray(learning_rate, jnp.float32)
  results = []
  for first in range(0, num_batches, num_steps):
    state, metrics, finite = steps_fn(state, data, jnp.int32(pass_index),
                                      jnp.int32(first), lr)
    results.append((metrics, finite))
  return (state, *streaming.mean_results(results))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a bad evaluation or placement setting, early."""
  config_utils.validate(config)  # Value ranges (main checks them first).
  suite.options_from_config(config.eval)  # Validates ties, empty, cutoffs.
  if config.eval.every_passes < 0:
    raise ValueError(f'config.eval.every_passes={config.eval.every_passes} '
                     'must be >= 0 (0: no periodic evaluation).')
  if config.train.data_placement not in streaming.PLACEMENTS:
    raise ValueError(f'config.train.data_placement='
                     f'{config.train.data_placement!r}; expected one of '
                     f'{streaming.PLACEMENTS}.')


def _device_passes(method: base.Method, device_data: dict[str, jax.Array],
                   mesh: jax.sharding.Mesh, *, num_batches: int,
                   batch_size: int, per_call: int):
  """run(state, pass_index, network, lr, on_batch) over resident data."""
  num_steps = batches_per_call(per_call, num_batches)
  steps_fns = {
      network: make_steps_fn(method, network, num_steps=num_steps,
                             batch_size=batch_size, mesh=mesh)
      for network in method.updates
  }

  def run(state, pass_index, network, learning_rate, on_batch=None):
    del on_batch  # The bar advances by whole passes.
    return run_pass(steps_fns[network], state, device_data,
                    pass_index=pass_index, num_batches=num_batches,
                    num_steps=num_steps, learning_rate=learning_rate)

  return run


def _stream_options(config: ml_collections.ConfigDict) -> pipeline.Options:
  return pipeline.Options(worker_count=int(config.train.stream_workers))


def _is_eval_pass(config: ml_collections.ConfigDict, pass_index: int) -> bool:
  every = int(config.eval.every_passes)
  return every > 0 and (pass_index + 1) % every == 0


def _make_mesh(config: ml_collections.ConfigDict,
               split: types.Split) -> jax.sharding.Mesh:
  """The mesh, after checking that the batch sizes fit it and the split."""
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_size(config.train.batch_size, mesh)
  sharding.check_batch_size(config.eval.batch_size, mesh,
                            'config.eval.batch_size')
  if len(split.train) < config.train.batch_size:
    raise ValueError(f'The training set ({len(split.train)} items) is smaller '
                     f'than config.train.batch_size={config.train.batch_size}.')
  logging_utils.warn_on_main_process(config_utils.dropped_items_note(
      len(split.train), config.train.batch_size))
  return mesh


def _place_training_set(config: ml_collections.ConfigDict,
                        train: types.MultiModalData, mesh: jax.sharding.Mesh,
                        pretrained: cnnf_weights.PretrainedCNNF | None
                       ) -> tuple[str, tuple[np.ndarray, np.ndarray],
                                  dict[str, jax.Array]]:
  """(placement, image statistics, the resident arrays on the devices).

  'device' puts 'image' [T, ...] there too; 'stream' only 'label', 'text' and
  the statistics (see `streaming.resident_arrays`). A pretrained CNN-F
  supplies the mean image of 'pretrained_mean' normalisation.
  """
  placement = streaming.choose_placement(config.train.data_placement,
                                         train.images,
                                         int(config.train.max_device_bytes))
  logging.info('Training data placement: %s (%d items, images %s).',
               placement, len(train), train.images.shape)
  image_stats = preprocess.image_statistics(
      train.images, config.model.image_normalization,
      mean_image=None if pretrained is None else pretrained.mean_image)
  device_data = sharding.put_replicated(
      streaming.resident_arrays(train, image_stats,
                                with_images=placement == 'device'), mesh)
  return placement, image_stats, device_data


def _init_or_restore(method: base.Method, config: ml_collections.ConfigDict,
                     init_data: dict[str, Any], mesh: jax.sharding.Mesh,
                     checkpointer: checkpointing.Checkpointer,
                     meta: dict[str, Any] | None, expected_position: Callable,
                     pretrained: cnnf_weights.PretrainedCNNF | None
                    ) -> tuple[base.TrainState, int]:
  """(state, index of the next pass): fresh, or the latest checkpoint's.

  A fresh state takes the image trunk of a pretrained CNN-F if one is given;
  a resumed one has it in its checkpoint.
  """
  state = jax.jit(method.init, out_shardings=sharding.replicated(mesh))(
      jax.random.PRNGKey(config.seed), init_data)
  if meta is None:
    if pretrained is not None:
      state = state.replace(params=sharding.put_replicated(
          pretrained.merge_into(state.params), mesh))
    return state, 0
  state, meta = checkpointer.restore(checkpointer.latest_step(),
                                     checkpointing.abstract_like(state))
  start_pass = int(meta['pass_index'])
  streaming.check_iterator_state(meta.get('data_iterator'),
                                 expected_position(start_pass))
  logging.info('Resumed from %s at pass %d (step %d).',
               checkpointer.directory, start_pass, int(state.step))
  return state, start_pass


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_after_passes: int | None = None
                      ) -> dict[str, Any]:
  """Trains `config.method`, resuming from `workdir`, then evaluates.

  Args:
    config: a locked run config (see configs/).
    workdir: where checkpoints, metrics.jsonl, split.npz and eval/ go.
    stop_after_passes: stop (without saving) once this invocation has run that
      many passes, like a preempted job; for tests of exact resumption.

  Returns:
    The evaluation results (`evaluation_hooks.final_evaluation`: 'map',
    'random_map', 'table', ...), or {'stopped_at_pass': p} when stopped early.
  """
  check_config(config)
  data, split = _load_data(config, workdir)
  mesh = _make_mesh(config, split)
  checkpointer = checkpointing.Checkpointer.from_config(workdir, config.train)
  best = None
  try:
    data_sha256 = splits.data_checksum(data)
    meta = _check_resumable(checkpointer, config, split, data_sha256)
    train = data.take(split.train)
    # The file gives a fresh run its trunk and any 'pretrained_mean' run its
    # mean image; a resumed run without that normalisation never reads it.
    needs_file = (meta is None or
                  config.model.image_normalization == 'pretrained_mean')
    pretrained = cnnf_weights.maybe_load(
        config.model.pretrained_cnnf if needs_file else '',
        config.model.image_encoder)
    placement, image_stats, device_data = _place_training_set(
        config, train, mesh, pretrained)
    method = method_registry.METHODS.get(config.method)(
        config, num_labels=data.num_labels, text_dim=data.text_dim)
    checkpointer.unsaved_memories = getattr(method, 'unsaved_memories', ())
    position = lambda p: streaming.iterator_state(
        split.train, config.train.batch_size, p, placement)
    state, start_pass = _init_or_restore(
        method, config, device_data if placement == 'device' else
        streaming.init_data(device_data, train.images), mesh, checkpointer,
        meta, position, pretrained)
    if meta is None and jax.process_index() == 0:
      splits.reuse_or_save(os.path.join(workdir, 'split.npz'), split)
    if jax.process_index() == 0:  # What encoding needs (encode.py).
      run_artifacts.save(workdir, config, data, split, image_stats,
                         splits.checksum(split))

    schedule = flat_schedule(method, num_epochs(config))
    num_batches = len(split.train) // config.train.batch_size
    if placement == 'device':
      run = _device_passes(method, device_data, mesh, num_batches=num_batches,
                           batch_size=config.train.batch_size,
                           per_call=config.train.batches_per_call)
    else:
      run = streaming.StreamedPasses(
          method, train, device_data, mesh,
          batch_size=config.train.batch_size,
          options=_stream_options(config)).run
    evaluators = evaluation_hooks.Evaluator.for_split(
        split, method=method, data=data, mesh=mesh,
        batch_size=config.eval.batch_size, image_stats=image_stats)
    if 'validation' in evaluators and config.eval.every_passes > 0:
      best = model_selection.BestCheckpoint(workdir)
    loop = _Loop(config, workdir, schedule, num_batches, checkpointer,
                 lambda p: {'pass_index': p, 'num_passes': len(schedule),
                            'config': config_utils.to_json_dict(config),
                            'split_sha256': splits.checksum(split),
                            'data_sha256': data_sha256,
                            'data_iterator': position(p)},
                 stream=placement == 'stream', best=best)
    state = loop.run(state, make_begin_fns(method, mesh), run, device_data,
                     evaluators.get('validation', evaluators.get('test')),
                     start_pass=start_pass,
                     stop_after_passes=stop_after_passes)
    if state is None:
      return {'stopped_at_pass': loop.stopped_at}
    record = best.record if best is not None else None
    selected = model_selection.describe(record, len(schedule),
                                        config.eval.every_passes)
    params = best.restore(state).params if record else state.params
  finally:
    checkpointer.close()
    if best is not None:
      best.close()

  evaluator = evaluators.get('test', evaluators.get('validation'))
  if evaluator.name != 'test':
    logging.warning('The dataset has no test queries (config.dataset.'
                    'num_query = 0 and no fixed split): the final report is '
                    'of the validation split, which selected the checkpoint.')
  logging.info('Final evaluation of the %s checkpoint: %s',
               selected['checkpoint'], selected['why'])
  results = evaluation_hooks.final_evaluation(
      evaluator, params, config, workdir,
      metadata={'method': config.method, 'dataset': config.dataset.name,
                'step': int(state.step), 'passes': len(schedule),
                'split_sha256': splits.checksum(split),
                'query_set': evaluator.name,
                'selected_checkpoint': selected,
                'relevance': 'shares at least one label'})
  results['selected_checkpoint'] = selected
  # The table itself is the caller's to print (main prints it once).
  logging.debug('Evaluation written to %s; headline mAP@all: %s',
                os.path.join(workdir, 'eval'), results['map'])
  return results


class _Loop:
  """The pass loop: hooks, passes, checks, records, checkpoints, evaluation.

  Attributes:
    stopped_at: the pass at which `run` stopped early (stop_after_passes).
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               schedule: list, num_batches: int,
               checkpointer: checkpointing.Checkpointer,
               meta: Callable[[int], dict[str, Any]], *, stream: bool,
               best: model_selection.BestCheckpoint | None = None):
    """The loop of a run.

    Args:
      config: the run config.
      workdir: metrics.jsonl goes there.
      schedule: `flat_schedule`'s passes.
      num_batches: batches per pass.
      checkpointer: saves after passes (closed by the caller).
      meta: the checkpoint metadata after a number of passes.
      stream: the pass function advances the bar batch by batch.
      best: keeps the best state by periodic (validation) evaluation.
    """
    self.config = config
    self.workdir = workdir
    self.schedule = schedule
    self.num_batches = num_batches
    self.checkpointer = checkpointer
    self.meta = meta
    self.stream = stream
    self.best = best
    self.stopped_at = None
    self.bar = None
    self.postfix: dict[str, Any] = {}

  def run(self, state, begin_fns, run_pass_fn, device_data, evaluator, *,
          start_pass: int, stop_after_passes: int | None):
    """Runs passes start_pass.. of the schedule; None if stopped early.

    `run_pass_fn(state, pass_index, network, lr, on_batch)` -> (state, mean
    metrics, finite) runs one pass of either placement.
    """
    config, num_batches = self.config, self.num_batches
    self.bar = logging_utils.ProgressBar(
        total=len(self.schedule) * num_batches,
        initial=start_pass * num_batches,
        desc=f'{config.method} {config.bits} bits', unit='step',
        disable=not config.train.progress)
    writer = logging_utils.MetricsWriter(
        os.path.join(self.workdir, 'metrics.jsonl'), resume_pass=start_pass,
        tensorboard_dir=(os.path.join(self.workdir, 'tensorboard')
                         if config.train.tensorboard else None))
    try:
      for p in range(start_pass, len(self.schedule)):
        if stop_after_passes is not None and (
            p - start_pass >= stop_after_passes):
          self.stopped_at = p
          return None
        state = self._pass(p, state, begin_fns, run_pass_fn, device_data,
                           writer)
        if self.checkpointer.due(p + 1, final=p + 1 == len(self.schedule)):
          self.checkpointer.save(p + 1, state, self.meta(p + 1))
        if _is_eval_pass(config, p):
          self._periodic_eval(p, state, evaluator, writer)
      return state
    finally:
      self.bar.close()
      writer.close()

  def _pass(self, p, state, begin_fns, run_pass_fn, device_data, writer):
    """Pass p with its begin hook; checked, recorded and shown."""
    epoch, network, lr, begin = self.schedule[p]
    tic = time.perf_counter()
    if begin is not None:
      state = begin_fns[begin](state, device_data)
    state, metrics, finite = run_pass_fn(state, p, network, lr,
                                         on_batch=lambda: self.bar.update(1))
    seconds = time.perf_counter() - tic
    if not finite:
      self._raise_non_finite(p, network, epoch, metrics)
    writer.write({'pass': p, 'epoch': epoch, 'network': network,
                  'step': int(state.step), 'seconds': seconds,
                  'items_per_second': self.num_batches *
                                      self.config.train.batch_size / seconds,
                  'learning_rate': np.asarray(lr).tolist(), **metrics})
    self.postfix.update(net=network, loss=f'{metrics["loss"]:.4f}')
    self.bar.update(0 if self.stream else self.num_batches, **self.postfix)
    return state

  def _periodic_eval(self, p, state, evaluator, writer):
    """mAP@all of the current params; the state is only read (and, for
    model selection, saved as the best if it is)."""
    maps, codes = evaluation_hooks.periodic_evaluation(
        evaluator, state.params, self.config.eval)
    record = evaluation_hooks.map_record(p, int(state.step), maps, codes)
    record['query_set'] = evaluator.name
    if self.best is not None:
      record['best'] = self.best.update(p + 1, state, maps, self.meta(p + 1))
    writer.write(record)
    self.postfix.update({f'map_{d}': f'{v:.3f}' for d, v in maps.items()
                         if d in ('i2t', 't2i')})
    self.bar.update(0, **self.postfix)
    logging.info('Pass %d: mAP@all %s', p,
                 ', '.join(f'{d} {v:.4f}' for d, v in maps.items()))

  def _raise_non_finite(self, p, network, epoch, metrics):
    self.checkpointer.wait()
    last = self.checkpointer.latest_step()
    raise NonFiniteError(
        f'Pass {p} ({network}, epoch {epoch}) produced NaN/Inf: {metrics}. '
        f'The last good checkpoint '
        f'({"none" if last is None else f"pass {last}"}, in '
        f'{self.checkpointer.directory}) is kept. Lower the learning rates or '
        'use config.model.compute_dtype=float32.')


registry.TRAINERS.register('alternating')(train_and_evaluate)
