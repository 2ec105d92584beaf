"""The evaluation suite: every metric of every direction, the report and plots.

`evaluate_codes` is what a trainer calls at the end of training (and
periodically): for one or more named code sets (e.g. the trained codes and
random codes of the same length) it computes, per retrieval direction, every
metric of `summary.summarize`, prints nothing, writes `evaluation.json` and the
PNG curves to `out_dir`, and returns the results with the printed table.

`evaluate_set`, `assemble` and `write_outputs` are its three steps, used on
their own by the command line (`python -m crossmodal_hash.evaluate`), which
evaluates saved code files that may each carry their own labels.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import os
import time
from typing import Any

import numpy as np

from crossmodal_hash.evaluation import code_stats
from crossmodal_hash.evaluation import metrics
from crossmodal_hash.evaluation import ranking
from crossmodal_hash.evaluation import report
from crossmodal_hash.evaluation import summary

REPORT_NAME = 'evaluation.json'
PR_PLOT_NAME = 'pr_curves.png'
PRECISION_PLOT_NAME = 'precision_at_n.png'
MAP_PLOT_NAME = 'map.png'

_TUPLE_FIELDS = ('ties', 'top_k', 'precision_at', 'ndcg_k')
SIMILARITIES = ('hamming', 'cosine')


def options_from_config(config: Any) -> ranking.EvalOptions:
  """`EvalOptions` from a config section (ConfigDict or mapping).

  Fields of `EvalOptions` present in `config` override the defaults; others
  (e.g. `batch_size`, `plots`) are ignored. Tuple fields also accept a
  comma- or semicolon-separated string ('index,tie_aware', '100;1000').

  Args:
    config: e.g. `config.eval`, or None for the defaults.
  """
  if config is None:
    return ranking.EvalOptions()
  values = {}
  for field in dataclasses.fields(ranking.EvalOptions):
    if field.name not in config:
      continue
    value = config[field.name]
    if field.name in _TUPLE_FIELDS:
      if isinstance(value, str):
        value = [v for v in value.replace(';', ',').split(',') if v.strip()]
      value = tuple(v.strip() if field.name == 'ties' else int(v)
                    for v in value)
    values[field.name] = value
  return ranking.EvalOptions(**values)


def available_directions(codes: Mapping[str, np.ndarray]) -> tuple[str, ...]:
  """The directions of `metrics.DIRECTIONS` whose two code sets are present."""
  return tuple(d for d, keys in metrics.DIRECTION_PAIRS.items()
               if all(k in codes for k in keys))


def evaluate_set(codes: Mapping[str, np.ndarray], query_labels: np.ndarray,
                 db_labels: np.ndarray, *,
                 options: ranking.EvalOptions | None = None,
                 directions: Sequence[str] | None = None,
                 similarity: str = 'hamming') -> dict[str, Any]:
  """Every metric of every direction of one code set.

  Args:
    codes: 'image_query' / 'text_query' [Q, K] and 'image_db' / 'text_db'
      [N, K] (see `metrics.DIRECTION_PAIRS`): in {-1, +1} for 'hamming';
      real-valued embeddings (K = D) for 'cosine'.
    query_labels: [Q, L] multi-hot or [Q] class ids.
    db_labels: [N, L] multi-hot or [N] class ids.
    options: what to compute; defaults to `EvalOptions()`.
    directions: the directions to evaluate; None means every direction whose
      codes are present.
    similarity: 'hamming' (`metrics.evaluate_hamming`) or 'cosine'
      (`metrics.evaluate_cosine`: streamed over the database, no radius
      curve, no code statistics).

  Returns:
    {'similarity', 'bits': K (the embedding size D for 'cosine'),
     'num_queries': Q, 'num_database': N, 'seconds': float,
     'directions': {direction: `summary.summarize` dict}, 'code_stats':
     {array name: `code_stats.describe` dict} ('hamming' only)}.
  """
  if similarity not in SIMILARITIES:
    raise ValueError(f'similarity must be one of {SIMILARITIES}; got '
                     f'{similarity!r}.')
  options = options or ranking.EvalOptions()
  directions = (available_directions(codes) if directions is None else
                tuple(directions))
  if not directions:
    raise ValueError(f'No retrieval direction can be evaluated from codes '
                     f'{sorted(codes)}; need e.g. image_query and text_db.')
  tic = time.perf_counter()
  results = {}
  bits = None
  for direction in directions:
    query, db = metrics.direction_codes(codes, direction)
    bits = np.shape(query)[-1]
    evaluate = (metrics.evaluate_cosine if similarity == 'cosine' else
                metrics.evaluate_hamming)
    results[direction] = evaluate(query, db, query_labels, db_labels,
                                  options)
  first = results[directions[0]]
  out = {'similarity': similarity, 'bits': int(bits),
         'num_queries': first['num_queries'],
         'num_database': first['num_database'],
         'seconds': time.perf_counter() - tic, 'directions': results}
  if similarity == 'hamming':
    out['code_stats'] = code_stats.describe_set(codes)
  return out


def assemble(sets: Mapping[str, Mapping[str, Any]],
             options: ranking.EvalOptions,
             metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The report of several evaluated code sets, with its printed table.

  Args:
    sets: {name: `evaluate_set` result}, in display order.
    options: the options they were evaluated with.
    metadata: extra JSON-able entries for the report (e.g. the step).

  Returns:
    {'options', 'definitions', 'headline', 'map': {name: {direction: mAP}},
     'sets', 'warnings', 'table', **metadata}; 'map' holds mAP@all under the headline tie
    policy `options.ties[0]`.
  """
  headline = options.ties[0]
  maps = {name: {d: r['map'][headline] for d, r in s['directions'].items()}
          for name, s in sets.items()}
  results = dict(metadata or {})
  results.update({
      'options': dataclasses.asdict(options),
      'definitions': summary.DEFINITIONS,
      'headline': {'metric': 'map', 'ties': headline, 'empty': options.empty},
      'map': maps,
      'sets': dict(sets),
      # Collapsed codes (code_stats.collapse_reasons), one line per set.
      'warnings': code_stats.collapse_warnings(
          {name: s['code_stats'] for name, s in sets.items()
           if 'code_stats' in s}),
  })
  results['table'] = report.format_evaluation_table(results)
  return results


def write_outputs(results: Mapping[str, Any], out_dir: str | os.PathLike[str],
                  *, plots: bool = True) -> list[str]:
  """Writes the JSON report and (optionally) the PNG curves.

  Args:
    results: from `assemble`.
    out_dir: created if needed.
    plots: whether to draw `pr_curves.png` (precision against recall over
      Hamming radii) and `precision_at_n.png`, one panel per direction and
      one line per code set, and `map.png`, the headline mAP@all of each
      direction as bars, one per code set.

  Returns:
    The paths written.
  """
  # Imported here: matplotlib is only needed when plotting.
  from crossmodal_hash.evaluation import plots as plots_lib  # pylint: disable=g-import-not-at-top

  out_dir = os.fspath(out_dir)
  paths = [os.path.join(out_dir, REPORT_NAME)]
  report.write_json(paths[0], results)
  if plots:
    pr_path = os.path.join(out_dir, PR_PLOT_NAME)
    if plots_lib.plot_pr_curves(results, pr_path):
      paths.append(pr_path)
    p_path = os.path.join(out_dir, PRECISION_PLOT_NAME)
    if plots_lib.plot_precision_at_n(results, p_path):
      paths.append(p_path)
    map_path = os.path.join(out_dir, MAP_PLOT_NAME)
    directions = [d for d in metrics.DIRECTIONS
                  if any(d in maps for maps in results['map'].values())]
    if directions:
      plots_lib.plot_map_bars(results['map'], map_path, directions)
      paths.append(map_path)
  return paths


def evaluate_codes(code_sets: Mapping[str, Mapping[str, np.ndarray]],
                   query_labels: np.ndarray,
                   db_labels: np.ndarray,
                   *,
                   options: ranking.EvalOptions | None = None,
                   directions: Sequence[str] | None = None,
                   out_dir: str | os.PathLike[str] | None = None,
                   plots: bool = True,
                   metadata: Mapping[str, Any] | None = None,
                   similarities: Mapping[str, str] | None = None
                  ) -> dict[str, Any]:
  """Evaluates named code sets on shared labels; writes the report and plots.

  Example (end of training):

    results = suite.evaluate_codes(
        {'SSAH (64 bits)': codes, 'random codes (64 bits)': random_codes},
        query.labels, db.labels, options=suite.options_from_config(
            config.eval), out_dir=os.path.join(workdir, 'eval'))
    print(results['table'])

  Args:
    code_sets: {name: codes}, each as in `evaluate_set` (image_query,
      text_query, image_db, text_db in {-1, +1}); display order.
    query_labels: [Q, L] multi-hot or [Q] class ids.
    db_labels: [N, L] multi-hot or [N] class ids.
    options: what to compute; defaults to `EvalOptions()` (both tie policies,
      index order the headline, empty queries counted as 0).
    directions: None means every direction whose codes are present.
    out_dir: where to write `evaluation.json` (and the plots); None writes
      nothing.
    plots: whether to draw the PNG curves into `out_dir`.
    metadata: extra JSON-able entries for the report (e.g. {'step': 1200}).
    similarities: {set name: 'hamming' or 'cosine'} (`evaluate_set`); sets
      not named are ±1 codes ranked by Hamming distance. Real-valued
      embeddings and the Hamming codes of other methods (or their sign()
      codes) thus share one table.

  Returns:
    `assemble`'s dict: 'map' {name: {direction: mAP@all}}, 'sets' with every
    metric, 'table' the printed table, 'options' and 'definitions'; plus
    'files', the paths written.
  """
  options = options or ranking.EvalOptions()
  similarities = similarities or {}
  sets = {name: evaluate_set(codes, query_labels, db_labels, options=options,
                             directions=directions,
                             similarity=similarities.get(name, 'hamming'))
          for name, codes in code_sets.items()}
  results = assemble(sets, options, metadata)
  results['files'] = ([] if out_dir is None else
                      write_outputs(results, out_dir, plots=plots))
  return results
