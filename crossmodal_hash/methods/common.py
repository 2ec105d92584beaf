"""Pieces DCMH and DSMHN share: code nets from the config, one gradient step."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from crossmodal_hash.methods import base
from crossmodal_hash.models import code_net
from crossmodal_hash.models import hashing_net
from crossmodal_hash.models import registry as models_registry

# Where a pretrained image trunk goes (models/registry.py).
PRETRAINED_TRUNKS = {('img', 'encoder'): 'image_encoder'}


def code_nets(config: ml_collections.ConfigDict, *,
              tanh: bool) -> dict[str, code_net.CodeNet]:
  """{'img': image (or video) trunk -> K, 'txt': BoW MLP -> K} from config.

  The image trunk is `model.image_encoder` of models/registry.py ('cnnf',
  'cnnf_small', 'feature_mlp', 'video3d'), the text trunk its 'bow_mlp'.

  The code layers use `model.init_std` and both streams compute in
  `model.compute_dtype` (parameters stay float32).
  """
  model = config.model
  dtype = jnp.dtype(model.compute_dtype)
  head = dict(bits=config.bits, tanh=tanh, init_std=model.init_std,
              dtype=dtype)
  return {'img': code_net.CodeNet(
              encoder=models_registry.build('image_encoder', model, dtype),
              **head),
          'txt': code_net.CodeNet(
              encoder=models_registry.ENCODERS.get('bow_mlp').build(model,
                                                                    dtype),
              **head)}


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


class PretrainedImageTrunk:
  """`Method.init_pretrained` of a method whose image trunk is at
  ('img', 'encoder') of its params (SSAH, DCMH, DSMHN); `self.model` is
  `config.model`."""

  model: ml_collections.ConfigDict

  def init_pretrained(self, params: dict[str, Any]) -> dict[str, Any]:
    """A fresh run's params with the image trunk's pretrained weights, if
    the config names a file (e.g. `model.pretrained_cnnf`)."""
    return models_registry.merge_pretrained(params, self.model,
                                            PRETRAINED_TRUNKS)


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
