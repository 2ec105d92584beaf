r"""mAP@all speed: our evaluation engine against the peers' NumPy formulation.

  python benchmarks/evaluate.py                       # 2,000 x 18,015, 64 bits
  python benchmarks/evaluate.py --stream_database 1000000 --stream_queries 5000

One retrieval direction with seeded random ±1 codes. Labels are the real
MIRFLICKR-25K labels (`../shared/data/mirflickr25k/mirflickr25k-lall.mat`,
a seeded 2,000 / 18,015 query / retrieval split) when present, else synthetic
multi-label labels (24 labels, about 3.8 per item, at least one each).

Timed in the same run, best of --repeats (the first, compiling call is not
timed):
  * ours, mAP@all with ties in database-index order (the default policy);
  * ours, mAP@all tie-aware;
  * ours, the full suite of one direction (mAP@all both policies, mAP@K both
    definitions, P@N, NDCG@K, precision/recall by radius);
  * the peers' formulation, DCMH's `calc_map` in NumPy: a float matmul for the
    Hamming distances of each query, then `np.argsort`, then AP of the ranks
    of the relevant items (timed once or twice: it takes seconds).
It checks that our index-order AP equals the peers' AP computed with a stable
argsort (the peers' unstable sort breaks ties arbitrarily), prints a table
with the speed-up, and writes it all as JSON (--out).

BLAS runs single-threaded (OPENBLAS/OMP/MKL_NUM_THREADS=1 unless already set):
the peers' per-query products are tiny, and threaded BLAS makes them ~8x
slower on a 2-core machine; our engine makes no BLAS call.

--stream_database runs one extra, streamed evaluation (the database in blocks
of --db_block items) of --stream_queries random queries and reports its time
and the peak resident memory of the process.

Cosine rows (--cosine_dim D > 0, default 128): mAP@all (index order) of
--queries x --database real-valued embeddings (seeded: each item's labels
times one Gaussian vector per label, plus Gaussian noise, so that the ranking
means something), ranked by cosine similarity (`evaluation/cosine.py`),
streamed in blocks of each of --cosine_blocks items, and as one block of the
whole database (cosine_block = N: the old route's shape, every query block
holding and sorting all N similarities). Each row gives its time and the
peak of memory allocated during the call (`tracemalloc`, which NumPy reports
to), less the inputs' float64 copies made inside ('working' memory), so the
rows show the bound: O(query block x cosine_block) per thread, whatever N.
--cosine_scale repeats the largest block with a database that many times
larger (and at most 128 queries: the working memory is per query block), to
show that the working memory does not grow with N.

Measured (2 cores, 2 query-block threads, MIRFLICKR-25K labels, 2,000 x
18,015, D = 128; the machine was shared, load average ~18, so the seconds are
about 10x those of an idle machine; memory is not affected):

  route                         N       block   working MiB   peak MiB
  streamed                      18,015   2,048      15.3         35.0
  streamed                      18,015   8,192      53.8         73.5
  whole database (old shape)    18,015  18,015     106.7        126.4
  streamed, 128 queries         72,060   8,192      58.9        129.9

so the bound is about threads x 32 queries x cosine_block x 100 bytes
(2 x 32 x 8,192 x 100 B = 52 MiB), the same at 4x the database.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import tracemalloc

for _var in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
  os.environ.setdefault(_var, '1')

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash.evaluation import cosine
from crossmodal_hash.evaluation import metrics
from crossmodal_hash.evaluation import precision_sums
from crossmodal_hash.evaluation import ranking
from crossmodal_hash.evaluation import summary
# pylint: enable=g-import-not-at-top,wrong-import-position

_CHUNK = 1 << 16
_MIRFLICKR = os.path.join(os.path.dirname(_ROOT), 'shared', 'data',
                          'mirflickr25k', 'mirflickr25k-lall.mat')


def load_labels(num_query: int, num_db: int, source: str, seed: int
               ) -> tuple[np.ndarray, np.ndarray, str]:
  """(query labels, database labels, description)."""
  rng = np.random.default_rng(seed)
  if source in ('auto', 'mirflickr') and os.path.exists(_MIRFLICKR):
    from scipy import io as scipy_io  # pylint: disable=g-import-not-at-top
    labels = scipy_io.loadmat(_MIRFLICKR)['LAll'].astype(np.uint8)
    if num_query + num_db > len(labels):
      raise ValueError(f'MIRFLICKR-25K has {len(labels)} items; asked for '
                       f'{num_query} + {num_db}.')
    perm = rng.permutation(len(labels))
    return (labels[perm[:num_query]], labels[perm[num_query:num_query +
                                                 num_db]],
            f'MIRFLICKR-25K LAll ({labels.shape[1]} labels, '
            f'{labels.sum(1).mean():.2f} per item)')
  if source == 'mirflickr':
    raise FileNotFoundError(f'{_MIRFLICKR} is absent.')
  num_labels, per_item = 24, 3.8
  labels = np.empty((num_query + num_db, num_labels), dtype=np.uint8)
  for start in range(0, len(labels), _CHUNK):  # chunks: a small memory peak
    chunk = rng.random((min(_CHUNK, len(labels) - start), num_labels)) < (
        per_item / num_labels)
    empty = ~chunk.any(axis=1)
    chunk[empty, rng.integers(0, num_labels, int(empty.sum()))] = True
    labels[start:start + len(chunk)] = chunk
  return (labels[:num_query], labels[num_query:],
          f'synthetic ({num_labels} labels, {labels.sum(1).mean():.2f} '
          'per item)')


def random_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
  """[n, bits] int8 ±1, drawn in chunks (a small memory peak)."""
  codes = np.empty((n, bits), dtype=np.int8)
  for start in range(0, n, _CHUNK):
    rows = min(_CHUNK, n - start)
    codes[start:start + rows] = np.where(rng.random((rows, bits)) < 0.5, -1,
                                         1)
  return codes


def peer_calc_map(query_codes: np.ndarray, db_codes: np.ndarray,
                  query_labels: np.ndarray, db_labels: np.ndarray, *,
                  kind: str = 'quicksort') -> np.ndarray:
  """DCMH's `calc_map` (NumPy): per query a float matmul, argsort, AP.

  Returns the per-query AP ([Q] float64, 0 without relevant items).
  """
  qb = query_codes.astype(np.float32)
  rb = db_codes.astype(np.float32)
  ql = query_labels.astype(np.float32)
  rl = db_labels.astype(np.float32)
  bits = qb.shape[1]
  ap = np.zeros(len(qb))
  for i in range(len(qb)):
    gnd = (ql[i] @ rl.T > 0).astype(np.float32)
    tsum = int(gnd.sum())
    if tsum == 0:
      continue
    hamm = 0.5 * (bits - rb @ qb[i])
    ind = np.argsort(hamm, kind=kind)
    gnd = gnd[ind]
    count = np.linspace(1, tsum, tsum)
    tindex = np.asarray(np.where(gnd == 1)).ravel() + 1.0
    ap[i] = np.mean(count / tindex)
  return ap


def best_of(fn, repeats: int) -> tuple[float, float, object]:
  """(best seconds, median seconds, last result) over `repeats` calls."""
  times, result = [], None
  for _ in range(repeats):
    tic = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - tic)
  return min(times), float(np.median(times)), result


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def embeddings(rng: np.random.Generator, labels: np.ndarray, dim: int
              ) -> np.ndarray:
  """[M, dim] float32: labels [M, L] times one N(0, 1) vector per label, plus
  N(0, 2^2) noise (real-valued embeddings whose ranking means something)."""
  centers = rng.standard_normal((labels.shape[1], dim))
  return (labels.astype(np.float64) @ centers + 2 * rng.standard_normal(
      (len(labels), dim))).astype(np.float32)


def cosine_row(query: np.ndarray, db: np.ndarray, query_labels: np.ndarray,
               db_labels: np.ndarray, block: int, threads: int
              ) -> dict[str, float]:
  """Time, mAP@all and allocated-memory peak of one cosine evaluation."""
  options = ranking.EvalOptions(ties=('index',), top_k=(), precision_at=(),
                                ndcg_k=(), radius_curve=False,
                                cosine_block=block, num_threads=threads)
  tracemalloc.start()
  try:
    base = tracemalloc.get_traced_memory()[0]
    tic = time.perf_counter()
    qm = cosine.cosine_query_metrics(query, db, query_labels, db_labels,
                                     options)
    seconds = time.perf_counter() - tic
    peak = tracemalloc.get_traced_memory()[1] - base
  finally:
    tracemalloc.stop()
  # The float64 copies of the embeddings made inside (and their norms).
  copies = (query.size + db.size + len(query) + len(db)) * 8
  return {'cosine_block': block, 'queries': len(query), 'database': len(db),
          'seconds': seconds, 'map': float(qm.ap['index'].mean()),
          'peak_mib': peak / 2**20, 'input_copies_mib': copies / 2**20,
          'working_mib': (peak - copies) / 2**20}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--queries', type=int, default=2000)
  parser.add_argument('--database', type=int, default=18015)
  parser.add_argument('--bits', type=int, default=64)
  parser.add_argument('--labels', choices=('auto', 'mirflickr', 'synthetic'),
                      default='auto')
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--peer_repeats', type=int, default=2)
  parser.add_argument('--threads', type=int, default=0,
                      help='our query-block threads (0: min(4, cpu count))')
  parser.add_argument('--check_queries', type=int, default=200,
                      help='queries of the stable-argsort equality check')
  parser.add_argument('--stream_database', type=int, default=0)
  parser.add_argument('--stream_queries', type=int, default=5000)
  parser.add_argument('--stream_only', action='store_true',
                      help='run only the streamed evaluation (a clean peak '
                           'memory figure)')
  parser.add_argument('--db_block', type=int,
                      default=ranking.EvalOptions().db_block)
  parser.add_argument('--cosine_dim', type=int, default=128,
                      help='D of the cosine rows (0: none)')
  parser.add_argument('--cosine_blocks', default='2048,8192',
                      help='cosine_block values of the streamed rows')
  parser.add_argument('--cosine_scale', type=int, default=4,
                      help='database multiple of the scaling row (0: none)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', default=os.path.join(_ROOT, 'benchmarks',
                                                    'results',
                                                    'evaluate.json'))
  args = parser.parse_args(argv)

  if args.stream_only:
    args.queries, args.database, args.repeats = 1, 1, 0
  ql, dl, label_text = load_labels(args.queries, args.database, args.labels,
                                   args.seed)
  rng = np.random.default_rng(args.seed + 1)
  qc = random_codes(rng, args.queries, args.bits)
  dc = random_codes(rng, args.database, args.bits)
  base = dict(top_k=(), precision_at=(), ndcg_k=(), radius_curve=False,
              num_threads=args.threads)
  configs = {
      'ours, index order (default ties)':
          ranking.EvalOptions(ties=('index',), **base),
      'ours, tie-aware':
          ranking.EvalOptions(ties=('tie_aware',), **base),
      'ours, full suite (all metrics, both tie policies)':
          ranking.EvalOptions(num_threads=args.threads),
  }
  rows = {}
  for name, options in (configs.items() if args.repeats else ()):
    ranking.hamming_query_metrics(qc, dc, ql, dl, options)  # compile
    best, median, qm = best_of(
        lambda o=options: ranking.hamming_query_metrics(qc, dc, ql, dl, o),
        args.repeats)
    s = summary.summarize(qm, 'zero')
    rows[name] = {'best_s': best, 'median_s': median, 'map': s['map']}

  max_diff = None
  if rows:
    best, median, peer_ap = best_of(
        lambda: peer_calc_map(qc, dc, ql, dl), args.peer_repeats)
    peer_name = 'peers: float matmul + argsort per query (DCMH calc_map)'
    rows[peer_name] = {'best_s': best, 'median_s': median,
                       'map': {'index': float(peer_ap.mean())}}
    for row in rows.values():
      row['speedup_vs_peers'] = best / row['best_s']
    check = slice(0, min(args.check_queries, args.queries))
    ours_ap = metrics.average_precision(qc[check], dc, ql[check], dl)
    stable_ap = peer_calc_map(qc[check], dc, ql[check], dl, kind='stable')
    max_diff = float(np.abs(ours_ap - stable_ap).max())

  stream = None
  if args.stream_database:
    srng = np.random.default_rng(args.seed + 2)
    s_ql, s_dl, s_text = load_labels(args.stream_queries, args.stream_database,
                                     'synthetic', args.seed + 3)
    s_qc = random_codes(srng, args.stream_queries, args.bits)
    s_dc = random_codes(srng, args.stream_database, args.bits)
    rss_before = peak_rss_mib()
    for ties in ('index', 'tie_aware'):
      options = ranking.EvalOptions(ties=(ties,), db_block=args.db_block,
                                    **base)
      tic = time.perf_counter()
      qm = ranking.hamming_query_metrics(s_qc, s_dc, s_ql, s_dl, options)
      stream = stream or {}
      stream[ties] = {'seconds': time.perf_counter() - tic,
                      'map': float(qm.ap[ties].mean())}
    stream.update({'queries': args.stream_queries,
                   'database': args.stream_database,
                   'db_block': args.db_block, 'labels': s_text,
                   'input_mib': (s_qc.nbytes + s_dc.nbytes + s_ql.nbytes +
                                 s_dl.nbytes) / 2**20,
                   'peak_rss_mib_before': rss_before,
                   'peak_rss_mib_after': peak_rss_mib()})

  cosine_rows = []
  if args.cosine_dim and not args.stream_only:
    crng = np.random.default_rng(args.seed + 4)
    emb = embeddings(crng, np.concatenate([ql, dl]), args.cosine_dim)
    qe, de = emb[:args.queries], emb[args.queries:]
    blocks = [int(b) for b in args.cosine_blocks.split(',') if b.strip()]
    for block in blocks + [args.database]:
      cosine_rows.append(cosine_row(qe, de, ql, dl, block, args.threads))
      cosine_rows[-1]['route'] = ('whole database (old route)'
                                  if block >= args.database else 'streamed')
    if args.cosine_scale > 1:
      # Fewer queries (the working memory is per query block, not per
      # query), the largest streamed block (fewer sweeps).
      scale_q = min(args.queries, 128)
      big_ql, big_dl, _ = load_labels(scale_q,
                                      args.database * args.cosine_scale,
                                      'synthetic', args.seed + 5)
      big = embeddings(crng, np.concatenate([big_ql, big_dl]),
                       args.cosine_dim)
      cosine_rows.append(cosine_row(big[:scale_q], big[scale_q:], big_ql,
                                    big_dl, max(blocks), args.threads))
      cosine_rows[-1]['route'] = f'streamed, {args.cosine_scale}x database'

  lines = []
  if rows:
    lines += _table_lines(args, label_text, rows, max_diff)
  if cosine_rows:
    lines += [''] + _cosine_lines(args, cosine_rows)
  if stream:
    lines += ['', f'streamed: {stream["queries"]} queries x '
                  f'{stream["database"]} items, {args.bits} bits, db_block '
                  f'{stream["db_block"]}: index order '
                  f'{stream["index"]["seconds"]:.1f} s, tie-aware '
                  f'{stream["tie_aware"]["seconds"]:.1f} s; peak RSS '
                  f'{stream["peak_rss_mib_before"]:.0f} MiB before, '
                  f'{stream["peak_rss_mib_after"]:.0f} MiB after (inputs '
                  f'{stream["input_mib"]:.0f} MiB)']
  table = '\n'.join(lines).strip()
  print(table)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w', encoding='utf-8') as f:
    json.dump({'args': vars(args), 'labels': label_text,
               'map_only_engine': _engine(),
               'machine': {'cpu_count': os.cpu_count(),
                           'blas_threads': os.environ['OPENBLAS_NUM_THREADS'],
                           'platform': platform.platform(),
                           'load_average': os.getloadavg()},
               'rows': rows, 'stable_check_max_abs_diff': max_diff,
               'cosine': {
                   'rows': cosine_rows,
                   'memory_bound': (
                       'working memory (allocated during the call, less the '
                       "inputs' float64 copies) O(query block x "
                       'cosine_block) per thread, independent of N; see '
                       'the working_mib of each row'),
                   'working_mib_by_block': {
                       str(r['cosine_block']): r['working_mib']
                       for r in cosine_rows if r['route'] == 'streamed'},
               },
               'stream': stream, 'table': table}, f, indent=2)
  return 0


def _engine() -> str:
  """How `ranking` sums mAP@all alone in index order in this process."""
  if precision_sums.AVAILABLE:
    return 'counting pass (numba)'
  return 'NumPy sort route (numba is not installed)'


def _cosine_lines(args, rows) -> list[str]:
  """The printed table of the cosine rows."""
  lines = [f'cosine mAP@all (index order), D = {args.cosine_dim} real '
           'embeddings, one direction; memory = '
           'peak allocated during the call (tracemalloc); working = less the '
           "inputs' float64 copies", '',
           f'{"route":<34}  {"Q":>5}  {"N":>7}  {"block":>6}  {"s":>7}  '
           f'{"mAP":>8}  {"peak MiB":>8}  {"working MiB":>11}',
           '-' * 101]
  for r in rows:
    lines.append(f'{r["route"]:<34}  {r["queries"]:>5}  {r["database"]:>7}  '
                 f'{r["cosine_block"]:>6}  {r["seconds"]:7.2f}  '
                 f'{r["map"]:8.5f}  {r["peak_mib"]:8.1f}  '
                 f'{r["working_mib"]:11.1f}')
  return lines


def _table_lines(args, label_text, rows, max_diff) -> list[str]:
  """The printed table of the timed rows."""
  header = (f'mAP@all, {args.queries} queries x {args.database} items, '
            f'{args.bits} bits, one direction; labels: {label_text}; '
            f'{os.cpu_count()} CPU cores, threads={args.threads or "auto"}; '
            f'best of {args.repeats} (peers: best of {args.peer_repeats})')
  width = max(len(n) for n in rows)
  lines = [header, '',
           f'{"method".ljust(width)}  {"best s":>8}  {"median s":>8}  '
           f'{"mAP (index)":>11}  {"mAP (tie-aware)":>15}  {"speed-up":>8}',
           '-' * (width + 60)]
  for name, row in rows.items():
    idx = row['map'].get('index')
    tie = row['map'].get('tie_aware')
    lines.append(
        f'{name.ljust(width)}  {row["best_s"]:8.3f}  {row["median_s"]:8.3f}  '
        f'{"-" if idx is None else f"{idx:.6f}":>11}  '
        f'{"-" if tie is None else f"{tie:.6f}":>15}  '
        f'{row["speedup_vs_peers"]:7.1f}x')
  lines += ['', f'index-order mAP@all alone: {_engine()}.',
            f'check: our index-order AP vs the peers\' AP with a stable '
                f'argsort, {min(args.check_queries, args.queries)} queries: '
                f'max |diff| = {max_diff:.1e}',
            'note: the peers\' default (unstable) argsort breaks ties '
            'arbitrarily, so its mAP differs from both policies.']
  return lines


if __name__ == '__main__':
  sys.exit(main())
