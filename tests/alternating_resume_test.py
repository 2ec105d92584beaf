"""Resuming a run whose dataset file moved, and the metrics of a resumed run."""
import os

import numpy as np
import pytest

from crossmodal_hash import data as data_lib  # Registers the datasets.
from crossmodal_hash.trainers import alternating


def _write_features(path, data, change_label=False):
  labels = np.array(data.labels)
  if change_label:
    labels[0] = 1 - labels[0] if labels[0].sum() != labels.shape[1] else 0
    labels[0, 0] = 1
  np.savez(path, image=np.asarray(data.images), text=data.texts, label=labels)


def test_moved_dataset_file_resumes_when_its_data_is_the_same(tiny_config,
                                                              tmp_path):
  features = ('ssah.num_epochs=1', 'model.image_encoder=feature_mlp')
  data = data_lib.DATASETS.get('synthetic_features')(
      tiny_config(*features, 'dataset.name=synthetic_features').dataset)
  _write_features(tmp_path / 'a.npz', data)

  def run(path, stop_after_passes):
    config = tiny_config(*features, 'dataset.name=custom')
    config.dataset.path = str(path)
    return alternating.train_and_evaluate(
        config, str(tmp_path / 'run'), stop_after_passes=stop_after_passes)

  assert run(tmp_path / 'a.npz', 1) == {'stopped_at_pass': 1}
  os.rename(tmp_path / 'a.npz', tmp_path / 'b.npz')
  # Resumed from the checkpoint after pass 1 at the file's new place (and
  # stopped before running a pass).
  assert run(tmp_path / 'b.npz', 0) == {'stopped_at_pass': 1}
  # Another file with other data at that place is refused.
  _write_features(tmp_path / 'c.npz', data, change_label=True)
  with pytest.raises(alternating.IncompatibleCheckpointError,
                     match=r'dataset.path: checkpoint .*a.npz'):
    run(tmp_path / 'c.npz', 0)
