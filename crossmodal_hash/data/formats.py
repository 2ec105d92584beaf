"""Readers of the dataset layouts users bring; each returns `MultiModalData`.

Layouts (documented with examples in the README, "Bring your own data"):
  * 'dcmh_mat': one .mat (v7.3 or v5) holding images, texts and labels, e.g.
    the DCMH release `FLICKR-25K.mat` (`images`, `YAll`, `LAll`), and NUS-WIDE,
    MS-COCO, IAPR TC-12 in the same layout. Pixels of a v7.3 file stay on disk.
  * 'split_files': a folder with `<prefix>-iall.mat`, `<prefix>-yall.mat` and
    `<prefix>-lall.mat` (`IAll`, `YAll`, `LAll`), e.g. `mirflickr25k-*.mat`,
    each directly in the folder or in its `IAll/`, `YAll/`, `LAll/` subfolder.
  * 'features': pre-extracted features, `.npz` or `.mat`, keys `image`, `text`,
    `label` and optional `query_index`, `retrieval_index`, `train_index`.
  * 'wikipedia': `.mat` or `.npz` with `I_tr`, `T_tr`, `L_tr`, `I_te`, `T_te`,
    `L_te`; the fixed split (train = retrieval set, test = queries).
  * 'files': an image list (JPEG/PNG decoded on the fly), a text file (a
    matrix, or raw tags with a vocabulary) and a label matrix.
  * 'array_record': a folder written by `python -m crossmodal_hash.data.convert`.

Conventions: arrays may be stored [N, D] or [D, N] (the item axis is the one all
arrays share); class indices may be 0- or 1-based (1 if the smallest is 1);
split indices are 0-based in .npz files and 1-based (MATLAB) in .mat files.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import zipfile
from typing import Any, Callable

import numpy as np

from crossmodal_hash import file_io
from crossmodal_hash.data import image_files
from crossmodal_hash.data import mat_files
from crossmodal_hash.data import text_files
from crossmodal_hash.data import types
from crossmodal_hash.data import validation

DataFormatError = validation.DataFormatError

IMAGE_KEYS = ('images', 'IAll', 'image')
TEXT_KEYS = ('YAll', 'tags', 'texts', 'text')
LABEL_KEYS = ('LAll', 'labels', 'label')
SPLIT_KEYS = ('query_index', 'retrieval_index', 'train_index')
WIKIPEDIA_KEYS = ('I_tr', 'T_tr', 'L_tr', 'I_te', 'T_te', 'L_te')


@dataclasses.dataclass(frozen=True)
class Options:
  """How to read a dataset (the `config.dataset` fields of the same names).

  Attributes:
    image_key, text_key, label_key: .mat/.npz variable names; '' = the usual
      names (IMAGE_KEYS, TEXT_KEYS, LABEL_KEYS).
    file_prefix: 'split_files' prefix, e.g. 'mirflickr25k'; '' = the folder's
      only `*-lall.mat`.
    require_images: False lets 'split_files' and 'files' load texts and labels
      only (images become [N, 0]).
    drop_unlabeled: drop items without any label instead of raising.
    image_list, text_file, vocab_file, label_file: the 'files' layout's files,
      relative to the dataset folder (`vocab_file` set: `text_file` holds raw
      tags).
    image_size: 'files' images are resized to image_size x image_size.
  """
  image_key: str = ''
  text_key: str = ''
  label_key: str = ''
  file_prefix: str = ''
  require_images: bool = True
  drop_unlabeled: bool = False
  image_list: str = ''
  text_file: str = ''
  vocab_file: str = ''
  label_file: str = ''
  image_size: int = 224


def _keys(override: str, defaults: tuple[str, ...]) -> tuple[str, ...]:
  return (override,) if override else defaults


def read_dcmh_mat(path: str, options: Options = Options()
                 ) -> types.MultiModalData:
  """One .mat with images ([H, W, 3, N] etc. pixels, or [N, D] features),
  texts (`YAll`, [N, V]) and labels (`LAll`, [N, L])."""
  with mat_files.MatFile(path) as f:
    keys = {
        'images': f.find(_keys(options.image_key, IMAGE_KEYS), 'images'),
        'texts': f.find(_keys(options.text_key, TEXT_KEYS), 'texts'),
        'labels': f.find(_keys(options.label_key, LABEL_KEYS), 'labels'),
    }
    shapes = {name: f.shape(key) for name, key in keys.items()}
    n = mat_files.infer_num_items(shapes, path, prefer='labels')
    images = _images_from(f, keys['images'], n)
    texts = mat_files.rows_first(f.read(keys['texts']), n,
                                 f'{path}:{keys["texts"]}')
    labels = mat_files.rows_first(f.read(keys['labels']), n,
                                  f'{path}:{keys["labels"]}')
  return validation.make_data(images, texts, labels, where=path,
                              drop_unlabeled=options.drop_unlabeled,
                              names=keys)


def _images_from(f: mat_files.MatFile, key: str, n: int) -> Any:
  if len(f.shape(key)) == 4:
    return f.pixels(key, n)
  return mat_files.rows_first(f.read(key), n, f'{f.path}:{key}')


def _find_split_file(directory: str, prefix: str, kind: str) -> str | None:
  for folder in (directory, os.path.join(directory, kind.upper()[0] + 'All')):
    path = os.path.join(folder, f'{prefix}-{kind}.mat')
    if os.path.isfile(path):
      return path
  return None


def split_file_prefix(directory: str) -> str:
  """The prefix of the folder's only `<prefix>-lall.mat` (in it or LAll/)."""
  found = sorted({os.path.basename(p)[:-len('-lall.mat')] for p in
                  glob.glob(os.path.join(directory, '*-lall.mat')) +
                  glob.glob(os.path.join(directory, 'LAll', '*-lall.mat'))})
  if not found:
    raise FileNotFoundError(f'{directory}: no <prefix>-lall.mat in the folder '
                            'or its LAll/ subfolder.')
  if len(found) > 1:
    raise DataFormatError(f'{directory}: several split-file sets '
                          f'({", ".join(found)}); set '
                          'config.dataset.file_prefix to one of them.')
  return found[0]


def read_split_files(directory: str, options: Options = Options()
                    ) -> types.MultiModalData:
  """`<prefix>-iall.mat` (`IAll`), `-yall.mat` (`YAll`), `-lall.mat` (`LAll`)."""
  prefix = options.file_prefix or split_file_prefix(directory)
  paths = {kind: _find_split_file(directory, prefix, kind)
           for kind in ('iall', 'yall', 'lall')}
  for kind in ('yall', 'lall') + (('iall',) if options.require_images else ()):
    if paths[kind] is None:
      hint = (' (to load texts and labels only, set require_images=False: '
              '--config.dataset.require_images=False, or convert\'s '
              '--options=require_images=false)' if kind == 'iall' else '')
      raise FileNotFoundError(
          f'{directory}: missing {prefix}-{kind}.mat (looked in the folder '
          f'and its {kind[0].upper()}All/ subfolder){hint}.')
  where = ', '.join(p for p in paths.values() if p)
  with mat_files.MatFile(paths['lall']) as f:
    label_key = f.find(_keys(options.label_key, LABEL_KEYS), 'labels')
    labels = f.read(label_key)
  with mat_files.MatFile(paths['yall']) as f:
    texts = f.read(f.find(_keys(options.text_key, TEXT_KEYS), 'texts'))
  shapes = {'labels': labels.shape, 'texts': texts.shape}
  image_file = None
  if paths['iall'] is not None:
    image_file = mat_files.MatFile(paths['iall'])
    image_key = image_file.find(_keys(options.image_key, IMAGE_KEYS), 'images')
    shapes['images'] = image_file.shape(image_key)
  try:
    n = mat_files.infer_num_items(shapes, where, prefer='labels')
    images = (_images_from(image_file, image_key, n) if image_file else
              validation.no_images(n))
  finally:
    if image_file is not None:
      image_file.close()
  texts = mat_files.rows_first(texts, n, paths['yall'])
  labels = mat_files.rows_first(labels, n, paths['lall'])
  return validation.make_data(images, texts, labels, where=where,
                              drop_unlabeled=options.drop_unlabeled)


class _NpzFile:
  """The .npz counterpart of `MatFile` (arrays stored [N, ...])."""

  def __init__(self, path: str):
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path}: no such file.')
    self.path = path
    try:
      with np.load(path, allow_pickle=False) as f:
        self._arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise DataFormatError(f'{path}: cannot read the .npz file ({e}); it may '
                            'be truncated or corrupt.') from e

  def keys(self) -> list[str]:
    return sorted(self._arrays)

  def __contains__(self, key: str) -> bool:
    return key in self._arrays

  def find(self, candidates: tuple[str, ...], what: str) -> str:
    for key in candidates:
      if key in self:
        return key
    raise DataFormatError(
        f'{self.path}: missing key for the {what} (looked for '
        f'{", ".join(candidates)}); the file holds: '
        f'{", ".join(self.keys()) or "(nothing)"}.')

  def shape(self, key: str) -> tuple[int, ...]:
    return self._arrays[key].shape

  def read(self, key: str) -> np.ndarray:
    return self._arrays[key]

  def close(self) -> None:
    pass


def _open_arrays(path: str) -> Any:
  if path.lower().endswith('.npz'):
    return _NpzFile(path)
  return mat_files.MatFile(path)


def _label_rows(raw: np.ndarray, n: int, where: str) -> np.ndarray:
  """Labels as [N, L] multi-hot: class indices ([N], [N, 1], [1, N]) become
  one-hot; 2-D multi-hot arrays are oriented item-first."""
  if raw.ndim == 1 or (raw.ndim == 2 and 1 in raw.shape and n != 1):
    return validation.class_indices_to_one_hot(raw, where)
  return mat_files.rows_first(raw, n, where)


def read_features(path: str, options: Options = Options()
                 ) -> types.MultiModalData:
  """Pre-extracted features: `image` [N, D], `text` [N, V], `label` [N, L] or
  [N] class indices, optional split index arrays (0-based in .npz, 1-based in
  .mat)."""
  f = _open_arrays(path)
  try:
    keys = {
        'images': f.find(_keys(options.image_key, ('image',) + IMAGE_KEYS),
                         'image features'),
        'texts': f.find(_keys(options.text_key, ('text',) + TEXT_KEYS),
                        'texts'),
        'labels': f.find(_keys(options.label_key, ('label',) + LABEL_KEYS),
                         'labels'),
    }
    shapes = {name: f.shape(key) for name, key in keys.items()}
    n = mat_files.infer_num_items(shapes, path, prefer='images')
    images = _images_from(f, keys['images'], n) if isinstance(
        f, mat_files.MatFile) else f.read(keys['images'])
    if not isinstance(f, mat_files.MatFile) and images.ndim == 2:
      images = mat_files.rows_first(images, n, f'{path}:{keys["images"]}')
    texts = mat_files.rows_first(f.read(keys['texts']), n,
                                 f'{path}:{keys["texts"]}')
    labels = _label_rows(f.read(keys['labels']), n, f'{path}:{keys["labels"]}')
    present = [k for k in SPLIT_KEYS if k in f]
    split = None
    if present:
      base = 1 if isinstance(f, mat_files.MatFile) else 0
      if 'query_index' not in present or 'retrieval_index' not in present:
        raise DataFormatError(f'{path}: split arrays need both query_index and '
                              f'retrieval_index; found only '
                              f'{", ".join(present)}.')
      index = {k: validation.as_index(f.read(k), n, f'{path}:{k}', base)
               for k in present}
      split = types.Split(query=index['query_index'],
                          retrieval=index['retrieval_index'],
                          train=index.get('train_index',
                                          index['retrieval_index']))
  finally:
    f.close()
  return validation.make_data(images, texts, labels, where=path, split=split,
                              drop_unlabeled=options.drop_unlabeled,
                              names=keys)


def read_wikipedia(path: str, options: Options = Options()
                  ) -> types.MultiModalData:
  """`I_tr`, `T_tr`, `L_tr`, `I_te`, `T_te`, `L_te`: the train items (the
  retrieval and training set) then the test items (the queries)."""
  f = _open_arrays(path)
  try:
    parts = {}
    for part in ('tr', 'te'):
      keys = {m: f.find((f'{m}_{part}',), f'{m}_{part}') for m in 'ITL'}
      shapes = {m: f.shape(k) for m, k in keys.items()}
      n = mat_files.infer_num_items(shapes, path, prefer='I')
      parts[part] = (
          mat_files.rows_first(np.asarray(f.read(keys['I'])), n,
                               f'{path}:I_{part}'),
          mat_files.rows_first(np.asarray(f.read(keys['T'])), n,
                               f'{path}:T_{part}'),
          np.asarray(f.read(keys['L'])), n)
  finally:
    f.close()
  (i_tr, t_tr, l_tr, n_tr), (i_te, t_te, l_te, n_te) = parts['tr'], parts['te']
  # Checked before the train and test rows are joined, so that an error names
  # the array and the row within it.
  for name, array in (('I_tr', i_tr), ('T_tr', t_tr), ('L_tr', l_tr),
                      ('I_te', i_te), ('T_te', t_te), ('L_te', l_te)):
    validation.check_finite(array, f'{path}:{name}')
  is_index = [l.ndim == 1 or 1 in l.shape for l in (l_tr, l_te)]
  if all(is_index):
    labels = validation.class_indices_to_one_hot(
        np.concatenate([l_tr.reshape(-1), l_te.reshape(-1)]),
        f'{path}:L_tr/L_te')
  elif not any(is_index):
    l_tr = mat_files.rows_first(l_tr, n_tr, f'{path}:L_tr')
    l_te = mat_files.rows_first(l_te, n_te, f'{path}:L_te')
    if l_tr.shape[1] != l_te.shape[1]:
      raise DataFormatError(f'{path}: L_tr has {l_tr.shape[1]} classes but '
                            f'L_te has {l_te.shape[1]}.')
    if not options.drop_unlabeled:
      for name, part in (('L_tr', l_tr), ('L_te', l_te)):
        validation.unlabeled_rows(validation.as_labels(part, f'{path}:{name}'),
                                  f'{path}:{name}')
    labels = np.concatenate([l_tr, l_te])
  else:
    raise DataFormatError(f'{path}: L_tr and L_te must both be class indices '
                          'or both one-hot.')
  for name, a, b in (('I', i_tr, i_te), ('T', t_tr, t_te)):
    if a.shape[1] != b.shape[1]:
      raise DataFormatError(f'{path}: {name}_tr has {a.shape[1]} dimensions '
                            f'but {name}_te has {b.shape[1]}.')
  train = np.arange(n_tr, dtype=np.int64)
  split = types.Split(query=np.arange(n_tr, n_tr + n_te, dtype=np.int64),
                      retrieval=train, train=train)
  return validation.make_data(np.concatenate([i_tr, i_te]),
                              np.concatenate([t_tr, t_te]), labels,
                              where=path, split=split,
                              drop_unlabeled=options.drop_unlabeled)


def read_files(directory: str, options: Options) -> types.MultiModalData:
  """An image list, a text file (matrix, or raw tags + vocabulary) and a label
  matrix, each named in `options` relative to `directory`."""
  def resolve(name: str) -> str:
    if not file_io.is_local(name):
      return file_io.local_copy(name)
    return name if os.path.isabs(name) else os.path.join(directory, name)

  if not options.text_file or not options.label_file:
    raise ValueError('The "files" layout needs config.dataset.text_file and '
                     'config.dataset.label_file (and image_list, unless '
                     'require_images=False).')
  text_path, label_path = resolve(options.text_file), resolve(
      options.label_file)
  if options.vocab_file:
    texts = text_files.tags_to_bag_of_words(text_path,
                                            resolve(options.vocab_file))
  else:
    texts = text_files.read_matrix(text_path, options.text_key)
  raw_labels = text_files.read_matrix(label_path, options.label_key)
  n = len(texts)
  labels = _label_rows(raw_labels, n, label_path)
  if options.image_list:
    list_path = resolve(options.image_list)
    # A list named by URL names its images relative to its own URL.
    root = (None if file_io.is_local(options.image_list) else
            options.image_list.rsplit('/', 1)[0])
    images = image_files.ImageFiles(
        image_files.read_image_list(list_path, root), options.image_size,
        list_path)
  elif options.require_images:
    raise ValueError('The "files" layout needs config.dataset.image_list (or '
                     'require_images=False for texts and labels only).')
  else:
    images = validation.no_images(n)
  where = ', '.join([text_path, label_path] + (
      [resolve(options.image_list)] if options.image_list else []))
  return validation.make_data(images, texts, labels, where=where,
                              drop_unlabeled=options.drop_unlabeled)


def _read_array_record(path: str, options: Options) -> types.MultiModalData:
  # Imported here: ArrayRecord is only needed for this format.
  from crossmodal_hash.data import array_record  # pylint: disable=g-import-not-at-top
  del options
  return array_record.load(path)


READERS: dict[str, Callable[[str, Options], types.MultiModalData]] = {
    'dcmh_mat': read_dcmh_mat,
    'split_files': read_split_files,
    'features': read_features,
    'wikipedia': read_wikipedia,
    'files': read_files,
    'array_record': _read_array_record,
}


def detect_format(path: str, options: Options = Options()) -> str:
  """The layout of `path`, from its type and the keys it holds."""
  if options.text_file or options.label_file:
    return 'files'
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, 'metadata.json')):
      return 'array_record'
    if options.file_prefix or glob.glob(os.path.join(
        path, '*-lall.mat')) or glob.glob(os.path.join(path, 'LAll',
                                                       '*-lall.mat')):
      return 'split_files'
    raise DataFormatError(
        f'{path}: a folder without <prefix>-lall.mat split files or an '
        'ArrayRecord metadata.json; for an image list with text and label '
        'files set config.dataset.text_file and label_file.')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no such file or folder.')
  f = _open_arrays(path)
  try:
    keys = set(f.keys())
  finally:
    f.close()
  if {'I_tr', 'L_tr'} <= keys:
    return 'wikipedia'
  if 'image' in keys or 'label' in keys:
    return 'features'
  if keys & set(LABEL_KEYS) and keys & set(TEXT_KEYS):
    return 'dcmh_mat'
  raise DataFormatError(
      f'{path}: cannot tell the layout from its keys '
      f'({", ".join(sorted(keys))}); expected images/YAll/LAll (DCMH), image/text/label (features) or '
      'I_tr/T_tr/L_tr/I_te/T_te/L_te (Wikipedia). Set config.dataset.format.')


def load(path: str, layout: str = 'auto',
         options: Options = Options()) -> types.MultiModalData:
  """Reads the dataset at `path` in `layout` ('auto': detected).

  `path` may be in object storage (gs://...): the file or folder is staged
  to a local copy first (`file_io.local_copy`), as are the 'files' layout's
  files named by URL in `options`.
  """
  path = file_io.local_copy(os.path.expanduser(path))
  if layout == 'auto':
    layout = detect_format(path, options)
  if layout not in READERS:
    raise ValueError(f'Unknown dataset format {layout!r}; known: auto, '
                     f'{", ".join(sorted(READERS))}.')
  if layout != 'files' and not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no such file or folder.')
  return READERS[layout](path, options)
