"""Sharded Hamming search on the 8-device CPU mesh equals the unsharded one."""
import jax
import ml_collections
import numpy as np
import pytest

from crossmodal_hash import sharding
from crossmodal_hash.retrieval import packing
from crossmodal_hash.retrieval import search
from crossmodal_hash.retrieval import sharded


@pytest.fixture(name='mesh', scope='module')
def _mesh():
  assert jax.device_count() == 8
  return sharding.make_mesh(ml_collections.ConfigDict({'data': -1, 'model': 1}))


# (64, 4099): N divisible by neither the 8 devices nor the 256-item chunks;
# ties: the cut falls in a tie that spans shards; (16, 37): k > N, and most
# shards hold only padding.
@pytest.mark.parametrize('bits,n,k,ties,chunk', [
    (64, 4099, 100, False, 256),
    (64, 4099, 100, True, 256),
    (16, 37, 60, False, None),
])
def test_sharded_equals_unsharded(mesh, bits, n, k, ties, chunk):
  rng = np.random.default_rng(n)
  if ties:
    protos = rng.integers(0, 2, (5, bits))
    db_codes = protos[rng.integers(0, 5, n)]
    q_codes = protos[rng.integers(0, 5, 9)]
  else:
    db_codes = rng.integers(0, 2, (n, bits))
    q_codes = rng.integers(0, 2, (9, bits))
  db = np.asarray(packing.pack_codes(db_codes))
  query = np.asarray(packing.pack_codes(q_codes))
  prepared = sharded.prepare(db, mesh, chunk_size=chunk)
  assert prepared.chunks.sharding.spec[0] == sharding.DATA_AXIS
  index, dist = sharded.search_prepared(query, prepared, k=k, bits=bits,
                                        query_batch=4)
  ref_index, ref_dist = search.search(query, db, k=k, bits=bits)
  np.testing.assert_array_equal(np.asarray(index), np.asarray(ref_index))
  np.testing.assert_array_equal(np.asarray(dist), np.asarray(ref_dist))
  brute_index, brute_dist = search.numpy_topk(query, db, k=k, bits=bits)
  np.testing.assert_array_equal(np.asarray(index), brute_index)
  np.testing.assert_array_equal(np.asarray(dist), brute_dist)


def test_unknown_axis_is_rejected(mesh):
  with pytest.raises(ValueError, match="no axis 'rows'"):
    sharded.prepare(np.zeros((4, 1), np.uint32), mesh, axis='rows')
