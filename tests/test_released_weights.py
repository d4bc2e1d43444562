"""The authors' released checkpoints evaluate in jreid (config.model.pretrained_scope='all').

Each test builds a torch module with the key layout of one released model, written here from its
repository's architecture (QAConv's `resmap.ResNet` + `QAConv` matcher inside its loss module,
PPLR's `ResNetPart`, AGW's `embed_net`, a FastReID `Baseline`), gives it random weights and
BatchNorm statistics calibrated on images, saves it as the reference code does, loads it through
the method's initial state or weight loader (scope 'all'), and holds jreid's outputs equal to the
torch module's. The networks have ResNet-50's Bottleneck blocks, names and stages, but fewer
blocks (SIZES), to compile in seconds.
"""

import copy
import json

import jax
import numpy as np
import pytest

import tiny
from jreid import checkpoint
from jreid import config_checks
from jreid import evaluator
from jreid import train
from jreid import weights
from jreid.evaluation import evaluate_rank
from data_pipelines import input_pipeline
from data_pipelines import validate

torch = pytest.importorskip('torch')
from torch_reference import TBottleneck, randomize_running_stats  # pylint: disable=g-import-not-at-top,wrong-import-position
tnn = torch.nn
F = torch.nn.functional

WIDTH = 8
# Blocks per stage of the test networks: ResNet-50's Bottleneck blocks, stages and names, fewer
# blocks (ResNet-50 has 3, 4, 6, 3), so that compiling them takes seconds. The converters map
# every `layer{i}.{j}` alike; two blocks in layer3 keep a block index > 0 and two non-local
# blocks in one stage.
SIZES = (1, 1, 2, 1)
SHORT = 'resnet50_short'  # The jreid backbone of SIZES (`short_backbones`).
# TIES: the metrics of a run are compared with those of the torch module's features ranked by
# jreid's evaluation. Features that agree to float rounding can still swap two gallery items
# whose distances to a query differ by less than that, which moves an AP by about 1e-6: mAP is
# held to 1e-4, Rank-1 exactly.


class TBottleneckIBNb(TBottleneck):
  """IBN-Net's IBN-b Bottleneck: optionally an InstanceNorm after the residual sum."""

  def __init__(self, inplanes, planes, stride, with_in):
    super().__init__(inplanes, planes, stride, ibn=False)
    self.IN = tnn.InstanceNorm2d(planes * 4, affine=True) if with_in else None

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y)) + (x if self.downsample is None else self.downsample(x))
    return torch.relu(y if self.IN is None else self.IN(y))


@pytest.fixture(scope='module', autouse=True)
def short_backbones():
  """Backbones SHORT and SHORT + '_ibn_b' (IBN-Net-b) of SIZES, registered for this module."""
  from jreid import models  # pylint: disable=g-import-not-at-top
  from jreid.models import resnet  # pylint: disable=g-import-not-at-top
  with pytest.MonkeyPatch.context() as mp:
    for name, ibn in ((SHORT, ''), (SHORT + '_ibn_b', 'b')):
      mp.setitem(models.BACKBONES._entries, name,  # pylint: disable=protected-access
                 resnet._resnet(resnet.Bottleneck, SIZES, ibn=ibn, name=name))  # pylint: disable=protected-access
    yield


@pytest.fixture(scope='module', autouse=True)
def one_torch_thread():
  """torch on one thread: its threads contend with XLA's on a small machine, which makes the
  small reference networks here many times slower."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def t_resnet(last_stride=2, ibn_b=False, ceil=False):
  """A torchvision ResNet of Bottleneck blocks (SIZES) of width WIDTH (module order and names as
  torchvision's; IBN-b as IBN-Net's: InstanceNorm stem, IN after the last block of layer1 and
  layer2)."""
  net = tnn.Module()
  net.conv1 = tnn.Conv2d(3, WIDTH, 7, 2, 3, bias=False)
  net.bn1 = tnn.InstanceNorm2d(WIDTH, affine=True) if ibn_b else tnn.BatchNorm2d(WIDTH)
  net.relu = tnn.ReLU()
  net.maxpool = tnn.MaxPool2d(3, 2, 0 if ceil else 1, ceil_mode=ceil)
  inplanes = WIDTH
  for i, n in enumerate(SIZES):
    planes = WIDTH * 2**i
    stride = 1 if i == 0 else (last_stride if i == 3 else 2)
    blocks = [TBottleneckIBNb(inplanes if j == 0 else planes * 4, planes, stride if j == 0 else 1,
                              ibn_b and i < 2 and j == n - 1) for j in range(n)]
    setattr(net, f'layer{i + 1}', tnn.Sequential(*blocks))
    inplanes = planes * 4
  net.fc = tnn.Linear(inplanes, 10)
  return net


def trunk(net, x, last='layer4'):
  for name, module in net._modules.items():  # pylint: disable=protected-access
    x = module(x)
    if name == last:
      return x
  raise AssertionError(last)


def randomise(module, seed, zero_bias=()):
  """Random weights and BatchNorm statistics; parameters named in `zero_bias` zero (the frozen
  BNNeck biases of the references)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if name in zero_bias:
        p.zero_()
      elif p.ndim == 1 and name.endswith('weight'):
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
      else:
        p.copy_(0.4 * torch.randn(p.shape, generator=gen) / max(1, p[0].numel()) ** 0.5)
    randomize_running_stats(module, gen)
  return module.eval()


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  """One synthetic dataset cache for the module's runs (they share the tiny SynthReID)."""
  return tmp_path_factory.mktemp('cache')


def tiny_config(name, tmp_path, cache_dir):
  config = tiny.config(name, tmp_path)
  config.dataset.cache_dir = str(cache_dir)
  return config


def split_images(split, config, limit=None):
  """The evaluation images of a split as the run's pipeline gives them (uint8 NHWC)."""
  batches = [b['image'][b['mask']] for b in input_pipeline.eval_iterator(
      split, config.input, batch_size=config.eval.batch_size)]
  images = np.concatenate(batches)
  return images if limit is None else images[:limit]


def calibrate(net, *forwards):
  """Every BatchNorm's running statistics set to its activations' mean and variance over the
  calls `forwards` (run in training mode). Random statistics would leave the embeddings of all
  images nearly equal, so that rounding alone would decide their ranking."""
  for m in net.modules():
    if isinstance(m, tnn.modules.batchnorm._BatchNorm):  # pylint: disable=protected-access
      m.reset_running_stats()
      m.momentum = None  # A plain average over the calls.
  net.train()
  with torch.no_grad():
    for forward in forwards:
      forward()
  return net.eval()


def assert_as_exact_as_torch(got, net, *inputs, bound=5e-5, **kwargs):
  """jreid's outputs `got` (numpy, NHWC maps or [B, D]) against the torch module run on `inputs`.

  Both run in float32 through some 50 layers whose BatchNorm statistics are real activation
  statistics (small variances amplify rounding), and the two round differently (XLA's products
  and convolutions against torch's). The bound is therefore taken against the float64 result of
  the same torch module: jreid's unit-norm outputs must lie within `bound` (5e-5) of it, and
  torch's own float32 result within 5e-5. Returns torch's float32 outputs (numpy).
  """
  exact = copy.deepcopy(net).double()
  with torch.no_grad():
    want = net(*inputs, **kwargs)
    ref = exact(*[x.double() for x in inputs], **kwargs)
  want, ref = (t if isinstance(t, tuple) else (t,) for t in (want, ref))
  got = got if isinstance(got, tuple) else (got,)
  for g, w, r in zip(got, want, ref):
    w, r = w.numpy(), r.numpy()
    if w.ndim == 4:
      w, r = w.transpose(0, 2, 3, 1), r.transpose(0, 2, 3, 1)
    ours, torchs = np.abs(np.asarray(g) - r).max(), np.abs(w - r).max()
    assert ours < bound and torchs < 5e-5, (ours, torchs)
  return want[0].numpy() if len(want) == 1 else tuple(t.numpy() for t in want)


def nchw(images, mean=0.0, std=255.0):
  x = (images.astype(np.float32) - np.float32(mean)) / np.float32(std)
  return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def l2n(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- QAConv


class TQAConvNet(tnn.Module):
  """QAConv's `resmap.ResNet`: the base's modules run in order up to `final_layer`, then the
  bias-free 3x3 neck, its BatchNorm and channel L2 normalisation; images in [0, 1]."""

  def __init__(self, neck):
    super().__init__()
    self.base = t_resnet(ibn_b=True)
    self.neck_conv = tnn.Conv2d(WIDTH * 16, neck, 3, padding=1, bias=False)
    self.neck_bn = tnn.BatchNorm2d(neck)

  def forward(self, x):
    return F.normalize(self.neck_bn(self.neck_conv(trunk(self.base, x, 'layer3'))))


class TQAConv(tnn.Module):
  """The QAConv matcher: location similarities, max over the other image's locations in both
  directions, BatchNorm1d(1), one Linear(h*w, 1) for both directions, their sum, BatchNorm1d(1)."""

  def __init__(self, channels, height, width):
    super().__init__()
    self.channels, self.hw = channels, height * width
    self.bn = tnn.BatchNorm1d(1)
    self.fc = tnn.Linear(self.hw, 1)
    self.logit_bn = tnn.BatchNorm1d(1)

  def forward(self, query, gallery):
    p, g = query.shape[0], gallery.shape[0]
    q = query.reshape(p, self.channels, self.hw)
    k = gallery.reshape(g, self.channels, self.hw)
    score = torch.einsum('pcs,gcr->pgrs', q, k)  # r: gallery location, s: query location
    score = torch.cat((score.max(dim=2)[0], score.max(dim=3)[0]), dim=-1)
    score = self.bn(score.reshape(-1, 1, self.hw)).reshape(-1, self.hw)
    score = self.fc(score).reshape(-1, 2).sum(dim=1, keepdim=True)
    return self.logit_bn(score).reshape(p, g)


class TTripletLoss(tnn.Module):
  """QAConv 2.1's loss module: it holds the matcher, so its state dict has `matcher.*`."""

  def __init__(self, matcher):
    super().__init__()
    self.matcher = matcher


def test_qaconv_release_gives_the_maps_scores_and_metrics_of_torch(tmp_path, cache):
  config = tiny_config('qaconv', tmp_path, cache)
  config.model.backbone.name = SHORT + '_ibn_b'
  # The named variants' neck: a convolution with a bias, into which the file's BatchNorm folds.
  config.model.qaconv.neck, config.model.qaconv.neck_bn = 16, False
  config.eval.rerank = config.qaconv.tlift = False
  config.train.steps_per_epoch = 0  # Graph-sampled epochs.
  config.eval.protocol = 'cuhk03'  # The protocol option reaches QAConv's ranking too.
  data = train.load_data(config)
  query, gallery = data.splits['query'], data.splits['gallery']
  gallery = validate.subset(gallery, np.flatnonzero(gallery.pids != -1))  # As QAConv tests.
  images = nchw(split_images(query, config))
  net = randomise(TQAConvNet(16), 1)
  net = calibrate(net, lambda: net(images))
  matcher = randomise(TQAConv(16, 2, 1), 2)  # 32x16 input: a 2x1 map after layer3.
  with torch.no_grad():
    maps = net(images)
  matcher = calibrate(matcher, lambda: matcher(maps, maps))
  loss = TTripletLoss(matcher)
  # An SGD state dict as torch.optim writes it (momentum buffers, parameter groups).
  optim = {'state': {0: {'momentum_buffer': torch.ones(WIDTH, 3, 7, 7)}},
           'param_groups': [{'lr': 0.0005, 'momentum': 0.9, 'nesterov': True, 'params': [0]}]}
  path = tmp_path / 'checkpoint.pth.tar'
  torch.save({'model': net.state_dict(), 'criterion': loss.state_dict(), 'optim': optim,
              'epoch': 9, 'final_epochs': 9, 'base_loss': 1.5, 'lr_stepped': True}, path)
  config.model.pretrained, config.model.pretrained_scope = str(path), 'all'
  config_checks.check_config(config)

  run = train.build_run(config, tmp_path / 'run')
  state, inf = run.method.state, run.method.inference
  images = split_images(query, config, limit=12)
  maps = np.asarray(jax.jit(inf.embed)(inf.variables(state.params, state.batch_stats), images))
  assert_as_exact_as_torch(maps, net, nchw(images))
  with torch.no_grad():
    scores = np.asarray(inf.score(inf.score_variables(state.params, state.batch_stats), maps,
                                  maps))
    expected_scores = matcher(torch.from_numpy(maps.transpose(0, 3, 1, 2).copy()),
                              torch.from_numpy(maps.transpose(0, 3, 1, 2).copy())).numpy()
  # Logits of a few units: 1e-5 relative to their scale.
  np.testing.assert_allclose(scores, expected_scores, atol=1e-5 * np.abs(expected_scores).max())

  # The whole evaluation: torch's maps and scores ranked by the CUHK03 protocol.
  with torch.no_grad():
    def torch_maps(split):
      batches = input_pipeline.eval_iterator(split, config.input, batch_size=32)
      return torch.cat([net(nchw(b['image'][b['mask']])) for b in batches])
    reference = -matcher(torch_maps(query), torch_maps(gallery)).numpy()
  want = evaluate_rank(reference, query.pids, gallery.pids, query.camids, gallery.camids,
                       max_rank=config.eval.max_rank, protocol='cuhk03', num_repeats=10)
  got = run.method.evaluate(state).metrics
  run.checkpointer.close()
  assert got['mAP'] == pytest.approx(want.mAP, abs=1e-4)  # See TIES.
  assert got['rank1'] == pytest.approx(want.rank(1), abs=1e-9)
  assert 'TPR@FPR=1e-02' in got  # The ROC under the CUHK03 protocol: its Market curve.


def test_qaconv_release_layouts(tmp_path):
  """With the neck's BatchNorm in the model, the file's loads as it is; the class memory of a
  QAConv 1.3 loss is left out; QAConv 1.0-1.2's matcher (one weight per direction) is refused."""
  from jreid.methods import qaconv  # pylint: disable=g-import-not-at-top
  config = tiny.config('qaconv', tmp_path)
  config.model.backbone.name = SHORT + '_ibn_b'
  config.model.qaconv.neck, config.model.qaconv.neck_bn = 16, True
  inf = qaconv.inference(config, 5)
  zeros = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                       jax.eval_shape(inf.init, jax.random.key(0)))
  net, matcher = randomise(TQAConvNet(16), 7), randomise(TQAConv(16, 2, 1), 8)
  loss = {**TTripletLoss(matcher).state_dict(), 'class_memory': torch.ones(5, 16, 2, 1),
          'valid_class': torch.ones(5)}
  path = tmp_path / 'v13.pth.tar'
  torch.save({'model': net.state_dict(), 'criterion': loss}, path)
  loaded = weights.load_pretrained(zeros, path, config.model, scope='all')
  np.testing.assert_array_equal(loaded['params']['net']['neck_bn']['scale'],
                                net.neck_bn.weight.detach().numpy())
  np.testing.assert_array_equal(loaded['batch_stats']['net']['neck_bn']['var'],
                                net.neck_bn.running_var.numpy())
  np.testing.assert_array_equal(loaded['params']['matcher']['fc']['kernel'],
                                matcher.fc.weight.detach().numpy().T)
  np.testing.assert_array_equal(loaded['batch_stats']['matcher']['logit_bn']['mean'],
                                matcher.logit_bn.running_mean.numpy())

  sd = {f'base.{k}': v for k, v in t_resnet().state_dict().items()}
  loss = {'bn.weight': torch.ones(1), 'fc.weight': torch.zeros(1, 4), 'fc.bias': torch.zeros(1),
          'logit_bn.weight': torch.ones(1), 'class_memory': torch.zeros(3, 16, 2, 2)}
  path = tmp_path / 'checkpoint.pth.tar'
  torch.save({'model': sd, 'criterion': loss, 'epoch': 1}, path)
  state_dict = checkpoint.load_torch_state_dict(path)
  assert weights.find_converter(state_dict).name == 'qaconv'
  with pytest.raises(weights.WeightConversionError,
                     match=r'QAConv 1\.0-1\.2 checkpoint \(fc\.weight \(1, 4\)\).*QAConv 2\.x'):
    weights.convert_state_dict(state_dict, {'params': {}}, scope='all')


# ----------------------------------------------------------------------------- PPLR


class TResNetPart(tnn.Module):
  """PPLR's `ResNetPart`: base = Sequential(conv1, bn1, relu, maxpool, layer1..4) with layer4 at
  stride 1; GAP -> bnneck (global); P horizontal stripes -> bnneck{p}; bias-free classifiers."""

  def __init__(self, num_parts, num_classes):
    super().__init__()
    r = t_resnet(last_stride=1)
    self.num_parts = num_parts
    self.base = tnn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3,
                               r.layer4)
    dim = WIDTH * 32
    self.bnneck = tnn.BatchNorm1d(dim)
    self.classifier = tnn.Linear(dim, num_classes, bias=False)
    for p in range(num_parts):
      setattr(self, f'bnneck{p}', tnn.BatchNorm1d(dim))
      setattr(self, f'classifier{p}', tnn.Linear(dim, num_classes, bias=False))

  def forward(self, x):
    x = self.base(x)
    f_g = F.normalize(self.bnneck(x.mean(dim=(2, 3))))
    stripes = F.adaptive_avg_pool2d(x, (self.num_parts, 1))[..., 0]
    f_p = torch.stack([F.normalize(getattr(self, f'bnneck{p}')(stripes[:, :, p]))
                       for p in range(self.num_parts)], dim=1)
    return f_g, f_p


def test_pplr_release_gives_the_embeddings_of_torch(tmp_path, capsys):
  """The method's weight loader (`parts.pretrained_loader`, which PPLR's initial state calls
  after initialisation) with scope 'all'."""
  from jreid import parts  # pylint: disable=g-import-not-at-top
  from jreid.methods import pplr  # pylint: disable=g-import-not-at-top
  config = tiny.config('pplr', tmp_path)
  config.model.backbone.name = SHORT
  config.model.input_norm = 'fixed'  # The reference normalises with ImageNet's mean and std.
  config.input.height = 64  # 4 rows after layer4 (stride 16): 3 stripes.
  mean, std = np.asarray(config.model.pixel_mean), np.asarray(config.model.pixel_std)
  images = np.random.default_rng(1).integers(0, 256, (12, 64, 16, 3), dtype=np.uint8)
  net = TResNetPart(3, num_classes=3000)  # The reference's capacity.
  net = randomise(net, 3, zero_bias={'bnneck.bias', 'bnneck0.bias', 'bnneck1.bias',
                                     'bnneck2.bias'})
  net = calibrate(net, lambda: net(nchw(images, mean, std)))
  path = tmp_path / 'model_best.pth'
  torch.save(tnn.DataParallel(net).state_dict(), path)  # `module.` names, as PPLR saves them.
  config.model.pretrained, config.model.pretrained_scope = str(path), 'all'

  inf = pplr.inference(config, 20)
  initial = jax.tree.map(lambda x: np.full(x.shape, 0.5, x.dtype),
                         jax.eval_shape(inf.init, jax.random.key(0)))
  variables = parts.pretrained_loader(config)(initial)
  # The file's 3000 classifier columns do not fit the run's 20: left as initialised, said.
  assert 'its classifiers (classifier, classifier_0, classifier_1, classifier_2) have 3000 ' \
         'classes, the model 20' in capsys.readouterr().out
  np.testing.assert_array_equal(variables['params']['classifier_1']['kernel'], 0.5)
  out = jax.jit(lambda v, x: inf.model.apply(v, x, train=False))(variables, images)
  assert_as_exact_as_torch((out['embedding'], out['part_embeddings']), net,
                           nchw(images, mean, std))


# ----------------------------------------------------------------------------- AGW


class TNonLocal(tnn.Module):
  """AGW's Non_local (inter channels C/2): z = W(softmax-free (theta^T phi / N) g) + x."""

  def __init__(self, channels):
    super().__init__()
    self.inter = channels // 2
    self.g = tnn.Sequential(tnn.Conv2d(channels, self.inter, 1))
    self.W = tnn.Sequential(tnn.Conv2d(self.inter, channels, 1), tnn.BatchNorm2d(channels))
    self.theta = tnn.Conv2d(channels, self.inter, 1)
    self.phi = tnn.Conv2d(channels, self.inter, 1)

  def forward(self, x):
    b, _, h, w = x.shape
    g = self.g(x).reshape(b, self.inter, -1).permute(0, 2, 1)
    theta = self.theta(x).reshape(b, self.inter, -1).permute(0, 2, 1)
    phi = self.phi(x).reshape(b, self.inter, -1)
    f = theta @ phi
    y = (f / f.shape[-1]) @ g
    return self.W(y.permute(0, 2, 1).reshape(b, self.inter, h, w)) + x


class TEmbedNet(tnn.Module):
  """AGW's `embed_net`: a whole ResNet per modality of which the stem runs, a whole shared ResNet
  of which layer1..4 run, non-local blocks after the last blocks of layer2 and layer3 (the
  reference: 2 and 3 of them; here 1 and 2), GeM (p = 3), a BatchNorm1d neck (bias frozen) and a
  bias-free classifier."""

  def __init__(self, num_classes):
    super().__init__()
    self.thermal_module = tnn.Module()
    self.thermal_module.thermal = t_resnet(last_stride=1)
    self.visible_module = tnn.Module()
    self.visible_module.visible = t_resnet(last_stride=1)
    self.base_resnet = tnn.Module()
    self.base_resnet.base = t_resnet(last_stride=1)
    self.NL_2 = tnn.ModuleList([TNonLocal(WIDTH * 8) for _ in range(1)])
    self.NL_3 = tnn.ModuleList([TNonLocal(WIDTH * 16) for _ in range(2)])
    self.bottleneck = tnn.BatchNorm1d(WIDTH * 32)
    self.classifier = tnn.Linear(WIDTH * 32, num_classes, bias=False)

  def forward(self, x, infrared):
    stem = self.thermal_module.thermal if infrared else self.visible_module.visible
    x = stem.maxpool(stem.relu(stem.bn1(stem.conv1(x))))
    base = self.base_resnet.base
    for stage, nl in ((1, None), (2, self.NL_2), (3, self.NL_3), (4, None)):
      blocks = getattr(base, f'layer{stage}')
      first = len(blocks) - (len(nl) if nl is not None else 0)
      for j, block in enumerate(blocks):
        x = block(x)
        if j >= first:
          x = nl[j - first](x)
    pooled = (x.flatten(2) ** 3).mean(-1).add(1e-12) ** (1 / 3)  # AGW's GeM, as written.
    return F.normalize(self.bottleneck(pooled))


def test_agw_release_gives_the_embeddings_of_torch_in_both_modalities(tmp_path):
  """The method's weight loader (`cross_modality._load_weights`, which its initial state calls
  after initialisation) with scope 'all'; one batch of both modalities, each image through its
  own stream."""
  from jreid.methods import cross_modality  # pylint: disable=g-import-not-at-top
  config = tiny.config('agw_sysu', tmp_path)
  config.model.backbone.name = SHORT
  config.model.backbone.nl_layers = (0, 1, 2, 0)
  config.model.input_norm = 'fixed'
  config.model.pooling.gem_learnable = True  # Filled with the reference's fixed p = 3.
  mean, std = np.asarray(config.model.pixel_mean), np.asarray(config.model.pixel_std)
  images = np.random.default_rng(0).integers(0, 256, (12, 32, 16, 3), dtype=np.uint8)
  modality = np.repeat(np.int32([0, 1]), 6)  # 6 visible, then 6 infrared images.
  visible, infrared = nchw(images[:6], mean, std), nchw(images[6:], mean, std)
  net = randomise(TEmbedNet(num_classes=5), 4, zero_bias={'bottleneck.bias'})
  net = calibrate(net, lambda: net(visible, infrared=False), lambda: net(infrared, infrared=True))
  path = tmp_path / 'sysu_agw_p4_n8_lr_0.1_seed_0_best.t'
  torch.save({'net': net.state_dict(), 'cmc': np.linspace(0.5, 1.0, 20), 'mAP': np.float64(0.4),
              'mINP': 0.2, 'epoch': 60}, path)
  config.model.pretrained, config.model.pretrained_scope = str(path), 'all'

  inf = cross_modality.inference(config, 5)
  zeros = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                       jax.eval_shape(inf.init, jax.random.key(0)))
  variables = cross_modality._load_weights(config)(zeros)  # pylint: disable=protected-access
  assert variables['params']['pooling']['p'] == pytest.approx(3.0)
  got = l2n(np.asarray(jax.jit(inf.embed)(variables, images, modality)))
  # Scope 'all' pools as AGW's code (1e-12 added after the mean, gem_eps_mode 'auto' -> 'add'),
  # so channels that are zero at every location pool alike in both.
  assert_as_exact_as_torch(got[:6], net, visible, infrared=False, bound=1e-5)
  assert_as_exact_as_torch(got[6:], net, infrared, infrared=True, bound=1e-5)
  # FastReID's clamp at 1e-6 instead pools such channels to 1e-6 rather than 1e-4.
  config.model.pooling.gem_eps_mode = 'clamp'
  clamped = l2n(np.asarray(jax.jit(cross_modality.inference(config, 5).embed)(
      variables, images, modality)))
  assert np.abs(clamped - got).max() > 1e-5


# ----------------------------------------------------------------------------- FastReID


class TFastReIDBaseline(tnn.Module):
  """FastReID's `Baseline` (BoT): ResNet-50 (ceil-mode stem pool, last stride 1), average
  pooling, a BatchNorm neck with its bias frozen at zero, classifier `heads.weight`."""

  def __init__(self, num_classes):
    super().__init__()
    self.backbone = t_resnet(last_stride=1, ceil=True)
    del self.backbone.fc
    self.heads = tnn.Module()
    self.heads.bottleneck = tnn.Sequential(tnn.BatchNorm2d(WIDTH * 32))
    self.heads.weight = tnn.Parameter(torch.zeros(num_classes, WIDTH * 32))

  def forward(self, x):
    pooled = trunk(self.backbone, x).mean(dim=(2, 3), keepdim=True)
    return self.heads.bottleneck(pooled)[..., 0, 0]


def test_fastreid_zoo_checkpoint_evaluates_in_eval_mode(tmp_path, cache, capsys):
  """The user's command (--mode=eval with the zoo file and scope 'all', run in this process as
  jreid.main runs it: `train.evaluate_checkpoint`) tests the file without a jreid checkpoint;
  the numbers are those of FastReID's own model. With the default scope the head keeps its
  initial values and the embeddings are far off."""
  bagtricks = f'{tiny.REPO}/configs/bagtricks.py'
  overrides = {**tiny.OVERRIDES, 'dataset.cache_dir': cache, 'model.backbone.name': SHORT,
               'model.backbone.stem_pool': 'fastreid', 'eval.roc': False}
  config = config_checks.with_overrides(config_checks.load_config_file(bagtricks),
                                        [(k, str(v)) for k, v in overrides.items()])
  data = train.load_data(config)
  query, gallery = data.splits['query'], data.splits['gallery']
  mean, std = np.asarray(config.model.pixel_mean), np.asarray(config.model.pixel_std)
  net = randomise(TFastReIDBaseline(data.num_classes), 5,
                  zero_bias={'heads.bottleneck.0.bias'})
  images = nchw(split_images(query, config), mean, std)
  net = calibrate(net, lambda: net(images))
  path = tmp_path / 'model_final.pth'
  torch.save({'model': net.state_dict(), 'iteration': 1000}, path)

  workdir = tmp_path / 'zoo'
  argv = ['jreid.main', f'--config={bagtricks}', '--mode=eval', f'--workdir={workdir}',
          f'--config.model.pretrained={path}', '--config.model.pretrained_scope=all',
          *[f'--config.{k}={v}' for k, v in overrides.items()]]
  config_checks.check_command_line(argv)
  spec, flags = config_checks.parse_command_line(argv)
  eval_config = config_checks.with_overrides(config_checks.load_config_file(spec), flags)
  train.evaluate_checkpoint(eval_config, str(workdir))
  out = capsys.readouterr().out
  assert 'no checkpoint in' in out and 'pretrained_scope=all' in out
  got = json.loads((workdir / 'eval-0' / 'metrics.json').read_text())

  with torch.no_grad():
    feats = [np.concatenate([net(nchw(b['image'][b['mask']], mean, std)).numpy()
                             for b in input_pipeline.eval_iterator(s, config.input,
                                                                   batch_size=32)])
             for s in (query, gallery)]
  want = evaluator.rank_with_protocol((*feats, 'cosine'), query, gallery, config.eval)
  assert got['mAP'] == pytest.approx(want.mAP, abs=1e-4)  # See TIES.
  assert got['rank1'] == pytest.approx(want.rank(1), abs=1e-9)

  # The same file with scope 'backbone': BNNeck statistics at their initial values.
  from jreid.methods import supervised  # pylint: disable=g-import-not-at-top
  inf = supervised.inference(config, data.num_classes)
  # A new model's variables as far as the embedding sees them: BatchNorm at scale 1, bias 0,
  # mean 0, variance 1 (the classifier, left at zero here, does not reach the embedding).
  initial = jax.tree_util.tree_map_with_path(
      lambda p, x: np.full(x.shape, 1.0 if p[-1].key in ('scale', 'var') else 0.0, x.dtype),
      jax.eval_shape(inf.init, jax.random.key(0)))
  images = split_images(query, config, limit=8)
  with torch.no_grad():
    want = net(nchw(images, mean, std)).numpy()
  embed = jax.jit(inf.embed)
  for scope, close in (('all', True), ('backbone', False)):
    loaded = weights.load_pretrained(initial, path, config.model, scope=scope)
    emb = np.asarray(embed(loaded, images))
    off = np.linalg.norm(emb - want, axis=1) / np.linalg.norm(want, axis=1)
    assert (off.max() < 1e-4) if close else (off.min() > 0.5), (scope, off)


# ----------------------------------------------------------------------------- errors


def test_scope_errors_are_one_line_before_any_data(tmp_path):
  spec = f'{tiny.REPO}/configs/bagtricks.py'
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check_command_line(['main', f'--config={spec}',
                                      '--config.model.pretrained_scope=everything'])
  assert str(e.value) == ("config.model.pretrained_scope='everything' is not one of 'backbone', "
                          "'all'.")
  with pytest.raises(config_checks.ConfigError, match=r"pretrained_scope='all' loads a whole "
                     r'trained model from config\.model\.pretrained, which is empty'):
    config_checks.check_command_line(['main', f'--config={spec}',
                                      '--config.model.pretrained_scope=all'])
  # Every method's model section has the key (QAConv's and PPLR's replace the shared one).
  for name in ('qaconv', 'pplr', 'agw_sysu', 'cluster_contrast'):
    config = config_checks.load_config_file(f'{tiny.REPO}/configs/{name}.py')
    assert config.model.pretrained_scope == 'backbone', name
  # The default scope is left out of the checkpoint fingerprint, so checkpoints written before
  # the key existed still restore; 'all' is part of it.
  from jreid import parts  # pylint: disable=g-import-not-at-top
  assert 'pretrained_scope' not in parts.fingerprint(config, 10)['model']
  config.model.pretrained_scope = 'all'
  assert parts.fingerprint(config, 10)['model']['pretrained_scope'] == 'all'


def test_a_released_model_loads_only_into_its_own_method(tmp_path):
  net = randomise(TEmbedNet(num_classes=3), 6, zero_bias={'bottleneck.bias'})
  path = tmp_path / 'agw.t'
  torch.save({'net': net.state_dict(), 'cmc': np.zeros(20), 'epoch': 1}, path)
  # numpy arrays beside the weights (AGW's CMC curve) do not stop the safe loader.
  assert weights.find_converter(checkpoint.load_torch_state_dict(path)).name == 'agw'
  config = tiny.config('bagtricks', tmp_path)
  with pytest.raises(weights.WeightConversionError,
                     match=r"an AGW cross-modality embed_net .* loads into "
                     r"config\.model\.name='two_stream', not 'baseline'"):
    weights.load_pretrained({'params': {}}, path, config.model, scope='all')
  from jreid.methods import cross_modality  # pylint: disable=g-import-not-at-top
  with pytest.raises(weights.WeightConversionError, match='pretrained_scope=all'):
    cross_modality.load_pretrained_two_stream({'params': {}}, path)
