"""The qualitative figure of a report: queries with their top-10 results.

`eval/examples.png` shows, for a few fixed queries of each cross-modal
direction, the query (its image, or its tags) and its top results by Hamming
distance, or by cosine similarity for real-valued embeddings (ties in index
order, as the headline metrics), each framed green
when relevant (shares a label with the query) and red when not. Texts are
shown as their first tags and label names; for datasets without pixels
(pre-extracted features) every item is shown by its id and label names.
"""
from __future__ import annotations

import os
import textwrap
from typing import Any, Sequence

import matplotlib

matplotlib.use('Agg')
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import pyplot as plt
import numpy as np

from crossmodal_hash import file_io
from crossmodal_hash.evaluation import cosine
from crossmodal_hash.retrieval import index as index_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

DIRECTIONS = (('i2t', 'image', 'text'), ('t2i', 'text', 'image'))
_GREEN, _RED, _GREY = '#1a9a3a', '#d02020', '#888888'


def _pixels(images: Any, row: int) -> np.ndarray | None:
  """[H, W, 3] uint8 of an item (a clip's middle frame), None for features."""
  if images.ndim not in (4, 5):
    return None
  x = np.asarray(images[row:row + 1])[0]
  if x.ndim == 4:
    x = x[len(x) // 2]
  return x if x.dtype == np.uint8 and x.shape[-1] == 3 else None


def _describe(labels: np.ndarray, tags: np.ndarray | None, item_id: int,
              vocabulary: Sequence[str] | None,
              label_names: Sequence[str] | None) -> str:
  """A cell's text: the tags of a text (or the item's id), its label names."""
  names = [label_names[j] if label_names else f'label{j}'
           for j in np.flatnonzero(labels)]
  if tags is not None and vocabulary is not None and tags.dtype == np.uint8:
    words = [vocabulary[j] for j in np.flatnonzero(tags)[:5]]
    first = 'tags: ' + (' '.join(words) or '(none)')
  else:
    first = f'item {item_id}'
  return '\n'.join(textwrap.fill(l, 17) for l in
                   (first, 'labels: ' + ', '.join(names[:4])))


def _cell(ax, pixels: np.ndarray | None, text: str, colour: str,
          title: str) -> None:
  ax.set_xticks([])
  ax.set_yticks([])
  if pixels is not None:
    ax.imshow(pixels, interpolation='nearest')
  else:
    ax.set_facecolor('#f7f7f7')
    ax.text(0.04, 0.96, text, fontsize=5, va='top', ha='left', clip_on=True,
            transform=ax.transAxes, family='monospace')
  for spine in ax.spines.values():
    spine.set_edgecolor(colour)
    spine.set_linewidth(3)
  ax.set_title(title, fontsize=7, color=colour)


def _top(query: np.ndarray, db: np.ndarray, top: int, similarity: str
        ) -> tuple[np.ndarray, np.ndarray]:
  """([1, t] database rows, [1, t] distances or similarities) of one query's
  top t = min(top, N) results, ties in index order."""
  if similarity == 'hamming':
    index = index_lib.HammingIndex.from_codes(db)
    return index.search(query, min(top, len(index)))
  q = cosine.check_embeddings(query, 'query')
  d = cosine.check_embeddings(db, 'db')
  sims = cosine.similarities(q, cosine.inverse_norms(q), d,
                             cosine.inverse_norms(d))
  found = np.argsort(-sims, axis=1, kind='stable')[:, :top]
  return found, np.take_along_axis(sims, found, axis=1)


def _score_text(value: float, similarity: str) -> str:
  return f'd={int(value)}' if similarity == 'hamming' else f's={value:.2f}'


def plot_examples(out_png: str | os.PathLike[str], codes: dict[str, np.ndarray],
                  query_labels: np.ndarray, db_labels: np.ndarray, *,
                  data: Any = None, query_rows: np.ndarray | None = None,
                  db_rows: np.ndarray | None = None,
                  vocabulary: Sequence[str] | None = None,
                  label_names: Sequence[str] | None = None,
                  num_queries: int = 3, top: int = 10,
                  similarity: str = 'hamming') -> None:
  """Writes the figure.

  Args:
    out_png: the PNG to write.
    codes: 'image_query', 'text_query' [Q, K] and 'image_db', 'text_db'
      [N, K] in {-1, +1} (a report's codes), or real-valued embeddings with
      `similarity` 'cosine'.
    query_labels: [Q, L] multi-hot; db_labels: [N, L].
    data: the dataset (`types.MultiModalData`; images may be lazy: only the
      shown rows are read), to show images and tags; None shows ids and
      labels only (as for feature-only data).
    query_rows: [Q] dataset rows of the queries; db_rows: [N] of the
      database (with `data`; the ids shown otherwise are positions).
    vocabulary: [V] words of the text columns, to show tags.
    label_names: [L] label names.
    num_queries: queries per direction: evenly spaced over the query set, so
      the same ones in every report of a split.
    top: results per query.
    similarity: 'hamming' (cells show the distance d) or 'cosine' (the
      similarity s).
  """
  query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
  query_rows = (np.arange(len(query_labels)) if query_rows is None else
                np.asarray(query_rows))
  db_rows = np.arange(len(db_labels)) if db_rows is None else np.asarray(
      db_rows)
  picks = np.unique(np.linspace(0, len(query_rows) - 1, num_queries).astype(
      int))
  rows = [(d, q) for d, _, _ in DIRECTIONS for q in picks]
  fig, axes = plt.subplots(len(rows), top + 1,
                           figsize=(1.25 * (top + 1), 1.45 * len(rows)),
                           squeeze=False)

  def show(ax, side, row, item_labels, colour, title):
    pixels = tags = None
    if data is not None:
      pixels = _pixels(data.images, row) if side == 'image' else None
      tags = np.asarray(data.texts[row]) if side == 'text' else None
    _cell(ax, pixels, _describe(item_labels, tags, row, vocabulary,
                                label_names), colour, title)

  for r, (direction, q) in enumerate(rows):
    _, q_side, db_side = next(x for x in DIRECTIONS if x[0] == direction)
    found, dist = _top(codes[f'{q_side}_query'][q:q + 1],
                       codes[f'{db_side}_db'], top, similarity)
    show(axes[r, 0], q_side, int(query_rows[q]), query_labels[q], _GREY,
         f'{direction[0].upper()}->{direction[2].upper()} query')
    for c in range(top):
      ax = axes[r, c + 1]
      if c >= found.shape[1] or found[0, c] < 0:
        ax.axis('off')
        continue
      hit = int(found[0, c])
      relevant = bool(np.any((db_labels[hit] != 0) & (query_labels[q] != 0)))
      show(ax, db_side, int(db_rows[hit]), db_labels[hit],
           _GREEN if relevant else _RED,
           f'#{c + 1} {_score_text(dist[0, c], similarity)} '
           f'{"rel" if relevant else "not"}')
  fig.suptitle('Top results per query: green = relevant (shares a label), '
               'red = not; ties in index order', fontsize=9)
  fig.tight_layout(rect=(0, 0, 1, 0.97))
  try:
    file_io.save_figure(fig, out_png, dpi=110)
  finally:
    plt.close(fig)


def write_report_examples(out_png: str, codes: dict[str, np.ndarray],
                          evaluator: Any, dataset_config: Any, *,
                          similarity: str = 'hamming') -> None:
  """examples.png of a run's report (`trainers/evaluation_hooks.py`).

  Args:
    out_png: the PNG to write.
    codes: the trained codes of the query and retrieval sets.
    evaluator: the trainer's `Evaluator` (its data, query and retrieval
      rows and their labels).
    dataset_config: `config.dataset`, for the vocabulary and label names.
    similarity: 'hamming', or 'cosine' for real-valued embeddings.
  """
  # Imported here: run_artifacts imports the methods and checkpointing.
  from crossmodal_hash import run_artifacts  # pylint: disable=g-import-not-at-top
  vocabulary, label_names = run_artifacts.dataset_names(dataset_config)
  plot_examples(out_png, codes, evaluator.query_labels, evaluator.db_labels,
                data=evaluator.data, query_rows=evaluator.query,
                db_rows=evaluator.retrieval, vocabulary=vocabulary,
                label_names=label_names, similarity=similarity)
