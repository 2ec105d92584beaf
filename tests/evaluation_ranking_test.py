"""Every metric of crossmodal_hash.evaluation.ranking against brute force.

The references below sort plainly (Python `sorted` on (distance, index)) and
loop over items in float64; the tie-aware ones take the expectation over tie
orders item by item with exact fractions and the hypergeometric law, which is
a different route from the engine's closed forms.
"""
import decimal
from fractions import Fraction
import itertools
import math

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from crossmodal_hash.evaluation import cosine
from crossmodal_hash.evaluation import precision_sums
from crossmodal_hash.evaluation import ranking
from crossmodal_hash.evaluation import summary
from crossmodal_hash.retrieval import hamming_cpu

_ALL = ranking.EvalOptions(top_k=(1, 3, 10, 50), precision_at=(1, 2, 7, 30),
                           ndcg_k=(1, 5, 20))


def _ranked_values(values):
  """Item indices sorted by (value, index): ties in database-index order."""
  return sorted(range(len(values)), key=lambda j: (values[j], j))


def _index_ap(distances, rel):
  """AP of the ranking by (distance, index)."""
  hits, total = 0, 0.0
  for rank, j in enumerate(_ranked_values(distances), start=1):
    if rel[j]:
      hits += 1
      total += hits / rank
  return total / hits if hits else 0.0


def _reference(distances, shared, top_k, precision_at, ndcg_k):
  """Every metric of one query from its distances and shared-label counts.

  Args:
    distances: [N] ints (smaller ranks first).
    shared: [N] number of labels each item shares with the query.

  Returns:
    dict of floats / lists of floats.
  """
  rel = [s > 0 for s in shared]
  order = _ranked_values(distances)
  num_rel = sum(rel)
  hits_at_rank = []  # (rank, hits so far) of each relevant item, in order
  hits = 0
  for rank, j in enumerate(order, start=1):
    if rel[j]:
      hits += 1
      hits_at_rank.append((rank, hits))
  out = {'num_relevant': num_rel,
         'ap': (sum(h / r for r, h in hits_at_rank) / num_rel
                if num_rel else 0.0)}
  out['truncated'], out['dcmh'] = [], []
  for k in top_k:
    inside = [h / r for r, h in hits_at_rank if r <= k]
    out['truncated'].append(sum(inside) / len(inside) if inside else 0.0)
    m = min(k, num_rel)
    out['dcmh'].append(sum(h / r for r, h in hits_at_rank[:m]) / m if m else
                       0.0)
  out['precision'] = [sum(rel[j] for j in order[:n]) / n for n in precision_at]
  gains = [2.0**shared[j] - 1 for j in order]
  ideal = sorted((2.0**s - 1 for s in shared), reverse=True)

  def dcg(values, k):
    return sum(g / math.log2(r + 1) for r, g in enumerate(values[:k], 1))

  out['ndcg'] = [dcg(gains, k) / dcg(ideal, k) if dcg(ideal, k) > 0 else 0.0
                 for k in ndcg_k]

  # Tie-aware: each relevant item of a group of n items (r relevant, C items
  # and H relevant before) is at position p = 1..n with probability 1/n, with
  # k of the other r - 1 relevant items among the p - 1 before it with
  # hypergeometric probability; precision there is (H + 1 + k) / (C + p).
  groups = {}
  for j, v in enumerate(distances):
    groups.setdefault(v, []).append(j)
  before = hits_before = 0
  ap_sum = Fraction(0)
  exp_hits = [Fraction(0)] * len(precision_at)
  exp_dcg = [0.0] * len(ndcg_k)
  for v in sorted(groups):
    items = groups[v]
    n, r = len(items), sum(rel[j] for j in items)
    for p in range(1, n + 1):
      for k in range(0, min(r - 1, p - 1) + 1) if r else []:
        prob = Fraction(math.comb(r - 1, k) * math.comb(n - r, p - 1 - k),
                        math.comb(n - 1, p - 1))
        ap_sum += r * Fraction(1, n) * prob * Fraction(hits_before + 1 + k,
                                                       before + p)
    for a, cut in enumerate(precision_at):
      exp_hits[a] += Fraction(r * min(max(cut - before, 0), n), n)
    group_gain = sum(2.0**shared[j] - 1 for j in items)
    for a, k in enumerate(ndcg_k):
      discount = sum(1 / math.log2(q + 1)
                     for q in range(before + 1, min(before + n, k) + 1))
      exp_dcg[a] += group_gain / n * discount
    before += n
    hits_before += r
  out['ap_tie'] = float(ap_sum / num_rel) if num_rel else 0.0
  out['precision_tie'] = [float(h) / n for h, n in zip(exp_hits, precision_at)]
  out['ndcg_tie'] = [e / dcg(ideal, k) if dcg(ideal, k) > 0 else 0.0
                     for e, k in zip(exp_dcg, ndcg_k)]
  return out


def _reference_hamming(qc, dc, ql, dl, qm):
  """`_reference` of every query, stacked: {name: array}."""
  rows = []
  for i in range(len(qc)):
    distances = [int(np.sum(qc[i] != dc[j])) for j in range(len(dc))]
    shared = [int(np.sum((ql[i] != 0) & (dl[j] != 0))) for j in range(len(dc))]
    rows.append(_reference(distances, shared, qm.top_k, qm.precision_at,
                           qm.ndcg_k))
  return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def _codes(rng, n, k):
  return rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, k))


def _labels(rng, n, num_labels, kind, p=0.3):
  if kind == 'single':
    return np.eye(num_labels, dtype=np.uint8)[rng.integers(0, num_labels, n)]
  return (rng.random((n, num_labels)) < p).astype(np.uint8)


def _problem(seed, q, n, k, kind='multi', num_labels=5, p=0.3):
  rng = np.random.default_rng(seed)
  return (_codes(rng, q, k), _codes(rng, n, k),
          _labels(rng, q, num_labels, kind, p),
          _labels(rng, n, num_labels, kind, p))


def _assert_matches(qm, ref, policies=ranking.TIE_POLICIES):
  np.testing.assert_array_equal(qm.num_relevant, ref['num_relevant'])
  close = dict(rtol=1e-10, atol=1e-13)
  if 'index' in policies:
    np.testing.assert_allclose(qm.ap['index'], ref['ap'], **close)
    np.testing.assert_allclose(qm.ap_at_k_truncated, ref['truncated'],
                               **close)
    np.testing.assert_allclose(qm.ap_at_k_dcmh, ref['dcmh'], **close)
    np.testing.assert_allclose(qm.precision_at_n['index'], ref['precision'],
                               **close)
    np.testing.assert_allclose(qm.ndcg_at_k['index'], ref['ndcg'], **close)
  if 'tie_aware' in policies:
    np.testing.assert_allclose(qm.ap['tie_aware'], ref['ap_tie'], **close)
    np.testing.assert_allclose(qm.precision_at_n['tie_aware'],
                               ref['precision_tie'], **close)
    np.testing.assert_allclose(qm.ndcg_at_k['tie_aware'], ref['ndcg_tie'],
                               **close)


@pytest.fixture(params=['numba', 'xla'])
def hamming_kernel(request, monkeypatch):
  """The Hamming pass by the package's CPU kernel, or by the XLA kernel."""
  if request.param == 'numba' and not hamming_cpu.AVAILABLE:
    pytest.skip('numba is not installed: the XLA kernel is the only one')
  if request.param == 'xla':
    monkeypatch.setattr(hamming_cpu, 'AVAILABLE', False)
  return request.param


@pytest.mark.parametrize(
    'seed,q,n,k,kind,db_block,query_block',
    [
        (0, 9, 70, 3, 'multi', 65536, 128),   # 4 distances: extreme ties
        (1, 9, 70, 6, 'single', 65536, 4),    # heavy ties, single-label
        (2, 7, 60, 16, 'multi', 11, 3),       # streamed in blocks of 11
        (3, 6, 45, 5, 'single', 1, 2),        # blocks of a single item
        (4, 5, 1, 4, 'multi', 65536, 128),    # a one-item database
    ])
def test_every_metric_matches_brute_force(hamming_kernel, seed, q, n, k, kind,
                                          db_block, query_block):
  del hamming_kernel  # the fixture picked the kernel
  qc, dc, ql, dl = _problem(seed, q, n, k, kind)
  ql[0] = 0  # a query with no relevant item
  options = ranking.EvalOptions(
      top_k=_ALL.top_k, precision_at=_ALL.precision_at, ndcg_k=_ALL.ndcg_k,
      db_block=db_block, query_block=query_block)
  qm = ranking.hamming_query_metrics(qc, dc, ql, dl, options)
  assert qm.top_k == tuple(v for v in _ALL.top_k if v <= n)
  _assert_matches(qm, _reference_hamming(qc, dc, ql, dl, qm))
  for values in [qm.ap['index'], qm.ap['tie_aware'], qm.ap_at_k_truncated,
                 qm.ndcg_at_k['index'], qm.precision_at_n['tie_aware']]:
    assert np.all(np.isfinite(values))
    assert np.all((values >= 0) & (values <= 1))
  assert qm.ap['index'][0] == 0.0 and qm.ap['tie_aware'][0] == 0.0


def test_streaming_equals_unblocked_at_many_block_sizes():
  qc, dc, ql, dl = _problem(5, 21, 150, 8, 'multi', num_labels=6, p=0.2)
  reference = ranking.hamming_query_metrics(qc, dc, ql, dl, _ALL)
  for db_block, query_block in ((1, 21), (7, 1), (7, 5), (64, 5), (149, 21)):
    options = ranking.EvalOptions(
        top_k=_ALL.top_k, precision_at=_ALL.precision_at,
        ndcg_k=_ALL.ndcg_k, db_block=db_block, query_block=query_block,
        num_threads=2)
    qm = ranking.hamming_query_metrics(qc, dc, ql, dl, options)
    for policy in ranking.TIE_POLICIES:
      np.testing.assert_allclose(qm.ap[policy], reference.ap[policy],
                                 rtol=1e-12)
      np.testing.assert_allclose(qm.ndcg_at_k[policy],
                                 reference.ndcg_at_k[policy], rtol=1e-12)
      np.testing.assert_allclose(qm.precision_at_n[policy],
                                 reference.precision_at_n[policy],
                                 rtol=1e-12)
    np.testing.assert_allclose(qm.ap_at_k_truncated,
                               reference.ap_at_k_truncated, rtol=1e-12)
    np.testing.assert_allclose(qm.ap_at_k_dcmh, reference.ap_at_k_dcmh,
                               rtol=1e-12)
    np.testing.assert_array_equal(qm.ball_size, reference.ball_size)
    np.testing.assert_array_equal(qm.ball_relevant, reference.ball_relevant)


@pytest.fixture(params=['counting', 'sort'])
def ap_engine(request, monkeypatch):
  """Index-order mAP@all alone by numba's counting pass, or by NumPy's sort."""
  if request.param == 'counting' and not precision_sums.AVAILABLE:
    pytest.skip('numba is not installed: mAP@all uses the sort route')
  if request.param == 'sort':
    monkeypatch.setattr(precision_sums, 'AVAILABLE', False)
  return request.param


@pytest.mark.parametrize(
    'seed,q,n,k,db_block',
    [
        (20, 6, 90, 2, 65536),   # 3 distances: nearly all items tie
        (21, 5, 300, 16, 65536),
        (22, 5, 300, 16, 7),     # streamed; ranks beyond a block's length
        (23, 4, 41, 8, 1),       # blocks of one item
        (24, 3, 5, 33, 65536),   # bits not a multiple of 32, tiny database
    ])
def test_map_only_matches_brute_force(hamming_kernel, ap_engine, seed, q, n, k,
                                      db_block):
  del hamming_kernel, ap_engine  # the fixtures picked the kernel and engine
  qc, dc, ql, dl = _problem(seed, q, n, k, 'multi', num_labels=4, p=0.3)
  ql[0] = 0  # a query with no relevant item
  options = ranking.EvalOptions(ties=('index',), top_k=(), precision_at=(),
                                ndcg_k=(), radius_curve=False,
                                db_block=db_block, query_block=2)
  qm = ranking.hamming_query_metrics(qc, dc, ql, dl, options)
  for i in range(q):
    dist = (qc[i] != dc).sum(axis=1)
    rel = ((ql[i] != 0) & (dl != 0)).any(axis=1)
    assert qm.ap['index'][i] == pytest.approx(_index_ap(dist, rel),
                                              rel=1e-12, abs=1e-15)
    assert qm.num_relevant[i] == rel.sum()
  assert qm.ap['index'][0] == 0.0


@pytest.mark.parametrize('db_block', [65536, 130])
def test_map_only_fast_path_equals_full_path(ap_engine, db_block):
  del ap_engine  # the fixture picked the engine
  qc, dc, ql, dl = _problem(6, 40, 900, 12, 'multi', num_labels=8, p=0.15)
  full = ranking.hamming_query_metrics(qc, dc, ql, dl, _ALL)
  for policy in ranking.TIE_POLICIES:
    only = ranking.hamming_query_metrics(
        qc, dc, ql, dl, ranking.EvalOptions(
            ties=(policy,), top_k=(), precision_at=(), ndcg_k=(),
            radius_curve=False, db_block=db_block))
    assert list(only.ap) == [policy]
    np.testing.assert_allclose(only.ap[policy], full.ap[policy], rtol=1e-12)
    np.testing.assert_array_equal(only.num_relevant, full.num_relevant)


def test_radius_counts_match_brute_force():
  qc, dc, ql, dl = _problem(7, 6, 50, 10, 'multi')
  qm = ranking.hamming_query_metrics(qc, dc, ql, dl, _ALL)
  for i in range(len(qc)):
    dist = (qc[i] != dc).sum(axis=1)
    rel = ((ql[i] != 0) & (dl != 0)).any(axis=1)
    for r in range(11):
      assert qm.ball_size[i, r] == np.sum(dist <= r)
      assert qm.ball_relevant[i, r] == np.sum((dist <= r) & rel)


def test_class_ids_equal_one_hot_labels():
  rng = np.random.default_rng(8)
  qc, dc = _codes(rng, 8, 6), _codes(rng, 80, 6)
  qy, dy = rng.integers(0, 4, 8), rng.integers(0, 5, 80)
  by_ids = ranking.hamming_query_metrics(qc, dc, qy, dy, _ALL)
  eye = np.eye(5, dtype=np.uint8)
  one_hot = ranking.hamming_query_metrics(qc, dc, eye[qy], eye[dy], _ALL)
  for policy in ranking.TIE_POLICIES:
    np.testing.assert_array_equal(by_ids.ap[policy], one_hot.ap[policy])
  np.testing.assert_array_equal(by_ids.num_relevant,
                                [(dy == y).sum() for y in qy])


def test_cosine_ranking_matches_brute_force_with_ties():
  rng = np.random.default_rng(9)
  # Embeddings on a coarse grid: many exactly equal similarities.
  qe = rng.integers(-1, 2, (6, 3)).astype(np.float32)
  de = rng.integers(-1, 2, (60, 3)).astype(np.float32)
  qe[0] = 0  # a zero query: similarity 0 to every item (one big tie)
  ql, dl = _labels(rng, 6, 4, 'multi', 0.4), _labels(rng, 60, 4, 'multi', 0.4)
  qm = cosine.cosine_query_metrics(qe, de, ql, dl, _ALL)
  assert qm.ball_size is None
  # Exact integer dot products over the norms: equal similarities are
  # exactly equal (normalising first would round true ties apart).
  inv = lambda x: 1 / np.maximum(np.linalg.norm(x, axis=1), 1e-300)
  sims = ((qe.astype(np.float64) @ de.astype(np.float64).T) *
          inv(qe.astype(np.float64))[:, None] *
          inv(de.astype(np.float64))[None, :])
  rows = []
  for i in range(6):
    shared = [int(np.sum((ql[i] != 0) & (dl[j] != 0))) for j in range(60)]
    # Rank by decreasing similarity: distance = -similarity.
    rows.append(_reference(list(-sims[i]), shared, qm.top_k, qm.precision_at,
                           qm.ndcg_k))
  ref = {k: np.array([r[k] for r in rows]) for k in rows[0]}
  _assert_matches(qm, ref)
  assert len(np.unique(np.round(sims, 12))) < 20  # the ties are real


def test_summary_empty_policies():
  qc, dc, ql, dl = _problem(10, 12, 80, 8, 'multi')
  ql[[0, 5]] = 0
  qm = ranking.hamming_query_metrics(qc, dc, ql, dl, _ALL)
  zero = summary.summarize(qm, 'zero')
  skip = summary.summarize(qm, 'skip')
  assert zero['num_without_relevant'] == 2
  assert (zero['num_averaged'], skip['num_averaged']) == (12, 10)
  keep = qm.num_relevant > 0
  for policy in ranking.TIE_POLICIES:
    assert zero['map'][policy] == pytest.approx(qm.ap[policy].sum() / 12)
    assert skip['map'][policy] == pytest.approx(qm.ap[policy][keep].mean())
    np.testing.assert_allclose(skip['ndcg_at_k'][policy],
                               qm.ndcg_at_k[policy][keep].mean(axis=0))
  np.testing.assert_allclose(zero['map_at_k']['dcmh'],
                             qm.ap_at_k_dcmh.mean(axis=0))
  # Radius curve: at the full radius every item is retrieved.
  assert skip['pr_radius']['recall'][-1] == pytest.approx(1.0)
  assert zero['pr_radius']['recall'][-1] == pytest.approx(10 / 12)
  assert zero['pr_radius']['num_defined'][-1] == 12


def test_summary_never_nan_without_any_relevant_item():
  qc, dc, _, _ = _problem(11, 4, 30, 6)
  qm = ranking.hamming_query_metrics(qc, dc, np.zeros((4, 3)),
                                     np.zeros((30, 3)), _ALL)
  for empty in ranking.EMPTY_POLICIES:
    s = summary.summarize(qm, empty)
    values = [s['map'][p] for p in ranking.TIE_POLICIES]
    values += s['map_at_k']['truncated'] + s['ndcg_at_k']['index']
    values += s['pr_radius']['precision'] + s['pr_radius']['recall']
    assert all(math.isfinite(v) and v == 0.0 for v in values)
  assert summary.summarize(qm, 'skip')['num_averaged'] == 0


def test_options_are_checked():
  with pytest.raises(ValueError, match='ties'):
    ranking.EvalOptions(ties=('random',))
  with pytest.raises(ValueError, match='ties'):
    ranking.EvalOptions(ties=())
  with pytest.raises(ValueError, match='empty'):
    ranking.EvalOptions(empty='nan')
  with pytest.raises(ValueError, match='top_k'):
    ranking.EvalOptions(top_k=(0,))
  with pytest.raises(ValueError, match='query_block'):
    ranking.EvalOptions(query_block=0)


def test_inputs_are_checked():
  qc, dc, ql, dl = _problem(12, 3, 10, 4)
  with pytest.raises(ValueError, match='-1 and \\+1'):
    ranking.hamming_query_metrics(np.zeros((3, 4)), dc, ql, dl)
  with pytest.raises(ValueError, match='Code lengths'):
    ranking.hamming_query_metrics(qc[:, :3], dc, ql, dl)
  with pytest.raises(ValueError, match='query labels'):
    ranking.hamming_query_metrics(qc, dc, ql[:2], dl)
  with pytest.raises(ValueError, match='Label counts'):
    ranking.hamming_query_metrics(qc, dc, ql[:, :2], dl)
  with pytest.raises(ValueError, match='NaN'):
    cosine.cosine_query_metrics(np.full((3, 2), np.nan), np.ones((10, 2)),
                                ql, dl)


# ---------------------------------------------------------------------------
# Properties (hypothesis). Shapes are drawn from small fixed sets so that the
# jit-compiled kernel is reused across examples.
# ---------------------------------------------------------------------------

_AP_ONLY = {p: ranking.EvalOptions(ties=(p,), top_k=(), precision_at=(),
                                   ndcg_k=(), radius_curve=False)
            for p in ranking.TIE_POLICIES}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.sampled_from([12, 40]),
       k=st.sampled_from([2, 5, 9]))
def test_tie_aware_ap_is_invariant_to_database_order(seed, n, k):
  qc, dc, ql, dl = _problem(seed, 4, n, k, 'multi', num_labels=3, p=0.4)
  perm = np.random.default_rng(seed + 1).permutation(n)
  a = ranking.hamming_query_metrics(qc, dc, ql, dl, _AP_ONLY['tie_aware'])
  b = ranking.hamming_query_metrics(qc, dc[perm], ql, dl[perm],
                                    _AP_ONLY['tie_aware'])
  np.testing.assert_allclose(a.ap['tie_aware'], b.ap['tie_aware'], rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.sampled_from([12, 40]),
       k=st.sampled_from([3, 8]))
def test_ap_is_one_when_relevant_items_come_first(seed, n, k):
  """Relevant items strictly closer than every irrelevant one: AP = 1."""
  rng = np.random.default_rng(seed)
  query = _codes(rng, 1, k)
  rel = rng.random(n) < 0.4
  rel[rng.integers(n)] = True
  near = rng.integers(0, k, n)  # distance of relevant items: < k
  db = np.repeat(query, n, axis=0)
  for j in range(n):
    flips = near[j] if rel[j] else k  # irrelevant items: the opposite code
    db[j, rng.permutation(k)[:flips]] *= -1
  ql = np.ones((1, 1), dtype=np.uint8)
  dl = rel[:, None].astype(np.uint8)
  for policy in ranking.TIE_POLICIES:
    qm = ranking.hamming_query_metrics(query, db, ql, dl, _AP_ONLY[policy])
    assert qm.ap[policy][0] == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.sampled_from([12, 40]))
def test_policies_agree_without_ties_and_bound_each_other(seed, n):
  rng = np.random.default_rng(seed)
  k = 8
  # Distinct distances: item j of the first 9 sits at distance j.
  query = _codes(rng, 1, k)
  db = np.repeat(query, n, axis=0)
  dist = np.arange(n) % (k + 1)
  for j in range(n):
    db[j, :dist[j]] *= -1
  dl = (rng.random((n, 2)) < 0.5).astype(np.uint8)
  dl[0] = 1  # At least one relevant item among the first k + 1.
  ql = np.ones((1, 2), dtype=np.uint8)
  options = ranking.EvalOptions(top_k=(), precision_at=(), ndcg_k=(1, 4, 9),
                                radius_curve=False)
  both = ranking.hamming_query_metrics(query, db, ql, dl, options)
  # The first k + 1 items sit at distances 0..k: no ties at all, so the
  # expectation over tie orders is the index order.
  distinct = ranking.hamming_query_metrics(query, db[:k + 1], ql, dl[:k + 1],
                                           options)
  assert distinct.num_relevant[0] > 0
  assert distinct.ap['index'][0] == pytest.approx(
      distinct.ap['tie_aware'][0], rel=1e-12)
  np.testing.assert_allclose(distinct.ndcg_at_k['index'],
                             distinct.ndcg_at_k['tie_aware'], rtol=1e-12)
  # Relevant-first and relevant-last orders within ties bound the expectation.
  rel = dl.any(axis=1)
  index = ranking.hamming_query_metrics(query, db, ql, dl, _AP_ONLY['index'])
  order_best = np.lexsort((~rel, dist))
  order_worst = np.lexsort((rel, dist))
  ap = {}
  for name, order in (('best', order_best), ('worst', order_worst)):
    hits = rel[order]
    cum = np.cumsum(hits)
    ap[name] = (cum[hits] / (np.flatnonzero(hits) + 1)).sum() / max(
        hits.sum(), 1)
  assert ap['worst'] - 1e-12 <= both.ap['tie_aware'][0] <= ap['best'] + 1e-12
  assert ap['worst'] - 1e-12 <= index.ap['index'][0] <= ap['best'] + 1e-12


def test_tie_aware_ap_is_the_mean_over_all_tie_orders():
  """Exhaustive: average index-order AP over every permutation of the db."""
  rng = np.random.default_rng(13)
  qc, dc = _codes(rng, 2, 2), _codes(rng, 6, 2)  # 3 distances, 6 items
  ql = np.array([[1, 0], [1, 1]], dtype=np.uint8)
  dl = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]],
                dtype=np.uint8)
  tie = ranking.hamming_query_metrics(qc, dc, ql, dl, _AP_ONLY['tie_aware'])
  perms = list(itertools.permutations(range(6)))
  for i in range(2):
    dist = (qc[i] != dc).sum(axis=1)
    rel = ((ql[i] != 0) & (dl != 0)).any(axis=1)
    mean = sum(_index_ap(dist[list(p)], rel[list(p)]) for p in perms) / len(
        perms)
    assert tie.ap['tie_aware'][i] == pytest.approx(mean, rel=1e-12)
  # And the engine's index order is one of those orders: the identity.
  index = ranking.hamming_query_metrics(qc, dc, ql, dl, _AP_ONLY['index'])
  for i in range(2):
    dist = (qc[i] != dc).sum(axis=1)
    rel = ((ql[i] != 0) & (dl != 0)).any(axis=1)
    assert index.ap['index'][i] == pytest.approx(_index_ap(dist, rel),
                                                 rel=1e-12)


def _decimal_ndcg(distances, shared, cutoffs):
  """Index-order and tie-aware NDCG@K with exact 2^s - 1 gains (Decimal).

  Decimal's exponent range holds 2^1386, so this reference never overflows;
  it shares nothing with the engine's scaled float64 gains.
  """
  decimal.getcontext().prec = 60
  gain = lambda s: decimal.Decimal(2)**int(s) - 1
  discount = lambda r: decimal.Decimal(1) / decimal.Decimal(math.log2(r + 1))
  dcg = lambda gains, k: sum((g * discount(r) for r, g in
                              enumerate(gains[:k], 1)), decimal.Decimal(0))
  order = _ranked_values(distances)
  ideal = sorted((gain(s) for s in shared), reverse=True)
  groups = {}
  for j, v in enumerate(distances):
    groups.setdefault(v, []).append(j)
  index, tie = [], []
  for k in cutoffs:
    best = dcg(ideal, k)
    index.append(float(dcg([gain(shared[j]) for j in order], k) / best))
    expected, before = decimal.Decimal(0), 0
    for v in sorted(groups):
      items = groups[v]
      mean_gain = sum(gain(shared[j]) for j in items) / len(items)
      expected += mean_gain * sum(
          (discount(q) for q in range(before + 1,
                                      min(before + len(items), k) + 1)),
          decimal.Decimal(0))
      before += len(items)
    tie.append(float(expected / best))
  return index, tie


@pytest.mark.parametrize('db_block', [65536, 17])
def test_ndcg_with_tag_sized_label_vectors(db_block):
  """1,386 labels (MIRFLICKR's tag vocabulary): 2^s - 1 overflows float64
  from s = 1024 on; NDCG must stay exact, not 0 or NaN."""
  rng = np.random.default_rng(3)
  num_labels, n = 1386, 50
  qc, dc = _codes(rng, 3, 12), _codes(rng, n, 12)
  # Query 0 and 1: dense labels, items share ~1,100 (some over 1,024); query
  # 2: sparse labels, items share a handful.
  ql = np.stack([rng.random(num_labels) < 0.95, rng.random(num_labels) < 0.9,
                 rng.random(num_labels) < 0.01]).astype(np.uint8)
  dl = (rng.random((n, num_labels)) < rng.uniform(0.3, 0.95, (n, 1))
       ).astype(np.uint8)
  shared = ql.astype(np.int64) @ dl.T.astype(np.int64)
  assert shared[:2].max() >= 1024 and shared[2].max() < 60
  cutoffs = (1, 5, 20, 50)
  qm = ranking.hamming_query_metrics(
      qc, dc, ql, dl, ranking.EvalOptions(top_k=(), precision_at=(),
                                          ndcg_k=cutoffs, radius_curve=False,
                                          db_block=db_block))
  for i in range(3):
    distances = [int(np.sum(qc[i] != dc[j])) for j in range(n)]
    index, tie = _decimal_ndcg(distances, shared[i], cutoffs)
    np.testing.assert_allclose(qm.ndcg_at_k['index'][i], index, rtol=1e-9)
    np.testing.assert_allclose(qm.ndcg_at_k['tie_aware'][i], tie, rtol=1e-9)
    assert np.all(qm.ndcg_at_k['index'][i] > 0)


def test_map_alone_of_long_codes_without_numba(monkeypatch):
  """128-bit codes give 16-bit sort keys; the NumPy route (no numba) of
  mAP@all alone reads their relevance bit (it once viewed them as bytes)."""
  monkeypatch.setattr(precision_sums, 'AVAILABLE', False)
  qc, dc, ql, dl = _problem(20, 5, 300, 128)
  qm = ranking.hamming_query_metrics(qc, dc, ql, dl, _AP_ONLY['index'])
  distances = (qc[:, None, :] != dc[None, :, :]).sum(axis=2)
  rel = (ql.astype(int) @ dl.T.astype(int)) > 0
  np.testing.assert_allclose(
      qm.ap['index'], [_index_ap(list(distances[i]), list(rel[i]))
                       for i in range(5)], rtol=1e-12, atol=1e-14)
