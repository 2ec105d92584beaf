"""Shared building blocks: local response normalisation, initialisers, and
the logical axis names of the wide layers' parameters."""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossmodal_hash import sharding

Dtype = Any
Initializer = Callable[..., jax.Array]

# Logical names of a wide Dense layer's dimensions, the MaxText way: 'mlp' is
# a hidden width (CNN-F's fc6/fc7 4096, SSAH's 4096, DCMH's 8192) that
# `config.sharding.logical_axis_rules` may split over the `model` mesh axis;
# 'embed' is a width left whole (unless a rule names it).
EMBED = sharding.EMBED
MLP = sharding.MLP
# A stack of wide layers alternates the two (Megatron's pairing): an even
# layer splits its output width (kernel [D, W] as (embed, mlp), bias (mlp,)),
# the odd one after it its input width (kernel [W, D'] as (mlp, embed)), so the
# split activations between them stay on their devices and the pair ends in
# one sum over `model`.
COLUMN = (EMBED, MLP)
ROW = (MLP, EMBED)

_BOX_PARAMS = contextvars.ContextVar('box_params', default=False)


@contextlib.contextmanager
def logical_boxes() -> Iterator[None]:
  """Within this context, named layers box their new params in
  `nn.LogicallyPartitioned` (their logical axis names); outside it they are
  plain arrays, so no box reaches a state, checkpoint, recorded param tree or
  pretrained-weight merge. The harness traces `method.init` in here
  (`jax.eval_shape`, shapes only) to read each param's names."""
  token = _BOX_PARAMS.set(True)
  try:
    yield
  finally:
    _BOX_PARAMS.reset(token)


def partitioned(init: Initializer, axes: Sequence[str] | None
               ) -> Initializer:
  """`init`, giving its params the logical `axes` inside `logical_boxes`.

  Args:
    init: a Flax initialiser.
    axes: one logical name per dimension of the param (e.g. `COLUMN` for a
      [D, W] kernel), or None for no names (replicated).
  """
  if axes is None or not _BOX_PARAMS.get():
    return init
  return nn.with_logical_partitioning(init, tuple(axes))


def stack_axes(index: int) -> sharding.LogicalAxes:
  """The kernel axes of layer `index` of a stack of wide layers: `COLUMN`
  for an even one, `ROW` for an odd one."""
  return ROW if index % 2 else COLUMN


def dense_kwargs(axes: Sequence[str] | None, kernel: Initializer,
                 bias: Initializer) -> dict[str, Initializer]:
  """`nn.Dense`'s kernel_init and bias_init, named by the kernel's `axes`
  (the bias takes the output dimension's name); None: unnamed."""
  return dict(kernel_init=partitioned(kernel, axes),
              bias_init=partitioned(bias, None if axes is None
                                    else tuple(axes)[-1:]))


def at_least_float32(x: jax.Array) -> jax.Array:
  """`x` in float32, or in its own dtype if that is wider (float64 under x64).

  Outputs and losses are computed in at least float32 whatever the compute
  dtype (bfloat16 activations give float32 losses), and a float64 check of a
  loss against a reference (tests, under `jax.experimental.enable_x64`) keeps
  float64 throughout.
  """
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def local_response_norm(x: jax.Array,
                        depth_radius: int = 2,
                        bias: float = 2.0,
                        alpha: float = 1e-4,
                        beta: float = 0.75) -> jax.Array:
  """Local response normalisation over the last axis (TensorFlow semantics).

  Matches `tf.nn.local_response_normalization` (and MatConvNet's `vl_nnnormalize`
  with N = 2 * depth_radius + 1, kappa = bias, alpha = alpha, beta = beta):

    sqr_sum[..., d] = sum_{d' = d - r}^{d + r} x[..., d'] ** 2   (zero padded)
    out = x / (bias + alpha * sqr_sum) ** beta

  The window sum is 2r + 1 shifted slices of the padded squares (no [C, C]
  matrix), computed in at least float32 whatever the input dtype.

  Args:
    x: [..., C] float, normalised along the last (channel) axis.
    depth_radius: r >= 0, half-width of the channel window.
    bias: additive constant (TensorFlow `bias`, MatConvNet `kappa`).
    alpha: scale of the sum of squares.
    beta: exponent.

  Returns:
    [..., C] with the dtype of `x`.
  """
  if depth_radius < 0:
    raise ValueError(f'depth_radius must be >= 0, got {depth_radius}.')
  xf = at_least_float32(x)
  channels = x.shape[-1]
  r = int(depth_radius)
  padded = jnp.pad(jnp.square(xf), [(0, 0)] * (x.ndim - 1) + [(r, r)])
  sqr_sum = padded[..., 0:channels]
  for shift in range(1, 2 * r + 1):
    sqr_sum = sqr_sum + padded[..., shift:shift + channels]
  out = xf * jnp.power(bias + alpha * sqr_sum, -beta)
  return out.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class LocalResponseNorm:
  """Hyper-parameters of a parameter-free LRN, usable as a module field.

  Defaults are CNN-F's (and SSAH's): depth radius 2, bias 2, alpha 1e-4,
  beta 0.75. Calling the object applies `local_response_norm`.
  """
  depth_radius: int = 2
  bias: float = 2.0
  alpha: float = 1e-4
  beta: float = 0.75

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., C] float -> [..., C], same dtype."""
    return local_response_norm(x, self.depth_radius, self.bias, self.alpha,
                               self.beta)


def normal_init(std: float) -> Initializer:
  """Zero-mean normal initialiser with standard deviation `std`.

  SSAH initialises every new layer with std 0.01.
  """
  return nn.initializers.normal(stddev=std)


def dense(module: nn.Module, features: int, name: str, *,
          use_bias: bool = True,
          axes: Sequence[str] | None = None) -> nn.Dense:
  """A Dense layer with `module`'s init_std, bias_std, dtype and param_dtype.

  Called inside `module`'s compact `__call__`, so the layer is its child,
  named `name`. A module without a `bias_std` field (or with None) starts its
  biases at zero; SSAH's modules draw them from N(0, bias_std^2), as the
  official code does for every new layer. `axes` are the kernel's logical
  names (`COLUMN`, `ROW`; None: unnamed, replicated), read by the harness
  through `logical_boxes`; they do not change the params.
  """
  return nn.Dense(features, use_bias=use_bias,
                  **dense_kwargs(axes, kernel_init(module.init_std),
                                 bias_init(getattr(module, 'bias_std', None))),
                  dtype=module.dtype, param_dtype=module.param_dtype,
                  name=name)


def bias_init(std: float | None) -> Initializer:
  """`normal_init(std)`, or zeros when `std` is None or 0."""
  if not std:
    return nn.initializers.zeros_init()
  return normal_init(std)


def kernel_init(std: float | None) -> Initializer:
  """`normal_init(std)`, or Flax's default (LeCun normal) when `std` is None."""
  if std is None:
    return nn.initializers.lecun_normal()
  return normal_init(std)
