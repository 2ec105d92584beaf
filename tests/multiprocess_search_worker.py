"""One process of retrieval_multiprocess_test: 4 CPU devices of a 2-process run.

  python tests/multiprocess_search_worker.py PROCESS_ID PORT OUT.npz

Joins the run through `jax.distributed.initialize` (coordinator on
127.0.0.1:PORT), shards a seeded database over the mesh of all 8 devices of
both processes (`sharded.search`) and writes its top-k to OUT.npz. CPU
collectives across processes go through gloo. Run with JAX_PLATFORMS=cpu and
no XLA_FLAGS device count (the test does).
"""
import os
import sys

import jax
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crossmodal_hash import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash.retrieval import sharded  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_ITEMS, NUM_QUERIES, K, BITS, SEED = 5000, 9, 50, 64, 0


def codes() -> tuple[np.ndarray, np.ndarray]:
  """The seeded packed database [5000, 2] and queries [9, 2] (uint32)."""
  rng = np.random.default_rng(SEED)
  words = -(-BITS // 32)
  db = rng.integers(0, 2**32, (NUM_ITEMS, words), dtype=np.uint32)
  # Copies of the first items make exact ties across shard boundaries.
  db[NUM_ITEMS // 2:NUM_ITEMS // 2 + 100] = db[:100]
  query = np.concatenate([db[:3], rng.integers(0, 2**32, (NUM_QUERIES - 3,
                                                          words),
                                               dtype=np.uint32)])
  return db, query


def main(argv):
  process_id, port, out = int(argv[1]), int(argv[2]), argv[3]
  # Before JAX's backends start (the parent sets JAX_PLATFORMS=cpu).
  jax.config.update('jax_num_cpu_devices', 4)
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=2,
                             process_id=process_id)
  assert jax.device_count() == 8 and jax.local_device_count() == 4
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1,
                                                       'model': 1}))
  db, query = codes()
  index, dist = sharded.search(query, db, k=K, bits=BITS, mesh=mesh)
  np.savez(out, index=np.asarray(index), dist=np.asarray(dist),
           process_count=jax.process_count())
  jax.distributed.shutdown()


if __name__ == '__main__':
  main(sys.argv)
