"""Pretrained PyTorch OSNet weights -> jreid variables (`jreid.models.osnet`).

Accepted state dicts:

* torchreid's `osnet_x1_0` / `osnet_ibn_x1_0` (any width; e.g. the `*_imagenet.pth` files or a
  torchreid re-ID checkpoint's `state_dict`, DataParallel `module.` prefix stripped). The
  embedding layer `fc.*` (Linear + BatchNorm1d) and the `classifier.*` are not part of the
  backbone and are dropped.
* A FastReID checkpoint with an OSNet backbone (`backbone.conv1.conv.weight`, ...; FastReID's
  OSNet uses torchreid's names) and a FastReID `EmbeddingHead` (`heads.*`), converted as for
  ResNets (`jreid.weights_common.convert_fastreid_baseline`).

Name mapping (torchreid -> jreid): the transition `convN.2.0` (N = 2, 3; the Sequential of
Conv1x1 and AvgPool after the two OSBlocks) -> `convN_transition`; every other Sequential index
joins its parent: `conv2.0.conv2b.1.conv1` -> `conv2_0/conv2b_1/conv1`. The gate's 1x1
convolutions `gate.fc1/fc2` [out, in, 1, 1] become Dense kernels [in, out]. Convolutions OIHW ->
HWIO, BatchNorm -> scale/bias + mean/var, InstanceNorm (`conv1.bn` of the IBN stem, `IN`) ->
scale/bias, as `jreid.weights_common.convert_leaf`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from jreid.weights_common import (
    Path, WeightConversionError, convert_fastreid_baseline, convert_leaf, is_fastreid)

# A tensor only an OSNet has (torchreid's first Lite 3x3 of the first OSBlock).
_OSNET_MARKER = 'conv2.0.conv2a.conv1.weight'
_TRANSITION = re.compile(r'^(conv[23])\.2\.0(?=\.|$)')
_INDEX = re.compile(r'\.(\d+)(?=\.|$)')


def _strip(name: str) -> str:
  for prefix in ('module.', 'backbone.'):
    if name.startswith(prefix):
      name = name[len(prefix):]
  return name


def is_osnet(state_dict: Mapping[str, Any]) -> bool:
  """True for a torchreid/FastReID OSNet state dict (plain, `module.`- or `backbone.`-prefixed)."""
  return any(_strip(k) == _OSNET_MARKER for k in state_dict)


def _module_path(dotted: str) -> list[str]:
  """'conv2.0.conv2b.1.conv1' -> ['conv2_0', 'conv2b_1', 'conv1']; 'conv3.2.0' -> ['conv3_transition']."""
  dotted = _TRANSITION.sub(r'\1_transition', dotted)
  dotted = _INDEX.sub(r'_\1', dotted)
  return dotted.split('.') if dotted else []


def convert_osnet(state_dict: Mapping[str, np.ndarray], prefix: Path = ()) -> dict[Path, np.ndarray]:
  """A torchreid OSNet state dict -> {jreid path: array} (paths start 'params'/'batch_stats').

  `prefix` (e.g. ('backbone',)) is inserted after the collection name. A leading `module.` is
  stripped; `fc.*` and `classifier.*` (torchreid's embedding layer and classifier) are dropped.
  Names that have no place in jreid's OSNet come out under their mapped path and are reported
  by `jreid.weights.merge`.
  """
  out = {}
  for name, value in state_dict.items():
    name = name[len('module.'):] if name.startswith('module.') else name
    if name.startswith(('fc.', 'classifier.')):
      continue
    module, _, leaf = name.rpartition('.')
    module_path = _module_path(module)
    value = np.asarray(value)
    if module_path[-1:] in (['fc1'], ['fc2']) and 'gate' in module_path and value.ndim == 4:
      value = value[:, :, 0, 0]  # 1x1 conv on the pooled map -> Dense
    converted = convert_leaf(module_path, leaf, value)
    if converted is not None:
      path, array = converted
      out[(path[0], *prefix, *path[1:])] = array
  return out


def convert_osnet_checkpoint(state_dict: Mapping[str, np.ndarray], target_paths: set[Path],
                             scope: str = 'backbone',
                             source: str = 'the weight file') -> dict[Path, np.ndarray]:
  """A torchreid or FastReID OSNet state dict -> {jreid path: array} for a `Baseline`.

  `target_paths` (the model's flattened variable paths) tells whether the head has a reduction
  layer. scope='all' needs a FastReID checkpoint (a torchreid file has no jreid head).
  """
  if is_fastreid(state_dict):
    return convert_fastreid_baseline(state_dict, target_paths, convert_osnet)
  if scope == 'all':
    raise WeightConversionError(
        f'{source} is a plain torchreid OSNet state dict (no FastReID head): it can only '
        "initialise the backbone (scope='backbone').")
  return convert_osnet(state_dict, ('backbone',))
