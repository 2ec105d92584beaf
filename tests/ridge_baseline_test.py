"""The ridge-regression baseline: its pieces, and that it finds real structure."""
import numpy as np
import pytest

from crossmodal_hash.data import splits
from crossmodal_hash.data import types
from crossmodal_hash.evaluation import ridge_baseline


def _data(n=400, classes=4, seed=0):
  """Two noisy views of a class: image [n, 6] and text [n, 5] features."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n)
  images = rng.normal(size=(classes, 6))[y] + 0.8 * rng.normal(size=(n, 6))
  texts = rng.normal(size=(classes, 5))[y] + 0.8 * rng.normal(size=(n, 5))
  labels = np.eye(classes, dtype=np.uint8)[y]
  return types.MultiModalData(images.astype(np.float32),
                              texts.astype(np.float32), labels)


def test_rbf_matches_the_definition():
  rng = np.random.default_rng(0)
  x, anchors = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
  expected = np.exp(-((x[:, None] - anchors[None])**2).sum(-1) / (2 * 0.7**2))
  np.testing.assert_allclose(ridge_baseline.rbf(x, anchors, 0.7), expected,
                             rtol=1e-12)


def test_fit_solves_the_ridge_normal_equations():
  rng = np.random.default_rng(1)
  x, targets = rng.normal(size=(30, 3)), rng.normal(size=(30, 2))
  model = ridge_baseline.fit(x, targets, 0.1, num_anchors=10)
  phi = ridge_baseline.rbf(x, model.anchors, model.sigma)
  grad = phi.T @ (phi @ model.projection - targets) + 0.1 * model.projection
  np.testing.assert_allclose(grad, 0.0, atol=1e-9)
  codes = model.codes(x)
  assert codes.shape == (30, 2) and codes.dtype == np.int8
  assert set(np.unique(codes)) <= {-1, 1}


def test_baseline_beats_random_codes_and_chooses_lambda_on_validation():
  data = _data()
  split = splits.carve_validation(splits.random_split(400, 100, 300, 0), 60, 0)
  result = ridge_baseline.evaluate(data, split, bits=16)
  assert result['query_set'] == 'test'
  assert result['lambda'] in ridge_baseline.LAMBDAS
  assert set(result['validation']) == set(ridge_baseline.LAMBDAS)
  # Four balanced classes: random codes score about 0.25.
  assert result['map']['i2t'] > 0.6 and result['map']['t2i'] > 0.6


def test_baseline_needs_a_validation_split():
  data = _data()
  with pytest.raises(ValueError, match='num_val'):
    ridge_baseline.evaluate(data, splits.random_split(400, 100, 300, 0), 16)
