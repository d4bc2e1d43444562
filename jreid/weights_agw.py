"""The AGW cross-modality baseline's released models -> jreid's two-stream variables.

Ye et al.'s reference code (mangye16/Cross-Modal-Re-ID-baseline, `model.py`) defines
`embed_net`; `train.py` saves `{'net': net.state_dict(), 'cmc': ..., 'mAP': ..., 'epoch': ...}`
(`jreid.checkpoint.load_torch_state_dict` unwraps 'net'). Its state dict holds three whole
torchvision ResNet-50s, of which the forward pass uses:

* `visible_module.visible.{conv1,bn1}` and `thermal_module.thermal.{conv1,bn1}`: the stem of
  each modality -> `backbone/visible/...` and `backbone/infrared/...` (jreid's `ModalityStream`);
* `base_resnet.base.layer1..layer4`: the shared stages -> `backbone/layer*_*`;
* `NL_{i}.{k}` (`g.0`, `theta`, `phi`, `W.0` conv, `W.1` BatchNorm; inter channels C/2) after the
  last blocks of stage i -> `backbone/NL_{i}_{k}/{g, theta, phi, W_conv, W_bn}`;
* `bottleneck` (BatchNorm1d, bias frozen at zero: checked and dropped) -> `head/bnneck`, and
  `classifier.weight` [K, 2048] (no bias) -> `head/classifier/kernel` [2048, K].

The rest of the three ResNets (the streams' layer1..4 and fc, the shared network's stem and fc)
never runs and is left out. GeM has a fixed p = 3 in the reference: a model with a learnable p
gets 3.0. The reference's GeM adds 1e-12 after the spatial mean where FastReID's clamps each
activation at 1e-6 before it (a channel that is zero at every location pools to 1e-4 there and
1e-6 here); a model loaded with config.model.pretrained_scope='all' pools the reference's way
(`config.model.pooling.gem_eps_mode`, 'auto' -> 'add'). Test features are the post-BNNeck
embeddings (the reference's `feat_att`, L2-normalised by the cosine metric).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from jreid.weights_common import Path, check_zero_bias, convert_leaf
from jreid.weights_resnet import convert_resnet

_STREAMS = {'visible_module.visible.': 'visible', 'thermal_module.thermal.': 'infrared'}
_SHARED = 'base_resnet.base.'
_STEM = ('conv1.', 'bn1.')


def _strip(name: str) -> str:
  return name[len('module.'):] if name.startswith('module.') else name


def is_agw(state_dict: Mapping[str, Any]) -> bool:
  """True for an AGW `embed_net` state dict (`visible_module.visible.*` names)."""
  return any(_strip(k).startswith('visible_module.visible.') for k in state_dict)


def convert_agw_checkpoint(state_dict: Mapping[str, np.ndarray], target_paths: set[Path],
                           scope: str, source: str) -> dict[Path, np.ndarray]:
  """An AGW `embed_net` state dict -> {jreid two-stream path: array} (module docstring)."""
  del scope, source
  shared, streams, out = {}, {stream: {} for stream in _STREAMS.values()}, {}
  for name, value in state_dict.items():
    name, value = _strip(name), np.asarray(value)
    stream = next((s for prefix, s in _STREAMS.items() if name.startswith(prefix)), None)
    if stream is not None:
      rest = name.split('.', 2)[2]
      if rest.startswith(_STEM):
        streams[stream][rest] = value
    elif name.startswith(_SHARED):
      rest = name[len(_SHARED):]
      if rest.startswith('layer'):
        shared[rest] = value
      elif not rest.startswith(_STEM + ('fc.',)):
        out[('params', '<unknown>', name)] = value  # Reported by `merge`.
    elif re.match(r'^NL_\d+\.\d+\.', name):
      shared[re.sub(r'\.g\.0\.', '.g.', name)] = value  # g is a one-layer Sequential.
    elif name.startswith('bottleneck.'):
      leaf = name[len('bottleneck.'):]
      if leaf == 'bias':
        check_zero_bias(name, value)
        continue
      converted = convert_leaf(['head', 'bnneck'], leaf, value)
      if converted is not None:
        out[converted[0]] = converted[1]
    elif name == 'classifier.weight':
      out[('params', 'head', 'classifier', 'kernel')] = value.T
    else:
      out[('params', '<unknown>', name)] = value
  out.update(convert_resnet(shared, ('backbone',)))
  for stream, tensors in streams.items():
    out.update(convert_resnet(tensors, ('backbone', stream)))
  if ('params', 'pooling', 'p') in target_paths:
    out[('params', 'pooling', 'p')] = np.full((1,), 3.0, np.float32)
  return out
