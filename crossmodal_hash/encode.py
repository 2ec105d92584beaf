r"""Encodes items through a trained run into index files (Hamming or cosine).

  python -m crossmodal_hash.encode --workdir=runs/ssah_synthetic \
      --out=runs/ssah_synthetic/index                     # its retrieval set
  python -m crossmodal_hash.encode --workdir=RUN --out=DIR --items=all --faiss
  python -m crossmodal_hash.encode --workdir=RUN --out=DIR \
      --data=/data/FLICKR-25K.mat [--data_format=dcmh_mat] \
      [--data_options=require_images=false]               # another dataset
  python -m crossmodal_hash.encode --workdir=RUN --out=DIR \
      --image_files='photos/*.jpg' --tag_lines=tags.txt   # raw inputs
  python -m crossmodal_hash.encode --workdir=runs/ssal_synthetic \
      --out=runs/ssal_synthetic/index                     # a cosine index
  python -m crossmodal_hash.encode --workdir=runs/ssal_synthetic \
      --out=runs/ssal_synthetic/sign_index --sign_codes   # Hamming, sign()

The run's checkpoint is `<workdir>/selected_checkpoint.json`'s step, else the
latest (`--checkpoint` picks one). Everything encoding needs (the config, the
image normalisation, the vocabulary) comes from the workdir
(`run_artifacts.py`); the training data is not read, except where the items
to encode are the run's own dataset (`--items`).

Each modality is encoded in batches split over the devices; lazy images
(HDF5, image files, ArrayRecord) are read one batch at a time. For each
modality (`--modalities`, default both where the items have them) DIR gets:

    <modality>.cmhidx       a `retrieval.index.HammingIndex` (format 2): the
                            codes, the items' ids, and metadata: the
                            modality, the run's config hash, split hash,
                            checkpoint, step, method, bits and workdir; for
                            a run of real-valued embeddings (SSAL, MHTN;
                            the method's `outputs`), a `CosineIndex`
                            (format 3) of the L2-normalised float32
                            embeddings [N, D] with the same ids and
                            metadata, searched by cosine similarity, or
                            with --sign_codes a `HammingIndex` of their
                            sign() codes (D bits, +1 where x >= 0)
    <modality>.items.jsonl  one line per item: id, label names, tags, and
                            where its image is (for `search` and `serve`)
    <modality>.faiss        with --faiss: a FAISS IndexBinaryFlat file (of
                            codes: not for a cosine index)

Running again with more items appends them to existing files. An index made
by another run (another config hash or split) or another checkpoint, or of
the other kind (a cosine index appended with --sign_codes, or back), is
refused with a message naming the file, and nothing is written.
"""
from __future__ import annotations

import os

from absl import app
from absl import flags

from crossmodal_hash import encoding
from crossmodal_hash import logging_utils
from crossmodal_hash import run_artifacts

_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run.')
_OUT = flags.DEFINE_string('out', None, 'Directory of the index files '
                           '(default: <workdir>/index).')
_CHECKPOINT = flags.DEFINE_integer(
    'checkpoint', None, 'Checkpoint to encode with (default: the selected, '
    'else the latest).')
_MODALITIES = flags.DEFINE_list('modalities', None, 'image and/or text '
                                '(default: every side the items have).')
_ITEMS = flags.DEFINE_enum('items', 'retrieval', encoding.ITEMS,
                           "Which items of the run's own dataset.")
_DATA = flags.DEFINE_string('data', '', 'Encode this dataset instead (a file '
                            'or folder in any supported layout).')
_DATA_FORMAT = flags.DEFINE_string('data_format', 'auto', 'Layout of --data.')
_DATA_OPTIONS = flags.DEFINE_string(
    'data_options', '', 'Read options of --data: key=value,...')
_IMAGE_FILES = flags.DEFINE_string(
    'image_files', '', 'Image files: comma-separated paths or globs, or an '
    'image list (.txt, one path per line).')
_FEATURES = flags.DEFINE_string('features', '', 'Image features file '
                                '(.npy, .mat, .txt), [N, D].')
_TAG_LINES = flags.DEFINE_string(
    'tag_lines', '', "Raw tags, one line per item, on the run's vocabulary.")
_TEXT_FEATURES = flags.DEFINE_string('text_features', '', 'Text feature '
                                     'matrix, [N, V].')
_FAISS = flags.DEFINE_bool('faiss', False, 'Also write <modality>.faiss.')
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Items per encoding batch.')
_SIGN_CODES = flags.DEFINE_bool(
    'sign_codes', False, 'For a run of real-valued embeddings: write the '
    'Hamming index of their sign() codes instead of the cosine index.')


def _parse_options(text: str) -> dict[str, str]:
  out = {}
  for item in filter(None, text.split(',')):
    key, sep, value = item.partition('=')
    if not sep:
      raise app.UsageError(f'--data_options: {item!r} is not key=value.')
    out[key.strip()] = value.strip()
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging_utils.quiet_library_info()
  run = run_artifacts.load_run(_WORKDIR.value, checkpoint=_CHECKPOINT.value)
  raw = (_IMAGE_FILES.value or _FEATURES.value or _TAG_LINES.value or
         _TEXT_FEATURES.value)
  if raw:
    items = encoding.raw_items(run.info, image_spec=_IMAGE_FILES.value,
                      features=_FEATURES.value, tag_lines=_TAG_LINES.value,
                      text_features=_TEXT_FEATURES.value)
  elif _DATA.value:
    items = encoding.dataset_items(run.info, _DATA.value, _DATA_FORMAT.value,
                          _parse_options(_DATA_OPTIONS.value))
  else:
    items = encoding.run_dataset_items(run.info, _ITEMS.value, _WORKDIR.value)
  modalities = _MODALITIES.value or [m for m in encoding.MODALITIES
                                     if items.inputs(m) is not None]
  out = _OUT.value or os.path.join(_WORKDIR.value, 'index')
  written = encoding.write(run, out, items, modalities, faiss=_FAISS.value,
                           batch_size=_BATCH.value,
                           sign_codes=_SIGN_CODES.value)
  kind = encoding.index_kind(run, _SIGN_CODES.value)
  for m, path in written.items():
    print(f'{m}: {path} ({len(items.ids)} items encoded, {kind} index, '
          f'checkpoint {run.checkpoint}, step {run.step})', flush=True)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
