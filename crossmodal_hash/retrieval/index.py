"""Index files of a run's items: `HammingIndex` (binary codes) and
`CosineIndex` (real-valued embeddings), growable, saveable, exact search.

    index = HammingIndex.from_codes(db_codes)        # [N, K] ±1 or {0, 1}
    index.add(more_codes)
    indices, distances = index.search(query_codes, k=100)
    index.save('codes.cmhidx')
    index = HammingIndex.load('codes.cmhidx', bits=64)
    index.export_faiss('codes.faiss')                # FAISS IndexBinaryFlat

    index = CosineIndex.from_embeddings(db_emb)      # [N, D] real
    indices, similarities = index.search(query_emb, k=100)
    index = load('any.cmhidx')                       # either kind

Hamming: codes are kept bit-packed on the host (`packing.pack_codes`); the
device copy in the search layout is built on the first search after a change.
With a `mesh`, the database is sharded over `mesh[axis]` (`sharded.py`);
otherwise one device searches it (`search.py`: on CPU, numba's `hamming_cpu`
kernel). Either way the result is exact: indices [Q, k] and distances [Q, k]
int32 NumPy arrays ordered by (distance, index), with index -1 and distance
bits + 1 in the slots past the index size.

Cosine: embeddings are kept L2-normalised in float32 (`cosine.normalize`; a
zero row stays zero); the search (`cosine.py`, streamed in blocks, sharded
over `mesh[axis]` with a mesh) returns indices [Q, k] int32 and similarities
[Q, k] float32 ordered by (-similarity, index), the cosine evaluation's
order, with index -1 and similarity -inf past the index size.

Each item has an id (a string: a dataset row, a file name), and the index
carries a JSON metadata object (e.g. the modality and the run that encoded it,
see `encode.py`).

File format (versions 2 and 3), little-endian:

    offset  size  field
    0       8     magic b'CMHAMIDX'
    8       4     format version (uint32): 2 (Hamming) or 3 (any kind)
    12      4     K: bits per code (Hamming) or dimension D (cosine) (uint32)
    16      4     words W per row (uint32): ceil(K / 32) (Hamming), D (cosine)
    20      4     kind (uint32): 0 Hamming, 1 cosine; 0 in version 2
    24      8     number of rows N (uint64)
    32      32    SHA-256 of everything after the header
    64      8     metadata size M (uint64)
    72      8     ids size I (uint64)
    80      4     CRC-32 of bytes 0..79 (uint32)
    84      M     metadata: a UTF-8 JSON object
    84+M    4*N*W the rows, row-major: packed codes as uint32 (Hamming), or
                  unit-norm embeddings as float32 (cosine)
    ...     I     the N ids, UTF-8, joined by '\n'

Hamming indexes are written as version 2 (which older releases read); cosine
indexes as version 3, which older releases refuse by its version.
Version 1 files (no metadata and ids; a 68-byte header whose bytes 64..67
are the CRC-32 of bytes 0..63, and the SHA-256 of the codes alone) still load,
with ids '0'..'N-1'.

Loading refuses, with an `IndexFileError` naming the file: another magic,
another version, a header whose CRC fails, another kind than the class's
(a cosine file given as a Hamming index or back), a bit length or dimension
other than the one asked for, sections shorter or longer than the header
says, contents whose SHA-256 differs, codes with bits set past K, embeddings
that are not finite, and unreadable metadata or ids.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from typing import Any
import zlib

import jax
import numpy as np

from crossmodal_hash import file_io
from crossmodal_hash import sharding
from crossmodal_hash.retrieval import cosine
from crossmodal_hash.retrieval import faiss_io
from crossmodal_hash.retrieval import packing
from crossmodal_hash.retrieval import search as search_lib
from crossmodal_hash.retrieval import sharded

MAGIC = b'CMHAMIDX'
FORMAT_VERSION = 2  # Hamming indexes are written in this version.
COSINE_VERSION = 3  # Cosine indexes (the kind field) in this one.
KINDS = ('hamming', 'cosine')  # The kind field's values 0 and 1.
_HEADER_V1 = struct.Struct('<8sIIIIQ32s')
_HEADER = struct.Struct('<8sIIIIQ32sQQ')
_CRC = struct.Struct('<I')
HEADER_SIZE_V1 = _HEADER_V1.size + _CRC.size  # 68
HEADER_SIZE = _HEADER.size + _CRC.size  # 84


class IndexFileError(ValueError):
  """An index file that cannot be loaded (the message names the file)."""


def _check_codes(codes, name: str) -> np.ndarray:
  """[M, K] codes in ±1 or {0, 1} (or bool) -> the same array, checked."""
  codes = np.asarray(codes)
  if codes.ndim != 2:
    raise ValueError(f'{name} must be [M, K] codes; got shape {codes.shape}.')
  if codes.dtype == np.bool_:
    return codes
  if not (np.issubdtype(codes.dtype, np.integer) or
          np.issubdtype(codes.dtype, np.floating)):
    raise ValueError(f'{name} must be numeric ±1 or {{0, 1}} codes; got dtype '
                     f'{codes.dtype}.')
  signed = np.all((codes == 1) | (codes == -1))
  binary = np.all((codes == 0) | (codes == 1))
  if not (signed or binary):
    raise ValueError(f'{name} must hold only ±1 or only {{0, 1}} (binarise '
                     'with np.where(x >= 0, 1, -1) first).')
  return codes


def _check_padding(packed: np.ndarray, bits: int) -> bool:
  """True when no code has a bit set at a position >= bits."""
  if bits % 32 == 0 or packed.shape[0] == 0:
    return True
  return not np.any(packed[:, -1] >> np.uint32(bits % 32))


def _ids(ids, size: int, count: int, what: str) -> list[str]:
  """[count] id strings for rows size..size+count-1 (default: their
  indices), checked; `what` names the rows in errors."""
  if ids is None:
    ids = [str(i) for i in range(size, size + count)]
  ids = [str(i) for i in ids]
  if len(ids) != count:
    raise ValueError(f'{count} {what} but {len(ids)} ids.')
  if any('\n' in i for i in ids):
    raise ValueError('An id must not contain a newline.')
  return ids


def _save(path, *, kind: str, width: int, words: int, count: int,
          metadata: dict[str, Any], payload: bytes, ids: list[str]) -> None:
  """Writes an index file (see the module docstring), atomically."""
  version = FORMAT_VERSION if kind == 'hamming' else COSINE_VERSION
  metadata = json.dumps(metadata, sort_keys=True).encode('utf-8')
  ids = '\n'.join(ids).encode('utf-8')
  digest = hashlib.sha256()
  for part in (metadata, payload, ids):
    digest.update(part)
  header = _HEADER.pack(MAGIC, version, width, words, KINDS.index(kind),
                        count, digest.digest(), len(metadata), len(ids))
  header += _CRC.pack(zlib.crc32(header))

  def write(f):
    for part in (header, metadata, payload, ids):
      f.write(part)

  file_io.atomic_write(path, write)


def _describe(kind: str, width: int) -> str:
  return (f'a Hamming index of {width}-bit codes' if kind == 'hamming' else
          f'a cosine index of {width}-d float32 embeddings')


@dataclasses.dataclass(frozen=True)
class _File:
  """A checked index file: kind, K or D, words per row, rows (a view of
  the file's bytes), metadata and ids (None for version 1)."""
  kind: str
  width: int
  words: int
  count: int
  rows: memoryview
  metadata: dict[str, Any]
  ids: list[str] | None


def _read(path: str, kind: str | None) -> _File:
  """Reads and checks an index file (`kind`: the one expected, or None)."""
  data = file_io.path(path).read_bytes()
  if len(data) < 12:
    if not MAGIC.startswith(data[:len(MAGIC)]):
      raise IndexFileError(f'{path}: not a crossmodal_hash index '
                           f'(no {MAGIC!r} magic).')
    raise IndexFileError(f'{path}: truncated index file ({len(data)} bytes).')
  magic, version = struct.unpack_from('<8sI', data)
  if magic != MAGIC:
    raise IndexFileError(f'{path}: not a crossmodal_hash index '
                         f'(magic {magic!r}, expected {MAGIC!r}).')
  if version not in (1, FORMAT_VERSION, COSINE_VERSION):
    raise IndexFileError(f'{path}: index format version {version}; this '
                         'version of crossmodal_hash reads versions 1 to '
                         f'{COSINE_VERSION}.')
  fmt = _HEADER if version != 1 else _HEADER_V1
  size = fmt.size + _CRC.size
  if len(data) < size:
    raise IndexFileError(f'{path}: truncated index file ({len(data)} bytes; '
                         f'the header alone is {size}).')
  fields = fmt.unpack_from(data)
  _, _, width, words, kind_field, count, digest = fields[:7]
  meta_size, ids_size = fields[7:] if version != 1 else (0, 0)
  (crc,) = _CRC.unpack_from(data, fmt.size)
  if crc != zlib.crc32(data[:fmt.size]):
    raise IndexFileError(f'{path}: corrupt index header (CRC-32 mismatch).')
  if kind_field >= len(KINDS) or (version != COSINE_VERSION and kind_field):
    raise IndexFileError(f'{path}: corrupt index header (kind {kind_field} '
                         f'in a version {version} file).')
  file_kind = KINDS[kind_field]
  expected_words = (packing.num_words(width) if file_kind == 'hamming' and
                    width >= 1 else width)
  if width < 1 or words != expected_words:
    raise IndexFileError(f'{path}: corrupt index header ({width} '
                         f'{"bits" if file_kind == "hamming" else "dims"} in '
                         f'{words} words).')
  if kind is not None and file_kind != kind:
    raise IndexFileError(
        f'{path}: {_describe(file_kind, width)}, not '
        f'{"a Hamming" if kind == "hamming" else "a cosine"} index; '
        + ('binary codes are searched by Hamming distance, real-valued '
           'embeddings by cosine similarity (index.load reads either).'))
  expected = meta_size + 4 * words * count + ids_size
  got = len(data) - size
  if got != expected:
    what = 'truncated' if got < expected else 'has trailing bytes'
    raise IndexFileError(f'{path}: index file {what}: {got} bytes after the '
                         f'header, the header says {expected} ({count} '
                         'rows).')
  if hashlib.sha256(data[size:]).digest() != digest:
    raise IndexFileError(f'{path}: corrupt index payload (SHA-256 mismatch).')
  start = size + meta_size
  metadata, ids = {}, None
  if version != 1:
    try:
      metadata = json.loads(data[size:start].decode('utf-8'))
      ids = data[start + 4 * words * count:].decode('utf-8')
    except (UnicodeDecodeError, ValueError) as e:
      raise IndexFileError(f'{path}: unreadable metadata or ids ({e}).') from e
    ids = ids.split('\n') if count else []
    if not isinstance(metadata, dict) or len(ids) != count:
      raise IndexFileError(f'{path}: corrupt metadata or ids ({len(ids)} ids '
                           f'for {count} rows).')
  rows = memoryview(data)[start:start + 4 * words * count]
  return _File(file_kind, width, words, count, rows, metadata, ids)


class _Rows:
  """An index's rows, appended in parts, and their [N] ids (both kinds)."""

  def __init__(self, metadata: dict[str, Any] | None):
    self.metadata = dict(metadata or {})
    self._ids: list[str] = []
    self._parts: list[np.ndarray] = []
    self._size = 0
    self._prepared = None  # The search's placed database, built lazily.

  def _append_rows(self, rows: np.ndarray, ids, what: str) -> None:
    """Appends [M, W] `rows` as rows N..N+M-1 with their ids (`_ids`; `what`
    names the rows in its errors)."""
    self._ids.extend(_ids(ids, self._size, len(rows), what))
    if len(rows):
      self._parts.append(rows)
      self._size += len(rows)
      self._prepared = None

  def _all_rows(self, width: int, dtype: Any) -> np.ndarray:
    """All rows as one [N, width] array (the parts joined once)."""
    if len(self._parts) != 1:
      self._parts = [np.concatenate(self._parts, axis=0) if self._parts
                     else np.zeros((0, width), dtype)]
    return self._parts[0]

  def __len__(self) -> int:
    return self._size

  @property
  def ids(self) -> list[str]:
    """[N] item ids, in index order."""
    return self._ids


class HammingIndex(_Rows):
  """Exact Hamming k-NN index over bit-packed binary codes.

  Attributes:
    bits: K, the code length.
  """
  kind = 'hamming'

  def __init__(self, bits: int, *, mesh: jax.sharding.Mesh | None = None,
               axis: str = sharding.DATA_AXIS, chunk_size: int | None = None,
               query_batch: int | None = None,
               metadata: dict[str, Any] | None = None, kernel: str = 'auto'):
    """An empty index.

    Args:
      bits: K, the code length (any K >= 1).
      mesh: shard the database over `mesh[axis]` when given.
      axis: the mesh axis for the database.
      chunk_size: database items per search step (multiple of 32; XLA).
      query_batch: queries per search step (XLA).
      metadata: a JSON-able dict saved with the index (`self.metadata`).
      kernel: one-device search kernel, one of `search.KERNELS`.
    """
    packing.num_words(bits)  # validates bits
    search_lib.resolve_kernel(kernel)  # validates kernel
    super().__init__(metadata)
    self.bits = int(bits)
    self._kernel = kernel
    self._mesh, self._axis = mesh, axis
    self._chunk_size, self._query_batch = chunk_size, query_batch

  # Building.

  @classmethod
  def from_codes(cls, codes, **kwargs) -> HammingIndex:
    """An index of [N, K] ±1 or {0, 1} codes (K = codes.shape[1])."""
    codes = _check_codes(codes, 'codes')
    index = cls(codes.shape[1], **kwargs)
    index.add(codes)
    return index

  @classmethod
  def from_packed(cls, packed, bits: int, **kwargs) -> HammingIndex:
    """An index of [N, W] uint32 packed codes of `bits` bits."""
    index = cls(bits, **kwargs)
    index.add_packed(packed)
    return index

  def add(self, codes, ids=None) -> None:
    """Appends [M, K] ±1 or {0, 1} codes; they get indices N..N+M-1.

    `ids`: [M] strings (no newline); default: the indices as strings.
    """
    codes = _check_codes(codes, 'codes')
    if codes.shape[1] != self.bits:
      raise ValueError(f'The index holds {self.bits}-bit codes; got '
                       f'{codes.shape[1]}-bit codes.')
    self.add_packed(np.asarray(packing.pack_codes(codes)), ids)

  def add_packed(self, packed, ids=None) -> None:
    """Appends [M, W] uint32 packed codes (and their [M] ids, see `add`)."""
    packed = np.asarray(packed)
    words = packing.num_words(self.bits)
    if packed.dtype != np.uint32 or packed.ndim != 2 or packed.shape[1] != words:
      raise ValueError(f'Packed {self.bits}-bit codes are [M, {words}] uint32; '
                       f'got {packed.dtype} {packed.shape}.')
    if not _check_padding(packed, self.bits):
      raise ValueError(f'Packed codes have bits set past bit {self.bits}.')
    self._append_rows(np.array(packed, np.uint32), ids, 'codes')

  @property
  def packed(self) -> np.ndarray:
    """All codes, [N, W] uint32."""
    return self._all_rows(packing.num_words(self.bits), np.uint32)

  # Searching.

  def _database(self):
    if self._prepared is None:
      if self._mesh is not None:
        self._prepared = sharded.prepare(self.packed, self._mesh,
                                         axis=self._axis,
                                         chunk_size=self._chunk_size)
      else:
        self._prepared = search_lib.prepare(self.packed,
                                            chunk_size=self._chunk_size,
                                            kernel=self._kernel)
    return self._prepared

  def search_packed(self, query, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of [Q, W] uint32 packed queries; see the module docstring."""
    query = search_lib.check_packed(query, self.bits, 'query')
    if self._mesh is not None:
      out = sharded.search_prepared(query, self._database(), k=k,
                                    bits=self.bits,
                                    query_batch=self._query_batch)
    else:
      out = search_lib.search_prepared(query, self._database(), k=k,
                                       bits=self.bits,
                                       query_batch=self._query_batch)
    return tuple(np.asarray(x) for x in out)

  def search(self, query_codes, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of [Q, K] ±1 or {0, 1} query codes.

    Returns:
      indices [Q, k] int32 and distances [Q, k] int32, ordered by (distance,
      index); index -1 and distance bits + 1 past the index size.
    """
    query_codes = _check_codes(query_codes, 'query_codes')
    if query_codes.shape[1] != self.bits:
      raise ValueError(f'The index holds {self.bits}-bit codes; got '
                       f'{query_codes.shape[1]}-bit queries.')
    return self.search_packed(np.asarray(packing.pack_codes(query_codes)), k)

  # Files.

  def save(self, path: str | os.PathLike) -> None:
    """Writes the index (format version 2, see the module docstring)."""
    _save(path, kind='hamming', width=self.bits,
          words=packing.num_words(self.bits), count=self._size,
          metadata=self.metadata,
          payload=np.ascontiguousarray(self.packed.astype('<u4')).tobytes(),
          ids=self._ids)

  @classmethod
  def load(cls, path: str | os.PathLike, *, bits: int | None = None,
           **kwargs) -> HammingIndex:
    """Reads a Hamming index written by `save` (format version 1 to 3).

    Args:
      path: the file.
      bits: the code length the caller expects; a file of another length is
        refused. None accepts the file's.
      **kwargs: `HammingIndex` options (mesh, axis, chunk_size, query_batch).

    Raises:
      IndexFileError: naming the file and the problem (a cosine index too).
    """
    path = os.fspath(path)
    return cls._from_file(path, _read(path, 'hamming'), bits, **kwargs)

  @classmethod
  def _from_file(cls, path: str, f: _File, bits: int | None,
                 **kwargs) -> HammingIndex:
    if bits is not None and int(bits) != f.width:
      raise IndexFileError(f'{path}: holds {f.width}-bit codes; expected '
                           f'{bits}-bit codes.')
    packed = np.frombuffer(f.rows, '<u4').astype(np.uint32).reshape(
        f.count, f.words)
    if not _check_padding(packed, f.width):
      raise IndexFileError(f'{path}: corrupt index: codes have bits set past '
                           f'bit {f.width}.')
    index = cls(f.width, metadata=f.metadata, **kwargs)
    index.add_packed(packed, f.ids)
    return index

  def export_faiss(self, path: str | os.PathLike) -> None:
    """Writes a FAISS IndexBinaryFlat file (faiss not needed); `faiss_io`."""
    faiss_io.write_index_binary_flat(path, self.packed, self.bits)

  @classmethod
  def import_faiss(cls, path: str | os.PathLike, *, bits: int | None = None,
                   **kwargs) -> HammingIndex:
    """Reads a FAISS IndexBinaryFlat file (faiss not needed).

    Args:
      path: the file.
      bits: K when the codes are shorter than the file's d (a multiple of 8).
      **kwargs: `HammingIndex` options.
    """
    packed, bits = faiss_io.read_index_binary_flat(path, bits)
    return cls.from_packed(packed, bits, **kwargs)

  def to_faiss(self):
    """A live faiss.IndexBinaryFlat with the same codes (needs faiss)."""
    return faiss_io.to_faiss_index(self.packed, self.bits)


class CosineIndex(_Rows):
  """Exact cosine k-NN index over L2-normalised float32 embeddings.

  Attributes:
    dim: D, the embedding size.
    path: the file it was loaded from (named in errors), or None.
  """
  kind = 'cosine'

  def __init__(self, dim: int, *, mesh: jax.sharding.Mesh | None = None,
               axis: str = sharding.DATA_AXIS, block_size: int | None = None,
               query_batch: int | None = None,
               metadata: dict[str, Any] | None = None):
    """An empty index.

    Args:
      dim: D, the embedding size (>= 1).
      mesh: shard the database over `mesh[axis]` when given.
      axis: the mesh axis for the database.
      block_size: database rows per search step (`cosine.prepare`).
      query_batch: queries per search step.
      metadata: a JSON-able dict saved with the index (`self.metadata`).
    """
    if int(dim) < 1:
      raise ValueError(f'dim must be >= 1; got {dim}.')
    super().__init__(metadata)
    self.dim = int(dim)
    self.path: str | None = None
    self._mesh, self._axis = mesh, axis
    self._block_size, self._query_batch = block_size, query_batch

  def _name(self) -> str:
    return self.path or 'The index'

  @classmethod
  def from_embeddings(cls, embeddings, **kwargs) -> CosineIndex:
    """An index of [N, D] real embeddings (D = embeddings.shape[1])."""
    embeddings = cosine.normalize(embeddings)
    index = cls(embeddings.shape[1], **kwargs)
    index.add(embeddings)
    return index

  def add(self, embeddings, ids=None) -> None:
    """Appends [M, D] real embeddings (stored normalised) as rows N..N+M-1.

    `ids`: [M] strings (no newline); default: the indices as strings.
    """
    embeddings = cosine.normalize(embeddings)
    if embeddings.shape[1] != self.dim:
      raise ValueError(f'{self._name()} holds {self.dim}-d embeddings; got '
                       f'{embeddings.shape[1]}-d ones.')
    self._append(embeddings, ids)

  def _append(self, rows: np.ndarray, ids) -> None:
    """Appends [M, D] float32 rows that are already normalised."""
    self._append_rows(rows, ids, 'embeddings')

  @property
  def embeddings(self) -> np.ndarray:
    """All rows, [N, D] float32 of unit (or zero) L2 norm."""
    return self._all_rows(self.dim, np.float32)

  def search(self, query, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of [Q, D] real queries by cosine similarity.

    Returns:
      indices [Q, k] int32 and similarities [Q, k] float32, ordered by
      (-similarity, index); index -1 and similarity -inf past the index size.
    """
    query = np.asarray(query)
    if query.ndim != 2 or query.shape[1] != self.dim:
      raise ValueError(f'{self._name()} holds {self.dim}-d embeddings; got '
                       f'queries of shape {query.shape}.')
    if self._prepared is None:
      self._prepared = cosine.prepare(self.embeddings, mesh=self._mesh,
                                      axis=self._axis,
                                      block_size=self._block_size)
    return cosine.search_prepared(query, self._prepared, k=k,
                                  query_batch=self._query_batch)

  def save(self, path: str | os.PathLike) -> None:
    """Writes the index (format version 3, kind cosine; module docstring)."""
    _save(path, kind='cosine', width=self.dim, words=self.dim,
          count=self._size, metadata=self.metadata,
          payload=np.ascontiguousarray(self.embeddings.astype('<f4')).tobytes(),
          ids=self._ids)

  @classmethod
  def load(cls, path: str | os.PathLike, *, dim: int | None = None,
           **kwargs) -> CosineIndex:
    """Reads a cosine index written by `save`.

    Args:
      path: the file.
      dim: the embedding size the caller expects (None: the file's).
      **kwargs: `CosineIndex` options (mesh, axis, block_size, query_batch).

    Raises:
      IndexFileError: naming the file and the problem (a Hamming index too).
    """
    path = os.fspath(path)
    return cls._from_file(path, _read(path, 'cosine'), dim, **kwargs)

  @classmethod
  def _from_file(cls, path: str, f: _File, dim: int | None,
                 **kwargs) -> CosineIndex:
    if dim is not None and int(dim) != f.width:
      raise IndexFileError(f'{path}: holds {f.width}-d embeddings; expected '
                           f'{dim}-d embeddings.')
    rows = np.frombuffer(f.rows, '<f4').astype(np.float32).reshape(
        f.count, f.words)
    if not np.all(np.isfinite(rows)):
      raise IndexFileError(f'{path}: corrupt index: embeddings with NaN or '
                           'Inf entries.')
    index = cls(f.width, metadata=f.metadata, **kwargs)
    index.path = path
    index._append(rows, f.ids)  # pylint: disable=protected-access
    return index


def load(path: str | os.PathLike, *, hamming_options=None, cosine_options=None
        ) -> HammingIndex | CosineIndex:
  """An index file of either kind (its header says which; read once).

  Args:
    path: the file.
    hamming_options: kwargs of `HammingIndex.load` for a Hamming file.
    cosine_options: kwargs of `CosineIndex.load` for a cosine file.
  """
  path = os.fspath(path)
  f = _read(path, None)
  if f.kind == 'hamming':
    options = dict(hamming_options or {})
    return HammingIndex._from_file(path, f, options.pop('bits', None),  # pylint: disable=protected-access
                                   **options)
  options = dict(cosine_options or {})
  return CosineIndex._from_file(path, f, options.pop('dim', None), **options)  # pylint: disable=protected-access
