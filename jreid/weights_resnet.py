"""Pretrained PyTorch ResNet weights -> jreid variables (`jreid.models.resnet`, `baseline`, `mgn`).

Accepted state dicts:

* A ResNet of torchvision, timm or IBN-Net (`conv1.weight`, `bn1.running_mean`,
  `layer1.0.downsample.0.weight`, `layer1.0.bn1.IN.weight`, ...; IBN-Net's DataParallel `module.`
  prefix is stripped): the backbone of a `Baseline` (`backbone/...`). The ImageNet classifier
  (`fc.*`) is ignored.
* A FastReID model-zoo checkpoint (its `model` entry): `Baseline` (BoT/AGW/SBS: `backbone.*`,
  `heads.pool_layer.p`, `heads.bottleneck.*`, `heads.weight`) or `MGN` (`backbone.0/1/4/5/6`,
  `b1.0.*`/`b1.1.*` (rest of layer3 / layer4), `b1_head.*`, ..., `b33_head.*`).

Name mapping (torchvision -> jreid): `layerN.M` -> `layerN_M`, `NL_N.M` -> `NL_N_M`,
`downsample.0/1` -> `downsample_conv/bn`, the non-local `W.0/1` -> `W_conv/bn`, the SE block's
`fc.0/2` -> `fc1/fc2` (timm's 1x1 convolutions become Dense kernels). Tensors convert as
`jreid.weights_common.convert_leaf`; the classifier `heads.weight` [C, D] becomes
`classifier/kernel` [D, C] and the head's 1x1 reduction convolution a Dense [in, out].
FastReID's BNNeck bias is frozen at zero (jreid's BNNeck has no bias parameter): it is dropped
after checking that it is zero.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from jreid.weights_common import (
    FASTREID_PIXEL_STATS, Path, WeightConversionError, convert_embedding_head,
    convert_fastreid_baseline, convert_leaf, has_reduction)

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
    converted = convert_leaf(module_path, leaf, value)
    if converted is not None:
      path, array = converted
      out[(path[0], *prefix, *path[1:])] = array
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
  if not any(k.startswith('b1_head.') for k in state_dict):
    return convert_fastreid_baseline(state_dict, target_paths, convert_resnet)
  sd = {k: np.asarray(v) for k, v in state_dict.items() if k not in FASTREID_PIXEL_STATS}
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
    out.update(convert_embedding_head(f'{feat}_head', sd, f'{feat}_pool', f'{feat}_head',
                                      has_reduction(target_paths, f'{feat}_head')))
  return out


def convert_fastreid_checkpoint(state_dict: Mapping[str, np.ndarray], target_paths: set[Path],
                                scope: str, source: str) -> dict[Path, np.ndarray]:
  """`convert_fastreid` with the converter signature of `jreid.weights.CONVERTERS`."""
  del scope, source  # a FastReID checkpoint fits either scope
  return convert_fastreid(state_dict, target_paths)


def convert_resnet_checkpoint(state_dict: Mapping[str, np.ndarray], target_paths: set[Path],
                              scope: str, source: str) -> dict[Path, np.ndarray]:
  """A plain ResNet state dict as a `Baseline`'s backbone; refuses scope='all' (it has no head)."""
  del target_paths
  if scope == 'all':
    raise WeightConversionError(f'{source} is a plain ResNet state dict (no FastReID head): '
                                "it can only initialise the backbone (scope='backbone').")
  return convert_resnet(state_dict, ('backbone',))
