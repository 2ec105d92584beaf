"""The per-step trainer family: every update of the method on every batch.

For adversarial methods trained step by step (SCAHN): per batch, one
generator step and then one discriminator step, inside ONE jitted call. The
method (methods/base.py, `trainer = 'per_step'`) gives:
  * `updates`: {name: update(state, batch, data, step) -> (state, metrics)},
    run in their order on each batch (e.g. 'generator', then
    'discriminator'); `step` is a `base.Step` with the update's own PRNG key
    (dropout) and no learning rate: rates are optax schedules inside the
    method's chains (`base.make_optimizer`: warm-up, decay, global-norm
    clipping), counted by their optimizer states;
  * `inputs`: {name: data fields the update reads}; a batch holds the union;
  * `num_steps`: the run's length in batches.
Everything else is the harness's (trainers/harness.py): data, split, mesh,
checkpoints, model selection, evaluators.

Batches: step s is batch s mod N of pass s div N (N batches per pass), whose
order is `streaming.pass_permutation(state.rng, pass)`, as in the
alternating family. A checkpoint after step s saves s + 1 as the position, so
a run killed anywhere resumes exactly from its last checkpoint (the state
holds the optimizer counts that drive the schedules, the memories, queues,
and mutable collections). Config:
  train.checkpoint_every_steps  a checkpoint every that many steps (and at
                                the end; `checkpoint_every_seconds` apart);
  train.log_every_steps         one metrics.jsonl record per that many steps
                                (their mean), with a NaN/Inf check;
  eval.every_steps              mAP@all of the validation (else test)
                                queries every that many steps (0: none); with
                                a validation split it selects the checkpoint.
Placement 'device' gathers batches from the resident training set inside the
jitted step; 'stream' reads the fields the updates declare (the host ones,
e.g. 'image') batch by batch through the grain pipeline.

A method with `source_inputs` (MHTN) also gets a source-domain batch in every
step, gathered on the devices under either placement: 'source_image',
'source_label', 'source_index' (trainers/source_domain.py); the source
arrays travel in `data` under the same prefix.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from crossmodal_hash import logging_utils
from crossmodal_hash import sharding
from crossmodal_hash.methods import base
from crossmodal_hash.trainers import harness
from crossmodal_hash.trainers import registry
from crossmodal_hash.trainers import source_domain
from crossmodal_hash.trainers import streaming


def update_keys(rng: jax.Array, step_index: jax.Array,
                num_updates: int) -> jax.Array:
  """[num_updates, 2] PRNG keys of step `step_index`'s updates (dropout)."""
  return jax.random.split(base.step_key(rng, step_index), num_updates)


def run_updates(method: base.Method, state: base.TrainState,
                batch: base.Batch, data: base.Batch, step_index: jax.Array
               ) -> tuple[base.TrainState, base.Metrics]:
  """Every update of `method` on `batch`, in order.

  Returns:
    (state, metrics): each update's metrics as '<update>/<name>' and 'loss',
    the sum of their losses.
  """
  keys = update_keys(state.rng, step_index, len(method.updates))
  metrics = {}
  loss = jnp.zeros((), jnp.float32)
  for key, (name, update) in zip(keys, method.updates.items()):
    state, m = update(state, batch, data, base.Step(rng=key))
    metrics.update({f'{name}/{k}': v for k, v in m.items()})
    loss = loss + m['loss']
  return state, {'loss': loss, **metrics}


def source_data(source: source_domain.SourceDomain | None
               ) -> dict[str, jax.Array]:
  """The source's resident arrays, prefixed, for the steps' `data`."""
  if source is None:
    return {}
  return {source_domain.PREFIX + k: v for k, v in source.arrays.items()}


def add_source_batch(batch: base.Batch, data: base.Batch,
                     source: source_domain.SourceDomain | None,
                     rng: jax.Array, step_index: jax.Array,
                     batch_spec: jax.sharding.NamedSharding) -> base.Batch:
  """`batch` plus step `step_index`'s source batch (none without a source),
  gathered from the prefixed source arrays in `data` (jit-able)."""
  if source is None:
    return batch
  prefix = source_domain.PREFIX
  arrays = {k[len(prefix):]: v for k, v in data.items()
            if k.startswith(prefix)}
  rows = harness.gather_batch(arrays, source.rows(rng, step_index),
                              batch_spec, source.fields)
  return {**batch, **{prefix + k: v for k, v in rows.items()}}


def make_device_step(method: base.Method, *, batch_size: int,
                     num_batches: int, mesh: jax.sharding.Mesh,
                     trace_guard: Callable[[Callable], Callable] | None = None,
                     source: source_domain.SourceDomain | None = None,
                     state_sharding: Any = None, data_sharding: Any = None):
  """jit(state, data, step_index) -> (state, metrics, finite), data resident.

  The batch of step s is gathered from `data` inside the call (its fields
  `base.batch_fields(method)`, and the source batch with a `source`, whose
  arrays `data` holds, `source_data`); `state` is donated; compiles once.
  The state and `data` keep their placements (`state_sharding`,
  `data_sharding`; None: replicated).
  """
  batch_spec = sharding.batch_sharded(mesh)
  replicated = sharding.replicated(mesh)
  state_sharding, data_sharding = sharding.or_replicated(
      mesh, state_sharding, data_sharding)
  fields = base.batch_fields(method)

  def step(state, data, step_index):
    order = harness.pass_order(state.rng, data, step_index // num_batches,
                               step_index % num_batches, num_steps=1,
                               batch_size=batch_size)
    batch = harness.gather_batch(data, order, batch_spec, fields)
    batch = add_source_batch(batch, data, source, state.rng, step_index,
                             batch_spec)
    state, metrics = run_updates(method, state, batch, data, step_index)
    return state, metrics, base.tree_all_finite(
        (metrics, state.params, state.memory))

  return jax.jit(trace_guard(step) if trace_guard else step,
                 in_shardings=(state_sharding, data_sharding, replicated),
                 out_shardings=(state_sharding, replicated, replicated),
                 donate_argnums=0)


def make_streamed_step(method: base.Method, mesh: jax.sharding.Mesh,
                       trace_guard: Callable[[Callable], Callable] | None = None,
                       source: source_domain.SourceDomain | None = None,
                       *, state_sharding: Any = None,
                       data_sharding: Any = None):
  """jit(state, batch, data, step_index) -> (state, metrics, finite) for a
  batch read by the pipeline (`streaming.complete_batch` adds the resident
  fields, `add_source_batch` the source's); `state` is donated; placements
  as `make_device_step`'s."""
  batch_spec = sharding.batch_sharded(mesh)
  replicated = sharding.replicated(mesh)
  state_sharding, data_sharding = sharding.or_replicated(
      mesh, state_sharding, data_sharding)
  fields = base.batch_fields(method)

  def step(state, batch, data, step_index):
    batch = streaming.complete_batch(batch, data, batch_spec, fields)
    batch = add_source_batch(batch, data, source, state.rng, step_index,
                             batch_spec)
    state, metrics = run_updates(method, state, batch, data, step_index)
    return state, metrics, base.tree_all_finite(
        (metrics, state.params, state.memory))

  return jax.jit(trace_guard(step) if trace_guard else step,
                 in_shardings=(state_sharding, batch_spec, data_sharding,
                               replicated),
                 out_shardings=(state_sharding, replicated, replicated),
                 donate_argnums=0)


def _device_steps(run: harness.Run, start: int, total: int,
                  state_sharding: Any):
  """Yields step(state) -> (state, metrics, finite) for steps start..total-1."""
  data = {**run.device_data, **source_data(run.source)}
  fn = make_device_step(run.method, batch_size=run.config.train.batch_size,
                        num_batches=run.num_batches, mesh=run.mesh,
                        source=run.source, state_sharding=state_sharding,
                        data_sharding=sharding.shardings_of(data))
  for s in range(start, total):
    yield s, lambda state, s=s: fn(state, data, jnp.int32(s))


def _streamed_steps(run: harness.Run, start: int, total: int,
                    state_rng: Callable[[], jax.Array], state_sharding: Any):
  """As `_device_steps`, reading each pass's batches through the pipeline."""
  data = {**run.device_data, **source_data(run.source)}
  fn = make_streamed_step(run.method, run.mesh, source=run.source,
                          state_sharding=state_sharding,
                          data_sharding=sharding.shardings_of(data))
  passes = streaming.StreamedPasses(
      run.method, run.train, run.device_data, run.mesh,
      batch_size=run.config.train.batch_size,
      options=streaming.stream_options(run.config), compile_steps=False)
  s = start
  while s < total:
    p, first = divmod(s, run.num_batches)
    iterator = passes.loader(state_rng(), p, start=first).global_iterator(
        run.mesh)
    try:
      for batch in iterator:
        if s >= total:
          break
        yield s, lambda state, s=s, batch=batch: fn(state, batch, data,
                                                     jnp.int32(s))
        s += 1
    finally:
      iterator.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_after_steps: int | None = None
                      ) -> dict[str, Any]:
  """Trains `config.method` step by step, resuming from `workdir`; evaluates.

  Args:
    config: a locked run config (see configs/ and the module docstring).
    workdir: where checkpoints, metrics.jsonl, split.npz and eval/ go.
    stop_after_steps: stop (without saving) once this invocation has run that
      many steps, like a preempted job; for tests of exact resumption.

  Returns:
    The evaluation results (`evaluation_hooks.final_evaluation`), or
    {'stopped_at_step': s} when stopped early.
  """
  every = int(config.eval.every_steps)
  run = harness.Run.open(config, workdir,
                         checkpoint_every=config.train.checkpoint_every_steps,
                         eval_every=every)
  try:
    total = int(run.method.num_steps)
    if total < 1:
      raise ValueError(f'{config.method}: num_steps={total} must be >= 1.')
    state, start = run.init_or_restore('step_index', batches_per_unit=1)
    holder = {'state': state}
    state_sharding = sharding.shardings_of(state)
    if run.placement == 'device':
      steps = _device_steps(run, start, total, state_sharding)
    else:
      steps = _streamed_steps(run, start, total, lambda: holder['state'].rng,
                              state_sharding)
    state = _loop(run, holder, steps, start=start, total=total,
                  stop_after_steps=stop_after_steps)
  except BaseException:
    run.close()
    raise
  if state is None:
    run.close()
    return {'stopped_at_step': holder['stopped_at']}
  return run.finish(state, total=total, unit='steps', eval_every=every)


def _loop(run: harness.Run, holder: dict[str, Any], steps, *, start: int,
          total: int, stop_after_steps: int | None):
  """Runs `steps`; records, checks, checkpoints, evaluates. None if stopped."""
  config = run.config
  log_every = int(config.train.log_every_steps)
  bar = logging_utils.ProgressBar(
      total=total, initial=start, desc=f'{config.method} {config.bits} bits',
      unit='step', disable=not config.train.progress)
  writer = run.metrics_writer(start, resume_key='step_index')
  meta = lambda done: run.checkpoint_meta(
      'step_index', done, total_key='num_steps', total=total,
      batches_per_unit=1)
  pending, tic = [], time.perf_counter()
  state = holder['state']
  try:
    for s, step in steps:
      if stop_after_steps is not None and s - start >= stop_after_steps:
        holder['stopped_at'] = s
        return None
      state, metrics, finite = step(state)
      holder['state'] = state
      pending.append((metrics, finite))
      bar.update(1)
      done = s + 1
      save = run.checkpointer.due(done, final=done == total)
      evaluate = every_due(config.eval.every_steps, done)
      if save or evaluate or done % log_every == 0 or done == total:
        mean, all_finite = streaming.mean_results(pending)
        seconds = time.perf_counter() - tic
        if not all_finite:
          run.raise_non_finite(f'Steps {done - len(pending)}..{s}', mean,
                               unit='step')
        writer.write({'step_index': s, 'epoch': s // run.num_batches, 'step': int(state.step),
                      'seconds': seconds, 'items_per_second': len(pending) *
                      config.train.batch_size / seconds, **mean})
        bar.update(0, loss=f'{mean["loss"]:.4f}')
        pending, tic = [], time.perf_counter()
      if save:
        run.checkpointer.save(done, state, meta(done))
      if evaluate:
        for record in run.periodic_eval(state, {'step_index': s}, done,
                                        lambda: meta(done)):
          writer.write(record)
    return state
  finally:
    steps.close()  # Closes a streamed pass's pipeline iterator.
    bar.close()
    writer.close()


def every_due(every: int, done: int) -> bool:
  """Whether an every-`every` event (0: never) falls after `done` units."""
  return every > 0 and done % every == 0


def add_defaults(config: ml_collections.ConfigDict, *,
                 checkpoint_every_steps: int, log_every_steps: int = 50,
                 eval_every_steps: int = 0) -> ml_collections.ConfigDict:
  """The per-step family's keys, on a config with `add_run_defaults`'s."""
  config.train.checkpoint_every_steps = checkpoint_every_steps
  config.train.log_every_steps = log_every_steps
  config.eval.every_steps = eval_every_steps
  return config


registry.TRAINERS.register('per_step')(train_and_evaluate)
