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
loop (`_make_bound_test`, LLVM IR with explicit 512-bit vectors) takes
`_QUERY_TILE` queries against `_SUB` items: each vector of items loaded
serves all of them, and per query an XOR, a VPOPCNT per word and a lane-wise
minimum accumulate (3 vector instructions per 8 pairs at 64 bits), with one
vector compare per query against b at the end and one OR of the compare
masks to find out whether any query has a hit, with no horizontal reduction.
Only a flagged query looks at the items again (`_examine`): one vector pass
(`_make_vector_hits`) marks the 8 or 16 items of each vector that hold one
below b, and only those items' distances are computed again and appended
to a per-query buffer, with a histogram over the buffer's distances that
moves b down. On random codes, 1M items, k = 100, a few hundred items per
query enter the buffer. When the database is long, b starts from a sample:
the k_s-th smallest distance of every `_SAMPLE_STEP`-th tile (k_s about
2 k / `_SAMPLE_STEP`), so the full pass touches about 2k candidates instead
of k log(N / k). If fewer than k items then lie below that starting bound,
the query is scanned again without it: the result is always exact.

Queries are split into groups of up to `_QUERY_GROUP` (at least two groups
per thread) spread over numba's threads (`numba.set_num_threads`), handed
out one group at a time so that a thread slowed by other work on a shared
machine does not hold the others up. A group walks the database tile by
tile, so every tile is read from memory once per group and from L1 cache by
each of its query tiles; large groups keep the memory traffic low when
other jobs share the caches. `block_keys` is serial: its caller runs query
blocks in threads.

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
  from numba.core import cgutils
  from llvmlite import ir
except ImportError:  # pragma: no cover - exercised where numba is absent
  numba = None

AVAILABLE = numba is not None

TILE = 1024  # items per tile (8 KiB of 64-bit codes).
_SUB = 256  # items whose distances are tested against the bound at once.
_QUERY_GROUP = 128  # at most this many queries share a pass over the data.
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


_QUERY_TILE = 8  # queries tested against one load of the items.
_UNROLLED_WORDS = 4  # longer codes loop over their words at run time.


def _splat(builder, value, vector_type):
  """<lanes x T> vector with every lane `value` (a T)."""
  lanes = vector_type.count
  one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value,
                               ir.Constant(ir.IntType(32), 0))
  return builder.shuffle_vector(
      one, ir.Constant(vector_type, ir.Undefined),
      ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


class _VectorCodegen:
  """LLVM IR for XOR-popcount distances of a few queries to a vector of items.

  Items are read from the tiled layout (`Tiles`) as 512-bit vectors: 8 uint64
  or 16 uint32 codes (the lanes), word w of the vector's items `w * TILE`
  words after word 0. Codes of up to `_UNROLLED_WORDS` words are unrolled
  (each loaded word serves every query); longer ones loop over their words.
  """

  def __init__(self, context, builder, signature, args, words):
    _prefer_wide_vectors(builder.function)
    self.builder = builder
    self.words = words
    data_type, query_type = signature.args[0], signature.args[3]
    self.width = data_type.dtype.bitwidth
    self.lanes = 512 // self.width
    self.lane = ir.IntType(self.width)
    self.vector_type = ir.VectorType(self.lane, self.lanes)
    self.intp = context.get_value_type(numba_types.intp)
    data = context.make_array(data_type)(context, builder, args[0])
    query = context.make_array(query_type)(context, builder, args[3])
    offset = context.cast(builder, args[1], signature.args[1],
                          numba_types.intp)
    self.count = context.cast(builder, args[2], signature.args[2],
                              numba_types.intp)
    self.row = context.cast(builder, args[4], signature.args[4],
                            numba_types.intp)
    self.query_data = query.data
    self.num_words = cgutils.unpack_tuple(builder, query.shape, 2)[1]
    self.base = builder.gep(data.data, [offset])
    self.ctpop = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(self.vector_type, [self.vector_type]),
        f'llvm.ctpop.v{self.lanes}i{self.width}')

  def index(self, value):
    return ir.Constant(self.intp, value)

  def num_vectors(self):
    """Vectors covering `count` items (the last one may run past them)."""
    return self.builder.udiv(
        self.builder.add(self.count, self.index(self.lanes - 1)),
        self.index(self.lanes))

  def query_word(self, t, w):
    """query[row + t, w] in every lane (w an IR value)."""
    b = self.builder
    flat = b.add(b.mul(b.add(self.row, self.index(t)), self.num_words), w)
    return _splat(b, b.load(b.gep(self.query_data, [flat])), self.vector_type)

  def load_word(self, first, w):
    """Word w of items first..first + lanes - 1 (first, w IR values)."""
    b = self.builder
    pointer = b.gep(self.base, [b.add(first, b.mul(w, self.index(TILE)))])
    return b.load(b.bitcast(pointer, self.vector_type.as_pointer()),
                  align=self.width // 8)

  def distances(self, first, num_queries):
    """[lanes] distances of items first.. to queries row.. row + n - 1."""
    b = self.builder
    add_word = lambda dist, x, t, w: (
        b.add(dist, b.call(self.ctpop, [b.xor(x, self.query_word(t, w))])))
    zero = ir.Constant(self.vector_type, [0] * self.lanes)
    if self.words:
      dists = [zero] * num_queries
      for w in range(self.words):
        x = self.load_word(first, self.index(w))
        dists = [add_word(d, x, t, self.index(w)) for t, d in enumerate(dists)]
      return dists
    slots = [cgutils.alloca_once_value(b, zero) for _ in range(num_queries)]
    with cgutils.for_range(b, self.num_words) as loop:
      x = self.load_word(first, loop.index)
      for t, slot in enumerate(slots):
        b.store(add_word(b.load(slot), x, t, loop.index), slot)
    return [b.load(slot) for slot in slots]

  def below(self, dist, bound):
    """<lanes x i1>: dist < bound (bound an int64 in 0..2**31)."""
    limit = bound if self.width == 64 else self.builder.trunc(bound, self.lane)
    return self.builder.icmp_unsigned('<', dist,
                                      _splat(self.builder, limit,
                                             self.vector_type))

  def any_lane(self, mask):
    """i64 1 if some lane of the <lanes x i1> mask is set, else 0."""
    b = self.builder
    bits = b.bitcast(mask, ir.IntType(self.lanes))
    return b.zext(b.icmp_unsigned('!=', bits,
                                  ir.Constant(ir.IntType(self.lanes), 0)),
                  ir.IntType(64))


def _vector_args_ok(data, query, bound) -> bool:
  """Typing check shared by the vector intrinsics (bound: a scalar type)."""
  return (isinstance(data, numba_types.Array) and data.ndim == 1 and
          isinstance(data.dtype, numba_types.Integer) and
          data.dtype.bitwidth in (32, 64) and
          isinstance(query, numba_types.Array) and query.ndim == 2 and
          query.layout == 'C' and query.dtype == data.dtype and
          isinstance(bound, numba_types.Integer))


def _make_bound_test(words: int):
  """Intrinsic: which of `_QUERY_TILE` queries beat their bound on some item.

  `_bound_test_W(data, offset, count, query, row, bound)` (W = 0: any number
  of words, looped at run time): bit t of the uint64 result is set iff some
  item j < count of the tile slice that starts at `data[offset]` (word w of
  item j at `offset + w * TILE + j`) lies at a distance below bound[row + t]
  from query[row + t], t < `_QUERY_TILE`. query: [R, W] C-contiguous words of
  data's dtype; bound: [R] int64 in 0..2**31 (0 for padding rows: they never
  hit).

  One load of the items serves the whole query tile; per query, XOR, VPOPCNT
  (summed over the words) and an unsigned lane-wise minimum accumulate, and
  the bounds are tested once at the end, one vector compare per query: no
  horizontal reduction. Items past `count` up to the next multiple of the
  lanes are read too (the tile layout keeps them inside the array), so a set
  bit may be a false alarm, which the exact pass (`_examine`) discards; a
  clear bit is exact.
  """

  def typer(typingctx, data, offset, count, query, row, bound):  # pylint: disable=unused-argument
    if not (isinstance(bound, numba_types.Array) and bound.ndim == 1 and
            bound.dtype == numba_types.int64 and
            _vector_args_ok(data, query, numba_types.int64)):
      return None

    def codegen(context, builder, signature, args):
      gen = _VectorCodegen(context, builder, signature, args, words)
      bounds = context.make_array(signature.args[5])(context, builder,
                                                     args[5]).data
      all_ones = ir.Constant(gen.vector_type, [2**gen.width - 1] * gen.lanes)
      minima = [cgutils.alloca_once_value(builder, all_ones)
                for _ in range(_QUERY_TILE)]
      with cgutils.for_range(builder, gen.num_vectors()) as loop:
        first = builder.mul(loop.index, gen.index(gen.lanes))
        for slot, dist in zip(minima, gen.distances(first, _QUERY_TILE)):
          low = builder.load(slot)
          builder.store(builder.select(builder.icmp_unsigned('<', dist, low),
                                       dist, low), slot)
      below = [gen.below(builder.load(slot), builder.load(
          builder.gep(bounds, [builder.add(gen.row, gen.index(t))])))
               for t, slot in enumerate(minima)]
      # Mostly no query has a hit: one OR of the compare masks tells.
      any_below = below[0]
      for mask in below[1:]:
        any_below = builder.or_(any_below, mask)
      hits = cgutils.alloca_once_value(builder,
                                       ir.Constant(ir.IntType(64), 0))
      with builder.if_then(cgutils.is_not_null(builder, gen.any_lane(
          any_below)), likely=False):
        bits = ir.Constant(ir.IntType(64), 0)
        for t, mask in enumerate(below):
          bits = builder.or_(bits, builder.shl(gen.any_lane(mask),
                                               ir.Constant(bits.type, t)))
        builder.store(bits, hits)
      return builder.load(hits)

    return numba_types.uint64(data, offset, count, query, row, bound), codegen

  return typer


def _make_vector_hits(words: int):
  """Intrinsic: which vectors of items hold an item below one query's bound.

  `_vector_hits_W(data, offset, count, query, row, bound)` (W as in
  `_make_bound_test`; bound an int64 in 0..2**31): bit i of the uint64
  result is set iff some item of lanes * i .. lanes * (i + 1) - 1 (lanes: 8
  uint64 or 16 uint32 codes) lies at a distance below `bound` from
  query[row]; count <= 64 * lanes. One XOR, VPOPCNT and vector compare per
  vector; as in `_make_bound_test`, the last vector may read past `count`.
  """

  def typer(typingctx, data, offset, count, query, row, bound):  # pylint: disable=unused-argument
    if not _vector_args_ok(data, query, bound):
      return None

    def codegen(context, builder, signature, args):
      gen = _VectorCodegen(context, builder, signature, args, words)
      limit = context.cast(builder, args[5], signature.args[5],
                           numba_types.int64)
      hits = cgutils.alloca_once_value(builder,
                                       ir.Constant(ir.IntType(64), 0))
      with cgutils.for_range(builder, gen.num_vectors()) as loop:
        first = builder.mul(loop.index, gen.index(gen.lanes))
        (dist,) = gen.distances(first, 1)
        hit = gen.any_lane(gen.below(dist, limit))
        builder.store(builder.or_(builder.load(hits),
                                  builder.shl(hit, loop.index)), hits)
      return builder.load(hits)

    return numba_types.uint64(data, offset, count, query, row, bound), codegen

  return typer


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


def _vector_hits(query, q, b, data, tile_offset, words, start, stop):
  """`_make_vector_hits` for codes of `words` words: bit i set iff some item
  of the i-th vector of items start..stop-1 lies below b from query[q]."""
  offset = tile_offset + start
  count = stop - start
  if words == 1:
    return _vector_hits_1(data, offset, count, query, q, b)
  if words == 2:
    return _vector_hits_2(data, offset, count, query, q, b)
  if words == 3:
    return _vector_hits_3(data, offset, count, query, q, b)
  if words == 4:
    return _vector_hits_4(data, offset, count, query, q, b)
  return _vector_hits_0(data, offset, count, query, q, b)


def _examine(query, q, b, data, tile_offset, words, start, stop, item_base, k,
             below, size, hist, buf_dist, buf_index):
  """Buffers query q's items start..stop-1 (of one tile) with d < b.

  Called when the bound test flags the items. A vector pass (`_vector_hits`)
  finds the vectors of items that hold one below b; only their items are
  visited, in index order, and their distances computed again. Returns the
  new bound.
  """
  cap = buf_dist.shape[1]
  lanes = 16 if data.itemsize == 4 else 8  # codes per 512-bit vector
  hits = _vector_hits(query, q, b, data, tile_offset, words, start, stop)
  while hits:
    first = start + lanes * np.int64(_trailing_zeros(hits))
    hits &= hits - np.uint64(1)
    for j in range(first, min(first + lanes, stop)):
      d = 0
      for w in range(words):
        d += _xor_popcount(query[q, w], data[_item(tile_offset, w, j)])
      if d < b:  # b may have moved down since the vector was tested.
        if size[q] == cap:
          _compact(q, b, below, k, size, hist, buf_dist, buf_index)
        c = size[q]
        buf_dist[q, c] = d
        buf_index[q, c] = item_base + j
        size[q] = c + 1
        hist[q, d] += 1
        n_below = below[q] + 1
        while n_below >= k:  # b moves down to the k-th distance.
          b -= 1
          n_below -= hist[q, b]
        below[q] = n_below
  return b


def _bound_test(query, row, data, tile_offset, words, start, stop, bound):
  """`_make_bound_test` for codes of `words` words: bit t set iff query
  row + t may have an item of start..stop-1 below its bound."""
  offset = tile_offset + start
  count = stop - start
  if words == 1:
    return _bound_test_1(data, offset, count, query, row, bound)
  if words == 2:
    return _bound_test_2(data, offset, count, query, row, bound)
  if words == 3:
    return _bound_test_3(data, offset, count, query, row, bound)
  if words == 4:
    return _bound_test_4(data, offset, count, query, row, bound)
  return _bound_test_0(data, offset, count, query, row, bound)


def _scan(query, nq, data, num_items, words, k, tile_start, tile_step, bound,
          below, size, hist, buf_dist, buf_index):
  """Scans tiles tile_start, tile_start + tile_step, ... for queries 0..nq-1.

  Per query q (row q of `query`, [R, W] with R a multiple of `_QUERY_TILE`;
  rows nq.. are padding with bound 0): `bound[q]` is the running bound (items
  with d < bound enter), `below[q]` the buffered items with d < bound,
  `size[q]`, `hist[q]`, `buf_dist[q]`, `buf_index[q]` the buffer. Items are
  numbered by their rank among the scanned items (their database index when
  tile_step == 1). Queries go `_QUERY_TILE` at a time through the bound test
  (one load of the items serves them all); only the queries it flags are
  examined.
  """
  num_tiles = -(-num_items // TILE)
  rank_base = 0
  for t in range(tile_start, num_tiles, tile_step):
    count = min(TILE, num_items - t * TILE)
    tile_offset = t * words * TILE
    for row in range(0, nq, _QUERY_TILE):
      for s in range(0, count, _SUB):
        e = min(count, s + _SUB)
        hits = _bound_test(query, row, data, tile_offset, words, s, e, bound)
        while hits:
          q = row + np.int64(_trailing_zeros(hits))
          hits &= hits - np.uint64(1)
          bound[q] = _examine(query, q, bound[q], data, tile_offset, words, s,
                              e, rank_base, k, below, size, hist, buf_dist,
                              buf_index)
    rank_base += count


def _reset(q, start_bound, bound, below, size, hist):
  bound[q] = start_bound
  below[q] = 0
  size[q] = 0
  hist[q, :] = 0


def _topk_kernel(query, data, num_items, words, k, bits, group_size,
                 out_index, out_dist):
  """Exact top-k of every query; see the module docstring.

  Args:
    query: [Q, W] kernel words (`kernel_words`).
    data: `Tiles.data`.
    num_items: N.
    words: W.
    k: results per query.
    bits: K, the code length (distances lie in 0..K).
    group_size: queries per group (one pass over the data each).
    out_index: [Q, k] int32, filled (index -1 past N).
    out_dist: [Q, k] int32, filled (K + 1 past N).
  """
  num_q = query.shape[0]
  num_groups = -(-num_q // group_size)
  num_tiles = -(-num_items // TILE)
  sampled_tiles = num_tiles // _SAMPLE_STEP
  k_sample = int(np.ceil(_SAMPLE_OVERSHOOT * k / _SAMPLE_STEP))
  use_sample = (sampled_tiles >= _MIN_SAMPLE_TILES and
                k_sample * _SAMPLE_STEP < num_items)
  cap = 4 * k
  for g in numba.prange(num_groups):  # pylint: disable=not-an-iterable
    q0 = g * group_size
    nq = min(num_q, q0 + group_size) - q0
    rows = -(-nq // _QUERY_TILE) * _QUERY_TILE
    # The group's queries, padded to whole query tiles (bound 0: no hits).
    group = np.zeros((rows, words), query.dtype)
    group[:nq] = query[q0:q0 + nq]
    bound = np.zeros(rows, np.int64)
    below = np.empty(nq, np.int64)
    size = np.empty(nq, np.int64)
    hist = np.empty((nq, bits + 2), np.int64)
    buf_dist = np.empty((nq, cap), np.int32)
    buf_index = np.empty((nq, cap), np.int32)
    start = np.full(nq, bits + 1, np.int64)
    if use_sample:
      for q in range(nq):
        _reset(q, bits + 1, bound, below, size, hist)
      _scan(group, nq, data, num_items, words, k_sample, 0, _SAMPLE_STEP,
            bound, below, size, hist, buf_dist, buf_index)
      for q in range(nq):
        if bound[q] <= bits:  # the k_s-th sampled distance: start above it.
          start[q] = bound[q] + 1
    for q in range(nq):
      _reset(q, start[q], bound, below, size, hist)
    _scan(group, nq, data, num_items, words, k, 0, 1, bound, below, size, hist,
          buf_dist, buf_index)
    for q in range(nq):
      if bound[q] == start[q] and start[q] <= bits:
        # Fewer than k items below the sampled bound: scan without it.
        single = np.zeros((_QUERY_TILE, words), query.dtype)
        single[0] = group[q]
        single_bound = np.zeros(_QUERY_TILE, np.int64)
        _reset(0, bits + 1, single_bound, below[q:q + 1], size[q:q + 1],
               hist[q:q + 1])
        _scan(single, 1, data, num_items, words, k, 0, 1, single_bound,
              below[q:q + 1], size[q:q + 1], hist[q:q + 1], buf_dist[q:q + 1],
              buf_index[q:q + 1])
        bound[q] = single_bound[0]
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
  # One bound test and one vector-hits intrinsic per unrolled word count;
  # _0 loops over the words at run time.
  _bound_test_0, _bound_test_1, _bound_test_2, _bound_test_3, _bound_test_4 = (
      numba_extending.intrinsic(_make_bound_test(w))
      for w in range(_UNROLLED_WORDS + 1))
  _vector_hits_0, _vector_hits_1, _vector_hits_2, _vector_hits_3, _vector_hits_4 = (
      numba_extending.intrinsic(_make_vector_hits(w))
      for w in range(_UNROLLED_WORDS + 1))
  _trailing_zeros = numba_extending.intrinsic(_trailing_zeros_intrinsic)
  _inline = lambda fn: numba.njit(inline='always', nogil=True, cache=True)(fn)
  _item = _inline(_item)
  _vector_hits = _inline(_vector_hits)
  _bound_test = _inline(_bound_test)
  _distances = _inline(_distances)
  _compact = numba.njit(nogil=True, cache=True)(_compact)
  # Inlined: as a call, its array arguments cost a reference count each
  # (atomic) way in and out, more than a pass over the items.
  _examine = _inline(_examine)
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


def _group_size(num_queries: int) -> int:
  """Queries per group: at least two groups per thread, whole query tiles,
  at most `_QUERY_GROUP` (each group reads the data once)."""
  per_group = -(-num_queries // (2 * numba.get_num_threads()))
  return min(_QUERY_GROUP, -(-per_group // _QUERY_TILE) * _QUERY_TILE)


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
                     bits, _group_size(num_q), out_index, out_dist)
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
