"""Queries against a run's index files: the Engine and the command line."""
import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from crossmodal_hash import encoding
from crossmodal_hash import engine as engine_lib
from crossmodal_hash import run_artifacts
from crossmodal_hash.data import registry as data_registry

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module', name='indexed')
def _indexed(trained_run, tmp_path_factory):
  """(engine, index directory, the run's dataset) over its retrieval set."""
  run = run_artifacts.load_run(trained_run)
  out = str(tmp_path_factory.mktemp('search_index'))
  encoding.write(run, out, encoding.run_dataset_items(run.info, 'retrieval',
                                                      trained_run),
                 ['image', 'text'])
  data = data_registry.DATASETS.get(run.info.config.dataset.name)(
      run.info.config.dataset)
  return engine_lib.Engine(run, out), out, data


def _brute_force(query_code, index, k):
  """(ids, distances) of the top k by (Hamming distance, index)."""
  codes = np.array([[1 if (w >> b) & 1 else -1 for w in row
                     for b in range(32)][:index.bits] for row in index.packed])
  dist = np.sum(codes != query_code[None, :], axis=1)
  order = np.lexsort((np.arange(len(dist)), dist))[:k]
  return [index.ids[i] for i in order], dist[order].tolist()


def test_text_query_is_cross_modal_and_exact(indexed):
  engine, _, _ = indexed
  names = engine.info.label_names
  text = f'{names[0]} {names[3].upper()} unknown_word'
  bow = engine.text_inputs([text])
  assert bow.sum() == 2
  code = engine.encode('text', bow)[0]
  [answer] = engine.query('text', bow, k=15)
  ids, dist = _brute_force(code, engine.indexes['image'], 15)
  assert [r['id'] for r in answer] == ids
  assert [r['distance'] for r in answer] == dist
  assert [r['rank'] for r in answer] == list(range(1, 16))
  assert engine.unknown_tags(text) == ['unknown_word']
  [intra] = engine.query('text', bow, k=5, intra=True)
  ids, _ = _brute_force(code, engine.indexes['text'], 5)
  assert [r['id'] for r in intra] == ids


def test_image_query_finds_its_own_text(indexed):
  engine, _, data = indexed
  row = int(engine.indexes['text'].ids[7])
  [answer] = engine.query('image', data.images[row:row + 1], k=600)
  assert len(answer) == len(engine.indexes['text'])  # k above the size
  code = engine.encode('image', data.images[row:row + 1])[0]
  ids, _ = _brute_force(code, engine.indexes['text'], 600)
  assert [r['id'] for r in answer] == ids
  assert answer[0]['labels'] is not None and answer[0]['tags'] is not None


def test_bad_queries_are_refused_clearly(indexed):
  engine, _, _ = indexed
  with pytest.raises(engine_lib.QueryError, match='empty'):
    engine.text_inputs(['  '])
  with pytest.raises(engine_lib.QueryError, match="None of the tags"):
    engine.text_inputs(['dog sky beach'])
  with pytest.raises(engine_lib.QueryError, match='cannot be decoded'):
    engine_lib.decode_image_bytes(b'GIF89a-not-really', (16, 16, 3))
  with pytest.raises(engine_lib.QueryError, match='is empty'):
    engine_lib.decode_image_bytes(b'', (16, 16, 3))


def test_command_line_table_and_json(indexed, trained_run, tmp_path):
  engine, out, data = indexed
  tag = engine.info.label_names[2]
  base = [sys.executable, '-m', 'crossmodal_hash.search',
          f'--workdir={trained_run}', f'--index={out}', '--k=4']
  png = str(tmp_path / 'query.png')
  row = int(engine.indexes['text'].ids[0])
  PIL.Image.fromarray(data.images[row]).save(png)
  queries = tmp_path / 'queries.txt'
  queries.write_text(f'{tag}\n\n{engine.info.label_names[5]} x\n')
  runs = {
      'text': base + [f'--text={tag}', '--json'],
      'file': base + [f'--query_file={queries}', '--json'],
      'image': base + [f'--image={png}'],
      'bad': base + ['--text=dog sky'],
  }
  got = {name: subprocess.run(cmd, capture_output=True, text=True,
                              cwd=REPO_ROOT, timeout=300, check=False)
         for name, cmd in runs.items()}
  assert got['text'].returncode == 0, got['text'].stderr[-3000:]
  [answer] = json.loads(got['text'].stdout)
  [expected] = engine.query('text', engine.text_inputs([tag]), k=4)
  assert answer['searched'] == 'image' and answer['results'] == expected
  answers = json.loads(got['file'].stdout)
  assert [a['query'] for a in answers] == [tag,
                                           f'{engine.info.label_names[5]} x']
  assert answers[0]['results'] == expected
  assert answers[1]['unknown_tags'] == ['x']
  table = got['image'].stdout
  assert got['image'].returncode == 0, got['image'].stderr[-3000:]
  assert '(image -> text)' in table and 'rank  id' in table
  assert len([l for l in table.splitlines() if l[:4].strip().isdigit()]) == 4
  assert got['bad'].returncode == 2
  assert 'None of the tags' in got['bad'].stderr
