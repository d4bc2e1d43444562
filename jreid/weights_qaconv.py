"""QAConv's released checkpoints -> jreid's QAConv variables (`jreid.methods.qaconv`).

Liao & Shao's reference code (ShengcaiLiao/QAConv, `main.py`) saves one `checkpoint.pth.tar`:
`{'model': network state dict, 'criterion': loss module state dict, 'optim': ..., 'epoch': ...}`.
`jreid.checkpoint.load_torch_state_dict` keeps the two state dicts as `model.*` and
`criterion.*` (a .safetensors or .npz file with those names reads the same):

* `model.*` is `reid.models.resmap.ResNet`: `base.*` a whole torchvision ResNet (or IBN-Net
  from torch.hub) of which the forward pass runs the stem and the stages up to `final_layer`,
  then `neck_conv.weight` (3x3, no bias) and `neck_bn.*`. jreid's `QAConvNet` (trunk cut after
  the same stage, `neck_conv`, `neck_bn`) takes them as named; the stages after the cut and
  `base.fc` are never used by the reference and are left out. A model configured without the
  neck BatchNorm (`model.qaconv.neck_bn=False`: a convolution with a bias) gets the BatchNorm,
  which the reference keeps in inference mode, folded into the convolution: kernel x a and bias
  b per output channel, a = gamma / sqrt(var + eps), b = beta - mean x a.
* `criterion.*` is the loss module holding the matcher `reid.models.qaconv.QAConv` as
  `matcher`: `matcher.bn` (BatchNorm1d(1) over every location maximum), `matcher.fc`
  (Linear(h*w, 1), shared by the two matching directions) and `matcher.logit_bn`, which become
  jreid's `QAConvMatcher` `bn`, `fc` and `logit_bn`. QAConv 2.x (TripletLoss) and 1.3+
  (ClassMemoryLoss) share this layout; the 1.3+ class memory (`class_memory`, `valid_class`) is
  the loss's training state and is left out. QAConv 1.0-1.2 kept the layers in the loss itself
  with a Linear(2*h*w, 1) weighing the two directions separately: jreid's matcher (one weight per
  location for both directions) cannot represent it, and such a file is refused by name.

Paths are those of the QAConv method's variables: `('params', 'net', 'backbone', ...)`,
`('params', 'matcher', 'fc', 'kernel')`, ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from jreid.weights_common import Path, WeightConversionError, convert_leaf
from jreid.weights_resnet import convert_resnet

_MODEL, _CRITERION = 'model.', 'criterion.'
BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d's default, the reference's neck_bn.
# Training state of the 1.3+ class-memory loss, not weights of the matcher.
_LOSS_STATE = ('class_memory', 'valid_class')
_BLOCK = re.compile(r'^layer\d+_\d+$')


def is_qaconv(state_dict: Mapping[str, Any]) -> bool:
  """True for a QAConv checkpoint (`model.base.*` / `criterion.*` names)."""
  return any(k.startswith((_MODEL + 'base.', _CRITERION)) for k in state_dict)


def trunk_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """The torchvision-named ResNet of a QAConv checkpoint (`model.base.*` without the prefix)."""
  prefix = _MODEL + 'base.'
  return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def convert_qaconv_checkpoint(state_dict: Mapping[str, np.ndarray], target_paths: set[Path],
                              scope: str, source: str) -> dict[Path, np.ndarray]:
  """A QAConv checkpoint -> {QAConv variable path: array} (module docstring)."""
  del scope  # The converted network and matcher fit either scope; `merge` takes what it needs.
  criterion = {k[len(_CRITERION):]: np.asarray(v) for k, v in state_dict.items()
               if k.startswith(_CRITERION)}
  if criterion and not any(k.startswith('matcher.') for k in criterion):
    fc = criterion.get('fc.weight')
    shape = f' (fc.weight {tuple(fc.shape)})' if fc is not None else ''
    raise WeightConversionError(
        f'{source} is a QAConv 1.0-1.2 checkpoint{shape}: its matcher weighs the two matching '
        'directions with separate weights, which jreid\'s QAConv matcher (QAConv 1.3 and 2.x: one '
        'Linear(h*w, 1) shared by both directions) cannot represent; use a QAConv 2.x release.')
  present = {p[3] for p in target_paths if p[1:3] == ('net', 'backbone') and len(p) > 3}
  trunk = {k: v for k, v in trunk_state_dict(state_dict).items() if not k.startswith('fc.')}
  out = {p: v for p, v in convert_resnet(trunk, ('net', 'backbone')).items()
         if p[3] in present or not _BLOCK.match(p[3])}  # Stages after the cut are never run.
  if (('params', 'net', 'neck_conv', 'bias') in target_paths
      and _MODEL + 'neck_bn.running_var' in state_dict):
    state_dict = _fold_neck_bn(state_dict)
  for name, value in state_dict.items():
    value = np.asarray(value)
    if name.startswith(_MODEL + 'base.'):
      continue
    if name.startswith((_MODEL + 'neck_conv.', _MODEL + 'neck_bn.')):
      module, _, leaf = name[len(_MODEL):].rpartition('.')
      converted = convert_leaf(['net', module], leaf, value)
    elif name.startswith(_CRITERION + 'matcher.'):
      module, _, leaf = name[len(_CRITERION + 'matcher.'):].rpartition('.')
      converted = convert_leaf(['matcher', *module.split('.')], leaf, value)
    elif name.startswith(_CRITERION) and name[len(_CRITERION):] in _LOSS_STATE:
      continue
    else:
      out[('params', '<unknown>', name)] = value  # Reported by `merge`.
      continue
    if converted is not None:
      out[converted[0]] = converted[1]
  return out


def _fold_neck_bn(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """`state_dict` with `model.neck_bn.*` folded into `model.neck_conv` (weight and a bias)."""
  bn = {leaf: np.asarray(state_dict[f'{_MODEL}neck_bn.{leaf}'], np.float64)
        for leaf in ('weight', 'bias', 'running_mean', 'running_var')}
  scale = bn['weight'] / np.sqrt(bn['running_var'] + BN_EPSILON)
  kernel = np.asarray(state_dict[_MODEL + 'neck_conv.weight'], np.float64)
  out = {k: v for k, v in state_dict.items() if not k.startswith(_MODEL + 'neck_bn.')}
  out[_MODEL + 'neck_conv.weight'] = (kernel * scale[:, None, None, None]).astype(np.float32)
  out[_MODEL + 'neck_conv.bias'] = (bn['bias'] - bn['running_mean'] * scale).astype(np.float32)
  return out
