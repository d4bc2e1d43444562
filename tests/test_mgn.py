"""MGN: output shapes, the FastReID loss composition against a numpy reference, parameter count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jreid import models
from jreid import objectives
from jreid.config_defaults import method_config
from jreid.models import mgn
from jreid.models import resnet


def _cfg(width=8, embedding_dim=16):
  cfg = models.default_model_config()
  cfg.name = 'mgn'
  cfg.backbone.name = 'resnet50'
  cfg.backbone.width = width
  cfg.pooling.name, cfg.pooling.gem_learnable = 'gem', True
  cfg.head.embedding_dim = embedding_dim
  cfg.head.neck_feat = 'after'
  return cfg


def test_chunk_rows_is_torch_chunk():
  x = jnp.arange(7.0).reshape(1, 7, 1, 1)
  parts = mgn.chunk_rows(x, 3)
  assert [p.shape[1] for p in parts] == [3, 3, 1]  # ceil(7 / 3) rows, last shorter
  assert [p.shape[1] for p in mgn.chunk_rows(x[:, :6], 2)] == [3, 3]
  with pytest.raises(ValueError, match='taller input'):
    mgn.chunk_rows(x[:, :4], 3)  # torch.chunk gives 2 stripes of 2


def _np_ce(logits, labels, eps):
  """FastReID cross_entropy_loss: 1 - eps on the label, eps / (C - 1) elsewhere."""
  logits = np.asarray(logits, np.float64)
  logp = logits - logits.max(1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
  c = logits.shape[1]
  t = np.full_like(logp, eps / (c - 1))
  t[np.arange(len(labels)), labels] = 1 - eps
  loss = -(t * logp).sum(1)
  return loss.sum() / max((loss != 0).sum(), 1)


def _np_soft_triplet(feats, labels):
  """Batch-hard soft-margin triplet: mean softplus(d_ap - d_an), Euclidean distances."""
  f = np.asarray(feats, np.float64)
  d = np.sqrt(np.maximum(((f[:, None] - f[None]) ** 2).sum(-1), 1e-12))
  same = labels[:, None] == labels[None]
  ap = np.where(same, d, -np.inf).max(1)
  an = np.where(same, np.inf, d).min(1)
  return np.mean(np.log1p(np.exp(ap - an)))


def test_shapes_and_losses():
  # A short Bottleneck trunk (1, 1, 2, 1 blocks) keeps the three-branch compile small.
  full = models.build_model(_cfg(), 4)
  model = mgn.MGN(resnet.ResNet(resnet.Bottleneck, (1, 1, 2, 1), width=8), full.pooling, full.head)
  images = np.random.default_rng(0).integers(0, 256, (8, 96, 32, 3), dtype=np.uint8)
  labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)
  out, _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
      variables, images)
  assert out['logits'].shape == (8, 4) and out['embedding'].shape == (8, 8 * 16)
  assert [x.shape for x in out['branch_logits']] == [(8, 4)] * 8
  assert [x.shape[1] for x in out['branch_features']] == [16, 16, 16, 32, 48]
  np.testing.assert_array_equal(out['branch_features'][0], out['features'])  # b1's
  evaluated = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  assert set(evaluated) == {'embedding'} and evaluated['embedding'].shape == (8, 128)

  cfg = method_config('supervised').loss
  cfg.triplet.margin = 0.0
  cfg.cross_entropy.weight = 1.0
  cfg.triplet.weight = 2.0
  terms = objectives.compute_losses(out, jnp.asarray(labels), cfg)
  want_ce = np.mean([_np_ce(l, labels, 0.1) for l in out['branch_logits']])
  want_tri = 2.0 * np.mean([_np_soft_triplet(f, labels) for f in out['branch_features']])
  np.testing.assert_allclose(terms['cross_entropy'], want_ce, rtol=1e-5)
  np.testing.assert_allclose(terms['triplet'], want_tri, rtol=1e-4)
  # A single-branch output is unaffected by the list handling.
  single = {'logits': out['logits'], 'features': out['features']}
  np.testing.assert_allclose(objectives.compute_losses(single, jnp.asarray(labels), cfg)[
      'cross_entropy'], _np_ce(out['logits'], labels, 0.1), rtol=1e-5)


def _bottleneck(inplanes, planes, downsample):
  """Parameters (conv + BN scale/bias) of a torchvision Bottleneck."""
  n = inplanes * planes + 9 * planes * planes + 4 * planes * planes + 2 * (planes * 6)
  return n + (inplanes * planes * 4 + 2 * planes * 4 if downsample else 0)


def test_parameter_count_matches_fastreid_mgn_r50():
  """ResNet-50 (23,508,032 without fc) + two more copies of layer3[1:] and layer4, and 8 heads."""
  model = models.build_model(_cfg(width=64, embedding_dim=0), 751)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, 96, 32, 3), jnp.uint8), train=False))
  count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes['params']))
  layer3_rest = 5 * _bottleneck(1024, 256, False)
  layer4 = _bottleneck(1024, 512, True) + 2 * _bottleneck(2048, 512, False)
  heads = 8 * (1 + 2048 + 2048 * 751)  # GeM p, BNNeck scale (no bias), classifier
  assert 23_508_032 + 2 * (layer3_rest + layer4) + heads == count == 76_930_120


def test_backbone_errors():
  cfg = _cfg()
  cfg.backbone.name = 'resnet18'
  with pytest.raises(ValueError, match='Bottleneck ResNet'):
    models.build_model(cfg, 3)
  cfg = _cfg()
  cfg.backbone.with_nl = True
  with pytest.raises(ValueError, match='non-local'):
    models.build_model(cfg, 3)
