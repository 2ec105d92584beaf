"""The standard retrieval protocols of each dataset, and the split of a run.

| dataset      | queries      | retrieval set      | training (from retrieval) |
|--------------|--------------|--------------------|---------------------------|
| mirflickr25k | 2,000        | the other 18,015   | 10,000                    |
| nuswide      | 2,100        | the rest           | 10,500                    |
| mscoco       | 5,000        | the rest           | 10,000                    |
| iaprtc12     | 2,000        | the rest           | 10,000                    |
| wikipedia    | 693 (test)   | 2,173 (train)      | the same 2,173            |

Random protocols are drawn from `config.dataset.split_seed`; a dataset that
carries its own split (Wikipedia, a features file with index arrays) uses it.
`split_for_run` writes the split into the workdir with its checksum and reuses
it on resume.
"""
from __future__ import annotations

import dataclasses
import os

import ml_collections

from crossmodal_hash.data import splits
from crossmodal_hash.data import types


@dataclasses.dataclass(frozen=True)
class Protocol:
  """A retrieval protocol.

  Attributes:
    num_query: Q queries.
    num_train: T training items drawn from the retrieval set.
    num_items: the dataset size the protocol expects (None: any); the
      retrieval set is the other `num_items - Q` items.
    fixed: the dataset defines the split itself (`MultiModalData.split`).
  """
  num_query: int
  num_train: int
  num_items: int | None = None
  fixed: bool = False


PROTOCOLS = {
    'mirflickr25k': Protocol(num_query=2000, num_train=10000, num_items=20015),
    'nuswide': Protocol(num_query=2100, num_train=10500),
    'mscoco': Protocol(num_query=5000, num_train=10000),
    'iaprtc12': Protocol(num_query=2000, num_train=10000),
    'wikipedia': Protocol(num_query=693, num_train=2173, num_items=2866,
                          fixed=True),
}


def draw_split(data: types.MultiModalData, num_query: int, num_train: int,
               seed: int) -> types.Split:
  """The dataset's fixed split if it has one, else a seeded random split.

  Args:
    data: the dataset.
    num_query: Q (a fixed split must have Q queries; 0 accepts any). Without
      a fixed split, 0 means no test queries (a file that is a training set
      only: every item is retrieval and training item).
    num_train: T (likewise for the training set; 0 without a fixed split:
      the whole retrieval set).
    seed: the split seed of random splits.

  Returns:
    The split; a fixed split whose sizes differ from Q, T raises ValueError.
  """
  if data.split is None:
    return splits.random_split(len(data), num_query,
                               num_train or len(data) - num_query, seed)
  split = data.split
  for name, want, got in (('num_query', num_query, len(split.query)),
                          ('num_train', num_train, len(split.train))):
    if want and want != got:
      raise ValueError(
          f'The dataset defines its own split with {got} items where '
          f'config.dataset.{name}={want}; set it to {got} (or 0).')
  return split


def split_for_run(data: types.MultiModalData,
                  dataset_config: ml_collections.ConfigDict, workdir: str, *,
                  write: bool = True) -> types.Split:
  """The run's split: drawn (or fixed), then saved to or checked against
  `<workdir>/split.npz`.

  Args:
    data: the dataset.
    dataset_config: `config.dataset` (num_query, num_train, split_seed and
      num_val, the validation queries carved out of the training set).
    workdir: the run's directory.
    write: save the split if the workdir has none (process 0 only).

  Returns:
    The split. Raises splits.SplitMismatchError if the workdir holds another.
  """
  seed = int(dataset_config.get('split_seed', 0))
  split = draw_split(data, int(dataset_config.num_query),
                     int(dataset_config.num_train), seed)
  split = splits.carve_validation(split, int(dataset_config.get('num_val', 0)),
                                  seed)
  return splits.reuse_or_save(os.path.join(workdir, 'split.npz'), split,
                              write=write)


def check_protocol(name: str, data: types.MultiModalData) -> None:
  """Raises if `data` cannot follow `name`'s standard protocol."""
  protocol = PROTOCOLS[name]
  if protocol.num_items is not None and len(data) != protocol.num_items:
    raise ValueError(f'The {name} protocol expects {protocol.num_items} items; '
                     f'the data has {len(data)}.')
  if protocol.num_query + protocol.num_train > len(data) and not (
      protocol.fixed):
    raise ValueError(f'The {name} protocol needs more than '
                     f'{protocol.num_query} + {protocol.num_train} items; the '
                     f'data has {len(data)}.')
