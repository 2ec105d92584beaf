"""Every user mistake ends a command with one `error:` line and a non-zero exit.

One test per case of issue 19: (a) a misspelt config key, (b) a missing
config file, (c) NaN/Inf in a named array, (d) unreadable code files in the
evaluate CLI, (e) bad values, (f) Ctrl-C. The commands run as subprocesses,
as a user runs them, on the machine's real devices (one CPU).
"""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from crossmodal_hash import cli
from crossmodal_hash import config_utils
from crossmodal_hash.evaluation import report
from crossmodal_hash.trainers import alternating
import conftest  # pylint: disable=g-bad-import-order
from conftest import TINY_OVERRIDES  # pylint: disable=g-bad-import-order

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The CLI on one real CPU device: a batch of 32 needs no 8-device mesh.
TINY = f'configs/ssah_synthetic.py:{TINY_OVERRIDES}'


def _env():
  return conftest.subprocess_env()


def _run(module, *args, cwd=REPO_ROOT):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=cwd,
                        env=_env(), capture_output=True, text=True,
                        timeout=300, check=False)


def _one_error_line(result):
  """The stderr of a failed command: one line, `error: ...`, after at most
  absl's INFO lines of the run's start (e.g. the JAX devices)."""
  assert result.returncode == 1, result.stderr[-3000:]
  lines = [l for l in result.stderr.strip().splitlines()
           if not re.match(r'I\d{4} ', l)]
  assert len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith('error: ')
  assert 'Traceback' not in result.stderr
  return lines[0]


def test_a_misspelt_config_key(tmp_path):
  result = _run('crossmodal_hash.main', '--config=configs/ssah_synthetic.py',
                '--config.train.batch_sise=64', f'--workdir={tmp_path}')
  line = _one_error_line(result)
  assert line.startswith('error: --config.train.batch_sise: no such config '
                         'field; did you mean "batch_size"'), line
  assert not os.listdir(tmp_path)
  # --verbosity=1 adds the traceback, the error line stays last.
  result = _run('crossmodal_hash.main', '--config=configs/ssah_synthetic.py',
                '--config.train.batch_sise=64', f'--workdir={tmp_path}',
                '--verbosity=1')
  assert result.returncode == 1
  assert 'Traceback' in result.stderr
  assert result.stderr.strip().splitlines()[-1] == line


def test_a_misspelt_config_argument(tmp_path):
  result = _run('crossmodal_hash.main',
                '--config=configs/ssah_synthetic.py:train.bach_size=3',
                f'--workdir={tmp_path}')
  assert "no such field (did you mean 'batch_size'?)" in _one_error_line(
      result)


def test_b_missing_config_file(tmp_path):
  result = _run('crossmodal_hash.main', '--config=configs/ssah_synthetc.py',
                f'--workdir={tmp_path}')
  assert _one_error_line(result) == (
      "error: --config=configs/ssah_synthetc.py: config file "
      "'configs/ssah_synthetc.py' not found; did you mean "
      'configs/ssah_synthetic.py?')


def _wikipedia_file(path, name, row, column, value):
  rng = np.random.default_rng(0)
  arrays = {'I_tr': rng.random((40, 6), np.float32),
            'T_tr': rng.random((40, 4), np.float32),
            'L_tr': np.arange(40) % 3 + 1,
            'I_te': rng.random((10, 6), np.float32),
            'T_te': rng.random((10, 4), np.float32),
            'L_te': np.arange(10) % 3 + 1}
  arrays[name][row, column] = value
  np.savez(path, **arrays)


@pytest.mark.parametrize('name,row,column,value', [
    ('I_tr', 17, 5, 'nan'), ('T_tr', 3, 0, 'nan'), ('I_te', 5, 2, 'inf')])
def test_c_nan_in_a_named_array(tmp_path, name, row, column, value):
  path = tmp_path / 'wiki.npz'
  _wikipedia_file(path, name, row, column, float(value))
  result = _run('crossmodal_hash.main', '--config=configs/ssah_wikipedia.py',
                f'--config.dataset.path={path}',
                f'--workdir={tmp_path}/run')
  assert _one_error_line(result) == (f'error: {path}:{name}: row {row} holds {value} at column '
                  f'{column} (rows with NaN or Inf: {row}); fix or remove '
                  'those rows.')
  assert not os.path.exists(tmp_path / 'run' / 'split.npz')


def test_d_unreadable_code_files(tmp_path):
  rng = np.random.default_rng(0)
  codes = lambda n: np.where(rng.random((n, 16)) < 0.5, 1, -1)
  os.makedirs(tmp_path / 'good')
  report.save_codes(tmp_path / 'good' / 'codes.npz', image_query=codes(20),
                    text_db=codes(60), query_labels=rng.integers(0, 2, (20, 4)),
                    retrieval_labels=rng.integers(0, 2, (60, 4)))
  np.savez(tmp_path / 'pickled.npz',
           image_query=np.array([{'a': 1}], dtype=object))
  whole = (tmp_path / 'good' / 'codes.npz').read_bytes()
  (tmp_path / 'truncated.npz').write_bytes(whole[:len(whole) // 2])

  result = _run('crossmodal_hash.evaluate', '--codes', 'pickled.npz',
                cwd=tmp_path)
  assert _one_error_line(result) == (
      'error: pickled.npz: holds pickled (object) arrays, which are never '
      'loaded (a pickle can run code); save the codes as numeric arrays, e.g. '
      'with crossmodal_hash.evaluation.report.save_codes.')
  result = _run('crossmodal_hash.evaluate', '--codes', 'truncated.npz',
                cwd=tmp_path)
  assert _one_error_line(result).startswith(
      'error: truncated.npz: not a readable .npz file (File is not a zip '
      'file); it is truncated or corrupt')
  # A directory: both are skipped with a warning, the good file evaluated.
  result = _run('crossmodal_hash.evaluate', '--codes', '.', '--no_plots',
                cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  warnings = result.stderr.strip().splitlines()
  assert [w.split(':')[0] for w in warnings] == ['warning', 'warning']
  assert 'pickled.npz: holds pickled' in warnings[0]
  assert 'truncated.npz: not a readable .npz' in warnings[1]
  assert 'good/codes (16 bits)' in result.stdout


@pytest.mark.parametrize('override,message', [
    ('--config.train.batch_size=0',
     'config.train.batch_size=0 is out of range: it must be an integer >= 1.'),
    ('--config.bits=0',
     'config.bits=0 is out of range: it must be an integer >= 1.'),
    ('--config.bits=-8',
     'config.bits=-8 is out of range: it must be an integer >= 1.'),
    ('--config.ssah.num_epochs=0',
     'config.ssah.num_epochs=0 is out of range: it must be an integer >= 1.'),
])
def test_e_bad_values(tmp_path, override, message):
  result = _run('crossmodal_hash.main', '--config=configs/ssah_synthetic.py',
                override, f'--workdir={tmp_path}')
  assert _one_error_line(result) == f'error: {message}'
  assert not os.listdir(tmp_path)  # Nothing written, not even split.npz.


def test_e_dropped_items_are_reported_once(tiny_config, tmp_path, caplog):
  # 256 training items in batches of 40: 6 batches, 16 items left out.
  config = tiny_config('train.batch_size=40')
  # Stopped before the first pass: the note comes with the batch checks.
  stopped = alternating.train_and_evaluate(config, str(tmp_path),
                                           stop_after_passes=0)
  assert stopped == {'stopped_at_pass': 0}
  notes = [r.getMessage() for r in caplog.records
           if 'does not divide' in r.getMessage()]
  assert notes == [config_utils.dropped_items_note(256, 40)]
  assert notes[0].startswith('config.train.batch_size=40 does not divide the '
                             '256 training items: each pass uses 240 and '
                             'leaves out 16')


def _interrupt(workdir, ready):
  """Runs the tiny CLI, sends SIGINT once `ready()`, returns the result."""
  proc = subprocess.Popen(
      [sys.executable, '-m', 'crossmodal_hash.main', f'--config={TINY}',
       f'--workdir={workdir}'], cwd=REPO_ROOT, env=_env(),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 240
  while not ready() and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  stdout, stderr = proc.communicate(timeout=120)
  return proc.returncode, stdout, stderr


def test_f_ctrl_c_while_compiling_and_while_training(tmp_path):
  # While the first pass compiles (its metrics.jsonl is created just before):
  # before this change, a segmentation fault.
  first = tmp_path / 'first'
  code, _, stderr = _interrupt(
      first, lambda: os.path.exists(first / 'metrics.jsonl'))
  assert code == cli.INTERRUPTED_STATUS, stderr[-3000:]
  assert stderr.strip().splitlines()[-1] == (
      'interrupted; re-run the same command to resume from pass 0')
  assert 'Traceback' not in stderr and 'Fatal Python error' not in stderr
  # Once a checkpoint exists, the message names the pass a re-run resumes at.
  later = tmp_path / 'later'
  code, _, stderr = _interrupt(later, lambda: cli.resume_pass(str(later)) > 0)
  assert code == cli.INTERRUPTED_STATUS, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  assert re.fullmatch(
      r'interrupted; re-run the same command to resume from pass \d+', last)
  passes = int(last.split()[-1])
  assert passes > 0
  assert os.path.isdir(later / 'checkpoints' / str(passes))
  assert 'Traceback' not in stderr
