"""Tests of the evaluation suite, its report, plots and command line."""
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from crossmodal_hash import evaluate as evaluate_cli
from crossmodal_hash.evaluation import metrics
from crossmodal_hash.evaluation import ranking
from crossmodal_hash.evaluation import report
from crossmodal_hash.evaluation import suite

_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SMALL = ranking.EvalOptions(top_k=(10, 50), precision_at=(1, 10, 100),
                             ndcg_k=(10,))


def _codes(rng, n, k):
  return np.where(rng.random((n, k)) < 0.5, -1, 1).astype(np.int8)


def _code_set(seed, bits, q=30, n=200, num_labels=5):
  rng = np.random.default_rng(seed)
  codes = {'image_query': _codes(rng, q, bits),
           'text_query': _codes(rng, q, bits),
           'image_db': _codes(rng, n, bits), 'text_db': _codes(rng, n, bits)}
  ql = (rng.random((q, num_labels)) < 0.3).astype(np.uint8)
  dl = (rng.random((n, num_labels)) < 0.3).astype(np.uint8)
  return codes, ql, dl


def _assert_png(path):
  assert os.path.getsize(path) > 1000
  with open(path, 'rb') as f:
    assert f.read(8) == _PNG_MAGIC


def test_evaluate_codes_computes_writes_and_tabulates(tmp_path):
  codes, ql, dl = _code_set(0, 16)
  random_codes, _, _ = _code_set(1, 16)
  results = suite.evaluate_codes(
      {'trained (16 bits)': codes, 'random (16 bits)': random_codes}, ql, dl,
      options=_SMALL, out_dir=tmp_path / 'eval', metadata={'step': 7})
  assert sorted(os.listdir(tmp_path / 'eval')) == [
      'evaluation.json', 'map.png', 'pr_curves.png', 'precision_at_n.png']
  assert results['files'] == [str(tmp_path / 'eval' / name) for name in (
      'evaluation.json', 'pr_curves.png', 'precision_at_n.png', 'map.png')]
  for png in ('pr_curves.png', 'precision_at_n.png', 'map.png'):
    _assert_png(tmp_path / 'eval' / png)
  # mAP@all of every direction equals the single-metric function's.
  for name, code_set in (('trained (16 bits)', codes),
                         ('random (16 bits)', random_codes)):
    expected = metrics.cross_modal_map(code_set, ql, dl)
    assert results['map'][name] == pytest.approx(expected, rel=1e-12)
  written = report.read_json(tmp_path / 'eval' / 'evaluation.json')
  assert written['step'] == 7
  assert written['headline'] == {'metric': 'map', 'ties': 'index',
                                 'empty': 'zero'}
  assert written['options']['top_k'] == [10, 50]
  assert set(written['definitions']) >= {'map', 'map_at_k_truncated',
                                         'map_at_k_dcmh', 'ndcg_at_k'}
  direction = written['sets']['trained (16 bits)']['directions']['t2i']
  assert direction['map_at_k']['k'] == [10, 50]
  assert set(direction['precision_at_n']) == {'n', 'index', 'tie_aware'}
  assert written['table'] == results['table']
  assert 'NaN' not in json.dumps(written)
  # The table: headline block, then one block per code set.
  table = results['table']
  assert table.startswith('mAP@all (index order; queries without a relevant '
                          'item counted as 0)')
  for label in ('mAP@all (tie-aware)', 'mAP@10 (truncated)', 'mAP@50 (DCMH)',
                'NDCG@10 (index order)', 'P@100 (tie-aware)',
                'recall (r<=2)', 'trained (16 bits): 30 queries x 200 items'):
    assert label in table
  value = f"{results['map']['random (16 bits)']['i2i']:.4f}"
  assert value in table.splitlines()[4]  # title, header, rule, trained, random


def test_evaluate_codes_without_out_dir_writes_nothing(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  codes, ql, dl = _code_set(2, 8)
  del codes['image_query']  # only t2i and t2t remain
  results = suite.evaluate_codes({'x': codes}, ql, dl, options=_SMALL)
  assert results['files'] == [] and os.listdir(tmp_path) == []
  assert list(results['map']['x']) == ['t2i', 't2t']
  assert 'I->T' not in results['table']
  with pytest.raises(ValueError, match='No retrieval direction'):
    suite.evaluate_set({'image_query': codes['text_query']}, ql, dl)
  with pytest.raises(KeyError, match='image_query'):
    suite.evaluate_set(codes, ql, dl, directions=('i2t',))


def test_options_from_config():
  assert suite.options_from_config(None) == ranking.EvalOptions()
  config = ml_collections.ConfigDict({
      'batch_size': 256, 'plots': True, 'ties': 'tie_aware,index',
      'empty': 'skip', 'top_k': (100, 1000), 'ndcg_k': '10;50',
      'db_block': 4096})
  options = suite.options_from_config(config)
  assert options.ties == ('tie_aware', 'index')
  assert options.empty == 'skip'
  assert options.top_k == (100, 1000) and options.ndcg_k == (10, 50)
  assert options.db_block == 4096
  assert options.precision_at == ranking.EvalOptions().precision_at
  with pytest.raises(ValueError, match='empty'):
    suite.options_from_config({'empty': 'drop'})


def test_headline_follows_first_tie_policy():
  codes, ql, dl = _code_set(3, 8)
  options = ranking.EvalOptions(ties=('tie_aware', 'index'), top_k=(),
                                precision_at=(5,), ndcg_k=())
  results = suite.evaluate_codes({'x': codes}, ql, dl, options=options)
  expected = metrics.cross_modal_map(codes, ql, dl, ties='tie_aware')
  assert results['map']['x'] == pytest.approx(expected, rel=1e-12)
  assert results['table'].startswith('mAP@all (tie-aware;')


def test_curve_plots_need_curves(tmp_path):
  codes, ql, dl = _code_set(4, 8)
  options = ranking.EvalOptions(precision_at=(), radius_curve=False)
  results = suite.evaluate_codes({'x': codes}, ql, dl, options=options,
                                 out_dir=tmp_path)
  # No PR or P@N curve was computed; mAP always is, so its bars are drawn.
  assert sorted(os.listdir(tmp_path)) == ['evaluation.json', 'map.png']
  assert results['files'] == [str(tmp_path / 'evaluation.json'),
                              str(tmp_path / 'map.png')]


def _save(path, seed, bits, db_key='retrieval_labels'):
  codes, ql, dl = _code_set(seed, bits)
  report.save_codes(path, query_labels=ql, **{db_key: dl}, **codes)
  return codes, ql, dl


def test_cli_evaluates_a_directory_of_code_files(tmp_path, capsys):
  root = tmp_path / 'runs'
  expected = {}
  for seed, bits in ((5, 16), (6, 32)):
    os.makedirs(root / f'b{bits}' / 'eval')
    codes, ql, dl = _save(root / f'b{bits}' / 'eval' / 'codes.npz', seed, bits,
                          db_key='db_labels' if bits == 32 else
                          'retrieval_labels')
    expected[f'b{bits}/eval/codes ({bits} bits)'] = metrics.cross_modal_map(
        codes, ql, dl)
  np.savez(root / 'unrelated.npz', x=np.zeros(3))
  (root / 'evaluation.json').write_text('a report written before')
  assert evaluate_cli.main(['--codes', str(root), '--top_k', '10,50',
                            '--precision_at', '1,10', '--ndcg_k', '10']) == 0
  out = capsys.readouterr()
  assert 'skipping' in out.err and 'unrelated.npz' in out.err
  for name in expected:
    assert name in out.out
  # The default output folder leaves the files next to the codes alone.
  assert (root / 'evaluation.json').read_text() == 'a report written before'
  written = report.read_json(root / 'evaluate' / 'evaluation.json')
  assert list(written['map']) == list(expected)
  for name, maps in expected.items():
    assert written['map'][name] == pytest.approx(maps, rel=1e-12)
    assert written['sets'][name]['bits'] == int(name.split('(')[1].split()[0])
  for png in ('pr_curves.png', 'precision_at_n.png', 'map.png'):
    _assert_png(root / 'evaluate' / png)


def test_cli_single_file_options_and_out(tmp_path, capsys):
  path = tmp_path / 'codes.npz'
  codes, ql, dl = _save(path, 7, 24)
  out_dir = tmp_path / 'report'
  assert evaluate_cli.main([
      '--codes', str(path), '--out', str(out_dir), '--ties', 'tie_aware',
      '--empty', 'skip', '--directions', 'i2t,t2t', '--no_plots',
      '--db_block', '37']) == 0
  assert 'tie-aware; queries without a relevant item skipped' in (
      capsys.readouterr().out)
  assert os.listdir(out_dir) == ['evaluation.json']
  written = report.read_json(out_dir / 'evaluation.json')
  maps = written['map']['codes (24 bits)']
  assert list(maps) == ['i2t', 't2t']
  for direction, value in maps.items():
    query, db = metrics.direction_codes(codes, direction)
    assert value == pytest.approx(metrics.mean_average_precision(
        query, db, ql, dl, ties='tie_aware', empty='skip'), rel=1e-12)
  os.makedirs(tmp_path / 'nothing')
  assert evaluate_cli.main(['--codes', str(tmp_path / 'nothing')]) == 1
  with pytest.raises(FileNotFoundError):
    evaluate_cli.main(['--codes', str(tmp_path / 'missing')])


def test_cli_runs_as_a_module(tmp_path):
  _save(tmp_path / 'codes.npz', 8, 16)
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'crossmodal_hash.evaluate', '--codes',
       str(tmp_path), '--no_plots', '--top_k', '10'],
      cwd=_REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert proc.returncode == 0, proc.stderr
  assert 'mAP@all (index order' in proc.stdout
  assert 'codes (16 bits)' in proc.stdout
  assert (tmp_path / 'evaluate' / 'evaluation.json').exists()
