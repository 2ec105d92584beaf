r"""SSAH, DCMH, DSMHN, SCAHN, SSAL and MHTN on the synthetic dataset: mAP@all.

  python benchmarks/synthetic_results.py --out=benchmarks/results

Trains each method's synthetic config (configs/<method>_synthetic.py) once
per code length, each in its own workdir under --out (re-running resumes or
reuses finished runs), and writes one table of mAP@all for I->T and T->I with
the random-code baseline of the same split (real-valued methods: cosine mAP
and the Hamming mAP of their embeddings' sign() codes, two rows):
  <out>/synthetic_results.md    the markdown table (for the README)
  <out>/synthetic_results.json  every run's four directions, seconds, config
Reduced runs for a quick look pass config arguments, to every config
(--config_arg, e.g. smaller datasets) or to one method (--ssah_arg,
--dcmh_arg, --dsmhn_arg, --scahn_arg, --ssal_arg, --mhtn_arg, e.g. fewer
epochs or steps). Each method runs on its own trainer family
(`method.trainer`). A method whose outputs do not take their width from
`bits` (MHTN: its softmax over the labels) is trained once, at the first
length; its row repeats that run's figures (`same_run_as` in the JSON).
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags

import tables

_BITS = flags.DEFINE_list('bits', ['16', '32', '64'], 'Code lengths.')
_METHODS = flags.DEFINE_list('methods', ['dcmh', 'ssah', 'dsmhn', 'scahn',
                                         'ssal', 'mhtn'],
                             'Methods, in table order.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results', 'Output directory.')
_CONFIG_ARG = flags.DEFINE_string('config_arg', '', 'key=value,... for every '
                                  'config.')
_METHOD_ARGS = {m: flags.DEFINE_string(f'{m}_arg', '', f'key=value,... for '
                                       f'configs/{m}_synthetic.py only.')
                for m in ('ssah', 'dcmh', 'dsmhn', 'scahn', 'ssal',
                          'mhtn')}

def markdown_table(runs: dict, bits: list[str]) -> str:
  """Rows: random codes, then each method; columns: direction x bits."""
  first = next(iter(runs.values()))
  rows = [('random codes', {b: first[b]['random_map'] for b in bits})]
  rows += [row for m, r in runs.items()
           for row in tables.method_rows(m, r, bits)]
  return tables.map_table(rows, bits)


def main(argv):
  del argv
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, os.path.join(root, 'configs'))
  import importlib  # pylint: disable=g-import-not-at-top
  from crossmodal_hash import methods  # pylint: disable=g-import-not-at-top
  from crossmodal_hash import trainers  # pylint: disable=g-import-not-at-top
  from crossmodal_hash.evaluation import report  # pylint: disable=g-import-not-at-top

  runs = {}
  for method in _METHODS.value:
    module = importlib.import_module(f'{method}_synthetic')
    runs[method] = {}
    for bits in _BITS.value:
      arg = tables.run_arg(bits, _CONFIG_ARG.value, _METHOD_ARGS[method].value)
      config = module.get_config(arg)
      method_class = methods.METHODS.get(config.method)
      same = tables.same_model_as(method_class, runs[method])
      if same:
        runs[method][bits] = dict(runs[method][same], same_run_as=same)
        print(f'{method} {bits} bits: the {same}-bit run (its outputs do not '
              'depend on bits)', flush=True)
        continue
      workdir = os.path.join(_OUT.value, f'{method}_synthetic_{bits}')
      tic = time.perf_counter()
      trainer = method_class.trainer
      results = trainers.TRAINERS.get(trainer)(config, workdir)
      runs[method][bits] = {'map': results['map'],
                            'sign_map': results.get('sign_map'),
                            'random_map': results['random_map'],
                            'seconds': time.perf_counter() - tic,
                            'config_arg': arg}
      print(f'{method} {bits} bits: {results["map"]}', flush=True)
  table = markdown_table(runs, _BITS.value)
  print(table)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'synthetic_results.md'), 'w') as f:
    f.write(table + '\n')
  report.write_json(os.path.join(_OUT.value, 'synthetic_results.json'),
                    {'bits': _BITS.value, 'runs': runs, 'table': table,
                     'relevance': 'shares at least one label',
                     'metric': 'mAP@all, ties in database order'})


if __name__ == '__main__':
  app.run(main)
