"""The real MIRFLICKR-25K texts/labels and NUS-WIDE subset in ../shared/data."""
import os

import chex
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash.data import formats
from crossmodal_hash.data import pipeline
from crossmodal_hash.data import protocols
from crossmodal_hash.data import registry
from crossmodal_hash.data import user_files
from crossmodal_hash.methods import base
from crossmodal_hash.methods import ssah

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), 'shared', 'data')
MIRFLICKR = os.path.join(SHARED_DATA, 'mirflickr25k')
NUSWIDE = os.path.join(SHARED_DATA, 'nuswide10k')

pytestmark = pytest.mark.skipif(
    not os.path.isdir(SHARED_DATA),
    reason=f'real data not found at {SHARED_DATA} (../shared/data beside the '
    'repository); these tests read the real MIRFLICKR-25K and NUS-WIDE files.')


@pytest.fixture(scope='module', name='mirflickr')
def _mirflickr():
  """MIRFLICKR-25K YAll/LAll through the split-file loader (no images)."""
  config = user_files.dataset_config('mirflickr25k')
  config.update(path=MIRFLICKR, require_images=False)
  return registry.DATASETS.get('mirflickr25k')(config)


@pytest.fixture(scope='module', name='nuswide')
def _nuswide():
  """The NUS-WIDE subset: raw tags on TagList1k.txt, 21 concept labels."""
  config = user_files.dataset_config('nuswide')
  config.update(path=NUSWIDE, text_file='txt_10500.txt',
                vocab_file='TagList1k.txt', label_file='label_10500.txt',
                require_images=False)
  return registry.DATASETS.get('nuswide')(config)


def test_mirflickr_sizes_and_labels(mirflickr):
  assert formats.detect_format(MIRFLICKR) == 'split_files'
  assert mirflickr.labels.shape == (20015, 24)
  assert mirflickr.texts.shape == (20015, 1386)
  assert mirflickr.texts.dtype == mirflickr.labels.dtype == np.uint8
  assert (mirflickr.labels.sum(axis=1) > 0).all()
  assert 3.7 < mirflickr.labels.sum(axis=1).mean() < 3.9  # README: 3.78.
  assert not mirflickr.has_images


def test_mirflickr_protocol_split(mirflickr, tmp_path):
  protocols.check_protocol('mirflickr25k', mirflickr)
  config = user_files.dataset_config('mirflickr25k')
  split = protocols.split_for_run(mirflickr, config, str(tmp_path))
  assert (len(split.query), len(split.retrieval), len(split.train)) == (
      2000, 18015, 10000)
  assert len(np.union1d(split.query, split.retrieval)) == 20015
  assert os.path.exists(tmp_path / 'split.npz')


def test_nuswide_tags_to_bag_of_words(nuswide):
  assert nuswide.texts.shape == (10500, 1000)
  assert nuswide.labels.shape == (10500, 21)
  assert int((nuswide.texts.sum(axis=1) == 0).sum()) == 388
  assert (nuswide.labels.sum(axis=1) > 0).all()


def _text_side_method(tiny_config, num_labels, text_dim):
  config = tiny_config('model.image_encoder=feature_mlp')
  return ssah.SSAH(config, num_labels=num_labels, text_dim=text_dim)


def _train_data(data, rows):
  """The trainer's device data for a text-and-labels-only training set."""
  return {'image': jnp.zeros((len(rows), 4), jnp.float32),
          'text': jnp.asarray(data.texts[rows]),
          'label': jnp.asarray(data.labels[rows]),
          'image_mean': jnp.zeros(4), 'image_inv_scale': jnp.ones(4)}


def test_nuswide_empty_texts_train_without_nan(nuswide, tiny_config):
  empty = np.flatnonzero(nuswide.texts.sum(axis=1) == 0)
  rows = np.concatenate([empty[:48], np.flatnonzero(
      nuswide.texts.sum(axis=1) > 0)[:16]])  # 64 items, 48 empty texts.
  method = _text_side_method(tiny_config, 21, 1000)
  data = _train_data(nuswide, rows)
  state = jax.jit(method.init)(jax.random.PRNGKey(0), data)
  codes = jax.jit(method.encode, static_argnums=1)(
      state.params, 'txt', jnp.asarray(nuswide.texts[empty]))
  assert codes.shape == (388, 16)
  chex.assert_tree_all_finite(codes)
  batch = {k: data[k][:32] for k in ('image', 'text', 'label')}
  batch['index'] = jnp.arange(32)
  for network in ('lab', 'txt'):
    state, metrics = jax.jit(method.updates[network])(state, batch, data,
                                                      base.Step(learning_rate=jnp.float32(1e-3)))
    chex.assert_tree_all_finite((metrics, state.params, state.memory))


def test_mirflickr_text_side_trains_on_pipeline_batches(mirflickr,
                                                        tiny_config):
  rows = np.random.default_rng(0).choice(len(mirflickr), 256, replace=False)
  method = _text_side_method(tiny_config, 24, 1386)
  data = _train_data(mirflickr, rows)
  state = jax.jit(method.init)(jax.random.PRNGKey(0), data)
  loader = pipeline.train_loader(
      mirflickr, rows, global_batch_size=32, seed=0,
      shard=grain.sharding.NoSharding(), fields=('text', 'label', 'index'))
  iterator = loader.host_iterator()
  update = {n: jax.jit(method.updates[n]) for n in ('lab', 'txt')}
  losses = {'lab': [], 'txt': []}
  for network in ('lab', 'lab', 'lab', 'txt', 'txt', 'txt'):
    for _ in range(loader.batches_per_epoch):
      batch = {k: jnp.asarray(v) for k, v in next(iterator).items()}
      batch['image'] = data['image'][:32]
      state, metrics = update[network](
          state, batch, data, base.Step(learning_rate=jnp.float32(1e-3)))
      losses[network].append(float(metrics['loss']))
  chex.assert_tree_all_finite((state.params, state.memory))
  for network, values in losses.items():
    first, last = np.mean(values[:8]), np.mean(values[-8:])
    assert last < first, (network, values)
