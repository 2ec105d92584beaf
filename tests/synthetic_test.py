"""Tests of the synthetic multi-label image-text generator."""
import numpy as np
import pytest

from crossmodal_hash.data import synthetic
from crossmodal_hash.data import types

_PIXELS = synthetic.SyntheticConfig(image_size=32)
_FEATURES = synthetic.SyntheticConfig(feature_dim=64)


@pytest.fixture(scope='module')
def pixel_data() -> types.MultiModalData:
  """3,000 items at 32x32, shared by the statistical tests."""
  return synthetic.generate(3000, _PIXELS, seed=0)


def _mean_average_precision(query_codes: np.ndarray, db_codes: np.ndarray,
                            query_labels: np.ndarray,
                            db_labels: np.ndarray) -> float:
  """Plain mAP over the whole database ranked by Hamming distance.

  Args:
    query_codes: [Q, K] in {-1, +1}.
    db_codes: [R, K] in {-1, +1}.
    query_labels: [Q, L] in {0, 1}.
    db_labels: [R, L] in {0, 1}; relevant = shares at least one label.

  Returns:
    The mean over queries with at least one relevant item of the average
    precision (ties broken by database order).
  """
  hamming = (query_codes.shape[1] - query_codes @ db_codes.T) / 2
  relevant = (query_labels.astype(np.int64) @ db_labels.T.astype(np.int64)) > 0
  aps = []
  for q in range(len(query_codes)):
    rel = relevant[q, np.argsort(hamming[q], kind='stable')]
    if rel.any():
      ranks = np.nonzero(rel)[0] + 1
      aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
  return float(np.mean(aps))


def _sign(x: np.ndarray) -> np.ndarray:
  return np.where(x >= 0, 1.0, -1.0)


def _auc(score: np.ndarray, label: np.ndarray) -> float:
  pos, neg = score[label == 1], score[label == 0]
  return float((pos[:, None] > neg[None]).mean() +
               0.5 * (pos[:, None] == neg[None]).mean())


def _ridge(x_train, y_train, x_test, reg=1.0):
  x_train = np.c_[x_train, np.ones(len(x_train))]
  x_test = np.c_[x_test, np.ones(len(x_test))]
  w = np.linalg.solve(x_train.T @ x_train + reg * np.eye(x_train.shape[1]),
                      x_train.T @ y_train)
  return x_test @ w


def test_pixel_shapes_and_dtypes():
  config = synthetic.SyntheticConfig(num_labels=10, vocab_size=300,
                                     image_size=20)
  data = synthetic.generate(7, config, seed=1)
  assert isinstance(data, types.MultiModalData)
  assert data.has_pixels
  assert data.images.shape == (7, 20, 20, 3) and data.images.dtype == np.uint8
  assert data.texts.shape == (7, 300) and data.texts.dtype == np.uint8
  assert data.labels.shape == (7, 10) and data.labels.dtype == np.uint8
  assert set(np.unique(data.texts)) <= {0, 1}
  assert set(np.unique(data.labels)) <= {0, 1}
  assert data.images.std() > 10  # Not a blank canvas.


def test_feature_shapes_and_dtypes():
  data = synthetic.generate(9, _FEATURES, seed=1)
  assert not data.has_pixels
  assert data.images.shape == (9, 64) and data.images.dtype == np.float32
  assert np.isfinite(data.images).all() and (data.images >= 0).all()
  assert 0.1 < (data.images == 0).mean() < 0.9  # ReLU-like sparsity.
  assert data.texts.shape == (9, 1000) and data.texts.dtype == np.uint8
  assert data.labels.shape == (9, 24) and data.labels.dtype == np.uint8


@pytest.mark.parametrize('config', [_PIXELS, _FEATURES], ids=['pixels',
                                                               'features'])
def test_deterministic_in_seed(config):
  a = synthetic.generate(20, config, seed=5)
  b = synthetic.generate(20, config, seed=5)
  c = synthetic.generate(20, config, seed=6)
  for name in ('images', 'texts', 'labels'):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(getattr(a, name), getattr(c, name)), name


def test_same_labels_and_texts_in_both_variants():
  a = synthetic.generate(30, _PIXELS, seed=2)
  b = synthetic.generate(30, _FEATURES, seed=2)
  np.testing.assert_array_equal(a.labels, b.labels)
  np.testing.assert_array_equal(a.texts, b.texts)


@pytest.mark.parametrize('config', [_PIXELS, _FEATURES], ids=['pixels',
                                                               'features'])
def test_item_independent_of_num_items_and_chunking(config, monkeypatch):
  full = synthetic.generate(40, config, seed=3)
  prefix = synthetic.generate(11, config, seed=3)
  # Chunks of 7 items instead of one chunk: same rows.
  monkeypatch.setattr(synthetic, '_CHUNK_PIXELS', 7 * 1024)
  chunked = synthetic.generate(40, config, seed=3)
  for name in ('images', 'texts', 'labels'):
    np.testing.assert_array_equal(getattr(prefix, name),
                                  getattr(full, name)[:11])
    np.testing.assert_array_equal(getattr(chunked, name), getattr(full, name))


@pytest.mark.parametrize('config', [
    _PIXELS, _FEATURES, synthetic.SyntheticConfig(image_size=23)
], ids=['pixels', 'features', 'odd_size'])
def test_source_matches_generate(config):
  data = synthetic.generate(25, config, seed=4)
  source = synthetic.SyntheticSource(25, config, seed=4)
  assert len(source) == 25
  for i in range(25):
    item = source[i]
    assert set(item) == {'image', 'text', 'label'}
    np.testing.assert_array_equal(item['image'], data.images[i])
    np.testing.assert_array_equal(item['text'], data.texts[i])
    np.testing.assert_array_equal(item['label'], data.labels[i])
  np.testing.assert_array_equal(source[-1]['image'], data.images[24])
  np.testing.assert_array_equal(source[np.int64(3)]['label'], data.labels[3])
  batch = source.__getitems__([7, 2, 7])
  np.testing.assert_array_equal(batch[0]['image'], data.images[7])
  np.testing.assert_array_equal(batch[1]['image'], data.images[2])
  with pytest.raises(IndexError):
    source[25]


def test_works_at_224():
  config = synthetic.SyntheticConfig(image_size=224)
  data = synthetic.generate(3, config, seed=0)
  assert data.images.shape == (3, 224, 224, 3)
  assert data.images.dtype == np.uint8
  np.testing.assert_array_equal(
      synthetic.SyntheticSource(3, config, seed=0)[2]['image'], data.images[2])


def test_every_item_has_labels_about_three(pixel_data):
  counts = pixel_data.labels.sum(axis=1)
  assert counts.min() >= 1
  assert 2.0 <= counts.mean() <= 4.0
  assert counts.max() >= 5  # Some rich scenes.
  assert (pixel_data.labels.mean(axis=0) > 0.02).all()  # Every label is used.


def test_labels_are_correlated(pixel_data):
  y = pixel_data.labels.astype(np.float64)
  p = y.mean(axis=0)
  joint = y.T @ y / len(y)
  off = ~np.eye(len(p), dtype=bool)
  lift = joint[off] / np.outer(p, p)[off]
  # Independent labels would give lifts P(a, b) / (P(a) P(b)) near 1; topics
  # give strong co-occurrence (lift >> 1) and exclusion (lift << 1).
  assert np.percentile(lift, 95) > 2.0
  assert np.percentile(lift, 10) < 0.6
  corr = np.corrcoef(y.T)[off]
  rng = np.random.default_rng(0)
  shuffled = np.stack([rng.permutation(col) for col in y.T])
  baseline = np.corrcoef(shuffled)[off]
  assert np.abs(corr).mean() > 4 * np.abs(baseline).mean()


def test_texts_depend_on_labels_with_dropped_words(pixel_data):
  config = _PIXELS
  world = synthetic._build_world(config, 0)  # pylint: disable=protected-access
  owned = world.label_words[:, :config.words_per_label]  # [L, Wl].
  texts, labels = pixel_data.texts, pixel_data.labels.astype(bool)
  ratios, zero_share = [], []
  for l in range(config.num_labels):
    words = texts[:, owned[l]]  # [N, Wl]
    with_l, without_l = words[labels[:, l]], words[~labels[:, l]]
    ratios.append(with_l.mean() / max(without_l.mean(), 1e-4))
    # Words are dropped: far from all owned words appear...
    assert with_l.mean() < 0.5
    zero_share.append((with_l.sum(axis=1) == 0).mean())
  assert min(ratios) > 10
  # ... and some items carry no owned word of one of their labels.
  assert 0.0 < np.mean(zero_share) < 0.3
  num_words = texts.sum(axis=1)
  assert 5 < num_words.mean() < 60
  assert (num_words == 0).mean() < 0.01
  # Noise words: general words (owned by no label) appear too.
  general = np.setdiff1d(np.arange(config.vocab_size), owned.ravel())
  assert texts[:, general].sum(axis=1).mean() > 1


def test_images_depend_on_labels(pixel_data):
  n = len(pixel_data)
  y = pixel_data.labels.astype(np.float64)
  train, test = slice(0, 2000), slice(2000, None)
  # Linear probe on 8x8 average-pooled pixels: weak (objects move), but better
  # than chance.
  pooled = pixel_data.images.reshape(n, 8, 4, 8, 4, 3).mean(axis=(2, 4))
  x = pooled.reshape(n, -1) / 255.0
  pred = _ridge(x[train], y[train], x[test])
  pixel_auc = np.mean([_auc(pred[:, l], y[test, l]) for l in range(24)])
  # Linear probe on a 64-bin colour histogram (position invariant): strong.
  q = pixel_data.images.astype(np.int64) // 64
  bins = (q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).reshape(n, -1)
  hist = np.sqrt(np.stack([np.bincount(b, minlength=64) for b in bins]) /
                 bins.shape[1])
  pred = _ridge(hist[train], y[train], hist[test], reg=0.1)
  hist_auc = np.mean([_auc(pred[:, l], y[test, l]) for l in range(24)])
  print(f'label AUC of linear probes: pooled pixels {pixel_auc:.3f}, colour '
        f'histogram {hist_auc:.3f} (chance 0.5)')
  assert pixel_auc > 0.55
  assert hist_auc > 0.75


def test_learning_is_needed_for_pixels(pixel_data):
  """A random projection of raw pixels is far below a label oracle."""
  data = pixel_data.take(np.arange(1200))
  x = data.images.reshape(len(data), -1).astype(np.float64)
  x -= x.mean(axis=0)
  y = data.labels.astype(np.float64)
  rng = np.random.default_rng(0)
  random_codes = _sign(x @ rng.standard_normal((x.shape[1], 32)))
  oracle_codes = _sign((y - y.mean(axis=0)) @
                       rng.standard_normal((y.shape[1], 32)))
  chance_codes = _sign(rng.standard_normal((len(y), 32)))
  query, db = slice(0, 200), slice(200, None)
  m = lambda c: _mean_average_precision(c[query], c[db], y[query], y[db])
  random_map, oracle_map, chance_map = (m(random_codes), m(oracle_codes),
                                        m(chance_codes))
  print(f'image->image mAP@all, 32 bits: random projection {random_map:.3f}, '
        f'label oracle {oracle_map:.3f}, random codes {chance_map:.3f}')
  assert oracle_map > random_map + 0.25
  assert random_map < chance_map + 0.05


def test_learning_is_needed_for_features():
  """Random projection of features is poor; a learned (ridge) map is not."""
  config = synthetic.SyntheticConfig(feature_dim=256)
  data = synthetic.generate(2500, config, seed=0)
  x = data.images.astype(np.float64)
  y = data.labels.astype(np.float64)
  train, query, db = slice(0, 1500), slice(1500, 1700), slice(1700, None)
  x -= x[train].mean(axis=0)
  rng = np.random.default_rng(0)
  random_codes = _sign(x @ rng.standard_normal((x.shape[1], 32)))
  scores = _ridge(x[train], y[train], x)
  scores -= scores[train].mean(axis=0)
  learned_codes = _sign(scores @ rng.standard_normal((y.shape[1], 32)))
  oracle_codes = _sign((y - y.mean(axis=0)) @
                       rng.standard_normal((y.shape[1], 32)))
  m = lambda c: _mean_average_precision(c[query], c[db], y[query], y[db])
  random_map, learned_map, oracle_map = (m(random_codes), m(learned_codes),
                                         m(oracle_codes))
  print(f'feature mAP@all, 32 bits: random projection {random_map:.3f}, '
        f'ridge-learned {learned_map:.3f}, label oracle {oracle_map:.3f}')
  assert learned_map > random_map + 0.1
  assert oracle_map > random_map + 0.25


@pytest.mark.parametrize('kwargs, match', [
    (dict(image_size=8), 'image_size'),
    (dict(vocab_size=100), 'vocab_size'),
    (dict(num_labels=1), 'num_labels'),
    (dict(feature_dim=0), 'feature_dim'),
    (dict(clutter=9.0), 'clutter'),
    (dict(topic_label_prob=1.5), 'topic_label_prob'),
    (dict(labels_per_topic=30), 'labels_per_topic'),
])
def test_invalid_config(kwargs, match):
  with pytest.raises(ValueError, match=match):
    synthetic.SyntheticConfig(**kwargs)


def test_invalid_arguments():
  with pytest.raises(ValueError, match='num_items'):
    synthetic.generate(0, _PIXELS, seed=0)
  with pytest.raises(ValueError, match='seed'):
    synthetic.generate(3, _PIXELS, seed=-1)
  with pytest.raises(ValueError, match='num_items'):
    synthetic.SyntheticSource(0, _PIXELS, seed=0)


def test_minimal_config():
  config = synthetic.SyntheticConfig(num_labels=2, vocab_size=60,
                                     image_size=16, max_distractors=0,
                                     clutter=0.0, shared_words_per_label=0,
                                     num_topics=1, labels_per_topic=1,
                                     nuisance_dim=0)
  data = synthetic.generate(5, config, seed=0)
  assert data.images.shape == (5, 16, 16, 3)
  assert data.labels.sum(axis=1).min() >= 1
  features = synthetic.generate(
      5, synthetic.SyntheticConfig(**{**config.__dict__, 'feature_dim': 3}),
      seed=0)
  assert features.images.shape == (5, 3)
