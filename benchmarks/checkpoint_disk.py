r"""Checkpoint disk use of every shipped config (the README's table).

  python benchmarks/checkpoint_disk.py [--out checkpoint_disk.json]

A checkpoint holds the training state (params, optimizer states, memories,
step, RNG) without the method's write-only memories (`unsaved_memories`);
its size is the state's bytes, computed from the shapes `method.init`
produces (`jax.eval_shape`: nothing is allocated or trained). A workdir holds
at most `train.max_checkpoints` of them (older ones are deleted), plus the
best one by validation mAP when the config has a validation split and a
periodic evaluation (`<workdir>/best`), and at most one is written per
`train.checkpoint_every_seconds`.

Data dimensions: the synthetic configs' own; for the real datasets those of
their usual releases (labels / text features / image input): MIRFLICKR-25K
24 / 1,386, NUS-WIDE 21 / 1,000, MS-COCO 80 / 2,000, IAPR TC-12 255 / 2,912
(pixels 224 x 224 x 3 for CNN-F), Wikipedia 10 / 10 (128-d image features),
with the protocol's number of training items.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from crossmodal_hash import methods  # Registers the methods.
from crossmodal_hash.data import protocols
# pylint: enable=g-import-not-at-top,wrong-import-position

# name -> (labels, text dimension, image feature dimension or None: pixels).
REAL_DIMENSIONS = {
    'mirflickr25k': (24, 1386, None),
    'nuswide': (21, 1000, None),
    'mscoco': (80, 2000, None),
    'iaprtc12': (255, 2912, None),
    'wikipedia': (10, 10, 128),
}
_PIXELS = 224


def _load_config(path: str):
  spec = importlib.util.spec_from_file_location('config_module', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _data_shapes(config) -> dict[str, jax.ShapeDtypeStruct]:
  """The training set's shapes: 'image', 'text', 'label'."""
  d = config.dataset
  if d.name in REAL_DIMENSIONS:
    labels, text, features = REAL_DIMENSIONS[d.name]
    num_train = protocols.PROTOCOLS[d.name].num_train
    image = (features,) if features else (_PIXELS, _PIXELS, 3)
  else:  # The built-in synthetic sets: their config holds the sizes.
    labels, text, num_train = d.num_labels, d.vocab_size, d.num_train
    if config.model.image_encoder == 'feature_mlp':
      image = (d.feature_dim,)
    elif d.name == 'synthetic_video':
      image = (d.num_frames, d.image_size, d.image_size, 3)
    else:
      image = (d.image_size, d.image_size, 3)
  return {'image': jax.ShapeDtypeStruct((num_train,) + image, jnp.uint8),
          'text': jax.ShapeDtypeStruct((num_train, text), jnp.float32),
          'label': jax.ShapeDtypeStruct((num_train, labels), jnp.uint8)}


def checkpoint_bytes(config) -> int:
  """Bytes of one checkpoint's state for `config`."""
  data = _data_shapes(config)
  method = methods.METHODS.get(config.method)(
      config, num_labels=data['label'].shape[1], text_dim=data['text'].shape[1])
  state = jax.eval_shape(method.init, jax.random.PRNGKey(0), data)
  unsaved = getattr(method, 'unsaved_memories', ())
  state = state.replace(memory={k: v for k, v in state.memory.items()
                                if k not in unsaved})
  return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                 for x in jax.tree.leaves(state)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default=None, help='write the rows as JSON')
  args = parser.parse_args()
  rows = []
  for path in sorted(glob.glob(os.path.join(REPO_ROOT, 'configs', '*.py'))):
    config = _load_config(path)
    size = checkpoint_bytes(config)
    selects = (config.dataset.get('num_val', 0) > 0 and
               config.eval.every_passes > 0)
    kept = config.train.max_checkpoints + int(selects)
    rows.append({
        'config': os.path.relpath(path, REPO_ROOT),
        'checkpoint_mb': size / 1e6,
        'max_checkpoints': kept,
        'workdir_checkpoints_mb': size * kept / 1e6,
        'every_passes': config.train.checkpoint_every_passes,
        'every_seconds': config.train.checkpoint_every_seconds,
    })
  header = (f'{"config":34s} {"one checkpoint":>15s} {"kept":>5s} '
            f'{"on disk":>10s}')
  print(header)
  print('-' * len(header))
  for r in rows:
    print(f'{r["config"]:34s} {r["checkpoint_mb"]:12.0f} MB '
          f'{r["max_checkpoints"]:5d} {r["workdir_checkpoints_mb"]:7.0f} MB')
  if args.out:
    with open(args.out, 'w', encoding='utf-8') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  main()
