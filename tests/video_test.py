"""The 3-D conv video encoder and the synthetic clip generator."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash.data import synthetic
from crossmodal_hash.data import synthetic_video
from crossmodal_hash.models import code_net
from crossmodal_hash.models import video

_SMALL = synthetic.SyntheticConfig(num_labels=6, vocab_size=140,
                                   image_size=16)


@pytest.mark.parametrize('frames,size,temporal_pool,flat', [
    (8, 16, (1, 2, 2), 2 * 2 * 2 * 16),
    (3, 20, (1, 1, 1), 3 * 2 * 2 * 16),  # 20 -> 10 -> 5 -> 2: floors.
])
def test_encoder_shapes(frames, size, temporal_pool, flat):
  encoder = video.Video3DEncoder(conv_features=(4, 8, 16),
                                 temporal_pool=temporal_pool, fc_features=())
  clips = jnp.ones((2, frames, size, size, 3))
  params = jax.jit(encoder.init)(jax.random.PRNGKey(0), clips)
  chex.assert_shape(jax.jit(encoder.apply)(params, clips), (2, flat))
  chex.assert_shape(params['params']['conv_0']['kernel'], (3, 3, 3, 3, 4))
  chex.assert_shape(params['params']['conv_2']['kernel'], (3, 3, 3, 8, 16))


def test_encoder_with_fc_and_code_layer_in_bf16():
  net = code_net.CodeNet(
      encoder=video.Video3DEncoder(conv_features=(4, 8), temporal_pool=(1, 2),
                                   fc_features=(32, 24), dtype=jnp.bfloat16),
      bits=12, tanh=True, dtype=jnp.bfloat16)
  clips = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 16, 16, 3))
  params = jax.jit(net.init)(jax.random.PRNGKey(0), clips)
  codes = jax.jit(net.apply)(params, clips)
  chex.assert_shape(codes, (3, 12))
  assert codes.dtype == jnp.float32
  assert np.all(np.abs(codes) < 1)
  chex.assert_shape(params['params']['encoder']['fc_1']['kernel'], (32, 24))
  for leaf in jax.tree.leaves(params):
    assert leaf.dtype == jnp.float32


def test_encoder_rejects_bad_inputs():
  encoder = video.Video3DEncoder(conv_features=(4, 8), temporal_pool=(2, 2))
  with pytest.raises(ValueError, match=r'\[B, T, H, W, C\]'):
    encoder.init(jax.random.PRNGKey(0), jnp.ones((2, 16, 16, 3)))
  with pytest.raises(ValueError, match='too small: block 2'):
    encoder.init(jax.random.PRNGKey(0), jnp.ones((1, 2, 16, 16, 3)))
  with pytest.raises(ValueError, match='temporal_pool has 1 entries'):
    video.Video3DEncoder(conv_features=(4, 8), temporal_pool=(1,)).init(
        jax.random.PRNGKey(0), jnp.ones((1, 4, 16, 16, 3)))


def test_clips_share_labels_and_texts_with_the_images():
  clips = synthetic_video.generate_clips(
      12, _SMALL, synthetic_video.VideoConfig(num_frames=5), seed=3)
  images = synthetic.generate(12, _SMALL, seed=3)
  assert clips.images.shape == (12, 5, 16, 16, 3)
  assert clips.images.dtype == np.uint8
  np.testing.assert_array_equal(clips.labels, images.labels)
  np.testing.assert_array_equal(clips.texts, images.texts)


def test_clips_are_deterministic_per_item():
  cfg = synthetic_video.VideoConfig(num_frames=3)
  many = synthetic_video.generate_clips(9, _SMALL, cfg, seed=5)
  few = synthetic_video.generate_clips(4, _SMALL, cfg, seed=5)
  np.testing.assert_array_equal(many.images[:4], few.images)
  other = synthetic_video.generate_clips(4, _SMALL, cfg, seed=6)
  assert not np.array_equal(other.images, few.images)


def test_objects_move_with_their_labels_velocity():
  """With no noise and no distractors, an object's centre follows v_l."""
  # pylint: disable=protected-access
  still = synthetic.SyntheticConfig(num_labels=6, vocab_size=140,
                                    image_size=48, pixel_noise=0.0,
                                    clutter=0.0, max_distractors=0)
  cfg = synthetic_video.VideoConfig(num_frames=4, min_speed=0.2,
                                    max_speed=0.2, max_spin=0.0)
  n = 300
  data = synthetic_video.generate_clips(n, still, cfg, seed=0)
  motion = synthetic_video._label_motion(still, cfg, 0)
  np.testing.assert_allclose(np.linalg.norm(motion.velocity, axis=1), 0.2)
  # The same items' backgrounds: the renderer with every label switched off.
  layouts = synthetic._layouts(still)
  _, image_u, _ = synthetic._draw(still, 0, np.arange(n), layouts)
  background = synthetic._render(
      still, synthetic._build_world(still, 0), np.zeros_like(data.labels),
      layouts[1].split(image_u), np.zeros((n, 3 * 48 * 48), np.uint8))
  checked = 0
  for i in np.nonzero(data.labels.sum(1) == 1)[0]:
    centres = []
    for frame in (data.images[i, 0], data.images[i, -1]):
      mask = np.any(frame != background[i], axis=-1)
      if not mask.any() or mask[[0, -1]].any() or mask[:, [0, -1]].any():
        break  # The object touches the border: its centre is not visible.
      ys, xs = np.nonzero(mask)
      centres.append(np.array([xs.mean(), ys.mean()]) / 48)
    if len(centres) < 2:
      continue
    # tempo * 0.2 frame widths per clip, along the label's direction.
    shift = centres[1] - centres[0]
    velocity = motion.velocity[int(np.argmax(data.labels[i]))]
    assert shift @ velocity / (np.linalg.norm(shift) * 0.2) > 0.9, i
    assert 0.75 * 0.2 * 0.8 < np.linalg.norm(shift) < 1.25 * 0.2 * 1.2, i
    checked += 1
  assert checked >= 5


def test_video_config_validation():
  with pytest.raises(ValueError, match='num_frames'):
    synthetic_video.VideoConfig(num_frames=1)
  with pytest.raises(ValueError, match='min_speed <= max_speed'):
    synthetic_video.VideoConfig(min_speed=0.5, max_speed=0.1)
  with pytest.raises(ValueError, match='feature_dim must be None'):
    synthetic_video.generate_clips(
        2, synthetic.SyntheticConfig(feature_dim=8),
        synthetic_video.VideoConfig(), 0)
  assert synthetic_video.VideoConfig().max_spin == pytest.approx(math.pi / 2)
