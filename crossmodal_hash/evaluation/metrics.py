"""Exact retrieval metrics for ±1 hash codes ranked by Hamming distance (NumPy).

Conventions used by every function here:

* Codes are `[Q, K]` (queries) and `[N, K]` (database) arrays whose entries are
  all -1 or +1 (any integer or floating dtype). Anything else, zeros included,
  is rejected with a ValueError rather than silently binarised.
* Labels are multi-hot `[Q, L]` / `[N, L]` arrays; a non-zero entry means the
  item carries that label. A query and a database item are *relevant* to each
  other when they share at least one label (for single-label data: same class).
* Ranking: database items are sorted by increasing Hamming distance to the
  query. **Tie policy:** items at equal distance keep the order of their
  database index (a stable sort), so every ranking is deterministic. Ties are
  the norm for short codes (a K-bit code has only K + 1 distances), so this
  choice does change AP; tie-aware AP (the expectation over tie orders) is a
  separate metric.
* **Empty-relevance policy:** a query with no relevant database item has
  AP = 0 and *is* counted in the mean (it stays in the denominator), as in
  DCMH's `calc_map`. No metric here ever returns NaN.
* mAP here is mAP@all: AP over the whole ranking of the N database items.
  AP = (1 / R) * sum over the R relevant items of precision at their rank.

Everything is computed in exact arithmetic: distances as integers, AP as a
float64 sum of exact rationals. Queries are processed in blocks of
`query_block`, so memory stays O(query_block * N).
"""
from __future__ import annotations

from collections.abc import Mapping
import dataclasses

import numpy as np

DIRECTIONS = ('i2t', 't2i', 'i2i', 't2t')

# direction -> (query codes key, database codes key) in `cross_modal_map`'s
# `codes` argument.
DIRECTION_PAIRS = {
    'i2t': ('image_query', 'text_db'),
    't2i': ('text_query', 'image_db'),
    'i2i': ('image_query', 'image_db'),
    't2t': ('text_query', 'text_db'),
}

# Every partial sum of a ±1 dot product is an integer of magnitude <= K; float32
# represents all such integers exactly while K <= 2**24.
_MAX_EXACT_BITS = 2**24


def _check_codes(codes: np.ndarray, name: str) -> np.ndarray:
  """Returns `codes` ([M, K] ±1) as float32, after checking shape and values."""
  codes = np.asarray(codes)
  if codes.ndim != 2:
    raise ValueError(f'{name} must be [M, K]; got shape {codes.shape}.')
  if codes.shape[1] > _MAX_EXACT_BITS:
    raise ValueError(f'{name}: K={codes.shape[1]} bits is too long for exact '
                     f'arithmetic (max {_MAX_EXACT_BITS}).')
  if codes.dtype == np.bool_ or not (np.issubdtype(codes.dtype, np.integer) or
                                     np.issubdtype(codes.dtype, np.floating)):
    raise ValueError(f'{name} must be an integer or floating array of ±1; got '
                     f'dtype {codes.dtype}.')
  if not np.all((codes == 1) | (codes == -1)):
    raise ValueError(f'{name} must contain only -1 and +1 (binarise with '
                     'np.where(x >= 0, 1, -1) first).')
  return codes.astype(np.float32)


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
  """Returns multi-hot `labels` ([M, L]) as float32 in {0, 1}."""
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f'{name} must be multi-hot [M, L]; got shape '
                     f'{labels.shape}.')
  return (labels != 0).astype(np.float32)


def _hamming(q: np.ndarray, d: np.ndarray) -> np.ndarray:
  """[B, N] int32 distances between checked float32 codes [B, K] and [N, K]."""
  k = q.shape[1]
  # q . d = K - 2 * dist, an exact integer in float32 (see _MAX_EXACT_BITS).
  dots = q @ d.T
  return ((k - np.rint(dots).astype(np.int64)) // 2).astype(np.int32)


def hamming_distances(query_codes: np.ndarray,
                      db_codes: np.ndarray) -> np.ndarray:
  """Hamming distances between all pairs of ±1 codes.

  Args:
    query_codes: [Q, K] in {-1, +1}, any integer or floating dtype.
    db_codes: [N, K] in {-1, +1}.

  Returns:
    [Q, N] int32, entry (i, j) = number of bits where query i and item j differ,
    computed exactly as (K - q_i . d_j) / 2.
  """
  q = _check_codes(query_codes, 'query_codes')
  d = _check_codes(db_codes, 'db_codes')
  if q.shape[1] != d.shape[1]:
    raise ValueError(f'Code lengths differ: query K={q.shape[1]}, database '
                     f'K={d.shape[1]}.')
  return _hamming(q, d)


def _relevance(q_labels: np.ndarray, d_labels: np.ndarray) -> np.ndarray:
  """[B, N] bool from checked {0, 1} float32 labels [B, L] and [N, L]."""
  # Counts of shared labels are integers <= L, exact in float32.
  return (q_labels @ d_labels.T) > 0.5


def relevance(query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
  """Whether each query and database item share at least one label.

  Args:
    query_labels: [Q, L] multi-hot (non-zero = label present).
    db_labels: [N, L] multi-hot.

  Returns:
    [Q, N] bool.
  """
  q = _check_labels(query_labels, 'query_labels')
  d = _check_labels(db_labels, 'db_labels')
  if q.shape[1] != d.shape[1]:
    raise ValueError(f'Label counts differ: query L={q.shape[1]}, database '
                     f'L={d.shape[1]}.')
  return _relevance(q, d)


def _check_all(query_codes, db_codes, query_labels, db_labels):
  """Checks the four arrays of a retrieval problem; returns them converted."""
  q = _check_codes(query_codes, 'query_codes')
  d = _check_codes(db_codes, 'db_codes')
  ql = _check_labels(query_labels, 'query_labels')
  dl = _check_labels(db_labels, 'db_labels')
  if q.shape[1] != d.shape[1]:
    raise ValueError(f'Code lengths differ: query K={q.shape[1]}, database '
                     f'K={d.shape[1]}.')
  if ql.shape[1] != dl.shape[1]:
    raise ValueError(f'Label counts differ: query L={ql.shape[1]}, database '
                     f'L={dl.shape[1]}.')
  if len(q) != len(ql):
    raise ValueError(f'{len(q)} query codes but {len(ql)} query labels.')
  if len(d) != len(dl):
    raise ValueError(f'{len(d)} database codes but {len(dl)} database labels.')
  return q, d, ql, dl


def _check_block(query_block: int) -> None:
  if query_block < 1:
    raise ValueError(f'query_block must be >= 1; got {query_block}.')


def average_precision(query_codes: np.ndarray,
                      db_codes: np.ndarray,
                      query_labels: np.ndarray,
                      db_labels: np.ndarray,
                      *,
                      query_block: int = 256) -> np.ndarray:
  """AP of each query over the whole Hamming ranking of the database.

  Ties in distance are ordered by database index; a query with no relevant
  item gets AP 0 (see the module docstring).

  Args:
    query_codes: [Q, K] in {-1, +1}.
    db_codes: [N, K] in {-1, +1}.
    query_labels: [Q, L] multi-hot.
    db_labels: [N, L] multi-hot.
    query_block: number of queries ranked at once; memory is
      O(query_block * N).

  Returns:
    [Q] float64 in [0, 1].
  """
  _check_block(query_block)
  q, d, ql, dl = _check_all(query_codes, db_codes, query_labels, db_labels)
  n = len(d)
  ranks = np.arange(1, n + 1, dtype=np.float64)  # [N]
  ap = np.zeros(len(q), dtype=np.float64)
  for start in range(0, len(q), query_block):
    stop = min(start + query_block, len(q))
    dist = _hamming(q[start:stop], d)  # [B, N]
    rel = _relevance(ql[start:stop], dl)  # [B, N]
    order = np.argsort(dist, axis=1, kind='stable')  # ties: by db index
    hits = np.take_along_axis(rel, order, axis=1)  # [B, N] bool, ranked
    num_rel = hits.sum(axis=1)  # [B]
    cum_hits = np.cumsum(hits, axis=1, dtype=np.float64)  # [B, N]
    prec_sum = np.where(hits, cum_hits / ranks, 0.0).sum(axis=1)  # [B]
    ap[start:stop] = np.where(num_rel > 0, prec_sum / np.maximum(num_rel, 1),
                              0.0)
  return ap


def mean_average_precision(query_codes: np.ndarray,
                           db_codes: np.ndarray,
                           query_labels: np.ndarray,
                           db_labels: np.ndarray,
                           *,
                           query_block: int = 256) -> float:
  """mAP@all: the mean of `average_precision` over all Q queries.

  Queries with no relevant item count as AP 0 (they stay in the denominator).

  Args:
    query_codes: [Q, K] in {-1, +1}, Q >= 1.
    db_codes: [N, K] in {-1, +1}.
    query_labels: [Q, L] multi-hot.
    db_labels: [N, L] multi-hot.
    query_block: number of queries ranked at once.

  Returns:
    mAP in [0, 1] as a Python float.
  """
  ap = average_precision(query_codes, db_codes, query_labels, db_labels,
                         query_block=query_block)
  if ap.size == 0:
    raise ValueError('mAP of an empty query set is undefined.')
  return float(ap.mean())


def cross_modal_map(codes: Mapping[str, np.ndarray],
                    query_labels: np.ndarray,
                    db_labels: np.ndarray,
                    *,
                    directions: tuple[str, ...] = DIRECTIONS,
                    query_block: int = 256) -> dict[str, float]:
  """mAP@all in each retrieval direction.

  i2t ranks the text database for image queries, t2i the image database for
  text queries, i2i and t2t stay within one modality (see `DIRECTION_PAIRS`).
  Query images and query texts share `query_labels` (they are paired), as do
  the two databases.

  Args:
    codes: 'image_query' [Q, K], 'text_query' [Q, K], 'image_db' [N, K],
      'text_db' [N, K], all in {-1, +1}; only the keys the requested
      directions use are required.
    query_labels: [Q, L] multi-hot.
    db_labels: [N, L] multi-hot.
    directions: a subset of `DIRECTIONS`, in the order of the result.
    query_block: number of queries ranked at once.

  Returns:
    {direction: mAP} for each requested direction.
  """
  result = {}
  for direction in directions:
    if direction not in DIRECTION_PAIRS:
      raise ValueError(f'Unknown direction {direction!r}; known: '
                       f'{", ".join(DIRECTIONS)}.')
    query_key, db_key = DIRECTION_PAIRS[direction]
    missing = [k for k in (query_key, db_key) if k not in codes]
    if missing:
      raise KeyError(f'Direction {direction!r} needs codes {missing}; got '
                     f'{sorted(codes)}.')
    result[direction] = mean_average_precision(
        codes[query_key], codes[db_key], query_labels, db_labels,
        query_block=query_block)
  return result


@dataclasses.dataclass(frozen=True)
class RadiusCurve:
  """Precision and recall of the Hamming ball of each radius r = 0..R.

  Attributes:
    radius: [R + 1] int, 0..R.
    precision: [R + 1] float64, mean over the queries whose ball of radius r is
      non-empty of (relevant items in the ball / items in the ball); 0.0 where
      no query has a non-empty ball (undefined: see `num_defined`).
    recall: [R + 1] float64, mean over the queries with at least one relevant
      item of (relevant items in the ball / relevant items); 0.0 if no query
      has a relevant item.
    num_defined: [R + 1] int, number of queries whose ball is non-empty, i.e.
      how many queries the precision at r averages. Precision is undefined
      (and should be skipped, e.g. in plots) where this is 0.
  """
  radius: np.ndarray
  precision: np.ndarray
  recall: np.ndarray
  num_defined: np.ndarray

  @property
  def defined(self) -> np.ndarray:
    """[R + 1] bool: where `precision` is defined."""
    return self.num_defined > 0


def precision_recall_at_radius(query_codes: np.ndarray,
                               db_codes: np.ndarray,
                               query_labels: np.ndarray,
                               db_labels: np.ndarray,
                               *,
                               max_radius: int | None = None,
                               query_block: int = 256) -> RadiusCurve:
  """Precision and recall of hash lookup within Hamming radius r, r = 0..R.

  For each query the retrieved set at radius r is every database item at
  Hamming distance <= r (the Hamming ball; no tie-breaking is involved).
  Precision is averaged over the queries whose ball is non-empty, recall over
  the queries that have at least one relevant item; see `RadiusCurve`.

  Args:
    query_codes: [Q, K] in {-1, +1}.
    db_codes: [N, K] in {-1, +1}.
    query_labels: [Q, L] multi-hot.
    db_labels: [N, L] multi-hot.
    max_radius: R, at most K; None means K.
    query_block: number of queries processed at once.

  Returns:
    A `RadiusCurve` with R + 1 points.
  """
  _check_block(query_block)
  q, d, ql, dl = _check_all(query_codes, db_codes, query_labels, db_labels)
  k = q.shape[1]
  r_max = k if max_radius is None else int(max_radius)
  if not 0 <= r_max <= k:
    raise ValueError(f'max_radius must be in [0, K={k}]; got {max_radius}.')
  prec_sum = np.zeros(r_max + 1, dtype=np.float64)
  rec_sum = np.zeros(r_max + 1, dtype=np.float64)
  num_defined = np.zeros(r_max + 1, dtype=np.int64)
  num_with_rel = 0
  for start in range(0, len(q), query_block):
    stop = min(start + query_block, len(q))
    b = stop - start
    dist = _hamming(q[start:stop], d)  # [B, N]
    rel = _relevance(ql[start:stop], dl)  # [B, N]
    # Histogram of distances per query: flat index b * (K + 1) + dist.
    flat = (np.arange(b)[:, None] * (k + 1) + dist).ravel()
    retrieved = np.bincount(flat, minlength=b * (k + 1)).reshape(b, k + 1)
    relevant = np.bincount(flat, weights=rel.ravel().astype(np.float64),
                           minlength=b * (k + 1)).reshape(b, k + 1)
    retrieved = np.cumsum(retrieved, axis=1)[:, :r_max + 1]  # [B, R + 1]
    relevant = np.cumsum(relevant, axis=1)[:, :r_max + 1]  # [B, R + 1]
    total_rel = rel.sum(axis=1)  # [B]
    nonempty = retrieved > 0
    prec_sum += np.where(nonempty, relevant / np.maximum(retrieved, 1),
                         0.0).sum(axis=0)
    num_defined += nonempty.sum(axis=0)
    has_rel = total_rel > 0
    rec_sum += (relevant[has_rel] / total_rel[has_rel, None]).sum(axis=0)
    num_with_rel += int(has_rel.sum())
  return RadiusCurve(
      radius=np.arange(r_max + 1),
      precision=np.where(num_defined > 0,
                         prec_sum / np.maximum(num_defined, 1), 0.0),
      recall=rec_sum / max(num_with_rel, 1),
      num_defined=num_defined,
  )
