"""PPLR's released weights -> jreid's PPLR variables (`jreid.models.pplr`).

Cho et al.'s reference code (yoonkicho/PPLR) trains `pplr.models.resnet_part.ResNetPart`
inside `nn.DataParallel` and saves its state dict (`module.` prefix, stripped here; a checkpoint
dict's `state_dict` entry is unwrapped by `jreid.checkpoint.load_torch_state_dict`):

* `base.*`: an `nn.Sequential` of a torchvision ResNet's conv1 (`base.0`), bn1 (`base.1`), relu,
  maxpool and layer1..layer4 (`base.4` .. `base.7`; layer4's first block at stride 1) ->
  jreid's `backbone` (`conv1`, `bn1`, `layer1_0`, ...);
* `bnneck.*` (BatchNorm1d of the global feature, bias frozen at zero) -> `bnneck`;
  `bnneck{p}.*` of part p -> `bnneck_{p}`; the zero biases are checked and dropped (jreid's
  necks have none);
* `classifier.weight` [K, C] and `classifier{p}.weight` (bias-free) -> `classifier` and
  `classifier_{p}` kernels [C, K]. The reference allocates K = 3000 columns and overwrites the
  first ones with cluster centroids every epoch; the test embeddings do not use them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from jreid.weights_common import Path, check_zero_bias, convert_leaf
from jreid.weights_resnet import convert_resnet

# ResNetPart.base: Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4).
_BASE = {'0': 'conv1', '1': 'bn1', '4': 'layer1', '5': 'layer2', '6': 'layer3', '7': 'layer4'}
_BASE_NAME = re.compile(r'^base\.(\d+)\.(.*)$')
_NECK = re.compile(r'^bnneck(\d*)\.(\w+)$')
_CLASSIFIER = re.compile(r'^classifier(\d*)\.weight$')


def _strip(name: str) -> str:
  return name[len('module.'):] if name.startswith('module.') else name


def is_pplr(state_dict: Mapping[str, Any]) -> bool:
  """True for a PPLR `ResNetPart` state dict (`base.0.weight` and the part necks `bnneck0.*`)."""
  names = {_strip(k) for k in state_dict}
  return 'base.0.weight' in names and 'bnneck0.weight' in names


def convert_pplr_checkpoint(state_dict: Mapping[str, np.ndarray], target_paths: set[Path],
                            scope: str, source: str) -> dict[Path, np.ndarray]:
  """A PPLR `ResNetPart` state dict -> {jreid PPLRNet path: array} (module docstring)."""
  del target_paths, scope, source
  trunk, out = {}, {}
  for name, value in state_dict.items():
    name, value = _strip(name), np.asarray(value)
    base, neck, classifier = (_BASE_NAME.match(name), _NECK.match(name),
                              _CLASSIFIER.match(name))
    if base and base[1] in _BASE:
      trunk[f'{_BASE[base[1]]}.{base[2]}'] = value
    elif neck:
      module = 'bnneck' + (f'_{neck[1]}' if neck[1] else '')
      if neck[2] == 'bias':
        check_zero_bias(name, value)
        continue
      converted = convert_leaf([module], neck[2], value)
      if converted is not None:
        out[converted[0]] = converted[1]
    elif classifier:
      module = 'classifier' + (f'_{classifier[1]}' if classifier[1] else '')
      out[('params', module, 'kernel')] = value.T
    else:
      out[('params', '<unknown>', name)] = value  # Reported by `merge`.
  out.update(convert_resnet(trunk, ('backbone',)))
  return out
