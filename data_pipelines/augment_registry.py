"""The registries of augmentation ops: every op registers itself where it is defined.

An image op is a factory `factory(**params) -> transform`, where a transform is
`(image uint8 [H, W, 3], seed [2]) -> image`; a batch op's transform takes a batch and one seed
per image. A new op is one decorated function::

    @register_op('flip', config_keys={'prob': 'flip_prob'}, gate='prob')
    def flip(prob: float = 0.5) -> Transform: ...

`config_keys` declares which `config.augment` key supplies the default of which parameter (a
parameter given in the op string, e.g. 'flip(prob=0.2)', wins over the key; a key absent from
the config leaves the factory's default). `gate` names the parameter that switches the op off
at 0: FastReID's default recipe leaves such an op out, and listing it in `config.augment.ops`
while its gate comes from a key holding 0 is an error (it would never apply).

This module imports no op module; `data_pipelines.transforms` imports every module that
defines ops, so importing `transforms` registers them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jreid.registry import Registry

# (image, seed) -> image for image ops; (images [B, H, W, 3], seeds [B, 2]) -> images for batch
# ops. Tensors are `tf.Tensor`; typed loosely so this module need not import TensorFlow.
Transform = Callable[[Any, Any], Any]
BatchTransform = Callable[[Any, Any], Any]

TRANSFORMS = Registry('transform')
BATCH_TRANSFORMS = Registry('batch transform')

# op name -> {parameter: config.augment key}, and op name -> gate parameter.
CONFIG_KEYS: dict[str, dict[str, str]] = {}
GATES: dict[str, str] = {}


def register_op(name: str, config_keys: Mapping[str, str] | None = None,
                gate: str | None = None) -> Callable[[Callable[..., Transform]],
                                                     Callable[..., Transform]]:
  """Registers an image-op factory under `name` (see the module docstring).

  Args:
    name: the op's name in `config.augment.ops`.
    config_keys: {parameter: config.augment key supplying its default}.
    gate: the parameter whose value 0 switches the op off; must be one of `config_keys`.
  """
  config_keys = dict(config_keys or {})
  if gate is not None and gate not in config_keys:
    raise ValueError(f'op {name!r}: gate {gate!r} must be one of its config_keys '
                     f'{sorted(config_keys)}.')

  def decorator(factory: Callable[..., Transform]) -> Callable[..., Transform]:
    TRANSFORMS.register(name)(factory)
    if config_keys:
      CONFIG_KEYS[name] = config_keys
    if gate is not None:
      GATES[name] = gate
    return factory

  return decorator


def register_batch_op(name: str) -> Callable[[Callable[..., BatchTransform]],
                                             Callable[..., BatchTransform]]:
  """Registers a batch-op factory under `name` (its name in `config.augment.batch_ops`)."""
  return BATCH_TRANSFORMS.register(name)


def gate(name: str) -> tuple[str, str] | None:
  """(parameter, config.augment key) whose value 0 switches op `name` off; None if none."""
  if name not in GATES:
    return None
  return GATES[name], CONFIG_KEYS[name][GATES[name]]


def config_defaults(name: str, aug_cfg: Mapping[str, Any]) -> dict[str, Any]:
  """{parameter: value} that op `name` takes from the keys of `aug_cfg` it declares."""
  return {param: aug_cfg[key] for param, key in CONFIG_KEYS.get(name, {}).items()
          if key in aug_cfg}
