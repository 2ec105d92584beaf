"""Evaluators chosen by `config.evals`."""
import json
import os

import ml_collections
import pytest

from crossmodal_hash import config_utils
from crossmodal_hash.trainers import alternating
from crossmodal_hash.trainers import evaluators


def test_the_default_evals_are_periodic_map_and_the_final_report():
  evals = evaluators.from_config(ml_collections.ConfigDict(
      {'evals': config_utils.default_evals()}))
  assert {n: type(e) for n, e in evals.items()} == {
      'periodic': evaluators.PeriodicMap, 'final': evaluators.FinalReport}
  assert evals['periodic'].periodic and not evals['final'].periodic


def test_an_unknown_type_names_the_section():
  config = ml_collections.ConfigDict({'evals': {'val': {'type': 'recall'}}})
  with pytest.raises(ValueError, match=r"config.evals.val.type='recall' is "
                     r"not one of \['final_cosine_report', 'final_report', "
                     r"'periodic_cosine_map', 'periodic_map'\]"):
    evaluators.from_config(config)


def test_an_evaluator_refuses_outputs_it_cannot_rank():

  class Embeddings:
    outputs = {'img': 'real', 'txt': 'real'}

  config = ml_collections.ConfigDict({'method': 'cosine_method',
                                      'evals': config_utils.default_evals()})
  # (ConfigDict sections come in key order: 'final' first.)
  with pytest.raises(ValueError, match=r"config.evals.final \(final_report\) "
                     r"evaluates \('binary',\) outputs; cosine_method"):
    evaluators.from_config(config, Embeddings())


def test_a_run_runs_only_the_evaluators_its_config_names(tiny_config,
                                                         tmp_path):
  config = tiny_config('ssah.num_epochs=1', 'eval.every_passes=2',
                       'eval.random_baseline=false')
  with config.unlocked():
    del config.evals['periodic']
  results = alternating.train_and_evaluate(config, str(tmp_path))
  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert records and not any('eval_map' in r for r in records)
  assert set(results['map']) == {'i2t', 't2i', 'i2i', 't2t'}
  assert results['selected_checkpoint']['checkpoint'] == 'last'
