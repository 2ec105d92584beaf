"""orbax CheckpointManager wrapper: training state plus JSON metadata.

A checkpoint holds two items:
  * `state`: the training-state pytree (params, optimizer states, memories, step,
    RNG), saved with `StandardSave` and restored onto the caller's shardings;
  * `meta`: JSON with the format tag, the run's config, and the data-iterator
    position (the schedule's pass index), so a resumed run continues exactly.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

FORMAT = 'crossmodal_hash.checkpoint/1'


class ForeignCheckpointError(RuntimeError):
  """The workdir holds a checkpoint this run must not resume or overwrite."""


class Checkpointer:
  """Saves and restores `(state, meta)` under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def read_meta(self, step: int) -> dict[str, Any]:
    """The JSON metadata of checkpoint `step`; a clear error if there is none."""
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      meta = restored['meta']
    except Exception as e:  # orbax raises several types for foreign layouts.
      raise ForeignCheckpointError(
          f'{self.directory}/{step} is not a crossmodal_hash checkpoint (its '
          f'metadata cannot be read: {e}). Use another --workdir; nothing was '
          'overwritten.') from e
    if not isinstance(meta, dict) or meta.get('format') != FORMAT:
      raise ForeignCheckpointError(
          f'{self.directory}/{step} is not a {FORMAT} checkpoint. Use another '
          '--workdir; nothing was overwritten.')
    return meta

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores checkpoint `step` onto the shardings of `abstract_state`.

    Args:
      step: the checkpoint to restore.
      abstract_state: a pytree of `jax.ShapeDtypeStruct`s with shardings, the
        shape of the state to restore.

    Returns:
      (state, meta).
    """
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            meta=ocp.args.JsonRestore()))
    return restored['state'], restored['meta']

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves asynchronously; `wait()` or `close()` blocks until it is on disk."""
    meta = dict(meta, format=FORMAT)
    self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                meta=ocp.args.JsonSave(meta)))
    logging.info('Checkpoint %d queued in %s.', step, self.directory)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(state: Any) -> Any:
  """ShapeDtypeStructs with the shardings of `state`, for `restore`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      state)
