"""Tests of crossmodal_hash.retrieval.packing and the blocked Hamming kernels."""
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash.retrieval import hamming
from crossmodal_hash.retrieval import packing

BITS = (1, 16, 24, 31, 32, 33, 64, 100, 128)


def _reference_pack(bits01: np.ndarray) -> np.ndarray:
  """Bit j of word w = code bit 32 * w + j, built one bit at a time."""
  n, k = bits01.shape
  out = np.zeros((n, packing.num_words(k)), np.uint64)
  for j in range(k):
    out[:, j // 32] |= bits01[:, j].astype(np.uint64) << np.uint64(j % 32)
  return out.astype(np.uint32)


@pytest.mark.parametrize('bits', BITS)
def test_round_trip_signed_and_binary(bits):
  rng = np.random.default_rng(bits)
  bits01 = rng.integers(0, 2, (37, bits))
  signed = 2 * bits01 - 1
  packed = np.asarray(packing.pack_codes(signed))
  assert packed.dtype == np.uint32
  assert packed.shape == (37, packing.num_words(bits))
  np.testing.assert_array_equal(packed, _reference_pack(bits01))
  np.testing.assert_array_equal(np.asarray(packing.pack_codes(bits01)), packed)
  np.testing.assert_array_equal(
      np.asarray(packing.pack_codes(bits01.astype(bool))), packed)
  np.testing.assert_array_equal(
      np.asarray(packing.unpack_codes(packed, bits)), signed)
  unsigned = np.asarray(packing.unpack_codes(packed, bits, signed=False))
  assert unsigned.dtype == np.int8
  np.testing.assert_array_equal(unsigned, bits01)


@pytest.mark.parametrize('bits', BITS)
def test_padding_bits_are_zero(bits):
  packed = np.asarray(packing.pack_codes(np.ones((3, bits))))
  popcount = np.bitwise_count(packed).sum(axis=1)
  np.testing.assert_array_equal(popcount, bits)


def test_leading_dimensions_and_float_codes():
  rng = np.random.default_rng(0)
  codes = np.where(rng.normal(size=(2, 3, 40)) >= 0, 1.0, -1.0)
  packed = packing.pack_codes(codes.astype(np.float32))
  assert packed.shape == (2, 3, 2)
  np.testing.assert_array_equal(np.asarray(packing.unpack_codes(packed, 40)),
                                codes)


def test_num_words_and_errors():
  assert [packing.num_words(b) for b in (1, 32, 33, 64, 65)] == [1, 1, 2, 2, 3]
  with pytest.raises(ValueError, match='at least 1 bit'):
    packing.num_words(0)
  with pytest.raises(ValueError, match='uint32'):
    packing.unpack_codes(np.zeros((2, 1), np.int32), 16)
  with pytest.raises(ValueError, match='pack into 2 words'):
    packing.unpack_codes(np.zeros((2, 1), np.uint32), 64)
  with pytest.raises(ValueError, match='widths differ'):
    packing.hamming_packed(jnp.zeros((1, 1), jnp.uint32),
                           jnp.zeros((1, 2), jnp.uint32))


@pytest.mark.parametrize('bits', (24, 64, 100))
def test_hamming_matches_plain_comparison(bits):
  rng = np.random.default_rng(bits)
  q = 2 * rng.integers(0, 2, (7, bits)) - 1
  d = 2 * rng.integers(0, 2, (50, bits)) - 1
  expected = (q[:, None, :] != d[None, :, :]).sum(-1)
  qp, dp = packing.pack_codes(q), packing.pack_codes(d)
  np.testing.assert_array_equal(np.asarray(packing.hamming_packed(qp, dp)),
                                expected)
  np.testing.assert_array_equal(hamming.numpy_hamming(qp, dp), expected)
  blocked = hamming.hamming_distances(qp, dp, block_size=16)  # 50 = 3*16 + 2
  np.testing.assert_array_equal(np.asarray(blocked), expected)


def test_block_distances_layout():
  rng = np.random.default_rng(1)
  q = rng.integers(0, 2**32, (3, 2), dtype=np.uint64).astype(np.uint32)
  d = rng.integers(0, 2**32, (70, 2), dtype=np.uint64).astype(np.uint32)
  planar = hamming.to_planar_blocks(d)
  assert planar.shape == (2, 3, hamming.BLOCK)  # 70 -> 96 items
  dist = np.asarray(hamming.block_distances(q, planar)).reshape(3, -1)
  expected = hamming.numpy_hamming(q, np.pad(d, ((0, 26), (0, 0))))
  np.testing.assert_array_equal(dist, expected)


def test_packed_field_counts():
  """Six-bit packed bucket counts: every bucket, discards, masked sums."""
  rng = np.random.default_rng(2)
  num_fields = 13  # three words
  field = rng.integers(0, num_fields + 1, (4, 5, hamming.BLOCK))
  discard = hamming.discard_field(hamming.accumulator_count(num_fields))
  field = np.where(field == num_fields, discard, field).astype(np.uint32)
  words = hamming.field_histogram_pass(jnp.asarray(field), num_fields)
  assert len(words) == 3
  expected = (field[..., None] == np.arange(num_fields)).sum(axis=2)  # [4,5,F]
  for f in range(num_fields):
    np.testing.assert_array_equal(
        np.asarray(hamming.unpack_field(words, f)), expected[..., f])
  np.testing.assert_array_equal(
      np.asarray(hamming.total_fields(words, num_fields)), expected.sum(1))
  first = jnp.asarray([0, 2, 5, 12], jnp.int32)
  last = jnp.asarray([13, 7, 6, 12], jnp.int32)
  masks = hamming.field_masks(first, last, num_fields)
  got = np.asarray(hamming.masked_field_sum(words, masks))
  f = np.arange(num_fields)
  sel = (f >= np.asarray(first)[:, None]) & (f < np.asarray(last)[:, None])
  np.testing.assert_array_equal(got, (expected * sel[:, None, :]).sum(-1))


def test_full_block_of_one_bucket_does_not_overflow():
  field = np.full((1, 1, hamming.BLOCK), 4, np.uint32)  # bucket 4: bits 24..29
  words = hamming.field_histogram_pass(jnp.asarray(field), 10)
  assert int(hamming.unpack_field(words, 4)[0, 0]) == hamming.BLOCK
  field[:] = 5  # first bucket of word 1; also writes scratch bit 30 of word 0
  words = hamming.field_histogram_pass(jnp.asarray(field), 10)
  counts = [int(hamming.unpack_field(words, f)[0, 0]) for f in range(10)]
  assert counts == [0, 0, 0, 0, 0, hamming.BLOCK, 0, 0, 0, 0]
