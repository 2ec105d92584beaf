r"""Per-device memory of the training state and the resident training arrays,
replicated against item-sharded, and the wide layers split over the `model`
mesh axis (the README's scale-out tables).

  python benchmarks/state_memory.py [--num_devices 8] [--measure_max_gb 2]
      [--model_meshes 8x1,4x2,2x4] [--out state_memory.json]

For SSAH and DCMH at their usual sizes (configs/ssah_mirflickr.py and
configs/dcmh_mirflickr.py: CNN-F 224 x 224, 16 bits, MIRFLICKR-25K's 24
labels and 1,386-d bag-of-words texts, as float32) and training sets of
10,000 items (the usual protocols), 190,000 (NUS-WIDE's whole retrieval set)
and 1,000,000, on a mesh of `--num_devices` on the data axis:

  * computed: the bytes one device holds, from the abstract state
    (`jax.eval_shape(method.init)`) and the shardings the run gives it
    (`harness.state_sharding`, `harness.resident_axes`): under the item rule
    of the default `config.sharding.logical_axis_rules` (('items', 'data'),;
    the default's ('mlp', 'model') is a no-op with model=1) and under ()
    (everything replicated, what every run did before). Nothing is
    allocated. 'state' is params + optimizer states + memories;
    'resident' the 'label' and 'text' arrays every placement keeps on the
    devices; 'images' the [T, 224, 224, 3] uint8 pixels that 'device'
    placement adds ('stream' reads them batch by batch instead).
  * measured: 'XLA state' is the per-device output size XLA reports for the
    trainer's sharded init compiled for the mesh (`memory_analysis()`: the
    state is not allocated); 'allocated' the resident label and text arrays
    placed on the simulated CPU devices by the trainer's path
    (`sharding.put_by_axes`), summed from one device's shards, where all
    copies together fit in `--measure_max_gb` of host memory.

The model-axis table: the same state under the default rules (items over
`data`, the wide layers' 'mlp' width over `model`: CNN-F's fc6/fc7, SSAH's
4096-wide LabNet and TxtNet layers, models/layers.py) on each `data x model`
mesh of `--model_meshes` (default 8x1, 4x2, 2x4), for `--model_items`
training items: per-device params + optimizer states (computed, and XLA's
output size of the sharded init, measured), and the memories, which then
split only `data` ways.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs'))


def _simulate_devices(argv) -> None:
  """--num_devices=D (default 8): D host devices, set before JAX starts."""
  value = '8'
  for i, arg in enumerate(argv):
    if arg.startswith('--num_devices='):
      value = arg.split('=', 1)[1]
    elif arg == '--num_devices' and i + 1 < len(argv):
      value = argv[i + 1]
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count='
                             f'{int(value)}').strip()


_simulate_devices(sys.argv[1:])

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import ml_collections
import numpy as np

import dcmh_mirflickr
import ssah_mirflickr
from crossmodal_hash import methods  # Registers the methods.
from crossmodal_hash import sharding
from crossmodal_hash.trainers import harness
# pylint: enable=g-import-not-at-top,wrong-import-position

CONFIGS = {'ssah': ssah_mirflickr.get_config, 'dcmh': dcmh_mirflickr.get_config}
ITEMS = (10_000, 190_000, 1_000_000)
NUM_LABELS, TEXT_DIM, PIXELS = 24, 1386, 224
PLACEMENTS = {'replicated': (), 'item-sharded': ((sharding.ITEMS,
                                                  sharding.DATA_AXIS),)}


def _method(name: str):
  config = CONFIGS[name]()
  return methods.METHODS.get(name)(config, num_labels=NUM_LABELS,
                                   text_dim=TEXT_DIM)


def _resident_shapes(num_items: int) -> dict[str, jax.ShapeDtypeStruct]:
  """The resident arrays of 'device' placement (float32 texts)."""
  sds = jax.ShapeDtypeStruct
  return {'label': sds((num_items, NUM_LABELS), np.uint8),
          'text': sds((num_items, TEXT_DIM), np.float32),
          'image': sds((num_items, PIXELS, PIXELS, 3), np.uint8),
          'image_mean': sds((3,), np.float32),
          'image_inv_scale': sds((3,), np.float32)}


def _bytes_per_device(shapes, shardings) -> int:
  """Bytes of the largest shard set one device holds."""
  return int(sum(np.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
                 for x, s in zip(jax.tree.leaves(shapes),
                                 jax.tree.leaves(shardings))))


def computed(method, num_items: int, mesh, rules) -> dict[str, int]:
  """{'params_opt', 'memory', 'resident', 'images'}: one device's bytes."""
  resident = _resident_shapes(num_items)
  rng = jax.random.PRNGKey(0)
  init_data = dict(resident, image=jax.ShapeDtypeStruct(
      (1, PIXELS, PIXELS, 3), np.uint8))
  state = jax.eval_shape(method.init, rng, init_data)
  state_sharding = harness.state_sharding(method, rng, init_data, mesh, rules)
  resident_sharding = {
      name: sharding.logical_sharding(x.shape, axes, mesh, rules)
      for (name, x), axes in zip(
          resident.items(), harness.resident_axes(resident).values())}
  per_item = lambda names: _bytes_per_device(
      [resident[n] for n in names], [resident_sharding[n] for n in names])
  return {
      'params_opt': _bytes_per_device(state.replace(memory={}),
                                      state_sharding.replace(memory={})),
      'memory': _bytes_per_device(state.memory, state_sharding.memory),
      'resident': per_item(('label', 'text', 'image_mean',
                            'image_inv_scale')),
      'images': per_item(('image',)),
  }


def measured(method, num_items: int, mesh, rules, max_bytes: float
            ) -> dict[str, int | None]:
  """{'state', 'resident'}: one device's bytes, measured.

  'state': XLA's per-device output size of the trainer's sharded init
  (`jax.jit(method.init, out_shardings=harness.state_sharding(...))`,
  compiled for the mesh, not run). 'resident': the 'label' and 'text'
  arrays (and image statistics) placed by `sharding.put_by_axes`, the
  trainer's path, summed from device 0's shards; None where all devices
  together would hold more than `max_bytes`.
  """
  shapes = _resident_shapes(num_items)
  rng = jax.random.PRNGKey(0)
  init_data = dict(shapes, image=jax.ShapeDtypeStruct(
      (1, PIXELS, PIXELS, 3), np.uint8))
  init = jax.jit(method.init, out_shardings=harness.state_sharding(
      method, rng, init_data, mesh, rules))
  stats = init.lower(rng, init_data).compile().memory_analysis()
  out = {'state': int(stats.output_size_in_bytes), 'resident': None}
  arrays = {k: x for k, x in shapes.items() if k != 'image'}
  axes = harness.resident_axes(arrays)
  total = sum(_bytes_per_device(
      [x], [sharding.logical_sharding(x.shape, axes[k], mesh, rules)])
              for k, x in arrays.items()) * mesh.size
  if total <= max_bytes:
    data = sharding.put_by_axes(
        {k: np.zeros(x.shape, x.dtype) for k, x in arrays.items()}, axes,
        mesh, rules)
    device = mesh.devices.flat[0]
    out['resident'] = int(sum(
        shard.data.nbytes for x in data.values()
        for shard in x.addressable_shards if shard.device == device))
    del data
    gc.collect()
  return out


def model_axis_row(method, num_items: int, data: int, model: int
                  ) -> dict[str, int]:
  """One device's bytes under the default rules on a data x model mesh:
  'params_opt', 'memory' (computed) and 'xla_state' (measured)."""
  mesh = sharding.make_mesh(ml_collections.ConfigDict(
      {'data': data, 'model': model}))
  rules = sharding.LOGICAL_AXIS_RULES
  bytes_ = computed(method, num_items, mesh, rules)
  return {'params_opt': bytes_['params_opt'], 'memory': bytes_['memory'],
          # max_bytes=0: the state only, no resident arrays allocated.
          'xla_state': measured(method, num_items, mesh, rules, 0)['state']}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num_devices', type=int, default=8,
                      help='simulated CPU devices on the data axis')
  parser.add_argument('--measure_max_gb', type=float, default=2.0,
                      help='allocate the resident arrays where all devices '
                      'together hold at most this many GB')
  parser.add_argument('--methods', default='ssah,dcmh')
  parser.add_argument('--items', default=','.join(map(str, ITEMS)))
  parser.add_argument('--model_meshes', default='8x1,4x2,2x4',
                      help='data x model meshes of the model-axis table '
                      "('' skips it)")
  parser.add_argument('--model_items', type=int, default=10_000,
                      help='training items of the model-axis table')
  parser.add_argument('--out', default=None, help='write the rows as JSON')
  args = parser.parse_args()
  mesh = sharding.make_mesh(ml_collections.ConfigDict(
      {'data': args.num_devices, 'model': 1}))
  rows = []
  for name in args.methods.split(','):
    method = _method(name)
    for num_items in map(int, args.items.split(',')):
      for placement, rules in PLACEMENTS.items():
        row = {'method': name, 'items': num_items, 'placement': placement,
               'devices': args.num_devices,
               **computed(method, num_items, mesh, rules)}
        row['state'] = row['params_opt'] + row['memory']
        row['measured'] = measured(method, num_items, mesh, rules,
                                   args.measure_max_gb * 1e9)
        rows.append(row)
  mb = lambda b: f'{b / 1e6:9.1f}'
  header = (f'{"method":6s} {"items":>9s} {"placement":12s} '
            f'{"params+opt":>10s} {"memories":>9s} {"label+text":>10s} '
            f'{"state+res.":>10s} {"images":>9s} {"XLA state":>9s} '
            f'{"allocated":>9s}')
  print(f'Per-device MB on {args.num_devices} devices (data axis), '
        f'{jax.devices()[0].platform}; images only with device placement.')
  print(header)
  print('-' * len(header))
  for r in rows:
    print(f'{r["method"]:6s} {r["items"]:9,d} {r["placement"]:12s} '
          f'{mb(r["params_opt"]):>10s} {mb(r["memory"])} '
          f'{mb(r["resident"]):>10s} {mb(r["state"] + r["resident"]):>10s} '
          f'{mb(r["images"])} {mb(r["measured"]["state"])} '
          f'{mb(r["measured"]["resident"]) if r["measured"]["resident"] is not None else "-":>9s}')
  model_rows = []
  for name in args.methods.split(',') if args.model_meshes else ():
    method = _method(name)
    for mesh_name in args.model_meshes.split(','):
      data, model = map(int, mesh_name.split('x'))
      model_rows.append({'method': name, 'items': args.model_items,
                         'data': data, 'model': model,
                         **model_axis_row(method, args.model_items, data,
                                          model)})
  if model_rows:
    print(f'\nPer-device MB, default rules (items over data, the wide '
          f"layers' 'mlp' width over model), {args.model_items:,d} items:")
    header = (f'{"method":6s} {"data x model":>12s} {"params+opt":>10s} '
              f'{"memories":>9s} {"XLA state":>9s} {"vs data only":>12s}')
    print(header)
    print('-' * len(header))
    for r in model_rows:
      base = next((b['params_opt'] for b in model_rows
                   if b['method'] == r['method'] and b['model'] == 1), None)
      ratio = f'{r["params_opt"] / base:11.2f}x' if base else f'{"-":>12s}'
      print(f'{r["method"]:6s} {r["data"]:>5d} x {r["model"]:<4d} '
            f'{mb(r["params_opt"]):>10s} {mb(r["memory"])} '
            f'{mb(r["xla_state"])} {ratio}')
  if args.out:
    with open(args.out, 'w', encoding='utf-8') as f:
      json.dump({'num_devices': args.num_devices,
                 'platform': jax.devices()[0].platform, 'rows': rows,
                 'model_axis_rows': model_rows}, f, indent=1)


if __name__ == '__main__':
  main()
