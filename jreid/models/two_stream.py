"""Two-stream ResNet for RGB-infrared re-ID: AGW's cross-modality baseline (Ye et al., "Deep
Learning for Person Re-identification: A Survey and Outlook") and the backbone of the
cross-modality graph-reasoning model ("Efficient Cross-modality Graph Reasoning for
RGB-Infrared Person Re-identification", IEEE SPL 2021).

  images, modality (0 visible, 1 infrared)
    -> modality-specific stream: stem conv1, bn1, relu, maxpool (+ layer1 when
       `specific_stages` = 1, as the graph-reasoning paper does), one set of weights per modality
    -> shared layer1 (or layer2) .. layer4, last stride 1, non-local blocks after the last
       `nl_layers[i]` blocks of stage i (AGW: blocks 2, 3 of layer2 and 3, 4, 5 of layer3)
    -> optional cross-modality graph reasoning after stage `graph_stage`
       (`jreid.models.graph_reasoning`)
    -> GeM pooling (p = 3) -> BNNeck head with a bias-free classifier.

**Routing.** Both streams run on the whole batch and each example keeps its own modality's output
(`jnp.where`): shapes stay static, one compiled step serves any mix of modalities, and the
batch can be split over devices anywhere. The price is computing every specific stage twice:
for ResNet-50 at 288x144 the stem is about 3% of the forward FLOPs (layer1 another ~17%, when it
is specific). BatchNorm statistics of a stream are computed over its own modality's examples
only (BatchNorm `mask`), as in the reference, which feeds each modality through its own module;
a batch without any image of a modality falls back to the whole batch for that stream's
statistics (its outputs are discarded anyway). Training batches hold both modalities (the
cross-modality sampler guarantees it). The shared stages see the whole batch, as the
reference's concatenation does.

Parameter names: `backbone/visible/{conv1,bn1[,layer1_*]}`, `backbone/infrared/...` (one
`backbone/shared/...` front with `single_stream`), shared `backbone/layer*_*` and `backbone/NL_*_*`
as `jreid.models.resnet`, `backbone/graph/...`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jreid.models import ARCHITECTURES, BACKBONES, HEADS, POOLINGS
from jreid.models import baseline
from jreid.models import resnet
from jreid.models.graph_reasoning import CrossModalityGraphReasoning
from jreid.models.nonlocal_block import NonLocal

VISIBLE, INFRARED = 0, 1
MODALITIES = {'visible': VISIBLE, 'infrared': INFRARED}


class ModalityStream(nn.Module):
  """The modality-specific front of the trunk: stem (+ the first `num_stages` stages).

  `mask` [B] selects the examples whose statistics the stream's BatchNorms use in training.
  """

  block: type[resnet.BasicBlock] | type[resnet.Bottleneck]
  stage_sizes: Sequence[int]
  width: int = 64
  num_stages: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, train: bool) -> jnp.ndarray:
    # Statistics from this modality's examples; the whole batch if it has none.
    mask = jnp.where(jnp.any(mask), mask, jnp.ones_like(mask))[:, None, None, None]

    def add_mask(next_fun, args, kwargs, context):
      if isinstance(context.module, nn.BatchNorm) and context.method_name == '__call__':
        kwargs = {**kwargs, 'mask': mask}
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(add_mask):
      conv = resnet.conv2d
      x = conv(self.width, 7, 2, self.dtype, 'conv1')(x)
      x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name='bn1',
                       **resnet.BATCH_NORM_ARGS)(x)
      x = nn.relu(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
      for i in range(self.num_stages):
        for j in range(self.stage_sizes[i]):
          x = self.block(features=self.width * 2**i, stride=1 if i == 0 else 2 if j == 0 else 1,
                         dtype=self.dtype, name=f'layer{i + 1}_{j}')(x, train)
    return x


class TwoStreamResNet(nn.Module):
  """(x [B, H, W, 3] float, modality [B] int, train) -> feature map [B, h, w, C].

  Attributes:
    block, stage_sizes, width, last_stride, dtype: as `jreid.models.resnet.ResNet`.
    specific_stages: 0 (stem only, AGW) or 1 (stem + layer1, graph-reasoning paper) stages per
      modality.
    nl_layers: non-local blocks per stage after that stage's last blocks (() = none).
    nl_inter_channels: `NonLocal.inter_channels` (0 = C // 2, the non-local paper; 1 = the
      AGW/FastReID reference code's value).
    graph: keyword arguments of `CrossModalityGraphReasoning` as (name, value) pairs, or None
      for no graph reasoning.
    graph_stage: the graph reasoning runs after layer`graph_stage` (1..4).
    single_stream: one front (`backbone/shared/...`) with the same weights and BatchNorm
      statistics for both modalities: the one-stream network of AGW's ablation, the modality
      unused. False: one front per modality.
  """

  block: type[resnet.BasicBlock] | type[resnet.Bottleneck]
  stage_sizes: Sequence[int]
  width: int = 64
  last_stride: int = 1
  dtype: Any = jnp.float32
  specific_stages: int = 0
  nl_layers: Sequence[int] = ()
  nl_inter_channels: int = 0
  graph: tuple[tuple[str, Any], ...] | None = None
  graph_stage: int = 3
  single_stream: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, modality: jnp.ndarray, train: bool) -> jnp.ndarray:
    num_stages = len(self.stage_sizes)
    if self.specific_stages not in (0, 1):
      raise ValueError(f'TwoStreamResNet: specific_stages must be 0 (stem) or 1 (stem + layer1), '
                       f'got {self.specific_stages}; fix config.model.two_stream.specific_stages.')
    if self.graph is not None and not 1 <= self.graph_stage <= num_stages:
      raise ValueError(f'TwoStreamResNet: graph_stage must be in 1..{num_stages}, got '
                       f'{self.graph_stage}; fix config.model.two_stream.graph.stage.')
    nl_layers = tuple(self.nl_layers) + (0,) * (num_stages - len(self.nl_layers))
    for i, (n_nl, n_blocks) in enumerate(zip(nl_layers, self.stage_sizes)):
      if not 0 <= n_nl <= n_blocks:
        raise ValueError(f'TwoStreamResNet: nl_layers[{i}] = {n_nl} non-local blocks, but '
                         f'layer{i + 1} has {n_blocks} blocks; use 0..{n_blocks}.')
      if n_nl and i < self.specific_stages:
        raise ValueError(f'TwoStreamResNet: non-local blocks in layer{i + 1}, which is '
                         'modality-specific, are not supported; set nl_layers[0] = 0.')
    modality = jnp.asarray(modality)
    infrared = modality == INFRARED

    def stream(name: str, mask: jnp.ndarray) -> jnp.ndarray:
      return ModalityStream(self.block, tuple(self.stage_sizes), self.width, self.specific_stages,
                            self.dtype, name=name)(x, mask, train)

    if self.single_stream:
      x = stream('shared', jnp.ones_like(infrared))
    else:
      visible_out = stream('visible', ~infrared)
      infrared_out = stream('infrared', infrared)
      x = jnp.where(infrared[:, None, None, None], infrared_out, visible_out)
    for i in range(self.specific_stages, num_stages):
      stage_stride = 1 if i == 0 else (self.last_stride if i == 3 else 2)
      first_nl = self.stage_sizes[i] - nl_layers[i]
      for j in range(self.stage_sizes[i]):
        x = self.block(features=self.width * 2**i, stride=stage_stride if j == 0 else 1,
                       dtype=self.dtype, name=f'layer{i + 1}_{j}')(x, train)
        if j >= first_nl:
          x = NonLocal(self.nl_inter_channels, dtype=self.dtype,
                       name=f'NL_{i + 1}_{j - first_nl}')(x, train)
      if self.graph is not None and i + 1 == self.graph_stage:
        x = CrossModalityGraphReasoning(**dict(self.graph), dtype=self.dtype, name='graph')(x)
    return x


class TwoStreamNet(nn.Module):
  """Two-stream backbone + pooling + head on images in 0..255 with their modality.

  `__call__(images, modality, train, labels=None)`: images uint8/float NHWC, modality [B] ints
  (0 visible, 1 infrared). Returns the `Baseline` outputs: training {'logits', 'features' (the
  pooled feature, AGW's metric-loss input, with neck_feat 'before'), 'embedding'}; evaluation
  {'embedding'} (post-BNNeck). Always float32.
  """

  backbone: TwoStreamResNet
  pooling: nn.Module
  head: nn.Module
  pixel_mean: Sequence[float] = baseline.IMAGENET_MEAN
  pixel_std: Sequence[float] = baseline.IMAGENET_STD
  input_norm: str = 'fixed'  # or 'per_image' (baseline.normalize_input)

  @nn.compact
  def __call__(self, images: jnp.ndarray, modality: jnp.ndarray, train: bool,
               labels: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    if images.ndim != 4 or images.shape[-1] != len(self.pixel_mean):
      raise ValueError(f'TwoStreamNet expects images [batch, height, width, '
                       f'{len(self.pixel_mean)}] (NHWC), got {images.shape}.')
    if jnp.shape(modality) != images.shape[:1]:
      raise ValueError(f'TwoStreamNet expects one modality per image ([{images.shape[0]}] ints, '
                       f'0 visible, 1 infrared), got shape {jnp.shape(modality)}.')
    x = baseline.normalize_input(images, self.pixel_mean, self.pixel_std, self.input_norm)
    feature_map = self.backbone(x, modality, train=train)
    pooled = self.pooling(feature_map)
    outputs = (self.head(pooled, train=train) if labels is None else
               self.head(pooled, train=train, labels=labels))
    return {k: v.astype(jnp.float32) for k, v in outputs.items()}


def default_two_stream_config() -> Any:
  """The `model.two_stream` section: modality-specific stages and graph-reasoning switches."""
  import ml_collections  # pylint: disable=g-import-not-at-top

  cfg = ml_collections.ConfigDict()
  cfg.specific_stages = 0  # 0: stem per modality (AGW); 1: stem + layer1 (graph reasoning).
  cfg.single_stream = False  # True: those stages shared by both modalities (one-stream net).
  cfg.graph = ml_collections.ConfigDict()
  cfg.graph.local_to_local = False
  cfg.graph.global_to_local = False
  cfg.graph.local_to_global = False
  cfg.graph.modality_similarity = False
  cfg.graph.reduction = 16  # query/key channels C // reduction
  cfg.graph.num_global_nodes = 1
  cfg.graph.stage = 3  # after layer3 (the shared mid-level map)
  return cfg


_GRAPH_SWITCHES = ('local_to_local', 'global_to_local', 'local_to_global', 'modality_similarity')


@ARCHITECTURES.register('two_stream')
def build_two_stream(cfg: Mapping[str, Any], num_classes: int) -> TwoStreamNet:
  """Builds `TwoStreamNet` from the `model` section; `cfg['two_stream']` as
  `default_two_stream_config` (absent keys take those defaults). The backbone must be a ResNet
  name ('resnet18', 'resnet50', ...) without IBN/SE/ResNeXt; its width, last_stride, with_nl,
  nl_layers and nl_inter_channels are used."""
  if cfg['dtype'] not in baseline.DTYPES:
    raise ValueError(f'config.model.dtype must be one of {sorted(baseline.DTYPES)}, got '
                     f'{cfg["dtype"]!r}.')
  dtype = baseline.DTYPES[cfg['dtype']]
  component = baseline._component  # pylint: disable=protected-access
  trunk = component(BACKBONES, cfg['backbone'], 'backbone')(cfg['backbone'], dtype)
  if (not isinstance(trunk, resnet.ResNet) or trunk.ibn or trunk.with_se or trunk.groups != 1
      or trunk.width_per_group != 64):
    raise ValueError(f'config.model.backbone.name={cfg["backbone"]["name"]!r}: the two_stream '
                     'architecture needs a plain ResNet (resnet18/34/50/101/152), without IBN, SE '
                     'or ResNeXt grouping.')
  ts = dict(default_two_stream_config().to_dict())
  given = cfg.get('two_stream', None)
  given = dict(given.to_dict() if hasattr(given, 'to_dict') else (given or {}))
  unknown = set(given) - set(ts)
  if unknown:
    raise ValueError(f'config.model.two_stream has unknown keys {sorted(unknown)}; known: '
                     f'{sorted(ts)}.')
  graph_cfg = {**ts['graph'], **dict(given.get('graph', {}))}
  unknown = set(graph_cfg) - set(ts['graph'])
  if unknown:
    raise ValueError(f'config.model.two_stream.graph has unknown keys {sorted(unknown)}; known: '
                     f'{sorted(ts["graph"])}.')
  graph = None
  if any(graph_cfg[k] for k in _GRAPH_SWITCHES):
    graph = {k: bool(graph_cfg[k]) for k in _GRAPH_SWITCHES}
    graph.update(reduction=int(graph_cfg['reduction']),
                 num_global_nodes=int(graph_cfg['num_global_nodes']))
  backbone = TwoStreamResNet(
      trunk.block, tuple(trunk.stage_sizes), width=trunk.width, last_stride=trunk.last_stride,
      dtype=dtype, specific_stages=int(given.get('specific_stages', ts['specific_stages'])),
      nl_layers=tuple(trunk.nl_layers), nl_inter_channels=trunk.nl_inter_channels,
      graph=tuple(sorted(graph.items())) if graph else None, graph_stage=int(graph_cfg['stage']),
      single_stream=bool(given.get('single_stream', ts['single_stream'])))
  pool = component(POOLINGS, cfg['pooling'], 'pooling')
  if cfg['pooling']['name'] == 'gem':
    # A released AGW model (the only whole two-stream models loaded with scope 'all') pools as
    # its authors' code unless config.model.pooling.gem_eps_mode says otherwise.
    release = 'agw' if cfg.get('pretrained_scope', 'backbone') == 'all' else ''
    pooling = pool(cfg['pooling'], release=release)
  else:
    pooling = pool(cfg['pooling'])
  head = component(HEADS, cfg['head'], 'head')(cfg['head'], num_classes)
  return TwoStreamNet(backbone, pooling, head,
                      pixel_mean=tuple(float(v) for v in cfg['pixel_mean']),
                      pixel_std=tuple(float(v) for v in cfg['pixel_std']),
                      input_norm=baseline.input_norm_from(cfg))
