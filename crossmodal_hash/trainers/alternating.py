"""The trainer of methods that alternate whole per-network passes.

SSAH (LabNet, discriminator, ImgNet, TxtNet passes), DCMH (image-net and
text-net passes around a shared binary matrix) and DSMHN (joint passes of both
streams) all run here: a method contributes its networks, losses, `updates`
and `schedule(epoch)` of Phases (see methods/base.py); this module owns the
rest. Hyper-parameters of method M live in `config.M`, whose `num_epochs` is
the number of outer epochs.

One run, start to end (steps 1-4 and 6-7 are the harness's,
trainers/harness.py, shared with the per-step family):
  1. load the dataset by name and draw its protocol's split, checked against
     `<workdir>/split.npz` if there;
  2. build the mesh, check the batch sizes and any checkpoint in the workdir
     (an incompatible one, or another split, stops the run before anything is
     written); a fresh run then saves its split with its checksum;
  3. place the training set (`config.train.data_placement`): 'device' puts
     it on the devices; 'stream' keeps only the resident fields there and
     reads images batch by batch (trainers/streaming.py), only in the passes
     whose update declares them (`Method.inputs`); the resident arrays and
     the method's item-indexed memories (`Method.memory_axes`) are split by
     rows over the mesh's `data` axis (`config.sharding.logical_axis_rules`,
     sharding.py), and every jitted call keeps those placements;
  4. initialise (with the method's pretrained weights) or restore the state
     and the data position, the index of the next pass of the schedule;
  5. run the schedule (this module): before a phase's first pass, its `begin`
     hook if it names one (one jitted call over the resident arrays); pass p
     visits the training set in the order of the permutation
     `fold_in(state.rng, p)`: with 'device' placement as jitted calls that
     each scan over `batches_per_call` batches gathered on the devices, with
     'stream' one jitted step per batch from the grain pipeline (batches
     split over the mesh's `data` axis, the state donated, in both);
  6. after each pass: NaN/Inf check, JSON-lines metrics, progress, checkpoint
     (with the data position), and every `config.eval.every_passes` passes
     the periodic evaluators of `config.evals` (mAP@all of the validation
     queries, the best state kept in `<workdir>/best`);
  7. restore the selected params (the best by validation, else the last) and
     run the final evaluators of `config.evals` (the full report in
     `<workdir>/eval`).

The 'image' modality may be pixels [N, H, W, 3], features [N, D] or video
clips [N, T, H, W, 3]: batches are gathered and normalised over the last axis
the same way, and the method's image encoder decides what it accepts.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from crossmodal_hash import logging_utils
from crossmodal_hash import sharding
from crossmodal_hash.methods import base
from crossmodal_hash.trainers import harness
from crossmodal_hash.trainers import registry
from crossmodal_hash.trainers import streaming


# Raised by the harness; named here too, where callers have always found them.
IncompatibleCheckpointError = harness.IncompatibleCheckpointError
NonFiniteError = harness.NonFiniteError


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


def make_begin_fns(method: base.Method, mesh: jax.sharding.Mesh, *,
                   state_sharding: Any = None, data_sharding: Any = None
                  ) -> dict[str, Callable]:
  """The method's `begin` hooks, jitted: fn(state, data) -> state (donated).

  `state_sharding` and `data_sharding` are the placements of the state and
  the resident arrays (pytrees of NamedShardings, `harness.state_sharding`
  and the arrays' own); None: replicated.
  """
  state_sharding, data_sharding = sharding.or_replicated(
      mesh, state_sharding, data_sharding)
  return {name: jax.jit(fn, in_shardings=(state_sharding, data_sharding),
                        out_shardings=state_sharding, donate_argnums=0)
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


# The batches of both families (trainers/harness.py); named here too.
pass_order = harness.pass_order
gather_batch = harness.gather_batch


def make_steps_fn(method: base.Method, network: str, *, num_steps: int,
                  batch_size: int, mesh: jax.sharding.Mesh,
                  trace_guard: Callable[[Callable], Callable] | None = None,
                  state_sharding: Any = None, data_sharding: Any = None):
  """A jitted run of `num_steps` consecutive updates of `network`.

  The state and the resident arrays keep their placements
  (`state_sharding`, `data_sharding`; None: replicated): with item-sharded
  memories and arrays the [B, T] terms are computed where the T rows live.

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
  fields = base.batch_fields(method, network)
  batch_spec = sharding.batch_sharded(mesh)
  replicated = sharding.replicated(mesh)
  state_sharding, data_sharding = sharding.or_replicated(
      mesh, state_sharding, data_sharding)

  def run(state, data, pass_index, first_batch, learning_rate):
    order = pass_order(state.rng, data, pass_index, first_batch,
                       num_steps=num_steps, batch_size=batch_size)

    def step(state, index):
      return update(state, gather_batch(data, index, batch_spec, fields), data,
                    base.Step(rng=base.step_key(state.rng, state.step),
                              learning_rate=learning_rate))

    if num_steps == 1:  # A length-1 scan is still a loop to XLA:CPU.
      state, metrics = step(state, order)
    else:
      state, metrics = jax.lax.scan(step, state,
                                    order.reshape(num_steps, batch_size))
      metrics = jax.tree.map(jnp.mean, metrics)
    finite = base.tree_all_finite((metrics, state.params, state.memory))
    return state, metrics, finite

  return jax.jit(trace_guard(run) if trace_guard else run,
                 in_shardings=(state_sharding, data_sharding, replicated,
                               replicated, replicated),
                 out_shardings=(state_sharding, replicated, replicated),
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


def _device_passes(method: base.Method, device_data: dict[str, jax.Array],
                   mesh: jax.sharding.Mesh, *, num_batches: int,
                   batch_size: int, per_call: int, state_sharding: Any):
  """run(state, pass_index, network, lr, on_batch) over resident data."""
  num_steps = batches_per_call(per_call, num_batches)
  steps_fns = {
      network: make_steps_fn(method, network, num_steps=num_steps,
                             batch_size=batch_size, mesh=mesh,
                             state_sharding=state_sharding,
                             data_sharding=sharding.shardings_of(device_data))
      for network in method.updates
  }

  def run(state, pass_index, network, learning_rate, on_batch=None):
    del on_batch  # The bar advances by whole passes.
    return run_pass(steps_fns[network], state, device_data,
                    pass_index=pass_index, num_batches=num_batches,
                    num_steps=num_steps, learning_rate=learning_rate)

  return run


def _is_eval_pass(config: ml_collections.ConfigDict, pass_index: int) -> bool:
  every = int(config.eval.every_passes)
  return every > 0 and (pass_index + 1) % every == 0


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
  every = int(config.eval.every_passes)
  run = harness.Run.open(config, workdir,
                         checkpoint_every=config.train.checkpoint_every_passes,
                         eval_every=every)
  try:
    method, num_batches = run.method, run.num_batches
    state, start_pass = run.init_or_restore('pass_index',
                                            batches_per_unit=num_batches)
    schedule = flat_schedule(method, num_epochs(config))
    state_sharding = sharding.shardings_of(state)
    if run.placement == 'device':
      run_pass_fn = _device_passes(method, run.device_data, run.mesh,
                                   num_batches=num_batches,
                                   batch_size=config.train.batch_size,
                                   per_call=config.train.batches_per_call,
                                   state_sharding=state_sharding)
    else:
      run_pass_fn = streaming.StreamedPasses(
          method, run.train, run.device_data, run.mesh,
          batch_size=config.train.batch_size,
          options=streaming.stream_options(config),
          state_sharding=state_sharding).run
    begin_fns = make_begin_fns(
        method, run.mesh, state_sharding=state_sharding,
        data_sharding=sharding.shardings_of(run.device_data))
    loop = _Loop(run, schedule)
    state = loop.run(state, begin_fns, run_pass_fn,
                     start_pass=start_pass,
                     stop_after_passes=stop_after_passes)
  except BaseException:
    run.close()
    raise
  if state is None:
    run.close()
    return {'stopped_at_pass': loop.stopped_at}
  return run.finish(state, total=len(schedule), unit='passes',
                    eval_every=every)


class _Loop:
  """The pass loop: hooks, passes, checks, records, checkpoints, evaluation.

  Attributes:
    stopped_at: the pass at which `run` stopped early (stop_after_passes).
  """

  def __init__(self, run: harness.Run, schedule: list):
    """The loop of `run` over `flat_schedule`'s passes."""
    self.h = run
    self.config = run.config
    self.schedule = schedule
    self.num_batches = run.num_batches
    self.stream = run.placement == 'stream'
    self.stopped_at = None
    self.bar = None
    self.postfix: dict[str, Any] = {}

  def meta(self, passes: int) -> dict[str, Any]:
    return self.h.checkpoint_meta('pass_index', passes, total_key='num_passes',
                                  total=len(self.schedule),
                                  batches_per_unit=self.num_batches)

  def run(self, state, begin_fns, run_pass_fn, *, start_pass: int,
          stop_after_passes: int | None):
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
    writer = self.h.metrics_writer(start_pass)
    try:
      for p in range(start_pass, len(self.schedule)):
        if stop_after_passes is not None and (
            p - start_pass >= stop_after_passes):
          self.stopped_at = p
          return None
        state = self._pass(p, state, begin_fns, run_pass_fn, writer)
        if self.h.checkpointer.due(p + 1, final=p + 1 == len(self.schedule)):
          self.h.checkpointer.save(p + 1, state, self.meta(p + 1))
        if _is_eval_pass(config, p):
          self._periodic_eval(p, state, writer)
      return state
    finally:
      self.bar.close()
      writer.close()

  def _pass(self, p, state, begin_fns, run_pass_fn, writer):
    """Pass p with its begin hook; checked, recorded and shown."""
    epoch, network, lr, begin = self.schedule[p]
    tic = time.perf_counter()
    if begin is not None:
      state = begin_fns[begin](state, self.h.device_data)
    state, metrics, finite = run_pass_fn(state, p, network, lr,
                                         on_batch=lambda: self.bar.update(1))
    seconds = time.perf_counter() - tic
    if not finite:
      self.h.raise_non_finite(f'Pass {p} ({network}, epoch {epoch})', metrics)
    writer.write({'pass': p, 'epoch': epoch, 'network': network,
                  'step': int(state.step), 'seconds': seconds,
                  'items_per_second': self.num_batches *
                                      self.config.train.batch_size / seconds,
                  'learning_rate': np.asarray(lr).tolist(), **metrics})
    self.postfix.update(net=network, loss=f'{metrics["loss"]:.4f}')
    self.bar.update(0 if self.stream else self.num_batches, **self.postfix)
    return state

  def _periodic_eval(self, p, state, writer):
    """`config.evals`' periodic evaluators (`harness.Run.periodic_eval`)."""
    for record in self.h.periodic_eval(state, {'pass': p}, p + 1,
                                       lambda: self.meta(p + 1)):
      writer.write(record)
      self.postfix.update({f'map_{d}': f'{v:.3f}'
                           for d, v in record.get('eval_map', {}).items()
                           if d in ('i2t', 't2i')})
    self.bar.update(0, **self.postfix)


registry.TRAINERS.register('alternating')(train_and_evaluate)
