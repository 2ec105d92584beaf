"""Exact retrieval metrics of ±1 hash codes ranked by Hamming distance.

The public entry points of the evaluation engine (`ranking.py`):

* `evaluate_hamming` / `evaluate_cosine`: every metric of one retrieval
  direction, summarised (`summary.summarize`): mAP@all under both tie
  policies, mAP@K in both definitions, precision@N, NDCG@K, and
  precision/recall by Hamming radius.
* `average_precision`, `mean_average_precision`, `cross_modal_map`,
  `precision_recall_at_radius`: single metrics, as the trainer uses them.
* `hamming_distances`, `relevance`: the matrices behind the rankings.

Conventions (see `summary.DEFINITIONS` for every metric):

* Codes are [Q, K] (queries) and [N, K] (database) arrays of -1/+1 (any
  integer or floating dtype); anything else is rejected. They are bit-packed
  with `retrieval.packing`, and distances are XOR-popcounts.
* Labels are multi-hot [M, L] (non-zero = label present) or class ids [M].
  Relevant = sharing at least one label (single-label: the same class).
* **Tie policy:** by default ('index') items at equal distance are ranked in
  database-index order, so every ranking is deterministic; 'tie_aware' is the
  expectation over all orders within ties. Ties are the norm for short codes
  (a K-bit code has only K + 1 distances), so the choice does change AP.
* **Empty-relevance policy:** a query with no relevant database item has
  AP = 0; with 'zero' (the default, as DCMH's `calc_map`) it stays in the
  mean, with 'skip' it is left out. No metric here ever returns NaN.
"""
from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from typing import Any

import jax
import numpy as np

from crossmodal_hash.evaluation import cosine
from crossmodal_hash.evaluation import ranking
from crossmodal_hash.evaluation import summary
from crossmodal_hash.retrieval import packing

DIRECTIONS = ('i2t', 't2i', 'i2i', 't2t')

# direction -> (query codes key, database codes key) in `cross_modal_map`'s
# `codes` argument.
DIRECTION_PAIRS = {
    'i2t': ('image_query', 'text_db'),
    't2i': ('text_query', 'image_db'),
    'i2i': ('image_query', 'image_db'),
    't2t': ('text_query', 'text_db'),
}

EvalOptions = ranking.EvalOptions

_distance_matrix = jax.jit(ranking.packed_hamming)


def hamming_distances(query_codes: np.ndarray,
                      db_codes: np.ndarray) -> np.ndarray:
  """Hamming distances between all pairs of ±1 codes.

  Args:
    query_codes: [Q, K] in {-1, +1}, any integer or floating dtype.
    db_codes: [N, K] in {-1, +1}.

  Returns:
    [Q, N] int32, entry (i, j) = number of bits where query i and item j
    differ (XOR-popcount of the packed codes).
  """
  q = ranking.check_codes(query_codes, 'query_codes')
  d = ranking.check_codes(db_codes, 'db_codes')
  if q.shape[1] != d.shape[1]:
    raise ValueError(f'Code lengths differ: query K={q.shape[1]}, database '
                     f'K={d.shape[1]}.')
  return np.asarray(_distance_matrix(packing.pack_codes(q),
                                     packing.pack_codes(d)))


def relevance(query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
  """Whether each query and database item share at least one label.

  Args:
    query_labels: [Q, L] multi-hot (non-zero = label present) or [Q] class ids.
    db_labels: [N, L] multi-hot or [N] class ids.

  Returns:
    [Q, N] bool.
  """
  q, d = ranking.align_labels(query_labels, db_labels)
  return (q.astype(np.float32) @ d.T.astype(np.float32)) > 0.5


def _options(ties: str, query_block: int, **kwargs) -> ranking.EvalOptions:
  return ranking.EvalOptions(ties=(ties,), top_k=(), precision_at=(),
                             ndcg_k=(), radius_curve=False,
                             query_block=query_block, **kwargs)


def average_precision(query_codes: np.ndarray,
                      db_codes: np.ndarray,
                      query_labels: np.ndarray,
                      db_labels: np.ndarray,
                      *,
                      ties: str = 'index',
                      query_block: int = 128) -> np.ndarray:
  """AP of each query over the whole Hamming ranking of the database.

  Args:
    query_codes: [Q, K] in {-1, +1}.
    db_codes: [N, K] in {-1, +1}.
    query_labels: [Q, L] multi-hot or [Q] class ids.
    db_labels: [N, L] multi-hot or [N] class ids.
    ties: 'index' (equal distances in database-index order) or 'tie_aware'
      (expectation over the orders within equal distances).
    query_block: number of queries ranked at once.

  Returns:
    [Q] float64 in [0, 1]; 0 for a query with no relevant item.
  """
  qm = ranking.hamming_query_metrics(query_codes, db_codes, query_labels,
                                     db_labels, _options(ties, query_block))
  return qm.ap[ties]


def mean_average_precision(query_codes: np.ndarray,
                           db_codes: np.ndarray,
                           query_labels: np.ndarray,
                           db_labels: np.ndarray,
                           *,
                           ties: str = 'index',
                           empty: str = 'zero',
                           query_block: int = 128) -> float:
  """mAP@all: the mean of `average_precision` over the queries.

  Args:
    query_codes: [Q, K] in {-1, +1}, Q >= 1.
    db_codes: [N, K] in {-1, +1}.
    query_labels: [Q, L] multi-hot or [Q] class ids.
    db_labels: [N, L] multi-hot or [N] class ids.
    ties: 'index' or 'tie_aware' (see `average_precision`).
    empty: 'zero' (queries with no relevant item count as AP 0) or 'skip'
      (they are left out; 0.0 if no query is left).
    query_block: number of queries ranked at once.

  Returns:
    mAP in [0, 1] as a Python float.
  """
  if len(np.asarray(query_codes)) == 0:
    raise ValueError('mAP of an empty query set is undefined.')
  qm = ranking.hamming_query_metrics(query_codes, db_codes, query_labels,
                                     db_labels, _options(ties, query_block))
  return summary.summarize(qm, empty)['map'][ties]


def direction_codes(codes: Mapping[str, np.ndarray], direction: str
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(query codes, database codes) of a direction ('i2t', 't2i', ...)."""
  if direction not in DIRECTION_PAIRS:
    raise ValueError(f'Unknown direction {direction!r}; known: '
                     f'{", ".join(DIRECTIONS)}.')
  query_key, db_key = DIRECTION_PAIRS[direction]
  missing = [k for k in (query_key, db_key) if k not in codes]
  if missing:
    raise KeyError(f'Direction {direction!r} needs codes {missing}; got '
                   f'{sorted(codes)}.')
  return codes[query_key], codes[db_key]


def cross_modal_map(codes: Mapping[str, np.ndarray],
                    query_labels: np.ndarray,
                    db_labels: np.ndarray,
                    *,
                    directions: tuple[str, ...] = DIRECTIONS,
                    ties: str = 'index',
                    empty: str = 'zero',
                    query_block: int = 128) -> dict[str, float]:
  """mAP@all in each retrieval direction.

  i2t ranks the text database for image queries, t2i the image database for
  text queries, i2i and t2t stay within one modality (see `DIRECTION_PAIRS`).
  Query images and query texts share `query_labels` (they are paired), as do
  the two databases.

  Args:
    codes: 'image_query' [Q, K], 'text_query' [Q, K], 'image_db' [N, K],
      'text_db' [N, K], all in {-1, +1}; only the keys the requested
      directions use are required.
    query_labels: [Q, L] multi-hot or [Q] class ids.
    db_labels: [N, L] multi-hot or [N] class ids.
    directions: a subset of `DIRECTIONS`, in the order of the result.
    ties: 'index' or 'tie_aware'.
    empty: 'zero' or 'skip'.
    query_block: number of queries ranked at once.

  Returns:
    {direction: mAP} for each requested direction.
  """
  pairs = {d: direction_codes(codes, d) for d in directions}
  return {d: mean_average_precision(q, db, query_labels, db_labels, ties=ties,
                                    empty=empty, query_block=query_block)
          for d, (q, db) in pairs.items()}


def evaluate_hamming(query_codes: np.ndarray, db_codes: np.ndarray,
                     query_labels: np.ndarray, db_labels: np.ndarray,
                     options: ranking.EvalOptions | None = None
                    ) -> dict[str, Any]:
  """Every metric of one direction of Hamming ranking, summarised.

  Args:
    query_codes: [Q, K] in {-1, +1}.
    db_codes: [N, K] in {-1, +1}.
    query_labels: [Q, L] multi-hot or [Q] class ids.
    db_labels: [N, L] multi-hot or [N] class ids.
    options: what to compute; defaults to `EvalOptions()`.

  Returns:
    `summary.summarize`'s dict.
  """
  options = options or ranking.EvalOptions()
  qm = ranking.hamming_query_metrics(query_codes, db_codes, query_labels,
                                     db_labels, options)
  return summary.summarize(qm, options.empty)


def evaluate_cosine(query_emb: np.ndarray, db_emb: np.ndarray,
                    query_labels: np.ndarray, db_labels: np.ndarray,
                    options: ranking.EvalOptions | None = None
                   ) -> dict[str, Any]:
  """Every metric of one direction of cosine ranking of real embeddings.

  As `evaluate_hamming` without the radius curve; ties are exactly equal
  cosine similarities. Streamed over the database in blocks of
  `options.cosine_block` items (`cosine.py`): memory O(query block x
  cosine_block) for any N.

  Args:
    query_emb: [Q, D] real.
    db_emb: [N, D] real.
    query_labels: [Q, L] multi-hot or [Q] class ids.
    db_labels: [N, L] multi-hot or [N] class ids.
    options: what to compute; defaults to `EvalOptions()`.
  """
  options = options or ranking.EvalOptions()
  qm = cosine.cosine_query_metrics(query_emb, db_emb, query_labels,
                                   db_labels, options)
  return summary.summarize(qm, options.empty)


@dataclasses.dataclass(frozen=True)
class RadiusCurve:
  """Precision and recall of the Hamming ball of each radius r = 0..R.

  Attributes:
    radius: [R + 1] int, 0..R.
    precision: [R + 1] float64, mean over the (policy's) queries whose ball of
      radius r is non-empty of (relevant items in the ball / items in the
      ball); 0.0 where no query has a non-empty ball (see `num_defined`).
    recall: [R + 1] float64, mean over the policy's queries of (relevant items
      in the ball / relevant items); a query without relevant items counts 0
      under 'zero' and is left out under 'skip'.
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

  @classmethod
  def from_summary(cls, pr_radius: Mapping[str, Any]) -> RadiusCurve:
    """From the 'pr_radius' entry of `summary.summarize`."""
    return cls(radius=np.asarray(pr_radius['radius']),
               precision=np.asarray(pr_radius['precision'], dtype=np.float64),
               recall=np.asarray(pr_radius['recall'], dtype=np.float64),
               num_defined=np.asarray(pr_radius['num_defined']))


def precision_recall_at_radius(query_codes: np.ndarray,
                               db_codes: np.ndarray,
                               query_labels: np.ndarray,
                               db_labels: np.ndarray,
                               *,
                               max_radius: int | None = None,
                               empty: str = 'zero',
                               query_block: int = 128) -> RadiusCurve:
  """Precision and recall of hash lookup within Hamming radius r, r = 0..R.

  For each query the retrieved set at radius r is every database item at
  Hamming distance <= r (the Hamming ball; no tie-breaking is involved).

  Args:
    query_codes: [Q, K] in {-1, +1}.
    db_codes: [N, K] in {-1, +1}.
    query_labels: [Q, L] multi-hot or [Q] class ids.
    db_labels: [N, L] multi-hot or [N] class ids.
    max_radius: R, at most K; None means K.
    empty: 'zero' or 'skip' (see `RadiusCurve`).
    query_block: number of queries processed at once.

  Returns:
    A `RadiusCurve` with R + 1 points.
  """
  bits = np.shape(query_codes)[-1]
  r_max = bits if max_radius is None else int(max_radius)
  if not 0 <= r_max <= bits:
    raise ValueError(f'max_radius must be in [0, K={bits}]; got {max_radius}.')
  options = ranking.EvalOptions(ties=('tie_aware',), empty=empty, top_k=(),
                                precision_at=(), ndcg_k=(), radius_curve=True,
                                query_block=query_block)
  qm = ranking.hamming_query_metrics(query_codes, db_codes, query_labels,
                                     db_labels, options)
  curve = summary.summarize(qm, empty)['pr_radius']
  return RadiusCurve.from_summary(
      {k: v[:r_max + 1] for k, v in curve.items()})
