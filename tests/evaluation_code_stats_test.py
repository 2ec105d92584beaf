"""Code-quality diagnostics and the collapse warning of the reports."""
import numpy as np
import pytest

from crossmodal_hash.evaluation import code_stats
from crossmodal_hash.evaluation import report
from crossmodal_hash.evaluation import suite


def _random_codes(n, k, seed=0):
  rng = np.random.default_rng(seed)
  return np.where(rng.random((n, k)) < 0.5, 1, -1).astype(np.int8)


def test_describe_counts_codes_balance_and_correlation():
  codes = np.array([[1, 1, -1], [1, -1, -1], [1, 1, -1], [1, -1, -1]])
  stats = code_stats.describe(codes)
  assert stats['num_items'] == 4 and stats['bits'] == 3
  assert stats['distinct_codes'] == 2
  assert stats['top_code_share'] == 0.5
  assert stats['bit_balance'] == [1.0, 0.5, 0.0]
  assert stats['constant_bits'] == 2
  assert stats['mean_abs_bit_correlation'] is None  # One varying bit.
  # Two identical varying bits correlate perfectly; opposite ones too.
  twins = np.array([[1, 1, -1], [-1, -1, 1], [1, 1, -1], [-1, -1, 1]])
  assert code_stats.describe(twins)['mean_abs_bit_correlation'] == (
      pytest.approx(1.0))


def test_random_codes_are_healthy_and_one_code_is_collapsed():
  healthy = code_stats.describe(_random_codes(500, 32))
  assert healthy['distinct_codes'] == 500
  assert healthy['mean_abs_bit_correlation'] < 0.1
  assert code_stats.collapse_reasons(healthy) == []
  one_code = code_stats.describe(np.ones((400, 16), np.int8))
  assert code_stats.collapse_reasons(one_code) == [
      '1 distinct codes for 400 items', '16 of 16 bits constant',
      '100% of items share one code']
  # Fewer distinct codes than 1% of the items, though every bit varies.
  few = np.repeat(_random_codes(3, 16, seed=1), 200, axis=0)
  reasons = code_stats.collapse_reasons(code_stats.describe(few))
  assert reasons[0] == '3 distinct codes for 600 items'


def test_report_warns_loudly_in_the_table_and_json(tmp_path):
  labels = np.eye(4, dtype=np.uint8)[np.arange(400) % 4]
  collapsed = {'image_query': np.ones((100, 16), np.int8),
               'text_db': _random_codes(300, 16)}
  healthy = {'image_query': _random_codes(100, 16, 2),
             'text_db': _random_codes(300, 16, 3)}
  results = suite.evaluate_codes(
      {'SSAH (16 bits)': collapsed, 'random codes (16 bits)': healthy},
      labels[:100], labels[100:], out_dir=tmp_path, plots=False)
  assert results['warnings'] == [
      'SSAH (16 bits): codes have collapsed: image_query: 1 distinct codes '
      'for 100 items, 16 of 16 bits constant, 100% of items share one code']
  table = results['table']
  assert table.startswith(
      '!' * 72 + '\nWARNING: SSAH (16 bits): codes have collapsed:\n'
      '  image_query: 1 distinct codes for 100 items, 16 of 16 bits constant, '
      '100% of items share one code\n')
  assert table.rstrip().endswith('!' * 72)
  assert 'distinct codes                1 / 100' in table
  written = report.read_json(tmp_path / suite.REPORT_NAME)
  assert written['warnings'] == results['warnings']
  stats = written['sets']['SSAH (16 bits)']['code_stats']
  assert stats['image_query']['distinct_codes'] == 1
  assert stats['text_db']['distinct_codes'] == 300
  assert len(stats['text_db']['bit_balance']) == 16


def test_periodic_summary_logs_a_collapse(caplog):
  arrays = code_stats.describe_set({'image_query': np.ones((50, 8), np.int8),
                                    'text_query': _random_codes(50, 8)})
  summary = code_stats.periodic_summary(arrays)
  assert set(summary) == {'image_query', 'text_query'}
  assert summary['image_query']['distinct_codes'] == 1
  assert summary['image_query']['min_bit_balance'] == 1.0
  assert 'bit_balance' not in summary['image_query']
  assert any('periodic evaluation: codes have collapsed: image_query' in
             r.getMessage() for r in caplog.records)
