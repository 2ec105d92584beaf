"""Tests of the numba CPU Hamming kernel against NumPy brute force."""
import numpy as np
import pytest

from crossmodal_hash.retrieval import hamming_cpu
from crossmodal_hash.retrieval import packing
from crossmodal_hash.retrieval import search

pytestmark = pytest.mark.skipif(not hamming_cpu.AVAILABLE,
                                reason='numba is not installed')


def _random_packed(rng, n, bits):
  words = -(-bits // 32)
  packed = rng.integers(0, 2**32, (n, words), dtype=np.uint64).astype(np.uint32)
  if bits % 32:
    packed[:, -1] &= np.uint32((1 << (bits % 32)) - 1)
  return packed


def _check(query, db, *, k, bits):
  index, dist = hamming_cpu.topk(query, hamming_cpu.to_tiles(db), k=k,
                                 bits=bits)
  ref_index, ref_dist = search.numpy_topk(query, db, k=k, bits=bits)
  assert index.dtype == np.int32 and dist.dtype == np.int32
  np.testing.assert_array_equal(dist, ref_dist)
  np.testing.assert_array_equal(index, ref_index)


@pytest.mark.parametrize(
    'bits', [1, 8, 16, 24, 32, 33, 48, 64, 96, 100, 128, 160, 192, 200, 224,
             256, 320, 500])
def test_random_codes(bits):
  rng = np.random.default_rng(bits)
  # 37 queries: several query groups, padded to whole query tiles of 8;
  # 5,000 items: five tiles, the last one partial. 1..256 bits take the
  # unrolled vector paths (1..4 words), 320 and 500 the run-time word loop.
  _check(_random_packed(rng, 37, bits), _random_packed(rng, 5000, bits),
         k=100, bits=bits)


@pytest.mark.parametrize('k', [1, 7, 300])
def test_heavy_ties_are_in_index_order(k):
  rng = np.random.default_rng(k)
  protos = _random_packed(rng, 5, 64)
  db = protos[rng.integers(0, 5, 6000)]  # ~1,200 items per distance
  query = protos[rng.integers(0, 5, 20)]
  _check(query, db, k=k, bits=64)


def test_buffer_compaction_on_descending_distances():
  """Every item beats the bound: the candidate buffer fills and compacts."""
  bits, n = 64, 3000
  # Item i has its lowest 64 - i * 64 // n bits set: distances to the zero
  # query fall as the index grows.
  ones = 64 - (np.arange(n) * 64) // n
  codes = np.where(ones >= 64, np.uint64(2**64 - 1),
                   (np.uint64(1) << ones.astype(np.uint64)) - np.uint64(1))
  db = codes.astype('<u8').view('<u4').reshape(n, 2)
  _check(np.zeros((3, 2), np.uint32), db, k=50, bits=bits)


def test_bound_moves_inside_one_mask_vector():
  """Several candidates among 16 neighbours; b moves down between them.

  Items 0..15 of every 512 items have distances 1..16 to the zero query in a
  shuffled order (two 8-lane vectors of 64-bit codes hold them): each of
  them beats the bound when the vectors are tested, but once k have entered,
  only some still beat it when visited. Each block repeats the distances, so
  the k-th distance ties.
  """
  bits, n = 64, 3000
  ones = np.zeros(n, np.int64) + 40
  shuffled = np.random.default_rng(0).permutation(16) + 1
  for start in range(0, n, 512):
    ones[start:start + 16] = shuffled
  codes = (np.uint64(1) << ones.astype(np.uint64)) - np.uint64(1)
  db = codes.astype('<u8').view('<u4').reshape(n, 2)
  for k in (1, 3, 20):
    _check(np.zeros((5, 2), np.uint32), db, k=k, bits=bits)


def test_sampled_start_bound_random_and_fallback():
  """Long databases start from a sample; a misleading sample is rescanned."""
  tiles_needed = hamming_cpu._SAMPLE_STEP * hamming_cpu._MIN_SAMPLE_TILES
  n = tiles_needed * hamming_cpu.TILE + 123
  rng = np.random.default_rng(3)
  db = _random_packed(rng, n, 64)
  query = _random_packed(rng, 18, 64)
  _check(query, db, k=100, bits=64)
  # Copies of query 0 only in sampled tiles, fewer than k of them: the sample
  # says T = 0, the full pass finds too few items below 1, and the query is
  # scanned again from scratch.
  k_sample = int(np.ceil(hamming_cpu._SAMPLE_OVERSHOOT * 100 /
                         hamming_cpu._SAMPLE_STEP))
  for i in range(k_sample):
    db[i * hamming_cpu._SAMPLE_STEP * hamming_cpu.TILE + 7] = query[0]
  _check(query, db, k=100, bits=64)


@pytest.mark.parametrize('bits', [24, 64, 128, 320])
def test_padding_items_never_enter(bits):
  """Zero codes past N (tile padding) sit at distance 0 from a zero query.

  The vector passes read the whole last vector of items, padding included,
  and flag it; the exact pass must still stop at N. N = 1,029 leaves a
  partial vector in a partial tile, and k > N asks for every item.
  """
  rng = np.random.default_rng(bits)
  db = _random_packed(rng, 1029, bits)
  db[:, 0] |= 1  # no database code is zero
  query = np.zeros((9, db.shape[1]), np.uint32)
  query[1::2] = db[rng.integers(0, 1029, 4)]
  _check(query, db, k=5, bits=bits)
  _check(query, db, k=1100, bits=bits)


@pytest.mark.parametrize('n', [0, 1, 30])
def test_fewer_items_than_k(n):
  rng = np.random.default_rng(n)
  query, db = _random_packed(rng, 3, 24), _random_packed(rng, n, 24)
  index, dist = hamming_cpu.topk(query, hamming_cpu.to_tiles(db), k=40,
                                 bits=24)
  assert (index[:, n:] == -1).all() and (dist[:, n:] == 25).all()
  _check(query, db, k=40, bits=24)


def test_kernel_words_keep_distances():
  rng = np.random.default_rng(0)
  for bits in (32, 64, 96):
    packed = _random_packed(rng, 50, bits)
    words = hamming_cpu.kernel_words(packed)
    assert words.dtype == (np.uint32 if bits == 32 else np.uint64)
    np.testing.assert_array_equal(
        np.bitwise_count(words[:, None] ^ words[None]).sum(-1),
        np.bitwise_count(packed[:, None] ^ packed[None]).sum(-1))


def test_mismatched_lengths_and_k_are_rejected():
  tiles = hamming_cpu.to_tiles(np.zeros((10, 2), np.uint32))
  with pytest.raises(ValueError, match='different lengths'):
    hamming_cpu.topk(np.zeros((1, 4), np.uint32), tiles, k=1, bits=128)
  with pytest.raises(ValueError, match='k must be >= 1'):
    hamming_cpu.topk(np.zeros((1, 2), np.uint32), tiles, k=0, bits=64)


@pytest.mark.parametrize('graded', [False, True])
def test_block_keys_match_brute_force(graded):
  rng = np.random.default_rng(int(graded))
  bits, num_labels, shift = 64, 40, 6
  q, db = _random_packed(rng, 9, bits), _random_packed(rng, 2500, bits)
  ql = rng.random((9, num_labels)) < 0.1
  dl = rng.random((2500, num_labels)) < 0.1
  pack = lambda x: np.asarray(packing.pack_codes(x))
  db_slice = slice(700, 2300)  # starts and ends inside tiles
  dist, key = hamming_cpu.block_keys(
      hamming_cpu.kernel_words(q), hamming_cpu.to_tiles(db),
      hamming_cpu.kernel_words(pack(ql)), hamming_cpu.to_tiles(pack(dl)),
      ql.sum(1).astype(np.int32), dl.sum(1).astype(np.int32), shift=shift,
      graded=graded, db_slice=db_slice, dist_dtype=np.uint8,
      key_dtype=np.uint16)
  ref_dist = np.bitwise_count(q[:, None] ^ db[None, db_slice]).sum(
      -1, dtype=np.int64)
  shared = (ql[:, None] & dl[None, db_slice]).sum(-1)
  overlap = shared if graded else (shared > 0).astype(np.int64)
  assert dist.dtype == np.uint8 and key.dtype == np.uint16
  np.testing.assert_array_equal(dist, ref_dist)
  np.testing.assert_array_equal(key, (ref_dist << shift) | overlap)

