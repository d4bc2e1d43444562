"""MGN, the Multiple Granularity Network (Wang et al., "Learning Discriminative Features with
Multiple Granularities for Person Re-Identification", ACM MM 2018), as FastReID's `MGN`.

A Bottleneck ResNet is cut after the first block of layer3. The shared trunk (`backbone`: stem,
layer1, layer2, layer3_0) feeds three branches, each with its own copy of the rest of layer3 and
of layer4:

  b1  global branch: layer4 with the configured last stride          -> 1 feature  (b1)
  b2  part-2 branch: layer4 with stride 1, cut into 2 horizontal stripes -> b2, b21, b22
  b3  part-3 branch: layer4 with stride 1, cut into 3 horizontal stripes -> b3, b31, b32, b33

Each of the 8 feature maps has its own pooling (`<name>_pool`) and head (`<name>_head`, e.g. a
BNNeck head with a 1x1 reduction to 256 as FastReID's Base-MGN). Stripes are cut like
`torch.chunk(x, k, dim=2)`: ceil(h / k) rows each, the last one shorter.

Losses (FastReID `MGN.losses`): cross-entropy on each of the 8 logits, scaled by 1/8; triplet on
b1, b2, b3 and on the concatenations (b21, b22) and (b31, b32, b33), scaled by 1/5. The model
returns the per-branch inputs as lists under 'branch_logits' (8) and 'branch_features' (5);
`jreid.objectives.compute_losses` averages a term over such a list, which is exactly those
scales. 'logits'/'features' are b1's (the training accuracy FastReID logs is b1's).

Test embedding: the 8 post-neck embeddings concatenated in FastReID's order
(b1, b2, b3, b21, b22, b31, b32, b33).

Parameter names follow FastReID's module names so its checkpoints convert (`jreid.weights`):
`backbone/{conv1,bn1,layer1_0..,layer3_0}`, `b1/{layer3_1..,layer4_0..}`, `b2/...`, `b3/...`,
`b1_pool`, `b1_head`, ..., `b33_head`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jreid.models import ARCHITECTURES, BACKBONES, HEADS, POOLINGS
from jreid.models import resnet
from jreid.models.baseline import DTYPES, IMAGENET_MEAN, IMAGENET_STD
from jreid.models.baseline import _component, input_norm_from, normalize_input

# The 8 features: (name, branch, number of stripes of that branch, stripe index or -1 = whole).
FEATURES = (('b1', 'b1', 1, -1), ('b2', 'b2', 2, -1), ('b21', 'b2', 2, 0), ('b22', 'b2', 2, 1),
            ('b3', 'b3', 3, -1), ('b31', 'b3', 3, 0), ('b32', 'b3', 3, 1), ('b33', 'b3', 3, 2))
# FastReID's order of the test embedding.
EMBEDDING_ORDER = ('b1', 'b2', 'b3', 'b21', 'b22', 'b31', 'b32', 'b33')


def chunk_rows(x: jnp.ndarray, chunks: int) -> list[jnp.ndarray]:
  """`torch.chunk(x, chunks, dim=2)` of an NHWC map: stripes of ceil(h / chunks) rows."""
  h = x.shape[1]
  size = -(-h // chunks)
  parts = [x[:, i:i + size] for i in range(0, h, size)]
  if len(parts) != chunks:
    raise ValueError(f'MGN cannot cut a feature map of height {h} into {chunks} stripes (torch.chunk '
                     f'gives {len(parts)}); use a taller input (config.input.height).')
  return parts


class ResNetBlocks(nn.Module):
  """A run of Bottleneck blocks of a ResNet (optionally with its stem), named as in `ResNet`.

  Attributes:
    blocks: (stage, index, stride, ibn) of each block, in order; named `layer{stage+1}_{index}`.
    width: channels of layer1 (64 for ResNet-50).
    with_stem: run conv1/bn1/relu/max-pool first.
    ibn_stem: 'b' for an IBN-b stem (InstanceNorm `bn1`).
  """

  blocks: Sequence[tuple[int, int, int, str]]
  width: int = 64
  with_stem: bool = False
  ibn_stem: str = ''
  with_se: bool = False
  groups: int = 1
  width_per_group: int = 64
  stem_pool: str = 'torchvision'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if self.with_stem:
      x = resnet.conv2d(self.width, 7, 2, self.dtype, 'conv1')(x)
      if self.ibn_stem == 'b':
        x = resnet.instance_norm(self.dtype, 'bn1')(x)
      else:
        x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name='bn1',
                         **resnet.BATCH_NORM_ARGS)(x)
      x = resnet.stem_max_pool(nn.relu(x), self.stem_pool)
    for stage, index, stride, ibn in self.blocks:
      x = resnet.Bottleneck(features=self.width * 2**stage, stride=stride, dtype=self.dtype,
                            groups=self.groups, width_per_group=self.width_per_group, ibn=ibn,
                            with_se=self.with_se, name=f'layer{stage + 1}_{index}')(x, train)
    return x


class MGN(nn.Module):
  """MGN on images in 0..255 (see the module docstring).

  Attributes:
    trunk: the ResNet whose configuration (stage sizes, width, IBN, SE, stem pool, last stride)
      MGN splits; only its fields are used, not the module itself.
    pooling: pooling template, cloned per feature (`b1_pool`, ...).
    head: head template, cloned per feature (`b1_head`, ...).
    pixel_mean, pixel_std, input_norm: as in `Baseline`.
  """

  trunk: resnet.ResNet
  pooling: nn.Module
  head: nn.Module
  pixel_mean: Sequence[float] = IMAGENET_MEAN
  pixel_std: Sequence[float] = IMAGENET_STD
  input_norm: str = 'fixed'

  def _blocks(self, name: str, **kwargs) -> ResNetBlocks:
    t = self.trunk
    return ResNetBlocks(width=t.width, with_se=t.with_se, groups=t.groups,
                        width_per_group=t.width_per_group, stem_pool=t.stem_pool, dtype=t.dtype,
                        name=name, **kwargs)

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool,
               labels: jnp.ndarray | None = None) -> dict[str, Any]:
    """Training: {'logits', 'features', 'embedding', 'branch_logits' (8), 'branch_features' (5)}
    (+ 'pred_class_logits' for margin classifier layers); evaluation: {'embedding'}."""
    channels = len(self.pixel_mean)
    if images.ndim != 4 or images.shape[-1] != channels:
      raise ValueError(f'MGN expects images shaped [batch, height, width, {channels}] (NHWC), got '
                       f'{images.shape}.')
    t = self.trunk
    sizes = tuple(t.stage_sizes)
    x = normalize_input(images, self.pixel_mean, self.pixel_std, self.input_norm)

    ibn = lambda stage, index: resnet.block_ibn(t.ibn, stage, index, sizes[stage])
    shared = [(s, j, 1 if s == 0 or j else 2, ibn(s, j)) for s in range(2) for j in range(sizes[s])]
    shared.append((2, 0, 2, ibn(2, 0)))
    x = self._blocks('backbone', blocks=tuple(shared), with_stem=True, ibn_stem=t.ibn)(x, train)

    conv4 = [(2, j, 1, ibn(2, j)) for j in range(1, sizes[2])]
    maps = {}
    for branch in ('b1', 'b2', 'b3'):
      # FastReID builds the part branches' layer4 with stride 1 and without IBN.
      stride = t.last_stride if branch == 'b1' else 1
      conv5 = [(3, j, stride if j == 0 else 1, ibn(3, j) if branch == 'b1' else '')
               for j in range(sizes[3])]
      maps[branch] = self._blocks(branch, blocks=tuple(conv4 + conv5))(x, train)

    outputs = {}
    for name, branch, stripes, index in FEATURES:
      fmap = maps[branch] if index < 0 else chunk_rows(maps[branch], stripes)[index]
      pooled = self.pooling.clone(parent=self, name=f'{name}_pool')(fmap)
      head = self.head.clone(parent=self, name=f'{name}_head')
      outputs[name] = (head(pooled, train=train) if labels is None else
                       head(pooled, train=train, labels=labels))
    embedding = jnp.concatenate(
        [outputs[n]['embedding'].astype(jnp.float32) for n in EMBEDDING_ORDER], axis=-1)
    if not train:
      return {'embedding': embedding}
    f32 = lambda v: v.astype(jnp.float32)
    feats = {n: f32(outputs[n]['features']) for n, *_ in FEATURES}
    result = {
        'logits': f32(outputs['b1']['logits']),
        'features': feats['b1'],
        'embedding': embedding,
        'branch_logits': [f32(outputs[n]['logits']) for n, *_ in FEATURES],
        'branch_features': [
            feats['b1'], feats['b2'], feats['b3'],
            jnp.concatenate([feats['b21'], feats['b22']], axis=-1),
            jnp.concatenate([feats['b31'], feats['b32'], feats['b33']], axis=-1),
        ],
    }
    if 'pred_class_logits' in outputs['b1']:
      result['pred_class_logits'] = f32(outputs['b1']['pred_class_logits'])
    return result


@ARCHITECTURES.register('mgn')
def build_mgn(cfg: Mapping[str, Any], num_classes: int) -> MGN:
  """Builds `MGN` from the `model` config section; the backbone must be a Bottleneck ResNet
  (resnet50/101/152, their IBN-a/b variants or ResNeXt) without non-local blocks."""
  if cfg['dtype'] not in DTYPES:
    raise ValueError(f'config.model.dtype must be one of {sorted(DTYPES)}, got {cfg["dtype"]!r}.')
  trunk = _component(BACKBONES, cfg['backbone'], 'backbone')(cfg['backbone'], DTYPES[cfg['dtype']])
  if not isinstance(trunk, resnet.ResNet) or trunk.block is not resnet.Bottleneck or len(
      trunk.stage_sizes) != 4:
    raise ValueError(f'MGN splits a Bottleneck ResNet after layer3[0]; config.model.backbone.name='
                     f'{cfg["backbone"]["name"]!r} is not one: use resnet50, resnet50_ibn_a, '
                     'resnet101_ibn_a, ...')
  if any(trunk.nl_layers):
    raise ValueError('MGN does not support non-local blocks (FastReID Base-MGN sets WITH_NL: '
                     'False): set config.model.backbone.with_nl=False.')
  pooling = _component(POOLINGS, cfg['pooling'], 'pooling')(cfg['pooling'])
  head = _component(HEADS, cfg['head'], 'head')(cfg['head'], num_classes)
  return MGN(trunk, pooling, head, pixel_mean=tuple(float(v) for v in cfg['pixel_mean']),
             pixel_std=tuple(float(v) for v in cfg['pixel_std']), input_norm=input_norm_from(cfg))
