r"""Every method on Wikipedia at 16, 32 and 64 bits, beside the baselines.

  python benchmarks/wikipedia.py \
      --path=../shared/data/wikipedia/wikipedia-train.npz \
      --out=benchmarks/results/wikipedia

Trains configs/<method>_wikipedia.py unchanged (their validation split of
500 training items, the best checkpoint by validation mAP) on the file given,
once per method and code length, each in its own workdir under --out
(re-running resumes or reuses finished runs). With the full file (I_tr ...
L_te) the table is of the 693 test queries against the 2,173 training items;
with the training half alone it is of the validation split. A method whose
outputs do not take their width from `bits` (MHTN: its softmax over the 10
classes) is trained once, at the first length; its row repeats that run's
figures (`same_run_as` in the JSON). Beside the methods: random codes of
each length (from the methods that code at it), and the ridge-regression
baseline (`evaluation/ridge_baseline.py`, its penalty chosen on the same
validation split). Real-valued methods (SSAL, MHTN) have two rows: cosine
mAP, and the Hamming mAP of their embeddings' sign() codes. Writes
  <out>/wikipedia.md    the markdown tables (final query set; validation)
  <out>/wikipedia.json  every run's four directions, its validation record,
                        selected checkpoint, training seconds (the passes'
                        own, from metrics.jsonl, so a reused or resumed run
                        keeps its training time) and config arguments
"""
from __future__ import annotations

import importlib
import os
import sys
import time

from absl import app
from absl import flags

import tables

_PATH = flags.DEFINE_string(
    'path', '../shared/data/wikipedia/wikipedia-train.npz',
    'The Wikipedia file: the full I_tr..L_te layout, or the training half.')
_BITS = flags.DEFINE_list('bits', ['16', '32', '64'], 'Code lengths.')
_METHODS = flags.DEFINE_list('methods', ['dcmh', 'dsmhn', 'ssah', 'scahn',
                                         'ssal', 'mhtn'],
                             'Methods, in table order.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results/wikipedia',
                           'Output directory.')
_CONFIG_ARG = flags.DEFINE_string('config_arg', '', 'key=value,... for every '
                                  'config (e.g. fewer epochs for a quick look).')
_METHOD_ARGS = {m: flags.DEFINE_string(f'{m}_arg', '', f'key=value,... for '
                                       f'configs/{m}_wikipedia.py only.')
                for m in ('ssah', 'dcmh', 'dsmhn', 'scahn', 'ssal',
                          'mhtn')}


def train(config, trainer: str, workdir: str, arg: str) -> dict:
  """One run on its `trainer` family (resumed or reused if `workdir` holds
  it): its record."""
  # pylint: disable=g-import-not-at-top
  from crossmodal_hash import logging_utils
  from crossmodal_hash import trainers
  # pylint: enable=g-import-not-at-top
  tic = time.perf_counter()
  results = trainers.TRAINERS.get(trainer)(config, workdir)
  records = logging_utils.read_metrics(os.path.join(workdir, 'metrics.jsonl'))
  run = {
      'map': results['map'],
      # Real-valued outputs: 'map' is cosine, 'sign_map' of sign() codes.
      'sign_map': results.get('sign_map'),
      # Pass records (alternating) or step records (per-step).
      'train_seconds': sum(r['seconds'] for r in records
                           if 'network' in r or 'items_per_second' in r),
      'seconds': time.perf_counter() - tic,
      'selected_checkpoint': results['selected_checkpoint'],
      'query_set': results['query_set'], 'config_arg': arg,
      'random_map': results['random_map']}
  print(f'{config.method} {config.bits} bits ({results["query_set"]}): '
        f'{results["map"]}; trained in {run["train_seconds"]:.0f} s',
        flush=True)
  return run


def main(argv):
  del argv
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, os.path.join(root, 'configs'))
  # pylint: disable=g-import-not-at-top
  from crossmodal_hash import methods
  from crossmodal_hash.data import protocols
  from crossmodal_hash.data import registry as data_registry
  from crossmodal_hash.evaluation import report
  from crossmodal_hash.evaluation import ridge_baseline
  from crossmodal_hash.methods import base
  # pylint: enable=g-import-not-at-top

  path = os.path.abspath(_PATH.value)
  runs, baseline, random_map, query_set = {}, {}, {}, None
  for method in _METHODS.value:
    module = importlib.import_module(f'{method}_wikipedia')
    runs[method] = {}
    for bits in _BITS.value:
      arg = tables.run_arg(bits, _CONFIG_ARG.value, _METHOD_ARGS[method].value)
      config = module.get_config(arg)
      config.unlock()
      config.dataset.path = path
      config.lock()
      method_class = methods.METHODS.get(config.method)
      same = tables.same_model_as(method_class, runs[method])
      workdir = os.path.join(_OUT.value, f'{method}_{same or bits}')
      if same:
        runs[method][bits] = dict(runs[method][same], same_run_as=same)
        print(f'{method} {bits} bits: the {same}-bit run (its outputs do not '
              'depend on bits)', flush=True)
      else:
        runs[method][bits] = train(config, method_class.trainer, workdir,
                                   arg)
        random = runs[method][bits].pop('random_map')
        if base.width_from_bits(method_class):  # Random codes of `bits`.
          random_map.setdefault(bits, random)
        query_set = runs[method][bits]['query_set']
      if bits not in baseline:
        data = data_registry.DATASETS.get(config.dataset.name)(config.dataset)
        split = protocols.split_for_run(data, config.dataset, workdir)
        baseline[bits] = ridge_baseline.evaluate(data, split, int(bits))

  bits = _BITS.value
  # Random codes of each length, when some method ran at every length.
  rows = [('random codes', random_map)] if all(b in random_map
                                               for b in bits) else []
  rows += [('ridge regression + sign', {b: baseline[b]['map'] for b in bits})]
  rows += [row for m, r in runs.items()
           for row in tables.method_rows(m, r, bits)]
  val_rows = [('ridge regression + sign',
               {b: baseline[b]['validation'][baseline[b]['lambda']]
                for b in bits})]
  val_rows += [(m.upper(), {b: r[b]['selected_checkpoint']['val_map']
                            for b in bits})
               for m, r in runs.items()
               if all('val_map' in r[b]['selected_checkpoint'] for b in bits)]
  table = (f'mAP@all, {query_set} queries ({os.path.basename(path)}):\n\n' +
           tables.map_table(rows, bits) +
           '\n\nmAP@all of the validation split (model selection):\n\n' +
           tables.map_table(val_rows, bits))
  print(table)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'wikipedia.md'), 'w') as f:
    f.write(table + '\n')
  report.write_json(os.path.join(_OUT.value, 'wikipedia.json'),
                    {'path': path, 'bits': bits, 'query_set': query_set,
                     'runs': runs, 'random_map': random_map,
                     'ridge_baseline': baseline, 'table': table,
                     'relevance': 'same class',
                     'metric': 'mAP@all, ties in database order'})


if __name__ == '__main__':
  app.run(main)
