"""Declared data fields: datasets declare theirs, updates read only theirs."""
import collections

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from crossmodal_hash import sharding
from crossmodal_hash.data import splits
from crossmodal_hash.data import types
from crossmodal_hash.data import validation
from crossmodal_hash.methods import base
from crossmodal_hash.methods import ssah
from crossmodal_hash.trainers import alternating
from crossmodal_hash.trainers import harness
from crossmodal_hash.trainers import streaming


def _data(n=6, extras=None):
  rng = np.random.default_rng(0)
  return types.MultiModalData(
      images=rng.integers(0, 255, (n, 4, 4, 3), dtype=np.uint8),
      texts=(rng.random((n, 10)) < 0.3).astype(np.uint8),
      labels=np.eye(3, dtype=np.uint8)[np.arange(n) % 3],
      extras=extras or {})


def test_a_dataset_declares_its_fields_with_placements():
  tokens = np.arange(6 * 5, dtype=np.int32).reshape(6, 5)
  data = _data(extras={'text_tokens': tokens})
  fields = data.fields(stream_images=True)
  assert list(fields) == ['image', 'text', 'label', 'text_tokens']
  assert fields['image'] == types.Field('image', (4, 4, 3), np.dtype(np.uint8),
                                        'streamed')
  assert fields['text_tokens'] == types.Field('text_tokens', (5,),
                                              np.dtype(np.int32), 'resident')
  assert data.fields()['image'].placement == 'resident'
  part = data.take(np.array([4, 1]))
  np.testing.assert_array_equal(part.field('text_tokens'), tokens[[4, 1]])
  with pytest.raises(KeyError, match='no field'):
    data.field('regions')
  with pytest.raises(ValueError, match='clashes'):
    _data(extras={'index': tokens})
  with pytest.raises(ValueError, match='has 2 items'):
    _data(extras={'text_tokens': tokens[:2]})
  # Extra fields count in the data's checksum; without any it is unchanged.
  assert splits.data_checksum(data) != splits.data_checksum(_data())


def test_texts_may_be_token_sequences():
  tokens = validation.as_texts(np.array([[3, 7, 0], [12, 0, 0]], np.int64),
                               'f.npz', tokens=True)
  assert tokens.dtype == np.int32 and tokens.shape == (2, 3)
  with pytest.raises(validation.DataFormatError, match='f.npz: token ids'):
    validation.as_texts(np.array([[-1, 2]]), 'f.npz', tokens=True)
  with pytest.raises(validation.DataFormatError, match='integers'):
    validation.as_texts(np.ones((2, 3), np.float32), 'f.npz', tokens=True)
  # Without `tokens`, a binary matrix is still a bag of words.
  assert validation.as_texts(np.eye(3), 'f.npz').dtype == np.uint8


def test_a_batch_holds_the_declared_fields_only():
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1,
                                                      'model': 1}),
                            jax.devices()[:1])
  data = {'image': jnp.full((4, 2, 2, 3), 200, jnp.uint8),
          'text': jnp.ones((4, 5), jnp.uint8),
          'label': jnp.eye(4, dtype=jnp.uint8),
          'image_mean': jnp.full(3, 100.0), 'image_inv_scale': jnp.ones(3)}
  spec = sharding.batch_sharded(mesh)
  index = jnp.array([2, 0], jnp.int32)
  batch = jax.jit(lambda d, i: harness.gather_batch(d, i, spec,
                                                    ('index', 'label')))(
                                                        data, index)
  assert set(batch) == {'index', 'label'}
  batch = jax.jit(lambda d, i: harness.gather_batch(d, i, spec,
                                                    ('image',)))(data, index)
  assert set(batch) == {'index', 'image'}
  assert batch['image'].dtype == jnp.float32  # Normalised when read.
  np.testing.assert_allclose(batch['image'], 100.0)


def test_ssah_declares_what_each_update_reads(tiny_config):
  method = ssah.SSAH(tiny_config(), num_labels=8, text_dim=200)
  assert base.batch_fields(method, 'lab') == ('index', 'label')
  assert base.batch_fields(method, 'txt') == ('index', 'label', 'text')
  assert 'image' in base.batch_fields(method, 'img')
  assert streaming.host_fields(base.batch_fields(method, 'txt')) == ('index',)


def test_streamed_ssah_reads_images_only_in_the_passes_that_use_them(
    tiny_config, tmp_path, monkeypatch):
  """One epoch: LabNet 1 pass, discriminators 1, ImgNet 2, TxtNet 1, of 8
  batches each; only the discriminator and ImgNet passes read images."""
  reads = collections.Counter()
  read = streaming.PassBatches.__getitem__

  def counting(self, index):
    batch = read(self, index)
    reads[tuple(sorted(batch))] += 1
    return batch

  monkeypatch.setattr(streaming.PassBatches, '__getitem__', counting)
  config = tiny_config('ssah.num_epochs=1', 'train.data_placement=stream',
                       'eval.random_baseline=false')
  alternating.train_and_evaluate(config, str(tmp_path))
  assert reads == {('image', 'index'): 3 * 8, ('index',): 2 * 8}
