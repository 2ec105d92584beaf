"""The user path of a run of real-valued embeddings: encode, search, serve.

A tiny SSAL run (feature inputs, 2 steps) is encoded into cosine index files;
the Engine (what `search` and `serve` run) is checked against a float64 NumPy
brute force over the run's own evaluation embeddings, `search` on the command
line (slow), the service's JSON API (in a thread, over HTTP on 127.0.0.1)
and its web page in headless chromium (as serve_test's) against the Engine; `--sign_codes` gives the Hamming index of the sign()
codes, which equal the run's eval/codes.npz; mixing kinds is refused naming
the file. A tiny MHTN run (BatchNorm statistics in its state) goes the same
way (slow).
"""
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import uvicorn

from crossmodal_hash import encoding
from crossmodal_hash import engine as engine_lib
from crossmodal_hash import run_artifacts
from crossmodal_hash import serve
from crossmodal_hash.data import builtin
from crossmodal_hash.evaluation import report
from crossmodal_hash.retrieval import cosine
from crossmodal_hash.retrieval import index as index_lib
from crossmodal_hash.trainers import per_step
import serve_test

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM = 8


@pytest.fixture(scope='module', name='workdir')
def _workdir(tmp_path_factory):
  """A tiny SSAL synthetic run on feature vectors (no rotations)."""
  import ssal_synthetic  # pylint: disable=g-import-not-at-top
  config = ssal_synthetic.get_config(','.join([
      f'bits={DIM}', 'model.text_hidden=32', 'model.projector_hidden=16',
      'model.adversary_hidden=16', 'model.image_encoder=feature_mlp',
      'model.image_mlp_features=32', 'model.image_normalization=standardize',
      'ssal.num_steps=2', 'eval.every_steps=0',
      'train.checkpoint_every_steps=2', 'train.checkpoint_every_seconds=0',
      'train.progress=false', 'eval.batch_size=64', 'eval.plots=false',
      'eval.random_baseline=false']))
  with config.unlocked():
    config.dataset = builtin.synthetic_dataset_config(
        'synthetic_features', num_items=300, num_query=40, num_train=128)
    config.dataset.num_val = 0
    config.dataset.num_labels = 6
    config.dataset.vocab_size = 200
    config.dataset.feature_dim = 24
  workdir = str(tmp_path_factory.mktemp('ssal_run'))
  per_step.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module', name='indexed')
def _indexed(workdir, tmp_path_factory):
  """(run, cosine index directory, its Engine)."""
  run = run_artifacts.load_run(workdir)
  out = str(tmp_path_factory.mktemp('cosine_index'))
  written = encoding.write(run, out, encoding.run_dataset_items(
      run.info, 'retrieval', workdir), ['image', 'text'])
  assert set(written) == {'image', 'text'}
  return run, out, engine_lib.Engine(run, out)


def test_encode_writes_the_runs_normalised_embeddings(indexed, workdir):
  run, out, engine = indexed
  assert engine.kind == 'cosine' and engine.dim == DIM
  saved = report.load_codes(os.path.join(workdir, 'eval', 'embeddings.npz'))
  for modality in ('image', 'text'):
    index = index_lib.load(encoding.index_path(out, modality))
    assert isinstance(index, index_lib.CosineIndex)
    assert index.metadata['modality'] == modality
    assert index.metadata['config_sha256'] == run.info.config_sha256
    np.testing.assert_allclose(index.embeddings,
                               cosine.normalize(saved[f'{modality}_db']),
                               atol=1e-6)
    assert len(encoding.read_records(encoding.items_path(out, modality))) == (
        len(index))


def test_engine_ranks_by_cosine_like_the_float64_reference(indexed):
  _, _, engine = indexed
  names = engine.info.label_names
  texts = [f'{names[0]} {names[3]} not_a_tag', names[5]]
  bow = engine.text_inputs(texts)
  emb = engine.encode('text', bow)
  assert emb.dtype == np.float32 and emb.shape == (2, DIM)
  answers = engine.query('text', bow, k=500)  # k > N: every item once.
  for target, got in (('image', answers),
                      ('text', engine.query('text', bow, k=7, intra=True))):
    index = engine.indexes[target]
    ref_index, ref_sim = cosine.numpy_topk(emb, index.embeddings,
                                           k=len(got[0]))
    for answer, want, sims in zip(got, ref_index, ref_sim):
      assert [r['index'] for r in answer] == want[want >= 0].tolist()
      np.testing.assert_allclose([r['similarity'] for r in answer],
                                 sims[want >= 0], atol=1e-5)
      assert [r['id'] for r in answer] == [index.ids[i] for i in
                                           want[want >= 0]]
      assert all('distance' not in r for r in answer)
  assert len(answers[0]) == len(engine.indexes['image'])
  table = engine_lib.format_table('q', answers[1][:3])
  assert '    cos' in table and f'{answers[1][0]["similarity"]:.4f}' in table


def test_sign_codes_give_a_hamming_index_and_kinds_do_not_mix(
    indexed, workdir, tmp_path):
  run, out, _ = indexed
  items = encoding.run_dataset_items(run.info, 'retrieval', workdir)
  signs = str(tmp_path / 'signs')
  encoding.write(run, signs, items, ['image', 'text'], sign_codes=True)
  engine = engine_lib.Engine(run, signs)
  assert engine.kind == 'hamming'
  codes = report.load_codes(os.path.join(workdir, 'eval', 'codes.npz'))
  reference = index_lib.HammingIndex.from_codes(codes['image_db'])
  np.testing.assert_array_equal(engine.indexes['image'].packed,
                                reference.packed)
  bow = engine.text_inputs([engine.info.label_names[1]])
  [answer] = engine.query('text', bow, k=5)
  want, dist = reference.search(engine.encode('text', bow), 5)
  assert [r['index'] for r in answer] == want[0].tolist()
  assert [r['distance'] for r in answer] == dist[0].tolist()
  # Appending embeddings to the sign-code index, or back, is refused.
  with pytest.raises(index_lib.IndexFileError,
                     match=r'signs/image\.cmhidx: a hamming index of sign'):
    encoding.write(run, signs, items, ['image'])
  with pytest.raises(index_lib.IndexFileError,
                     match=r'image\.cmhidx: a cosine index of real-valued'):
    encoding.write(run, out, items, ['image'], sign_codes=True)
  with pytest.raises(ValueError, match='--faiss writes'):
    encoding.write(run, str(tmp_path / 'f'), items, ['image'], faiss=True)
  # One directory with one index of each kind.
  mixed = tmp_path / 'mixed'
  mixed.mkdir()
  for name, source in (('image', out), ('text', signs)):
    for suffix in ('.cmhidx', '.items.jsonl'):
      (mixed / f'{name}{suffix}').write_bytes(
          open(os.path.join(source, name + suffix), 'rb').read())
  with pytest.raises(index_lib.IndexFileError, match='indexes of two kinds'):
    engine_lib.Engine(run, str(mixed))


@pytest.mark.slow  # A subprocess: JAX and the run restored again (~5 s).
def test_search_command_line_on_a_cosine_index(indexed, workdir):
  _, out, engine = indexed
  tag = engine.info.label_names[2]
  got = subprocess.run(
      [sys.executable, '-m', 'crossmodal_hash.search', f'--workdir={workdir}',
       f'--index={out}', f'--text={tag}', '--k=4', '--json'],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, check=False)
  assert got.returncode == 0, got.stderr[-3000:]
  [answer] = json.loads(got.stdout)
  [expected] = engine.query('text', engine.text_inputs([tag]), k=4)
  assert answer['ranking'] == 'cosine' and answer['searched'] == 'image'
  assert answer['results'] == expected


def _get(base, path, data=None):
  request = urllib.request.Request(base + path, data=data, headers={
      'Content-Type': 'application/json'} if data else {})
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


@contextlib.contextmanager
def _serving(engine):
  """The service of `engine` in a thread on a free local port: its URL."""
  limits = serve.Limits(max_k=20, max_batch=8, max_wait_ms=5)
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  server = uvicorn.Server(uvicorn.Config(serve.create_app(engine, limits),
                                         host='127.0.0.1', port=port,
                                         log_level='warning'))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  try:
    deadline = time.time() + 60
    while not server.started:
      assert thread.is_alive() and time.time() < deadline
      time.sleep(0.05)
    yield f'http://127.0.0.1:{port}'
  finally:
    server.should_exit = True
    thread.join(timeout=30)


def test_service_json_api_on_a_cosine_index(indexed):
  _, _, engine = indexed
  with _serving(engine) as base:
    status, health = _get(base, '/health')
    assert status == 200 and health['ranking'] == 'cosine'
    assert health['dim'] == DIM
    names = engine.info.label_names
    query = urllib.parse.urlencode({'text': f'{names[0]} {names[4]}', 'k': 6})
    status, body = _get(base, f'/api/search?{query}')
    assert status == 200, body
    [expected] = engine.query('text', engine.text_inputs(
        [f'{names[0]} {names[4]}']), k=6)
    assert body['ranking'] == 'cosine' and body['results'] == expected
    status, body = _get(base, '/api/search', json.dumps(
        {'text': names[1], 'k': 3, 'intra': True}).encode())
    [expected] = engine.query('text', engine.text_inputs([names[1]]), k=3,
                              intra=True)
    assert status == 200 and body['results'] == expected
    status, body = _get(base, '/api/search?text=zebra')
    assert status == 400 and 'None of the tags' in body['detail']


def test_web_page_shows_cosine_similarities(indexed):
  """The page in headless chromium (serve_test's browser; skips, saying why,
  without one): a text query's cards in the Engine's order, each with its
  cosine similarity (`data-similarity`, and 'cos=' to 3 decimals), no
  Hamming distance."""
  _, _, engine = indexed
  browser, reason = serve_test.headless_browser()
  if browser is None:
    pytest.skip(reason)
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  names = engine.info.label_names
  text = f'{names[1]} {names[3]}'
  [expected] = engine.query('text', engine.text_inputs([text]), k=5)
  try:
    with _serving(engine) as base:
      browser.get(base + '/')
      wait = WebDriverWait(browser, 60)
      wait.until(lambda b: 'checkpoint' in b.find_element(By.ID, 'run').text)
      browser.find_element(By.ID, 'query').send_keys(text)
      k = browser.find_element(By.ID, 'k')
      k.clear()
      k.send_keys('5')
      browser.find_element(By.ID, 'search').click()
      wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR,
                                               '.result')) == 5)
      cards = browser.find_elements(By.CSS_SELECTOR, '.result')
      assert [c.get_attribute('data-id') for c in cards] == [
          str(r['id']) for r in expected]
      assert [float(c.get_attribute('data-similarity')) for c in cards] == [
          r['similarity'] for r in expected]
      assert all(c.get_attribute('data-distance') is None for c in cards)
      assert f'cos={expected[0]["similarity"]:.3f}' in cards[0].text
  finally:
    browser.quit()


@pytest.mark.slow  # A second training run (~30 s).
def test_an_mhtn_run_is_encoded_and_searched_by_cosine(tmp_path):
  import mhtn_synthetic  # pylint: disable=g-import-not-at-top
  config = mhtn_synthetic.get_config(','.join([
      'dataset.num_items=300', 'dataset.num_query=40',
      'dataset.num_train=128', 'dataset.num_val=0', 'dataset.num_labels=8',
      'dataset.vocab_size=200', 'dataset.feature_dim=24',
      'source_dataset.num_items=48', 'source_dataset.num_labels=5',
      'source_dataset.feature_dim=24', 'source_dataset.batch_size=16',
      'model.stem_widths=32;24', 'model.semantic_widths=32;16',
      'model.bottleneck=16', 'model.discriminator_hidden=16;8',
      'mhtn.num_steps=3', 'mhtn.embedding=centered_softmax',
      'train.batch_size=32', 'train.checkpoint_every_steps=3',
      'train.checkpoint_every_seconds=0', 'train.progress=false',
      'eval.every_steps=0', 'eval.batch_size=32', 'eval.plots=false',
      'eval.random_baseline=false']))
  workdir = str(tmp_path / 'run')
  per_step.train_and_evaluate(config, workdir)
  run = run_artifacts.load_run(workdir)
  out = str(tmp_path / 'index')
  encoding.write(run, out, encoding.run_dataset_items(run.info, 'retrieval',
                                                      workdir),
                 ['image', 'text'])
  engine = engine_lib.Engine(run, out)
  saved = report.load_codes(os.path.join(workdir, 'eval', 'embeddings.npz'))
  num_labels = saved['text_db'].shape[1]
  assert engine.kind == 'cosine' and engine.dim == num_labels
  np.testing.assert_allclose(engine.indexes['text'].embeddings,
                             cosine.normalize(saved['text_db']), atol=1e-6)
  bow = engine.text_inputs([engine.info.label_names[3]])
  [answer] = engine.query('text', bow, k=20)
  want, sims = cosine.numpy_topk(engine.encode('text', bow),
                                 engine.indexes['image'].embeddings, k=20)
  assert [r['index'] for r in answer] == want[0].tolist()
  np.testing.assert_allclose([r['similarity'] for r in answer], sims[0],
                             atol=1e-5)
