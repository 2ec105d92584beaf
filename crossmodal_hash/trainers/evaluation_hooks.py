"""Evaluation of a trainer's state: encoding, periodic mAP, the final report.

Both evaluations encode the query set and the retrieval (database) set with
the current params, image and text side, in batches split over the mesh:
pixels or lazy images are read one batch at a time (a lazy HDF5 dataset is
never read whole). Neither touches the training state or any PRNG key, so
evaluating during training cannot change what training computes.

* `periodic_map`: mAP@all of I->T, T->I, I->I and T->T with index-order ties
  (no other metric), for `config.eval.every_passes`.
* `final_evaluation`: the full suite (`evaluation/suite.py`) on the trained
  codes and, with `config.eval.random_baseline`, on random codes of the same
  length; writes to `<workdir>/eval/`:
    evaluation.json     every metric of every direction, the options, the
                        definitions (tie and empty-query policies stated)
    pr_curves.png, precision_at_n.png, map.png, examples.png (queries and
                        their top 10, relevant or not)   (with `config.eval.plots`)
    training_curves.png                 loss (and periodic mAP) per step
    codes.npz           the trained ±1 codes and labels (the input of
                        `python -m crossmodal_hash.evaluate --codes`)
    random_codes.npz    the random baseline's codes, likewise
    map.json            the headline mAP@all table of both code sets

A method whose `outputs` are 'real' (`methods/base.py`) is encoded to float32
embeddings and ranked by cosine similarity (`evaluation/cosine.py`, streamed
over the database), with the same metrics but the radius curve. Its final
report also holds, with `config.eval.sign_codes`, the Hamming suite of the
sign() codes of the same embeddings, so that one table compares it with the
hashing methods; it writes
    embeddings.npz      the float32 embeddings and labels, with the keys and
                        layout of codes.npz
    codes.npz           the sign() codes (with `config.eval.sign_codes`)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from crossmodal_hash import sharding
from crossmodal_hash.data import preprocess
from crossmodal_hash.data import types
from crossmodal_hash.evaluation import code_stats
from crossmodal_hash.evaluation import ranking
from crossmodal_hash.evaluation import report
from crossmodal_hash.evaluation import suite
from crossmodal_hash.methods import base

EVAL_DIR = 'eval'
MAP_NAME = 'map.json'
CODES_NAME = 'codes.npz'
RANDOM_CODES_NAME = 'random_codes.npz'
EMBEDDINGS_NAME = 'embeddings.npz'
CURVES_NAME = 'training_curves.png'
EXAMPLES_NAME = 'examples.png'

ImageStats = tuple[np.ndarray, np.ndarray]


def output_kind(method: Any) -> str:
  """'binary' (±1 codes, Hamming ranking) or 'real' (embeddings, cosine).

  Raises:
    ValueError: the method's two modalities give different kinds (nothing
      ranks one kind against the other).
  """
  kinds = set(base.outputs(method).values())
  if len(kinds) != 1 or not kinds <= set(base.OUTPUT_KINDS):
    raise ValueError(f'{type(method).__name__}.outputs must give one of '
                     f'{base.OUTPUT_KINDS} for both modalities; got '
                     f'{base.outputs(method)}.')
  return kinds.pop()


def sign_codes(x: np.ndarray) -> np.ndarray:
  """[M, D] real -> [M, D] int8 in {-1, +1}: +1 where x >= 0 (as
  `models.hashing_net.binarize`)."""
  return np.where(np.asarray(x) >= 0, 1, -1).astype(np.int8)


def make_encode_fn(method: base.Method, modality: str,
                   mesh: jax.sharding.Mesh):
  """jit(params, x [B, ...], image_stats) -> [B, K] outputs, batch-sharded.

  The params keep the placement they come with (a run's state: the wide
  layers split over `model` by the logical axis rules; host arrays:
  replicated), so no in_shardings: a fixed one would reject the other.
  """
  batch = sharding.batch_sharded(mesh)

  def encode_batch(params, x, stats):
    x = jax.lax.with_sharding_constraint(x, batch)
    if modality == 'img':
      x = preprocess.normalize(x, *stats)
    return method.encode(params, modality, x)

  return jax.jit(encode_batch, out_shardings=batch)


def _local_block(inputs: Any, rows: np.ndarray, start: int,
                 batch_size: int) -> np.ndarray:
  """This process's part of global batch [start, start + batch_size) of rows.

  Only these items are read (a lazy array reads just them; a NumPy array
  copies just them); positions past the end are zero padding.

  Returns:
    [batch_size / process_count, ...] host array.
  """
  local = batch_size // jax.process_count()
  first = start + jax.process_index() * local
  block = np.asarray(inputs[rows[first:first + local]])
  if len(block) < local:
    pad = np.zeros((local - len(block),) + tuple(inputs.shape[1:]),
                   np.dtype(inputs.dtype))
    block = np.concatenate([block.reshape((-1,) + pad.shape[1:]), pad])
  return block


def encode(method: base.Method, params: Any, modality: str, inputs: Any, *,
           batch_size: int, mesh: jax.sharding.Mesh,
           rows: np.ndarray | None = None,
           image_stats: ImageStats | None = None, encode_fn=None
          ) -> np.ndarray:
  """Codes of rows `rows` of `inputs`, in batches split over the mesh.

  Args:
    method: the trained method.
    params: its params (as the state places them, or host arrays).
    modality: 'img', 'txt' or 'lab'.
    inputs: [N, ...] host array or lazy array (`data.lazy.LazyArray`); raw
      pixels/features for 'img'. Read one batch at a time.
    batch_size: global batch; the last one is padded and the padding dropped.
    mesh: the mesh.
    rows: [M] int, the rows to encode, in that order (default: all N).
    image_stats: (mean, inv_scale) for 'img'.
    encode_fn: `make_encode_fn(method, modality, mesh)`, to reuse its jit.

  Returns:
    [M, K] int8 codes in {-1, +1}, or [M, D] float32 embeddings for a
    method whose `outputs` are 'real'.
  """
  dtype = np.float32 if output_kind(method) == 'real' else np.int8
  fn = encode_fn or make_encode_fn(method, modality, mesh)
  if image_stats is None:
    image_stats = (np.zeros((), np.float32), np.ones((), np.float32))
  rows = np.arange(len(inputs)) if rows is None else np.asarray(rows)
  out = []
  for start in range(0, len(rows), batch_size):
    x = sharding.host_to_global(_local_block(inputs, rows, start, batch_size),
                                mesh)
    codes = multihost_utils.process_allgather(fn(params, x, image_stats),
                                              tiled=True)
    out.append(np.asarray(codes)[:len(rows) - start])
  return np.concatenate(out).astype(dtype)


@dataclasses.dataclass
class Evaluator:
  """Encodes a set of queries and a database with given params.

  Items are read from `data` a batch at a time (the sets are not copied).
  `for_split` builds the two a run evaluates: the protocol's test queries
  against its retrieval set, and the validation queries against the
  validation database (the training items).

  Attributes:
    method: the method (its `encode`).
    data: the dataset (images may be lazy).
    query: [Q] int rows of `data`, the queries.
    retrieval: [N] int rows of `data`, the database they are ranked against.
    mesh: the mesh.
    batch_size: `config.eval.batch_size`.
    image_stats: the training set's (mean, inv_scale).
    name: 'test' or 'validation', for the report.
  """
  method: base.Method
  data: types.MultiModalData
  query: np.ndarray
  retrieval: np.ndarray
  mesh: jax.sharding.Mesh
  batch_size: int
  image_stats: ImageStats
  name: str = 'test'

  def __post_init__(self):
    # The modalities the method encodes (both, or e.g. SSAH's text side
    # alone): the suite evaluates the directions their codes allow.
    self.modalities = tuple(m for m in ('img', 'txt')
                            if m in base.outputs(self.method))
    self._fns = {m: make_encode_fn(self.method, m, self.mesh)
                 for m in self.modalities}
    self.query_labels = self.data.labels[self.query]
    self.db_labels = self.data.labels[self.retrieval]

  @classmethod
  def for_split(cls, split: types.Split, **kwargs
               ) -> dict[str, 'Evaluator']:
    """{'test': query vs retrieval, 'validation': val vs train}, the sets
    that are not empty (kwargs: every other field but `name`)."""
    sets = {'test': (split.query, split.retrieval),
            'validation': (split.val, split.train)}
    return {name: cls(query=q, retrieval=r, name=name, **kwargs)
            for name, (q, r) in sets.items() if len(q)}

  def codes(self, params: Any) -> dict[str, np.ndarray]:
    """{'image_query', 'text_query' [Q, K]; 'image_db', 'text_db' [N, K]}
    (the 'text_' ones alone for a method that encodes texts only).

    All int8 in {-1, +1}, or float32 embeddings (K = D) for a method whose
    outputs are 'real'; `params` is only read.
    """
    out = {}
    names = {'img': 'image', 'txt': 'text'}
    for side, rows in (('query', self.query), ('db', self.retrieval)):
      fields = base.encode_fields(self.method)
      for modality in self.modalities:
        name = names[modality]
        inputs = self.data.field(fields[modality])
        out[f'{name}_{side}'] = encode(
            self.method, params, modality, inputs, rows=rows,
            batch_size=self.batch_size, mesh=self.mesh,
            image_stats=self.image_stats, encode_fn=self._fns[modality])
    return out


def periodic_options(eval_config: ml_collections.ConfigDict
                    ) -> ranking.EvalOptions:
  """mAP@all only, index-order ties, the config's empty-query policy."""
  full = suite.options_from_config(eval_config)
  return ranking.EvalOptions(
      ties=('index',), empty=full.empty, top_k=(), precision_at=(), ndcg_k=(),
      radius_curve=False, query_block=full.query_block,
      db_block=full.db_block, num_threads=full.num_threads)


def periodic_map(evaluator: Evaluator, params: Any,
                 eval_config: ml_collections.ConfigDict) -> dict[str, float]:
  """{direction: mAP@all} for i2t, t2i, i2i, t2t (index-order ties)."""
  return periodic_evaluation(evaluator, params, eval_config)[0]


def periodic_evaluation(evaluator: Evaluator, params: Any,
                        eval_config: ml_collections.ConfigDict
                       ) -> tuple[dict[str, float], dict[str, Any]]:
  """(`periodic_map`'s mAPs, {array: `code_stats.summary`}); warns (absl) if
  the codes have collapsed.

  For real-valued outputs the mAPs are of the cosine ranking, and the code
  statistics are those of their sign() codes.
  """
  outputs = evaluator.codes(params)
  real = output_kind(evaluator.method) == 'real'
  result = suite.evaluate_set(outputs, evaluator.query_labels,
                              evaluator.db_labels,
                              options=periodic_options(eval_config),
                              similarity='cosine' if real else 'hamming')
  maps = {d: float(r['map']['index']) for d, r in result['directions'].items()}
  stats = (code_stats.describe_set({k: sign_codes(v) for k, v in
                                    outputs.items()}) if real else
           result['code_stats'])
  return maps, code_stats.periodic_summary(stats)


def random_codes(like: dict[str, np.ndarray], seed: int
                ) -> dict[str, np.ndarray]:
  """Uniform random ±1 codes shaped like `like` (NumPy RNG, not JAX's)."""
  rng = np.random.default_rng(seed)
  return {k: sign_codes(rng.standard_normal(v.shape)) for k, v in like.items()}


def final_evaluation(evaluator: Evaluator, params: Any,
                     config: ml_collections.ConfigDict, workdir: str, *,
                     metadata: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
  """The end-of-training report; writes `<workdir>/eval/` on process 0.

  Args:
    evaluator: encodes the split's query and retrieval sets.
    params: the trained params.
    config: the run config (`method`, `bits`, `seed`, `eval`).
    workdir: the run's directory (its metrics.jsonl is plotted).
    metadata: extra JSON-able entries for evaluation.json.

  Returns:
    {'map': {direction: mAP@all} of the trained codes (cosine mAP of
    real-valued outputs), 'sign_map' (real outputs with
    `config.eval.sign_codes`: the Hamming mAP of their sign() codes),
    'random_map' (with `config.eval.random_baseline`), 'table': the printed
    table (the headline mAP@all rows, then every metric of each code set),
    'bits' (the embedding size D of real outputs), 'similarity' ('hamming' or
    'cosine'), 'num_query', 'num_retrieval', 'evaluation': the suite's full
    results}.
  """
  options = suite.options_from_config(config.eval)
  codes = evaluator.codes(params)
  real = output_kind(evaluator.method) == 'real'
  bits = int(codes['image_query'].shape[1]) if real else config.bits
  method = config.method.upper()
  random_name = f'random codes ({bits} bits)'
  if real:
    name = f'{method} ({bits}-d, cosine)'
    sign_name = f'{method} sign codes ({bits} bits)'
    code_sets = {name: codes}
    if config.eval.get('sign_codes', True):
      code_sets[sign_name] = {k: sign_codes(v) for k, v in codes.items()}
  else:
    name = sign_name = f'{method} ({bits} bits)'
    code_sets = {name: codes}
  if config.eval.random_baseline:
    code_sets[random_name] = random_codes(codes, config.seed)
  out = os.path.join(workdir, EVAL_DIR)
  writer = jax.process_index() == 0
  evaluation = suite.evaluate_codes(
      code_sets, evaluator.query_labels, evaluator.db_labels, options=options,
      out_dir=out if writer else None, plots=config.eval.plots,
      metadata=metadata, similarities={name: 'cosine'} if real else None)
  results = {
      'map': evaluation['map'][name],
      'bits': bits,
      'similarity': 'cosine' if real else 'hamming',
      'query_set': evaluator.name,
      'num_query': len(evaluator.query),
      'num_retrieval': len(evaluator.retrieval),
      'relevance': 'shares at least one label',
      'ties': evaluation['headline']['ties'],
      'empty': evaluation['headline']['empty'],
  }
  if real and sign_name in code_sets:
    results['sign_map'] = evaluation['map'][sign_name]
  if config.eval.random_baseline:
    results['random_map'] = evaluation['map'][random_name]
  results['table'] = evaluation['table']
  if writer:
    _write_outputs(out, results, code_sets, name, sign_name, random_name,
                   evaluator, workdir, config.eval.plots)
    if config.eval.plots:  # eval/examples.png: queries and their top 10.
      from crossmodal_hash.evaluation import examples  # pylint: disable=g-import-not-at-top
      examples.write_report_examples(os.path.join(out, EXAMPLES_NAME), codes,
                                     evaluator, config.dataset,
                                     similarity=results['similarity'])
  results['evaluation'] = evaluation
  return results


def _write_outputs(out: str, results: dict[str, Any],
                   code_sets: dict[str, dict[str, np.ndarray]], name: str,
                   sign_name: str, random_name: str, evaluator: Evaluator,
                   workdir: str, plots: bool) -> None:
  """map.json, the codes (embeddings) files and the training curves
  (process 0)."""
  report.write_json(os.path.join(out, MAP_NAME),
                    dict(results, report=suite.REPORT_NAME))
  labels = dict(query_labels=evaluator.query_labels,
                retrieval_labels=evaluator.db_labels)
  if results['similarity'] == 'cosine':
    report.save_embeddings(os.path.join(out, EMBEDDINGS_NAME),
                           **code_sets[name], **labels)
  if sign_name in code_sets:
    report.save_codes(os.path.join(out, CODES_NAME), **code_sets[sign_name],
                      **labels)
  if random_name in code_sets:
    report.save_codes(os.path.join(out, RANDOM_CODES_NAME),
                      **code_sets[random_name], **labels)
  if plots:
    # Imported here: matplotlib is only needed when plotting.
    from crossmodal_hash.evaluation import plots as plots_lib  # pylint: disable=g-import-not-at-top
    plots_lib.plot_training_curves(os.path.join(workdir, 'metrics.jsonl'),
                                   os.path.join(out, CURVES_NAME))


def map_record(pass_index: int, step: int, maps: dict[str, float],
               codes: dict[str, Any] | None = None) -> dict[str, Any]:
  """The metrics.jsonl record of a periodic evaluation.

  {'pass', 'step', 'eval_map': {direction: mAP}} plus flat 'map/<direction>'
  entries, which `plots.plot_training_curves` draws against the step, and
  'code_stats' {array: diagnostics} when `codes` is given.
  """
  return {'pass': pass_index, 'step': step, 'eval_map': dict(maps),
          **{f'map/{d}': v for d, v in maps.items()},
          **({'code_stats': codes} if codes is not None else {})}

