r"""A cross-modal search service over a run's index files (FastAPI + uvicorn).

  python -m crossmodal_hash.serve --workdir=runs/ssah_synthetic \
      --index=runs/ssah_synthetic/index --port=8000

then open http://127.0.0.1:8000/ : type tags (or drop an image) and see the
retrieved items with their Hamming distances and labels. A run of
real-valued embeddings (SSAL, MHTN) is served the same way from its cosine
index: each result has a 'similarity' (cosine) in place of the 'distance';
from an index written with `encode --sign_codes` it is searched by the
Hamming distance of the sign() codes instead.

Endpoints:

    GET  /                                   the web page
    GET  /health                             status, run, index sizes and
                                             kind ('ranking': hamming or
                                             cosine, 'dim': bits or D)
    GET  /api/search?text=red_disc&k=10      text query (also &intra=true)
    POST /api/search    {"text": ..., "k": 10, "intra": false}
    POST /api/search/image   multipart: image=<file>, k=10, intra=false
    GET  /api/items/{modality}/{i}           item i's record (id, labels, tags)
    GET  /api/items/{modality}/{i}/image     item i's image as PNG (404 if the
                                             item has no pixels)

Concurrent queries are batched: a request waits at most `--max_wait_ms` for
others (up to `--max_batch`), then each group of the same query modality and
searched index is encoded in one jitted call and searched in one jitted call
against the database, which stays on the devices. Batches are padded to a
few fixed sizes, compiled at start-up, so no request waits for a compile.

Bad input is answered with a 4xx and a message, and the server goes on:
empty text, only unknown tags, an image that does not decode or is larger
than `--max_image_bytes`, k <= 0 or k > `--max_k`, a malformed body (422).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import threading
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import fastapi
from fastapi import responses
import numpy as np
import PIL.Image
import pydantic
import uvicorn

from crossmodal_hash import encoding
from crossmodal_hash import engine as engine_lib
from crossmodal_hash import logging_utils
from crossmodal_hash import run_artifacts
from crossmodal_hash import serve_page
from crossmodal_hash.data import formats
from crossmodal_hash.data import registry as data_registry



@dataclasses.dataclass(frozen=True)
class Limits:
  """Service limits.

  Attributes:
    max_k: the largest k a query may ask for (searches run at this k).
    max_batch: queries per batch at most.
    max_wait_ms: how long the first query of a batch waits for others.
    max_image_bytes: the largest accepted image upload.
  """
  max_k: int = 100
  max_batch: int = 64
  max_wait_ms: float = 5.0
  max_image_bytes: int = 8 << 20


def bucket_sizes(max_batch: int, multiple: int) -> list[int]:
  """Padded batch sizes: multiple * 2^i up to (at least) max_batch."""
  sizes, size = [], max(1, multiple)
  while True:
    sizes.append(size)
    if size >= max_batch:
      return sizes
    size *= 2


@dataclasses.dataclass
class _Pending:
  modality: str
  target: str
  row: np.ndarray
  future: asyncio.Future


class Batcher:
  """Collects concurrent queries and answers them in batches.

  One worker task takes the first waiting query, waits up to `max_wait_ms`
  for more (at most `max_batch`), and per (query modality, searched index)
  pads the group to a bucket size and runs one encode and one search call in
  a worker thread, so the event loop keeps accepting requests.
  """

  def __init__(self, engine: engine_lib.Engine, limits: Limits):
    self.engine = engine
    self.limits = limits
    self.buckets = bucket_sizes(limits.max_batch, engine.batch_multiple)
    self.batches = 0
    self.queries = 0
    self._queue: asyncio.Queue | None = None
    self._task: asyncio.Task | None = None

  def warm_up(self) -> None:
    """Compiles every (modality, bucket) once, before serving."""
    for modality in ('text', 'image'):
      if engine_lib.OTHER[modality] not in self.engine.indexes and (
          modality not in self.engine.indexes):
        continue
      row = self._zero_row(modality)
      if row is None:
        continue
      targets = {t for t in (engine_lib.OTHER[modality], modality)
                 if t in self.engine.indexes}
      for size in self.buckets:
        codes = self.engine.encode(modality, np.repeat(row[None], size, 0))
        for target in targets:
          self.engine.search(codes, target, self.limits.max_k)

  def _zero_row(self, modality: str) -> np.ndarray | None:
    info = self.engine.info
    if modality == 'text':
      return (np.zeros(info.text_dim, np.dtype(info.text_dtype))
              if info.vocabulary is not None else None)
    if len(info.image_shape) != 3:
      return None
    return np.zeros(info.image_shape, np.uint8)

  def start(self) -> None:
    self._queue = asyncio.Queue()
    self._task = asyncio.get_running_loop().create_task(self._worker())

  async def stop(self) -> None:
    if self._task is not None:
      self._task.cancel()

  async def submit(self, modality: str, target: str,
                   row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices [max_k], distances or similarities [max_k]) of one query."""
    future = asyncio.get_running_loop().create_future()
    await self._queue.put(_Pending(modality, target, row, future))
    return await future

  async def _worker(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      batch = [await self._queue.get()]
      deadline = loop.time() + self.limits.max_wait_ms / 1000
      while len(batch) < self.limits.max_batch:
        timeout = deadline - loop.time()
        if timeout <= 0:
          break
        try:
          batch.append(await asyncio.wait_for(self._queue.get(), timeout))
        except asyncio.TimeoutError:
          break
      groups: dict[tuple[str, str], list[_Pending]] = {}
      for p in batch:
        groups.setdefault((p.modality, p.target), []).append(p)
      for (modality, target), group in groups.items():
        try:
          indices, distances = await loop.run_in_executor(
              None, self._run, modality, target, [p.row for p in group])
        except Exception as e:  # pylint: disable=broad-except
          for p in group:
            if not p.future.done():
              p.future.set_exception(e)
          continue
        for j, p in enumerate(group):
          if not p.future.done():
            p.future.set_result((indices[j], distances[j]))
      self.batches += 1
      self.queries += len(batch)

  def _run(self, modality: str, target: str, rows: list[np.ndarray]):
    n = len(rows)
    size = next(b for b in self.buckets if b >= n)
    inputs = np.stack(rows + [np.zeros_like(rows[0])] * (size - n))
    codes = self.engine.encode(modality, inputs)
    indices, distances = self.engine.search(codes, target, self.limits.max_k)
    return indices[:n], distances[:n]


class _ItemImages:
  """Pixels of indexed items: rows of the run's dataset, dataset files, or
  image files (see `encoding.Items.records`)."""

  def __init__(self, info: run_artifacts.RunInfo):
    self._info = info
    self._datasets: dict[Any, Any] = {}
    self._lock = threading.Lock()

  def _dataset(self, key, load):
    with self._lock:
      if key not in self._datasets:
        self._datasets[key] = load()
      return self._datasets[key]

  def png(self, record: dict[str, Any]) -> bytes | None:
    place = record.get('image') or {}
    if 'file' in place:
      with PIL.Image.open(place['file']) as image:
        pixels = np.asarray(image.convert('RGB'))
    elif 'run_row' in place:
      data = self._dataset('run', lambda: data_registry.DATASETS.get(
          self._info.config.dataset.name)(self._info.config.dataset))
      pixels = np.asarray(data.images[place['run_row']:place['run_row'] + 1])[0]
    elif 'data' in place:
      source = place['data']
      data = self._dataset(
          (source['path'], source['format']),
          lambda: formats.load(source['path'], source['format'],
                               encoding.read_options(source['options'])))
      pixels = np.asarray(data.images[place['row']:place['row'] + 1])[0]
    else:
      return None
    if pixels.ndim != 3 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
      return None  # Features or clips: nothing to show.
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format='PNG')
    return buffer.getvalue()


class SearchBody(pydantic.BaseModel):
  text: str
  k: int = 10
  intra: bool = False


def create_app(engine: engine_lib.Engine, limits: Limits = Limits(), *,
               warm_up: bool = True) -> fastapi.FastAPI:
  """The FastAPI application (see the module docstring)."""
  batcher = Batcher(engine, limits)
  if warm_up:
    tic = time.perf_counter()
    batcher.warm_up()
    logging.info('Compiled %d batch sizes in %.1f s.', len(batcher.buckets),
                 time.perf_counter() - tic)
  images = _ItemImages(engine.info)

  @contextlib.asynccontextmanager
  async def lifespan(_):
    batcher.start()
    yield
    await batcher.stop()

  api = fastapi.FastAPI(title='crossmodal_hash search', lifespan=lifespan)
  api.state.batcher = batcher

  def check_k(k: int) -> None:
    if not 1 <= k <= limits.max_k:
      raise fastapi.HTTPException(
          422, f'k={k} is out of range: ask for 1 to {limits.max_k} results.')

  async def answer(modality: str, row: np.ndarray, query: str, k: int,
                   intra: bool) -> dict[str, Any]:
    try:
      target = engine.target(modality, intra)
    except engine_lib.QueryError as e:
      raise fastapi.HTTPException(400, str(e)) from e
    indices, distances = await batcher.submit(modality, target, row)
    return {'query': query, 'modality': modality, 'searched': target,
            'ranking': engine.kind, 'k': k,
            'unknown_tags': (engine.unknown_tags(query)
                             if modality == 'text' else []),
            'results': engine.results(target, indices[:k], distances[:k])}

  async def text_search(text: str, k: int, intra: bool) -> dict[str, Any]:
    check_k(k)
    try:
      row = engine.text_inputs([text])[0]
    except engine_lib.QueryError as e:
      raise fastapi.HTTPException(400, str(e)) from e
    return await answer('text', row, text, k, intra)

  @api.exception_handler(engine_lib.QueryError)
  async def _query_error(_, e):
    return responses.JSONResponse({'detail': str(e)}, status_code=400)

  @api.get('/', response_class=responses.HTMLResponse)
  async def page():
    return serve_page.HTML

  @api.get('/health')
  async def health():
    return {'status': 'ok', 'workdir': os.path.abspath(engine.run.workdir),
            'method': engine.info.config.method,
            'bits': int(engine.info.config.bits),
            'ranking': engine.kind, 'dim': engine.dim,
            'checkpoint': engine.run.checkpoint, 'step': engine.run.step,
            'indexes': {m: len(i) for m, i in engine.indexes.items()},
            'max_k': limits.max_k, 'batches': batcher.batches,
            'queries': batcher.queries,
            'example_tags': (engine.info.label_names or [])[:8]}

  @api.get('/api/search')
  async def search_get(text: str = '', k: int = 10, intra: bool = False):
    return await text_search(text, k, intra)

  @api.post('/api/search')
  async def search_post(body: SearchBody):
    return await text_search(body.text, body.k, body.intra)

  @api.post('/api/search/image')
  async def search_image(request: fastapi.Request,
                         image: fastapi.UploadFile = fastapi.File(...),
                         k: int = fastapi.Form(10),
                         intra: bool = fastapi.Form(False)):
    check_k(k)
    length = int(request.headers.get('content-length') or 0)
    if length > limits.max_image_bytes + 65536:
      raise fastapi.HTTPException(
          413, f'The upload is {length} bytes; the limit is '
          f'{limits.max_image_bytes} bytes.')
    data = await image.read(limits.max_image_bytes + 1)
    if len(data) > limits.max_image_bytes:
      raise fastapi.HTTPException(
          413, f'The image is larger than the limit of '
          f'{limits.max_image_bytes} bytes.')
    try:
      shape = engine.image_shape()
      row = engine_lib.decode_image_bytes(data, shape,
                                          f'The upload {image.filename!r}')
    except engine_lib.QueryError as e:
      raise fastapi.HTTPException(400, str(e)) from e
    return await answer('image', row, image.filename or 'image', k, intra)

  def record(modality: str, i: int) -> dict[str, Any]:
    if modality not in engine.records:
      raise fastapi.HTTPException(404, f'No {modality} index is loaded.')
    records = engine.records[modality]
    if not 0 <= i < len(records):
      raise fastapi.HTTPException(
          404, f'No {modality} item {i}: the index has {len(records)}.')
    return records[i]

  @api.get('/api/items/{modality}/{i}')
  async def item(modality: str, i: int):
    return dict(record(modality, i), index=i)

  @api.get('/api/items/{modality}/{i}/image')
  async def item_image(modality: str, i: int):
    png = await asyncio.get_running_loop().run_in_executor(
        None, images.png, record(modality, i))
    if png is None:
      raise fastapi.HTTPException(404, f'{modality} item {i} has no pixels '
                                  '(features only).')
    return responses.Response(png, media_type='image/png')

  return api


_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run.')
_INDEX = flags.DEFINE_string('index', None, 'Index directory (default: '
                             '<workdir>/index).')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on.')
_PORT = flags.DEFINE_integer('port', 8000, 'Port.')
_CHECKPOINT = flags.DEFINE_integer('checkpoint', None, 'Checkpoint (default: '
                                   'the selected, else the latest).')
_MAX_K = flags.DEFINE_integer('max_k', Limits.max_k, 'Largest k.')
_MAX_BATCH = flags.DEFINE_integer('max_batch', Limits.max_batch,
                                  'Queries per batch at most.')
_MAX_WAIT = flags.DEFINE_float('max_wait_ms', Limits.max_wait_ms,
                               'Batching wait of the first query (ms).')
_MAX_IMAGE = flags.DEFINE_integer('max_image_bytes', Limits.max_image_bytes,
                                  'Largest image upload (bytes).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging_utils.quiet_library_info()
  run = run_artifacts.load_run(_WORKDIR.value, checkpoint=_CHECKPOINT.value)
  engine = engine_lib.Engine(run, _INDEX.value or
                             os.path.join(_WORKDIR.value, 'index'))
  limits = Limits(max_k=_MAX_K.value, max_batch=_MAX_BATCH.value,
                  max_wait_ms=_MAX_WAIT.value,
                  max_image_bytes=_MAX_IMAGE.value)
  api = create_app(engine, limits)
  print(f'Serving {run.workdir} (checkpoint {run.checkpoint}) on '
        f'http://{_HOST.value}:{_PORT.value}/', flush=True)
  uvicorn.run(api, host=_HOST.value, port=_PORT.value, log_level='warning')


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
