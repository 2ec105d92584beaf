"""Tests of HammingIndex: build/add/search, its file format, FAISS files."""
import struct

import jax
import ml_collections
import numpy as np
import pytest

from crossmodal_hash import sharding
from crossmodal_hash.retrieval import faiss_io
from crossmodal_hash.retrieval import index as index_lib
from crossmodal_hash.retrieval import packing
from crossmodal_hash.retrieval import search

HammingIndex = index_lib.HammingIndex
# retrieval_search_test's geometry (1100 codes in chunks of 512, 6 queries in
# batches of 4, k = 50), so that searches here reuse its compilations.
GEOMETRY = dict(chunk_size=512, query_batch=4)


def _codes(rng, n, bits):
  return 2 * rng.integers(0, 2, (n, bits)) - 1


@pytest.fixture(name='saved')
def _saved(tmp_path):
  rng = np.random.default_rng(0)
  index = HammingIndex.from_codes(_codes(rng, 1100, 64), **GEOMETRY)
  path = tmp_path / 'codes.cmhidx'
  index.save(path)
  return index, path


def test_build_add_search_matches_brute_force():
  rng = np.random.default_rng(1)
  first, more = _codes(rng, 1030, 64), _codes(rng, 70, 64)  # 3 chunks each
  index = HammingIndex.from_codes(first, **GEOMETRY)
  queries = _codes(rng, 6, 64)
  index.search(queries, k=50)  # builds the device copy, which add() must reset
  index.add((more > 0).astype(np.uint8))  # {0, 1} codes
  assert len(index) == 1100 and index.packed.shape == (1100, 2)
  got_index, got_dist = index.search(queries, k=50)
  assert isinstance(got_index, np.ndarray)
  db = np.asarray(packing.pack_codes(np.concatenate([first, more])))
  ref_index, ref_dist = search.numpy_topk(
      np.asarray(packing.pack_codes(queries)), db, k=50, bits=64)
  np.testing.assert_array_equal(got_index, ref_index)
  np.testing.assert_array_equal(got_dist, ref_dist)


def test_sharded_index_matches_single_device():
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1, 'model': 1}))
  assert jax.device_count() == 8
  rng = np.random.default_rng(2)
  # The geometry of retrieval_sharded_test's first case: compiled once.
  codes, queries = _codes(rng, 4099, 64), _codes(rng, 9, 64)
  options = dict(chunk_size=256, query_batch=4)
  local = HammingIndex.from_codes(codes, **options).search(queries, k=100)
  spread = HammingIndex.from_codes(codes, mesh=mesh, **options).search(
      queries, k=100)
  np.testing.assert_array_equal(local[0], spread[0])
  np.testing.assert_array_equal(local[1], spread[1])


def test_empty_index_and_bad_codes():
  index = HammingIndex(24)
  got_index, got_dist = index.search(np.ones((3, 24)), k=40)
  assert (got_index == -1).all() and (got_dist == 25).all()
  with pytest.raises(ValueError, match='24-bit codes; got 8-bit'):
    index.add(np.ones((2, 8)))
  with pytest.raises(ValueError, match=r'only ±1 or only \{0, 1\}'):
    index.add(np.full((2, 24), 0.5))
  with pytest.raises(ValueError, match='bits set past bit 24'):
    index.add_packed(np.full((1, 1), 1 << 28, np.uint32))


def test_save_load_round_trip(saved):
  index, path = saved
  loaded = HammingIndex.load(path, bits=64, **GEOMETRY)
  assert loaded.bits == 64 and len(loaded) == 1100
  np.testing.assert_array_equal(loaded.packed, index.packed)
  rng = np.random.default_rng(3)
  queries = _codes(rng, 6, 64)
  for a, b in zip(index.search(queries, 50), loaded.search(queries, 50)):
    np.testing.assert_array_equal(a, b)
  header = path.read_bytes()[:index_lib.HEADER_SIZE]
  assert header[:8] == b'CMHAMIDX'
  assert struct.unpack_from('<IIIIQ', header, 8) == (2, 64, 2, 0, 1100)
  assert loaded.ids == index.ids == [str(i) for i in range(1100)]


def _rewrite(path, data):
  path.write_bytes(data)
  return path


def test_load_refuses_other_bit_length(saved):
  _, path = saved
  with pytest.raises(index_lib.IndexFileError,
                     match=r'codes\.cmhidx: holds 64-bit codes; expected 32'):
    HammingIndex.load(path, bits=32)


def test_load_refuses_corrupt_payload(saved):
  _, path = saved
  data = bytearray(path.read_bytes())
  data[-5] ^= 0x10
  with pytest.raises(index_lib.IndexFileError, match='codes.cmhidx: corrupt '
                     r'index payload \(SHA-256'):
    HammingIndex.load(_rewrite(path, bytes(data)))


def test_load_refuses_corrupt_header(saved):
  _, path = saved
  data = bytearray(path.read_bytes())
  data[12] ^= 0x01  # bits 64 -> 65
  with pytest.raises(index_lib.IndexFileError, match='corrupt index header'):
    HammingIndex.load(_rewrite(path, bytes(data)))


@pytest.mark.parametrize('cut', [10, index_lib.HEADER_SIZE + 7, -4])
def test_load_refuses_truncated_file(saved, cut):
  _, path = saved
  data = path.read_bytes()
  with pytest.raises(index_lib.IndexFileError, match='codes.cmhidx: .*truncated'):
    HammingIndex.load(_rewrite(path, data[:cut]))


def test_load_refuses_trailing_bytes_wrong_magic_and_version(saved, tmp_path):
  _, path = saved
  data = path.read_bytes()
  with pytest.raises(index_lib.IndexFileError, match='trailing bytes'):
    HammingIndex.load(_rewrite(tmp_path / 'a', data + b'\0'))
  with pytest.raises(index_lib.IndexFileError, match='not a crossmodal_hash'):
    HammingIndex.load(_rewrite(tmp_path / 'b', b'IBxF' + data[4:]))
  header = bytearray(data[:80])
  header[8:12] = struct.pack('<I', 4)  # 3 is the cosine indexes' version.
  import zlib  # pylint: disable=g-import-not-at-top
  newer = bytes(header) + struct.pack('<I', zlib.crc32(header)) + data[84:]
  with pytest.raises(index_lib.IndexFileError, match='format version 4'):
    HammingIndex.load(_rewrite(tmp_path / 'c', newer))


@pytest.mark.parametrize('bits', [24, 64, 100])
def test_faiss_file_round_trip_without_faiss(tmp_path, bits):
  rng = np.random.default_rng(bits)
  index = HammingIndex.from_codes(_codes(rng, 50, bits))
  path = tmp_path / 'codes.faiss'
  index.export_faiss(path)
  data = path.read_bytes()
  d = faiss_io.faiss_dimension(bits)
  assert data[:4] == b'IBxF'
  assert struct.unpack_from('<iiq', data, 4) == (d, d // 8, 50)
  back = HammingIndex.import_faiss(path, bits=bits)
  assert back.bits == bits
  np.testing.assert_array_equal(back.packed, index.packed)
  with pytest.raises(faiss_io.FaissFileError, match='codes.faiss: .*truncated'):
    HammingIndex.import_faiss(_rewrite(path, data[:-1]))
  with pytest.raises(faiss_io.FaissFileError, match='not a FAISS'):
    HammingIndex.import_faiss(_rewrite(path, b'IxF2' + data[4:]))


def test_faiss_bytes_are_lsb_first():
  # Code bit i lives in bit i % 8 of byte i // 8.
  bits01 = np.zeros((1, 24), np.int8)
  bits01[0, [0, 9, 23]] = 1
  packed = np.asarray(packing.pack_codes(bits01))
  np.testing.assert_array_equal(faiss_io.packed_to_bytes(packed, 24),
                                [[0b1, 0b10, 0b10000000]])
  with pytest.raises(ValueError, match='beyond bit 20'):
    faiss_io.bytes_to_packed(np.array([[0, 0, 0x10]], np.uint8), 20)


@pytest.mark.parametrize('bits', [16, 64, 128])
def test_distances_equal_faiss(tmp_path, bits):
  faiss = pytest.importorskip('faiss')
  rng = np.random.default_rng(bits)
  # retrieval_search_test's geometry, so the search is compiled once.
  index = HammingIndex.from_codes(_codes(rng, 1100, bits), **GEOMETRY)
  queries = _codes(rng, 6, bits)
  path = tmp_path / 'ours.faiss'
  index.export_faiss(path)
  theirs = faiss.read_index_binary(str(path))
  assert theirs.ntotal == 1100 and theirs.d == bits
  q_bytes = faiss_io.packed_to_bytes(np.asarray(packing.pack_codes(queries)),
                                     bits)
  faiss_dist, _ = theirs.search(q_bytes, 50)
  our_index, our_dist = index.search(queries, k=50)
  np.testing.assert_array_equal(our_dist, faiss_dist)
  # FAISS's own file and live index read back to the same codes.
  faiss.write_index_binary(index.to_faiss(), str(tmp_path / 'theirs.faiss'))
  back = HammingIndex.import_faiss(tmp_path / 'theirs.faiss')
  np.testing.assert_array_equal(back.packed, index.packed)
  packed, back_bits = faiss_io.from_faiss_index(theirs)
  assert back_bits == bits
  np.testing.assert_array_equal(packed, index.packed)
  assert our_index.shape == (6, 50)


def test_ids_and_metadata_round_trip_and_version_1_still_loads(tmp_path):
  rng = np.random.default_rng(5)
  codes = _codes(rng, 30, 40)
  index = HammingIndex(40, metadata={'modality': 'image', 'step': 7})
  index.add(codes[:20], ids=[f'img/{i}.jpg' for i in range(20)])
  index.add(codes[20:], ids=[f'ünï{i}' for i in range(10)])
  path = tmp_path / 'ids.cmhidx'
  index.save(path)
  loaded = HammingIndex.load(path, bits=40)
  assert loaded.metadata == {'modality': 'image', 'step': 7}
  assert loaded.ids == index.ids and loaded.ids[25] == 'ünï5'
  np.testing.assert_array_equal(loaded.packed, index.packed)
  with pytest.raises(ValueError, match='2 codes but 1 ids'):
    index.add(codes[:2], ids=['x'])
  with pytest.raises(ValueError, match='newline'):
    index.add(codes[:1], ids=['a\nb'])
  # A version 1 file: the 68-byte header, the codes alone.
  import hashlib, zlib  # pylint: disable=g-import-not-at-top,multiple-imports
  payload = index.packed.astype('<u4').tobytes()
  header = struct.pack('<8sIIIIQ32s', b'CMHAMIDX', 1, 40, 2, 0, 30,
                       hashlib.sha256(payload).digest())
  old = tmp_path / 'v1.cmhidx'
  old.write_bytes(header + struct.pack('<I', zlib.crc32(header)) + payload)
  v1 = HammingIndex.load(old, bits=40)
  assert v1.ids == [str(i) for i in range(30)] and v1.metadata == {}
  np.testing.assert_array_equal(v1.packed, index.packed)
  # Ids are covered by the checksum.
  data = bytearray(path.read_bytes())
  data[-1] ^= 0x01
  with pytest.raises(index_lib.IndexFileError, match='SHA-256'):
    HammingIndex.load(_rewrite(path, bytes(data)))
