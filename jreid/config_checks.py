"""Command-line config checks: a misspelt key or a wrong value type is one clear line.

`ml_collections.config_flags` reports an unknown override key (`--config.optim.lrr=1`) as a
KeyError deep inside absl's flag parsing, with three chained tracebacks, and a failing config file
as a traceback inside a flags error. `check_command_line(argv)` runs before absl parses the flags:
it loads the config file named by `--config=path[:variant]` (a Python module, only from the path
the user passes), then checks every `--config.a.b=value` override against it, and raises a
`ConfigError` such as

  unknown config key 'optim.lrr'; did you mean 'optim.lr'?
  --config.batch_size=abc: config.batch_size is an int (now 32); 'abc' is not an int.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
from ml_collections.config_flags import tuple_parser

from jreid import config_ranges
from jreid.config_ranges import ConfigError  # Raised by every check here; its home breaks a cycle.


def flatten(config: ml_collections.ConfigDict, prefix: str = '') -> Iterator[tuple[str, Any]]:
  """(dotted key, value) of every key of `config`, inner ConfigDicts included, in order."""
  for key, value in config.items():
    path = f'{prefix}{key}'
    yield path, value
    if isinstance(value, ml_collections.ConfigDict):
      yield from flatten(value, path + '.')


def suggest_key(key: str, config: ml_collections.ConfigDict) -> str | None:
  """The valid dotted key nearest to `key`: a sibling if its parent exists, else any key."""
  parent, _, leaf = key.rpartition('.')
  node: Any = config
  for part in parent.split('.') if parent else []:
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      node = None
      break
    node = node[part]
  if isinstance(node, ml_collections.ConfigDict):
    close = difflib.get_close_matches(leaf, list(node.keys()), n=1, cutoff=0.5)
    if close:
      return f'{parent}.{close[0]}' if parent else close[0]
  close = difflib.get_close_matches(key, [path for path, _ in flatten(config)], n=1, cutoff=0.5)
  return close[0] if close else None


# Keys that moved: old dotted key -> where the setting lives now.
MOVED = {
    'qaconv.loss': "config.loss.names: ('qaconv_triplet',) (QAConv 2.1) or ('qaconv_pairwise',)",
    'qaconv.margin': 'config.loss.qaconv_triplet.margin',
    'pplr.cam': "config.loss.names with 'camera_proxy' (the :cam variant)",
    'pplr.beta': 'config.loss.pplr_pglr.beta',
    'pplr.epsilon': 'config.loss.pplr_part.epsilon',
    'pplr.lam_cam': 'config.loss.camera_proxy.weight',
    'pplr.num_hards': 'config.loss.camera_proxy.num_hards',
    'pplr.temperature': 'config.loss.camera_proxy.temperature',
}


def lookup(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value at dotted `key`; ConfigError with the nearest valid key when there is none."""
  node: Any = config
  for part in key.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      if key in MOVED:
        raise ConfigError(f"config key '{key}' has moved: set {MOVED[key]} instead.")
      near = suggest_key(key, config)
      hint = f"; did you mean '{near}'?" if near else '; see the config file for the valid keys.'
      raise ConfigError(f"unknown config key '{key}'{hint}")
    node = node[part]
  return node


_TRUE = ('true', 't', '1', 'yes')
_FALSE = ('false', 'f', '0', 'no')


def check_value(key: str, text: str, current: Any) -> None:
  """Raises ConfigError when `text` cannot become the type of the current value of `key`."""
  if isinstance(current, bool):
    ok, kind = text.lower() in _TRUE + _FALSE, 'a bool (true or false)'
  elif isinstance(current, int):
    kind = 'an int'
    try:
      int(text)
      ok = True
    except ValueError:
      ok = False
  elif isinstance(current, float):
    kind = 'a float'
    try:
      float(text)
      ok = True
    except ValueError:
      ok = False
  else:
    return  # Strings, tuples, None: ml_collections parses them.
  if not ok:
    raise ConfigError(f'--config.{key}={text}: config.{key} is {kind} (now {current!r}); '
                      f'{text!r} is not {kind}.')


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """`get_config(variant)` of the module at `path` of `spec` = 'path[:variant]'."""
  path, sep, variant = spec.partition(':')
  if not os.path.isfile(path):
    raise ConfigError(f'config file {path!r} (from --config={spec}) does not exist; pass a config '
                      'module such as --config=configs/bagtricks.py.')
  module_name = f'_jreid_config_{abs(hash(os.path.abspath(path)))}'
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    if not hasattr(module, 'get_config'):
      raise ConfigError(f'config file {path} has no get_config() function.')
    config = module.get_config(variant) if sep else module.get_config()
  except ConfigError:
    raise
  except (ValueError, TypeError, KeyError, AttributeError) as e:
    raise ConfigError(f'{spec}: {e}') from None
  finally:
    sys.modules.pop(module_name, None)
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f'get_config() of {path} returned {type(config).__name__}, not a ConfigDict.')
  return config


def parse_command_line(argv: Sequence[str],
                       flag: str = 'config') -> tuple[str | None, list[tuple[str, str | None]]]:
  """The config spec and the (key, value text) overrides of `argv` (value None: a bare bool).

  Understands `--config=SPEC`, `--config SPEC`, `--config.a.b=V`, `--config.a.b V`,
  `--config.a.b` and `--noconfig.a.b` (booleans), stopping at `--`.
  """
  spec, overrides = None, []
  args = list(argv[1:])
  i = 0
  while i < len(args):
    arg = args[i]
    i += 1
    if arg == '--':
      break
    name, eq, value = arg.lstrip('-').partition('=')
    if not arg.startswith('-'):
      continue
    if name == flag:
      if not eq and i < len(args):
        value, i = args[i], i + 1
      spec = value
    elif name.startswith(flag + '.'):
      key = name[len(flag) + 1:]
      if not eq:
        nxt = args[i] if i < len(args) else None
        if nxt is not None and not nxt.startswith('-'):
          value, i = nxt, i + 1
        else:
          value = None
      overrides.append((key, value))
    elif name.startswith(f'no{flag}.') and not eq:
      overrides.append((name[len(flag) + 3:], 'false'))
  return spec, overrides


def check_command_line(argv: Sequence[str], flag: str = 'config') -> None:
  """Checks the config file and every override of `argv` before absl parses them.

  Raises:
    ConfigError: a missing or failing config file, an unknown key (with the nearest valid key), a
      value of the wrong type or out of its range (`jreid.config_ranges`).
  """
  spec, overrides = parse_command_line(argv, flag)
  if spec is None:
    return  # absl reports the missing required flag.
  config = load_config_file(spec)
  for key, text in overrides:
    current = lookup(config, key)
    if isinstance(current, ml_collections.ConfigDict):
      raise ConfigError(f"config key '{key}' is a group of settings, not a value; override one of "
                        f"its keys, e.g. --config.{key}.{next(iter(current.keys()), 'name')}=...")
    if text is None:
      if not isinstance(current, bool):
        raise ConfigError(f'--config.{key} needs a value: --config.{key}=VALUE.')
      continue
    check_value(key, text, current)
  check_config(with_overrides(config, overrides))


def with_overrides(config: ml_collections.ConfigDict,
                   overrides: Sequence[tuple[str, str | None]]) -> ml_collections.ConfigDict:
  """A copy of `config` with the checked `overrides` applied as ml_collections' flags apply them.

  A scalar given twice takes its last value; a tuple given twice (`--config.t=1 --config.t=2`)
  joins them. Keys of other types (None placeholders) are left for ml_collections to handle.
  """
  config = copy.deepcopy(config)
  tuples: dict[str, tuple[Any, ...]] = {}
  for key, text in overrides:
    parent, _, leaf = key.rpartition('.')
    node = lookup(config, parent) if parent else config
    current = node[leaf]
    if isinstance(current, bool):
      value = text is None or text.lower() in _TRUE
    elif isinstance(current, int):
      value = int(text)
    elif isinstance(current, float):
      value = float(text)
    elif isinstance(current, tuple):
      try:
        value = tuples[key] = tuples.get(key, ()) + tuple_parser.TupleParser().parse(text)
      except ValueError:
        continue  # ml_collections reports the malformed tuple.
    elif isinstance(current, str):
      value = text
    else:
      continue
    node[leaf] = value
  return config


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks a whole config before any data is loaded: every section is one the method of
  `config.method` reads (and has), no loss term is configured without being used, every numeric
  value is in its range (`jreid.config_ranges`), and the method's own checks (its optional
  `check_config`).

  Raises:
    ConfigError: one line naming the key and the fix.
  """
  from jreid import config_defaults  # pylint: disable=g-import-not-at-top
  from jreid import method as method_lib  # pylint: disable=g-import-not-at-top
  from jreid import objectives  # pylint: disable=g-import-not-at-top
  name = config.get('method', None)
  try:
    module = method_lib.load(name)
    expected = config_defaults.method_config(name)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  extra = [k for k in config.keys() if k not in expected]
  if extra:
    raise ConfigError(
        f'config.{extra[0]} is not read by method {name!r}: remove it (the sections of '
        f'{name!r} are {", ".join(expected.keys())}; its own settings are in jreid/methods/'
        f'{name}.py default_config()).')
  missing = [k for k in expected.keys() if k not in config]
  if missing:
    raise ConfigError(f'the config has no section config.{missing[0]}, which method {name!r} '
                      f'reads: start from jreid.config_defaults.method_config({name!r}) or a '
                      'config file in configs/.')
  base = config_defaults.base_config()
  for section in expected.keys():
    if section in base and section != 'model':
      continue  # Shared sections: their keys are checked by the lock and the command line.
    if section == 'model' or not isinstance(expected[section], ml_collections.ConfigDict):
      continue
    unknown = [k for k in config[section].keys() if k not in expected[section]]
    if unknown:
      raise ConfigError(f'config.{section}.{unknown[0]} is not read by method {name!r}; '
                        f'the keys of config.{section} are {", ".join(expected[section].keys())}.')
  if 'loss' in config:
    unused = objectives.unused_term_sections(config.loss)
    if unused:
      raise ConfigError(
          f'config.loss.{unused[0]} is set but {unused[0]!r} is not in config.loss.names '
          f'{tuple(config.loss.names)}: add it to config.loss.names or leave its settings at '
          'their defaults.')
  config_ranges.check_ranges(config)
  if 'sampler' in config and 'set_weight' in config.sampler and config.sampler.set_weight and (
      config.sampler.get('name') != 'set_reweight'):
    raise ConfigError(f"config.sampler.set_weight is only read by config.sampler.name="
                      f"'set_reweight' (now {config.sampler.get('name')!r}).")
  _check_weight_file(config)
  own_check = getattr(module, 'check_config', None)
  if own_check is not None:
    try:
      own_check(config)
    except ConfigError:
      raise
    except ValueError as e:
      raise ConfigError(str(e)) from None


def _check_weight_file(config: ml_collections.ConfigDict) -> None:
  """config.model.pretrained names a file of weights (judged by its first bytes), checked before
  the data is loaded."""
  path = config.model.get('pretrained', '') if 'model' in config else ''
  if not path:
    return
  from jreid import checkpoint  # pylint: disable=g-import-not-at-top
  path = os.path.expanduser(str(path))
  if not os.path.isfile(path):
    raise ConfigError(f'config.model.pretrained={path!r}: no such file; pass the path of a '
                      'PyTorch state dict (.pth), .safetensors or .npz file of weights.')
  kind, what = checkpoint.sniff_weight_file(path)
  if kind == 'other':
    raise ConfigError(f'config.model.pretrained: {path} is not a weight file: it is {what}; '
                      f'{checkpoint.EXPECTED_WEIGHTS}.')
