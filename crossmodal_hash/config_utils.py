"""Config helpers: `:key=value` arguments, locking, and resume compatibility."""
from __future__ import annotations

import difflib
import json
from typing import Any

import ml_collections

from crossmodal_hash import sharding

# Keys that may change between a checkpoint and the run resuming it: they
# change how a run is executed or reported, not what it computes. A method
# adds its own (`Method.resumable_keys`, see `resumable_keys`).
RESUMABLE_CHANGES = (
    'train.checkpoint_every_passes', 'train.checkpoint_every_seconds',
    'train.checkpoint_every_steps', 'train.max_checkpoints', 'train.progress',
    'train.batches_per_call', 'train.data_placement', 'train.max_device_bytes',
    'train.stream_workers', 'train.tensorboard', 'mesh', 'sharding', 'eval',
    'evals',
)

# Keys that may change on resume when the data read is the same (its
# checksum matches the one recorded with the checkpoint): a moved file.
SAME_DATA_CHANGES = ('dataset.path',)

# Where the training set lives (see trainers/streaming.py).
DATA_PLACEMENTS = ('auto', 'device', 'stream')


class ConfigError(ValueError):
  """A config key or value is wrong: unknown, unparsable or out of range."""


def feature_input_model(*, text_hidden: int,
                        init_std: float = 0.01) -> ml_collections.ConfigDict:
  """`config.model` of a method on pre-extracted features (e.g. Wikipedia).

  An MLP image trunk (D -> 4096 ReLU) on standardised features, float32
  compute; the method's config adds its own fields (SSAH: semantic_dim, ...).
  """
  model = ml_collections.ConfigDict()
  model.image_encoder = 'feature_mlp'
  model.image_mlp_features = (4096,)
  model.image_normalization = 'standardize'
  model.text_hidden = text_hidden
  model.init_std = init_std
  model.compute_dtype = 'float32'
  return model


def add_run_defaults(config: ml_collections.ConfigDict, *,
                     checkpoint_every_passes: int) -> ml_collections.ConfigDict:
  """Adds the `train`, `eval`, `mesh` and `sharding` sections every config
  shares.

  Also `model.pretrained_cnnf` ('') where the config does not set it.

  `eval` holds, besides the trainer's own keys, every field of
  `evaluation.ranking.EvalOptions` (what `suite.options_from_config` reads),
  so a locked config rejects a misspelt evaluation option.
  """
  if 'model' in config and 'pretrained_cnnf' not in config.model:
    # MatConvNet's imagenet-vgg-f.mat to start a 224 x 224 CNN-F from
    # (models/cnnf_weights.py); '' trains the image trunk from scratch.
    config.model.pretrained_cnnf = ''
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128
  # Batches per jitted call; 0: a whole pass on GPU/TPU, one batch on CPU.
  config.train.batches_per_call = 0
  # A checkpoint after every `checkpoint_every_passes` passes, but no sooner
  # than `checkpoint_every_seconds` after the previous one (0: no time limit),
  # and always after the last pass.
  config.train.checkpoint_every_passes = checkpoint_every_passes
  config.train.checkpoint_every_seconds = 60
  config.train.max_checkpoints = 2
  config.train.progress = True
  # 'device': the training set lives on the devices, whole passes are jitted;
  # 'stream': images are read batch by batch through the grain pipeline (one
  # jitted step per batch); 'auto': 'stream' when the images are lazy (read
  # from files on demand) or larger than max_device_bytes, else 'device'.
  config.train.data_placement = 'auto'
  config.train.max_device_bytes = 4 << 30
  config.train.stream_workers = 0  # grain worker processes (0: threads).
  # Also write metrics.jsonl's losses, learning rates and periodic mAP as
  # TensorBoard event files in <workdir>/tensorboard (tensorboardX).
  config.train.tensorboard = False

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 256
  config.eval.random_baseline = True
  config.eval.plots = True
  # mAP@all (both cross-modal directions, I->I, T->T; index-order ties) of the
  # query set against the retrieval set every N passes; 0: only at the end.
  config.eval.every_passes = 0
  # The end-of-training suite (evaluation/ranking.py EvalOptions).
  # Tie policies, the headline first: 'index' ranks equal Hamming distances
  # in database order; 'tie_aware' is the expectation over tie orders.
  config.eval.ties = ('index', 'tie_aware')
  # Queries without a relevant item: 'zero' (AP 0, kept in the mean, as
  # DCMH's calc_map) or 'skip' (left out of the mean).
  config.eval.empty = 'zero'
  config.eval.top_k = (100, 500, 1000, 5000)  # mAP@K, both definitions.
  config.eval.precision_at = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000,
                              5000, 10000)
  config.eval.ndcg_k = (10, 100, 1000)
  config.eval.radius_curve = True  # Precision/recall by Hamming radius.
  # Real-valued outputs (config.evals of default_evals(real=True)): the
  # final report adds the Hamming suite of their sign() codes.
  config.eval.sign_codes = True
  config.eval.query_block = 128
  config.eval.db_block = 65536
  # Cosine ranking of real-valued embeddings: database items per block and
  # per ranked chunk (memory ~ 32 queries x cosine_block per thread).
  config.eval.cosine_block = 8192
  config.eval.num_threads = 0  # 0: min(4, CPU count).

  config.evals = default_evals()

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1  # All devices.
  config.mesh.model = 1
  # MaxText's logical axis rules: (logical name, mesh axis or None) pairs
  # that place the state's and the resident arrays' dimensions
  # (sharding.py); by default the rows of item-indexed memories and of the
  # training arrays ('items') split over `data`, and the wide layers' hidden
  # width ('mlp', models/layers.py) over `model` (one way unless
  # mesh.model > 1), all else replicated. () replicates everything.
  config.sharding = ml_collections.ConfigDict()
  config.sharding.logical_axis_rules = sharding.LOGICAL_AXIS_RULES
  return config


def default_evals(real: bool = False) -> ml_collections.ConfigDict:
  """`config.evals`: the evaluators of a run by name, each a `type` of
  trainers/evaluators.py (as big_vision's `config.evals`): mAP@all every
  `eval.every_passes` passes (`eval.every_steps` steps), the full report at
  the end; of cosine similarity with `real` (methods of real-valued
  outputs)."""
  c = ml_collections.ConfigDict()
  prefix = 'periodic_cosine' if real else 'periodic'
  c.periodic = ml_collections.ConfigDict({'type': f'{prefix}_map'})
  c.final = ml_collections.ConfigDict(
      {'type': 'final_cosine_report' if real else 'final_report'})
  return c


def apply_arg(config: ml_collections.ConfigDict,
              arg: str | None) -> ml_collections.ConfigDict:
  """Applies a config-file argument such as `bits=64,train.batch_size=256`.

  `--config=configs/ssah_mirflickr.py:bits=64` passes `bits=64` to the file's
  `get_config(arg)`. Each `key=value` must name an existing field (dotted for
  nested ones); the value is parsed as the field's type. Returns the config,
  locked, so a later `--config.some.typo=1` fails instead of adding a field.
  """
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep:
      raise ConfigError(f'Config argument {item!r} is not of the form '
                        'key=value.')
    *parents, leaf = key.strip().split('.')
    node = config
    for p in parents:
      if not hasattr(node, 'keys') or p not in node:
        raise ConfigError(f'Config argument {key!r}: no such field'
                          f'{_did_you_mean(p, node)}.')
      node = node[p]
    if not hasattr(node, 'keys') or leaf not in node:
      raise ConfigError(f'Config argument {key!r}: no such field'
                        f'{_did_you_mean(leaf, node)}.')
    node[leaf] = _parse_like(node[leaf], value.strip(), key)
  config.lock()
  return config


def _did_you_mean(name: str, node: Any) -> str:
  keys = list(node.keys()) if hasattr(node, 'keys') else []
  close = difflib.get_close_matches(name, keys, n=1)
  return f' (did you mean {close[0]!r}?)' if close else ''


def _parse_like(current: Any, value: str, key: str) -> Any:
  """`value` parsed as the type of the field's `current` value."""
  if isinstance(current, bool):
    if value.lower() not in ('true', 'false', '1', '0'):
      raise ConfigError(f'Config argument {key}={value!r}: expected a boolean.')
    return value.lower() in ('true', '1')
  try:
    if isinstance(current, (int, float, str)) and current is not None:
      return type(current)(value)
    if isinstance(current, tuple):
      if not value:  # 'eval.top_k=' empties a tuple.
        return ()
      kind = type(current[0]) if current else str
      return tuple(kind(v) for v in value.split(';'))
    return json.loads(value)
  except ValueError as e:  # json.JSONDecodeError is a ValueError.
    raise ConfigError(f'Config argument {key}={value!r}: expected a value like '
                      f'{current!r} ({e}).') from None


def flatten(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}; tuples become lists (JSON's view)."""
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(flatten(v, key + '.'))
    else:
      out[key] = list(v) if isinstance(v, tuple) else v
  return out


def to_json_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON types (what a checkpoint stores)."""
  return json.loads(config.to_json())


def resumable_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """RESUMABLE_CHANGES plus the keys `config.method` lists as resumable.

  A method class's `resumable_keys` (e.g. SSAH's 'ssah.num_epochs': more
  epochs continue the same ladder) name its own keys that may change.
  """
  # Imported here: configs import this module, and methods register there.
  from crossmodal_hash import methods  # pylint: disable=g-import-not-at-top
  method = config.get('method')
  keys = ()
  if method is not None and method in methods.METHODS:
    keys = tuple(getattr(methods.METHODS.get(method), 'resumable_keys', ()))
  return RESUMABLE_CHANGES + keys


def incompatible_keys(saved: dict[str, Any],
                      config: ml_collections.ConfigDict, *,
                      same_data: bool = False) -> list[str]:
  """Dotted keys whose values differ between a checkpoint's config and ours,
  ignoring RESUMABLE_CHANGES, and SAME_DATA_CHANGES when `same_data` (the
  data's checksum matches the checkpoint's)."""
  a, b = flatten(saved), flatten(to_json_dict(config))
  allowed = resumable_keys(config) + (SAME_DATA_CHANGES if same_data else ())
  mutable = lambda k: any(k == m or k.startswith(m + '.') for m in allowed)
  return sorted(k for k in set(a) | set(b)
                if not mutable(k) and a.get(k, '<absent>') != b.get(k,
                                                                  '<absent>'))


# (dotted key, smallest allowed value) of the integer settings every config
# shares; a key a config does not have is skipped.
_MINIMUMS = (
    ('bits', 1), ('train.batch_size', 1), ('eval.batch_size', 1),
    ('train.checkpoint_every_passes', 1), ('train.checkpoint_every_seconds', 0),
    ('train.max_checkpoints', 1), ('train.batches_per_call', 0),
    ('train.max_device_bytes', 0), ('train.stream_workers', 0),
    ('eval.every_passes', 0), ('eval.query_block', 1), ('eval.db_block', 1),
    # The per-step family's (trainers/per_step.py).
    ('train.checkpoint_every_steps', 1), ('train.log_every_steps', 1),
    ('eval.every_steps', 0),
    ('eval.num_threads', 0), ('dataset.num_items', 1),
    # 0: the dataset's fixed split, or its protocol's sizes.
    ('dataset.num_query', 0), ('dataset.num_train', 0),
)


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  node = config
  for part in key.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return None
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError, naming the key and its allowed range, for a bad value.

  Checks, before anything starts: the sizes of `_MINIMUMS`, the method's
  `num_epochs` (>= 1), `train.data_placement` and that the query set leaves
  items to retrieve from. Values that depend on the data or the devices (a
  batch larger than the training set, one that does not split over the mesh)
  are checked by the trainer once those are known.
  """
  for key, low in _MINIMUMS:
    value = _get(config, key)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, int):
      raise ConfigError(f'config.{key}={value!r} must be an integer >= {low}.')
    if value < low:
      raise ConfigError(f'config.{key}={value} is out of range: it must be an '
                        f'integer >= {low}.')
  method = _get(config, 'method')
  epochs = _get(config, f'{method}.num_epochs') if method else None
  if epochs is not None and epochs < 1:
    raise ConfigError(f'config.{method}.num_epochs={epochs} is out of range: '
                      'it must be an integer >= 1.')
  placement = _get(config, 'train.data_placement')
  if placement is not None and placement not in DATA_PLACEMENTS:
    raise ConfigError(f'config.train.data_placement={placement!r}; expected '
                      f'one of {", ".join(DATA_PLACEMENTS)}.')
  items, query = _get(config, 'dataset.num_items'), _get(config,
                                                         'dataset.num_query')
  if items is not None and query is not None and query >= items:
    raise ConfigError(f'config.dataset.num_query={query} must be below '
                      f'config.dataset.num_items={items} (the rest is the '
                      'retrieval set).')


def dropped_items_note(num_items: int, batch_size: int) -> str | None:
  """What a batch size that does not divide the training set leaves out.

  Each pass visits `num_items // batch_size` whole batches of a fresh random
  order, so `num_items % batch_size` items (different ones each pass) are left
  out of it. Returns None when nothing is left out.
  """
  left = num_items % batch_size
  if not left:
    return None
  return (f'config.train.batch_size={batch_size} does not divide the '
          f'{num_items} training items: each pass uses '
          f'{num_items - left} and leaves out {left} (a different {left} each '
          f'pass). A batch size dividing {num_items} uses them all.')
