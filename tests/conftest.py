"""Test setup: JAX on CPU with 8 simulated devices, set before JAX initialises.

CROSSMODAL_HASH_TEST_PLATFORMS (e.g. 'cuda,cpu', as benchmarks/gpu_all.sh sets
it) runs the suite with another default platform; the 8 CPU devices remain.

Tests marked `slow` skip unless `--run-slow` or CROSSMODAL_HASH_SLOW_TESTS=1:
the default suite stays within ~15 minutes on 2 cores and still runs every path
(sharded, multi-process, resume) at least once.
"""
import os

os.environ['JAX_PLATFORMS'] = os.environ.get('CROSSMODAL_HASH_TEST_PLATFORMS',
                                             'cpu')
# The suite is compile-bound: hundreds of tiny programs, each compiled once
# and run for a few steps. LLVM at -O0 compiles them in about 60% of the
# time (ssah_test + platform_golden_test: 178 s -> 110 s on 2 cores); the
# programs' results move in the last bits against the default -O2 (other
# generated code), so every bit-for-bit comparison in the suite compares runs
# built alike, and the golden results (tests/golden/platform.json) were
# recorded under these flags. Subprocesses get them too (`subprocess_env`).
COMPILE_FLAGS = '--xla_backend_optimization_level=0'
_USER_XLA_FLAGS = os.environ.get('XLA_FLAGS', '')
os.environ['XLA_FLAGS'] = (f'{_USER_XLA_FLAGS} {COMPILE_FLAGS} '
                           '--xla_force_host_platform_device_count=8').strip()

# One persistent compilation cache per test session, empty at its start and
# removed at its end (subprocesses and pytest-xdist workers inherit it): the
# resume tests compile the same programs in each of their runs, and a cache
# hit skips XLA. Results are unchanged (the cached executable is the one XLA
# built for the same program); set JAX_COMPILATION_CACHE_DIR to choose it.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  import atexit  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(
      prefix='crossmodal_hash_tests_xla_cache_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'],
                  ignore_errors=True)
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_num_cpu_devices', 8)

import os.path  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), 'shared', 'data')
sys.path.insert(0, os.path.join(REPO_ROOT, 'configs'))

# Small enough for a few seconds per run on 2 CPU cores; batch 32 splits over
# the 8 simulated devices.
TINY_OVERRIDES = ','.join([
    'bits=16', 'dataset.num_items=600', 'dataset.num_query=96',
    'dataset.num_train=256', 'dataset.num_labels=8', 'dataset.vocab_size=200',
    'dataset.image_size=16', 'dataset.feature_dim=64', 'dataset.num_val=0',
    'eval.every_passes=0',
    'model.semantic_dim=32', 'model.label_hidden=64', 'model.text_hidden=64',
    'model.image_mlp_features=64', 'model.discriminator_hidden=32;16',
    'ssah.num_epochs=2', 'ssah.lab_passes=1', 'ssah.dis_passes=1',
    'ssah.img_passes=1;1', 'ssah.txt_passes=1', 'train.batch_size=32',
    'train.checkpoint_every_passes=1', 'train.checkpoint_every_seconds=0',
    'train.progress=false',
    'eval.batch_size=64', 'eval.plots=false',
])


def subprocess_env(*, compile_flags: bool = True,
                   **overrides: str) -> dict[str, str]:
  """The environment of a subprocess that runs JAX on the machine's real
  CPU devices (one, unless it asks for more): the suite's compile flags
  (without them, for a run that is bound by run time, not compile time),
  without the 8-device count, then `overrides`."""
  flags = f'{_USER_XLA_FLAGS} {COMPILE_FLAGS if compile_flags else ""}'
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=flags.strip())
  env.update(overrides)
  return env


def latest_checkpoint(workdir):
  """(step, state) of the latest checkpoint in `workdir`/checkpoints, as
  saved (a pytree of host arrays; no abstract state needed)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))
  manager.close()
  return step, jax.device_get(restored['state'])


def pytest_addoption(parser):
  parser.addoption(
      '--run-slow', action='store_true', default=False,
      help='also run the tests marked slow (CROSSMODAL_HASH_SLOW_TESTS=1 does '
      'the same)')


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'slow: a long test (a second copy of a path the suite '
      'already covers, at a larger size); skipped unless --run-slow or '
      'CROSSMODAL_HASH_SLOW_TESTS=1')


def pytest_collection_modifyitems(config, items):
  if (config.getoption('--run-slow') or
      os.environ.get('CROSSMODAL_HASH_SLOW_TESTS', '') not in ('', '0')):
    return
  skip = pytest.mark.skip(
      reason='slow: run with --run-slow or CROSSMODAL_HASH_SLOW_TESTS=1')
  for item in items:
    if 'slow' in item.keywords:
      item.add_marker(skip)


def killed_and_resumed(config, tmp_path, *, stop_after_steps=5):
  """A per-step run straight through (in tmp_path/a) and one stopped after
  `stop_after_steps` steps, then resumed (in tmp_path/b).

  Returns:
    (straight results, resumed results, (step, state) of a's latest
    checkpoint, b's latest state).
  """
  from crossmodal_hash.trainers import per_step  # pylint: disable=g-import-not-at-top
  straight = per_step.train_and_evaluate(config, str(tmp_path / 'a'))
  assert per_step.train_and_evaluate(
      config, str(tmp_path / 'b'), stop_after_steps=stop_after_steps) == {
          'stopped_at_step': stop_after_steps}
  resumed = per_step.train_and_evaluate(config, str(tmp_path / 'b'))
  _, b = latest_checkpoint(str(tmp_path / 'b'))
  return straight, resumed, latest_checkpoint(str(tmp_path / 'a')), b


@pytest.fixture(name='tiny_config')
def _tiny_config():
  """Builds a tiny SSAH synthetic config: tiny_config('bits=32', ...)."""
  import ssah_synthetic  # pylint: disable=g-import-not-at-top

  def make(*extra: str):
    return ssah_synthetic.get_config(','.join((TINY_OVERRIDES,) + extra))

  return make


@pytest.fixture(scope='session', name='trained_run')
def _trained_run(tmp_path_factory):
  """The workdir of one tiny SSAH synthetic run (one epoch), shared by the
  tests of the user path (encode, search, serve)."""
  import ssah_synthetic  # pylint: disable=g-import-not-at-top
  from crossmodal_hash import data  # pylint: disable=g-import-not-at-top,unused-import
  from crossmodal_hash.trainers import alternating  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('trained_run'))
  config = ssah_synthetic.get_config(','.join((
      TINY_OVERRIDES, 'ssah.num_epochs=1', 'train.checkpoint_every_passes=2',
      'eval.random_baseline=false', 'eval.every_passes=5',
      'train.tensorboard=true')))
  alternating.train_and_evaluate(config, workdir)
  return workdir
