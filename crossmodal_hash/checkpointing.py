"""orbax CheckpointManager wrapper: training state plus JSON metadata.

A checkpoint holds two items:
  * `state`: the training-state pytree (params, optimizer states, memories, step,
    RNG), saved with `StandardSave` and restored onto the caller's shardings;
  * `meta`: JSON with the format tag, the run's config, and the data-iterator
    position (the schedule's pass index), so a resumed run continues exactly.

A method's write-only memories (`unsaved_memories`) are left out: a resumed
run never reads them before rewriting them. A checkpoint saved with them
(the best-state keeper's, before it left them out too) still restores.
`due` spaces the saves out by passes and by seconds, so short passes do not
fill the disk.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from crossmodal_hash import file_io

FORMAT = 'crossmodal_hash.checkpoint/1'


class ForeignCheckpointError(RuntimeError):
  """The workdir holds a checkpoint this run must not resume or overwrite."""


class Checkpointer:
  """Saves and restores `(state, meta)` under `<workdir>/checkpoints`.

  Attributes:
    directory: the checkpoints folder.
    unsaved_memories: names of `state.memory` entries that are not saved (a
      method's write-only memories, `Method.unsaved_memories`); a restored
      state has zeros there.
  """

  def __init__(self, workdir: str, max_to_keep: int = 2, *,
               every_passes: int = 1, every_seconds: float = 0.0,
               clock: Callable[[], float] = time.monotonic):
    """Opens (creating) `<workdir>/checkpoints`.

    Args:
      workdir: the run's directory.
      max_to_keep: older checkpoints are deleted.
      every_passes, every_seconds: when `due` says to save (see there).
      clock: seconds, for `every_seconds` (injectable for tests).
    """
    # A local folder or an object-store path (gs://...): orbax writes both.
    self.directory = file_io.absolute(os.path.join(workdir, 'checkpoints'))
    self.every_passes = int(every_passes)
    self.every_seconds = float(every_seconds)
    self.unsaved_memories: tuple[str, ...] = ()
    self._clock = clock
    self._last_save = clock()
    # A save cut short (Ctrl-C, a kill) leaves a temporary folder; it is
    # removed here rather than warned about when that step is saved again.
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True,
                                             cleanup_tmp_directories=True))

  @classmethod
  def from_config(cls, workdir: str,
                  train_config: Any) -> 'Checkpointer':
    """From `config.train`: max_checkpoints, checkpoint_every_passes and
    checkpoint_every_seconds (0 if the config has none)."""
    return cls(workdir, train_config.max_checkpoints,
               every_passes=train_config.checkpoint_every_passes,
               every_seconds=train_config.get('checkpoint_every_seconds', 0))

  def due(self, step: int, *, final: bool = False) -> bool:
    """Whether to save after `step` passes.

    Always after the last pass (`final`); otherwise after every
    `every_passes`-th pass that comes at least `every_seconds` after the
    previous save (or after this Checkpointer was opened), so short passes
    do not fill the disk: at most one checkpoint per `every_seconds`.
    """
    if final:
      return True
    if step % self.every_passes:
      return False
    return self._clock() - self._last_save >= self.every_seconds

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
    saved = self._saved_part(abstract_state)
    try:
      restored = self._restore(step, saved)
    except ValueError:
      if saved is abstract_state:
        raise
      # Saved with its write-only memories: the best-state checkpoints
      # (`<workdir>/best`) were, before they left them out as well.
      restored = self._restore(step, abstract_state)
    return self._with_unsaved(restored['state'], abstract_state), (
        restored['meta'])

  def _restore(self, step: int, abstract_state: Any) -> dict[str, Any]:
    return self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            meta=ocp.args.JsonRestore()))

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves asynchronously; `wait()` or `close()` blocks until it is on disk."""
    meta = dict(meta, format=FORMAT)
    self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(self._saved_part(state)),
            meta=ocp.args.JsonSave(meta)))
    self._last_save = self._clock()
    # Off the console by default: a line per checkpoint would break the bar.
    logging.debug('Checkpoint %d queued in %s.', step, self.directory)

  def _saved_part(self, state: Any) -> Any:
    """`state` without its unsaved memories."""
    if not self.unsaved_memories or not hasattr(state, 'memory'):
      return state
    return state.replace(memory={k: v for k, v in state.memory.items()
                                 if k not in self.unsaved_memories})

  def _with_unsaved(self, restored: Any, abstract_state: Any) -> Any:
    """`restored` with zeros (shaped and placed as in `abstract_state`) for
    the unsaved memories."""
    if not self.unsaved_memories or not hasattr(restored, 'memory'):
      return restored
    memory = dict(restored.memory)
    for name in self.unsaved_memories:
      if name in abstract_state.memory:
        like = abstract_state.memory[name]
        memory[name] = jax.device_put(np.zeros(like.shape, like.dtype),
                                      like.sharding)
    return restored.replace(memory=memory)

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
