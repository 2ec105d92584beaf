"""Streaming engine for exact ranking metrics: per-query values, no full sort.

The database is ranked for each query by an integer distance with V possible
values: the Hamming distance 0..K of bit-packed codes. (Real-valued
embeddings ranked by cosine similarity, whose values are not a few integers,
are streamed by `cosine.py`, which reuses this module's accumulators and
`evaluate_problem`.) Equal distances are *ties*; two policies are computed:

* ``'index'`` (the default): ties are ranked in database-index order, so every
  ranking is deterministic. Its metrics need each item's exact rank, which a
  stable counting sort of the small-integer distances gives in O(N) per query
  (NumPy's stable argsort of uint8/uint16 keys is a radix sort). mAP@all
  alone is summed without any sort, by per-distance counters in one compiled
  pass (`precision_sums`, when numba is installed).
* ``'tie_aware'``: the expectation over all orders within ties, from the counts
  of items and relevant items at each distance only (`closed_forms`), O(N) to
  count and O(V) per query after that.

No BLAS call is made (sums use `np.einsum`'s own loops): multi-threaded BLAS
inside the query threads oversubscribes small machines.

Work is done per block of queries (`EvalOptions.query_block`, in parallel
threads) and, for Hamming codes, per block of database items
(`EvalOptions.db_block`): a first pass counts items per distance, a second
ranks each block with the counts of the blocks before it as offsets, so memory
is O(query_block * db_block) for any database size. Distances, label overlaps
and sort keys of a block come from one compiled kernel: on CPU the package's
Hamming kernel (`retrieval.hamming_cpu`, numba; search uses the same one), on
accelerators a jit-compiled XLA kernel built on `retrieval.packing`; sorting
and counting run in NumPy.

Conventions: relevance = sharing at least one label; graded relevance (NDCG)
= the number of shared labels s, gain 2^s - 1, discount 1 / log2(1 + rank).
A query with no relevant item gets 0 for every metric here; whether it stays
in a mean is the summary's empty-relevance policy (`summary.py`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import concurrent.futures
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from crossmodal_hash.evaluation import closed_forms
from crossmodal_hash.evaluation import precision_sums
from crossmodal_hash.retrieval import hamming_cpu
from crossmodal_hash.retrieval import packing
from crossmodal_hash.retrieval import search

TIE_POLICIES = ('index', 'tie_aware')
EMPTY_POLICIES = ('zero', 'skip')

# Upper bound on the entries of one query block's per-distance arrays
# (histograms, closed forms); a block holds fewer queries when V is large.
_MAX_BLOCK_ENTRIES = 1 << 22
# Kernel blocks are padded to powers of two of rows (queries) and columns
# (database items, for blocks below _PAD_COLS_BELOW), so that XLA compiles
# the kernel for few shapes.
_MIN_ROWS = 16
_MIN_COLS = 256
_PAD_COLS_BELOW = 4096
# Codes of at most this many uint32 words get a per-word distance kernel.
_WORDS_UNROLLED = 8
# The most queries of one kernel call (query blocks are capped to this).
_MAX_QUERY_ROWS = 256
# Rows packed per call of the jit-compiled packing.
_PACK_ROWS = 1 << 16
# Queries sorted together: their [rows, db_block] temporaries stay in cache.
_SORT_ROWS = 16
# mAP@all alone in index order is summed by `precision_sums` (no sort) when
# numba is there and distances take at most this many values (its counters
# are [4, V] per query).
_COUNTING_VALUES = 4096


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """What to compute and how to block it.

  Attributes:
    ties: the tie policies to compute, a non-empty subset of `TIE_POLICIES`;
      the first is the headline of tables and plots.
    empty: what a query with no relevant database item does to a mean:
      'zero' (its metrics are 0 and it stays in the denominator) or 'skip'
      (it is left out of the mean).
    top_k: K values of mAP@K (both definitions; index order only).
    precision_at: N values of the precision@N curve.
    ndcg_k: K values of NDCG@K.
    radius_curve: whether to compute precision/recall by Hamming radius.
    query_block: queries ranked together (memory ~ query_block * db_block).
    db_block: database items per block; a larger database is streamed.
    cosine_block: (cosine ranking, `cosine.py`) database items per block and
      ranked items per chunk: memory ~ query_block * cosine_block.
    num_threads: threads over query blocks; 0 means min(4, cpu count).
  Cutoffs larger than the database are dropped at evaluation time.
  """
  ties: tuple[str, ...] = TIE_POLICIES
  empty: str = 'zero'
  top_k: tuple[int, ...] = (100, 500, 1000, 5000)
  precision_at: tuple[int, ...] = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000,
                                   5000, 10000)
  ndcg_k: tuple[int, ...] = (10, 100, 1000)
  radius_curve: bool = True
  query_block: int = 128
  db_block: int = 65536
  cosine_block: int = 8192
  num_threads: int = 0

  def __post_init__(self):
    if not self.ties or any(t not in TIE_POLICIES for t in self.ties):
      raise ValueError(f'ties must be a non-empty subset of {TIE_POLICIES}; '
                       f'got {self.ties!r}.')
    if len(set(self.ties)) != len(self.ties):
      raise ValueError(f'ties has duplicates: {self.ties!r}.')
    if self.empty not in EMPTY_POLICIES:
      raise ValueError(f'empty must be one of {EMPTY_POLICIES}; got '
                       f'{self.empty!r}.')
    for name in ('top_k', 'precision_at', 'ndcg_k'):
      values = getattr(self, name)
      if any(int(v) < 1 for v in values):
        raise ValueError(f'{name} values must be >= 1; got {values!r}.')
    if min(self.query_block, self.db_block, self.cosine_block) < 1:
      raise ValueError('query_block, db_block and cosine_block must be >= 1; '
                       f'got {self.query_block}, {self.db_block}, '
                       f'{self.cosine_block}.')
    if self.num_threads < 0:
      raise ValueError(f'num_threads must be >= 0; got {self.num_threads}.')


@dataclasses.dataclass
class QueryMetrics:
  """Per-query metric values of one retrieval direction (all float64 in [0, 1]).

  Attributes:
    num_database: N.
    num_relevant: [Q] int64, relevant database items of each query.
    ap: {policy: [Q]} AP over the whole ranking.
    top_k: the K values of the mAP@K columns.
    ap_at_k_truncated: [Q, len(top_k)] (index order) AP of the ranking cut at
      K: sum over relevant items at rank <= K of precision at their rank,
      divided by the number of relevant items at rank <= K (0 if none).
    ap_at_k_dcmh: [Q, len(top_k)] (index order) DCMH's definition: with
      M = min(K, R), the mean over the first M relevant items of precision at
      their rank (m / rank of the m-th relevant item), wherever they are.
    precision_at: the N values of the precision@N columns.
    precision_at_n: {policy: [Q, len(precision_at)]} relevant items among
      the first N, divided by N.
    ndcg_k: the K values of the NDCG columns.
    ndcg_at_k: {policy: [Q, len(ndcg_k)]} DCG@K / ideal DCG@K.
    ball_size: [Q, V] int64 or None: items within distance <= v.
    ball_relevant: [Q, V] int64 or None: relevant items within distance <= v.
  """
  num_database: int
  num_relevant: np.ndarray
  ap: dict[str, np.ndarray]
  top_k: tuple[int, ...]
  ap_at_k_truncated: np.ndarray
  ap_at_k_dcmh: np.ndarray
  precision_at: tuple[int, ...]
  precision_at_n: dict[str, np.ndarray]
  ndcg_k: tuple[int, ...]
  ndcg_at_k: dict[str, np.ndarray]
  ball_size: np.ndarray | None = None
  ball_relevant: np.ndarray | None = None


# ---------------------------------------------------------------------------
# Inputs.
# ---------------------------------------------------------------------------


def check_codes(codes: np.ndarray, name: str) -> np.ndarray:
  """Returns ±1 `codes` ([M, K], integer or floating) after checking them."""
  codes = np.asarray(codes)
  if codes.ndim != 2:
    raise ValueError(f'{name} must be [M, K]; got shape {codes.shape}.')
  if codes.shape[1] < 1:
    raise ValueError(f'{name} has no bits.')
  if codes.dtype == np.bool_ or not (np.issubdtype(codes.dtype, np.integer) or
                                     np.issubdtype(codes.dtype, np.floating)):
    raise ValueError(f'{name} must be an integer or floating array of ±1; got '
                     f'dtype {codes.dtype}.')
  if not np.all((codes == 1) | (codes == -1)):
    raise ValueError(f'{name} must contain only -1 and +1 (binarise with '
                     'np.where(x >= 0, 1, -1) first).')
  return codes


def check_labels(labels: np.ndarray, name: str) -> np.ndarray:
  """Multi-hot [M, L] (non-zero = label present) or class ids [M] -> bool [M, L].

  Class ids (a 1-D integer array, single-label data) become one-hot rows, so
  relevance is "same class".
  """
  labels = np.asarray(labels)
  if labels.ndim == 1:
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and
                                                       labels.min() < 0):
      raise ValueError(f'{name}: 1-D labels must be non-negative class ids.')
    num_classes = int(labels.max()) + 1 if labels.size else 1
    return np.eye(num_classes, dtype=bool)[labels]
  if labels.ndim != 2:
    raise ValueError(f'{name} must be multi-hot [M, L] or class ids [M]; got '
                     f'shape {labels.shape}.')
  return labels != 0


def align_labels(query_labels: np.ndarray, db_labels: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
  """Both label sets as bool [M, L] with the same L (class ids padded)."""
  ql = check_labels(query_labels, 'query_labels')
  dl = check_labels(db_labels, 'db_labels')
  if ql.shape[1] != dl.shape[1]:
    if np.ndim(query_labels) == 1 and np.ndim(db_labels) == 1:
      width = max(ql.shape[1], dl.shape[1])
      ql = np.pad(ql, [(0, 0), (0, width - ql.shape[1])])
      dl = np.pad(dl, [(0, 0), (0, width - dl.shape[1])])
    else:
      raise ValueError(f'Label counts differ: query L={ql.shape[1]}, database '
                       f'L={dl.shape[1]}.')
  return ql, dl


def check_sizes(num_q: int, num_ql: int, num_db: int, num_dl: int) -> None:
  if num_q != num_ql:
    raise ValueError(f'{num_q} query codes but {num_ql} query labels.')
  if num_db != num_dl:
    raise ValueError(f'{num_db} database codes but {num_dl} database labels.')
  if num_q < 1 or num_db < 1:
    raise ValueError(f'Need at least one query and one database item; got '
                     f'{num_q} and {num_db}.')


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """`x` with `rows` zero rows appended (along axis 0)."""
  return np.concatenate([x, np.zeros((rows,) + x.shape[1:], x.dtype)])


def _uint_dtype(max_value: int) -> np.dtype:
  for dtype in (np.uint8, np.uint16, np.uint32):
    if max_value <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  return np.dtype(np.uint64)


# ---------------------------------------------------------------------------
# Jit-compiled block kernels (XLA on CPU, GPU or TPU).
# ---------------------------------------------------------------------------


def packed_hamming(a: jax.Array, b: jax.Array) -> jax.Array:
  """[A, B] int32 Hamming distances of packed words [A, W] and [B, W].

  Up to `_WORDS_UNROLLED` words, `packing.hamming_packed` is applied to one
  word at a time and summed: the same XOR-popcount, laid out so that XLA:CPU
  vectorises over database items (about 2x faster than reducing the size-W
  minor axis in one call). Longer codes use one call (quicker to compile).
  """
  if a.shape[1] > _WORDS_UNROLLED:
    return packing.hamming_packed(a, b)
  return sum(packing.hamming_packed(a[:, w:w + 1], b[:, w:w + 1])
             for w in range(a.shape[1]))


def _label_overlap(ql, dl, qn, dn, graded: bool):
  """[B, T] int32: shared labels if `graded`, else 1 if any label is shared.

  With a, b the label sets, |a ^ b| = |a| + |b| - 2 |a & b|, so the pair shares
  a label iff |a ^ b| < |a| + |b|.
  """
  total = qn[:, None] + dn[None, :]
  xor = packed_hamming(ql, dl)
  return (total - xor) // 2 if graded else (xor < total).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=('graded', 'dist_dtype',
                                             'key_dtype'))
def _hamming_kernel(q, d, ql, dl, qn, dn, shift, *, graded: bool,
                    dist_dtype: str, key_dtype: str):
  """Distances and sort keys of a [B] x [T] block of packed codes and labels.

  Returns:
    dist: [B, T] Hamming distances.
    key: [B, T] dist << shift | s, with s the number of shared labels if
      `graded`, else 1 for relevant and 0 for irrelevant pairs.
  """
  dist = packed_hamming(q, d)
  key = jnp.left_shift(dist, shift) | _label_overlap(ql, dl, qn, dn, graded)
  return dist.astype(dist_dtype), key.astype(key_dtype)


_pack_jit = jax.jit(packing.pack_codes)


def _bucket(n: int, minimum: int) -> int:
  """The smallest power of two >= max(n, minimum)."""
  return 1 << max(int(n) - 1, int(minimum) - 1, 0).bit_length()


def pack(bits: np.ndarray) -> np.ndarray:
  """`packing.pack_codes` of [M, K] ±1 or {0, 1} rows, as uint32 [M, W].

  Rows go through in chunks of at most `_PACK_ROWS` (bounded memory), each
  padded to a power of two (>= 256) so that the jit-compiled packing runs for
  few shapes.
  """
  rows = len(bits)
  out = np.empty((rows, packing.num_words(bits.shape[1])), dtype=np.uint32)
  for start in range(0, max(rows, 1), _PACK_ROWS):
    chunk = bits[start:start + _PACK_ROWS]
    padded = np.zeros((_bucket(len(chunk), 256), bits.shape[1]), np.int8)
    padded[:len(chunk)] = chunk > 0
    out[start:start + len(chunk)] = np.asarray(_pack_jit(padded))[:len(chunk)]
  return out


def _pack_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """bool [M, L] -> (packed uint32 [M, ceil(L/32)], label counts int32 [M])."""
  if labels.shape[1] == 0:
    labels = np.zeros((labels.shape[0], 1), dtype=bool)
  return pack(labels), labels.sum(axis=1, dtype=np.int32)


# ---------------------------------------------------------------------------
# Problems: a block function producing (distance, key) blocks.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Problem:
  """One ranking problem, seen through its blocks.

  `block_fn(q_slice, db_slice)` returns (dist [B, T] unsigned, key [B, T]
  unsigned = dist << shift | s) for the queries and database items of the
  slices; `db_blocks` cover 0..num_db in order.
  """
  num_queries: int
  num_db: int
  num_values: int
  shift: int
  graded: bool
  db_blocks: tuple[slice, ...]
  block_fn: Callable[[slice, slice], tuple[np.ndarray, np.ndarray]]


def _shift_for(graded: bool, max_shared: int) -> int:
  return max(1, int(max_shared).bit_length()) if graded else 1


def hamming_problem(query_codes: np.ndarray, db_codes: np.ndarray,
                    query_labels: np.ndarray, db_labels: np.ndarray, *,
                    graded: bool, db_block: int) -> _Problem:
  """A Hamming ranking problem over ±1 codes ([Q, K], [N, K]) and labels."""
  qc = check_codes(query_codes, 'query_codes')
  dc = check_codes(db_codes, 'db_codes')
  if qc.shape[1] != dc.shape[1]:
    raise ValueError(f'Code lengths differ: query K={qc.shape[1]}, database '
                     f'K={dc.shape[1]}.')
  ql, dl = align_labels(query_labels, db_labels)
  check_sizes(len(qc), len(ql), len(dc), len(dl))
  bits = qc.shape[1]
  q, d = pack(qc), pack(dc)
  qlp, qn = _pack_labels(ql)
  dlp, dn = _pack_labels(dl)
  max_shared = int(min(qn.max(), dn.max()))
  shift = _shift_for(graded, max_shared)
  kw = dict(graded=graded, dist_dtype=_uint_dtype(bits).name,
            key_dtype=_uint_dtype(((bits + 1) << shift) - 1).name)
  num_db = len(dc)
  blocks = tuple(slice(s, min(s + db_block, num_db))
                 for s in range(0, num_db, db_block))
  if search.resolve_kernel('auto') == 'cpu':
    # The package's CPU Hamming kernel (the one search uses), on tiled codes.
    q_words, ql_words = hamming_cpu.kernel_words(q), hamming_cpu.kernel_words(
        qlp)
    d_tiles, dl_tiles = hamming_cpu.to_tiles(d), hamming_cpu.to_tiles(dlp)

    def cpu_block_fn(qs: slice, ds: slice):
      return hamming_cpu.block_keys(
          q_words[qs], d_tiles, ql_words[qs], dl_tiles, qn[qs], dn,
          shift=shift, graded=graded, db_slice=ds,
          dist_dtype=kw['dist_dtype'], key_dtype=kw['key_dtype'])

    return _Problem(len(qc), num_db, bits + 1, shift, graded, blocks,
                    cpu_block_fn)
  shift_arg = np.int32(shift)
  # Query blocks are padded to a power of two (>= _MIN_ROWS) of rows, and
  # small database blocks to a power of two (>= _MIN_COLS) of columns, so the
  # kernel compiles for few shapes; the padding is sliced off. (Large blocks
  # are not padded: slicing their columns would make the rows non-contiguous,
  # slowing the sort.)
  q, qlp, qn = (_pad_rows(x, _MAX_QUERY_ROWS) for x in (q, qlp, qn))
  d, dlp, dn = (_pad_rows(x, _PAD_COLS_BELOW) for x in (d, dlp, dn))

  def block_fn(qs: slice, ds: slice):
    b, t = qs.stop - qs.start, ds.stop - ds.start
    qp = slice(qs.start, qs.start + _bucket(b, _MIN_ROWS))
    dp = slice(ds.start, ds.start + (_bucket(t, _MIN_COLS)
                                     if t < _PAD_COLS_BELOW else t))
    dist, key = _hamming_kernel(q[qp], d[dp], qlp[qp], dlp[dp], qn[qp],
                                dn[dp], shift_arg, **kw)
    return np.asarray(dist)[:b, :t], np.asarray(key)[:b, :t]

  return _Problem(len(qc), num_db, bits + 1, shift, graded, blocks, block_fn)


# ---------------------------------------------------------------------------
# The engine.
# ---------------------------------------------------------------------------


def _cutoffs(values: Sequence[int], limit: int) -> tuple[int, ...]:
  return tuple(sorted({int(v) for v in values if int(v) <= limit}))


def _row_histograms(key: np.ndarray, bins: int) -> np.ndarray:
  """[B, bins] int64 counts of each key value per row."""
  return np.stack([np.bincount(row, minlength=bins) for row in key])


def _row_count_le(sorted_rows: np.ndarray, thresholds: np.ndarray
                 ) -> np.ndarray:
  """Per row, how many entries are <= each threshold.

  Args:
    sorted_rows: [B, T] int, non-decreasing along each row, >= 0.
    thresholds: [B, P] int >= 0.

  Returns:
    [B, P] int64.
  """
  b, t = sorted_rows.shape
  span = int(max(sorted_rows.max(initial=0), thresholds.max(initial=0))) + 1
  offsets = np.arange(b, dtype=np.int64)[:, None] * span
  flat = (sorted_rows.astype(np.int64) + offsets).ravel()
  pos = np.searchsorted(flat, (thresholds + offsets).ravel(), side='right')
  return pos.reshape(thresholds.shape) - np.arange(b)[:, None] * t


def _cuts(rank: np.ndarray, values: Sequence[int], b: int, t: int,
          single: bool) -> np.ndarray:
  """[B, P] positions of a block with rank <= each value (rank rises in a row)."""
  values = np.broadcast_to(np.asarray(values, dtype=np.int64), (b, len(values)))
  if single:  # ranks are 1..t
    return np.minimum(values, t)
  return _row_count_le(rank, values)


def _prefix(cumulative: np.ndarray, cut: np.ndarray) -> np.ndarray:
  """[B, P]: cumulative[b, cut[b, p] - 1], or 0 where cut is 0."""
  index = np.maximum(cut - 1, 0)
  values = np.take_along_axis(cumulative, index, axis=1)
  return np.where(cut > 0, values, 0)


@dataclasses.dataclass
class _Plan:
  index: bool
  tie_aware: bool
  top_k: tuple[int, ...]
  precision_at: tuple[int, ...]
  ndcg_k: tuple[int, ...]
  radius: bool
  need_counts: bool
  rank: np.ndarray  # [T] float64 1..T
  inverse_rank: np.ndarray  # [T] float64 1 / (1..T)


def _take_rows(values: np.ndarray, order: np.ndarray) -> np.ndarray:
  """values[b, order[b, t]] row by row ([B, T] arrays)."""
  out = np.empty(order.shape, dtype=values.dtype)
  for row in range(len(order)):
    np.take(values[row], order[row], out=out[row])
  return out


def _add_precision_sums(hits: np.ndarray, ranked_dist: np.ndarray, offsets,
                        plan: _Plan, sums: dict[str, np.ndarray]) -> None:
  """AP numerators only: sum over hits of (hits so far) / rank, row by row.

  Works on the hits alone: with the m-th hit of a block row at position p
  (0-based) and distance v, its global rank is rank_offset[v] + p + 1 and the
  hits up to it hit_offset[v] + m (offsets 0 for a whole-database block).

  Args:
    hits: [B, T] bool, relevance in rank order within the block.
    ranked_dist: [B, T] distances in the same order.
    offsets: as in `_index_rows`.
    plan: holds the rank tables.
    sums: accumulators; 'ap' and (whole-database block) 'num_relevant'.
  """
  t = hits.shape[1]
  for row in range(len(hits)):
    if offsets is None:
      inv_rank_of_hits = np.compress(hits[row], plan.inverse_rank[:t])
      num_hits = len(inv_rank_of_hits)
      sums['ap'][row] += np.einsum('i,i->', plan.rank[:num_hits],
                                   inv_rank_of_hits)
      sums['num_relevant'][row] += num_hits
    else:
      rank_offset, hit_offset, _ = offsets
      position = np.flatnonzero(hits[row])
      value = ranked_dist[row][position]
      rank = rank_offset[row][value] + position + 1
      hits_so_far = hit_offset[row][value] + plan.rank[:len(position)]
      sums['ap'][row] += np.einsum('i,i->', hits_so_far, 1.0 / rank)


def _index_rows(dist: np.ndarray, key: np.ndarray, offsets, plan: _Plan,
                shift: int, total_rel: np.ndarray | None,
                sums: dict[str, np.ndarray],
                gain_table: np.ndarray | None) -> None:
  """Adds one block's index-order sums of a few queries into `sums`.

  Args:
    dist: [B, T] distances of B queries to T consecutive database items.
    key: [B, T] dist << shift | s (s > 0: relevant; s = shared labels).
    offsets: None if the block is the whole database; else (rank_offset,
      hit_offset, n_blk), [B, V] each: per distance, the global rank and hit
      count before the block's first item at that distance, and the block's
      item count at that distance.
    plan: what to compute.
    shift: bits of s in `key`.
    total_rel: [B] relevant items in the database, or None if the block is
      the whole database.
    sums: [B, ...] accumulators (see `_index_pass`), updated in place.
    gain_table: [B, 1 << shift] NDCG gain of s shared labels per query
      (`closed_forms.scaled_gain_table`); None without NDCG.
  """
  b, t = dist.shape
  mask = (1 << shift) - 1
  order = np.argsort(dist, axis=1, kind='stable')  # radix sort: O(T)
  ranked_key = _take_rows(key, order)
  if mask == 1 and ranked_key.dtype.itemsize == 1:  # bytes of 0/1: bools
    hits = np.bitwise_and(ranked_key, 1).view(np.bool_)
  else:
    hits = (ranked_key & mask) != 0
  if not (plan.top_k or plan.precision_at or plan.ndcg_k):
    _add_precision_sums(hits, ranked_key >> shift, offsets, plan, sums)
    return
  # bool -> int32 accumulates far faster than bool -> int64 or float64.
  hits_local = np.cumsum(hits, axis=1, dtype=np.int32)
  if offsets is None:
    rank = np.arange(1, t + 1, dtype=np.int64)[None, :]
    hits_cum = hits_local
    total_rel = hits_local[:, -1].astype(np.int64)
    contrib = None
    if not plan.top_k:
      sums['ap'] += np.einsum('bt,t->b', np.multiply(
          hits_local, hits, dtype=np.int32), plan.inverse_rank[:t])
  else:
    rank_offset, hit_offset, n_blk = offsets
    repeats = n_blk.ravel()
    rank = (np.repeat(rank_offset.ravel(), repeats).reshape(b, t) +
            np.arange(1, t + 1, dtype=np.int64)[None, :])
    hits_cum = np.repeat(hit_offset.ravel(), repeats).reshape(b, t) + hits_local
    contrib = np.where(hits, hits_cum / rank, 0.0)
    sums['ap'] += contrib.sum(axis=1)
  if plan.top_k:
    if contrib is None:
      contrib = hits_local * plan.inverse_rank[None, :t]
      contrib *= hits
      sums['ap'] += contrib.sum(axis=1)
    contrib_cum = np.cumsum(contrib, axis=1)
    top_k = np.asarray(plan.top_k, dtype=np.int64)
    cut = _cuts(rank, top_k, b, t, offsets is None)
    sums['trunc_num'] += _prefix(contrib_cum, cut)
    sums['trunc_den'] += _prefix(hits_local, cut)
    first_m = np.minimum(top_k[None, :], total_rel[:, None])
    sums['dcmh_num'] += _prefix(contrib_cum, _row_count_le(hits_cum, first_m))
  if plan.precision_at:
    sums['hits_at'] += _prefix(
        hits_local, _cuts(rank, plan.precision_at, b, t, offsets is None))
  if plan.ndcg_k:
    cut = _cuts(rank, plan.ndcg_k, b, t, offsets is None)
    width = int(cut.max())
    if width:
      gains = np.take_along_axis(gain_table, ranked_key[:, :width] & mask,
                                 axis=1)
      rank_top = np.broadcast_to(rank[:, :width], (b, width))
      dcg_cum = np.cumsum(gains / np.log2(rank_top + 1.0), axis=1)
      sums['dcg'] += _prefix(dcg_cum, cut)
  if offsets is None:
    sums['num_relevant'] += total_rel


def add_index_sums(dist: np.ndarray, key: np.ndarray, offsets, plan: _Plan,
                   shift: int, total_rel: np.ndarray | None,
                   sums: dict[str, np.ndarray],
                   gain_table: np.ndarray | None) -> None:
  """`_index_rows` of a [B, T] block, `_SORT_ROWS` queries at a time (their
  temporaries stay in cache); the arguments are `_index_rows`'s for all B
  queries."""
  b = len(dist)
  for start in range(0, b, _SORT_ROWS):
    rows = slice(start, min(start + _SORT_ROWS, b))
    _index_rows(dist[rows], key[rows],
                None if offsets is None else tuple(o[rows] for o in offsets),
                plan, shift, None if total_rel is None else total_rel[rows],
                {name: value[rows] for name, value in sums.items()},
                None if gain_table is None else gain_table[rows])


def _index_pass(problem: _Problem, plan: _Plan, qs: slice,
                block_counts: list[np.ndarray] | None,
                totals: np.ndarray | None, cache,
                gain_table: np.ndarray | None) -> dict[str, np.ndarray]:
  """Index-order sums over the database blocks for the queries `qs`.

  Ranks come from a stable (radix) argsort of each block's distances, done
  `_SORT_ROWS` queries at a time so the temporaries stay in cache. With
  several blocks, an item's global rank adds the items at smaller distances
  in the whole database and at its own distance in earlier blocks (from the
  counts of the first pass). mAP@all alone needs no ranks: `precision_sums`
  counts its way through each block instead, from the same offsets.

  Returns:
    {'ap': [B], 'trunc_num', 'trunc_den', 'dcmh_num': [B, len(top_k)],
     'hits_at': [B, len(precision_at)], 'dcg': [B, len(ndcg_k)],
     'num_relevant': [B]} for the B queries of `qs`.
  """
  b = qs.stop - qs.start
  num_values = problem.num_values
  nk, npn, ng = len(plan.top_k), len(plan.precision_at), len(plan.ndcg_k)
  sums = {'ap': np.zeros(b), 'trunc_num': np.zeros((b, nk)),
          'trunc_den': np.zeros((b, nk)), 'dcmh_num': np.zeros((b, nk)),
          'hits_at': np.zeros((b, npn)), 'dcg': np.zeros((b, ng)),
          'num_relevant': np.zeros(b, dtype=np.int64)}
  single = len(problem.db_blocks) == 1
  if not single:
    n_tot = totals.sum(axis=2)
    r_tot = n_tot - totals[:, :, 0]
    before = closed_forms.exclusive_cumsum(n_tot)
    hits_before = closed_forms.exclusive_cumsum(r_tot)
    seen = np.zeros((b, num_values), dtype=np.int64)
    seen_rel = np.zeros((b, num_values), dtype=np.int64)
    sums['num_relevant'][:] = r_tot.sum(axis=1)
  counting = (precision_sums.AVAILABLE and num_values <= _COUNTING_VALUES and
              not (plan.top_k or plan.precision_at or plan.ndcg_k))
  if counting:
    # One block: the kernel counts its own bases and relevant items. Several:
    # the bases come per block from the first pass, which counted both.
    rank_base = hit_base = np.zeros((0, 0), dtype=np.int64)
    block_relevant = (sums['num_relevant'] if single else
                      np.zeros(b, dtype=np.int64))
  for k, ds in enumerate(problem.db_blocks):
    dist, key = cache if cache is not None else problem.block_fn(qs, ds)
    offsets = None
    if not single:
      counts = block_counts[k].reshape(b, num_values, -1)
      n_blk = counts.sum(axis=2)
      r_blk = n_blk - counts[:, :, 0]
      # Items (relevant items) ranked before the block's items at each
      # distance: all at smaller distances, and at it in earlier blocks.
      rank_base, hit_base = before + seen, hits_before + seen_rel
      offsets = (rank_base - closed_forms.exclusive_cumsum(n_blk),
                 hit_base - closed_forms.exclusive_cumsum(r_blk), n_blk)
      seen += n_blk
      seen_rel += r_blk
    if counting:
      precision_sums.count_precision_sums(
          dist, key, (1 << problem.shift) - 1, num_values, single, rank_base,
          hit_base, plan.inverse_rank, sums['ap'], block_relevant)
      continue
    add_index_sums(dist, key, offsets, plan, problem.shift,
                   None if single else sums['num_relevant'], sums, gain_table)
  return sums


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den where den > 0, else 0 (never NaN)."""
  den = np.asarray(den, dtype=np.float64)
  return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def store_metrics(out: QueryMetrics, qs: slice, plan: _Plan,
                  num_relevant: np.ndarray,
                  sums: dict[str, np.ndarray] | None,
                  tie_sums: dict[str, np.ndarray] | None,
                  ideal: np.ndarray | None) -> None:
  """Writes the metrics of the queries `qs` into `out` from their sums.

  Args:
    out: the per-query metrics being filled.
    qs: the B queries.
    plan: what is computed.
    num_relevant: [B] int64, relevant items of each query.
    sums: (index order) `_index_pass`'s sums, or None without that policy.
    tie_sums: (tie-aware) {'ap': [B] AP numerators, 'hits_at': [B, P]
      expected hits in the top N, 'dcg': [B, len(ndcg_k)] expected DCG}, or
      None without that policy.
    ideal: [B, len(ndcg_k)] ideal DCG, or None without NDCG.
  """
  out.num_relevant[qs] = num_relevant
  k_arr = np.asarray(plan.top_k, dtype=np.float64)
  n_arr = np.asarray(plan.precision_at, dtype=np.float64)
  if plan.index:
    out.ap['index'][qs] = _safe_divide(sums['ap'], num_relevant)
    out.ap_at_k_truncated[qs] = _safe_divide(sums['trunc_num'],
                                             sums['trunc_den'])
    out.ap_at_k_dcmh[qs] = _safe_divide(
        sums['dcmh_num'], np.minimum(k_arr[None, :], num_relevant[:, None]))
    out.precision_at_n['index'][qs] = sums['hits_at'] / n_arr[None, :]
    if plan.ndcg_k:
      out.ndcg_at_k['index'][qs] = _safe_divide(sums['dcg'], ideal)
  if plan.tie_aware:
    out.ap['tie_aware'][qs] = _safe_divide(tie_sums['ap'], num_relevant)
    if plan.precision_at:
      out.precision_at_n['tie_aware'][qs] = (tie_sums['hits_at'] /
                                             n_arr[None, :])
    if plan.ndcg_k:
      out.ndcg_at_k['tie_aware'][qs] = _safe_divide(tie_sums['dcg'], ideal)


def _query_block(problem: _Problem, plan: _Plan, qs: slice,
                 out: QueryMetrics) -> None:
  """Computes every requested metric of the queries `qs` into `out`."""
  single = len(problem.db_blocks) == 1
  bins = problem.num_values << problem.shift
  cache = None
  block_counts = totals = None
  if plan.need_counts:
    block_counts = []
    for ds in problem.db_blocks:
      dist, key = problem.block_fn(qs, ds)
      if single:
        cache = (dist, key)
      block_counts.append(_row_histograms(key, bins))
    totals = sum(block_counts).reshape(qs.stop - qs.start, problem.num_values,
                                       -1)
  num_relevant = sums = None
  gain_table = None
  if plan.ndcg_k:
    # Per-query gains scaled so that 2^s - 1 never overflows (s >= 1024).
    gain_table = closed_forms.scaled_gain_table(totals.sum(axis=1))
  if plan.index:
    sums = _index_pass(problem, plan, qs, block_counts, totals, cache,
                       gain_table)
    num_relevant = sums['num_relevant']
  if totals is not None:
    n = totals.sum(axis=2)
    rel = n - totals[:, :, 0]
    num_relevant = rel.sum(axis=1)
  ideal = (closed_forms.ideal_dcg_at(totals.sum(axis=1), gain_table,
                                     np.asarray(plan.ndcg_k))
           if plan.ndcg_k else None)
  tie_sums = None
  if plan.tie_aware:
    tie_sums = {'ap': closed_forms.tie_aware_precision_sum(n, rel)}
    if plan.precision_at:
      tie_sums['hits_at'] = closed_forms.expected_hits_at(
          n, rel, np.asarray(plan.precision_at))
    if plan.ndcg_k:
      gains = np.einsum('bvs,bs->bv', totals, gain_table)
      tie_sums['dcg'] = closed_forms.expected_dcg_at(n, gains,
                                                     np.asarray(plan.ndcg_k))
  store_metrics(out, qs, plan, num_relevant, sums, tie_sums, ideal)
  if plan.radius:
    out.ball_size[qs] = np.cumsum(n, axis=1)
    out.ball_relevant[qs] = np.cumsum(rel, axis=1)


def evaluate_problem(problem: _Problem, options: EvalOptions, *,
                     radius_curve: bool,
                     block_metrics: Callable[..., None] | None = None,
                     max_query_rows: int = _MAX_QUERY_ROWS) -> QueryMetrics:
  """Per-query metrics of a ranking problem (see `QueryMetrics`).

  Args:
    problem: the ranking problem.
    options: what to compute.
    radius_curve: whether to count the balls of each distance.
    block_metrics: fn(problem, plan, qs, out) computing the metrics of the
      queries `qs` into `out`; default `_query_block` (integer distances;
      `cosine.py` passes its streamed ranking).
    max_query_rows: the most queries of one block.
  """
  num_q, num_db = problem.num_queries, problem.num_db
  top_k = _cutoffs(options.top_k, num_db)
  precision_at = _cutoffs(options.precision_at, num_db)
  ndcg_k = _cutoffs(options.ndcg_k, num_db)
  index = 'index' in options.ties
  tie_aware = 'tie_aware' in options.ties
  single = len(problem.db_blocks) == 1
  need_counts = (tie_aware or radius_curve or bool(ndcg_k) or
                 (index and not single))
  num_shared = 1 << problem.shift
  width = max(num_shared, len(precision_at), len(ndcg_k), 1)
  query_block = max(1, min(options.query_block, max_query_rows,
                           _MAX_BLOCK_ENTRIES // (problem.num_values * width)))
  longest = max(s.stop - s.start for s in problem.db_blocks)
  plan = _Plan(
      index=index, tie_aware=tie_aware, top_k=top_k if index else (),
      precision_at=precision_at, ndcg_k=ndcg_k, radius=radius_curve,
      need_counts=need_counts,
      rank=np.arange(1, longest + 1, dtype=np.float64),
      inverse_rank=1.0 / np.arange(1, longest + 1, dtype=np.float64))
  policies = [p for p in TIE_POLICIES if p in options.ties]
  out = QueryMetrics(
      num_database=num_db,
      num_relevant=np.zeros(num_q, dtype=np.int64),
      ap={p: np.zeros(num_q) for p in policies},
      top_k=plan.top_k,
      ap_at_k_truncated=np.zeros((num_q, len(plan.top_k))),
      ap_at_k_dcmh=np.zeros((num_q, len(plan.top_k))),
      precision_at=precision_at,
      precision_at_n={p: np.zeros((num_q, len(precision_at)))
                      for p in policies},
      ndcg_k=ndcg_k,
      ndcg_at_k={p: np.zeros((num_q, len(ndcg_k))) for p in policies},
      ball_size=(np.zeros((num_q, problem.num_values), dtype=np.int64)
                 if radius_curve else None),
      ball_relevant=(np.zeros((num_q, problem.num_values), dtype=np.int64)
                     if radius_curve else None),
  )
  blocks = [slice(s, min(s + query_block, num_q))
            for s in range(0, num_q, query_block)]
  threads = options.num_threads or min(4, os.cpu_count() or 1)
  block_metrics = block_metrics or _query_block
  if threads == 1 or len(blocks) == 1:
    for qs in blocks:
      block_metrics(problem, plan, qs, out)
  else:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      for future in [pool.submit(block_metrics, problem, plan, qs, out)
                     for qs in blocks]:
        future.result()
  return out


def hamming_query_metrics(query_codes: np.ndarray, db_codes: np.ndarray,
                          query_labels: np.ndarray, db_labels: np.ndarray,
                          options: EvalOptions | None = None
                         ) -> QueryMetrics:
  """Per-query metrics of Hamming ranking of ±1 codes.

  Args:
    query_codes: [Q, K] in {-1, +1}.
    db_codes: [N, K] in {-1, +1}.
    query_labels: [Q, L] multi-hot or [Q] class ids.
    db_labels: [N, L] multi-hot or [N] class ids.
    options: what to compute; defaults to `EvalOptions()`.

  Returns:
    `QueryMetrics`, with the precision/recall-by-radius counts if
    `options.radius_curve`.
  """
  options = options or EvalOptions()
  problem = hamming_problem(query_codes, db_codes, query_labels, db_labels,
                            graded=bool(_cutoffs(options.ndcg_k,
                                                 len(np.asarray(db_codes)))),
                            db_block=options.db_block)
  return evaluate_problem(problem, options, radius_curve=options.radius_curve)
