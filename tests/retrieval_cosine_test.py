"""Tests of the cosine search (retrieval/cosine.py) and CosineIndex files."""
import jax
import ml_collections
import numpy as np
import pytest

from crossmodal_hash import sharding
from crossmodal_hash.retrieval import cosine
from crossmodal_hash.retrieval import index as index_lib

DIM = 16
# 1,037 rows in blocks of 128 (9 blocks, the last one partial), 7 queries in
# batches of 4: every search here shares these shapes.
GEOMETRY = dict(block_size=128, query_batch=4)


def _tied(rng, m):
  """[m, 16] rows with four ±1 entries: norm 2, so after normalising every
  entry is ±0.5 or 0 and every similarity a multiple of 1/4, exact in
  float32 whatever the summation order; so many ties."""
  x = np.zeros((m, DIM))
  for row in x:
    row[rng.choice(DIM, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
  return x


@pytest.fixture(scope='module', name='tied')
def _tied_problem():
  rng = np.random.default_rng(0)
  db, queries = _tied(rng, 1037), _tied(rng, 7)
  db[5] = 0.0  # A zero row: similarity 0 to every query.
  db[900:910] = db[3]  # Duplicates across blocks.
  queries[3] = 0.0  # A zero query: every item ties at 0.
  return queries, db


@pytest.mark.parametrize('k', [10, 1100])  # 1100 > N: padded with -1.
def test_search_equals_float64_brute_force_with_ties(tied, k):
  queries, db = tied
  ref_index, ref_sim = cosine.numpy_topk(queries, db, k=k)
  assert len(np.unique(ref_sim[0, :200])) < 10  # Ties are the rule.
  prepared = cosine.prepare(cosine.normalize(db), block_size=128)
  assert prepared.blocks.shape == (9, 128, DIM)
  got_index, got_sim = cosine.search_prepared(queries, prepared, k=k,
                                              query_batch=4)
  assert got_index.dtype == np.int32 and got_sim.dtype == np.float32
  np.testing.assert_array_equal(got_index, ref_index)
  np.testing.assert_array_equal(got_sim, ref_sim)
  if k > len(db):
    assert (got_index[:, len(db):] == -1).all()
    assert np.isneginf(got_sim[:, len(db):]).all()
  # The zero query: all items at similarity 0, in index order.
  np.testing.assert_array_equal(got_index[3, :min(k, len(db))],
                                np.arange(min(k, len(db))))


def test_random_embeddings_match_float64_brute_force():
  rng = np.random.default_rng(1)
  db = rng.normal(size=(1037, DIM)) * rng.uniform(0.1, 10, (1037, 1))
  queries = rng.normal(size=(7, DIM))
  index = index_lib.CosineIndex.from_embeddings(db, **GEOMETRY)
  got_index, got_sim = index.search(queries, k=50)
  ref_index, ref_sim = cosine.numpy_topk(queries, db, k=50)
  np.testing.assert_array_equal(got_index, ref_index)
  np.testing.assert_allclose(got_sim, ref_sim, atol=1e-6)


def test_sharded_search_equals_one_device(tied):
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1, 'model': 1}))
  assert jax.device_count() == 8
  queries, db = tied
  local = index_lib.CosineIndex.from_embeddings(db, **GEOMETRY)
  # 8 shards of 130 rows: 2 blocks of 128 each, the last shard partly empty.
  spread = index_lib.CosineIndex.from_embeddings(db, mesh=mesh, **GEOMETRY)
  for k in (10, 1100):
    a, b = local.search(queries, k), spread.search(queries, k)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_file_round_trip_append_and_refusals(tied, tmp_path):
  queries, db = tied
  index = index_lib.CosineIndex(DIM, metadata={'modality': 'image'},
                                **GEOMETRY)
  index.add(db[:1000], ids=[f'item{i}' for i in range(1000)])
  index.search(queries, k=10)  # Builds the device copy; add() resets it.
  index.add(db[1000:])
  assert index.ids[-1] == '1036' and len(index) == 1037
  norms = np.linalg.norm(index.embeddings, axis=1)
  np.testing.assert_allclose(norms[norms > 0], 1.0, rtol=1e-6)
  path = tmp_path / 'image.cmhidx'
  index.add(np.random.default_rng(3).normal(size=(5, DIM)))  # Not exact.
  index.save(path)
  loaded = index_lib.load(path, cosine_options=GEOMETRY)
  assert isinstance(loaded, index_lib.CosineIndex)
  assert loaded.metadata == {'modality': 'image'} and loaded.ids == index.ids
  np.testing.assert_array_equal(loaded.embeddings, index.embeddings)
  for a, b in zip(loaded.search(queries, 20), index.search(queries, 20)):
    np.testing.assert_array_equal(a, b)
  # The wrong kind, either way, and the wrong dimension: the file is named.
  with pytest.raises(index_lib.IndexFileError,
                     match=r'image\.cmhidx: a cosine index of 16-d float32 '
                     'embeddings, not a Hamming index'):
    index_lib.HammingIndex.load(path)
  codes = index_lib.HammingIndex.from_codes(np.ones((3, 16), np.int8))
  codes.save(tmp_path / 'codes.cmhidx')
  with pytest.raises(index_lib.IndexFileError,
                     match=r'codes\.cmhidx: a Hamming index of 16-bit codes, '
                     'not a cosine index'):
    index_lib.CosineIndex.load(tmp_path / 'codes.cmhidx')
  with pytest.raises(index_lib.IndexFileError,
                     match=r'image\.cmhidx: holds 16-d embeddings; expected '
                     '32-d'):
    index_lib.CosineIndex.load(path, dim=32)
  with pytest.raises(ValueError, match=r'image\.cmhidx holds 16-d embeddings; '
                     r'got queries of shape \(2, 8\)'):
    loaded.search(np.ones((2, 8)), k=3)
  with pytest.raises(ValueError, match='NaN or Inf'):
    index.add(np.full((1, DIM), np.nan))
  # A flipped payload byte is caught by the checksum.
  data = bytearray(path.read_bytes())
  data[-20000] ^= 0x01
  (tmp_path / 'bad.cmhidx').write_bytes(bytes(data))
  with pytest.raises(index_lib.IndexFileError, match='bad.cmhidx: corrupt '
                     r'index payload \(SHA-256'):
    index_lib.load(tmp_path / 'bad.cmhidx')
