"""Packing of binary hash codes into uint32 words, and Hamming distance on them.

A K-bit code packs into W = ceil(K / 32) uint32 words: bit j of word w holds
code bit 32 * w + j (little-endian within a word), 1 for a positive entry of a
±1 code (or 1 of a {0, 1} code) and 0 otherwise. The padding bits of the last
word are always 0, so they never add to a XOR-popcount distance.

Every function here is written in `jax.numpy` and can run under `jax.jit`; it
accepts NumPy arrays as well.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

WORD_BITS = 32


def num_words(bits: int) -> int:
  """Number of uint32 words that hold a `bits`-bit code."""
  if bits < 1:
    raise ValueError(f'A code needs at least 1 bit; got {bits}.')
  return -(-bits // WORD_BITS)


def pack_codes(codes: jax.Array | np.ndarray) -> jax.Array:
  """Packs binary codes into uint32 words.

  Args:
    codes: [..., K] codes, either ±1 (a bit is set where the entry is > 0) or
      {0, 1} (set where it is 1), any numeric or bool dtype.

  Returns:
    [..., ceil(K / 32)] uint32.
  """
  codes = jnp.asarray(codes)
  bits = codes.shape[-1]
  words = num_words(bits)
  on = (codes > 0).astype(jnp.uint32)
  pad = words * WORD_BITS - bits
  if pad:
    on = jnp.pad(on, [(0, 0)] * (on.ndim - 1) + [(0, pad)])
  on = on.reshape(*on.shape[:-1], words, WORD_BITS)
  shifts = jnp.arange(WORD_BITS, dtype=jnp.uint32)
  # Distinct powers of two: the sum is the bitwise OR and cannot overflow.
  return jnp.sum(on << shifts, axis=-1, dtype=jnp.uint32)


def unpack_codes(packed: jax.Array | np.ndarray, bits: int,
                 *, signed: bool = True) -> jax.Array:
  """Inverse of `pack_codes`.

  Args:
    packed: [..., W] uint32 with W = ceil(bits / 32).
    bits: K, the code length.
    signed: return ±1 codes if True, {0, 1} bits if False.

  Returns:
    [..., K] int8.
  """
  packed = jnp.asarray(packed)
  if packed.dtype != jnp.uint32:
    raise ValueError(f'Packed codes must be uint32; got {packed.dtype}.')
  if packed.shape[-1] != num_words(bits):
    raise ValueError(f'{bits}-bit codes pack into {num_words(bits)} words; got '
                     f'{packed.shape[-1]}.')
  shifts = jnp.arange(WORD_BITS, dtype=jnp.uint32)
  on = (packed[..., None] >> shifts) & jnp.uint32(1)  # [..., W, 32]
  on = on.reshape(*packed.shape[:-1], -1)[..., :bits].astype(jnp.int8)
  return 2 * on - 1 if signed else on


def hamming_packed(query: jax.Array, database: jax.Array) -> jax.Array:
  """Hamming distances between packed codes, by XOR and population count.

  Args:
    query: [Q, W] uint32 packed codes.
    database: [N, W] uint32 packed codes of the same length.

  Returns:
    [Q, N] int32 distances.
  """
  if query.shape[-1] != database.shape[-1]:
    raise ValueError(f'Packed code widths differ: {query.shape[-1]} and '
                     f'{database.shape[-1]} words.')
  xor = jnp.bitwise_xor(query[:, None, :], database[None, :, :])  # [Q, N, W]
  return jnp.sum(jax.lax.population_count(xor), axis=-1, dtype=jnp.int32)
