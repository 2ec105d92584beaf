"""SSAH, DCMH and DSMHN give the results recorded before the platform refactor.

tests/golden/platform.json was written by this file (`python
tests/platform_golden_test.py --record`) at commit 078ed81 (the code of
06d6d87), before the trainer platform (harness, Method protocol, optax chains,
declared data fields) moved anything; it was recorded again at that commit
under the suite's compile flags (`conftest.COMPILE_FLAGS`, LLVM -O0) when the
suite took them, and today's code gives the same bits under them. Each case runs a tiny config end to end through the registered
trainer and fingerprints:
  * every parameter and memory array of the last checkpoint (sha256 of the
    bytes, leaf by leaf in key-path order), plus a few of their values;
  * every pass's metrics from metrics.jsonl (losses as float64 reprs);
  * the final codes (eval/codes.npz) and the mAP@all.
Optimizer states are not compared: their structure is the optimizer's
business (optax's `inject_hyperparams` state holds the rate); the params they
produce are.

The cases run with replicated state (`sharding.logical_axis_rules=()`), as
recorded; item_sharding_test checks the item-sharded default against it.
On the jax version that recorded them the results are bit-identical. On
another jax version XLA may fuse and reassociate float sums differently, so the
test then compares the recorded values within RTOL instead of the hashes
(and says so when it does).
"""
import hashlib
import json
import os
import sys

import conftest  # First: JAX's 8 CPU devices (also when run as a script).
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import dcmh_test
import dsmhn_test

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden',
                      'platform.json')
RTOL = 1e-4  # Only used on a jax version other than the recording one.
# The suite runs one case of each method (the drift's second Adam and a tuple
# of rates; SGD with momentum; a joint update); the others are marked slow
# (`--run-slow` runs them: 4 minutes more on 2 cores). Streamed passes are
# also checked bit for bit against the device placement in alternating_test
# (lazy HDF5) and per_step_test; the interleaved schedule runs in
# alternating_test.
SUITE_CASES = ('ssah_official_code', 'dcmh_momentum', 'dsmhn')

# name -> (config module, overrides). A few passes each: enough that every
# network of each method updates and its memories are rewritten.
CASES = {
    'ssah': ('ssah_synthetic', (conftest.TINY_OVERRIDES,)),
    'ssah_stream': ('ssah_synthetic', (conftest.TINY_OVERRIDES,
                                       'train.data_placement=stream',
                                       'train.stream_workers=0',
                                       'ssah.num_epochs=1')),
    'ssah_official_code': ('ssah_synthetic', (conftest.TINY_OVERRIDES,
                                              'ssah.adversarial=official_code',
                                              'ssah.num_epochs=1')),
    'ssah_interleaved': ('ssah_synthetic', (conftest.TINY_OVERRIDES,
                                            'ssah.schedule=interleaved',
                                            'ssah.num_epochs=2')),
    'dcmh': ('dcmh_synthetic', (dcmh_test.DCMH_TINY,)),
    'dcmh_momentum': ('dcmh_synthetic', (dcmh_test.DCMH_TINY,
                                         *dcmh_test.FEATURES,
                                         'dcmh.momentum=0.9')),
    'dsmhn': ('dsmhn_synthetic', (dsmhn_test.DSMHN_TINY,
                                  'dsmhn.lr_decay=0.5')),
}


def _digest(array: np.ndarray) -> str:
  array = np.ascontiguousarray(array)
  return hashlib.sha256(str(array.dtype).encode() + str(array.shape).encode()
                        + array.tobytes()).hexdigest()


def _leaves(tree, prefix):
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {prefix + jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in flat}


def run_case(name: str, workdir: str) -> dict:
  """Runs case `name` in `workdir`; its fingerprint."""
  import importlib  # pylint: disable=g-import-not-at-top
  from crossmodal_hash import data  # pylint: disable=g-import-not-at-top,unused-import
  from crossmodal_hash import trainers  # pylint: disable=g-import-not-at-top
  module, overrides = CASES[name]
  config = importlib.import_module(module).get_config(
      ','.join(overrides + ('eval.random_baseline=false',)))
  # Replicated, as recorded: item-sharded memories sum over the items in
  # another order (equal within float tolerance, item_sharding_test).
  config.sharding.logical_axis_rules = ()
  results = trainers.TRAINERS.get('alternating')(config, workdir)
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))
  manager.close()
  state = restored['state']
  arrays = {**_leaves(state['params'], 'params'),
            **_leaves(state['memory'], 'memory'),
            'step': np.asarray(state['step'])}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  losses = [{k: v for k, v in r.items() if isinstance(v, float) and
             k not in ('seconds', 'items_per_second', 'learning_rate')}
            for r in records if 'pass' in r and 'loss' in r]
  codes = np.load(os.path.join(workdir, 'eval', 'codes.npz'))
  return {
      'jax': jax.__version__,
      'checkpoint_step': int(step),
      'sha256': {k: _digest(v) for k, v in sorted(arrays.items())},
      'values': {k: np.asarray(v, np.float64).ravel()[:3].tolist()
                 for k, v in sorted(arrays.items())},
      'losses': losses,
      'codes_sha256': {k: _digest(codes[k]) for k in sorted(codes.files)},
      'map': results['map'],
  }


def _golden() -> dict:
  with open(GOLDEN) as f:
    return json.load(f)


@pytest.mark.parametrize('name', [
    n if n in SUITE_CASES else pytest.param(n, marks=pytest.mark.slow)
    for n in sorted(CASES)])
def test_results_are_the_recorded_ones(name, tmp_path):
  expected = _golden()[name]
  got = run_case(name, str(tmp_path))
  assert got['checkpoint_step'] == expected['checkpoint_step']
  assert sorted(got['sha256']) == sorted(expected['sha256'])
  assert len(got['losses']) == len(expected['losses'])
  if expected['jax'] == jax.__version__:
    # Bit-identical: every array, every pass's losses, the codes, the mAP.
    assert got['sha256'] == expected['sha256']
    assert got['losses'] == expected['losses']
    assert got['codes_sha256'] == expected['codes_sha256']
    assert got['map'] == expected['map']
  else:
    print(f'jax {jax.__version__} != the recording jax {expected["jax"]}: '
          f'comparing within rtol {RTOL}, not bit for bit.')
    for key, values in expected['values'].items():
      np.testing.assert_allclose(got['values'][key], values, rtol=RTOL,
                                 atol=1e-6, err_msg=key)
    for g, e in zip(got['losses'], expected['losses']):
      assert sorted(g) == sorted(e)
      for k in e:
        np.testing.assert_allclose(g[k], e[k], rtol=RTOL, atol=1e-6,
                                   err_msg=k)


def _record(names):
  import tempfile  # pylint: disable=g-import-not-at-top
  golden = _golden() if os.path.exists(GOLDEN) else {}
  for name in names:
    with tempfile.TemporaryDirectory() as workdir:
      golden[name] = run_case(name, workdir)
  os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
  with open(GOLDEN, 'w') as f:
    json.dump(golden, f, indent=1, sort_keys=True)
    f.write('\n')


if __name__ == '__main__':
  # python tests/platform_golden_test.py --record [case ...]: only before a
  # change whose results must not move.
  if sys.argv[1:2] != ['--record']:
    sys.exit(__doc__)
  _record(sys.argv[2:] or sorted(CASES))
