"""One syntax for the variant argument of every config: `--config=configs/X.py:ARG`.

ARG is a comma-separated list of tokens (big_vision's `parse_arg` style):

  key=value     sets a variant key (its type is the default's: bool, int, float or str);
  name          a shorthand of the config (e.g. `market1501` for `dataset=market1501`, `msmt17_all`
                for `dataset=msmt17,combine_all=true`), or a bool key set to true (`cam`).

So `configs/bagtricks.py:market1501,r50_ibn` and
`configs/bagtricks.py:dataset=market1501,backbone=r50_ibn` are the same config. Unknown tokens,
keys and values are one-line errors naming the valid ones.

Also `sibling(__file__, name, arg)`: another config file of the same folder, loaded by path, so
config files build on each other and load from any working directory.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

_TRUE = ('true', 't', '1', 'yes')
_FALSE = ('false', 'f', '0', 'no')


def _parse_value(key: str, text: str, default: Any, where: str) -> Any:
  if isinstance(default, bool):
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise ValueError(f'{where}: variant key {key!r} is a bool; {text!r} is not true or false.')
  for kind in (int, float):
    if isinstance(default, kind):
      try:
        return kind(text)
      except ValueError:
        raise ValueError(f'{where}: variant key {key!r} is a {kind.__name__}; {text!r} is not.'
                         ) from None
  return text


def parse_arg(arg: str | None, *, where: str,
              shorthands: Mapping[str, Mapping[str, Any]] | None = None,
              choices: Mapping[str, Sequence[Any]] | None = None,
              **defaults: Any) -> ml_collections.ConfigDict:
  """The variant keys of `arg` (module docstring) over `defaults`.

  Args:
    arg: the text after ':' in --config=FILE:ARG, or None.
    where: the config file, for messages (e.g. 'configs/pplr.py').
    shorthands: name -> {key: value}: bare tokens that set several keys.
    choices: key -> its allowed values.
    **defaults: every variant key with its default value (which fixes its type).

  Returns:
    A ConfigDict of the keys (unlocked copy; read it, do not add to it).
  """
  shorthands = dict(shorthands or {})
  choices = dict(choices or {})
  out = dict(defaults)
  explicit: dict[str, str] = {}
  for token in [t.strip() for t in (arg or '').split(',') if t.strip()]:
    key, eq, text = token.partition('=')
    key = key.strip()
    if eq:
      if key not in defaults:
        raise ValueError(f'{where}: unknown variant key {key!r} in {token!r}; keys: '
                         f'{", ".join(sorted(defaults))}.')
      out[key] = _parse_value(key, text.strip(), defaults[key], where)
      explicit[key] = token
    elif token in shorthands:
      for k, v in shorthands[token].items():
        if k in explicit and out[k] != v:
          raise ValueError(f'{where}: variant {token!r} sets {k}={v!r}, which contradicts '
                           f'{explicit[k]!r}.')
        out[k] = v
        explicit[k] = token
    elif isinstance(defaults.get(token), bool):
      out[token] = True
      explicit[token] = token
    else:
      names = sorted(shorthands) + sorted(k for k, v in defaults.items() if isinstance(v, bool))
      raise ValueError(f'{where}: unknown variant {token!r}; use one of '
                       f'{", ".join(":" + n for n in names)}, key=value with keys '
                       f'{", ".join(sorted(defaults))}, or no variant (the embedded synthetic '
                       'run).')
  for key, allowed in choices.items():
    if out[key] not in allowed:
      raise ValueError(f'{where}: variant key {key}={out[key]!r} is not one of '
                       f'{", ".join(map(str, allowed))}.')
  return ml_collections.ConfigDict(out)


def sibling(config_file: str, name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file `name` in the folder of `config_file` (pass
  `__file__`): config files build on each other without importing `configs` as a package."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
  module_name = f'_jreid_config_{abs(hash(path))}'
  spec = importlib.util.spec_from_file_location(module_name, path)
  if spec is None or spec.loader is None:
    raise ValueError(f'config file {path} cannot be loaded.')
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  finally:
    sys.modules.pop(module_name, None)
  return module.get_config(arg)
