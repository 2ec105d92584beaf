"""Tests of the exact radix-select Hamming search against a NumPy brute force."""
import numpy as np
import pytest

from crossmodal_hash.retrieval import hamming_cpu
from crossmodal_hash.retrieval import packing
from crossmodal_hash.retrieval import radix_select
from crossmodal_hash.retrieval import search


def _random_codes(rng, n, bits):
  return np.asarray(packing.pack_codes(rng.integers(0, 2, (n, bits))))


def _tied_codes(rng, n, q, bits, distinct=6):
  """Codes drawn from a few prototypes: most distances are tied."""
  protos = rng.integers(0, 2, (distinct, bits))
  db = protos[rng.integers(0, distinct, n)]
  query = protos[rng.integers(0, distinct, q)]
  return (np.asarray(packing.pack_codes(db)),
          np.asarray(packing.pack_codes(query)))


def _check(query, db, *, k, bits, **kwargs):
  index, dist = search.search(query, db, k=k, bits=bits, **kwargs)
  ref_index, ref_dist = search.numpy_topk(query, db, k=k, bits=bits)
  assert index.dtype == np.int32 and dist.dtype == np.int32
  assert index.shape == dist.shape == (query.shape[0], k)
  np.testing.assert_array_equal(np.asarray(dist), ref_dist)
  np.testing.assert_array_equal(np.asarray(index), ref_index)


# One compiled geometry per code length (compiles dominate this file's time):
# 6 queries in batches of 4 (the second batch half padding), 3 chunks of 512
# items (the last one partly padding), k = 50. The XLA kernel unless a test
# asks for the numba CPU kernel (hamming_cpu_test covers its own paths).
GEOMETRY = dict(k=50, chunk_size=512, query_batch=4, kernel='xla')
KERNELS = ('xla', 'cpu')


@pytest.mark.parametrize('kernel', KERNELS)
@pytest.mark.parametrize('bits', [16, 24, 33, 64, 100, 128])
def test_random_codes_match_brute_force(bits, kernel):
  rng = np.random.default_rng(bits)
  _check(_random_codes(rng, 6, bits), _random_codes(rng, 1100, bits),
         bits=bits, **dict(GEOMETRY, kernel=kernel))


@pytest.mark.parametrize('kernel', KERNELS)
@pytest.mark.parametrize('bits', [16, 64])
def test_heavy_ties_in_index_order(bits, kernel):
  rng = np.random.default_rng(bits + 1)
  db, query = _tied_codes(rng, 1300, 6, bits)  # ~220 items per distance
  _check(query, db, bits=bits, **dict(GEOMETRY, kernel=kernel))


# Chunks of >= SAMPLE_STRIDE * MIN_SAMPLE_BLOCKS blocks take the one-pass
# window around a sampled estimate of T, falling back to the full radix select
# when T is outside it. One compiled geometry: 40,000 codes in one chunk.
WINDOW_ITEMS = 40_000


def test_window_path_random_and_tied_codes():
  assert WINDOW_ITEMS // 32 >= (radix_select.SAMPLE_STRIDE *
                                radix_select.MIN_SAMPLE_BLOCKS)
  rng = np.random.default_rng(11)
  _check(_random_codes(rng, 6, 64), _random_codes(rng, WINDOW_ITEMS, 64),
         bits=64, k=50, query_batch=4, kernel='xla')
  db, query = _tied_codes(rng, WINDOW_ITEMS, 6, 64)
  _check(query, db, bits=64, k=50, query_batch=4, kernel='xla')


def test_window_fallback_when_the_sample_misleads():
  """Exact copies of the queries only in blocks the sample skips."""
  rng = np.random.default_rng(12)
  db = _random_codes(rng, WINDOW_ITEMS, 64).copy()
  query = _random_codes(rng, 6, 64)
  stride = radix_select.SAMPLE_STRIDE
  unsampled = [b for b in range(WINDOW_ITEMS // 32) if b % stride][:360]
  for i, b in enumerate(unsampled):
    db[32 * b + 5] = query[i % 6]  # 60 > k copies of each query: T = 0
  _check(query, db, bits=64, k=50, query_batch=4, kernel='xla')


@pytest.mark.parametrize('kernel', KERNELS)
def test_identical_codes_return_the_first_k_indices(kernel):
  db = np.zeros((1100, 2), np.uint32)
  query = np.zeros((6, 2), np.uint32)
  index, dist = search.search(query, db, bits=64,
                              **dict(GEOMETRY, kernel=kernel))
  np.testing.assert_array_equal(np.asarray(index), np.tile(np.arange(50), (6, 1)))
  np.testing.assert_array_equal(np.asarray(dist), 0)


@pytest.mark.parametrize('kernel', KERNELS)
@pytest.mark.parametrize('n', [0, 1, 30])
def test_k_larger_than_database_pads_with_sentinels(n, kernel):
  rng = np.random.default_rng(5)
  db, query = _random_codes(rng, n, 24), _random_codes(rng, 3, 24)
  index, dist = search.search(query, db, k=40, bits=24,  # one 32-item chunk
                              kernel=kernel)
  index, dist = np.asarray(index), np.asarray(dist)
  assert (index[:, n:] == -1).all() and (dist[:, n:] == 25).all()
  ref_index, ref_dist = search.numpy_topk(query, db, k=40, bits=24)
  np.testing.assert_array_equal(index, ref_index)
  np.testing.assert_array_equal(dist, ref_dist)
  assert sorted(index[0, :n].tolist()) == list(range(n))


def test_query_batches_do_not_change_results():
  rng = np.random.default_rng(7)
  db, query = _random_codes(rng, 1100, 64), _random_codes(rng, 6, 64)
  prepared = search.prepare(db, chunk_size=512, kernel='xla')
  outs = [search.search_prepared(query, prepared, k=50, bits=64, query_batch=b)
          for b in (4, 1, 6)]
  for index, dist in outs[1:]:
    np.testing.assert_array_equal(np.asarray(index), np.asarray(outs[0][0]))
    np.testing.assert_array_equal(np.asarray(dist), np.asarray(outs[0][1]))


@pytest.mark.parametrize('kernel', KERNELS)
def test_input_validation(kernel):
  db = np.zeros((10, 2), np.uint32)
  with pytest.raises(ValueError, match=r'\[M, 1\] uint32 for 24-bit'):
    search.search(np.zeros((1, 2), np.uint32), db, k=1, bits=24,
                  kernel=kernel)
  with pytest.raises(ValueError, match='packed uint32'):
    search.search(np.zeros((1, 2), np.int32), db, k=1, bits=64, kernel=kernel)
  with pytest.raises(ValueError, match='k must be >= 1'):
    search.search(np.zeros((1, 2), np.uint32), db, k=0, bits=64,
                  kernel=kernel)
  with pytest.raises(ValueError, match='multiple of 32'):
    search.prepare(db, chunk_size=100, kernel=kernel)
  with pytest.raises(ValueError, match='different lengths'):
    search.search_prepared(np.zeros((1, 1), np.uint32),
                           search.prepare(db, kernel='cpu'), k=1, bits=32)
  with pytest.raises(ValueError, match='kernel must be one of'):
    search.prepare(db, kernel='gpu')


def test_auto_kernel_is_numba_on_cpu():
  assert search.resolve_kernel('auto') == 'cpu'
  assert isinstance(search.prepare(np.zeros((3, 2), np.uint32)),
                    hamming_cpu.Tiles)


@pytest.mark.parametrize('bits', [1, 7, 16, 19, 20, 24, 32, 33, 64, 100, 128,
                                  256, 1000])
def test_plans_cover_every_distance(bits):
  levels = radix_select.plan_levels(bits)
  assert levels[0].digit_bits is None and levels[-1].shift == 0
  assert (bits >> levels[0].shift) + 1 == levels[0].num_digits
  shift = levels[0].shift
  for level in levels[1:]:
    assert level.shift == shift - level.digit_bits
    shift = level.shift
    assert level.below == (level is levels[-1])
  assert all(level.num_fields <= radix_select.MAX_FIELDS for level in levels)
  assert radix_select.describe_plan(bits).startswith(f'{bits} bits: ')


def test_merge_topk_orders_by_distance_then_index():
  index = np.array([[5, -1, 2, 9, 3, 1]], np.int32)
  dist = np.array([[3, 9, 1, 1, 3, 0]], np.int32)
  merged_index, merged_dist = radix_select.merge_topk(index, dist, k=4)
  np.testing.assert_array_equal(np.asarray(merged_index), [[1, 2, 9, 3]])
  np.testing.assert_array_equal(np.asarray(merged_dist), [[0, 1, 1, 3]])
