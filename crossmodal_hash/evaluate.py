r"""Command line: evaluate saved hash codes with the full metric suite.

  python -m crossmodal_hash.evaluate --codes runs/ssah_64/eval  # -> .../eval/evaluate
  python -m crossmodal_hash.evaluate --codes runs --out reports/all \
      --ties tie_aware,index --empty skip --top_k 100,1000

--codes is a `.npz` file or a directory searched recursively for them, on the
local disk or in object storage (`--codes gs://bucket/runs/ssah_64/eval`: every
read and write goes through etils.epath, `file_io`). Each
file is one code set as `report.save_codes` writes it (the trainer's
`<workdir>/eval/codes.npz`): ±1 codes 'image_query', 'text_query',
'image_db', 'text_db' (any subset that forms a direction) and labels
'query_labels' and 'retrieval_labels' (or 'db_labels'). A file of real-valued
embeddings under the same keys (`report.save_embeddings`, the trainer's
`<workdir>/eval/embeddings.npz` of a real-valued method) is ranked by cosine
similarity (streamed over the database; no radius curve). Files without codes
or labels are skipped with a note, and so are unreadable ones (corrupt,
truncated, pickled) with a warning; a single unreadable --codes file is an
error. Every direction present is evaluated;
the table is printed, and `evaluation.json`, `pr_curves.png`,
`precision_at_n.png` (one line per file, e.g. per bit length) and `map.png`
(one bar per file in each direction) are written to
--out, by default the folder `evaluate` in the --codes directory (or in the
file's directory), so the trainer's own report there is never overwritten.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
import os
import sys
import time
import zipfile

import numpy as np

from crossmodal_hash import cli
from crossmodal_hash import file_io
from crossmodal_hash.evaluation import ranking
from crossmodal_hash.evaluation import report
from crossmodal_hash.evaluation import suite

_CODE_KEYS = ('image_query', 'text_query', 'image_db', 'text_db')
_DB_LABEL_KEYS = ('retrieval_labels', 'db_labels')


def _int_tuple(text: str) -> tuple[int, ...]:
  return tuple(int(v) for v in text.split(',') if v.strip())


def _str_tuple(text: str) -> tuple[str, ...]:
  return tuple(v.strip() for v in text.split(',') if v.strip())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  defaults = ranking.EvalOptions()
  join = lambda values: ','.join(str(v) for v in values)
  parser = argparse.ArgumentParser(
      prog='python -m crossmodal_hash.evaluate',
      description='Evaluate saved ±1 hash codes (codes.npz files) or '
                  'real-valued embeddings (embeddings.npz, cosine).')
  parser.add_argument('--codes', required=True,
                      help='a .npz file, or a directory searched recursively')
  parser.add_argument('--out', default=None,
                      help='output directory (default: evaluate/ in the '
                           'codes directory)')
  parser.add_argument('--ties', type=_str_tuple, default=defaults.ties,
                      help='tie policies, the headline first '
                           f'(default {join(defaults.ties)})')
  parser.add_argument('--empty', choices=ranking.EMPTY_POLICIES,
                      default=defaults.empty,
                      help='queries with no relevant item: counted as 0 '
                           '(zero) or left out of means (skip)')
  parser.add_argument('--top_k', type=_int_tuple, default=defaults.top_k,
                      help=f'mAP@K cutoffs (default {join(defaults.top_k)})')
  parser.add_argument('--precision_at', type=_int_tuple,
                      default=defaults.precision_at, help='P@N cutoffs')
  parser.add_argument('--ndcg_k', type=_int_tuple, default=defaults.ndcg_k,
                      help=f'NDCG@K cutoffs (default {join(defaults.ndcg_k)})')
  parser.add_argument('--directions', type=_str_tuple, default=None,
                      help='e.g. i2t,t2i (default: all present)')
  parser.add_argument('--query_block', type=int, default=defaults.query_block)
  parser.add_argument('--db_block', type=int, default=defaults.db_block)
  parser.add_argument('--cosine_block', type=int,
                      default=defaults.cosine_block,
                      help='database items per block of the cosine ranking')
  parser.add_argument('--num_threads', type=int,
                      default=defaults.num_threads)
  parser.add_argument('--no_plots', action='store_true',
                      help='write the JSON report only')
  parser.add_argument('--debug', action='store_true',
                      help='print the traceback of an error')
  return parser.parse_args(argv)


def find_code_files(path: str) -> list[str]:
  """The .npz files at `path` (a file, or a directory searched recursively;
  local, or an object-store path such as gs://... through `file_io`)."""
  if file_io.isfile(path):
    return [path]
  if not file_io.isdir(path):
    raise FileNotFoundError(f'--codes {path!r}: no such file or directory.')
  found = []
  for name in sorted(file_io.listdir(path)):
    child = os.path.join(path, name)
    if file_io.isdir(child):
      found += find_code_files(child)
    elif name.endswith('.npz'):
      found.append(child)
  return found


class CodeFileError(ValueError):
  """A code file cannot be read, or its arrays do not fit together."""


def _read_npz(path: str) -> dict[str, np.ndarray]:
  """The arrays of an .npz file; CodeFileError (naming it) if unreadable."""
  try:
    return report.load_codes(path)
  except ValueError as e:
    if 'pickle' in str(e):
      raise CodeFileError(
          f'{path}: holds pickled (object) arrays, which are never loaded (a '
          'pickle can run code); save the codes as numeric arrays, e.g. with '
          'crossmodal_hash.evaluation.report.save_codes.') from e
    raise CodeFileError(f'{path}: not a readable .npz file ({e}).') from e
  except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
    raise CodeFileError(f'{path}: not a readable .npz file ({e}); it is '
                        'truncated or corrupt: write it again.') from e


def _similarity(codes: dict[str, np.ndarray]) -> str:
  """'cosine' for floating arrays that are not all ±1, else 'hamming'."""
  real = all(np.issubdtype(a.dtype, np.floating) for a in codes.values())
  signs = all(np.all((a == 1) | (a == -1)) for a in codes.values())
  return 'cosine' if real and not signs else 'hamming'


def _check_arrays(path: str, codes: dict[str, np.ndarray],
                  query_labels: np.ndarray, db_labels: np.ndarray,
                  db_key: str) -> str:
  """The similarity of the arrays ('hamming' for ±1 codes, 'cosine' for
  real-valued embeddings); CodeFileError unless they fit their labels."""
  bits = set()
  similarity = _similarity(codes)
  for key, array in codes.items():
    if array.ndim != 2:
      raise CodeFileError(f'{path}:{key}: codes must be [N, K]; got shape '
                          f'{array.shape}.')
    bad = ((~np.isfinite(array)) if similarity == 'cosine' else
           (array != 1) & (array != -1))
    if bad.any() and similarity == 'cosine':
      row = int(np.nonzero(bad)[0][0])
      raise CodeFileError(f'{path}:{key}: embeddings must be finite; row '
                          f'{row} holds NaN or Inf.')
    if bad.any():
      row, column = (int(i[0]) for i in np.nonzero(bad))
      raise CodeFileError(f'{path}:{key}: codes must be -1 or +1; row {row} '
                          f'holds {array[row, column].item()!r} at column '
                          f'{column}.')
    bits.add(array.shape[1])
    labels, label_key = ((query_labels, 'query_labels') if 'query' in key else
                         (db_labels, db_key))
    if len(labels) != len(array):
      raise CodeFileError(f'{path}: {key} has {len(array)} rows but '
                          f'{label_key} has {len(labels)}.')
  if len(bits) > 1:
    raise CodeFileError(f'{path}: the code arrays have different lengths '
                        f'({", ".join(str(b) for b in sorted(bits))} bits).')
  return similarity


def load_code_set(path: str) -> tuple[dict[str, np.ndarray], np.ndarray,
                                      np.ndarray, str] | None:
  """(codes, query labels, database labels, similarity) of a file, or None
  if it has none; similarity is 'hamming' (±1 codes) or 'cosine' (real
  embeddings).

  Raises:
    CodeFileError: the file is unreadable (corrupt, truncated, pickled) or its
      arrays are not ±1 codes or finite embeddings matching their labels.
  """
  arrays = _read_npz(path)
  codes = {k: arrays[k] for k in _CODE_KEYS if k in arrays}
  db_key = next((k for k in _DB_LABEL_KEYS if k in arrays), None)
  if not suite.available_directions(codes) or 'query_labels' not in arrays or (
      db_key is None):
    return None
  similarity = _check_arrays(path, codes, arrays['query_labels'],
                             arrays[db_key], db_key)
  return codes, arrays['query_labels'], arrays[db_key], similarity


def set_name(path: str, root: str, bits: int,
             similarity: str = 'hamming') -> str:
  """A display name: the file's path below --codes, and its bit length (or
  embedding size)."""
  base = root if file_io.isdir(root) else os.path.dirname(root)
  rel = os.path.relpath(path, base)
  stem = rel[:-len('.npz')] if rel.endswith('.npz') else rel
  return (f'{stem} ({bits}-d, cosine)' if similarity == 'cosine' else
          f'{stem} ({bits} bits)')


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  options = ranking.EvalOptions(
      ties=args.ties, empty=args.empty, top_k=args.top_k,
      precision_at=args.precision_at, ndcg_k=args.ndcg_k,
      query_block=args.query_block, db_block=args.db_block,
      cosine_block=args.cosine_block, num_threads=args.num_threads)
  sets = {}
  single_file = file_io.isfile(args.codes)
  examples_from = None  # The first set with both cross-modal directions.
  for path in find_code_files(args.codes):
    try:
      loaded = load_code_set(path)
    except CodeFileError as e:
      if single_file:
        raise
      print(f'warning: skipping {e}', file=sys.stderr)
      continue
    if loaded is None:
      print(f'skipping {path}: no code pair of a direction, or no labels',
            file=sys.stderr)
      continue
    codes, query_labels, db_labels, similarity = loaded
    result = suite.evaluate_set(codes, query_labels, db_labels,
                                options=options, directions=args.directions,
                                similarity=similarity)
    sets[set_name(path, args.codes, result['bits'], similarity)] = dict(
        result, file=path)
    if not examples_from and all(f'{m}_{s}' in codes for m in ('image', 'text')
                                 for s in ('query', 'db')):
      examples_from = (codes, query_labels, db_labels, similarity)
  if not sets:
    print(f'No code file found under {args.codes!r}.', file=sys.stderr)
    return 1
  codes_path = file_io.absolute(args.codes)
  out_dir = args.out or os.path.join(
      codes_path if file_io.isdir(codes_path) else
      os.path.dirname(codes_path), 'evaluate')
  results = suite.assemble(sets, options,
                           {'codes': codes_path,
                            'created': time.strftime('%Y-%m-%dT%H:%M:%S')})
  paths = suite.write_outputs(results, out_dir, plots=not args.no_plots)
  if examples_from and not args.no_plots:
    # Only codes and labels here: items are shown by position and labels.
    from crossmodal_hash.evaluation import examples  # pylint: disable=g-import-not-at-top
    paths.append(os.path.join(out_dir, 'examples.png'))
    examples.plot_examples(paths[-1], *examples_from[:3],
                           similarity=examples_from[3])
  print(results['table'])
  print('\nwrote ' + ', '.join(paths))
  return 0


if __name__ == '__main__':
  sys.exit(cli.guarded(main, debug=lambda: '--debug' in sys.argv)(
      sys.argv[1:]))
