"""PNG plots of a run: training curves, mAP bars, PR and precision@N curves.

Uses matplotlib's non-interactive Agg backend (selected at import), so plots
work on headless hosts; every function writes one PNG and closes its figure.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
import os
from typing import Any

import matplotlib

matplotlib.use('Agg')
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import pyplot as plt
import numpy as np

from crossmodal_hash import file_io
from crossmodal_hash import logging_utils
from crossmodal_hash.evaluation import metrics
from crossmodal_hash.evaluation import report
# pylint: enable=g-import-not-at-top,wrong-import-position

_DPI = 120


def _save(fig: 'matplotlib.figure.Figure', out_png: str) -> None:
  try:
    file_io.save_figure(fig, out_png, dpi=_DPI, bbox_inches='tight')
  finally:
    plt.close(fig)


def _finite(value) -> bool:
  try:
    return math.isfinite(float(value))
  except (TypeError, ValueError):
    return False


def plot_training_curves(metrics_jsonl: str | os.PathLike[str],
                         out_png: str | os.PathLike[str]) -> None:
  """Plots loss against step, one line per network, from a metrics file.

  Records look like `{"step": 120, "pass": 3, "network": "img", "epoch": 0,
  "loss": 0.53}`; records without "step" or a finite "loss" are ignored for
  the loss panel, a missing "network" is labelled 'loss'. A network's line is
  drawn only over the passes that train it: it breaks where other networks'
  passes come between two of its own (records carrying "pass"). The y axis is
  logarithmic when every plotted loss is positive. If some records carry
  "map/<name>" keys (e.g. "map/i2t"), a second panel plots them against step.

  Args:
    metrics_jsonl: a JSON-lines file written by `logging_utils.MetricsWriter`.
    out_png: the PNG to write.
  """
  records = logging_utils.read_metrics(metrics_jsonl)
  losses: dict[str, list[tuple[float, float, Any]]] = {}
  maps: dict[str, list[tuple[float, float]]] = {}
  for record in records:
    if not _finite(record.get('step')):
      continue
    step = float(record['step'])
    if _finite(record.get('loss')):
      network = str(record.get('network', 'loss'))
      losses.setdefault(network, []).append(
          (step, float(record['loss']), record.get('pass')))
    for key, value in record.items():
      if key.startswith('map/') and _finite(value):
        maps.setdefault(key[len('map/'):], []).append((step, float(value)))

  ncols = 2 if maps else 1
  fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.5), squeeze=False)
  ax = axes[0, 0]
  for network, points in sorted(losses.items()):
    points.sort(key=lambda p: p[0])
    xs, ys = _trained_segments(points)
    ax.plot(xs, ys, label=network, linewidth=1.2, marker='.', markersize=3)
  all_losses = [p[1] for points in losses.values() for p in points]
  if all_losses and min(all_losses) > 0:
    ax.set_yscale('log')
  if not all_losses:
    ax.text(0.5, 0.5, 'no loss records', ha='center', va='center',
            transform=ax.transAxes)
  else:
    ax.legend(title='network')
  ax.set_xlabel('step')
  ax.set_ylabel('loss')
  ax.set_title('training loss')
  ax.grid(True, which='both', alpha=0.3)
  if maps:
    ax = axes[0, 1]
    for name, points in sorted(maps.items()):
      points.sort()
      ax.plot([p[0] for p in points], [p[1] for p in points], marker='o',
              markersize=3, label=report.DIRECTION_NAMES.get(name, name))
    ax.set_xlabel('step')
    ax.set_ylabel('mAP')
    ax.set_title('evaluation mAP')
    ax.legend()
    ax.grid(True, alpha=0.3)
  _save(fig, out_png)


def _trained_segments(points: list[tuple[float, float, Any]]
                     ) -> tuple[list[float], list[float]]:
  """x and y of (step, loss, pass) points with NaN gaps between runs of
  consecutive passes, so that no line crosses other networks' passes."""
  xs, ys = [], []
  previous = None
  for step, loss, pass_index in points:
    if isinstance(previous, int) and isinstance(pass_index, int) and (
        pass_index != previous + 1):
      xs.append(math.nan)
      ys.append(math.nan)
    xs.append(step)
    ys.append(loss)
    previous = pass_index
  return xs, ys


def plot_map_bars(rows: Mapping[str, Mapping[str, float]],
                  out_png: str | os.PathLike[str],
                  directions: Sequence[str] = metrics.DIRECTIONS) -> None:
  """Grouped bars of mAP: one group per direction, one bar per code set.

  Args:
    rows: {code set name: {direction: mAP}}, e.g. trained vs random codes; a
      missing or non-finite value leaves its bar out.
    out_png: the PNG to write.
    directions: the groups, in order.
  """
  names = list(rows)
  fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(directions) + 2), 4.5))
  x = np.arange(len(directions), dtype=np.float64)
  width = 0.8 / max(len(names), 1)
  for i, name in enumerate(names):
    offsets = x - 0.4 + width * (i + 0.5)
    values = [rows[name].get(d) for d in directions]
    keep = [j for j, v in enumerate(values) if _finite(v)]
    bars = ax.bar(offsets[keep], [float(values[j]) for j in keep], width,
                  label=name)
    ax.bar_label(bars, fmt='%.3f', fontsize=7, padding=1)
  ax.set_xticks(x, [report.DIRECTION_NAMES.get(d, d) for d in directions])
  ax.set_ylim(0.0, 1.05)
  ax.set_ylabel('mAP@all')
  ax.set_title('mAP by retrieval direction')
  if names:
    ax.legend(fontsize=8)
  ax.grid(True, axis='y', alpha=0.3)
  _save(fig, out_png)


def _direction_axes(directions: Sequence[str], title: str
                   ) -> tuple['matplotlib.figure.Figure', dict[str, Any]]:
  """A figure with one panel per direction, in a row."""
  fig, axes = plt.subplots(1, len(directions),
                           figsize=(4.2 * len(directions), 4.2),
                           squeeze=False)
  fig.suptitle(title)
  return fig, dict(zip(directions, axes[0]))


def _suite_curves(results: Mapping[str, Any], key: str
                 ) -> tuple[list[str], dict[str, dict[str, Any]]]:
  """(directions, {set name: {direction: results entry `key`}})."""
  curves: dict[str, dict[str, Any]] = {}
  for name, s in results['sets'].items():
    for direction, r in s['directions'].items():
      if key in r:
        curves.setdefault(name, {})[direction] = r[key]
  directions = [d for d in metrics.DIRECTIONS
                if any(d in c for c in curves.values())]
  return directions, curves


def plot_pr_curves(results: Mapping[str, Any],
                   out_png: str | os.PathLike[str]) -> bool:
  """Precision against recall over Hamming radii, per direction and code set.

  One panel per direction, one line per code set (e.g. per bit length); each
  point is a radius r (retrieved = items within distance <= r). Radii where
  no query's ball is non-empty have no precision and are left out. A set
  without a radius curve (real-valued embeddings ranked by cosine) is drawn
  over its precision@N cutoffs instead: each point the first N items.

  Args:
    results: from `suite.assemble` / `suite.evaluate_codes`.
    out_png: the PNG to write.

  Returns:
    Whether a plot was written (False if no code set has a radius curve or
    a precision@N curve).
  """
  directions, curves = _suite_curves(results, 'pr_radius')
  # Sets without a radius curve (cosine rankings): over the top N instead.
  _, top_n = _suite_curves(results, 'recall_at_n')
  top_n = {name: by_direction for name, by_direction in top_n.items()
           if name not in curves}
  directions = [d for d in metrics.DIRECTIONS
                if d in directions or any(d in c for c in top_n.values())]
  if not directions:
    return False
  headline = results['headline']['ties']
  fig, axes = _direction_axes(
      directions, 'precision-recall over Hamming radii' +
      (' (over the top N for cosine rankings)' if top_n else ''))
  for name, by_direction in curves.items():
    for direction, curve in by_direction.items():
      defined = np.asarray(curve['num_defined']) > 0
      axes[direction].plot(np.asarray(curve['recall'])[defined],
                           np.asarray(curve['precision'])[defined],
                           marker='o', markersize=2.5, linewidth=1.2,
                           label=name)
  for name, by_direction in top_n.items():
    for direction, recall in by_direction.items():
      precision = results['sets'][name]['directions'][direction][
          'precision_at_n']
      axes[direction].plot(recall[headline], precision[headline],
                           marker='s', markersize=2.5, linewidth=1.2,
                           label=f'{name} (top N)')
  for direction, ax in axes.items():
    ax.set_title(report.DIRECTION_NAMES.get(direction, direction))
    ax.set_xlabel('recall')
    ax.set_ylabel('precision')
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  _save(fig, out_png)
  return True


def plot_precision_at_n(results: Mapping[str, Any],
                        out_png: str | os.PathLike[str]) -> bool:
  """Precision@N against N (log axis), per direction and code set.

  Solid lines are the headline tie policy; with both policies computed, the
  other is dashed in the same colour.

  Args:
    results: from `suite.assemble` / `suite.evaluate_codes`.
    out_png: the PNG to write.

  Returns:
    Whether a plot was written (False if no code set has a P@N curve).
  """
  directions, curves = _suite_curves(results, 'precision_at_n')
  if not directions:
    return False
  headline = results['headline']['ties']
  fig, axes = _direction_axes(directions, 'precision@N')
  for name, by_direction in curves.items():
    for direction, curve in by_direction.items():
      ax = axes[direction]
      line, = ax.plot(curve['n'], curve[headline], marker='o', markersize=2.5,
                      linewidth=1.2, label=f'{name} ({headline})')
      for policy in ('index', 'tie_aware'):
        if policy != headline and policy in curve:
          ax.plot(curve['n'], curve[policy], linestyle='--', linewidth=1.0,
                  color=line.get_color(), label=f'{name} ({policy})')
  for direction, ax in axes.items():
    ax.set_title(report.DIRECTION_NAMES.get(direction, direction))
    ax.set_xscale('log')
    ax.set_xlabel('N (top items)')
    ax.set_ylabel('precision@N')
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7)
  _save(fig, out_png)
  return True
