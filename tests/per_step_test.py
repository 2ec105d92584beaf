"""The per-step trainer family, on a small adversarial hashing method.

`AdversarialCodes` (registered here as 'adversarial_codes_test') uses every
part of the per-step contract: two updates per batch (a generator step, then
a discriminator step) in one jit, dropout drawn from `Step.rng`, BatchNorm
statistics in `TrainState.mutable`, a memory queue of past codes, and per
network optax chains with a warm-up/decay schedule, global-norm clipping and a
discriminator with its own betas and weight decay.
"""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import os
import pytest

import conftest

from crossmodal_hash import config_utils
from crossmodal_hash import losses
from crossmodal_hash import sharding
from crossmodal_hash.data import builtin
from crossmodal_hash.methods import base
from crossmodal_hash.methods import registry
from crossmodal_hash.models import hashing_net
from crossmodal_hash.trainers import harness
from crossmodal_hash.trainers import per_step

NAME = 'adversarial_codes_test'
QUEUE = 64


class _Encoder(nn.Module):
  """x -> Dense -> BatchNorm -> ReLU -> Dropout -> tanh(Dense K)."""
  bits: int
  hidden: int = 32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Dense(self.hidden)(x.astype(jnp.float32))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.Dropout(0.2, deterministic=not train)(nn.relu(x))
    return jnp.tanh(nn.Dense(self.bits)(x))


class _Discriminator(nn.Module):

  @nn.compact
  def __call__(self, codes):
    return nn.Dense(1)(nn.relu(nn.Dense(16)(codes)))[:, 0]


@registry.METHODS.register(NAME)
class AdversarialCodes:
  """Cross-modal codes by a pairwise likelihood and a text-vs-image critic."""

  trainer = 'per_step'
  resumable_keys = ()
  outputs = {'img': 'binary', 'txt': 'binary'}

  def __init__(self, config, *, num_labels, text_dim):
    del num_labels, text_dim
    hp = config[NAME]
    self.num_steps = hp.num_steps
    self.nets = {m: _Encoder(config.bits) for m in ('img', 'txt')}
    self.critic = _Discriminator()
    self.optimizers = {
        'gen': base.make_optimizer(hp.generator, num_steps=hp.num_steps),
        'dis': base.make_optimizer(hp.discriminator, num_steps=hp.num_steps)}
    self.updates = {'generator': self.generator, 'discriminator': self.critic_step}
    self.inputs = {'generator': ('label', 'image', 'text'),
                   'discriminator': ('image', 'text')}
    self.bits = config.bits

  def init(self, rng, data):
    keys = jax.random.split(rng, 3)
    params, mutable = {}, {}
    for (m, field), k in zip((('img', 'image'), ('txt', 'text')), keys):
      variables = self.nets[m].init(
          k, jnp.zeros((2,) + data[field].shape[1:]), train=False)
      params[m], mutable[m] = variables['params'], {
          'batch_stats': variables['batch_stats']}
    params['dis'] = self.critic.init(keys[2], jnp.zeros((1, self.bits)))[
        'params']
    gen = {m: params[m] for m in ('img', 'txt')}
    return base.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state={'gen': self.optimizers['gen'].init(gen),
                   'dis': self.optimizers['dis'].init(params['dis'])},
        memory={'queue': jnp.zeros((QUEUE, self.bits)),
                'queue_ptr': jnp.zeros((), jnp.int32)},
        rng=jax.random.fold_in(rng, 1), mutable=mutable)

  def _codes(self, params, mutable, batch, rng):
    out, new = {}, {}
    for (m, field), k in zip((('img', 'image'), ('txt', 'text')),
                             jax.random.split(rng)):
      out[m], new[m] = self.nets[m].apply(
          {'params': params[m], **mutable[m]}, batch[field], train=True,
          rngs={'dropout': k}, mutable=['batch_stats'])
    return out, new

  def generator(self, state, batch, data, step):
    del data
    sim = losses.similarity(batch['label'], batch['label'])

    def loss_fn(gen):
      codes, mutable = self._codes(gen, state.mutable, batch, step.rng)
      logits = self.critic.apply({'params': state.params['dis']}, codes['img'])
      terms = {'pairwise': losses.pairwise_likelihood(codes['img'],
                                                      codes['txt'], sim),
               'quantization': losses.quantization(codes['img']),
               'adversarial': losses.adversarial_generator(logits)}
      return sum(terms.values()), (terms, codes, mutable)

    gen = {m: state.params[m] for m in ('img', 'txt')}
    grads, (terms, codes, mutable) = jax.grad(loss_fn, has_aux=True)(gen)
    gen, opt = base.apply_optimizer(self.optimizers['gen'], grads,
                                    state.opt_state['gen'], gen)
    ptr = state.memory['queue_ptr']
    size = codes['txt'].shape[0]
    queue = jax.lax.dynamic_update_slice_in_dim(
        state.memory['queue'], jax.lax.stop_gradient(codes['txt']), ptr, 0)
    state = state.replace(
        step=state.step + 1, params={**state.params, **gen},
        opt_state={**state.opt_state, 'gen': opt}, mutable=mutable,
        memory={'queue': queue, 'queue_ptr': (ptr + size) % QUEUE})
    return state, {'loss': sum(terms.values()), **terms}

  def critic_step(self, state, batch, data, step):
    del data
    codes = {m: self.nets[m].apply(
        {'params': state.params[m], **state.mutable[m]}, batch[f],
        train=False) for m, f in (('img', 'image'), ('txt', 'text'))}

    def loss_fn(dis):
      d = lambda x: self.critic.apply({'params': dis}, x)
      # The queue's past text codes are "real" too.
      real = jnp.concatenate([codes['txt'], state.memory['queue']])
      return losses.adversarial_discriminator(d(real), d(codes['img']))

    loss, grads = jax.value_and_grad(loss_fn)(state.params['dis'])
    dis, opt = base.apply_optimizer(self.optimizers['dis'], grads,
                                    state.opt_state['dis'],
                                    state.params['dis'])
    del step
    return state.replace(step=state.step + 1,
                         params={**state.params, 'dis': dis},
                         opt_state={**state.opt_state, 'dis': opt}), {
                             'loss': loss}

  def encode(self, params, modality, inputs):
    out = self.nets[modality].apply(
        {'params': params[modality], **params['mutable'][modality]}, inputs,
        train=False)
    return hashing_net.binarize(out)


def _config(*extra):
  config = ml_collections.ConfigDict()
  config.method = NAME
  config.seed = 0
  config.bits = 16
  config.dataset = builtin.synthetic_dataset_config(
      'synthetic_features', num_items=400, num_query=64, num_train=128)
  config.dataset.num_labels = 8
  config.dataset.vocab_size = 200
  config.dataset.feature_dim = 24
  config.model = ml_collections.ConfigDict()
  config.model.image_encoder = 'feature_mlp'
  config.model.image_normalization = 'standardize'
  hp = config[NAME] = ml_collections.ConfigDict()
  hp.num_steps = 12
  hp.generator = base.optimizer_config(
      name='adam', learning_rate=1e-2, warmup_steps=4, decay='exponential',
      decay_rate=0.5, decay_steps=4, clip_global_norm=2.0)
  hp.discriminator = base.optimizer_config(
      name='adamw', learning_rate=1e-3, b1=0.5, b2=0.9, weight_decay=1e-4)
  config_utils.add_run_defaults(config, checkpoint_every_passes=1)
  per_step.add_defaults(config, checkpoint_every_steps=5, log_every_steps=3)
  config.train.batch_size = 32
  config.train.checkpoint_every_seconds = 0
  config.train.progress = False
  config.eval.batch_size = 64
  config.eval.plots = False
  config.eval.random_baseline = False
  return config_utils.apply_arg(config, ','.join(extra))



def _metrics(workdir):
  from crossmodal_hash import logging_utils  # pylint: disable=g-import-not-at-top
  return logging_utils.read_metrics(os.path.join(workdir, 'metrics.jsonl'))


def _check_straight_run(workdir, results):
  """What a straight run of `_config` did: both steps per batch, scheduled
  chains, the queue, BatchNorm statistics, records, evaluation."""
  step, state = conftest.latest_checkpoint(workdir)
  assert step == 12
  # Two optimizer updates (generator, discriminator) per batch.
  assert int(state['step']) == 24
  # The scheduled chains count their own steps.
  counts = [int(v) for path, v in jax.tree_util.tree_flatten_with_path(
      state['opt_state'])[0] if 'count' in jax.tree_util.keystr(path)]
  assert counts and set(counts) == {12}
  # Texts were pushed through the queue: 12 batches of 32 into 64 rows.
  assert int(state['memory']['queue_ptr']) == (12 * 32) % QUEUE
  assert np.abs(state['memory']['queue']).sum() > 0
  # BatchNorm's running statistics moved from their initial values.
  assert np.abs(state['mutable']['img']['batch_stats']['BatchNorm_0'][
      'mean']).sum() > 0
  records = [r for r in _metrics(workdir) if 'loss' in r]
  # Every 3 steps, and at the checkpoints (5, 10) and evaluations (6, 12).
  assert [r['step_index'] for r in records] == [2, 4, 5, 8, 9, 11]
  assert {'generator/pairwise', 'generator/adversarial',
          'discriminator/loss'} <= set(records[0])
  assert set(results['map']) == {'i2t', 't2i', 'i2i', 't2t'}


@pytest.mark.parametrize('placement', ['device', 'stream'])
def test_a_killed_run_resumes_exactly(placement, tmp_path):
  """Stopped after step 7 (the last checkpoint at step 5), then resumed: the
  final state equals the straight run's bit for bit (params, optimizer
  states, BatchNorm statistics, queue)."""
  config = _config(f'train.data_placement={placement}',
                   'eval.every_steps=6')
  straight = per_step.train_and_evaluate(config, str(tmp_path / 'a'))
  _check_straight_run(str(tmp_path / 'a'), straight)
  assert per_step.train_and_evaluate(
      config, str(tmp_path / 'b'), stop_after_steps=7) == {
          'stopped_at_step': 7}
  resumed = per_step.train_and_evaluate(config, str(tmp_path / 'b'))
  _, a = conftest.latest_checkpoint(str(tmp_path / 'a'))
  _, b = conftest.latest_checkpoint(str(tmp_path / 'b'))
  chex.assert_trees_all_equal(a, b)
  assert straight['map'] == resumed['map']
  # The resumed run's records continue the straight run's, none repeated.
  steps = lambda w: [r['step_index'] for r in _metrics(w) if 'loss' in r]
  assert steps(tmp_path / 'a') == steps(tmp_path / 'b')
  maps = lambda w: [r['eval_map'] for r in _metrics(w) if 'eval_map' in r]
  assert maps(tmp_path / 'a') == maps(tmp_path / 'b')
  assert len(maps(tmp_path / 'a')) == 2  # After steps 6 and 12.


def test_one_jitted_call_per_batch_traced_once():
  config = _config()
  method = AdversarialCodes(config, num_labels=8, text_dim=200)
  mesh = sharding.make_mesh(config.mesh)
  data = {'image': np.random.default_rng(0).normal(size=(64, 24)).astype(
              np.float32),
          'text': (np.random.default_rng(1).random((64, 200)) < 0.1).astype(
              np.uint8),
          'label': np.eye(8, dtype=np.uint8)[np.arange(64) % 8],
          'image_mean': np.zeros(24, np.float32),
          'image_inv_scale': np.ones(24, np.float32)}
  data = sharding.put_replicated(data, mesh)
  state = harness.fresh_state(method, 0, data, mesh)
  step = per_step.make_device_step(
      method, batch_size=32, num_batches=2, mesh=mesh,
      trace_guard=chex.assert_max_traces(n=1))
  for s in range(4):
    state, metrics, finite = step(state, data, jnp.int32(s))
    assert bool(finite)
  assert int(state.step) == 8
  assert float(metrics['loss']) == pytest.approx(
      float(metrics['generator/loss']) + float(metrics['discriminator/loss']),
      rel=1e-6)


def test_schedule_warms_up_then_decays_and_clipping_bounds_the_update():
  c = base.optimizer_config(learning_rate=1.0, warmup_steps=4,
                            decay='exponential', decay_rate=0.5,
                            decay_steps=2)
  schedule = base.make_schedule(c, num_steps=20)
  np.testing.assert_allclose([float(schedule(s)) for s in (0, 2, 4, 6, 8)],
                             [0.0, 0.5, 1.0, 0.5, 0.25], rtol=1e-6)
  clipped = base.make_optimizer(base.optimizer_config(
      name='sgd', learning_rate=1.0, clip_global_norm=2.0), num_steps=10)
  params = {'w': jnp.zeros(4)}
  grads = {'w': jnp.full(4, 100.0)}
  new, _ = base.apply_optimizer(clipped, grads, clipped.init(params), params)
  assert float(optax.tree.norm(new)) == pytest.approx(2.0, rel=1e-5)
  # Adam has no weight decay: asking for one names adamw, not silently nothing.
  with pytest.raises(ValueError, match='use name=adamw'):
    base.make_optimizer(base.optimizer_config(name='adam', weight_decay=1e-4),
                        num_steps=10)


def test_the_discriminator_chain_has_its_own_betas_and_weight_decay():
  hp = _config()[NAME]
  params = {'w': jnp.ones(3)}
  grads = {'w': jnp.zeros(3)}
  dis = base.make_optimizer(hp.discriminator, num_steps=hp.num_steps)
  new, _ = base.apply_optimizer(dis, grads, dis.init(params), params)
  # Zero gradients: only AdamW's decay moves the weights, by lr * wd * w.
  np.testing.assert_allclose(new['w'], 1.0 - 1e-3 * 1e-4, rtol=1e-7)
