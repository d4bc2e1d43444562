"""Tests for the QAConv network, matcher, all-pairs scoring and losses against numpy references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jreid.losses import qaconv as qloss
from jreid.models import build_model
from jreid.models.qaconv import (QAConvMatcher, QAConvNet, pairwise_scores, qaconv_batch_scores,
                                 qaconv_model_config, truncate_backbone)
from jreid.models.resnet import BasicBlock, ResNet

HW, C = 6, 8  # 3 x 2 locations, 8 channels


def unit_maps(rng, n, hw=HW, c=C):
  x = rng.standard_normal((n, hw, c)).astype(np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- numpy references


def np_batchnorm1(x, params, stats, train):
  """PyTorch BatchNorm1d(1) over every element; returns (y, new_stats)."""
  if train:
    mean, var = x.mean(), x.var()
    n = x.size
    new = {'mean': 0.9 * stats['mean'] + 0.1 * mean,
           'var': 0.9 * stats['var'] + 0.1 * var * n / (n - 1)}
  else:
    mean, var = stats['mean'][0], stats['var'][0]
    new = stats
  y = (x - mean) / np.sqrt(var + 1e-5) * params['scale'][0] + params['bias'][0]
  return y, new


def np_qaconv(q, g, variables, train=False):
  """The reference QAConv forward, step by step (PyTorch layout [p, c, hw] -> [p, g])."""
  params = jax.tree.map(lambda a: np.asarray(a, np.float64), variables['params'])
  stats = jax.tree.map(lambda a: np.asarray(a, np.float64), variables['batch_stats'])
  q, g = np.asarray(q, np.float64), np.asarray(g, np.float64)
  p_size, g_size, hw = q.shape[0], g.shape[0], q.shape[1]
  prob = q.transpose(0, 2, 1)  # [p, c, s]
  gal = g.transpose(0, 2, 1)  # [g, c, r]
  score = np.einsum('pcs,gcr->pgrs', prob, gal)
  score = np.concatenate([score.max(axis=2), score.max(axis=3)], axis=-1)  # [p, g, 2hw]
  score = score.reshape(-1, 1, hw)
  score, bn_stats = np_batchnorm1(score, params['bn'], stats['bn'], train)
  score = score.reshape(-1, hw) @ params['fc']['kernel'] + params['fc']['bias']  # [2pg, 1]
  score = score.reshape(-1, 2).sum(axis=1, keepdims=True)
  score, logit_stats = np_batchnorm1(score, params['logit_bn'], stats['logit_bn'], train)
  return score.reshape(p_size, g_size), {'bn': bn_stats, 'logit_bn': logit_stats}


def trained_looking_variables(rng, hw=HW):
  """Matcher variables with non-default parameters and statistics (negative scale included)."""
  variables = QAConvMatcher(hw).init(jax.random.key(0), jnp.zeros((1, hw, C)),
                                     jnp.zeros((1, hw, C)), train=False)
  assert np.allclose(variables['params']['fc']['kernel'], 1.0 / hw)
  assert np.all(variables['params']['fc']['bias'] == 0)
  f = lambda *s: jnp.asarray(rng.standard_normal(s).astype(np.float32))
  return {
      'params': {
          'bn': {'scale': jnp.array([1.7]), 'bias': jnp.array([-0.3])},
          'fc': {'kernel': f(hw, 1) * 0.5 + 1.0 / hw, 'bias': jnp.array([0.2])},
          'logit_bn': {'scale': jnp.array([-2.5]), 'bias': jnp.array([0.4])},
      },
      'batch_stats': {
          'bn': {'mean': jnp.array([0.35]), 'var': jnp.array([0.02])},
          'logit_bn': {'mean': jnp.array([0.8]), 'var': jnp.array([0.6])},
      },
  }


# ----------------------------------------------------------------------------- matcher


def test_matcher_eval_equals_numpy_reference():
  rng = np.random.default_rng(0)
  variables = trained_looking_variables(rng)
  q, g = unit_maps(rng, 3), unit_maps(rng, 5)
  got = QAConvMatcher(HW).apply(variables, q, g, train=False)
  want, _ = np_qaconv(q, g, variables)
  assert got.shape == (3, 5)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # [n, h, w, c] maps are the same as [n, hw, c].
  got4 = QAConvMatcher(HW).apply(variables, q.reshape(3, 3, 2, C), g.reshape(5, 3, 2, C),
                                 train=False)
  np.testing.assert_allclose(got4, got, rtol=1e-6, atol=1e-6)


def test_matcher_is_symmetric_in_eval_mode():
  """Both directions share the Linear weight, so swapping query and gallery transposes."""
  rng = np.random.default_rng(1)
  variables = trained_looking_variables(rng)
  q, g = unit_maps(rng, 2), unit_maps(rng, 4)
  forward = QAConvMatcher(HW).apply(variables, q, g, train=False)
  backward = QAConvMatcher(HW).apply(variables, g, q, train=False)
  np.testing.assert_allclose(forward, backward.T, rtol=1e-5, atol=1e-5)


def test_batch_scores_train_mode_updates_stats_like_pytorch():
  rng = np.random.default_rng(2)
  variables = trained_looking_variables(rng)
  maps = unit_maps(rng, 6)
  scores, stats = jax.jit(
      lambda v, m: qaconv_batch_scores(QAConvMatcher(HW), v, m, train=True))(variables, maps)
  want, want_stats = np_qaconv(maps, maps, variables, train=True)
  np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)
  for name in ('bn', 'logit_bn'):
    for key in ('mean', 'var'):
      np.testing.assert_allclose(stats[name][key], want_stats[name][key], rtol=1e-5, atol=1e-7)
  # Train-mode logits are batch-normalised: mean bias, std |scale| (biased variance).
  np.testing.assert_allclose(np.mean(scores), 0.4, atol=1e-5)
  np.testing.assert_allclose(np.std(scores), 2.5, rtol=1e-3)
  eval_scores, same = qaconv_batch_scores(QAConvMatcher(HW), variables, maps, train=False)
  np.testing.assert_allclose(eval_scores, np_qaconv(maps, maps, variables)[0], rtol=1e-5,
                             atol=1e-5)
  assert same is variables['batch_stats']


# ----------------------------------------------------------------------------- all-pairs scoring


@pytest.mark.parametrize('method', ['fused', 'direct'])
def test_pairwise_scores_equal_reference_in_blocks(method):
  rng = np.random.default_rng(3)
  variables = trained_looking_variables(rng)
  q, g = unit_maps(rng, 7), unit_maps(rng, 13)  # not multiples of the blocks: padding
  want, _ = np_qaconv(q, g, variables)
  got = pairwise_scores(variables, q, g, query_block=4, gallery_block=8, method=method,
                        query_chunk=2, gallery_chunk=4)
  assert got.shape == (7, 13) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fused_equals_direct_with_default_chunks_and_bf16_close():
  rng = np.random.default_rng(4)
  variables = trained_looking_variables(rng)
  q, g = unit_maps(rng, 5), unit_maps(rng, 40)
  direct = pairwise_scores(variables, q, g, query_block=8, gallery_block=32, method='direct')
  fused = pairwise_scores(variables, q, g, query_block=8, gallery_block=32)
  np.testing.assert_allclose(fused, direct, rtol=1e-5, atol=1e-5)
  # bfloat16 inputs, float32 accumulation: equal to the reference on bf16-rounded maps...
  round_bf16 = lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
  for method in ('fused', 'direct'):
    bf16 = pairwise_scores(variables, q, g, query_block=8, gallery_block=32,
                           dtype=jnp.bfloat16, method=method)
    want, _ = np_qaconv(round_bf16(q), round_bf16(g), variables)
    np.testing.assert_allclose(bf16, want, rtol=1e-4, atol=1e-4)
    # ... and close to float32 (the rounding of the maps is the only difference).
    np.testing.assert_allclose(bf16, direct, atol=0.05 * np.abs(direct).max())


def test_pairwise_scores_rejects_bad_arguments():
  rng = np.random.default_rng(5)
  variables = trained_looking_variables(rng)
  q = unit_maps(rng, 2)
  with pytest.raises(ValueError, match='h\\*w=6'):
    pairwise_scores(variables, unit_maps(rng, 2, hw=4), q)
  with pytest.raises(ValueError, match='must divide'):
    pairwise_scores(variables, q, q, query_block=4, query_chunk=3)
  with pytest.raises(ValueError, match="'fused' or 'direct'"):
    pairwise_scores(variables, q, q, method='fast')
  assert pairwise_scores(variables, q[:0], q).shape == (0, 2)


# ----------------------------------------------------------------------------- losses


def np_hardest(scores, labels):
  """Per anchor: min score over other same-label items, max over other labels (+-1e15 if none)."""
  b = len(labels)
  min_pos, max_neg = np.full(b, 1e15), np.full(b, -1e15)
  for a in range(b):
    for j in range(b):
      if labels[j] == labels[a] and j != a:
        min_pos[a] = min(min_pos[a], scores[a, j])
      elif labels[j] != labels[a]:
        max_neg[a] = max(max_neg[a], scores[a, j])
  return min_pos, max_neg


def np_finite_mean(values):
  finite = np.isfinite(values)
  return values[finite].mean() if finite.any() else 0.0


LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 4])  # 3 and 4 have no positive


def test_qaconv_triplet_loss_equals_numpy():
  rng = np.random.default_rng(6)
  scores = rng.normal(0, 10, (8, 8)).astype(np.float32)
  min_pos, max_neg = np_hardest(scores, LABELS)
  per_anchor = np.maximum(0.0, 16.0 - (min_pos - max_neg))
  assert per_anchor[:6].min() >= 0 and per_anchor[:6].max() > 0
  np.testing.assert_allclose(per_anchor[6:], 0.0)  # no positive: hinge 0, still counted
  np.testing.assert_allclose(qloss.qaconv_triplet_loss(scores, LABELS), per_anchor.mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(qloss.qaconv_triplet_loss(scores, LABELS, margin=4.0),
                             np.maximum(0.0, 4.0 - (min_pos - max_neg)).mean(), rtol=1e-5)
  metrics = qloss.qaconv_triplet_metrics(scores, LABELS)
  np.testing.assert_allclose(metrics['accuracy'], np.mean(min_pos >= max_neg))
  assert float(metrics['finite_fraction']) == 1.0


def test_qaconv_triplet_loss_drops_non_finite_anchors():
  rng = np.random.default_rng(7)
  scores = rng.normal(0, 10, (8, 8)).astype(np.float32)
  scores[2, 5] = np.inf  # anchor 2: inf negative -> inf loss, dropped
  scores[4, 0] = np.nan  # anchor 4: nan -> dropped
  min_pos, max_neg = np_hardest(np.where(np.isfinite(scores), scores, 0), LABELS)
  per_anchor = np.maximum(0.0, 16.0 - (min_pos - max_neg))
  keep = np.array([0, 1, 3, 5, 6, 7])
  got = qloss.qaconv_triplet_loss(scores, LABELS)
  np.testing.assert_allclose(got, per_anchor[keep].mean(), rtol=1e-5)
  metrics = qloss.qaconv_triplet_metrics(scores, LABELS)
  np.testing.assert_allclose(metrics['finite_fraction'], 6 / 8)
  all_nan = np.full((8, 8), np.nan, np.float32)
  assert float(qloss.qaconv_triplet_loss(all_nan, LABELS)) == 0.0


def np_bce(x, y):
  """-y log(sigmoid(x)) - (1 - y) log(1 - sigmoid(x)), written with log(1 + e^t) = logaddexp(0, t)."""
  return y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x)


def test_pairwise_matching_loss_equals_numpy():
  rng = np.random.default_rng(8)
  scores = rng.normal(0, 3, (8, 8))
  targets = (LABELS[:, None] == LABELS[None, :]).astype(np.float64)  # diagonal included
  want = np_bce(scores, targets).sum(axis=1).mean()
  np.testing.assert_allclose(qloss.pairwise_matching_loss(scores.astype(np.float32), LABELS),
                             want, rtol=1e-5)
  _, acc = qloss.pairwise_matching_terms(scores, LABELS)
  min_pos, max_neg = np_hardest(scores, LABELS)
  np.testing.assert_array_equal(acc, (min_pos > max_neg).astype(np.float32))
  # Stable for large logits (naive log-sigmoid would overflow).
  assert np.isfinite(float(qloss.pairwise_matching_loss(scores * 1e3, LABELS)))


def test_class_memory_loss_and_update():
  rng = np.random.default_rng(9)
  num_classes = 5
  memory, valid = qloss.init_class_memory(num_classes, HW, C)
  assert memory.shape == (5, HW, C) and float(valid.sum()) == 0
  maps = unit_maps(rng, 3)
  labels = np.array([4, 1, 2])
  memory, valid = qloss.class_memory_update(memory, valid, maps, labels)
  np.testing.assert_array_equal(valid, [0, 1, 1, 0, 1])
  np.testing.assert_array_equal(memory[4], maps[0])
  np.testing.assert_array_equal(memory[0], 0)
  # Scores of a new batch against the memory through the matcher, focal-weighted BCE.
  variables = trained_looking_variables(rng)
  batch, batch_labels = unit_maps(rng, 4), np.array([1, 2, 0, 4])
  scores = QAConvMatcher(HW).apply(variables, batch, jax.lax.stop_gradient(memory), train=False)
  s = np.asarray(scores, np.float64)
  onehot = np.eye(num_classes)[batch_labels]
  prob = 1 / (1 + np.exp(-s))
  weight = np.where(onehot > 0, 1 - prob, prob) ** 2
  want = (np_bce(s, onehot) * weight * np.asarray(valid)[None]).sum(axis=1).mean()
  np.testing.assert_allclose(qloss.class_memory_loss(scores, batch_labels, valid), want,
                             rtol=1e-5)
  _, acc = qloss.class_memory_terms(scores, batch_labels, valid)
  np.testing.assert_array_equal(acc, (s.argmax(axis=1) == batch_labels).astype(np.float32))


def test_triplet_gradient_flows_to_maps_and_matcher():
  rng = np.random.default_rng(10)
  variables = trained_looking_variables(rng)
  maps = jnp.asarray(unit_maps(rng, 8))
  matcher = QAConvMatcher(HW)

  def loss_fn(params, m):
    v = {'params': params, 'batch_stats': variables['batch_stats']}
    scores, _ = qaconv_batch_scores(matcher, v, m, train=True)
    return qloss.qaconv_triplet_loss(scores, LABELS)

  g_params, g_maps = jax.grad(loss_fn, argnums=(0, 1))(variables['params'], maps)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves((g_params, g_maps)))
  assert float(jnp.abs(g_maps).sum()) > 0 and float(jnp.abs(g_params['fc']['kernel']).sum()) > 0


# ----------------------------------------------------------------------------- network


def tiny_qaconv(neck_bn=True):
  cfg = qaconv_model_config()
  cfg.backbone.name = 'resnet18'  # The trunk code is shared with resnet50; 18 compiles faster.
  cfg.backbone.width = 8
  cfg.qaconv.neck = 16
  cfg.qaconv.neck_bn = neck_bn
  return build_model(cfg, num_classes=3)


def test_qaconv_net_shapes_norm_and_frozen_backbone_bn():
  # One block per stage keeps the compile short; build_model's path is checked below.
  model = QAConvNet(truncate_backbone(ResNet(BasicBlock, (1, 1, 1, 1), width=8), 'layer3'),
                    neck=16)
  images = jnp.asarray(np.random.default_rng(11).integers(0, 256, (2, 64, 32, 3), np.uint8))

  @jax.jit
  def run(x):
    variables = model.init(jax.random.key(1), x, train=True)
    out, state = model.apply(variables, x, train=True, mutable=['batch_stats', 'intermediates'],
                             capture_intermediates=lambda m, _: m.name == 'backbone')
    trunk = state['intermediates']['backbone']['__call__'][0]
    return variables, out['feature_map'], state['batch_stats'], trunk

  variables, fmap, new_stats, trunk = run(images)
  params, stats = variables['params'], variables['batch_stats']
  assert 'layer3_0' in params['backbone'] and 'layer4_0' not in params['backbone']
  assert set(params['neck_conv']) == {'kernel'} and 'neck_bn' in params
  assert params['neck_conv']['kernel'].shape == (3, 3, 32, 16)  # layer3: 4 * width
  assert fmap.shape == (2, 4, 2, 16) and fmap.dtype == jnp.float32  # stride 16
  np.testing.assert_allclose(np.linalg.norm(fmap, axis=-1), 1.0, rtol=1e-5)
  # Backbone (and neck) BatchNorm statistics stay as they were in training mode.
  jax.tree.map(np.testing.assert_array_equal, new_stats, stats)
  # By hand from the trunk output: 3x3 neck conv, frozen BN, L2 norm.
  kernel = np.asarray(params['neck_conv']['kernel'], np.float64)
  padded = np.pad(np.asarray(trunk, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = sum(padded[:, i:i + 4, j:j + 2] @ kernel[i, j] for i in range(3) for j in range(3))
  bn, bn_stats = params['neck_bn'], stats['neck_bn']
  y = (y - bn_stats['mean']) / np.sqrt(bn_stats['var'] + 1e-5) * bn['scale'] + bn['bias']
  y = y / np.linalg.norm(y, axis=-1, keepdims=True)
  np.testing.assert_allclose(fmap, y, rtol=1e-4, atol=1e-5)


class PassthroughTrunk(nn.Module):
  """A stand-in backbone that returns its input and insists on inference mode."""

  @nn.compact
  def __call__(self, x, train):
    assert train is False, 'QAConvNet must run its backbone with frozen BatchNorm'
    return x


def test_qaconv_net_scales_input_to_unit_range_without_mean_std():
  model = QAConvNet(PassthroughTrunk(), neck=4, neck_bn=False)
  images = np.random.default_rng(12).integers(0, 256, (2, 5, 3, 3), np.uint8)
  variables = model.init(jax.random.key(3), images, train=True)
  fmap = model.apply(variables, images, train=True)['feature_map']
  kernel, bias = (np.asarray(variables['params']['neck_conv'][k], np.float64)
                  for k in ('kernel', 'bias'))
  padded = np.pad(images / 255.0, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = sum(padded[:, i:i + 5, j:j + 3] @ kernel[i, j] for i in range(3) for j in range(3)) + bias
  np.testing.assert_allclose(fmap, y / np.linalg.norm(y, axis=-1, keepdims=True), rtol=1e-4,
                             atol=1e-5)


def test_qaconv_net_neck_with_bias_and_config_errors():
  model = tiny_qaconv(neck_bn=False)
  images = jnp.zeros((1, 32, 16, 3), jnp.uint8)
  variables = jax.eval_shape(model.init, jax.random.key(2), images)
  params = variables['params']
  assert set(params['neck_conv']) == {'kernel', 'bias'} and 'neck_bn' not in params
  assert 'layer3_1' in params['backbone'] and 'layer4_0' not in params['backbone']
  assert params['neck_conv']['kernel'].shape == (3, 3, 32, 16)  # resnet18 layer3: 4 * width
  out = jax.eval_shape(lambda v: model.apply(v, images), variables)
  assert out['feature_map'].shape == (1, 2, 1, 16)
  cfg = qaconv_model_config()
  cfg.qaconv.final_layer = 'layer5'
  with pytest.raises(ValueError, match='final_layer'):
    build_model(cfg, 3)
  cfg = qaconv_model_config()
  cfg.backbone.name = 'resnet5O'
  with pytest.raises(ValueError, match='config.model.backbone.name'):
    build_model(cfg, 3)
