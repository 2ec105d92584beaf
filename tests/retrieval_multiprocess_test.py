"""Sharded search over a mesh that spans two processes (4 CPU devices each)."""
import os
import socket
import subprocess
import sys

import numpy as np

import conftest
import multiprocess_search_worker as worker
from crossmodal_hash.retrieval import search

TESTS = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_process_search_equals_one_process(tmp_path):
  port = _free_port()
  env = conftest.subprocess_env()  # 4 devices each, not the suite's 8
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(TESTS, 'multiprocess_search_worker.py'),
       str(i), str(port), str(tmp_path / f'{i}.npz')], env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  logs = []
  try:
    for proc in procs:
      logs.append(proc.communicate(timeout=TIMEOUT_S)[0])
  finally:
    for proc in procs:  # bounded: never leave a process behind
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for proc, log in zip(procs, logs):
    assert proc.returncode == 0, log[-3000:]
  db, query = worker.codes()
  ref_index, ref_dist = search.search(query, db, k=worker.K, bits=worker.BITS)
  for i in range(2):
    result = np.load(tmp_path / f'{i}.npz')
    assert int(result['process_count']) == 2
    np.testing.assert_array_equal(result['dist'], np.asarray(ref_dist))
    np.testing.assert_array_equal(result['index'], np.asarray(ref_index))
