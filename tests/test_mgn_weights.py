"""FastReID MGN checkpoint import: an MGN built here from torch.nn primitives with FastReID's module
names (random weights and BatchNorm statistics, eval mode) gives, once converted by
`jreid.weights.load_pretrained`, the same test embedding in jreid's `MGN`.

FastReID's MGN (fastreid/modeling/meta_arch/mgn.py) names its modules:
  backbone = Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3[0])  -> backbone.0/1/4/5/6
  b1 = Sequential(layer3[1:], layer4 with the last stride)                  -> b1.0.*, b1.1.*
  b2, b3 = Sequential(layer3[1:], layer4 rebuilt with stride 1, no IBN)      -> b2.0.*, b2.1.*, ...
  b1_head, b2_head, b21_head, b22_head, b3_head, b31_head, b32_head, b33_head: EmbeddingHead
    (pool_layer.p, bottleneck.0 = 1x1 reduction conv, bottleneck.1 = BNNeck, weight [C, D]);
and its inference output is the 8 post-neck features concatenated as
(b1, b2, b3, b21, b22, b31, b32, b33), stripes cut by `torch.chunk(x, k, dim=2)`.
"""

import copy

import jax
import numpy as np
import pytest

from configs import mgn as mgn_config
from jreid import models
from jreid import weights

torch = pytest.importorskip('torch')
from torch_reference import TBottleneck, randomize_running_stats  # pylint: disable=g-import-not-at-top,wrong-import-position
tnn = torch.nn

WIDTH = 8  # channels of layer1 (64 in ResNet-50); the smallest that keeps IBN halves even
SIZES = (3, 4, 6, 3)  # ResNet-50
EMBEDDING_DIM = 16
NUM_CLASSES = 5
LAST_STRIDE = 2  # b1 (global) uses it, b2/b3 do not: a stride mix-up changes the result
FEATURE_ORDER = ('b1', 'b2', 'b3', 'b21', 'b22', 'b31', 'b32', 'b33')


def _layer(stage, stride, ibn):
  """Stage `stage` (0-based) of a ResNet-50 at WIDTH: IBN-a only in layer1..layer3."""
  planes = WIDTH * 2**stage
  inplanes = WIDTH if stage == 0 else planes * 2
  return tnn.Sequential(*[
      TBottleneck(inplanes if j == 0 else planes * 4, planes, stride if j == 0 else 1,
                  ibn and stage < 3) for j in range(SIZES[stage])])


class TGeMP(tnn.Module):
  """FastReID GeneralizedMeanPoolingP: (mean_hw(clamp(x, 1e-6)^p))^(1/p), p learnable."""

  def __init__(self):
    super().__init__()
    self.p = tnn.Parameter(torch.ones(1) * 3.0)

  def forward(self, x):
    return x.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3), keepdim=True).pow(1.0 / self.p)


class THead(tnn.Module):
  """FastReID EmbeddingHead with EMBEDDING_DIM > 0 and BNNeck; eval returns the neck feature."""

  def __init__(self, feat_dim):
    super().__init__()
    self.pool_layer = TGeMP()
    self.bottleneck = tnn.Sequential(tnn.Conv2d(feat_dim, EMBEDDING_DIM, 1, 1, bias=False),
                                     tnn.BatchNorm2d(EMBEDDING_DIM))
    self.bottleneck[1].bias.requires_grad_(False)  # FastReID's bias_freeze
    self.weight = tnn.Parameter(torch.zeros(NUM_CLASSES, EMBEDDING_DIM))

  def forward(self, fmap):
    return self.bottleneck(self.pool_layer(fmap))[..., 0, 0]


class TMGN(tnn.Module):
  """FastReID's MGN structure and module names on a ResNet-50-IBN-a at WIDTH."""

  def __init__(self, mean, std):
    super().__init__()
    self.register_buffer('pixel_mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    self.register_buffer('pixel_std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
    layer3 = _layer(2, 2, True)
    self.backbone = tnn.Sequential(
        tnn.Conv2d(3, WIDTH, 7, 2, 3, bias=False), tnn.BatchNorm2d(WIDTH), tnn.ReLU(),
        tnn.MaxPool2d(3, 2, 0, ceil_mode=True),  # FastReID's stem pool (stem_pool='fastreid')
        _layer(0, 1, True), _layer(1, 2, True), layer3[0])
    res_conv4 = tnn.Sequential(*layer3[1:])
    self.b1 = tnn.Sequential(copy.deepcopy(res_conv4), _layer(3, LAST_STRIDE, True))
    self.b2 = tnn.Sequential(copy.deepcopy(res_conv4), _layer(3, 1, False))
    self.b3 = tnn.Sequential(copy.deepcopy(res_conv4), _layer(3, 1, False))
    for name in FEATURE_ORDER:
      setattr(self, f'{name}_head', THead(WIDTH * 32))

  def forward(self, images):
    x = self.backbone((images - self.pixel_mean) / self.pixel_std)
    maps = {'b1': self.b1(x), 'b2': self.b2(x), 'b3': self.b3(x)}
    maps['b21'], maps['b22'] = torch.chunk(maps['b2'], 2, dim=2)
    maps['b31'], maps['b32'], maps['b33'] = torch.chunk(maps['b3'], 3, dim=2)
    return torch.cat([getattr(self, f'{n}_head')(maps[n]) for n in FEATURE_ORDER], dim=1)


def _randomise(module, seed):
  """Independent random weights and BatchNorm statistics per module (so a swapped branch, head or
  stripe changes the result); a different GeM p per head; BNNeck biases zero (frozen)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if name.endswith('pool_layer.p'):
        p.copy_(2.0 + torch.rand(p.shape, generator=gen))
      elif name.endswith('bottleneck.1.bias'):
        p.zero_()
      elif p.ndim == 1 and name.endswith('weight'):
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
      else:
        p.copy_(0.4 * torch.randn(p.shape, generator=gen) / max(1, p[0].numel()) ** 0.5)
    randomize_running_stats(module, gen)
  return module.eval()


def _config():
  cfg = mgn_config.get_config().model  # Base-MGN: GeM-P, BNNeck, reduction, circle classifier
  cfg.backbone.name = 'resnet50_ibn_a'  # the FastReID model zoo's MGN is R50-ibn
  cfg.backbone.width = WIDTH
  cfg.backbone.stem_pool = 'fastreid'
  cfg.backbone.last_stride = LAST_STRIDE
  cfg.head.embedding_dim = EMBEDDING_DIM
  return cfg


def _zeros(model, images):
  """Zero variables of the model's structure (the conversion replaces them): no init compute."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def test_fastreid_mgn_checkpoint_gives_the_same_embeddings(tmp_path):
  cfg = _config()
  net = _randomise(TMGN(cfg.pixel_mean, cfg.pixel_std), 5)
  path = tmp_path / 'mgn_model_final.pth'
  torch.save({'model': net.state_dict(), 'iteration': 10}, path)  # FastReID's checkpoint layout

  model = models.build_model(cfg, NUM_CLASSES)
  # Height 112 -> 7 rows at stride 16: uneven stripes (torch.chunk: 4 + 3 and 3 + 3 + 1 rows).
  images = np.random.default_rng(0).integers(0, 256, (2, 112, 16, 3), dtype=np.uint8)
  variables = _zeros(model, images)
  loaded = weights.load_pretrained(variables, path, cfg, scope='all')
  got = jax.jit(lambda v, x: model.apply(v, x, train=False))(loaded, images)['embedding']
  with torch.no_grad():
    expected = net(torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32))).numpy()
  assert expected.shape == got.shape == (2, 8 * EMBEDDING_DIM)
  assert np.abs(expected).max() > 0.1  # not a degenerate (all-zero) comparison
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4, rtol=1e-4)
  for name in FEATURE_ORDER:  # the classifiers (not in the embedding) land in their own heads
    np.testing.assert_array_equal(loaded['params'][f'{name}_head']['classifier']['kernel'],
                                  getattr(net, f'{name}_head').weight.detach().numpy().T)

  # scope='backbone' takes the trunk and the three branches only; the heads keep their values.
  trunk_only = weights.load_pretrained(variables, path, cfg)
  for top in ('backbone', 'b1', 'b2', 'b3'):
    jax.tree.map(np.testing.assert_array_equal, trunk_only['params'][top], loaded['params'][top])
  jax.tree.map(np.testing.assert_array_equal, trunk_only['params']['b21_head'],
               variables['params']['b21_head'])
