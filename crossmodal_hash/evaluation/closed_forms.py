"""Ranking metrics in closed form from per-distance counts (no sorting).

A ranking by an integer distance (Hamming: 0..K) splits the database into tie
groups, one per distance value v = 0..V-1, in increasing order of v. For one
query and group v let

  n[v]  = items at distance v,          C[v] = items at distance < v,
  r[v]  = relevant items at distance v, H[v] = relevant items at distance < v,
  g[v]  = sum of the gains of the items at distance v.

Tie-aware metrics are expectations over every order within the groups, all
orders equally likely (McSherry & Najork, ECIR 2008). Everything here takes
[B, V] count arrays of B queries and costs O(V) per query:

* tie-aware AP numerator (`tie_aware_precision_sum`),
* expected hits and gains in the top N (`expected_hits_at`,
  `expected_dcg_at`),
* the ideal DCG from a histogram of gains (`ideal_dcg_at`),
* cumulative tables of harmonic numbers and DCG discounts.
"""
from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def _harmonic_table(n: int) -> np.ndarray:
  """[n + 1] harmonic numbers H_0..H_n (H_0 = 0) in extended precision."""
  terms = np.zeros(n + 1, dtype=np.longdouble)
  terms[1:] = 1 / np.arange(1, n + 1, dtype=np.longdouble)
  table = np.cumsum(terms)
  table.flags.writeable = False
  return table


def harmonic_differences(start: np.ndarray, count: np.ndarray,
                         max_index: int) -> np.ndarray:
  """sum_{p=1..count} 1 / (start + p) for arrays of non-negative integers.

  Computed as a difference of harmonic numbers H_{start+count} - H_start from
  a table cumulated in `np.longdouble` (80-bit on x86), so the difference of
  two close values of ~log(N) keeps ~1e-19 absolute accuracy.

  Args:
    start: int array, >= 0.
    count: int array of the same shape, >= 0.
    max_index: an upper bound of start + count.

  Returns:
    float64 array of the shape of `start`.
  """
  table = _harmonic_table(int(max_index))
  return (table[start + count] - table[start]).astype(np.float64)


@functools.lru_cache(maxsize=8)
def discount_cumsum(n: int) -> np.ndarray:
  """[n + 1] float64: D[x] = sum_{p=1..x} 1 / log2(p + 1), D[0] = 0."""
  table = np.zeros(n + 1, dtype=np.float64)
  table[1:] = np.cumsum(1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64)))
  table.flags.writeable = False
  return table


def scaled_gain_table(shared_histogram: np.ndarray) -> np.ndarray:
  """Per-query NDCG gains 2^s - 1, scaled by 2^-m so that none overflows.

  NDCG is DCG / ideal DCG, so any per-query factor cancels. 2^s - 1 itself
  is inf from s = 1024 (tag-sized label vectors), and inf / inf is NaN; the
  table divides each query's gains by 2^m, with m the largest number of
  labels that query shares with any database item, so its best gain is
  about 1. Gains 2^-1074 times smaller than the best underflow to 0, below
  float64's resolution of the sum anyway.

  Args:
    shared_histogram: [B, S] int, entry s = number of database items sharing
      s labels with query b.

  Returns:
    [B, S] float64: (2^s - 1) / 2^m_b for s <= m_b (0 past it), where
    m_b = max{s: histogram[b, s] > 0}.
  """
  histogram = np.asarray(shared_histogram)
  s = np.arange(histogram.shape[1], dtype=np.float64)[None, :]
  present = histogram > 0
  top = np.where(present.any(axis=1),
                 histogram.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1),
                 0).astype(np.float64)[:, None]
  # Entries past m hold no item; 0 there keeps them finite.
  return np.where(s <= top, np.exp2(np.minimum(s - top, 0.0)) - np.exp2(-top),
                  0.0)


def exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
  """[B, V] int64: entry v = sum of counts[:, :v] (items before group v)."""
  out = np.zeros(counts.shape, dtype=np.int64)
  np.cumsum(counts[:, :-1], axis=1, out=out[:, 1:])
  return out


def tie_aware_precision_sum(n: np.ndarray, r: np.ndarray, *,
                            before: np.ndarray | None = None,
                            hits_before: np.ndarray | None = None
                           ) -> np.ndarray:
  """Expected sum over relevant items of precision at their rank.

  Within group v (n items, r relevant, C items and H relevant ranked before),
  a uniformly random order puts a relevant item at position p = 1..n with
  probability r / n, and then the expected number of relevant items before it
  in the group is (p - 1)(r - 1)/(n - 1). Precision at rank C + p being
  (H + 1 + that) / (C + p), linear in p over C + p, the group sums to

    (r / n) * [n b + (a - b C) (H_{C+n} - H_C)],
    b = (r - 1) / (n - 1) (0 when n = 1),  a = H + 1 - b,

  with H_m the m-th harmonic number. Dividing by the query's relevant count
  gives tie-aware AP.

  Args:
    n: [B, V] int, items per distance.
    r: [B, V] int, relevant items per distance (r <= n).
    before: [B, V] int, C: items ranked before each group; default the
      groups before it (`exclusive_cumsum(n)`). A ranking seen in pieces
      (`cosine.py`) passes the groups of one piece with their offsets.
    hits_before: [B, V] int, H likewise (default `exclusive_cumsum(r)`).

  Returns:
    [B] float64 (0 for a query with no relevant item).
  """
  n = np.asarray(n, dtype=np.int64)
  r = np.asarray(r, dtype=np.int64)
  before = exclusive_cumsum(n) if before is None else before
  hits_before = exclusive_cumsum(r) if hits_before is None else hits_before
  with np.errstate(divide='ignore', invalid='ignore'):
    b = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1), 0.0)
    a = hits_before + 1 - b
    harmonic = harmonic_differences(before, n, int((before + n).max()))
    group = (r / np.maximum(n, 1)) * (n * b + (a - b * before) * harmonic)
  return np.where(r > 0, group, 0.0).sum(axis=1)


def expected_hits_at(n: np.ndarray, r: np.ndarray,
                     cutoffs: np.ndarray, *,
                     before: np.ndarray | None = None) -> np.ndarray:
  """Expected number of relevant items among the first N, for each cutoff N.

  Group v contributes r[v] times the share of its n[v] positions that fall in
  the top N: clip(N - C[v], 0, n[v]) / n[v].

  Args:
    n: [B, V] int, items per distance.
    r: [B, V] int, relevant items per distance.
    cutoffs: [P] int, the N values.
    before: [B, V] int, C; default `exclusive_cumsum(n)` (as in
      `tie_aware_precision_sum`).

  Returns:
    [B, P] float64.
  """
  n = np.asarray(n, dtype=np.int64)
  before = (exclusive_cumsum(n) if before is None else before)[:, :, None]
  cutoffs = np.asarray(cutoffs, dtype=np.int64)[None, None, :]
  inside = np.clip(cutoffs - before, 0, n[:, :, None])  # [B, V, P]
  share = inside / np.maximum(n, 1)[:, :, None]
  return np.einsum('bvp,bv->bp', share, np.asarray(r, dtype=np.float64))


def expected_dcg_at(n: np.ndarray, gains: np.ndarray,
                    cutoffs: np.ndarray, *,
                    before: np.ndarray | None = None) -> np.ndarray:
  """Expected DCG@K of a ranking with ties (tie-aware DCG).

  An item of group v sits at each of the positions C[v]+1..C[v]+n[v] with
  probability 1/n[v], so group v adds gains[v] / n[v] times the discounts of
  those positions that are <= K.

  Args:
    n: [B, V] int, items per distance.
    gains: [B, V] float, summed gains of the items per distance.
    cutoffs: [P] int, the K values.
    before: [B, V] int, C; default `exclusive_cumsum(n)`.

  Returns:
    [B, P] float64.
  """
  n = np.asarray(n, dtype=np.int64)
  cutoffs = np.asarray(cutoffs, dtype=np.int64)
  table = discount_cumsum(int(cutoffs.max()))
  before = (exclusive_cumsum(n) if before is None else before)[:, :, None]
  k = cutoffs[None, None, :]
  start = np.minimum(before, k)
  stop = np.minimum(before + n[:, :, None], k)
  weight = (table[stop] - table[start]) / np.maximum(n, 1)[:, :, None]
  return np.einsum('bvp,bv->bp', weight, np.asarray(gains, dtype=np.float64))


def ideal_dcg_at(gain_histogram: np.ndarray, gain_values: np.ndarray,
                 cutoffs: np.ndarray) -> np.ndarray:
  """DCG@K of the ideal ranking (items by decreasing gain).

  Args:
    gain_histogram: [B, S] int, entry s = number of database items whose gain
      is gain_values[s].
    gain_values: [S] or [B, S] float (one row per query), non-decreasing in
      s (e.g. 2^s - 1).
    cutoffs: [P] int, the K values.

  Returns:
    [B, P] float64.
  """
  counts = np.asarray(gain_histogram, dtype=np.int64)[:, ::-1]  # best first
  values = np.asarray(gain_values, dtype=np.float64)[..., ::-1]
  return expected_dcg_at(counts, counts * np.atleast_2d(values), cutoffs)
