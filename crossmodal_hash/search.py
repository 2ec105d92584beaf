r"""Answers queries against a run's index files: text tags or an image in.

  python -m crossmodal_hash.search --workdir=runs/ssah_synthetic \
      --index=runs/ssah_synthetic/index --text="red_disc blue_ring"
  python -m crossmodal_hash.search --workdir=RUN --index=DIR --image=q.png --k=5
  python -m crossmodal_hash.search --workdir=RUN --index=DIR \
      --query_file=queries.txt --json           # one tag line per query
  python -m crossmodal_hash.search ... --text="red_disc" --intra   # text->text

`--index` is a directory written by `encode.py` (or one `.cmhidx` file). The
search is cross-modal by default: a text query searches the image index, an
image query the text index; `--intra` searches the query's own modality.
Tags go through the run's vocabulary (case-insensitive; unknown tags are
reported and ignored); images are resized to the run's input size and
normalised with its statistics. The index must come from the same run and
checkpoint (`encoding.check_same_run`).

A run of real-valued embeddings (SSAL, MHTN) is searched the same way: its
index (from `encode`) holds the L2-normalised embeddings and the results are
ranked by cosine similarity (ties by index, as its evaluation ranks); with an
index written by `encode --sign_codes`, by the Hamming distance of their
sign() codes.

The output is a table per query (rank, id, Hamming distance 'dist' or cosine
similarity 'cos', and the labels and tags of the item where the dataset has
them) or, with `--json`, a JSON list with one object per query (each result
with 'distance' or 'similarity').

The library is `engine.py` (shared with `serve.py`).
"""
from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
import numpy as np

from crossmodal_hash import encoding
from crossmodal_hash import engine as engine_lib
from crossmodal_hash import file_io
from crossmodal_hash import logging_utils
from crossmodal_hash import run_artifacts
from crossmodal_hash.data import image_files

_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run.')
_INDEX = flags.DEFINE_string('index', None, 'Index directory or .cmhidx file '
                             '(default: <workdir>/index).')
_TEXT = flags.DEFINE_string('text', '', 'A text query: tags separated by '
                            'spaces.')
_IMAGE = flags.DEFINE_string('image', '', 'An image query: a JPEG/PNG file.')
_QUERY_FILE = flags.DEFINE_string(
    'query_file', '', 'Queries, one a line: tag lines (text queries), or '
    'image paths with --query_modality=image.')
_QUERY_MODALITY = flags.DEFINE_enum('query_modality', 'text',
                                    list(encoding.MODALITIES),
                                    'What --query_file holds.')
_K = flags.DEFINE_integer('k', 10, 'Results per query.')
_INTRA = flags.DEFINE_bool('intra', False, "Search the query's own modality.")
_JSON = flags.DEFINE_bool('json', False, 'Print JSON instead of tables.')
_CHECKPOINT = flags.DEFINE_integer('checkpoint', None, 'Checkpoint (default: '
                                   'the selected, else the latest).')


def _queries(engine: engine_lib.Engine) -> tuple[str, list[str], np.ndarray]:
  """(modality, query strings, raw inputs) from the flags."""
  given = [bool(_TEXT.value), bool(_IMAGE.value), bool(_QUERY_FILE.value)]
  if sum(given) != 1:
    raise app.UsageError('Give exactly one of --text, --image, --query_file.')
  if _TEXT.value:
    return 'text', [_TEXT.value], engine.text_inputs([_TEXT.value])
  if _IMAGE.value:
    paths, modality = [_IMAGE.value], 'image'
  else:
    lines = [l.strip() for l in file_io.read_text(
        _QUERY_FILE.value).splitlines() if l.strip()]
    if not lines:
      raise engine_lib.QueryError(f'{_QUERY_FILE.value}: no query in the file.')
    if _QUERY_MODALITY.value == 'text':
      return 'text', lines, engine.text_inputs(lines)
    paths, modality = lines, 'image'
  size = engine.image_shape()[0]
  return modality, paths, np.stack([image_files.decode(p, size)
                                    for p in paths])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _K.value < 1:
    raise app.UsageError(f'--k={_K.value} must be >= 1.')
  logging_utils.quiet_library_info()
  run = run_artifacts.load_run(_WORKDIR.value, checkpoint=_CHECKPOINT.value)
  engine = engine_lib.Engine(run, _INDEX.value or os.path.join(_WORKDIR.value, 'index'))
  try:
    modality, names, inputs = _queries(engine)
    answers = engine.query(modality, inputs, k=_K.value, intra=_INTRA.value)
  except engine_lib.QueryError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  target = engine.target(modality, _INTRA.value)
  if _JSON.value:
    out = [{'query': q, 'modality': modality, 'searched': target,
            'ranking': engine.kind,
            'unknown_tags': engine.unknown_tags(q) if modality == 'text' else [],
            'results': r} for q, r in zip(names, answers)]
    print(json.dumps(out, indent=1, ensure_ascii=False))
  else:
    for q, r in zip(names, answers):
      unknown = engine.unknown_tags(q) if modality == 'text' else []
      print(engine_lib.format_table(f'{q} ({modality} -> {target}'
                         f'{"; unknown tags ignored: " + " ".join(unknown) if unknown else ""})',
                         r))
      print()


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
