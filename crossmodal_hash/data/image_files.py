"""Images in a folder, listed in an image list, decoded on the fly (Pillow)."""
from __future__ import annotations

import os

import numpy as np
import PIL.Image

from crossmodal_hash import file_io
from crossmodal_hash.data import lazy
from crossmodal_hash.data import validation


def read_image_list(list_path: str, root: str | None = None) -> list[str]:
  """The image paths of an image list, one per line, in item order.

  Args:
    list_path: a text file, one image path per line (blank lines ignored).
    root: directory that relative paths are relative to (default: the list's
      directory); a gs://... URL names remote images.

  Returns:
    Absolute local paths (an image named by URL, gs://..., is staged to a
    local copy: `file_io.local_copy`). Raises a clear error naming the
    missing files, if any.
  """
  if not os.path.isfile(list_path):
    raise FileNotFoundError(f'{list_path}: no such image list.')
  root = root or os.path.dirname(os.path.abspath(list_path))
  with open(list_path, encoding='utf-8') as f:
    names = [line.strip() for line in f if line.strip()]
  if not names:
    raise validation.DataFormatError(f'{list_path}: the image list is empty.')
  # Images named by URL (gs://...) are staged to local copies.
  paths = [os.path.join(root, n) if file_io.is_local(n) else n for n in names]
  missing = [p for p in paths if not (os.path.isfile(p) if file_io.is_local(p)
                                      else file_io.isfile(p))]
  if missing:
    raise FileNotFoundError(
        f'{list_path}: {len(missing)} of {len(paths)} listed images do not '
        f'exist under {root}, e.g. {", ".join(missing[:3])}.')
  return [file_io.local_copy(p) for p in paths]


def decode(path: str, size: int) -> np.ndarray:
  """One image file as [size, size, 3] uint8 RGB (bilinear resize, no crop)."""
  try:
    with PIL.Image.open(path) as image:
      image = image.convert('RGB')
      if image.size != (size, size):
        image = image.resize((size, size), PIL.Image.BILINEAR)
      return np.asarray(image, np.uint8)
  except (OSError, ValueError, PIL.UnidentifiedImageError) as e:
    raise validation.DataFormatError(
        f'{path}: cannot decode the image ({e}); the file may be corrupt, '
        'truncated or not a JPEG/PNG image.') from e


class ImageFiles(lazy.LazyArray):
  """[N, S, S, 3] uint8 images decoded from files when their rows are read."""

  def __init__(self, paths: list[str], size: int, origin: str):
    """Describes the images.

    Args:
      paths: N image files (JPEG, PNG or anything Pillow reads), item order.
      size: S, every image is resized to S x S.
      origin: the image list, for error messages.
    """
    if size < 1:
      raise ValueError(f'image size must be >= 1; got {size}.')
    super().__init__((len(paths), size, size, 3), np.uint8, origin)
    self._paths = list(paths)
    self._size = int(size)

  def _read_rows(self, rows: np.ndarray) -> np.ndarray:
    out = np.empty((len(rows),) + self.shape[1:], np.uint8)
    for j, r in enumerate(rows):
      out[j] = decode(self._paths[r], self._size)
    return out
