"""What a method hands to its trainer: state, per-network updates, a schedule.

A method never imports a trainer. It names the trainer family that runs it
(`Method.trainer`), and the trainer calls the pieces below.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import flax
import jax
import jax.numpy as jnp
import optax

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly.

  Attributes:
    step: [] int32, optimizer updates taken (all networks together).
    params: network name -> Flax params.
    opt_state: optimizer name -> optax state.
    memory: name -> stored all-item array, e.g. 'lab_code' [T, K]; refreshed
      row by row as batches pass, and saved with the checkpoint.
    rng: [2] uint32 PRNG key of the run.
  """
  step: jax.Array
  params: dict[str, Any]
  opt_state: dict[str, Any]
  memory: dict[str, jax.Array]
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Phase:
  """`passes` full passes over the training set updating `network`.

  `learning_rate` is a float, or a tuple for an update of several networks.
  `begin`, if set, names a hook `method.begin[begin]` that the trainer runs
  once before the phase's first pass (e.g. DCMH's B = sign(F + G) refresh).
  """
  network: str
  learning_rate: float | tuple[float, ...]
  passes: int
  begin: str | None = None


# update(state, batch, data, learning_rate) -> (state, metrics). `batch` holds
# the batch's rows ('index' [B] int32 plus the modalities), `data` the whole
# device-resident training set (e.g. 'label' [T, L] for all-item similarities).
UpdateFn = Callable[[TrainState, Batch, Batch, jax.Array],
                    tuple[TrainState, Metrics]]
# begin(state, data) -> state: a jit-able refresh of the state (usually of its
# memories) from the whole device-resident training set, run between passes.
BeginFn = Callable[[TrainState, Batch], TrainState]


class Method(Protocol):
  """The interface of a method run by the alternating-passes trainer.

  A method whose phases name `begin` hooks also has `begin: dict[str,
  BeginFn]`; the trainer reads it with getattr, so methods without hooks
  (SSAH) need not define it. Likewise `unsaved_memories: tuple[str, ...]`
  names memories that no loss reads (write-only), which checkpoints leave
  out. The method's hyper-parameters live in
  `config.<method name>`, whose `num_epochs` is the number of outer epochs.
  """
  trainer: str
  updates: dict[str, UpdateFn]

  def init(self, rng: jax.Array, data: Batch) -> TrainState:
    ...

  def schedule(self, epoch: int) -> list[Phase]:
    ...

  def encode(self, params: dict[str, Any], modality: str,
             inputs: jax.Array) -> jax.Array:
    ...


def apply_adam(optimizer: optax.GradientTransformation, grads: Any,
               opt_state: Any, params: Any,
               learning_rate: jax.Array) -> tuple[Any, Any]:
  """One step of `optimizer` (a learning-rate-free transform) scaled by -lr.

  The learning rate is a step argument rather than optimizer state, so the
  schedule's ladders change it without retracing or rebuilding optimizers.
  """
  updates, opt_state = optimizer.update(grads, opt_state, params)
  updates = jax.tree.map(lambda u: -learning_rate * u, updates)
  return optax.apply_updates(params, updates), opt_state


def tree_all_finite(tree: Any) -> jax.Array:
  """[] bool: every leaf of `tree` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
