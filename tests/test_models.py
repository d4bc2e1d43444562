"""Tests for jreid.models and jreid.registry against plain numpy references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jreid.models import BACKBONES, HEADS, POOLINGS, build_model, default_model_config
from jreid.models.baseline import Baseline
from jreid.models.heads import EmbeddingHead
from jreid.models.pooling import GeneralizedMeanPool, GlobalAvgPool, GlobalMaxPool
from jreid.models.resnet import BasicBlock, Bottleneck, ResNet, conv_kernel_init
from jreid.registry import Registry

KEY = jax.random.key(0)


def tiny_model_config(backbone: str = 'resnet18', width: int = 8) -> ml_collections.ConfigDict:
  cfg = default_model_config()
  cfg.backbone.name = backbone
  cfg.backbone.width = width
  return cfg


def param_count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------- numpy references


def conv2d_ref(x, w, stride, pad):
  """PyTorch Conv2d (cross-correlation, zero padding, no bias) on NHWC x and HWIO w."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw = w.shape[:2]
  out_h = (x.shape[1] - kh) // stride + 1
  out_w = (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], out_h, out_w, w.shape[3]))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride, :]
      out += patch @ w[i, j]
  return out


def batch_norm_ref(x, params, stats, eps=1e-5):
  """Inference BatchNorm with running statistics."""
  y = (x - stats['mean']) / np.sqrt(stats['var'] + eps) * params['scale']
  return y + params['bias'] if 'bias' in params else y


def max_pool_ref(x):
  """PyTorch MaxPool2d(kernel 3, stride 2, padding 1)."""
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  out_h, out_w = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  out = np.full((x.shape[0], out_h, out_w, x.shape[3]), -np.inf)
  for i in range(3):
    for j in range(3):
      out = np.maximum(out, x[:, i:i + 2 * out_h:2, j:j + 2 * out_w:2, :])
  return out


def block_ref(x, params, stats, stride, bottleneck):
  """One BasicBlock or Bottleneck in inference mode."""
  relu = lambda v: np.maximum(v, 0)

  def conv_bn(v, index, conv_stride, pad):
    v = conv2d_ref(v, params[f'conv{index}']['kernel'], conv_stride, pad)
    return batch_norm_ref(v, params[f'bn{index}'], stats[f'bn{index}'])

  if bottleneck:  # torchvision v1.5: the stride sits on the 3x3 convolution
    y = relu(conv_bn(x, 1, 1, 0))
    y = relu(conv_bn(y, 2, stride, 1))
    y = conv_bn(y, 3, 1, 0)
  else:
    y = relu(conv_bn(x, 1, stride, 1))
    y = conv_bn(y, 2, 1, 1)
  if 'downsample_conv' in params:
    x = batch_norm_ref(conv2d_ref(x, params['downsample_conv']['kernel'], stride, 0),
                       params['downsample_bn'], stats['downsample_bn'])
  return relu(y + x)


def resnet_ref(variables, x, stage_sizes, last_stride, bottleneck):
  params, stats = variables['params'], variables['batch_stats']
  x = conv2d_ref(x, params['conv1']['kernel'], 2, 3)
  x = np.maximum(batch_norm_ref(x, params['bn1'], stats['bn1']), 0)
  x = max_pool_ref(x)
  for i, num_blocks in enumerate(stage_sizes):
    for j in range(num_blocks):
      stride = (1 if i == 0 else last_stride if i == 3 else 2) if j == 0 else 1
      name = f'layer{i + 1}_{j}'
      x = block_ref(x, params[name], stats[name], stride, bottleneck)
  return x


def random_variables(model, *args, seed=0, **kwargs):
  """Variables shaped like `model.init(...)`'s, filled by numpy: no init compile, and BatchNorm
  scales, biases and running statistics far from identity."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':  # He-scaled, so activations stay O(1) through the network
      value = rng.normal(0, np.sqrt(2 / (leaf.shape[-1] * np.prod(leaf.shape[:-2]))), leaf.shape)
    elif name in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif name in ('bias', 'mean'):
      value = rng.normal(0, 0.2, leaf.shape)
    else:
      raise AssertionError(f'unexpected variable {jax.tree_util.keystr(path)}')
    return jnp.asarray(value, leaf.dtype)

  shapes = jax.eval_shape(lambda: model.init(KEY, *args, **kwargs))
  return jax.tree_util.tree_map_with_path(fill, shapes)


# ----------------------------------------------------------------------------- registry


def test_registry_suggests_nearest_name():
  registry = Registry('backbone')
  for name in ('resnet18', 'resnet50', 'osnet'):
    registry.register(name)(lambda: None)
  with pytest.raises(ValueError, match=r"unknown backbone 'resnet5'; did you mean 'resnet50'\? "
                     r'known: osnet, resnet18, resnet50'):
    registry.get('resnet5')
  with pytest.raises(ValueError, match="unknown backbone 'vit'; known: "):
    registry.get('vit')
  assert registry.names() == ['osnet', 'resnet18', 'resnet50'] and 'osnet' in registry


def test_registry_rejects_duplicates():
  registry = Registry('pooling')
  registry.register('avg')(lambda: None)
  with pytest.raises(ValueError, match="pooling 'avg' is registered twice"):
    registry.register('avg')(lambda: None)


def test_model_registries_hold_the_components():
  assert {'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152'} <= set(BACKBONES.names())
  assert {'avg', 'gem', 'max'} <= set(POOLINGS.names())
  assert {'bnneck', 'linear'} <= set(HEADS.names())


def test_build_model_names_the_config_key_of_a_typo():
  cfg = tiny_model_config()
  cfg.backbone.name = 'resnet5'
  with pytest.raises(ValueError, match=r"config.model.backbone.name: unknown backbone 'resnet5'; "
                     r"did you mean 'resnet50'\?"):
    build_model(cfg, 10)
  cfg = tiny_model_config()
  cfg.pooling.name = 'gen'
  with pytest.raises(ValueError, match=r"config.model.pooling.name: .*did you mean 'gem'"):
    build_model(cfg, 10)
  cfg = tiny_model_config()
  cfg.dtype = 'float16'
  with pytest.raises(ValueError, match='config.model.dtype must be one of'):
    build_model(cfg, 10)


# ----------------------------------------------------------------------------- ResNet


@pytest.mark.parametrize('name,expected', [
    ('resnet18', 11_689_512 - 513_000),
    ('resnet34', 21_797_672 - 513_000),
    ('resnet50', 25_557_032 - 2_049_000),
])
def test_resnet_parameter_counts_equal_torchvision_without_fc(name, expected):
  backbone = BACKBONES.get(name)({'width': 64, 'last_stride': 1})
  shapes = jax.eval_shape(
      lambda: backbone.init(KEY, jnp.zeros((1, 64, 32, 3)), train=False))
  assert param_count(shapes['params']) == expected


def test_resnet_parameter_tree_follows_torchvision_names():
  variables = jax.eval_shape(lambda: BACKBONES.get('resnet50')(
      {'width': 8, 'last_stride': 1}).init(KEY, jnp.zeros((1, 32, 16, 3)), train=False))
  params = variables['params']
  expected_blocks = [f'layer{i + 1}_{j}' for i, n in enumerate((3, 4, 6, 3)) for j in range(n)]
  assert set(params) == {'conv1', 'bn1', *expected_blocks}
  assert set(params['layer1_0']) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3',
                                     'downsample_conv', 'downsample_bn'}
  assert set(params['layer1_1']) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3'}
  assert params['conv1']['kernel'].shape == (7, 7, 3, 8)
  assert params['layer4_0']['conv2']['kernel'].shape == (3, 3, 64, 64)
  assert params['layer4_0']['downsample_conv']['kernel'].shape == (1, 1, 128, 256)
  assert set(variables['batch_stats']['bn1']) == {'mean', 'var'}
  convs = [v for path, v in jax.tree_util.tree_leaves_with_path(params)
           if 'conv' in jax.tree_util.keystr(path)]
  assert all(v.ndim == 4 for v in convs)  # kernels only: no convolution has a bias

  resnet18 = jax.eval_shape(lambda: BACKBONES.get('resnet18')(
      {'width': 8, 'last_stride': 1}).init(KEY, jnp.zeros((1, 32, 16, 3)), train=False))['params']
  assert 'downsample_conv' not in resnet18['layer1_0']  # same width, stride 1
  assert 'downsample_conv' in resnet18['layer4_0']  # channels double even at stride 1


@pytest.mark.parametrize('name,channels', [('resnet18', 64), ('resnet50', 256)])
@pytest.mark.parametrize('last_stride,hw', [(1, (4, 2)), (2, (2, 1))])
def test_resnet_output_shape_and_last_stride(name, channels, last_stride, hw):
  backbone = BACKBONES.get(name)({'width': 8, 'last_stride': last_stride})
  out = jax.eval_shape(lambda: backbone.init_with_output(
      KEY, jnp.zeros((2, 64, 32, 3)), train=False)[0])
  assert out.shape == (2, *hw, channels)


@pytest.mark.parametrize('block,stage_sizes,last_stride', [
    (BasicBlock, (2, 1, 1, 1), 1),
    (Bottleneck, (1, 2, 1, 1), 2),
])
def test_resnet_inference_equals_numpy_reference(block, stage_sizes, last_stride):
  model = ResNet(block, stage_sizes, width=4, last_stride=last_stride)
  x = np.random.default_rng(0).normal(size=(2, 32, 16, 3)).astype(np.float32)
  variables = random_variables(model, x, train=False, seed=1)
  out = jax.jit(model.apply, static_argnames='train')(variables, x, train=False)
  expected = resnet_ref(jax.tree.map(np.asarray, variables), x.astype(np.float64), stage_sizes,
                        last_stride, bottleneck=block is Bottleneck)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_resnet_train_mode_updates_running_stats_with_pytorch_momentum():
  model = ResNet(BasicBlock, (1, 1, 1, 1), width=4)
  x = np.random.default_rng(0).normal(size=(2, 32, 16, 3)).astype(np.float32)
  variables = random_variables(model, x, train=False)
  _, updates = jax.jit(model.apply, static_argnames=('train', 'mutable'))(
      variables, x, train=True, mutable=('batch_stats',))
  stem = conv2d_ref(x.astype(np.float64), np.asarray(variables['params']['conv1']['kernel']), 2, 3)
  old = variables['batch_stats']['bn1']
  np.testing.assert_allclose(updates['batch_stats']['bn1']['mean'],
                             0.9 * old['mean'] + 0.1 * stem.mean(axis=(0, 1, 2)), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(updates['batch_stats']['bn1']['var'],
                             0.9 * old['var'] + 0.1 * stem.var(axis=(0, 1, 2)), rtol=1e-4,
                             atol=1e-6)


def test_resnet_conv_init_is_kaiming_normal_fan_out():
  kernel = np.asarray(conv_kernel_init(KEY, (3, 3, 128, 128)))
  assert abs(kernel.std() / np.sqrt(2.0 / (3 * 3 * 128)) - 1) < 0.02
  assert abs(kernel.mean()) < 1e-3
  # Untruncated normal, like torch.nn.init.kaiming_normal_: values beyond 2 std exist.
  assert np.mean(np.abs(kernel) > 2 * kernel.std()) > 0.04


# ----------------------------------------------------------------------------- pooling


def test_poolings_equal_numpy_reference():
  x = np.random.default_rng(0).normal(size=(3, 4, 2, 5)).astype(np.float32)
  np.testing.assert_allclose(GlobalAvgPool().apply({}, x), x.mean(axis=(1, 2)), rtol=1e-6)
  np.testing.assert_allclose(GlobalMaxPool().apply({}, x), x.max(axis=(1, 2)), rtol=1e-6)
  gem = np.mean(np.maximum(x.astype(np.float64), 1e-6) ** 3, axis=(1, 2)) ** (1 / 3)
  np.testing.assert_allclose(GeneralizedMeanPool(p=3.0).apply({}, x), gem, rtol=1e-5)
  # p = 1 on non-negative input is the average; p -> large approaches the maximum.
  relu_x = np.maximum(x, 0) + 1e-3
  np.testing.assert_allclose(GeneralizedMeanPool(p=1.0).apply({}, relu_x),
                             relu_x.mean(axis=(1, 2)), rtol=1e-5)
  # AGW's GeM ('add'): 1e-12 added to the mean of x^p; a channel that is zero everywhere pools
  # to 1e-4 there and to the clamp's 1e-6 in FastReID's ('auto' without a release: 'clamp').
  relu = np.maximum(x, 0)
  relu[..., 0] = 0
  cfg = {'gem_p': 3.0, 'gem_learnable': False, 'gem_eps_mode': 'add'}
  want = (np.mean(relu.astype(np.float64) ** 3, axis=(1, 2)) + 1e-12) ** (1 / 3)
  np.testing.assert_allclose(POOLINGS.get('gem')(cfg).apply({}, relu), want, rtol=1e-5)
  np.testing.assert_allclose(want[:, 0], 1e-4, rtol=1e-6)
  for mode, release in (('auto', ''), ('clamp', 'agw')):
    pooled = POOLINGS.get('gem')({**cfg, 'gem_eps_mode': mode}, release=release).apply({}, relu)
    np.testing.assert_allclose(pooled[:, 0], 1e-6, rtol=1e-5)
  pooled = POOLINGS.get('gem')({**cfg, 'gem_eps_mode': 'auto'}, release='agw').apply({}, relu)
  np.testing.assert_allclose(pooled, want, rtol=1e-5)


def test_learnable_gem_has_parameter_p_and_gradient():
  x = np.abs(np.random.default_rng(0).normal(size=(3, 4, 2, 5))).astype(np.float32)
  pool = POOLINGS.get('gem')({'gem_p': 3.0, 'gem_learnable': True})
  params = pool.init(KEY, x)['params']
  np.testing.assert_array_equal(params['p'], [3.0])
  params = {'p': jnp.array([2.5])}
  expected = np.mean(x.astype(np.float64) ** 2.5, axis=(1, 2)) ** (1 / 2.5)
  np.testing.assert_allclose(pool.apply({'params': params}, x), expected, rtol=1e-5)
  grad = jax.grad(lambda p: pool.apply({'params': p}, x).sum())(params)['p']
  assert np.isfinite(grad).all() and grad[0] != 0
  assert 'params' not in GeneralizedMeanPool(p=3.0).init(KEY, x)  # fixed p: a constant


# ----------------------------------------------------------------------------- heads


def test_bnneck_head_train_and_eval_equal_numpy_batch_norm():
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(6, 4)) * 2 + 1).astype(np.float32)
  head = EmbeddingHead(num_classes=5, neck_feat='before')
  variables = random_variables(head, x, train=True)
  assert set(variables['params']['bnneck']) == {'scale'}  # bias frozen at zero: absent
  assert set(variables['params']['classifier']) == {'kernel'}  # no classifier bias
  scale = np.asarray(variables['params']['bnneck']['scale'], np.float64)
  old = jax.tree.map(np.asarray, variables['batch_stats']['bnneck'])

  out, updates = head.apply(variables, x, train=True, mutable=['batch_stats'])
  x64 = x.astype(np.float64)
  mean, var = x64.mean(axis=0), x64.var(axis=0)
  embedding = (x64 - mean) / np.sqrt(var + 1e-5) * scale
  np.testing.assert_array_equal(out['features'], x)  # 'before': the pooled feature itself
  np.testing.assert_allclose(out['embedding'], embedding, rtol=1e-5, atol=1e-6)
  kernel = np.asarray(variables['params']['classifier']['kernel'])
  np.testing.assert_allclose(out['logits'], embedding @ kernel, rtol=1e-5, atol=1e-6)
  running_mean = 0.9 * old['mean'] + 0.1 * mean  # PyTorch momentum 0.1, biased batch variance
  running_var = 0.9 * old['var'] + 0.1 * var
  np.testing.assert_allclose(updates['batch_stats']['bnneck']['mean'], running_mean, rtol=1e-5)
  np.testing.assert_allclose(updates['batch_stats']['bnneck']['var'], running_var, rtol=1e-5)

  x_test = rng.normal(size=(3, 4)).astype(np.float32)
  out = head.apply({'params': variables['params'], **updates}, x_test, train=False)
  assert set(out) == {'embedding'}
  expected = (x_test - running_mean) / np.sqrt(running_var + 1e-5) * scale
  np.testing.assert_allclose(out['embedding'], expected, rtol=1e-5, atol=1e-6)


def test_bnneck_head_neck_feat_after_and_reduction():
  x = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
  head = HEADS.get('bnneck')({'neck_feat': 'after', 'embedding_dim': 4}, 3)
  variables = random_variables(head, x, train=True)
  kernel = np.asarray(variables['params']['reduction']['kernel'])
  assert kernel.shape == (8, 4) and set(variables['params']['reduction']) == {'kernel'}
  out, _ = head.apply(variables, x, train=True, mutable=['batch_stats'])
  reduced = x.astype(np.float64) @ kernel
  expected = ((reduced - reduced.mean(0)) / np.sqrt(reduced.var(0) + 1e-5)
              * np.asarray(variables['params']['bnneck']['scale']))
  np.testing.assert_allclose(out['embedding'], expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(out['features'], out['embedding'])
  assert out['logits'].shape == (6, 3)
  before = HEADS.get('bnneck')({'neck_feat': 'before', 'embedding_dim': 4}, 3)
  out, _ = before.apply(variables, x, train=True, mutable=['batch_stats'])
  np.testing.assert_array_equal(out['features'], x)  # FastReID: the feature before reduction


def test_head_parameters_do_not_depend_on_init_mode():
  x = jax.ShapeDtypeStruct((2, 8), jnp.float32)
  head = EmbeddingHead(num_classes=3)
  shapes = lambda train: jax.tree.map(jnp.shape, jax.eval_shape(
      lambda x: head.init(KEY, x, train=train), x))
  assert shapes(True) == shapes(False)
  assert shapes(False)['params']['classifier']['kernel'] == (8, 3)


def test_linear_head_has_no_neck():
  x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
  head = HEADS.get('linear')({'neck_feat': 'before', 'embedding_dim': 0}, 3)
  variables = random_variables(head, x, train=True)
  assert set(variables) == {'params'} and set(variables['params']) == {'classifier'}
  out = head.apply(variables, x, train=True)
  np.testing.assert_array_equal(out['embedding'], x)
  np.testing.assert_array_equal(out['features'], x)
  kernel = np.asarray(variables['params']['classifier']['kernel'])
  np.testing.assert_allclose(out['logits'], x @ kernel, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(head.apply(variables, x, train=False)['embedding'], x)


def test_classifier_init_is_normal_std_001():
  head = EmbeddingHead(num_classes=1000)
  kernel = head.init(KEY, jnp.zeros((2, 256)), train=True)['params']['classifier']['kernel']
  assert abs(float(jnp.std(kernel)) / 0.01 - 1) < 0.02


def test_invalid_neck_feat_is_rejected():
  head = EmbeddingHead(num_classes=3, neck_feat='middle')
  with pytest.raises(ValueError, match='fix config.model.head.neck_feat'):
    jax.eval_shape(lambda: head.init(KEY, jnp.zeros((2, 4)), train=True))


# ----------------------------------------------------------------------------- baseline


class _IdentityBackbone(nn.Module):
  """Returns its (preprocessed) input as the feature map, to observe the preprocessing."""

  @nn.compact
  def __call__(self, x, train):
    return x


def test_baseline_preprocesses_with_pixel_mean_and_std():
  images = np.random.default_rng(0).integers(0, 256, size=(2, 4, 2, 3)).astype(np.uint8)
  head = HEADS.get('linear')({'neck_feat': 'before', 'embedding_dim': 0}, 3)
  for mean, std in [((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
                    ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0))]:
    model = Baseline(_IdentityBackbone(), GlobalAvgPool(), head, pixel_mean=mean, pixel_std=std)
    variables = random_variables(model, images, train=False)
    expected = ((images.astype(np.float64) - mean) / std).mean(axis=(1, 2))
    out = model.apply(variables, images, train=False)['embedding']
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.apply(variables, images.astype(np.float32), train=False)
                               ['embedding'], out, rtol=1e-6)


def test_baseline_outputs_and_shapes():
  model = build_model(tiny_model_config('resnet18', width=8), num_classes=7)
  images = jax.ShapeDtypeStruct((4, 32, 16, 3), jnp.uint8)
  variables = jax.eval_shape(lambda x: model.init(KEY, x, train=True), images)
  out, updates = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']), variables, images)
  assert set(out) == {'logits', 'features', 'embedding'}
  assert out['logits'].shape == (4, 7) and out['features'].shape == (4, 64)
  stats = {'batch_stats': variables['batch_stats']}
  assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, stats)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
  assert set(out) == {'embedding'} and out['embedding'].shape == (4, 64)
  assert out['embedding'].dtype == jnp.float32


def test_baseline_rejects_nchw_input():
  model = build_model(tiny_model_config(), num_classes=3)
  with pytest.raises(ValueError, match=r'\(NHWC\), got \(2, 3, 32, 16\)'):
    jax.eval_shape(lambda: model.init(KEY, jnp.zeros((2, 3, 32, 16)), train=False))


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  cfg = tiny_model_config('resnet18', width=8)
  cfg.pooling.name = 'gem'
  images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 16, 3)).astype(np.uint8)
  model32 = build_model(cfg, num_classes=5)
  cfg.dtype = 'bfloat16'
  model16 = build_model(cfg, num_classes=5)
  shapes = jax.eval_shape(lambda: model16.init(KEY, images, train=True))
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(shapes))
  out, updates = jax.eval_shape(
      lambda v: model16.apply(v, images, train=True, mutable=['batch_stats']), shapes)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves((out, updates)))
  variables = random_variables(model32, images, train=False)
  embed = lambda model: jax.jit(model.apply, static_argnames='train')(
      variables, images, train=False)['embedding']
  eval16, eval32 = embed(model16), embed(model32)
  assert eval16.dtype == jnp.float32
  # The same function, computed in bfloat16 (about 3 significant digits per operation).
  assert not np.array_equal(eval16, eval32)
  np.testing.assert_allclose(eval16, eval32, rtol=0.03, atol=0.03 * float(jnp.abs(eval32).max()))


def test_build_model_accepts_plain_dicts():
  cfg = tiny_model_config().to_dict()
  model = build_model(cfg, num_classes=3)
  shapes = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((1, 32, 16, 3)), train=True))
  assert shapes['params']['head']['classifier']['kernel'].shape == (64, 3)


def test_input_norm_fixed_and_per_image_equal_numpy():
  from jreid.models.baseline import normalize_input
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 6, 4, 3)).astype(np.uint8)
  mean, std = (120.0, 110.0, 100.0), (50.0, 60.0, 70.0)
  np.testing.assert_allclose(normalize_input(images, mean, std, 'fixed'),
                             (images - np.array(mean)) / np.array(std), rtol=1e-6)
  x = images.astype(np.float64)
  mu = x.mean(axis=(1, 2), keepdims=True)
  sigma = x.std(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(normalize_input(images, mean, std, 'per_image'), (x - mu) / sigma,
                             rtol=1e-5, atol=1e-5)
  # A camera's per-channel gain and offset (colour cast, haze) leaves the per-image input as is.
  cast = x * np.array([1.4, 0.9, 0.6]) + np.array([10.0, 30.0, -5.0])
  np.testing.assert_allclose(normalize_input(cast, mean, std, 'per_image'),
                             normalize_input(images, mean, std, 'per_image'), atol=1e-4)
  with pytest.raises(ValueError, match='config.model.input_norm'):
    normalize_input(images, mean, std, 'grey')


def test_baseline_reads_input_norm_from_the_config():
  """Baseline feeds its backbone `normalize_input(..., cfg.input_norm)` (tested above)."""
  cfg = default_model_config()
  cfg.backbone.name, cfg.backbone.width = 'resnet18', 8
  assert build_model(cfg, num_classes=3).input_norm == 'fixed'
  cfg.input_norm = 'per_image'
  assert build_model(cfg, num_classes=3).input_norm == 'per_image'
  cfg.input_norm = 'grey'
  with pytest.raises(ValueError, match='input_norm'):
    build_model(cfg, num_classes=3)
