"""Training as 2 processes of 4 CPU devices, killed and resumed, equals 1 x 8.

Each process of the 2-process job (tests/multiprocess_worker.py) joins
through `jax.distributed.initialize` on a free local port. The runs stream
their batches ('stream' placement): grain reads each process's half of every
global batch (`ShardByJaxProcess`) and `sharding.host_to_global` assembles
them; the final evaluation encodes half of every batch on each process and
gathers the codes of both. DCMH and SSAH are killed (SIGKILL, both processes)
while their next checkpoint is due, so the passes since the last one are lost
and redone on resume. The reference is one process with all 8 devices,
uninterrupted. Both jobs use the same CPU collectives (gloo): XLA's in-process
collectives sum the 8 devices' gradients in another order, which moves the
last bits of the params.

Three launches of the 2-process job (DCMH killed; DCMH resumed, SSAH killed;
SSAH resumed), the first beside the reference's.
"""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import portpicker
import pytest

import conftest
from conftest import TINY_OVERRIDES
from crossmodal_hash import checkpointing
from dcmh_test import DCMH_TINY
import multiprocess_worker as worker

TESTS = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = 900  # The whole test; a job past it is killed and reported.
FEATURES = ('dataset.name=synthetic_features', 'model.image_encoder=feature_mlp',
            'train.data_placement=stream', 'eval.random_baseline=false')
# Enough learning in 2 epochs that the codes are not all equal (init 0.1: at
# 0.01 rounding-level gradients get full Adam steps). 10 passes; checkpoints
# after 3, 6, 9, 10; killed while saving 9: passes 6-8 are redone.
SSAH = dict(config='ssah_synthetic', hold_at_save=9, args=','.join(
    (TINY_OVERRIDES,) + FEATURES + (
        'ssah.num_epochs=2', 'model.init_std=0.1', 'ssah.img_lr_exponent=1.5',
        'ssah.txt_lr_exponent=1.5', 'train.checkpoint_every_passes=3')))
# 4 passes (img, txt, img, txt); checkpoints after 2 and 4; killed while
# saving 4: passes 2 (with epoch 1's binary-code refresh) and 3 are redone.
DCMH = dict(config='dcmh_synthetic', hold_at_save=4, args=','.join(
    (DCMH_TINY,) + FEATURES + ('train.checkpoint_every_passes=2',)))
# Wall-clock entries (the printed table holds the evaluation's seconds too).
TIMING_KEYS = ('seconds', 'items_per_second', 'table')


class _Job:
  """The processes of one launch of the worker, bounded by a deadline."""

  def __init__(self, name, num_processes, runs, tmp_path, deadline):
    self.name = name
    self.deadline = deadline
    plan = tmp_path / f'{name}.plan.json'
    plan.write_text(json.dumps(runs))
    port = portpicker.pick_unused_port()
    # The worker sets its own device count. Later launches reuse the
    # programs the first one compiled.
    env = conftest.subprocess_env(
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
    self.logs = [tmp_path / f'{name}.{i}.log' for i in range(num_processes)]
    self.procs = []
    for i, log in enumerate(self.logs):
      with open(log, 'w') as out:
        self.procs.append(subprocess.Popen(
            [sys.executable, os.path.join(TESTS, 'multiprocess_worker.py'),
             f'--process_id={i}', f'--num_processes={num_processes}',
             f'--port={port}', f'--plan={plan}'],
            env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True))  # Its own group: killpg reaches all.

  def log_tail(self, chars=3000):
    return '\n'.join(f'--- {self.name} process {i} (exit {p.poll()}):\n' +
                     log.read_text(errors='replace')[-chars:]
                     for i, (p, log) in enumerate(zip(self.procs, self.logs)))

  def kill(self):
    """SIGKILLs every process (and its children) still running."""
    for proc in self.procs:
      if proc.poll() is None:
        try:
          os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
      proc.wait()

  def wait(self, until=None):
    """Until every process exits (or `until()` holds); fails on timeout or a
    failed process, skips where jax.distributed could not start."""
    while True:
      codes = [p.poll() for p in self.procs]
      if worker.SKIP_EXIT_CODE in codes:
        self.kill()
        pytest.skip('jax.distributed cannot start here:\n' + self.log_tail())
      if any(c not in (None, 0) for c in codes):
        self.kill()
        pytest.fail(f'{self.name} failed:\n{self.log_tail()}')
      if until is not None and until():
        return
      if until is None and all(c == 0 for c in codes):
        return
      if time.monotonic() > self.deadline:
        self.kill()
        pytest.fail(f'{self.name} ran past the {TIMEOUT_S} s limit; killed.\n'
                    + self.log_tail())
      time.sleep(0.2)


def _held(workdir, expected_step):
  """Both processes hold before saving; the last checkpoint is committed."""
  def check():
    paths = [worker.held_path(workdir, i) for i in range(2)]
    if not all(os.path.exists(p) for p in paths):
      return False
    steps = {open(p).read() for p in paths}
    assert steps == {str(expected_step)}, steps
    return True
  return check


def _final_state(workdir, like=None):
  """(step, state) of the latest checkpoint, onto `like`'s shardings."""
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(like), meta=ocp.args.JsonRestore()))
  manager.close()
  return step, restored['state'], restored['meta']


def _untimed(record):
  """A JSON record without its wall-clock entries, at any depth."""
  if isinstance(record, dict):
    return {k: _untimed(v) for k, v in record.items() if k not in TIMING_KEYS}
  if isinstance(record, list):
    return [_untimed(v) for v in record]
  return record


def _json(*path):
  with open(os.path.join(*path)) as f:
    return _untimed(json.load(f))


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [_untimed(json.loads(line)) for line in f]


def _assert_same_run(reference, resumed):
  """Bit-identical state, codes, metrics and mAP; the resumed job streamed
  through grain as 2 processes."""
  step, ref_state, ref_meta = _final_state(reference)
  step_b, state, meta = _final_state(
      resumed, checkpointing.abstract_like(ref_state))
  assert step == step_b
  assert meta['data_iterator'] == ref_meta['data_iterator']
  assert meta['data_iterator']['placement'] == 'stream'
  ref_state, state = jax.device_get((ref_state, state))
  # params, optimizer states, memories, step and RNG.
  jax.tree.map(np.testing.assert_array_equal, ref_state, state)
  ref_codes = np.load(os.path.join(reference, 'eval', 'codes.npz'))
  codes = np.load(os.path.join(resumed, 'eval', 'codes.npz'))
  assert sorted(ref_codes.files) == sorted(codes.files)
  for key in ref_codes.files:
    np.testing.assert_array_equal(ref_codes[key], codes[key])
  assert len(np.unique(codes['image_db'], axis=0)) > 1  # Not collapsed.
  # Every pass recorded once: the records of the lost passes were cut.
  assert _metrics(reference) == _metrics(resumed)
  for name in ('map.json', 'evaluation.json'):
    assert _json(reference, 'eval', name) == _json(resumed, 'eval', name), name
  ref_result = _json(worker.result_path(reference, 0))
  assert ref_result['process_count'] == 1
  for i in range(2):  # Both processes computed the mAP of all the codes.
    result = _json(worker.result_path(resumed, i))
    assert result['process_count'] == 2 and result['shard'] == [i, 2]
    assert result['map'] == ref_result['map']


def test_two_processes_killed_and_resumed_equal_one_process(tmp_path):
  deadline = time.monotonic() + TIMEOUT_S
  ref = {m: dict(run, workdir=str(tmp_path / f'ref_{m}'), hold_at_save=None)
         for m, run in (('dcmh', DCMH), ('ssah', SSAH))}
  two = {m: dict(run, workdir=str(tmp_path / f'two_{m}'))
         for m, run in (('dcmh', DCMH), ('ssah', SSAH))}
  resume = {m: dict(run, hold_at_save=None) for m, run in two.items()}
  jobs = []
  try:
    jobs.append(_Job('reference', 1, list(ref.values()), tmp_path, deadline))
    jobs.append(_Job('dcmh_killed', 2, [two['dcmh']], tmp_path, deadline))
    jobs[-1].wait(until=_held(two['dcmh']['workdir'], 2))
    jobs[-1].kill()
    jobs.append(_Job('dcmh_resumed_ssah_killed', 2,
                     [resume['dcmh'], two['ssah']], tmp_path, deadline))
    jobs[-1].wait(until=_held(two['ssah']['workdir'], 6))
    jobs[-1].kill()
    jobs.append(_Job('ssah_resumed', 2, [resume['ssah']], tmp_path, deadline))
    jobs[-1].wait()
    jobs[0].wait()
  finally:
    for job in jobs:  # Bounded: never leave a process behind.
      job.kill()
  for m in ('dcmh', 'ssah'):
    _assert_same_run(ref[m]['workdir'], two[m]['workdir'])
