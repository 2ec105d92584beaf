"""Encoding items through a trained run into index files (`encode.py`'s library).

See `encode.py` for the command line and the files written. The pieces:
`run_dataset_items`, `dataset_items` and `raw_items` gather what to encode;
`write` encodes each modality in batches over the run's mesh and writes or
appends `<modality>.cmhidx` (a Hamming index of codes, or a cosine index of
real-valued embeddings, `index_kind`) and `<modality>.items.jsonl`;
`load_index` and `check_same_run` refuse an index of another run or
checkpoint, or of a kind the run does not write.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Sequence

from absl import logging
import numpy as np

from crossmodal_hash import file_io
from crossmodal_hash import run_artifacts
from crossmodal_hash import sharding
from crossmodal_hash.data import formats
from crossmodal_hash.data import image_files
from crossmodal_hash.data import registry as data_registry
from crossmodal_hash.data import splits
from crossmodal_hash.data import text_files
from crossmodal_hash.retrieval import index as index_lib
from crossmodal_hash.trainers import evaluation_hooks

MODALITIES = {'image': 'img', 'text': 'txt'}
ITEMS = ('retrieval', 'query', 'train', 'all')
MAX_TAGS = 30  # Tags kept per item record.


class RunMismatchError(ValueError):
  """An index and a checkpoint that come from different runs or steps."""


def index_path(directory: str, modality: str) -> str:
  return os.path.join(directory, f'{modality}.cmhidx')


def items_path(directory: str, modality: str) -> str:
  return os.path.join(directory, f'{modality}.items.jsonl')


@dataclasses.dataclass
class Items:
  """Items to encode; row i of every array is item i.

  Attributes:
    ids: [N] strings.
    images: [N, ...] raw pixels or features (may be lazy), or None.
    texts: [N, V] bag of words or text features, or None.
    records: [N] dicts for display: 'labels' (names), 'tags' (words),
      'image' (where the pixels are: {'run_row': r}, {'data': {...}, 'row':
      r} or {'file': path}), each None where unknown.
  """
  ids: list[str]
  images: Any
  texts: Any
  records: list[dict[str, Any]]

  def inputs(self, modality: str) -> Any:
    return self.images if modality == 'image' else self.texts


def _records(info: run_artifacts.RunInfo, labels, texts, images, n: int
            ) -> list[dict[str, Any]]:
  """Display records of n items from their labels, texts and image places."""
  out = []
  words = info.vocabulary
  for i in range(n):
    record = {'labels': None, 'tags': None, 'image': images[i]}
    if labels is not None:
      record['labels'] = [info.label_name(int(j))
                          for j in np.flatnonzero(labels[i])]
    if texts is not None and words is not None and texts.dtype == np.uint8:
      record['tags'] = [words[int(j)]
                        for j in np.flatnonzero(texts[i])[:MAX_TAGS]]
    out.append(record)
  return out


def run_dataset_items(info: run_artifacts.RunInfo, which: str,
                      workdir: str) -> Items:
  """Items of the run's own dataset: its retrieval, query, train set or all.

  The split is the run's `<workdir>/split.npz` (its checksum is checked).
  """
  if which not in ITEMS:
    raise ValueError(f'--items={which!r}; expected one of {ITEMS}.')
  data = data_registry.DATASETS.get(info.config.dataset.name)(
      info.config.dataset)
  if which == 'all':
    rows = np.arange(len(data))
  else:
    split = splits.load(os.path.join(workdir, 'split.npz'))
    if splits.checksum(split) != info.split_sha256:
      raise run_artifacts.RunError(
          f'{os.path.join(workdir, "split.npz")} does not hold the split the '
          'run trained on (SHA-256 differs from run.json).')
    rows = np.asarray(getattr(split, which))
  view = data.take(rows)
  records = _records(info, view.labels, view.texts,
                     [{'run_row': int(r)} for r in rows], len(rows))
  return Items([str(int(r)) for r in rows], view.images, view.texts, records)


def read_options(options: dict[str, str]) -> formats.Options:
  """`formats.Options` from {field: value as text} (e.g. --data_options)."""
  fields = {f.name: f for f in dataclasses.fields(formats.Options)}
  unknown = sorted(set(options) - set(fields))
  if unknown:
    raise ValueError(f'--data_options: unknown options {unknown}; known: '
                     f'{", ".join(sorted(fields))}.')
  parsed = {}
  for name, text in options.items():
    default = fields[name].default
    parsed[name] = (str(text).lower() in ('1', 'true')
                    if isinstance(default, bool) else type(default)(text))
  return formats.Options(**parsed)


def dataset_items(info: run_artifacts.RunInfo, path: str, layout: str,
                  options: dict[str, str]) -> Items:
  """Every item of a dataset file/folder in any layout the readers accept."""
  data = formats.load(path, layout, read_options(options))
  source = {'path': file_io.absolute(path), 'format': layout,
            'options': dict(options)}
  name = os.path.basename(os.path.normpath(path))
  records = _records(info, data.labels, data.texts,
                     [{'data': source, 'row': i} for i in range(len(data))],
                     len(data))
  return Items([f'{name}:{i}' for i in range(len(data))],
               data.images if data.has_images else None, data.texts, records)


def expand_image_files(spec: str) -> list[str]:
  """Paths from comma-separated files or globs, or an image list (.txt)."""
  if spec.endswith('.txt') and os.path.isfile(spec):
    return image_files.read_image_list(spec)
  paths = []
  for part in filter(None, (p.strip() for p in spec.split(','))):
    matches = sorted(glob.glob(os.path.expanduser(part)))
    if not matches:
      raise FileNotFoundError(f'{part}: no such image file.')
    paths.extend(matches)
  return paths


def raw_items(info: run_artifacts.RunInfo, *, image_spec: str = '',
              features: str = '', tag_lines: str = '',
              text_features: str = '') -> Items:
  """Items from raw inputs: image files or a features file for the image
  side, raw tag lines (on the run's vocabulary) or a text feature matrix for
  the text side. With both sides, row i of each is item i."""
  images = texts = None
  ids = None
  places = None
  if image_spec and features:
    raise ValueError('Give --image_files or --features, not both.')
  if image_spec:
    if len(info.image_shape) != 3:
      raise ValueError(f'The run encodes images of shape {info.image_shape}; '
                       'image files are for runs on [H, W, 3] pixels.')
    paths = expand_image_files(image_spec)
    images = image_files.ImageFiles(paths, info.image_shape[0], image_spec)
    ids = paths
    places = [{'file': os.path.abspath(p)} for p in paths]
  elif features:
    images = np.asarray(text_files.read_matrix(features), np.float32)
    if images.ndim != 2 or images.shape[1:] != info.image_shape:
      raise ValueError(f'{features}: features of shape {images.shape}; the run '
                       f'encodes images of shape [N, {list(info.image_shape)}].')
  if tag_lines and text_features:
    raise ValueError('Give --tag_lines or --text_features, not both.')
  if tag_lines:
    if info.vocabulary is None:
      raise ValueError(f'{tag_lines}: the run has no vocabulary (its texts are '
                       'features); use --text_features.')
    with open(tag_lines, encoding='utf-8') as f:
      lines = f.read().splitlines()
    if not lines:
      raise ValueError(f'{tag_lines}: the tag file is empty.')
    texts = text_files.bag_of_words(lines, info.vocabulary)
  elif text_features:
    texts = np.asarray(text_files.read_matrix(text_features), np.float32)
    if texts.ndim != 2 or texts.shape[1] != info.text_dim:
      raise ValueError(f'{text_features}: shape {texts.shape}; the run encodes '
                       f'[N, {info.text_dim}] texts.')
  sizes = {len(x) for x in (images, texts) if x is not None}
  if not sizes:
    raise ValueError('Nothing to encode: give --image_files, --features, '
                     '--tag_lines or --text_features.')
  if len(sizes) > 1:
    raise ValueError(f'The image side has {len(images)} items and the text '
                     f'side {len(texts)}; row i of each must be item i.')
  n = sizes.pop()
  if ids is None:
    stem = os.path.basename(features or tag_lines or text_features)
    ids = [f'{stem}:{i}' for i in range(n)]
  records = _records(info, None, texts, places or [None] * n, n)
  return Items(list(ids), images, texts, records)


def index_kind(run: run_artifacts.Run, sign_codes: bool = False) -> str:
  """The kind of index `run` writes: 'hamming' for a method of binary codes,
  'cosine' for one of real-valued embeddings, unless `sign_codes` asks for
  the Hamming index of their sign() codes (a no-op for a binary method)."""
  if evaluation_hooks.output_kind(run.method) == 'binary' or sign_codes:
    return 'hamming'
  return 'cosine'


def index_rows(outputs: np.ndarray, kind: str) -> np.ndarray:
  """What an index of `kind` holds for a method's outputs ([N, K] ±1 codes or
  [N, D] embeddings): [N, D] float32 embeddings ('cosine'), or [N, K] int8
  ±1 codes ('hamming': codes as they are, real embeddings by their sign)."""
  if kind == 'cosine':
    return np.asarray(outputs, np.float32)
  return evaluation_hooks.sign_codes(outputs)


def encode_items(run: run_artifacts.Run, modality: str, inputs: Any, *,
                 batch_size: int = 256, sign_codes: bool = False
                ) -> np.ndarray:
  """What the index of `modality` holds for `inputs` (batches over the
  run's mesh): [N, K] int8 ±1 codes, or, for a method of real-valued outputs,
  [N, D] float32 embeddings (their int8 sign() codes with `sign_codes`)."""
  per = sharding.data_parallel_size(run.mesh)
  batch_size = -(-batch_size // per) * per
  out = evaluation_hooks.encode(
      run.method, run.params, MODALITIES[modality], inputs,
      batch_size=batch_size, mesh=run.mesh, image_stats=run.info.image_stats)
  return index_rows(out, index_kind(run, sign_codes))


def check_same_run(index: index_lib.HammingIndex | index_lib.CosineIndex,
                   path: str, run: run_artifacts.Run) -> None:
  """Refuses an index whose codes another run or checkpoint made."""
  meta, ours = index.metadata, run.fingerprint
  keys = ('config_sha256', 'split_sha256', 'checkpoint', 'step')
  if any(meta.get(k) != ours[k] for k in keys):
    short = lambda k, v: str(v)[:12] if k.endswith('sha256') else str(v)
    theirs = ', '.join(f'{k} {short(k, meta.get(k))}' for k in keys)
    mine = ', '.join(f'{k} {short(k, ours[k])}' for k in keys)
    raise RunMismatchError(
        f'{path} was encoded by run {meta.get("workdir", "<unknown>")} '
        f'({theirs}), but the checkpoint is {run.workdir} ({mine}). Codes of '
        'different runs or checkpoints are not comparable: encode into '
        'another --out, or use the run that made the index.')


def load_index(path: str, run: run_artifacts.Run, *, kind: str | None = None,
               **kwargs) -> index_lib.HammingIndex | index_lib.CosineIndex:
  """An index file of `run` (refused if another run or checkpoint made it).

  Args:
    path: the file.
    run: the run.
    kind: 'hamming' or 'cosine' when the caller needs that kind (None: the
      file's, among those the run can write).
    **kwargs: the index's options (mesh, ...).

  Raises:
    IndexFileError: naming the file: another kind than asked, a cosine
      index for a run of binary codes, codes of another length.
    RunMismatchError: another run or checkpoint made it.
  """
  options = dict(kwargs)
  binary = evaluation_hooks.output_kind(run.method) == 'binary'
  index = index_lib.load(path, hamming_options=dict(
      options, bits=int(run.info.config.bits) if binary else None),
                         cosine_options=options)
  if binary and index.kind == 'cosine':
    raise index_lib.IndexFileError(
        f'{path}: a cosine index of real-valued embeddings, but '
        f'{run.workdir} trained {run.info.config.method}, which outputs '
        'binary codes (searched by Hamming distance).')
  if kind is not None and index.kind != kind:
    what = {'hamming': 'sign() codes (--sign_codes)',
            'cosine': 'real-valued embeddings'}
    raise index_lib.IndexFileError(
        f'{path}: a {index.kind} index of {what[index.kind]}, but this '
        f'encoding writes {what[kind]}: encode into another --out.')
  check_same_run(index, path, run)
  return index


def read_records(path: str) -> list[dict[str, Any]]:
  """The item records of `<modality>.items.jsonl` ([] if absent)."""
  if not file_io.isfile(path):
    return []
  return [json.loads(line) for line in file_io.read_text(path).splitlines()
          if line.strip()]


def write(run: run_artifacts.Run, out: str, items: Items,
          modalities: Sequence[str], *, faiss: bool = False,
          batch_size: int = 256, sign_codes: bool = False) -> dict[str, str]:
  """Encodes `items` and writes or appends the index files of `modalities`.

  A run of binary codes writes `HammingIndex` files; a run of real-valued
  embeddings `CosineIndex` files (L2-normalised float32), or with
  `sign_codes` the `HammingIndex` of their sign() codes (`index_kind`).
  Every existing index is checked (run, checkpoint, kind) before anything
  is encoded or written.

  Returns:
    {modality: index path}.
  """
  kind = index_kind(run, sign_codes)
  if faiss and kind == 'cosine':
    raise ValueError('--faiss writes FAISS IndexBinaryFlat files of binary '
                     f'codes; {run.info.config.method} outputs real-valued '
                     'embeddings (add --sign_codes to index their sign() '
                     'codes).')
  for m in modalities:
    if m not in MODALITIES:
      raise ValueError(f'Unknown modality {m!r}; expected image or text.')
    if items.inputs(m) is None:
      raise ValueError(f'The items have no {m} side to encode.')
  existing = {}
  for m in modalities:
    path = index_path(out, m)
    if file_io.exists(path):
      existing[m] = load_index(path, run, kind=kind)
      records = read_records(items_path(out, m))
      if len(records) != len(existing[m]):
        raise index_lib.IndexFileError(
            f'{items_path(out, m)} has {len(records)} items but {path} '
            f'{len(existing[m])}; the two files no longer belong together.')
      clash = set(existing[m].ids) & set(items.ids)
      if clash:
        raise ValueError(f'{path} already holds {len(clash)} of these items, '
                         f'e.g. id {sorted(clash)[0]!r}.')
  file_io.makedirs(out)
  written = {}
  for m in modalities:
    codes = encode_items(run, m, items.inputs(m), batch_size=batch_size,
                         sign_codes=sign_codes)
    index = existing.get(m)
    if index is None:
      cls = (index_lib.HammingIndex if kind == 'hamming' else
             index_lib.CosineIndex)
      index = cls(codes.shape[1], metadata=dict(run.fingerprint, modality=m))
    index.add(codes, ids=items.ids)
    path = index_path(out, m)
    # Records first: a crash between the two leaves the old index, whose
    # record count then differs and is reported. The file is rewritten whole
    # (objects in a gs:// bucket cannot be appended to).
    records_file = items_path(out, m)
    old = (file_io.read_text(records_file) if file_io.isfile(records_file)
           else '')
    file_io.write_text(records_file, old + ''.join(
        json.dumps(dict(record, id=item_id), ensure_ascii=False) + '\n'
        for item_id, record in zip(items.ids, items.records)))
    index.save(path)
    if faiss:
      index.export_faiss(os.path.join(out, f'{m}.faiss'))
    logging.info('%s: %d %s %s (%d new).', path, len(index), m,
                 'codes' if kind == 'hamming' else 'embeddings', len(codes))
    written[m] = path
  return written
