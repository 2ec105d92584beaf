"""CI smoke tests of benchmarks/hamming_search.py, cosine_search.py and
input_pipeline.py."""
import json
import os
import subprocess
import sys

import conftest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, tmp_path):
  env = conftest.subprocess_env()  # One CPU device unless it asks.
  result = subprocess.run([sys.executable] + args, cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600,
                          check=False, stdin=subprocess.DEVNULL)
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  return result.stdout


def test_hamming_search_one_device_and_sharded(tmp_path):
  out = tmp_path / 'one.json'
  stdout = _run(['benchmarks/hamming_search.py', '--num_db=5000',
                 '--num_queries=40', '--bits=64,33', '--repeats=1',
                 '--skip_faiss', f'--out={out}'], tmp_path)
  assert 'yes (brute force, 16 queries)' in stdout
  report = json.loads(out.read_text())
  assert [r['bits'] for r in report['rows']] == [64, 33]
  for row in report['rows']:
    assert row['kernel'].startswith('numba hamming_cpu')
    assert row['distances_equal_brute_force']
    assert row['indices_equal_brute_force']
  out = tmp_path / 'sharded.json'
  stdout = _run(['benchmarks/hamming_search.py', '--num_db=5000',
                 '--num_queries=10', '--bits=64', '--repeats=1',
                 '--num_devices=8', '--check_queries=3', f'--out={out}'],
                tmp_path)
  report = json.loads(out.read_text())
  row = report['rows'][0]
  assert report['num_devices'] == 8
  assert row['kernel'] == 'xla radix select, sharded over 8 cpu devices'
  assert row['distances_equal_brute_force'] and row['indices_equal_brute_force']
  assert row['peak_rss_gib'] > 0 and row['gpairs_per_s_per_device'] > 0


def test_cosine_search_times_both_engines_and_they_agree(tmp_path):
  out = tmp_path / 'cosine.json'
  stdout = _run(['benchmarks/cosine_search.py', '--num_db=3000', '--dim=16',
                 '--num_queries=12', '--k=20', '--repeats=1',
                 '--block_size=1024', f'--out={out}'], tmp_path)
  assert 'NumPy matmul + argpartition' in stdout
  report = json.loads(out.read_text())
  ours, numpy_row = report['rows']
  assert ours['engine'] == 'ours' and numpy_row['engine'] == 'numpy'
  assert ours['block_size'] == 1024
  assert ours['queries_per_s'] > 0 and numpy_row['peak_rss_mib'] > 0
  assert report['agreement']['topk_sets_overlap'] == 1.0
  assert report['agreement']['max_similarity_difference'] < 1e-5


def test_input_pipeline_times_the_streamed_passes(tmp_path):
  stdout = _run(['benchmarks/input_pipeline.py', '--num_items=64',
                 '--batch_size=16', '--image_size=16', '--workers=0',
                 '--epochs=1', '--sources=memory,array_record_raw',
                 f'--out={tmp_path}'], tmp_path)
  assert 'streamed training passes (trainers/streaming.py)' in stdout
  report = json.loads((tmp_path / 'input_pipeline.json').read_text())
  assert report['path'].startswith('trainers/streaming.py')
  assert [r['source'] for r in report['results']] == ['memory',
                                                      'array_record_raw']
  for row in report['results']:
    assert row['batches'] == 4 and row['items_per_second'] > 0


def test_results_benchmarks_train_a_bits_independent_method_once():
  """benchmarks/tables.same_model_as: a method whose outputs take their width
  from `bits` trains at every length; MHTN (softmax over the labels) trains
  at the first and stands for the others."""
  sys.path.insert(0, os.path.join(REPO_ROOT, 'benchmarks'))
  import tables  # pylint: disable=g-import-not-at-top
  from crossmodal_hash import methods  # pylint: disable=g-import-not-at-top
  from crossmodal_hash.methods import base  # pylint: disable=g-import-not-at-top
  mhtn, ssah = methods.METHODS.get('mhtn'), methods.METHODS.get('ssah')
  assert not base.width_from_bits(mhtn) and base.width_from_bits(ssah)
  assert tables.same_model_as(mhtn, {}) is None
  assert tables.same_model_as(mhtn, {'16': {}, '32': {}}) == '16'
  assert tables.same_model_as(ssah, {'16': {}}) is None
  for name in methods.METHODS.names():
    if name != 'mhtn':
      assert base.width_from_bits(methods.METHODS.get(name)), name
