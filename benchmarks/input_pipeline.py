r"""Input-pipeline throughput: items/s of the grain training batches.

  python benchmarks/input_pipeline.py --num_items=2048 --workers=0,1,2 \
      --out=benchmarks/results

Synthetic 224x224 images (the built-in generator) are stored five ways: in
memory, a MATLAB v7.3 (HDF5) file read lazily, JPEG files with an image list
(decoded on the fly), and ArrayRecord shards (raw pixels, and JPEG). For each
source and worker count it times whole epochs of shuffled batches of
--batch_size (host batches, as `pipeline.train_loader` yields them; worker
start-up is timed separately), prints a table and writes
`input_pipeline.json`. For scale: training at the SPEC's DCMH target (an epoch
of 10,000 CNN-F 224x224 items in 1.0 s on an H100) consumes 10,000 images/s;
the PyTorch DCMH port's 7.99 s epoch, 1,250 images/s.
"""
import json
import os
import platform
import tempfile
import time

import numpy as np
import PIL.Image
from absl import app
from absl import flags

from crossmodal_hash.data import array_record
from crossmodal_hash.data import formats
from crossmodal_hash.data import mat_files
from crossmodal_hash.data import pipeline
from crossmodal_hash.data import synthetic
from crossmodal_hash.data import types

_NUM_ITEMS = flags.DEFINE_integer('num_items', 2048, 'Items in the dataset.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Global batch size.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Image side.')
_EPOCHS = flags.DEFINE_integer('epochs', 2, 'Timed epochs per setting.')
_WORKERS = flags.DEFINE_list('workers', ['0', '1', str(os.cpu_count() or 1)],
                             'Worker-process counts to time.')
_SOURCES = flags.DEFINE_list(
    'sources', ['memory', 'hdf5', 'jpeg_files', 'array_record_raw',
                'array_record_jpeg'], 'Sources to time.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results', 'Output directory.')

TARGET_IMAGES_PER_SECOND = 10_000  # SPEC section 7: 10,000 items in 1.0 s.


def _build_sources(data: types.MultiModalData, root: str
                  ) -> dict[str, types.MultiModalData]:
  """The same items, stored each way under `root`."""
  sources = {'memory': data}
  path = os.path.join(root, 'FLICKR-25K.mat')
  mat_files.save_v73(path, {'images': data.images.transpose(1, 2, 3, 0),
                            'YAll': data.texts, 'LAll': data.labels})
  sources['hdf5'] = formats.load(path)
  folder = os.path.join(root, 'jpeg')
  os.makedirs(os.path.join(folder, 'images'))
  names = []
  for i, image in enumerate(data.images):
    names.append(f'images/im{i}.jpg')
    PIL.Image.fromarray(image).save(os.path.join(folder, names[-1]),
                                    quality=90)
  with open(os.path.join(folder, 'image_list.txt'), 'w') as f:
    f.write('\n'.join(names) + '\n')
  np.save(os.path.join(folder, 'texts.npy'), data.texts)
  np.save(os.path.join(folder, 'labels.npy'), data.labels)
  sources['jpeg_files'] = formats.load(folder, 'files', formats.Options(
      image_list='image_list.txt', text_file='texts.npy',
      label_file='labels.npy', image_size=data.images.shape[1]))
  for encoding in ('raw', 'jpeg'):
    out = os.path.join(root, f'array_record_{encoding}')
    array_record.write(data, out, image_encoding=encoding, jpeg_quality=90)
    sources[f'array_record_{encoding}'] = array_record.load(out)
  return sources


def _time(data: types.MultiModalData, workers: int) -> dict[str, float]:
  loader = pipeline.train_loader(
      data, None, global_batch_size=_BATCH.value, seed=0, num_epochs=None,
      options=pipeline.Options(worker_count=workers, read_threads=1,
                               prefetch=2))
  iterator = loader.host_iterator()
  tic = time.perf_counter()
  next(iterator)  # Start-up: worker processes, first batch.
  startup = time.perf_counter() - tic
  count = _EPOCHS.value * loader.batches_per_epoch
  tic = time.perf_counter()
  for _ in range(count):
    batch = next(iterator)
    assert batch['image'].shape[0] == _BATCH.value
  seconds = time.perf_counter() - tic
  iterator.close()
  del batch
  return {'items_per_second': count * _BATCH.value / seconds,
          'startup_seconds': startup, 'batches': count, 'seconds': seconds}


def main(argv):
  del argv
  data = synthetic.generate(
      _NUM_ITEMS.value, synthetic.SyntheticConfig(image_size=_IMAGE_SIZE.value),
      seed=0)
  results = []
  with tempfile.TemporaryDirectory() as root:
    tic = time.perf_counter()
    sources = _build_sources(data, root)
    print(f'Wrote the sources in {time.perf_counter() - tic:.1f} s.')
    for name in _SOURCES.value:
      for workers in sorted({int(w) for w in _WORKERS.value}):
        row = {'source': name, 'workers': workers,
               **_time(sources[name], workers)}
        results.append(row)
        print(f'{name:18s} workers={workers}: '
              f'{row["items_per_second"]:9.0f} items/s')
  header = (f'| source | workers | items/s | start-up s |\n'
            f'|---|---|---|---|')
  lines = [header] + [
      f'| {r["source"]} | {r["workers"]} | {r["items_per_second"]:,.0f} | '
      f'{r["startup_seconds"]:.2f} |' for r in results]
  table = '\n'.join(lines)
  print(f'\nbatch {_BATCH.value}, {_NUM_ITEMS.value} items of '
        f'{_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}x3, {os.cpu_count()} CPUs\n'
        + table + f'\nGPU training at the DCMH target needs about '
        f'{TARGET_IMAGES_PER_SECOND:,} images/s.')
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'input_pipeline.json'), 'w') as f:
    json.dump({'batch_size': _BATCH.value, 'num_items': _NUM_ITEMS.value,
               'image_size': _IMAGE_SIZE.value, 'cpus': os.cpu_count(),
               'machine': platform.machine(), 'results': results,
               'target_images_per_second': TARGET_IMAGES_PER_SECOND,
               'table': table}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
