"""A run's files through etils.epath: local paths, and gs:// on epath's mock.

`epath.testing.mock_epath` replaces every epath backend; the `gcs` fixture's
backend keeps gs://bucket/... under a temporary folder. The working directory
is an empty folder that must stay empty: a gs:// path that reached `open` or
`os.makedirs` instead of epath would land there as ./gs:/bucket/...
"""
import os

from etils import epath
from etils.epath import gpath
import numpy as np
import pytest

from crossmodal_hash import cli
from crossmodal_hash import encoding
from crossmodal_hash import evaluate
from crossmodal_hash import data as data_lib  # Registers the datasets.
from crossmodal_hash import file_io
from crossmodal_hash import logging_utils
from crossmodal_hash import run_artifacts
from crossmodal_hash.data import formats
from crossmodal_hash.data import protocols
from crossmodal_hash.data import splits
from crossmodal_hash.data import types
from crossmodal_hash.evaluation import plots
from crossmodal_hash.evaluation import report
from crossmodal_hash.evaluation import suite
from crossmodal_hash.models import cnnf_weights
from crossmodal_hash.retrieval import index as index_lib

_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
RUN = 'gs://bucket/runs/one'


@pytest.fixture(name='gcs')
def _gcs(tmp_path, monkeypatch):
  """Yields the local folder that holds gs://; the cwd is checked empty."""
  root = tmp_path / 'gcs'
  root.mkdir()
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  # With TensorFlow installed epath sends gs:// to tf.io.gfile, whatever the
  # backend table says.
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)

  def local(path):
    path = os.fspath(path)
    return str(root / path[len('gs://'):]) if path.startswith('gs://') else path

  def one(fn, path, *args, **kwargs):
    return fn(local(path), *args, **kwargs)

  def two(fn, path, dst, *args, **kwargs):
    return fn(local(path), local(dst), *args, **kwargs)

  with epath.testing.mock_epath(
      open=one, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one,
      remove=one, rmtree=one, stat=one, rename=two, replace=two, copy=two):
    yield root
  assert not os.listdir(cwd), 'a gs:// path was used as a local one'


def _split():
  return types.Split(query=np.arange(3), retrieval=np.arange(3, 10),
                     train=np.arange(3, 8), val=np.zeros(0, np.int64))


@pytest.mark.parametrize('where', ['local', 'gcs'])
def test_file_io_writes_atomically_and_reads_back(where, tmp_path, request):
  if where == 'gcs':
    request.getfixturevalue('gcs')
    root = 'gs://bucket/x'
  else:
    root = str(tmp_path / 'local')
  path = os.path.join(root, 'a', 'b.npz')
  assert not file_io.exists(path)
  file_io.save_npz(path, x=np.arange(4), y=np.ones((2, 2), np.float32))
  assert file_io.isfile(path) and not file_io.isfile(os.path.dirname(path))
  loaded = file_io.load_npz(path)
  np.testing.assert_array_equal(loaded['x'], np.arange(4))
  assert loaded['y'].dtype == np.float32
  with pytest.raises(RuntimeError):  # A failed write keeps the old file.
    file_io.atomic_write(path, lambda f: (_ for _ in ()).throw(
        RuntimeError('disk full')))
  np.testing.assert_array_equal(file_io.load_npz(path)['x'], np.arange(4))
  assert file_io.listdir(os.path.join(root, 'a')) == ['b.npz']
  assert file_io.listdir(os.path.join(root, 'missing')) == []
  assert file_io.absolute(path) == (os.path.abspath(path) if where == 'local'
                                    else path)


def test_split_and_metrics_in_object_storage(gcs):
  path = f'{RUN}/split.npz'
  split = splits.reuse_or_save(path, _split())
  assert (gcs / 'bucket/runs/one/split.npz').is_file()
  assert splits.checksum(splits.load(path)) == splits.checksum(split)
  other = types.Split(query=np.arange(4), retrieval=np.arange(4, 10),
                      train=np.arange(4, 8), val=np.zeros(0, np.int64))
  with pytest.raises(splits.SplitMismatchError, match='gs://bucket'):
    splits.reuse_or_save(path, other)

  metrics = f'{RUN}/metrics.jsonl'
  with logging_utils.MetricsWriter(metrics, enabled=True) as writer:
    for p in range(3):
      writer.write({'pass': p, 'loss': np.float32(1.0 / (p + 1))})
    # Uploaded whole after each record: readable while the run goes on.
    assert len(logging_utils.read_metrics(metrics)) == 3
  # A resumed run cuts the records of the passes it repeats, then appends.
  with logging_utils.MetricsWriter(metrics, enabled=True,
                                   resume_pass=2) as writer:
    writer.write({'pass': 2, 'loss': 0.25})
  assert [(r['pass'], r['loss']) for r in logging_utils.read_metrics(
      metrics)] == [(0, 1.0), (1, 0.5), (2, 0.25)]
  plots.plot_training_curves(metrics, f'{RUN}/eval/training_curves.png')
  assert (gcs / 'bucket/runs/one/eval/training_curves.png').read_bytes()[:8] == (
      _PNG_MAGIC)


def test_run_record_report_and_plots_in_object_storage(gcs, tiny_config):
  config = tiny_config()
  data = data_lib.DATASETS.get('synthetic')(config.dataset)
  split = protocols.split_for_run(data, config.dataset, RUN, write=True)
  stats = (np.zeros(3, np.float32), np.ones(3, np.float32))
  run_artifacts.save(RUN, config, data, split, stats, splits.checksum(split))
  info = run_artifacts.read(RUN)
  assert info.split_sha256 == splits.checksum(split)
  assert info.config_sha256 == run_artifacts.config_sha256(config)
  np.testing.assert_array_equal(info.image_stats[1], stats[1])
  assert run_artifacts.selected_checkpoint(RUN) == ('checkpoints', None)
  report.write_json(f'{RUN}/selected_checkpoint.json',
                    {'pass': 4, 'directory': 'best/checkpoints'})
  assert run_artifacts.selected_checkpoint(RUN) == ('best/checkpoints', 4)
  # A re-run's resume point counts orbax's finished (bare-number) steps.
  for name in ('2', '4', '6.orbax-checkpoint-tmp-1'):
    file_io.makedirs(f'{RUN}/checkpoints/{name}')
  assert cli.resume_pass(RUN) == 4

  rng = np.random.default_rng(0)
  codes = {k: np.where(rng.standard_normal((n, 16)) >= 0, 1, -1)
           for k, n in (('image_query', 5), ('text_query', 5),
                        ('image_db', 20), ('text_db', 20))}
  labels_q, labels_db = rng.integers(0, 2, (5, 4)), rng.integers(0, 2, (20, 4))
  results = suite.evaluate_codes({'trained': codes}, labels_q, labels_db,
                                 out_dir=f'{RUN}/eval', plots=True)
  assert results['files'][0] == f'{RUN}/eval/evaluation.json'
  assert report.read_json(results['files'][0])['map'] == results['map']
  for name in ('pr_curves.png', 'precision_at_n.png', 'map.png'):
    assert (gcs / 'bucket/runs/one/eval' / name).read_bytes()[:8] == _PNG_MAGIC
  report.save_codes(f'{RUN}/eval/codes.npz', **codes, query_labels=labels_q)
  np.testing.assert_array_equal(
      report.load_codes(f'{RUN}/eval/codes.npz')['image_db'], codes['image_db'])


def test_evaluate_cli_reads_and_writes_object_storage(gcs, capsys):
  rng = np.random.default_rng(2)
  labels_q, labels_db = rng.integers(0, 2, (6, 3)), rng.integers(0, 2, (25, 3))
  for name, bits in (('a/codes.npz', 8), ('b/codes.npz', 16)):
    report.save_codes(f'{RUN}/eval/{name}', query_labels=labels_q,
                      retrieval_labels=labels_db, **{
                          k: np.where(rng.standard_normal((n, bits)) >= 0,
                                      1, -1)
                          for k, n in (('image_query', 6), ('text_db', 25))})
  assert evaluate.find_code_files(f'{RUN}/eval') == [
      f'{RUN}/eval/a/codes.npz', f'{RUN}/eval/b/codes.npz']
  assert evaluate.main(['--codes', f'{RUN}/eval', '--no_plots']) == 0
  written = report.read_json(f'{RUN}/eval/evaluate/evaluation.json')
  assert written['codes'] == f'{RUN}/eval'
  assert sorted(written['map']) == ['a/codes (8 bits)', 'b/codes (16 bits)']
  assert 'I->T' in capsys.readouterr().out


def test_index_files_in_object_storage(gcs):
  rng = np.random.default_rng(1)
  codes = np.where(rng.standard_normal((30, 24)) >= 0, 1, -1)
  index = index_lib.HammingIndex(24, metadata={'modality': 'image'})
  index.add(codes, ids=[f'item{i}' for i in range(30)])
  index.save(f'{RUN}/index/image.cmhidx')
  index.export_faiss(f'{RUN}/index/image.faiss')
  assert sorted(os.listdir(gcs / 'bucket/runs/one/index')) == [
      'image.cmhidx', 'image.faiss']
  loaded = index_lib.HammingIndex.load(f'{RUN}/index/image.cmhidx', bits=24)
  assert loaded.ids == index.ids and loaded.metadata == index.metadata
  np.testing.assert_array_equal(loaded.packed, index.packed)
  from_faiss = index_lib.HammingIndex.import_faiss(f'{RUN}/index/image.faiss',
                                                   bits=24)
  np.testing.assert_array_equal(from_faiss.packed, index.packed)
  assert encoding.read_records(f'{RUN}/index/image.items.jsonl') == []


def _png(rgb: np.ndarray) -> bytes:
  import io  # pylint: disable=g-import-not-at-top
  import PIL.Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  PIL.Image.fromarray(rgb).save(buffer, format='PNG')
  return buffer.getvalue()


def test_datasets_and_pretrained_weights_in_object_storage(gcs, monkeypatch):
  """Dataset files, folders, listed images and the CNN-F weights read from
  gs:// (staged to local copies: h5py, scipy.io and PIL read local files),
  equal to the same files read locally; a missing object is named."""
  rng = np.random.default_rng(3)
  feats = {'image': rng.standard_normal((6, 5)).astype(np.float32),
           'text': rng.standard_normal((6, 4)).astype(np.float32),
           'label': rng.integers(0, 3, 6)}
  file_io.save_npz('gs://bucket/data/feats.npz', **feats)
  remote = formats.load('gs://bucket/data/feats.npz')
  local = formats.load(str(gcs / 'bucket/data/feats.npz'))
  for field in ('images', 'texts', 'labels'):
    np.testing.assert_array_equal(getattr(remote, field), getattr(local, field))
  np.testing.assert_array_equal(remote.images, feats['image'])

  # The 'files' layout: a folder with an image list (one image beside it,
  # one named by URL elsewhere in the bucket), texts and labels.
  pixels = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
  file_io.atomic_write('gs://bucket/files/a.png',
                       lambda f: f.write(_png(pixels[0])))
  file_io.atomic_write('gs://bucket/elsewhere/b.png',
                       lambda f: f.write(_png(pixels[1])))
  file_io.write_text('gs://bucket/files/list.txt',
                     'a.png\ngs://bucket/elsewhere/b.png\n')
  file_io.write_text('gs://bucket/files/texts.txt', '1 0 1\n0 1 0\n')
  file_io.write_text('gs://bucket/files/labels.txt', '1 0\n0 1\n')
  data = formats.load('gs://bucket/files', options=formats.Options(
      image_list='list.txt', text_file='texts.txt', label_file='labels.txt',
      image_size=8))
  np.testing.assert_array_equal(np.asarray(data.images[np.arange(2)]), pixels)
  np.testing.assert_array_equal(data.texts, [[1, 0, 1], [0, 1, 0]])
  # A list named by URL names its images relative to its own folder.
  file_io.write_text('gs://bucket/elsewhere/list.txt', 'b.png\n')
  file_io.write_text('gs://bucket/files/text1.txt', '0 1 0\n')
  file_io.write_text('gs://bucket/files/label1.txt', '0 1\n')
  data = formats.load(str(gcs / 'bucket/files'), options=formats.Options(
      image_list='gs://bucket/elsewhere/list.txt', text_file='text1.txt',
      label_file='label1.txt', image_size=8))
  np.testing.assert_array_equal(np.asarray(data.images[np.arange(1)]),
                                pixels[1:])
  file_io.write_text('gs://bucket/files/list.txt', 'gs://bucket/nothing.png\n')
  with pytest.raises(FileNotFoundError, match='gs://bucket/nothing.png'):
    formats.load('gs://bucket/files', options=formats.Options(
        image_list='list.txt', text_file='texts.txt',
        label_file='labels.txt'))

  # config.model.pretrained_cnnf: scipy.io reads a staged copy.
  seen = []

  def load(local_path):
    with open(local_path, 'rb') as f:
      seen.append(f.read())
    return {}, np.zeros(3)

  monkeypatch.setattr(cnnf_weights, 'load_matconvnet_cnnf', load)
  file_io.atomic_write('gs://bucket/vgg-f.mat', lambda f: f.write(b'MATLAB'))
  loaded = cnnf_weights.maybe_load('gs://bucket/vgg-f.mat', 'cnnf')
  assert seen == [b'MATLAB'] and loaded.path == 'gs://bucket/vgg-f.mat'
  with pytest.raises(FileNotFoundError, match='gs://bucket/none.mat'):
    cnnf_weights.maybe_load('gs://bucket/none.mat', 'cnnf')
