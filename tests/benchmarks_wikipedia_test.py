"""benchmarks/wikipedia.py end to end on the real Wikipedia training half."""
import json
import os
import subprocess
import sys

import pytest

import conftest
from conftest import REPO_ROOT
from conftest import SHARED_DATA

WIKIPEDIA = os.path.join(SHARED_DATA, 'wikipedia', 'wikipedia-train.npz')


@pytest.mark.skipif(not os.path.exists(WIKIPEDIA),
                    reason=f'real data not found: {WIKIPEDIA} (the Wikipedia '
                    'training half beside the project, ../shared/data)')
def test_wikipedia_benchmark_writes_its_tables(tmp_path):
  """Two short methods at 16 bits: the tables hold random codes, the ridge
  baseline and each method, on the validation split of the training half."""
  out = tmp_path / 'wikipedia'
  subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'wikipedia.py'),
       f'--path={WIKIPEDIA}', f'--out={out}', '--bits=16',
       '--methods=dcmh,dsmhn',
       '--dcmh_arg=dcmh.num_epochs=2,eval.every_passes=2',
       '--dsmhn_arg=dsmhn.num_epochs=2,eval.every_passes=1',
       '--config_arg=eval.plots=false'],
      check=True, cwd=REPO_ROOT, timeout=900,
      # Bound by run time (4096- and 8192-wide layers over 2,173 items), not
      # compile time: LLVM's default -O2 (20 s; 57 s at the suite's -O0).
      env=conftest.subprocess_env(compile_flags=False))
  with open(out / 'wikipedia.json') as f:
    result = json.load(f)
  assert result['query_set'] == 'validation'
  baseline = result['ridge_baseline']['16']
  # The training half: no test queries, the ridge is scored on validation.
  assert baseline['query_set'] == 'validation'
  for method in ('dcmh', 'dsmhn'):
    run = result['runs'][method]['16']
    assert run['selected_checkpoint']['checkpoint'] == 'best'
    assert set(run['map']) == {'i2t', 't2i', 'i2i', 't2t'}
  table = (out / 'wikipedia.md').read_text()
  for row in ('random codes', 'ridge regression + sign', 'DCMH', 'DSMHN'):
    assert f'| {row} |' in table
