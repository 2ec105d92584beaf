"""Pieces the results benchmarks share: config arguments, markdown tables."""
from __future__ import annotations

DIRECTIONS = (('i2t', 'I->T'), ('t2i', 'T->I'))


def map_table(rows: list[tuple[str, dict[str, dict[str, float]]]],
              bits: list[str]) -> str:
  """A markdown table: one row per (name, {bits: {direction: mAP}}), columns
  direction x bits (I->T at every length, then T->I)."""
  header = ['method'] + [f'{name} {b}' for _, name in DIRECTIONS for b in bits]
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  for name, maps in rows:
    cells = [f'{maps[b][d]:.4f}' for d, _ in DIRECTIONS for b in bits]
    lines.append('| ' + ' | '.join([name] + cells) + ' |')
  return '\n'.join(lines)


def method_rows(method: str, runs: dict[str, dict], bits: list[str]
               ) -> list[tuple[str, dict[str, dict[str, float]]]]:
  """`map_table` rows of one method's runs {bits: {'map', 'sign_map'?}}: its
  mAP, and for real-valued outputs (runs with 'sign_map') the cosine mAP and
  the Hamming mAP of the embeddings' sign() codes."""
  name = method.upper()
  if all(runs[b].get('sign_map') for b in bits):
    return [(f'{name} (cosine)', {b: runs[b]['map'] for b in bits}),
            (f'{name} sign() codes', {b: runs[b]['sign_map'] for b in bits})]
  return [(name, {b: runs[b]['map'] for b in bits})]


def same_model_as(method_class, runs: dict[str, dict]) -> str | None:
  """The code length of an earlier run that `bits` would only repeat.

  For a method whose outputs do not take their width from `config.bits`
  (`methods.base.width_from_bits`, e.g. MHTN's softmax over the labels),
  runs that differ only in `bits` train the same model: the first one
  stands for the others. None: train this length.
  """
  from crossmodal_hash.methods import base  # pylint: disable=g-import-not-at-top
  if base.width_from_bits(method_class) or not runs:
    return None
  return next(iter(runs))


def run_arg(bits: str, *extra: str) -> str:
  """The config argument of one run: bits, no progress bar, then `extra`."""
  return ','.join(filter(None, [f'bits={bits}', 'train.progress=false',
                                *extra]))
