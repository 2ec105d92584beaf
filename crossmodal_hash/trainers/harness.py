"""What every trainer family shares: data, split, mesh, checkpoints, evaluation.

A family (trainers/alternating.py: whole per-network passes; trainers/
per_step.py: a generator and a discriminator step per batch) owns its loop
only. Everything around the loop is here:

  1. `Run.open` loads the dataset by name and draws its protocol's split
     (`data.protocols.split_for_run`), builds the mesh and checks the batch
     sizes, checks any checkpoint in the workdir against the config (keys the
     method lists in `resumable_keys` may change) and the split, places the
     training set ('device' or 'stream', trainers/streaming.py; per-item
     arrays split by rows over `data`, `resident_axes`), builds the method
     from the registry, and the evaluators of the split;
  2. `Run.init_or_restore` gives a fresh state (with the method's
     pretrained weights, `init_pretrained`) or the latest checkpoint's, with
     the saved position (pass or step) of the family, placed by
     `state_sharding` (item-indexed memories split over `data`);
  3. `Run.checkpoint_meta`, `Run.periodic_eval`, `Run.raise_non_finite` and
     `Run.metrics_writer` serve the loop: checkpoints with the data position,
     the periodic evaluators of `config.evals` (trainers/evaluators.py) every
     N passes or steps, the best state by validation mAP kept in
     `<workdir>/best` (trainers/model_selection.py), NaN/Inf errors;
     a method with `source_inputs` also gets its source domain
     (`config.source_dataset`, trainers/source_domain.py), whose stream
     position is saved and checked beside the target's;
  4. `Run.finish` restores the selected params (best by validation, else the
     last) and runs the final evaluators of `config.evals`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from crossmodal_hash import checkpointing
from crossmodal_hash import config_utils
from crossmodal_hash import logging_utils
from crossmodal_hash import run_artifacts
from crossmodal_hash import sharding
from crossmodal_hash.data import preprocess
from crossmodal_hash.data import protocols
from crossmodal_hash.data import registry as data_registry
from crossmodal_hash.data import splits
from crossmodal_hash.data import types
from crossmodal_hash.evaluation import suite
from crossmodal_hash.methods import base
from crossmodal_hash.methods import registry as method_registry
from crossmodal_hash.models import layers
from crossmodal_hash.models import registry as models_registry
from crossmodal_hash.trainers import evaluation_hooks
from crossmodal_hash.trainers import evaluators as evaluators_lib
from crossmodal_hash.trainers import model_selection
from crossmodal_hash.trainers import source_domain
from crossmodal_hash.trainers import streaming


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint of a different configuration."""


class NonFiniteError(FloatingPointError):
  """A pass or step produced NaN or Inf losses or parameters."""


def load_data(config: ml_collections.ConfigDict, workdir: str
             ) -> tuple[types.MultiModalData, types.Split]:
  """The dataset and the run's split (see `data.protocols`).

  The dataset's fixed split (Wikipedia, a features file with split arrays) or
  a seeded random one of `config.dataset.num_query` / `num_train`; an existing
  `<workdir>/split.npz` must hold the same split (SplitMismatchError
  otherwise). Nothing is written here: the split is saved once the workdir's
  checkpoint has been checked.
  """
  data = data_registry.DATASETS.get(config.dataset.name)(config.dataset)
  split = protocols.split_for_run(data, config.dataset, workdir, write=False)
  return data, split


def check_resumable(checkpointer: checkpointing.Checkpointer,
                    config: ml_collections.ConfigDict, split: types.Split,
                    data_sha256: str) -> dict | None:
  """The latest checkpoint's metadata, if compatible with `config`, `split`.

  `dataset.path` may differ when the data's checksum is the same; the keys of
  `config_utils.resumable_keys` (the method's `resumable_keys` among them,
  e.g. 'ssah.num_epochs') may differ too.
  """
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


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a bad evaluation or placement setting, early."""
  config_utils.validate(config)  # Value ranges (main checks them first).
  suite.options_from_config(config.eval)  # Validates ties, empty, cutoffs.
  for key in ('every_passes', 'every_steps'):
    if config.eval.get(key, 0) < 0:
      raise ValueError(f'config.eval.{key}={config.eval[key]} must be >= 0 '
                       '(0: no periodic evaluation).')
  if config.train.data_placement not in streaming.PLACEMENTS:
    raise ValueError(f'config.train.data_placement='
                     f'{config.train.data_placement!r}; expected one of '
                     f'{streaming.PLACEMENTS}.')


def make_mesh(config: ml_collections.ConfigDict,
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


def check_images(config: ml_collections.ConfigDict,
                 data: types.MultiModalData, method: base.Method) -> None:
  """Refuses a dataset without an image side (`require_images=False`) for a
  method whose updates read images, naming the file."""
  if data.has_images or 'image' not in base.batch_fields(method):
    return
  source = config.dataset.get('path') or config.dataset.name
  raise ValueError(
      f'{source}: this dataset has no images (it was loaded with '
      f'dataset.require_images=False, texts and labels only), but '
      f'{config.method} trains on image-text pairs. Give the image side too '
      '(e.g. mirflickr25k-iall.mat beside the -yall and -lall files).')


def place_training_set(config: ml_collections.ConfigDict,
                       train: types.MultiModalData, mesh: jax.sharding.Mesh,
                       mean_image: np.ndarray | None
                      ) -> tuple[str, tuple[np.ndarray, np.ndarray],
                                 dict[str, jax.Array]]:
  """(placement, image statistics, the resident arrays on the devices).

  'device' puts 'image' [T, ...] there too; 'stream' only 'label', 'text' and
  the statistics (see `streaming.resident_arrays`). `mean_image` (of the
  image encoder's pretrained file, `models.registry.mean_image`) is what
  'pretrained_mean' normalisation subtracts. The per-item arrays are placed
  by `config.sharding.logical_axis_rules` (`resident_axes`: their T rows split
  over `data` by default), the image statistics replicated.
  """
  placement = streaming.choose_placement(config.train.data_placement,
                                         train.images,
                                         int(config.train.max_device_bytes))
  logging.info('Training data placement: %s (%d items, images %s).',
               placement, len(train), train.images.shape)
  if train.has_images:
    image_stats = preprocess.image_statistics(
        train.images, config.model.image_normalization,
        mean_image=mean_image)
  else:  # Texts and labels only (a method that reads no image).
    image_stats = (np.zeros(0, np.float32), np.ones(0, np.float32))
  arrays = streaming.resident_arrays(train, image_stats,
                                     with_images=placement == 'device')
  device_data = sharding.put_by_axes(arrays, resident_axes(arrays), mesh,
                                     sharding.rules_from_config(config))
  return placement, image_stats, device_data


def resident_axes(arrays: dict[str, Any]) -> dict[str, sharding.LogicalAxes]:
  """The logical axes of the resident arrays: ('items',) for every per-item
  [T, ...] field ('label', 'text', 'image', a dataset's extras), none for
  the image statistics."""
  return {name: () if name in streaming.IMAGE_STATS else (sharding.ITEMS,)
          for name in arrays}


def fresh_state(method: base.Method, seed: int, init_data: dict[str, Any],
                mesh: jax.sharding.Mesh, *, pretrained: bool = True,
                rules: sharding.Rules = sharding.LOGICAL_AXIS_RULES
               ) -> base.TrainState:
  """`method.init`'s state, placed by `state_sharding`; with `pretrained`,
  then the method's `init_pretrained` (weights from files its config names,
  e.g. a CNN-F trunk through models/registry.py)."""
  rng = jax.random.PRNGKey(seed)
  shardings = state_sharding(method, rng, init_data, mesh, rules)
  state = jax.jit(method.init, out_shardings=shardings)(rng, init_data)
  if pretrained and hasattr(method, 'init_pretrained'):
    state = state.replace(params=jax.device_put(
        method.init_pretrained(state.params), shardings.params))
  return state


def state_sharding(method: base.Method, rng: jax.Array,
                   init_data: dict[str, Any], mesh: jax.sharding.Mesh,
                   rules: sharding.Rules) -> Any:
  """The NamedShardings of `method.init(rng, init_data)`'s leaves: the
  memories by the method's `memory_axes` and `rules`, the wide layers'
  params and their optimizer states by their logical names
  (`models.layers`), the rest replicated (`sharding.state_shardings`);
  computed from shapes alone.

  The names are read from a trace of `method.init` within
  `layers.logical_boxes`, the one place params are boxed; a fresh function
  each call, so that trace is never taken from (or left in) the jit cache of
  the unboxed `method.init`.
  """
  with layers.logical_boxes():
    abstract = jax.eval_shape(lambda r, d: method.init(r, d), rng, init_data)
  return sharding.state_shardings(
      abstract, getattr(method, 'memory_axes', {}), mesh, rules)


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
                 batch_spec: jax.sharding.NamedSharding,
                 fields: tuple[str, ...] = base.ALL_FIELDS) -> base.Batch:
  """The batch of rows `index` ([B] int32) of the device-resident `data`.

  Args:
    data: the resident training arrays, [T, ...] each.
    index: [B] rows.
    batch_spec: the batch sharding.
    fields: the fields to gather (the updates' `inputs`); 'index' always.

  Returns:
    'index' [B] and each field's rows as stored, but 'image' [B, ...]
    normalised to float32 (only when read); every array split over the batch
    sharding.
  """
  index = jax.lax.with_sharding_constraint(index, batch_spec)
  batch = {'index': index}
  for field in fields:
    if field == 'image':
      batch['image'] = preprocess.normalize(
          data['image'][index], data['image_mean'], data['image_inv_scale'])
    elif field != 'index':
      batch[field] = data[field][index]
  return jax.lax.with_sharding_constraint(batch, batch_spec)


@dataclasses.dataclass
class Run:
  """One run's data, split, mesh, method, checkpoints and evaluators.

  Built by `Run.open`; `close` it (or use it as a context manager).

  Attributes:
    config, workdir: the run's.
    data, split, train: the dataset, its split, the training items.
    mesh: the device mesh.
    method: the method (`config.method` from the registry).
    checkpointer: `<workdir>/checkpoints`.
    meta: the latest checkpoint's metadata, None for a fresh run.
    data_sha256: checksum of the dataset's arrays.
    placement: 'device' or 'stream'.
    image_stats: the training images' (mean, inv_scale).
    device_data: the resident arrays (see `place_training_set`).
    evaluators: {'test', 'validation'}, the split's non-empty query sets.
    evals: `config.evals`' evaluators by name (trainers/evaluators.py).
    best: the best state by periodic validation mAP, or None.
    source: the source domain of a method with `source_inputs`, else None.
  """
  config: ml_collections.ConfigDict
  workdir: str
  data: types.MultiModalData
  split: types.Split
  train: types.MultiModalData
  mesh: jax.sharding.Mesh
  method: base.Method
  checkpointer: checkpointing.Checkpointer
  meta: dict[str, Any] | None
  data_sha256: str
  placement: str
  image_stats: tuple[np.ndarray, np.ndarray]
  device_data: dict[str, jax.Array]
  evaluators: dict[str, evaluation_hooks.Evaluator]
  evals: dict[str, Any]
  best: model_selection.BestCheckpoint | None = None
  source: source_domain.SourceDomain | None = None

  @classmethod
  def open(cls, config: ml_collections.ConfigDict, workdir: str, *,
           checkpoint_every: int, eval_every: int) -> 'Run':
    """Steps 1 of the module docstring; nothing is written but the split
    (fresh runs) and the run's artifacts (`run_artifacts`).

    Args:
      config: a locked run config.
      workdir: the run's directory.
      checkpoint_every: a checkpoint after every that many passes (steps).
      eval_every: periodic evaluation every that many passes (steps); with a
        validation split it also selects the best checkpoint. 0: none.
    """
    check_config(config)
    data, split = load_data(config, workdir)
    mesh = make_mesh(config, split)
    checkpointer = checkpointing.Checkpointer(
        workdir, config.train.max_checkpoints, every_passes=checkpoint_every,
        every_seconds=config.train.get('checkpoint_every_seconds', 0))
    try:
      method = method_registry.METHODS.get(config.method)(
          config, num_labels=data.num_labels, text_dim=data.text_dim)
      check_images(config, data, method)
      data_sha256 = splits.data_checksum(data)
      meta = check_resumable(checkpointer, config, split, data_sha256)
      train = data.take(split.train)
      # A pretrained file gives a fresh run its trunk (`init_or_restore`)
      # and any 'pretrained_mean' run its mean image; a resumed run without
      # that normalisation never reads it.
      if meta is None:
        models_registry.check_pretrained(config.model)
      mean_image = (models_registry.mean_image(config.model)
                    if config.model.image_normalization == 'pretrained_mean'
                    else None)
      placement, image_stats, device_data = place_training_set(
          config, train, mesh, mean_image)
      source = source_domain.SourceDomain.open(config, method, data, mesh,
                                               mean_image)
      checkpointer.unsaved_memories = getattr(method, 'unsaved_memories', ())
      evaluators = evaluation_hooks.Evaluator.for_split(
          split, method=method, data=data, mesh=mesh,
          batch_size=config.eval.batch_size, image_stats=image_stats)
      evals = evaluators_lib.from_config(config, method)
    except BaseException:
      checkpointer.close()
      raise
    run = cls(config=config, workdir=workdir, data=data, split=split,
              train=train, mesh=mesh, method=method, checkpointer=checkpointer,
              meta=meta, data_sha256=data_sha256, placement=placement,
              image_stats=image_stats, device_data=device_data,
              evaluators=evaluators, evals=evals, source=source)
    if 'validation' in evaluators and eval_every > 0 and run.has_periodic:
      run.best = model_selection.BestCheckpoint(
          workdir, unsaved_memories=checkpointer.unsaved_memories)
    if meta is None and jax.process_index() == 0:
      splits.reuse_or_save(os.path.join(workdir, 'split.npz'), split)
    if jax.process_index() == 0:  # What encoding needs (encode.py).
      run_artifacts.save(workdir, config, data, split, image_stats,
                         splits.checksum(split))
    return run

  def __enter__(self) -> 'Run':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    self.checkpointer.close()
    if self.best is not None:
      self.best.close()

  @property
  def num_batches(self) -> int:
    """Batches per pass over the training set (the last T mod B dropped)."""
    return len(self.split.train) // self.config.train.batch_size

  def init_data(self) -> dict[str, Any]:
    """What `method.init` reads: the resident arrays (and an image row),
    and the source's rows (`source_domain.init_rows`)."""
    data = (self.device_data if self.placement == 'device' else
            streaming.init_data(self.device_data, self.train.images))
    return {**data, **source_domain.init_rows(self.source)}

  def position(self, next_step: int) -> dict[str, Any]:
    """The data position after `next_step` batches (a whole pass or not)."""
    return streaming.iterator_state(
        self.split.train, self.config.train.batch_size,
        next_step // self.num_batches, self.placement,
        next_batch=next_step % self.num_batches)

  def init_or_restore(self, position_key: str, *, batches_per_unit: int
                     ) -> tuple[base.TrainState, int]:
    """(state, the position to continue from): fresh, or the checkpoint's.

    A fresh state is `fresh_state`'s (pretrained weights included); a
    resumed one has them in its checkpoint.

    Args:
      position_key: the metadata key of the family's position ('pass_index'
        or 'step_index').
      batches_per_unit: batches per unit of that position (a pass's, or 1).
    """
    state = fresh_state(self.method, self.config.seed, self.init_data(),
                        self.mesh, pretrained=self.meta is None,
                        rules=sharding.rules_from_config(self.config))
    if self.meta is None:
      return state, 0
    state, meta = self.checkpointer.restore(
        self.checkpointer.latest_step(), checkpointing.abstract_like(state))
    start = int(meta[position_key])
    streaming.check_iterator_state(meta.get('data_iterator'),
                                   self.position(start * batches_per_unit))
    if self.source is not None:
      self.source.check_position(meta.get('source_iterator'),
                                 start * batches_per_unit)
    logging.info('Resumed from %s at %s %d (step %d).',
                 self.checkpointer.directory, position_key, start,
                 int(state.step))
    return state, start

  def checkpoint_meta(self, position_key: str, position: int, *,
                      total_key: str, total: int,
                      batches_per_unit: int) -> dict[str, Any]:
    """The metadata saved with a checkpoint at `position` of `total`."""
    meta = {position_key: position, total_key: total,
            'config': config_utils.to_json_dict(self.config),
            'split_sha256': splits.checksum(self.split),
            'data_sha256': self.data_sha256,
            'data_iterator': self.position(position * batches_per_unit)}
    if self.source is not None:
      meta['source_iterator'] = self.source.position(
          position * batches_per_unit)
    return meta

  def metrics_writer(self, resume_at: int, resume_key: str = 'pass'
                    ) -> logging_utils.MetricsWriter:
    """metrics.jsonl (and TensorBoard with `config.train.tensorboard`),
    without the records at or after `resume_at` (of `resume_key`)."""
    return logging_utils.MetricsWriter(
        os.path.join(self.workdir, 'metrics.jsonl'), resume_pass=resume_at,
        resume_key=resume_key,
        tensorboard_dir=(os.path.join(self.workdir, 'tensorboard')
                         if self.config.train.tensorboard else None))

  @property
  def periodic_evaluator(self) -> evaluation_hooks.Evaluator:
    """Validation queries if the split has them, else the test queries."""
    return self.evaluators.get('validation', self.evaluators.get('test'))

  @property
  def has_periodic(self) -> bool:
    """Whether `config.evals` names any periodic evaluator."""
    return any(e.periodic for e in self.evals.values())

  def periodic_eval(self, state: base.TrainState, record: dict[str, Any],
                    done: int, meta: Callable[[], dict[str, Any]]
                   ) -> list[dict[str, Any]]:
    """The periodic evaluators of `config.evals`; the state is only read
    (and, for model selection, saved as the best if it is).

    Args:
      state: the current state.
      record: the metrics records' position entries (e.g. {'pass': p}).
      done: passes (steps) done, the best checkpoint's position.
      meta: the checkpoint metadata of that position.

    Returns:
      One metrics record per periodic evaluator: `record`, 'evaluator' and
      its entries, with model selection (by the first that reports mAPs)
      whether this is the best.
    """
    records, selected = [], False
    for name, evaluator in self.evals.items():
      if not evaluator.periodic:
        continue
      out = dict(evaluator(self, state))
      maps = out.pop('maps', None)
      out = {**record, **out, 'evaluator': name}
      if maps is not None and self.best is not None and not selected:
        out['best'] = self.best.update(done, state, maps, meta())
        selected = True
      if maps is not None:
        logging.info('%s %s: mAP@all %s', record, name,
                     ', '.join(f'{d} {v:.4f}' for d, v in maps.items()))
      records.append(out)
    return records

  def raise_non_finite(self, where: str, metrics: dict[str, Any],
                       unit: str = 'pass') -> None:
    """Raises NonFiniteError naming the last good checkpoint, numbered in
    `unit`s ('pass' or 'step')."""
    self.checkpointer.wait()
    last = self.checkpointer.latest_step()
    raise NonFiniteError(
        f'{where} produced NaN/Inf: {metrics}. The last good checkpoint '
        f'({"none" if last is None else f"{unit} {last}"}, in '
        f'{self.checkpointer.directory}) is kept. Lower the learning rates or '
        'use config.model.compute_dtype=float32.')

  def finish(self, state: base.TrainState, *, total: int, unit: str,
             eval_every: int) -> dict[str, Any]:
    """The final evaluation of the selected params (closes the run).

    Args:
      state: the last state.
      total: passes (steps) of the run.
      unit: 'passes' or 'steps', for the metadata.
      eval_every: the periodic evaluation's interval (for the description).

    Returns:
      `evaluation_hooks.final_evaluation`'s results and
      'selected_checkpoint'.
    """
    try:
      record = self.best.record if self.best is not None else None
      selected = model_selection.describe(record, total, eval_every, unit)
      params = base.inference_params(self.best.restore(state) if record
                                     else state)
    finally:
      self.close()
    if 'test' not in self.evaluators:
      logging.warning('The dataset has no test queries (config.dataset.'
                      'num_query = 0 and no fixed split): the final report is '
                      'of the validation split, which selected the '
                      'checkpoint.')
    logging.info('Final evaluation of the %s checkpoint: %s',
                 selected['checkpoint'], selected['why'])
    metadata = {'method': self.config.method,
                'dataset': self.config.dataset.name,
                'step': int(state.step), unit: total,
                'split_sha256': splits.checksum(self.split),
                'selected_checkpoint': selected,
                'relevance': 'shares at least one label'}
    # A method's own statement of its run (e.g. SSAL: which adversary).
    if getattr(self.method, 'report', None):
      metadata[self.config.method] = dict(self.method.report)
    results = {}
    for evaluator in self.evals.values():
      if not evaluator.periodic:
        results.update(evaluator(self, params, metadata))
    results['selected_checkpoint'] = selected
    # The table itself is the caller's to print (main prints it once).
    logging.debug('Evaluation written to %s; headline mAP@all: %s',
                  os.path.join(self.workdir, 'eval'), results.get('map'))
    return results
