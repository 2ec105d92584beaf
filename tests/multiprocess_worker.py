r"""One process of multiprocess_train_test: trains runs as one of N processes.

  python tests/multiprocess_worker.py --process_id=I --num_processes=N \
      --port=PORT --plan=PLAN.json

Joins the job through `jax.distributed.initialize` (coordinator on
127.0.0.1:PORT; CPU collectives through gloo), with 8 / N CPU devices of its
own, then trains the runs of PLAN.json in order, a list of

  {"config": "ssah_synthetic", "args": "bits=16,...", "workdir": DIR,
   "hold_at_save": P or null}

each as `python -m crossmodal_hash.main --multiprocess
--config=configs/<config>.py:<args> --workdir=DIR` does (every process runs
the same runs in the same shared workdirs). With `hold_at_save` the run stops
when it is about to save checkpoint P: it waits for the earlier checkpoints to
be on disk, meets the other processes, writes `<workdir>/held.<process_id>`
and sleeps until the test kills it (SIGKILL), so the work of the passes since
the last checkpoint is lost as in a preempted job. A run that ends writes
`<workdir>/result.<process_id>.json`: the process count, this process's grain
shard and the final mAP@all it computed from the codes all processes encoded.

Exits with SKIP_EXIT_CODE, saying why, where jax.distributed cannot start.
Run with JAX_PLATFORMS=cpu and no XLA_FLAGS device count (the test does).
"""
import argparse
import ctypes
import json
import os
import signal
import sys
import time
import traceback

import jax

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TESTS))
sys.path.insert(0, os.path.join(os.path.dirname(TESTS), 'configs'))

# pylint: disable=g-import-not-at-top,wrong-import-position
from jax.experimental import multihost_utils

from crossmodal_hash import checkpointing
from crossmodal_hash import data  # Registers the datasets.  pylint: disable=unused-import
from crossmodal_hash.data import pipeline
from crossmodal_hash.trainers import alternating
# pylint: enable=g-import-not-at-top,wrong-import-position

DEVICES = 8  # In all, split evenly over the processes.
SKIP_EXIT_CODE = 77


def held_path(workdir: str, process_id: int) -> str:
  return os.path.join(workdir, f'held.{process_id}')


def result_path(workdir: str, process_id: int) -> str:
  return os.path.join(workdir, f'result.{process_id}.json')


def get_config(name: str, args: str):
  """`configs/<name>.py`'s get_config(args), locked as the CLI locks it."""
  config = __import__(name).get_config(args)
  config.lock()
  return config


class _Hold:
  """Makes `Checkpointer.save` block, to be killed, before checkpoint `step`."""

  step: int | None = None
  workdir: str = ''

  @classmethod
  def install(cls) -> None:
    save = checkpointing.Checkpointer.save

    def held_save(self, pass_count, state, meta):
      if pass_count != cls.step:
        return save(self, pass_count, state, meta)
      self.wait()  # This process's part of every earlier checkpoint is written
      # and, once all processes are here, process 0 has committed them.
      multihost_utils.sync_global_devices(f'hold at checkpoint {cls.step}')
      marker = held_path(cls.workdir, jax.process_index())
      with open(marker + '.tmp', 'w') as f:
        f.write(str(self.latest_step()))
      os.replace(marker + '.tmp', marker)  # The test never reads half of it.
      while True:  # Until SIGKILL.
        time.sleep(60)

    checkpointing.Checkpointer.save = held_save


def _die_with_parent() -> None:
  """SIGKILL this process if the test that started it dies first (Linux;
  elsewhere the test's own cleanup is all there is)."""
  try:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def _initialize(process_id: int, num_processes: int, port: int) -> None:
  """jax.distributed on 127.0.0.1:port; exits SKIP_EXIT_CODE if it fails."""
  try:
    # Before JAX's backends start (the parent sets JAX_PLATFORMS=cpu).
    jax.config.update('jax_num_cpu_devices', DEVICES // num_processes)
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'127.0.0.1:{port}',
                               num_processes=num_processes,
                               process_id=process_id,
                               initialization_timeout=60)
    devices = jax.devices()
  except Exception:  # pylint: disable=broad-except
    print('jax.distributed could not start:\n' + traceback.format_exc(),
          flush=True)
    sys.exit(SKIP_EXIT_CODE)
  assert jax.process_count() == num_processes
  assert len(devices) == DEVICES, devices


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--process_id', type=int, required=True)
  parser.add_argument('--num_processes', type=int, required=True)
  parser.add_argument('--port', type=int, required=True)
  parser.add_argument('--plan', required=True)
  args = parser.parse_args(argv[1:])
  _die_with_parent()
  with open(args.plan) as f:
    plan = json.load(f)
  _initialize(args.process_id, args.num_processes, args.port)
  _Hold.install()
  for run in plan:
    _Hold.step, _Hold.workdir = run['hold_at_save'], run['workdir']
    results = alternating.train_and_evaluate(
        get_config(run['config'], run['args']), run['workdir'])
    shard = pipeline.process_shard()
    with open(result_path(run['workdir'], args.process_id), 'w') as f:
      json.dump({'process_count': jax.process_count(),
                 'shard': [shard.shard_index, shard.shard_count],
                 'map': results['map']}, f)
  jax.distributed.shutdown()


if __name__ == '__main__':
  main(sys.argv)
