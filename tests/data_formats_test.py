"""Each documented layout, written by the test exactly as users hold it, loads."""
import os

import h5py
import ml_collections
import numpy as np
import PIL.Image
import pytest
import scipy.io

from crossmodal_hash.data import formats
from crossmodal_hash.data import lazy
from crossmodal_hash.data import mat_files
from crossmodal_hash.data import registry
from crossmodal_hash.data import text_files
from crossmodal_hash.data import user_files

N, H, W, V, L = 12, 6, 5, 9, 4  # H != W catches swapped spatial axes.


def _items(n=N, seed=0):
  """images [n, H, W, 3] uint8, texts [n, V] binary (row 1 empty), labels."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
  texts = (rng.random((n, V)) < 0.3).astype(np.uint8)
  texts[1] = 0  # An empty text is legal.
  labels = (rng.random((n, L)) < 0.4).astype(np.uint8)
  labels[np.arange(n), np.arange(n) % L] = 1  # Every item has a label.
  return images, texts, labels


def _check(data, images, texts, labels):
  assert len(data) == len(labels)
  np.testing.assert_array_equal(np.asarray(data.images), images)
  np.testing.assert_array_equal(data.texts, texts)
  np.testing.assert_array_equal(data.labels, labels)
  assert data.texts.dtype == np.uint8 and data.labels.dtype == np.uint8


# MATLAB-view layouts of the image array and how to get it from [N, H, W, 3].
_LAYOUTS = {
    'HxWx3xN (DCMH release)': (1, 2, 3, 0),
    'NxHxWx3': (0, 1, 2, 3),
    'Nx3xHxW': (0, 3, 1, 2),
    '3xHxWxN': (3, 1, 2, 0),
}


@pytest.mark.parametrize('layout', sorted(_LAYOUTS))
def test_dcmh_v73_mat_every_image_layout_lazily(tmp_path, layout):
  images, texts, labels = _items()
  path = str(tmp_path / 'FLICKR-25K.mat')
  mat_files.save_v73(path, {
      'images': images.transpose(_LAYOUTS[layout]), 'YAll': texts,
      'LAll': labels})
  data = formats.load(path)
  assert lazy.is_lazy(data.images) and data.images.shape == (N, H, W, 3)
  np.testing.assert_array_equal(data.images[[7, 2, 7]], images[[7, 2, 7]])
  np.testing.assert_array_equal(data.images[3], images[3])
  _check(data, images, texts, labels)


def test_dcmh_release_hdf5_axes_are_matlab_reversed(tmp_path):
  """The DCMH release, opened with plain h5py, shows images as (N, 3, W, H)
  (MATLAB's 224x224x3xN reversed) and LAll as (L, N); the loader undoes it."""
  images, texts, labels = _items()
  path = str(tmp_path / 'FLICKR-25K.mat')
  with h5py.File(path, 'w', userblock_size=512) as f:
    f['images'] = images.transpose(0, 3, 2, 1)  # (N, 3, W, H)
    f['YAll'] = texts.T.astype(np.float64)  # MATLAB doubles.
    f['LAll'] = labels.T.astype(np.float64)
  with open(path, 'r+b') as f:
    f.write(b'MATLAB 7.3 MAT-file, Platform: GLNXA64'.ljust(128, b' '))
  data = formats.load(path)
  _check(data, images, texts, labels)


def test_dcmh_images_are_read_by_rows_not_whole(tmp_path, monkeypatch):
  images, texts, labels = _items()
  path = str(tmp_path / 'FLICKR-25K.mat')
  mat_files.save_v73(path, {'images': images.transpose(1, 2, 3, 0),
                            'YAll': texts, 'LAll': labels})
  data = formats.load(path)
  selections = []
  original = h5py.Dataset.__getitem__

  def spy(self, key):
    selections.append(key)
    return original(self, key)

  monkeypatch.setattr(h5py.Dataset, '__getitem__', spy)
  np.testing.assert_array_equal(data.images[[4, 9]], images[[4, 9]])
  assert selections and all(key[0] == [4, 9] for key in selections)


def test_dcmh_v5_mat(tmp_path):
  images, texts, labels = _items()
  path = str(tmp_path / 'NUS-WIDE.mat')
  scipy.io.savemat(path, {'IAll': images.transpose(1, 2, 3, 0), 'YAll': texts,
                          'LAll': labels})
  _check(formats.load(path), images, texts, labels)


@pytest.mark.parametrize('name', ['mirflickr25k', 'nuswide', 'mscoco',
                                  'iaprtc12'])
def test_registered_datasets_read_the_three_array_layout(tmp_path, name):
  images, texts, labels = _items()
  path = str(tmp_path / f'{name}.mat')
  mat_files.save_v73(path, {'images': images.transpose(1, 2, 3, 0),
                            'YAll': texts, 'LAll': labels})
  config = user_files.dataset_config(name)
  config.path = path
  _check(registry.DATASETS.get(name)(config), images, texts, labels)


def test_dcmh_features_instead_of_pixels(tmp_path):
  _, texts, labels = _items()
  features = np.random.default_rng(1).normal(size=(N, 7)).astype(np.float32)
  path = str(tmp_path / 'features.mat')
  mat_files.save_v73(path, {'IAll': features.T, 'YAll': texts.T,
                            'LAll': labels})
  data = formats.load(path, 'dcmh_mat')
  _check(data, features, texts, labels)
  assert not data.has_pixels


def _write_split_files(directory, images, texts, labels, subfolders=False):
  def place(kind):
    folder = directory / (kind[0].upper() + 'All') if subfolders else directory
    folder.mkdir(exist_ok=True)
    return str(folder / f'mirflickr25k-{kind}.mat')

  mat_files.save_v73(place('iall'), {'IAll': images.transpose(1, 2, 3, 0)})
  scipy.io.savemat(place('yall'), {'YAll': texts})
  scipy.io.savemat(place('lall'), {'LAll': labels})


@pytest.mark.parametrize('subfolders', [False, True])
def test_split_files(tmp_path, subfolders):
  images, texts, labels = _items()
  _write_split_files(tmp_path, images, texts, labels, subfolders)
  data = formats.load(str(tmp_path))
  assert lazy.is_lazy(data.images)
  _check(data, images, texts, labels)


def test_split_files_text_and_labels_only(tmp_path):
  _, texts, labels = _items()
  scipy.io.savemat(str(tmp_path / 'mirflickr25k-yall.mat'), {'YAll': texts})
  scipy.io.savemat(str(tmp_path / 'mirflickr25k-lall.mat'), {'LAll': labels})
  with pytest.raises(FileNotFoundError, match='mirflickr25k-iall.mat.*'
                     'require_images=False'):
    formats.load(str(tmp_path))
  data = formats.load(str(tmp_path),
                      options=formats.Options(require_images=False))
  assert data.images.shape == (N, 0) and not data.has_images
  np.testing.assert_array_equal(data.texts, texts)


def test_image_folder_with_image_list(tmp_path):
  images, texts, labels = _items()
  (tmp_path / 'images').mkdir()
  names = []
  for i, image in enumerate(images):
    name = f'images/im{i}.' + ('png' if i % 2 else 'jpg')
    PIL.Image.fromarray(image).save(tmp_path / name, quality=95)
    names.append(name)
  (tmp_path / 'image_list.txt').write_text('\n'.join(names) + '\n')
  np.savetxt(tmp_path / 'labels.txt', labels, fmt='%d')
  np.save(tmp_path / 'texts.npy', texts)
  options = formats.Options(image_list='image_list.txt', text_file='texts.npy',
                            label_file='labels.txt', image_size=H)
  data = formats.load(str(tmp_path), options=options)
  assert lazy.is_lazy(data.images) and data.images.shape == (N, H, H, 3)
  np.testing.assert_array_equal(data.texts, texts)
  np.testing.assert_array_equal(data.labels, labels)
  png = PIL.Image.fromarray(images[1]).resize((H, H), PIL.Image.BILINEAR)
  np.testing.assert_array_equal(data.images[1], np.asarray(png))
  jpeg = np.asarray(PIL.Image.open(tmp_path / 'images/im0.jpg').resize(
      (H, H), PIL.Image.BILINEAR))
  np.testing.assert_array_equal(data.images[0], jpeg)


def test_features_npz_with_split_and_class_indices(tmp_path):
  _, texts, _ = _items()
  features = np.random.default_rng(2).normal(size=(N, 7)).astype(np.float32)
  classes = np.arange(N) % 3
  path = str(tmp_path / 'features.npz')
  np.savez(path, image=features, text=texts, label=classes,
           query_index=np.array([0, 5]), retrieval_index=np.arange(6, N),
           train_index=np.array([6, 7, 8]))
  data = formats.load(path)
  np.testing.assert_array_equal(data.images, features)
  np.testing.assert_array_equal(data.labels, np.eye(3, dtype=np.uint8)[classes])
  np.testing.assert_array_equal(data.split.query, [0, 5])
  np.testing.assert_array_equal(data.split.train, [6, 7, 8])


def test_features_mat_with_one_based_split(tmp_path):
  _, texts, labels = _items()
  features = np.random.default_rng(3).normal(size=(N, 7))
  path = str(tmp_path / 'features.mat')
  scipy.io.savemat(path, {'image': features, 'text': texts, 'label': labels,
                          'query_index': [1, 2], 'retrieval_index': np.arange(
                              3, N + 1)})
  data = formats.load(path)
  np.testing.assert_allclose(data.images, features.astype(np.float32))
  np.testing.assert_array_equal(data.split.query, [0, 1])
  np.testing.assert_array_equal(data.split.retrieval, np.arange(2, N))
  np.testing.assert_array_equal(data.split.train, data.split.retrieval)


@pytest.mark.parametrize('one_hot', [False, True])
def test_wikipedia_layout(tmp_path, one_hot):
  rng = np.random.default_rng(4)
  n_tr, n_te, classes = 9, 4, 3
  parts = {}
  for part, n in (('tr', n_tr), ('te', n_te)):
    parts[f'I_{part}'] = rng.normal(size=(n, 8))
    parts[f'T_{part}'] = rng.random((n, 5))  # LDA-like text features.
    cls = rng.integers(1, classes + 1, n)
    cls[:classes] = np.arange(1, classes + 1)
    parts[f'L_{part}'] = (np.eye(classes)[cls - 1] if one_hot else
                          cls[:, None])  # 1-based column vector (MATLAB).
  path = str(tmp_path / ('wiki.mat' if one_hot else 'wiki.npz'))
  if one_hot:
    scipy.io.savemat(path, parts)
  else:
    np.savez(path, **parts)
  data = formats.load(path)
  assert len(data) == n_tr + n_te and data.num_labels == classes
  np.testing.assert_array_equal(data.split.query, np.arange(n_tr, n_tr + n_te))
  np.testing.assert_array_equal(data.split.retrieval, np.arange(n_tr))
  np.testing.assert_array_equal(data.split.train, np.arange(n_tr))
  assert data.texts.dtype == np.float32 and data.labels.sum(1).tolist() == [
      1] * (n_tr + n_te)
  np.testing.assert_allclose(data.images[n_tr:],
                             parts['I_te'].astype(np.float32))


def test_tags_with_vocabulary_to_bag_of_words(tmp_path):
  (tmp_path / 'vocab.txt').write_text('sky\nwater\nDog\n')
  (tmp_path / 'tags.txt').write_text('sky dog cat\nnothing known\n\nWATER\n')
  bow = text_files.tags_to_bag_of_words(str(tmp_path / 'tags.txt'),
                                        str(tmp_path / 'vocab.txt'))
  np.testing.assert_array_equal(bow, [[1, 0, 1], [0, 0, 0], [0, 0, 0],
                                      [0, 1, 0]])


def test_files_layout_with_tags_from_config(tmp_path):
  (tmp_path / 'TagList1k.txt').write_text('a\nb\nc\n')
  (tmp_path / 'txt.txt').write_text('a b\nzzz\nc\n')
  (tmp_path / 'label.txt').write_text('1 0\n0 1\n1 1\n')
  config = user_files.dataset_config('custom')
  config.update(path=str(tmp_path), text_file='txt.txt',
                vocab_file='TagList1k.txt', label_file='label.txt',
                require_images=False)
  data = registry.DATASETS.get('custom')(config)
  np.testing.assert_array_equal(data.texts, [[1, 1, 0], [0, 0, 0], [0, 0, 1]])
  assert data.images.shape == (3, 0)


def test_drop_unlabeled_is_a_documented_choice(tmp_path):
  images, texts, labels = _items()
  labels[[2, 5]] = 0
  path = str(tmp_path / 'x.mat')
  scipy.io.savemat(path, {'images': images.transpose(1, 2, 3, 0),
                          'YAll': texts, 'LAll': labels})
  data = formats.load(path, options=formats.Options(drop_unlabeled=True))
  keep = [i for i in range(N) if i not in (2, 5)]
  _check(data, images[keep], texts[keep], labels[keep])


def test_config_path_must_be_set():
  config = ml_collections.ConfigDict(user_files.dataset_config('mirflickr25k'))
  with pytest.raises(FileNotFoundError, match='config.dataset.path is empty'):
    registry.DATASETS.get('mirflickr25k')(config)
  config.path = os.path.join('/nonexistent', 'FLICKR-25K.mat')
  with pytest.raises(FileNotFoundError, match='FLICKR-25K.mat: no such file'):
    registry.DATASETS.get('mirflickr25k')(config)
