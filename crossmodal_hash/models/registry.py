"""Encoders by name: `ENCODERS.get(name).build(model_config, dtype, ...)`.

Methods choose their trunks by the names in `config.model` (e.g.
`model.image_encoder`) through this registry, never by if/else; a new trunk
is a registration here (or in its own module under models/). An entry may
also load pretrained weights from a file the model config names (CNN-F from
`model.pretrained_cnnf`): `Method.init_pretrained` merges them into a fresh
state's params, and `mean_image` gives the file's mean image to the
'pretrained_mean' normalisation.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import ml_collections
import numpy as np

from crossmodal_hash import registry
from crossmodal_hash.models import cnnf
from crossmodal_hash.models import cnnf_weights
from crossmodal_hash.models import mlp
from crossmodal_hash.models import video

Params = Any


@dataclasses.dataclass(frozen=True)
class Encoder:
  """A registered trunk.

  Attributes:
    build: build(model_config, dtype, bias_std) -> the Flax module; bias_std
      is the method's bias initialisation of new layers (None: the module's
      default).
    pretrained: (optional) pretrained(model_config) -> (params of the module,
      mean image [H, W, 3] or None), or None when the config names no file.
  """
  build: Callable[..., nn.Module]
  pretrained: Callable[[ml_collections.ConfigDict],
                       tuple[Params, np.ndarray | None] | None] | None = None


ENCODERS = registry.Registry('encoder')


def _register(name: str, build: Callable[..., nn.Module], **kwargs) -> None:
  ENCODERS.register(name)(Encoder(build=build, **kwargs))


@functools.lru_cache(maxsize=2)
def _load_cnnf(path: str) -> cnnf_weights.PretrainedCNNF | None:
  return cnnf_weights.maybe_load(path, cnnf_weights.ENCODER)


def _pretrained_cnnf(model: ml_collections.ConfigDict):
  path = model.get('pretrained_cnnf', '')
  if not path:
    return None
  loaded = _load_cnnf(path)
  return loaded.params, loaded.mean_image


_register('cnnf', lambda model, dtype, bias_std=None: cnnf.cnnf_224(
    dtype=dtype), pretrained=_pretrained_cnnf)
_register('cnnf_small', lambda model, dtype, bias_std=None: cnnf.cnnf_small(
    dtype=dtype))
_register('feature_mlp', lambda model, dtype, bias_std=None: mlp.MLP(
    features=tuple(model.image_mlp_features), dtype=dtype, bias_std=bias_std))
_register('video3d', lambda model, dtype, bias_std=None: video.Video3DEncoder(
    conv_features=tuple(model.video_conv_features),
    temporal_pool=tuple(model.video_temporal_pool),
    fc_features=tuple(model.video_fc_features), init_std=model.init_std,
    dtype=dtype))


def _bow_widths(model: ml_collections.ConfigDict) -> tuple[int, ...]:
  hidden = model.text_hidden
  return tuple(hidden) if isinstance(hidden, tuple) else (int(hidden),)


# The bag-of-words text trunk: V -> Dense + ReLU per `model.text_hidden`
# (DCMH: one 8192-wide layer; its code layer follows in CodeNet).
_register('bow_mlp', lambda model, dtype, bias_std=None: mlp.MLP(
    features=_bow_widths(model), init_std=model.init_std, dtype=dtype))


def build(kind: str, model: ml_collections.ConfigDict, dtype: Any,
          bias_std: float | None = None) -> nn.Module:
  """The trunk named by `model.<kind>` (e.g. kind 'image_encoder').

  Raises:
    ValueError: naming the config key, for a name not registered.
  """
  name = model[kind]
  if name not in ENCODERS:
    raise ValueError(f'Unknown config.model.{kind} {name!r}; expected one of '
                     f'{ENCODERS.names()}.')
  return ENCODERS.get(name).build(model, dtype, bias_std)


def check_pretrained(model: ml_collections.ConfigDict) -> None:
  """Raises ValueError when `model.pretrained_cnnf` names a file for an image
  encoder that has no pretrained weights to take."""
  path = model.get('pretrained_cnnf', '')
  if path and ENCODERS.get(model.image_encoder).pretrained is None:
    cnnf_weights.maybe_load(path, model.image_encoder)  # Raises, naming both.


def mean_image(model: ml_collections.ConfigDict) -> np.ndarray | None:
  """The mean image of the image encoder's pretrained file, or None."""
  check_pretrained(model)
  entry = ENCODERS.get(model.image_encoder)
  loaded = entry.pretrained(model) if entry.pretrained else None
  return None if loaded is None else loaded[1]


def merge_pretrained(params: Params, model: ml_collections.ConfigDict,
                     trunks: dict[tuple[str, ...], str]) -> Params:
  """`params` with every trunk that has pretrained weights replaced by them.

  Args:
    params: a method's params (host or device arrays).
    model: `config.model`.
    trunks: {path in params: the model config key naming its encoder}, e.g.
      {('img', 'encoder'): 'image_encoder'}.
  """
  check_pretrained(model)
  for path, kind in trunks.items():
    entry = ENCODERS.get(model[kind])
    loaded = entry.pretrained(model) if entry.pretrained else None
    if loaded is not None:
      params = cnnf_weights.merge_into(params, loaded[0], path,
                                       where=model.get('pretrained_cnnf', ''))
  return params


def names() -> Sequence[str]:
  return ENCODERS.names()
