"""The CPU Hamming kernel: XOR-popcount over tiled codes, compiled by numba.

One distance routine serves two callers on CPU:

* `topk`: exact top-k search, in (distance, database index) order;
* `block_keys`: the evaluation engine's Hamming pass (`evaluation/ranking.py`),
  which needs every distance of a [B, T] block and the label overlap of every
  pair (the same XOR-popcount on packed label words).

Layout (`Tiles`): packed codes `[N, W32]` uint32 (see `packing.py`) are stored
as `[N / TILE, W, TILE]`, word-major inside tiles of `TILE` items, flattened.
Codes of one uint32 word stay uint32 (W = 1); longer codes are read as uint64
words (W = ceil(W32 / 2)), so a 64-bit code is one word. A pass over a tile is
then a unit-stride loop over items that LLVM vectorises: load, XOR, popcount
(VPOPCNTQ/VPOPCNTD where the CPU has AVX-512 VPOPCNTDQ), add across words.

Top-k without touching a histogram per item: each query keeps a running bound
b, the k-th smallest distance seen so far (items are scanned in index order,
so a later item at distance b loses its tie and only d < b can enter). The hot
loop computes the minimum distance of `_SUB` items with vector instructions
and compares it with b; only when it is below b are the items looked at
again: their distances are compared with b 16 at a time into a bit mask
(`_below_mask`: one VPCMPD), and the set bits, the few candidates, are
appended to a per-query buffer, with a histogram over the buffer's distances
that moves b down. On random codes, 1M items, k = 100, a few hundred items
per query enter the buffer. When the database is long, b starts from a
sample: the k_s-th smallest distance of every `_SAMPLE_STEP`-th tile (k_s
about 2 k / `_SAMPLE_STEP`), so the full pass touches about 2k candidates
instead of k log(N / k). If fewer than k items then lie below that starting
bound, the query is scanned again without it: the result is always exact.

Queries are split into groups of `_QUERY_GROUP` spread over numba's threads
(`numba.set_num_threads`), handed out one group at a time so that a thread
slowed by other work on a shared machine does not hold the others up. A
group walks the database tile by tile, so every tile is read from L1/L2
cache once per query of the group. `block_keys` is serial: its caller runs
query blocks in threads.

numba is a dependency of the package; `AVAILABLE` is False only where it
cannot be imported, and callers then use their XLA paths.
"""
from __future__ import annotations

import dataclasses
import threading

import numpy as np

try:
  import numba
  from numba import types as numba_types
  from numba import extending as numba_extending
  from llvmlite import ir
except ImportError:  # pragma: no cover - exercised where numba is absent
  numba = None

AVAILABLE = numba is not None

TILE = 1024  # items per tile (8 KiB of 64-bit codes).
_SUB = 512  # items whose minimum distance is tested against the bound at once.
_QUERY_GROUP = 32  # queries that share a pass over the database.
_SAMPLE_STEP = 16  # the starting bound comes from every 16th tile...
_MIN_SAMPLE_TILES = 16  # ... when there are at least this many sampled tiles.
_SAMPLE_OVERSHOOT = 2.0  # k_s = ceil(2 k / _SAMPLE_STEP).
_TOPK_LOCK = threading.Lock()
_ALIGNMENT = 64  # bytes: one cache line, one 512-bit vector.


@dataclasses.dataclass(frozen=True)
class Tiles:
  """Packed codes in the tiled layout the CPU kernel reads.

  Attributes:
    data: [ceil(N / TILE) * W * TILE] uint32 (W32 == 1) or uint64 words; tile
      t holds items t * TILE .. (t + 1) * TILE - 1 word-major (word w of item
      t * TILE + j at t * W * TILE + w * TILE + j). Padding items are zero.
    num_items: N.
    num_words: W, words of `data`'s dtype per code.
  """
  data: np.ndarray
  num_items: int
  num_words: int


def kernel_words(packed: np.ndarray) -> np.ndarray:
  """[M, W32] uint32 packed codes -> [M, W] words the kernel reads.

  One uint32 word stays uint32; otherwise pairs of words become one uint64
  (little-endian: word 2i in the low half), with a zero word appended to an
  odd count. Hamming distances are unchanged.
  """
  packed = np.ascontiguousarray(packed, np.uint32)
  if packed.ndim != 2:
    raise ValueError(f'Packed codes must be [M, W]; got shape {packed.shape}.')
  if packed.shape[1] == 1:
    return packed
  if packed.shape[1] % 2:
    packed = np.pad(packed, ((0, 0), (0, 1)))
  return np.ascontiguousarray(packed.astype('<u4')).view('<u8').astype(
      np.uint64, copy=False)


def _aligned_empty(size: int, dtype) -> np.ndarray:
  """[size] uninitialised array whose data starts on a 64-byte boundary.

  NumPy's large allocations are often 16-byte aligned only; then every
  512-bit load of the hot loop would straddle two cache lines.
  """
  nbytes = size * np.dtype(dtype).itemsize
  raw = np.empty(nbytes + _ALIGNMENT, np.uint8)
  offset = -raw.ctypes.data % _ALIGNMENT
  return raw[offset:offset + nbytes].view(dtype)


def to_tiles(packed: np.ndarray) -> Tiles:
  """Lays out [N, W32] uint32 packed codes in tiles (see `Tiles`)."""
  words = kernel_words(packed)
  n, w = words.shape
  num_tiles = max(1, -(-n // TILE))
  data = _aligned_empty(num_tiles * w * TILE, words.dtype)
  tiles = data.reshape(num_tiles, w, TILE)
  full = n // TILE
  tiles[:full] = words[:full * TILE].reshape(full, TILE, w).transpose(0, 2, 1)
  if full < num_tiles:  # the last, partial tile: zero codes after item N - 1
    tiles[full:] = 0
    tiles[full, :, :n - full * TILE] = words[full * TILE:].T
  return Tiles(data=data, num_items=n, num_words=w)


# ---------------------------------------------------------------------------
# numba kernels.
# ---------------------------------------------------------------------------


# LLVM's X86 tuning for recent Intel cores prefers 256-bit vectors; the
# popcount loops here run up to 1.4x faster with 512-bit ones (one VPOPCNTQ
# does 8 codes), so every function that uses `_xor_popcount` asks for them. On
# CPUs without AVX-512 the attribute changes nothing.
_WIDE_VECTOR_ATTRIBUTES = ('"prefer-vector-width"="512"',
                           '"min-legal-vector-width"="512"')


def _prefer_wide_vectors(function) -> None:
  """Adds the 512-bit vector-width attributes to an llvmlite function.

  llvmlite's `FunctionAttributes` only accepts flag attributes, so the
  key="value" strings go into the underlying set; its IR printer writes them
  verbatim into the function definition. Where an llvmlite version stores
  attributes otherwise, the function keeps LLVM's default width.
  """
  if isinstance(function.attributes, set):
    for attribute in _WIDE_VECTOR_ATTRIBUTES:
      set.add(function.attributes, attribute)


def _xor_popcount_intrinsic(typingctx, x, y):  # pylint: disable=unused-argument
  """popcount(x ^ y) of two integers of one type, at that type's width.

  numba widens `x ^ y` of two uint32 to 64 bits (its integer promotion), which
  would halve the lanes of a vectorised loop; here the XOR and llvm.ctpop stay
  at the words' width, and the count is int32 for words of up to 32 bits
  (VPOPCNTD: 16 codes a 512-bit vector), int64 for uint64 words.
  """
  if not isinstance(x, numba_types.Integer) or x != y:
    return None
  out = numba_types.int64 if x.bitwidth == 64 else numba_types.int32

  def codegen(context, builder, signature, args):  # pylint: disable=unused-argument
    _prefer_wide_vectors(builder.function)
    count = builder.ctpop(builder.xor(args[0], args[1]))
    target = context.get_value_type(signature.return_type)
    if count.type.width < target.width:
      return builder.zext(count, target)
    return count

  return out(x, y), codegen


_MASK_LANES = 16  # int32 distances compared by one `_below_mask`.


def _below_mask_intrinsic(typingctx, values, pos, bound):  # pylint: disable=unused-argument
  """Bit l set iff values[pos + l] < bound, l < 16, for a 1-D int32 array.

  One 512-bit load and compare (VPCMPD into a mask register, then KMOVW) where
  the CPU has AVX-512. The caller keeps values[pos:pos + 16] inside the array.
  """
  if not (isinstance(values, numba_types.Array) and values.ndim == 1 and
          values.dtype == numba_types.int32 and
          isinstance(pos, numba_types.Integer) and
          isinstance(bound, numba_types.Integer)):
    return None

  def codegen(context, builder, signature, args):
    _prefer_wide_vectors(builder.function)
    array = context.make_array(signature.args[0])(context, builder, args[0])
    lane = ir.IntType(32)
    vector_type = ir.VectorType(lane, _MASK_LANES)
    start = context.cast(builder, args[1], signature.args[1], numba_types.intp)
    pointer = builder.bitcast(builder.gep(array.data, [start]),
                              vector_type.as_pointer())
    vector = builder.load(pointer, align=4)
    limit = context.cast(builder, args[2], signature.args[2],
                         numba_types.int32)
    splat = builder.insert_element(ir.Constant(vector_type, ir.Undefined),
                                   limit, ir.Constant(lane, 0))
    splat = builder.shuffle_vector(
        splat, ir.Constant(vector_type, ir.Undefined),
        ir.Constant(vector_type, [0] * _MASK_LANES))
    below = builder.icmp_signed('<', vector, splat)
    bits = builder.bitcast(below, ir.IntType(_MASK_LANES))
    return builder.zext(bits, ir.IntType(64))

  return numba_types.uint64(values, pos, bound), codegen


def _trailing_zeros_intrinsic(typingctx, x):  # pylint: disable=unused-argument
  """Index of the lowest set bit of a nonzero uint64 (TZCNT)."""
  if x != numba_types.uint64:
    return None

  def codegen(context, builder, signature, args):  # pylint: disable=unused-argument
    return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

  return numba_types.uint64(x), codegen


def _item(tile_offset, w, j):
  """Position of word w of item j of the tile at `tile_offset` (unsigned).

  An unsigned index spares numba's negative-index wrap-around, which would
  turn the unit-stride loads of the hot loop into gathers.
  """
  return np.uint64(tile_offset + w * TILE + j)


def _min_distance(query, q, data, tile_offset, words, start, stop):
  """Minimum distance to query[q] of items start..stop-1 (start < stop).

  Each branch keeps the popcount's own integer width (int32 for uint32 words),
  starting from the first item's distance, so the vector loop converts
  nothing; the loop still starts at `start`, which keeps its vector loads
  aligned with the tile.
  """
  if words == 1:
    q0 = query[q, 0]
    best1 = _xor_popcount(q0, data[_item(tile_offset, 0, start)])
    for j in range(start, stop):
      best1 = min(best1, _xor_popcount(q0, data[_item(tile_offset, 0, j)]))
    return best1
  if words == 2:
    q0, q1 = query[q, 0], query[q, 1]
    best2 = (_xor_popcount(q0, data[_item(tile_offset, 0, start)]) +
             _xor_popcount(q1, data[_item(tile_offset, 1, start)]))
    for j in range(start, stop):
      best2 = min(best2, _xor_popcount(q0, data[_item(tile_offset, 0, j)]) +
                  _xor_popcount(q1, data[_item(tile_offset, 1, j)]))
    return best2
  best = 1 << 30
  for j in range(start, stop):
    d = 0
    for w in range(words):
      d += _xor_popcount(query[q, w], data[_item(tile_offset, w, j)])
    best = min(best, d)
  return best


def _distances(query, q, data, tile_offset, words, start, stop, out):
  """Distances of items start..stop-1 of one tile to query[q] -> out[0:]."""
  if words == 1:
    q0 = query[q, 0]
    for j in range(start, stop):
      out[np.uint64(j - start)] = _xor_popcount(
          q0, data[_item(tile_offset, 0, j)])
  elif words == 2:
    q0, q1 = query[q, 0], query[q, 1]
    for j in range(start, stop):
      out[np.uint64(j - start)] = (
          _xor_popcount(q0, data[_item(tile_offset, 0, j)]) +
          _xor_popcount(q1, data[_item(tile_offset, 1, j)]))
  else:
    for j in range(start, stop):
      d = 0
      for w in range(words):
        d += _xor_popcount(query[q, w], data[_item(tile_offset, w, j)])
      out[np.uint64(j - start)] = d


def _compact(q, bound, below, k, size, hist, buf_dist, buf_index):
  """Drops buffered items that can no longer be in query q's top-k.

  Keeps every item with d < bound and the first k - below with d == bound
  (buffer order is index order); updates size[q] and hist[q].
  """
  need = k - below[q]
  kept = 0
  for c in range(size[q]):
    d = buf_dist[q, c]
    keep = d < bound
    if d == bound and need > 0:
      keep = True
      need -= 1
    if keep:
      buf_dist[q, kept] = d
      buf_index[q, kept] = buf_index[q, c]
      kept += 1
    else:
      hist[q, d] -= 1
  size[q] = kept


def _min_distance_quad(query, q, data, tile_offset, words, start, stop):
  """`_min_distance` of queries q..q+3 in one pass over the items."""
  if words == 1:
    a, b, c, d = query[q, 0], query[q + 1, 0], query[q + 2, 0], query[q + 3, 0]
    x = data[_item(tile_offset, 0, start)]
    m0, m1 = _xor_popcount(a, x), _xor_popcount(b, x)
    m2, m3 = _xor_popcount(c, x), _xor_popcount(d, x)
    for j in range(start, stop):
      x = data[_item(tile_offset, 0, j)]
      m0 = min(m0, _xor_popcount(a, x))
      m1 = min(m1, _xor_popcount(b, x))
      m2 = min(m2, _xor_popcount(c, x))
      m3 = min(m3, _xor_popcount(d, x))
    return m0, m1, m2, m3
  if words == 2:
    a0, a1 = query[q, 0], query[q, 1]
    b0, b1 = query[q + 1, 0], query[q + 1, 1]
    c0, c1 = query[q + 2, 0], query[q + 2, 1]
    d0, d1 = query[q + 3, 0], query[q + 3, 1]
    x0 = data[_item(tile_offset, 0, start)]
    x1 = data[_item(tile_offset, 1, start)]
    n0 = _xor_popcount(a0, x0) + _xor_popcount(a1, x1)
    n1 = _xor_popcount(b0, x0) + _xor_popcount(b1, x1)
    n2 = _xor_popcount(c0, x0) + _xor_popcount(c1, x1)
    n3 = _xor_popcount(d0, x0) + _xor_popcount(d1, x1)
    for j in range(start, stop):
      x0 = data[_item(tile_offset, 0, j)]
      x1 = data[_item(tile_offset, 1, j)]
      n0 = min(n0, _xor_popcount(a0, x0) + _xor_popcount(a1, x1))
      n1 = min(n1, _xor_popcount(b0, x0) + _xor_popcount(b1, x1))
      n2 = min(n2, _xor_popcount(c0, x0) + _xor_popcount(c1, x1))
      n3 = min(n3, _xor_popcount(d0, x0) + _xor_popcount(d1, x1))
    return n0, n1, n2, n3
  return (_min_distance(query, q, data, tile_offset, words, start, stop),
          _min_distance(query, q + 1, data, tile_offset, words, start, stop),
          _min_distance(query, q + 2, data, tile_offset, words, start, stop),
          _min_distance(query, q + 3, data, tile_offset, words, start, stop))


def _examine(query, q0, q, b, data, tile_offset, words, start, stop, item_base,
             k, below, size, hist, buf_dist, buf_index, scratch):
  """Buffers query q's items start..stop-1 (of one tile) with d < b.

  Called when the minimum distance of the items is below b. Their distances
  go to `scratch` (int32, at least stop - start rounded up to 16 entries);
  vector compares with b give a bit mask per 16 items, and only the set bits
  are visited (in index order). Returns the new bound.
  """
  cap = buf_dist.shape[1]
  count = stop - start
  _distances(query, q0 + q, data, tile_offset, words, start, stop, scratch)
  for j in range(count, -(-count // _MASK_LANES) * _MASK_LANES):
    scratch[j] = 1 << 30  # never below b
  for g in range(0, count, _MASK_LANES):
    mask = _below_mask(scratch, g, b)
    while mask:
      j = g + _trailing_zeros(mask)
      mask &= mask - np.uint64(1)
      d = scratch[j]
      if d < b:  # b may have moved down since the mask was taken.
        if size[q] == cap:
          _compact(q, b, below, k, size, hist, buf_dist, buf_index)
        c = size[q]
        buf_dist[q, c] = d
        buf_index[q, c] = item_base + start + j
        size[q] = c + 1
        hist[q, d] += 1
        n_below = below[q] + 1
        while n_below >= k:  # b moves down to the k-th distance.
          b -= 1
          n_below -= hist[q, b]
        below[q] = n_below
  return b


def _scan(query, q0, nq, data, num_items, words, k, tile_start, tile_step,
          bound, below, size, hist, buf_dist, buf_index, scratch):
  """Scans tiles tile_start, tile_start + tile_step, ... for queries q0.. .

  Per query q (row q0 + q of `query`): `bound[q]` is the running bound (items
  with d < bound enter), `below[q]` the buffered items with d < bound,
  `size[q]`, `hist[q]`, `buf_dist[q]`, `buf_index[q]` the buffer. Items are
  numbered by their rank among the scanned items (their database index when
  tile_step == 1). Queries go in fours through the hot loop (one load of the
  items serves four).
  """
  num_tiles = -(-num_items // TILE)
  rank_base = 0
  for t in range(tile_start, num_tiles, tile_step):
    count = min(TILE, num_items - t * TILE)
    tile_offset = t * words * TILE
    for q in range(0, nq - 3, 4):
      for s in range(0, count, _SUB):
        e = min(count, s + _SUB)
        mins = _min_distance_quad(query, q0 + q, data, tile_offset, words, s,
                                  e)
        for i in range(4):
          if mins[i] < bound[q + i]:
            bound[q + i] = _examine(query, q0, q + i, bound[q + i], data,
                                    tile_offset, words, s, e, rank_base, k,
                                    below, size, hist, buf_dist, buf_index,
                                    scratch)
    for q in range(nq - nq % 4, nq):
      b = bound[q]
      for s in range(0, count, _SUB):
        e = min(count, s + _SUB)
        if _min_distance(query, q0 + q, data, tile_offset, words, s, e) < b:
          b = _examine(query, q0, q, b, data, tile_offset, words, s, e,
                       rank_base, k, below, size, hist, buf_dist, buf_index,
                       scratch)
      bound[q] = b
    rank_base += count


def _reset(q, start_bound, bound, below, size, hist):
  bound[q] = start_bound
  below[q] = 0
  size[q] = 0
  hist[q, :] = 0


def _topk_kernel(query, data, num_items, words, k, bits, out_index,
                 out_dist):
  """Exact top-k of every query; see the module docstring.

  Args:
    query: [Q, W] kernel words (`kernel_words`).
    data: `Tiles.data`.
    num_items: N.
    words: W.
    k: results per query.
    bits: K, the code length (distances lie in 0..K).
    out_index: [Q, k] int32, filled (index -1 past N).
    out_dist: [Q, k] int32, filled (K + 1 past N).
  """
  num_q = query.shape[0]
  num_groups = -(-num_q // _QUERY_GROUP)
  num_tiles = -(-num_items // TILE)
  sampled_tiles = num_tiles // _SAMPLE_STEP
  k_sample = int(np.ceil(_SAMPLE_OVERSHOOT * k / _SAMPLE_STEP))
  use_sample = (sampled_tiles >= _MIN_SAMPLE_TILES and
                k_sample * _SAMPLE_STEP < num_items)
  cap = 4 * k
  for g in numba.prange(num_groups):  # pylint: disable=not-an-iterable
    q0 = g * _QUERY_GROUP
    nq = min(num_q, q0 + _QUERY_GROUP) - q0
    bound = np.empty(nq, np.int64)
    below = np.empty(nq, np.int64)
    size = np.empty(nq, np.int64)
    hist = np.empty((nq, bits + 2), np.int64)
    buf_dist = np.empty((nq, cap), np.int32)
    buf_index = np.empty((nq, cap), np.int32)
    scratch = np.empty(-(-_SUB // _MASK_LANES) * _MASK_LANES, np.int32)
    start = np.full(nq, bits + 1, np.int64)
    if use_sample:
      for q in range(nq):
        _reset(q, bits + 1, bound, below, size, hist)
      _scan(query, q0, nq, data, num_items, words, k_sample, 0, _SAMPLE_STEP,
            bound, below, size, hist, buf_dist, buf_index, scratch)
      for q in range(nq):
        if bound[q] <= bits:  # the k_s-th sampled distance: start above it.
          start[q] = bound[q] + 1
    for q in range(nq):
      _reset(q, start[q], bound, below, size, hist)
    _scan(query, q0, nq, data, num_items, words, k, 0, 1, bound, below, size,
          hist, buf_dist, buf_index, scratch)
    for q in range(nq):
      if bound[q] == start[q] and start[q] <= bits:
        # Fewer than k items below the sampled bound: scan without it.
        _reset(q, bits + 1, bound, below, size, hist)
        _scan(query, q0 + q, 1, data, num_items, words, k, 0, 1,
              bound[q:q + 1], below[q:q + 1], size[q:q + 1], hist[q:q + 1],
              buf_dist[q:q + 1], buf_index[q:q + 1], scratch)
      b = bound[q]
      _compact(q, b, below, k, size, hist, buf_dist, buf_index)
      # Stable counting sort of the buffer by distance (it is in index order).
      pos = np.empty(bits + 2, np.int64)
      acc = 0
      for v in range(bits + 2):
        pos[v] = acc
        acc += hist[q, v]
      for c in range(size[q]):
        d = buf_dist[q, c]
        p = pos[d]
        pos[d] = p + 1
        out_dist[q0 + q, p] = d
        out_index[q0 + q, p] = buf_index[q, c]
      for p in range(size[q], k):
        out_dist[q0 + q, p] = bits + 1
        out_index[q0 + q, p] = -1


def _block_keys_kernel(query, data, words, labels_q, labels_data, label_words,
                       label_count_q, label_count_db, shift, graded, db_start,
                       db_stop, out_dist, out_key):
  """Distances and sort keys of queries x items db_start..db_stop-1.

  Args:
    query: [B, W] kernel words of the query codes.
    data: `Tiles.data` of the database codes.
    words: W.
    labels_q: [B, L] kernel words of the query labels.
    labels_data: `Tiles.data` of the database labels.
    label_words: L.
    label_count_q: [B] int32, labels per query.
    label_count_db: [N] int32, labels per database item.
    shift: key = dist << shift | overlap.
    graded: overlap = shared labels if True, else 1 if any is shared.
    db_start, db_stop: the database items.
    out_dist: [B, db_stop - db_start] unsigned, filled.
    out_key: [B, db_stop - db_start] unsigned, filled.
  """
  num_q = query.shape[0]
  code_dist = np.empty(TILE, np.int32)
  label_xor = np.empty(TILE, np.int32)
  for q in range(num_q):
    dist_row = out_dist[q]
    key_row = out_key[q]
    qn = np.int32(label_count_q[q])
    for t in range(db_start // TILE, (db_stop - 1) // TILE + 1):
      start = max(db_start, t * TILE) - t * TILE
      stop = min(db_stop, (t + 1) * TILE) - t * TILE
      _distances(query, q, data, t * words * TILE, words, start, stop,
                 code_dist)
      _distances(labels_q, q, labels_data, t * label_words * TILE,
                 label_words, start, stop, label_xor)
      # |a ^ b| = |a| + |b| - 2 |a & b|: shared labels from the XOR count.
      # (Unsigned indices keep numba's wrap-around checks out of the loops.)
      out = np.uint64(t * TILE + start - db_start)
      item = np.uint64(t * TILE + start)
      if graded:
        for j in range(stop - start):
          u = np.uint64(j)
          total = qn + label_count_db[item + u]
          d = code_dist[u]
          dist_row[out + u] = d
          key_row[out + u] = (d << shift) | ((total - label_xor[u]) >> 1)
      else:
        for j in range(stop - start):
          u = np.uint64(j)
          total = qn + label_count_db[item + u]
          d = code_dist[u]
          dist_row[out + u] = d
          key_row[out + u] = (d << shift) | np.int32(label_xor[u] < total)


if AVAILABLE:
  _xor_popcount = numba_extending.intrinsic(_xor_popcount_intrinsic)
  _below_mask = numba_extending.intrinsic(_below_mask_intrinsic)
  _trailing_zeros = numba_extending.intrinsic(_trailing_zeros_intrinsic)
  _inline = lambda fn: numba.njit(inline='always', nogil=True, cache=True)(fn)
  _item = _inline(_item)
  _min_distance = _inline(_min_distance)
  _min_distance_quad = _inline(_min_distance_quad)
  _distances = _inline(_distances)
  _compact = numba.njit(nogil=True, cache=True)(_compact)
  _examine = numba.njit(nogil=True, cache=True)(_examine)
  _reset = numba.njit(nogil=True, cache=True)(_reset)
  _scan = numba.njit(nogil=True, cache=True)(_scan)
  _topk_kernel = numba.njit(nogil=True, parallel=True, cache=True)(
      _topk_kernel)
  # Serial: the evaluation engine runs query blocks in its own threads.
  _block_keys_kernel = numba.njit(nogil=True, cache=True)(_block_keys_kernel)


# ---------------------------------------------------------------------------
# Entry points.
# ---------------------------------------------------------------------------


def _require() -> None:
  if not AVAILABLE:
    raise RuntimeError('The CPU Hamming kernel needs numba (pip install '
                       'numba).')


def topk(query: np.ndarray, tiles: Tiles, *, k: int, bits: int
         ) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k Hamming search of packed queries against tiled codes.

  Args:
    query: [Q, W32] uint32 packed query codes.
    tiles: the database (`to_tiles`).
    k: results per query (>= 1).
    bits: K, the code length.

  Returns:
    indices [Q, k] int32 and distances [Q, k] int32 ordered by (distance,
    index); slots past the database size hold index -1 and distance K + 1.
  """
  _require()
  if k < 1:
    raise ValueError(f'k must be >= 1; got {k}.')
  if tiles.num_items >= 2**31:
    raise ValueError(f'{tiles.num_items} codes: indices are int32, so one '
                     'search covers fewer than 2**31; shard the database.')
  query = kernel_words(query)
  if query.shape[1] != tiles.num_words or query.dtype != tiles.data.dtype:
    raise ValueError(f'Query codes ({query.shape[1]} {query.dtype} words) and '
                     f'database ({tiles.num_words} {tiles.data.dtype} words) '
                     'have different lengths.')
  num_q = query.shape[0]
  out_index = np.empty((num_q, k), np.int32)
  out_dist = np.empty((num_q, k), np.int32)
  if num_q:
    with _TOPK_LOCK:  # one search at a time; each uses all of numba's threads
      # Dynamic scheduling: each thread takes the next query group when done.
      chunk_size = numba.set_parallel_chunksize(1)
      try:
        _topk_kernel(query, tiles.data, tiles.num_items, tiles.num_words, k,
                     bits, out_index, out_dist)
      finally:
        numba.set_parallel_chunksize(chunk_size)
  return out_index, out_dist


def block_keys(query: np.ndarray, db: Tiles, query_labels: np.ndarray,
               db_labels: Tiles, query_label_count: np.ndarray,
               db_label_count: np.ndarray, *, shift: int, graded: bool,
               db_slice: slice, dist_dtype, key_dtype
               ) -> tuple[np.ndarray, np.ndarray]:
  """Distances and sort keys of a block: the evaluation's Hamming pass.

  Args:
    query: [B, W] kernel words (`kernel_words`) of B query codes.
    db: the database codes (`to_tiles`).
    query_labels: [B, L] kernel words of the queries' packed labels.
    db_labels: the database labels (`to_tiles` of their packed words).
    query_label_count: [B] int32, labels per query.
    db_label_count: [N] int32, labels per database item.
    shift: bits of the overlap field of the key.
    graded: overlap = shared labels if True, else 1 if any label is shared.
    db_slice: the database items of the block (step 1).
    dist_dtype, key_dtype: unsigned output dtypes wide enough for K and the
      keys.

  Returns:
    dist [B, T] and key [B, T] = dist << shift | overlap.
  """
  _require()
  t = db_slice.stop - db_slice.start
  dist = np.empty((query.shape[0], t), dist_dtype)
  key = np.empty((query.shape[0], t), key_dtype)
  if query.shape[0] and t:
    _block_keys_kernel(query, db.data, db.num_words, query_labels,
                       db_labels.data, db_labels.num_words,
                       np.asarray(query_label_count, np.int32),
                       np.asarray(db_label_count, np.int32), np.int32(shift),
                       bool(graded), db_slice.start, db_slice.stop, dist, key)
  return dist, key
