"""PNG plots of a run: training curves, mAP bars, precision/recall by radius.

Uses matplotlib's non-interactive Agg backend (selected at import), so plots
work on headless hosts; every function writes one PNG and closes its figure.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
import os

import matplotlib

matplotlib.use('Agg')
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import pyplot as plt
import numpy as np

from crossmodal_hash import logging_utils
from crossmodal_hash.evaluation import metrics
from crossmodal_hash.evaluation import report
# pylint: enable=g-import-not-at-top,wrong-import-position

_DPI = 120


def _save(fig: 'matplotlib.figure.Figure', out_png: str) -> None:
  directory = os.path.dirname(os.path.abspath(out_png))
  os.makedirs(directory, exist_ok=True)
  try:
    fig.savefig(out_png, dpi=_DPI, format='png', bbox_inches='tight')
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

  Records look like `{"step": 120, "network": "img", "epoch": 0,
  "loss": 0.53}`; records without "step" or a finite "loss" are ignored for
  the loss panel, a missing "network" is labelled 'loss'. The y axis is
  logarithmic when every plotted loss is positive. If some records carry
  "map/<name>" keys (e.g. "map/i2t"), a second panel plots them against step.

  Args:
    metrics_jsonl: a JSON-lines file written by `logging_utils.MetricsWriter`.
    out_png: the PNG to write.
  """
  records = logging_utils.read_metrics(metrics_jsonl)
  losses: dict[str, list[tuple[float, float]]] = {}
  maps: dict[str, list[tuple[float, float]]] = {}
  for record in records:
    if not _finite(record.get('step')):
      continue
    step = float(record['step'])
    if _finite(record.get('loss')):
      network = str(record.get('network', 'loss'))
      losses.setdefault(network, []).append((step, float(record['loss'])))
    for key, value in record.items():
      if key.startswith('map/') and _finite(value):
        maps.setdefault(key[len('map/'):], []).append((step, float(value)))

  ncols = 2 if maps else 1
  fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.5), squeeze=False)
  ax = axes[0, 0]
  for network, points in sorted(losses.items()):
    points.sort()
    ax.plot([p[0] for p in points], [p[1] for p in points], label=network,
            linewidth=1.2)
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


def plot_precision_at_radius(
    codes: Mapping[str, np.ndarray],
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    out_png: str | os.PathLike[str],
    max_radius: int | None = None,
    directions: Sequence[str] = ('i2t', 't2i'),
) -> dict[str, metrics.RadiusCurve]:
  """Plots precision and recall of Hamming-ball lookup against the radius.

  For each direction and radius r = 0..max_radius, the retrieved set is every
  database item within Hamming distance r (see
  `metrics.precision_recall_at_radius`). Left panel: precision (solid) and
  recall (dashed) against r; right panel: precision against recall. Radii
  where no query's ball is non-empty have no defined precision and are left
  out of the plot (no NaN is ever plotted).

  Args:
    codes: as in `metrics.cross_modal_map` ('image_query', 'text_query',
      'image_db', 'text_db'; [Q, K] / [N, K] in {-1, +1}).
    query_labels: [Q, L] multi-hot.
    db_labels: [N, L] multi-hot.
    out_png: the PNG to write.
    max_radius: the largest radius; None means K.
    directions: which directions to plot.

  Returns:
    {direction: RadiusCurve}, the plotted data (precision only where
    `curve.defined`).
  """
  curves = {}
  for direction in directions:
    query_key, db_key = metrics.DIRECTION_PAIRS[direction]
    curves[direction] = metrics.precision_recall_at_radius(
        codes[query_key], codes[db_key], query_labels, db_labels,
        max_radius=max_radius)

  fig, (ax_r, ax_pr) = plt.subplots(1, 2, figsize=(12, 4.5))
  for direction, curve in curves.items():
    label = report.DIRECTION_NAMES.get(direction, direction)
    defined = curve.defined
    line, = ax_r.plot(curve.radius[defined], curve.precision[defined],
                      marker='o', markersize=3, label=f'{label} precision')
    ax_r.plot(curve.radius, curve.recall, linestyle='--',
              color=line.get_color(), label=f'{label} recall')
    ax_pr.plot(curve.recall[defined], curve.precision[defined], marker='o',
               markersize=3, color=line.get_color(), label=label)
  ax_r.set_xlabel('Hamming radius r')
  ax_r.set_ylabel('precision / recall within radius r')
  ax_r.set_ylim(-0.02, 1.02)
  ax_r.legend(fontsize=8)
  ax_r.grid(True, alpha=0.3)
  ax_pr.set_xlabel('recall')
  ax_pr.set_ylabel('precision')
  ax_pr.set_xlim(-0.02, 1.02)
  ax_pr.set_ylim(-0.02, 1.02)
  ax_pr.set_title('precision-recall over Hamming radii')
  ax_pr.legend(fontsize=8)
  ax_pr.grid(True, alpha=0.3)
  _save(fig, out_png)
  return curves
