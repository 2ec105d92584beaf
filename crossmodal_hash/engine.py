"""`Engine`: a trained run with its index files, answering queries.

The library behind `search.py` and `serve.py`. Text queries are tags mapped
through the run's vocabulary (case-insensitive; unknown tags are ignored, a
query with none known is refused); image queries are resized to the run's
input size and normalised with its statistics. The search is cross-modal by
default (text -> image index, image -> text index). A run of binary codes is
searched by Hamming distance; a run of real-valued embeddings (SSAL, MHTN) by
cosine similarity, or by the Hamming distance of their sign() codes when its
index was written with `encode --sign_codes`. Bad queries raise
`QueryError`, which the service turns into HTTP 4xx answers.
"""
from __future__ import annotations

import io
import os
from typing import Any, Sequence

import jax
import numpy as np
import PIL.Image

from crossmodal_hash import encoding
from crossmodal_hash import file_io
from crossmodal_hash import run_artifacts
from crossmodal_hash import sharding
from crossmodal_hash.data import text_files
from crossmodal_hash.retrieval import index as index_lib
from crossmodal_hash.trainers import evaluation_hooks

OTHER = {'text': 'image', 'image': 'text'}


class QueryError(ValueError):
  """A query that cannot be answered (the message says why); HTTP 4xx."""


def decode_image_bytes(data: bytes, shape: Sequence[int],
                       origin: str = 'the image') -> np.ndarray:
  """Encoded image bytes (JPEG, PNG, ...) as [H, W, 3] uint8 of `shape`."""
  if not data:
    raise QueryError(f'{origin} is empty.')
  try:
    with PIL.Image.open(io.BytesIO(data)) as image:
      image = image.convert('RGB')
      size = (int(shape[1]), int(shape[0]))
      if image.size != size:
        image = image.resize(size, PIL.Image.BILINEAR)
      return np.asarray(image, np.uint8)
  except (OSError, ValueError, PIL.UnidentifiedImageError,
          PIL.Image.DecompressionBombError) as e:
    raise QueryError(f'{origin} cannot be decoded as an image ({e}).') from e


class Engine:
  """A run with its index files: encodes queries and searches.

  Attributes:
    run: the restored run.
    indexes: {modality: HammingIndex or CosineIndex} of the index files
      found, all of one kind.
    kind: 'hamming' (codes, ranked by Hamming distance; for a run of
      real-valued outputs, the sign() codes written by `encode
      --sign_codes`) or 'cosine' (embeddings, ranked by cosine similarity).
    records: {modality: [N] item records} (`encoding.read_records`).
  """

  def __init__(self, run: run_artifacts.Run, index: str, *,
               mesh: jax.sharding.Mesh | None = None):
    """Loads the index files and checks that `run` made them.

    Args:
      run: from `run_artifacts.load_run`.
      index: a directory of `<modality>.cmhidx` files, or one such file.
      mesh: shard each database over this mesh's 'data' axis (default: the
        run's mesh); the database stays on the devices between searches.
    """
    self.run = run
    mesh = mesh or run.mesh
    self.indexes, self.records = {}, {}
    if file_io.path(index).is_dir():
      paths = {m: encoding.index_path(index, m) for m in encoding.MODALITIES}
      paths = {m: p for m, p in paths.items() if file_io.isfile(p)}
      for m, path in paths.items():
        self.indexes[m] = encoding.load_index(path, run, mesh=mesh)
    elif file_io.isfile(index):
      loaded = encoding.load_index(index, run, mesh=mesh)
      modality = loaded.metadata.get('modality')
      if modality not in encoding.MODALITIES:
        raise index_lib.IndexFileError(f'{index}: no modality in its metadata '
                                       '(not written by encode.py).')
      paths, self.indexes[modality] = {modality: index}, loaded
    else:
      raise FileNotFoundError(f'{index}: no such index file or directory.')
    if not paths:
      raise FileNotFoundError(f'{index}: holds no image.cmhidx or text.cmhidx '
                              '(write them with crossmodal_hash.encode).')
    kinds = {m: i.kind for m, i in self.indexes.items()}
    if len(set(kinds.values())) > 1:
      which = ', '.join(f'{paths[m]} is {k}' for m, k in kinds.items())
      raise index_lib.IndexFileError(
          f'{index}: indexes of two kinds ({which}); encode both modalities '
          'alike (with or without --sign_codes) into one directory.')
    self.kind = next(iter(kinds.values()))
    for m, path in paths.items():
      directory = os.path.dirname(path)
      records = encoding.read_records(encoding.items_path(directory, m))
      if records and len(records) != len(self.indexes[m]):
        raise index_lib.IndexFileError(
            f'{encoding.items_path(directory, m)} has {len(records)} items '
            f'but {path} {len(self.indexes[m])}.')
      self.records[m] = records or [{'id': i} for i in self.indexes[m].ids]
    self._encode_fns = {
        m: evaluation_hooks.make_encode_fn(run.method, code, run.mesh)
        for m, code in encoding.MODALITIES.items()}
    self.batch_multiple = sharding.data_parallel_size(run.mesh)

  @property
  def dim(self) -> int:
    """Bits per code (Hamming) or the embedding size D (cosine)."""
    index = next(iter(self.indexes.values()))
    return index.bits if self.kind == 'hamming' else index.dim

  @property
  def info(self) -> run_artifacts.RunInfo:
    return self.run.info

  def target(self, modality: str, intra: bool = False) -> str:
    """The index a query of `modality` searches (cross-modal by default)."""
    target = modality if intra else OTHER[modality]
    if target not in self.indexes:
      raise QueryError(f'No {target} index was loaded; a {modality} query '
                       f'searches the {target} index'
                       f'{"" if intra else " (cross-modal)"}.')
    return target

  def text_inputs(self, texts: Sequence[str]) -> np.ndarray:
    """Tag strings ([Q]) -> [Q, V] bags of words; QueryError if one is
    empty or has no tag of the vocabulary."""
    vocab = self.info.vocabulary
    if vocab is None:
      raise QueryError('This run has no vocabulary (its texts are features), '
                       'so it cannot take text queries.')
    known = set(vocab)
    for text in texts:
      tags = text.lower().replace(',', ' ').split()
      if not tags:
        raise QueryError('The text query is empty: give one or more tags.')
      if not any(t in known for t in tags):
        raise QueryError(f'None of the tags {tags[:10]} is in the run\'s '
                         f'vocabulary of {len(vocab)} words (e.g. '
                         f'{", ".join(vocab[:3])}).')
    return text_files.bag_of_words(
        [t.replace(',', ' ') for t in texts], vocab)

  def unknown_tags(self, text: str) -> list[str]:
    known = set(self.info.vocabulary or ())
    return [t for t in text.lower().replace(',', ' ').split() if t not in known]

  def image_shape(self) -> tuple[int, ...]:
    shape = self.info.image_shape
    if len(shape) != 3:
      raise QueryError(f'This run encodes images of shape {list(shape)} '
                       '(features or clips), not pictures.')
    return shape

  def encode(self, modality: str, inputs: np.ndarray) -> np.ndarray:
    """What the indexes hold, for raw inputs (padded to the mesh, one jit
    call): [Q, K] int8 ±1 codes (sign() codes of a real-valued run's
    embeddings), or [Q, D] float32 embeddings for a cosine index."""
    n = len(inputs)
    padded = -(-n // self.batch_multiple) * self.batch_multiple
    if padded != n:
      pad = np.zeros((padded - n,) + inputs.shape[1:], inputs.dtype)
      inputs = np.concatenate([inputs, pad])
    x = sharding.host_to_global(inputs, self.run.mesh)
    codes = self._encode_fns[modality](self.run.params, x,
                                       self.info.image_stats)
    return encoding.index_rows(np.asarray(codes)[:n], self.kind)

  def search(self, codes: np.ndarray, target: str, k: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of [Q, K] codes (or [Q, D] embeddings) in the `target` index:
    (indices, Hamming distances or cosine similarities)."""
    return self.indexes[target].search(codes, k)

  def results(self, target: str, indices: np.ndarray,
              scores: np.ndarray) -> list[dict[str, Any]]:
    """One query's ranked items: rank, id, 'distance' (Hamming) or
    'similarity' (cosine), labels, tags."""
    out = []
    records = self.records[target]
    for rank, (i, d) in enumerate(zip(indices, scores), start=1):
      if i < 0:
        break
      record = records[int(i)]
      score = ({'distance': int(d)} if self.kind == 'hamming' else
               {'similarity': float(d)})
      out.append({'rank': rank, 'index': int(i), 'id': record['id'],
                  **score, 'labels': record.get('labels'),
                  'tags': record.get('tags')})
    return out

  def query(self, modality: str, inputs: np.ndarray, *, k: int,
            intra: bool = False) -> list[list[dict[str, Any]]]:
    """Encodes and searches [Q, ...] raw inputs: a ranked list per query."""
    target = self.target(modality, intra)
    indices, distances = self.search(self.encode(modality, inputs), target, k)
    return [self.results(target, i, d) for i, d in zip(indices, distances)]


def format_table(query: str, results: list[dict[str, Any]]) -> str:
  """A printed table of one query's results (Hamming distance 'dist' or
  cosine similarity 'cos')."""
  cosine = bool(results) and 'similarity' in results[0]
  score = f'{"cos":>7}' if cosine else f'{"dist":>4}'
  lines = [f'query: {query}', f'{"rank":>4}  {"id":<24} {score}  '
           'labels | tags']
  for r in results:
    labels = ', '.join(r['labels'] or []) or '-'
    tags = ' '.join((r['tags'] or [])[:8]) or '-'
    value = (f'{r["similarity"]:>7.4f}' if cosine else
             f'{r["distance"]:>4}')
    lines.append(f'{r["rank"]:>4}  {str(r["id"]):<24} {value}  '
                 f'{labels} | {tags}')
  return '\n'.join(lines)
