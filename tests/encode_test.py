"""From a trained run to index files: run artifacts, encoding, appending."""
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import scipy.io

from crossmodal_hash import encoding
from crossmodal_hash import run_artifacts
from crossmodal_hash.data import registry as data_registry
from crossmodal_hash.data import splits
from crossmodal_hash.evaluation import report
from crossmodal_hash.retrieval import index as index_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _typed(value):
  """The value with its container types spelled out, for exact comparison."""
  if isinstance(value, dict):
    return ('dict', sorted((k, _typed(v)) for k, v in value.items()))
  if isinstance(value, (tuple, list)):
    return (type(value).__name__, [_typed(v) for v in value])
  return (type(value).__name__, value)


@pytest.mark.parametrize('path', sorted(glob.glob(
    os.path.join(REPO_ROOT, 'configs', '*.py'))))
def test_every_config_round_trips_exactly(path):
  spec = importlib.util.spec_from_file_location('cfg', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  back = run_artifacts.config_from_json(json.loads(json.dumps(
      run_artifacts.config_to_json(config))))
  assert _typed(back.to_dict()) == _typed(config.to_dict())
  assert back.is_locked
  # The hash ignores what may change on resume, and sees what may not.
  config.unlock()
  before = run_artifacts.config_sha256(config)
  config.eval.batch_size += 8
  assert run_artifacts.config_sha256(config) == before
  config.seed += 1
  assert run_artifacts.config_sha256(config) != before


def test_run_json_holds_what_encoding_needs(trained_run):
  info = run_artifacts.read(trained_run)
  assert info.config.model.discriminator_hidden == (32, 16)  # a tuple
  assert info.image_shape == (16, 16, 3) and info.image_dtype == 'uint8'
  assert len(info.vocabulary) == info.text_dim == 200
  assert len(info.label_names) == info.num_labels == 8
  split = splits.load(os.path.join(trained_run, 'split.npz'))
  assert info.split_sha256 == splits.checksum(split)
  assert info.num_train == len(split.train)
  assert info.image_stats[0].shape == (3,)


@pytest.fixture(scope='module', name='run')
def _run(trained_run):
  return run_artifacts.load_run(trained_run)


def test_encoding_reproduces_the_runs_evaluation_codes(run, trained_run):
  """The restored checkpoint and saved statistics give the codes of the
  run's own final evaluation, from the workdir alone."""
  assert run.checkpoint == 'checkpoints/5'  # the latest; none selected
  codes = report.load_codes(os.path.join(trained_run, 'eval', 'codes.npz'))
  items = encoding.run_dataset_items(run.info, 'retrieval', trained_run)
  for modality, key in (('image', 'image_db'), ('text', 'text_db')):
    got = encoding.encode_items(run, modality, items.inputs(modality),
                                batch_size=64)
    np.testing.assert_array_equal(got, codes[key])


def test_write_append_and_refusals(run, trained_run, tmp_path):
  out = str(tmp_path / 'index')
  query = encoding.run_dataset_items(run.info, 'query', trained_run)
  retrieval = encoding.run_dataset_items(run.info, 'retrieval', trained_run)
  encoding.write(run, out, query, ['image', 'text'], faiss=True)
  encoding.write(run, out, retrieval, ['image', 'text'])
  codes = report.load_codes(os.path.join(trained_run, 'eval', 'codes.npz'))
  for modality in ('image', 'text'):
    index = encoding.load_index(encoding.index_path(out, modality), run)
    assert index.ids == query.ids + retrieval.ids
    assert index.metadata['modality'] == modality
    assert index.metadata['config_sha256'] == run.info.config_sha256
    assert index.metadata['checkpoint'] == 'checkpoints/5'
    expected = np.concatenate([codes[f'{modality}_query'],
                               codes[f'{modality}_db']])
    np.testing.assert_array_equal(
        index.packed, index_lib.HammingIndex.from_codes(expected).packed)
    records = encoding.read_records(encoding.items_path(out, modality))
    assert [r['id'] for r in records] == index.ids
    first = int(query.ids[0])
    data = data_registry.DATASETS.get(run.info.config.dataset.name)(
        run.info.config.dataset)
    assert records[0]['labels'] == [run.info.label_names[j] for j in
                                    np.flatnonzero(data.labels[first])]
    assert os.path.isfile(os.path.join(out, f'{modality}.faiss'))
  with pytest.raises(ValueError, match='already holds'):
    encoding.write(run, out, query, ['text'])

  # Another checkpoint of the same run, selected the way model selection
  # records its best one: checkpoint 4, kept in best/checkpoints.
  selected = shutil.copytree(trained_run, str(tmp_path / 'selected_run'))
  shutil.copytree(os.path.join(selected, 'checkpoints', '4'),
                  os.path.join(selected, 'best', 'checkpoints', '4'))
  shutil.rmtree(os.path.join(selected, 'checkpoints', '4'))
  with open(os.path.join(selected, run_artifacts.SELECTED_NAME), 'w') as f:
    json.dump({'pass': 4, 'step': 64, 'directory': 'best/checkpoints'}, f)
  older = run_artifacts.load_run(selected)
  assert older.checkpoint == 'best/checkpoints/4' and older.step < run.step
  with pytest.raises(encoding.RunMismatchError,
                     match=r'image\.cmhidx was encoded by run .*checkpoint '
                           r'checkpoints/5.*but the checkpoint is .*'
                           r'checkpoint best/checkpoints/4'):
    encoding.write(older, out, query, ['image'])
  assert run_artifacts.load_run(trained_run,
                                checkpoint=4).step == older.step
  # Another run: its config hash differs.
  other = shutil.copytree(trained_run, str(tmp_path / 'other_run'))
  record = report.read_json(os.path.join(other, run_artifacts.RUN_NAME))
  record['config_sha256'] = 'f' * 64
  report.write_json(os.path.join(other, run_artifacts.RUN_NAME), record)
  with pytest.raises(encoding.RunMismatchError,
                     match=f'encoded by run {trained_run}.*config_sha256 '
                           f'{run.info.config_sha256[:12]}.*checkpoint is '
                           f'{other}.*config_sha256 ffffffffffff'):
    encoding.write(run_artifacts.load_run(other), out, query, ['image'])
  for modality in ('image', 'text'):  # Nothing was written by the refusals.
    assert len(index_lib.HammingIndex.load(
        encoding.index_path(out, modality))) == len(query.ids) + len(
            retrieval.ids)


def test_raw_inputs_and_other_layouts_give_the_same_codes(run, trained_run,
                                                          tmp_path):
  data = data_registry.DATASETS.get(run.info.config.dataset.name)(
      run.info.config.dataset)
  rows = np.arange(10, 26)
  expected = {m: encoding.encode_items(run, m, x[rows])
              for m, x in (('image', data.images), ('text', data.texts))}
  # Image files (PNG, the run's size: no resize) and raw tag lines.
  paths = []
  for r in rows:
    paths.append(str(tmp_path / f'item{r}.png'))
    PIL.Image.fromarray(data.images[r]).save(paths[-1])
  tags = tmp_path / 'tags.txt'
  tags.write_text('\n'.join(' '.join(run.info.vocabulary[j].upper()
                                     for j in np.flatnonzero(data.texts[r]))
                            + ' not_a_tag' for r in rows) + '\n')
  raw = encoding.raw_items(run.info, image_spec=str(tmp_path / 'item*.png'),
                           tag_lines=str(tags))
  assert sorted(raw.ids) == sorted(paths)
  order = [paths.index(p) for p in raw.ids]  # glob order
  for m in ('image', 'text'):
    got = encoding.encode_items(run, m, raw.inputs(m))
    np.testing.assert_array_equal(got, expected[m][order] if m == 'image'
                                  else expected[m])
  # The same items as a DCMH-layout .mat file.
  mat = str(tmp_path / 'items.mat')
  scipy.io.savemat(mat, {'images': data.images[rows],
                         'YAll': data.texts[rows], 'LAll': data.labels[rows]})
  other = encoding.dataset_items(run.info, mat, 'auto', {})
  assert other.ids[0] == 'items.mat:0'
  assert other.records[3]['image'] == {'data': {'path': mat, 'format': 'auto',
                                                'options': {}}, 'row': 3}
  for m in ('image', 'text'):
    np.testing.assert_array_equal(
        encoding.encode_items(run, m, other.inputs(m)), expected[m])
  with pytest.raises(ValueError, match='unknown options'):
    encoding.dataset_items(run.info, mat, 'auto', {'colour': 'red'})
  with pytest.raises(FileNotFoundError, match='nothing.png: no such image'):
    encoding.raw_items(run.info, image_spec=str(tmp_path / 'nothing.png'))


def test_command_line(trained_run, tmp_path):
  out = str(tmp_path / 'cli_index')
  command = [sys.executable, '-m', 'crossmodal_hash.encode',
             f'--workdir={trained_run}', f'--out={out}', '--items=query',
             '--modalities=image']
  result = subprocess.run(command, capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'image: ' in result.stdout and '96 items encoded' in result.stdout
  assert not os.path.exists(encoding.index_path(out, 'text'))
  index = index_lib.HammingIndex.load(encoding.index_path(out, 'image'))
  assert len(index) == 96
