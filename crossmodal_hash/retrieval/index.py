"""`HammingIndex`: a growable, saveable index of binary codes with exact search.

    index = HammingIndex.from_codes(db_codes)        # [N, K] ±1 or {0, 1}
    index.add(more_codes)
    indices, distances = index.search(query_codes, k=100)
    index.save('codes.cmhidx')
    index = HammingIndex.load('codes.cmhidx', bits=64)
    index.export_faiss('codes.faiss')                # FAISS IndexBinaryFlat

Codes are kept bit-packed on the host (`packing.pack_codes`); the device copy
in the search layout is built on the first search after a change. With a
`mesh`, the database is sharded over `mesh[axis]` (`sharded.py`); otherwise one
device searches it (`search.py`: on CPU, numba's `hamming_cpu` kernel). Either way the result is exact: indices
[Q, k] and distances [Q, k] int32 NumPy arrays ordered by (distance, index),
with index -1 and distance bits + 1 in the slots past the index size.

Each item has an id (a string: a dataset row, a file name), and the index
carries a JSON metadata object (e.g. the modality and the run that encoded it,
see `encode.py`).

File format (version 2), little-endian:

    offset  size  field
    0       8     magic b'CMHAMIDX'
    8       4     format version (uint32) = 2
    12      4     bits K (uint32)
    16      4     words per code W = ceil(K / 32) (uint32)
    20      4     flags (uint32) = 0
    24      8     number of codes N (uint64)
    32      32    SHA-256 of everything after the header
    64      8     metadata size M (uint64)
    72      8     ids size I (uint64)
    80      4     CRC-32 of bytes 0..79 (uint32)
    84      M     metadata: a UTF-8 JSON object
    84+M    4*N*W the packed codes, row-major uint32
    ...     I     the N ids, UTF-8, joined by '\n'

Version 1 files (no metadata and ids; a 68-byte header whose bytes 64..67
are the CRC-32 of bytes 0..63, and the SHA-256 of the codes alone) still load,
with ids '0'..'N-1'.

Loading refuses, with an `IndexFileError` naming the file: another magic,
another version, a header whose CRC fails, a bit length other than the one
asked for, sections shorter or longer than the header says, contents whose
SHA-256 differs, codes with bits set past K, and unreadable metadata or ids.
"""
from __future__ import annotations

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
from crossmodal_hash.retrieval import faiss_io
from crossmodal_hash.retrieval import packing
from crossmodal_hash.retrieval import search as search_lib
from crossmodal_hash.retrieval import sharded

MAGIC = b'CMHAMIDX'
FORMAT_VERSION = 2
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


class HammingIndex:
  """Exact Hamming k-NN index over bit-packed binary codes.

  Attributes:
    bits: K, the code length.
  """

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
    self.bits = int(bits)
    self.metadata = dict(metadata or {})
    self._ids: list[str] = []
    self._kernel = kernel
    self._mesh, self._axis = mesh, axis
    self._chunk_size, self._query_batch = chunk_size, query_batch
    self._parts: list[np.ndarray] = []
    self._size = 0
    self._prepared = None

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
    if ids is None:
      ids = [str(i) for i in range(self._size, self._size + len(packed))]
    ids = [str(i) for i in ids]
    if len(ids) != len(packed):
      raise ValueError(f'{len(packed)} codes but {len(ids)} ids.')
    if any('\n' in i for i in ids):
      raise ValueError('An id must not contain a newline.')
    self._ids.extend(ids)
    if packed.shape[0]:
      self._parts.append(np.array(packed, np.uint32))
      self._size += packed.shape[0]
      self._prepared = None

  def __len__(self) -> int:
    return self._size

  @property
  def ids(self) -> list[str]:
    """[N] item ids, in index order."""
    return self._ids

  @property
  def packed(self) -> np.ndarray:
    """All codes, [N, W] uint32."""
    if len(self._parts) != 1:
      words = packing.num_words(self.bits)
      self._parts = [np.concatenate(self._parts, axis=0) if self._parts
                     else np.zeros((0, words), np.uint32)]
    return self._parts[0]

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
    metadata = json.dumps(self.metadata, sort_keys=True).encode('utf-8')
    payload = np.ascontiguousarray(self.packed.astype('<u4')).tobytes()
    ids = '\n'.join(self._ids).encode('utf-8')
    digest = hashlib.sha256()
    for part in (metadata, payload, ids):
      digest.update(part)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, self.bits,
                          packing.num_words(self.bits), 0, self._size,
                          digest.digest(), len(metadata), len(ids))
    header += _CRC.pack(zlib.crc32(header))

    def write(f):
      for part in (header, metadata, payload, ids):
        f.write(part)

    file_io.atomic_write(path, write)

  @classmethod
  def load(cls, path: str | os.PathLike, *, bits: int | None = None,
           **kwargs) -> HammingIndex:
    """Reads an index written by `save` (format version 2, or 1).

    Args:
      path: the file.
      bits: the code length the caller expects; a file of another length is
        refused. None accepts the file's.
      **kwargs: `HammingIndex` options (mesh, axis, chunk_size, query_batch).

    Raises:
      IndexFileError: naming the file and the problem.
    """
    path = os.fspath(path)
    data = file_io.path(path).read_bytes()
    if len(data) < 12:
      if not MAGIC.startswith(data[:len(MAGIC)]):
        raise IndexFileError(f'{path}: not a crossmodal_hash Hamming index '
                             f'(no {MAGIC!r} magic).')
      raise IndexFileError(f'{path}: truncated index file ({len(data)} bytes).')
    magic, version = struct.unpack_from('<8sI', data)
    if magic != MAGIC:
      raise IndexFileError(f'{path}: not a crossmodal_hash Hamming index '
                           f'(magic {magic!r}, expected {MAGIC!r}).')
    if version not in (1, FORMAT_VERSION):
      raise IndexFileError(f'{path}: index format version {version}; this '
                           f'version of crossmodal_hash reads versions 1 and '
                           f'{FORMAT_VERSION}.')
    fmt = _HEADER if version == FORMAT_VERSION else _HEADER_V1
    size = fmt.size + _CRC.size
    if len(data) < size:
      raise IndexFileError(f'{path}: truncated index file ({len(data)} bytes; '
                           f'the header alone is {size}).')
    fields = fmt.unpack_from(data)
    _, _, file_bits, words, _, count, digest = fields[:7]
    meta_size, ids_size = fields[7:] if version == FORMAT_VERSION else (0, 0)
    (crc,) = _CRC.unpack_from(data, fmt.size)
    if crc != zlib.crc32(data[:fmt.size]):
      raise IndexFileError(f'{path}: corrupt index header (CRC-32 mismatch).')
    if file_bits < 1 or words != packing.num_words(file_bits):
      raise IndexFileError(f'{path}: corrupt index header ({file_bits} bits in '
                           f'{words} words).')
    if bits is not None and int(bits) != file_bits:
      raise IndexFileError(f'{path}: holds {file_bits}-bit codes; expected '
                           f'{bits}-bit codes.')
    expected = meta_size + 4 * words * count + ids_size
    got = len(data) - size
    if got != expected:
      what = 'truncated' if got < expected else 'has trailing bytes'
      raise IndexFileError(f'{path}: index file {what}: {got} bytes after the '
                           f'header, the header says {expected} ({count} '
                           'codes).')
    if hashlib.sha256(data[size:]).digest() != digest:
      raise IndexFileError(f'{path}: corrupt index payload (SHA-256 mismatch).')
    start = size + meta_size
    packed = np.frombuffer(data, '<u4', count * words, start).astype(
        np.uint32).reshape(count, words)
    if not _check_padding(packed, file_bits):
      raise IndexFileError(f'{path}: corrupt index: codes have bits set past '
                           f'bit {file_bits}.')
    metadata, ids = {}, None
    if version == FORMAT_VERSION:
      try:
        metadata = json.loads(data[size:start].decode('utf-8'))
        ids = data[start + 4 * words * count:].decode('utf-8')
      except (UnicodeDecodeError, ValueError) as e:
        raise IndexFileError(f'{path}: unreadable metadata or ids ({e}).') from e
      ids = ids.split('\n') if count else []
      if not isinstance(metadata, dict) or len(ids) != count:
        raise IndexFileError(f'{path}: corrupt metadata or ids ({len(ids)} ids '
                             f'for {count} codes).')
    index = cls(file_bits, metadata=metadata, **kwargs)
    index.add_packed(packed, ids)
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
