"""A closed-form baseline: ridge regression of each modality onto its labels.

Every learned method should beat it. Per modality, the inputs are mapped to
RBF features over anchors drawn from the training items, and a ridge
regression maps those onto the labels projected to K dimensions by a fixed
Gaussian matrix W [L, K] (so items of one class share a target code); the
codes are the signs of the predictions. Database codes are computed by the
same functions (not learned per item), as for the deep methods here.

    phi(x) = exp(-||x - a_j||^2 / (2 sigma^2)), j = 1..num_anchors,
    sigma = mean distance of training items to the anchors,
    P = argmin ||phi(X) P - Y W||^2 + lam ||P||^2,   codes = sign(phi(x) P).

`lam` is chosen on the validation split (the mean of I->T and T->I mAP@all),
like every hyper-parameter of the deep methods.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from crossmodal_hash.data import types
from crossmodal_hash.evaluation import ranking
from crossmodal_hash.evaluation import suite

LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)


@dataclasses.dataclass(frozen=True)
class RidgeHash:
  """Fitted hash functions of one modality.

  Attributes:
    anchors: [M, D] RBF centres.
    sigma: the RBF width.
    projection: [M, K] ridge solution.
  """
  anchors: np.ndarray
  sigma: float
  projection: np.ndarray

  def codes(self, x: np.ndarray) -> np.ndarray:
    """[N, D] inputs -> [N, K] int8 codes in {-1, +1}."""
    return np.where(rbf(x, self.anchors, self.sigma) @ self.projection >= 0,
                    1, -1).astype(np.int8)


def squared_distances(x: np.ndarray, anchors: np.ndarray) -> np.ndarray:
  """[N, D], [M, D] -> [N, M] squared Euclidean distances (float64, >= 0)."""
  x = np.asarray(x, np.float64)
  sq = (np.sum(x * x, 1)[:, None] + np.sum(anchors * anchors, 1)[None] -
        2.0 * x @ anchors.T)
  return np.maximum(sq, 0.0)


def rbf(x: np.ndarray, anchors: np.ndarray, sigma: float) -> np.ndarray:
  """[N, D], [M, D] -> [N, M] Gaussian RBF features (float64)."""
  return np.exp(-squared_distances(x, anchors) / (2.0 * sigma * sigma))


def fit(x: np.ndarray, targets: np.ndarray, lam: float, *,
        num_anchors: int = 500, seed: int = 0) -> RidgeHash:
  """Ridge from RBF features of `x` [T, D] to `targets` [T, K]."""
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  rng = np.random.default_rng(seed)
  anchors = x[rng.choice(len(x), min(num_anchors, len(x)), replace=False)]
  sq = squared_distances(x, anchors)  # Once, for sigma and the features.
  sigma = float(np.sqrt(sq).mean())
  phi = np.exp(-sq / (2.0 * sigma * sigma))
  gram = phi.T @ phi + lam * np.eye(phi.shape[1])
  return RidgeHash(anchors, sigma, np.linalg.solve(gram, phi.T @ targets))


def target_codes(labels: np.ndarray, bits: int, seed: int = 0) -> np.ndarray:
  """[T, L] labels -> [T, K] real targets labels @ W, W ~ N(0, 1) [L, K]."""
  w = np.random.default_rng([seed, bits]).standard_normal(
      (labels.shape[1], bits))
  return np.asarray(labels, np.float64) @ w


def codes_for(data: types.MultiModalData, train: np.ndarray,
              query: np.ndarray, retrieval: np.ndarray, bits: int, lam: float,
              seed: int = 0) -> dict[str, np.ndarray]:
  """Codes of `query` and `retrieval` rows from functions fit on `train`.

  Returns:
    {'image_query', 'text_query' [Q, K]; 'image_db', 'text_db' [N, K]}.
  """
  targets = target_codes(data.labels[train], bits, seed)
  out = {}
  for name, inputs in (('image', data.images), ('text', data.texts)):
    inputs = np.asarray(inputs)
    model = fit(inputs[train], targets, lam, seed=seed)
    out[f'{name}_query'] = model.codes(inputs[query])
    out[f'{name}_db'] = model.codes(inputs[retrieval])
  return out


def cross_modal_map(codes: dict[str, np.ndarray], query_labels: np.ndarray,
                    db_labels: np.ndarray) -> dict[str, float]:
  """{direction: mAP@all} (index-order ties, empty queries count 0)."""
  options = ranking.EvalOptions(ties=('index',), empty='zero', top_k=(),
                                precision_at=(), ndcg_k=(),
                                radius_curve=False)
  result = suite.evaluate_set(codes, query_labels, db_labels, options=options)
  return {d: float(r['map']['index']) for d, r in result['directions'].items()}


def evaluate(data: types.MultiModalData, split: types.Split, bits: int,
             seed: int = 0, lambdas: tuple[float, ...] = LAMBDAS
            ) -> dict[str, object]:
  """The baseline on a run's split: lam chosen on validation, then tested.

  Args:
    data: the dataset.
    split: its split, with a validation set (`split.val`).
    bits: K.
    seed: anchors and W.
    lambdas: the ridge penalties tried on the validation split.

  Returns:
    {'lambda', 'validation': {lam: mAPs}, 'map': mAPs of the test queries
    against the retrieval set (of the validation split when the split has no
    test queries), 'query_set'}.
  """
  if not len(split.val):
    raise ValueError('The ridge baseline chooses its penalty on a validation '
                     'split: set config.dataset.num_val > 0.')
  labels = data.labels
  validation = {}
  for lam in lambdas:
    codes = codes_for(data, split.train, split.val, split.train, bits, lam,
                      seed)
    validation[lam] = cross_modal_map(codes, labels[split.val],
                                      labels[split.train])
  best = max(lambdas, key=lambda lam: validation[lam]['i2t'] +
             validation[lam]['t2i'])
  if len(split.query):
    codes = codes_for(data, split.train, split.query, split.retrieval, bits,
                      best, seed)
    final = cross_modal_map(codes, labels[split.query],
                            labels[split.retrieval])
    query_set = 'test'
  else:
    final, query_set = validation[best], 'validation'
  return {'lambda': best, 'validation': validation, 'map': final,
          'query_set': query_set}
