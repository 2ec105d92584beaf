"""Evaluation outputs: a printed mAP table, a JSON report and the saved codes.

Files are written atomically through `file_io` (locally a temporary file in
the same directory, then `os.replace`; in object storage one upload), so a
reader never sees a half-written report, and a crash leaves the previous
version in place.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import math
import os
from typing import Any

import numpy as np

from crossmodal_hash import file_io
from crossmodal_hash import logging_utils
from crossmodal_hash.evaluation import code_stats
from crossmodal_hash.evaluation import metrics

DIRECTION_NAMES = {'i2t': 'I->T', 't2i': 'T->I', 'i2i': 'I->I', 't2t': 'T->T'}


def format_map_table(rows: Mapping[str, Mapping[str, float]],
                     directions: Sequence[str] = metrics.DIRECTIONS,
                     *,
                     name_header: str = 'codes') -> str:
  """A fixed-width text table of mAP, one row per named code set.

  Example (`rows = {'SSAH (32 bits)': {'i2t': 0.71, ...}, ...}`):

    codes                     I->T    T->I    I->I    T->T
    ------------------------------------------------------
    SSAH (32 bits)          0.7100  0.7000  0.6500  0.6900
    random codes (32 bits)  0.3410  0.3401  0.3398  0.3405

  Args:
    rows: {row name: {direction: mAP}}, in display order; a direction missing
      from a row (or a non-finite value) is shown as '-'.
    directions: the columns, keys of the inner mappings (e.g. 'i2t').
    name_header: the header of the name column.

  Returns:
    The table, lines joined by '\\n' (no trailing newline).
  """
  headers = [DIRECTION_NAMES.get(d, d) for d in directions]
  name_width = max([len(name_header)] + [len(str(name)) for name in rows])
  col_width = max([6] + [len(h) for h in headers])

  def cell(value: Any) -> str:
    if value is None:
      return '-'
    value = float(value)
    return f'{value:.4f}' if math.isfinite(value) else '-'

  lines = ['  '.join([name_header.ljust(name_width)] +
                     [h.rjust(col_width) for h in headers])]
  lines.append('-' * len(lines[0]))
  for name, row in rows.items():
    cells = [cell(row.get(d)).rjust(col_width) for d in directions]
    lines.append('  '.join([str(name).ljust(name_width)] + cells))
  return '\n'.join(lines)


_TIE_LABELS = {'index': 'index order', 'tie_aware': 'tie-aware'}
_EMPTY_LABELS = {'zero': 'counted as 0', 'skip': 'skipped'}
# P@N rows shown in the printed table (all of them are in the JSON report).
_TABLE_PRECISION_AT = (10, 100, 1000)
# Hamming radius of the classic "precision within radius 2" row.
_TABLE_RADIUS = 2


def _metric_rows(directions: Mapping[str, Mapping[str, Any]]
                ) -> list[tuple[str, dict[str, float]]]:
  """(row label, {direction: value}) of one code set's detail table."""
  rows: dict[str, dict[str, float]] = {}

  def put(label: str, direction: str, value: float) -> None:
    rows.setdefault(label, {})[direction] = value

  for direction, r in directions.items():
    for policy, value in r['map'].items():
      put(f'mAP@all ({_TIE_LABELS[policy]})', direction, value)
    if 'map_at_k' in r:
      for i, k in enumerate(r['map_at_k']['k']):
        put(f'mAP@{k} (truncated)', direction, r['map_at_k']['truncated'][i])
        put(f'mAP@{k} (DCMH)', direction, r['map_at_k']['dcmh'][i])
    if 'ndcg_at_k' in r:
      for i, k in enumerate(r['ndcg_at_k']['k']):
        for policy in r['map']:
          put(f'NDCG@{k} ({_TIE_LABELS[policy]})', direction,
              r['ndcg_at_k'][policy][i])
    if 'precision_at_n' in r:
      for i, n in enumerate(r['precision_at_n']['n']):
        if n in _TABLE_PRECISION_AT:
          for policy in r['map']:
            put(f'P@{n} ({_TIE_LABELS[policy]})', direction,
                r['precision_at_n'][policy][i])
    if 'pr_radius' in r and len(r['pr_radius']['radius']) > _TABLE_RADIUS:
      curve = r['pr_radius']
      if curve['num_defined'][_TABLE_RADIUS]:
        put(f'precision (r<={_TABLE_RADIUS})', direction,
            curve['precision'][_TABLE_RADIUS])
      put(f'recall (r<={_TABLE_RADIUS})', direction,
          curve['recall'][_TABLE_RADIUS])
  return list(rows.items())


def format_evaluation_table(results: Mapping[str, Any]) -> str:
  """The printed table of an evaluation suite run (`suite.assemble`).

  First the headline mAP@all of every code set and direction, then one block
  per code set with every metric (rows) by direction (columns) and its code
  quality (`code_stats`); a collapse warning, if any, comes first and last.

  Args:
    results: with 'headline', 'map' and 'sets' as `suite.assemble` makes them.

  Returns:
    The table, lines joined by '\\n' (no trailing newline).
  """
  headline = results['headline']
  sets = results['sets']
  directions = [d for d in metrics.DIRECTIONS
                if any(d in s['directions'] for s in sets.values())]
  warnings = code_stats.format_warnings(results.get('warnings', []))
  parts = [warnings] if warnings else []
  parts += [f"mAP@all ({_TIE_LABELS[headline['ties']]}; queries without a "
            f"relevant item {_EMPTY_LABELS[headline['empty']]})",
            format_map_table(results['map'], directions)]
  for name, s in sets.items():
    parts.append('')
    size = (f"{s['bits']}-d real embeddings, cosine"
            if s.get('similarity') == 'cosine' else f"{s['bits']} bits")
    parts.append(f"{name}: {s['num_queries']} queries x {s['num_database']} "
                 f"items, {size} ({s['seconds']:.2f} s)")
    parts.append(format_map_table(dict(_metric_rows(s['directions'])),
                                  directions, name_header='metric'))
    if s.get('code_stats'):
      parts.append('')
      parts.append(code_stats.format_table(s['code_stats']))
  if warnings:
    parts += ['', warnings]
  return '\n'.join(parts)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
  """Writes `obj` as pretty-printed JSON, atomically.

  Args:
    path: the destination file; its directory is created if needed.
    obj: nested dicts/lists of scalars; NumPy/JAX scalars and arrays are
      converted to Python numbers and lists.
  """
  text = json.dumps(logging_utils.to_jsonable(obj), indent=2,
                    ensure_ascii=False) + '\n'
  file_io.write_text(path, text)


def read_json(path: str | os.PathLike[str]) -> Any:
  """Reads a file written by `write_json`."""
  return json.loads(file_io.read_text(path))


def save_codes(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
  """Saves codes and labels with `np.savez_compressed`, atomically.

  Arrays whose name contains 'label' (e.g. `query_labels`) are stored as they
  are; every other array must be ±1 codes and is stored as int8.

  Example:
    save_codes(path, image_query=bq, text_query=cq, image_db=bd, text_db=cd,
               query_labels=lq, db_labels=ld)

  Args:
    path: the destination, used verbatim (no '.npz' is appended).
    **arrays: codes ([M, K] in {-1, +1}, any dtype) and labels ([M, L]).
  """
  converted = {}
  for name, array in arrays.items():
    array = np.asarray(array)
    if 'label' not in name:
      if not np.all((array == 1) | (array == -1)):
        raise ValueError(f'{name} must contain only -1 and +1 (names '
                         "containing 'label' are stored unchanged).")
      array = array.astype(np.int8)
    converted[name] = array
  file_io.save_npz(path, compressed=True, **converted)


def save_embeddings(path: str | os.PathLike[str], **arrays: np.ndarray
                   ) -> None:
  """Saves real-valued embeddings and labels like `save_codes`, atomically.

  The keys and layout are those of a codes file (image_query [Q, D], ...,
  query_labels, retrieval_labels); embeddings are stored as float32.

  Args:
    path: the destination, used verbatim.
    **arrays: embeddings ([M, D], finite reals) and labels (names containing
      'label', stored unchanged).
  """
  converted = {}
  for name, array in arrays.items():
    array = np.asarray(array)
    if 'label' not in name:
      if array.ndim != 2 or not np.all(np.isfinite(array)):
        raise ValueError(f'{name} must be [M, D] finite real embeddings; got '
                         f'shape {array.shape}.')
      array = array.astype(np.float32)
    converted[name] = array
  file_io.save_npz(path, compressed=True, **converted)


def save_arrays(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
  """Saves arrays as they are with `np.savez`, atomically."""
  file_io.save_npz(path, **arrays)


def load_codes(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Reads a file written by `save_codes` into {name: array}."""
  return file_io.load_npz(path)
