"""ResNet backbones (He et al., 2016) in torchvision's v1.5 form, with a re-ID last stride.

v1.5 puts the stride of a Bottleneck on its 3x3 convolution. `last_stride=1` keeps layer4 at
the resolution of layer3 (Luo et al., "Bag of Tricks"), as FastReID does for re-ID.

The parameter tree mirrors torchvision's state dict so pretrained weights can be imported:
`conv1`, `bn1`, `layer1_0/{conv1,bn1,conv2,bn2[,conv3,bn3][,downsample_conv,downsample_bn]}`,
..., `layer4_2` (torchvision's `layer1.0.downsample.0` is `layer1_0/downsample_conv`).
Inputs are NHWC, outputs the last feature map [B, h, w, C].

Variants, each a switch of the same trunk:

* ResNeXt (Xie et al., 2017): `groups` x `width_per_group` grouped 3x3 convolution in each
  Bottleneck, as torchvision's `resnext50_32x4d` (bottleneck width
  `int(planes * width_per_group / 64) * groups`).
* IBN-Net (Pan et al., ECCV 2018), as XingangPan/IBN-Net's `resnet*_ibn_a/b`:
  - IBN-a: `bn1` of every block of layer1..layer3 is `IBN`: InstanceNorm (affine) on the first
    half of the channels, BatchNorm on the rest (state dict `layer1.0.bn1.IN.weight`,
    `layer1.0.bn1.BN.running_mean`, ...). FastReID's `with_ibn` is IBN-a.
  - IBN-b: the stem `bn1` is an InstanceNorm (affine, no running statistics), and the *last*
    block of layer1 and of layer2 applies an InstanceNorm (`IN`) after the residual addition,
    before the ReLU.
* Squeeze-excitation (Hu et al., 2018): `with_se` rescales the block output channels (before
  the residual addition) by sigmoid(fc2(relu(fc1(avgpool(y))))), reduction 16, as FastReID's
  `with_se` and timm's `seresnet50`.
* Non-local blocks (FastReID/AGW `with_nl`): `nl_layers[i]` `NonLocal` blocks after the last
  `nl_layers[i]` blocks of stage i (`NL_{i+1}_{k}`, FastReID's `NL_{i+1}.{k}`).
* Stem max-pool (`stem_pool`): 'torchvision' is `MaxPool2d(3, 2, padding=1)`; 'fastreid' is
  FastReID's `MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)` with no padding (see
  `stem_max_pool`): the same size on even inputs (128x64 -> 64x32) but windows shifted by one
  pixel, so a converted FastReID checkpoint needs it to give FastReID's embeddings.
"""

import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jreid.models import BACKBONES
from jreid.models.conv import Conv
from jreid.models.nonlocal_block import NonLocal

# torchvision initialises every convolution with kaiming_normal_(mode='fan_out', relu).
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# PyTorch BatchNorm defaults (momentum 0.1, eps 1e-5): running = 0.9 * running + 0.1 * batch.
BATCH_NORM_ARGS = dict(momentum=0.9, epsilon=1e-5)

IBN_MODES = ('', 'a', 'b')
STEM_POOLS = ('torchvision', 'fastreid')


def stem_max_pool(x: jnp.ndarray, mode: str = 'torchvision') -> jnp.ndarray:
  """The 3x3 stride-2 stem max-pool of torchvision (floor mode, padded by 1) or FastReID.

  'fastreid' is FastReID's `nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)`: no padding,
  ceil mode (JDAI-CV/fast-reid fastreid/modeling/backbones/resnet.py at commit 4f90197, where the
  torchvision line `MaxPool2d(kernel_size=3, stride=2, padding=1)` is commented out above it; the
  early revision 12957f6 still used the torchvision pool). Windows start at 0, 2, 4, ... (not at
  -1 as torchvision's), and ceil mode keeps a last, partial window when one starts inside the
  input: out = ceil((n - 3) / 2) + 1, as PyTorch. The missing right-hand rows/columns are -inf,
  so a partial window takes the max of what it covers.
  """
  if mode not in STEM_POOLS:
    raise ValueError(f'stem_pool must be one of {STEM_POOLS}, got {mode!r}; fix '
                     'config.model.backbone.stem_pool.')
  if mode == 'torchvision':
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  pads = []
  for n in x.shape[1:3]:
    out = max(-(-(n - 3) // 2), 0) + 1  # the last window, at 2 * (out - 1), starts before n
    pads.append((0, max((out - 1) * 2 + 3 - n, 0)))
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=tuple(pads))


def conv2d(features: int, kernel: int, stride: int, dtype: Any, name: str, groups: int = 1,
          dilation: int = 1) -> nn.Conv:
  """A bias-free convolution padded as PyTorch's `padding=dilation * (kernel // 2)`."""
  pad = dilation * (kernel // 2)
  return Conv(
      features,
      (kernel, kernel),
      strides=(stride, stride),
      padding=((pad, pad), (pad, pad)),
      kernel_dilation=(dilation, dilation),
      feature_group_count=groups,
      use_bias=False,
      kernel_init=conv_kernel_init,
      dtype=dtype,
      name=name,
  )


def instance_norm(dtype: Any, name: str) -> nn.InstanceNorm:
  """PyTorch's `InstanceNorm2d(affine=True)`: per-sample, per-channel over h, w; eps 1e-5."""
  return nn.InstanceNorm(epsilon=1e-5, dtype=dtype, name=name)


class IBN(nn.Module):
  """IBN-a normalisation: InstanceNorm on the first `int(C * ratio)` channels, BatchNorm on the rest.

  Children `IN` and `BN` as in IBN-Net's / FastReID's `IBN` module.
  """

  ratio: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    half = int(x.shape[-1] * self.ratio)
    a = instance_norm(self.dtype, 'IN')(x[..., :half])
    b = nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name='BN',
                     **BATCH_NORM_ARGS)(x[..., half:])
    return jnp.concatenate([a, b], axis=-1)


class SqueezeExcitation(nn.Module):
  """Channel gating x * sigmoid(fc2(relu(fc1(mean_hw(x))))), hidden width C // reduction."""

  reduction: int = 16
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2))
    s = nn.relu(nn.Dense(max(1, channels // self.reduction), use_bias=self.use_bias,
                         dtype=self.dtype, name='fc1')(s))
    s = nn.sigmoid(nn.Dense(channels, use_bias=self.use_bias, dtype=self.dtype, name='fc2')(s))
    return x * s[:, None, None, :]


def _bn1(ibn: str, train: bool, dtype: Any) -> nn.Module:
  """The first BatchNorm of a block: an `IBN` for IBN-a blocks."""
  if ibn == 'a':
    return functools.partial(IBN(dtype=dtype, name='bn1'), train=train)
  return nn.BatchNorm(use_running_average=not train, dtype=dtype, name='bn1', **BATCH_NORM_ARGS)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection (ResNet-18/34).

  `ibn` is '' (plain), 'a' (IBN in bn1) or 'b' (InstanceNorm after the addition).
  """

  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  ibn: str = ''
  with_se: bool = False

  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, dtype=self.dtype, **BATCH_NORM_ARGS
    )
    y = conv2d(self.features, 3, self.stride, self.dtype, 'conv1')(x)
    y = nn.relu(_bn1(self.ibn, train, self.dtype)(y))
    y = conv2d(self.features, 3, 1, self.dtype, 'conv2')(y)
    y = norm(name='bn2')(y)
    if self.with_se:
      y = SqueezeExcitation(dtype=self.dtype, name='se')(y)
    y = y + _shortcut(x, y.shape[-1], self.stride, norm, self.dtype)
    if self.ibn == 'b':
      y = instance_norm(self.dtype, 'IN')(y)
    return nn.relu(y)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided, grouped for ResNeXt) -> 1x1 convolutions with a residual connection.

  The 3x3 convolution has `int(features * width_per_group / 64) * groups` channels
  (torchvision); `groups=1, width_per_group=64` is ResNet-50+. `ibn` as in `BasicBlock`.
  """

  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  groups: int = 1
  width_per_group: int = 64
  ibn: str = ''
  with_se: bool = False

  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, dtype=self.dtype, **BATCH_NORM_ARGS
    )
    width = int(self.features * (self.width_per_group / 64.0)) * self.groups
    y = conv2d(width, 1, 1, self.dtype, 'conv1')(x)
    y = nn.relu(_bn1(self.ibn, train, self.dtype)(y))
    y = conv2d(width, 3, self.stride, self.dtype, 'conv2', groups=self.groups)(y)
    y = nn.relu(norm(name='bn2')(y))
    y = conv2d(self.features * self.expansion, 1, 1, self.dtype, 'conv3')(y)
    y = norm(name='bn3')(y)
    if self.with_se:
      y = SqueezeExcitation(dtype=self.dtype, name='se')(y)
    y = y + _shortcut(x, y.shape[-1], self.stride, norm, self.dtype)
    if self.ibn == 'b':
      y = instance_norm(self.dtype, 'IN')(y)
    return nn.relu(y)


def _shortcut(x: jnp.ndarray, features: int, stride: int, norm: Any, dtype: Any) -> jnp.ndarray:
  """Identity, or a strided 1x1 convolution + BatchNorm where the shape changes."""
  if stride == 1 and x.shape[-1] == features:
    return x
  x = conv2d(features, 1, stride, dtype, 'downsample_conv')(x)
  return norm(name='downsample_bn')(x)


def block_ibn(ibn: str, stage: int, index: int, num_blocks: int) -> str:
  """The IBN mode of block `index` of stage `stage` (0-based) in an IBN-`ibn` ResNet.

  IBN-a: every block of layer1..layer3. IBN-b: the last block of layer1 and layer2 (IBN-Net's
  `_make_layer` gives 'b' only to `i == blocks - 1`).
  """
  if ibn == 'a':
    return 'a' if stage < 3 else ''
  if ibn == 'b':
    return 'b' if stage < 2 and index == num_blocks - 1 else ''
  return ''


class ResNet(nn.Module):
  """ResNet trunk without the classifier: stem, layer1..layer4.

  Attributes:
    block: BasicBlock or Bottleneck.
    stage_sizes: number of blocks in layer1..layer4 (a prefix, e.g. 3 stages, cuts the trunk).
    width: channels of the stem and layer1 (64 in torchvision; smaller for CPU runs).
    last_stride: stride of layer4 (1 for re-ID, 2 for ImageNet classification).
    dtype: compute dtype (float32 or bfloat16); parameters stay float32.
    groups, width_per_group: ResNeXt cardinality and per-group width (Bottleneck only).
    ibn: '' (none), 'a' or 'b' (IBN-Net, see the module docstring).
    with_se: squeeze-excitation in every block.
    nl_layers: non-local blocks per stage, after that stage's last blocks (() = none).
    nl_inter_channels: `NonLocal.inter_channels` (1 as FastReID/AGW; 0 = C // 2).
    stem_pool: 'torchvision' or 'fastreid' (unpadded ceil-mode max-pool; `stem_max_pool`).
  """

  block: type[BasicBlock] | type[Bottleneck]
  stage_sizes: Sequence[int]
  width: int = 64
  last_stride: int = 1
  dtype: Any = jnp.float32
  groups: int = 1
  width_per_group: int = 64
  ibn: str = ''
  with_se: bool = False
  nl_layers: Sequence[int] = ()
  nl_inter_channels: int = 1
  stem_pool: str = 'torchvision'

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if self.ibn not in IBN_MODES:
      raise ValueError(f"ResNet: ibn must be one of '', 'a', 'b' (IBN-Net), got {self.ibn!r}.")
    nl_layers = tuple(self.nl_layers) + (0,) * (len(self.stage_sizes) - len(self.nl_layers))
    for i, (n_nl, n_blocks) in enumerate(zip(nl_layers, self.stage_sizes)):
      if not 0 <= n_nl <= n_blocks:
        raise ValueError(f'ResNet: nl_layers[{i}] = {n_nl} non-local blocks, but layer{i + 1} '
                         f'has {n_blocks} blocks; use 0..{n_blocks}.')
    block_args = {}
    if self.block is Bottleneck:
      block_args = dict(groups=self.groups, width_per_group=self.width_per_group)
    elif self.groups != 1 or self.width_per_group != 64:
      raise ValueError('ResNet: groups/width_per_group (ResNeXt) need the Bottleneck block.')

    x = conv2d(self.width, 7, 2, self.dtype, 'conv1')(x)
    if self.ibn == 'b':
      x = instance_norm(self.dtype, 'bn1')(x)
    else:
      x = nn.BatchNorm(
          use_running_average=not train, dtype=self.dtype, name='bn1', **BATCH_NORM_ARGS
      )(x)
    x = nn.relu(x)
    x = stem_max_pool(x, self.stem_pool)
    for i, num_blocks in enumerate(self.stage_sizes):
      stage_stride = 1 if i == 0 else (self.last_stride if i == 3 else 2)
      first_nl = num_blocks - nl_layers[i]
      for j in range(num_blocks):
        x = self.block(
            features=self.width * 2**i,
            stride=stage_stride if j == 0 else 1,
            dtype=self.dtype,
            ibn=block_ibn(self.ibn, i, j, num_blocks),
            with_se=self.with_se,
            name=f'layer{i + 1}_{j}',
            **block_args,
        )(x, train)
        if j >= first_nl:
          x = NonLocal(self.nl_inter_channels, dtype=self.dtype,
                       name=f'NL_{i + 1}_{j - first_nl}')(x, train)
    return x


def default_nl_layers(stage_sizes: Sequence[int]) -> tuple[int, ...]:
  """FastReID's non-local placement: [0, 2, 3, 0] (ResNet-50), [0, 2, 9, 0] (ResNet-101).

  FastReID defines none for ResNet-18/34; here they get [0, 2, 3, 0] clipped to the stage sizes
  so `with_nl` is never silently a no-op.
  """
  wanted = (0, 2, 9, 0) if tuple(stage_sizes) == (3, 4, 23, 3) else (0, 2, 3, 0)
  return tuple(min(n, size) for n, size in zip(wanted, stage_sizes))


def _resnet(block: type[BasicBlock] | type[Bottleneck], stage_sizes: Sequence[int],
            groups: int = 1, width_per_group: int = 64, ibn: str = '', name: str = 'resnet'):
  """A backbone factory `(cfg, dtype) -> ResNet`.

  Reads cfg['width'], cfg['last_stride'] and, when present, cfg['with_ibn'] ('', 'a', 'b'),
  cfg['with_se'], cfg['with_nl'], cfg['nl_layers'] (() = FastReID's placement),
  cfg['nl_inter_channels'] and cfg['stem_pool'] ('torchvision' | 'fastreid'). Names that fix
  the IBN mode (`resnet50_ibn_a`) ignore an empty
  cfg['with_ibn'] and reject a different one.
  """

  def build(cfg: Mapping[str, Any], dtype: Any = jnp.float32) -> ResNet:
    cfg_ibn = cfg.get('with_ibn', '') or ''
    if cfg_ibn not in IBN_MODES:
      raise ValueError(f"config.model.backbone.with_ibn must be '', 'a' or 'b', got {cfg_ibn!r}.")
    if ibn and cfg_ibn and cfg_ibn != ibn:
      raise ValueError(f'config.model.backbone.with_ibn={cfg_ibn!r} contradicts backbone {name!r} '
                       f"(IBN-{ibn}); set with_ibn='' or choose another backbone name.")
    width = int(cfg['width'])
    if block is Bottleneck and int(width * width_per_group / 64) < 1:
      raise ValueError(f'config.model.backbone.width={width} is too small for {name!r}: each of '
                       f'its {groups} groups gets int(width * {width_per_group} / 64) = 0 '
                       f'channels; use width >= {-(-64 // width_per_group)}.')
    nl_layers = ()
    if cfg.get('with_nl', False):
      nl_layers = tuple(cfg.get('nl_layers', ()) or default_nl_layers(stage_sizes))
    return ResNet(
        block, tuple(stage_sizes), width=width, last_stride=cfg['last_stride'], dtype=dtype,
        groups=groups, width_per_group=width_per_group, ibn=ibn or cfg_ibn,
        with_se=bool(cfg.get('with_se', False)), nl_layers=nl_layers,
        nl_inter_channels=int(cfg.get('nl_inter_channels', 1)),
        stem_pool=str(cfg.get('stem_pool', 'torchvision')),
    )

  return build


def _register(name: str, *args, **kwargs):
  return BACKBONES.register(name)(_resnet(*args, name=name, **kwargs))


resnet18 = _register('resnet18', BasicBlock, (2, 2, 2, 2))
resnet34 = _register('resnet34', BasicBlock, (3, 4, 6, 3))
resnet50 = _register('resnet50', Bottleneck, (3, 4, 6, 3))
resnet101 = _register('resnet101', Bottleneck, (3, 4, 23, 3))
resnet152 = _register('resnet152', Bottleneck, (3, 8, 36, 3))

resnext50_32x4d = _register('resnext50_32x4d', Bottleneck, (3, 4, 6, 3), 32, 4)
resnext50_32x8d = _register('resnext50_32x8d', Bottleneck, (3, 4, 6, 3), 32, 8)
resnext101_32x4d = _register('resnext101_32x4d', Bottleneck, (3, 4, 23, 3), 32, 4)
resnext101_32x8d = _register('resnext101_32x8d', Bottleneck, (3, 4, 23, 3), 32, 8)

for _depth, _block, _sizes in ((18, BasicBlock, (2, 2, 2, 2)), (34, BasicBlock, (3, 4, 6, 3)),
                               (50, Bottleneck, (3, 4, 6, 3)), (101, Bottleneck, (3, 4, 23, 3)),
                               (152, Bottleneck, (3, 8, 36, 3))):
  for _mode in ('a', 'b'):
    _register(f'resnet{_depth}_ibn_{_mode}', _block, _sizes, ibn=_mode)
