"""Pieces DCMH and DSMHN share: encoders from the config, one gradient step."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from crossmodal_hash.methods import base
from crossmodal_hash.methods import ssah
from crossmodal_hash.models import code_net
from crossmodal_hash.models import hashing_net
from crossmodal_hash.models import mlp
from crossmodal_hash.models import video

VIDEO_ENCODER = 'video3d'


def image_encoder(model: ml_collections.ConfigDict, dtype: Any):
  """The trunk of the 'image' modality named by `model.image_encoder`.

  'video3d' is the 3-D conv encoder of clips (`model.video_conv_features`,
  `video_temporal_pool`, `video_fc_features`); 'cnnf', 'cnnf_small' and
  'feature_mlp' are SSAH's image trunks (`ssah.image_encoder`).
  """
  if model.image_encoder == VIDEO_ENCODER:
    return video.Video3DEncoder(
        conv_features=tuple(model.video_conv_features),
        temporal_pool=tuple(model.video_temporal_pool),
        fc_features=tuple(model.video_fc_features),
        init_std=model.init_std, dtype=dtype)
  return ssah.image_encoder(model, dtype)


def bow_encoder(model: ml_collections.ConfigDict, dtype: Any) -> mlp.MLP:
  """The bag-of-words text trunk: V -> Dense + ReLU per `model.text_hidden`.

  DCMH: one 8192-wide layer (its code layer follows in CodeNet).
  """
  hidden = model.text_hidden
  widths = tuple(hidden) if isinstance(hidden, tuple) else (int(hidden),)
  return mlp.MLP(features=widths, init_std=model.init_std, dtype=dtype)


def code_nets(config: ml_collections.ConfigDict, *,
              tanh: bool) -> dict[str, code_net.CodeNet]:
  """{'img': image (or video) trunk -> K, 'txt': BoW MLP -> K} from config.

  The code layers use `model.init_std` and both streams compute in
  `model.compute_dtype` (parameters stay float32).
  """
  model = config.model
  dtype = jnp.dtype(model.compute_dtype)
  head = dict(bits=config.bits, tanh=tanh, init_std=model.init_std,
              dtype=dtype)
  return {'img': code_net.CodeNet(encoder=image_encoder(model, dtype), **head),
          'txt': code_net.CodeNet(encoder=bow_encoder(model, dtype), **head)}


def init_code_nets(nets: dict[str, code_net.CodeNet], keys: jax.Array,
                   data: base.Batch) -> dict[str, Any]:
  """Params of `code_nets` for inputs shaped like rows of data['image'/'text'].

  Args:
    nets: {'img', 'txt'} networks.
    keys: [2, 2] PRNG keys, one per network.
    data: the training arrays (only the shapes of 'image' and 'text' used).
  """
  return {m: nets[m].init(k, jnp.zeros((1,) + data[field].shape[1:],
                                       jnp.float32))['params']
          for (m, field), k in zip((('img', 'image'), ('txt', 'text')), keys)}


def encode(nets: dict[str, Any], params: dict[str, Any], modality: str,
           inputs: jax.Array) -> jax.Array:
  """Binary codes sign(net(x)) of a batch of a CodeNet method.

  Args:
    nets: {'img', 'txt'} CodeNets.
    params: the state's params (with 'img' and 'txt').
    modality: 'img' or 'txt'.
    inputs: [B, ...] images (preprocessed), clips, features or texts.

  Returns:
    [B, K] int8 in {-1, +1} (sign(0) = +1).
  """
  out = nets[modality].apply({'params': params[modality]},
                             inputs.astype(jnp.float32))
  return hashing_net.binarize(out)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
  """Raises a ValueError naming the config key unless value is a choice."""
  if value not in choices:
    raise ValueError(f'{name}={value!r} is not one of {choices}.')


def gradient_step(state: base.TrainState, loss_fn: Callable,
                  optimizer: optax.GradientTransformation,
                  learning_rate: jax.Array, *, params: tuple[str, ...],
                  opt: str) -> tuple[base.TrainState, Any]:
  """One optimizer step of the networks `params`, whose state is `opt`.

  Args:
    state: the training state.
    loss_fn: {name: params of name for name in `params`} -> (loss, aux).
    optimizer: a `base.make_optimizer` chain.
    learning_rate: [] the step's learning rate (injected into the chain), or
      None for a scheduled chain.
    params: names of the networks updated together.
    opt: the name of their optimizer state in `state.opt_state`, the
      optimizer's state of {name: state.params[name] for name in params}.

  Returns:
    (state with those params and that optimizer state stepped and `step` + 1,
    aux as `loss_fn` returned it for the params before the step).
  """
  current = {name: state.params[name] for name in params}
  grads, aux = jax.grad(loss_fn, has_aux=True)(current)
  new, opt_state = base.apply_optimizer(optimizer, grads,
                                        state.opt_state[opt], current,
                                        learning_rate)
  return state.replace(step=state.step + 1, params={**state.params, **new},
                       opt_state={**state.opt_state, opt: opt_state}), aux


def inputs(batch: base.Batch, modality: str) -> jax.Array:
  """The batch's float32 'image' (for 'img') or 'text' (for 'txt') rows."""
  return batch['image' if modality == 'img' else 'text'].astype(jnp.float32)
