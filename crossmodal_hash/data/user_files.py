"""Datasets read from files the user brings (DCMH release layouts)."""
from __future__ import annotations

import os

import ml_collections

from crossmodal_hash.data import registry
from crossmodal_hash.data import types


class DatasetUnavailableError(RuntimeError):
  """A configured dataset cannot be read by this version of crossmodal_hash."""


@registry.DATASETS.register('mirflickr25k')
def load_mirflickr25k(c: ml_collections.ConfigDict) -> types.MultiModalData:
  """MIRFLICKR-25K in the DCMH release layout (`FLICKR-25K.mat`).

  This version checks the configured file and stops with a clear message: the
  reader of the MATLAB v7.3 release (lazy HDF5 images, `YAll`, `LAll`) comes with
  the real-datasets work, tracked as its own issue.
  """
  path = os.path.expanduser(c.path)
  if not path:
    raise FileNotFoundError(
        'config.dataset.path is empty: point it at your FLICKR-25K.mat (the DCMH '
        'release), e.g. --config=configs/ssah_mirflickr.py '
        '--config.dataset.path=/data/FLICKR-25K.mat. Nothing is downloaded.')
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path}: no such file. config.dataset.path must name the DCMH '
        'release FLICKR-25K.mat (keys images, YAll, LAll); nothing is '
        'downloaded.')
  raise DatasetUnavailableError(
      f'{path} exists, but this version of crossmodal_hash cannot read the '
      'DCMH release format yet (the MIRFLICKR-25K loader arrives with the '
      'real-datasets issue). Train on the built-in synthetic data meanwhile: '
      '--config=configs/ssah_synthetic.py.')
