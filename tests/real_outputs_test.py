"""A method of real-valued outputs, end to end on the per-step family.

`LinearProjector` (registered here as 'linear_projector_test') maps each
modality linearly into a D-dimensional common space and keeps it semantic
with a label classifier shared by both modalities; its `outputs` are 'real'.
The run names the cosine evaluators (`config_utils.default_evals(real=True)`):
the periodic cosine mAP selects the checkpoint on the validation split, and
the final report holds the cosine suite and the Hamming suite of the sign()
codes of the same embeddings in one table.
"""
import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import conftest

from crossmodal_hash import config_utils
from crossmodal_hash import encoding
from crossmodal_hash import evaluate
from crossmodal_hash import logging_utils
from crossmodal_hash import run_artifacts
from crossmodal_hash.data import builtin
from crossmodal_hash.evaluation import metrics
from crossmodal_hash.evaluation import report
from crossmodal_hash.methods import base
from crossmodal_hash.retrieval import index as index_lib
from crossmodal_hash.methods import registry
from crossmodal_hash.trainers import evaluation_hooks
from crossmodal_hash.trainers import evaluators
from crossmodal_hash.trainers import per_step

NAME = 'linear_projector_test'
DIM = 12


@registry.METHODS.register(NAME)
class LinearProjector:
  """x -> Dense(D) per modality; a shared Dense(L) label classifier on the
  common space (sigmoid cross-entropy against the multi-hot labels). Each
  step writes its image embeddings to a memory no loss reads, as SSAL and
  SCAHN stash theirs: left out of every checkpoint, the best one too."""

  trainer = 'per_step'
  resumable_keys = ()
  outputs = {'img': 'real', 'txt': 'real'}
  unsaved_memories = ('step_emb',)

  def __init__(self, config, *, num_labels, text_dim):
    del text_dim
    hp = config[NAME]
    self.num_steps = hp.num_steps
    self.batch_size = config.train.batch_size
    self.nets = {m: nn.Dense(DIM) for m in ('img', 'txt')}
    self.classifier = nn.Dense(num_labels)
    self.optimizer = base.make_optimizer(hp.optimizer,
                                         num_steps=hp.num_steps)
    self.updates = {'projector': self.step}
    self.inputs = {'projector': ('label', 'image', 'text')}

  def init(self, rng, data):
    keys = jax.random.split(rng, 3)
    params = {m: self.nets[m].init(k, jnp.zeros((1,) + data[f].shape[1:]))[
        'params'] for (m, f), k in zip((('img', 'image'), ('txt', 'text')),
                                       keys)}
    params['cls'] = self.classifier.init(keys[2], jnp.zeros((1, DIM)))[
        'params']
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state={'all': self.optimizer.init(params)},
                           memory={'step_emb': jnp.zeros((self.batch_size,
                                                          DIM))},
                           rng=jax.random.fold_in(rng, 1))

  def step(self, state, batch, data, step):
    del data, step
    labels = batch['label'].astype(jnp.float32)

    def loss_fn(params):
      total, embeddings = 0.0, {}
      for m, field in (('img', 'image'), ('txt', 'text')):
        emb = embeddings[m] = self.nets[m].apply(
            {'params': params[m]}, batch[field].astype(jnp.float32))
        logits = self.classifier.apply({'params': params['cls']}, emb)
        total += optax.sigmoid_binary_cross_entropy(logits, labels).mean()
      return total, embeddings['img']

    (loss, emb), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    params, opt = base.apply_optimizer(self.optimizer, grads,
                                       state.opt_state['all'], state.params)
    return state.replace(step=state.step + 1, params=params,
                         opt_state={'all': opt},
                         memory={'step_emb': emb}), {'loss': loss}

  def encode(self, params, modality, inputs):
    return self.nets[modality].apply({'params': params[modality]},
                                     inputs.astype(jnp.float32))


def _config(*extra):
  config = ml_collections.ConfigDict()
  config.method = NAME
  config.seed = 0
  config.bits = DIM
  config.dataset = builtin.synthetic_dataset_config(
      'synthetic_features', num_items=400, num_query=64, num_train=128)
  config.dataset.num_val = 32  # The periodic evaluation selects on these.
  config.dataset.num_labels = 8
  config.dataset.vocab_size = 200
  config.dataset.feature_dim = 24
  config.model = ml_collections.ConfigDict()
  config.model.image_encoder = 'feature_mlp'
  config.model.image_normalization = 'standardize'
  hp = config[NAME] = ml_collections.ConfigDict()
  hp.num_steps = 8
  hp.optimizer = base.optimizer_config(name='adam', learning_rate=1e-2)
  config_utils.add_run_defaults(config, checkpoint_every_passes=1)
  per_step.add_defaults(config, checkpoint_every_steps=4, log_every_steps=4)
  config.evals = config_utils.default_evals(real=True)
  config.train.batch_size = 32
  config.train.checkpoint_every_seconds = 0
  config.train.progress = False
  config.eval.batch_size = 64
  config.eval.plots = False
  config.eval.random_baseline = False
  config.eval.top_k = (10, 50)
  config.eval.precision_at = (1, 10, 100)
  config.eval.ndcg_k = (10,)
  return config_utils.apply_arg(config, ','.join(extra))


def _records(workdir):
  return logging_utils.read_metrics(os.path.join(workdir, 'metrics.jsonl'))


def test_the_binary_evaluators_refuse_real_outputs_and_name_the_cosine_ones():
  config = _config()
  with config.unlocked():
    config.evals = config_utils.default_evals()
  with pytest.raises(ValueError, match='periodic_cosine_map and '
                     'final_cosine_report'):
    evaluators.from_config(config, LinearProjector(config, num_labels=8,
                                                   text_dim=200))


def test_a_real_valued_run_selects_by_cosine_map_and_reports_both_tables(
    tmp_path):
  """A run with periodic cosine mAP on the validation split, killed and
  resumed: the same state and report as straight; the report's cosine mAP is
  the suite's on the saved embeddings, and its sign-code mAP the Hamming
  suite's on the saved codes."""
  config = _config('eval.every_steps=4')
  workdir = str(tmp_path / 'a')
  with config.unlocked():
    config.eval.plots = True
  results = per_step.train_and_evaluate(config, workdir)
  maps = [r for r in _records(workdir) if 'eval_map' in r]
  assert [r['step_index'] for r in maps] == [3, 7]
  assert all(set(r['eval_map']) == {'i2t', 't2i', 'i2i', 't2t'} for r in maps)
  assert results['similarity'] == 'cosine' and results['bits'] == DIM
  # Model selection by the validation split's cosine mAP.
  assert all(r['query_set'] == 'validation' for r in maps)
  assert [r['best'] for r in maps][0] is True
  selected = results['selected_checkpoint']
  assert selected['checkpoint'] == 'best'
  best = max(maps, key=lambda r: r['eval_map']['i2t'] + r['eval_map']['t2i'])
  assert selected['val_map'] == best['eval_map']
  assert results['query_set'] == 'test'
  eval_dir = os.path.join(workdir, 'eval')
  embeddings = report.load_codes(os.path.join(eval_dir, 'embeddings.npz'))
  codes = report.load_codes(os.path.join(eval_dir, 'codes.npz'))
  assert set(embeddings) == set(codes) == {
      'image_query', 'text_query', 'image_db', 'text_db', 'query_labels',
      'retrieval_labels'}
  assert embeddings['image_query'].dtype == np.float32
  assert embeddings['image_query'].shape[1] == DIM
  np.testing.assert_array_equal(
      codes['text_db'], np.where(embeddings['text_db'] >= 0, 1, -1))
  labels = embeddings['query_labels'], embeddings['retrieval_labels']
  cosine = metrics.evaluate_cosine(embeddings['image_query'],
                                   embeddings['text_db'], *labels)
  hamming = metrics.evaluate_hamming(codes['image_query'], codes['text_db'],
                                     *labels)
  assert results['map']['i2t'] == cosine['map']['index']
  assert results['sign_map']['i2t'] == hamming['map']['index']
  table = results['table']
  assert f'{DIM}-d real embeddings, cosine' in table
  assert f'sign codes ({DIM} bits)' in table
  written = report.read_json(os.path.join(eval_dir, 'evaluation.json'))
  assert 'pr_radius' not in written['sets'][
      f'{NAME.upper()} ({DIM}-d, cosine)']['directions']['i2t']
  # The plots draw the cosine set too (its PR curve over the top N).
  for name in ('examples.png', 'pr_curves.png', 'precision_at_n.png',
               'map.png', 'training_curves.png'):
    assert os.path.getsize(os.path.join(eval_dir, name)) > 0
  assert written['sets'][f'{NAME.upper()} ({DIM}-d, cosine)']['directions'][
      'i2t']['recall_at_n']['n'] == [1, 10, 100]
  # The user path: the evaluate command line ranks embeddings.npz by cosine
  # (codes.npz by Hamming); encode writes a cosine index of the embeddings
  # (tests/real_search_test.py goes on to search and serve).
  assert evaluate.main(['--codes', eval_dir, '--no_plots',
                        '--out', str(tmp_path / 'cli')]) == 0
  cli = report.read_json(str(tmp_path / 'cli' / 'evaluation.json'))
  assert cli['map'][f'embeddings ({DIM}-d, cosine)'] == results['map']
  assert cli['map'][f'codes ({DIM} bits)'] == results['sign_map']
  run = run_artifacts.load_run(workdir)
  [path] = encoding.write(run, str(tmp_path / 'index'),
                          encoding.run_dataset_items(run.info, 'retrieval',
                                                     workdir),
                          ['image']).values()
  index = index_lib.load(path)
  assert index.kind == 'cosine' and index.dim == DIM
  # Killed after step 6 (the last checkpoint at step 4) and resumed.
  with config.unlocked():
    config.eval.plots = False
  other = str(tmp_path / 'b')
  assert per_step.train_and_evaluate(config, other, stop_after_steps=6) == {
      'stopped_at_step': 6}
  resumed = per_step.train_and_evaluate(config, other)
  chex.assert_trees_all_equal(conftest.latest_checkpoint(workdir)[1],
                              conftest.latest_checkpoint(other)[1])
  assert resumed['map'] == results['map']
  assert resumed['sign_map'] == results['sign_map']
  eval_maps = lambda w: [r['eval_map'] for r in _records(w) if 'eval_map' in r]
  assert eval_maps(workdir) == eval_maps(other)


def test_encoding_gives_float32_embeddings_and_sign_codes_are_int8():
  x = np.array([[0.5, -0.0, -2.0]], np.float32)
  np.testing.assert_array_equal(evaluation_hooks.sign_codes(x), [[1, 1, -1]])
  assert evaluation_hooks.sign_codes(x).dtype == np.int8
  assert evaluation_hooks.output_kind(LinearProjector) == 'real'

  class Mixed:
    outputs = {'img': 'real', 'txt': 'binary'}

  with pytest.raises(ValueError, match='for both modalities'):
    evaluation_hooks.output_kind(Mixed())
