"""Index-order AP numerators in one counting pass per query, compiled by numba.

For mAP@all with ties in database-index order, the AP numerator of a query is

    sum over relevant items i of  hits(i) / rank(i),

rank(i) = 1 + (items at a smaller distance) + (items at i's distance with a
smaller index), hits(i) likewise over relevant items only. Both come from
per-distance counters: walk the items in index order, keeping for every
distance v the rank and hit count reached so far, started at the counts of the
distances below v. That is O(T) per query with no sort and no permutation:
about 3 ns per item on one core of the 2-core development machine, against
about 4 ns for NumPy's stable radix argsort plus the gather and prefix sum
that `ranking` otherwise runs. It also holds no GIL for a whole block, so
`ranking`'s query-block threads scale: mAP@all of 2,000 x 18,015 codes takes
0.073 s on 2 cores here, against 0.137 s by the NumPy route.

The walk is a chain of dependent counter updates, so each row is cut into
`_SEGMENTS` equal segments walked in interleaved order, each with its own
counters (started after the counts of the segments before it): four
independent chains the CPU overlaps.

numba is optional. `AVAILABLE` is False when it cannot be imported, and
`ranking` then uses its NumPy route, which computes the same sums (the two
agree to float64 rounding; tests run both).
"""
from __future__ import annotations

import numpy as np

try:
  import numba
except ImportError:  # pragma: no cover - exercised where numba is absent
  numba = None

AVAILABLE = numba is not None

# Independent counter chains per row (see the module docstring).
_SEGMENTS = 4


def _count_precision_sums(dist, key, mask, num_values, whole, rank_base,
                          hit_base, inverse_rank, sums, num_relevant):
  """Adds each row's index-order AP numerator of one database block.

  Args:
    dist: [B, T] unsigned distances 0..V-1 of B queries to T consecutive
      database items.
    key: [B, T] unsigned; item relevant iff `key & mask` is non-zero.
    mask: the relevance bits of `key`.
    num_values: V, one more than the largest possible distance.
    whole: True if the block is the whole database; the bases are then the
      counts of the block itself and `rank_base`/`hit_base` are not read.
    rank_base: [B, V] int64, items ranked before the block's first item at
      each distance (the whole database's smaller distances plus this
      distance's items in earlier blocks). Any [B', V'] array if `whole`.
    hit_base: [B, V] int64, the same count of relevant items.
    inverse_rank: [R] float64, inverse_rank[r - 1] = 1 / r; ranks beyond R
      are divided directly.
    sums: [B] float64, updated in place.
    num_relevant: [B] int64, relevant items of the block added in place.
  """
  b, t = dist.shape
  seg = (t + _SEGMENTS - 1) // _SEGMENTS
  table = len(inverse_rank)
  count = np.empty((_SEGMENTS, num_values), np.int64)
  count_rel = np.empty((_SEGMENTS, num_values), np.int64)
  rank = np.empty((_SEGMENTS, num_values), np.int64)
  hits = np.empty((_SEGMENTS, num_values), np.int64)
  for row in range(b):
    count[:] = 0
    count_rel[:] = 0
    for s in range(_SEGMENTS):
      for i in range(s * seg, min(t, (s + 1) * seg)):
        v = dist[row, i]
        count[s, v] += 1
        count_rel[s, v] += (key[row, i] & mask) != 0
    rank_run = 0
    hit_run = 0
    for v in range(num_values):
      if not whole:
        rank_run = rank_base[row, v]
        hit_run = hit_base[row, v]
      for s in range(_SEGMENTS):
        rank[s, v] = rank_run
        hits[s, v] = hit_run
        rank_run += count[s, v]
        hit_run += count_rel[s, v]
    total = 0.0
    relevant = 0
    for i in range(seg):
      for s in range(_SEGMENTS):
        j = s * seg + i
        if j < t:
          v = dist[row, j]
          rel = 1 if key[row, j] & mask else 0
          r = rank[s, v] + 1
          rank[s, v] = r
          h = hits[s, v] + rel
          hits[s, v] = h
          relevant += rel
          total += rel * h * (inverse_rank[r - 1] if r <= table else 1.0 / r)
    sums[row] += total
    num_relevant[row] += relevant


def _compile(fn):
  """Compiles `fn` with numba: no GIL held, cached on disk where possible.

  `ranking` runs query blocks in threads. The disk cache compiles once per
  installation; where numba finds no writable cache directory, once per
  process.
  """
  try:
    return numba.njit(nogil=True, cache=True)(fn)
  except RuntimeError:  # no writable cache location: compile in each process
    return numba.njit(nogil=True)(fn)


count_precision_sums = (_compile(_count_precision_sums) if AVAILABLE else
                        None)
