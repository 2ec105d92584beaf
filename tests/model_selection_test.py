"""Validation split, best checkpoint, and a test split read only at the end."""
import json
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import TINY_OVERRIDES
from crossmodal_hash import data as data_lib  # Registers the datasets.
from crossmodal_hash import sharding
from crossmodal_hash.data import preprocess
from crossmodal_hash.data import registry as data_registry
from crossmodal_hash.data import splits
from crossmodal_hash.methods import registry as method_registry
from crossmodal_hash.trainers import alternating
from crossmodal_hash.trainers import evaluation_hooks
from crossmodal_hash.trainers import model_selection
import ssah_synthetic

del data_lib
# Two epochs of 5 passes; validation every 2 passes (after passes 2..10).
SELECTION = ('dataset.num_val=64', 'eval.every_passes=2',
             'eval.random_baseline=false', 'train.checkpoint_every_passes=3')


def _config(*extra):
  return ssah_synthetic.get_config(','.join((TINY_OVERRIDES,) + SELECTION +
                                            extra))


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope='module', name='run')
def _run(tmp_path_factory):
  """(workdir, results, encoded row sets in call order) of a straight run."""
  workdir = str(tmp_path_factory.mktemp('selection'))
  calls = []
  encode = evaluation_hooks.encode

  def recording_encode(method, params, modality, inputs, *, rows=None,
                       **kwargs):
    calls.append(frozenset(np.asarray(rows).tolist()))
    return encode(method, params, modality, inputs, rows=rows, **kwargs)

  evaluation_hooks.encode = recording_encode
  try:
    results = alternating.train_and_evaluate(_config(), workdir)
  finally:
    evaluation_hooks.encode = encode
  return workdir, results, calls


def test_best_checkpoint_is_the_best_validation_evaluation(run):
  workdir, results, _ = run
  evals = [r for r in _records(workdir) if 'eval_map' in r]
  assert [r['pass'] for r in evals] == [1, 3, 5, 7, 9]
  assert {r['query_set'] for r in evals} == {'validation'}
  scores = [model_selection.score(r['eval_map']) for r in evals]
  best = int(np.argmax(scores))  # The first of equal scores is kept.
  with open(os.path.join(workdir, model_selection.RECORD_NAME)) as f:
    record = json.load(f)
  assert record['pass'] == evals[best]['pass'] + 1
  assert record['score'] == pytest.approx(scores[best])
  assert [r['best'] for r in evals] == [
      s > max(scores[:i], default=-1.0) for i, s in enumerate(scores)]
  selected = results['selected_checkpoint']
  assert selected['checkpoint'] == 'best'
  assert selected['pass'] == record['pass']
  assert 'validation mAP@all' in selected['why']
  assert f"after pass {record['pass']} of 10 (evaluated every 2 passes" in (
      selected['why'])
  with open(os.path.join(workdir, 'eval', 'evaluation.json')) as f:
    report = json.load(f)
  assert report['selected_checkpoint'] == selected
  assert report['query_set'] == 'test'
  assert results['query_set'] == 'test'


def test_test_queries_are_encoded_only_in_the_final_evaluation(run):
  workdir, _, calls = run
  split = splits.load(os.path.join(workdir, 'split.npz'))
  test_queries = frozenset(split.query.tolist())
  val_queries = frozenset(split.val.tolist())
  first = min(i for i, rows in enumerate(calls) if rows & test_queries)
  # Every periodic evaluation came first: 5 x (val queries, val database) x 2.
  assert first == 20
  assert all(not rows & test_queries for rows in calls[:first])
  assert calls[0] == val_queries
  assert calls[2] == frozenset(split.train.tolist())
  # The final evaluation: test queries, then the retrieval set.
  assert calls[first:] == [test_queries] * 2 + [
      frozenset(split.retrieval.tolist())] * 2


def test_final_codes_come_from_the_selected_checkpoint(run):
  workdir, _, _ = run
  config = _config()
  with open(os.path.join(workdir, model_selection.RECORD_NAME)) as f:
    record = json.load(f)
  manager = ocp.CheckpointManager(
      os.path.join(workdir, model_selection.BEST_DIR, 'checkpoints'))
  assert manager.all_steps() == [record['pass']]
  params = manager.restore(record['pass'], args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))['state']['params']
  manager.close()
  data = data_registry.DATASETS.get(config.dataset.name)(config.dataset)
  split = splits.load(os.path.join(workdir, 'split.npz'))
  stats = preprocess.image_statistics(data.images[split.train],
                                      config.model.image_normalization)
  method = method_registry.METHODS.get('ssah')(
      config, num_labels=data.num_labels, text_dim=data.text_dim)
  mesh = sharding.make_mesh(config.mesh)
  evaluator = evaluation_hooks.Evaluator.for_split(
      split, method=method, data=data, mesh=mesh, batch_size=64,
      image_stats=stats)['test']
  codes = evaluator.codes(sharding.put_replicated(params, mesh))
  with np.load(os.path.join(workdir, 'eval', 'codes.npz')) as saved:
    for name, value in codes.items():
      np.testing.assert_array_equal(saved[name], value, err_msg=name)


def test_resume_keeps_the_selection(run, tmp_path):
  workdir, results, _ = run
  resumed = str(tmp_path)
  stopped = alternating.train_and_evaluate(_config(), resumed,
                                           stop_after_passes=6)
  assert stopped == {'stopped_at_pass': 6}
  # Killed after pass 6: the latest checkpoint is pass 6, the best one may be
  # older; both are on disk and the record says which is selected.
  assert os.path.exists(os.path.join(resumed, model_selection.RECORD_NAME))
  again = alternating.train_and_evaluate(_config(), resumed)
  assert again['selected_checkpoint'] == results['selected_checkpoint']
  assert again['map'] == results['map']
  with open(os.path.join(resumed, model_selection.RECORD_NAME)) as f, open(
      os.path.join(workdir, model_selection.RECORD_NAME)) as g:
    assert json.load(f) == json.load(g)


def test_without_validation_the_last_params_are_evaluated(tmp_path):
  results = alternating.train_and_evaluate(
      _config('dataset.num_val=0', 'ssah.num_epochs=1'), str(tmp_path))
  assert results['selected_checkpoint']['checkpoint'] == 'last'
  assert not os.path.exists(os.path.join(tmp_path, model_selection.BEST_DIR))
