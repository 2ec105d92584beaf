r"""Command-line entry point: train and evaluate a method.

  python -m crossmodal_hash.main --config=configs/ssah_synthetic.py \
      --workdir=/tmp/ssah_synthetic
  python -m crossmodal_hash.main --config=configs/ssah_mirflickr.py:bits=64 \
      --config.dataset.path=/data/FLICKR-25K.mat --workdir=DIR

Re-running with the same --workdir resumes from its latest checkpoint. The
evaluation table is printed at the end; the full report (evaluation.json,
map.json, PR and P@N plots, training curves, codes.npz) is in <workdir>/eval.
"""
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from crossmodal_hash import cli
from crossmodal_hash import config_utils

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file, optionally followed by '
    ':key=value,... arguments.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Directory for checkpoints, metrics and results.')
_MULTIPROCESS = flags.DEFINE_bool(
    'multiprocess', False, 'Call jax.distributed.initialize() first (multi-host '
    'TPU pods and multi-node GPU jobs).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'With --multiprocess outside TPU pods and '
    'SLURM: host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'With --coordinator_address.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'With --coordinator_address.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  config_utils.validate(config)  # Bad values stop here, before JAX starts.
  # Imported here, once the config is known to be good.
  # pylint: disable=g-import-not-at-top
  import jax
  from crossmodal_hash import logging_utils
  from crossmodal_hash import methods
  from crossmodal_hash import trainers
  # pylint: enable=g-import-not-at-top
  # Before any backend starts: JAX's INFO lines (e.g. "Unable to initialize
  # backend 'tpu'" on every CPU run) and orbax's stay off the console.
  logging_utils.quiet_library_info(('orbax', 'jax'))
  if _MULTIPROCESS.value:
    # On TPU pods and under SLURM the arguments are discovered automatically.
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  logging.info('JAX devices: %s (process %d of %d).', jax.devices(),
               jax.process_index(), jax.process_count())
  method = methods.METHODS.get(config.method)
  trainer = trainers.TRAINERS.get(method.trainer)
  results = trainer(config, _WORKDIR.value)
  if jax.process_index() == 0:
    print(results['table'], flush=True)
    print(f'\nReport, plots and codes: {os.path.join(_WORKDIR.value, "eval")}',
          flush=True)


if __name__ == '__main__':
  cli.run_absl(main, workdir_flag='workdir')
