"""Progress bar and JSON-lines metrics writer; both are silent off process 0.

Typical use in a trainer:

  writer = logging_utils.MetricsWriter(os.path.join(workdir, 'metrics.jsonl'))
  with logging_utils.ProgressBar(num_steps, 'train', initial=step0) as bar:
    for step in range(step0, num_steps):
      loss = ...
      bar.update(loss=loss)
      writer.write({'step': step, 'network': 'img', 'loss': loss})
  writer.close()

Human-readable events go through `absl.logging` as usual;
`quiet_library_info()` keeps the INFO lines of chatty libraries (orbax writes
about twenty per checkpoint) off the console.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
import json
import logging as std_logging
import math
import os
import sys
import time
from typing import Any, TextIO

from absl import logging
import jax
import numpy as np


class _LibraryInfoFilter(std_logging.Filter):
  """Drops records below WARNING logged from inside the given packages."""

  def __init__(self, packages: tuple[str, ...]):
    super().__init__()
    self.packages = packages
    self._dirs = tuple(f'{os.sep}{name}{os.sep}' for name in packages)

  def filter(self, record: std_logging.LogRecord) -> bool:
    if (record.levelno >= std_logging.WARNING or
        logging.get_verbosity() >= logging.DEBUG):
      return True
    return not any(d in record.pathname for d in self._dirs)


def quiet_library_info(packages: tuple[str, ...] = ('orbax',)) -> None:
  """Keeps the packages' INFO records out of absl's log (so off the console).

  Both what they log through absl (orbax) and through Python's loggers (JAX's
  "Unable to initialize backend 'tpu'"), which absl's handler prints. Their
  warnings and errors still show, and so does everything at `--verbosity=1`
  or above. Calling it again with the same packages adds nothing.
  """
  packages = tuple(packages)
  for target in (logging.get_absl_logger(), logging.get_absl_handler()):
    if not any(isinstance(f, _LibraryInfoFilter) and f.packages == packages
               for f in target.filters):
      target.addFilter(_LibraryInfoFilter(packages))


def warn_on_main_process(message: str | None) -> None:
  """Logs `message` as a warning (nothing for None) on process 0 only."""
  if message and _is_main_process():
    logging.warning('%s', message)


class _ClearBarFilter(std_logging.Filter):
  """Clears a progress bar's line before a log record is printed over it.

  The bar redraws itself (on a line of its own) at its next update, so a log
  line never lands in the middle of the bar.
  """

  def __init__(self, bar: 'ProgressBar'):
    super().__init__()
    self.bar = bar

  def filter(self, record: std_logging.LogRecord) -> bool:
    del record
    self.bar.clear()
    return True


def _is_main_process() -> bool:
  return jax.process_index() == 0


def to_jsonable(obj: Any) -> Any:
  """`obj` with NumPy/JAX scalars and arrays turned into Python values.

  Scalars (NumPy, JAX, 0-d arrays) become int/float/bool, arrays become nested
  lists, mappings become dicts with str keys, tuples and lists become lists,
  paths become str. Floats are left as they are, NaN and inf included.

  Args:
    obj: any nesting of dicts, lists, tuples, scalars and arrays.

  Returns:
    An object `json.dumps` accepts.
  """
  if obj is None or isinstance(obj, (bool, int, float, str)):
    return obj
  if isinstance(obj, Mapping):
    return {_json_key(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray) or hasattr(obj, '__array__'):
    return np.asarray(obj).tolist()  # 0-d arrays give a Python scalar.
  raise TypeError(f'Cannot convert {type(obj).__name__} to JSON.')


def _json_key(key: Any) -> str:
  if isinstance(key, str):
    return key
  if isinstance(key, np.generic):
    key = key.item()
  return str(key)


def _format_time(seconds: float) -> str:
  """'mm:ss', or 'h:mm:ss' from one hour on; '?' if unknown."""
  if not math.isfinite(seconds) or seconds < 0:
    return '?'
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f'{hours:d}:{minutes:02d}:{secs:02d}'
  return f'{minutes:02d}:{secs:02d}'


def _format_value(value: Any) -> str:
  """Compact text for a postfix value (floats to 4 significant digits)."""
  if isinstance(value, (bool, np.bool_, str)):
    return str(value)
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  try:
    return f'{float(value):.4g}'
  except (TypeError, ValueError):
    return str(value)


def _format_rate(rate: float) -> str:
  """'30.1', '0.25', '1234'; '?' if unknown."""
  if not math.isfinite(rate):
    return '?'
  return f'{rate:.0f}' if rate >= 100 else f'{rate:.3g}'


class ProgressBar:
  """A tqdm-like text progress bar with rate and ETA.

  Renders, e.g.,
    `train  37% |███▋      | 370/1000 [00:12<00:21, 30.1 step/s] loss=0.5234`.
  On a TTY the line is redrawn in place ('\\r') at most every `min_interval_s`;
  otherwise (log files, captured output) a full line is printed at most every
  `log_interval_s`. The final state is always written by `close()`. Only
  process 0 writes anything. The rate counts the steps done since this bar
  was created (so a resumed run, `initial > 0`, gets a true rate and ETA).

  Usable as a context manager, which calls `close()` on exit.
  """

  _BAR_WIDTH = 10
  _BLOCKS = ' ▏▎▍▌▋▊▉█'

  def __init__(self,
               total: int | None,
               desc: str = '',
               unit: str = 'step',
               stream: TextIO | None = None,
               min_interval_s: float = 0.5,
               *,
               initial: int = 0,
               log_interval_s: float = 10.0,
               clock: Callable[[], float] = time.monotonic,
               disable: bool | None = None):
    """Creates the bar; nothing is written until the first `update`.

    Args:
      total: the number of steps at completion; None if unknown (no bar, no
        percentage, no ETA).
      desc: text before the bar.
      unit: the name of a step, used in the rate ('30.1 step/s').
      stream: where to write; None means sys.stderr (looked up now).
      min_interval_s: minimum time between redraws on a TTY.
      initial: the position to start from (e.g. the step a run resumed at).
      log_interval_s: minimum time between printed lines off a TTY.
      clock: returns the current time in seconds (injectable for tests).
      disable: write nothing; None means disable on processes other than 0.
    """
    self.total = total
    self.desc = desc
    self.unit = unit
    self.n = int(initial)
    self._initial = int(initial)
    self._stream = sys.stderr if stream is None else stream
    self._clock = clock
    self._disabled = (not _is_main_process()) if disable is None else disable
    try:
      self._tty = bool(self._stream.isatty())
    except (AttributeError, ValueError):
      self._tty = False
    self._interval = min_interval_s if self._tty else log_interval_s
    self._start = clock()
    self._last_draw_time = -math.inf
    self._last_drawn_n = None
    self._last_len = 0
    self._postfix: dict[str, Any] = {}
    self._closed = False
    # On a terminal, log records (absl's handler) first clear the bar's line.
    self._log_filter = None
    if self._tty and not self._disabled:
      self._log_filter = _ClearBarFilter(self)
      logging.get_absl_handler().addFilter(self._log_filter)

  def __enter__(self) -> 'ProgressBar':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def update(self, n: int = 1, **postfix: Any) -> None:
    """Advances the bar by `n` steps; keyword arguments replace the postfix.

    Args:
      n: number of steps done since the last call.
      **postfix: values shown after the bar as `name=value` (e.g. loss=0.52);
        NumPy/JAX scalars are fine (converting a JAX array waits for it).
    """
    self.n += n
    if postfix:
      self._postfix = dict(postfix)
    if self._disabled or self._closed:
      return
    now = self._clock()
    finished = self.total is not None and self.n >= self.total
    if finished or now - self._last_draw_time >= self._interval:
      self._draw(now)

  def close(self) -> None:
    """Writes the final state (once) and ends the line."""
    if self._closed:
      return
    self._closed = True
    if self._log_filter is not None:
      logging.get_absl_handler().removeFilter(self._log_filter)
    if self._disabled:
      return
    if self._last_drawn_n != self.n:
      self._draw(self._clock())
    if self._tty:
      self._stream.write('\n')
      self._stream.flush()

  def clear(self) -> None:
    """Blanks the bar's line on a terminal (the next update redraws it)."""
    if not self._tty or self._disabled or self._closed or not self._last_len:
      return
    self._stream.write('\r' + ' ' * self._last_len + '\r')
    self._stream.flush()
    self._last_len = 0
    self._last_draw_time = -math.inf
    self._last_drawn_n = None

  def format(self, now: float | None = None) -> str:
    """The current line of text (without '\\r' or newline)."""
    now = self._clock() if now is None else now
    elapsed = max(now - self._start, 0.0)
    done = self.n - self._initial
    rate = done / elapsed if elapsed > 0 and done > 0 else math.nan
    parts = []
    if self.total:
      frac = min(max(self.n / self.total, 0.0), 1.0)
      parts.append(f'{frac * 100:3.0f}% |{self._bar(frac)}|')
      counts = f'{self.n}/{self.total}'
      eta = ((self.total - self.n) / rate if math.isfinite(rate) else
             (0.0 if self.n >= self.total else math.nan))
      times = f'{_format_time(elapsed)}<{_format_time(max(eta, 0.0))}'
    else:
      counts = f'{self.n}'
      times = _format_time(elapsed)
    rate_text = _format_rate(rate)
    parts.append(f'{counts} [{times}, {rate_text} {self.unit}/s]')
    parts.extend(f'{k}={_format_value(v)}' for k, v in self._postfix.items())
    body = ' '.join(parts)
    return f'{self.desc} {body}' if self.desc else body

  def _bar(self, frac: float) -> str:
    eighths = int(frac * self._BAR_WIDTH * 8)
    full, part = divmod(eighths, 8)
    text = '█' * full
    if full < self._BAR_WIDTH:
      text += self._BLOCKS[part] if part else ' '
    return text.ljust(self._BAR_WIDTH)

  def _draw(self, now: float) -> None:
    line = self.format(now)
    if self._tty:
      pad = max(self._last_len - len(line), 0)
      self._stream.write('\r' + line + ' ' * pad)
    else:
      self._stream.write(line + '\n')
    self._stream.flush()
    self._last_len = len(line)
    self._last_draw_time = now
    self._last_drawn_n = self.n


class MetricsWriter:
  """Appends one JSON object per line to a file; a no-op off process 0.

  The file is opened in append mode, so a resumed run continues the same file;
  with `resume_pass`, the records of passes from that one on (run, but lost
  with the state that was not checkpointed) are first cut, so that the resumed
  run does not repeat them. Each record is flushed as soon as it is written.
  NumPy/JAX scalars and arrays are converted (see `to_jsonable`); NaN and inf
  are written as the tokens `NaN`/`Infinity`, which Python's json module (and
  `read_metrics`) reads.
  """

  def __init__(self, path: str | os.PathLike[str], *,
               enabled: bool | None = None, resume_pass: int | None = None,
               tensorboard_dir: str | os.PathLike[str] | None = None,
               resume_key: str = 'pass'):
    """Opens `path` for appending (creating its directory).

    Args:
      path: the .jsonl file.
      enabled: write records; None means only on process 0.
      resume_pass: drop existing records whose `resume_key` ('pass', or the
        per-step family's 'step_index') is >= this (records without it
        stay); None keeps every record.
      tensorboard_dir: also write every numeric entry of each record as a
        TensorBoard scalar at the record's 'step' (`tensorboard_scalars`)
        into event files there, through tensorboardX.
    """
    self.path = os.fspath(path)
    self._enabled = _is_main_process() if enabled is None else enabled
    self._file = None
    self._tensorboard = None
    if self._enabled:
      directory = os.path.dirname(self.path)
      if directory:
        os.makedirs(directory, exist_ok=True)
      if resume_pass is not None and os.path.exists(self.path):
        _cut_records(self.path, resume_pass, resume_key)
      self._file = open(self.path, 'a', encoding='utf-8')
      if tensorboard_dir:
        import tensorboardX  # pylint: disable=g-import-not-at-top
        self._tensorboard = tensorboardX.SummaryWriter(
            os.fspath(tensorboard_dir))

  def __enter__(self) -> 'MetricsWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def write(self, record: Mapping[str, Any]) -> None:
    """Appends `record` as one line and flushes.

    Args:
      record: a flat or nested mapping, e.g. {'step': 120, 'loss': 0.53}.
    """
    if not self._enabled:
      return
    if self._file is None:
      raise ValueError(f'MetricsWriter({self.path!r}) is closed.')
    line = json.dumps(to_jsonable(dict(record)), ensure_ascii=False)
    self._file.write(line + '\n')
    self._file.flush()
    if self._tensorboard is not None and 'step' in record:
      for tag, value in tensorboard_scalars(record).items():
        self._tensorboard.add_scalar(tag, value, int(record['step']))
      self._tensorboard.flush()

  def close(self) -> None:
    """Closes the file; later writes raise (on process 0)."""
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._tensorboard = None


# Record entries that index the record rather than measure something.
_NOT_SCALARS = ('step', 'pass', 'epoch', 'network', 'eval_map')


def tensorboard_scalars(record: Mapping[str, Any]) -> dict[str, float]:
  """{tag: value} of a metrics record's numeric entries.

  A pass record's entries are tagged '<network>/<name>' (e.g. 'img/loss',
  'img/learning_rate'); entries already holding a '/' ('map/i2t' of the
  periodic evaluation) keep their name; a list entry gets '/<i>' per element
  (a learning rate per network of a joint update).
  """
  network = record.get('network')
  out = {}
  for key, value in to_jsonable(dict(record)).items():
    if key in _NOT_SCALARS:
      continue
    tag = key if ('/' in key or not network) else f'{network}/{key}'
    values = value if isinstance(value, list) else [value]
    for i, v in enumerate(values):
      if isinstance(v, (int, float)) and not isinstance(v, bool):
        out[f'{tag}/{i}' if isinstance(value, list) else tag] = float(v)
  return out


def _cut_records(path: str, resume_pass: int, key: str = 'pass') -> None:
  """Rewrites `path` (atomically) without the records whose `key` (a pass,
  or a step) is >= resume_pass."""
  records = read_metrics(path)
  keep = [r for r in records
          if not (isinstance(r.get(key), int) and r[key] >= resume_pass)]
  with open(path, encoding='utf-8') as f:
    unchanged = len(keep) == len(records) and f.read().endswith('\n')
  if unchanged:
    return
  logging.info('%s: cut %d records of %s %d and later, which the resumed '
               'run repeats.', path, len(records) - len(keep), key, resume_pass)
  tmp = f'{path}.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    for record in keep:
      f.write(json.dumps(record, ensure_ascii=False) + '\n')
  os.replace(tmp, path)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """The records of a JSON-lines file written by `MetricsWriter`, in order.

  Blank lines are skipped; an unparseable *last* line (a write cut short by a
  crash) is dropped with a warning, one elsewhere raises.

  Args:
    path: the .jsonl file.

  Returns:
    One dict per record.
  """
  with open(path, encoding='utf-8') as f:
    lines = [line for line in f.read().splitlines() if line.strip()]
  records = []
  for i, line in enumerate(lines):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines) - 1:
        logging.warning('Dropping a truncated last line of %s: %r', path,
                        line[:80])
      else:
        raise
  return records
