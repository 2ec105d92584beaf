r"""SSAH on the synthetic dataset at several code lengths: mAP@all vs random codes.

  python benchmarks/ssah_synthetic_map.py --bits=16,32,64 --out=benchmarks/results

Trains configs/ssah_synthetic.py once per code length (each in its own workdir
under --out), prints one table with the trained and random-code rows, and
writes it as JSON (`ssah_synthetic_map.json`) with the wall time of each run.
"""
import json
import os
import sys
import time

from absl import app
from absl import flags

_BITS = flags.DEFINE_list('bits', ['16', '32', '64'], 'Code lengths.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results', 'Output directory.')
_CONFIG_ARG = flags.DEFINE_string('config_arg', '', 'Extra key=value,... '
                                  'arguments for configs/ssah_synthetic.py.')


def main(argv):
  del argv
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, os.path.join(root, 'configs'))
  import ssah_synthetic  # pylint: disable=g-import-not-at-top
  from crossmodal_hash import trainers  # pylint: disable=g-import-not-at-top
  from crossmodal_hash.evaluation import report  # pylint: disable=g-import-not-at-top

  rows, runs = {}, {}
  for bits in _BITS.value:
    arg = ','.join(filter(None, [f'bits={bits}', 'train.progress=false',
                                 _CONFIG_ARG.value]))
    config = ssah_synthetic.get_config(arg)
    tic = time.perf_counter()
    results = trainers.TRAINERS.get('alternating')(
        config, os.path.join(_OUT.value, f'ssah_synthetic_{bits}'))
    seconds = time.perf_counter() - tic
    rows[f'SSAH ({bits} bits)'] = results['map']
    rows[f'random codes ({bits} bits)'] = results['random_map']
    runs[bits] = {'map': results['map'], 'random_map': results['random_map'],
                  'seconds': seconds}
  table = report.format_map_table(rows)
  print(table)
  report.write_json(os.path.join(_OUT.value, 'ssah_synthetic_map.json'),
                    {'config_arg': _CONFIG_ARG.value, 'runs': runs,
                     'table': table})


if __name__ == '__main__':
  app.run(main)
