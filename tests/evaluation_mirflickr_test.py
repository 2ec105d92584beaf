"""Metrics on the real MIRFLICKR-25K labels, against a reference in the test.

Seeded random 64-bit (and 16-bit: heavier ties) codes, the usual split of
2,000 queries and 18,015 retrieval items, relevance = at least one shared
label. Skipped when ../shared/data/mirflickr25k is absent.
"""
import os

import numpy as np
import pytest

from conftest import SHARED_DATA
from crossmodal_hash.evaluation import ranking
from crossmodal_hash.evaluation import summary

_LABELS = os.path.join(SHARED_DATA, 'mirflickr25k', 'mirflickr25k-lall.mat')
_NUM_QUERY, _NUM_DB = 2000, 18015


@pytest.fixture(name='split', scope='module')
def _split():
  if not os.path.exists(_LABELS):
    pytest.skip(f'MIRFLICKR-25K labels not found at {_LABELS} (expected '
                'in ../shared/data/mirflickr25k beside the repository).')
  scipy_io = pytest.importorskip(
      'scipy.io', reason='scipy reads the MIRFLICKR-25K .mat labels')
  labels = scipy_io.loadmat(_LABELS)['LAll']
  assert labels.shape == (20015, 24)
  perm = np.random.default_rng(2024).permutation(len(labels))
  return labels[perm[:_NUM_QUERY]], labels[perm[_NUM_QUERY:]]


def _reference(query_codes, db_codes, query_labels, db_labels, k, n):
  """DCMH's calc_map / calc_map_k written plainly, with a stable argsort.

  Returns per-query (AP@all, AP@K DCMH, P@N) as float64 arrays.
  """
  qb = query_codes.astype(np.float64)
  rb = db_codes.astype(np.float64)
  ql = query_labels.astype(np.float64)
  rl = db_labels.astype(np.float64)
  bits = qb.shape[1]
  ap, ap_k, p_n = (np.zeros(len(qb)) for _ in range(3))
  for start in range(0, len(qb), 250):
    hamm = 0.5 * (bits - qb[start:start + 250] @ rb.T)
    gnd_all = (ql[start:start + 250] @ rl.T) > 0
    for row in range(len(hamm)):
      i = start + row
      gnd = gnd_all[row][np.argsort(hamm[row], kind='stable')]
      tsum = int(gnd.sum())
      p_n[i] = gnd[:n].sum() / n
      if tsum == 0:
        continue
      tindex = np.flatnonzero(gnd) + 1.0  # ranks of the relevant items
      count = np.arange(1, tsum + 1)
      ap[i] = np.mean(count / tindex)
      m = min(k, tsum)
      ap_k[i] = np.mean(count[:m] / tindex[:m])
  return ap, ap_k, p_n


@pytest.mark.parametrize('bits', [64, 16])
def test_map_on_real_labels_equals_reference(split, bits):
  query_labels, db_labels = split
  rng = np.random.default_rng(bits)
  qc = np.where(rng.random((_NUM_QUERY, bits)) < 0.5, -1, 1).astype(np.int8)
  dc = np.where(rng.random((_NUM_DB, bits)) < 0.5, -1, 1).astype(np.int8)
  options = ranking.EvalOptions(top_k=(500,), precision_at=(1000,),
                                ndcg_k=(), radius_curve=False)
  qm = ranking.hamming_query_metrics(qc, dc, query_labels, db_labels, options)
  ap, ap_k, p_n = _reference(qc, dc, query_labels, db_labels, 500, 1000)
  np.testing.assert_allclose(qm.ap['index'], ap, rtol=1e-11, atol=1e-14)
  np.testing.assert_allclose(qm.ap_at_k_dcmh[:, 0], ap_k, rtol=1e-11,
                             atol=1e-14)
  np.testing.assert_allclose(qm.precision_at_n['index'][:, 0], p_n, rtol=1e-12)
  means = summary.summarize(qm, 'zero')
  assert means['map']['index'] == pytest.approx(ap.mean(), rel=1e-12)
  assert means['num_without_relevant'] == int((ap == 0).sum())
  # Random codes on MIRFLICKR: mAP near the share of relevant pairs.
  share = ((query_labels @ db_labels.T) > 0).mean()
  assert abs(means['map']['index'] - share) < 0.02
  # Tie-aware AP of a few queries, as the expected precision at each
  # position of each tie group (a position-by-position sum).
  for i in range(0, _NUM_QUERY, 400):
    dist = (qc[i] != dc).sum(axis=1)
    rel = ((query_labels[i] != 0) & (db_labels != 0)).any(axis=1)
    total, before, hits_before = 0.0, 0, 0
    for v in range(bits + 1):
      n = int((dist == v).sum())
      r = int(((dist == v) & rel).sum())
      if n == 0:
        continue
      p = np.arange(1, n + 1)
      slope = (r - 1) / (n - 1) if n > 1 else 0.0
      total += (r / n * (hits_before + 1 + (p - 1) * slope) /
                (before + p)).sum()
      before, hits_before = before + n, hits_before + r
    assert qm.ap['tie_aware'][i] == pytest.approx(total / rel.sum(),
                                                  rel=1e-11)
