"""The grain pipeline: shuffle, sharding, padding, workers, global arrays, state."""
import json

import grain
import jax
import ml_collections
import numpy as np
import pytest

from crossmodal_hash import sharding
from crossmodal_hash.data import formats
from crossmodal_hash.data import mat_files
from crossmodal_hash.data import pipeline
from crossmodal_hash.data import types

SINGLE = grain.sharding.NoSharding()


def _data(n=120, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 4, 3, 3), dtype=np.uint8)
  images[:, 0, 0, 0] = np.arange(n) % 256  # Identifies the item.
  texts = (rng.random((n, 7)) < 0.3).astype(np.uint8)
  labels = np.eye(n, 5, dtype=np.uint8)
  labels[:, 0] = 1
  return types.MultiModalData(images, texts, labels)


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _equal(a, b):
  return a.keys() == b.keys() and all(
      np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def test_each_epoch_is_a_fresh_permutation_without_remainder():
  data, indices = _data(), np.arange(3, 103)  # 100 training items.
  loader = pipeline.train_loader(data, indices, global_batch_size=16, seed=7,
                                 shard=SINGLE)
  assert loader.batches_per_epoch == 6  # 96 items; 4 dropped per epoch.
  batches = _take(loader.host_iterator(), 12)
  epochs = [np.concatenate([b['index'] for b in batches[e * 6:(e + 1) * 6]])
            for e in range(2)]
  for positions in epochs:
    assert len(np.unique(positions)) == 96 and positions.max() < 100
  assert not np.array_equal(epochs[0], epochs[1])
  first = batches[0]
  assert first['image'].shape == (16, 4, 3, 3) and first['index'].dtype == (
      np.int64)
  rows = indices[first['index']]
  np.testing.assert_array_equal(first['image'], data.images[rows])
  np.testing.assert_array_equal(first['text'], data.texts[rows])
  np.testing.assert_array_equal(first['label'], data.labels[rows])
  again = _take(pipeline.train_loader(data, indices, global_batch_size=16,
                                      seed=7, shard=SINGLE).host_iterator(), 1)
  assert _equal(again[0], first)
  other = _take(pipeline.train_loader(data, indices, global_batch_size=16,
                                      seed=8, shard=SINGLE).host_iterator(), 1)
  assert not np.array_equal(other[0]['index'], first['index'])


def test_process_blocks_concatenate_to_the_global_batch():
  data = _data()
  single = _take(pipeline.train_loader(
      data, None, global_batch_size=16, seed=1, shard=SINGLE).host_iterator(),
                 9)
  parts = [_take(pipeline.train_loader(
      data, None, global_batch_size=16, seed=1,
      shard=grain.sharding.ShardOptions(p, 4)).host_iterator(), 9)
           for p in range(4)]
  for b in range(9):
    for key in single[b]:
      np.testing.assert_array_equal(
          np.concatenate([parts[p][b][key] for p in range(4)]),
          single[b][key])


def test_eval_batches_pad_and_mask_so_nothing_is_dropped():
  data, indices = _data(), np.arange(50, 120, 2)  # 35 items.
  loader = pipeline.eval_loader(data, indices, global_batch_size=16,
                                shard=SINGLE)
  batches = list(loader.host_iterator())
  assert [int(b['mask'].sum()) for b in batches] == [16, 16, 3]
  index = np.concatenate([b['index'][b['mask']] for b in batches])
  np.testing.assert_array_equal(index, np.arange(35))
  np.testing.assert_array_equal(batches[-1]['image'][3:], 0)
  np.testing.assert_array_equal(batches[1]['label'],
                                data.labels[indices[16:32]])


@pytest.mark.parametrize('kind', ['host', 'global'])
def test_resumed_iterator_yields_the_uninterrupted_batches(kind):
  data = _data()
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1,
                                                       'model': 1}))

  def make():
    loader = pipeline.train_loader(data, np.arange(110), global_batch_size=16,
                                   seed=3, shard=SINGLE)
    return (loader.host_iterator() if kind == 'host' else
            loader.global_iterator(mesh))

  uninterrupted = _take(make(), 15)
  first = make()
  _take(first, 8)  # Into the second epoch; the global one prefetches ahead.
  state = json.loads(json.dumps(first.get_state()))
  assert state['next_batch'] == 8
  first.close()
  resumed = make()
  resumed.set_state(state)
  for expected, got in zip(uninterrupted[8:], _take(resumed, 7)):
    assert _equal(expected, got)


def test_state_of_another_pipeline_is_rejected():
  data = _data()
  it = pipeline.train_loader(data, None, global_batch_size=16, seed=3,
                             shard=SINGLE).host_iterator()
  state = it.get_state()
  other = pipeline.train_loader(data, None, global_batch_size=32, seed=3,
                                shard=SINGLE).host_iterator()
  with pytest.raises(ValueError, match='global_batch_size: saved 16, now 32'):
    other.set_state(state)


def test_global_batches_are_sharded_over_the_data_axis():
  data = _data()
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1,
                                                       'model': 1}))
  loader = pipeline.eval_loader(data, None, global_batch_size=32,
                                shard=SINGLE)
  host = list(loader.host_iterator())
  batches = list(loader.global_iterator(mesh))
  assert len(batches) == len(host) == 4
  for h, g in zip(host, batches):
    for key in h:
      assert isinstance(g[key], jax.Array)
      assert g[key].sharding.is_equivalent_to(sharding.batch_sharded(mesh),
                                              g[key].ndim)
      np.testing.assert_array_equal(np.asarray(g[key]), h[key])
  assert len(jax.devices()) == 8
  assert len(batches[0]['image'].addressable_shards) == 8


def test_worker_processes_read_lazy_hdf5_images_identically(tmp_path):
  data = _data(64)
  path = str(tmp_path / 'FLICKR-25K.mat')
  mat_files.save_v73(path, {'images': data.images.transpose(1, 2, 3, 0),
                            'YAll': data.texts, 'LAll': data.labels})
  lazy_data = formats.load(path)

  def loader(d, workers):
    return pipeline.train_loader(
        d, np.arange(60), global_batch_size=8, seed=5, shard=SINGLE,
        options=pipeline.Options(worker_count=workers))

  in_process = _take(loader(data, 0).host_iterator(), 10)
  it = loader(lazy_data, 2).host_iterator()
  with_workers = _take(it, 6)
  state = it.get_state()
  it.close()
  resumed = loader(lazy_data, 0).host_iterator()  # Resumes without workers.
  resumed.set_state(state)
  with_workers += _take(resumed, 4)
  for a, b in zip(in_process, with_workers):
    assert _equal(a, b)
  del with_workers


def test_transform_runs_on_each_host_batch():
  data = _data()
  loader = pipeline.eval_loader(
      data, None, global_batch_size=40, shard=SINGLE, fields=('label',),
      transform=_double_labels)
  batch = next(loader.host_iterator())
  assert set(batch) == {'label', 'mask'}
  np.testing.assert_array_equal(batch['label'], 2 * data.labels[:40])


def _double_labels(batch):
  return dict(batch, label=batch['label'] * 2)
