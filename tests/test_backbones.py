"""Tests for the backbone zoo: ResNeXt, IBN-a/b, squeeze-excitation, non-local, ResNeSt.

Parameter counts are checked against the published counts of the PyTorch counterparts (via
`jax.eval_shape`, no real initialisation); forward passes of tiny networks against plain numpy
references written here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jreid.models import BACKBONES, build_model, default_model_config
from jreid.models.nonlocal_block import NonLocal
from jreid.models.resnest import ResNeSt, ResNeStBottleneck
from jreid.models.resnet import BasicBlock, Bottleneck, ResNet

KEY = jax.random.key(0)
IMAGENET_FC = 2048 * 1000 + 1000  # the classifier every published count below includes


def param_count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def backbone_shapes(name: str, width: int = 64, hw=(32, 16), **cfg):
  backbone = BACKBONES.get(name)({'width': width, 'last_stride': 1, **cfg})
  return jax.eval_shape(lambda: backbone.init(KEY, jnp.zeros((1, *hw, 3)), train=False))


def random_variables(model, x, seed=0):
  """Variables shaped like `model.init`'s, filled by numpy far from identity (no init compile)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      value = rng.normal(0, np.sqrt(2 / np.prod(leaf.shape[:-1])), leaf.shape)
    elif name in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif name in ('bias', 'mean'):
      value = rng.normal(0, 0.2, leaf.shape)
    else:
      raise AssertionError(f'unexpected variable {jax.tree_util.keystr(path)}')
    return jnp.asarray(value, leaf.dtype)

  shapes = jax.eval_shape(lambda: model.init(KEY, x, train=False))
  return jax.tree_util.tree_map_with_path(fill, shapes)


# ----------------------------------------------------------------------------- numpy references

relu = lambda v: np.maximum(v, 0)
sigmoid = lambda v: 1 / (1 + np.exp(-v))


def conv_ref(x, w, stride=1, pad=None, groups=1, dilation=1, bias=None):
  """PyTorch Conv2d on NHWC x and HWIO w (I = in / groups); padding defaults to 'same'."""
  kh, kw = w.shape[:2]
  pad = dilation * (kh // 2) if pad is None else pad
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out_h = (x.shape[1] - dilation * (kh - 1) - 1) // stride + 1
  out_w = (x.shape[2] - dilation * (kw - 1) - 1) // stride + 1
  cin, cout = w.shape[2], w.shape[3] // groups
  out = np.zeros((x.shape[0], out_h, out_w, w.shape[3]))
  for g in range(groups):
    for i in range(kh):
      for j in range(kw):
        patch = x[:, i * dilation:i * dilation + stride * out_h:stride,
                  j * dilation:j * dilation + stride * out_w:stride, g * cin:(g + 1) * cin]
        out[..., g * cout:(g + 1) * cout] += patch @ w[i, j, :, g * cout:(g + 1) * cout]
  return out if bias is None else out + bias


def bn_ref(x, p, s, eps=1e-5):
  return (x - s['mean']) / np.sqrt(s['var'] + eps) * p['scale'] + p['bias']


def in_ref(x, p, eps=1e-5):
  """InstanceNorm2d(affine=True): each sample and channel normalised over h, w."""
  mean, var = x.mean(axis=(1, 2), keepdims=True), x.var(axis=(1, 2), keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def max_pool_ref(x):
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  out_h, out_w = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  return np.max([x[:, i:i + 2 * out_h:2, j:j + 2 * out_w:2] for i in range(3) for j in range(3)],
                axis=0)


def avg_pool3_ref(x, stride):
  """AvgPool2d(3, stride, padding=1) with zero padding counted (PyTorch's default)."""
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out_h, out_w = (x.shape[1] - 3) // stride + 1, (x.shape[2] - 3) // stride + 1
  return np.mean([x[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
                  for i in range(3) for j in range(3)], axis=0)


def avg_down_ref(x):
  """AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False): partial windows at the edge."""
  h, w = -(-x.shape[1] // 2), -(-x.shape[2] // 2)
  out = np.zeros((x.shape[0], h, w, x.shape[3]))
  for i in range(h):
    for j in range(w):
      out[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(1, 2))
  return out


def se_ref(x, p):
  s = relu(x.mean(axis=(1, 2)) @ p['fc1']['kernel'] + p['fc1']['bias'])
  s = sigmoid(s @ p['fc2']['kernel'] + p['fc2']['bias'])
  return x * s[:, None, None, :]


def nonlocal_ref(x, p, s):
  """z = W(theta phi^T / N g) + x, written per sample with explicit positions."""
  b, h, w, c = x.shape
  proj = lambda name, v: v @ p[name]['kernel'][0, 0] + p[name]['bias']
  out = np.zeros_like(x)
  for n in range(b):
    pos = x[n].reshape(h * w, c)
    theta, phi, g = proj('theta', pos), proj('phi', pos), proj('g', pos)
    f = theta @ phi.T / (h * w)
    y = proj('W_conv', f @ g)
    out[n] = (bn_ref(y, p['W_bn'], s['W_bn']) + pos).reshape(h, w, c)
  return out


def resnet_block_ref(x, p, s, stride, bottleneck, ibn, se, groups):
  def bn1(v):
    if ibn != 'a':
      return bn_ref(v, p['bn1'], s['bn1'])
    half = v.shape[-1] // 2
    return np.concatenate([in_ref(v[..., :half], p['bn1']['IN']),
                           bn_ref(v[..., half:], p['bn1']['BN'], s['bn1']['BN'])], axis=-1)

  if bottleneck:
    y = relu(bn1(conv_ref(x, p['conv1']['kernel'])))
    y = relu(bn_ref(conv_ref(y, p['conv2']['kernel'], stride, groups=groups), p['bn2'], s['bn2']))
    y = bn_ref(conv_ref(y, p['conv3']['kernel']), p['bn3'], s['bn3'])
  else:
    y = relu(bn1(conv_ref(x, p['conv1']['kernel'], stride)))
    y = bn_ref(conv_ref(y, p['conv2']['kernel']), p['bn2'], s['bn2'])
  if se:
    y = se_ref(y, p['se'])
  if 'downsample_conv' in p:
    x = bn_ref(conv_ref(x, p['downsample_conv']['kernel'], stride), p['downsample_bn'],
               s['downsample_bn'])
  y = y + x
  if ibn == 'b':
    y = in_ref(y, p['IN'])
  return relu(y)


def resnet_ref(variables, x, stage_sizes, bottleneck, ibn='', se=False, groups=1, nl=()):
  """The trunk, with IBN-Net's placement written out: IBN-a in layer1-3, IBN-b in the stem and
  the last block of layer1 and layer2; `nl[i]` non-local blocks after the last blocks."""
  p, s = variables['params'], variables.get('batch_stats', {})
  x = conv_ref(x, p['conv1']['kernel'], 2)
  x = in_ref(x, p['bn1']) if ibn == 'b' else bn_ref(x, p['bn1'], s['bn1'])
  x = max_pool_ref(relu(x))
  for i, n in enumerate(stage_sizes):
    n_nl = nl[i] if i < len(nl) else 0
    for j in range(n):
      block_ibn = {'a': 'a' if i < 3 else '', 'b': 'b' if i < 2 and j == n - 1 else ''}.get(ibn, '')
      stride = (1 if i == 0 else 1 if i == 3 else 2) if j == 0 else 1  # last_stride = 1
      name = f'layer{i + 1}_{j}'
      x = resnet_block_ref(x, p[name], s.get(name, {}), stride, bottleneck, block_ibn, se, groups)
      if j >= n - n_nl:
        nl_name = f'NL_{i + 1}_{j - (n - n_nl)}'
        x = nonlocal_ref(x, p[nl_name], s[nl_name])
  return x


def split_attention_ref(x, p, s, radix, dilation):
  """SplAtConv2d with cardinality 1: softmax over the radix of fc2(relu(bn1(fc1(gap))))."""
  y = relu(bn_ref(conv_ref(x, p['conv']['kernel'], groups=radix, dilation=dilation),
                  p['bn0'], s['bn0']))
  c = y.shape[-1] // radix
  splits = [y[..., r * c:(r + 1) * c] for r in range(radix)]
  gap = sum(splits).mean(axis=(1, 2))
  gap = relu(bn_ref(gap @ p['fc1']['kernel'][0, 0] + p['fc1']['bias'], p['bn1'], s['bn1']))
  logits = (gap @ p['fc2']['kernel'][0, 0] + p['fc2']['bias']).reshape(len(x), radix, c)
  att = np.exp(logits - logits.max(axis=1, keepdims=True))
  att /= att.sum(axis=1, keepdims=True)
  return sum(att[:, r, None, None, :] * splits[r] for r in range(radix))


def resnest_block_ref(x, p, s, stride, avd, dilation, radix=2):
  y = relu(bn_ref(conv_ref(x, p['conv1']['kernel']), p['bn1'], s['bn1']))
  y = split_attention_ref(y, p['conv2'], s['conv2'], radix, dilation)
  if avd:
    y = avg_pool3_ref(y, stride)
  y = bn_ref(conv_ref(y, p['conv3']['kernel']), p['bn3'], s['bn3'])
  if 'downsample_conv' in p:
    x = avg_down_ref(x) if stride == 2 else x
    x = bn_ref(conv_ref(x, p['downsample_conv']['kernel']), p['downsample_bn'],
               s['downsample_bn'])
  return relu(y + x)


# ----------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize('name,cfg,published', [
    # torchvision resnext50_32x4d / resnext101_32x8d / resnet101 (model docs, "num_params").
    ('resnext50_32x4d', {}, 25_028_904),
    ('resnext101_32x8d', {}, 88_791_336),
    ('resnet101', {}, 44_549_160),
    # IBN-a swaps half of some BatchNorms for affine InstanceNorms: the count of torchvision's
    # resnet50 (25,557,032); IBN-b adds the affine IN after layer1.2 (256 ch) and layer2.3 (512).
    ('resnet50_ibn_a', {}, 25_557_032),
    ('resnet50_ibn_b', {}, 25_557_032 + 2 * (256 + 512)),
    # timm seresnet50: SE with biased fc, reduction 16.
    ('resnet50', {'with_se': True}, 28_088_024),
    # timm resnest50d (= zhanghang1989 resnest50) and resnest101e (= resnest101).
    ('resnest50', {}, 27_483_240),
    ('resnest101', {}, 48_275_016),
])
def test_parameter_counts_equal_published_counterparts(name, cfg, published):
  assert param_count(backbone_shapes(name, **cfg)['params']) == published - IMAGENET_FC


def torchvision_resnet_count(layers, groups=1, width_per_group=64, basic=False) -> int:
  """Parameters of torchvision's ResNet/ResNeXt with its 1000-way fc, counted by hand.

  conv weights have no bias; each BatchNorm has 2 per channel; one downsample (1x1 conv + BN)
  opens every stage whose input width differs, as in torchvision's `_make_layer`.
  """
  total = 3 * 64 * 49 + 2 * 64  # stem conv + bn1
  expansion = 1 if basic else 4
  inplanes = 64
  for stage, blocks in enumerate(layers):
    planes = 64 * 2**stage
    width = planes * width_per_group // 64 * groups
    out = planes * expansion
    for b in range(blocks):
      if basic:
        total += 9 * inplanes * planes + 2 * planes + 9 * planes * planes + 2 * planes
      else:
        total += (inplanes * width + 2 * width + 9 * width * width // groups + 2 * width +
                  width * out + 2 * out)
      if b == 0 and (stage > 0 or inplanes != out):
        total += inplanes * out + 2 * out
      inplanes = out
  return total + inplanes * 1000 + 1000


@pytest.mark.parametrize('layers,kwargs,published', [
    # torchvision's "num_params" for the models it ships (model docs).
    ((2, 2, 2, 2), {'basic': True}, 11_689_512),
    ((3, 4, 6, 3), {'basic': True}, 21_797_672),
    ((3, 4, 6, 3), {}, 25_557_032),
    ((3, 4, 23, 3), {}, 44_549_160),
    ((3, 8, 36, 3), {}, 60_192_808),
    ((3, 4, 6, 3), {'groups': 32, 'width_per_group': 4}, 25_028_904),
    ((3, 4, 23, 3), {'groups': 32, 'width_per_group': 8}, 88_791_336),
])
def test_hand_count_reproduces_torchvision_counts(layers, kwargs, published):
  assert torchvision_resnet_count(layers, **kwargs) == published


@pytest.mark.parametrize('name,layers,kwargs', [
    ('resnet152', (3, 8, 36, 3), {}),
    ('resnext101_32x4d', (3, 4, 23, 3), {'groups': 32, 'width_per_group': 4}),
    ('resnext50_32x8d', (3, 4, 6, 3), {'groups': 32, 'width_per_group': 8}),
])
def test_remaining_resnets_equal_the_torchvision_layout_count(name, layers, kwargs):
  # resnet152 is torchvision's (60,192,808); resnext101_32x4d is timm's gluon model, published
  # as 44.2M; resnext50_32x8d has no published counterpart, so only the layout count applies.
  expected = torchvision_resnet_count(layers, **kwargs)
  assert param_count(backbone_shapes(name)['params']) == expected - IMAGENET_FC
  if name == 'resnext101_32x4d':
    assert round(expected / 1e6, 1) == 44.2


def test_nonlocal_blocks_follow_fastreid_placement_and_size():
  params = backbone_shapes('resnet50', with_nl=True)['params']
  assert sorted(k for k in params if k.startswith('NL')) == [
      'NL_2_0', 'NL_2_1', 'NL_3_0', 'NL_3_1', 'NL_3_2']
  # g, theta, phi: C -> 1 with bias; W: 1 -> C with bias, then BatchNorm(C): 7C + 3 each.
  assert param_count(params) == 25_557_032 - IMAGENET_FC + 2 * (7 * 512 + 3) + 3 * (7 * 1024 + 3)
  assert params['NL_3_0']['W_conv']['kernel'].shape == (1, 1, 1, 1024)
  r101 = BACKBONES.get('resnet101')({'width': 8, 'last_stride': 1, 'with_nl': True})
  assert r101.nl_layers == (0, 2, 9, 0)


# ----------------------------------------------------------------------------- structure


def test_ibn_a_parameter_tree_follows_ibn_net_names():
  variables = backbone_shapes('resnet50_ibn_a', width=8)
  params, stats = variables['params'], variables['batch_stats']
  assert set(params['layer1_0']['bn1']) == {'IN', 'BN'}
  assert params['layer3_5']['bn1']['IN']['scale'].shape == (16,)  # half of 32 channels
  assert params['layer3_5']['bn1']['BN']['scale'].shape == (16,)
  assert set(stats['layer1_0']['bn1']) == {'BN'}  # InstanceNorm keeps no running statistics
  assert set(params['layer4_0']['bn1']) == {'scale', 'bias'}  # layer4 stays BatchNorm
  assert not any('IN' in params[k] for k in params if k.startswith('layer'))


def test_ibn_b_parameter_tree_follows_ibn_net_names():
  variables = backbone_shapes('resnet50_ibn_b', width=8)
  params, stats = variables['params'], variables['batch_stats']
  assert 'bn1' in params and 'bn1' not in stats  # the stem norm is an InstanceNorm
  with_in = sorted(k for k in params if k.startswith('layer') and 'IN' in params[k])
  assert with_in == ['layer1_2', 'layer2_3']  # IBN-Net: the last block of layer1 and layer2
  assert params['layer2_3']['IN']['scale'].shape == (64,)  # 4 * 2 * width


def test_truncated_trunk_keeps_variants_for_qaconv():
  """QAConv cuts after layer3 with `clone(stage_sizes=stage_sizes[:3])`."""
  for name, cfg in (('resnet50_ibn_b', {}), ('resnet50_ibn_a', {'with_nl': True}),
                    ('resnext50_32x4d', {'with_se': True}), ('resnest50', {})):
    full = BACKBONES.get(name)({'width': 16, 'last_stride': 1, **cfg})
    cut = full.clone(stage_sizes=full.stage_sizes[:3])
    out = jax.eval_shape(lambda m=cut: m.init_with_output(
        KEY, jnp.zeros((1, 64, 32, 3)), train=False)[0])
    assert out.shape == (1, 4, 2, 16 * 16), name
    assert not any(k.startswith(('layer4', 'NL_4')) for k in jax.eval_shape(
        lambda m=cut: m.init(KEY, jnp.zeros((1, 64, 32, 3)), train=False))['params'])


@pytest.mark.parametrize('name', ['resnext50_32x4d', 'resnet34_ibn_a', 'resnest50', 'resnest101'])
@pytest.mark.parametrize('last_stride,hw', [(1, (4, 2)), (2, (2, 1))])
def test_output_shapes_and_last_stride(name, last_stride, hw):
  width = 16
  backbone = BACKBONES.get(name)({'width': width, 'last_stride': last_stride})
  out = jax.eval_shape(lambda: backbone.init_with_output(
      KEY, jnp.zeros((2, 64, 32, 3)), train=False)[0])
  channels = width * 8 * (1 if name == 'resnet34_ibn_a' else 4)
  assert out.shape == (2, *hw, channels)


def test_config_keys_reach_the_backbone():
  cfg = default_model_config()
  assert (cfg.backbone.with_ibn, cfg.backbone.with_se, cfg.backbone.with_nl) == ('', False, False)
  cfg.backbone.name, cfg.backbone.width = 'resnet18', 8
  cfg.backbone.with_ibn, cfg.backbone.with_se, cfg.backbone.with_nl = 'a', True, True
  model = build_model(cfg, 5)
  params = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((2, 64, 32, 3)), train=False))[
      'params']['backbone']
  assert {'NL_2_0', 'NL_2_1', 'NL_3_0', 'NL_3_1'} <= set(params)  # [0, 2, 3, 0] clipped to 2
  assert 'se' in params['layer4_1'] and 'IN' in params['layer1_0']['bn1']


def test_config_errors_name_the_key_and_fix():
  with pytest.raises(ValueError, match=r"with_ibn must be '', 'a' or 'b', got 'c'"):
    BACKBONES.get('resnet50')({'width': 8, 'last_stride': 1, 'with_ibn': 'c'})
  with pytest.raises(ValueError, match=r"with_ibn='b' contradicts backbone 'resnet50_ibn_a'"):
    BACKBONES.get('resnet50_ibn_a')({'width': 8, 'last_stride': 1, 'with_ibn': 'b'})
  with pytest.raises(ValueError, match=r"width=8 is too small for 'resnext50_32x4d'.*width >= 16"):
    BACKBONES.get('resnext50_32x4d')({'width': 8, 'last_stride': 1})
  with pytest.raises(ValueError, match=r'with_se is not supported by ResNeSt'):
    BACKBONES.get('resnest50')({'width': 8, 'last_stride': 1, 'with_se': True})
  model = ResNet(Bottleneck, (1, 1, 1, 1), width=4, nl_layers=(0, 2, 0, 0))
  with pytest.raises(ValueError, match=r'nl_layers\[1\] = 2 non-local blocks, but layer2 has 1'):
    jax.eval_shape(lambda: model.init(KEY, jnp.zeros((1, 32, 16, 3)), train=False))


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize('block,stage_sizes,kwargs', [
    (Bottleneck, (1, 2, 1, 1), dict(ibn='a', groups=2, width_per_group=32)),
    (Bottleneck, (2, 2, 1, 1), dict(ibn='b', with_se=True, nl_layers=(1, 2, 0, 1))),
    (BasicBlock, (1, 2, 1, 1), dict(ibn='a', with_se=True)),
])
def test_resnet_variants_equal_numpy_reference(block, stage_sizes, kwargs):
  model = ResNet(block, stage_sizes, width=16, **kwargs)
  x = np.random.default_rng(0).normal(size=(2, 32, 16, 3)).astype(np.float32)
  variables = random_variables(model, x, seed=1)
  out = jax.jit(model.apply, static_argnames='train')(variables, x, train=False)
  expected = resnet_ref(jax.tree.map(lambda v: np.asarray(v, np.float64), variables),
                        x.astype(np.float64), stage_sizes, bottleneck=block is Bottleneck,
                        ibn=kwargs.get('ibn', ''), se=kwargs.get('with_se', False),
                        groups=kwargs.get('groups', 1), nl=kwargs.get('nl_layers', ()))
  np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-4)


def test_nonlocal_standalone_equals_numpy_reference_and_starts_as_identity():
  x = np.random.default_rng(0).normal(size=(2, 3, 4, 6)).astype(np.float32)
  block = NonLocal(inter_channels=3)
  assert block.inter_channels == 3
  variables = block.init(KEY, x, train=False)
  np.testing.assert_array_equal(block.apply(variables, x, train=False), x)  # W's BN starts at 0
  assert variables['params']['g']['kernel'].shape == (1, 1, 6, 3)
  variables = random_variables(block, x, seed=2)
  expected = nonlocal_ref(x.astype(np.float64), *(
      jax.tree.map(lambda v: np.asarray(v, np.float64), variables[k])
      for k in ('params', 'batch_stats')))
  np.testing.assert_allclose(block.apply(variables, x, train=False), expected, rtol=1e-5,
                             atol=1e-5)
  half = NonLocal(inter_channels=0).init(KEY, x, train=False)['params']
  assert half['theta']['kernel'].shape == (1, 1, 6, 3)  # 0 -> C // 2, the paper's choice


@pytest.mark.parametrize('stride,avd,dilation,in_channels,hw', [
    (2, True, 1, 16, (7, 5)),  # layer2..4 first block: avd pool + ceil-mode avg-down, odd size
    (1, True, 1, 32, (4, 4)),  # layer4 first block at last_stride 1: avd pool with stride 1
    (1, False, 2, 32, (4, 4)),  # layer4 later blocks at last_stride 1: dilation 2
])
def test_resnest_block_equals_numpy_reference(stride, avd, dilation, in_channels, hw):
  block = ResNeStBottleneck(features=8, stride=stride, avd=avd, dilation=dilation,
                            min_inter_channels=4)
  x = np.random.default_rng(0).normal(size=(2, *hw, in_channels)).astype(np.float32)
  variables = random_variables(block, x, seed=3)
  out = block.apply(variables, x, train=False)
  v64 = jax.tree.map(lambda v: np.asarray(v, np.float64), variables)
  expected = resnest_block_ref(x.astype(np.float64), v64['params'], v64['batch_stats'], stride,
                               avd, dilation)
  np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-4)


def test_resnest_trunk_structure_follows_fastreid():
  model = ResNeSt((1, 2, 1, 2), width=8, stem_width=4, min_inter_channels=2)
  params = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((1, 64, 32, 3)), train=False))[
      'params']
  assert params['stem_conv3']['kernel'].shape == (3, 3, 4, 8)
  assert params['layer1_0']['conv2']['conv']['kernel'].shape == (3, 3, 4, 16)  # groups = radix
  assert params['layer4_1']['conv2']['fc1']['kernel'].shape == (1, 1, 64, 32)
  out = jax.eval_shape(lambda: model.init_with_output(
      KEY, jnp.zeros((1, 64, 32, 3)), train=False)[0])
  assert out.shape == (1, 4, 2, 256)


# ----------------------------------------------------------------------------- ViT


def layer_norm_ref(x, p, eps=1e-6):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def vit_ref(p, x, patch, stride, heads, depth):
  """timm's ViT forward, patches cut out one by one, attention head by head."""
  from math import erf  # pylint: disable=g-import-not-at-top
  b, height, width, _ = x.shape
  rows, cols = (height - patch) // stride + 1, (width - patch) // stride + 1
  kernel = p['patch_embed']['kernel'].reshape(-1, p['patch_embed']['kernel'].shape[-1])
  tokens = [x[:, r * stride:r * stride + patch, c * stride:c * stride + patch].reshape(b, -1)
            @ kernel + p['patch_embed']['bias'] for r in range(rows) for c in range(cols)]
  dim = kernel.shape[-1]
  t = np.concatenate([np.broadcast_to(p['cls_token'], (b, 1, dim)), np.stack(tokens, 1)], 1)
  t = t + p['pos_embed']
  gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))
  for i in range(depth):
    q = p[f'blocks_{i}']
    y = layer_norm_ref(t, q['norm1']) @ q['attn']['qkv']['kernel'] + q['attn']['qkv']['bias']
    hd = dim // heads
    out = np.zeros_like(t)
    for h in range(heads):
      qh, kh, vh = (y[..., k * dim + h * hd:k * dim + (h + 1) * hd] for k in range(3))
      logits = qh @ kh.transpose(0, 2, 1) / np.sqrt(hd)
      w = np.exp(logits - logits.max(-1, keepdims=True))
      out[..., h * hd:(h + 1) * hd] = (w / w.sum(-1, keepdims=True)) @ vh
    t = t + out @ q['attn']['proj']['kernel'] + q['attn']['proj']['bias']
    y = gelu(layer_norm_ref(t, q['norm2']) @ q['mlp']['fc1']['kernel'] + q['mlp']['fc1']['bias'])
    t = t + y @ q['mlp']['fc2']['kernel'] + q['mlp']['fc2']['bias']
  return layer_norm_ref(t, p['norm'])[:, 0]


@pytest.mark.parametrize('name,published,fc', [
    ('vit_small', 22_050_664, 384 * 1000 + 1000),  # timm vit_small_patch16_224
    ('vit_base', 86_567_656, 768 * 1000 + 1000),  # timm vit_base_patch16_224
])
def test_vit_parameter_counts_equal_timm(name, published, fc):
  assert param_count(backbone_shapes(name, hw=(224, 224))['params']) == published - fc


def test_vit_overlapping_patches_give_transreid_token_grid():
  variables, out = jax.eval_shape(lambda: BACKBONES.get('vit_base')(
      {'width': 8, 'last_stride': 1, 'patch_stride': 12}).init_with_output(
          KEY, jnp.zeros((2, 256, 128, 3)), train=False)[::-1])
  assert variables['params']['pos_embed'].shape == (1, 21 * 10 + 1, 96)
  assert out.shape == (2, 1, 1, 96)  # the class token as a 1x1 feature map


@pytest.mark.parametrize('stride', [16, 12])
def test_vit_equals_numpy_reference(stride):
  from jreid.models.vit import VisionTransformer  # pylint: disable=g-import-not-at-top
  model = VisionTransformer(embed_dim=12, depth=2, num_heads=3, patch_stride=stride)
  x = np.random.default_rng(0).normal(size=(2, 40, 32, 3)).astype(np.float32)
  rng = np.random.default_rng(4)
  shapes = jax.eval_shape(lambda: model.init(KEY, x, train=False))
  variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), s.dtype), shapes)
  out = jax.jit(model.apply, static_argnames='train')(variables, x, train=False)
  expected = vit_ref(jax.tree.map(lambda v: np.asarray(v, np.float64), variables['params']),
                     x.astype(np.float64), 16, stride, heads=3, depth=2)
  np.testing.assert_allclose(out[:, 0, 0], expected, rtol=2e-4, atol=2e-4)
