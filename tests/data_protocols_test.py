"""Protocol splits: sizes, seeds, fixed splits, saved with a checksum, reused."""
import numpy as np
import pytest

from crossmodal_hash.data import protocols
from crossmodal_hash.data import splits
from crossmodal_hash.data import types
from crossmodal_hash.data import user_files


def _data(n, split=None):
  labels = np.ones((n, 2), np.uint8)
  return types.MultiModalData(np.zeros((n, 0), np.float32),
                              np.zeros((n, 3), np.uint8), labels, split=split)


@pytest.mark.parametrize('name,num_items,retrieval', [
    ('mirflickr25k', 20015, 18015),
    ('nuswide', 186577, 186577 - 2100),
    ('mscoco', 122218, 122218 - 5000),
    ('iaprtc12', 20000, 18000),
])
def test_random_protocols(name, num_items, retrieval):
  config = user_files.dataset_config(name)
  split = protocols.draw_split(_data(num_items), config.num_query,
                               config.num_train, config.split_seed)
  protocol = protocols.PROTOCOLS[name]
  assert len(split.query) == protocol.num_query
  assert len(split.retrieval) == retrieval
  assert len(split.train) == protocol.num_train
  assert not set(split.query) & set(split.retrieval)
  assert set(split.train) <= set(split.retrieval)
  assert len(set(split.query) | set(split.retrieval)) == num_items
  protocols.check_protocol(name, _data(num_items))


def test_seed_decides_the_split():
  a = protocols.draw_split(_data(500), 50, 100, seed=1)
  b = protocols.draw_split(_data(500), 50, 100, seed=1)
  c = protocols.draw_split(_data(500), 50, 100, seed=2)
  assert splits.checksum(a) == splits.checksum(b) != splits.checksum(c)


def test_wikipedia_fixed_split():
  n_tr, n_te = 2173, 693
  train = np.arange(n_tr)
  fixed = types.Split(query=np.arange(n_tr, n_tr + n_te), retrieval=train,
                      train=train)
  config = user_files.dataset_config('wikipedia')
  split = protocols.draw_split(_data(n_tr + n_te, fixed), config.num_query,
                               config.num_train, seed=123)
  assert split is fixed
  with pytest.raises(ValueError, match='num_query=2000'):
    protocols.draw_split(_data(n_tr + n_te, fixed), 2000, 2173, seed=0)
  protocols.check_protocol('wikipedia', _data(n_tr + n_te, fixed))


def test_protocol_needs_enough_items():
  with pytest.raises(ValueError, match='expects 20015 items'):
    protocols.check_protocol('mirflickr25k', _data(1000))
  with pytest.raises(ValueError, match='retrieval items it is drawn from'):
    protocols.draw_split(_data(10500), 2100, 10500, seed=0)


def test_split_written_with_checksum_and_reused(tmp_path):
  config = user_files.dataset_config('custom')
  config.update(num_query=20, num_train=50, split_seed=3)
  data = _data(300)
  first = protocols.split_for_run(data, config, str(tmp_path))
  saved = splits.load(str(tmp_path / 'split.npz'))
  assert splits.checksum(saved) == splits.checksum(first)
  again = protocols.split_for_run(data, config, str(tmp_path))
  assert splits.checksum(again) == splits.checksum(first)
  config.split_seed = 4
  with pytest.raises(splits.SplitMismatchError, match='different split'):
    protocols.split_for_run(data, config, str(tmp_path))


def test_corrupt_split_file_is_detected(tmp_path):
  path = str(tmp_path / 'split.npz')
  split = splits.random_split(100, 10, 20, seed=0)
  splits.save(path, split)
  with np.load(path) as f:
    arrays = dict(f)
  arrays['train'] = arrays['train'].copy()
  arrays['train'][0] += 1
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match='checksum mismatch'):
    splits.reuse_or_save(path, split)


def test_validation_is_carved_out_of_the_training_set(tmp_path):
  split = splits.random_split(100, 10, 60, seed=0)
  carved = splits.carve_validation(split, 15, seed=0)
  assert len(carved.val) == 15 and len(carved.train) == 45
  assert set(carved.val) | set(carved.train) == set(split.train)
  assert not set(carved.val) & set(carved.train)
  np.testing.assert_array_equal(carved.query, split.query)
  np.testing.assert_array_equal(carved.retrieval, split.retrieval)
  # Seeded; a saved split round-trips with its validation set and checksum.
  again = splits.carve_validation(split, 15, seed=0)
  np.testing.assert_array_equal(again.val, carved.val)
  other = splits.carve_validation(split, 15, seed=1)
  assert splits.checksum(other) != splits.checksum(carved)
  path = str(tmp_path / 'split.npz')
  splits.save(path, carved)
  loaded = splits.load(path)
  np.testing.assert_array_equal(loaded.val, carved.val)
  assert splits.checksum(loaded) == splits.checksum(carved)
  # Without a validation set the checksum is that of the three arrays.
  assert splits.carve_validation(split, 0, seed=0) is split
  with pytest.raises(ValueError, match='num_val'):
    splits.carve_validation(split, 60, seed=0)


def test_training_set_only_file_has_no_test_queries():
  """A file with no split and num_query = num_train = 0 (the Wikipedia
  training half): every item is trained on, validation carved from them."""
  config = user_files.wikipedia_dataset_config(num_val=20)
  data = _data(100, None)
  split = protocols.draw_split(data, config.num_query, config.num_train, 0)
  assert len(split.query) == 0
  np.testing.assert_array_equal(split.train, np.arange(100))
  carved = splits.carve_validation(split, config.num_val, 0)
  assert len(carved.val) == 20 and len(carved.train) == 80
