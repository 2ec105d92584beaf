"""End to end: train on the 8-device mesh, checkpoint, resume, evaluate."""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import conftest
from conftest import TINY_OVERRIDES
from crossmodal_hash import checkpointing
from crossmodal_hash import data as data_lib  # Registers the datasets.
from crossmodal_hash import evaluate as evaluate_cli
from crossmodal_hash.data import formats
from crossmodal_hash.data import lazy
from crossmodal_hash.data import mat_files
from crossmodal_hash.data import splits
from crossmodal_hash.data import synthetic
from crossmodal_hash.data import types
from crossmodal_hash.evaluation import ranking
from crossmodal_hash.evaluation import suite
from crossmodal_hash.trainers import alternating
from crossmodal_hash.trainers import streaming
import ssah_synthetic

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(workdir):
  """The params of the latest checkpoint in `workdir`, as host arrays."""
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  step = manager.latest_step()
  restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return step, jax.device_get(restored['state']['params'])


def _listing(directory):
  return sorted((os.path.relpath(os.path.join(d, f), directory),
                 os.path.getmtime(os.path.join(d, f)))
                for d, _, files in os.walk(directory) for f in files)


def _config(*extra):
  """The tiny SSAH synthetic config of conftest (usable in module fixtures)."""
  return ssah_synthetic.get_config(','.join((TINY_OVERRIDES,) + extra))


# One epoch: 5 passes (lab, dis, img, img, txt) of 8 batches; checkpoints
# after passes 2, 4 and 5.
ONE_EPOCH = ('ssah.num_epochs=1', 'train.checkpoint_every_passes=2')


@pytest.fixture(scope='module', name='straight_run')
def _straight_run(tmp_path_factory):
  """(workdir, results) of an uninterrupted device-placement run, plots on.

  The reference of the resumption tests; test_incompatible_checkpoint checks
  that refused runs leave this workdir untouched.
  """
  workdir = tmp_path_factory.mktemp('straight')
  results = alternating.train_and_evaluate(
      _config(*ONE_EPOCH, 'train.data_placement=device', 'eval.plots=true'),
      str(workdir))
  return workdir, results


def _records(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]


def test_killed_and_resumed_run_with_periodic_eval_ends_identically(
    straight_run, tmp_path):
  """Resumption is exact, and periodic evaluation changes nothing."""
  straight_dir, straight = straight_run
  config = _config(*ONE_EPOCH, 'eval.every_passes=1')
  # Killed after running 3 passes: the checkpoint after 2 survives, the work
  # of the 3rd (pass index 2) is lost and redone on resume.
  stopped = alternating.train_and_evaluate(config, str(tmp_path),
                                           stop_after_passes=3)
  assert stopped == {'stopped_at_pass': 3}
  resumed = alternating.train_and_evaluate(config, str(tmp_path))
  step_a, params_a = _params(str(straight_dir))
  step_b, params_b = _params(str(tmp_path))
  assert step_a == step_b == 5
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  assert straight['map'] == resumed['map']
  codes_a = np.load(straight_dir / 'eval' / 'codes.npz')
  codes_b = np.load(tmp_path / 'eval' / 'codes.npz')
  for key in codes_a.files:
    np.testing.assert_array_equal(codes_a[key], codes_b[key])
  # The resumed run cut the record of the lost pass 2 and redid it: every
  # pass is recorded once, and evaluated after every pass.
  records = _records(tmp_path)
  passes = [0, 1, 2, 3, 4]
  assert [r['pass'] for r in records if 'network' in r] == passes
  evals = [r for r in records if 'eval_map' in r]
  assert [r['pass'] for r in evals] == passes
  for r in evals:
    assert set(r['eval_map']) == {'i2t', 't2i', 'i2i', 't2t'}
    assert set(r['code_stats']) == {'image_query', 'text_query', 'image_db',
                                    'text_db'}
    assert all(0.0 < v <= 1.0 for v in r['eval_map'].values())
  # The last periodic mAP is the final headline mAP (same params, same ties).
  for d, v in evals[-1]['eval_map'].items():
    assert v == pytest.approx(resumed['map'][d], abs=1e-12)


def test_outputs_of_a_run_and_the_evaluate_command_on_them(straight_run,
                                                          tmp_path):
  workdir, results = straight_run
  for direction in ('i2t', 't2i', 'i2i', 't2t'):
    assert 0.0 < results['map'][direction] <= 1.0
    assert 0.0 < results['random_map'][direction] <= 1.0
  assert 'SSAH (16 bits)' in results['table']
  assert 'random codes (16 bits)' in results['table']
  assert 'mAP@100 (DCMH)' in results['table']
  saved = json.load(open(workdir / 'eval' / 'map.json'))
  assert saved['map'] == results['map']
  assert saved['random_map'] == results['random_map']
  assert (saved['ties'], saved['empty']) == ('index', 'zero')
  report = json.load(open(workdir / 'eval' / 'evaluation.json'))
  assert report['headline'] == {'metric': 'map', 'ties': 'index',
                                'empty': 'zero'}
  assert report['options']['ties'] == ['index', 'tie_aware']
  assert report['map']['SSAH (16 bits)'] == results['map']
  i2t = report['sets']['SSAH (16 bits)']['directions']['i2t']
  assert {'map', 'map_at_k', 'precision_at_n', 'ndcg_at_k',
          'pr_radius'} <= set(i2t)
  assert report['step'] == 40 and report['passes'] == 5
  codes = np.load(workdir / 'eval' / 'codes.npz')
  assert codes['image_query'].shape == (96, 16)
  assert codes['text_db'].shape == (600 - 96, 16)
  assert set(np.unique(codes['image_db'])) <= {-1, 1}
  for png in ('pr_curves.png', 'precision_at_n.png', 'map.png',
              'training_curves.png', 'examples.png'):
    with open(workdir / 'eval' / png, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  records = _records(workdir)
  assert {r['network'] for r in records} == {'lab', 'dis', 'img', 'txt'}
  assert os.path.exists(workdir / 'split.npz')
  # The evaluate command reads the saved codes and finds the same mAP.
  out = tmp_path / 'cli'
  assert evaluate_cli.main(['--codes', str(workdir / 'eval'), '--out',
                            str(out), '--no_plots']) == 0
  cli = json.load(open(out / 'evaluation.json'))['map']
  for name, expected in (('codes (16 bits)', results['map']),
                         ('random_codes (16 bits)', results['random_map'])):
    for d, v in expected.items():
      assert cli[name][d] == pytest.approx(v, abs=1e-12)


def _write_dcmh_mat(path, data):
  """`data` as the DCMH release's FLICKR-25K.mat (v7.3, images HxWx3xN)."""
  mat_files.save_v73(str(path), {'images': data.images.transpose(1, 2, 3, 0),
                                 'YAll': data.texts, 'LAll': data.labels})


def test_streamed_lazy_hdf5_run_resumes_to_the_device_runs_params(
    straight_run, tmp_path, monkeypatch):
  """The straight run's data as a lazy HDF5 .mat: 'auto' streams it.

  Streaming visits the same batches as the device placement, and on CPU both
  run the same per-batch programs (one batch per jitted call), so a streamed
  run killed and resumed ends with the device run's params bit for bit: this
  checks exact resumption of the stream and its equality with the device
  placement at once.
  """
  straight_dir, straight = straight_run
  config = _config(*ONE_EPOCH, 'dataset.name=custom')
  _write_dcmh_mat(tmp_path / 'FLICKR-25K.mat',
                  data_lib.DATASETS.get('synthetic')(config.dataset))
  config.dataset.path = str(tmp_path / 'FLICKR-25K.mat')
  # Images are only ever read a batch (or a statistics chunk) at a time.
  hdf5_images = type(formats.load(config.dataset.path).images)
  read_rows = hdf5_images._read_rows  # pylint: disable=protected-access
  largest = []

  def spy(self, rows):
    largest.append(len(rows))
    return read_rows(self, rows)

  def refuse(*args, **kwargs):
    raise AssertionError('a lazy image array was read whole')

  monkeypatch.setattr(hdf5_images, '_read_rows', spy)
  monkeypatch.setattr(lazy.LazyArray, '__array__', refuse)
  workdir = str(tmp_path / 'run')
  assert alternating.train_and_evaluate(config, workdir, stop_after_passes=3
                                       ) == {'stopped_at_pass': 3}
  resumed = alternating.train_and_evaluate(config, workdir)
  # At most the 256 training images at once, for their statistics; the 504
  # retrieval images are encoded in batches.
  assert largest and max(largest) <= 256
  ckpt = checkpointing.Checkpointer(workdir)
  assert ckpt.read_meta(5)['data_iterator']['placement'] == 'stream'
  ckpt.close()
  _, params_device = _params(str(straight_dir))
  _, params_stream = _params(workdir)
  jax.tree.map(np.testing.assert_array_equal, params_device, params_stream)
  assert resumed['map'] == straight['map']


def test_placement_choice():
  images = np.zeros((10, 4, 4, 3), np.uint8)  # 480 bytes.
  assert streaming.choose_placement('auto', images, 480) == 'device'
  assert streaming.choose_placement('auto', images, 479) == 'stream'
  assert streaming.choose_placement('stream', images, 1 << 30) == 'stream'
  assert streaming.choose_placement('device', images, 0) == 'device'

  class Lazy(lazy.LazyArray):

    def _read_rows(self, rows):
      return np.zeros((len(rows),) + self.shape[1:], self.dtype)

  assert streaming.choose_placement('auto', Lazy((10, 4, 4, 3), np.uint8,
                                                 'test'), 1 << 30) == 'stream'
  with pytest.raises(ValueError, match='data_placement'):
    streaming.choose_placement('host', images, 0)


def test_eval_options_are_config_fields_and_checked_early(tiny_config,
                                                         tmp_path):
  config = tiny_config()
  for field in dataclasses.fields(ranking.EvalOptions):
    assert field.name in config.eval, field.name
  assert suite.options_from_config(config.eval) == ranking.EvalOptions(
      ties=('index', 'tie_aware'), empty='zero')
  with pytest.raises(ValueError, match='no such field'):
    tiny_config('eval.tie=index')
  assert tiny_config('eval.top_k=').eval.top_k == ()
  for arg, match in (('eval.ties=index;random', 'ties must be'),
                     ('eval.empty=nan', 'empty must be'),
                     ('train.data_placement=host', 'data_placement')):
    with pytest.raises(ValueError, match=match):
      alternating.train_and_evaluate(tiny_config(arg), str(tmp_path))
  assert not os.listdir(tmp_path)


def test_features_variant_and_interleaved_schedule(tiny_config, tmp_path):
  config = tiny_config('dataset.name=synthetic_features',
                       'model.image_encoder=feature_mlp',
                       'ssah.schedule=interleaved')
  results = alternating.train_and_evaluate(config, str(tmp_path))
  assert set(results['map']) == {'i2t', 't2i', 'i2i', 't2t'}


def test_incompatible_checkpoint_or_split_is_refused_and_kept(straight_run):
  workdir = straight_run[0]
  before = _listing(workdir)
  with pytest.raises(alternating.IncompatibleCheckpointError,
                     match=r'bits: checkpoint 16, config 32'):
    alternating.train_and_evaluate(_config(*ONE_EPOCH, 'bits=32'),
                                   str(workdir))
  for arg in ('dataset.split_seed=1', 'dataset.num_query=64'):
    with pytest.raises(splits.SplitMismatchError,
                       match=r'split.npz holds a different split.*nothing was '
                       'overwritten'):
      alternating.train_and_evaluate(_config(*ONE_EPOCH, arg), str(workdir))
  assert _listing(workdir) == before


def test_foreign_checkpoint_is_refused(tiny_config, tmp_path):
  foreign = tmp_path / 'checkpoints' / '7'
  foreign.mkdir(parents=True)
  (foreign / 'model.pt').write_bytes(b'not ours')
  before = _listing(tmp_path)
  with pytest.raises(checkpointing.ForeignCheckpointError,
                     match='not a crossmodal_hash checkpoint'):
    alternating.train_and_evaluate(tiny_config(), str(tmp_path))
  assert _listing(tmp_path) == before


def test_batch_size_not_divisible_by_devices(tiny_config, tmp_path):
  with pytest.raises(ValueError, match=r'batch_size=36 is not divisible by '
                     r'the 8 devices'):
    alternating.train_and_evaluate(tiny_config('train.batch_size=36'),
                                   str(tmp_path))


@data_lib.DATASETS.register('synthetic_without_images_for_test')
def _texts_and_labels_only(c):
  data = synthetic.generate(c.num_items, synthetic.SyntheticConfig(
      num_labels=c.num_labels, vocab_size=c.vocab_size, image_size=16,
      feature_dim=c.feature_dim), c.seed)
  # What a split-file folder loaded with require_images=False gives.
  return types.MultiModalData(np.zeros((c.num_items, 0), np.float32),
                              data.texts, data.labels)


def test_texts_and_labels_alone_train_ssahs_text_side(tiny_config, tmp_path):
  """Without images SSAH is refused by name, unless ssah.text_only: then
  LabNet, the text discriminator and TxtNet train, and the report has T->T."""
  config = tiny_config('dataset.name=synthetic_without_images_for_test',
                       'ssah.num_epochs=1', 'eval.plots=true')
  with pytest.raises(ValueError, match=r'synthetic_without_images_for_test: '
                     r'this dataset has no images .* ssah trains on image-'
                     r'text pairs'):
    alternating.train_and_evaluate(config, str(tmp_path / 'refused'))
  config.ssah.text_only = True
  results = alternating.train_and_evaluate(config, str(tmp_path / 'run'))
  assert set(results['map']) == set(results['random_map']) == {'t2t'}
  assert results['map']['t2t'] > results['random_map']['t2t']
  codes = np.load(tmp_path / 'run' / 'eval' / 'codes.npz')
  assert {k for k in codes.files if 'labels' not in k} == {'text_query',
                                                           'text_db'}
  records = _records(tmp_path / 'run')
  assert [r['network'] for r in records if 'network' in r] == [
      'lab', 'dis', 'txt']
  assert os.path.exists(tmp_path / 'run' / 'eval' / 'examples.png')


@data_lib.DATASETS.register('synthetic_nan_images_for_test')
def _nan_features(c):
  data = synthetic.generate(c.num_items, synthetic.SyntheticConfig(
      num_labels=c.num_labels, vocab_size=c.vocab_size, image_size=16,
      feature_dim=c.feature_dim), c.seed)
  images = data.images.copy()
  images[::2, 0] = np.nan  # Only the image side is poisoned.
  return types.MultiModalData(images, data.texts, data.labels)


def test_nan_stops_with_clear_message_and_keeps_last_good_checkpoint(
    tiny_config, tmp_path):
  # LabNet's pass (pass 0) never sees images; the discriminator's (pass 1)
  # does, and the standardised NaN features poison it.
  config = tiny_config('dataset.name=synthetic_nan_images_for_test',
                       'model.image_encoder=feature_mlp')
  with pytest.raises(alternating.NonFiniteError,
                     match=r'Pass 1 \(dis, epoch 0\) produced NaN/Inf.*pass 1'):
    alternating.train_and_evaluate(config, str(tmp_path))
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.latest_step() == 1
  assert ckpt.read_meta(1)['pass_index'] == 1
  ckpt.close()


def _main(*args, cwd=REPO_ROOT):
  # The CLI runs on the machine's real devices.
  return subprocess.run([sys.executable, '-m', 'crossmodal_hash.main', *args],
                        cwd=cwd, env=conftest.subprocess_env(),
                        capture_output=True, text=True,
                        timeout=600, check=False)


def test_main_command_fast_variant(tmp_path):
  """The README's main command, with a tiny config argument."""
  # Must stay in sync with TINY_OVERRIDES in conftest.py (a CLI run cannot
  # use the fixture); only the sizes differ from the README command.
  from conftest import TINY_OVERRIDES  # pylint: disable=g-import-not-at-top
  overrides = TINY_OVERRIDES.replace('ssah.num_epochs=2', 'ssah.num_epochs=1')
  result = _main(f'--config=configs/ssah_synthetic.py:{overrides}',
                 f'--workdir={tmp_path}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'SSAH (16 bits)' in result.stdout
  assert 'random codes (16 bits)' in result.stdout
  assert 'I->T' in result.stdout
  assert os.path.exists(tmp_path / 'eval' / 'codes.npz')
  assert os.path.exists(tmp_path / 'eval' / 'map.json')
  assert os.path.exists(tmp_path / 'eval' / 'evaluation.json')
  # orbax's INFO lines (about twenty per checkpoint) stay off the console.
  assert 'checkpoint_manager.py' not in result.stderr


def test_main_rejects_unknown_config_key(tmp_path):
  result = _main('--config=configs/ssah_synthetic.py',
                 '--config.train.bach_size=64', f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'bach_size' in result.stderr
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_config_argument_typo_is_an_error(tiny_config):
  with pytest.raises(ValueError, match='no such field'):
    tiny_config('bitz=64')
  config = tiny_config()
  with pytest.raises(AttributeError):
    config.train.bach_size = 64  # Locked: no new fields.


def test_mirflickr_config_fails_clearly_without_data(tmp_path):
  result = _main('--config=configs/ssah_mirflickr.py:bits=64',
                 f'--config.dataset.path={tmp_path}/FLICKR-25K.mat',
                 f'--workdir={tmp_path}/run')
  assert result.returncode != 0
  assert 'FLICKR-25K.mat: no such file' in result.stderr
