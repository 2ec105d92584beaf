"""benchmarks/train_speed.py --small at its tiniest: the CI smoke test."""
import json
import os
import subprocess
import sys

import conftest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_small_benchmark_runs_and_reports(tmp_path):
  out = tmp_path / 'train_speed.json'
  env = conftest.subprocess_env()  # One CPU device, as a user's run.
  result = subprocess.run(
      [sys.executable, 'benchmarks/train_speed.py', '--small',
       '--num_items=32', '--distinct_items=32', '--image_size=16',
       f'--out={out}'], cwd=REPO_ROOT, env=env, capture_output=True,
      text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '| DCMH | 2 |' in result.stdout
  assert '| SSAH | 4 |' in result.stdout
  report = json.loads(out.read_text())
  assert report['small'] and report['sizes']['batch_size'] == 32
  records = {r['method']: r for r in report['records']}
  assert set(records) == {'dcmh', 'ssah'}
  for r in records.values():
    assert r['epoch_seconds'] > 0 and r['images_per_second'] > 0
    assert 0 <= r['input_share'] <= 1
    assert r['losses_finite']
  assert set(records['dcmh']['seconds_per_network']) == {'img', 'txt'}
