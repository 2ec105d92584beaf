"""Means and curves of per-query metrics, under the empty-relevance policy.

`summarize` turns a `ranking.QueryMetrics` into a JSON-ready dict:

  {'num_queries', 'num_database', 'num_without_relevant', 'num_averaged',
   'map': {policy: mAP@all},
   'map_at_k': {'k': [...], 'truncated': [...], 'dcmh': [...]},
   'precision_at_n': {'n': [...], policy: [...]},
   'recall_at_n': {'n': [...], policy: [...]},   # with precision_at_n
   'ndcg_at_k': {'k': [...], policy: [...]},
   'pr_radius': {'radius', 'precision', 'recall', 'num_defined'}}  # Hamming

A query with no relevant database item has every metric 0. Policy 'zero'
keeps it in every mean (DCMH's `calc_map` divides by all queries); 'skip'
leaves it out (a mean over no query at all is reported as 0.0, with
'num_averaged' 0). No value is ever NaN. `DEFINITIONS` states each metric in
words, for reports.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from crossmodal_hash.evaluation import ranking

TIE_NAMES = {'index': 'ties in database-index order',
             'tie_aware': 'tie-aware (expectation over tie orders)'}

DEFINITIONS = {
    'relevance': 'a database item is relevant to a query when they share at '
                 'least one label (single-label data: the same class)',
    'ranking': 'database items sorted by increasing Hamming distance (or '
               'decreasing cosine similarity)',
    'ties': {
        'index': 'equal distances are ranked in database-index order '
                 '(deterministic)',
        'tie_aware': 'the expectation over all orders within equal distances, '
                     'every order equally likely (McSherry & Najork 2008)',
    },
    'empty': {
        'zero': 'a query with no relevant item has every metric 0 and stays '
                'in the mean',
        'skip': 'a query with no relevant item is left out of the mean',
    },
    'map': 'mAP@all: mean over queries of AP = (1/R) * sum over the R relevant '
           'items of precision at their rank',
    'map_at_k_truncated': 'mAP@K, ranking truncated at K: AP@K = (sum over '
                          'relevant items at rank <= K of precision at their '
                          'rank) / (number of relevant items at rank <= K); '
                          '0 when no relevant item is in the top K; index '
                          'order',
    'map_at_k_dcmh': "mAP@K, DCMH's calc_map_k: AP@K = (1/M) * sum over the "
                     'first M = min(K, R) relevant items of (m / rank of the '
                     'm-th relevant item), wherever they rank; index order',
    'precision_at_n': 'P@N: relevant items among the first N, divided by N',
    'recall_at_n': 'R@N: relevant items among the first N, divided by all '
                   'relevant items (0 without any); with P@N, the '
                   'precision-recall curve over the top N',
    'ndcg_at_k': 'NDCG@K: DCG@K / ideal DCG@K, gain 2^s - 1 for an item '
                 'sharing s labels with the query, discount 1 / log2(1 + '
                 'rank); 0 when the query has no relevant item',
    'pr_radius': 'lookup within Hamming radius r: precision = relevant / '
                 'retrieved items within distance <= r, averaged over the '
                 'queries whose ball is non-empty (num_defined); recall = '
                 'relevant within r / all relevant, averaged over queries',
}


def _mean(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
  """Mean over the kept queries (axis 0); zeros if none is kept."""
  count = int(keep.sum())
  if count == 0:
    return np.zeros(values.shape[1:])
  return values[keep].mean(axis=0)


def _radius_curve(qm: ranking.QueryMetrics, keep: np.ndarray
                 ) -> dict[str, list[Any]]:
  size = qm.ball_size[keep]
  rel = qm.ball_relevant[keep]
  total = qm.num_relevant[keep][:, None]
  nonempty = size > 0
  precision = np.where(nonempty, rel / np.maximum(size, 1), 0.0)
  num_defined = nonempty.sum(axis=0)
  recall = np.where(total > 0, rel / np.maximum(total, 1), 0.0)
  return {
      'radius': list(range(size.shape[1])),
      'precision': (precision.sum(axis=0) /
                    np.maximum(num_defined, 1)).tolist(),
      'recall': (recall.mean(axis=0) if len(recall) else
                 np.zeros(size.shape[1])).tolist(),
      'num_defined': num_defined.tolist(),
  }


def summarize(qm: ranking.QueryMetrics, empty: str = 'zero'
             ) -> dict[str, Any]:
  """Means and curves of one direction's per-query metrics.

  Args:
    qm: per-query metrics from `ranking.hamming_query_metrics` or
      `cosine.cosine_query_metrics`.
    empty: 'zero' or 'skip' (see the module docstring).

  Returns:
    A dict of Python floats, ints and lists (see the module docstring).
  """
  if empty not in ranking.EMPTY_POLICIES:
    raise ValueError(f'empty must be one of {ranking.EMPTY_POLICIES}; got '
                     f'{empty!r}.')
  has_rel = qm.num_relevant > 0
  keep = has_rel if empty == 'skip' else np.ones_like(has_rel)
  out: dict[str, Any] = {
      'num_queries': int(len(qm.num_relevant)),
      'num_database': int(qm.num_database),
      'num_without_relevant': int((~has_rel).sum()),
      'num_averaged': int(keep.sum()),
      'map': {p: float(_mean(v, keep)) for p, v in qm.ap.items()},
  }
  if qm.top_k:
    out['map_at_k'] = {'k': list(qm.top_k),
                       'truncated': _mean(qm.ap_at_k_truncated, keep).tolist(),
                       'dcmh': _mean(qm.ap_at_k_dcmh, keep).tolist()}
  if qm.precision_at:
    out['precision_at_n'] = {'n': list(qm.precision_at)} | {
        p: _mean(v, keep).tolist() for p, v in qm.precision_at_n.items()}
    # Relevant items among the first N over all relevant items: with P@N,
    # the precision-recall curve over the top N (cosine rankings have no
    # radius curve).
    n_arr = np.asarray(qm.precision_at, dtype=np.float64)[None, :]
    total = qm.num_relevant[:, None]
    out['recall_at_n'] = {'n': list(qm.precision_at)} | {
        p: _mean(np.where(total > 0, v * n_arr / np.maximum(total, 1), 0.0),
                 keep).tolist() for p, v in qm.precision_at_n.items()}
  if qm.ndcg_k:
    out['ndcg_at_k'] = {'k': list(qm.ndcg_k)} | {
        p: _mean(v, keep).tolist() for p, v in qm.ndcg_at_k.items()}
  if qm.ball_size is not None:
    out['pr_radius'] = _radius_curve(qm, keep)
  return out
