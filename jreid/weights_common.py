"""PyTorch tensors -> jreid variables: what every architecture's weight converter shares.

A converter maps a PyTorch state dict to `{path: array}`, where a path is the variable's place
in jreid's `{'params', 'batch_stats'}` tree, e.g. ('params', 'backbone', 'layer1_0', 'conv1',
'kernel'). The tensor rules are the same for every architecture: convolution OIHW -> HWIO;
Linear [out, in] -> Dense [in, out]; BatchNorm weight/bias/running_mean/running_var ->
scale/bias (params) and mean/var (batch_stats); InstanceNorm weight/bias -> scale/bias;
`num_batches_tracked` dropped (`convert_leaf`). FastReID's `EmbeddingHead` is shared by its
ResNet and OSNet checkpoints (`convert_embedding_head`). `jreid.weights` picks the converter
of a state dict and merges the result into a model's variables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Path = tuple[str, ...]  # ('params', 'backbone', 'layer1_0', 'conv1', 'kernel')


class WeightConversionError(ValueError):
  """The weight file does not fit the model (missing, unexpected or mis-shaped weights)."""


_STATS = {'running_mean': 'mean', 'running_var': 'var'}


def convert_leaf(module: list[str], leaf: str, value: np.ndarray) -> tuple[Path, np.ndarray] | None:
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


def has_reduction(target_paths: set[Path], head: str) -> bool:
  """Whether the model's head `head` has a reduction layer (from its flattened variable paths)."""
  return any(len(p) > 2 and p[1] == head and p[2] == 'reduction' for p in target_paths)


def is_fastreid(state_dict: Mapping[str, Any]) -> bool:
  """True for a FastReID meta-architecture state dict (names under `backbone.` / `heads.`)."""
  return any(k.startswith(('backbone.', 'heads.', 'b1_head.')) for k in state_dict)


# FastReID stores its input normalisation with the weights; jreid normalises in the pipeline.
FASTREID_PIXEL_STATS = ('pixel_mean', 'pixel_std')


def check_zero_bias(name: str, value: np.ndarray) -> None:
  """Raises unless FastReID's BNNeck bias `name` is zero (jreid's BNNeck has none)."""
  if np.any(np.abs(value) > 1e-6):
    raise WeightConversionError(
        f'{name} is not zero (max |b| = {np.abs(value).max():.3g}), but jreid\'s BNNeck has no bias '
        '(FastReID freezes it at zero): this checkpoint was trained with a learnable neck bias and '
        'cannot be converted exactly.')


def convert_embedding_head(prefix: str, sd: Mapping[str, np.ndarray], pool: str, head: str,
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
        check_zero_bias(name, value)
        continue
      converted = convert_leaf([head, 'bnneck'], leaf, value)
      if converted is not None:
        out[converted[0]] = converted[1]
    else:
      out[('params', head, '<unknown>', rest)] = value  # reported as unexpected
  return out


def convert_fastreid_baseline(
    state_dict: Mapping[str, np.ndarray], target_paths: set[Path],
    convert_backbone: Callable[[Mapping[str, np.ndarray], Path], dict[Path, np.ndarray]],
) -> dict[Path, np.ndarray]:
  """A FastReID `Baseline` state dict (`backbone.*`, `heads.*`) -> {jreid path: array}.

  `convert_backbone(tensors, ('backbone',))` converts the backbone's tensors (names without the
  `backbone.` prefix) for the architecture at hand; the EmbeddingHead goes to jreid's `pooling`
  and `head`, with a reduction layer when `target_paths` (the model's flattened variable paths)
  have one. FastReID's pixel statistics are dropped; any other tensor comes out under
  ('params', '<unknown>', name), so that `jreid.weights.merge` reports it.
  """
  sd = {k: np.asarray(v) for k, v in state_dict.items() if k not in FASTREID_PIXEL_STATS}
  backbone = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
  out = convert_backbone(backbone, ('backbone',))
  out.update(convert_embedding_head('heads', sd, 'pooling', 'head',
                                    has_reduction(target_paths, 'head')))
  for name, value in sd.items():
    if not name.startswith(('backbone.', 'heads.')):
      out[('params', '<unknown>', name)] = value
  return out
