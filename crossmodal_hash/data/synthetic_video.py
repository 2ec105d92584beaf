"""Synthetic video clips: the synthetic generator's items, set in motion.

Item i of `generate_clips(n, config, video, seed)` has the same labels and the
same bag-of-words text as item i of `synthetic.generate(n, config, seed)`, and
a clip [T, H, W, 3] uint8 instead of one image. Frame t is rendered by the
image generator's own renderer with every object moved and turned:

* appearance depends on the labels exactly as in the images (one object per
  present label, shape x colour x texture, plus distractors and background);
* motion depends on the labels too: label l has a velocity v_l (a direction
  and a speed of `min_speed`..`max_speed` frame widths per clip) and a spin
  w_l (up to `max_spin` radians per clip), drawn once per dataset. At time
  s = t / (T - 1) - 1/2 the object of label l sits at its drawn position plus
  g s v_l and turns by g s w_l, where g in [0.75, 1.25] is the item's tempo;
  distractors drift with random velocities of up to `distractor_speed`;
* every frame has fresh pixel noise; the background and occlusion order stay.

So a model that sees only one frame gets the appearance evidence, and one that
sees the clip gets the motion evidence as well.

Determinism: as in `synthetic`, dataset-level draws depend on the seed alone
(motion from its own stream, `spawn_key=(2,)`), item i on (seed, i) alone
(`spawn_key=(3, i)` for its tempo, distractor velocities and frame noise).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from crossmodal_hash.data import synthetic
from crossmodal_hash.data import types

# pylint: disable=protected-access  # The renderer and draws of synthetic.py.
_MOTION_WORLD_KEY = 2
_MOTION_ITEM_KEY = 3


@dataclasses.dataclass(frozen=True)
class VideoConfig:
  """Options of the clips (the rest comes from `synthetic.SyntheticConfig`).

  Attributes:
    num_frames: T >= 2 frames per clip.
    min_speed: slowest label speed, in frame widths per clip.
    max_speed: fastest label speed, in frame widths per clip.
    max_spin: largest label spin, in radians per clip (either direction).
    distractor_speed: largest distractor speed, in frame widths per clip.
  """
  num_frames: int = 8
  min_speed: float = 0.15
  max_speed: float = 0.45
  max_spin: float = math.pi / 2
  distractor_speed: float = 0.3

  def __post_init__(self):
    if self.num_frames < 2:
      raise ValueError(f'num_frames must be >= 2; got {self.num_frames}.')
    if not 0.0 <= self.min_speed <= self.max_speed:
      raise ValueError('need 0 <= min_speed <= max_speed; got '
                       f'{self.min_speed}, {self.max_speed}.')
    for name in ('max_spin', 'distractor_speed'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0; got {getattr(self, name)}.')


@dataclasses.dataclass(frozen=True)
class _Motion:
  """Per-label motion: velocity [L, 2] (frame widths per clip), spin [L]."""
  velocity: np.ndarray
  spin: np.ndarray


def _label_motion(config: synthetic.SyntheticConfig, video: VideoConfig,
                  seed: int) -> _Motion:
  rng = np.random.default_rng(synthetic._seed_sequence(seed,
                                                       _MOTION_WORLD_KEY))
  num_l = config.num_labels
  angle = rng.uniform(0, 2 * math.pi, num_l)
  speed = rng.uniform(video.min_speed, video.max_speed, num_l)
  velocity = speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
  spin = rng.uniform(-video.max_spin, video.max_spin, num_l)
  return _Motion(velocity=velocity, spin=spin)


def _item_motion(config: synthetic.SyntheticConfig, video: VideoConfig,
                 seed: int, indices: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Tempo [n], distractor velocities [n, D, 2], noise [n, T, 3 H W] uint8."""
  n, num_d, size = len(indices), config.max_distractors, config.image_size
  tempo = np.empty(n)
  dis_velocity = np.empty((n, num_d, 2))
  noise = np.empty((n, video.num_frames, 3 * size * size), np.uint8)
  for j, index in enumerate(indices):
    rng = np.random.default_rng(synthetic._seed_sequence(
        seed, _MOTION_ITEM_KEY, int(index)))
    tempo[j] = rng.uniform(0.75, 1.25)
    dis_velocity[j] = rng.uniform(-video.distractor_speed,
                                  video.distractor_speed, (num_d, 2))
    noise[j] = np.frombuffer(rng.bytes(noise[j].size), np.uint8).reshape(
        video.num_frames, -1)
  return tempo, dis_velocity, noise


def _generate_chunk(config: synthetic.SyntheticConfig, video: VideoConfig,
                    world, motion: _Motion, seed: int, indices: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Clips [n, T, H, W, 3], texts and labels of the items `indices`."""
  layouts = synthetic._layouts(config)
  common, image_u, _ = synthetic._draw(config, seed, indices, layouts)
  common = layouts[0].split(common)
  image_u = layouts[1].split(image_u)
  labels = synthetic._labels(config, world, common)
  texts = synthetic._texts(config, world, labels, common)
  tempo, dis_velocity, noise = _item_motion(config, video, seed, indices)
  frames = []
  for t in range(video.num_frames):
    s = (t / (video.num_frames - 1) - 0.5) * tempo  # [n]
    u = dict(image_u)
    # Positions are 0.1 + 0.8 u in frame widths; rotations 2 u - 1 of the
    # renderer's maximum rotation.
    u['obj_pos'] = image_u['obj_pos'] + (
        s[:, None, None] * motion.velocity[None]) / 0.8
    u['dis_pos'] = image_u['dis_pos'] + s[:, None, None] * dis_velocity / 0.8
    u['obj_rot'] = image_u['obj_rot'] + (
        s[:, None] * motion.spin[None]) / (2 * synthetic._MAX_ROTATION)
    frames.append(synthetic._render(config, world, labels, u, noise[:, t]))
  return np.stack(frames, axis=1), texts, labels


def generate_clips(num_items: int, config: synthetic.SyntheticConfig,
                   video: VideoConfig, seed: int) -> types.MultiModalData:
  """All items as arrays.

  Args:
    num_items: N >= 1.
    config: the image generator's options (pixels: `feature_dim` must be
      None).
    video: clip options.
    seed: non-negative int; the dataset is a function of (config, video,
      seed) and item i of (config, video, seed, i).

  Returns:
    `MultiModalData` whose `images` are clips [N, T, H, W, 3] uint8, with the
    texts [N, V] and labels [N, L] of `synthetic.generate(N, config, seed)`.
  """
  synthetic._check_args(num_items, seed)
  if config.feature_dim is not None:
    raise ValueError('Video clips are rendered from pixels: feature_dim must '
                     f'be None, got {config.feature_dim}.')
  world = synthetic._build_world(config, int(seed))
  motion = _label_motion(config, video, int(seed))
  n, t, size = int(num_items), video.num_frames, config.image_size
  clips = np.empty((n, t, size, size, 3), np.uint8)
  texts = np.empty((n, config.vocab_size), np.uint8)
  labels = np.empty((n, config.num_labels), np.uint8)
  chunk = max(1, synthetic._chunk_size(config) // t)
  for start in range(0, n, chunk):
    part = slice(start, min(n, start + chunk))
    clips[part], texts[part], labels[part] = _generate_chunk(
        config, video, world, motion, int(seed),
        np.arange(part.start, part.stop, dtype=np.int64))
  return types.MultiModalData(images=clips, texts=texts, labels=labels)
