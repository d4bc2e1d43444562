"""ResNeSt backbones (Zhang et al., "ResNeSt: Split-Attention Networks", 2020), as FastReID.

FastReID's `resnest50`/`resnest101` (from zhanghang1989/ResNeSt; timm's `resnest50d` /
`resnest101e` are the same networks): radix 2, cardinality 1, bottleneck width 64, a deep stem
(three 3x3 convolutions, `stem_width`, `stem_width`, `2 * stem_width` channels), average-pool
downsampling in the shortcut (`avg_down`) and in the block (`avd`: a 3x3 average pool after the
split-attention convolution carries the block's stride).

FastReID quirks kept on purpose (they change the computation, not the parameter count):
* `last_stride=1` makes layer4 stride 1 with dilation 2 in all but its first block, and the
  first block's `avd` pool still runs (3x3, stride 1, zero padding counted), as FastReID's
  `ResNeSt(last_stride=1)` does.

Parameter names follow the state dict: `conv1.{0,1,3,4,6}` -> `stem_conv1`, `stem_bn1`,
`stem_conv2`, `stem_bn2`, `stem_conv3`; `bn1`; `layer1_0/{conv1, bn1, conv2/{conv, bn0, fc1,
bn1, fc2}, conv3, bn3, downsample_conv, downsample_bn}` (`downsample.1`, `downsample.2`;
`downsample.0` is the parameter-free average pool).
"""

import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jreid.models import BACKBONES
from jreid.models.conv import Conv
from jreid.models.resnet import BATCH_NORM_ARGS, conv2d

# PyTorch's default Conv2d initialisation, used by the attention 1x1 convolutions (which keep
# it in the reference: its ResNeSt re-initialises only the convolution weights, with bias).
_torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


class SplitAttention(nn.Module):
  """Split-attention 3x3 convolution (`SplAtConv2d`), output `features` channels.

  conv (groups cardinality * radix) -> BN -> ReLU gives `radix` splits; their sum is pooled,
  passed through fc1 -> BN -> ReLU -> fc2 (1x1, groups cardinality) and a softmax over the
  radix (sigmoid for radix 1) weights the splits.
  """

  features: int
  stride: int = 1
  dilation: int = 1
  radix: int = 2
  cardinality: int = 1
  reduction: int = 4
  min_inter_channels: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, dtype=self.dtype, **BATCH_NORM_ARGS)
    inter = max(x.shape[-1] * self.radix // self.reduction, self.min_inter_channels)
    y = conv2d(self.features * self.radix, 3, self.stride, self.dtype, 'conv',
              groups=self.cardinality * self.radix, dilation=self.dilation)(x)
    y = nn.relu(norm(name='bn0')(y))
    batch, height, width, _ = y.shape
    splits = y.reshape(batch, height, width, self.radix, self.features)  # torch.split(dim=1)
    gap = jnp.mean(jnp.sum(splits, axis=3), axis=(1, 2), keepdims=True)  # [B, 1, 1, C]
    fc = functools.partial(Conv, kernel_size=(1, 1), feature_group_count=self.cardinality,
                           use_bias=True, kernel_init=_torch_default_kernel_init,
                           dtype=self.dtype)
    gap = nn.relu(norm(name='bn1')(fc(inter, name='fc1')(gap)))
    atten = fc(self.features * self.radix, name='fc2')(gap).reshape(batch, -1)
    if self.radix > 1:  # rSoftMax: [B, cardinality, radix, -1] -> softmax over radix
      atten = atten.reshape(batch, self.cardinality, self.radix, -1).astype(jnp.float32)
      atten = jax.nn.softmax(atten, axis=2).transpose(0, 2, 1, 3)
      atten = atten.reshape(batch, self.radix, self.features).astype(y.dtype)
    else:
      atten = jax.nn.sigmoid(atten).reshape(batch, 1, self.features)
    return jnp.einsum('bhwrc,brc->bhwc', splits, atten)


class ResNeStBottleneck(nn.Module):
  """ResNeSt Bottleneck: 1x1 -> split-attention 3x3 [-> avd pool] -> 1x1, avg-down shortcut."""

  features: int
  stride: int = 1
  avd: bool = False
  dilation: int = 1
  radix: int = 2
  cardinality: int = 1
  bottleneck_width: int = 64
  min_inter_channels: int = 32
  dtype: Any = jnp.float32

  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, dtype=self.dtype, **BATCH_NORM_ARGS)
    group_width = int(self.features * (self.bottleneck_width / 64.0)) * self.cardinality
    y = nn.relu(norm(name='bn1')(conv2d(group_width, 1, 1, self.dtype, 'conv1')(x)))
    y = SplitAttention(group_width, stride=1 if self.avd else self.stride,
                       dilation=self.dilation, radix=self.radix, cardinality=self.cardinality,
                       min_inter_channels=self.min_inter_channels, dtype=self.dtype,
                       name='conv2')(y, train)
    if self.avd:  # AvgPool2d(3, stride, padding=1), zero padding counted
      y = nn.avg_pool(y, (3, 3), strides=(self.stride, self.stride), padding=((1, 1), (1, 1)),
                      count_include_pad=True)
    y = norm(name='bn3')(conv2d(self.features * self.expansion, 1, 1, self.dtype, 'conv3')(y))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features * self.expansion:
      if self.stride != 1:  # AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
        s = self.stride
        pad = tuple((0, -size % s) for size in x.shape[1:3])
        shortcut = nn.avg_pool(x, (s, s), strides=(s, s), padding=pad, count_include_pad=False)
      shortcut = conv2d(self.features * self.expansion, 1, 1, self.dtype,
                        'downsample_conv')(shortcut)
      shortcut = norm(name='downsample_bn')(shortcut)
    return nn.relu(y + shortcut)


class ResNeSt(nn.Module):
  """ResNeSt trunk without the classifier: deep stem, layer1..layer4; NHWC -> [B, h, w, C].

  Attributes:
    stage_sizes: blocks in layer1..layer4 (a prefix cuts the trunk).
    width: channels of layer1's `planes` (64 in the paper; smaller for CPU runs).
    stem_width: channels of the first two stem convolutions (the third has twice as many).
    last_stride: stride of layer4; 1 also dilates layer4 as FastReID does.
    radix, cardinality, bottleneck_width: split-attention shape.
    min_inter_channels: floor of the attention hidden width (32 in the paper).
    dtype: compute dtype.
  """

  stage_sizes: Sequence[int]
  width: int = 64
  stem_width: int = 32
  last_stride: int = 1
  radix: int = 2
  cardinality: int = 1
  bottleneck_width: int = 64
  min_inter_channels: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, dtype=self.dtype, **BATCH_NORM_ARGS)
    x = nn.relu(norm(name='stem_bn1')(conv2d(self.stem_width, 3, 2, self.dtype, 'stem_conv1')(x)))
    x = nn.relu(norm(name='stem_bn2')(conv2d(self.stem_width, 3, 1, self.dtype, 'stem_conv2')(x)))
    x = conv2d(self.stem_width * 2, 3, 1, self.dtype, 'stem_conv3')(x)
    x = nn.relu(norm(name='bn1')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(self.stage_sizes):
      stage_stride = 1 if i == 0 else (self.last_stride if i == 3 else 2)
      dilated = i == 3 and self.last_stride == 1
      for j in range(num_blocks):
        x = ResNeStBottleneck(
            features=self.width * 2**i,
            stride=stage_stride if j == 0 else 1,
            # FastReID/zhanghang: avd = stride > 1 or is_first (the first block of layer2..4).
            avd=j == 0 and (stage_stride > 1 or i > 0),
            dilation=2 if dilated and j > 0 else 1,
            radix=self.radix, cardinality=self.cardinality,
            bottleneck_width=self.bottleneck_width,
            min_inter_channels=self.min_inter_channels, dtype=self.dtype,
            name=f'layer{i + 1}_{j}',
        )(x, train)
    return x


def _resnest(stage_sizes: Sequence[int], stem_width: int):
  """A factory `(cfg, dtype) -> ResNeSt`; cfg['width'] scales every width (64 = the paper)."""

  def build(cfg: Mapping[str, Any], dtype: Any = jnp.float32) -> ResNeSt:
    width = int(cfg['width'])
    if width < 2:
      raise ValueError(f'config.model.backbone.width must be >= 2 for ResNeSt, got {width}.')
    for key in ('with_ibn', 'with_se', 'with_nl'):
      if cfg.get(key):
        raise ValueError(f'config.model.backbone.{key} is not supported by ResNeSt backbones; '
                         'unset it or choose a resnet* backbone.')
    return ResNeSt(tuple(stage_sizes), width=width, stem_width=stem_width * width // 64,
                   last_stride=cfg['last_stride'],
                   min_inter_channels=max(1, 32 * width // 64), dtype=dtype)

  return build


resnest50 = BACKBONES.register('resnest50')(_resnest((3, 4, 6, 3), 32))
resnest101 = BACKBONES.register('resnest101')(_resnest((3, 4, 23, 3), 64))
