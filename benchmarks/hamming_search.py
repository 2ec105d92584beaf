r"""Exact Hamming top-k: our engine against faiss-cpu IndexBinaryFlat, same data.

  python benchmarks/hamming_search.py                       # CPU defaults
  python benchmarks/hamming_search.py --num_db=100000 --bits=64 --skip_faiss
  python benchmarks/hamming_search.py --mode=gpu            # 64 bits, 16M codes

For each code length: draws random codes (seeded), times `search.search_prepared`
(after a warm-up call that compiles; the layout step `search.prepare` is timed
apart, as index building), times FAISS's exhaustive `IndexBinaryFlat.search` on
the same codes (with 1 and with all OpenMP threads; the faster counts), and checks that our top-k distances equal FAISS's for every
query (indices may differ only inside ties, which FAISS does not order; ours
are in database-index order). Throughput is Q * N / seconds in G pair-distances
per second, top-k included. Times are the best of --repeats runs (the machine
may be shared; the median is in the JSON too).

GPU mode (default when JAX's backend is a GPU): 64-bit codes, 16M database
codes, checked against a NumPy brute force on a sample of the queries, and
FAISS skipped unless --faiss_on_gpu_run.

Writes the table and every figure to --out (JSON) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from crossmodal_hash.retrieval import faiss_io  # pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash.retrieval import hamming  # pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash.retrieval import packing  # pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash.retrieval import radix_select  # pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash.retrieval import search  # pylint: disable=g-import-not-at-top,wrong-import-position


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--mode', choices=('auto', 'cpu', 'gpu'), default='auto',
                      help='gpu: 64 bits, 16M codes; auto: gpu if JAX has one.')
  parser.add_argument('--num_db', type=int, default=None,
                      help='database codes (default 1,000,000; GPU 16M).')
  parser.add_argument('--num_queries', type=int, default=1000)
  parser.add_argument('--k', type=int, default=100)
  parser.add_argument('--bits', default=None,
                      help='comma-separated code lengths (default 16,32,64,128;'
                      ' GPU 64).')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--query_batch', type=int, default=None)
  parser.add_argument('--chunk_size', type=int, default=None)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--skip_faiss', action='store_true')
  parser.add_argument('--faiss_on_gpu_run', action='store_true',
                      help='also time faiss-cpu in GPU mode (slow).')
  parser.add_argument('--check_queries', type=int, default=16,
                      help='queries checked by NumPy brute force when FAISS '
                      'is not run.')
  parser.add_argument('--out', default='benchmarks/results/hamming_search.json')
  return parser.parse_args(argv)


def _random_packed(rng, n, bits):
  """[n, W] uint32 uniformly random packed codes (padding bits 0)."""
  words = packing.num_words(bits)
  packed = rng.integers(0, 2**32, (n, words), dtype=np.uint64).astype(np.uint32)
  if bits % 32:
    packed[:, -1] &= np.uint32((1 << (bits % 32)) - 1)
  return packed


def _timed(fn, repeats):
  times = []
  out = None
  for _ in range(repeats):
    tic = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - tic)
  return out, min(times), statistics.median(times)


def _ours(query, prepared, args, bits):
  def run():
    return jax.block_until_ready(search.search_prepared(
        query, prepared, k=args.k, bits=bits, query_batch=args.query_batch))
  tic = time.perf_counter()
  run()  # compiles
  compile_s = time.perf_counter() - tic
  (index, dist), best, median = _timed(run, args.repeats)
  return np.asarray(index), np.asarray(dist), best, median, compile_s


def _faiss(query, db, args, bits):
  """FAISS's best time over OpenMP thread counts 1 and all cores.

  On a shared machine OpenMP's spinning threads can make the all-core run the
  slower one, so both are timed and the faster is the reference.
  """
  import faiss  # pylint: disable=g-import-not-at-top
  index = faiss.IndexBinaryFlat(faiss_io.faiss_dimension(bits))
  index.add(faiss_io.packed_to_bytes(db, bits))
  q_bytes = faiss_io.packed_to_bytes(query, bits)
  default_threads = faiss.omp_get_max_threads()
  per_threads = {}
  out = None
  for threads in sorted({1, default_threads}):
    faiss.omp_set_num_threads(threads)
    index.search(q_bytes[:8], args.k)  # warm-up
    out, best, median = _timed(lambda: index.search(q_bytes, args.k),
                               args.repeats)
    per_threads[threads] = (best, median)
  faiss.omp_set_num_threads(default_threads)
  threads = min(per_threads, key=lambda t: per_threads[t][0])
  dist, idx = out
  return idx, dist, per_threads[threads][0], per_threads[threads][1], threads, {
      str(t): v[0] for t, v in per_threads.items()}


def _brute_force_check(query, db, dist, args, bits):
  """Our distances equal a NumPy brute force on a sample of queries."""
  sample = np.linspace(0, query.shape[0] - 1, min(args.check_queries,
                                                  query.shape[0])).astype(int)
  ref = []
  for start in range(0, db.shape[0], 1 << 20):
    ref.append(hamming.numpy_hamming(query[sample], db[start:start + (1 << 20)]))
  ref = np.sort(np.concatenate(ref, axis=1), axis=1)[:, :args.k]
  return bool(np.array_equal(ref, dist[sample, :ref.shape[1]]))


def main(argv=None):
  args = _parse(argv)
  backend = jax.default_backend()
  mode = args.mode if args.mode != 'auto' else (
      'gpu' if backend == 'gpu' else 'cpu')
  num_db = args.num_db or (16 * 2**20 if mode == 'gpu' else 1_000_000)
  bits_list = [int(b) for b in (args.bits or ('64' if mode == 'gpu' else
                                              '16,32,64,128')).split(',')]
  run_faiss = not args.skip_faiss and (mode == 'cpu' or args.faiss_on_gpu_run)
  if run_faiss:
    try:
      import faiss  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      print('faiss is not installed (pip install faiss-cpu); skipping it.')
      run_faiss = False
  rng = np.random.default_rng(args.seed)
  rows = []
  for bits in bits_list:
    db = _random_packed(rng, num_db, bits)
    query = _random_packed(rng, args.num_queries, bits)
    tic = time.perf_counter()
    prepared = jax.block_until_ready(
        search.prepare(db, chunk_size=args.chunk_size))
    prepare_s = time.perf_counter() - tic
    index, dist, best, median, compile_s = _ours(query, prepared, args, bits)
    pairs = args.num_queries * num_db
    row = {
        'bits': bits, 'plan': radix_select.describe_plan(bits),
        'ours_s': best, 'ours_median_s': median, 'ours_compile_s': compile_s,
        'prepare_s': prepare_s, 'ours_gpairs_per_s': pairs / best / 1e9,
    }
    if run_faiss:
      f_idx, f_dist, f_best, f_median, threads, by_threads = _faiss(
          query, db, args, bits)
      row.update({
          'faiss_s': f_best, 'faiss_median_s': f_median,
          'faiss_gpairs_per_s': pairs / f_best / 1e9, 'faiss_threads': threads,
          'faiss_s_by_threads': by_threads,
          'speedup_vs_faiss': f_best / best,
          'distances_equal_faiss': bool(np.array_equal(f_dist, dist)),
          'indices_equal_faiss': float(np.mean(f_idx == index)),
      })
    else:
      row['distances_equal_brute_force'] = _brute_force_check(
          query, db, dist, args, bits)
    rows.append(row)
    print(f'done {bits} bits: {row["ours_gpairs_per_s"]:.2f} G/s', flush=True)

  header = (f'Exact Hamming top-{args.k}: {args.num_queries} queries x '
            f'{num_db:,} database codes, backend {backend} '
            f'({jax.devices()[0].device_kind}), best of {args.repeats}')
  lines = [header, '',
           '| bits | ours (s) | ours G pairs/s | FAISS (s) | FAISS G pairs/s '
           '| ours / FAISS | distances equal |',
           '|---:|---:|---:|---:|---:|---:|:---|']
  for row in rows:
    faiss_cells = (f'{row["faiss_s"]:.3f} | {row["faiss_gpairs_per_s"]:.2f} '
                   f'({row["faiss_threads"]}t) | '
                   f'{row["speedup_vs_faiss"]:.2f}x | '
                   f'{"yes" if row["distances_equal_faiss"] else "NO"} (FAISS)'
                   if 'faiss_s' in row else
                   '- | - | - | ' + ('yes' if row['distances_equal_brute_force']
                                     else 'NO') + ' (brute force sample)')
    lines.append(f'| {row["bits"]} | {row["ours_s"]:.3f} | '
                 f'{row["ours_gpairs_per_s"]:.2f} | {faiss_cells} |')
  table = '\n'.join(lines)
  print(table)
  result = {
      'mode': mode, 'backend': backend,
      'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
      'cpu_count': os.cpu_count(), 'machine': platform.machine(),
      'num_db': num_db, 'num_queries': args.num_queries, 'k': args.k,
      'repeats': args.repeats, 'query_batch': args.query_batch,
      'chunk_size': args.chunk_size, 'seed': args.seed,
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'rows': rows,
      'table': table,
  }
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=2)
  ok = all(row.get('distances_equal_faiss',
                   row.get('distances_equal_brute_force')) for row in rows)
  return 0 if ok else 1


if __name__ == '__main__':
  sys.exit(main())
