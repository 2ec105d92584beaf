"""The trainer of methods that alternate whole per-network passes.

SSAH (LabNet, discriminator, ImgNet, TxtNet passes), DCMH (image-net and
text-net passes around a shared binary matrix) and DSMHN (joint passes of both
streams) all run here: a method contributes its networks, losses, `updates`
and `schedule(epoch)` of Phases (see methods/base.py); this module owns the
rest. Hyper-parameters of method M live in `config.M`, whose `num_epochs` is
the number of outer epochs.

One run, start to end:
  1. load the dataset by name, draw (or reload) the seeded split;
  2. build the mesh, check the batch sizes and any checkpoint in the workdir
     (an incompatible one stops the run before anything is written);
  3. initialise or restore the state (params, optimizer states, memories, RNG)
     and the data position, the index of the next pass of the schedule;
  4. run the schedule: before a phase's first pass, its `begin` hook if it
     names one (one jitted call over the device-resident training set); each
     pass is one jitted call that scans over every batch of a fresh
     permutation of the training set (data resident on the devices, batches
     split over the mesh's `data` axis, the state donated);
  5. after each pass: NaN/Inf check, JSON-lines metrics, progress, checkpoint;
  6. encode the query and retrieval sets, evaluate mAP@all in four directions,
     print the table and write JSON, codes and plots to `<workdir>/eval`.

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
from jax.experimental import multihost_utils

from crossmodal_hash import checkpointing
from crossmodal_hash import config_utils
from crossmodal_hash import logging_utils
from crossmodal_hash import sharding
from crossmodal_hash.data import preprocess
from crossmodal_hash.data import registry as data_registry
from crossmodal_hash.data import splits
from crossmodal_hash.data import types
from crossmodal_hash.evaluation import metrics as metrics_lib
from crossmodal_hash.evaluation import plots
from crossmodal_hash.evaluation import report
from crossmodal_hash.methods import base
from crossmodal_hash.methods import registry as method_registry
from crossmodal_hash.trainers import registry


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint of a different configuration."""


class NonFiniteError(FloatingPointError):
  """A pass produced NaN or Inf losses or parameters."""


def _load_data(config: ml_collections.ConfigDict, workdir: str
              ) -> tuple[types.MultiModalData, types.Split]:
  """The dataset and its split; the split is reused from the workdir if there."""
  data = data_registry.DATASETS.get(config.dataset.name)(config.dataset)
  split = splits.random_split(len(data), config.dataset.num_query,
                              config.dataset.num_train,
                              config.dataset.split_seed)
  path = os.path.join(workdir, 'split.npz')
  if os.path.exists(path):
    saved = splits.load(path)
    if splits.checksum(saved) != splits.checksum(split):
      raise IncompatibleCheckpointError(
          f'{path} holds a different split than this config draws; use another '
          '--workdir. Nothing was overwritten.')
  return data, split


def _check_resumable(checkpointer: checkpointing.Checkpointer,
                     config: ml_collections.ConfigDict) -> dict | None:
  """The latest checkpoint's metadata, if compatible with `config`."""
  step = checkpointer.latest_step()
  if step is None:
    return None
  meta = checkpointer.read_meta(step)
  different = config_utils.incompatible_keys(meta.get('config', {}), config)
  if different:
    saved = config_utils.flatten(meta.get('config', {}))
    ours = config_utils.flatten(config_utils.to_json_dict(config))
    lines = [f'  {k}: checkpoint {saved.get(k, "<absent>")!r}, '
             f'config {ours.get(k, "<absent>")!r}' for k in different[:10]]
    raise IncompatibleCheckpointError(
        f'{checkpointer.directory} holds checkpoint {step} of an incompatible '
        'config:\n' + '\n'.join(lines) +
        '\nUse another --workdir, or the same config. Nothing was overwritten.')
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
  num_items = data['label'].shape[0]
  order = jax.random.permutation(jax.random.fold_in(rng, pass_index),
                                 num_items)
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
  metrics, finite = zip(*jax.device_get(results))
  mean = {k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}
  return state, mean, bool(np.all(finite))


def encode(method: base.Method, params: Any, modality: str,
           inputs: np.ndarray, *, batch_size: int, mesh: jax.sharding.Mesh,
           image_stats: tuple[np.ndarray, np.ndarray] | None = None
          ) -> np.ndarray:
  """Codes of every row of `inputs`, in batches split over the mesh.

  Args:
    method: the trained method.
    params: its params (replicated).
    modality: 'img', 'txt' or 'lab'.
    inputs: [N, ...] host array (raw pixels/features for 'img').
    batch_size: global batch; the last one is padded and the padding dropped.
    mesh: the mesh.
    image_stats: (mean, inv_scale) for 'img'.

  Returns:
    [N, K] int8 codes in {-1, +1}.
  """

  def encode_batch(params, x):
    if modality == 'img':
      x = preprocess.normalize(x, *image_stats)
    return method.encode(params, modality, x)

  fn = jax.jit(encode_batch,
               in_shardings=(sharding.replicated(mesh),
                             sharding.batch_sharded(mesh)),
               out_shardings=sharding.batch_sharded(mesh))
  processes, me = jax.process_count(), jax.process_index()
  local = batch_size // processes
  out = []
  for start in range(0, len(inputs), batch_size):
    chunk = inputs[start:start + batch_size]
    padded = np.concatenate(
        [chunk, np.zeros((batch_size - len(chunk),) + chunk.shape[1:],
                         chunk.dtype)]) if len(chunk) < batch_size else chunk
    x = sharding.host_to_global(padded[me * local:(me + 1) * local], mesh)
    codes = multihost_utils.process_allgather(fn(params, x), tiled=True)
    out.append(np.asarray(codes)[:len(chunk)])
  return np.concatenate(out).astype(np.int8)


def evaluate(method: base.Method, state: base.TrainState,
             data: types.MultiModalData, split: types.Split,
             config: ml_collections.ConfigDict, workdir: str,
             mesh: jax.sharding.Mesh,
             image_stats: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
  """Encodes query and retrieval sets; writes the mAP table, JSON, codes, plots.

  Returns:
    {'map': {direction: mAP}, 'random_map': {...} (if configured), 'table': str}
  """
  query, db = data.take(split.query), data.take(split.retrieval)
  kw = dict(batch_size=config.eval.batch_size, mesh=mesh)
  codes = {
      'image_query': encode(method, state.params, 'img', query.images,
                            image_stats=image_stats, **kw),
      'text_query': encode(method, state.params, 'txt', query.texts, **kw),
      'image_db': encode(method, state.params, 'img', db.images,
                         image_stats=image_stats, **kw),
      'text_db': encode(method, state.params, 'txt', db.texts, **kw),
  }
  name = f'{config.method.upper()} ({config.bits} bits)'
  rows = {name: metrics_lib.cross_modal_map(codes, query.labels, db.labels)}
  results = {'map': rows[name], 'bits': config.bits,
             'num_query': len(split.query), 'num_retrieval': len(split.retrieval),
             'relevance': 'shares at least one label',
             'ties': 'database index order',
             'no_relevant_item': 'AP counted as 0'}
  if config.eval.random_baseline:
    rng = np.random.default_rng(config.seed)
    random_codes = {k: np.where(rng.standard_normal(v.shape) >= 0, 1,
                                -1).astype(np.int8) for k, v in codes.items()}
    random_name = f'random codes ({config.bits} bits)'
    rows[random_name] = metrics_lib.cross_modal_map(random_codes, query.labels,
                                                    db.labels)
    results['random_map'] = rows[random_name]
  table = report.format_map_table(rows)
  results['table'] = table
  if jax.process_index() == 0:
    out = os.path.join(workdir, 'eval')
    os.makedirs(out, exist_ok=True)
    report.write_json(os.path.join(out, 'map.json'), results)
    report.save_codes(os.path.join(out, 'codes.npz'),
                      query_labels=query.labels, retrieval_labels=db.labels,
                      **codes)
    if config.eval.plots:
      plots.plot_map_bars(rows, os.path.join(out, 'map.png'))
      plots.plot_training_curves(os.path.join(workdir, 'metrics.jsonl'),
                                 os.path.join(out, 'training_curves.png'))
      plots.plot_precision_at_radius(codes, query.labels, db.labels,
                                     os.path.join(out, 'precision_radius.png'))
  return results


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
    The evaluation results (see `evaluate`), or {'stopped_at_pass': p} when
    stopped early.
  """
  data, split = _load_data(config, workdir)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_size(config.train.batch_size, mesh)
  sharding.check_batch_size(config.eval.batch_size, mesh,
                            'config.eval.batch_size')
  if config.dataset.num_train < config.train.batch_size:
    raise ValueError(f'config.dataset.num_train={config.dataset.num_train} is '
                     'smaller than config.train.batch_size='
                     f'{config.train.batch_size}.')
  checkpointer = checkpointing.Checkpointer(workdir,
                                            config.train.max_checkpoints)
  meta = _check_resumable(checkpointer, config)

  train = data.take(split.train)
  image_stats = preprocess.image_statistics(train.images,
                                            config.model.image_normalization)
  device_data = sharding.put_replicated(
      {'image': train.images, 'text': train.texts, 'label': train.labels,
       'image_mean': image_stats[0], 'image_inv_scale': image_stats[1]}, mesh)

  method = method_registry.METHODS.get(config.method)(
      config, num_labels=data.num_labels, text_dim=data.text_dim)
  replicated = sharding.replicated(mesh)
  state = jax.jit(method.init, out_shardings=replicated)(
      jax.random.PRNGKey(config.seed), device_data)
  start_pass = 0
  if meta is not None:
    state, meta = checkpointer.restore(checkpointer.latest_step(),
                                       checkpointing.abstract_like(state))
    start_pass = int(meta['pass_index'])
    logging.info('Resumed from %s at pass %d (step %d).',
                 checkpointer.directory, start_pass, int(state.step))
  elif jax.process_index() == 0:
    splits.save(os.path.join(workdir, 'split.npz'), split)

  schedule = flat_schedule(method, num_epochs(config))
  begin_fns = make_begin_fns(method, mesh)
  num_batches = len(split.train) // config.train.batch_size
  num_steps = batches_per_call(config.train.batches_per_call, num_batches)
  steps_fns = {
      network: make_steps_fn(method, network, num_steps=num_steps,
                             batch_size=config.train.batch_size, mesh=mesh)
      for network in method.updates
  }
  writer = logging_utils.MetricsWriter(os.path.join(workdir, 'metrics.jsonl'))
  bar = logging_utils.ProgressBar(
      total=len(schedule) * num_batches, initial=start_pass * num_batches,
      desc=f'{config.method} {config.bits} bits', unit='step',
      disable=not config.train.progress)
  pass_meta = lambda p: {'pass_index': p, 'num_passes': len(schedule),
                         'config': config_utils.to_json_dict(config),
                         'split_sha256': splits.checksum(split)}
  passes_run = 0
  try:
    for p in range(start_pass, len(schedule)):
      if stop_after_passes is not None and passes_run >= stop_after_passes:
        return {'stopped_at_pass': p}
      epoch, network, lr, begin = schedule[p]
      tic = time.perf_counter()
      if begin is not None:
        state = begin_fns[begin](state, device_data)
      state, metrics, finite = run_pass(
          steps_fns[network], state, device_data, pass_index=p,
          num_batches=num_batches, num_steps=num_steps, learning_rate=lr)
      seconds = time.perf_counter() - tic
      passes_run += 1
      if not finite:
        checkpointer.wait()
        last = checkpointer.latest_step()
        raise NonFiniteError(
            f'Pass {p} ({network}, epoch {epoch}) produced NaN/Inf: '
            f'{metrics}. The last good '
            f'checkpoint ({"none" if last is None else f"pass {last}"}, in '
            f'{checkpointer.directory}) is kept. Lower the learning rates or '
            'use config.model.compute_dtype=float32.')
      record = {'pass': p, 'epoch': epoch, 'network': network,
                'step': int(state.step), 'seconds': seconds,
                'items_per_second': num_batches * config.train.batch_size /
                                    seconds,
                'learning_rate': np.asarray(lr).tolist(),
                **metrics}
      writer.write(record)
      bar.update(num_batches, net=network, loss=f'{record["loss"]:.4f}')
      if (p + 1) % config.train.checkpoint_every_passes == 0 or (
          p + 1 == len(schedule)):
        checkpointer.save(p + 1, state, pass_meta(p + 1))
  finally:
    bar.close()
    writer.close()
    checkpointer.close()

  results = evaluate(method, state, data, split, config, workdir, mesh,
                     image_stats)
  logging.info('mAP@all:\n%s', results['table'])
  return results


registry.TRAINERS.register('alternating')(train_and_evaluate)
