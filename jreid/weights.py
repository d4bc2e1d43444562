"""Pretrained PyTorch weights -> jreid variables (params / batch_stats).

Two sources:

* A ResNet state dict of torchvision, timm or IBN-Net (`conv1.weight`, `bn1.running_mean`,
  `layer1.0.downsample.0.weight`, `layer1.0.bn1.IN.weight`, ...; IBN-Net's DataParallel `module.`
  prefix is stripped): the backbone of a `Baseline` (`backbone/...`). The ImageNet classifier
  (`fc.*`) is ignored.
* A FastReID model-zoo checkpoint (its `model` entry): `Baseline` (BoT/AGW/SBS: `backbone.*`,
  `heads.pool_layer.p`, `heads.bottleneck.*`, `heads.weight`) or `MGN` (`backbone.0/1/4/5/6`,
  `b1.0.*`/`b1.1.*` (rest of layer3 / layer4), `b1_head.*`, ..., `b33_head.*`).

Conversions: convolution OIHW -> HWIO; Linear [out, in] -> Dense [in, out] (so the classifier
`heads.weight` [C, D] becomes `classifier/kernel` [D, C]); a 1x1 convolution feeding a Dense
(the head's reduction) -> [in, out]; BatchNorm weight/bias/running_mean/running_var ->
scale/bias (params) and mean/var (batch_stats); InstanceNorm weight/bias -> scale/bias;
`num_batches_tracked` dropped. FastReID's BNNeck bias is frozen at zero (jreid's BNNeck has no
bias parameter): it is dropped after checking that it is zero.

Every mismatch is an error naming the keys: weights the model needs but the file lacks, file
weights the model has no place for, and shape mismatches. Files are read with
`jreid.checkpoint.load_torch_state_dict` (torch.load(weights_only=True), .safetensors, .npz
without pickle), never by unpickling.

`config.model.pretrained = PATH` loads the backbone at initialisation through `load_pretrained`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jreid.checkpoint import load_torch_state_dict

Path = tuple[str, ...]  # ('params', 'backbone', 'layer1_0', 'conv1', 'kernel')


class WeightConversionError(ValueError):
  """The weight file does not fit the model (missing, unexpected or mis-shaped weights)."""


_STATS = {'running_mean': 'mean', 'running_var': 'var'}
_MODULE_RULES = (
    (re.compile(r'^layer(\d+)\.(\d+)$'), r'layer\1_\2'),
    (re.compile(r'^NL_(\d+)\.(\d+)$'), r'NL_\1_\2'),
)
_CHILD_RENAMES = {'downsample.0': 'downsample_conv', 'downsample.1': 'downsample_bn',
                  'W.0': 'W_conv', 'W.1': 'W_bn', 'fc.0': 'fc1', 'fc.2': 'fc2'}


def _module_path(dotted: str) -> list[str]:
  """'layer1.0.downsample.0' -> ['layer1_0', 'downsample_conv'] (torchvision -> jreid names)."""
  for a, b in _CHILD_RENAMES.items():
    dotted = re.sub(rf'(^|\.){re.escape(a)}(?=\.|$)', rf'\g<1>{b}', dotted)
  parts = dotted.split('.') if dotted else []
  out = []
  i = 0
  while i < len(parts):
    pair = '.'.join(parts[i:i + 2])
    for pattern, repl in _MODULE_RULES:
      if pattern.match(pair):
        out.append(pattern.sub(repl, pair))
        i += 2
        break
    else:
      out.append(parts[i])
      i += 1
  return out


def _leaf(module: list[str], leaf: str, value: np.ndarray) -> tuple[Path, np.ndarray] | None:
  """One torch tensor -> (jreid path, converted array); None for tensors jreid does not keep."""
  if leaf == 'num_batches_tracked':
    return None
  if leaf in _STATS:
    return ('batch_stats', *module, _STATS[leaf]), value
  if leaf == 'weight':
    if value.ndim == 4:  # convolution OIHW -> HWIO
      return ('params', *module, 'kernel'), np.transpose(value, (2, 3, 1, 0))
    if value.ndim == 2:  # Linear [out, in] -> Dense [in, out]
      return ('params', *module, 'kernel'), value.T
    return ('params', *module, 'scale'), value  # BatchNorm / InstanceNorm
  return ('params', *module, leaf), value  # bias, GeM p


def convert_resnet(state_dict: Mapping[str, np.ndarray], prefix: Path = ()) -> dict[Path, np.ndarray]:
  """A torchvision/timm/IBN-Net ResNet state dict -> {jreid path: array} under `prefix`.

  `fc.*` (the ImageNet classifier) and a leading `module.` are dropped.
  """
  out = {}
  for name, value in state_dict.items():
    name = name[len('module.'):] if name.startswith('module.') else name
    if name.startswith('fc.'):
      continue
    module, _, leaf = name.rpartition('.')
    module_path = _module_path(module)
    value = np.asarray(value)
    if 'se' in module_path and value.ndim == 4:  # timm's SE uses 1x1 convs; jreid's Dense
      value = value[:, :, 0, 0]
    converted = _leaf(module_path, leaf, value)
    if converted is not None:
      path, array = converted
      out[(path[0], *prefix, *path[1:])] = array
  return out


def _check_zero_bias(name: str, value: np.ndarray) -> None:
  if np.any(np.abs(value) > 1e-6):
    raise WeightConversionError(
        f'{name} is not zero (max |b| = {np.abs(value).max():.3g}), but jreid\'s BNNeck has no bias '
        '(FastReID freezes it at zero): this checkpoint was trained with a learnable neck bias and '
        'cannot be converted exactly.')


def _convert_head(prefix: str, sd: Mapping[str, np.ndarray], pool: str, head: str,
                  has_reduction: bool) -> dict[Path, np.ndarray]:
  """FastReID EmbeddingHead tensors named `prefix.*` -> jreid pooling `pool` and head `head`."""
  out = {}
  bneck = 'bottleneck.1' if has_reduction else 'bottleneck.0'
  for name, value in sd.items():
    if not name.startswith(prefix + '.'):
      continue
    rest = name[len(prefix) + 1:]
    value = np.asarray(value)
    if rest == 'pool_layer.p':
      out[('params', pool, 'p')] = value.reshape(-1)
    elif rest == 'weight':  # the classifier [C, D]
      out[('params', head, 'classifier', 'kernel')] = value.T
    elif has_reduction and rest == 'bottleneck.0.weight':  # 1x1 conv [D', D, 1, 1]
      out[('params', head, 'reduction', 'kernel')] = value.reshape(value.shape[:2]).T
    elif rest.startswith(bneck + '.'):
      leaf = rest[len(bneck) + 1:]
      if leaf == 'bias':
        _check_zero_bias(name, value)
        continue
      converted = _leaf([head, 'bnneck'], leaf, value)
      if converted is not None:
        out[converted[0]] = converted[1]
    else:
      out[('params', head, '<unknown>', rest)] = value  # reported as unexpected
  return out


_MGN_TRUNK = {'0': 'conv1', '1': 'bn1', '4': 'layer1', '5': 'layer2'}


def _mgn_name(name: str) -> str | None:
  """FastReID MGN trunk names -> torchvision-style names inside jreid's MGN modules."""
  m = re.match(r'^backbone\.(\d+)\.(.*)$', name)
  if m:
    idx, rest = m.groups()
    if idx == '6':
      return f'backbone.layer3.0.{rest}'
    if idx in _MGN_TRUNK:
      return f'backbone.{_MGN_TRUNK[idx]}.{rest}'
    return None
  m = re.match(r'^(b[123])\.([01])\.(\d+)\.(.*)$', name)
  if m:
    branch, part, block, rest = m.groups()
    if part == '0':
      return f'{branch}.layer3.{int(block) + 1}.{rest}'
    return f'{branch}.layer4.{block}.{rest}'
  return None


def convert_fastreid(state_dict: Mapping[str, np.ndarray],
                     target_paths: set[Path]) -> dict[Path, np.ndarray]:
  """A FastReID Baseline or MGN state dict -> {jreid path: array}.

  `target_paths` (the model's flattened variable paths) tells whether the heads have a
  reduction layer.
  """
  sd = {k: np.asarray(v) for k, v in state_dict.items() if k not in ('pixel_mean', 'pixel_std')}
  has_reduction = lambda head: any(p[1] == head and p[2] == 'reduction' for p in target_paths)
  if any(k.startswith('b1_head.') for k in sd):  # MGN
    out, trunk = {}, {}
    for name, value in sd.items():
      if re.match(r'^b\d+_head\.', name):
        continue
      mapped = _mgn_name(name)
      if mapped is None:
        out[('params', '<unknown>', name)] = value
      else:
        trunk[mapped] = value
    for top in ('backbone', 'b1', 'b2', 'b3'):
      part = {k[len(top) + 1:]: v for k, v in trunk.items() if k.startswith(top + '.')}
      out.update(convert_resnet(part, (top,)))
    for feat in ('b1', 'b2', 'b21', 'b22', 'b3', 'b31', 'b32', 'b33'):
      out.update(_convert_head(f'{feat}_head', sd, f'{feat}_pool', f'{feat}_head',
                               has_reduction(f'{feat}_head')))
    return out
  backbone = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
  out = convert_resnet(backbone, ('backbone',))
  out.update(_convert_head('heads', sd, 'pooling', 'head', has_reduction('head')))
  for name, value in sd.items():
    if not name.startswith(('backbone.', 'heads.')):
      out[('params', '<unknown>', name)] = value
  return out


def is_fastreid(state_dict: Mapping[str, Any]) -> bool:
  """True for a FastReID meta-architecture state dict (names under `backbone.` / `heads.`)."""
  return any(k.startswith(('backbone.', 'heads.', 'b1_head.')) for k in state_dict)


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
  """Converts a PyTorch state dict (ResNet or FastReID) into `variables`' structure.

  Args:
    state_dict: name -> array (see the module docstring for the accepted naming).
    variables: the model's initial variables ({'params', 'batch_stats'}), for structure, shapes
      and dtypes.
    scope: 'backbone' replaces the backbone only (a plain ResNet file, or the backbone of a
      FastReID checkpoint; MGN's trunk and three branches count as backbone); 'all' replaces
      every weight (FastReID checkpoints only; the number of classes must match).
    source: how errors name the file.
  """
  flat_paths = set(_flatten(jax.device_get(variables)))
  from jreid import weights_osnet  # pylint: disable=g-import-not-at-top (it imports this module)
  if weights_osnet.is_osnet(state_dict):  # torchreid / FastReID OSNet (osnet_x1_0, osnet_ibn_x1_0)
    converted = weights_osnet.convert_osnet_checkpoint(state_dict, flat_paths, scope, source)
  elif is_fastreid(state_dict):
    converted = convert_fastreid(state_dict, flat_paths)
  else:
    if scope == 'all':
      raise WeightConversionError(f'{source} is a plain ResNet state dict (no FastReID head): '
                                  "it can only initialise the backbone (scope='backbone').")
    converted = convert_resnet(state_dict, ('backbone',))
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
