"""Weight import: PyTorch ResNet / FastReID checkpoints built here from torch.nn primitives, with
random weights and BatchNorm statistics, give the same features in jreid after conversion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jreid import models
from jreid import weights

torch = pytest.importorskip('torch')
from torch_reference import TBottleneck, randomize_running_stats  # pylint: disable=g-import-not-at-top,wrong-import-position
tnn = torch.nn

WIDTH = 8
SIZES = (3, 4, 6, 3)  # ResNet-50


class TNonLocal(tnn.Module):
  """FastReID's Non_local with inter channels 1: f = theta^T phi / N, y = f g, z = W(y) + x."""

  def __init__(self, channels, inter=1):
    super().__init__()
    self.inter = inter
    self.g = tnn.Conv2d(channels, inter, 1)
    self.theta = tnn.Conv2d(channels, inter, 1)
    self.phi = tnn.Conv2d(channels, inter, 1)
    self.W = tnn.Sequential(tnn.Conv2d(inter, channels, 1), tnn.BatchNorm2d(channels))

  def forward(self, x):
    b, _, h, w = x.shape
    g = self.g(x).view(b, self.inter, -1).permute(0, 2, 1)
    theta = self.theta(x).view(b, self.inter, -1).permute(0, 2, 1)
    phi = self.phi(x).view(b, self.inter, -1)
    y = (theta @ phi / (h * w)) @ g
    y = y.permute(0, 2, 1).reshape(b, self.inter, h, w)
    return self.W(y) + x


class TResNet(tnn.Module):
  """torchvision/FastReID naming; `ceil` selects FastReID's ceil-mode stem max-pool."""

  def __init__(self, ibn=False, nl=(0, 0, 0, 0), ceil=False, last_stride=1):
    super().__init__()
    self.conv1 = tnn.Conv2d(3, WIDTH, 7, 2, 3, bias=False)
    self.bn1 = tnn.BatchNorm2d(WIDTH)
    self.maxpool = tnn.MaxPool2d(3, 2, 0 if ceil else 1, ceil_mode=ceil)  # FastReID: unpadded
    inplanes = WIDTH
    self.nl = nl
    for i, n in enumerate(SIZES):
      planes = WIDTH * 2**i
      stride = 1 if i == 0 else (last_stride if i == 3 else 2)
      blocks = [TBottleneck(inplanes if j == 0 else planes * 4, planes, stride if j == 0 else 1,
                            ibn and i < 3) for j in range(n)]
      setattr(self, f'layer{i + 1}', tnn.Sequential(*blocks))
      if nl[i]:
        setattr(self, f'NL_{i + 1}', tnn.ModuleList([TNonLocal(planes * 4) for _ in range(nl[i])]))
      inplanes = planes * 4

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    for i, n in enumerate(SIZES):
      layer = getattr(self, f'layer{i + 1}')
      for j in range(n):
        x = layer[j](x)
        k = j - (n - self.nl[i])
        if k >= 0:
          x = getattr(self, f'NL_{i + 1}')[k](x)
    return x


class TGeMP(tnn.Module):

  def __init__(self):
    super().__init__()
    self.p = tnn.Parameter(torch.ones(1) * 3.0)

  def forward(self, x):
    return x.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class THead(tnn.Module):
  """FastReID EmbeddingHead: pool_layer, bottleneck (BNNeck, bias frozen at 0), weight [C, D]."""

  def __init__(self, dim, num_classes):
    super().__init__()
    self.pool_layer = TGeMP()
    self.bottleneck = tnn.Sequential(tnn.BatchNorm2d(dim))
    self.bottleneck[0].bias.requires_grad_(False)
    self.weight = tnn.Parameter(torch.randn(num_classes, dim) * 0.01)

  def forward(self, fmap):
    pooled = self.pool_layer(fmap)[..., None, None]
    return self.bottleneck(pooled)[..., 0, 0]


class TBaseline(tnn.Module):

  def __init__(self, num_classes, **kwargs):
    super().__init__()
    self.backbone = TResNet(**kwargs)
    self.heads = THead(WIDTH * 32, num_classes)

  def forward(self, x):
    return self.heads(self.backbone(x))


def _randomise(module, seed):
  """Random weights and BatchNorm statistics (zero BNNeck bias, as FastReID's frozen one)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if name.endswith('pool_layer.p'):
        p.fill_(2.5)
      elif name.startswith('heads.bottleneck') and name.endswith('bias'):
        p.zero_()
      elif p.ndim == 1 and name.endswith('weight'):
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
      else:
        p.copy_(0.2 * torch.randn(p.shape, generator=gen) / max(1, p[0].numel()) ** 0.5 * 2)
    randomize_running_stats(module, gen)
  return module.eval()


def _init(model, images):
  """Zero variables of the model's structure (the conversion replaces them): no init compute."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _images(seed=0, shape=(2, 64, 32, 3)):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _torch_input(images, mean, std):
  x = (images.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
  return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def test_torchvision_resnet50_ibn_a_state_dict_gives_the_same_feature_map(tmp_path):
  net = _randomise(TResNet(ibn=True), 1)
  path = tmp_path / 'r50_ibn_a.pth'
  sd = net.state_dict()
  sd['fc.weight'] = torch.zeros(10, WIDTH * 32)  # an ImageNet classifier: ignored
  sd['fc.bias'] = torch.zeros(10)
  torch.save({'state_dict': {f'module.{k}': v for k, v in sd.items()}}, path)  # IBN-Net layout

  cfg = models.default_model_config()
  cfg.backbone.name, cfg.backbone.width = 'resnet50_ibn_a', WIDTH
  model = models.build_model(cfg, 5)
  images = _images()
  variables = _init(model, images)
  loaded = weights.load_pretrained(variables, path, cfg)
  # Only the backbone changes; pooling/head keep their initial values.
  np.testing.assert_array_equal(loaded['params']['head']['classifier']['kernel'],
                                variables['params']['head']['classifier']['kernel'])
  fmap = jax.jit(lambda v, x: model.backbone.apply(v, x, train=False))(
      {'params': loaded['params']['backbone'], 'batch_stats': loaded['batch_stats']['backbone']},
      (images.astype(np.float32) - np.float32(cfg.pixel_mean)) / np.float32(cfg.pixel_std))
  with torch.no_grad():
    expected = net(_torch_input(images, cfg.pixel_mean, cfg.pixel_std)).numpy()
  assert fmap.shape == (2, 4, 2, WIDTH * 32)
  np.testing.assert_allclose(np.asarray(fmap), expected.transpose(0, 2, 3, 1), atol=1e-4,
                             rtol=1e-4)


def test_fastreid_agw_checkpoint_gives_the_same_embeddings(tmp_path):
  """FastReID Baseline (ResNet-50 + non-local, ceil-mode stem pool, GeM-P, BNNeck), eval mode."""
  net = _randomise(TBaseline(7, nl=(0, 2, 3, 0), ceil=True), 2)
  path = tmp_path / 'model_final.pth'
  torch.save({'model': net.state_dict(), 'iteration': 100}, path)

  cfg = models.default_model_config()
  cfg.backbone.width = WIDTH
  cfg.backbone.with_nl = True
  cfg.backbone.stem_pool = 'fastreid'
  cfg.pooling.name, cfg.pooling.gem_learnable = 'gem', True
  model = models.build_model(cfg, 7)
  images = _images(3)
  variables = _init(model, images)
  loaded = weights.load_pretrained(variables, path, cfg, scope='all')
  got = jax.jit(lambda v, x: model.apply(v, x, train=False))(loaded, images)['embedding']
  with torch.no_grad():
    expected = net(_torch_input(images, cfg.pixel_mean, cfg.pixel_std)).numpy()
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(loaded['params']['head']['classifier']['kernel'],
                             net.heads.weight.detach().numpy().T)
  # The same weights as a pickle-free .npz convert to the same variables.
  npz = tmp_path / 'model_final.npz'
  np.savez(npz, **{k: v.numpy() for k, v in net.state_dict().items()})
  jax.tree.map(np.testing.assert_array_equal, loaded,
               weights.load_pretrained(variables, npz, cfg, scope='all'))

  # The torchvision stem pool gives other features: the option matters for these weights.
  cfg.backbone.stem_pool = 'torchvision'
  other_model = models.build_model(cfg, 7)
  other = jax.jit(lambda v, x: other_model.apply(v, x, train=False))(loaded, images)['embedding']
  assert np.abs(np.asarray(other) - expected).max() > 1e-3


def test_stem_max_pool_matches_torch_in_both_modes():
  from jreid.models import resnet  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).normal(size=(1, 7, 10, 2)).astype(np.float32)
  for ceil, mode in ((False, 'torchvision'), (True, 'fastreid')):
    pool = tnn.MaxPool2d(3, 2, 0 if ceil else 1, ceil_mode=ceil)  # FastReID's pool is unpadded
    want = pool(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    got = resnet.stem_max_pool(jnp.asarray(x), mode)
    np.testing.assert_array_equal(np.asarray(got), want.numpy().transpose(0, 2, 3, 1))


def test_mismatches_are_listed(tmp_path):
  net = TResNet()
  sd = {k: v.numpy() for k, v in net.state_dict().items()}
  cfg = models.default_model_config()
  cfg.backbone.width = WIDTH
  model = models.build_model(cfg, 3)
  variables = _init(model, jnp.zeros((1, 64, 32, 3), jnp.uint8))
  bad = dict(sd)
  del bad['layer2.1.conv2.weight']
  bad['layer9.0.conv1.weight'] = np.zeros((1, 1, 1, 1), np.float32)
  bad['layer1.0.bn1.weight'] = np.zeros(3, np.float32)
  with pytest.raises(weights.WeightConversionError) as e:
    weights.convert_state_dict(bad, variables)
  msg = str(e.value)
  assert 'backbone/layer2_1/conv2/kernel' in msg  # missing
  assert 'backbone/layer9_0/conv1/kernel' in msg  # unexpected
  assert 'backbone/layer1_0/bn1/scale: model (8,) vs file (3,)' in msg
  # A plain ResNet file cannot fill a whole model.
  with pytest.raises(weights.WeightConversionError, match='only initialise the backbone'):
    weights.convert_state_dict(sd, variables, scope='all')
  # A non-zero BNNeck bias cannot be represented.
  fr = {f'backbone.{k}': v for k, v in sd.items()}
  fr['heads.bottleneck.0.bias'] = np.ones(WIDTH * 32, np.float32)
  with pytest.raises(weights.WeightConversionError, match='not zero'):
    weights.convert_state_dict(fr, variables, scope='all')


def test_qaconv_trunk_loads_a_resnet_state_dict_without_its_layer4(tmp_path):
  """QAConv's layer3 trunk takes an ImageNet ResNet file; layer4 and fc are left out."""
  from jreid.models import qaconv as qaconv_lib  # pylint: disable=g-import-not-at-top
  net = _randomise(TResNet(), 3)
  path = tmp_path / 'r50.pth'
  sd = net.state_dict()
  sd['fc.weight'] = torch.zeros(10, WIDTH * 32)
  sd['fc.bias'] = torch.zeros(10)
  torch.save(sd, path)

  cfg = qaconv_lib.qaconv_model_config()
  cfg.backbone.width = WIDTH
  model = models.build_model(cfg, 5)
  images = _images(4)
  variables = _init(model, images)
  loaded = weights.load_pretrained_trunk(variables, path, cfg)
  fmap = jax.jit(lambda v, x: model.backbone.apply(v, x, train=False))(
      {'params': loaded['params']['backbone'], 'batch_stats': loaded['batch_stats']['backbone']},
      images.astype(np.float32) / 255.0)
  with torch.no_grad():
    x = _torch_input(images, 0.0, 255.0)
    x = net.maxpool(torch.relu(net.bn1(net.conv1(x))))
    expected = net.layer3(net.layer2(net.layer1(x))).numpy()
  assert fmap.shape == (2, 4, 2, WIDTH * 16)
  np.testing.assert_allclose(np.asarray(fmap), expected.transpose(0, 2, 3, 1), atol=1e-4,
                             rtol=1e-4)
  # A file that lacks a block the trunk has is still an error naming it.
  del sd['layer3.0.conv1.weight']
  torch.save(sd, path)
  with pytest.raises(weights.WeightConversionError, match='layer3_0/conv1'):
    weights.load_pretrained_trunk(variables, path, cfg)


def test_each_state_dict_finds_its_converter():
  zeros = np.zeros((1, 1, 3, 3), np.float32)
  cases = {
      'osnet': [{'conv2.0.conv2a.conv1.weight': zeros},
                {'module.conv2.0.conv2a.conv1.weight': zeros},
                {'backbone.conv2.0.conv2a.conv1.weight': zeros, 'heads.weight': zeros}],
      'fastreid': [{'backbone.conv1.weight': zeros, 'heads.weight': zeros},
                   {'backbone.0.weight': zeros, 'b1_head.weight': zeros}],
      'resnet': [{'conv1.weight': zeros}, {'module.layer1.0.conv1.weight': zeros}],
  }
  for name, state_dicts in cases.items():
    for sd in state_dicts:
      assert weights.find_converter(sd).name == name, sorted(sd)
  assert [c.name for c in weights.CONVERTERS] == ['qaconv', 'pplr', 'agw', 'osnet', 'fastreid',
                                                  'resnet']
