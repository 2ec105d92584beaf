"""A run's files, local or in object storage, through `etils.epath`.

A workdir may be a local folder or a `gs://bucket/...` path (Cloud TPU VMs,
as in big_vision and MaxText; orbax writes checkpoints there through epath
too). Every file a run reads or writes outside its checkpoints goes through
these functions:

  file_io.write_text('gs://b/run/run.json', text)     # atomic
  file_io.save_npz('gs://b/run/split.npz', query=q)   # atomic
  arrays = file_io.load_npz('gs://b/run/split.npz')   # {name: array}

Inputs that only a local file will do for (datasets read through h5py,
scipy.io, PIL or NumPy memory maps; the pretrained CNN-F) are staged:

  local = file_io.local_copy('gs://b/data/mirflickr25k.mat')  # a local path

Writes are atomic. A local file is written to a temporary file in the same
folder and moved onto its name (`os.replace`), so a crash leaves the previous
version; an object store makes an object visible only once its upload is
complete, so there the file is written in one upload.
"""
from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import tempfile
import threading
from typing import Any, BinaryIO, Callable

from etils import epath
import numpy as np

PathLike = str | os.PathLike[str]


def path(p: PathLike) -> epath.Path:
  """`p` as an epath (a local path, or gs://... and the other backends)."""
  return epath.Path(p)


def is_local(p: PathLike) -> bool:
  """Whether `p` is on the local file system (no `scheme://` prefix)."""
  return '://' not in os.fspath(p)


def absolute(p: PathLike) -> str:
  """An absolute local path, or an object-store path as it is."""
  return os.path.abspath(os.fspath(p)) if is_local(p) else os.fspath(p)


def exists(p: PathLike) -> bool:
  return path(p).exists()


def isfile(p: PathLike) -> bool:
  return path(p).is_file()


def isdir(p: PathLike) -> bool:
  return path(p).is_dir()


def makedirs(p: PathLike) -> None:
  """Creates folder `p` and its parents (nothing if it exists)."""
  path(p).mkdir(parents=True, exist_ok=True)


def listdir(p: PathLike) -> list[str]:
  """The names in folder `p`; [] if it does not exist."""
  try:
    return [child.name for child in path(p).iterdir()]
  except OSError:
    return []


def atomic_write(p: PathLike, write_fn: Callable[[BinaryIO], None]) -> None:
  """Calls `write_fn` on a binary file that then becomes `p`, whole or not at
  all (see the module docstring); `p`'s folder is created if needed."""
  if not is_local(p):
    target = path(p)
    makedirs(target.parent)
    buffer = io.BytesIO()  # One upload, after write_fn has succeeded.
    write_fn(buffer)
    target.write_bytes(buffer.getvalue())
    return
  p = os.fspath(p)
  directory = os.path.dirname(os.path.abspath(p))
  os.makedirs(directory, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(
      dir=directory, prefix=f'.{os.path.basename(p)}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      write_fn(f)
      f.flush()
      os.fsync(f.fileno())
    # mkstemp makes the file private (0600); keep an existing file's mode or
    # use the usual 0644 for a new one.
    mode = os.stat(p).st_mode & 0o777 if os.path.exists(p) else 0o644
    os.chmod(tmp_path, mode)
    os.replace(tmp_path, p)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp_path)
    raise


def write_text(p: PathLike, text: str) -> None:
  """Writes `text` (UTF-8) to `p`, atomically."""
  data = text.encode('utf-8')
  atomic_write(p, lambda f: f.write(data))


def read_text(p: PathLike) -> str:
  return path(p).read_text(encoding='utf-8')


def save_npz(p: PathLike, *, compressed: bool = False,
             **arrays: np.ndarray) -> None:
  """`np.savez` (or `np.savez_compressed`) of `arrays` to `p`, atomically;
  `p` is used verbatim (no '.npz' is appended)."""
  save = np.savez_compressed if compressed else np.savez
  atomic_write(p, lambda f: save(f, **arrays))


def load_npz(p: PathLike) -> dict[str, np.ndarray]:
  """{name: array} of an .npz file (no pickled objects)."""
  with path(p).open('rb') as f:
    data = f.read()
  with np.load(io.BytesIO(data), allow_pickle=False) as npz:
    return {name: npz[name] for name in npz.files}


def save_figure(fig: Any, p: PathLike, **savefig_kwargs: Any) -> None:
  """Saves a matplotlib figure as PNG to `p`, atomically."""
  atomic_write(p, lambda f: fig.savefig(f, format='png', **savefig_kwargs))


# `local_copy`'s staging folder for this process (created on first use,
# removed at exit) and the number of copies staged in it.
_STAGING = {'root': '', 'count': 0}
_STAGING_LOCK = threading.Lock()
STAGING_DIR_ENV = 'CROSSMODAL_HASH_STAGING_DIR'


def local_copy(p: PathLike) -> str:
  """A local path with the contents of file or folder `p`.

  A local `p` is returned as it is. An object-store `p` (gs://...) is copied
  into this process's staging folder (a new temporary folder under
  $CROSSMODAL_HASH_STAGING_DIR if set, else under the system's temporary
  folder, removed when the process exits); a folder is copied with
  everything under it. Each call makes a fresh copy, so an object changed
  since an earlier call is read as it is now. For the readers that need a
  local file: h5py, scipy.io, PIL, memory maps.

  Raises:
    FileNotFoundError: naming `p`, if it does not exist.
  """
  if is_local(p):
    return os.fspath(p)
  source = path(p)
  if not source.exists():
    raise FileNotFoundError(f'{os.fspath(p)}: no such file or folder.')
  with _STAGING_LOCK:
    if not _STAGING['root']:
      _STAGING['root'] = tempfile.mkdtemp(
          prefix='crossmodal_hash_staged_',
          dir=os.environ.get(STAGING_DIR_ENV) or None)
      atexit.register(shutil.rmtree, _STAGING['root'], ignore_errors=True)
    # One folder per copy keeps equal names of different paths apart.
    folder = os.path.join(_STAGING['root'], str(_STAGING['count']))
    _STAGING['count'] += 1
  os.makedirs(folder)
  local = os.path.join(folder, source.name or 'staged')
  _copy_tree(source, local)
  return local


def _copy_tree(source: epath.Path, local: str) -> None:
  """Copies file or folder `source` to the local path `local`."""
  if source.is_dir():
    os.makedirs(local, exist_ok=True)
    for child in source.iterdir():
      _copy_tree(child, os.path.join(local, child.name))
    return
  with source.open('rb') as src, open(local, 'wb') as dst:
    shutil.copyfileobj(src, dst, 16 << 20)
