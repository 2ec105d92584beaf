"""Exact Hamming top-k of one database chunk by radix select on distance digits.

Distances between K-bit codes are integers in [0, K], so the k-th smallest
distance T of a query is found by a radix select instead of a sort:

1. Level 0 counts, per query, how many items have each top digit
   `d >> s0` (at most 20 buckets, packed six bits per bucket; see
   `hamming.py`). The first bucket whose running count reaches k holds T.
2. Each further level counts the next digit among the items whose higher
   digits equal T's, until all bits of T are known. The last level also has a
   "below" bucket, so its per-block counts give, for every block of 32 items,
   how many items lie below T and how many equal T.
3. The answer is every item with d < T plus the first k - #(d < T) items with
   d == T in database-index order. A 32-ary tree of per-block counts is
   descended once per output slot (slot j finds the j-th selected item in index
   order), then the k results are sorted by (distance, index).

Each level is one fused pass over the chunk (XOR, popcount, bucket, packed
count); nothing of size [Q, N] is materialised. The plan of levels is chosen
from K to minimise passes and packed words.

Shortcut for long chunks: steps 1-2 are first run on every 16th block only,
which estimates T; one pass then counts a window of 9 distances around the
estimate (plus "below"). If every query's T falls inside its window (the
count below the window is < k and the count up to its end is >= k), that
pass is the last level; otherwise the batch runs steps 1-2 in full and redoes
the window pass around the exact T. So the shortcut changes the cost (about
1.1 passes instead of 1 to 3 wider ones), never the result.

Padding: the chunk holds M >= n_valid items; items n_valid..M-1 are all-zero
codes (at distance popcount(q) from query q). They are counted by the passes
and subtracted afterwards, so the hot loop has no masks.

Output convention (shared by the whole engine): `[Q, k]` int32 indices and
int32 distances ordered by (distance, index). When fewer than k items exist,
the missing slots hold index -1 and distance K + 1 (which sorts after every
real distance).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from crossmodal_hash.retrieval import hamming

FANOUT = hamming.BLOCK  # children per node of the descent tree.
MAX_FIELDS = 4 * hamming.FIELDS_PER_WORD  # at most 4 packed words per pass.
# Counts are summed in float32 in the descent (exact below 2**24).
MAX_CHUNK_SIZE = 1 << 24
# The one-pass window: every SAMPLE_STRIDE-th block estimates T, and chunks of
# at least SAMPLE_STRIDE * MIN_SAMPLE_BLOCKS blocks use it. The window spans
# 5 * WINDOW_WORDS - 1 distances.
SAMPLE_STRIDE = 16
MIN_SAMPLE_BLOCKS = 64
WINDOW_WORDS = 2
# Relative cost of a pass (per database word) and of a packed word, used to
# choose a plan (rough instruction counts of the fused pass on XLA:CPU).
_PASS_COST_BASE = 4.0
_PASS_COST_PER_WORD = 3.0
_WORD_COST = 3.0


@dataclasses.dataclass(frozen=True)
class Level:
  """One radix pass.

  Attributes:
    shift: the pass buckets `d >> shift`.
    digit_bits: bits of the digit this pass resolves (None for level 0, which
      buckets the whole value `d >> shift`; 0 for the window pass, whose range
      start is any distance).
    num_digits: D, the number of digit values.
    below: whether bucket 0 counts items below the digit range (final level
      after level 0 only); digits then use buckets 1..D.
  """
  shift: int
  digit_bits: int | None
  num_digits: int
  below: bool

  @property
  def num_fields(self) -> int:
    return self.num_digits + int(self.below)

  @property
  def num_words(self) -> int:
    return hamming.accumulator_count(self.num_fields)


def _plan_cost(levels: tuple[Level, ...], words: int) -> float:
  per_pass = _PASS_COST_BASE + _PASS_COST_PER_WORD * words
  return sum(per_pass + _WORD_COST * lvl.num_words for lvl in levels)


def _compositions(total: int, max_part: int):
  """All ordered tuples of parts in [1, max_part] summing to total."""
  if total == 0:
    yield ()
    return
  for first in range(1, min(total, max_part) + 1):
    for rest in _compositions(total - first, max_part):
      yield (first,) + rest


@functools.lru_cache(maxsize=None)
def plan_levels(bits: int, words: int | None = None) -> tuple[Level, ...]:
  """The cheapest sequence of radix passes for `bits`-bit codes.

  Args:
    bits: K, the code length (distances lie in [0, K]).
    words: packed words per code (default ceil(K / 32)); weighs the cost of a
      pass against the cost of a packed word.

  Returns:
    The levels, first to last; the last one has shift 0.
  """
  if bits < 1:
    raise ValueError(f'A code needs at least 1 bit; got {bits}.')
  words = words or -(-bits // 32)
  best, best_cost = None, None
  for s0 in range(bits.bit_length() + 1):
    top = (bits >> s0) + 1
    if top > MAX_FIELDS:
      continue
    # Parts of at most 4 bits: 2**4 digits (+ below) fit in MAX_FIELDS.
    for parts in _compositions(s0, 4):
      levels = [Level(s0, None, top, False)]
      shift = s0
      for i, part in enumerate(parts):
        shift -= part
        levels.append(Level(shift, part, 1 << part, i == len(parts) - 1))
      levels = tuple(levels)
      if any(lvl.num_fields > MAX_FIELDS for lvl in levels):
        continue
      cost = _plan_cost(levels, words)
      if best_cost is None or cost < best_cost:
        best, best_cost = levels, cost
  assert best is not None
  return best


def _bucket(dist: jax.Array, level: Level, base: jax.Array) -> jax.Array:
  """Bucket index (uint32) of every distance for one level.

  Args:
    dist: [Q, ...] uint32 distances.
    level: the pass.
    base: [Q] int32, the value of `d >> shift` where this level's digit range
      starts (ignored for level 0).

  Returns:
    Same shape as `dist`, uint32; uncounted values get `discard_field`.
  """
  discard = jnp.uint32(hamming.discard_field(level.num_words))
  x = dist >> jnp.uint32(level.shift)
  if level.digit_bits is None:
    return x
  base = base.reshape(base.shape + (1,) * (dist.ndim - 1)).astype(jnp.uint32)
  if level.below:
    # below -> 0, digit v -> v + 1, above -> discard.
    lowest = base - jnp.uint32(1)  # base >= 1 whenever there is anything below.
    rel = jnp.where(x < base, jnp.uint32(0), x - lowest)
    return jnp.minimum(rel, discard)
  # Below the range wraps to a huge uint32; clamp it to discard with the rest.
  return jnp.minimum(x - base, discard)


def _cumsum_last(x: jax.Array) -> jax.Array:
  """Inclusive cumulative sum over a short last axis, exact in int32.

  A float32 product with a triangular matrix: exact while every partial sum is
  below 2**24, which holds because counts never exceed the chunk size
  (`MAX_CHUNK_SIZE`). Precision HIGHEST keeps GPUs off TF32.
  """
  n = x.shape[-1]
  tri = (jnp.arange(n)[:, None] <= jnp.arange(n)[None, :]).astype(jnp.float32)
  out = jnp.matmul(x.astype(jnp.float32), tri,
                   precision=jax.lax.Precision.HIGHEST)
  return out.astype(jnp.int32)


def _first_reaching(cum: jax.Array, target: jax.Array) -> jax.Array:
  """Per row, the first position whose cumulative count is >= target."""
  return jnp.sum(cum < target[:, None], axis=-1, dtype=jnp.int32)


def _tree(counts: jax.Array) -> list[jax.Array]:
  """Per-block counts [Q, B] -> levels of a FANOUT-ary sum tree, bottom first.

  Every level is padded with zeros to a multiple of FANOUT; the last one has
  exactly FANOUT entries.
  """
  levels = []
  while True:
    q, n = counts.shape
    padded = hamming.padded_size(n, FANOUT)
    counts = jnp.pad(counts, ((0, 0), (0, padded - n)))
    levels.append(counts)
    if padded == FANOUT:
      return levels
    counts = counts.reshape(q, padded // FANOUT, FANOUT).sum(
        axis=-1, dtype=jnp.int32)


def _descend_step(less, equal, rank, ties_before, needed_ties):
  """Chooses, for every slot, the child that holds its selected item.

  Args:
    less: [Q, S, F] int32, per child, items with d < T.
    equal: [Q, S, F] int32, per child, items with d == T.
    rank: [Q, S] int32, rank of the slot's item among the selected items of the
      current node (index order).
    ties_before: [Q, S] int32, items with d == T before the current node.
    needed_ties: [Q] int32, how many items with d == T are selected in all.

  Returns:
    child [Q, S] int32 in [0, F), and the updated rank and ties_before.
  """
  eq_incl = _cumsum_last(equal)
  eq_before = ties_before[..., None] + eq_incl - equal
  selected = less + jnp.clip(needed_ties[:, None, None] - eq_before, 0, equal)
  sel_incl = _cumsum_last(selected)
  child = jnp.sum(sel_incl <= rank[..., None], axis=-1, dtype=jnp.int32)
  child = jnp.minimum(child, less.shape[-1] - 1)
  take = lambda a, i: jnp.take_along_axis(a, i[..., None], axis=-1)[..., 0]
  before = jnp.where(child > 0, take(sel_incl, jnp.maximum(child - 1, 0)), 0)
  return child, rank - before, take(eq_before, child)


def _gather_children(level: jax.Array, node: jax.Array) -> jax.Array:
  """[Q, G * FANOUT] level, [Q, S] node ids -> [Q, S, FANOUT] children."""
  q, n = level.shape
  grouped = level.reshape(q, n // FANOUT, FANOUT)
  return jax.vmap(lambda g, i: g[i])(grouped, node)


def _counted_histogram(query, planar, level, base, pad_dist, num_pad):
  """One pass: packed per-block words and the per-query bucket totals.

  Returns:
    (words, hist [Q, F] int32 with the padding items removed, pad_field [Q]).
  """
  field = _bucket(hamming.block_distances(query, planar), level, base)
  words = hamming.field_histogram_pass(field, level.num_fields)
  hist = hamming.total_fields(words, level.num_fields)
  pad_field = _bucket(pad_dist, level, base)
  pad_onehot = (jnp.arange(level.num_fields, dtype=jnp.uint32)[None] ==
                pad_field[:, None])
  return words, hist - num_pad * pad_onehot.astype(jnp.int32), pad_field


def _exact_threshold(query, planar, num_pad, kq, plan, pad_dist):
  """Radix select of the kq-th smallest distance, level by level.

  Args:
    query: [Q, W] uint32.
    planar: [W, B, BLOCK] uint32.
    num_pad: scalar int32, padding items (all-zero codes) in `planar`.
    kq: [Q] int32, the rank sought (1-based; 0 selects nothing).
    plan: `plan_levels(...)`.
    pad_dist: [Q] uint32, the distance of a padding item.

  Returns:
    (words of the last pass, t_field [Q]: T's bucket in that pass, T [Q],
    below [Q]: #(d < T), pad_field [Q]: the padding items' bucket).
  """
  num_q = query.shape[0]
  below = jnp.zeros((num_q,), jnp.int32)  # items with d < range start
  prefix = jnp.zeros((num_q,), jnp.int32)  # known top bits of T
  for level in plan:
    base = prefix << level.digit_bits if level.digit_bits else prefix
    words, hist, pad_field = _counted_histogram(query, planar, level, base,
                                                pad_dist, num_pad)
    cum = _cumsum_last(hist)
    # Bucket 0 of a "below" level already counts everything below its range.
    cum_total = cum if level.below else below[:, None] + cum
    target = _first_reaching(cum_total, kq)
    before = jnp.take_along_axis(
        cum_total, jnp.maximum(target - 1, 0)[:, None], axis=-1)[:, 0]
    below = jnp.where(target > 0, before, below)
    prefix = base + target - int(level.below)
  return words, target, prefix, below, pad_field


def _window_level(words: int) -> Level:
  """A one-pass level over D = 5 * words - 1 consecutive distances (+below)."""
  return Level(0, 0, hamming.FIELDS_PER_WORD * words - 1, True)


def _sampled_threshold(query, planar, num_valid, kq, plan, pad_dist):
  """Estimate of the kq-th smallest distance from every SAMPLE_STRIDE-th block.

  Returns:
    [Q] int32, the exact (kq * n_s / n)-th smallest distance of the sample.
  """
  num_blocks, block = planar.shape[1], planar.shape[2]
  sample = planar[:, ::SAMPLE_STRIDE]
  starts = jnp.arange(0, num_blocks, SAMPLE_STRIDE, dtype=jnp.int32) * block
  sample_valid = jnp.sum(jnp.clip(num_valid - starts, 0, block))
  sample_pad = jnp.int32(sample.shape[1] * block) - sample_valid
  fraction = sample_valid.astype(jnp.float32) / jnp.maximum(
      num_valid, 1).astype(jnp.float32)
  kq_sample = jnp.ceil(kq.astype(jnp.float32) * fraction).astype(jnp.int32)
  kq_sample = jnp.clip(kq_sample, jnp.minimum(kq, 1), sample_valid)
  _, _, threshold, _, _ = _exact_threshold(query, sample, sample_pad,
                                           kq_sample, plan, pad_dist)
  return threshold


def _select_threshold(query, planar, num_valid, kq, plan, pad_dist):
  """T, #(d < T) and the last pass's per-block words, exactly.

  Long chunks first try one pass over a window of distances around an
  estimate from a sample (about 1/SAMPLE_STRIDE of the work of a full
  pass); if T falls outside the window for any query of the batch, the full
  radix select finds T and the window pass is redone around it. Either way
  the result is exact.

  Returns:
    (packed words [Q, B] of the last pass, t_field [Q]: T's bucket in that
    pass, T [Q], below [Q]: #(d < T), pad_field [Q] int32: the padding items'
    bucket).
  """
  num_blocks = planar.shape[1]
  num_pad = jnp.int32(num_blocks * planar.shape[2]) - num_valid
  one_cheap_pass = len(plan) == 1 and plan[0].num_words <= WINDOW_WORDS
  if one_cheap_pass or num_blocks < SAMPLE_STRIDE * MIN_SAMPLE_BLOCKS:
    words, t_field, threshold, below, pad_field = _exact_threshold(
        query, planar, num_pad, kq, plan, pad_dist)
    return words, t_field, threshold, below, pad_field.astype(jnp.int32)

  window = _window_level(WINDOW_WORDS)
  half = window.num_digits // 2

  def window_pass(low):
    words, hist, pad_field = _counted_histogram(query, planar, window, low,
                                                pad_dist, num_pad)
    cum = _cumsum_last(hist)
    t_field = _first_reaching(cum, kq)
    below = jnp.take_along_axis(cum, jnp.maximum(t_field - 1, 0)[:, None],
                                axis=-1)[:, 0]
    inside = (cum[:, 0] < kq) & (cum[:, -1] >= kq)
    found = (words, t_field, low + t_field - 1, below,
             pad_field.astype(jnp.int32))
    return found, jnp.all(inside | (kq == 0))

  def exact():
    threshold = _exact_threshold(query, planar, num_pad, kq, plan, pad_dist)[2]
    return window_pass(jnp.maximum(threshold - half, 0))[0]

  estimate = _sampled_threshold(query, planar, num_valid, kq, plan, pad_dist)
  found, inside = window_pass(jnp.maximum(estimate - half, 0))
  return jax.lax.cond(inside, lambda: found, exact)


def chunk_topk(query: jax.Array, planar: jax.Array, num_valid: jax.Array, *,
               k: int, bits: int) -> tuple[jax.Array, jax.Array]:
  """Exact top-k of one database chunk, in (distance, index) order.

  Traceable (call it inside `jax.jit`); every size is static except
  `num_valid`.

  Args:
    query: [Q, W] uint32 packed queries.
    planar: [W, B, BLOCK] uint32 planar database chunk (`hamming.
      to_planar_blocks`); items at index >= num_valid must be all-zero codes.
    num_valid: scalar int32, the number of real items in the chunk.
    k: results per query.
    bits: K, the code length.

  Returns:
    indices [Q, k] int32 (chunk-local; -1 for missing slots) and distances
    [Q, k] int32 (K + 1 for missing slots).
  """
  words, num_blocks, block = planar.shape
  plan = plan_levels(bits, words)
  num_q = query.shape[0]
  num_valid = jnp.asarray(num_valid, jnp.int32)
  kq = jnp.minimum(jnp.int32(k), num_valid)  # items to return
  kq_q = jnp.broadcast_to(kq, (num_q,))
  pad_dist = jnp.sum(jax.lax.population_count(query), axis=-1,
                     dtype=jnp.uint32)  # distance to an all-zero code
  packed, t_field, threshold, below, pad_field = _select_threshold(
      query, planar, num_valid, kq_q, plan, pad_dist)
  needed_ties = kq_q - below

  # Per-block counts of d < T and d == T are read from the last pass's packed
  # words where needed (never stored per block): summed per group of FANOUT
  # blocks for the tree, and gathered for the chosen groups in the descent.
  num_fields = len(packed) * hamming.FIELDS_PER_WORD
  less_masks = hamming.field_masks(jnp.zeros_like(t_field), t_field, num_fields)
  eq_masks = hamming.field_masks(t_field, t_field + 1, num_fields)
  pad_less = (pad_field < t_field).astype(jnp.int32)
  pad_eq = (pad_field == t_field).astype(jnp.int32)
  groups = -(-num_blocks // FANOUT)
  block_ids = jnp.arange(groups * FANOUT, dtype=jnp.int32)
  pads = jnp.where(block_ids < num_blocks,
                   jnp.clip((block_ids + 1) * block - num_valid, 0, block), 0)
  pads = pads.reshape(groups, FANOUT)
  grouped = tuple(
      jnp.pad(w, ((0, 0), (0, groups * FANOUT - num_blocks))).reshape(
          num_q, groups, FANOUT) for w in packed)

  def block_counts(words, block_pads):
    """less, equal per block: words [Q, ..., FANOUT], pads [(Q,) ..., FANOUT]."""
    expand = lambda x: x.reshape(x.shape[:1] + (1,) * (words[0].ndim - 1))
    less = hamming.masked_field_sum(words, less_masks) - block_pads * expand(
        pad_less)
    equal = hamming.masked_field_sum(words, eq_masks) - block_pads * expand(
        pad_eq)
    return less, equal

  less, equal = block_counts(grouped, pads[None])
  less_tree = _tree(less.sum(axis=-1, dtype=jnp.int32))
  eq_tree = _tree(equal.sum(axis=-1, dtype=jnp.int32))

  # Descend, one slot per output position (index order): the group trees,
  # then the blocks of the chosen group, then its items.
  rank = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32)[None], (num_q, k))
  ties_before = jnp.zeros((num_q, k), jnp.int32)
  node = jnp.zeros((num_q, k), jnp.int32)
  for less_lvl, eq_lvl in zip(reversed(less_tree), reversed(eq_tree)):
    child, rank, ties_before = _descend_step(
        _gather_children(less_lvl, node), _gather_children(eq_lvl, node),
        rank, ties_before, needed_ties)
    node = node * FANOUT + child
  # Slots past the last selected item may point into zero-count padding.
  node = jnp.minimum(node, groups - 1)
  take_group = lambda g: jax.vmap(lambda a, i: a[i])(g, node)
  less, equal = block_counts(tuple(take_group(w) for w in grouped), pads[node])
  child, rank, ties_before = _descend_step(less, equal, rank, ties_before,
                                           needed_ties)
  node = jnp.minimum(node * FANOUT + child, num_blocks - 1)
  # Leaves: the items of the chosen blocks.
  codes = planar[:, node]  # [W, Q, k, BLOCK]
  dist = None
  for w in range(words):
    x = jax.lax.population_count(query[:, w, None, None] ^ codes[w])
    dist = x if dist is None else dist + x
  dist = dist.astype(jnp.int32)
  item = node[..., None] * block + jnp.arange(block, dtype=jnp.int32)
  valid = item < num_valid
  t = threshold[:, None, None]
  child, _, _ = _descend_step(
      (valid & (dist < t)).astype(jnp.int32),
      (valid & (dist == t)).astype(jnp.int32), rank, ties_before, needed_ties)
  take = lambda a: jnp.take_along_axis(a, child[..., None], axis=-1)[..., 0]
  index, distance = take(item), take(dist)
  filled = jnp.arange(k, dtype=jnp.int32)[None] < kq
  index = jnp.where(filled, index, -1)
  distance = jnp.where(filled, distance, bits + 1)
  distance, index = jax.lax.sort((distance, index), dimension=1, num_keys=2)
  return index, distance


def merge_topk(indices: jax.Array, distances: jax.Array, *,
               k: int) -> tuple[jax.Array, jax.Array]:
  """Exact top-k of several candidate lists, ties by index.

  Args:
    indices: [Q, C] int32 global indices (-1 for empty slots).
    distances: [Q, C] int32 (K + 1 for empty slots).
    k: results to keep (<= C).

  Returns:
    [Q, k] int32 indices and distances in (distance, index) order.
  """
  distances, indices = jax.lax.sort((distances, indices), dimension=1,
                                    num_keys=2)
  return indices[:, :k], distances[:, :k]


def describe_plan(bits: int) -> str:
  """Human-readable plan, e.g. '64 bits: d>>3 (9 buckets) | 3 bits (+below)'."""
  parts = []
  for level in plan_levels(bits):
    if level.digit_bits is None:
      parts.append(f'd>>{level.shift} ({level.num_digits} buckets)')
    else:
      parts.append(f'{level.digit_bits} bits' + (' (+below)' if level.below
                                                  else ''))
  return f'{bits} bits: ' + ' | '.join(parts)


