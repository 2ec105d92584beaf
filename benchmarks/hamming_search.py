r"""Exact Hamming top-k: our engine against faiss-cpu IndexBinaryFlat, same data.

  python benchmarks/hamming_search.py                       # CPU defaults
  python benchmarks/hamming_search.py --num_db=100000 --bits=64 --skip_faiss
  python benchmarks/hamming_search.py --mode=gpu            # 64 bits, 16M codes
  python benchmarks/hamming_search.py --num_db=100000000 --num_queries=100 \
      --bits=64 --num_devices=8                             # sharded, 100M codes

For each code length: draws random codes (seeded), times `search.search_prepared`
(after a warm-up call that compiles; the layout step `search.prepare` is timed
apart, as index building), times FAISS's exhaustive `IndexBinaryFlat.search` on
the same codes (with 1 and with all OpenMP threads; the faster counts), and
checks that our top-k distances equal FAISS's for every query (indices may
differ only inside ties, which FAISS does not order; ours are in
database-index order). Throughput is Q * N / seconds in G pair-distances per
second, top-k included. Times are the best of --repeats runs (the machine may
be shared; the median is in the JSON too). On CPU the engine's kernel is
numba's `hamming_cpu` on all of numba's threads (`--kernel=xla` times the XLA
radix select instead).

Sharded mode (`--num_devices=D`, D simulated CPU devices unless JAX has that
many): the database is sharded over a D-device mesh (`sharded.py`; each device
runs the XLA engine on its shard, then the lists are merged), codes are drawn
in chunks so that nothing but the packed codes and their device layout is held,
and the result is checked against a NumPy brute force (exact distances and
indices) on --check_queries queries. Peak resident memory is reported.

GPU mode (default when JAX's backend is a GPU): 64-bit codes, 16M database
codes, checked against a NumPy brute force on a sample of the queries, and
FAISS skipped unless --faiss_on_gpu_run.

The machine may be shared: the load average (1 minute) at the start and the
end of the run is printed with the table and kept in the JSON. The CPU-seconds
ratio (FAISS's CPU seconds over ours, all threads of the process) is the
figure least moved by other jobs; the wall-time ratio is printed beside it.

Writes the table and every figure to --out (JSON) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _simulate_devices(argv) -> None:
  """--num_devices=D: D host devices, set before JAX initialises."""
  for i, arg in enumerate(argv):
    value = (arg.split('=', 1)[1] if arg.startswith('--num_devices=') else
             argv[i + 1] if arg == '--num_devices' and i + 1 < len(argv) else
             None)
    if value and int(value) > 1:
      os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                                 f' --xla_force_host_platform_device_count='
                                 f'{int(value)}').strip()


_simulate_devices(sys.argv[1:])

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections  # pylint: disable=g-import-not-at-top,wrong-import-position
import numba  # pylint: disable=g-import-not-at-top,wrong-import-position

from crossmodal_hash import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position

from crossmodal_hash.retrieval import faiss_io  # pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash.retrieval import hamming  # pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash.retrieval import packing  # pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash.retrieval import radix_select  # pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash.retrieval import search  # pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash.retrieval import sharded  # pylint: disable=g-import-not-at-top,wrong-import-position


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
  parser.add_argument('--kernel', choices=search.KERNELS, default='auto',
                      help='one-device search kernel (auto: numba on CPU).')
  parser.add_argument('--num_devices', type=int, default=0,
                      help='shard the database over this many devices '
                      '(simulated on CPU); 0: one device.')
  parser.add_argument('--skip_faiss', action='store_true')
  parser.add_argument('--faiss_on_gpu_run', action='store_true',
                      help='also time faiss-cpu in GPU mode (slow).')
  parser.add_argument('--check_queries', type=int, default=16,
                      help='queries checked by NumPy brute force when FAISS '
                      'is not run.')
  parser.add_argument('--out', default='benchmarks/results/hamming_search.json')
  return parser.parse_args(argv)


def _random_packed(rng, n, bits, chunk=1 << 22):
  """[n, W] uint32 uniformly random packed codes (padding bits 0).

  Drawn `chunk` rows at a time, so a large database needs no temporaries
  beyond one chunk.
  """
  words = packing.num_words(bits)
  packed = np.empty((n, words), np.uint32)
  for start in range(0, n, chunk):
    rows = min(chunk, n - start)
    packed[start:start + rows] = rng.integers(0, 2**32, (rows, words),
                                              dtype=np.uint32)
  if bits % 32:
    packed[:, -1] &= np.uint32((1 << (bits % 32)) - 1)
  return packed


def _peak_rss_gib() -> float:
  """Peak resident memory of this process so far (Linux: KiB units)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _timed(fn, repeats):
  """(last output, best wall s, median wall s, best CPU s of the process).

  CPU seconds (all threads) are less disturbed than wall time by other jobs
  on a shared machine; their ratio compares the work each side does.
  """
  times, cpu_times = [], []
  out = None
  for _ in range(repeats):
    tic, cpu_tic = time.perf_counter(), time.process_time()
    out = fn()
    times.append(time.perf_counter() - tic)
    cpu_times.append(time.process_time() - cpu_tic)
  return out, min(times), statistics.median(times), min(cpu_times)


def _ours(query, prepared, args, bits):
  """Times the search on a prepared database (one device or sharded)."""
  if isinstance(prepared, sharded.ShardedDatabase):
    fn = sharded.search_prepared
  else:
    fn = search.search_prepared

  def run():
    return jax.block_until_ready(fn(query, prepared, k=args.k, bits=bits,
                                    query_batch=args.query_batch))
  tic = time.perf_counter()
  run()  # compiles
  compile_s = time.perf_counter() - tic
  (index, dist), best, median, cpu = _timed(run, args.repeats)
  return np.asarray(index), np.asarray(dist), best, median, cpu, compile_s


def _prepare(db, args, mesh):
  """The database laid out for the kernel: (prepared, kernel description)."""
  if mesh is not None:
    prepared = sharded.prepare(db, mesh, chunk_size=args.chunk_size)
    return prepared, (f'xla radix select, sharded over {mesh.size} '
                      f'{jax.devices()[0].platform} devices')
  kernel = search.resolve_kernel(args.kernel)
  prepared = search.prepare(db, chunk_size=args.chunk_size, kernel=kernel)
  if kernel == 'cpu':
    return prepared, f'numba hamming_cpu, {numba.get_num_threads()} threads'
  return prepared, 'xla radix select, one device'


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
    out, best, median, cpu = _timed(lambda: index.search(q_bytes, args.k),
                                    args.repeats)
    per_threads[threads] = (best, median, cpu)
  faiss.omp_set_num_threads(default_threads)
  threads = min(per_threads, key=lambda t: per_threads[t][0])
  dist, idx = out
  return idx, dist, per_threads[threads], threads, {
      str(t): v[0] for t, v in per_threads.items()}


def _brute_force_topk(query, db, k, chunk=1 << 22):
  """Exact NumPy top-k by (distance, index), streamed over database chunks.

  Returns:
    indices [Q, k] int64 and distances [Q, k] int64 (fewer columns when the
    database has fewer than k items).
  """
  best_d = np.zeros((query.shape[0], 0), np.int64)
  best_i = np.zeros((query.shape[0], 0), np.int64)
  for start in range(0, db.shape[0], chunk):
    dist = hamming.numpy_hamming(query, db[start:start + chunk])
    order = np.argsort(dist, axis=1, kind='stable')[:, :k]
    cand_d = np.concatenate(
        [best_d, np.take_along_axis(dist, order, axis=1)], axis=1)
    cand_i = np.concatenate([best_i, order + start], axis=1)
    # Earlier candidates have smaller indices: a stable sort by distance
    # keeps the (distance, index) order.
    keep = np.argsort(cand_d, axis=1, kind='stable')[:, :k]
    best_d = np.take_along_axis(cand_d, keep, axis=1)
    best_i = np.take_along_axis(cand_i, keep, axis=1)
  return best_i, best_d


def _brute_force_check(query, db, index, dist, args):
  """Our top-k equals a NumPy brute force on a sample of queries.

  Returns:
    (distances equal, indices equal) over the sampled queries.
  """
  sample = np.linspace(0, query.shape[0] - 1, min(args.check_queries,
                                                  query.shape[0])).astype(int)
  ref_i, ref_d = _brute_force_topk(query[sample], db, args.k)
  width = ref_d.shape[1]
  return (bool(np.array_equal(ref_d, dist[sample, :width])),
          bool(np.array_equal(ref_i, index[sample, :width])))


def main(argv=None):
  args = _parse(argv)
  backend = jax.default_backend()
  mode = args.mode if args.mode != 'auto' else (
      'gpu' if backend == 'gpu' else 'cpu')
  num_db = args.num_db or (16 * 2**20 if mode == 'gpu' else 1_000_000)
  bits_list = [int(b) for b in (args.bits or ('64' if mode == 'gpu' else
                                              '16,32,64,128')).split(',')]
  mesh = None
  if args.num_devices:
    if jax.device_count() < args.num_devices:
      raise SystemExit(f'--num_devices={args.num_devices}: JAX has '
                       f'{jax.device_count()} devices.')
    mesh = sharding.make_mesh(ml_collections.ConfigDict(
        {'data': args.num_devices, 'model': 1}),
                              jax.devices()[:args.num_devices])
  run_faiss = (not args.skip_faiss and mesh is None and
               (mode == 'cpu' or args.faiss_on_gpu_run))
  if run_faiss:
    try:
      import faiss  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      print('faiss is not installed (pip install faiss-cpu); skipping it.')
      run_faiss = False
  load_start = os.getloadavg()[0]
  rng = np.random.default_rng(args.seed)
  rows = []
  for bits in bits_list:
    db = _random_packed(rng, num_db, bits)
    query = _random_packed(rng, args.num_queries, bits)
    tic = time.perf_counter()
    prepared, kernel = _prepare(db, args, mesh)
    jax.block_until_ready(getattr(prepared, 'chunks', None))
    prepare_s = time.perf_counter() - tic
    index, dist, best, median, cpu, compile_s = _ours(query, prepared, args,
                                                      bits)
    pairs = args.num_queries * num_db
    row = {
        'bits': bits, 'kernel': kernel,
        'ours_s': best, 'ours_median_s': median, 'ours_cpu_s': cpu,
        'ours_compile_s': compile_s,
        'prepare_s': prepare_s, 'ours_gpairs_per_s': pairs / best / 1e9,
        'database_mib': db.nbytes / 2**20,
    }
    if 'xla' in kernel:
      row['plan'] = radix_select.describe_plan(bits)
    if mesh is not None:
      row['gpairs_per_s_per_device'] = row['ours_gpairs_per_s'] / mesh.size
    del prepared
    if run_faiss:
      f_idx, f_dist, (f_best, f_median, f_cpu), threads, by_threads = _faiss(
          query, db, args, bits)
      row.update({
          'faiss_s': f_best, 'faiss_median_s': f_median, 'faiss_cpu_s': f_cpu,
          'cpu_seconds_ratio': f_cpu / cpu,
          'faiss_gpairs_per_s': pairs / f_best / 1e9, 'faiss_threads': threads,
          'faiss_s_by_threads': by_threads,
          'speedup_vs_faiss': f_best / best,
          'distances_equal_faiss': bool(np.array_equal(f_dist, dist)),
          'indices_equal_faiss': float(np.mean(f_idx == index)),
      })
    else:
      tic = time.perf_counter()
      same_dist, same_index = _brute_force_check(query, db, index, dist, args)
      row.update({'distances_equal_brute_force': same_dist,
                  'indices_equal_brute_force': same_index,
                  'brute_force_queries': min(args.check_queries,
                                             args.num_queries),
                  'brute_force_s': time.perf_counter() - tic})
    row['peak_rss_gib'] = _peak_rss_gib()
    rows.append(row)
    print(f'done {bits} bits: {row["ours_gpairs_per_s"]:.2f} G/s', flush=True)

  load_end = os.getloadavg()[0]
  header = (f'Exact Hamming top-{args.k}: {args.num_queries} queries x '
            f'{num_db:,} database codes, backend {backend} '
            f'({jax.devices()[0].device_kind}, {os.cpu_count()} CPUs), '
            f'kernel: {rows[0]["kernel"]}, best of {args.repeats}')
  lines = [header, '',
           '| bits | ours (s) | ours G pairs/s | FAISS (s) | FAISS G pairs/s '
           '| ours / FAISS | CPU s FAISS / ours | exact |',
           '|---:|---:|---:|---:|---:|---:|---:|:---|']
  for row in rows:
    if 'faiss_s' in row:
      faiss_cells = (f'{row["faiss_s"]:.3f} | {row["faiss_gpairs_per_s"]:.2f} '
                     f'({row["faiss_threads"]}t) | '
                     f'{row["speedup_vs_faiss"]:.2f}x | '
                     f'{row["cpu_seconds_ratio"]:.2f}x | '
                     f'{"yes" if row["distances_equal_faiss"] else "NO"} '
                     '(distances = FAISS)')
    else:
      exact = (row['distances_equal_brute_force'] and
               row['indices_equal_brute_force'])
      faiss_cells = (f'- | - | - | - | {"yes" if exact else "NO"} (brute force, '
                     f'{row["brute_force_queries"]} queries)')
    lines.append(f'| {row["bits"]} | {row["ours_s"]:.3f} | '
                 f'{row["ours_gpairs_per_s"]:.2f} | {faiss_cells} |')
  lines.append('')
  lines.append(f'Load average (1 min): {load_start:.2f} at the start, '
               f'{load_end:.2f} at the end, on {os.cpu_count()} CPUs.')
  lines.append(f'Peak resident memory: {rows[-1]["peak_rss_gib"]:.2f} GiB; '
               f'packed database: {rows[-1]["database_mib"]:.0f} MiB.')
  if mesh is not None:
    lines.append(f'Per device: {rows[-1]["gpairs_per_s_per_device"]:.3f} '
                 f'G pairs/s ({mesh.size} devices on {os.cpu_count()} CPUs).')
  table = '\n'.join(lines)
  print(table)
  result = {
      'mode': mode, 'backend': backend,
      'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
      'cpu_count': os.cpu_count(), 'machine': platform.machine(),
      'load_average_start': load_start, 'load_average_end': load_end,
      'num_db': num_db, 'num_queries': args.num_queries, 'k': args.k,
      'num_devices': args.num_devices or 1,
      'repeats': args.repeats, 'query_batch': args.query_batch,
      'chunk_size': args.chunk_size, 'seed': args.seed,
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'rows': rows,
      'table': table,
  }
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=2)
  ok = all(row['distances_equal_faiss'] if 'faiss_s' in row else
           row['distances_equal_brute_force'] and
           row['indices_equal_brute_force'] for row in rows)
  return 0 if ok else 1


if __name__ == '__main__':
  sys.exit(main())
