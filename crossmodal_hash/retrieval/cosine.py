"""Exact top-k cosine search, streamed over the database in blocks.

    db = cosine.prepare(cosine.normalize(db_emb), mesh=mesh)   # once
    indices, similarities = cosine.search_prepared(queries, db, k=100)

The database holds L2-normalised float32 rows ([N, D]; a zero row stays
zero, similarity 0 to everything, as `evaluation.cosine.inverse_norms`), so
the cosine similarity of a query is its dot product with each row. Queries
are normalised the same way. The result is ranked as the cosine evaluation
ranks (`evaluation/cosine.py`): by decreasing similarity, equal similarities
in database-index order.

Kernel (jitted): queries in batches of `query_batch` (`search.batched`, a
`lax.map`), the database in blocks of `block_size` rows (a `lax.scan`); each
(batch, block) step computes the [query_batch, block_size] similarities (one
float32 matrix product at full precision, `Precision.HIGHEST`: no TF32 on
GPUs), takes their top k with `lax.top_k` and merges them into the running
top k with a second `lax.top_k` over the concatenation [running | block].
`lax.top_k` puts equal values in position order, and every position of the
running list holds a smaller database index than any of the block's, so the
merge keeps the (-similarity, index) order exactly. Memory is O(query_batch
x block_size + query_batch x k) whatever N. The last query batch is padded
with zero rows rather than shrunk, so every matrix product has one shape and
a query gets bit-identical similarities whatever else it is searched with
(`serve`'s batches and `search`'s single queries agree).

With a mesh, the database is split into equal contiguous shards over
`mesh[axis]` (as the Hamming search, `sharded.py`); each device runs the
kernel on its shard, the [Q, k] lists are all-gathered and merged by one
`lax.top_k` over the shard-major concatenation (shard s holds smaller
indices than shard s + 1), so the result equals the one-device search.

Results: indices [Q, k] int32 and similarities [Q, k] float32; slots past
the database size hold index -1 and similarity -inf.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from crossmodal_hash import sharding
from crossmodal_hash.evaluation import cosine as cosine_eval
from crossmodal_hash.retrieval import search as search_lib

# Rows per scan step and queries per map step (benchmarks/cosine_search.py).
CPU_BLOCK_SIZE = 1 << 16
CPU_QUERY_BATCH = 64
ACCELERATOR_BLOCK_SIZE = 1 << 18
ACCELERATOR_QUERY_BATCH = 256


def normalize(x, name: str = 'embeddings') -> np.ndarray:
  """[M, D] real -> [M, D] float32 rows of unit L2 norm (a zero row stays
  zero); ValueError naming `name` for a wrong shape, dtype, NaN or Inf."""
  x = cosine_eval.check_embeddings(x, name)
  return (x * cosine_eval.inverse_norms(x)[:, None]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Database:
  """Normalised embeddings laid out in blocks for `search_prepared`.

  Attributes:
    blocks: [S * C, block_size, D] float32, C blocks per shard; with a mesh,
      sharded over `axis` along the first dimension (shard s holds items
      s * shard_size .. (s + 1) * shard_size - 1). Padding rows are zero and
      never returned.
    num_items: N, the number of real items.
    shard_size: items per shard (C * block_size; all of them without mesh).
    mesh: the mesh, or None for one device.
    axis: the mesh axis the database is split over.
  """
  blocks: jax.Array
  num_items: int
  shard_size: int
  mesh: jax.sharding.Mesh | None
  axis: str

  @property
  def dim(self) -> int:
    return self.blocks.shape[2]


def prepare(database: np.ndarray, *, mesh: jax.sharding.Mesh | None = None,
            axis: str = sharding.DATA_AXIS, block_size: int | None = None
           ) -> Database:
  """Pads, blocks and places [N, D] float32 normalised rows (`normalize`).

  Args:
    database: [N, D] float32, unit (or zero) rows.
    mesh: shard over `mesh[axis]` when given, else one device.
    axis: the mesh axis.
    block_size: rows per scan step (default `CPU_BLOCK_SIZE` on CPU, else
      `ACCELERATOR_BLOCK_SIZE`), shrunk to the shard size.
  """
  database = np.asarray(database)
  if database.dtype != np.float32 or database.ndim != 2:
    raise ValueError('database must be [N, D] float32 normalised rows; got '
                     f'{database.dtype} {database.shape}.')
  n, dim = database.shape
  shards = 1
  if mesh is not None:
    if axis not in mesh.shape:
      raise ValueError(f'Mesh has axes {tuple(mesh.shape)}; no axis {axis!r}.')
    shards = mesh.shape[axis]
  if block_size is None:
    block_size = (CPU_BLOCK_SIZE if jax.default_backend() == 'cpu' else
                  ACCELERATOR_BLOCK_SIZE)
  if block_size < 1:
    raise ValueError(f'block_size must be >= 1; got {block_size}.')
  per_shard = -(-max(n, 1) // shards)
  size = min(int(block_size), per_shard)
  blocks_per_shard = -(-per_shard // size)
  shard_size = blocks_per_shard * size
  padded = np.zeros((shards * shard_size, dim), np.float32)
  padded[:n] = database
  host = padded.reshape(shards * blocks_per_shard, size, dim)
  placement = (NamedSharding(mesh, P(axis)) if mesh is not None else
               jax.devices()[0])
  return Database(blocks=jax.device_put(host, placement), num_items=n,
                  shard_size=shard_size, mesh=mesh, axis=axis)


def _merge(index: jax.Array, score: jax.Array, k: int
          ) -> tuple[jax.Array, jax.Array]:
  """The top k of [Q, M] candidates whose positions are in index order."""
  score, pos = jax.lax.top_k(score, k)
  return jnp.take_along_axis(index, pos, axis=1), score


def local_topk(query: jax.Array, blocks: jax.Array, num_valid: jax.Array, *,
               k: int) -> tuple[jax.Array, jax.Array]:
  """Top-k of [Q, D] normalised queries over [C, B, D] blocks (traceable).

  Returns:
    indices [Q, k] int32 into the concatenated blocks (-1 past `num_valid`)
    and similarities [Q, k] float32 (-inf there), in (-similarity, index)
    order.
  """
  num_q = query.shape[0]
  size = blocks.shape[1]
  take = min(k, size)

  def body(carry, xs):
    b, block = xs
    sim = jnp.dot(query, block.T, precision=jax.lax.Precision.HIGHEST)
    position = b * size + jnp.arange(size, dtype=jnp.int32)
    # -0.0 becomes 0.0 (top_k may order them apart; they are equal here).
    sim = jnp.where(position[None, :] < num_valid,
                    jnp.where(sim == 0, 0.0, sim), -jnp.inf)
    top, pos = jax.lax.top_k(sim, take)
    merged = _merge(jnp.concatenate([carry[0], b * size + pos], axis=1),
                    jnp.concatenate([carry[1], top], axis=1), k)
    return merged, None

  init = (jnp.full((num_q, k), -1, jnp.int32),
          jnp.full((num_q, k), -jnp.inf, jnp.float32))
  (index, score), _ = jax.lax.scan(
      body, init, (jnp.arange(blocks.shape[0], dtype=jnp.int32), blocks))
  return jnp.where(score > -jnp.inf, index, -1), score


@functools.partial(jax.jit, static_argnames=('k', 'query_batch'))
def _search_one(query, blocks, num_valid, *, k, query_batch):
  return search_lib.batched(
      lambda q: local_topk(q, blocks, num_valid, k=k), query, query_batch)


@functools.lru_cache(maxsize=64)
def _compiled_sharded(mesh, axis, shard_size, k, query_batch):
  """The jitted shard_map search for one configuration."""

  def local(query, blocks, num_items):
    offset = jax.lax.axis_index(axis) * shard_size
    valid = jnp.clip(num_items - offset, 0, shard_size)
    index, score = search_lib.batched(
        lambda q: local_topk(q, blocks, valid, k=k), query, query_batch)
    index = jnp.where(index >= 0, index + offset, -1)
    # [S, Q, k] -> [Q, S * k] in shard (= index) order, then one merge.
    num_q = query.shape[0]
    all_index = jnp.moveaxis(jax.lax.all_gather(index, axis), 0, 1)
    all_score = jnp.moveaxis(jax.lax.all_gather(score, axis), 0, 1)
    return _merge(all_index.reshape(num_q, -1), all_score.reshape(num_q, -1),
                  k)

  # The merged result is the same on every device (see sharded.py).
  fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis), P()),
                     out_specs=(P(), P()), check_vma=False)
  return jax.jit(fn)


def search_prepared(query, database: Database, *, k: int,
                    query_batch: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k cosine search of [Q, D] queries (normalised here).

  Args:
    query: [Q, D] real queries (any norm; `normalize`d).
    database: from `prepare`.
    k: results per query (>= 1; may exceed N).
    query_batch: queries per step (default `CPU_QUERY_BATCH` on CPU, else
      `ACCELERATOR_QUERY_BATCH`).

  Returns:
    indices [Q, k] int32 and similarities [Q, k] float32 NumPy arrays,
    ordered by (-similarity, index); index -1 and similarity -inf past N.
  """
  if k < 1:
    raise ValueError(f'k must be >= 1; got {k}.')
  query = normalize(query, 'query')
  if query.shape[1] != database.dim:
    raise ValueError(f'The index holds {database.dim}-d embeddings; got '
                     f'{query.shape[1]}-d queries.')
  if query_batch is None:
    query_batch = (CPU_QUERY_BATCH if jax.default_backend() == 'cpu' else
                   ACCELERATOR_QUERY_BATCH)
  # Never shrunk to Q: every step multiplies a [query_batch, D] tile, so a
  # query's similarities do not depend on the call's other queries (a
  # matrix product of another shape may round differently).
  batch = max(1, int(query_batch))
  num_items = jnp.int32(database.num_items)
  if database.mesh is None:
    out = _search_one(jnp.asarray(query), database.blocks, num_items, k=k,
                      query_batch=batch)
  else:
    fn = _compiled_sharded(database.mesh, database.axis, database.shard_size,
                           k, batch)
    out = fn(jax.device_put(query, sharding.replicated(database.mesh)),
             database.blocks, num_items)
  return np.asarray(out[0]), np.asarray(out[1])


def numpy_topk(query: np.ndarray, database: np.ndarray, *, k: int
              ) -> tuple[np.ndarray, np.ndarray]:
  """Float64 brute-force reference: a stable sort of -similarity.

  Both sides are normalised in float64 (`evaluation.cosine`'s definition);
  returns the same [Q, k] arrays and padding as `search_prepared`.
  """
  q = cosine_eval.check_embeddings(query, 'query')
  d = cosine_eval.check_embeddings(database, 'database')
  sim = cosine_eval.similarities(q, cosine_eval.inverse_norms(q), d,
                                 cosine_eval.inverse_norms(d))
  order = np.argsort(-sim, axis=1, kind='stable')[:, :k]
  top = np.take_along_axis(sim, order, axis=1)
  missing = k - order.shape[1]
  if missing > 0:
    order = np.pad(order, ((0, 0), (0, missing)), constant_values=-1)
    top = np.pad(top, ((0, 0), (0, missing)), constant_values=-np.inf)
  return order.astype(np.int32), top
