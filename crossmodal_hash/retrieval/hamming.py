"""Blocked XOR-popcount Hamming kernels on bit-packed codes.

The search engine reads the database in a *planar block* layout: packed codes
`[N, W]` (see `packing.py`) are padded with all-zero codes to a multiple of
`BLOCK` items and stored as `[W, N / BLOCK, BLOCK]` uint32, word-major. A pass
over the database is then one XLA fusion over `[Q, N / BLOCK, BLOCK]` whose
reduction runs over the last (`BLOCK`-sized) axis, so the `[Q, N]` distance
matrix is never written to memory: only `[Q, N / BLOCK]` per-block summaries
are. (XLA:CPU rewrites reductions over axes longer than 32 into trees of
unfused `reduce-window`s that do write the operand; 32 keeps them fused.)

A pass summarises each block by a histogram of a *digit* of the distance,
packed into uint32 words: six bits per bucket (a block has at most 32 items, so
a count fits in six bits), five buckets per word. `field_histogram_pass` is the
kernel; `radix_select.py` drives it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from crossmodal_hash.retrieval import packing

BLOCK = 32  # database items per block; also the fused reduction length.
FIELD_BITS = 6  # bits per bucket count in a packed word (counts <= BLOCK).
FIELDS_PER_WORD = 5  # 5 * 6 = 30 bits; bits 30 and 31 are scratch.
_FIELD_MASK = (1 << FIELD_BITS) - 1
# Multiplying a word of five 6-bit fields by this moves the sum of the fields
# into bits 24..29 (no carries: the five fields of a block sum to <= 32 < 64).
_FIELD_SUM_MULTIPLIER = sum(1 << (FIELD_BITS * i) for i in range(FIELDS_PER_WORD))
_FIELD_SUM_SHIFT = FIELD_BITS * (FIELDS_PER_WORD - 1)


def padded_size(n: int, multiple: int = BLOCK) -> int:
  """Smallest multiple of `multiple` that is >= n (and >= `multiple`)."""
  return max(multiple, -(-n // multiple) * multiple)


def to_planar_blocks(packed: jax.Array, num_items: int | None = None) -> jax.Array:
  """Packed codes `[N, W]` -> planar blocks `[W, M / BLOCK, BLOCK]` uint32.

  Args:
    packed: [N, W] uint32 packed codes.
    num_items: M, the padded item count (a multiple of BLOCK, >= N); default
      `padded_size(N)`. Items N..M-1 are all-zero codes.

  Returns:
    [W, M / BLOCK, BLOCK] uint32.
  """
  packed = jnp.asarray(packed, jnp.uint32)
  n, words = packed.shape
  m = padded_size(n) if num_items is None else num_items
  if m % BLOCK or m < n:
    raise ValueError(f'num_items={m} must be a multiple of {BLOCK} and >= {n}.')
  packed = jnp.pad(packed, ((0, m - n), (0, 0)))
  return packed.T.reshape(words, m // BLOCK, BLOCK)


def block_distances(query: jax.Array, planar: jax.Array) -> jax.Array:
  """Distances of every query to every database item, in block layout.

  Meant to be consumed inside the same jit (a reduction over the last axis), so
  that XLA fuses it and never materialises the result.

  Args:
    query: [Q, W] uint32 packed queries.
    planar: [W, B, BLOCK] uint32 planar database blocks.

  Returns:
    [Q, B, BLOCK] uint32 Hamming distances.
  """
  words = planar.shape[0]
  if query.shape[-1] != words:
    raise ValueError(f'Packed code widths differ: queries have {query.shape[-1]} '
                     f'words, the database {words}.')
  dist = None
  for w in range(words):
    x = jax.lax.population_count(query[:, w, None, None] ^ planar[w][None])
    dist = x if dist is None else dist + x
  return dist


def accumulator_count(num_fields: int) -> int:
  """Packed uint32 words needed for `num_fields` bucket counts."""
  return -(-num_fields // FIELDS_PER_WORD)


def discard_field(num_words: int) -> int:
  """A bucket index whose one-hot increment is 0 in all `num_words` words."""
  # Word a receives 1 << (6 * field - 30 * a); XLA's shift_left yields 0 for a
  # shift >= 32 (a negative shift wraps to a huge uint32, also >= 32).
  return -(-(32 + FIELDS_PER_WORD * FIELD_BITS * (num_words - 1)) // FIELD_BITS)


def field_histogram_pass(field: jax.Array, num_fields: int) -> tuple[jax.Array, ...]:
  """Per-block bucket counts of `field`, packed six bits per bucket.

  Args:
    field: [Q, B, BLOCK] uint32 bucket index of every (query, item) pair, in
      [0, num_fields) or `>= discard_field(...)` for pairs that are not counted.
      It is a lazy expression of `block_distances` inside the caller's jit.
    num_fields: F, the number of buckets (<= 20).

  Returns:
    A = ceil(F / 5) arrays [Q, B] uint32; bucket f of block b is the six-bit
    field (f % 5) of word f // 5.
  """
  words = accumulator_count(num_fields)
  shift = field * jnp.uint32(FIELD_BITS)
  ones = tuple(
      jnp.left_shift(jnp.uint32(1),
                     shift - jnp.uint32(FIELDS_PER_WORD * FIELD_BITS * a))
      for a in range(words))
  zeros = tuple(jnp.uint32(0) for _ in range(words))
  return tuple(jax.lax.reduce(
      ones, zeros, lambda x, y: tuple(p + q for p, q in zip(x, y)),
      (field.ndim - 1,)))


def unpack_field(words: tuple[jax.Array, ...], f: int) -> jax.Array:
  """Bucket f's count from packed words: same shape as a word, uint32."""
  word = words[f // FIELDS_PER_WORD]
  return (word >> jnp.uint32(FIELD_BITS * (f % FIELDS_PER_WORD))) & jnp.uint32(
      _FIELD_MASK)


def total_fields(words: tuple[jax.Array, ...], num_fields: int) -> jax.Array:
  """Per-query totals of every bucket over all blocks.

  Args:
    words: A arrays [Q, B] uint32 from `field_histogram_pass`.
    num_fields: F.

  Returns:
    [Q, F] int32.
  """
  q, b = words[0].shape
  groups = -(-b // BLOCK)
  pad = groups * BLOCK - b
  words = tuple(jnp.pad(w, ((0, 0), (0, pad))).reshape(q, groups, BLOCK)
                for w in words)
  # One BLOCK-long fused (variadic) reduction over every bucket, then a sum of
  # the BLOCK times shorter partials.
  fields = tuple(unpack_field(words, f) for f in range(num_fields))
  per_group = jax.lax.reduce(
      fields, tuple(jnp.uint32(0) for _ in fields),
      lambda x, y: tuple(a + b for a, b in zip(x, y)), (2,))
  per_group = jnp.stack(per_group, axis=-1)
  return per_group.sum(axis=1, dtype=jnp.uint32).astype(jnp.int32)


def masked_field_sum(words: tuple[jax.Array, ...], masks: jax.Array) -> jax.Array:
  """Per block, the sum of the buckets selected by a per-query mask.

  Args:
    words: A arrays [Q, ...] uint32 from `field_histogram_pass` (or slices of
      them).
    masks: [Q, A] uint32; bit 6f..6f+5 of masks[:, a] set selects bucket
      5a + f.

  Returns:
    [Q, ...] int32, the selected counts summed over buckets (<= BLOCK).
  """
  total = None
  for a, word in enumerate(words):
    mask = masks[:, a].reshape((-1,) + (1,) * (word.ndim - 1))
    selected = word & mask
    part = ((selected * jnp.uint32(_FIELD_SUM_MULTIPLIER)) >> jnp.uint32(
        _FIELD_SUM_SHIFT)) & jnp.uint32(_FIELD_MASK)
    total = part if total is None else total + part
  return total.astype(jnp.int32)


def field_masks(first: jax.Array, last: jax.Array, num_fields: int) -> jax.Array:
  """Word masks that select buckets first..last-1 (per query).

  Args:
    first: [Q] int32, first selected bucket.
    last: [Q] int32, one past the last selected bucket.
    num_fields: F.

  Returns:
    [Q, A] uint32 masks for `masked_field_sum`.
  """
  words = accumulator_count(num_fields)
  f = jnp.arange(words * FIELDS_PER_WORD, dtype=jnp.int32)
  on = (f[None] >= first[:, None]) & (f[None] < last[:, None])
  on = on.reshape(-1, words, FIELDS_PER_WORD).astype(jnp.uint32)
  shifts = jnp.arange(FIELDS_PER_WORD, dtype=jnp.uint32) * FIELD_BITS
  return jnp.sum(on * jnp.uint32(_FIELD_MASK) << shifts, axis=-1,
                 dtype=jnp.uint32)


def hamming_distances(query: jax.Array, database: jax.Array, *,
                      block_size: int = 65536) -> jax.Array:
  """Full `[Q, N]` distance matrix, computed over database blocks.

  For callers that need every distance (the output is `[Q, N]`, so choose the
  query batch accordingly); search never builds it.

  Args:
    query: [Q, W] uint32 packed queries.
    database: [N, W] uint32 packed database codes.
    block_size: database items per step (bounds the temporaries to
      `[Q, block_size, W]`).

  Returns:
    [Q, N] int32.
  """
  query = jnp.asarray(query, jnp.uint32)
  database = jnp.asarray(database, jnp.uint32)
  n = database.shape[0]
  if n <= block_size:
    return packing.hamming_packed(query, database)
  steps = -(-n // block_size)
  padded = jnp.pad(database, ((0, steps * block_size - n), (0, 0)))
  blocks = padded.reshape(steps, block_size, -1)
  out = jax.lax.map(lambda b: packing.hamming_packed(query, b), blocks)
  return jnp.moveaxis(out, 0, 1).reshape(query.shape[0], -1)[:, :n]


def numpy_hamming(query: np.ndarray, database: np.ndarray) -> np.ndarray:
  """Reference distances on packed codes with NumPy: [Q, N] int32."""
  query = np.asarray(query, np.uint32)
  database = np.asarray(database, np.uint32)
  xor = query[:, None, :] ^ database[None, :, :]
  return np.bitwise_count(xor).sum(axis=-1, dtype=np.int32)
