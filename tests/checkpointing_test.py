"""Checkpoint spacing by passes and seconds; write-only memories not saved."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from crossmodal_hash import checkpointing
from crossmodal_hash import config_utils
from crossmodal_hash.methods import base


class _Clock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_due_spaces_saves_by_passes_and_seconds(tmp_path):
  clock = _Clock()
  ckpt = checkpointing.Checkpointer(str(tmp_path), every_passes=2,
                                    every_seconds=60, clock=clock)
  try:
    clock.now = 10.0
    assert not ckpt.due(2)  # Only 10 s since the run started.
    assert ckpt.due(3, final=True)  # The last pass always saves.
    clock.now = 61.0
    assert not ckpt.due(3)  # Not a multiple of every_passes.
    assert ckpt.due(4)
    state = {'w': jnp.ones(3)}
    ckpt.save(4, state, {'pass_index': 4})
    clock.now = 100.0
    assert not ckpt.due(6)  # 39 s after that save.
    clock.now = 121.0
    assert ckpt.due(6)
  finally:
    ckpt.close()
  passes_only = checkpointing.Checkpointer(str(tmp_path / 'b'),
                                           every_passes=1)
  assert passes_only.due(1) and passes_only.due(2)
  passes_only.close()


def test_from_config_reads_the_train_section(tiny_config, tmp_path):
  config = tiny_config('train.checkpoint_every_passes=3',
                       'train.checkpoint_every_seconds=45')
  ckpt = checkpointing.Checkpointer.from_config(str(tmp_path), config.train)
  assert (ckpt.every_passes, ckpt.every_seconds) == (3, 45.0)
  ckpt.close()


def test_default_configs_save_at_most_once_a_minute():
  config = config_utils.add_run_defaults(
      config_utils.ml_collections.ConfigDict(), checkpoint_every_passes=5)
  assert config.train.checkpoint_every_seconds == 60


def _state_with_a_write_only_memory():
  """(a replicated TrainState with memories 'kept' and 'write_only', its
  sharding)."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = jax.device_put(base.TrainState(
      step=jnp.int32(7), params={'w': jnp.arange(4.0)}, opt_state={},
      memory={'kept': jnp.full((5, 2), 3.0), 'write_only': jnp.ones((5, 2))},
      rng=jax.random.PRNGKey(0)), replicated)
  return state, replicated


def test_unsaved_memories_are_left_out_and_restored_as_zeros(tmp_path):
  state, replicated = _state_with_a_write_only_memory()
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt.unsaved_memories = ('write_only',)
  ckpt.save(1, state, {'pass_index': 1})
  ckpt.wait()
  restored, meta = ckpt.restore(1, checkpointing.abstract_like(state))
  ckpt.close()
  assert meta['pass_index'] == 1
  manager = ocp.CheckpointManager(os.path.join(tmp_path, 'checkpoints'))
  raw = manager.restore(
      1, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  manager.close()
  assert set(raw['memory']) == {'kept'}
  np.testing.assert_array_equal(restored.memory['kept'], state.memory['kept'])
  np.testing.assert_array_equal(restored.memory['write_only'],
                                np.zeros((5, 2)))
  assert restored.memory['write_only'].sharding == replicated
  np.testing.assert_array_equal(restored.params['w'], state.params['w'])


def test_a_checkpoint_saved_with_its_write_only_memories_still_restores(
    tmp_path):
  """Best-state checkpoints kept the write-only memories before they were
  left out there too: restoring one with them unsaved gives zeros."""
  state, _ = _state_with_a_write_only_memory()
  old = checkpointing.Checkpointer(str(tmp_path))  # Saves every memory.
  old.save(2, state, {'pass_index': 2})
  old.close()
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt.unsaved_memories = ('write_only',)
  restored, _ = ckpt.restore(2, checkpointing.abstract_like(state))
  ckpt.close()
  np.testing.assert_array_equal(restored.memory['kept'], state.memory['kept'])
  np.testing.assert_array_equal(restored.memory['write_only'],
                                np.zeros((5, 2)))
