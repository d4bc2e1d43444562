"""Tests for the pooling, head, classifier-layer and loss zoo against plain numpy references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jreid import objectives
from jreid.config_defaults import method_config
from jreid.losses import (cross_entropy, focal_loss, pairwise_circle_loss,
                          pairwise_cosface_loss, triplet_loss)
from jreid.models import HEADS, POOLINGS, build_model, default_model_config
from jreid.models import classifiers
from jreid.models.baseline import Baseline
from jreid.models.classifiers import CLS_LAYERS, Classifier
from jreid.models.heads import EmbeddingHead, ReductionHead
from jreid.models.pooling import AttentionPool, GlobalAvgPool

KEY = jax.random.key(0)

# ----------------------------------------------------------------------------- numpy references


def softmax_ref(v):
  e = np.exp(v - v.max())
  return e / e.sum()


def log_softmax_ref(v):
  return v - v.max() - np.log(np.sum(np.exp(v - v.max())))


def logsumexp_ref(values):
  """log sum exp over a list; -inf for an empty list."""
  if not values:
    return -np.inf
  top = max(values)
  return top + np.log(sum(np.exp(v - top) for v in values))


def softplus_ref(v):
  return max(v, 0.0) + np.log1p(np.exp(-abs(v)))


def unit(v):
  return v / np.linalg.norm(v)


def batch_norm_train_ref(x, scale):
  """Training BatchNorm without bias on [B, D]: batch statistics, biased variance."""
  return (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * scale


def attention_pool_ref(x, kernel):
  """Eq. 4: per output map k, w_k = softmax over positions of x . kernel[:, k]; sum_hw w x."""
  batch, height, width, channels = x.shape
  out = np.zeros((batch, channels))
  for b in range(batch):
    positions = x[b].reshape(height * width, channels)
    scores = positions @ kernel  # [hw, C] or [hw, 1]
    for c in range(channels):
      w = softmax_ref(scores[:, c if kernel.shape[1] > 1 else 0])
      out[b, c] = sum(w[p] * positions[p, c] for p in range(height * width))
  return out


def margin_logits_ref(x, kernel, labels, layer, s, m):
  """FastReID any_softmax on one sample at a time; returns (cls_outputs, s * cos)."""
  num_classes = kernel.shape[1]
  out = np.zeros((len(x), num_classes))
  cos = np.zeros((len(x), num_classes))
  for i in range(len(x)):
    for j in range(num_classes):
      c = float(unit(x[i]) @ unit(kernel[:, j]))
      cos[i, j] = c
      target = labels[i] == j
      if layer == 'cosface':
        out[i, j] = s * (c - m) if target else s * c
      elif layer == 'arcface':
        out[i, j] = s * np.cos(np.arccos(c) + m) if target else s * c
      elif layer == 'circle':
        if target:
          out[i, j] = s * max(1 + m - c, 0) * (c - (1 - m))
        else:
          out[i, j] = s * max(c + m, 0) * (c - m)
  return out, s * cos


def cross_entropy_adaptive_ref(logits, labels, alpha):
  """FastReID cross_entropy_loss with eps < 0: per-sample e = alpha * p(label)."""
  logits = np.asarray(logits, np.float64)
  num_samples, num_classes = logits.shape
  losses = []
  for i in range(num_samples):
    log_probs = log_softmax_ref(logits[i])
    e = alpha * np.exp(log_probs[labels[i]])
    loss = 0.0
    for c in range(num_classes):
      target = 1 - e if c == labels[i] else e / (num_classes - 1)
      loss -= target * log_probs[c]
    losses.append(loss)
  return sum(losses) / max(sum(loss != 0 for loss in losses), 1)


def focal_ref(logits, labels, alpha, gamma):
  logits = np.asarray(logits, np.float64)
  total = 0.0
  for i in range(len(logits)):
    p = softmax_ref(logits[i])[labels[i]]
    total += -alpha * (1 - p) ** gamma * np.log(p)
  return total / len(logits)


def pairwise_ref(x, labels, margin, gamma, kind, alpha_sims=None):
  """Pair-wise circle / cosface loss with loops. alpha_sims: similarities the circle weights are
  computed from (default: the current ones), to differentiate with the weights held fixed."""
  x = np.asarray(x, np.float64)
  n = len(x)
  sims = [[float(unit(x[i]) @ unit(x[j])) for j in range(n)] for i in range(n)]
  alpha_sims = sims if alpha_sims is None else alpha_sims
  losses = []
  for i in range(n):
    pos, neg = [], []
    for j in range(n):
      s, a = sims[i][j], alpha_sims[i][j]
      if labels[j] == labels[i] and j != i:
        pos.append(-gamma * max(1 + margin - a, 0) * (s - (1 - margin)) if kind == 'circle'
                   else -gamma * s)
      elif labels[j] != labels[i]:
        neg.append(gamma * max(a + margin, 0) * (s - margin) if kind == 'circle'
                   else gamma * (s + margin))
    total = logsumexp_ref(pos) + logsumexp_ref(neg)
    losses.append(0.0 if total == -np.inf else softplus_ref(total))
  return np.mean(losses)


def random_batch(seed, num_ids=3, per_id=3, dim=6):
  rng = np.random.default_rng(seed)
  labels = np.repeat(rng.permutation(50)[:num_ids], per_id).astype(np.int32)
  return rng.normal(size=(num_ids * per_id, dim)).astype(np.float32), labels


# ----------------------------------------------------------------------------- pooling


def test_pooling_registry_holds_every_pooling():
  assert set(POOLINGS.names()) >= {'avg', 'max', 'gem', 'attention', 'avgmax', 'clipavg'}


def test_avgmax_and_clipavg_equal_numpy_reference():
  x = np.random.default_rng(0).normal(0.5, 1.0, size=(3, 4, 2, 6)).astype(np.float32)
  avg = x.astype(np.float64).mean(axis=(1, 2))
  avgmax = POOLINGS.get('avgmax')({})
  np.testing.assert_allclose(avgmax.apply({}, x), avg + x.max(axis=(1, 2)), rtol=1e-6)
  clipped = POOLINGS.get('clipavg')({}).apply({}, x)
  np.testing.assert_allclose(clipped, np.clip(avg, 0, 1), rtol=1e-6)
  assert (avg < 0).any() and (avg > 1).any()  # both clamps are exercised


@pytest.mark.parametrize('per_channel', [True, False])
def test_attention_pool_equals_numpy_reference(per_channel):
  x = np.random.default_rng(1).normal(size=(2, 3, 2, 4)).astype(np.float32)
  pool = POOLINGS.get('attention')({'attention_per_channel': per_channel})
  variables = pool.init(KEY, x)
  kernel = variables['params']['attention']['kernel']
  assert kernel.shape == (1, 1, 4, 4 if per_channel else 1)
  np.testing.assert_array_equal(kernel, 0)  # untrained: uniform weights, i.e. average pooling
  np.testing.assert_allclose(pool.apply(variables, x), x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)

  kernel = np.random.default_rng(2).normal(size=kernel.shape).astype(np.float32)
  params = {'params': {'attention': {'kernel': jnp.asarray(kernel)}}}
  expected = attention_pool_ref(x.astype(np.float64), kernel[0, 0].astype(np.float64))
  np.testing.assert_allclose(pool.apply(params, x), expected, rtol=1e-5, atol=1e-6)
  grad = jax.grad(lambda p: pool.apply(p, x).sum())(params)
  assert np.abs(grad['params']['attention']['kernel']).sum() > 0


def test_attention_pool_in_a_model_config():
  cfg = default_model_config()
  cfg.pooling.name = 'attention'
  cfg.pooling.attention_per_channel = False
  pool = build_model(cfg, 3).pooling
  assert isinstance(pool, AttentionPool) and not pool.per_channel


def test_learnable_gem_from_config_keeps_fastreid_defaults():
  cfg = default_model_config()
  assert cfg.pooling.gem_p == 3.0 and not cfg.pooling.gem_learnable
  cfg.pooling.name = 'gem'
  cfg.pooling.gem_learnable = True
  x = np.abs(np.random.default_rng(0).normal(size=(2, 2, 2, 3))).astype(np.float32) + 0.1
  pool = build_model(cfg, 3).pooling
  variables = pool.init(KEY, x)
  expected = np.mean(x.astype(np.float64) ** 3, axis=(1, 2)) ** (1 / 3)
  np.testing.assert_allclose(pool.apply(variables, x), expected, rtol=1e-5)


# ----------------------------------------------------------------------------- classifier layers


@pytest.mark.parametrize('layer,scale,margin', [
    ('cosface', 30.0, 0.35),
    ('arcface', 64.0, 0.5),
    ('circle', 64.0, 0.35),
    ('circle', 16.0, 0.1),
])
def test_margin_layers_transform_only_the_target_logit(layer, scale, margin):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(5, 4)).astype(np.float32)
  labels = np.array([0, 2, 1, 2, -1], np.int32)  # -1: no class here, no margin
  module = Classifier(3, layer, scale, margin)
  kernel = rng.normal(size=(4, 3)).astype(np.float32)
  variables = {'params': {'kernel': jnp.asarray(kernel)}}
  out = module.apply(variables, x, labels)
  expected, pred = margin_logits_ref(x.astype(np.float64), kernel.astype(np.float64), labels,
                                     layer, scale, margin)
  np.testing.assert_allclose(out['logits'], expected, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(out['pred_class_logits'], pred, rtol=1e-5, atol=1e-4)
  # Non-target logits of cosface/arcface are exactly s cos, as in FastReID.
  if layer != 'circle':
    onehot = np.eye(3)[np.maximum(labels, 0)] * (labels >= 0)[:, None]
    np.testing.assert_allclose(np.where(onehot, 0, out['logits']),
                               np.where(onehot, 0, out['pred_class_logits']), rtol=1e-6)


def test_margin_layer_target_logit_by_hand():
  # x along e0, class 0 weight along e0 (cos 1) and class 1 at 60 degrees (cos 0.5).
  x = np.array([[2.0, 0.0]], np.float32)
  kernel = np.array([[3.0, 1.0], [0.0, np.sqrt(3.0)]], np.float32)
  variables = {'params': {'kernel': jnp.asarray(kernel)}}
  labels = np.array([1])
  s, m = 10.0, 0.2
  cosface = Classifier(2, 'cosface', s, m).apply(variables, x, labels)['logits']
  np.testing.assert_allclose(cosface, [[s * 1.0, s * (0.5 - m)]], rtol=1e-6)
  arcface = Classifier(2, 'arcface', s, m).apply(variables, x, labels)['logits']
  np.testing.assert_allclose(arcface, [[s * 1.0, s * np.cos(np.pi / 3 + m)]], rtol=1e-5)
  circle = Classifier(2, 'circle', s, m).apply(variables, x, labels)['logits']
  np.testing.assert_allclose(
      circle, [[s * (1 + m) * (1 - m), s * (1 + m - 0.5) * (0.5 - (1 - m))]], rtol=1e-5)


def test_linear_layer_is_unnormalised_and_ignores_scale_and_margin():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(3, 4)).astype(np.float32)
  kernel = rng.normal(size=(4, 5)).astype(np.float32)
  out = Classifier(5, 'linear', 30.0, 0.5).apply({'params': {'kernel': jnp.asarray(kernel)}}, x)
  assert set(out) == {'logits'}
  np.testing.assert_allclose(out['logits'], x @ kernel, rtol=1e-5, atol=1e-6)


def test_circle_layer_weights_are_constants_for_the_gradient():
  cosine = jnp.array([[0.3, -0.2, 0.9]])
  onehot = jnp.array([[1.0, 0.0, 0.0]])
  s, m = 2.0, 0.25
  grad = jax.grad(lambda c: classifiers.circle(c, onehot, s, m).sum())(cosine)
  # d/dcos of s * alpha * (cos - delta) with alpha fixed is s * alpha.
  expected = [[s * (1 + m - 0.3), s * max(-0.2 + m, 0), s * (0.9 + m)]]
  np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_arcface_gradient_finite_at_cosine_one():
  x = np.array([[1.0, 0.0]], np.float32)
  variables = {'params': {'kernel': jnp.array([[1.0, 0.0], [0.0, 1.0]])}}
  module = Classifier(2, 'arcface', 30.0, 0.5)
  grad = jax.grad(lambda v: module.apply(v, x, np.array([0]))['logits'].sum())(variables)
  assert np.isfinite(grad['params']['kernel']).all()


def test_margin_layer_needs_labels_in_training_only():
  head = EmbeddingHead(num_classes=3, cls_layer='arcface', cls_scale=30.0, cls_margin=0.5)
  x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
  variables = head.init(KEY, x, train=True)  # init needs no labels
  with pytest.raises(ValueError, match=r"cls_layer 'arcface' .* labels=labels"):
    head.apply(variables, x, train=True, mutable=['batch_stats'])
  assert set(head.apply(variables, x, train=False)) == {'embedding'}
  out, _ = head.apply(variables, x, train=True, labels=np.array([0, 1, 2, 0]),
                      mutable=['batch_stats'])
  assert set(out) == {'logits', 'pred_class_logits', 'features', 'embedding'}


def test_unknown_classifier_layer_names_the_config_key():
  with pytest.raises(ValueError, match=r"config.model.head.cls_layer: unknown classifier layer "
                     r"'arcfce'; did you mean 'arcface'"):
    Classifier(3, 'arcfce').init(KEY, jnp.zeros((1, 4)))
  assert CLS_LAYERS.names() == ['arcface', 'circle', 'cosface', 'linear']


# ----------------------------------------------------------------------------- heads


def test_bnneck_head_with_cosface_equals_numpy_reference():
  rng = np.random.default_rng(5)
  x = (rng.normal(size=(6, 4)) * 2 + 1).astype(np.float32)
  labels = np.array([0, 1, 2, 0, 1, 2])
  cfg = default_model_config().head
  cfg.cls_layer, cfg.cls_scale, cfg.cls_margin, cfg.neck_feat = 'cosface', 16.0, 0.3, 'after'
  head = HEADS.get('bnneck')(cfg, 3)
  variables = head.init(KEY, x, train=True)
  assert set(variables['params']['bnneck']) == {'scale'}  # bias frozen at zero: absent
  out, _ = head.apply(variables, x, train=True, labels=labels, mutable=['batch_stats'])
  embedding = batch_norm_train_ref(x.astype(np.float64), 1.0)
  kernel = np.asarray(variables['params']['classifier']['kernel'], np.float64)
  expected, pred = margin_logits_ref(embedding, kernel, labels, 'cosface', 16.0, 0.3)
  np.testing.assert_allclose(out['embedding'], embedding, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out['features'], out['embedding'])
  np.testing.assert_allclose(out['logits'], expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out['pred_class_logits'], pred, rtol=1e-4, atol=1e-4)


def test_bnneck_frozen_bias_gets_no_update():
  # BNNeck output = (x - mean) / std * scale: no bias parameter to train or decay, and the
  # gradient tree has the parameters only.
  x = np.random.default_rng(6).normal(size=(4, 3)).astype(np.float32)
  head = EmbeddingHead(num_classes=2)
  variables = head.init(KEY, x, train=True)
  grads = jax.grad(lambda p: head.apply({**variables, 'params': p}, x, train=True,
                                        mutable=['batch_stats'])[0]['logits'].sum())(
                                            variables['params'])
  assert jax.tree.map(jnp.shape, grads) == {'bnneck': {'scale': (3,)},
                                            'classifier': {'kernel': (3, 2)}}


def reduction_ref(variables, x, train, dropout_keep=None):
  """FastReID ReductionHead: Dense -> BN -> LeakyReLU(0.1) -> dropout -> BNNeck."""
  params = jax.tree.map(lambda v: np.asarray(v, np.float64), variables['params'])
  stats = jax.tree.map(lambda v: np.asarray(v, np.float64), variables['batch_stats'])

  def bn(v, name):
    if train:
      return batch_norm_train_ref(v, params[name]['scale'])
    return (v - stats[name]['mean']) / np.sqrt(stats[name]['var'] + 1e-5) * params[name]['scale']

  v = bn(x.astype(np.float64) @ params['reduction']['kernel'], 'reduction_bn')
  v = np.where(v > 0, v, 0.1 * v)
  if dropout_keep is not None:
    v = v * dropout_keep / 0.5
  return v, bn(v, 'bnneck')


def test_reduction_head_equals_numpy_reference():
  rng = np.random.default_rng(7)
  x = rng.normal(size=(8, 6)).astype(np.float32)
  cfg = default_model_config().head
  cfg.name, cfg.embedding_dim, cfg.dropout = 'reduction', 4, 0.0
  head = HEADS.get('reduction')(cfg, 3)
  assert isinstance(head, ReductionHead)
  variables = head.init(KEY, x, train=False)
  assert jax.tree.map(jnp.shape, variables['params']) == {
      'reduction': {'kernel': (6, 4)}, 'reduction_bn': {'scale': (4,)},
      'bnneck': {'scale': (4,)}, 'classifier': {'kernel': (4, 3)}}
  variables = {'params': {**variables['params'],
                          'reduction_bn': {'scale': jnp.asarray(rng.uniform(0.5, 1.5, 4))}},
               'batch_stats': jax.tree.map(lambda v: jnp.asarray(rng.uniform(0.5, 1.5, v.shape),
                                                                 jnp.float32),
                                           variables['batch_stats'])}
  out, _ = head.apply(variables, x, train=True, mutable=['batch_stats'])
  reduced, embedding = reduction_ref(variables, x, train=True)
  np.testing.assert_allclose(out['features'], reduced, rtol=1e-4, atol=1e-5)  # 'before'
  np.testing.assert_allclose(out['embedding'], embedding, rtol=1e-4, atol=1e-5)
  kernel = np.asarray(variables['params']['classifier']['kernel'])
  np.testing.assert_allclose(out['logits'], embedding @ kernel, rtol=1e-4, atol=1e-5)
  _, embedding = reduction_ref(variables, x, train=False)
  np.testing.assert_allclose(head.apply(variables, x, train=False)['embedding'], embedding,
                             rtol=1e-4, atol=1e-5)


def test_reduction_head_dropout_in_training_only():
  x = np.random.default_rng(8).normal(size=(16, 6)).astype(np.float32)
  head = ReductionHead(num_classes=3, embedding_dim=32, dropout=0.5, neck_feat='before')
  variables = head.init(KEY, x, train=False)
  out, _ = head.apply(variables, x, train=True, mutable=['batch_stats'],
                      rngs={'dropout': jax.random.key(1)})
  no_drop, _ = ReductionHead(3, 32, dropout=0.0).apply(variables, x, train=True,
                                                        mutable=['batch_stats'])
  keep = np.asarray(out['features']) != 0
  assert 0.3 < keep.mean() < 0.7
  np.testing.assert_allclose(np.asarray(out['features'])[keep],
                             2 * np.asarray(no_drop['features'])[keep], rtol=1e-5)
  reduced, embedding = reduction_ref(variables, x, train=True, dropout_keep=keep)
  np.testing.assert_allclose(out['embedding'], embedding, rtol=1e-4, atol=1e-4)
  evaluated = head.apply(variables, x, train=False)['embedding']  # no dropout rng needed
  np.testing.assert_allclose(evaluated, reduction_ref(variables, x, train=False)[1], rtol=1e-4,
                             atol=1e-5)


def test_reduction_head_requires_embedding_dim():
  cfg = default_model_config().head
  cfg.name = 'reduction'
  with pytest.raises(ValueError, match='config.model.head.embedding_dim > 0'):
    HEADS.get('reduction')(cfg, 3)


class _IdentityBackbone(nn.Module):

  @nn.compact
  def __call__(self, x, train):
    return x


def test_baseline_passes_labels_to_a_margin_head():
  images = np.random.default_rng(9).integers(0, 256, size=(4, 4, 2, 3)).astype(np.uint8)
  labels = np.array([0, 1, 1, 2])
  head = EmbeddingHead(3, cls_layer='cosface', cls_scale=8.0, cls_margin=0.4)
  model = Baseline(_IdentityBackbone(), GlobalAvgPool(), head)
  variables = model.init(KEY, images, train=False)
  out, _ = model.apply(variables, images, train=True, labels=labels, mutable=['batch_stats'])
  np.testing.assert_allclose(out['pred_class_logits'] - out['logits'],
                             8.0 * 0.4 * np.eye(3)[labels], atol=1e-5)
  linear = Baseline(_IdentityBackbone(), GlobalAvgPool(), EmbeddingHead(3))
  out, _ = linear.apply(variables, images, train=True, labels=labels, mutable=['batch_stats'])
  assert set(out) == {'logits', 'features', 'embedding'}  # unchanged for the linear layer

  cfg = default_model_config()
  cfg.head.cls_layer, cfg.head.cls_scale, cfg.head.cls_margin = 'circle', 64.0, 0.35
  built = build_model(cfg, 5).head
  assert (built.cls_layer, built.cls_scale, built.cls_margin) == ('circle', 64.0, 0.35)


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize('alpha', [0.2, 0.7])
def test_cross_entropy_probability_based_smoothing_equals_numpy_reference(alpha):
  rng = np.random.default_rng(10)
  logits = (rng.normal(size=(6, 5)) * 3).astype(np.float32)
  labels = rng.integers(0, 5, size=6).astype(np.int32)
  np.testing.assert_allclose(cross_entropy(logits, labels, -1.0, alpha=alpha),
                             cross_entropy_adaptive_ref(logits, labels, alpha), rtol=1e-5)
  # The targets are constants (FastReID builds them under no_grad): gradient = (p - t) / B.
  grad = jax.grad(cross_entropy)(logits, labels, -1.0, alpha=alpha)
  expected = []
  for i in range(6):
    p = softmax_ref(logits[i].astype(np.float64))
    e = alpha * p[labels[i]]
    t = np.where(np.arange(5) == labels[i], 1 - e, e / 4)
    expected.append((p - t) / 6)
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


def test_cross_entropy_adaptive_smoothing_only_in_fastreid_variant():
  with pytest.raises(ValueError, match="only in the 'fastreid' variant"):
    cross_entropy(np.zeros((1, 3)), np.zeros(1, np.int32), -1.0, variant='bot')


@pytest.mark.parametrize('alpha,gamma', [(0.25, 2.0), (1.0, 0.5), (0.5, 0.0)])
def test_focal_loss_equals_numpy_reference(alpha, gamma):
  rng = np.random.default_rng(11)
  logits = (rng.normal(size=(6, 4)) * 2).astype(np.float32)
  labels = rng.integers(0, 4, size=6).astype(np.int32)
  np.testing.assert_allclose(focal_loss(logits, labels, alpha, gamma),
                             focal_ref(logits, labels, alpha, gamma), rtol=1e-5)
  grad = jax.grad(focal_loss)(logits, labels, alpha, gamma)
  assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_focal_loss_gamma_zero_alpha_one_is_cross_entropy():
  logits = np.random.default_rng(12).normal(size=(5, 3)).astype(np.float32)
  labels = np.array([0, 1, 2, 2, 0])
  np.testing.assert_allclose(focal_loss(logits, labels, 1.0, 0.0),
                             cross_entropy(logits, labels, 0.0, 'bot'), rtol=1e-6)
  with pytest.raises(ValueError, match='gamma must be >= 0'):
    focal_loss(logits, labels, 1.0, -1.0)


# Jitted (margin and gamma static): one compile is faster than op-by-op dispatch of the grads.
PAIRWISE = {'circle': jax.jit(pairwise_circle_loss, static_argnums=(2, 3)),
            'cosface': jax.jit(pairwise_cosface_loss, static_argnums=(2, 3))}


@pytest.mark.parametrize('kind', PAIRWISE)
@pytest.mark.parametrize('margin,gamma', [(0.25, 128.0), (0.4, 8.0)])
def test_pairwise_losses_equal_numpy_reference(kind, margin, gamma):
  x, labels = random_batch(13)
  np.testing.assert_allclose(PAIRWISE[kind](x, labels, margin, gamma),
                             pairwise_ref(x, labels, margin, gamma, kind), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kind', PAIRWISE)
def test_pairwise_losses_singletons_and_no_negatives(kind):
  # Identities of 3, 1 (no positive) and 2: the singleton anchor contributes 0.
  rng = np.random.default_rng(14)
  labels = np.array([4, 4, 4, 9, 2, 2], np.int32)
  x = rng.normal(size=(6, 5)).astype(np.float32)
  np.testing.assert_allclose(PAIRWISE[kind](x, labels, 0.25, 16.0),
                             pairwise_ref(x, labels, 0.25, 16.0, kind), rtol=1e-5, atol=1e-6)
  one_id = np.zeros(6, np.int32)  # no negatives anywhere: exactly 0, finite gradient
  assert float(PAIRWISE[kind](x, one_id, 0.25, 16.0)) == 0.0
  grad = jax.grad(PAIRWISE[kind])(x, labels, 0.25, 16.0)
  assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_pairwise_circle_weights_are_constants_for_the_gradient():
  x, labels = random_batch(15, num_ids=2, per_id=2, dim=3)
  x64 = x.astype(np.float64)
  sims = [[float(unit(a) @ unit(b)) for b in x64] for a in x64]
  h = 1e-6
  numeric = np.zeros_like(x64)
  for idx in np.ndindex(*x.shape):
    step = np.zeros_like(x64)
    step[idx] = h
    numeric[idx] = (pairwise_ref(x64 + step, labels, 0.25, 4.0, 'circle', alpha_sims=sims)
                    - pairwise_ref(x64 - step, labels, 0.25, 4.0, 'circle', alpha_sims=sims)) / (2 * h)
  grad = jax.jit(jax.grad(pairwise_circle_loss), static_argnums=(2, 3))(x, labels, 0.25, 4.0)
  np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)


def test_pairwise_cosface_by_hand():
  # Two identities of two unit vectors: cos within = 1, across = 0 (orthogonal).
  x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]], np.float32)
  labels = np.array([0, 0, 1, 1])
  gamma, m = 4.0, 0.25
  # Per anchor: one positive (logit -gamma) and two negatives (logit gamma * m each).
  expected = softplus_ref(-gamma + gamma * m + np.log(2))
  np.testing.assert_allclose(pairwise_cosface_loss(x, labels, m, gamma), expected, rtol=1e-6)


# ----------------------------------------------------------------------------- objectives


def test_default_config_has_a_section_for_every_loss():
  cfg = method_config('supervised')
  names = {'cross_entropy', 'triplet', 'focal', 'circle', 'cosface'}
  assert names <= set(objectives.LOSSES.names()) and names <= set(cfg.loss.keys())
  assert tuple(cfg.loss.names) == ('cross_entropy', 'triplet')  # the BoT default is unchanged
  assert (cfg.loss.focal.alpha, cfg.loss.focal.gamma) == (0.25, 2.0)
  assert (cfg.loss.circle.margin, cfg.loss.circle.gamma) == (0.25, 128.0)
  assert (cfg.model.head.cls_layer, cfg.model.head.cls_scale) == ('linear', 1.0)


def test_compute_losses_weights_every_term():
  rng = np.random.default_rng(16)
  features, labels = random_batch(17)
  logits = rng.normal(size=(len(labels), 60)).astype(np.float32)
  outputs = {'logits': logits, 'features': features}
  cfg = method_config('supervised').loss
  cfg.names = ('cross_entropy', 'triplet', 'focal', 'circle', 'cosface')
  cfg.cross_entropy.epsilon = -1.0
  for name, weight in zip(cfg.names, (1.0, 0.5, 2.0, 0.3, 0.7)):
    cfg[name].weight = weight
  terms = objectives.compute_losses(outputs, labels, cfg)
  expected = {
      'cross_entropy': 1.0 * cross_entropy(logits, labels, -1.0, alpha=0.2),
      'triplet': 0.5 * triplet_loss(features, labels, 0.3),
      'focal': 2.0 * focal_ref(logits, labels, 0.25, 2.0),
      'circle': 0.3 * pairwise_ref(features, labels, 0.25, 128.0, 'circle'),
      'cosface': 0.7 * pairwise_ref(features, labels, 0.25, 128.0, 'cosface'),
  }
  assert set(terms) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(terms[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


def test_compute_losses_errors_name_the_config_key():
  outputs = {'logits': np.zeros((2, 3), np.float32), 'features': np.zeros((2, 3), np.float32)}
  cfg = ml_collections.ConfigDict({'names': ('focal',)})
  with pytest.raises(ValueError, match="config.loss has no 'focal' section"):
    objectives.compute_losses(outputs, np.array([0, 1]), cfg)
  cfg = ml_collections.ConfigDict({'names': ('circel',)})
  with pytest.raises(ValueError, match=r"config.loss.names: unknown loss 'circel'; did you mean "
                     r"'circle'"):
    objectives.compute_losses(outputs, np.array([0, 1]), cfg)
