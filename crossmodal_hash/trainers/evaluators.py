"""Evaluators chosen by config, as big_vision's `config.evals`.

`config.evals` names the evaluators of a run, each a section with a `type`
from EVALUATORS:

  config.evals.periodic = {'type': 'periodic_map'}  # during training
  config.evals.final = {'type': 'final_report'}     # at the end

Periodic evaluators run every `config.eval.every_passes` passes (alternating
family) or `config.eval.every_steps` steps (per-step family) and return a
metrics.jsonl record; the harness keeps the best state by the validation mAP
of the first one that reports `maps` (trainers/model_selection.py). Final
evaluators run once on the selected params; their results are merged into
what the trainer returns. A new evaluator is a registration here, and a
section in the configs that use it.

Methods whose outputs are real-valued embeddings (`methods/base.py`
`outputs = {'img': 'real', 'txt': 'real'}`) name the cosine pair instead
(`config_utils.default_evals(real=True)`):

  config.evals.periodic = {'type': 'periodic_cosine_map'}
  config.evals.final = {'type': 'final_cosine_report'}

the same records and report, ranked by cosine similarity; the final report
adds the Hamming suite of the embeddings' sign() codes with
`config.eval.sign_codes`.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash import registry
from crossmodal_hash.methods import base
from crossmodal_hash.trainers import evaluation_hooks

EVALUATORS = registry.Registry('evaluator')


@EVALUATORS.register('periodic_map')
class PeriodicMap:
  """mAP@all (I->T, T->I, I->I, T->T; index-order ties) of the validation
  queries against the training set, else of the test queries, with code
  statistics; selects the best checkpoint when there is a validation split."""

  periodic = True
  outputs = ('binary',)  # Hamming ranking of ±1 codes.

  def __init__(self, section: ml_collections.ConfigDict):
    del section  # Its options are config.eval's.

  def __call__(self, run: Any, state: base.TrainState) -> dict[str, Any]:
    """The record's entries: 'step', 'eval_map', 'map/<d>', 'code_stats',
    'query_set'; and `maps`, {direction: mAP}, for model selection."""
    evaluator = run.periodic_evaluator
    maps, codes = evaluation_hooks.periodic_evaluation(
        evaluator, base.inference_params(state), run.config.eval)
    out = evaluation_hooks.map_record(0, int(state.step), maps, codes)
    out.pop('pass')
    return {**out, 'query_set': evaluator.name, 'maps': maps}


@EVALUATORS.register('final_report')
class FinalReport:
  """The full suite on the selected params (`evaluation_hooks.
  final_evaluation`): the printed table, evaluation.json, map.json, codes and
  plots in `<workdir>/eval`; of the test queries, else the validation ones."""

  periodic = False
  outputs = ('binary',)  # Hamming ranking of ±1 codes.

  def __init__(self, section: ml_collections.ConfigDict):
    del section  # Its options are config.eval's.

  def __call__(self, run: Any, params: Any,
               metadata: dict[str, Any]) -> dict[str, Any]:
    evaluator = run.evaluators.get('test', run.evaluators.get('validation'))
    return evaluation_hooks.final_evaluation(
        evaluator, params, run.config, run.workdir,
        metadata={**metadata, 'query_set': evaluator.name})


@EVALUATORS.register('periodic_cosine_map')
class PeriodicCosineMap(PeriodicMap):
  """`PeriodicMap` of real-valued embeddings: cosine mAP@all (streamed over
  the database, index-order ties), with the statistics of their sign()
  codes; selects the best checkpoint as `PeriodicMap` does."""

  outputs = ('real',)


@EVALUATORS.register('final_cosine_report')
class FinalCosineReport(FinalReport):
  """`FinalReport` of real-valued embeddings: every metric of the cosine
  ranking (all but the radius curve), and with `config.eval.sign_codes` the
  Hamming suite of their sign() codes in the same table; embeddings.npz
  (float32) beside codes.npz (the sign codes) in `<workdir>/eval`."""

  outputs = ('real',)


def from_config(config: ml_collections.ConfigDict,
                method: Any = None) -> dict[str, Any]:
  """{name: evaluator} of `config.evals` (the defaults without it).

  Raises:
    ValueError: a section without a registered `type`, or an evaluator of
      outputs `method` does not give (e.g. Hamming mAP of real-valued
      embeddings), naming it.
  """
  sections = config.get('evals') or config_utils.default_evals()
  out = {}
  for name, section in sections.items():
    kind = section.get('type') if hasattr(section, 'get') else None
    if kind not in EVALUATORS:
      raise ValueError(f'config.evals.{name}.type={kind!r} is not one of '
                       f'{EVALUATORS.names()}.')
    out[name] = EVALUATORS.get(kind)(section)
    given = set(base.outputs(method).values()) if method is not None else set()
    if given - set(out[name].outputs):
      raise ValueError(f'config.evals.{name} ({kind}) evaluates '
                       f'{out[name].outputs} outputs; {config.method} gives '
                       f'{base.outputs(method)}. Name evaluators of its '
                       'outputs, e.g. config.evals = '
                       'config_utils.default_evals(real=True) for '
                       "periodic_cosine_map and final_cosine_report.")
  return out
