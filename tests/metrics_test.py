"""Tests of crossmodal_hash.evaluation.metrics against float64 references."""
import math

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from crossmodal_hash.evaluation import metrics


# ---------------------------------------------------------------------------
# Brute-force references: plain Python loops, float64, no vectorisation.
# ---------------------------------------------------------------------------


def _ref_distance(q, d):
  return sum(1 for a, b in zip(q, d) if a != b)


def _ref_relevant(ql, dl):
  return any(a != 0 and b != 0 for a, b in zip(ql, dl))


def _ref_average_precision(qc, dc, ql, dl):
  """AP of each query: ranking by sorted((distance, index)), ties by index."""
  aps = []
  for i in range(len(qc)):
    ranking = sorted((_ref_distance(qc[i], dc[j]), j) for j in range(len(dc)))
    hits = 0
    precision_sum = 0.0
    for rank, (_, j) in enumerate(ranking, start=1):
      if _ref_relevant(ql[i], dl[j]):
        hits += 1
        precision_sum += hits / rank
    aps.append(precision_sum / hits if hits else 0.0)
  return np.array(aps, dtype=np.float64)


def _ref_radius_curve(qc, dc, ql, dl, max_radius, empty):
  """Mean precision (over non-empty balls) and recall by radius.

  Queries without relevant items: recall 0 under 'zero', and left out of both
  means under 'skip'.
  """
  precision, recall, num_defined = [], [], []
  for r in range(max_radius + 1):
    p_vals, r_vals = [], []
    for i in range(len(qc)):
      ball = [j for j in range(len(dc)) if _ref_distance(qc[i], dc[j]) <= r]
      rel = [j for j in range(len(dc)) if _ref_relevant(ql[i], dl[j])]
      rel_in_ball = [j for j in ball if _ref_relevant(ql[i], dl[j])]
      if not rel and empty == 'skip':
        continue
      if ball:
        p_vals.append(len(rel_in_ball) / len(ball))
      r_vals.append(len(rel_in_ball) / len(rel) if rel else 0.0)
    precision.append(sum(p_vals) / len(p_vals) if p_vals else 0.0)
    recall.append(sum(r_vals) / len(r_vals) if r_vals else 0.0)
    num_defined.append(len(p_vals))
  return np.array(precision), np.array(recall), np.array(num_defined)


# ---------------------------------------------------------------------------
# Random problems.
# ---------------------------------------------------------------------------


def _codes(rng, n, k, dtype=np.int8):
  return rng.choice(np.array([-1, 1]), size=(n, k)).astype(dtype)


def _single_labels(rng, n, num_classes):
  return np.eye(num_classes, dtype=np.uint8)[rng.integers(0, num_classes, n)]


def _multi_labels(rng, n, num_labels, p=0.15):
  return (rng.random((n, num_labels)) < p).astype(np.uint8)


def _problem(seed, q, n, k, labels='multi', num_labels=6):
  rng = np.random.default_rng(seed)
  make = _single_labels if labels == 'single' else _multi_labels
  return (_codes(rng, q, k), _codes(rng, n, k), make(rng, q, num_labels),
          make(rng, n, num_labels))


# ---------------------------------------------------------------------------
# hamming_distances and relevance.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('dtype', [np.int8, np.int32, np.int64, np.float32,
                                   np.float64])
def test_hamming_distances_matches_popcount(dtype):
  rng = np.random.default_rng(0)
  q, d = _codes(rng, 13, 70, dtype), _codes(rng, 41, 70, dtype)
  got = metrics.hamming_distances(q, d)
  assert got.shape == (13, 41)
  assert got.dtype == np.int32
  # Pack the bits (+1 -> 1) and count the differing bits of the XOR.
  qp, dp = np.packbits(q > 0, axis=1), np.packbits(d > 0, axis=1)
  expected = np.bitwise_count(qp[:, None, :] ^ dp[None, :, :]).sum(axis=-1)
  np.testing.assert_array_equal(got, expected)
  # And a plain count.
  plain = (q[:, None, :] != d[None, :, :]).sum(axis=-1)
  np.testing.assert_array_equal(got, plain)


def test_hamming_distances_long_codes_exact():
  rng = np.random.default_rng(1)
  q, d = _codes(rng, 3, 4096), _codes(rng, 5, 4096)
  plain = (q[:, None, :] != d[None, :, :]).sum(axis=-1)
  np.testing.assert_array_equal(metrics.hamming_distances(q, d), plain)
  np.testing.assert_array_equal(metrics.hamming_distances(q, -q).diagonal(),
                                [4096] * 3)


@pytest.mark.parametrize('bad', [
    np.array([[1, 0, -1]]),
    np.array([[0.9, 1.0, -1.0]]),
    np.array([[True, False, True]]),
    np.array([1, -1, 1]),
])
def test_hamming_distances_rejects_non_pm1(bad):
  with pytest.raises(ValueError):
    metrics.hamming_distances(bad, np.ones((2, 3)))


def test_hamming_distances_rejects_mismatched_bits():
  with pytest.raises(ValueError, match='Code lengths'):
    metrics.hamming_distances(np.ones((2, 3)), np.ones((2, 4)))


def test_relevance_matches_reference():
  rng = np.random.default_rng(2)
  ql, dl = _multi_labels(rng, 17, 5, 0.3), _multi_labels(rng, 23, 5, 0.3)
  got = metrics.relevance(ql, dl)
  assert got.dtype == np.bool_ and got.shape == (17, 23)
  expected = [[_ref_relevant(a, b) for b in dl] for a in ql]
  np.testing.assert_array_equal(got, expected)


def test_relevance_single_label_is_same_class():
  rng = np.random.default_rng(3)
  qc, dc = rng.integers(0, 4, 10), rng.integers(0, 4, 12)
  eye = np.eye(4, dtype=np.float32)
  np.testing.assert_array_equal(metrics.relevance(eye[qc], eye[dc]),
                                qc[:, None] == dc[None, :])


# ---------------------------------------------------------------------------
# average_precision / mean_average_precision.
# ---------------------------------------------------------------------------


def test_average_precision_hand_computed():
  # K = 4, query 0 is all +1. Database distances: [1, 0, 2, 1].
  query = np.array([[1, 1, 1, 1], [1, 1, 1, 1]])
  db = np.array([[1, 1, 1, -1],    # item 0: distance 1, relevant
                 [1, 1, 1, 1],     # item 1: distance 0, not relevant
                 [-1, -1, 1, 1],   # item 2: distance 2, relevant
                 [-1, 1, 1, 1]])   # item 3: distance 1, not relevant
  query_labels = np.array([[1, 0, 0], [0, 0, 1]])  # query 1: nothing relevant.
  db_labels = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
  # Ranking of query 0 (ties by index): item 1 (d0), 0 (d1), 3 (d1), 2 (d2);
  # relevant at ranks 2 and 4 -> AP = (1/2 + 2/4) / 2 = 1/2. Breaking the
  # tie between items 0 and 3 the other way would give (1/3 + 2/4) / 2.
  expected = np.array([0.5, 0.0])
  got = metrics.average_precision(query, db, query_labels, db_labels)
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
  assert metrics.mean_average_precision(
      query, db, query_labels, db_labels) == pytest.approx(0.25, abs=1e-15)


def test_average_precision_hand_computed_second_example():
  # Distances [2, 0, 2, 1]; relevant: items 0, 2, 3.
  # Ranking: 1 (d0, -), 3 (d1, +), 0 (d2, +), 2 (d2, +).
  # AP = (1/2 + 2/3 + 3/4) / 3 = 23/36.
  query = np.array([[1, 1, 1, 1]])
  db = np.array([[-1, -1, 1, 1], [1, 1, 1, 1], [1, 1, -1, -1], [1, 1, 1, -1]])
  query_labels = np.array([[1, 0]])
  db_labels = np.array([[1, 0], [0, 1], [1, 1], [1, 0]])
  got = metrics.average_precision(query, db, query_labels, db_labels)
  np.testing.assert_allclose(got, [23 / 36], rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    'seed,q,n,k,labels,block',
    [
        (0, 37, 500, 8, 'single', 16),    # heavy ties: 9 distances, 500 items
        (1, 37, 500, 8, 'multi', 256),
        (2, 29, 211, 3, 'multi', 7),      # extreme ties: 4 distances
        (3, 50, 300, 32, 'single', 13),
        (4, 21, 190, 16, 'multi', 1),
        (5, 5, 1, 4, 'single', 2),        # a one-item database
    ])
def test_average_precision_matches_reference(seed, q, n, k, labels, block):
  qc, dc, ql, dl = _problem(seed, q, n, k, labels)
  expected = _ref_average_precision(qc, dc, ql, dl)
  got = metrics.average_precision(qc, dc, ql, dl, query_block=block)
  assert got.shape == (q,) and got.dtype == np.float64
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
  mean = metrics.mean_average_precision(qc, dc, ql, dl, query_block=block)
  assert isinstance(mean, float)
  assert mean == pytest.approx(float(np.mean(expected)), rel=1e-12)


def test_average_precision_block_size_does_not_matter():
  qc, dc, ql, dl = _problem(6, 101, 257, 12, 'multi')
  ref = metrics.average_precision(qc, dc, ql, dl, query_block=1000)
  for block in (1, 3, 64, 100, 101):
    np.testing.assert_array_equal(
        metrics.average_precision(qc, dc, ql, dl, query_block=block), ref)


def test_queries_without_relevant_items_get_zero_not_nan():
  qc, dc, ql, dl = _problem(7, 20, 150, 8, 'multi', num_labels=6)
  ql[::3] = 0  # Every third query has no label, so nothing is relevant.
  dl[:, 5] = 0
  ql[1] = np.eye(6, dtype=np.uint8)[5]  # Label 5 only: no db item has it.
  ap = metrics.average_precision(qc, dc, ql, dl, query_block=8)
  assert np.all(np.isfinite(ap))
  assert np.all(ap[::3] == 0.0) and ap[1] == 0.0
  np.testing.assert_allclose(ap, _ref_average_precision(qc, dc, ql, dl),
                             rtol=1e-12, atol=1e-15)
  # They stay in the denominator of the mean.
  assert metrics.mean_average_precision(qc, dc, ql, dl) == pytest.approx(
      ap.sum() / 20, rel=1e-12)


def test_no_relevant_item_anywhere_gives_zero_map():
  qc, dc, _, _ = _problem(8, 4, 10, 8)
  ql, dl = np.zeros((4, 3)), np.zeros((10, 3))
  assert metrics.mean_average_precision(qc, dc, ql, dl) == 0.0


def test_perfect_and_worst_codes():
  # Codes equal to a class code: relevant items at distance 0, others > 0.
  rng = np.random.default_rng(9)
  class_codes = np.array([[1, 1, 1, 1], [-1, -1, -1, -1], [1, -1, 1, -1]])
  qy, dy = rng.integers(0, 3, 15), rng.integers(0, 3, 60)
  eye = np.eye(3)
  ap = metrics.average_precision(class_codes[qy], class_codes[dy], eye[qy],
                                 eye[dy])
  np.testing.assert_array_equal(ap, np.where(np.isin(qy, dy), 1.0, 0.0))


def test_float_codes_give_same_result_as_int_codes():
  qc, dc, ql, dl = _problem(10, 9, 80, 16)
  np.testing.assert_array_equal(
      metrics.average_precision(qc.astype(np.float32), dc.astype(np.float64),
                                ql, dl),
      metrics.average_precision(qc, dc, ql, dl))


def test_average_precision_input_checks():
  qc, dc, ql, dl = _problem(11, 4, 10, 8)
  with pytest.raises(ValueError, match='query labels'):
    metrics.average_precision(qc, dc, ql[:3], dl)
  with pytest.raises(ValueError, match='database labels'):
    metrics.average_precision(qc, dc, ql, dl[:9])
  with pytest.raises(ValueError, match='query_block'):
    metrics.average_precision(qc, dc, ql, dl, query_block=0)
  with pytest.raises(ValueError, match='empty'):
    metrics.mean_average_precision(qc[:0], dc, ql[:0], dl)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), q=st.integers(1, 9), n=st.integers(1, 40),
       k=st.integers(1, 10), num_labels=st.integers(1, 4),
       block=st.integers(1, 12))
def test_average_precision_property(seed, q, n, k, num_labels, block):
  rng = np.random.default_rng(seed)
  qc, dc = _codes(rng, q, k), _codes(rng, n, k)
  ql = _multi_labels(rng, q, num_labels, 0.4)
  dl = _multi_labels(rng, n, num_labels, 0.4)
  got = metrics.average_precision(qc, dc, ql, dl, query_block=block)
  np.testing.assert_allclose(got, _ref_average_precision(qc, dc, ql, dl),
                             rtol=1e-12, atol=1e-15)
  assert np.all((got >= 0) & (got <= 1))


def test_average_precision_tie_aware_and_skip_policy():
  # K = 1: distances 0 or 1. Query 0 relevant to items 0 and 2 only.
  query = np.array([[1], [1]])
  db = np.array([[1], [1], [-1], [-1]])  # distances 0, 0, 1, 1
  ql = np.array([[1, 0], [0, 1]])
  dl = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])  # query 1: no relevant item
  # Index order: ranks 1..4 = items 0, 1, 2, 3; hits at 1 and 3: (1 + 2/3)/2.
  np.testing.assert_allclose(metrics.average_precision(query, db, ql, dl),
                             [5 / 6, 0.0], rtol=1e-15)
  # Tie-aware: each tie group of 2 holds one relevant item, first or second
  # with probability 1/2: its precision is (1/1 + 1/2) / 2 = 3/4 in the first
  # group and (2/3 + 2/4) / 2 = 7/12 in the second; AP = (3/4 + 7/12) / 2.
  np.testing.assert_allclose(
      metrics.average_precision(query, db, ql, dl, ties='tie_aware'),
      [2 / 3, 0.0], rtol=1e-15)
  assert metrics.mean_average_precision(query, db, ql, dl) == pytest.approx(
      5 / 12)
  assert metrics.mean_average_precision(
      query, db, ql, dl, empty='skip') == pytest.approx(5 / 6)
  assert metrics.mean_average_precision(
      query, db, ql, dl, ties='tie_aware', empty='skip') == pytest.approx(2 / 3)


def test_evaluate_hamming_and_cosine_report_every_metric():
  qc, dc, ql, dl = _problem(16, 10, 120, 16)
  result = metrics.evaluate_hamming(qc, dc, ql, dl)
  assert set(result['map']) == {'index', 'tie_aware'}
  assert result['map']['index'] == pytest.approx(
      metrics.mean_average_precision(qc, dc, ql, dl), rel=1e-12)
  assert result['map_at_k']['k'] == [100]  # cutoffs above N = 120 dropped
  assert len(result['pr_radius']['radius']) == 17
  # ±1 codes as embeddings: cosine = 1 - 2 d / K, the same ranking and ties.
  cosine = metrics.evaluate_cosine(qc.astype(np.float64), dc, ql, dl)
  assert 'pr_radius' not in cosine
  for policy in ('index', 'tie_aware'):
    assert cosine['map'][policy] == pytest.approx(result['map'][policy],
                                                  rel=1e-12)
    np.testing.assert_allclose(cosine['ndcg_at_k'][policy],
                               result['ndcg_at_k'][policy], rtol=1e-12)


# ---------------------------------------------------------------------------
# cross_modal_map.
# ---------------------------------------------------------------------------


def _cross_modal_problem():
  rng = np.random.default_rng(12)
  k, num_classes = 16, 4
  class_codes = _codes(rng, num_classes, k)
  while len({tuple(c) for c in class_codes}) < num_classes:
    class_codes = _codes(rng, num_classes, k)
  qy, dy = rng.integers(0, num_classes, 25), rng.integers(0, num_classes, 90)
  eye = np.eye(num_classes, dtype=np.uint8)
  codes = {
      'image_query': class_codes[qy],  # perfect against text_db
      'text_db': class_codes[dy],
      'text_query': _codes(rng, 25, k),  # random
      'image_db': _codes(rng, 90, k),
  }
  return codes, eye[qy], eye[dy]


def test_cross_modal_map_uses_the_right_pairs():
  codes, ql, dl = _cross_modal_problem()
  result = metrics.cross_modal_map(codes, ql, dl)
  assert list(result) == list(metrics.DIRECTIONS)
  assert result['i2t'] == 1.0
  assert result['t2i'] < 0.9
  pairs = {'i2t': ('image_query', 'text_db'), 't2i': ('text_query', 'image_db'),
           'i2i': ('image_query', 'image_db'), 't2t': ('text_query', 'text_db')}
  for direction, (query_key, db_key) in pairs.items():
    expected = float(np.mean(_ref_average_precision(
        codes[query_key], codes[db_key], ql, dl)))
    assert result[direction] == pytest.approx(expected, rel=1e-12), direction
    assert math.isfinite(result[direction])


def test_cross_modal_map_subset_and_missing_keys():
  codes, ql, dl = _cross_modal_problem()
  result = metrics.cross_modal_map({'text_query': codes['text_query'],
                                    'image_db': codes['image_db']},
                                   ql, dl, directions=('t2i',))
  assert list(result) == ['t2i']
  with pytest.raises(KeyError, match='text_db'):
    metrics.cross_modal_map({'image_query': codes['image_query']}, ql, dl,
                            directions=('i2t',))
  with pytest.raises(ValueError, match='Unknown direction'):
    metrics.cross_modal_map(codes, ql, dl, directions=('x2y',))


# ---------------------------------------------------------------------------
# precision_recall_at_radius.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('seed,q,n,k,max_radius,block,empty', [
    (13, 11, 60, 8, None, 4, 'skip'),
    (13, 11, 60, 8, None, 4, 'zero'),
    (14, 7, 45, 12, 5, 256, 'zero'),
    (15, 6, 30, 20, 3, 5, 'skip'),  # long codes, small radius: empty balls
])
def test_precision_recall_at_radius_matches_reference(seed, q, n, k, max_radius,
                                                      block, empty):
  qc, dc, ql, dl = _problem(seed, q, n, k, 'multi')
  ql[0] = 0  # a query with no relevant item
  curve = metrics.precision_recall_at_radius(qc, dc, ql, dl,
                                             max_radius=max_radius,
                                             empty=empty, query_block=block)
  r_max = k if max_radius is None else max_radius
  precision, recall, num_defined = _ref_radius_curve(qc, dc, ql, dl, r_max,
                                                     empty)
  np.testing.assert_array_equal(curve.radius, np.arange(r_max + 1))
  np.testing.assert_allclose(curve.precision, precision, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(curve.recall, recall, rtol=1e-12, atol=1e-15)
  np.testing.assert_array_equal(curve.num_defined, num_defined)
  assert np.all(np.isfinite(curve.precision)) and np.all(np.isfinite(
      curve.recall))
  if max_radius is None:
    has_rel = [any(_ref_relevant(a, b) for b in dl) for a in ql]
    expected = 1.0 if empty == 'skip' else np.mean(has_rel)
    assert curve.recall[-1] == pytest.approx(expected)


def test_precision_at_radius_empty_balls_are_marked_undefined():
  query = np.ones((2, 6))
  db = -np.ones((5, 6))  # every item at distance 6
  labels = np.ones((2, 1))
  curve = metrics.precision_recall_at_radius(query, db, labels, np.ones((5, 1)))
  np.testing.assert_array_equal(curve.defined, [False] * 6 + [True])
  np.testing.assert_array_equal(curve.precision, [0.0] * 6 + [1.0])
  np.testing.assert_array_equal(curve.recall, [0.0] * 6 + [1.0])
  with pytest.raises(ValueError, match='max_radius'):
    metrics.precision_recall_at_radius(query, db, labels, np.ones((5, 1)),
                                       max_radius=7)
