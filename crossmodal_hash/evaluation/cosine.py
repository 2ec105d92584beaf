"""Cosine-similarity ranking streamed over the database: exact, bounded memory.

Real-valued embeddings (methods whose `outputs` are 'real') are ranked for
each query by decreasing cosine similarity, with every metric of the Hamming
suite but the radius curve (`ranking.QueryMetrics`), the same tie policies and
the same empty-query policy (`summary.py`).

Similarity: s(q, d) = (q . d) * (1 / |q|) * (1 / |d|) in float64, the dot
product of the raw rows (one float64 matrix product per [B, D] x [T, D]
block), an inverse norm 0 for a zero row (similarity 0 to every item). *Ties*
are exactly equal similarities; 'index' ranks them in database-index order,
'tie_aware' takes the expectation over their orders. Identical rows give
identical similarities to a query whenever the matrix product computes each
entry the same way; for inputs whose products and partial sums are exact in
float64 (e.g. small integers) any summation order does.

Streaming. For a block of B queries (`EvalOptions.query_block`, at most
`_MAX_QUERY_ROWS`), with C = `EvalOptions.cosine_block`:

* pass 0 visits the database blocks of C items once and counts, per query,
  the items sharing s = 0, 1, ... labels with it: the relevant count R, the
  NDCG gains and the ideal DCG;
* each *sweep* visits every database block, computes its [B, C]
  similarities, drops the items already ranked (at or before the previous
  chunk's last (similarity, index)) and merges the rest into a buffer of the
  best C + 1 items, kept in index order (the block's candidates all have
  larger indices), by a linear-time selection that takes the smallest
  indices among items tied at the threshold. A stable sort of the buffer on
  -similarity then gives its first C items as the next *chunk* of the
  ranking, in order, with the items and relevant items ranked before it
  known; its (C+1)-th item tells whether the chunk's last tie group goes on
  into the next chunk;
* index-order metrics accumulate from each chunk with `ranking`'s block
  accumulators (`ranking.add_index_sums`, the code of the Hamming blocks: the
  chunk is one block whose items all sit at one distance, with the global
  rank and hit count before it as offsets); tie-aware metrics accumulate per
  tie group with `closed_forms` (each group with its own offsets); a group
  cut by a chunk boundary stays open (its counts, gains and offsets) until it
  closes;
* sweeps stop once every query of the block has met all its relevant items
  and its last tie group is closed (nothing after them changes any metric:
  irrelevant items add no gain, no hit and no AP term), or at the end.

Memory is O(B x C) per query-block thread: the [B, C] similarities and
shared-label counts of one block, the [B, C + 1] buffer and the chunk's
temporaries (the tie-aware P@N and NDCG terms cover the groups before the
largest cutoff, at most C per query). Per query the state is O(S + P): the
shared-label histogram (S <= labels + 1), the running sums of the P cutoffs,
the cursor and the open tie group. Nothing grows with N but the results
([Q] per metric) and, for tie-aware AP, `closed_forms`' table of harmonic
numbers (16 bytes per database item, shared by all queries).

Time: a sweep costs O(B N D) for the similarities plus the merge; a query
block needs ceil(r / C) sweeps, r the largest rank among its queries' last
relevant items (N / C when some relevant item ranks last, one when the
relevant items all rank in the first C).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from crossmodal_hash.evaluation import closed_forms
from crossmodal_hash.evaluation import ranking

# The most queries of one block (memory ~ rows * cosine_block per thread).
_MAX_QUERY_ROWS = 32


def check_embeddings(x: np.ndarray, name: str) -> np.ndarray:
  """[M, D] finite real `x` as float64 (ValueError naming `name` if not)."""
  x = np.asarray(x)
  if x.ndim != 2 or x.shape[1] < 1:
    raise ValueError(f'{name} must be [M, D]; got shape {x.shape}.')
  if not (np.issubdtype(x.dtype, np.floating) or
          np.issubdtype(x.dtype, np.integer)) or x.dtype == np.bool_:
    raise ValueError(f'{name} must be real-valued; got dtype {x.dtype}.')
  x = x.astype(np.float64)
  if not np.all(np.isfinite(x)):
    raise ValueError(f'{name} has NaN or Inf entries.')
  return x


def inverse_norms(x: np.ndarray) -> np.ndarray:
  """[M] float64: 1 / |row|, 0 for a zero row."""
  norms = np.sqrt(np.einsum('md,md->m', x, x))
  return np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)


def similarities(query: np.ndarray, query_inv: np.ndarray, db: np.ndarray,
                 db_inv: np.ndarray) -> np.ndarray:
  """[B, T] float64 cosine similarities of raw rows [B, D] and [T, D], given
  their inverse norms ([B], [T]); the module's definition."""
  return (query @ db.T) * query_inv[:, None] * db_inv[None, :]


@dataclasses.dataclass(frozen=True)
class CosineProblem:
  """A cosine ranking problem, seen through database blocks of C items.

  It has the attributes of `ranking.evaluate_problem`'s problems
  (num_queries, num_db, num_values = 1, shift, graded, db_blocks) and gives
  each block's similarities and shared-label counts.
  """
  num_queries: int
  num_db: int
  num_values: int
  shift: int
  graded: bool
  db_blocks: tuple[slice, ...]
  query: np.ndarray  # [Q, D] float64
  query_inv: np.ndarray  # [Q]
  db: np.ndarray  # [N, D] float64
  db_inv: np.ndarray  # [N]
  query_labels: np.ndarray  # [Q, L] bool
  db_labels: np.ndarray  # [N, L] bool

  @property
  def chunk(self) -> int:
    """C: items per block and per ranked chunk."""
    return self.db_blocks[0].stop - self.db_blocks[0].start

  @property
  def key_dtype(self) -> np.dtype:
    return ranking._uint_dtype((1 << self.shift) - 1)  # pylint: disable=protected-access

  def similarities(self, qs: slice, ds: slice) -> np.ndarray:
    """[B, T] float64 similarities of queries `qs` to items `ds`."""
    return similarities(self.query[qs], self.query_inv[qs], self.db[ds],
                        self.db_inv[ds])

  def shared(self, qs: slice, ds: slice) -> np.ndarray:
    """[B, T] `key_dtype`: labels shared (graded), else 1 if any is shared."""
    counts = np.rint(self.query_labels[qs].astype(np.float32) @
                     self.db_labels[ds].astype(np.float32).T)
    if not self.graded:
      counts = counts > 0
    return counts.astype(self.key_dtype)


def cosine_problem(query_emb: np.ndarray, db_emb: np.ndarray,
                   query_labels: np.ndarray, db_labels: np.ndarray, *,
                   graded: bool, block: int) -> CosineProblem:
  """The cosine ranking of [Q, D] query and [N, D] database embeddings.

  Args:
    query_emb: [Q, D] real.
    db_emb: [N, D] real.
    query_labels: [Q, L] multi-hot or [Q] class ids.
    db_labels: [N, L] multi-hot or [N] class ids.
    graded: whether shared-label counts (NDCG) are needed, not just
      relevance.
    block: C, database items per block and per chunk.
  """
  qe = check_embeddings(query_emb, 'query_emb')
  de = check_embeddings(db_emb, 'db_emb')
  if qe.shape[1] != de.shape[1]:
    raise ValueError(f'Embedding sizes differ: {qe.shape[1]} and '
                     f'{de.shape[1]}.')
  ql, dl = ranking.align_labels(query_labels, db_labels)
  ranking.check_sizes(len(qe), len(ql), len(de), len(dl))
  max_shared = int(min(ql.sum(axis=1).max(), dl.sum(axis=1).max()))
  num_db = len(de)
  return CosineProblem(
      num_queries=len(qe), num_db=num_db, num_values=1,
      shift=ranking._shift_for(graded, max_shared),  # pylint: disable=protected-access
      graded=graded,
      db_blocks=tuple(slice(s, min(s + block, num_db))
                      for s in range(0, num_db, block)),
      query=qe, query_inv=inverse_norms(qe), db=de, db_inv=inverse_norms(de),
      query_labels=ql, db_labels=dl)


def _row_histograms(values: np.ndarray, bins: int) -> np.ndarray:
  """[B, bins] int64 counts of each value 0..bins-1 per row of [B, T]."""
  b = len(values)
  flat = (values.astype(np.int64) + np.arange(b)[:, None] * bins).ravel()
  return np.bincount(flat, minlength=b * bins).reshape(b, bins)


def _first_true(mask: np.ndarray, width: int) -> np.ndarray:
  """[B, width] positions of each row's first `width` True entries, in
  order (then False ones): a stable radix sort of the bools."""
  return np.argsort(~mask, axis=1, kind='stable')[:, :width]


def next_chunk(problem: CosineProblem, qs: slice, cursor_score: np.ndarray,
               cursor_index: np.ndarray, size: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The `size` items ranked right after each query's cursor (one sweep).

  The buffer of the best `size` items so far is kept in database-index
  order; each block's candidates (after the cursor, better than the
  buffer's worst) are appended, and the best `size` of both kept by a
  selection in O(size + block): the items above the size-th best similarity,
  then the first (smallest-index) of those equal to it. One stable sort on
  -similarity of the buffer at the end gives the ranking order.

  Args:
    problem: the ranking problem.
    qs: the B queries.
    cursor_score: [B] float64, the similarity of the last item ranked so
      far (+inf before the first chunk).
    cursor_index: [B] int64, its database index (-1 before the first).
    size: items to return per query.

  Returns:
    (score [B, size] float64, index [B, size] int64, shared [B, size]) in
    ranking order (decreasing similarity, ties by index); past the end of
    the database, score is -inf.
  """
  b = qs.stop - qs.start
  score = np.full((b, size), -np.inf)
  index = np.zeros((b, size), np.int64)
  shared = np.zeros((b, size), problem.key_dtype)
  for ds in problem.db_blocks:
    sim = problem.similarities(qs, ds)
    idx = np.arange(ds.start, ds.stop)
    after = ((sim < cursor_score[:, None]) |
             ((sim == cursor_score[:, None]) &
              (idx[None, :] > cursor_index[:, None])))
    # Better than the buffer's worst (an item of equal similarity has a
    # larger index, so it ranks after it; -inf while the buffer has room).
    keep = after & (sim > score.min(axis=1, keepdims=True))
    width = int(keep.sum(axis=1).max())
    if not width:
      continue
    pos = _first_true(keep, width)  # the kept items, in index order
    merged = np.concatenate([score, np.where(
        np.take_along_axis(keep, pos, axis=1),
        np.take_along_axis(sim, pos, axis=1), -np.inf)], axis=1)
    threshold = -np.partition(-merged, size - 1, axis=1)[:, size - 1:size]
    above = merged > threshold
    tied = merged == threshold
    need = size - above.sum(axis=1, keepdims=True)
    best = _first_true(above | (tied & (np.cumsum(tied, axis=1) <= need)),
                       size)
    score = np.take_along_axis(merged, best, axis=1)
    index = np.take_along_axis(
        np.concatenate([index, ds.start + pos], axis=1), best, axis=1)
    shared = np.take_along_axis(
        np.concatenate([shared, np.take_along_axis(problem.shared(qs, ds),
                                                   pos, axis=1)], axis=1),
        best, axis=1)
  order = np.argsort(-score, axis=1, kind='stable')
  return (np.take_along_axis(score, order, axis=1),
          np.take_along_axis(index, order, axis=1),
          np.take_along_axis(shared, order, axis=1))


@dataclasses.dataclass
class _OpenGroups:
  """Per query, the tie group the last chunk ended in (maybe continued).

  Attributes: score (its similarity; NaN before the first chunk), n (items
  so far), r (relevant items), gain (summed gains), before (items ranked
  before the group), hits (relevant items ranked before it); all [B].
  """
  score: np.ndarray
  n: np.ndarray
  r: np.ndarray
  gain: np.ndarray
  before: np.ndarray
  hits: np.ndarray

  @classmethod
  def empty(cls, b: int) -> '_OpenGroups':
    zeros = lambda: np.zeros(b, np.int64)
    return cls(np.full(b, np.nan), zeros(), zeros(), np.zeros(b), zeros(),
               zeros())


def _add_groups(plan, n: np.ndarray, r: np.ndarray, gain: np.ndarray,
                before: np.ndarray, hits: np.ndarray,
                sums: dict[str, np.ndarray]) -> None:
  """Adds the tie-aware terms of complete groups ([B, G] counts, summed
  gains and offsets) to `sums`."""
  sums['ap'] += closed_forms.tie_aware_precision_sum(n, r, before=before,
                                                     hits_before=hits)
  cutoffs = plan.precision_at + plan.ndcg_k
  if not cutoffs:
    return
  # Only the groups starting before the largest cutoff add to P@N or DCG.
  cols = int((before < max(cutoffs)).sum(axis=1).max())
  if not cols:
    return
  n, r, gain, before = n[:, :cols], r[:, :cols], gain[:, :cols], before[
      :, :cols]
  if plan.precision_at:
    sums['hits_at'] += closed_forms.expected_hits_at(
        n, r, np.asarray(plan.precision_at), before=before)
  if plan.ndcg_k:
    sums['dcg'] += closed_forms.expected_dcg_at(
        n, gain, np.asarray(plan.ndcg_k), before=before)


def _tie_aware_chunk(plan, score: np.ndarray, relevant: np.ndarray,
                     gain: np.ndarray, groups: _OpenGroups,
                     sums: dict[str, np.ndarray]) -> None:
  """Adds the complete tie groups of one ranked chunk; keeps its last open.

  Args:
    plan: what is computed.
    score: [B, t] similarities in ranking order.
    relevant: [B, t] bool.
    gain: [B, t] NDCG gains (zeros without NDCG).
    groups: the open groups, updated in place.
    sums: tie-aware sums ('ap', 'hits_at', 'dcg'), updated in place.
  """
  b, t = score.shape
  new = np.empty((b, t), dtype=bool)
  new[:, 0] = score[:, 0] != groups.score  # NaN: the first chunk
  new[:, 1:] = score[:, 1:] != score[:, :-1]
  group = np.cumsum(new, axis=1)  # 0: the open group goes on
  width = t + 1
  flat = (group + np.arange(b)[:, None] * width).ravel()

  def per_group(weights):
    return np.bincount(flat, weights=weights, minlength=b * width).reshape(
        b, width)

  n = per_group(None).astype(np.int64)
  r = np.rint(per_group(relevant.ravel())).astype(np.int64)
  g = per_group(gain.ravel())
  n[:, 0] += groups.n
  r[:, 0] += groups.r
  g[:, 0] += groups.gain
  before = groups.before[:, None] + closed_forms.exclusive_cumsum(n)
  hits = groups.hits[:, None] + closed_forms.exclusive_cumsum(r)
  rows, last = np.arange(b), group[:, -1]
  groups.score = score[:, -1].copy()
  groups.n, groups.r, groups.gain = n[rows, last], r[rows, last], g[rows, last]
  groups.before, groups.hits = before[rows, last], hits[rows, last]
  n[rows, last] = r[rows, last] = 0
  g[rows, last] = 0.0
  _add_groups(plan, n, r, g, before, hits, sums)


def _query_block(problem: CosineProblem, plan, qs: slice,
                 out: ranking.QueryMetrics) -> None:
  """Every requested metric of the queries `qs` into `out` (sweeps)."""
  b = qs.stop - qs.start
  bins = 1 << problem.shift
  histogram = np.zeros((b, bins), np.int64)
  for ds in problem.db_blocks:
    histogram += _row_histograms(problem.shared(qs, ds), bins)
  num_relevant = problem.num_db - histogram[:, 0]
  gain_table = ideal = None
  if plan.ndcg_k:
    gain_table = closed_forms.scaled_gain_table(histogram)
    ideal = closed_forms.ideal_dcg_at(histogram, gain_table,
                                      np.asarray(plan.ndcg_k))
  nk, npn, ng = len(plan.top_k), len(plan.precision_at), len(plan.ndcg_k)
  sums = {'ap': np.zeros(b), 'trunc_num': np.zeros((b, nk)),
          'trunc_den': np.zeros((b, nk)), 'dcmh_num': np.zeros((b, nk)),
          'hits_at': np.zeros((b, npn)), 'dcg': np.zeros((b, ng)),
          'num_relevant': num_relevant}
  tie_sums = {'ap': np.zeros(b), 'hits_at': np.zeros((b, npn)),
              'dcg': np.zeros((b, ng))}
  groups = _OpenGroups.empty(b)
  cursor_score, cursor_index = np.full(b, np.inf), np.full(b, -1, np.int64)
  ranked, hits_before = 0, np.zeros(b, np.int64)
  closed = np.ones(b, dtype=bool)
  chunk = problem.chunk
  while ranked < problem.num_db and not (np.all(hits_before == num_relevant)
                                         and np.all(closed)):
    t = min(chunk, problem.num_db - ranked)
    score, index, shared = next_chunk(problem, qs, cursor_score,
                                      cursor_index, chunk + 1)
    if plan.index:
      # One block at one distance: the global rank and hit offsets before
      # it, as for a Hamming block (`ranking._index_rows`).
      offsets = (np.full((b, 1), ranked, np.int64), hits_before[:, None],
                 np.full((b, 1), t, np.int64))
      ranking.add_index_sums(np.zeros((b, t), np.uint8), shared[:, :t],
                             offsets, plan, problem.shift, num_relevant, sums,
                             gain_table)
    relevant = shared[:, :t] > 0
    if plan.tie_aware:
      gain = (np.take_along_axis(gain_table, shared[:, :t].astype(np.int64),
                                 axis=1) if plan.ndcg_k else
              np.zeros((b, t)))
      _tie_aware_chunk(plan, score[:, :t], relevant, gain, groups, tie_sums)
      # Closed: the next item (-inf past the end) has another similarity.
      closed = score[:, t] != score[:, t - 1]
    hits_before += relevant.sum(axis=1)
    ranked += t
    cursor_score, cursor_index = score[:, t - 1], index[:, t - 1]
  if plan.tie_aware:
    _add_groups(plan, groups.n[:, None], groups.r[:, None],
                groups.gain[:, None], groups.before[:, None],
                groups.hits[:, None], tie_sums)
  ranking.store_metrics(out, qs, plan, num_relevant,
                        sums if plan.index else None,
                        tie_sums if plan.tie_aware else None, ideal)


def cosine_query_metrics(query_emb: np.ndarray, db_emb: np.ndarray,
                         query_labels: np.ndarray, db_labels: np.ndarray,
                         options: ranking.EvalOptions | None = None
                        ) -> ranking.QueryMetrics:
  """Per-query metrics of cosine-similarity ranking of real-valued embeddings.

  Same metrics and tie policies as `ranking.hamming_query_metrics` (ties:
  exactly equal similarities), without the radius curve; streamed over the
  database in blocks of `options.cosine_block` items (see the module
  docstring for the memory bound).

  Args:
    query_emb: [Q, D] real.
    db_emb: [N, D] real.
    query_labels: [Q, L] multi-hot or [Q] class ids.
    db_labels: [N, L] multi-hot or [N] class ids.
    options: what to compute; defaults to `EvalOptions()`.
  """
  options = options or ranking.EvalOptions()
  num_db = len(np.asarray(db_emb))
  problem = cosine_problem(
      query_emb, db_emb, query_labels, db_labels,
      graded=any(int(k) <= num_db for k in options.ndcg_k),
      block=options.cosine_block)
  return ranking.evaluate_problem(problem, options, radius_curve=False,
                                  block_metrics=_query_block,
                                  max_query_rows=_MAX_QUERY_ROWS)
