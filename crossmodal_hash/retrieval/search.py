"""Exact k-nearest-neighbour search by Hamming distance on one device.

    prepared = search.prepare(db_packed)               # once per database
    indices, distances = search.search(q_packed, prepared, k=100, bits=64)

Two kernels compute the same result. On CPU (the default there when numba is
installed) it is `hamming_cpu.topk`, compiled by numba: XOR-popcount over
tiled codes with a running k-th-distance bound (see that module). On GPU and
TPU, or with `kernel='xla'`, it is the XLA radix select below.

XLA kernel: queries are processed in batches of `query_batch` (a `lax.map`),
the database in chunks of `chunk_size` items (a `lax.scan`); each (batch,
chunk) step runs the radix select of `radix_select.chunk_topk` and merges its
k candidates into the running top-k. Memory is O(query_batch * chunk_size / 4)
bytes for the per-block counts plus O(query_batch * k * 32) for the descent,
whatever the database size.

Results: indices [Q, k] int32 and distances [Q, k] int32, ordered by
(distance, database index). If the database has fewer than k items, the
missing slots hold index -1 and distance bits + 1.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from crossmodal_hash.retrieval import hamming
from crossmodal_hash.retrieval import hamming_cpu
from crossmodal_hash.retrieval import packing
from crossmodal_hash.retrieval import radix_select

# Database items per scan step and queries per map step. On CPU, chunks of 1M
# codes and batches of 32 queries measured fastest (benchmarks/
# hamming_search.py); accelerators get larger steps to fill the device (not
# measured in this repository yet).
CPU_CHUNK_SIZE = 1 << 20
CPU_QUERY_BATCH = 32
ACCELERATOR_CHUNK_SIZE = 1 << 22
ACCELERATOR_QUERY_BATCH = 512
# Budget (int32 elements) for one descent temporary [query_batch, k, 32].
_DESCENT_ELEMENTS = 1 << 22
# 'auto': the numba CPU kernel on a CPU backend when numba is there, else XLA.
KERNELS = ('auto', 'cpu', 'xla')


@dataclasses.dataclass(frozen=True)
class PlanarDatabase:
  """A packed database in the planar chunked layout that search reads.

  Attributes:
    chunks: [C, W, chunk_size / 32, 32] uint32; item i is in chunk
      i // chunk_size. Items past `num_items` are all-zero padding.
    num_items: N, the number of real items.
  """
  chunks: jax.Array
  num_items: int

  @property
  def num_words(self) -> int:
    return self.chunks.shape[1]

  @property
  def chunk_size(self) -> int:
    return self.chunks.shape[2] * self.chunks.shape[3]


def check_packed(codes, bits: int, name: str) -> jax.Array:
  """Returns `codes` as [M, W] uint32 after checking it packs `bits` bits."""
  words = packing.num_words(bits)
  dtype = getattr(codes, 'dtype', None)
  if dtype is not None and dtype != np.uint32:
    raise ValueError(f'{name} must be packed uint32 codes (packing.pack_codes); '
                     f'got dtype {dtype}.')
  codes = jnp.asarray(codes, jnp.uint32)
  if codes.ndim != 2 or codes.shape[1] != words:
    raise ValueError(f'{name} must be [M, {words}] uint32 for {bits}-bit codes; '
                     f'got shape {codes.shape}.')
  return codes


def _on_cpu() -> bool:
  return jax.default_backend() == 'cpu'


def chunk_size_for(num_items: int, chunk_size: int | None = None) -> int:
  """The chunk size used for a database of `num_items` (a multiple of 32)."""
  if chunk_size is None:
    size = CPU_CHUNK_SIZE if _on_cpu() else ACCELERATOR_CHUNK_SIZE
  else:
    size = int(chunk_size)
  if size < hamming.BLOCK or size % hamming.BLOCK:
    raise ValueError(f'chunk_size must be a positive multiple of '
                     f'{hamming.BLOCK}; got {size}.')
  if size > radix_select.MAX_CHUNK_SIZE:
    raise ValueError(f'chunk_size must be <= {radix_select.MAX_CHUNK_SIZE}; '
                     f'got {size}.')
  return min(size, hamming.padded_size(max(num_items, 1)))


def resolve_kernel(kernel: str = 'auto') -> str:
  """'cpu' or 'xla' for a `kernel` argument (see `KERNELS`)."""
  if kernel not in KERNELS:
    raise ValueError(f'kernel must be one of {KERNELS}; got {kernel!r}.')
  if kernel == 'cpu' and not hamming_cpu.AVAILABLE:
    raise ValueError("kernel='cpu' needs numba (pip install numba).")
  if kernel == 'auto':
    return 'cpu' if _on_cpu() and hamming_cpu.AVAILABLE else 'xla'
  return kernel


def prepare(database, *, chunk_size: int | None = None,
            kernel: str = 'auto') -> PlanarDatabase | hamming_cpu.Tiles:
  """Lays out packed database codes for `search_prepared`.

  Args:
    database: [N, W] uint32 packed codes.
    chunk_size: XLA kernel: items per chunk (a multiple of 32); default
      `CPU_CHUNK_SIZE` on CPU, else `ACCELERATOR_CHUNK_SIZE`, shrunk to the
      padded database size.
    kernel: one of `KERNELS`.

  Returns:
    The database in planar chunks (XLA) or in tiles (`hamming_cpu.Tiles`).
  """
  if resolve_kernel(kernel) == 'cpu':
    if chunk_size is not None:
      chunk_size_for(1, chunk_size)  # validated, unused by the CPU kernel
    database = np.asarray(database)
    if database.dtype != np.uint32 or database.ndim != 2:
      raise ValueError('database must be [N, W] uint32 packed codes; got '
                       f'{database.dtype} {database.shape}.')
    return hamming_cpu.to_tiles(database)
  database = jnp.asarray(database, jnp.uint32)
  if database.ndim != 2:
    raise ValueError(f'database must be [N, W] packed codes; got shape '
                     f'{database.shape}.')
  n, words = database.shape
  size = chunk_size_for(n, chunk_size)
  num_chunks = max(1, -(-n // size))
  planar = hamming.to_planar_blocks(database, num_chunks * size)
  chunks = planar.reshape(words, num_chunks, size // hamming.BLOCK,
                          hamming.BLOCK).transpose(1, 0, 2, 3)
  return PlanarDatabase(chunks=chunks, num_items=n)


def default_query_batch(k: int) -> int:
  """Queries per step: CPU_/ACCELERATOR_QUERY_BATCH, fewer for a large k."""
  fit = _DESCENT_ELEMENTS // (k * radix_select.FANOUT)
  batch = CPU_QUERY_BATCH if _on_cpu() else ACCELERATOR_QUERY_BATCH
  return int(max(8, min(batch, fit)))


def local_topk(query: jax.Array, chunks: jax.Array, num_valid: jax.Array, *,
               k: int, bits: int) -> tuple[jax.Array, jax.Array]:
  """Top-k of one query batch over a sequence of chunks (traceable).

  Args:
    query: [Q, W] uint32.
    chunks: [C, W, B, 32] uint32 planar chunks.
    num_valid: scalar int32, real items in the concatenated chunks.
    k: results per query.
    bits: code length.

  Returns:
    indices [Q, k] int32 (indices into the concatenated chunks) and distances
    [Q, k] int32, in (distance, index) order, padded as documented.
  """
  num_chunks, _, blocks, block = chunks.shape
  size = blocks * block
  num_valid = jnp.asarray(num_valid, jnp.int32)

  def one_chunk(c, chunk):
    start = c * size
    valid = jnp.clip(num_valid - start, 0, size)
    index, dist = radix_select.chunk_topk(query, chunk, valid, k=k, bits=bits)
    return jnp.where(index >= 0, index + start, -1), dist

  if num_chunks == 1:
    return one_chunk(jnp.int32(0), chunks[0])

  def body(carry, xs):
    index, dist = one_chunk(*xs)
    merged = radix_select.merge_topk(
        jnp.concatenate([carry[0], index], axis=1),
        jnp.concatenate([carry[1], dist], axis=1), k=k)
    return merged, None

  # Under shard_map the body's outputs vary over the mesh axis (they depend on
  # the shard's chunks and valid count); the initial carry takes on the same
  # varying-ness through a zero derived from both.
  zero = (chunks[0, 0, 0, 0] & jnp.uint32(0)).astype(jnp.int32) + (
      num_valid & jnp.int32(0))
  init = (jnp.full((query.shape[0], k), -1, jnp.int32) + zero,
          jnp.full((query.shape[0], k), bits + 1, jnp.int32) + zero)
  (index, dist), _ = jax.lax.scan(
      body, init, (jnp.arange(num_chunks, dtype=jnp.int32), chunks))
  return index, dist


def batched(fn, query: jax.Array, query_batch: int):
  """Applies `fn([B, W]) -> pytree of [B, ...]` to `query` in batches."""
  num_q = query.shape[0]
  steps = -(-num_q // query_batch)
  padded = jnp.pad(query, ((0, steps * query_batch - num_q), (0, 0)))
  if steps == 1:
    out = fn(padded)
  else:
    out = jax.lax.map(fn, padded.reshape(steps, query_batch, -1))
    out = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), out)
  return jax.tree.map(lambda x: x[:num_q], out)


@functools.partial(jax.jit, static_argnames=('k', 'bits', 'query_batch'))
def _search_prepared(query, chunks, num_valid, *, k, bits, query_batch):
  return batched(
      lambda q: local_topk(q, chunks, num_valid, k=k, bits=bits), query,
      query_batch)


def search_prepared(query, database: PlanarDatabase | hamming_cpu.Tiles, *,
                    k: int, bits: int, query_batch: int | None = None
                    ) -> tuple[jax.Array | np.ndarray, jax.Array | np.ndarray]:
  """Exact top-k of packed queries against a prepared database.

  Args:
    query: [Q, W] uint32 packed query codes.
    database: from `prepare`.
    k: results per query (>= 1; may exceed the database size).
    bits: K, the code length.
    query_batch: XLA kernel: queries per step (default
      `default_query_batch(k)`).

  Returns:
    indices [Q, k] int32 and distances [Q, k] int32, ordered by (distance,
    index); slots past the database size hold index -1, distance bits + 1.
    NumPy arrays from the CPU kernel, JAX arrays from XLA.
  """
  if k < 1:
    raise ValueError(f'k must be >= 1; got {k}.')
  query = check_packed(query, bits, 'query')
  if isinstance(database, hamming_cpu.Tiles):
    return hamming_cpu.topk(np.asarray(query), database, k=k, bits=bits)
  if database.num_words != packing.num_words(bits):
    raise ValueError(f'The database packs {database.num_words} words per code; '
                     f'{bits}-bit codes need {packing.num_words(bits)}.')
  batch = query_batch or default_query_batch(k)
  batch = max(1, min(batch, query.shape[0]))
  return _search_prepared(query, database.chunks,
                          jnp.int32(database.num_items), k=k, bits=bits,
                          query_batch=batch)


def search(query, database, *, k: int, bits: int,
           query_batch: int | None = None, chunk_size: int | None = None,
           kernel: str = 'auto'
           ) -> tuple[jax.Array | np.ndarray, jax.Array | np.ndarray]:
  """Exact top-k Hamming search of packed codes (see `search_prepared`).

  Args:
    query: [Q, W] uint32 packed query codes.
    database: [N, W] uint32 packed database codes, or a prepared database.
    k: results per query.
    bits: K, the code length.
    query_batch: XLA kernel: queries per step.
    chunk_size: XLA kernel: database items per step (when `database` is not
      prepared).
    kernel: one of `KERNELS` (when `database` is not prepared).

  Returns:
    indices [Q, k] int32 and distances [Q, k] int32 (see `search_prepared`).
  """
  if not isinstance(database, (PlanarDatabase, hamming_cpu.Tiles)):
    database = prepare(check_packed(database, bits, 'database'),
                       chunk_size=chunk_size, kernel=kernel)
  return search_prepared(query, database, k=k, bits=bits,
                         query_batch=query_batch)


def numpy_topk(query: np.ndarray, database: np.ndarray, *, k: int,
               bits: int) -> tuple[np.ndarray, np.ndarray]:
  """Brute-force reference: stable sort of all distances (NumPy).

  Returns the same [Q, k] arrays and padding as `search`.
  """
  dist = hamming.numpy_hamming(query, database)
  order = np.argsort(dist, axis=1, kind='stable')[:, :k]
  top = np.take_along_axis(dist, order, axis=1)
  missing = k - order.shape[1]
  if missing > 0:
    order = np.pad(order, ((0, 0), (0, missing)), constant_values=-1)
    top = np.pad(top, ((0, 0), (0, missing)), constant_values=bits + 1)
  return order.astype(np.int32), top.astype(np.int32)
