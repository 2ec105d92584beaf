"""What every command line shares: one-line errors and a clean Ctrl-C.

A user's mistake (a misspelt config key, a missing file, a bad value, a corrupt
array) ends a command with one line on stderr and exit status 1:

  error: --config.train.batch_sise: no such config field; did you mean
  "batch_size"? ...

The traceback is printed too only in debug mode (`--verbosity=1` for the absl
commands, `--debug` for `evaluate`). Errors that are not the user's (anything
but the USER_ERRORS below) keep Python's traceback.

Ctrl-C ends a training command with
  interrupted; re-run the same command to resume from pass N
and exit status 130, at once and without unwinding (see
`install_interrupt_handler`: a KeyboardInterrupt raised while XLA compiled
segfaulted).

Typical use (an absl command):

  if __name__ == '__main__':
    cli.run_absl(main, workdir_flag='workdir')

This module imports no JAX: config errors are reported before JAX starts.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import difflib
import glob
import os
import signal
import sys
import traceback
from typing import Any, NoReturn

from absl import app
from absl import flags

from crossmodal_hash import file_io

# The exception types of user mistakes (the project's DataFormatError,
# ConfigError, IncompatibleCheckpointError and SplitMismatchError are
# ValueErrors; NonFiniteError a FloatingPointError; a registry's unknown name
# a KeyError; a missing or unreadable file an OSError).
USER_ERRORS = (ValueError, OSError, KeyError, FloatingPointError)

# Exit status of an interrupted command (128 + SIGINT, as shells report it).
INTERRUPTED_STATUS = 130


def _informative(error: BaseException) -> BaseException:
  """The first exception of a chain of re-raises whose message is not a
  formatted traceback: ml_collections re-raises a config file's error with
  the traceback as its message, and absl wraps that in a flags.Error."""
  seen = set()
  while id(error) not in seen:
    seen.add(id(error))
    if 'Traceback (most recent call last)' not in str(error):
      return error
    inner = error.__cause__ or (None if error.__suppress_context__ else
                                error.__context__)
    if inner is None:
      break
    error = inner
  return error


def message_of(error: BaseException) -> str:
  """The innermost text of an exception, unquoted.

  ml_collections wraps a KeyError's message in an AttributeError (whose text
  is then the repr of the repr); a KeyError quotes its message.
  """
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  if len(error.args) == 1 and isinstance(error.args[0], str):
    text = error.args[0]
  else:
    text = str(error)
  if isinstance(error, OSError) and error.filename and (
      str(error.filename) not in text):
    text = f'{error.filename}: {text}'
  return text.strip()


def fail(text: str, *, debug: bool = False,
         error: BaseException | None = None) -> NoReturn:
  """Prints `error: text` (after the traceback of `error` if debug); exits 1."""
  if debug and error is not None:
    traceback.print_exception(error)
  print(f'error: {text}', file=sys.stderr, flush=True)
  sys.exit(1)


def is_debug() -> bool:
  """Whether absl's --verbosity asks for debug output (tracebacks)."""
  try:
    return flags.FLAGS['verbosity'].value >= 1
  except (KeyError, AttributeError, flags.UnparsedFlagAccessError):
    return False


def resume_pass(workdir: str | None) -> int:
  """The pass a re-run resumes from: the latest finished checkpoint's step.

  orbax writes a step into a temporary folder and renames it to the bare step
  number when it is complete, so only bare numbers count.
  """
  if not workdir:
    return 0
  steps = [int(d) for d in file_io.listdir(os.path.join(workdir, 'checkpoints'))
           if d.isdigit()]
  return max(steps, default=0)


def interrupted_message(workdir: str | None) -> str:
  if workdir is None:
    return 'interrupted'
  return ('interrupted; re-run the same command to resume from pass '
          f'{resume_pass(workdir)}')


def install_interrupt_handler(workdir: Callable[[], str | None]) -> None:
  """Ctrl-C (SIGINT) prints the resume message and exits at once (status 130).

  Nothing is unwound: a KeyboardInterrupt raised inside XLA's compiler
  segfaulted at interpreter exit, and one inside orbax's save logged its
  traceback. Exiting at once loses nothing: metrics.jsonl is flushed record by
  record and is cut back on resume, and orbax renames a checkpoint into place
  only when it is complete, so the latest complete one is where a re-run
  resumes.

  Args:
    workdir: returns the run's directory (read when the signal arrives), for
      the pass to resume from; None for commands without one.
  """

  def handler(signum, frame):
    del signum, frame
    _exit_interrupted(workdir())

  signal.signal(signal.SIGINT, handler)


def _exit_interrupted(workdir: str | None) -> NoReturn:
  sys.stdout.flush()
  print(f'\n{interrupted_message(workdir)}', file=sys.stderr, flush=True)
  # Skips the interpreter's teardown, which races XLA's own threads.
  os._exit(INTERRUPTED_STATUS)  # pylint: disable=protected-access


def _config_file_arg(argv: Sequence[str], name: str) -> str | None:
  """The value of --<name>=... (or --<name> VALUE) in argv, if any."""
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      return arg.split('=', 1)[1]
    if arg == f'--{name}' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def check_config_file(argv: Sequence[str], name: str = 'config') -> None:
  """Fails with one line if --config names a file that does not exist."""
  value = _config_file_arg(argv, name)
  if value is None:
    return
  path = value.split(':', 1)[0]
  if os.path.isfile(path):
    return
  folder = os.path.dirname(path) or '.'
  known = sorted(glob.glob(os.path.join(folder, '*.py')))
  close = difflib.get_close_matches(path, known, n=1)
  hint = (f'did you mean {close[0]}?' if close else
          'the shipped configs are in configs/ (e.g. configs/ssah_synthetic.py)')
  fail(f'--{name}={value}: config file {path!r} not found; {hint}')


def _bad_flag(argv: Sequence[str], text: str) -> str:
  """The command-line argument an error message is about, if one matches."""
  key = text.split('\n', 1)[0].strip('\'"')
  for arg in argv[1:]:
    if arg.startswith('--') and key and key in arg:
      return arg.split('=', 1)[0]
  return ''


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every failure as one `error:` line."""
  check_config_file(argv)
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    cause = _informative(e)
    if isinstance(cause, flags.Error):  # absl's own, one line.
      fail(f'{str(cause).rstrip(".")}. See --helpshort.')
    # A config file or one of its --config.* overrides: ml_collections raises
    # KeyError/AttributeError (a misspelt key, with "Did you mean"),
    # TypeError (a wrong type) and our config_utils its ValueErrors.
    text = message_of(cause)
    first, _, rest = text.partition('\n')
    flag = _bad_flag(argv, first)
    if isinstance(cause, (KeyError, AttributeError)) and flag:
      text = f'{flag}: no such config field' + (
          f'; {rest[0].lower()}{rest[1:]}' if rest.startswith('Did you mean')
          else '')
    elif flag:
      text = f'{flag}: {text}'
    debug = any(a.startswith('--verbosity=') and a.split('=')[1] not in
                ('0', '-1', '-2', '-3') for a in argv)
    fail(f'{text} (config {_config_file_arg(argv, "config")})', debug=debug,
         error=e)


def guarded(main: Callable[[list[str]], Any], *,
            workdir: Callable[[], str | None] = lambda: None,
            debug: Callable[[], bool] = is_debug
           ) -> Callable[[list[str]], Any]:
  """`main` with user errors as one line and Ctrl-C as the resume message.

  Args:
    main: the command, main(argv).
    workdir: returns the run's directory, for the resume message.
    debug: returns whether to print tracebacks too (default: --verbosity>=1).
  """

  def wrapped(argv: list[str]) -> Any:
    install_interrupt_handler(workdir)
    try:
      return main(argv)
    except KeyboardInterrupt:
      _exit_interrupted(workdir())
    except USER_ERRORS as e:
      fail(message_of(e), debug=debug(), error=e)

  return wrapped


def run_absl(main: Callable[[list[str]], Any], *,
             workdir_flag: str | None = None) -> None:
  """`app.run(main)` with `parse_flags` and `guarded`.

  Args:
    main: the command's absl main.
    workdir_flag: the name of the flag holding the run's directory, for the
      resume message of an interrupted run.
  """
  workdir = ((lambda: flags.FLAGS[workdir_flag].value) if workdir_flag else
             (lambda: None))
  app.run(guarded(main, workdir=workdir), flags_parser=parse_flags)
