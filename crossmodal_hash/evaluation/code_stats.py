"""Code-quality diagnostics: do the codes use their bits, or have they collapsed?

A hashing run can "succeed" with codes that carry almost nothing: every item
mapped to one code, or bits that never change. mAP alone hides it (one shared
code still ranks every item at the label prior, near random codes' mAP). Per
array of ±1 codes [N, K] (`describe`):

  distinct_codes       the number of different codes among the N items;
  top_code_share       the share of items that have the most common code;
  bit_balance          per bit, the fraction of items with +1 (0.5 is ideal);
  constant_bits        bits with the same value for every item;
  mean_abs_bit_correlation   mean |Pearson correlation| over pairs of
                       non-constant bits (0 for independent bits; None with
                       fewer than two such bits).

`collapse_reasons` flags a collapse: fewer distinct codes than 1% of the items
(COLLAPSE_DISTINCT_FRACTION), any constant bit, or one code shared by more
than half of the items (COLLAPSE_TOP_SHARE).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from absl import logging
import numpy as np

COLLAPSE_DISTINCT_FRACTION = 0.01
COLLAPSE_TOP_SHARE = 0.5

# The arrays of a code set, in display order (see evaluation/metrics.py).
CODE_KEYS = ('image_query', 'text_query', 'image_db', 'text_db')


def describe(codes: np.ndarray) -> dict[str, Any]:
  """The diagnostics of one array of codes.

  Args:
    codes: [N, K] in {-1, +1} (any integer or float dtype).

  Returns:
    {'num_items': N, 'bits': K, 'distinct_codes': int, 'top_code_share':
     float, 'bit_balance': [K] floats (fraction of +1), 'constant_bits': int,
     'mean_abs_bit_correlation': float or None}.
  """
  codes = np.asarray(codes)
  n, k = codes.shape
  positive = codes > 0
  if n:
    packed = np.packbits(positive, axis=1)
    _, counts = np.unique(packed, axis=0, return_counts=True)
  else:
    counts = np.zeros(0, np.int64)
  balance = positive.mean(axis=0) if n else np.full(k, np.nan)
  constant = (balance == 0) | (balance == 1)
  varying = positive[:, ~constant].astype(np.float64)
  correlation = None
  if varying.shape[1] >= 2:
    corr = np.corrcoef(varying, rowvar=False)
    off_diagonal = ~np.eye(len(corr), dtype=bool)
    correlation = float(np.abs(corr[off_diagonal]).mean())
  return {
      'num_items': int(n),
      'bits': int(k),
      'distinct_codes': int(len(counts)),
      'top_code_share': float(counts.max() / n) if n else 0.0,
      'bit_balance': [float(b) for b in balance],
      'constant_bits': int(constant.sum()),
      'mean_abs_bit_correlation': correlation,
  }


def describe_set(codes: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
  """{array name: `describe`} for the arrays of CODE_KEYS present in `codes`."""
  return {key: describe(codes[key]) for key in CODE_KEYS if key in codes}


def collapse_reasons(stats: Mapping[str, Any]) -> list[str]:
  """Why one array's codes (a `describe` result) count as collapsed; [] if not.
  """
  n, reasons = stats['num_items'], []
  if n >= 2 and stats['distinct_codes'] < max(2, COLLAPSE_DISTINCT_FRACTION
                                              * n):
    reasons.append(f"{stats['distinct_codes']} distinct codes for {n} items")
  if n >= 2 and stats['constant_bits']:
    reasons.append(f"{stats['constant_bits']} of {stats['bits']} bits "
                   'constant')
  if n >= 2 and stats['top_code_share'] > COLLAPSE_TOP_SHARE:
    reasons.append(f"{stats['top_code_share']:.0%} of items share one code")
  return reasons


def collapse_warnings(sets: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """One warning per collapsed code set.

  Args:
    sets: {set name: {array name: `describe` result}}.

  Returns:
    e.g. ['SSAH (32 bits): codes have collapsed: image_query: 1 distinct
    codes for 100 items, 32 of 32 bits constant; ...'].
  """
  out = []
  for name, arrays in sets.items():
    found = [f'{key}: {", ".join(reasons)}' for key, stats in arrays.items()
             if (reasons := collapse_reasons(stats))]
    if found:
      out.append(f'{name}: codes have collapsed: ' + '; '.join(found))
  return out


def summary(stats: Mapping[str, Any]) -> dict[str, Any]:
  """`describe` without the per-bit list: what metrics.jsonl records."""
  balance = stats['bit_balance']
  return {
      'distinct_codes': stats['distinct_codes'],
      'top_code_share': stats['top_code_share'],
      'constant_bits': stats['constant_bits'],
      'mean_abs_bit_correlation': stats['mean_abs_bit_correlation'],
      'min_bit_balance': min(balance) if balance else None,
      'max_bit_balance': max(balance) if balance else None,
  }


def periodic_summary(arrays: Mapping[str, Mapping[str, Any]]
                    ) -> dict[str, dict[str, Any]]:
  """{array: `summary`} of a periodic evaluation's code set; logs a warning
  (absl) when the codes have collapsed, so a collapsing run shows it while it
  trains."""
  for warning in collapse_warnings({'periodic evaluation': arrays}):
    logging.warning('%s', warning)
  return {key: summary(stats) for key, stats in arrays.items()}


def format_table(arrays: Mapping[str, Mapping[str, Any]]) -> str:
  """A fixed-width table of one code set's diagnostics, arrays as columns.

    code quality              image_query  text_query  image_db  text_db
    ---------------------------------------------------------------------
    distinct codes                    500         498      2000     1987
    ...

  Args:
    arrays: {array name: `describe` result}.
  """
  rows = (
      ('distinct codes', lambda s: f"{s['distinct_codes']} / {s['num_items']}"),
      ('most common code share', lambda s: f"{s['top_code_share']:.3f}"),
      ('constant bits', lambda s: f"{s['constant_bits']} / {s['bits']}"),
      ('bit balance (min-max +1)', lambda s: (
          f"{min(s['bit_balance']):.2f}-{max(s['bit_balance']):.2f}"
          if s['bit_balance'] else '-')),
      ('mean |bit correlation|', lambda s: (
          '-' if s['mean_abs_bit_correlation'] is None else
          f"{s['mean_abs_bit_correlation']:.3f}")),
  )
  names = list(arrays)
  label_width = max(len('code quality'), *(len(r[0]) for r in rows))
  cells = [[fn(arrays[k]) for k in names] for _, fn in rows]
  widths = [max(len(k), *(len(c[i]) for c in cells))
            for i, k in enumerate(names)]
  lines = ['  '.join(['code quality'.ljust(label_width)] +
                     [k.rjust(w) for k, w in zip(names, widths)])]
  lines.append('-' * len(lines[0]))
  for (label, _), row in zip(rows, cells):
    lines.append('  '.join([label.ljust(label_width)] +
                           [c.rjust(w) for c, w in zip(row, widths)]))
  return '\n'.join(lines)


def format_warnings(warnings: list[str]) -> str:
  """The warnings as a loud block for the printed table ('' if none)."""
  if not warnings:
    return ''
  lines = ['!' * 72]
  for warning in warnings:
    head, _, arrays = warning.partition(': codes have collapsed: ')
    lines.append(f'WARNING: {head}: codes have collapsed:' if arrays else
                 f'WARNING: {warning}')
    lines += [f'  {a}' for a in arrays.split('; ') if a]
  lines += ['A constant bit carries nothing, and items that share a code are '
            'tied in every ranking: see the code-quality block of each set.',
            '!' * 72]
  return '\n'.join(lines)
