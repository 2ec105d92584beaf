"""The search service over HTTP on 127.0.0.1, and its page in a real browser.

The server is `python -m crossmodal_hash.serve` in a subprocess; answers are
checked against `engine.Engine` (what `search` runs) on the same index. The
browser test drives Debian's headless chromium through selenium and skips,
saying why, when either is missing (`.ci/run` installs chromium and
chromium-driver with apt-get). Set CMH_SCREENSHOT_DIR to keep the page's
screenshot there (it goes to the test's tmp_path otherwise).
"""
import concurrent.futures
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import numpy as np
import PIL.Image
import pytest

from crossmodal_hash import encoding
from crossmodal_hash import engine as engine_lib
from crossmodal_hash import run_artifacts
from crossmodal_hash.data import registry as data_registry

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_K = 50


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Client:
  """Tiny HTTP client (urllib): (status, JSON or bytes)."""

  def __init__(self, base):
    self.base = base

  def request(self, path, data=None, headers=None, method=None):
    req = urllib.request.Request(self.base + path, data=data,
                                 headers=headers or {}, method=method)
    try:
      with urllib.request.urlopen(req, timeout=60) as response:
        status, body, kind = (response.status, response.read(),
                              response.headers.get('content-type', ''))
    except urllib.error.HTTPError as e:
      status, body, kind = e.code, e.read(), e.headers.get('content-type', '')
    return status, json.loads(body) if 'json' in kind else body

  def text(self, text, k=10, **extra):
    query = urllib.parse.urlencode(dict(text=text, k=k, **extra))
    return self.request(f'/api/search?{query}')

  def upload(self, data, k=10, filename='q.png'):
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n'
            f'{k}\r\n--{boundary}\r\nContent-Disposition: form-data; '
            f'name="image"; filename="{filename}"\r\nContent-Type: '
            'application/octet-stream\r\n\r\n').encode() + data + (
                f'\r\n--{boundary}--\r\n').encode()
    return self.request('/api/search/image', body, {
        'Content-Type': f'multipart/form-data; boundary={boundary}'})


def _png(pixels):
  buffer = io.BytesIO()
  PIL.Image.fromarray(pixels).save(buffer, format='PNG')
  return buffer.getvalue()


@pytest.fixture(scope='module', name='service')
def _service(trained_run, tmp_path_factory):
  """(client, engine on the same index, the run's dataset, server process)."""
  run = run_artifacts.load_run(trained_run)
  out = str(tmp_path_factory.mktemp('serve_index'))
  encoding.write(run, out, encoding.run_dataset_items(run.info, 'retrieval',
                                                      trained_run),
                 ['image', 'text'])
  port = _free_port()
  log = open(tmp_path_factory.mktemp('serve_log') / 'server.log', 'w+')
  server = subprocess.Popen(
      [sys.executable, '-m', 'crossmodal_hash.serve',
       f'--workdir={trained_run}', f'--index={out}', f'--port={port}',
       f'--max_k={MAX_K}', '--max_batch=16', '--max_wait_ms=20',
       '--max_image_bytes=20000'],
      cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
  client = Client(f'http://127.0.0.1:{port}')
  deadline = time.time() + 300
  while True:
    try:
      if client.request('/health')[0] == 200:
        break
    except OSError:
      pass
    if server.poll() is not None or time.time() > deadline:
      log.seek(0)
      server.kill()
      pytest.fail(f'The server did not start:\n{log.read()[-3000:]}')
    time.sleep(0.5)
  data = data_registry.DATASETS.get(run.info.config.dataset.name)(
      run.info.config.dataset)
  yield client, engine_lib.Engine(run, out), data, server
  server.terminate()
  server.wait(timeout=30)
  log.close()


def test_text_and_image_search_equal_the_engine(service):
  client, engine, data, _ = service
  names = engine.info.label_names
  for text, k in ((names[0], 10), (f'{names[1]} {names[4]} zebra', 3),
                  (names[6].upper(), MAX_K)):
    status, body = client.text(text, k)
    assert status == 200, body
    [expected] = engine.query('text', engine.text_inputs([text]), k=k)
    assert body['results'] == expected
    assert body['searched'] == 'image'
  assert body['unknown_tags'] == []
  status, body = client.text(names[2], 4, intra='true')
  assert body['searched'] == 'text'
  status, body = client.request(
      '/api/search', json.dumps({'text': names[3], 'k': 6}).encode(),
      {'Content-Type': 'application/json'})
  [expected] = engine.query('text', engine.text_inputs([names[3]]), k=6)
  assert status == 200 and body['results'] == expected
  row = int(engine.indexes['text'].ids[5])
  status, body = client.upload(_png(data.images[row]), k=7)
  assert status == 200, body
  [expected] = engine.query('image', data.images[row:row + 1], k=7)
  assert body['searched'] == 'text' and body['results'] == expected


def test_concurrent_queries_are_batched_and_all_correct(service):
  client, engine, _, _ = service
  names = engine.info.label_names
  texts = [f'{names[i % 8]} {names[(3 * i) % 8]}' for i in range(48)]
  before = client.request('/health')[1]
  with concurrent.futures.ThreadPoolExecutor(24) as pool:
    answers = list(pool.map(lambda t: client.text(t, 5), texts))
  after = client.request('/health')[1]
  expected = engine.query('text', engine.text_inputs(texts), k=5)
  for (status, body), want in zip(answers, expected):
    assert status == 200 and body['results'] == want
  queries = after['queries'] - before['queries']
  batches = after['batches'] - before['batches']
  assert queries == 48 and batches < 48  # Several queries per batch.


def test_bad_input_gets_4xx_and_the_server_lives_on(service):
  client, engine, data, server = service
  cases = {
      'empty text': (client.text('   '), 400, 'empty'),
      'unknown tags': (client.text('dog sky beach'), 400, 'None of the tags'),
      'k = 0': (client.text(engine.info.label_names[0], 0), 422,
                'out of range'),
      'k > max': (client.text(engine.info.label_names[0], MAX_K + 1), 422,
                  f'1 to {MAX_K}'),
      'k not a number': (client.request('/api/search?text=a&k=ten'), 422,
                         'int'),
      'corrupt image': (client.upload(b'\x89PNG\r\n\x1a\n broken'), 400,
                        'cannot be decoded'),
      'oversized image': (client.upload(_png(np.random.default_rng(0).integers(
          0, 255, (120, 120, 3), np.uint8))), 413, 'limit'),
      'malformed body': (client.request(
          '/api/search', b'{"text": ', {'Content-Type': 'application/json'}),
                         422, 'JSON'),
      'no image field': (client.request(
          '/api/search/image', b'k=3',
          {'Content-Type': 'application/x-www-form-urlencoded'}), 422,
                         'image'),
      'unknown item': (client.request('/api/items/image/99999'), 404,
                       'has'),
  }
  for name, ((status, body), want, text) in cases.items():
    assert status == want, (name, body)
    assert text in json.dumps(body), (name, body)
  assert server.poll() is None
  status, body = client.text(engine.info.label_names[0], 2)
  assert status == 200 and len(body['results']) == 2
  status, item = client.request('/api/items/image/3')
  assert status == 200 and item['id'] == engine.indexes['image'].ids[3]
  status, png = client.request('/api/items/image/3/image')
  pixels = np.asarray(PIL.Image.open(io.BytesIO(png)))
  np.testing.assert_array_equal(pixels, data.images[int(item['id'])])


def headless_browser():
  """A headless chromium WebDriver, or None with the reason."""
  try:
    from selenium import webdriver  # pylint: disable=g-import-not-at-top
    from selenium.webdriver.chrome import service as chrome_service  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None, 'selenium is not installed (pip install -e ".[test]")'
  binary = next(filter(None, map(shutil.which, ('chromium', 'chromium-browser',
                                                 'google-chrome'))), None)
  driver = shutil.which('chromedriver')
  if not binary or not driver:
    return None, ('no headless browser: apt-get install chromium '
                  'chromium-driver (.ci/run does)')
  options = webdriver.ChromeOptions()
  options.binary_location = binary
  for arg in ('--headless=new', '--no-sandbox', '--disable-gpu',
              '--disable-dev-shm-usage', '--window-size=1280,900'):
    options.add_argument(arg)
  return webdriver.Chrome(options=options,
                          service=chrome_service.Service(driver)), None


def test_web_page_in_a_headless_browser(service, tmp_path):
  client, engine, _, _ = service
  browser, reason = headless_browser()
  if browser is None:
    pytest.skip(reason)
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support import expected_conditions  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  names = engine.info.label_names
  text = f'{names[0]} {names[2]}'
  try:
    browser.get(client.base + '/')
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: 'checkpoint' in b.find_element(By.ID, 'run').text)
    box = browser.find_element(By.ID, 'query')
    box.send_keys(text)
    k = browser.find_element(By.ID, 'k')
    k.clear()
    k.send_keys('8')
    browser.find_element(By.ID, 'search').click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, '.result')) == 8)
    # Every result image has loaded (naturalWidth > 0).
    wait.until(lambda b: b.execute_script(
        "return [...document.querySelectorAll('.result img')]"
        '.every(i => i.complete && i.naturalWidth > 0)'))
    cards = browser.find_elements(By.CSS_SELECTOR, '.result')
    [expected] = engine.query('text', engine.text_inputs([text]), k=8)
    assert [c.get_attribute('data-id') for c in cards] == [
        r['id'] for r in expected]
    assert [int(c.get_attribute('data-distance')) for c in cards] == [
        r['distance'] for r in expected]
    assert ', '.join(expected[0]['labels']) in cards[0].text
    shots = os.environ.get('CMH_SCREENSHOT_DIR') or str(tmp_path)
    os.makedirs(shots, exist_ok=True)
    shot = os.path.join(shots, 'serve_page.png')
    assert browser.save_screenshot(shot) and os.path.getsize(shot) > 1000
    # A bad query shows the server's message, not results.
    box.clear()
    box.send_keys('dog sky beach')
    browser.find_element(By.ID, 'search').click()
    wait.until(expected_conditions.text_to_be_present_in_element(
        (By.ID, 'status'), 'None of the tags'))
    assert not browser.find_elements(By.CSS_SELECTOR, '.result')
  finally:
    browser.quit()
