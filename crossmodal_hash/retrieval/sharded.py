"""Hamming search with the database sharded over a mesh axis (`jax.shard_map`).

    db = sharded.prepare(db_packed, mesh, axis='data')
    indices, distances = sharded.search_prepared(q_packed, db, k=100, bits=64)

The database is split into S equal contiguous shards over the mesh axis `axis`
(S = the axis size; the tail is padded with all-zero codes that are never
returned). Every device runs the single-device engine (`search.local_topk`) on
its shard, producing a [Q, k] list with global indices; the lists are
all-gathered and merged by (distance, global index). Because every shard's list
is exact and ties are broken by global index, the result equals the
single-device `search.search` bit for bit. Queries are replicated; the result
is replicated over the mesh.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from crossmodal_hash import sharding
from crossmodal_hash.retrieval import hamming
from crossmodal_hash.retrieval import radix_select
from crossmodal_hash.retrieval import search as search_lib


@dataclasses.dataclass(frozen=True)
class ShardedDatabase:
  """A packed database laid out in planar chunks, sharded over a mesh axis.

  Attributes:
    chunks: [S * C, W, chunk_size / 32, 32] uint32, sharded over `axis` along
      the first dimension: shard s holds chunks s*C .. s*C + C - 1, i.e. items
      s * shard_size .. (s + 1) * shard_size - 1.
    num_items: N, the number of real items.
    shard_size: items per shard (C * chunk_size).
    mesh: the mesh.
    axis: the mesh axis the database is split over.
  """
  chunks: jax.Array
  num_items: int
  shard_size: int
  mesh: jax.sharding.Mesh
  axis: str

  @property
  def num_words(self) -> int:
    return self.chunks.shape[1]


def prepare(database, mesh: jax.sharding.Mesh, *, axis: str = sharding.DATA_AXIS,
            chunk_size: int | None = None) -> ShardedDatabase:
  """Pads, lays out and shards packed database codes over `mesh[axis]`.

  Args:
    database: [N, W] uint32 packed codes (host or device array).
    mesh: the device mesh (e.g. `sharding.make_mesh`).
    axis: the mesh axis to shard the database over.
    chunk_size: items per scan step within a shard (multiple of 32).

  Returns:
    The sharded database.
  """
  if axis not in mesh.shape:
    raise ValueError(f'Mesh has axes {tuple(mesh.shape)}; no axis {axis!r}.')
  database = np.asarray(database)
  if database.dtype != np.uint32 or database.ndim != 2:
    raise ValueError('database must be [N, W] uint32 packed codes; got '
                     f'{database.dtype} {database.shape}.')
  n, words = database.shape
  shards = mesh.shape[axis]
  per_shard = hamming.padded_size(-(-max(n, 1) // shards))
  size = search_lib.chunk_size_for(per_shard, chunk_size)
  chunks_per_shard = -(-per_shard // size)
  shard_size = chunks_per_shard * size
  padded = np.zeros((shards * shard_size, words), np.uint32)
  padded[:n] = database
  blocks = padded.T.reshape(words, shards * chunks_per_shard,
                            size // hamming.BLOCK, hamming.BLOCK)
  host = np.ascontiguousarray(blocks.transpose(1, 0, 2, 3))
  chunks = jax.device_put(host, NamedSharding(mesh, P(axis)))
  return ShardedDatabase(chunks=chunks, num_items=n, shard_size=shard_size,
                         mesh=mesh, axis=axis)


@functools.lru_cache(maxsize=64)
def _compiled(mesh, axis, shard_size, k, bits, query_batch):
  """The jitted shard_map search for one configuration."""

  def local(query, chunks, num_items):
    offset = jax.lax.axis_index(axis) * shard_size
    valid = jnp.clip(num_items - offset, 0, shard_size)
    index, dist = search_lib.batched(
        lambda q: search_lib.local_topk(q, chunks, valid, k=k, bits=bits),
        query, query_batch)
    index = jnp.where(index >= 0, index + offset, -1)
    # [S, Q, k] -> [Q, S * k], then one exact merge.
    all_index = jax.lax.all_gather(index, axis)
    all_dist = jax.lax.all_gather(dist, axis)
    num_q = query.shape[0]
    all_index = jnp.moveaxis(all_index, 0, 1).reshape(num_q, -1)
    all_dist = jnp.moveaxis(all_dist, 0, 1).reshape(num_q, -1)
    return radix_select.merge_topk(all_index, all_dist, k=k)

  # The merged result is identical on every device (it is computed from the
  # all-gathered lists), which the varying-axes check cannot infer through
  # all_gather; hence check_vma=False.
  fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis), P()),
                     out_specs=(P(), P()), check_vma=False)
  return jax.jit(fn)


def search_prepared(query, database: ShardedDatabase, *, k: int, bits: int,
                    query_batch: int | None = None
                    ) -> tuple[jax.Array, jax.Array]:
  """Exact top-k of packed queries against a sharded database.

  Args:
    query: [Q, W] uint32 packed query codes (replicated to every device).
    database: from `prepare`.
    k: results per query (>= 1).
    bits: K, the code length.
    query_batch: queries per step on each device.

  Returns:
    indices [Q, k] int32 and distances [Q, k] int32 (replicated), ordered by
    (distance, index); slots past the database size hold index -1 and
    distance bits + 1. Equal to `search.search` on the unsharded database.
  """
  if k < 1:
    raise ValueError(f'k must be >= 1; got {k}.')
  query = search_lib.check_packed(query, bits, 'query')
  if database.num_words != query.shape[1]:
    raise ValueError(f'The database packs {database.num_words} words per code; '
                     f'{bits}-bit codes need {query.shape[1]}.')
  batch = query_batch or search_lib.default_query_batch(k)
  batch = max(1, min(batch, query.shape[0]))
  fn = _compiled(database.mesh, database.axis, database.shard_size, k, bits,
                 batch)
  query = jax.device_put(query, sharding.replicated(database.mesh))
  return fn(query, database.chunks, jnp.int32(database.num_items))


def search(query, database, *, k: int, bits: int, mesh: jax.sharding.Mesh,
           axis: str = sharding.DATA_AXIS, query_batch: int | None = None,
           chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """`prepare` then `search_prepared`, for one-off searches."""
  database = search_lib.check_packed(database, bits, 'database')
  prepared = prepare(np.asarray(database), mesh, axis=axis,
                     chunk_size=chunk_size)
  return search_prepared(query, prepared, k=k, bits=bits,
                         query_batch=query_batch)
