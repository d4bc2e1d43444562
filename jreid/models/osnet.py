"""OSNet backbones (Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019).

OSNet x1.0 as torchreid's `osnet_x1_0` (and FastReID's OSNet backbone, which has the same
structure and names), without the embedding `fc` and the `classifier`:

* `conv1`: 7x7 stride-2 convolution (`width` channels) + BatchNorm + ReLU, then a 3x3 stride-2
  max-pool padded by 1 (floor mode: `stem_pool='torchvision'`).
* `conv2`, `conv3`, `conv4`: 2 `OSBlock`s each, `4 * width`, `6 * width`, `8 * width` channels
  (256, 384, 512 at width 64). After the blocks of conv2 and conv3 a transition: 1x1 conv + BN +
  ReLU, then a 2x2 stride-2 average pool. conv4 keeps the resolution (output stride 16).
* `conv5`: 1x1 convolution + BN + ReLU to `8 * width` channels. The output is this feature map.

`OSBlock` (bottleneck reduction 4, mid = out // 4): 1x1 conv + BN + ReLU to mid channels; four
streams of 1, 2, 3 and 4 `LiteConv3x3` (1x1 linear conv -> depthwise 3x3 conv -> BN -> ReLU);
each stream is rescaled by the *shared* unified aggregation gate (global average pool -> fc1
(mid // 16, bias) -> ReLU -> fc2 (mid, bias) -> sigmoid) and the four are summed; 1x1 conv + BN
(no ReLU) to out channels; plus the identity, or a 1x1 conv + BN projection where the channels
change; ReLU.

`osnet_ibn_x1_0` (torchreid's `IN=True`, following IBN-Net), exactly where torchreid puts it:
* the stem `conv1` normalises with an InstanceNorm (affine, no running statistics) instead of
  BatchNorm;
* both OSBlocks of conv2 (not conv3, not the conv2 transition) apply an InstanceNorm (affine)
  after the residual addition, before the final ReLU (`IN`).

`width` is torchreid's `channels[0]`: 64 is x1.0; torchreid's x0.75 / x0.5 / x0.25 are widths
48 / 32 / 16 (channels `width * (1, 4, 6, 8)`). The gate needs mid // 16 >= 1, so width >= 16.

Parameter tree (torchreid state dict name -> jreid path; `jreid.weights_osnet` converts):
`conv1.conv` -> `conv1/conv`, `conv1.bn` -> `conv1/bn`; `conv2.0.conv1.conv` ->
`conv2_0/conv1/conv`; `conv2.0.conv2a.conv1` -> `conv2_0/conv2a/conv1`; `conv2.0.conv2b.1.bn` ->
`conv2_0/conv2b_1/bn`; `conv2.0.gate.fc1` -> `conv2_0/gate/fc1` (a Dense; torch's 1x1 conv);
`conv2.0.conv3`, `conv2.0.downsample`, `conv2.0.IN`; the transition `conv2.2.0` ->
`conv2_transition`; `conv5.conv` -> `conv5/conv`. Inputs are NHWC, outputs [B, h, w, 8 * width].
"""

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jreid.models import BACKBONES
from jreid.models.resnet import BATCH_NORM_ARGS, conv2d, conv_kernel_init, instance_norm
from jreid.models.resnet import stem_max_pool

STAGE_BLOCKS = (2, 2, 2)  # OSBlocks in conv2, conv3, conv4 (every torchreid OSNet).
CHANNEL_MULTIPLIERS = (4, 6, 8)  # conv2..conv4 channels in units of `width` (256/384/512 at 64).
BOTTLENECK_REDUCTION = 4
GATE_REDUCTION = 16


def _batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, dtype=dtype, name=name, **BATCH_NORM_ARGS)


class ConvBN(nn.Module):
  """torchreid's `ConvLayer` / `Conv1x1` / `Conv1x1Linear`: conv (`conv`) + norm (`bn`) [+ ReLU].

  `instance_norm=True` makes `bn` an affine InstanceNorm (the IBN stem).
  """

  features: int
  kernel: int = 1
  stride: int = 1
  relu: bool = True
  instance_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = conv2d(self.features, self.kernel, self.stride, self.dtype, 'conv')(x)
    if self.instance_norm:
      x = instance_norm(self.dtype, 'bn')(x)
    else:
      x = _batch_norm(train, self.dtype, 'bn')(x)
    return nn.relu(x) if self.relu else x


class LiteConv3x3(nn.Module):
  """Lite 3x3 (torchreid's `LightConv3x3`): 1x1 linear conv -> depthwise 3x3 -> BN -> ReLU."""

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = conv2d(self.features, 1, 1, self.dtype, 'conv1')(x)
    x = conv2d(self.features, 3, 1, self.dtype, 'conv2', groups=self.features)(x)
    return nn.relu(_batch_norm(train, self.dtype, 'bn')(x))


class ChannelGate(nn.Module):
  """The unified aggregation gate: x * sigmoid(fc2(relu(fc1(mean_hw(x))))), hidden C // 16.

  torchreid's fc1/fc2 are 1x1 convolutions with bias on the pooled [B, C, 1, 1] map; here Dense
  layers on [B, C] (the same numbers).
  """

  reduction: int = GATE_REDUCTION
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels = x.shape[-1]
    dense = functools.partial(nn.Dense, kernel_init=conv_kernel_init, dtype=self.dtype)
    s = jnp.mean(x, axis=(1, 2))
    s = nn.relu(dense(channels // self.reduction, name='fc1')(s))
    s = nn.sigmoid(dense(channels, name='fc2')(s))
    return x * s[:, None, None, :]


class OSBlock(nn.Module):
  """Omni-scale residual block: 4 streams of 1..4 Lite 3x3 convolutions, shared gate, residual.

  `instance_norm=True` adds torchreid's `IN` (affine InstanceNorm after the addition).
  """

  features: int
  instance_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    mid = self.features // BOTTLENECK_REDUCTION
    y = ConvBN(mid, dtype=self.dtype, name='conv1')(x, train)
    gate = ChannelGate(dtype=self.dtype, name='gate')
    total = None
    for stream, depth in zip('abcd', (1, 2, 3, 4)):
      z = y
      for i in range(depth):
        name = 'conv2a' if depth == 1 else f'conv2{stream}_{i}'  # torchreid: conv2b.0, conv2b.1
        z = LiteConv3x3(mid, dtype=self.dtype, name=name)(z, train)
      z = gate(z)
      total = z if total is None else total + z
    out = ConvBN(self.features, relu=False, dtype=self.dtype, name='conv3')(total, train)
    identity = x
    if x.shape[-1] != self.features:
      identity = ConvBN(self.features, relu=False, dtype=self.dtype, name='downsample')(x, train)
    out = out + identity
    if self.instance_norm:
      out = instance_norm(self.dtype, 'IN')(out)
    return nn.relu(out)


class OSNet(nn.Module):
  """OSNet feature extractor (conv1 .. conv5, no fc / classifier). See the module docstring.

  Attributes:
    width: stem channels (torchreid's channels[0]; 64 = x1.0, >= 16).
    ibn: torchreid's `IN=True` (osnet_ibn_x1_0): InstanceNorm in the stem and in conv2's blocks.
    dtype: compute dtype (float32 or bfloat16); parameters stay float32.
    stem_pool: 'torchvision' (torchreid/FastReID: floor-mode 3x3/2 max-pool) or 'fastreid'
      (ceil mode, as jreid's ResNet option; not what the OSNet references use).
  """

  width: int = 64
  ibn: bool = False
  dtype: Any = jnp.float32
  stem_pool: str = 'torchvision'

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = ConvBN(self.width, kernel=7, stride=2, instance_norm=self.ibn, dtype=self.dtype,
               name='conv1')(x, train)
    x = stem_max_pool(x, self.stem_pool)
    for stage, (num_blocks, mult) in enumerate(zip(STAGE_BLOCKS, CHANNEL_MULTIPLIERS)):
      features = self.width * mult
      for j in range(num_blocks):
        x = OSBlock(features, instance_norm=self.ibn and stage == 0, dtype=self.dtype,
                    name=f'conv{stage + 2}_{j}')(x, train)
      if stage < 2:  # transition after conv2 and conv3 (torchreid `convN.2`)
        x = ConvBN(features, dtype=self.dtype, name=f'conv{stage + 2}_transition')(x, train)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    return ConvBN(self.width * CHANNEL_MULTIPLIERS[-1], dtype=self.dtype, name='conv5')(x, train)


def _osnet(ibn: bool, name: str):
  """A backbone factory `(cfg, dtype) -> OSNet` reading cfg['width'] and cfg['stem_pool'].

  The ResNet-only switches must keep their neutral values: `last_stride` 1 (OSNet's last stages
  already keep stride 16), `with_ibn` '' (choose 'osnet_ibn_x1_0' instead), no SE, no non-local.
  """

  def build(cfg: Mapping[str, Any], dtype: Any = jnp.float32) -> OSNet:
    width = int(cfg['width'])
    if width < GATE_REDUCTION:
      raise ValueError(f'config.model.backbone.width={width} is too small for {name!r}: its '
                       f'aggregation gate has width // {GATE_REDUCTION} hidden units; use width '
                       f'>= {GATE_REDUCTION} (64 = x1.0, 16 = x0.25).')
    if int(cfg.get('last_stride', 1)) != 1:
      raise ValueError(f'config.model.backbone.last_stride={cfg["last_stride"]} is not supported '
                       f'by {name!r}: OSNet has no strided last stage (output stride 16); set '
                       'last_stride=1.')
    if cfg.get('with_ibn', ''):
      raise ValueError(f'config.model.backbone.with_ibn={cfg["with_ibn"]!r} does not apply to '
                       f"{name!r}; set with_ibn='' and use backbone 'osnet_ibn_x1_0' for IBN.")
    for key in ('with_se', 'with_nl'):
      if cfg.get(key, False):
        raise ValueError(f'config.model.backbone.{key}=True is a ResNet option; {name!r} does not '
                         f'have it. Set {key}=False.')
    return OSNet(width=width, ibn=ibn, dtype=dtype,
                 stem_pool=str(cfg.get('stem_pool', 'torchvision')))

  return build


osnet_x1_0 = BACKBONES.register('osnet_x1_0')(_osnet(False, 'osnet_x1_0'))
osnet_ibn_x1_0 = BACKBONES.register('osnet_ibn_x1_0')(_osnet(True, 'osnet_ibn_x1_0'))
