"""Name -> object registries (methods, trainers, datasets, image encoders)."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar('T')


class Registry(Generic[T]):
  """A named collection of objects, filled with the `register` decorator.

  Example:
    DATASETS = Registry('dataset')

    @DATASETS.register('synthetic')
    def load_synthetic(config): ...

    DATASETS.get('synthetic')  # -> load_synthetic
  """

  def __init__(self, kind: str):
    self._kind = kind
    self._entries: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    """Returns a decorator that registers its argument under `name`."""

    def decorator(obj: T) -> T:
      if name in self._entries:
        raise ValueError(f'{self._kind} {name!r} is already registered.')
      self._entries[name] = obj
      return obj

    return decorator

  def get(self, name: str) -> T:
    """Returns the entry for `name`; a clear KeyError lists the known names."""
    try:
      return self._entries[name]
    except KeyError:
      raise KeyError(f'Unknown {self._kind} {name!r}; known: '
                     f'{", ".join(sorted(self._entries)) or "(none)"}.') from None

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries
