"""A second, single-modal training dataset beside the target: the source domain.

A method that learns from a labelled source set too (MHTN's transfer from a
large image set) declares the source fields its updates read:

  Method.source_inputs = ('image', 'label')

and the run's config names the set in `config.source_dataset` (a dataset
section like `config.dataset`, e.g. `data.builtin.synthetic_source_config`,
plus `batch_size`). The per-step trainer then puts a source batch beside each
target batch: the update's batch holds 'source_image' [B_s, ...] (normalised
by the source's own statistics under `config.model.image_normalization`),
'source_label' [B_s, C] and 'source_index' [B_s].

Batch order: the source has its own passes: step s reads source batch
s mod N_s of source pass s div N_s (N_s = floor(S / B_s) batches), in the
order `streaming.pass_permutation(fold_in(state.rng, SOURCE_SALT), pass, S)`.
The order is a function of (the run's key, s) alone, so a run resumed at step
s continues the source stream exactly; its position is saved with each
checkpoint (`position`, metadata 'source_iterator') and checked on resume.
The source set stays resident on the devices under both target placements
(a lazy source is read whole).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np

from crossmodal_hash import sharding
from crossmodal_hash.data import preprocess
from crossmodal_hash.data import registry as data_registry
from crossmodal_hash.data import splits
from crossmodal_hash.data import types
from crossmodal_hash.trainers import streaming

# Salts the source's pass permutations apart from the target's.
SOURCE_SALT = 0x50C
PREFIX = 'source_'


@dataclasses.dataclass
class SourceDomain:
  """The source set of a run, resident on the devices.

  Attributes:
    name: `config.source_dataset.name`.
    fields: the fields the method reads (`Method.source_inputs`).
    batch_size: B_s, source items per step.
    num_items: S.
    arrays: replicated device arrays: 'label' [S, C], 'image' [S, ...],
      'image_mean', 'image_inv_scale'.
    sha256: the source data's checksum.
  """
  name: str
  fields: tuple[str, ...]
  batch_size: int
  num_items: int
  arrays: dict[str, jax.Array]
  sha256: str

  @classmethod
  def open(cls, config: ml_collections.ConfigDict, method: Any,
           target: types.MultiModalData, mesh: jax.sharding.Mesh,
           mean_image: np.ndarray | None = None) -> 'SourceDomain | None':
    """The run's source domain, or None when the method declares no
    `source_inputs`.

    Raises:
      ValueError: a method of another family than 'per_step', no
        `config.source_dataset`, a source whose images are not
        shaped like the target's, or a batch size that the mesh or the source
        set cannot hold, naming the setting.
    """
    fields = tuple(getattr(method, 'source_inputs', ()))
    if not fields:
      return None
    if method.trainer != 'per_step':
      raise ValueError(f'{config.method} declares source_inputs, which only '
                       "the 'per_step' trainer family reads.")
    section = config.get('source_dataset')
    if section is None or not section.get('name'):
      raise ValueError(f'{config.method} trains on a source domain: set '
                       'config.source_dataset (e.g. data.builtin.'
                       'synthetic_source_config()).')
    data = data_registry.DATASETS.get(section.name)(section)
    if tuple(data.images.shape[1:]) != tuple(target.images.shape[1:]):
      raise ValueError(
          f'config.source_dataset {section.name!r} has images of shape '
          f'{tuple(data.images.shape[1:])}; the target '
          f'({config.dataset.name!r}) has {tuple(target.images.shape[1:])}. '
          'The shared image trunk needs the same shape.')
    batch_size = int(section.batch_size)
    sharding.check_batch_size(batch_size, mesh,
                              'config.source_dataset.batch_size')
    if len(data) < batch_size:
      raise ValueError(f'config.source_dataset {section.name!r} has '
                       f'{len(data)} items, fewer than its batch_size='
                       f'{batch_size}.')
    images = np.asarray(data.images)
    mean, inv_scale = preprocess.image_statistics(
        images, config.model.image_normalization, mean_image=mean_image)
    arrays = sharding.put_replicated(
        {'image': images, 'label': np.asarray(data.labels),
         'image_mean': mean, 'image_inv_scale': inv_scale}, mesh)
    return cls(name=section.name, fields=fields, batch_size=batch_size,
               num_items=len(data), arrays=arrays,
               sha256=splits.data_checksum(data))

  @property
  def num_batches(self) -> int:
    """N_s, source batches per source pass."""
    return self.num_items // self.batch_size

  def rows(self, rng: jax.Array, step_index: jax.Array) -> jax.Array:
    """[B_s] int32 source rows of step `step_index` (jit-able).

    Args:
      rng: the run's key (`TrainState.rng`).
      step_index: [] the step.
    """
    order = streaming.pass_permutation(
        jax.random.fold_in(rng, SOURCE_SALT), step_index // self.num_batches,
        self.num_items)
    return jax.lax.dynamic_slice_in_dim(
        order, (step_index % self.num_batches) * self.batch_size,
        self.batch_size)

  def position(self, next_step: int) -> dict[str, Any]:
    """The source stream's position after `next_step` steps (checkpoints)."""
    state = streaming.iterator_state(
        np.arange(self.num_items), self.batch_size,
        next_step // self.num_batches, 'device',
        next_batch=next_step % self.num_batches)
    return {**state, 'dataset': self.name, 'data_sha256': self.sha256}

  def check_position(self, saved: dict[str, Any] | None,
                     next_step: int) -> None:
    """Raises ValueError unless a checkpoint's source position `saved`
    continues this source at `next_step` (a missing one fails too)."""
    expected = self.position(next_step)
    if saved is None:
      raise ValueError('The checkpoint has no source-domain position; this '
                       f'run reads the source {self.name!r}.')
    streaming.check_iterator_state(saved, expected)
    if saved.get('data_sha256') != expected['data_sha256']:
      raise ValueError(f'The checkpoint was trained on another source set '
                       f'than {self.name!r} (its data checksum differs).')


def init_rows(source: SourceDomain | None) -> dict[str, Any]:
  """What `method.init` reads of the source: 'source_image' (one row, for
  shapes) and 'source_label' [S, C]; nothing without a source."""
  if source is None:
    return {}
  return {PREFIX + 'image': source.arrays['image'][:1],
          PREFIX + 'label': source.arrays['label']}
