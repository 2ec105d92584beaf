"""FAISS `IndexBinaryFlat` interchange: byte codes and index files.

FAISS stores a d-bit binary code (d a multiple of 8) as d / 8 bytes, bit i of
the code in bit i % 8 of byte i // 8 (least significant bit first). Our packed
uint32 words hold code bit 32 * w + j in bit j of word w, so the FAISS bytes are
the little-endian bytes of the words, cut to ceil(K / 8); a code whose K is not
a multiple of 8 becomes a FAISS code of d = 8 * ceil(K / 8) bits whose extra
bits are 0, which changes no distance.

The file reader and writer are NumPy-only (FAISS's own format: the fourcc
'IBxF', d int32, code_size int32, ntotal int64, is_trained uint8, metric_type
int32, then the codes as a vector: uint64 byte count and the bytes), so that
export and import work without faiss installed. `to_faiss_index` and
`from_faiss_index` convert to and from live faiss objects and need faiss.
"""
from __future__ import annotations

import os
import struct

import numpy as np

from crossmodal_hash import file_io
from crossmodal_hash.retrieval import packing

FOURCC = b'IBxF'
_HEADER = struct.Struct('<4siiqBi')  # fourcc, d, code_size, ntotal, trained, metric
_VECTOR_SIZE = struct.Struct('<Q')
_METRIC_L2 = 1  # what faiss writes for IndexBinaryFlat


class FaissFileError(ValueError):
  """A file that is not a readable FAISS IndexBinaryFlat."""


def faiss_dimension(bits: int) -> int:
  """FAISS code length d (a multiple of 8) that holds `bits`-bit codes."""
  return 8 * -(-bits // 8)


def packed_to_bytes(packed: np.ndarray, bits: int) -> np.ndarray:
  """Packed codes [N, W] uint32 -> FAISS byte codes [N, ceil(K / 8)] uint8."""
  packed = np.asarray(packed)
  if packed.dtype != np.uint32 or packed.ndim != 2:
    raise ValueError(f'packed must be [N, W] uint32; got {packed.dtype} '
                     f'{packed.shape}.')
  if packed.shape[1] != packing.num_words(bits):
    raise ValueError(f'{bits}-bit codes pack into {packing.num_words(bits)} '
                     f'words; got {packed.shape[1]}.')
  as_bytes = np.ascontiguousarray(packed.astype('<u4')).view(np.uint8)
  return np.ascontiguousarray(as_bytes[:, :faiss_dimension(bits) // 8])


def bytes_to_packed(codes: np.ndarray, bits: int) -> np.ndarray:
  """FAISS byte codes [N, ceil(K / 8)] uint8 -> packed [N, W] uint32.

  Raises:
    ValueError: if a code has a bit set at a position >= bits.
  """
  codes = np.asarray(codes)
  nbytes = faiss_dimension(bits) // 8
  if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != nbytes:
    raise ValueError(f'{bits}-bit codes are [N, {nbytes}] uint8 in FAISS; got '
                     f'{codes.dtype} {codes.shape}.')
  words = packing.num_words(bits)
  padded = np.zeros((codes.shape[0], 4 * words), np.uint8)
  padded[:, :nbytes] = codes
  packed = padded.view('<u4').astype(np.uint32)
  if bits % 32:
    extra = packed[:, -1] >> np.uint32(bits % 32)
    if np.any(extra):
      raise ValueError(f'Codes have bits set beyond bit {bits}; they are longer '
                       f'than {bits} bits.')
  return packed


def write_index_binary_flat(path: str | os.PathLike, packed: np.ndarray,
                            bits: int) -> None:
  """Writes packed codes as a FAISS IndexBinaryFlat file (no faiss needed).

  Args:
    path: output file; written to a temporary name, then renamed.
    packed: [N, W] uint32 packed codes.
    bits: K; the file's d is 8 * ceil(K / 8).
  """
  codes = packed_to_bytes(packed, bits)
  d = faiss_dimension(bits)
  header = _HEADER.pack(FOURCC, d, d // 8, codes.shape[0], 1, _METRIC_L2)

  def write(f):
    for part in (header, _VECTOR_SIZE.pack(codes.size), codes.tobytes()):
      f.write(part)

  file_io.atomic_write(path, write)


def read_index_binary_flat(path: str | os.PathLike,
                           bits: int | None = None) -> tuple[np.ndarray, int]:
  """Reads a FAISS IndexBinaryFlat file (no faiss needed).

  Args:
    path: the file.
    bits: K of the codes; default the file's d. A K below d (for codes whose
      length is not a multiple of 8) must round up to d, and the extra bits
      must be 0.

  Returns:
    packed [N, W] uint32 codes and K.

  Raises:
    FaissFileError: naming the file, if it is not such an index, is truncated,
      or does not match `bits`.
  """
  path = os.fspath(path)
  data = file_io.path(path).read_bytes()
  need = _HEADER.size + _VECTOR_SIZE.size
  if len(data) < need:
    raise FaissFileError(f'{path}: truncated FAISS index ({len(data)} bytes; '
                         f'the header alone needs {need}).')
  fourcc, d, code_size, ntotal, _, _ = _HEADER.unpack_from(data)
  if fourcc != FOURCC:
    raise FaissFileError(f'{path}: not a FAISS IndexBinaryFlat file (fourcc '
                         f'{fourcc!r}, expected {FOURCC!r}).')
  if d <= 0 or d % 8 or code_size != d // 8 or ntotal < 0:
    raise FaissFileError(f'{path}: corrupt FAISS header (d={d}, code_size='
                         f'{code_size}, ntotal={ntotal}).')
  (size,) = _VECTOR_SIZE.unpack_from(data, _HEADER.size)
  if size != ntotal * code_size:
    raise FaissFileError(f'{path}: corrupt FAISS index: {size} code bytes for '
                         f'{ntotal} codes of {code_size} bytes.')
  if len(data) - need != size:
    what = 'truncated' if len(data) - need < size else 'has trailing bytes'
    raise FaissFileError(f'{path}: FAISS index {what}: {len(data) - need} code '
                         f'bytes, the header says {size}.')
  bits = d if bits is None else int(bits)
  if faiss_dimension(bits) != d:
    raise FaissFileError(f'{path}: holds {d}-bit FAISS codes, which cannot '
                         f'hold {bits}-bit codes.')
  codes = np.frombuffer(data, np.uint8, size, need).reshape(ntotal, code_size)
  try:
    return bytes_to_packed(codes, bits), bits
  except ValueError as e:
    raise FaissFileError(f'{path}: {e}') from e


def to_faiss_index(packed: np.ndarray, bits: int):
  """A live `faiss.IndexBinaryFlat` holding the codes (needs faiss)."""
  import faiss  # pylint: disable=g-import-not-at-top
  index = faiss.IndexBinaryFlat(faiss_dimension(bits))
  index.add(packed_to_bytes(packed, bits))
  return index


def from_faiss_index(index, bits: int | None = None) -> tuple[np.ndarray, int]:
  """Packed codes and K from a live `faiss.IndexBinaryFlat` (needs faiss)."""
  import faiss  # pylint: disable=g-import-not-at-top
  codes = faiss.vector_to_array(index.xb).reshape(index.ntotal, index.code_size)
  bits = index.d if bits is None else int(bits)
  if faiss_dimension(bits) != index.d:
    raise ValueError(f'The FAISS index holds {index.d}-bit codes, which cannot '
                     f'hold {bits}-bit codes.')
  return bytes_to_packed(codes, bits), bits
