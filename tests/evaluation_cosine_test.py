"""The streamed cosine ranking (evaluation/cosine.py) against brute force.

The reference ranks each query's whole database at once in float64 NumPy
(a stable sort on -similarity: ties in index order) and sums every metric
item by item; its tie-aware values sum over the positions of each tie group
directly (no harmonic table, no closed form). Embeddings are small integers
on a coarse grid, so that exactly equal similarities (ties) are many and
exact, with duplicates across database blocks, a zero query (one tie group
of the whole database, larger than a chunk) and a zero database row.
"""
import math

import numpy as np
import pytest

from crossmodal_hash.evaluation import cosine
from crossmodal_hash.evaluation import metrics
from crossmodal_hash.evaluation import ranking
from crossmodal_hash.evaluation import summary

TOL = dict(rtol=0, atol=1e-12)
_TOP_K = (1, 5, 40, 100)
_PRECISION_AT = (1, 3, 10, 33, 150)
_NDCG_K = (1, 7, 50)


def _options(**kwargs):
  return ranking.EvalOptions(top_k=_TOP_K, precision_at=_PRECISION_AT,
                             ndcg_k=_NDCG_K, **kwargs)


def _problem(seed, q=40, n=150, d=3, num_labels=5):
  rng = np.random.default_rng(seed)
  qe = rng.integers(-1, 2, (q, d)).astype(np.float32)
  de = rng.integers(-1, 2, (n, d)).astype(np.float32)
  de[n - 20:] = de[:20]  # duplicates, blocks apart
  qe[0] = 0  # similarity 0 to every item: one tie group of N
  de[7] = 0
  ql = (rng.random((q, num_labels)) < 0.3).astype(np.uint8)
  dl = (rng.random((n, num_labels)) < 0.3).astype(np.uint8)
  ql[3] = 0  # a query without relevant items
  return qe, de, ql, dl


def _reference(qe, de, ql, dl):
  """{metric: [Q] or [Q, P]} by brute force in float64."""
  qe, de = qe.astype(np.float64), de.astype(np.float64)
  inv = lambda x: 1 / np.maximum(np.linalg.norm(x, axis=1), 1e-300)
  sims = (qe @ de.T) * inv(qe)[:, None] * inv(de)[None, :]
  shared_all = ql.astype(np.int64) @ dl.T.astype(np.int64)
  out = {k: [] for k in ('num_relevant', 'ap', 'truncated', 'dcmh',
                         'precision', 'ndcg', 'ap_tie', 'precision_tie',
                         'ndcg_tie')}
  disc = lambda rank: 1 / math.log2(rank + 1)
  for i in range(len(qe)):
    order = np.argsort(-sims[i], kind='stable')
    shared = shared_all[i][order]
    rel = shared > 0
    num_rel = int(rel.sum())
    hits = np.cumsum(rel)
    ranks = np.arange(1, len(order) + 1)
    prec_at_hits = (hits / ranks)[rel]
    out['num_relevant'].append(num_rel)
    out['ap'].append(prec_at_hits.sum() / num_rel if num_rel else 0.0)
    out['truncated'].append([
        prec_at_hits[ranks[rel] <= k].mean() if (ranks[rel] <= k).any() else
        0.0 for k in _TOP_K])
    out['dcmh'].append([prec_at_hits[:min(k, num_rel)].mean()
                        if num_rel else 0.0 for k in _TOP_K])
    out['precision'].append([rel[:n].sum() / n for n in _PRECISION_AT])
    gains = 2.0**shared - 1
    ideal = np.sort(gains)[::-1]
    dcg = lambda g, k: sum(g[p] * disc(p + 1) for p in range(min(k,
                                                                  len(g))))
    out['ndcg'].append([dcg(gains, k) / dcg(ideal, k) if dcg(ideal, k) else
                        0.0 for k in _NDCG_K])
    # Tie-aware: the groups of equal similarity, in ranking order.
    values = sims[i][order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    stops = np.r_[starts[1:], len(values)]
    ap_tie, hits_tie = 0.0, np.zeros(len(_PRECISION_AT))
    dcg_tie = np.zeros(len(_NDCG_K))
    for start, stop in zip(starts, stops):
      n, r = stop - start, int(rel[start:stop].sum())
      h = int(rel[:start].sum())
      for p in range(1, n + 1):  # a relevant item at position p of the group
        others = (p - 1) * (r - 1) / (n - 1) if n > 1 else 0.0
        ap_tie += r / n * (h + 1 + others) / (start + p)
      for a, cut in enumerate(_PRECISION_AT):
        hits_tie[a] += r * min(max(cut - start, 0), n) / n
      mean_gain = gains[start:stop].mean()
      for a, k in enumerate(_NDCG_K):
        dcg_tie[a] += mean_gain * sum(disc(p) for p in
                                      range(start + 1, min(stop, k) + 1))
    out['ap_tie'].append(ap_tie / num_rel if num_rel else 0.0)
    out['precision_tie'].append(hits_tie / np.array(_PRECISION_AT))
    out['ndcg_tie'].append([e / dcg(ideal, k) if dcg(ideal, k) else 0.0
                            for e, k in zip(dcg_tie, _NDCG_K)])
  return {k: np.array(v) for k, v in out.items()}


def _assert_matches(qm, ref):
  np.testing.assert_array_equal(qm.num_relevant, ref['num_relevant'])
  assert qm.top_k == _TOP_K and qm.precision_at == _PRECISION_AT
  np.testing.assert_allclose(qm.ap['index'], ref['ap'], **TOL)
  np.testing.assert_allclose(qm.ap_at_k_truncated, ref['truncated'], **TOL)
  np.testing.assert_allclose(qm.ap_at_k_dcmh, ref['dcmh'], **TOL)
  np.testing.assert_allclose(qm.precision_at_n['index'], ref['precision'],
                             **TOL)
  np.testing.assert_allclose(qm.ndcg_at_k['index'], ref['ndcg'], **TOL)
  np.testing.assert_allclose(qm.ap['tie_aware'], ref['ap_tie'], **TOL)
  np.testing.assert_allclose(qm.precision_at_n['tie_aware'],
                             ref['precision_tie'], **TOL)
  np.testing.assert_allclose(qm.ndcg_at_k['tie_aware'], ref['ndcg_tie'],
                             **TOL)


@pytest.mark.parametrize('block', [16, 37, 1000])
def test_every_metric_matches_brute_force_with_ties_across_blocks(block):
  """150 items in blocks of 16 or 37 (chunks cut through tie groups; the
  zero query's single group spans every chunk) or in one block."""
  qe, de, ql, dl = _problem(0)
  qm = cosine.cosine_query_metrics(qe, de, ql, dl,
                                   _options(cosine_block=block))
  ref = _reference(qe, de, ql, dl)
  _assert_matches(qm, ref)
  assert qm.ball_size is None
  # The ties are real: few distinct similarities per query.
  assert len(np.unique(cosine.similarities(
      qe[1:2].astype(np.float64), np.ones(1), de.astype(np.float64),
      np.ones(len(de))))) < 15


def test_map_alone_and_each_tie_policy_alone_match_the_full_suite():
  """The sweeps stop early without NDCG / P@N cutoffs; the results agree."""
  qe, de, ql, dl = _problem(1)
  ref = _reference(qe, de, ql, dl)
  for policy, key in (('index', 'ap'), ('tie_aware', 'ap_tie')):
    qm = cosine.cosine_query_metrics(qe, de, ql, dl, ranking.EvalOptions(
        ties=(policy,), top_k=(), precision_at=(), ndcg_k=(),
        radius_curve=False, cosine_block=8))
    np.testing.assert_allclose(qm.ap[policy], ref[key], **TOL)


def test_class_ids_and_the_empty_policy_as_in_the_hamming_suite():
  rng = np.random.default_rng(2)
  qe, de = rng.normal(size=(12, 4)), rng.normal(size=(90, 4))
  qy, dy = rng.integers(0, 5, 12), rng.integers(0, 5, 90)
  qy[0] = 5  # no database item of class 5
  by_ids = cosine.cosine_query_metrics(qe, de, qy, dy, _options(
      cosine_block=10))
  eye = np.eye(6, dtype=np.uint8)
  one_hot = cosine.cosine_query_metrics(qe, de, eye[qy], eye[dy], _options(
      cosine_block=10))
  np.testing.assert_array_equal(by_ids.ap['index'], one_hot.ap['index'])
  assert by_ids.num_relevant[0] == 0 and by_ids.ap['index'][0] == 0
  zero, skip = summary.summarize(by_ids, 'zero'), summary.summarize(
      by_ids, 'skip')
  assert zero['num_averaged'] == 12 and skip['num_averaged'] == 11
  assert skip['map']['index'] == pytest.approx(zero['map']['index'] * 12 /
                                               11, rel=1e-12)


def test_sign_codes_as_embeddings_rank_as_hamming_codes():
  """±1 codes: cosine = 1 - 2 d / K, the same ranking and ties, so every
  metric equals the Hamming suite's (streamed or not)."""
  rng = np.random.default_rng(3)
  qc = rng.choice(np.array([-1, 1], np.int8), (20, 8))
  dc = rng.choice(np.array([-1, 1], np.int8), (130, 8))
  ql, dl = (rng.random((20, 4)) < 0.3), (rng.random((130, 4)) < 0.3)
  options = _options(cosine_block=32)
  hamming = metrics.evaluate_hamming(qc, dc, ql, dl, options)
  streamed = metrics.evaluate_cosine(qc, dc, ql, dl, options)
  for key in ('map', 'precision_at_n', 'ndcg_at_k'):
    for policy in ('index', 'tie_aware'):
      np.testing.assert_allclose(streamed[key][policy], hamming[key][policy],
                                 **TOL)
  np.testing.assert_allclose(streamed['map_at_k']['dcmh'],
                             hamming['map_at_k']['dcmh'], **TOL)


def test_bad_inputs_are_named():
  qe, de, ql, dl = _problem(4, q=5, n=30)
  with pytest.raises(ValueError, match='db_emb has NaN'):
    cosine.cosine_query_metrics(qe, np.full((30, 3), np.inf), ql, dl)
  with pytest.raises(ValueError, match='Embedding sizes differ'):
    cosine.cosine_query_metrics(qe[:, :2], de, ql, dl)
  with pytest.raises(ValueError, match='cosine_block'):
    ranking.EvalOptions(cosine_block=0)
