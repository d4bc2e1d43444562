"""Pretrained PyTorch weights -> jreid variables (params / batch_stats).

`config.model.pretrained = PATH` loads a weight file at initialisation through
`load_pretrained`. The file's state dict is converted by the first entry of `CONVERTERS` whose
detector accepts it:

* the authors' released models, each into its own method's model (config.model.name): QAConv's
  `checkpoint.pth.tar` (network + matcher, `jreid.weights_qaconv`), PPLR's `ResNetPart`
  (`jreid.weights_pplr`), the AGW cross-modality baseline's `embed_net` (`jreid.weights_agw`);
* OSNet (torchreid, or a FastReID checkpoint with an OSNet backbone): `jreid.weights_osnet`;
* a FastReID model-zoo checkpoint (`Baseline`: BoT/AGW/SBS, or `MGN`): `jreid.weights_resnet`;
* anything else as a plain torchvision/timm/IBN-Net ResNet state dict: `jreid.weights_resnet`.

`config.model.pretrained_scope` says what the file fills: 'backbone' (the default: ImageNet
weights, or the backbone of a trained model) or 'all' (a trained model evaluated or fine-tuned
as it is: every weight, necks, poolings and matchers included). With 'all', a classifier whose
number of classes differs from the run's (a model trained on another dataset) is left as
initialised and named in the log: the embeddings do not use it.

Every mismatch is an error naming the keys: weights the model needs but the file lacks, file
weights the model has no place for, and shape mismatches (`merge`). Files are read with
`jreid.checkpoint.load_torch_state_dict` (torch.load(weights_only=True), .safetensors, .npz
without pickle), never by unpickling.

A new architecture is a module with a detector `is_X(state_dict)` and a converter
`convert_X_checkpoint(state_dict, target_paths, scope, source) -> {path: array}` (the shared
tensor rules are in `jreid.weights_common`), plus one row of `CONVERTERS` (with the model names
it fills when it is a whole released model).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jreid import weights_agw
from jreid import weights_osnet
from jreid import weights_pplr
from jreid import weights_qaconv
from jreid import weights_resnet
from jreid.checkpoint import load_torch_state_dict
from jreid.weights_common import Path, WeightConversionError, is_fastreid
from jreid.weights_resnet import convert_resnet


@dataclasses.dataclass(frozen=True)
class Converter:
  """One architecture's weight converter.

  Attributes:
    name: the architecture ('qaconv', 'pplr', 'agw', 'osnet', 'fastreid', 'resnet').
    detect: `detect(state_dict)` is True for the state dicts this converter reads.
    convert: `convert(state_dict, target_paths, scope, source) -> {path: array}`, where
      `target_paths` are the model's flattened variable paths, `scope` is 'backbone' or 'all'
      and `source` names the file in errors.
    models: the config.model.name values whose models it fills (a released model of one
      method); () = any model with a backbone.
    what: the file in words, for errors ('a QAConv checkpoint (ShengcaiLiao/QAConv)').
  """

  name: str
  detect: Callable[[Mapping[str, Any]], bool]
  convert: Callable[[Mapping[str, np.ndarray], set[Path], str, str], dict[Path, np.ndarray]]
  models: tuple[str, ...] = ()
  what: str = ''


# The first converter whose detector accepts a state dict reads it, so the more specific come
# first: a FastReID OSNet checkpoint is also a FastReID checkpoint, and the plain ResNet
# converter takes whatever is left (its mismatches are then reported by `merge`).
CONVERTERS: tuple[Converter, ...] = (
    Converter('qaconv', weights_qaconv.is_qaconv, weights_qaconv.convert_qaconv_checkpoint,
              ('qaconv',), 'a QAConv checkpoint (ShengcaiLiao/QAConv: network and matcher)'),
    Converter('pplr', weights_pplr.is_pplr, weights_pplr.convert_pplr_checkpoint, ('pplr',),
              "PPLR's ResNetPart weights (yoonkicho/PPLR)"),
    Converter('agw', weights_agw.is_agw, weights_agw.convert_agw_checkpoint, ('two_stream',),
              "an AGW cross-modality embed_net (mangye16/Cross-Modal-Re-ID-baseline)"),
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


SCOPES = ('backbone', 'all')


def _other_classifiers(flat: Mapping[Path, Any], converted: Mapping[Path, np.ndarray]
                       ) -> list[Path]:
  """Classifier kernels [D, K] of the file whose number of classes K differs from the model's."""
  out = []
  for p, value in converted.items():
    if p not in flat or p[-1] != 'kernel' or not any('classifier' in k for k in p[1:-1]):
      continue
    want, got = np.shape(flat[p]), np.shape(value)
    if len(want) == len(got) == 2 and want[0] == got[0] and want[1] != got[1]:
      out.append(p)
  return sorted(out)


def convert_state_dict(state_dict: Mapping[str, np.ndarray], variables: Mapping[str, Any],
                       scope: str = 'backbone', source: str = 'the weight file',
                       model_name: str | None = None,
                       log: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Converts a PyTorch state dict (read by `find_converter`) into `variables`' structure.

  Args:
    state_dict: name -> array (the accepted naming is in the converters' modules).
    variables: the model's initial variables ({'params', 'batch_stats'}), for structure, shapes
      and dtypes.
    scope: 'backbone' replaces the backbone only (a plain ResNet file, or the backbone of a
      FastReID checkpoint; MGN's trunk and three branches count as backbone); 'all' replaces
      every weight (a FastReID checkpoint or an author's released model); a classifier trained
      on another number of classes keeps its initial values (named through `log`).
    source: how errors name the file.
    model_name: config.model.name of the model, checked against the converter's `models`.
    log: where a line about classifiers left as initialised goes.
  """
  if scope not in SCOPES:
    raise ValueError(f'scope must be one of {SCOPES}, got {scope!r}.')
  converter = find_converter(state_dict)
  if converter.models and model_name is not None and model_name not in converter.models:
    raise WeightConversionError(
        f'{source} is {converter.what}, which loads into config.model.name='
        f'{converter.models[0]!r}, not {model_name!r}: use the config of that method.')
  flat = _flatten(jax.device_get(variables))
  converted = converter.convert(state_dict, set(flat), scope, source)
  if scope == 'all':
    others = _other_classifiers(flat, converted)
    if others and log is not None:
      p = others[0]
      log(f'{source}: its classifiers ({", ".join("/".join(q[1:-1]) for q in others)}) have '
          f'{np.shape(converted[p])[1]} classes, the model {np.shape(flat[p])[1]}: left as '
          'initialised (a model trained on other identities; test embeddings do not use them).')
    for p in others:
      converted[p] = np.asarray(flat[p])
    return merge(variables, converted, (), source)
  tops = {p[1] for p in flat}
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
                    scope: str = 'backbone',
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
  """`variables` with the weights of the file at `path` (`config.model.pretrained`) in `scope`
  (`config.model.pretrained_scope`; see `convert_state_dict`).

  Called at initialisation: returns a new {'params', 'batch_stats'} tree of numpy arrays with the
  same structure. `model_cfg` words errors (the backbone name) and names the model
  (`model_cfg['name']`) for the released-model converters.
  """
  state_dict = load_torch_state_dict(path)
  source = f'weight file {path}'
  model_name = None
  if model_cfg is not None:
    source += f' (config.model.backbone.name={model_cfg["backbone"]["name"]!r})'
    model_name = model_cfg.get('name')
  return convert_state_dict(state_dict, variables, scope=scope, source=source,
                            model_name=model_name, log=log)


def load_pretrained_trunk(variables: Mapping[str, Any], path: str | os.PathLike[str],
                          model_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """`load_pretrained` for a backbone cut after a stage (QAConv's trunk ends at layer3).

  The file's residual blocks that the cut model does not have (e.g. every `layer4.*`) are left
  out; everything the model has must still be in the file with its shape, as in `merge`.
  Plain ResNet state dicts (torchvision, timm, IBN-Net) are accepted, and the trunk of a QAConv
  checkpoint (its network's `base`; the whole checkpoint loads with scope 'all').
  """
  state_dict = load_torch_state_dict(path)
  source = f'weight file {path}'
  if model_cfg is not None:
    source += f' (config.model.backbone.name={model_cfg["backbone"]["name"]!r})'
  if weights_qaconv.is_qaconv(state_dict):
    state_dict = weights_qaconv.trunk_state_dict(state_dict)
  if is_fastreid(state_dict):
    raise WeightConversionError(f'{source} is a FastReID checkpoint; a cut trunk takes a plain '
                                'ImageNet ResNet state dict (torchvision, timm or IBN-Net).')
  converted = convert_resnet(state_dict, ('backbone',))
  present = {p[2] for p in _flatten(jax.device_get(variables)) if len(p) > 2 and p[1] == 'backbone'}
  block = re.compile(r'^layer\d+_\d+$')
  kept = {p: v for p, v in converted.items()
          if len(p) < 3 or p[2] in present or not block.match(p[2])}
  return merge(variables, kept, ('backbone',), source)
