"""OSNet backbones: parameter count and weight import against a PyTorch OSNet written here with
torch.nn primitives and torchreid's module names (osnet_x1_0 / osnet_ibn_x1_0)."""

import jax
import numpy as np
import pytest

from jreid import models
from jreid import weights
from jreid import weights_osnet
from jreid.models import osnet

torch = pytest.importorskip('torch')
from torch_reference import randomize_running_stats  # pylint: disable=g-import-not-at-top,wrong-import-position
tnn = torch.nn


class TConvBN(tnn.Module):
  """torchreid ConvLayer / Conv1x1 / Conv1x1Linear: `conv`, `bn` (InstanceNorm if IN) [+ ReLU]."""

  def __init__(self, cin, cout, k=1, stride=1, relu=True, IN=False):  # pylint: disable=invalid-name
    super().__init__()
    self.conv = tnn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
    self.bn = tnn.InstanceNorm2d(cout, affine=True) if IN else tnn.BatchNorm2d(cout)
    self.relu = relu

  def forward(self, x):
    x = self.bn(self.conv(x))
    return torch.relu(x) if self.relu else x


class TLite(tnn.Module):
  """LightConv3x3: 1x1 conv -> depthwise 3x3 conv -> BN -> ReLU."""

  def __init__(self, c):
    super().__init__()
    self.conv1 = tnn.Conv2d(c, c, 1, bias=False)
    self.conv2 = tnn.Conv2d(c, c, 3, 1, 1, bias=False, groups=c)
    self.bn = tnn.BatchNorm2d(c)

  def forward(self, x):
    return torch.relu(self.bn(self.conv2(self.conv1(x))))


class TGate(tnn.Module):

  def __init__(self, c):
    super().__init__()
    self.fc1 = tnn.Conv2d(c, c // 16, 1)
    self.fc2 = tnn.Conv2d(c // 16, c, 1)

  def forward(self, x):
    s = x.mean(dim=(2, 3), keepdim=True)
    return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class TOSBlock(tnn.Module):

  def __init__(self, cin, cout, IN=False):  # pylint: disable=invalid-name
    super().__init__()
    mid = cout // 4
    self.conv1 = TConvBN(cin, mid)
    self.conv2a = TLite(mid)
    self.conv2b = tnn.Sequential(*[TLite(mid) for _ in range(2)])
    self.conv2c = tnn.Sequential(*[TLite(mid) for _ in range(3)])
    self.conv2d = tnn.Sequential(*[TLite(mid) for _ in range(4)])
    self.gate = TGate(mid)
    self.conv3 = TConvBN(mid, cout, relu=False)
    self.downsample = TConvBN(cin, cout, relu=False) if cin != cout else None
    self.IN = tnn.InstanceNorm2d(cout, affine=True) if IN else None

  def forward(self, x):
    y = self.conv1(x)
    y = sum(self.gate(s(y)) for s in (self.conv2a, self.conv2b, self.conv2c, self.conv2d))
    out = self.conv3(y) + (x if self.downsample is None else self.downsample(x))
    if self.IN is not None:
      out = self.IN(out)
    return torch.relu(out)


class TOSNet(tnn.Module):
  """torchreid OSNet (channels width * (1, 4, 6, 8)); `fc`/`classifier` only for counting."""

  def __init__(self, width=64, IN=False, num_classes=0):  # pylint: disable=invalid-name
    super().__init__()
    c = [width, 4 * width, 6 * width, 8 * width]
    self.conv1 = TConvBN(3, c[0], 7, 2, IN=IN)
    self.maxpool = tnn.MaxPool2d(3, 2, 1)

    def stage(cin, cout, transition, stage_in):
      layers = [TOSBlock(cin, cout, stage_in), TOSBlock(cout, cout, stage_in)]
      if transition:
        layers.append(tnn.Sequential(TConvBN(cout, cout), tnn.AvgPool2d(2, 2)))
      return tnn.Sequential(*layers)

    self.conv2 = stage(c[0], c[1], True, IN)  # torchreid passes IN to conv2 only
    self.conv3 = stage(c[1], c[2], True, False)
    self.conv4 = stage(c[2], c[3], False, False)
    self.conv5 = TConvBN(c[3], c[3])
    if num_classes:
      self.fc = tnn.Sequential(tnn.Linear(c[3], 512), tnn.BatchNorm1d(512), tnn.ReLU())
      self.classifier = tnn.Linear(512, num_classes)

  def forward(self, x):
    x = self.maxpool(self.conv1(x))
    return self.conv5(self.conv4(self.conv3(self.conv2(x))))


def _randomise(module, seed):
  """Random weights and BatchNorm running statistics, eval mode."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if p.ndim == 1 and name.endswith('weight'):
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
      elif p.ndim == 1:
        p.copy_(0.1 * torch.randn(p.shape, generator=gen))
      else:
        p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / p[0].numel()) ** 0.5)
    randomize_running_stats(module, gen)
  return module.eval()


def _config(name, width=64):
  cfg = models.default_model_config()
  cfg.backbone.name, cfg.backbone.width = name, width
  return cfg


def _shapes(module, shape=(1, 64, 32, 3)):
  return jax.eval_shape(lambda: module.init(jax.random.key(0), np.zeros(shape, np.float32),
                                            train=False))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('name,ibn', [('osnet_x1_0', False), ('osnet_ibn_x1_0', True)])
def test_parameter_count_matches_torchreid_structure(name, ibn):
  backbone = models.BACKBONES.get(name)(_config(name).backbone)
  ours = _count(_shapes(backbone)['params'])
  ref = sum(p.numel() for p in TOSNet(64, IN=ibn).parameters())
  assert ours == ref
  # The IBN variant adds only the affine InstanceNorms of conv2's two blocks (2 x 2 x 256).
  assert ours == (1_906_852 if ibn else 1_905_828)
  if not ibn:
    # Zhou et al. (ICCV 2019) and torchreid's model zoo publish 2.2M parameters for OSNet x1.0:
    # the backbone above plus torchreid's 512-d embedding fc (Linear 512->512 + BatchNorm1d),
    # without the identity classifier (a 751-way Market-1501 classifier would make it 2.55M).
    full = sum(p.numel() for p in TOSNet(64, num_classes=751).parameters())
    embedding_fc = 512 * 512 + 512 + 2 * 512
    assert full - ours == embedding_fc + 512 * 751 + 751
    assert ours + embedding_fc == 2_169_508 and round((ours + embedding_fc) / 1e6, 1) == 2.2


@pytest.mark.parametrize('ibn,layout', [(False, 'torchreid'), (True, 'fastreid')])
def test_converted_state_dict_gives_the_torch_feature_map(tmp_path, ibn, layout):
  net = _randomise(TOSNet(64, IN=ibn), 3 + ibn)
  sd = net.state_dict()
  if layout == 'torchreid':  # DataParallel prefix, embedding fc and classifier (dropped)
    sd = {f'module.{k}': v for k, v in sd.items()}
    sd['module.fc.0.weight'] = torch.zeros(512, 512)
    sd['module.classifier.weight'] = torch.zeros(10, 512)
  else:  # a FastReID checkpoint's backbone
    sd = {f'backbone.{k}': v for k, v in sd.items()}
  path = tmp_path / 'osnet.pth'
  torch.save({'state_dict': sd}, path)

  name = 'osnet_ibn_x1_0' if ibn else 'osnet_x1_0'
  cfg = _config(name)
  model = models.build_model(cfg, 5)
  images = np.random.default_rng(0).normal(size=(2, 64, 32, 3)).astype(np.float32)
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), _shapes(model, images.shape))
  loaded = weights.load_pretrained(variables, path, cfg)
  backbone_vars = {'params': loaded['params']['backbone']}
  if 'backbone' in loaded.get('batch_stats', {}):
    backbone_vars['batch_stats'] = loaded['batch_stats']['backbone']
  ours = np.asarray(jax.jit(lambda v, x: model.backbone.apply(v, x, train=False))(
      backbone_vars, images))
  with torch.no_grad():
    ref = net(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
  assert ours.shape == ref.shape == (2, 4, 2, 512)
  scale = np.abs(ref).max()
  assert scale > 1e-2
  np.testing.assert_allclose(ours / scale, ref / scale, atol=1e-4)


def test_converter_names_and_mismatch_errors():
  net = TOSNet(16, IN=True)
  converted = weights_osnet.convert_osnet(net.state_dict())
  assert converted[('params', 'conv2_0', 'conv2b_1', 'conv2', 'kernel')].shape == (3, 3, 1, 16)
  assert converted[('params', 'conv3_transition', 'conv', 'kernel')].shape == (1, 1, 96, 96)
  assert converted[('params', 'conv2_1', 'gate', 'fc1', 'kernel')].shape == (16, 1)
  assert ('params', 'conv2_0', 'IN', 'scale') in converted
  assert ('params', 'conv1', 'bn', 'scale') in converted  # the IBN stem's InstanceNorm
  assert ('batch_stats', 'conv1', 'bn', 'mean') not in converted
  assert weights_osnet.is_osnet(net.state_dict())
  assert not weights_osnet.is_osnet({'layer1.0.conv1.weight': np.zeros(1)})

  # The plain model given IBN weights: the extra InstanceNorms are named in the error.
  backbone = osnet.OSNet(width=16, ibn=False)
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), _shapes(backbone))
  wrapped = {c: {'backbone': v} for c, v in variables.items()}
  with pytest.raises(weights.WeightConversionError, match='conv2_0/IN/scale'):
    weights.convert_state_dict(net.state_dict(), wrapped)


def test_config_errors():
  build = models.BACKBONES.get('osnet_x1_0')
  with pytest.raises(ValueError, match='width'):
    build(_config('osnet_x1_0', width=8).backbone)
  cfg = _config('osnet_x1_0')
  cfg.backbone.last_stride = 2
  with pytest.raises(ValueError, match='last_stride'):
    build(cfg.backbone)
  cfg = _config('osnet_x1_0')
  cfg.backbone.with_ibn = 'a'
  with pytest.raises(ValueError, match='osnet_ibn_x1_0'):
    build(cfg.backbone)
