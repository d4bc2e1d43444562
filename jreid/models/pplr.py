"""The PPLR network (Cho et al., CVPR 2022, `ResNetPart`): one backbone, a global and P part
branches, architecture 'pplr'.

  feature map [B, h, w, C] --GAP--> BNNeck (bias frozen) --> f_g --> classifier (no bias)
               \\--average-pool into P horizontal stripes--> per stripe: BNNeck --> f_p
                                                                       --> classifier_p

Stripe p covers rows floor(p h / P) .. ceil((p + 1) h / P) - 1 (PyTorch's adaptive average
pooling to (P, 1)). The classifiers have a fixed capacity `num_classes` (jit and checkpoint
shapes never change); the PPLR setup uses the first K (clusters of the epoch), masks the rest
(see `jreid.losses.pplr`) and re-initialises the first K columns to the L2-normalised cluster
centroids each epoch. Classifier kernels are [C, num_classes] (`classifier`, `classifier_0`,
...), initialised N(0, 0.001^2) as the reference.

Outputs: training {'embedding': f_g [B, C], 'logits': [B, num_classes], 'part_embeddings':
[B, P, C], 'part_logits': [B, P, num_classes]}; evaluation {'embedding': L2-normalised f_g,
'part_embeddings': L2-normalised f_p [B, P, C]}.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jreid.models import ARCHITECTURES, BACKBONES
from jreid.models.baseline import DTYPES, IMAGENET_MEAN, IMAGENET_STD
from jreid.models.baseline import input_norm_from, normalize_input
from jreid.models.resnet import BATCH_NORM_ARGS

CLASSIFIER_INIT = nn.initializers.normal(stddev=0.001)


def stripe_pool(feature_map: jnp.ndarray, num_parts: int) -> jnp.ndarray:
  """Adaptive average pooling of [B, h, w, C] to [B, num_parts, C] horizontal stripes."""
  h = feature_map.shape[1]
  stripes = []
  for p in range(num_parts):
    start = (p * h) // num_parts
    stop = -(-((p + 1) * h) // num_parts)
    stripes.append(jnp.mean(feature_map[:, start:stop], axis=(1, 2)))
  return jnp.stack(stripes, axis=1)


def _l2_normalize(x: jnp.ndarray) -> jnp.ndarray:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class PPLRNet(nn.Module):
  """Backbone + global and part BNNeck branches with bias-free classifiers.

  Attributes:
    backbone: module `(x, train) -> feature map [B, h, w, C]`.
    num_classes: classifier capacity (max clusters of any epoch).
    num_parts: horizontal stripes (PPLR: 3).
    pixel_mean, pixel_std: input normalisation of the 0..255 images.
    input_norm: 'fixed' (pixel_mean/std) or 'per_image' (`baseline.normalize_input`).
  """

  backbone: nn.Module
  num_classes: int
  num_parts: int = 3
  pixel_mean: Sequence[float] = IMAGENET_MEAN
  pixel_std: Sequence[float] = IMAGENET_STD
  input_norm: str = 'fixed'

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool) -> dict[str, jnp.ndarray]:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'PPLRNet expects images shaped [batch, height, width, 3] (NHWC), got '
                       f'{images.shape}.')
    x = normalize_input(images, self.pixel_mean, self.pixel_std, self.input_norm)
    feature_map = self.backbone(x, train=train)
    feature_map = feature_map.astype(jnp.float32)
    if feature_map.shape[1] < self.num_parts:
      raise ValueError(f'PPLRNet: the feature map has {feature_map.shape[1]} rows, fewer than '
                       f'{self.num_parts} parts; use a taller input or fewer parts '
                       '(config.pplr.num_parts).')

    def neck(x, name):  # BNNeck: bias frozen at zero (absent).
      return nn.BatchNorm(use_running_average=not train, use_bias=False, name=name,
                          **BATCH_NORM_ARGS)(x)

    def classifier(x, name):
      return nn.Dense(self.num_classes, use_bias=False, kernel_init=CLASSIFIER_INIT, name=name)(x)

    f_g = neck(jnp.mean(feature_map, axis=(1, 2)), 'bnneck')
    stripes = stripe_pool(feature_map, self.num_parts)
    f_p = jnp.stack([neck(stripes[:, p], f'bnneck_{p}') for p in range(self.num_parts)], axis=1)
    if not train and not self.is_initializing():
      return {'embedding': _l2_normalize(f_g), 'part_embeddings': _l2_normalize(f_p)}
    logits = classifier(f_g, 'classifier')
    part_logits = jnp.stack([classifier(f_p[:, p], f'classifier_{p}')
                             for p in range(self.num_parts)], axis=1)
    if not train:  # init in eval mode: same parameter tree, evaluation outputs
      return {'embedding': _l2_normalize(f_g), 'part_embeddings': _l2_normalize(f_p)}
    return {'embedding': f_g, 'logits': logits, 'part_embeddings': f_p,
            'part_logits': part_logits}


@ARCHITECTURES.register('pplr')
def build_pplr(cfg: Mapping[str, Any], num_classes: int, num_parts: int = 3) -> PPLRNet:
  """PPLRNet from the `model` config section (backbone, pixel_mean/std, dtype) with classifier
  capacity `num_classes` and `num_parts` stripes (the PPLR setup passes config.pplr.num_parts)."""
  if cfg['dtype'] not in DTYPES:
    raise ValueError(f'config.model.dtype must be one of {sorted(DTYPES)}, got {cfg["dtype"]!r}.')
  try:
    factory = BACKBONES.get(cfg['backbone']['name'])
  except ValueError as e:
    raise ValueError(f'config.model.backbone.name: {e}') from None
  if int(num_parts) < 1:
    raise ValueError(f'PPLR needs num_parts >= 1 (config.pplr.num_parts), got {num_parts}.')
  return PPLRNet(factory(cfg['backbone'], DTYPES[cfg['dtype']]), int(num_classes),
                 int(num_parts), tuple(float(v) for v in cfg['pixel_mean']),
                 tuple(float(v) for v in cfg['pixel_std']), input_norm_from(cfg))
