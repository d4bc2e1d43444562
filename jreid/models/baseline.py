"""The re-ID baseline meta-architecture: preprocess -> backbone -> pooling -> head.

This is FastReID's `Baseline` (the "BoT" strong baseline of Luo et al. with a ResNet backbone,
global pooling and a BNNeck head); the components are chosen by name in `build_model`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jreid.models import ARCHITECTURES, BACKBONES, HEADS, POOLINGS

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
INPUT_NORMS = ('fixed', 'per_image')


def normalize_input(images: jnp.ndarray, mean: Sequence[float], std: Sequence[float],
                    mode: str = 'fixed') -> jnp.ndarray:
  """Float32 backbone input from images in 0..255 (NHWC).

  'fixed': (x - mean) / std with the configured per-channel mean and std (ImageNet's by
  default). 'per_image': each image standardised by its own per-channel mean and std, so any
  per-channel affine change of an image (a camera's illumination gain, colour cast, haze) gives
  the same input; a grey-world normalisation that stands in for the camera invariance ImageNet
  features bring when a network starts from random weights.
  """
  x = images.astype(jnp.float32)
  if mode == 'fixed':
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  if mode == 'per_image':
    mu = jnp.mean(x, axis=(1, 2), keepdims=True)
    sigma = jnp.std(x, axis=(1, 2), keepdims=True)
    return (x - mu) / jnp.maximum(sigma, 1.0)
  raise ValueError(f'config.model.input_norm must be one of {INPUT_NORMS}, got {mode!r}.')


def input_norm_from(cfg: Mapping[str, Any]) -> str:
  """`cfg['input_norm']` of a `model` config section ('fixed' when absent), checked."""
  mode = cfg.get('input_norm', 'fixed')
  if mode not in INPUT_NORMS:
    raise ValueError(f'config.model.input_norm must be one of {INPUT_NORMS}, got {mode!r}.')
  return mode


class Baseline(nn.Module):
  """Backbone + pooling + head on images in 0..255.

  Attributes:
    backbone: module `(x [B, H, W, 3] float, train) -> feature map [B, h, w, C]`.
    pooling: module `feature map -> [B, C]`.
    head: module `(pooled, train[, labels]) -> dict` (see `EmbeddingHead`).
    pixel_mean: per-channel mean subtracted from the 0..255 input ((0, 0, 0) with std
      (255, 255, 255) feeds the backbone [0, 1] images).
    pixel_std: per-channel divisor.
    input_norm: 'fixed' (pixel_mean/std) or 'per_image' (see `normalize_input`).
  """

  backbone: nn.Module
  pooling: nn.Module
  head: nn.Module
  pixel_mean: Sequence[float] = IMAGENET_MEAN
  pixel_std: Sequence[float] = IMAGENET_STD
  input_norm: str = 'fixed'

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool,
               labels: jnp.ndarray | None = None,
               feature_map: bool = False) -> dict[str, jnp.ndarray]:
    """Embeds images, uint8 or float in 0..255, NHWC.

    `labels` ([B] identity indices) are passed to the head in training; margin classifier
    layers (ArcFace, CosFace, CircleSoftmax) need them, the linear one ignores them.
    `feature_map=True` also returns the backbone's feature map before pooling (for matchers of
    spatial features, e.g. DSR).

    Returns:
      training: {'logits': [B, num_classes], 'features': [B, D'] (the triplet-loss feature,
      see `neck_feat`), 'embedding': [B, D] (post-neck)} (+ 'pred_class_logits' for margin
      classifier layers); evaluation: {'embedding': [B, D]}; + 'feature_map' [B, h, w, C] when
      asked for. Always float32, whatever the compute dtype.
    """
    channels = len(self.pixel_mean)
    if images.ndim != 4 or images.shape[-1] != channels:
      raise ValueError(
          f'Baseline expects images shaped [batch, height, width, {channels}] (NHWC), got '
          f'{images.shape}; transpose NCHW input with x.transpose(0, 2, 3, 1).'
      )
    x = normalize_input(images, self.pixel_mean, self.pixel_std, self.input_norm)
    fmap = self.backbone(x, train=train)
    pooled = self.pooling(fmap)
    outputs = (self.head(pooled, train=train) if labels is None else
               self.head(pooled, train=train, labels=labels))
    if feature_map:
      outputs = {**outputs, 'feature_map': fmap}
    return {k: v.astype(jnp.float32) for k, v in outputs.items()}


def _component(registry: Any, section: Mapping[str, Any], where: str) -> Any:
  """The factory named by `section['name']`; an unknown name names the config key to fix."""
  try:
    return registry.get(section['name'])
  except ValueError as e:
    raise ValueError(f'config.model.{where}.name: {e}') from None


@ARCHITECTURES.register('baseline')
def build_baseline(cfg: Mapping[str, Any], num_classes: int) -> Baseline:
  """Builds `Baseline` from the `model` config section (see `default_model_config`)."""
  if cfg['dtype'] not in DTYPES:
    raise ValueError(
        f'config.model.dtype must be one of {sorted(DTYPES)}, got {cfg["dtype"]!r}.'
    )
  dtype = DTYPES[cfg['dtype']]
  backbone = _component(BACKBONES, cfg['backbone'], 'backbone')(cfg['backbone'], dtype)
  pooling = _component(POOLINGS, cfg['pooling'], 'pooling')(cfg['pooling'])
  head = _component(HEADS, cfg['head'], 'head')(cfg['head'], num_classes)
  pixel_mean = tuple(float(v) for v in cfg['pixel_mean'])
  pixel_std = tuple(float(v) for v in cfg['pixel_std'])
  if len(pixel_mean) != len(pixel_std) or min(pixel_std) <= 0:
    raise ValueError(
        'config.model.pixel_mean and pixel_std must hold one number per channel, std > 0; got '
        f'{pixel_mean} and {pixel_std}.'
    )
  return Baseline(backbone, pooling, head, pixel_mean=pixel_mean, pixel_std=pixel_std,
                  input_norm=input_norm_from(cfg))
