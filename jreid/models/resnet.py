"""ResNet backbones (He et al., 2016) in torchvision's v1.5 form, with a re-ID last stride.

v1.5 puts the stride of a Bottleneck on its 3x3 convolution. `last_stride=1` keeps layer4 at
the resolution of layer3 (Luo et al., "Bag of Tricks"), as FastReID does for re-ID.

The parameter tree mirrors torchvision's state dict so pretrained weights can be imported:
`conv1`, `bn1`, `layer1_0/{conv1,bn1,conv2,bn2[,conv3,bn3][,downsample_conv,downsample_bn]}`,
..., `layer4_2` (torchvision's `layer1.0.downsample.0` is `layer1_0/downsample_conv`).
Inputs are NHWC, outputs the last feature map [B, h, w, C].
"""

import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jreid.models import BACKBONES

# torchvision initialises every convolution with kaiming_normal_(mode='fan_out', relu).
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# PyTorch BatchNorm defaults (momentum 0.1, eps 1e-5): running = 0.9 * running + 0.1 * batch.
BATCH_NORM_ARGS = dict(momentum=0.9, epsilon=1e-5)


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str) -> nn.Conv:
  """A bias-free convolution padded as PyTorch's `padding=kernel // 2`."""
  pad = kernel // 2
  return nn.Conv(
      features,
      (kernel, kernel),
      strides=(stride, stride),
      padding=((pad, pad), (pad, pad)),
      use_bias=False,
      kernel_init=conv_kernel_init,
      dtype=dtype,
      name=name,
  )


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, dtype=self.dtype, **BATCH_NORM_ARGS
    )
    y = _conv(self.features, 3, self.stride, self.dtype, 'conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = _conv(self.features, 3, 1, self.dtype, 'conv2')(y)
    y = norm(name='bn2')(y)
    return nn.relu(y + _shortcut(x, y.shape[-1], self.stride, norm, self.dtype))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided) -> 1x1 convolutions with a residual connection (ResNet-50+)."""

  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, dtype=self.dtype, **BATCH_NORM_ARGS
    )
    y = _conv(self.features, 1, 1, self.dtype, 'conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = _conv(self.features, 3, self.stride, self.dtype, 'conv2')(y)
    y = nn.relu(norm(name='bn2')(y))
    y = _conv(self.features * self.expansion, 1, 1, self.dtype, 'conv3')(y)
    y = norm(name='bn3')(y)
    return nn.relu(y + _shortcut(x, y.shape[-1], self.stride, norm, self.dtype))


def _shortcut(x: jnp.ndarray, features: int, stride: int, norm: Any, dtype: Any) -> jnp.ndarray:
  """Identity, or a strided 1x1 convolution + BatchNorm where the shape changes."""
  if stride == 1 and x.shape[-1] == features:
    return x
  x = _conv(features, 1, stride, dtype, 'downsample_conv')(x)
  return norm(name='downsample_bn')(x)


class ResNet(nn.Module):
  """ResNet trunk without the classifier: stem, layer1..layer4.

  Attributes:
    block: BasicBlock or Bottleneck.
    stage_sizes: number of blocks in layer1..layer4.
    width: channels of the stem and layer1 (64 in torchvision; smaller for CPU runs).
    last_stride: stride of layer4 (1 for re-ID, 2 for ImageNet classification).
    dtype: compute dtype (float32 or bfloat16); parameters stay float32.
  """

  block: type[BasicBlock] | type[Bottleneck]
  stage_sizes: Sequence[int]
  width: int = 64
  last_stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = _conv(self.width, 7, 2, self.dtype, 'conv1')(x)
    x = nn.BatchNorm(
        use_running_average=not train, dtype=self.dtype, name='bn1', **BATCH_NORM_ARGS
    )(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(self.stage_sizes):
      stage_stride = 1 if i == 0 else (self.last_stride if i == 3 else 2)
      for j in range(num_blocks):
        x = self.block(
            features=self.width * 2**i,
            stride=stage_stride if j == 0 else 1,
            dtype=self.dtype,
            name=f'layer{i + 1}_{j}',
        )(x, train)
    return x


def _resnet(block: type[BasicBlock] | type[Bottleneck], stage_sizes: Sequence[int]):
  """A backbone factory `(cfg, dtype) -> ResNet` reading cfg['width'] and cfg['last_stride']."""

  def build(cfg: Mapping[str, Any], dtype: Any = jnp.float32) -> ResNet:
    return ResNet(
        block, tuple(stage_sizes), width=cfg['width'], last_stride=cfg['last_stride'], dtype=dtype
    )

  return build


resnet18 = BACKBONES.register('resnet18')(_resnet(BasicBlock, (2, 2, 2, 2)))
resnet34 = BACKBONES.register('resnet34')(_resnet(BasicBlock, (3, 4, 6, 3)))
resnet50 = BACKBONES.register('resnet50')(_resnet(Bottleneck, (3, 4, 6, 3)))
resnet101 = BACKBONES.register('resnet101')(_resnet(Bottleneck, (3, 4, 23, 3)))
resnet152 = BACKBONES.register('resnet152')(_resnet(Bottleneck, (3, 8, 36, 3)))
