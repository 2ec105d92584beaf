"""Bad files fail with a clear error naming the file and the problem."""
import re

import numpy as np
import PIL.Image
import pytest
import scipy.io

from crossmodal_hash.data import formats
from crossmodal_hash.data import mat_files
from crossmodal_hash.data import text_files
from crossmodal_hash.data import validation

N = 10


def _arrays(n=N):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
  texts = (rng.random((n, 6)) < 0.4).astype(np.uint8)
  labels = np.eye(n, 3, dtype=np.uint8) + np.eye(n, 3, k=-3, dtype=np.uint8)
  labels[6:] = 1
  return images, texts, labels


def _dcmh(path, images=None, texts=None, labels=None, version='7.3', **extra):
  a_images, a_texts, a_labels = _arrays()
  arrays = {'images': (a_images if images is None else images).transpose(
      1, 2, 3, 0), 'YAll': a_texts if texts is None else texts,
            'LAll': a_labels if labels is None else labels, **extra}
  arrays = {k: v for k, v in arrays.items() if v is not None}
  if version == '7.3':
    mat_files.save_v73(str(path), arrays)
  else:
    scipy.io.savemat(str(path), arrays)
  return str(path)


def _raises(path, fragment, exc=validation.DataFormatError, **load_kw):
  with pytest.raises(exc) as info:
    formats.load(path, **load_kw)
  message = str(info.value)
  assert path in message, message
  assert re.search(fragment, message), message
  return message


def test_missing_key(tmp_path):
  _, texts, labels = _arrays()
  path = str(tmp_path / 'FLICKR-25K.mat')
  mat_files.save_v73(path, {'YAll': texts, 'LAll': labels})
  _raises(path, r'missing key for the images \(looked for images, IAll')


def test_inconsistent_item_counts(tmp_path):
  _, texts, _ = _arrays()
  path = _dcmh(tmp_path / 'a.mat', texts=texts[:7])
  _raises(path, 'inconsistent item counts')


def test_non_binary_labels(tmp_path):
  _, _, labels = _arrays()
  labels = labels.astype(np.float64)
  labels[4, 1] = 0.5
  path = _dcmh(tmp_path / 'a.mat', labels=labels, version='5')
  _raises(path, r'labels \(multi-hot\) must be 0 or 1; row 4 holds 0.5')


def test_all_zero_label_row(tmp_path):
  _, _, labels = _arrays()
  labels[3] = 0
  path = _dcmh(tmp_path / 'a.mat', labels=labels)
  _raises(path, r'1 items have no label \(all-zero label rows 3\).*'
          'drop_unlabeled=True')


def test_nan_features(tmp_path):
  _, texts, labels = _arrays()
  features = np.ones((N, 5), np.float32)
  features[8, 2] = np.nan
  path = str(tmp_path / 'features.npz')
  np.savez(path, image=features, text=texts, label=labels)
  _raises(path, r'features.npz:image: row 8 holds nan at column 2 ')


def test_inf_text_features(tmp_path):
  _, texts, labels = _arrays()
  texts = texts.astype(np.float32)
  texts[2, 0] = np.inf
  path = str(tmp_path / 'features.npz')
  np.savez(path, image=np.ones((N, 5), np.float32), text=texts, label=labels)
  _raises(path, r'features.npz:text: row 2 holds inf at column 0 ')


def _wikipedia(path, **changes):
  rng = np.random.default_rng(0)
  arrays = {'I_tr': rng.random((20, 6), np.float32),
            'T_tr': rng.random((20, 4), np.float32),
            'L_tr': np.arange(20) % 3 + 1,
            'I_te': rng.random((8, 6), np.float32),
            'T_te': rng.random((8, 4), np.float32),
            'L_te': np.arange(8) % 3 + 1}
  for name, (row, column, value) in changes.items():
    arrays[name][row, column] = value
  np.savez(path, **arrays)
  return str(path)


@pytest.mark.parametrize('name,row,column,value', [
    ('I_tr', 17, 5, np.nan), ('T_tr', 3, 0, np.nan), ('I_te', 5, 2, np.inf)])
def test_wikipedia_error_names_the_array_and_its_row(tmp_path, name, row,
                                                     column, value):
  """Rows of I_te are counted in I_te, not in train and test joined."""
  path = _wikipedia(tmp_path / 'wiki.npz', **{name: (row, column, value)})
  _raises(path, rf'wiki.npz:{name}: row {row} holds {value} at column '
          rf'{column} ')


def test_empty_texts_are_legal(tmp_path):
  _, texts, _ = _arrays()
  texts[:] = 0
  data = formats.load(_dcmh(tmp_path / 'a.mat', texts=texts))
  assert data.texts.sum() == 0 and np.isfinite(data.texts).all()


@pytest.mark.parametrize('version', ['7.3', '5'])
def test_truncated_mat(tmp_path, version):
  path = _dcmh(tmp_path / 'a.mat', version=version)
  content = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(content[:len(content) // 2])
  _raises(path, 'truncated or corrupt')


def test_not_a_mat_file(tmp_path):
  path = str(tmp_path / 'a.mat')
  with open(path, 'wb') as f:
    f.write(b'<html>not found</html>')
  _raises(path, r'not a MATLAB \.mat file')


def test_truncated_npz(tmp_path):
  _, texts, labels = _arrays()
  path = str(tmp_path / 'f.npz')
  np.savez(path, image=np.ones((N, 5), np.float32), text=texts, label=labels)
  content = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(content[:len(content) // 2])
  _raises(path, 'truncated or corrupt')


def test_corrupt_image_file(tmp_path):
  images, texts, labels = _arrays(3)
  for i in range(3):
    PIL.Image.fromarray(images[i]).save(tmp_path / f'{i}.png')
  with open(tmp_path / '1.png', 'r+b') as f:
    f.truncate(40)
  (tmp_path / 'list.txt').write_text('0.png\n1.png\n2.png\n')
  np.save(tmp_path / 't.npy', texts)
  np.save(tmp_path / 'l.npy', labels)
  data = formats.load(str(tmp_path), options=formats.Options(
      image_list='list.txt', text_file='t.npy', label_file='l.npy',
      image_size=4))
  data.images[0]  # pylint: disable=pointless-statement
  with pytest.raises(validation.DataFormatError,
                     match=r'1.png: cannot decode the image'):
    data.images[1]  # pylint: disable=pointless-statement


def test_missing_listed_image(tmp_path):
  (tmp_path / 'list.txt').write_text('a.jpg\n')
  np.save(tmp_path / 't.npy', np.zeros((1, 2)))
  np.save(tmp_path / 'l.npy', np.ones((1, 2)))
  path = str(tmp_path / 'list.txt')
  with pytest.raises(FileNotFoundError, match=re.escape(path) +
                     '.*1 of 1 listed images do not exist'):
    formats.load(str(tmp_path), options=formats.Options(
        image_list='list.txt', text_file='t.npy', label_file='l.npy'))


def test_split_index_out_of_range(tmp_path):
  _, texts, labels = _arrays()
  path = str(tmp_path / 'f.npz')
  np.savez(path, image=np.ones((N, 5), np.float32), text=texts, label=labels,
           query_index=[0, N], retrieval_index=[1, 2])
  _raises(path, f'split index {N} is out of range')


def test_pixels_must_be_uint8(tmp_path):
  images, _, _ = _arrays()
  path = _dcmh(tmp_path / 'a.mat', images=images.astype(np.float64))
  _raises(path, 'pixel arrays must be uint8')


def test_duplicate_vocabulary_entry(tmp_path):
  (tmp_path / 'vocab.txt').write_text('sky\nsea\nsky\n')
  (tmp_path / 'tags.txt').write_text('sky\n')
  with pytest.raises(validation.DataFormatError,
                     match=r"vocab.txt: tag 'sky' appears twice"):
    text_files.tags_to_bag_of_words(str(tmp_path / 'tags.txt'),
                                    str(tmp_path / 'vocab.txt'))


def test_ragged_text_matrix(tmp_path):
  (tmp_path / 'labels.txt').write_text('0 1\n1\n')
  with pytest.raises(validation.DataFormatError, match='labels.txt: not a '
                     'numeric matrix'):
    text_files.read_matrix(str(tmp_path / 'labels.txt'))


def test_unknown_layout(tmp_path):
  path = str(tmp_path / 'x.npz')
  np.savez(path, foo=np.zeros(3))
  _raises(path, 'cannot tell the layout from its keys')
