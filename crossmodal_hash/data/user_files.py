"""Datasets read from files the user brings, registered by name.

`DATASETS.get(name)(config.dataset)` returns `MultiModalData` (images lazy when
they come from a v7.3 .mat, image files or ArrayRecord shards). The name picks
the protocol (see `protocols.py`); the layout is `config.dataset.format`
('auto' detects it from the path; see `formats.py`):

  mirflickr25k, nuswide, mscoco, iaprtc12: DCMH-style files ('dcmh_mat',
    'split_files'), or any other layout;
  wikipedia: the I_tr/T_tr/L_tr/I_te/T_te/L_te layout, with its fixed split;
  custom: any layout, with the num_query / num_train of the config;
  and, for each of them, format='array_record' (a converted folder) or
  format='tfds' (`path` is the tensorflow-datasets data_dir).

Nothing is downloaded: `config.dataset.path` must name the user's files.
"""
from __future__ import annotations

import dataclasses
import os

import ml_collections
from absl import logging

from crossmodal_hash.data import formats
from crossmodal_hash.data import protocols
from crossmodal_hash.data import registry
from crossmodal_hash.data import types

_FORMATS_HINT = ('auto, ' + ', '.join(sorted(formats.READERS)) + ', tfds')


def options_from_config(c: ml_collections.ConfigDict) -> formats.Options:
  """`formats.Options` from the `config.dataset` fields of the same names."""
  return formats.Options(**{
      field.name: type(field.default)(c[field.name])
      for field in dataclasses.fields(formats.Options) if field.name in c})


def dataset_config(name: str) -> ml_collections.ConfigDict:
  """`config.dataset` for dataset `name`: its protocol and every read option.

  Fields: name, path, format ('auto', a `formats.READERS` name or 'tfds'),
  num_query / num_train (the protocol's; 0 for 'custom' and for a fixed split
  of any size), split_seed, num_val (validation queries carved
  out of the training set), tfds_config, and the `formats.Options` fields.
  """
  c = ml_collections.ConfigDict()
  c.name = name
  c.path = ''
  c.format = 'auto'
  protocol = protocols.PROTOCOLS.get(name)
  c.num_query = protocol.num_query if protocol else 0
  c.num_train = protocol.num_train if protocol else 0
  c.split_seed = 0
  # Validation queries carved out of the training set (model selection).
  c.num_val = 0
  for field in dataclasses.fields(formats.Options):
    c[field.name] = field.default
  c.tfds_config = 'pixels'
  return c


def wikipedia_dataset_config(num_val: int = 500) -> ml_collections.ConfigDict:
  """`config.dataset` of the Wikipedia configs, with a validation split.

  `path` takes the full file (I_tr ... L_te: its fixed 2,173 / 693 split) or
  the training half alone in the 'features' layout (`image`, `text`,
  `label`: no test queries, the report is then of the validation split).
  num_query / num_train are 0 so that either file is accepted as it is, and
  `num_val` validation queries are carved out of the training items: models
  are selected on them, never on the test queries.
  """
  c = dataset_config('wikipedia')
  c.num_query = 0
  c.num_train = 0
  c.num_val = num_val
  c.tfds_config = 'features'
  return c


def load_from_config(c: ml_collections.ConfigDict,
                     name: str) -> types.MultiModalData:
  """Reads `c.path` in layout `c.format` (default 'auto')."""
  path = os.path.expanduser(c.get('path', ''))
  layout = c.get('format', 'auto')
  if not path:
    raise FileNotFoundError(
        f'config.dataset.path is empty: point it at your {name} files, e.g. '
        '--config.dataset.path=/data/FLICKR-25K.mat (the layouts are listed '
        'in the README, "Bring your own data"). Nothing is downloaded.')
  if layout == 'tfds':
    # Imported here: tensorflow-datasets is an optional extra.
    from crossmodal_hash.data import tfds_builder  # pylint: disable=g-import-not-at-top
    return tfds_builder.load(name, data_dir=path,
                             config_name=c.get('tfds_config', 'pixels'))
  if layout != 'auto' and layout not in formats.READERS:
    raise ValueError(f'config.dataset.format={layout!r}; known: '
                     f'{_FORMATS_HINT}.')
  data = formats.load(path, layout, options_from_config(c))
  protocol = protocols.PROTOCOLS.get(name)
  if protocol and protocol.num_items and len(data) != protocol.num_items:
    logging.warning('%s: %d items, but the standard %s protocol has %d.',
                    path, len(data), name, protocol.num_items)
  return data


def _register(name: str) -> None:
  def load(c: ml_collections.ConfigDict) -> types.MultiModalData:
    return load_from_config(c, name)

  load.__name__ = f'load_{name}'
  load.__doc__ = (f'{name} from `config.dataset.path` in any supported layout '
                  '(see the module docstring).')
  registry.DATASETS.register(name)(load)


for _name in ('mirflickr25k', 'nuswide', 'mscoco', 'iaprtc12', 'wikipedia',
              'custom'):
  _register(_name)
