"""Pretrained PyTorch weights -> jreid variables (params / batch_stats).

`config.model.pretrained = PATH` loads a weight file at initialisation through
`load_pretrained`. The file's state dict is converted by the first entry of `CONVERTERS` whose
detector accepts it:

* OSNet (torchreid, or a FastReID checkpoint with an OSNet backbone): `jreid.weights_osnet`;
* a FastReID model-zoo checkpoint (`Baseline`: BoT/AGW/SBS, or `MGN`): `jreid.weights_resnet`;
* anything else as a plain torchvision/timm/IBN-Net ResNet state dict: `jreid.weights_resnet`.

Every mismatch is an error naming the keys: weights the model needs but the file lacks, file
weights the model has no place for, and shape mismatches (`merge`). Files are read with
`jreid.checkpoint.load_torch_state_dict` (torch.load(weights_only=True), .safetensors, .npz
without pickle), never by unpickling.

A new architecture is a module with a detector `is_X(state_dict)` and a converter
`convert_X_checkpoint(state_dict, target_paths, scope, source) -> {path: array}` (the shared
tensor rules are in `jreid.weights_common`), plus one row of `CONVERTERS`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jreid import weights_osnet
from jreid import weights_resnet
from jreid.checkpoint import load_torch_state_dict
from jreid.weights_common import Path, WeightConversionError, is_fastreid
from jreid.weights_resnet import convert_resnet


@dataclasses.dataclass(frozen=True)
class Converter:
  """One architecture's weight converter.

  Attributes:
    name: the architecture ('osnet', 'fastreid', 'resnet').
    detect: `detect(state_dict)` is True for the state dicts this converter reads.
    convert: `convert(state_dict, target_paths, scope, source) -> {path: array}`, where
      `target_paths` are the model's flattened variable paths, `scope` is 'backbone' or 'all'
      and `source` names the file in errors.
  """

  name: str
  detect: Callable[[Mapping[str, Any]], bool]
  convert: Callable[[Mapping[str, np.ndarray], set[Path], str, str], dict[Path, np.ndarray]]


# The first converter whose detector accepts a state dict reads it, so the more specific come
# first: a FastReID OSNet checkpoint is also a FastReID checkpoint, and the plain ResNet
# converter takes whatever is left (its mismatches are then reported by `merge`).
CONVERTERS: tuple[Converter, ...] = (
    Converter('osnet', weights_osnet.is_osnet, weights_osnet.convert_osnet_checkpoint),
    Converter('fastreid', is_fastreid, weights_resnet.convert_fastreid_checkpoint),
    Converter('resnet', lambda state_dict: True, weights_resnet.convert_resnet_checkpoint),
)


def find_converter(state_dict: Mapping[str, Any]) -> Converter:
  """The first entry of `CONVERTERS` whose detector accepts `state_dict`."""
  return next(c for c in CONVERTERS if c.detect(state_dict))


def _flatten(tree: Any, prefix: Path = ()) -> dict[Path, Any]:
  if isinstance(tree, Mapping):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, (*prefix, str(k))))
    return out
  return {prefix: tree}


def _fmt(paths) -> str:
  paths = sorted('/'.join(p) for p in paths)
  more = f' ... and {len(paths) - 10} more' if len(paths) > 10 else ''
  return ', '.join(paths[:10]) + more


def merge(variables: Mapping[str, Any], converted: dict[Path, np.ndarray], scope: Path = (),
          source: str = 'the weight file') -> dict[str, Any]:
  """`variables` with every leaf under `scope` (e.g. ('backbone',)) replaced by `converted`.

  Strict inside the scope: a leaf of the model that `converted` lacks, a converted weight the
  model has no place for, or a shape mismatch is a `WeightConversionError` listing them.
  Converted weights outside the scope are ignored.
  """
  flat = _flatten(jax.device_get(variables))
  in_scope = lambda p: p[1:1 + len(scope)] == tuple(scope)
  wanted = {p for p in flat if in_scope(p)}
  given = {p for p in converted if in_scope(p)}
  missing = wanted - given
  unexpected = given - wanted
  mismatched = [f'{"/".join(p)}: model {tuple(np.shape(flat[p]))} vs file '
                f'{tuple(converted[p].shape)}'
                for p in sorted(wanted & given) if np.shape(flat[p]) != converted[p].shape]
  problems = []
  if missing:
    problems.append(f'{len(missing)} model weights are not in the file: {_fmt(missing)}')
  if unexpected:
    problems.append(f'{len(unexpected)} file weights have no place in the model: '
                    f'{_fmt(unexpected)}')
  if mismatched:
    problems.append(f'{len(mismatched)} shapes differ: {"; ".join(mismatched[:10])}')
  if problems:
    where = '/'.join(scope) or 'the whole model'
    raise WeightConversionError(
        f'{source} does not fit {where}: ' + '. '.join(problems) + '. Check that '
        'config.model.backbone (name, with_ibn, with_se, with_nl, width) and config.model.head '
        'match the architecture the weights were trained with.')
  new = dict(flat)
  for p in wanted:
    new[p] = np.asarray(converted[p], dtype=np.asarray(flat[p]).dtype)
  return _unflatten(new)


def _unflatten(flat: dict[Path, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = value
  return tree


def convert_state_dict(state_dict: Mapping[str, np.ndarray], variables: Mapping[str, Any],
                       scope: str = 'backbone', source: str = 'the weight file') -> dict[str, Any]:
  """Converts a PyTorch state dict (read by `find_converter`) into `variables`' structure.

  Args:
    state_dict: name -> array (the accepted naming is in the converters' modules).
    variables: the model's initial variables ({'params', 'batch_stats'}), for structure, shapes
      and dtypes.
    scope: 'backbone' replaces the backbone only (a plain ResNet file, or the backbone of a
      FastReID checkpoint; MGN's trunk and three branches count as backbone); 'all' replaces
      every weight (FastReID checkpoints only; the number of classes must match).
    source: how errors name the file.
  """
  flat_paths = set(_flatten(jax.device_get(variables)))
  converted = find_converter(state_dict).convert(state_dict, flat_paths, scope, source)
  if scope == 'all':
    return merge(variables, converted, (), source)
  if scope != 'backbone':
    raise ValueError(f"scope must be 'backbone' or 'all', got {scope!r}.")
  tops = {p[1] for p in flat_paths}
  if 'backbone' in tops and 'b1' in tops:  # MGN: trunk + branches
    result = variables
    for top in ('backbone', 'b1', 'b2', 'b3'):
      result = merge(result, converted, (top,), source)
    return result
  if 'backbone' not in tops:
    raise WeightConversionError(f'the model has no backbone to load {source} into.')
  return merge(variables, converted, ('backbone',), source)


def load_pretrained(variables: Mapping[str, Any], path: str | os.PathLike[str],
                    model_cfg: Mapping[str, Any] | None = None,
                    scope: str = 'backbone') -> dict[str, Any]:
  """`variables` with the weights of the file at `path` (`config.model.pretrained`).

  Called at initialisation: returns a new {'params', 'batch_stats'} tree of numpy arrays with the
  same structure. `model_cfg` is only used to word errors (the backbone name).
  """
  state_dict = load_torch_state_dict(path)
  source = f'weight file {path}'
  if model_cfg is not None:
    source += f' (config.model.backbone.name={model_cfg["backbone"]["name"]!r})'
  return convert_state_dict(state_dict, variables, scope=scope, source=source)


def load_pretrained_trunk(variables: Mapping[str, Any], path: str | os.PathLike[str],
                          model_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """`load_pretrained` for a backbone cut after a stage (QAConv's trunk ends at layer3).

  The file's residual blocks that the cut model does not have (e.g. every `layer4.*`) are left
  out; everything the model has must still be in the file with its shape, as in `merge`.
  Only plain ResNet state dicts (torchvision, timm, IBN-Net) are accepted here.
  """
  state_dict = load_torch_state_dict(path)
  source = f'weight file {path}'
  if model_cfg is not None:
    source += f' (config.model.backbone.name={model_cfg["backbone"]["name"]!r})'
  if is_fastreid(state_dict):
    raise WeightConversionError(f'{source} is a FastReID checkpoint; a cut trunk takes a plain '
                                'ImageNet ResNet state dict (torchvision, timm or IBN-Net).')
  converted = convert_resnet(state_dict, ('backbone',))
  present = {p[2] for p in _flatten(jax.device_get(variables)) if len(p) > 2 and p[1] == 'backbone'}
  block = re.compile(r'^layer\d+_\d+$')
  kept = {p: v for p, v in converted.items()
          if len(p) < 3 or p[2] in present or not block.match(p[2])}
  return merge(variables, kept, ('backbone',), source)
