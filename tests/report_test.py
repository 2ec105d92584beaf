"""Tests of crossmodal_hash.evaluation.report and .plots."""
import json
import os
import re

import numpy as np
import pytest

from crossmodal_hash import logging_utils
from crossmodal_hash.evaluation import plots
from crossmodal_hash.evaluation import report

_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'

_ROWS = {
    'SSAH (32 bits)': {'i2t': 0.71234, 't2i': 0.70019, 'i2i': 0.65,
                       't2t': 0.6875},
    'random codes (32 bits)': {'i2t': 0.34101, 't2i': 0.34012, 'i2i': 0.33981,
                               't2t': 0.34049},
}


def _assert_png(path):
  assert os.path.getsize(path) > 1000
  with open(path, 'rb') as f:
    assert f.read(8) == _PNG_MAGIC


def test_format_map_table_contains_names_and_numbers():
  table = report.format_map_table(_ROWS)
  lines = table.splitlines()
  assert len(lines) == 4
  for header in ('I->T', 'T->I', 'I->I', 'T->T'):
    assert header in lines[0]
  assert lines[0].index('I->T') < lines[0].index('T->I') < lines[0].index(
      'I->I') < lines[0].index('T->T')
  assert set(lines[1]) == {'-'}
  assert lines[2].startswith('SSAH (32 bits)')
  assert lines[3].startswith('random codes (32 bits)')
  for number in ('0.7123', '0.7002', '0.6500', '0.6875', '0.3410', '0.3401',
                 '0.3398', '0.3405'):
    assert number in table
  # Fixed width: every line has the same length and the columns line up.
  assert len({len(line) for line in lines}) == 1
  assert lines[2].index('0.7123') == lines[3].index('0.3410')


def test_format_map_table_missing_values_and_subset_of_directions():
  rows = {'a': {'i2t': 0.5, 't2i': float('nan')},
          'b': {'i2t': np.float32(0.25)}}
  table = report.format_map_table(rows, directions=('i2t', 't2i'))
  assert 'I->I' not in table
  lines = table.splitlines()
  assert lines[2].split() == ['a', '0.5000', '-']
  assert lines[3].split() == ['b', '0.2500', '-']


def test_write_json_round_trip_with_numpy(tmp_path):
  path = tmp_path / 'sub' / 'report.json'
  obj = {'map': {'i2t': np.float64(0.5), 't2i': np.float32(0.25)},
         'bits': np.int64(32), 'ok': np.bool_(True),
         'curve': np.arange(3, dtype=np.int32), 'list': (1, np.int8(2)),
         'table': [[np.float16(1.5)]]}
  report.write_json(path, obj)
  expected = {'map': {'i2t': 0.5, 't2i': 0.25}, 'bits': 32, 'ok': True,
              'curve': [0, 1, 2], 'list': [1, 2], 'table': [[1.5]]}
  assert report.read_json(path) == expected
  with open(path) as f:
    text = f.read()
  assert json.loads(text) == expected
  assert '\n  "map"' in text  # pretty-printed
  # Overwriting replaces the file and leaves no temporary file behind.
  report.write_json(path, {'a': 1})
  assert report.read_json(path) == {'a': 1}
  assert os.listdir(path.parent) == ['report.json']


def test_write_json_failure_keeps_old_file(tmp_path):
  path = tmp_path / 'report.json'
  report.write_json(path, {'a': 1})
  with pytest.raises(TypeError):
    report.write_json(path, {'a': object()})
  assert report.read_json(path) == {'a': 1}
  assert os.listdir(tmp_path) == ['report.json']


def test_save_codes_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  codes = np.where(rng.random((7, 16)) < 0.5, -1.0, 1.0).astype(np.float32)
  labels = (rng.random((7, 3)) < 0.5).astype(np.uint8)
  path = tmp_path / 'codes.npz'
  report.save_codes(path, image_db=codes, text_db=codes.astype(np.int32),
                    db_labels=labels)
  loaded = report.load_codes(path)
  assert sorted(loaded) == ['db_labels', 'image_db', 'text_db']
  assert loaded['image_db'].dtype == np.int8
  np.testing.assert_array_equal(loaded['image_db'], codes)
  np.testing.assert_array_equal(loaded['text_db'], codes)
  np.testing.assert_array_equal(loaded['db_labels'], labels)
  assert loaded['db_labels'].dtype == np.uint8
  with np.load(path) as data:  # a plain npz file
    assert sorted(data.files) == ['db_labels', 'image_db', 'text_db']
  with pytest.raises(ValueError, match='image_db'):
    report.save_codes(tmp_path / 'bad.npz', image_db=np.zeros((2, 4)))
  assert sorted(os.listdir(tmp_path)) == ['codes.npz']


def test_plot_training_curves(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  with logging_utils.MetricsWriter(path) as writer:
    for step in range(0, 200, 10):
      for network in ('img', 'txt', 'lab'):
        writer.write({'step': step, 'network': network, 'epoch': step // 100,
                      'loss': np.float32(1.0 / (step + 1))})
    writer.write({'step': 100, 'map/i2t': 0.5, 'map/t2i': 0.4})
    writer.write({'step': 200, 'map/i2t': 0.6, 'map/t2i': 0.45})
  out = tmp_path / 'curves.png'
  plots.plot_training_curves(path, str(out))
  _assert_png(out)


def test_plot_training_curves_negative_loss_and_no_records(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 0, "loss": -1.0}\n{"step": 1, "loss": NaN}\n'
                  '{"step": 2, "loss": 0.5}\n')
  plots.plot_training_curves(str(path), str(tmp_path / 'a.png'))
  _assert_png(tmp_path / 'a.png')
  empty = tmp_path / 'empty.jsonl'
  empty.write_text('')
  plots.plot_training_curves(str(empty), str(tmp_path / 'b.png'))
  _assert_png(tmp_path / 'b.png')


def test_plot_map_bars(tmp_path):
  out = tmp_path / 'bars.png'
  plots.plot_map_bars(_ROWS, str(out))
  _assert_png(out)
  plots.plot_map_bars({'a': {'i2t': 0.5}}, str(tmp_path / 'partial.png'))
  _assert_png(tmp_path / 'partial.png')


def _direction_summary(value):
  return {'map': {'index': value, 'tie_aware': value + 0.001},
          'map_at_k': {'k': [100], 'truncated': [value + 0.1],
                       'dcmh': [value + 0.2]},
          'precision_at_n': {'n': [1, 10, 100], 'index': [0.9, 0.8, 0.7],
                             'tie_aware': [0.91, 0.81, 0.71]},
          'pr_radius': {'radius': [0, 1, 2, 3], 'precision': [0, 0, 0.55, 0.5],
                        'recall': [0, 0, 0.25, 1.0],
                        'num_defined': [0, 0, 3, 4]}}


def test_format_evaluation_table():
  results = {
      'headline': {'metric': 'map', 'ties': 'tie_aware', 'empty': 'skip'},
      'map': {'a (16 bits)': {'i2t': 0.5, 't2i': 0.25},
              'b (32 bits)': {'t2i': 0.125}},
      'sets': {
          'a (16 bits)': {'bits': 16, 'num_queries': 4, 'num_database': 9,
                          'seconds': 0.5,
                          'directions': {'i2t': _direction_summary(0.5),
                                         't2i': _direction_summary(0.25)}},
          'b (32 bits)': {'bits': 32, 'num_queries': 4, 'num_database': 9,
                          'seconds': 0.25,
                          'directions': {'t2i': _direction_summary(0.125)}},
      },
  }
  table = report.format_evaluation_table(results)
  lines = table.splitlines()
  assert lines[0] == ('mAP@all (tie-aware; queries without a relevant item '
                      'skipped)')
  assert 'I->I' not in table and 'T->T' not in table
  assert lines[4].split() == ['b', '(32', 'bits)', '-', '0.1250']
  assert 'a (16 bits): 4 queries x 9 items, 16 bits (0.50 s)' in lines
  start = lines.index('a (16 bits): 4 queries x 9 items, 16 bits (0.50 s)')
  block = lines[start:lines.index('', start)]  # set a's metrics
  cells = [re.split(r'\s{2,}', line.strip()) for line in block[3:]]
  rows = {c[0]: c[1:] for c in cells}
  assert rows['mAP@all (index order)'] == ['0.5000', '0.2500']
  assert rows['mAP@100 (DCMH)'] == ['0.7000', '0.4500']
  assert rows['P@10 (tie-aware)'] == ['0.8100', '0.8100']
  assert 'P@1 (index order)' not in rows  # only N in 10, 100, 1000 are shown
  assert rows['precision (r<=2)'] == ['0.5500', '0.5500']
  assert rows['recall (r<=2)'] == ['0.2500', '0.2500']


def test_training_curves_break_where_a_network_is_not_trained():
  # lab trains passes 0-1 and 4-5, img passes 2-3: no lab line across 2-3.
  points = [(0, 1.0, 0), (10, 0.9, 1), (40, 0.5, 4), (50, 0.4, 5)]
  xs, ys = plots._trained_segments(points)  # pylint: disable=protected-access
  assert xs[:2] == [0, 10] and xs[3:] == [40, 50]
  assert np.isnan(xs[2]) and np.isnan(ys[2])
  # Records without a pass index are joined as before.
  assert plots._trained_segments([(0, 1.0, None), (5, 2.0, None)]) == (  # pylint: disable=protected-access
      [0, 5], [1.0, 2.0])
