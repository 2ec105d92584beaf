"""Model selection on the validation split: the best checkpoint, kept apart.

With `config.dataset.num_val` > 0 the periodic evaluation ranks the
validation queries against the validation database (the training items) every
`config.eval.every_passes` passes. The state of the best evaluation so far,
by `CRITERION`, is saved under `<workdir>/best/` (one checkpoint, beside the
latest ones in `<workdir>/checkpoints/`), and `<workdir>/selected_checkpoint.json`
records which one it is and why. A resumed run reads that record back, so
selection continues where it stopped. The final evaluation restores the
selected params; without a validation split it uses the last ones and says so.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax

from crossmodal_hash import checkpointing
from crossmodal_hash import file_io

BEST_DIR = 'best'
RECORD_NAME = 'selected_checkpoint.json'
CRITERION = ('the mean of validation mAP@all I->T and T->I (index-order '
             'ties)')


def score(maps: dict[str, float]) -> float:
  """The selection score of a periodic evaluation's {direction: mAP}."""
  return 0.5 * (maps['i2t'] + maps['t2i'])


class BestCheckpoint:
  """Keeps the best state by validation score in `<workdir>/best/`.

  Attributes:
    record: the selection record (None before the first evaluation): 'pass'
      (passes done), 'step', 'score', 'val_map', 'criterion', 'directory'.
  """

  def __init__(self, workdir: str, *,
               unsaved_memories: tuple[str, ...] = ()):
    """`unsaved_memories`: the method's write-only memories, left out of the
    best state as out of every checkpoint (`Method.unsaved_memories`)."""
    self.workdir = workdir
    self._checkpointer = checkpointing.Checkpointer(
        os.path.join(workdir, BEST_DIR), max_to_keep=1)
    self._checkpointer.unsaved_memories = tuple(unsaved_memories)
    self._record_path = os.path.join(workdir, RECORD_NAME)
    self.record = self._read_record()

  def _read_record(self) -> dict[str, Any] | None:
    """The saved record, if its checkpoint is on disk (resume)."""
    if not file_io.exists(self._record_path):
      return None
    record = json.loads(file_io.read_text(self._record_path))
    if self._checkpointer.latest_step() != record.get('pass'):
      return None  # Killed between the record and its checkpoint.
    return record

  def update(self, passes_done: int, state: Any, maps: dict[str, float],
             meta: dict[str, Any]) -> bool:
    """Saves `state` as the best if `maps` beats the record; True if it did.

    Args:
      passes_done: passes run so far (the checkpoint's step).
      state: the training state (only read).
      maps: {direction: validation mAP@all}.
      meta: the checkpoint metadata (config, split checksum, position).
    """
    value = score(maps)
    if self.record is not None and value <= self.record['score']:
      return False
    self._checkpointer.save(passes_done, state, meta)
    self._checkpointer.wait()
    self.record = {'pass': passes_done, 'step': int(state.step),
                   'score': value, 'val_map': dict(maps),
                   'criterion': CRITERION,
                   'directory': os.path.join(BEST_DIR, 'checkpoints')}
    if jax.process_index() == 0:
      file_io.write_text(self._record_path, json.dumps(self.record, indent=2))
    return True

  def restore(self, like: Any) -> Any:
    """The best state, restored onto the shardings of the state `like`."""
    state, _ = self._checkpointer.restore(
        self.record['pass'], checkpointing.abstract_like(like))
    return state

  def close(self) -> None:
    self._checkpointer.close()


def describe(record: dict[str, Any] | None, num_passes: int,
             every_passes: int, unit: str = 'passes') -> dict[str, Any]:
  """Which checkpoint the final evaluation used, and why (for the report).

  `unit` is the run's: 'passes' (the record's 'pass' counts passes) or
  'steps' (the per-step family, whose record counts steps).
  """
  one = {'passes': 'pass', 'steps': 'step'}[unit]
  if record is None:
    return {'checkpoint': 'last', 'pass': num_passes,
            'why': 'no validation split (config.dataset.num_val = 0) or no '
                   f'periodic evaluation (config.eval.every_{unit} = 0): the '
                   f'params after the last {one}'}
  maps = ', '.join(f'{d} {v:.4f}' for d, v in record['val_map'].items())
  return {'checkpoint': 'best', 'pass': record['pass'],
          'step': record['step'], 'val_map': record['val_map'],
          'why': f'best {CRITERION}: {record["score"]:.4f} after {one} '
                 f'{record["pass"]} of {num_passes} (evaluated every '
                 f'{every_passes} {unit}; {maps})'}
