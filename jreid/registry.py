"""Name -> component registries, so configs choose components by string.

A new component is one function plus one line::

    BACKBONES = Registry('backbone')

    @BACKBONES.register('resnet50')
    def resnet50(...): ...

    BACKBONES.get(config.model.backbone.name)
"""

import difflib
from collections.abc import Callable
from typing import Any


class Registry:
  """A named collection of factories of one kind (backbone, pooling, head, ...)."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, Callable[..., Any]] = {}

  def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Returns a decorator that registers its argument under `name`."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
      if name in self._entries:
        raise ValueError(
            f'{self.kind} {name!r} is registered twice '
            f'({self._entries[name].__module__} and {fn.__module__}); rename one of them.'
        )
      self._entries[name] = fn
      return fn

    return decorator

  def get(self, name: str) -> Callable[..., Any]:
    """Returns the factory registered under `name`; unknown names suggest the nearest one."""
    if name in self._entries:
      return self._entries[name]
    known = self.names()
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f'did you mean {close[0]!r}? ' if close else ''
    raise ValueError(f'unknown {self.kind} {name!r}; {hint}known: {", ".join(known)}')

  def names(self) -> list[str]:
    """Registered names, sorted."""
    return sorted(self._entries)

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __repr__(self) -> str:
    return f'Registry({self.kind!r}, names={self.names()})'
