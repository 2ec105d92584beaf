"""What a trained run needs to encode new items, kept in its workdir.

The trainer calls `save` once the run's data and image statistics are known;
`load_run` gives back everything encoding needs from the workdir alone (the
training data is never read again; a method with a source domain, MHTN,
reads its source set's labels for their class count):

    <workdir>/run.json          format tag; the exact config (tuples stay
                                tuples, see `config_to_json`); its hash; the
                                split's SHA-256; the shapes and dtypes of the
                                modalities; the text vocabulary and the label
                                names where the dataset has them
    <workdir>/image_stats.npz   the image normalisation (mean, inv_scale) of
                                the training images
    <workdir>/selected_checkpoint.json   optional: the checkpoint that
                                encoding uses (`selected_checkpoint`); without
                                it the latest in <workdir>/checkpoints

`config_sha256` identifies what a run computes (keys that may change on
resume, `config_utils.resumable_keys`, are left out): an index file holds
it with the checkpoint, and codes of different runs or checkpoints are never
mixed (`encode.py`, `search.py`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from crossmodal_hash import checkpointing
from crossmodal_hash import config_utils
from crossmodal_hash import file_io
from crossmodal_hash import sharding
from crossmodal_hash.data import builtin
from crossmodal_hash.data import registry as data_registry
from crossmodal_hash.data import text_files
from crossmodal_hash.data import types
from crossmodal_hash.evaluation import report
from crossmodal_hash.methods import base
from crossmodal_hash.methods import registry as method_registry

FORMAT = 'crossmodal_hash.run/1'
RUN_NAME = 'run.json'
STATS_NAME = 'image_stats.npz'
SELECTED_NAME = 'selected_checkpoint.json'
_TUPLE = '__tuple__'


class RunError(ValueError):
  """A workdir that cannot be used for encoding (the message says why)."""


def _tag(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _tag(v) for k, v in value.items()}
  if isinstance(value, tuple):
    return {_TUPLE: [_tag(v) for v in value]}
  if isinstance(value, list):
    return [_tag(v) for v in value]
  return value


def _untag(value: Any) -> Any:
  if isinstance(value, dict):
    if set(value) == {_TUPLE}:
      return tuple(_untag(v) for v in value[_TUPLE])
    return {k: _untag(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_untag(v) for v in value]
  return value


def config_to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as JSON types, tuples tagged as {"__tuple__": [...]}."""
  return _tag(config.to_dict())


def config_from_json(obj: dict[str, Any]) -> ml_collections.ConfigDict:
  """The locked config that `config_to_json` saved, tuples as tuples."""
  config = ml_collections.ConfigDict(_untag(obj))
  config.lock()
  return config


def config_sha256(config: ml_collections.ConfigDict) -> str:
  """SHA-256 of what the config computes (resumable keys left out)."""
  flat = config_utils.flatten(config_utils.to_json_dict(config))
  kept = {k: v for k, v in flat.items()
          if not any(k == m or k.startswith(m + '.')
                     for m in config_utils.resumable_keys(config))}
  text = json.dumps(kept, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode('utf-8')).hexdigest()


def dataset_names(dataset: ml_collections.ConfigDict
                 ) -> tuple[list[str] | None, list[str] | None]:
  """(vocabulary, label names) of a run's dataset, None where it has none.

  The synthetic datasets name their words and labels; the 'files' layout
  with a `vocab_file` has a vocabulary; other data has neither.
  """
  if dataset.name.startswith('synthetic'):
    return builtin.names(dataset)
  if dataset.get('vocab_file'):
    return text_files.read_vocabulary(
        os.path.join(os.path.expanduser(dataset.path), dataset.vocab_file)), None
  return None, None


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """What `run.json` and `image_stats.npz` hold.

  Attributes:
    config: the run's exact config (locked).
    config_sha256: `config_sha256(config)`.
    split_sha256: the SHA-256 of the run's split.
    num_train: T, training items (the size of the state's memories).
    num_labels: L.
    text_dim: V.
    text_dtype: 'uint8' (bag of words) or 'float32' (features).
    image_shape: one item's image, e.g. [32, 32, 3] or [D].
    image_dtype: 'uint8' (pixels) or 'float32' (features).
    image_stats: (mean, inv_scale) float32 arrays.
    vocabulary: [V] words of the text columns, or None.
    label_names: [L] names, or None.
  """
  config: ml_collections.ConfigDict
  config_sha256: str
  split_sha256: str
  num_train: int
  num_labels: int
  text_dim: int
  text_dtype: str
  image_shape: tuple[int, ...]
  image_dtype: str
  image_stats: tuple[np.ndarray, np.ndarray]
  vocabulary: list[str] | None
  label_names: list[str] | None

  def label_name(self, j: int) -> str:
    return self.label_names[j] if self.label_names else f'label{j}'


def save(workdir: str, config: ml_collections.ConfigDict,
         data: types.MultiModalData, split: types.Split,
         image_stats: tuple[np.ndarray, np.ndarray], split_sha256: str
        ) -> None:
  """Writes run.json and image_stats.npz (atomically) into `workdir`."""
  vocabulary, label_names = dataset_names(config.dataset)
  record = {
      'format': FORMAT,
      'config': config_to_json(config),
      'config_sha256': config_sha256(config),
      'split_sha256': split_sha256,
      'num_train': len(split.train),
      'num_labels': data.num_labels,
      'text_dim': data.text_dim,
      'text_dtype': str(np.dtype(data.texts.dtype)),
      'image_shape': list(data.images.shape[1:]),
      'image_dtype': str(np.dtype(data.images.dtype)),
      'vocabulary': vocabulary,
      'label_names': label_names,
  }
  report.write_json(os.path.join(workdir, RUN_NAME), record)
  report.save_arrays(os.path.join(workdir, STATS_NAME),
                     mean=np.asarray(image_stats[0], np.float32),
                     inv_scale=np.asarray(image_stats[1], np.float32))


def read(workdir: str) -> RunInfo:
  """The RunInfo of a workdir; RunError naming the file when it is missing."""
  path = os.path.join(workdir, RUN_NAME)
  if not file_io.isfile(path):
    raise RunError(f'{path}: no such file. {workdir} is not the workdir of a '
                   'crossmodal_hash run, or the run was trained by a version '
                   'that did not save what encoding needs; train it again '
                   '(resuming it writes the file).')
  try:
    record = report.read_json(path)
  except (OSError, ValueError) as e:
    raise RunError(f'{path}: unreadable ({e}).') from e
  if not isinstance(record, dict) or record.get('format') != FORMAT:
    raise RunError(f'{path}: not a {FORMAT} file.')
  stats_path = os.path.join(workdir, STATS_NAME)
  try:
    stats = file_io.load_npz(stats_path)
    image_stats = (stats['mean'], stats['inv_scale'])
  except (OSError, KeyError, ValueError) as e:
    raise RunError(f'{stats_path}: missing or unreadable ({e}); it holds the '
                   'image normalisation of the run.') from e
  return RunInfo(
      config=config_from_json(record['config']),
      config_sha256=record['config_sha256'],
      split_sha256=record['split_sha256'],
      num_train=int(record['num_train']),
      num_labels=int(record['num_labels']),
      text_dim=int(record['text_dim']),
      text_dtype=record['text_dtype'],
      image_shape=tuple(record['image_shape']),
      image_dtype=record['image_dtype'],
      image_stats=image_stats,
      vocabulary=record['vocabulary'],
      label_names=record['label_names'])


def selected_checkpoint(workdir: str) -> tuple[str, int | None]:
  """(checkpoint directory relative to workdir, number) that encoding uses.

  `<workdir>/selected_checkpoint.json`, when there, names it: checkpoint
  `pass` (or `step`) of the orbax directory `directory` (default
  'checkpoints'), e.g. the best-by-validation checkpoint that model
  selection keeps, {"pass": 30, "directory": "best/checkpoints", ...}.
  Without the file: ('checkpoints', None), the latest.
  """
  path = os.path.join(workdir, SELECTED_NAME)
  if not file_io.isfile(path):
    return 'checkpoints', None
  try:
    record = report.read_json(path)
    number = int(record['pass'] if 'pass' in record else record['step'])
    directory = str(record.get('directory', 'checkpoints'))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise RunError(f'{path}: expected {{"pass": N, "directory": ...}} or '
                   f'{{"step": N}} ({e}).') from e
  return os.path.normpath(directory), number


@dataclasses.dataclass
class Run:
  """A trained run, ready to encode.

  Attributes:
    workdir: its directory.
    info: its RunInfo.
    method: the method object (its `encode`).
    params: the checkpoint's params, replicated over `mesh`.
    step: the checkpoint's training step (optimizer updates).
    checkpoint: the checkpoint, '<directory>/<number>' relative to the
      workdir (e.g. 'checkpoints/40', 'best/checkpoints/30').
    mesh: the mesh the params live on.
  """
  workdir: str
  info: RunInfo
  method: base.Method
  params: Any
  step: int
  checkpoint: str
  mesh: jax.sharding.Mesh

  @property
  def fingerprint(self) -> dict[str, Any]:
    """What an index built by this run records (see `encode.py`)."""
    return {'config_sha256': self.info.config_sha256,
            'split_sha256': self.info.split_sha256,
            'checkpoint': self.checkpoint, 'step': self.step,
            'method': self.info.config.method,
            'bits': int(self.info.config.bits),
            'workdir': file_io.absolute(self.workdir)}


def _abstract_state(method: base.Method, info: RunInfo,
                    mesh: jax.sharding.Mesh) -> Any:
  """ShapeDtypeStructs of the run's state, placed on `mesh` as the trainer
  places it (`harness.state_sharding` under the run's logical axis rules):
  item-indexed memories split over 'data', so restoring a large run for
  encoding does not put every memory whole on every device."""
  # Imported here: the harness imports this module.
  from crossmodal_hash.trainers import harness  # pylint: disable=g-import-not-at-top
  sds = jax.ShapeDtypeStruct
  init_data = {
      'label': sds((info.num_train, info.num_labels), np.uint8),
      'text': sds((info.num_train, info.text_dim), np.dtype(info.text_dtype)),
      'image': sds((1,) + info.image_shape, np.dtype(info.image_dtype)),
      'image_mean': sds(info.image_stats[0].shape, np.float32),
      'image_inv_scale': sds(info.image_stats[1].shape, np.float32),
  }
  if getattr(method, 'source_inputs', ()):
    # A source domain (MHTN): init reads its class count ('source_label'
    # [S, C]); its images are shaped like the target's (checked when
    # training, trainers/source_domain.py).
    section = info.config.source_dataset
    labels = data_registry.DATASETS.get(section.name)(section).labels
    init_data['source_label'] = sds(np.shape(labels), np.uint8)
    init_data['source_image'] = init_data['image']
  rng = jax.random.PRNGKey(0)
  shapes = jax.eval_shape(method.init, rng, init_data)
  shardings = harness.state_sharding(method, rng, init_data, mesh,
                                     sharding.rules_from_config(info.config))
  return jax.tree.map(lambda x, s: sds(x.shape, x.dtype, sharding=s), shapes,
                      shardings)


def load_run(workdir: str, *, checkpoint: int | None = None,
             mesh: jax.sharding.Mesh | None = None) -> Run:
  """Restores a run's params for encoding, from the workdir alone.

  Args:
    workdir: the run's directory.
    checkpoint: a checkpoint number in `<workdir>/checkpoints`; default the
      selected one (`selected_checkpoint`), else the latest.
    mesh: where the params go; default all devices on the 'data' axis.

  Raises:
    RunError: no run.json, no checkpoint, or a checkpoint of another config.
  """
  info = read(workdir)
  mesh = mesh or sharding.make_mesh(ml_collections.ConfigDict(
      {'data': -1, 'model': 1}))
  directory, number = (('checkpoints', checkpoint) if checkpoint is not None
                       else selected_checkpoint(workdir))
  if os.path.basename(directory) != 'checkpoints':
    raise RunError(f'{os.path.join(workdir, SELECTED_NAME)}: the directory '
                   f'{directory!r} is not an orbax "checkpoints" folder.')
  checkpointer = checkpointing.Checkpointer(
      os.path.join(workdir, os.path.dirname(directory)))
  try:
    if number is None:
      number = checkpointer.latest_step()
      if number is None:
        raise RunError(f'{checkpointer.directory}: no checkpoint to encode '
                       'with.')
    if number not in checkpointer.all_steps():
      raise RunError(f'{checkpointer.directory} has no checkpoint {number} '
                     f'(it has {checkpointer.all_steps()}).')
    meta = checkpointer.read_meta(number)
    different = config_utils.incompatible_keys(meta.get('config', {}),
                                               info.config)
    if different:
      raise RunError(f'{checkpointer.directory}/{number} was trained with '
                     f'another config than {os.path.join(workdir, RUN_NAME)} '
                     f'(differing keys: {", ".join(different[:5])}).')
    method = method_registry.METHODS.get(info.config.method)(
        info.config, num_labels=info.num_labels, text_dim=info.text_dim)
    # As the trainer saved it (harness.py): without the write-only memories.
    checkpointer.unsaved_memories = getattr(method, 'unsaved_memories', ())
    state, _ = checkpointer.restore(number,
                                    _abstract_state(method, info, mesh))
  finally:
    checkpointer.close()
  return Run(workdir=workdir, info=info, method=method,
             params=base.inference_params(state),
             step=int(state.step), checkpoint=f'{directory}/{number}',
             mesh=mesh)
