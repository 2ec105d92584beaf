"""Datasets as ArrayRecord shards: fast random access for the grain pipeline.

A converted folder (`python -m crossmodal_hash.data.convert`) holds:
  items-00000-of-00004.array_record ...  one record per item, in item order;
  arrays.npz      texts [N, V], labels [N, L] (and a fixed split's
                  query_index / retrieval_index / train_index), so evaluation
                  and statistics need no pass over the images;
  metadata.json   format, item count, per-field dtype / shape / encoding, the
                  shards and their item counts. Written last: a folder without
                  it is an unfinished conversion.

Record i is the concatenation of item i's fields ('image', 'text', 'label'),
preceded by their byte lengths (3 little-endian uint64). Each field is stored
raw (C-order bytes of its dtype and shape); the image may instead be stored as
PNG (lossless) or JPEG, decoded when read. `load` returns `MultiModalData` whose
images are an `ArrayRecordImages` lazy array; texts and labels are in memory.
"""
from __future__ import annotations

import io
import json
import math
import os
import struct
from typing import Any

import numpy as np
import PIL.Image

from crossmodal_hash.data import lazy
from crossmodal_hash.data import types
from crossmodal_hash.data import validation

FORMAT = 'crossmodal_hash.array_record/1'
FIELDS = ('image', 'text', 'label')
ENCODINGS = ('raw', 'png', 'jpeg')
METADATA = 'metadata.json'
ARRAYS = 'arrays.npz'
_SHARD_BYTES = 1 << 30
_READ_CHUNK = 256

DataFormatError = validation.DataFormatError


def _shard_name(i: int, n: int) -> str:
  return f'items-{i:05d}-of-{n:05d}.array_record'


def encode_field(array: np.ndarray, encoding: str, jpeg_quality: int) -> bytes:
  """One field's bytes: raw, or a PNG/JPEG of an [H, W, 3] uint8 image."""
  if encoding == 'raw':
    return np.ascontiguousarray(array).tobytes()
  buffer = io.BytesIO()
  image = PIL.Image.fromarray(np.asarray(array, np.uint8))
  if encoding == 'png':
    image.save(buffer, format='PNG', compress_level=1)
  else:
    image.save(buffer, format='JPEG', quality=jpeg_quality)
  return buffer.getvalue()


def decode_field(payload: bytes | memoryview,
                 spec: dict[str, Any]) -> np.ndarray:
  """Inverse of `encode_field` given the field's metadata."""
  shape, dtype = tuple(spec['shape']), np.dtype(spec['dtype'])
  if spec['encoding'] == 'raw':
    return np.frombuffer(payload, dtype).reshape(shape)
  with PIL.Image.open(io.BytesIO(payload)) as image:
    return np.asarray(image.convert('RGB'), np.uint8).reshape(shape)


def encode_record(item: dict[str, np.ndarray], specs: dict[str, Any],
                  jpeg_quality: int = 95) -> bytes:
  payloads = [encode_field(item[f], specs[f]['encoding'], jpeg_quality)
              for f in FIELDS]
  return struct.pack(f'<{len(FIELDS)}Q', *map(len, payloads)) + b''.join(
      payloads)


def decode_record(record: bytes, specs: dict[str, Any],
                  fields: tuple[str, ...] = FIELDS) -> dict[str, np.ndarray]:
  """The requested fields of one record."""
  header = struct.calcsize(f'<{len(FIELDS)}Q')
  lengths = struct.unpack_from(f'<{len(FIELDS)}Q', record)
  if header + sum(lengths) != len(record):
    raise DataFormatError(f'record of {len(record)} bytes does not match its '
                          f'header (fields of {lengths} bytes): corrupt.')
  out, offset, view = {}, header, memoryview(record)  # Slices copy nothing.
  for field, length in zip(FIELDS, lengths):
    if field in fields:
      out[field] = decode_field(view[offset:offset + length], specs[field])
    offset += length
  return out


def _field_spec(array: Any, encoding: str) -> dict[str, Any]:
  return {'dtype': np.dtype(array.dtype).name,
          'shape': [int(s) for s in array.shape[1:]], 'encoding': encoding}


def write(data: types.MultiModalData, directory: str, *,
          image_encoding: str = 'raw', jpeg_quality: int = 95,
          num_shards: int | None = None, source: str = '') -> dict[str, Any]:
  """Converts a dataset to ArrayRecord shards in `directory`.

  Args:
    data: any dataset (lazy images are read in chunks of 256 rows).
    directory: the output folder; must not hold a converted dataset already.
    image_encoding: 'raw' (exact, fastest to read), 'png' (lossless, smaller)
      or 'jpeg' (lossy, smallest; pixel images only).
    jpeg_quality: JPEG quality, 1-100.
    num_shards: number of shards (default: about 1 GiB each).
    source: a description of where the data came from (kept in metadata).

  Returns:
    The metadata written to `metadata.json`.
  """
  # Imported here: only writing needs the ArrayRecord writer.
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  if image_encoding not in ENCODINGS:
    raise ValueError(f'image_encoding must be one of {ENCODINGS}; got '
                     f'{image_encoding!r}.')
  if image_encoding != 'raw' and not data.has_pixels:
    raise ValueError(f'image_encoding={image_encoding!r} needs pixel images '
                     '[N, H, W, 3]; these are features. Use raw.')
  if os.path.exists(os.path.join(directory, METADATA)):
    raise FileExistsError(f'{directory} already holds a converted dataset '
                          f'({METADATA}); choose another output folder.')
  os.makedirs(directory, exist_ok=True)
  specs = {'image': _field_spec(data.images, image_encoding),
           'text': _field_spec(data.texts, 'raw'),
           'label': _field_spec(data.labels, 'raw')}
  n = len(data)
  item_bytes = sum(int(np.prod(getattr(data, f + 's').shape[1:])) *
                   np.dtype(getattr(data, f + 's').dtype).itemsize
                   for f in FIELDS)
  num_shards = num_shards or max(1, math.ceil(n * item_bytes / _SHARD_BYTES))
  num_shards = min(num_shards, n)
  bounds = np.linspace(0, n, num_shards + 1).astype(np.int64)
  shards = []
  for s in range(num_shards):
    name = _shard_name(s, num_shards)
    writer = array_record_module.ArrayRecordWriter(
        os.path.join(directory, name), 'group_size:1')
    for start in range(bounds[s], bounds[s + 1], _READ_CHUNK):
      stop = min(bounds[s + 1], start + _READ_CHUNK)
      images = np.asarray(data.images[start:stop])
      for j in range(stop - start):
        writer.write(encode_record(
            {'image': images[j], 'text': data.texts[start + j],
             'label': data.labels[start + j]}, specs, jpeg_quality))
    writer.close()
    shards.append({'file': name, 'num_items': int(bounds[s + 1] - bounds[s])})
  arrays = {'texts': data.texts, 'labels': data.labels}
  if data.split is not None:
    arrays.update(query_index=data.split.query,
                  retrieval_index=data.split.retrieval,
                  train_index=data.split.train)
  np.savez(os.path.join(directory, ARRAYS), **arrays)
  metadata = {'format': FORMAT, 'num_items': n, 'fields': specs,
              'shards': shards, 'source': source}
  tmp = os.path.join(directory, METADATA + '.tmp')
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(metadata, f, indent=1)
  os.replace(tmp, os.path.join(directory, METADATA))
  return metadata


def read_metadata(directory: str) -> dict[str, Any]:
  """The folder's metadata, checked; clear errors for unfinished folders."""
  path = os.path.join(directory, METADATA)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{directory}: no {METADATA}; not a converted '
                            'dataset, or its conversion did not finish.')
  try:
    with open(path, encoding='utf-8') as f:
      metadata = json.load(f)
  except (OSError, ValueError) as e:
    raise DataFormatError(f'{path}: unreadable ({e}).') from e
  if not isinstance(metadata, dict) or metadata.get('format') != FORMAT:
    raise DataFormatError(f'{path}: not a {FORMAT} folder.')
  missing = [s['file'] for s in metadata['shards']
             if not os.path.isfile(os.path.join(directory, s['file']))]
  if missing:
    raise FileNotFoundError(f'{directory}: missing shard files '
                            f'{", ".join(missing)}.')
  return metadata


class ArrayRecordImages(lazy.LazyArray):
  """The 'image' field of a converted folder, read (and decoded) by rows."""

  def __init__(self, directory: str, metadata: dict[str, Any] | None = None):
    metadata = metadata or read_metadata(directory)
    spec = metadata['fields']['image']
    super().__init__((metadata['num_items'],) + tuple(spec['shape']),
                     spec['dtype'], directory)
    self._directory = directory
    self._specs = metadata['fields']
    self._paths = [os.path.join(directory, s['file'])
                   for s in metadata['shards']]
    self._source = None
    self._pid = None

  def source(self) -> Any:
    """This process's grain `ArrayRecordDataSource` over the shards."""
    if self._source is None or self._pid != os.getpid():
      import grain  # pylint: disable=g-import-not-at-top
      try:
        self._source = grain.sources.ArrayRecordDataSource(self._paths)
      except Exception as e:  # ArrayRecord raises several types.
        raise DataFormatError(f'{self._directory}: cannot open the ArrayRecord '
                              f'shards: {e}. They may be truncated or corrupt.'
                             ) from e
      self._pid = os.getpid()
      if len(self._source) != len(self):
        raise DataFormatError(
            f'{self._directory}: the shards hold {len(self._source)} records, '
            f'metadata.json says {len(self)}: truncated or mixed shards.')
    return self._source

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    state['_source'] = state['_pid'] = None
    return state

  def _read_rows(self, rows: np.ndarray) -> np.ndarray:
    try:
      records = self.source().__getitems__(rows.tolist())
    except Exception as e:  # ArrayRecord raises several types.
      raise DataFormatError(f'{self._directory}: cannot read records '
                            f'{rows[:5].tolist()}: {e}') from e
    out = np.empty((len(rows),) + self.shape[1:], self.dtype)
    for j, record in enumerate(records):
      try:
        out[j] = decode_record(record, self._specs, ('image',))['image']
      except (ValueError, OSError) as e:
        raise DataFormatError(f'{self._directory}: record {rows[j]} is '
                              f'corrupt: {e}') from e
    return out


def load(directory: str) -> types.MultiModalData:
  """A converted folder as `MultiModalData` with lazy `ArrayRecordImages`."""
  metadata = read_metadata(directory)
  path = os.path.join(directory, ARRAYS)
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError, EOFError) as e:
    raise DataFormatError(f'{path}: unreadable ({e}).') from e
  split = None
  if 'query_index' in arrays:
    split = types.Split(query=arrays['query_index'],
                        retrieval=arrays['retrieval_index'],
                        train=arrays['train_index'])
  images = ArrayRecordImages(directory, metadata)
  if len(arrays['labels']) != len(images):
    raise DataFormatError(f'{directory}: {ARRAYS} has {len(arrays["labels"])} '
                          f'items, the shards {len(images)}.')
  return types.MultiModalData(images=images, texts=arrays['texts'],
                              labels=arrays['labels'], split=split)
