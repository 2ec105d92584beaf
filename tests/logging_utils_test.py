"""Tests of crossmodal_hash.logging_utils."""
import io
import json
import logging as std_logging
import os
import re

from absl import logging as absl_logging
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash import logging_utils


class _FakeClock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class _FakeTTY(io.StringIO):

  def isatty(self):
    return True


def test_progress_bar_shows_rate_and_eta():
  clock, stream = _FakeClock(), io.StringIO()
  bar = logging_utils.ProgressBar(1000, 'train', stream=stream, clock=clock,
                                  log_interval_s=0.0)
  for _ in range(370):
    clock.now += 1 / 30
    bar.update(loss=np.float32(0.5234))
  line = stream.getvalue().splitlines()[-1]
  assert line.startswith('train  37% |')
  assert '370/1000' in line
  assert '[00:12<00:21, 30 step/s]' in line
  assert line.endswith('loss=0.5234')
  bar.close()


def test_progress_bar_not_a_tty_prints_lines_rarely():
  clock, stream = _FakeClock(), io.StringIO()
  with logging_utils.ProgressBar(100, 'eval', unit='batch', stream=stream,
                                 clock=clock) as bar:
    for _ in range(100):
      clock.now += 0.5  # 50 s in all: a line every 10 s at most.
      bar.update()
  lines = stream.getvalue().splitlines()
  assert '\r' not in stream.getvalue()
  assert 5 <= len(lines) <= 7
  assert re.search(r'100/100 \[00:50<00:00, 2 batch/s\]', lines[-1])
  assert lines[-1].startswith('eval 100% |██████████|')


def test_progress_bar_tty_redraws_in_place():
  clock, stream = _FakeClock(), _FakeTTY()
  with logging_utils.ProgressBar(10, 'x', stream=stream, clock=clock,
                                 min_interval_s=0.0) as bar:
    for i in range(10):
      clock.now += 1.0
      bar.update(step=i)
  text = stream.getvalue()
  assert text.count('\r') == 10
  assert text.endswith('\n') and text.count('\n') == 1
  assert '10/10 [00:10<00:00, 1 step/s] step=9' in text


def test_progress_bar_resumed_run_and_unknown_total():
  clock, stream = _FakeClock(), io.StringIO()
  with logging_utils.ProgressBar(1000, 'r', stream=stream, clock=clock,
                                 initial=900) as bar:
    clock.now += 10.0
    bar.update(50)
  line = stream.getvalue().splitlines()[-1]
  # 50 steps in 10 s since the resume: 5 step/s, 50 steps left -> 10 s.
  assert '950/1000 [00:10<00:10, 5 step/s]' in line
  stream = io.StringIO()
  with logging_utils.ProgressBar(None, 'u', stream=stream, clock=clock) as bar:
    clock.now += 4.0
    bar.update(8)
  assert stream.getvalue() == 'u 8 [00:04, 2 step/s]\n'


def test_progress_bar_disabled_writes_nothing():
  stream = io.StringIO()
  with logging_utils.ProgressBar(5, 'x', stream=stream, disable=True) as bar:
    bar.update(5)
  assert not stream.getvalue()


def test_metrics_writer_round_trip(tmp_path):
  path = tmp_path / 'logs' / 'metrics.jsonl'
  records = [
      {'step': np.int64(1), 'network': 'img', 'loss': np.float32(0.5),
       'lr': jnp.float32(0.25), 'ok': np.bool_(True)},
      {'step': 2, 'network': 'txt', 'loss': jnp.array(1.5),
       'map/i2t': np.float64(0.75), 'hist': np.arange(3)},
  ]
  with logging_utils.MetricsWriter(path) as writer:
    for record in records:
      writer.write(record)
  lines = path.read_text().splitlines()
  assert len(lines) == 2
  assert json.loads(lines[0]) == {'step': 1, 'network': 'img', 'loss': 0.5,
                                  'lr': 0.25, 'ok': True}
  read = logging_utils.read_metrics(path)
  assert read[1] == {'step': 2, 'network': 'txt', 'loss': 1.5, 'map/i2t': 0.75,
                     'hist': [0, 1, 2]}
  assert type(read[0]['step']) is int and type(read[0]['loss']) is float
  # Appends on reopen (a resumed run).
  with logging_utils.MetricsWriter(path) as writer:
    writer.write({'step': 3, 'loss': float('nan')})
  read = logging_utils.read_metrics(path)
  assert [r['step'] for r in read] == [1, 2, 3]
  assert np.isnan(read[2]['loss'])


def test_metrics_writer_flushes_each_record(tmp_path):
  path = tmp_path / 'm.jsonl'
  writer = logging_utils.MetricsWriter(path)
  writer.write({'step': 1})
  assert logging_utils.read_metrics(path) == [{'step': 1}]
  writer.close()
  with pytest.raises(ValueError, match='closed'):
    writer.write({'step': 2})


def test_metrics_writer_disabled_is_a_no_op(tmp_path):
  path = tmp_path / 'm.jsonl'
  writer = logging_utils.MetricsWriter(path, enabled=False)
  writer.write({'step': 1})
  writer.close()
  assert not path.exists()


def test_read_metrics_drops_truncated_last_line(tmp_path):
  path = tmp_path / 'm.jsonl'
  path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo')
  assert logging_utils.read_metrics(path) == [{'step': 1}, {'step': 2}]
  path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
  with pytest.raises(json.JSONDecodeError):
    logging_utils.read_metrics(path)


def test_quiet_library_info_drops_only_the_packages_info(monkeypatch):
  logger = absl_logging.get_absl_logger()
  monkeypatch.setattr(logger, 'filters', list(logger.filters))  # restored
  before = len(logger.filters)
  logging_utils.quiet_library_info()
  logging_utils.quiet_library_info()  # a second call adds nothing
  assert len(logger.filters) == before + 1

  def shown(path, level):
    return bool(logger.filter(
        logger.makeRecord('absl', level, path, 1, 'message', (), None)))

  orbax = os.path.join(os.sep, 'venv', 'orbax', 'checkpoint', 'manager.py')
  ours = os.path.join(os.sep, 'repo', 'crossmodal_hash', 'main.py')
  assert not shown(orbax, std_logging.INFO)
  assert shown(orbax, std_logging.WARNING)
  assert shown(ours, std_logging.INFO)
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.DEBUG)
  try:
    assert shown(orbax, std_logging.INFO)
  finally:
    absl_logging.set_verbosity(verbosity)


def test_resume_cuts_the_records_of_lost_passes(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  with logging_utils.MetricsWriter(path) as writer:
    for p in range(5):
      writer.write({'pass': p, 'loss': 1.0 / (p + 1)})
    writer.write({'pass': 3, 'eval_map': {'i2t': 0.5}})
    writer.write({'note': 'no pass'})
  # Resumed from the checkpoint after 3 passes: passes 3 and 4 are redone.
  with logging_utils.MetricsWriter(path, resume_pass=3) as writer:
    writer.write({'pass': 3, 'loss': 0.2})
  assert [r.get('pass') for r in logging_utils.read_metrics(path)] == [
      0, 1, 2, None, 3]
  # Without resume_pass (or with nothing to cut) the file is only appended.
  before = path.read_text()
  logging_utils.MetricsWriter(path, resume_pass=10).close()
  assert path.read_text() == before


class _Tty(io.StringIO):

  def isatty(self):
    return True


def test_log_records_clear_the_bar_line_first():
  stream = _Tty()
  handler = absl_logging.get_absl_handler()
  bar = logging_utils.ProgressBar(10, 'train', stream=stream,
                                  clock=_FakeClock(), disable=False)
  bar.update(3)
  drawn = stream.getvalue()
  record = std_logging.LogRecord('orbax', std_logging.WARNING, 'x.py', 1,
                                 'Checkpoint 3 saved', (), None)
  assert handler.filter(record)
  cleared = stream.getvalue()[len(drawn):]
  assert cleared == '\r' + ' ' * len(drawn.lstrip('\r')) + '\r'
  bar.update(1)  # Redrawn at once on its own line.
  assert stream.getvalue().endswith(bar.format())
  bar.close()
  assert not any(isinstance(f, logging_utils._ClearBarFilter)  # pylint: disable=protected-access
                 for f in handler.filters)


def _read_scalars(directory):
  """{tag: [(step, value)]} of every TensorBoard event file under directory.

  Parses the TFRecord framing (length, CRC, Event proto, CRC) with
  tensorboardX's Event message, independently of its writer.
  """
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out = {}
  for name in sorted(os.listdir(directory)):
    data = open(os.path.join(directory, name), 'rb').read()
    pos = 0
    while pos < len(data):
      (length,) = np.frombuffer(data[pos:pos + 8], '<u8')
      event = event_pb2.Event.FromString(
          data[pos + 12:pos + 12 + int(length)])
      pos += 12 + int(length) + 4
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def test_tensorboard_scalars_of_records():
  assert logging_utils.tensorboard_scalars(
      {'pass': 3, 'epoch': 0, 'network': 'img', 'step': 40, 'loss': 1.5,
       'learning_rate': [0.1, 0.2], 'seconds': 2, 'flag': True}) == {
           'img/loss': 1.5, 'img/learning_rate/0': 0.1,
           'img/learning_rate/1': 0.2, 'img/seconds': 2.0}
  assert logging_utils.tensorboard_scalars(
      {'pass': 4, 'step': 50, 'eval_map': {'i2t': 0.5},
       'map/i2t': 0.5}) == {'map/i2t': 0.5}


def test_metrics_writer_mirrors_scalars_to_tensorboard(tmp_path):
  with logging_utils.MetricsWriter(tmp_path / 'metrics.jsonl', enabled=True,
                                   tensorboard_dir=tmp_path / 'tb') as writer:
    writer.write({'step': 10, 'network': 'txt', 'loss': 2.0,
                  'learning_rate': 0.01})
    writer.write({'step': 20, 'network': 'txt', 'loss': 1.0,
                  'learning_rate': 0.005})
  scalars = _read_scalars(tmp_path / 'tb')
  assert scalars['txt/loss'] == [(10, 2.0), (20, 1.0)]
  assert scalars['txt/learning_rate'] == [(10, pytest.approx(0.01)),
                                          (20, pytest.approx(0.005))]
  assert len(logging_utils.read_metrics(tmp_path / 'metrics.jsonl')) == 2


def test_training_writes_tensorboard_events(trained_run):
  """config.train.tensorboard: losses, rates and periodic mAP per step."""
  scalars = _read_scalars(os.path.join(trained_run, 'tensorboard'))
  records = logging_utils.read_metrics(os.path.join(trained_run,
                                                    'metrics.jsonl'))
  for network in ('lab', 'dis', 'img', 'txt'):
    steps = [(r['step'], pytest.approx(r['loss'], rel=1e-6))
             for r in records if r.get('network') == network]
    assert scalars[f'{network}/loss'] == steps
    assert f'{network}/learning_rate' in scalars
  assert [s for s, _ in scalars['map/i2t']] == [
      r['step'] for r in records if 'map/i2t' in r]
