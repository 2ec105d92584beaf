r"""Exact top-k cosine search: our streamed engine against NumPy brute force.

  python benchmarks/cosine_search.py                     # 1M x 128-d, CPU
  python benchmarks/cosine_search.py --num_db=100000 --num_queries=64
  python benchmarks/cosine_search.py --num_devices=8     # sharded (simulated)

Draws N random unit vectors [N, D] float32 and Q queries (seeded), then, each
engine in its own child process (so that each one's peak resident memory is
its own):

* ours: `retrieval.cosine` (`CosineIndex`'s search): `prepare` (the device
  layout, timed apart as index building), one warm-up call that compiles,
  then the best of --repeats searches of all Q queries, in blocks of
  --block_size rows and batches of --query_batch queries, memory O(batch x
  block + k) beyond the database;
* numpy: the brute force: one float32 matrix product [Q, D] x [D, N], then
  `np.argpartition` of each row for its top k, sorted by (-similarity,
  index); memory O(Q x N).

Reported: queries per second, the best and median times, the peak resident
memory of each child (and its growth over the data alone), and how often
the two agree: identical top-k indices per query (the two compute float32
products in different orders, so items whose similarities differ by a
rounding error may swap), and the largest difference of their similarities.
Writes the table and every figure to --out (JSON) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num_db', type=int, default=1_000_000)
  parser.add_argument('--dim', type=int, default=128)
  parser.add_argument('--num_queries', type=int, default=256)
  parser.add_argument('--k', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--block_size', type=int, default=None,
                      help='rows per step (default cosine.CPU_BLOCK_SIZE, '
                      'ACCELERATOR_BLOCK_SIZE on GPU/TPU).')
  parser.add_argument('--query_batch', type=int, default=None)
  parser.add_argument('--num_devices', type=int, default=0,
                      help='shard the database over this many devices '
                      '(simulated on CPU); 0: one device.')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--engine', choices=('ours', 'numpy'), default=None,
                      help=argparse.SUPPRESS)  # A child process's engine.
  parser.add_argument('--result', default=None, help=argparse.SUPPRESS)
  parser.add_argument('--out', default='benchmarks/results/cosine_search.json')
  return parser.parse_args(argv)


def _peak_rss_mib() -> float:
  """Peak resident memory of this process so far (Linux: KiB units)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(args) -> tuple[np.ndarray, np.ndarray]:
  """([N, D], [Q, D]) float32 unit rows, drawn 2^20 rows at a time."""
  rng = np.random.default_rng(args.seed)
  db = np.empty((args.num_db, args.dim), np.float32)
  for start in range(0, args.num_db, 1 << 20):
    rows = rng.standard_normal((min(1 << 20, args.num_db - start), args.dim),
                               dtype=np.float32)
    db[start:start + len(rows)] = rows / np.linalg.norm(rows, axis=1,
                                                        keepdims=True)
  query = rng.standard_normal((args.num_queries, args.dim), dtype=np.float32)
  return db, query / np.linalg.norm(query, axis=1, keepdims=True)


def _numpy_topk(query: np.ndarray, db: np.ndarray, k: int):
  """Brute force: the full [Q, N] product, argpartition, then a sort of the
  k by (-similarity, index)."""
  sim = query @ db.T
  k = min(k, db.shape[0])
  top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
  top_sim = np.take_along_axis(sim, top, axis=1)
  order = np.lexsort((top, -top_sim), axis=1)
  return (np.take_along_axis(top, order, axis=1).astype(np.int32),
          np.take_along_axis(top_sim, order, axis=1))


def _child(args) -> None:
  """Times one engine; writes its row and results to --result (.npz)."""
  if args.num_devices > 1:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               ' --xla_force_host_platform_device_count='
                               f'{args.num_devices}').strip()
  db, query = _data(args)
  data_mib = _peak_rss_mib()
  row = {'engine': args.engine, 'data_peak_rss_mib': data_mib}
  if args.engine == 'ours':
    import jax  # pylint: disable=g-import-not-at-top
    import ml_collections  # pylint: disable=g-import-not-at-top
    from crossmodal_hash import sharding  # pylint: disable=g-import-not-at-top
    from crossmodal_hash.retrieval import cosine  # pylint: disable=g-import-not-at-top
    mesh = None
    if args.num_devices > 1:
      mesh = sharding.make_mesh(ml_collections.ConfigDict(
          {'data': args.num_devices, 'model': 1}),
                                jax.devices()[:args.num_devices])
    tic = time.perf_counter()
    prepared = cosine.prepare(db, mesh=mesh, block_size=args.block_size)
    jax.block_until_ready(prepared.blocks)
    row['prepare_s'] = time.perf_counter() - tic
    data_mib = row['data_peak_rss_mib'] = _peak_rss_mib()
    run = lambda: cosine.search_prepared(query, prepared, k=args.k,
                                         query_batch=args.query_batch)
    tic = time.perf_counter()
    run()
    row['compile_and_first_s'] = time.perf_counter() - tic
    row['block_size'] = int(prepared.blocks.shape[1])
    row['backend'] = jax.default_backend()
    row['device'] = jax.devices()[0].device_kind
    row['jax'] = jax.__version__
  else:
    run = lambda: _numpy_topk(query, db, args.k)
  times = []
  for _ in range(args.repeats):
    tic = time.perf_counter()
    index, sim = run()
    times.append(time.perf_counter() - tic)
  row.update({'best_s': min(times), 'median_s': statistics.median(times),
              'queries_per_s': args.num_queries / min(times),
              'peak_rss_mib': _peak_rss_mib()})
  row['search_rss_growth_mib'] = row['peak_rss_mib'] - data_mib
  np.savez(args.result, index=index, sim=sim, row=json.dumps(row))


def main(argv=None):
  args = _parse(argv)
  if args.engine:
    _child(args)
    return 0
  rows, results = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for engine in ('ours', 'numpy'):
      path = os.path.join(tmp, f'{engine}.npz')
      cmd = [sys.executable, os.path.abspath(__file__), f'--engine={engine}',
             f'--result={path}'] + list(argv if argv is not None else
                                        sys.argv[1:])
      subprocess.run(cmd, check=True)
      with np.load(path) as f:
        rows[engine] = json.loads(str(f['row']))
        results[engine] = (f['index'], f['sim'])
  ours, ref = results['ours'], results['numpy']
  same = np.all(ours[0] == ref[0], axis=1)
  sim_diff = float(np.max(np.abs(ours[1] - ref[1])))
  agreement = {'queries_with_identical_topk': float(np.mean(same)),
               'topk_sets_overlap': float(np.mean([
                   len(set(a) & set(b)) / len(a)
                   for a, b in zip(ours[0], ref[0])])),
               'max_similarity_difference': sim_diff}
  o, n = rows['ours'], rows['numpy']
  header = (f'Exact cosine top-{args.k}: {args.num_queries} queries x '
            f'{args.num_db:,} x {args.dim}-d database, backend {o["backend"]} '
            f'({o["device"]}, {os.cpu_count()} CPUs'
            f'{f", {args.num_devices} devices" if args.num_devices > 1 else ""}'
            f'), best of {args.repeats}; ours in blocks of {o["block_size"]} '
            'rows')
  lines = [header, '',
           '| engine | best (s) | median (s) | queries/s | peak RSS (MiB) '
           '| RSS growth in search (MiB) |',
           '|:---|---:|---:|---:|---:|---:|']
  for name, row in (('ours (streamed, jitted)', o),
                    ('NumPy matmul + argpartition', n)):
    lines.append(f'| {name} | {row["best_s"]:.3f} | {row["median_s"]:.3f} | '
                 f'{row["queries_per_s"]:.1f} | {row["peak_rss_mib"]:.0f} | '
                 f'{row["search_rss_growth_mib"]:.0f} |')
  lines += ['', f'Speed ours / NumPy: {o["queries_per_s"] / n["queries_per_s"]:.2f}x; '
            f'database {args.num_db * args.dim * 4 / 2**20:.0f} MiB; our '
            f'layout step {o["prepare_s"]:.2f} s, compile + first search '
            f'{o["compile_and_first_s"]:.2f} s.',
            f'Agreement: {agreement["queries_with_identical_topk"]:.1%} of '
            'queries with identical top-k lists, '
            f'{agreement["topk_sets_overlap"]:.2%} of top-k items shared, '
            f'largest similarity difference {sim_diff:.2e} (float32 '
            'products summed in different orders).']
  table = '\n'.join(lines)
  print(table)
  result = {'num_db': args.num_db, 'dim': args.dim,
            'num_queries': args.num_queries, 'k': args.k,
            'repeats': args.repeats, 'block_size': o['block_size'],
            'query_batch': args.query_batch,
            'num_devices': args.num_devices or 1, 'seed': args.seed,
            'cpu_count': os.cpu_count(), 'machine': platform.machine(),
            'rows': [o, n], 'agreement': agreement, 'table': table}
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
