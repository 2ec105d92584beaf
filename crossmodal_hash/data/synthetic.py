"""Deterministic synthetic multi-label image-text data: the embedded default.

The generator needs no downloads and has real structure, so that a model must
learn to retrieve well:

* Labels (multi-hot, [L]) come from a mixture of latent "scene" topics: each
  topic owns a few core labels that it switches on with high probability, and
  an item sometimes mixes two topics. Labels therefore co-occur far from
  independently. Every item has at least one label (about 3 on average with the
  defaults, like MIRFLICKR-25K's 3.8 of 24).
* Images ([H, W, 3] uint8) show one object per present label. Each label has an
  appearance (a shape, a palette colour and a texture) that it shares in part
  with other labels, so only the combination identifies it. Objects have random
  positions, sizes, small rotations, colour jitter and a random drawing order
  (so they occlude each other and may leave the frame), and they are mixed with
  clutter: distractor shapes, a gradient background, a low-frequency wave, a
  global gain and pixel noise.
* Texts ([V] uint8 bag of words) draw every word of every present label's
  vocabulary independently (most are dropped: word lists are Zipf-weighted and
  scaled by a per-item verbosity), some words are shared between related labels,
  and background noise words are added. Empty texts happen, rarely.
* The pre-extracted-feature variant (`feature_dim=D`) replaces pixels by [D]
  float32 "CNN-feature-like" vectors: ReLU of a random linear map of a latent
  that sums per-label prototypes (with per-item gains and intra-class
  variation), clutter prototypes and a strong item-specific nuisance, times a
  per-item gain. A random projection mostly sees the nuisance; a learned model
  must find the label directions.

Determinism: everything dataset-level (topics, label appearances, word lists,
feature prototypes) derives from `seed` alone; item i derives from
(`seed`, i) alone, through `np.random.SeedSequence(seed, spawn_key=(1, i))`, so
item i does not depend on how many items are generated and `SyntheticSource[i]`
equals row i of `generate`. The rendering is vectorised over items in chunks
with element-wise operations only (no matrix products whose summation order
could depend on the batch), so both paths give bit-identical arrays.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import operator

import numpy as np

from crossmodal_hash.data import types

# Shapes: disc, square, triangle, ring, cross, horizontal bar.
_NUM_SHAPES = 6
# Textures: solid, stripes, checker, concentric rings.
_NUM_TEXTURES = 4
_SOLID, _STRIPES, _CHECKER, _RINGS = range(_NUM_TEXTURES)
_PALETTE = np.array([
    [220, 40, 40],    # red
    [40, 170, 60],    # green
    [40, 70, 220],    # blue
    [235, 215, 40],   # yellow
    [205, 50, 200],   # magenta
    [40, 200, 215],   # cyan
    [245, 135, 30],   # orange
    [25, 25, 25],     # black
], np.float32)
# Texture spatial frequency, in radians per unit of object radius.
_TEXTURE_FREQ = np.float32(2 * math.pi * 1.25)
_MAX_ROTATION = np.float32(math.radians(25))
_COLOUR_JITTER = np.float32(20.0)
# Values (pixels, vocabulary words or feature units) per item times items per
# vectorised chunk: bounds the memory of the float32 temporaries.
_CHUNK_PIXELS = 1 << 21
_WORLD_KEY = 0
_ITEM_KEY = 1


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Options of the synthetic generator.

  Attributes:
    num_labels: L, number of labels (2 to 192).
    vocab_size: V, text dimension; at least
      `(num_labels + 1) * words_per_label`.
    image_size: H = W of the images, >= 16.
    feature_dim: if set, D: images are [N, D] float32 pre-extracted features
      instead of pixels.
    num_topics: latent scene topics of the label model.
    labels_per_topic: core labels per topic (at least `ceil(L / num_topics)`
      are used, so that every label is core to some topic).
    topic_label_prob: mean probability that a topic switches on one of its core
      labels (each core label gets a probability within +-0.2 of it).
    background_label_prob: probability of every other label.
    topic_mix_prob: probability that an item mixes a second topic.
    clutter: expected number of distractor shapes per image.
    max_distractors: maximum number of distractor shapes per image.
    pixel_noise: standard deviation of the (uniform) pixel noise, in grey
      levels.
    words_per_label: words owned by each label.
    shared_words_per_label: extra words each label borrows from related labels.
    word_keep_prob: mean probability that an owned word of a present label
      appears (Zipf-weighted within the list, scaled by a per-item verbosity).
    noise_words: expected number of background noise words per text.
    latent_dim: Z, latent dimension of the feature variant.
    nuisance_dim: R, dimension of the item nuisance subspace (features).
    nuisance_scale: standard deviation of the nuisance coordinates (features);
      label prototypes have unit norm.
    intra_class_scale: norm of the per-item variation of a label's prototype.
    feature_noise: standard deviation of the pre-ReLU feature noise.
  """
  num_labels: int = 24
  vocab_size: int = 1000
  image_size: int = 32
  feature_dim: int | None = None
  num_topics: int = 8
  labels_per_topic: int = 4
  topic_label_prob: float = 0.6
  background_label_prob: float = 0.02
  topic_mix_prob: float = 0.2
  clutter: float = 1.5
  max_distractors: int = 4
  pixel_noise: float = 8.0
  words_per_label: int = 20
  shared_words_per_label: int = 4
  word_keep_prob: float = 0.25
  noise_words: float = 4.0
  latent_dim: int = 64
  nuisance_dim: int = 8
  nuisance_scale: float = 2.5
  intra_class_scale: float = 0.5
  feature_noise: float = 0.1

  def __post_init__(self):
    max_labels = _NUM_SHAPES * len(_PALETTE) * _NUM_TEXTURES
    if not 2 <= self.num_labels <= max_labels:
      raise ValueError(f'num_labels must be in [2, {max_labels}] (distinct '
                       'shape/colour/texture combinations); got '
                       f'{self.num_labels}.')
    if self.image_size < 16:
      raise ValueError(f'image_size must be >= 16; got {self.image_size}.')
    if self.feature_dim is not None and self.feature_dim < 1:
      raise ValueError(f'feature_dim must be None or >= 1; got '
                       f'{self.feature_dim}.')
    for name in ('num_topics', 'labels_per_topic', 'words_per_label',
                 'latent_dim'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1; got {getattr(self, name)}.')
    for name in ('max_distractors', 'shared_words_per_label', 'nuisance_dim'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0; got {getattr(self, name)}.')
    if self.labels_per_topic > self.num_labels:
      raise ValueError(f'labels_per_topic ({self.labels_per_topic}) must not '
                       f'exceed num_labels ({self.num_labels}).')
    for name in ('topic_label_prob', 'background_label_prob', 'topic_mix_prob',
                 'word_keep_prob'):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f'{name} must be in [0, 1]; got '
                         f'{getattr(self, name)}.')
    for name in ('clutter', 'pixel_noise', 'noise_words', 'nuisance_scale',
                 'intra_class_scale', 'feature_noise'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0; got {getattr(self, name)}.')
    if self.nuisance_dim >= self.latent_dim:
      raise ValueError(f'nuisance_dim ({self.nuisance_dim}) must be smaller '
                       f'than latent_dim ({self.latent_dim}).')
    if self.clutter > self.max_distractors:
      raise ValueError(f'clutter ({self.clutter}) must not exceed '
                       f'max_distractors ({self.max_distractors}).')
    borrowable = (self.num_labels - 1) * self.words_per_label
    if self.shared_words_per_label > borrowable:
      raise ValueError('shared_words_per_label must not exceed the words owned '
                       'by the other labels, (num_labels - 1) * '
                       f'words_per_label = {borrowable}; got '
                       f'{self.shared_words_per_label}.')
    needed = (self.num_labels + 1) * self.words_per_label
    if self.vocab_size < needed:
      raise ValueError(
          f'vocab_size={self.vocab_size} is too small: num_labels * '
          f'words_per_label = {self.num_labels * self.words_per_label} label '
          f'words plus at least words_per_label = {self.words_per_label} '
          f'general words are needed, i.e. vocab_size >= {needed}.')


# ----------------------------------------------------------------------------
# Dataset-level structure ("world"), from the seed alone.


@dataclasses.dataclass(frozen=True)
class _World:
  """Dataset-level structure derived from (config, seed).

  Attributes:
    topic_cdf: [T] float64 cumulative topic prior.
    topic_label_prob: [T, L] float64 label probabilities per topic.
    label_shape: [L] int64 shape index per label.
    label_colour: [L, 3] float32 RGB colour per label.
    label_texture: [L] int64 texture index per label.
    label_words: [L, Wl] int64 vocabulary indices of each label's words
      (owned, then shared).
    label_word_prob: [L, Wl] float32 base probability of each of those words.
    log_noise_keep: [V] float32 log(1 - probability of w as a noise word).
    prototypes: [L, Z] float32 unit-norm label prototypes (features).
    nuisance_basis: [R, Z] float32 orthonormal nuisance directions (features).
    projection: [Z, D] float32 latent-to-feature weights (features).
    bias: [D] float32 feature bias (features).
  """
  topic_cdf: np.ndarray
  topic_label_prob: np.ndarray
  label_shape: np.ndarray
  label_colour: np.ndarray
  label_texture: np.ndarray
  label_words: np.ndarray
  label_word_prob: np.ndarray
  log_noise_keep: np.ndarray
  prototypes: np.ndarray | None
  nuisance_basis: np.ndarray | None
  projection: np.ndarray | None
  bias: np.ndarray | None


def _seed_sequence(seed: int, *key: int) -> np.random.SeedSequence:
  return np.random.SeedSequence(seed, spawn_key=key)


def _build_world(config: SyntheticConfig, seed: int) -> _World:
  """Draws the dataset-level structure from `seed` (and `config`) only."""
  rng = np.random.default_rng(_seed_sequence(seed, _WORLD_KEY))
  c = config
  num_l, num_t = c.num_labels, c.num_topics

  # Topics: every label is core to at least one topic (round robin over a
  # permutation), topics are topped up to `labels_per_topic` core labels.
  topic_prior = rng.dirichlet(np.full(num_t, 2.0))
  core = [set() for _ in range(num_t)]
  for j, label in enumerate(rng.permutation(num_l)):
    core[j % num_t].add(int(label))
  for t in range(num_t):
    others = np.array([l for l in rng.permutation(num_l) if l not in core[t]])
    need = c.labels_per_topic - len(core[t])
    if need > 0:
      core[t].update(int(l) for l in others[:need])
  topic_label_prob = np.full((num_t, num_l), c.background_label_prob)
  for t in range(num_t):
    members = np.array(sorted(core[t]))
    p = c.topic_label_prob + rng.uniform(-0.2, 0.2, len(members))
    topic_label_prob[t, members] = np.clip(p, 0.05, 0.95)

  # Appearance: distinct (shape, colour, texture) combinations; single
  # attributes are shared between labels.
  combos = rng.choice(_NUM_SHAPES * len(_PALETTE) * _NUM_TEXTURES, num_l,
                      replace=False)
  label_shape, rest = np.divmod(combos, len(_PALETTE) * _NUM_TEXTURES)
  colour_index, label_texture = np.divmod(rest, _NUM_TEXTURES)

  # Vocabulary: disjoint owned word lists, shared words borrowed from labels
  # that are core to a common topic, the rest are general (noise) words.
  wpl, swpl = c.words_per_label, c.shared_words_per_label
  perm = rng.permutation(c.vocab_size)
  owned = perm[:num_l * wpl].reshape(num_l, wpl)
  general = perm[num_l * wpl:]
  label_words = np.zeros((num_l, wpl + swpl), np.int64)
  label_words[:, :wpl] = owned
  for l in range(num_l if swpl else 0):  # None borrowed: nothing drawn.
    related = {m for t in range(num_t) if l in core[t] for m in core[t]} - {l}
    if len(related) * wpl < swpl:
      related = set(range(num_l)) - {l}
    pool = owned[np.array(sorted(related))].ravel()
    label_words[l, wpl:] = rng.choice(pool, swpl, replace=False)
  zipf = 1.0 / np.sqrt(np.arange(1, wpl + 1))
  zipf /= zipf.mean()
  own_prob = c.word_keep_prob * zipf[rng.permuted(np.tile(np.arange(wpl),
                                                          (num_l, 1)), axis=1)]
  shared_prob = 0.5 * c.word_keep_prob * rng.uniform(0.5, 1.5, (num_l, swpl))
  label_word_prob = np.clip(np.concatenate([own_prob, shared_prob], axis=1),
                            0.0, 0.95).astype(np.float32)
  # Noise words: 85% of the mass Zipf over general words, 15% uniform over
  # label words (confusers).
  noise_dist = np.zeros(c.vocab_size)
  noise_dist[general] = 0.85 / np.arange(1, len(general) + 1)
  noise_dist[general] /= noise_dist[general].sum() / 0.85
  noise_dist[owned.ravel()] = 0.15 / owned.size
  noise_prob = np.clip(c.noise_words * noise_dist, 0.0, 0.5)
  log_noise_keep = np.log1p(-noise_prob).astype(np.float32)

  prototypes = nuisance_basis = projection = bias = None
  if c.feature_dim is not None:
    z, r, d = c.latent_dim, c.nuisance_dim, c.feature_dim
    prototypes = rng.standard_normal((num_l, z))
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    nuisance_basis = np.linalg.qr(rng.standard_normal((z, z)))[0][:, :r].T
    projection = rng.standard_normal((z, d)) / math.sqrt(z)
    bias = rng.normal(-0.2, 0.1, d)
    prototypes, nuisance_basis, projection, bias = (
        a.astype(np.float32)
        for a in (prototypes, nuisance_basis, projection, bias))

  return _World(
      topic_cdf=np.cumsum(topic_prior) / topic_prior.sum(),
      topic_label_prob=topic_label_prob,
      label_shape=label_shape,
      label_colour=_PALETTE[colour_index],
      label_texture=label_texture,
      label_words=label_words,
      label_word_prob=label_word_prob,
      log_noise_keep=log_noise_keep,
      prototypes=prototypes,
      nuisance_basis=nuisance_basis,
      projection=projection,
      bias=bias)


# ----------------------------------------------------------------------------
# Per-item random numbers, from (seed, item index) alone.


class _Layout:
  """Named column ranges of a per-item block of random numbers."""

  def __init__(self, fields: list[tuple[str, tuple[int, ...]]]):
    self.fields = {}
    offset = 0
    for name, shape in fields:
      size = math.prod(shape)
      self.fields[name] = (offset, shape)
      offset += size
    self.size = offset

  def split(self, block: np.ndarray) -> dict[str, np.ndarray]:
    """Views of `block` ([n, size]) as {name: [n, *shape]}."""
    out = {}
    for name, (offset, shape) in self.fields.items():
      size = math.prod(shape)
      out[name] = block[:, offset:offset + size].reshape(len(block), *shape)
    return out


@functools.lru_cache(maxsize=16)
def _layouts(c: SyntheticConfig) -> tuple[_Layout, _Layout, _Layout]:
  """Layouts of the common (labels, text), image-uniform and extra blocks."""
  num_l, num_d = c.num_labels, c.max_distractors
  common = _Layout([('topic', ()), ('mix', ()), ('topic2', ()),
                    ('label', (num_l,)), ('fallback', ()), ('verbosity', ()),
                    ('word', (c.vocab_size,))])
  if c.feature_dim is None:
    image = _Layout([
        ('obj_pos', (num_l, 2)), ('obj_scale', (num_l,)),
        ('obj_rot', (num_l,)), ('obj_jitter', (num_l, 3)),
        ('obj_phase', (num_l, 2)), ('obj_order', (num_l,)),
        ('dis_active', (num_d,)), ('dis_shape', (num_d,)),
        ('dis_palette', (num_d,)), ('dis_colour_index', (num_d,)),
        ('dis_rgb', (num_d, 3)), ('dis_texture', (num_d,)),
        ('dis_pos', (num_d, 2)), ('dis_scale', (num_d,)),
        ('dis_rot', (num_d,)), ('dis_phase', (num_d, 2)),
        ('dis_order', (num_d,)),
        ('bg_colour', (2, 3)), ('bg_angle', ()), ('bg_wave', (4,)),
        ('gain', ()),
    ])
  else:
    image = _Layout([
        ('label_gain', (num_l,)), ('dis_active', (num_d,)),
        ('dis_label', (num_d,)), ('dis_weight', (num_d,)), ('gain', ()),
    ])
  if c.feature_dim is None:
    extra = _Layout([('pixel', (3 * c.image_size * c.image_size,))])
  else:
    extra = _Layout([('intra', (num_l, c.latent_dim)),
                     ('nuisance', (c.nuisance_dim,)),
                     ('noise', (c.feature_dim,))])
  return common, image, extra


def _draw(c: SyntheticConfig, seed: int, indices: np.ndarray,
          layouts: tuple[_Layout, _Layout, _Layout]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-item random numbers, each row from (seed, index) alone.

  Returns:
    common: [n, Uc] float64 uniforms in [0, 1) (labels, text); image: [n, Ui]
    float64 uniforms (image or feature parameters); extra: [n, 3 * H * W] uint8
    uniform bytes (pixel noise) or [n, Un] float32 standard normals (feature
    variation).
  """
  common_l, image_l, extra_l = layouts
  n = len(indices)
  common = np.empty((n, common_l.size))
  image = np.empty((n, image_l.size))
  pixels = c.feature_dim is None
  extra = np.empty((n, extra_l.size), np.uint8 if pixels else np.float32)
  for j, index in enumerate(indices):
    rng = np.random.default_rng(_seed_sequence(seed, _ITEM_KEY, int(index)))
    rng.random(out=common[j])
    rng.random(out=image[j])
    if pixels:
      extra[j] = np.frombuffer(rng.bytes(extra_l.size), np.uint8)
    else:
      rng.standard_normal(out=extra[j], dtype=np.float32)
  return common, image, extra


# ----------------------------------------------------------------------------
# Labels and texts.


def _labels(c: SyntheticConfig, world: _World,
            u: dict[str, np.ndarray]) -> np.ndarray:
  """Multi-hot labels [n, L] uint8 with at least one label per item."""
  last = len(world.topic_cdf) - 1
  topic = np.minimum(np.searchsorted(world.topic_cdf, u['topic'], 'right'),
                     last)
  topic2 = np.minimum(np.searchsorted(world.topic_cdf, u['topic2'], 'right'),
                      last)
  p = world.topic_label_prob[topic]
  p2 = world.topic_label_prob[topic2]
  mixed = (u['mix'] < c.topic_mix_prob)[:, None]
  p = np.where(mixed, 1.0 - (1.0 - p) * (1.0 - p2), p)
  labels = u['label'] < p
  # An item that drew no label gets one, drawn in proportion to p.
  empty = np.nonzero(~labels.any(axis=1))[0]
  if empty.size:
    cum = np.cumsum(p[empty], axis=1)
    pick = (cum < u['fallback'][empty, None] * cum[:, -1:]).sum(axis=1)
    labels[empty, np.minimum(pick, c.num_labels - 1)] = True
  return labels.astype(np.uint8)


def _texts(c: SyntheticConfig, world: _World, labels: np.ndarray,
           u: dict[str, np.ndarray]) -> np.ndarray:
  """Bag-of-words texts [n, V] uint8 in {0, 1}.

  Word w appears with probability 1 - (1 - q_w) prod_l (1 - min(0.95, s p_lw)),
  over the present labels l, where q_w is its noise probability, p_lw its base
  probability in label l's list and s the item's verbosity in [0.2, 1.8].
  """
  n = len(labels)
  verbosity = (0.2 + 1.6 * u['verbosity']).astype(np.float32)
  log_keep = np.tile(world.log_noise_keep, (n, 1))
  for l in range(c.num_labels):
    rows = np.nonzero(labels[:, l])[0]
    if rows.size:
      p = np.minimum(verbosity[rows, None] * world.label_word_prob[l], 0.95)
      log_keep[np.ix_(rows, world.label_words[l])] += np.log1p(-p)
  return (u['word'] < -np.expm1(log_keep)).astype(np.uint8)


# ----------------------------------------------------------------------------
# Images.

def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Inside-mask of a shape in object coordinates (unit radius, v down)."""
  if shape == 0:  # Disc.
    return u * u + v * v <= 1.0
  if shape == 3:  # Ring.
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.3025)
  au, av = np.abs(u), np.abs(v)
  if shape == 1:  # Square.
    return np.maximum(au, av) <= 0.8
  if shape == 2:  # Triangle pointing up, circumradius 1.
    return (v <= 0.5) & (au * np.float32(math.sqrt(3)) <= v + 1.0)
  if shape == 4:  # Cross.
    return ((au <= 0.33) & (av <= 1.0)) | ((av <= 0.33) & (au <= 1.0))
  return (au <= 1.0) & (av <= 0.4)  # Horizontal bar.


def _texture_on(texture: int, u: np.ndarray, v: np.ndarray,
                phase: np.ndarray) -> np.ndarray:
  """Where a textured object shows its colour (else a darker shade).

  Args:
    texture: a non-solid texture index.
    u, v: [P] float32 object coordinates of pixels inside the shape.
    phase: [P, 2] float32 texture phases of their objects.

  Returns:
    [P] bool.
  """
  if texture == _STRIPES:
    return np.sin(_TEXTURE_FREQ * v + phase[:, 0]) >= 0
  if texture == _CHECKER:
    return (np.sin(_TEXTURE_FREQ * u + phase[:, 0]) *
            np.sin(_TEXTURE_FREQ * v + phase[:, 1])) >= 0
  return np.sin(_TEXTURE_FREQ * np.sqrt(u * u + v * v) + phase[:, 0]) >= 0


def _render(c: SyntheticConfig, world: _World, labels: np.ndarray,
            u: dict[str, np.ndarray], noise: np.ndarray) -> np.ndarray:
  """Images [n, H, W, 3] uint8: objects of the labels, clutter, background.

  Args:
    c: options.
    world: dataset-level structure.
    labels: [n, L] uint8 labels.
    u: {name: [n, ...] float64 uniforms} of the image layout.
    noise: [n, 3 * H * W] uint8 uniform bytes for the pixel noise.

  Every object is rendered in a box around it only; a pixel's value depends on
  its item alone (never on the box size, which depends on the batch).
  """
  n, num_d, size = len(labels), c.max_distractors, c.image_size
  u = {k: np.asarray(v, np.float32) for k, v in u.items()}
  grid = (np.arange(size, dtype=np.float32) + 0.5) / size
  gx, gy = grid[None, None, :], grid[None, :, None]

  # Background: gradient between two muted colours plus a wave, times the
  # item's lighting gain (folded into the per-item constants).
  gain = (0.8 + 0.4 * u['gain'])[:, None]  # [n, 1]
  bg = gain[:, None] * (128.0 + 160.0 * (u['bg_colour'] - 0.5))  # [n, 2, 3]
  angle = 2 * np.pi * u['bg_angle']
  t = (0.5 + (gx - 0.5) * np.cos(angle)[:, None, None]) + \
      (gy - 0.5) * np.sin(angle)[:, None, None]  # [n, H, W]
  fx, fy = (2 * np.pi * (6 * u['bg_wave'][:, :2] - 3)).T
  wave = np.sin((fx[:, None, None] * gx +
                 2 * np.pi * u['bg_wave'][:, 2, None, None]) +
                fy[:, None, None] * gy)
  wave *= (20 * u['bg_wave'][:, 3] * gain[:, 0])[:, None, None]
  # Channels first while drawing: broadcasting over a last axis of 3 is slow.
  canvas = np.empty((n, 3, size, size), np.float32)
  np.multiply(t[:, None], (bg[:, 1] - bg[:, 0])[:, :, None, None], out=canvas)
  canvas += bg[:, 0, :, None, None]
  canvas += wave[:, None]
  del t, wave

  # Object slots [n, S]: L label objects (active when the label is present),
  # then the distractors; drawn in a random order (later ones occlude).
  full = lambda a: np.broadcast_to(a, (n,) + a.shape)
  active = np.concatenate(
      [labels.astype(bool), u['dis_active'] < c.clutter / max(num_d, 1)], 1)
  shape = np.concatenate(
      [full(world.label_shape),
       np.minimum(u['dis_shape'] * _NUM_SHAPES, _NUM_SHAPES - 1).astype(int)],
      1)
  texture = np.concatenate(
      [full(world.label_texture),
       np.minimum(u['dis_texture'] * _NUM_TEXTURES,
                  _NUM_TEXTURES - 1).astype(int)], 1)
  palette_pick = np.minimum(u['dis_colour_index'] * len(_PALETTE),
                            len(_PALETTE) - 1).astype(int)
  dis_colour = np.where(u['dis_palette'][..., None] < 0.6,
                        _PALETTE[palette_pick], 255 * u['dis_rgb'])
  label_colour = world.label_colour + _COLOUR_JITTER * (2 * u['obj_jitter'] -
                                                        1)
  colour = gain[:, None] * np.clip(
      np.concatenate([label_colour, dis_colour], 1), 0, 255)
  pos = 0.1 + 0.8 * np.concatenate([u['obj_pos'], u['dis_pos']], 1)
  radius = np.concatenate([0.10 + 0.12 * u['obj_scale'],
                           0.06 + 0.10 * u['dis_scale']], 1)
  rot = _MAX_ROTATION * (2 * np.concatenate([u['obj_rot'], u['dis_rot']], 1) -
                         1)
  phase = 2 * np.pi * np.concatenate([u['obj_phase'], u['dis_phase']], 1)
  order = np.where(active, np.concatenate([u['obj_order'], u['dis_order']], 1),
                   2.0)
  perm = np.argsort(order, axis=1, kind='stable')
  take = lambda a: np.take_along_axis(
      a, perm.reshape(perm.shape + (1,) * (a.ndim - 2)), axis=1)
  active, shape, texture, colour, pos, radius, rot, phase = map(
      take, (active, shape, texture, colour, pos, radius, rot, phase))
  # Half-size of a box holding any shape (all lie within 1.14 radii).
  half = 1.15 * radius * size
  cos_rot, sin_rot = np.cos(rot), np.sin(rot)

  flat_canvas = canvas.reshape(n, 3, size * size)
  steps = np.arange(size)
  groups = _NUM_TEXTURES * _NUM_SHAPES
  for k in range(int(active.sum(axis=1).max())):
    idx = np.nonzero(active[:, k])[0]
    # Items sorted by (texture, shape), so that each group is a slice.
    group = texture[idx, k] * _NUM_SHAPES + shape[idx, k]
    order = np.argsort(group, kind='stable')
    idx, group = idx[order], group[order]
    bounds = np.searchsorted(group, np.arange(groups + 1))
    box = min(size, int(np.ceil(2 * half[idx, k].max())) + 2)
    corner = np.floor(pos[idx, k] * size - half[idx, k, None]).astype(int)
    corner = np.clip(corner, 0, size - box)  # [m, 2] (x0, y0).
    xs = corner[:, 0, None] + steps[:box]  # [m, box]
    ys = corner[:, 1, None] + steps[:box]
    e = lambda a: a[idx, k][:, None, None]  # pylint: disable=cell-var-from-loop
    dx = grid[xs][:, None, :] - e(pos[..., 0])  # [m, 1, box]
    dy = grid[ys][:, :, None] - e(pos[..., 1])  # [m, box, 1]
    cos, sin = e(cos_rot) / e(radius), e(sin_rot) / e(radius)
    ou = dx * cos + dy * sin  # [m, box, box] object coordinates.
    ov = dy * cos - dx * sin
    mask = np.empty(ou.shape, bool)
    for g in range(groups):
      lo, hi = bounds[g], bounds[g + 1]
      if hi > lo:
        mask[lo:hi] = _shape_mask(g % _NUM_SHAPES, ou[lo:hi], ov[lo:hi])
    # Texture and colour, at the pixels inside the shapes only; pixels come
    # in item order, so each texture is a slice of them.
    item, yb, xb = np.nonzero(mask)
    ou, ov = ou[mask], ov[mask]
    on = np.ones(len(item), bool)
    tex_bounds = np.searchsorted(item, bounds[::_NUM_SHAPES])
    for tex in range(_NUM_TEXTURES):
      lo, hi = tex_bounds[tex], tex_bounds[tex + 1]
      if tex != _SOLID and hi > lo:
        on[lo:hi] = _texture_on(tex, ou[lo:hi], ov[lo:hi],
                                phase[idx[item[lo:hi]], k])
    col = colour[idx, k][item]  # [P, 3]
    flat_canvas[idx[item], :, ys[item, yb] * size + xs[item, xb]] = np.where(
        on[:, None], col, 0.4 * col + 10)

  # Uniform pixel noise with standard deviation pixel_noise; +0.5 and the
  # truncation of astype round to nearest.
  scale = np.float32(c.pixel_noise * math.sqrt(12) / 256)
  pixel_noise = np.multiply(noise.reshape(n, 3, size, size), scale,
                            dtype=np.float32)
  pixel_noise += np.float32(0.5) - np.float32(127.5) * scale
  canvas += pixel_noise
  np.clip(canvas, 0, 255.75, out=canvas)
  return canvas.transpose(0, 2, 3, 1).astype(np.uint8)


# ----------------------------------------------------------------------------
# Pre-extracted features.


def _features(c: SyntheticConfig, world: _World, labels: np.ndarray,
              u: dict[str, np.ndarray],
              normal: dict[str, np.ndarray]) -> np.ndarray:
  """Features [n, D] float32 >= 0 (see the module docstring).

  Args:
    c: options.
    world: dataset-level structure.
    labels: [n, L] uint8 labels.
    u: {name: [n, ...] float64 uniforms} of the feature layout.
    normal: {name: [n, ...] float32 standard normals} of the extra layout.

  Only element-wise operations in a fixed order (no matrix products), so that a
  row does not depend on the other rows of the batch.
  """
  n, num_l, num_d = len(labels), c.num_labels, c.max_distractors
  z = np.zeros((n, c.latent_dim), np.float32)
  weight = labels * (0.5 + u['label_gain']).astype(np.float32)
  intra = np.float32(c.intra_class_scale / math.sqrt(c.latent_dim))
  for l in range(num_l):
    z += weight[:, l, None] * (world.prototypes[l] +
                               intra * normal['intra'][:, l])
  # Clutter: weak evidence of random labels.
  dis_label = np.minimum(u['dis_label'] * num_l, num_l - 1).astype(int)
  dis_weight = np.where(u['dis_active'] < c.clutter / max(num_d, 1),
                        0.2 + 0.4 * u['dis_weight'], 0.0).astype(np.float32)
  for d in range(num_d):
    z += dis_weight[:, d, None] * world.prototypes[dis_label[:, d]]
  # Nuisance (viewpoint, lighting, background...): large, low-dimensional.
  scale = np.float32(c.nuisance_scale)
  for r in range(c.nuisance_dim):
    z += (scale * normal['nuisance'][:, r, None]) * world.nuisance_basis[r]
  h = np.zeros((n, c.feature_dim), np.float32)
  for k in range(c.latent_dim):
    h += z[:, k, None] * world.projection[k]
  gain = (0.6 + 0.8 * u['gain']).astype(np.float32)
  h = gain[:, None] * h + world.bias + np.float32(c.feature_noise) * \
      normal['noise']
  return np.maximum(h, 0)


# ----------------------------------------------------------------------------
# Public API.


def _check_args(num_items: int, seed: int) -> None:
  """Raises ValueError unless num_items >= 1 and seed >= 0 are ints."""
  for name, value, low in (('num_items', num_items, 1), ('seed', seed, 0)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ValueError(f'{name} must be an int; got {value!r}.')
    if value < low:
      raise ValueError(f'{name} must be >= {low}; got {value}.')


def _chunk_size(c: SyntheticConfig) -> int:
  """Items per vectorised chunk, bounding the temporaries' memory."""
  if c.feature_dim is None:
    per_item = c.image_size * c.image_size
  else:
    per_item = max(c.feature_dim, c.num_labels * c.latent_dim)
  return max(1, _CHUNK_PIXELS // max(per_item, c.vocab_size))


def _generate_chunk(c: SyntheticConfig, world: _World, seed: int,
                    indices: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Images, texts and labels of the items `indices` ([n] int64)."""
  layouts = _layouts(c)
  common, image_u, extra = _draw(c, seed, indices, layouts)
  common = layouts[0].split(common)
  image_u = layouts[1].split(image_u)
  extra = layouts[2].split(extra)
  labels = _labels(c, world, common)
  texts = _texts(c, world, labels, common)
  if c.feature_dim is None:
    images = _render(c, world, labels, image_u, extra['pixel'])
  else:
    images = _features(c, world, labels, image_u, extra)
  return images, texts, labels


def _generate_items(c: SyntheticConfig, world: _World, seed: int,
                    indices: np.ndarray) -> types.MultiModalData:
  """The items `indices` ([n] int64), generated in chunks."""
  n = len(indices)
  if c.feature_dim is None:
    images = np.empty((n, c.image_size, c.image_size, 3), np.uint8)
  else:
    images = np.empty((n, c.feature_dim), np.float32)
  texts = np.empty((n, c.vocab_size), np.uint8)
  labels = np.empty((n, c.num_labels), np.uint8)
  chunk = _chunk_size(c)
  for start in range(0, n, chunk):
    part = slice(start, min(n, start + chunk))
    images[part], texts[part], labels[part] = _generate_chunk(
        c, world, seed, indices[part])
  return types.MultiModalData(images=images, texts=texts, labels=labels)


class SyntheticSource:
  """Random-access source of synthetic items (for grain `MapDataset.source`).

  `source[i]` is a dict with `image`: [H, W, 3] uint8 (or [D] float32 with
  `config.feature_dim`), `text`: [V] uint8 in {0, 1} and `label`: [L] uint8 in
  {0, 1}; it equals row i of `generate(num_items, config, seed)`.
  """

  def __init__(self, num_items: int, config: SyntheticConfig, seed: int):
    """Prepares the dataset-level structure (cheap); items are made on demand.

    Args:
      num_items: N >= 1, the number of items.
      config: generator options.
      seed: non-negative int; the dataset is a function of (config, seed).
    """
    _check_args(num_items, seed)
    self._num_items = int(num_items)
    self._config = config
    self._seed = int(seed)
    self._world = _build_world(config, self._seed)

  def __len__(self) -> int:
    return self._num_items

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self.__getitems__([index])[0]

  def __getitems__(self, indices) -> list[dict[str, np.ndarray]]:
    """Several items at once (vectorised), in the order of `indices`."""
    idx = []
    for index in indices:
      i = operator.index(index)
      if i < 0:
        i += self._num_items
      if not 0 <= i < self._num_items:
        raise IndexError(f'index {index} out of range for {self._num_items} '
                         'items.')
      idx.append(i)
    data = _generate_items(self._config, self._world, self._seed,
                           np.array(idx, np.int64))
    return [dict(image=data.images[j], text=data.texts[j],
                 label=data.labels[j]) for j in range(len(idx))]

  def __repr__(self) -> str:
    return (f'SyntheticSource(num_items={self._num_items}, '
            f'config={self._config}, seed={self._seed})')


def generate(num_items: int, config: SyntheticConfig,
             seed: int) -> types.MultiModalData:
  """All items as arrays, equal to stacking `SyntheticSource` items.

  Args:
    num_items: N >= 1.
    config: generator options.
    seed: non-negative int; the dataset is a function of (config, seed) and
      item i of (config, seed, i).

  Returns:
    `MultiModalData` with images [N, H, W, 3] uint8 (or [N, D] float32 >= 0 when
    `config.feature_dim` is set), texts [N, V] uint8 in {0, 1} and labels
    [N, L] uint8 in {0, 1} with at least one label per row.
  """
  _check_args(num_items, seed)
  world = _build_world(config, int(seed))
  return _generate_items(config, world, int(seed),
                         np.arange(int(num_items), dtype=np.int64))


_SHAPE_NAMES = ('disc', 'square', 'triangle', 'ring', 'cross', 'bar')
_COLOUR_NAMES = ('red', 'green', 'blue', 'yellow', 'magenta', 'cyan',
                 'orange', 'black')
_TEXTURE_NAMES = ('solid', 'striped', 'checked', 'ringed')


def label_names(config: SyntheticConfig, seed: int) -> list[str]:
  """[L] readable label names from each label's appearance, e.g. 'red_disc'.

  A label is named by its colour and shape, with its texture added where two
  labels share both (every label's combination of all three is distinct).
  """
  world = _build_world(config, int(seed))
  colour = [_COLOUR_NAMES[int(np.argmin(np.abs(_PALETTE - c).sum(axis=1)))]
            for c in world.label_colour]
  short = [f'{c}_{_SHAPE_NAMES[s]}' for c, s in zip(colour, world.label_shape)]
  return [name if short.count(name) == 1 else
          f'{name}_{_TEXTURE_NAMES[t]}'
          for name, t in zip(short, world.label_texture)]


def vocabulary(config: SyntheticConfig, seed: int) -> list[str]:
  """[V] words, column w of the bag-of-words texts is word w.

  Each label's most probable owned word is its name (`label_names`), its
  other owned words are the name with a number ('red_disc2', ...), by
  decreasing probability; words owned by no label are 'word<w>'. So the text
  query 'red_disc blue_ring' asks for red discs and blue rings.
  """
  world = _build_world(config, int(seed))
  names = label_names(config, seed)
  words = [f'word{w}' for w in range(config.vocab_size)]
  wpl = config.words_per_label
  for l, name in enumerate(names):
    owned = world.label_words[l, :wpl]
    by_prob = owned[np.argsort(-world.label_word_prob[l, :wpl], kind='stable')]
    for rank, w in enumerate(by_prob):
      words[int(w)] = name if rank == 0 else f'{name}{rank + 1}'
  return words
