"""End to end: train on the 8-device mesh, checkpoint, resume, evaluate."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from crossmodal_hash import checkpointing
from crossmodal_hash import data as data_lib  # Registers the datasets.
from crossmodal_hash.data import synthetic
from crossmodal_hash.data import types
from crossmodal_hash.trainers import alternating

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


def test_killed_and_resumed_run_ends_identically(tiny_config, tmp_path):
  config = tiny_config('train.checkpoint_every_passes=3')
  straight = alternating.train_and_evaluate(config, str(tmp_path / 'a'))
  # 10 passes in all (2 epochs of lab, dis, img, img, txt; see conftest).
  # Killed after running 4 passes: the checkpoint after 3 survives, the work
  # of the 4th (pass index 3) is lost and redone on resume.
  stopped = alternating.train_and_evaluate(config, str(tmp_path / 'b'),
                                           stop_after_passes=4)
  assert stopped == {'stopped_at_pass': 4}
  resumed = alternating.train_and_evaluate(config, str(tmp_path / 'b'))
  step_a, params_a = _params(str(tmp_path / 'a'))
  step_b, params_b = _params(str(tmp_path / 'b'))
  assert step_a == step_b
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  assert straight['map'] == resumed['map']
  codes_a = np.load(tmp_path / 'a' / 'eval' / 'codes.npz')
  codes_b = np.load(tmp_path / 'b' / 'eval' / 'codes.npz')
  for key in codes_a.files:
    np.testing.assert_array_equal(codes_a[key], codes_b[key])
  # The resumed run appended to the metrics: pass 3 was redone once.
  records = [json.loads(l) for l in open(tmp_path / 'b' / 'metrics.jsonl')]
  assert [r['pass'] for r in records] == [0, 1, 2, 3] + list(range(3, 10))


def test_outputs_of_a_run(tiny_config, tmp_path):
  config = tiny_config('eval.plots=true')
  results = alternating.train_and_evaluate(config, str(tmp_path))
  for direction in ('i2t', 't2i', 'i2i', 't2t'):
    assert 0.0 < results['map'][direction] <= 1.0
    assert 0.0 < results['random_map'][direction] <= 1.0
  saved = json.load(open(tmp_path / 'eval' / 'map.json'))
  assert saved['map'] == results['map']
  codes = np.load(tmp_path / 'eval' / 'codes.npz')
  assert codes['image_query'].shape == (96, 16)
  assert codes['text_db'].shape == (600 - 96, 16)
  assert set(np.unique(codes['image_db'])) <= {-1, 1}
  for png in ('map.png', 'training_curves.png', 'precision_radius.png'):
    with open(tmp_path / 'eval' / png, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  records = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert {r['network'] for r in records} == {'lab', 'dis', 'img', 'txt'}
  assert os.path.exists(tmp_path / 'split.npz')


def test_features_variant_and_interleaved_schedule(tiny_config, tmp_path):
  config = tiny_config('dataset.name=synthetic_features',
                       'model.image_encoder=feature_mlp',
                       'ssah.schedule=interleaved')
  results = alternating.train_and_evaluate(config, str(tmp_path))
  assert set(results['map']) == {'i2t', 't2i', 'i2i', 't2t'}


def test_incompatible_checkpoint_is_refused_and_kept(tiny_config, tmp_path):
  alternating.train_and_evaluate(tiny_config('ssah.num_epochs=1'),
                                 str(tmp_path))
  before = _listing(tmp_path)
  with pytest.raises(alternating.IncompatibleCheckpointError,
                     match=r'bits: checkpoint 16, config 32'):
    alternating.train_and_evaluate(tiny_config('bits=32'), str(tmp_path))
  assert _listing(tmp_path) == before


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
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)  # The CLI runs on the machine's real devices.
  return subprocess.run([sys.executable, '-m', 'crossmodal_hash.main', *args],
                        cwd=cwd, env=env, capture_output=True, text=True,
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


def test_main_rejects_unknown_config_key(tmp_path):
  result = _main('--config=configs/ssah_synthetic.py',
                 '--config.train.bach_size=64', f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'bach_size' in result.stderr
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_config_argument_typo_is_an_error(tiny_config):
  with pytest.raises(KeyError, match='no such field'):
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
