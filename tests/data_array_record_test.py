"""Fast storage: ArrayRecord conversion (CLI) and the TFDS builder, read by grain."""
import os
import subprocess
import sys

import grain
import numpy as np
import pytest

from crossmodal_hash.data import array_record
from crossmodal_hash.data import formats
from crossmodal_hash.data import mat_files
from crossmodal_hash.data import pipeline
from crossmodal_hash.data import registry
from crossmodal_hash.data import types
from crossmodal_hash.data import user_files
from crossmodal_hash.data import validation

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SINGLE = grain.sharding.NoSharding()


def _items(n=40):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 8, 6, 3), dtype=np.uint8)
  texts = (rng.random((n, 11)) < 0.3).astype(np.uint8)
  labels = np.eye(n, 4, dtype=np.uint8)
  labels[:, 3] = 1
  return images, texts, labels


def _flickr_mat(path):
  images, texts, labels = _items()
  mat_files.save_v73(str(path), {'images': images.transpose(1, 2, 3, 0),
                                 'YAll': texts, 'LAll': labels})
  return str(path)


def _batches(data, count=5):
  loader = pipeline.train_loader(data, np.arange(5, 37), global_batch_size=8,
                                 seed=2, shard=SINGLE)
  it = loader.host_iterator()
  return [next(it) for _ in range(count)]


def test_convert_command_round_trip_read_by_the_pipeline(tmp_path):
  source = _flickr_mat(tmp_path / 'FLICKR-25K.mat')
  out = str(tmp_path / 'converted')
  result = subprocess.run(
      [sys.executable, '-m', 'crossmodal_hash.data.convert',
       f'--input={source}', f'--output={out}', '--num_shards=3'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'Wrote 40 items in 3 shards' in result.stdout
  original = formats.load(source)
  config = user_files.dataset_config('mirflickr25k')
  config.update(path=out, format='array_record')
  converted = registry.DATASETS.get('mirflickr25k')(config)
  assert isinstance(converted.images, array_record.ArrayRecordImages)
  np.testing.assert_array_equal(np.asarray(converted.images),
                                np.asarray(original.images))
  np.testing.assert_array_equal(converted.texts, original.texts)
  np.testing.assert_array_equal(converted.labels, original.labels)
  for a, b in zip(_batches(original), _batches(converted)):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize('encoding', ['png', 'jpeg'])
def test_encoded_images(tmp_path, encoding):
  _, texts, labels = _items(6)
  y, x = np.mgrid[0:16, 0:12]
  images = np.stack([np.stack([(x * 10 + i) % 256, y * 8, (x + y) * 5], -1)
                     for i in range(6)]).astype(np.uint8)  # Smooth images.
  data = types.MultiModalData(images, texts, labels)
  array_record.write(data, str(tmp_path / 'out'), image_encoding=encoding,
                     jpeg_quality=90)
  loaded = array_record.load(str(tmp_path / 'out'))
  decoded = np.asarray(loaded.images)
  if encoding == 'png':
    np.testing.assert_array_equal(decoded, images)
  else:  # Lossy, but close.
    assert decoded.shape == images.shape
    assert np.abs(decoded.astype(int) - images).mean() < 4


def test_features_and_fixed_split_survive_conversion(tmp_path):
  rng = np.random.default_rng(1)
  features = rng.normal(size=(10, 5)).astype(np.float32)
  split = types.Split(query=np.array([0, 1]), retrieval=np.arange(2, 10),
                      train=np.arange(2, 8))
  data = types.MultiModalData(features, rng.random((10, 3)).astype(np.float32),
                              np.ones((10, 2), np.uint8), split=split)
  array_record.write(data, str(tmp_path / 'out'))
  loaded = formats.load(str(tmp_path / 'out'))
  np.testing.assert_array_equal(np.asarray(loaded.images), features)
  np.testing.assert_array_equal(loaded.texts, data.texts)
  np.testing.assert_array_equal(loaded.split.train, split.train)
  with pytest.raises(FileExistsError, match='already holds a converted'):
    array_record.write(data, str(tmp_path / 'out'))


def test_unfinished_or_truncated_conversion_is_rejected(tmp_path):
  images, texts, labels = _items(12)
  out = str(tmp_path / 'out')
  array_record.write(types.MultiModalData(images, texts, labels), out,
                     num_shards=2)
  shard = os.path.join(out, 'items-00001-of-00002.array_record')
  content = open(shard, 'rb').read()
  with open(shard, 'wb') as f:
    f.write(content[:len(content) // 3])
  with pytest.raises(validation.DataFormatError, match=out):
    np.asarray(array_record.load(out).images)
  os.remove(os.path.join(out, 'metadata.json'))
  with pytest.raises(FileNotFoundError, match='did not finish'):
    array_record.load(out)


def test_tfds_builder_from_manual_dir_read_through_grain(tmp_path):
  pytest.importorskip(
      'tensorflow_datasets',
      reason='tensorflow-datasets is not installed (pip install -e .[tfds])')
  from crossmodal_hash.data import tfds_builder  # pylint: disable=g-import-not-at-top
  manual = tmp_path / 'manual'
  manual.mkdir()
  source = _flickr_mat(manual / 'FLICKR-25K.mat')
  data_dir = str(tmp_path / 'tensorflow_datasets')
  tfds_builder.build('mirflickr25k', manual_dir=str(manual), data_dir=data_dir)
  config = user_files.dataset_config('mirflickr25k')
  config.update(path=data_dir, format='tfds')
  built = registry.DATASETS.get('mirflickr25k')(config)
  assert isinstance(built.images, tfds_builder.TfdsImages)
  original = formats.load(source)
  np.testing.assert_array_equal(built.texts, original.texts)
  np.testing.assert_array_equal(built.labels, original.labels)
  for a, b in zip(_batches(original), _batches(built)):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
