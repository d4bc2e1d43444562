"""Re-ID models (flax.linen), built by name from the `model` config section.

Registries (factories take their config section, a mapping such as a ConfigDict):

  ARCHITECTURES  `(model_cfg, num_classes) -> nn.Module`    ('baseline')
  BACKBONES      `(backbone_cfg, dtype) -> nn.Module`        ('resnet18', ..., 'resnet152')
  POOLINGS       `(pooling_cfg) -> nn.Module`                ('avg', 'max', 'gem', 'attention',
                                                              'avgmax', 'clipavg')
  HEADS          `(head_cfg, num_classes) -> nn.Module`      ('bnneck', 'linear', 'reduction')

Classifier layers of the heads (`model.head.cls_layer`) are in `classifiers.CLS_LAYERS`.

Usage::

  model = build_model(config.model, num_classes)
  variables = model.init(rng, images, train=True)
  out, updates = model.apply(variables, images, train=True, mutable=['batch_stats'])
  embedding = model.apply(variables, images, train=False)['embedding']
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from jreid.registry import Registry

ARCHITECTURES = Registry('architecture')
BACKBONES = Registry('backbone')
POOLINGS = Registry('pooling')
HEADS = Registry('head')

# The component modules register themselves in the registries above on import.
# pylint: disable=g-import-not-at-top,wrong-import-position
from jreid.models import baseline, heads, pooling, resnet  # noqa: E402,F401
from jreid.models import resnest, vit  # noqa: E402,F401
from jreid.models import qaconv  # noqa: E402,F401
from jreid.models import two_stream  # noqa: E402,F401
from jreid.models import pplr  # noqa: E402,F401
from jreid.models import mgn  # noqa: E402,F401
from jreid.models import osnet  # noqa: E402,F401
from jreid.models.baseline import Baseline  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position


def default_model_config() -> Any:
  """The `model` config section of the BoT baseline (ResNet-50, last stride 1, BNNeck).

  Returns an ml_collections.ConfigDict; ml_collections is imported here only, so the models
  run where it is not installed.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top

  cfg = ml_collections.ConfigDict()
  cfg.name = 'baseline'
  cfg.backbone = ml_collections.ConfigDict()
  cfg.backbone.name = 'resnet50'
  cfg.backbone.width = 64
  cfg.backbone.last_stride = 1
  cfg.backbone.with_ibn = ''  # '', 'a' or 'b' (IBN-Net); names like resnet50_ibn_a fix it.
  cfg.backbone.with_se = False  # Squeeze-excitation in every ResNet block.
  cfg.backbone.with_nl = False  # Non-local blocks (FastReID/AGW placement).
  cfg.backbone.nl_layers = ()  # Non-local blocks per stage; () = [0, 2, 3, 0] ([0, 2, 9, 0] R101).
  cfg.backbone.nl_inter_channels = 1  # NonLocal inter channels (1 as FastReID/AGW; 0 = C // 2).
  cfg.backbone.stem_pool = 'torchvision'  # 'fastreid': ceil-mode stem max-pool (FastReID weights).
  cfg.backbone.patch_stride = 16  # ViT patch-embedding stride (< 16: overlapping, TransReID 12).
  cfg.pooling = ml_collections.ConfigDict()
  cfg.pooling.name = 'avg'
  cfg.pooling.gem_p = 3.0
  cfg.pooling.gem_learnable = False
  # GeM's epsilon: 'clamp' (FastReID: max(x, 1e-6) before the mean), 'add' (AGW's code: 1e-12
  # added to the mean), 'auto' ('add' for a released AGW model, pretrained_scope='all'; else
  # 'clamp').
  cfg.pooling.gem_eps_mode = 'auto'
  cfg.pooling.attention_per_channel = True  # 'attention': one weight map per channel, or shared.
  cfg.head = ml_collections.ConfigDict()
  cfg.head.name = 'bnneck'
  cfg.head.neck_feat = 'before'
  cfg.head.embedding_dim = 0
  cfg.head.cls_layer = 'linear'  # 'linear' | 'arcface' | 'cosface' | 'circle'.
  cfg.head.cls_scale = 1.0  # s of the margin layers (FastReID MODEL.HEADS.SCALE).
  cfg.head.cls_margin = 0.0  # m of the margin layers (FastReID MODEL.HEADS.MARGIN).
  cfg.head.dropout = 0.5  # The 'reduction' head's dropout.
  cfg.pixel_mean = baseline.IMAGENET_MEAN
  cfg.pixel_std = baseline.IMAGENET_STD
  # 'fixed': (x - pixel_mean) / pixel_std; 'per_image': each image's own per-channel mean/std
  # (grey-world: cancels per-camera gain and colour cast; baseline.normalize_input).
  cfg.input_norm = 'fixed'
  cfg.dtype = 'float32'
  # PyTorch weights loaded at init (jreid.weights.load_pretrained): a torchvision/timm/IBN-Net
  # ResNet state dict (backbone) or a FastReID model-zoo checkpoint; '' = random init.
  cfg.pretrained = ''
  return cfg


def build_model(model_cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
  """Builds the model named by `model_cfg['name']` for `num_classes` training identities (0: an
  embedding-only model, for the heads that support it)."""
  if int(num_classes) < 0:
    raise ValueError(f'num_classes must be >= 0 (the training identities), got {num_classes}.')
  try:
    build = ARCHITECTURES.get(model_cfg['name'])
  except ValueError as e:
    raise ValueError(f'config.model.name: {e}') from None
  return build(model_cfg, int(num_classes))


__all__ = [
    'ARCHITECTURES',
    'BACKBONES',
    'Baseline',
    'HEADS',
    'POOLINGS',
    'build_model',
    'default_model_config',
]
