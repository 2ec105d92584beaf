r"""Input-pipeline throughput: items/s of the trainer's streamed passes.

  python benchmarks/input_pipeline.py --num_items=2048 --workers=0,1,2 \
      --out=benchmarks/results

Synthetic 224x224 images (the built-in generator) are stored five ways: in
memory, a MATLAB v7.3 (HDF5) file read lazily, JPEG files with an image list
(decoded on the fly), and ArrayRecord shards (raw pixels, and JPEG). For each
source and worker count it times --epochs training passes exactly as the
alternating trainer streams them (`trainers/streaming.py`, the 'stream' data
placement): per pass, a permutation of the items, `streaming.pass_loader`
(grain: this process's block of each global batch, image and index only,
read threads or worker processes, prefetch), `Loader.global_iterator` (host
batches become global arrays over the mesh of all devices, `sharding.
host_to_global`), and the jitted `streaming.complete_batch` that the training
step starts with (labels and texts gathered from the resident arrays, images
normalised) in place of a method's update. A pass's loader start-up (worker
processes, first batch) is part of it, as in training, and is also reported
alone. It prints a table and writes `input_pipeline.json`. For scale: training at the SPEC's DCMH target (an epoch
of 10,000 CNN-F 224x224 items in 1.0 s on an H100) consumes 10,000 images/s;
the PyTorch DCMH port's 7.99 s epoch, 1,250 images/s.
"""
import json
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import PIL.Image
from absl import app
from absl import flags

from crossmodal_hash import sharding
from crossmodal_hash.data import array_record
from crossmodal_hash.data import formats
from crossmodal_hash.data import mat_files
from crossmodal_hash.data import pipeline
from crossmodal_hash.data import preprocess
from crossmodal_hash.data import synthetic
from crossmodal_hash.data import types
from crossmodal_hash.trainers import streaming

_NUM_ITEMS = flags.DEFINE_integer('num_items', 2048, 'Items in the dataset.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Global batch size.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Image side.')
_EPOCHS = flags.DEFINE_integer('epochs', 2, 'Timed passes per setting.')
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


def _time(data: types.MultiModalData, workers: int,
          mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Times --epochs streamed passes over `data` (see the module docstring)."""
  image_stats = preprocess.image_statistics(data.images, 'mean')
  resident = sharding.put_replicated(
      streaming.resident_arrays(data, image_stats, with_images=False), mesh)
  batch_spec = sharding.batch_sharded(mesh)

  @jax.jit
  def consume(batch, resident):
    """The training step's first stage; a checksum keeps it from being cut."""
    full = streaming.complete_batch(batch, resident, batch_spec)
    return (jnp.sum(full['image']) + jnp.sum(full['label']) +
            jnp.sum(full['text']))

  options = pipeline.Options(worker_count=workers, read_threads=1, prefetch=2)
  rng = np.random.default_rng(0)
  # Compile `consume` on one batch first (training compiles its step once).
  warm = streaming.pass_loader(
      data, np.arange(len(data)), global_batch_size=_BATCH.value,
      pass_index=0, options=pipeline.Options(worker_count=0)).global_iterator(
          mesh)
  try:
    jax.block_until_ready(consume(next(warm), resident))
  finally:
    warm.close()
  startups, batches, sums = [], 0, []
  tic = time.perf_counter()
  for pass_index in range(_EPOCHS.value):
    loader = streaming.pass_loader(
        data, rng.permutation(len(data)), global_batch_size=_BATCH.value,
        pass_index=pass_index, options=options)
    iterator = loader.global_iterator(mesh)
    start = time.perf_counter()
    try:
      for i, batch in enumerate(iterator):
        if i == 0:
          startups.append(time.perf_counter() - start)
        assert batch['image'].shape[0] == _BATCH.value
        sums.append(consume(batch, resident))
        batches += 1
    finally:
      iterator.close()
  jax.block_until_ready(sums)
  seconds = time.perf_counter() - tic
  return {'items_per_second': batches * _BATCH.value / seconds,
          'startup_seconds': float(np.mean(startups)), 'batches': batches,
          'seconds': seconds}


def main(argv):
  del argv
  data = synthetic.generate(
      _NUM_ITEMS.value, synthetic.SyntheticConfig(image_size=_IMAGE_SIZE.value),
      seed=0)
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1,
                                                       'model': 1}))
  results = []
  with tempfile.TemporaryDirectory() as root:
    tic = time.perf_counter()
    sources = _build_sources(data, root)
    print(f'Wrote the sources in {time.perf_counter() - tic:.1f} s.')
    for name in _SOURCES.value:
      for workers in sorted({int(w) for w in _WORKERS.value}):
        row = {'source': name, 'workers': workers,
               **_time(sources[name], workers, mesh)}
        results.append(row)
        print(f'{name:18s} workers={workers}: '
              f'{row["items_per_second"]:9.0f} items/s')
  header = (f'| source | workers | items/s (passes incl. start-up) | '
            f'start-up s per pass |\n|---|---|---|---|')
  lines = [header] + [
      f'| {r["source"]} | {r["workers"]} | {r["items_per_second"]:,.0f} | '
      f'{r["startup_seconds"]:.2f} |' for r in results]
  table = '\n'.join(lines)
  print(f'\nstreamed training passes (trainers/streaming.py), batch '
        f'{_BATCH.value}, {_NUM_ITEMS.value} items of '
        f'{_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}x3, {os.cpu_count()} CPUs, '
        f'{mesh.size} {jax.devices()[0].platform} device(s)\n'
        + table + f'\nGPU training at the DCMH target needs about '
        f'{TARGET_IMAGES_PER_SECOND:,} images/s.')
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'input_pipeline.json'), 'w') as f:
    json.dump({'path': 'trainers/streaming.py pass_loader + global_iterator '
                       '+ complete_batch',
               'devices': mesh.size, 'backend': jax.default_backend(),
               'batch_size': _BATCH.value, 'num_items': _NUM_ITEMS.value,
               'image_size': _IMAGE_SIZE.value, 'cpus': os.cpu_count(),
               'machine': platform.machine(), 'results': results,
               'target_images_per_second': TARGET_IMAGES_PER_SECOND,
               'table': table}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
