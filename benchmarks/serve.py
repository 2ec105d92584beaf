r"""Load test of the search service on localhost, against a single-query loop.

  python benchmarks/serve.py --workdir=runs/ssah_synthetic \
      [--index=runs/ssah_synthetic/index] [--requests=512] \
      [--concurrency=1,8,32] [--k=10] [--out=benchmarks/results]

Needs a trained run with an index (README, "Use a trained model": train, then
`python -m crossmodal_hash.encode --workdir=...`). It starts
`python -m crossmodal_hash.serve` on 127.0.0.1 (a free port), waits for
/health, sends the same fixed list of `--requests` text queries (pairs of the
run's label names) at each concurrency from as many client threads, and
measures each request's latency and the wall time of all. The baseline is a
single-query loop in this process over the same index: `engine.Engine.query`
for one query at a time (encode one query, search it), which is what the
service would do without batching, minus HTTP.

Every HTTP answer must be 200 and equal the baseline's answer for the same
query; the script exits 1 otherwise. It prints a table (queries/s, p50 and
p99 latency in ms, failures) and writes it as JSON (`serve.json` in --out).
Client threads and the server share the machine's cores.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash import engine as engine_lib
from crossmodal_hash import run_artifacts
# pylint: enable=g-import-not-at-top,wrong-import-position


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default=os.path.join(_ROOT, 'runs',
                                                        'ssah_synthetic'))
  parser.add_argument('--index', default=None)
  parser.add_argument('--requests', type=int, default=512)
  parser.add_argument('--concurrency', default='1,8,32')
  parser.add_argument('--k', type=int, default=10)
  parser.add_argument('--max_batch', type=int, default=64)
  parser.add_argument('--max_wait_ms', type=float, default=2.0)
  parser.add_argument('--out', default=os.path.join(_ROOT, 'benchmarks',
                                                    'results'))
  return parser.parse_args(argv)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
  try:
    with urllib.request.urlopen(url, timeout=120) as response:
      return response.status, response.read()
  except urllib.error.HTTPError as e:
    return e.code, e.read()


def queries(info: run_artifacts.RunInfo, n: int) -> list[str]:
  """n fixed text queries: pairs of label names (or vocabulary words)."""
  names = info.label_names or info.vocabulary
  return [f'{names[i % len(names)]} {names[(7 * i + 3) % len(names)]}'
          for i in range(n)]


def summarize(latencies: list[float], wall: float, failures: int
             ) -> dict[str, float]:
  ms = np.asarray(latencies) * 1000
  return {'requests': len(latencies), 'seconds': wall,
          'queries_per_second': len(latencies) / wall,
          'p50_ms': float(np.percentile(ms, 50)),
          'p99_ms': float(np.percentile(ms, 99)), 'failed': failures}


def baseline(engine: engine_lib.Engine, texts: list[str], k: int
            ) -> tuple[dict[str, float], list[list[dict]]]:
  """The single-query loop: one encode and one search per query."""
  engine.query('text', engine.text_inputs(texts[:1]), k=k)  # compile
  latencies, answers = [], []
  start = time.perf_counter()
  for text in texts:
    tic = time.perf_counter()
    answers.append(engine.query('text', engine.text_inputs([text]), k=k)[0])
    latencies.append(time.perf_counter() - tic)
  return summarize(latencies, time.perf_counter() - start, 0), answers


def load(base: str, texts: list[str], k: int, concurrency: int,
         expected: list[list[dict]]) -> dict[str, float]:
  """Sends every query once from `concurrency` threads."""

  def one(i):
    url = base + '/api/search?' + urllib.parse.urlencode({'text': texts[i],
                                                         'k': k})
    tic = time.perf_counter()
    status, body = _get(url)
    seconds = time.perf_counter() - tic
    ok = status == 200 and json.loads(body)['results'] == expected[i]
    return seconds, ok

  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    results = list(pool.map(one, range(len(texts))))
  wall = time.perf_counter() - start
  return summarize([s for s, _ in results], wall,
                   sum(not ok for _, ok in results))


def main(argv=None) -> int:
  args = parse_args(argv)
  index = args.index or os.path.join(args.workdir, 'index')
  run = run_artifacts.load_run(args.workdir)
  engine = engine_lib.Engine(run, index)
  texts = queries(run.info, args.requests)
  rows = {}
  rows['single-query loop (in process, no HTTP)'], expected = baseline(
      engine, texts, args.k)

  port = _free_port()
  server = subprocess.Popen(
      [sys.executable, '-m', 'crossmodal_hash.serve',
       f'--workdir={args.workdir}', f'--index={index}', f'--port={port}',
       f'--max_batch={args.max_batch}', f'--max_wait_ms={args.max_wait_ms}'],
      cwd=_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  base = f'http://127.0.0.1:{port}'
  try:
    deadline = time.time() + 600
    while True:
      try:
        if _get(base + '/health')[0] == 200:
          break
      except OSError:
        pass
      if server.poll() is not None or time.time() > deadline:
        raise RuntimeError('The server did not start: ' +
                           (server.stderr.read() if server.poll() is not None
                            else 'timeout'))
      time.sleep(0.5)
    load(base, texts[:32], args.k, 8, expected[:32])  # warm the HTTP path
    for c in (int(x) for x in args.concurrency.split(',')):
      rows[f'service, concurrency {c}'] = load(base, texts, args.k, c,
                                               expected)
    health = json.loads(_get(base + '/health')[1])
  finally:
    server.terminate()
    server.wait(timeout=60)

  loop_qps = rows['single-query loop (in process, no HTTP)'][
      'queries_per_second']
  header = (f'| setting | queries/s | p50 ms | p99 ms | failed | vs loop |\n'
            f'|---|---|---|---|---|---|')
  lines = [header] + [
      f'| {name} | {r["queries_per_second"]:.1f} | {r["p50_ms"]:.2f} | '
      f'{r["p99_ms"]:.2f} | {r["failed"]} | '
      f'{r["queries_per_second"] / loop_qps:.2f}x |' for name, r in rows.items()]
  table = '\n'.join(lines)
  sizes = {m: len(i) for m, i in engine.indexes.items()}
  print(f'{args.requests} text queries, k={args.k}, index {sizes}, '
        f'{run.info.config.bits} bits; server max_batch={args.max_batch}, '
        f'max_wait_ms={args.max_wait_ms}; {health["queries"]} queries in '
        f'{health["batches"]} batches')
  print(table)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'serve.json'), 'w') as f:
    json.dump({'rows': rows, 'requests': args.requests, 'k': args.k,
               'index_sizes': sizes, 'bits': int(run.info.config.bits),
               'batches': health['batches'], 'queries': health['queries'],
               'machine': platform.platform(), 'cpus': os.cpu_count()},
              f, indent=1)
  return 1 if any(r['failed'] for r in rows.values()) else 0


if __name__ == '__main__':
  sys.exit(main())
