"""tensorflow-datasets builders for the cross-modal datasets (manual download).

Needs `tensorflow-datasets` (the `tfds` extra), not TensorFlow: the datasets
are written as ArrayRecord and read back through `tfds.data_source`, a
random-access source that the grain pipeline reads like any other.

Datasets: crossmodal_mirflickr25k, crossmodal_nuswide, crossmodal_mscoco,
crossmodal_iaprtc12, crossmodal_wikipedia (the prefix avoids TFDS's own
`wikipedia`). Configs: 'pixels' (image [H, W, 3] uint8, text uint8) and
'features' (image [D] float32, text float32). One split, 'items', holds every
item in the source's order with its `index`; the protocol split is drawn by
the trainer (`protocols.py`), except a fixed split (Wikipedia), which is kept in
the dataset's metadata.

Build from the files placed in `manual_dir` (any layout of `formats.py`: the
folder itself, or the one .mat / .npz file in it):
  python -m crossmodal_hash.data.convert --to=tfds --dataset=mirflickr25k \
      --input=MANUAL_DIR --output=DATA_DIR
and train with --config.dataset.format=tfds --config.dataset.path=DATA_DIR.
"""
from __future__ import annotations

import glob
import os
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from crossmodal_hash.data import formats
from crossmodal_hash.data import lazy
from crossmodal_hash.data import types
from crossmodal_hash.data import validation

PREFIX = 'crossmodal_'
CONFIGS = ('pixels', 'features')
SPLIT = 'items'
_CHUNK = 256


def _manual_path(manual_dir: str) -> str:
  """The dataset inside `manual_dir`: the folder, or its one .mat/.npz."""
  manual_dir = os.fspath(manual_dir)
  try:
    formats.detect_format(manual_dir)
    return manual_dir
  except (validation.DataFormatError, FileNotFoundError):
    pass
  files = sorted(glob.glob(os.path.join(manual_dir, '*.mat')) +
                 glob.glob(os.path.join(manual_dir, '*.npz')))
  if len(files) != 1:
    raise validation.DataFormatError(
        f'{manual_dir}: place exactly one dataset there: a .mat or .npz file '
        '(found: ' + (', '.join(os.path.basename(f) for f in files) or
                      'none') + ') or split files / a converted folder.')
  return files[0]


class _CrossModalBuilder(tfds.core.GeneratorBasedBuilder,
                         skip_registration=True):
  """Paired image-text items with multi-hot labels, from manual files."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='pixels', description='Image pixels '
                              '[H, W, 3] uint8; bag-of-words texts uint8.'),
      tfds.core.BuilderConfig(name='features', description='Pre-extracted '
                              'image features [D] float32; texts float32.'),
  ]
  # Set by `build` (the layout options of the manual files).
  read_options = formats.Options()
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Place the dataset in manual_dir in any layout crossmodal_hash reads '
      '(README, "Bring your own data"): e.g. FLICKR-25K.mat (DCMH release), '
      'the mirflickr25k-iall/-yall/-lall.mat split files, a features .npz, '
      'or the Wikipedia .mat. Nothing is downloaded.')

  def _info(self) -> tfds.core.DatasetInfo:
    # disable_shuffling: items keep their order, so record i is item i.
    pixels = self.builder_config.name == 'pixels'
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            'image': (tfds.features.Tensor(shape=(None, None, 3),
                                           dtype=np.uint8, encoding='bytes')
                      if pixels else
                      tfds.features.Tensor(shape=(None,), dtype=np.float32)),
            'text': tfds.features.Tensor(
                shape=(None,), dtype=np.uint8 if pixels else np.float32),
            'label': tfds.features.Tensor(shape=(None,), dtype=np.uint8),
            'index': tfds.features.Scalar(dtype=np.int64),
        }),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    path = _manual_path(dl_manager.manual_dir)
    data = formats.load(path, 'auto', self.read_options)
    pixels = self.builder_config.name == 'pixels'
    if pixels != data.has_pixels:
      raise validation.DataFormatError(
          f'{path}: holds {"pixel images" if data.has_pixels else "features"}'
          f'; build the {"pixels" if data.has_pixels else "features"} config.')
    if pixels and data.texts.dtype != np.uint8:
      raise validation.DataFormatError(
          f'{path}: the pixels config stores binary bag-of-words texts; these '
          'texts are float features. Build the features config.')
    self.info.metadata['num_items'] = len(data)
    self.info.metadata['split'] = None if data.split is None else {
        k: getattr(data.split, k).tolist()
        for k in ('query', 'retrieval', 'train')}
    return {SPLIT: self._generate_examples(data)}

  def _generate_examples(self, data: types.MultiModalData
                        ) -> Iterator[tuple[int, dict[str, Any]]]:
    text_dtype = np.uint8 if self.builder_config.name == 'pixels' else (
        np.float32)
    for start in range(0, len(data), _CHUNK):
      stop = min(len(data), start + _CHUNK)
      images = np.asarray(data.images[start:stop])
      for j in range(stop - start):
        yield start + j, {
            'image': images[j],
            'text': data.texts[start + j].astype(text_dtype),
            'label': data.labels[start + j],
            'index': start + j,
        }


def _make_builder_class(name: str) -> type:
  cls_name = 'Crossmodal' + name.capitalize()
  return type(cls_name, (_CrossModalBuilder,), {
      '__doc__': f'{name}: paired image-text items with multi-hot labels, '
                 'from manually placed files.',
      '__module__': __name__,
  })


BUILDERS = {name: _make_builder_class(name) for name in (
    'mirflickr25k', 'nuswide', 'mscoco', 'iaprtc12', 'wikipedia')}


def _builder_class(name: str) -> type:
  if name not in BUILDERS:
    raise ValueError(f'No TFDS builder for {name!r}; known: '
                     f'{", ".join(sorted(BUILDERS))}.')
  return BUILDERS[name]


def build(name: str, *, manual_dir: str, data_dir: str,
          config_name: str = 'pixels',
          options: formats.Options = formats.Options()
         ) -> tfds.core.DatasetBuilder:
  """Builds dataset `name` (ArrayRecord files) from the files in `manual_dir`.

  Args:
    name: mirflickr25k, nuswide, mscoco, iaprtc12 or wikipedia.
    manual_dir: the folder holding the user's files.
    data_dir: the TFDS data_dir to write to.
    config_name: 'pixels' or 'features'.
    options: how to read the manual files (e.g. `require_images=False`).

  Returns:
    The prepared builder.
  """
  cls = _builder_class(name)
  cls.read_options = options
  builder = cls(config=config_name, data_dir=data_dir,
                file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir))
  return builder


class TfdsImages(lazy.LazyArray):
  """The 'image' feature of a built dataset, read by rows via
  `tfds.data_source` (opened once per process, so it pickles to workers)."""

  def __init__(self, name: str, data_dir: str, config_name: str):
    self._args = (name, data_dir, config_name)
    self._source = None
    self._pid = None
    source = self.source()
    first = source[0]['image']
    super().__init__((len(source),) + first.shape, first.dtype,
                     f'{data_dir}/{PREFIX}{name}/{config_name}')
    self._variable = first.ndim == 3  # Pixel images may vary in size.

  def source(self) -> Any:
    if self._source is None or self._pid != os.getpid():
      name, data_dir, config_name = self._args
      _builder_class(name)  # Registers the builder in this process.
      self._source = tfds.data_source(f'{PREFIX}{name}/{config_name}',
                                      split=SPLIT, data_dir=data_dir,
                                      download=False)
      self._pid = os.getpid()
    return self._source

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    state['_source'] = state['_pid'] = None
    return state

  def _read_rows(self, rows: np.ndarray) -> np.ndarray:
    items = self.source().__getitems__(rows.tolist())
    out = np.empty((len(rows),) + self.shape[1:], self.dtype)
    for j, item in enumerate(items):
      if item['image'].shape != self.shape[1:]:
        raise validation.DataFormatError(
            f'{self.origin}: item {rows[j]} has an image of shape '
            f'{item["image"].shape}, the first {self.shape[1:]}; all images '
            'must have one size.')
      out[j] = item['image']
    return out


def load(name: str, *, data_dir: str,
         config_name: str = 'pixels') -> types.MultiModalData:
  """A built dataset as `MultiModalData` (lazy images; texts and labels are
  read in one pass over the records)."""
  images = TfdsImages(name, data_dir, config_name)
  source = images.source()
  texts, labels = [], []
  for start in range(0, len(source), _CHUNK):
    for item in source.__getitems__(list(range(start, min(len(source),
                                                         start + _CHUNK)))):
      texts.append(item['text'])
      labels.append(item['label'])
  builder = tfds.builder(f'{PREFIX}{name}/{config_name}', data_dir=data_dir)
  stored = builder.info.metadata.get('split')
  split = None if not stored else types.Split(
      **{k: np.asarray(v, np.int64) for k, v in stored.items()})
  return validation.make_data(images, np.stack(texts), np.stack(labels),
                              where=images.origin, split=split)
