"""Training arrays and batches of the synthetic dataset, for method tests."""
import jax.numpy as jnp

from crossmodal_hash.data import preprocess
from crossmodal_hash.data import synthetic


def train_arrays(config):
  """The config's first num_train synthetic items as the trainer's `data`.

  Pixels, or [D] features when the config names 'synthetic_features'.
  """
  d = config.dataset
  features = d.feature_dim if d.name == 'synthetic_features' else None
  data = synthetic.generate(
      d.num_train, synthetic.SyntheticConfig(num_labels=d.num_labels,
                                             vocab_size=d.vocab_size,
                                             image_size=d.image_size,
                                             feature_dim=features), d.seed)
  mean, inv_scale = preprocess.image_statistics(data.images, 'standardize')
  return {'image': data.images, 'text': data.texts, 'label': data.labels,
          'image_mean': mean, 'image_inv_scale': inv_scale}


def rows(data, start, size):
  """The batch of rows start .. start + size - 1, as an update receives it."""
  part = slice(start, start + size)
  return {'index': jnp.arange(start, start + size, dtype=jnp.int32),
          'label': jnp.asarray(data['label'][part]),
          'text': jnp.asarray(data['text'][part]),
          'image': preprocess.normalize(jnp.asarray(data['image'][part]),
                                        data['image_mean'],
                                        data['image_inv_scale'])}


def one_step_of_each_network(config, image_size=32, feature_dim=None,
                             devices=None):
  """Runs config's method for one batch of 8 of each network (after its
  `begin` hooks) on the mesh of `devices` (default: all 8), on 16 synthetic
  items with 24 labels and 1,386-d texts (pixels, or [D] features if
  `feature_dim`).

  Returns:
    {network: metrics}.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from crossmodal_hash import methods  # pylint: disable=g-import-not-at-top
  from crossmodal_hash import sharding  # pylint: disable=g-import-not-at-top
  from crossmodal_hash.trainers import alternating  # pylint: disable=g-import-not-at-top
  num_labels, vocab = 24, 1386
  data = synthetic.generate(16, synthetic.SyntheticConfig(
      num_labels=num_labels, vocab_size=vocab, image_size=image_size,
      feature_dim=feature_dim), 0)
  channels = data.images.shape[-1]
  arrays = {'image': data.images, 'text': data.texts, 'label': data.labels,
            'image_mean': jnp.zeros(channels),
            'image_inv_scale': jnp.ones(channels)}
  method = methods.METHODS.get(config.method)(config, num_labels=num_labels,
                                              text_dim=vocab)
  mesh = sharding.make_mesh(config.mesh, devices)
  arrays = sharding.put_replicated(arrays, mesh)
  state = jax.jit(method.init, out_shardings=sharding.replicated(mesh))(
      jax.random.PRNGKey(0), arrays)
  for hook in alternating.make_begin_fns(method, mesh).values():
    state = hook(state, arrays)
  metrics = {}
  for network in method.updates:
    fn = alternating.make_steps_fn(method, network, num_steps=1,
                                   batch_size=8, mesh=mesh)
    lr = method.schedule(0)[0].learning_rate
    state, metrics[network], finite = fn(state, arrays, jnp.int32(0),
                                         jnp.int32(0), jnp.float32(lr))
    assert bool(finite), network
  assert int(state.step) == len(method.updates)
  return metrics


def on_one_and_all_devices(method, network, config, data, learning_rate,
                           batch_size=32):
  """Two batches of `network` on a 1-device mesh and on all 8 devices.

  Returns:
    [(state, metrics) on one device, (state, metrics) on eight], on the host.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from crossmodal_hash import sharding  # pylint: disable=g-import-not-at-top
  from crossmodal_hash.trainers import alternating  # pylint: disable=g-import-not-at-top
  assert len(jax.devices()) == 8
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.make_mesh(config.mesh, devices)
    state = jax.device_put(method.init(jax.random.PRNGKey(0), data),
                           sharding.replicated(mesh))
    fn = alternating.make_steps_fn(method, network, num_steps=2,
                                   batch_size=batch_size, mesh=mesh)
    state, metrics, finite = fn(state, sharding.put_replicated(data, mesh),
                                jnp.int32(0), jnp.int32(0),
                                jnp.float32(learning_rate))
    assert bool(finite)
    results.append(jax.device_get((state, metrics)))
  return results
