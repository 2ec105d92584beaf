r"""Converts any supported dataset to ArrayRecord shards (or a TFDS dataset).

  python -m crossmodal_hash.data.convert --input=/data/FLICKR-25K.mat \
      --output=/data/mirflickr25k_ar [--image_encoding=raw|png|jpeg] \
      [--num_shards=8]
  python -m crossmodal_hash.data.convert --input=/data/nuswide10k \
      --options=text_file=txt_10500.txt,vocab_file=TagList1k.txt,label_file=label_10500.txt,require_images=false \
      --output=/data/nuswide_ar
  python -m crossmodal_hash.data.convert --to=tfds --dataset=mirflickr25k \
      --input=/data/manual/mirflickr25k --output=/data/tensorflow_datasets

`--input` is read like `config.dataset.path` (`--format`, default auto, and
`--options`, the `formats.Options` fields as key=value pairs). Train on the
result with `--config.dataset.format=array_record
--config.dataset.path=/data/mirflickr25k_ar` (or `format=tfds`, `path` = the
TFDS data_dir).
"""
from __future__ import annotations

import dataclasses
import time

from absl import flags

from crossmodal_hash import cli
from crossmodal_hash.data import array_record
from crossmodal_hash.data import formats

_INPUT = flags.DEFINE_string('input', None, 'The dataset file or folder '
                             '(for --to=tfds: the manual_dir).')
_OUTPUT = flags.DEFINE_string('output', None, 'The output folder (for '
                              '--to=tfds: the TFDS data_dir).')
_FORMAT = flags.DEFINE_string('format', 'auto', 'The input layout: auto, '
                              + ', '.join(sorted(formats.READERS)) + '.')
_OPTIONS = flags.DEFINE_string('options', '', 'Reading options as key=value '
                               'pairs separated by commas (formats.Options).')
_TO = flags.DEFINE_enum('to', 'array_record', ['array_record', 'tfds'],
                        'What to write.')
_IMAGE_ENCODING = flags.DEFINE_enum('image_encoding', 'raw',
                                    list(array_record.ENCODINGS),
                                    'How images are stored (ArrayRecord).')
_JPEG_QUALITY = flags.DEFINE_integer('jpeg_quality', 95, 'JPEG quality.')
_NUM_SHARDS = flags.DEFINE_integer('num_shards', 0, 'Shards (0: ~1 GiB each).')
_DATASET = flags.DEFINE_string('dataset', 'mirflickr25k', 'For --to=tfds: '
                               'the dataset name (mirflickr25k, nuswide, '
                               'mscoco, iaprtc12, wikipedia).')
_TFDS_CONFIG = flags.DEFINE_string('tfds_config', 'pixels', 'For --to=tfds: '
                                   "'pixels' or 'features'.")


def parse_options(text: str) -> formats.Options:
  """'key=value,key=value' -> formats.Options (values parsed by field type)."""
  fields = {f.name: f for f in dataclasses.fields(formats.Options)}
  values = {}
  for item in filter(None, (p.strip() for p in text.split(','))):
    key, sep, value = item.partition('=')
    if not sep or key not in fields:
      raise ValueError(f'--options: {item!r} is not key=value with a key of '
                       f'{", ".join(fields)}.')
    kind = type(fields[key].default)
    if kind is bool:
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(f'--options: {key} must be true or false.')
      values[key] = value.lower() in ('true', '1')
    else:
      values[key] = kind(value)
  return formats.Options(**values)


def main(argv: list[str]) -> None:
  del argv
  if not _INPUT.value or not _OUTPUT.value:
    raise ValueError('--input and --output are required, e.g. '
                     '--input=/data/FLICKR-25K.mat --output=/data/flickr_ar.')
  tic = time.perf_counter()
  if _TO.value == 'tfds':
    # Imported here: tensorflow-datasets is an optional extra.
    from crossmodal_hash.data import tfds_builder  # pylint: disable=g-import-not-at-top
    builder = tfds_builder.build(_DATASET.value, manual_dir=_INPUT.value,
                                 data_dir=_OUTPUT.value,
                                 config_name=_TFDS_CONFIG.value,
                                 options=parse_options(_OPTIONS.value))
    print(f'Built {builder.info.full_name} in {_OUTPUT.value} '
          f'({time.perf_counter() - tic:.1f} s).')
    return
  data = formats.load(_INPUT.value, _FORMAT.value,
                      parse_options(_OPTIONS.value))
  metadata = array_record.write(
      data, _OUTPUT.value, image_encoding=_IMAGE_ENCODING.value,
      jpeg_quality=_JPEG_QUALITY.value, num_shards=_NUM_SHARDS.value or None,
      source=_INPUT.value)
  print(f'Wrote {metadata["num_items"]} items in {len(metadata["shards"])} '
        f'shards to {_OUTPUT.value} ({time.perf_counter() - tic:.1f} s).')


if __name__ == '__main__':
  cli.run_absl(main)
