"""PPLR: losses against plain numpy references, pseudo-labelling pieces, model, and one tiny run."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny
from data_pipelines import samplers
from jreid import clustering
from jreid import parts
from jreid import train
from jreid.losses import pplr as L
from jreid.methods import pplr as M
from jreid.models import pplr as pplr_model

from test_rerank import reference_jaccard  # the evaluation issue's plain reference


# ---------------------------------------------------------------- numpy references

def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_softmax(x):
  return np.exp(np_log_softmax(x))


def ref_topk(features, k):
  """k nearest other rows by Euclidean distance of the L2-normalised rows (stable ties)."""
  x = features / np.linalg.norm(features, axis=1, keepdims=True)
  dist = ((x[:, None] - x[None]) ** 2).sum(-1)
  lists = []
  for i in range(len(x)):
    order = [j for j in np.argsort(dist[i], kind='stable') if j != i]
    lists.append(order[:k])
  return lists


def ref_cross_agreement(fg, fp, k):
  rg = ref_topk(fg, k)
  out = np.zeros((len(fg), fp.shape[1]))
  for p in range(fp.shape[1]):
    rp = ref_topk(fp[:, p], k)
    for i in range(len(fg)):
      a, b = set(rg[i]), set(rp[i])
      out[i, p] = len(a & b) / len(a | b)
  return out


def ref_pglr(logits_g, logits_p, labels, ca, beta):
  b, p, c = logits_p.shape
  w = np_softmax(ca)
  ens = sum(w[:, j:j + 1] * np_softmax(logits_p[:, j]) for j in range(p))
  target = beta * np.eye(c)[labels] + (1 - beta) * ens
  return np.mean(-(target * np_log_softmax(logits_g)).sum(1)), target


def ref_aals(logits, labels, ca):
  c = logits.shape[1]
  lp = np_log_softmax(logits)
  ce = -lp[np.arange(len(labels)), labels]
  kl = (1.0 / c * (np.log(1.0 / c) - lp)).sum(1)
  return np.mean(ca * ce + (1 - ca) * kl)


def ref_smoothed_ce(logits, labels, eps):
  c = logits.shape[1]
  t = (1 - eps) * np.eye(c)[labels] + eps / c
  return np.mean(-(t * np_log_softmax(logits)).sum(1))


def ref_cam_loss(feats, labels, cams, proxies, plabels, pcams, num_hards, temp):
  """The reference InterCamProxy loop, one anchor at a time."""
  x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  sims = x @ proxies.T / temp
  total = 0.0
  for i in range(len(x)):
    pos = np.flatnonzero((plabels == labels[i]) & (pcams != cams[i]))
    if len(pos) == 0:
      continue
    negs = np.flatnonzero(plabels != labels[i])
    hard = negs[np.argsort(-sims[i, negs], kind='stable')[:num_hards]]
    s = sims[i, np.concatenate([pos, hard])]
    ls = s - np.log(np.exp(s - s.max()).sum()) - s.max()
    total += -ls[:len(pos)].mean()
  return total / len(x)


# ---------------------------------------------------------------- losses

def test_cross_agreement_matches_numpy():
  rng = np.random.default_rng(0)
  fg = rng.normal(size=(30, 6)).astype(np.float32)
  fp = (fg[:, None] + rng.normal(scale=[[0.1], [1.0], [3.0]], size=(30, 3, 6))).astype(np.float32)
  got = np.asarray(L.cross_agreement(fg, fp, k=5))
  np.testing.assert_allclose(got, ref_cross_agreement(fg, fp, 5), atol=1e-6)
  # A part identical to the global feature agrees fully; the noisier, the less.
  np.testing.assert_allclose(np.asarray(L.cross_agreement(fg, np.stack([fg] * 2, 1), k=5)), 1.0)
  assert got[:, 0].mean() > got[:, 2].mean()


def test_cross_agreement_hand_built():
  # 1-D points on a line (as 2-D, angle): lists are hand-checkable.
  angles = np.array([0.0, 0.1, 0.2, 1.0, 1.1])
  fg = np.stack([np.cos(angles), np.sin(angles)], 1)
  # Part space: sample 0's nearest are 3, 4 instead of 1, 2.
  angles_p = np.array([1.05, 0.1, 0.2, 1.0, 1.1])
  fp = np.stack([np.cos(angles_p), np.sin(angles_p)], 1)[:, None]
  got = np.asarray(L.cross_agreement(fg, fp, k=2))[:, 0]
  # R_g(0) = {1, 2}, R_p(0) = {3, 4}: 0 / 4.  R_g(1) = {0, 2}, R_p(1) = {2, 0 or 3}: ...
  assert got[0] == 0.0
  np.testing.assert_allclose(got, ref_cross_agreement(fg, fp, 2)[:, 0], atol=1e-7)


def _mask_pad(x, extra, axis=-1, value=7.0):
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, extra)
  return np.pad(x, pad, constant_values=value)


def test_pglr_and_refined_target_match_numpy_and_padding():
  rng = np.random.default_rng(1)
  b, p, c = 5, 3, 4
  lg = rng.normal(size=(b, c)).astype(np.float32)
  lp = rng.normal(size=(b, p, c)).astype(np.float32)
  labels = np.array([0, 1, 3, 2, 1])
  ca = rng.uniform(size=(b, p)).astype(np.float32)
  want, target = ref_pglr(lg, lp, labels, ca, 0.5)
  np.testing.assert_allclose(L.refined_soft_target(lp, labels, ca, 0.5), target, atol=1e-6)
  np.testing.assert_allclose(L.pglr_loss(lg, lp, labels, ca, 0.5), want, rtol=1e-5)
  # Capacity 7 with classes 4..6 masked: the same loss, the target 0 on masked classes.
  mask = np.arange(7) < 4
  padded = L.pglr_loss(_mask_pad(lg, 3), _mask_pad(lp, 3), labels, ca, 0.5, mask)
  np.testing.assert_allclose(padded, want, rtol=1e-5)
  t = L.refined_soft_target(_mask_pad(lp, 3), labels, ca, 0.5, mask)
  np.testing.assert_allclose(t[:, :4], target, atol=1e-6)
  assert np.all(np.asarray(t[:, 4:]) == 0)
  # No gradient through the target: d/d part logits is 0.
  g = jax.grad(lambda x: L.pglr_loss(lg, x, labels, ca, 0.5))(jnp.asarray(lp))
  assert np.all(np.asarray(g) == 0)


def test_aals_and_smoothed_ce_match_numpy_and_padding():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
  labels = np.array([0, 4, 2, 2, 1, 3])
  ca = np.array([0.0, 1.0, 0.3, 0.7, 0.5, 0.2], np.float32)
  np.testing.assert_allclose(L.aals_loss(logits, labels, ca), ref_aals(logits, labels, ca),
                             rtol=1e-5)
  np.testing.assert_allclose(L.smoothed_ce(logits, labels, 0.1),
                             ref_smoothed_ce(logits, labels, 0.1), rtol=1e-5)
  mask = np.arange(9) < 5
  np.testing.assert_allclose(L.aals_loss(_mask_pad(logits, 4), labels, ca, mask),
                             ref_aals(logits, labels, ca), rtol=1e-5)
  np.testing.assert_allclose(L.smoothed_ce(_mask_pad(logits, 4), labels, 0.1, mask),
                             ref_smoothed_ce(logits, labels, 0.1), rtol=1e-5)
  # ca = 1 is plain CE; ca = 0 is KL to uniform (0 for uniform logits).
  np.testing.assert_allclose(L.aals_loss(logits, labels, np.ones(6)),
                             ref_smoothed_ce(logits, labels, 0.0), rtol=1e-5)
  np.testing.assert_allclose(L.aals_loss(np.zeros((2, 5)), labels[:2], np.zeros(2)), 0.0,
                             atol=1e-6)
  grads = jax.grad(lambda x: L.aals_loss(x, labels, ca, mask))(jnp.asarray(_mask_pad(logits, 4)))
  assert np.isfinite(np.asarray(grads)).all() and np.all(np.asarray(grads)[:, 5:] == 0)


def test_camera_proxy_loss_matches_numpy():
  rng = np.random.default_rng(3)
  m, d = 14, 8
  proxies = rng.normal(size=(m, d))
  proxies /= np.linalg.norm(proxies, axis=1, keepdims=True)
  plabels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4, 5, 5, 5])
  pcams = np.array([0, 1, 2, 0, 3, 1, 2, 3, 0, 1, 2, 0, 1, 2])
  feats = rng.normal(size=(6, d)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 4, 0])  # cluster 3 has one proxy in camera 0:
  cams = np.array([0, 3, 1, 0, 1, 2])  # the anchor of cluster 3 (camera 0) has no positive.
  for hards in (3, 50):
    want = ref_cam_loss(feats, labels, cams, proxies, plabels, pcams, hards, 0.07)
    got = L.camera_proxy_loss(feats, labels, cams, proxies, plabels, pcams, None, hards, 0.07)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Padding proxies (mask False) change nothing, even when they look like hard negatives.
    pad = np.concatenate([proxies, np.tile(feats[:1] / np.linalg.norm(feats[:1]), (4, 1))])
    got_pad = L.camera_proxy_loss(feats, labels, cams, pad, np.r_[plabels, [9] * 4],
                                  np.r_[pcams, [5] * 4], np.arange(m + 4) < m, hards, 0.07)
    np.testing.assert_allclose(got_pad, want, rtol=1e-5)
  grads = jax.grad(lambda f: L.camera_proxy_loss(f, labels, cams, proxies, plabels, pcams))(
      jnp.asarray(feats))
  assert np.isfinite(np.asarray(grads)).all()
  assert np.all(np.asarray(grads)[3] == 0)  # the anchor without a positive adds 0


# ---------------------------------------------------------------- pseudo-labelling pieces

def test_pseudo_labels_are_dbscan_on_reference_jaccard():
  from sklearn.cluster import DBSCAN
  rng = np.random.default_rng(4)
  centres = rng.normal(size=(5, 16))
  feats = np.repeat(centres, 8, 0) + 0.3 * rng.normal(size=(40, 16))
  feats = np.concatenate([feats, rng.normal(size=(4, 16)) * 3]).astype(np.float32)
  got = clustering.jaccard_dbscan(feats, k1=30, k2=6, eps=0.5, min_samples=4)
  dist = reference_jaccard(feats, 30, 6, 'cosine')
  want = DBSCAN(eps=0.5, min_samples=4, metric='precomputed').fit_predict(dist)
  np.testing.assert_array_equal(got, want)
  assert got.max() + 1 == 5


def test_classifier_reinit_from_centroids_is_exact():
  rng = np.random.default_rng(5)
  feats = rng.normal(size=(10, 4)).astype(np.float32)
  labels = np.array([0, 1, 0, -1, 2, 1, 2, 2, -1, 0])
  cent = clustering.cluster_centroids(feats, labels, 3)
  for c in range(3):
    mean = feats[labels == c].astype(np.float64).mean(0)
    np.testing.assert_allclose(cent[c], mean / np.linalg.norm(mean), rtol=1e-6)
  params = {'classifier': {'kernel': np.full((4, 6), 9.0, np.float32)},
            'classifier_0': {'kernel': np.full((4, 6), 8.0, np.float32)},
            'bnneck': {'scale': np.ones(4, np.float32)}}
  new = M.reinit_classifiers(params, [cent, cent[::-1]], num_parts=1)
  np.testing.assert_array_equal(np.asarray(new['classifier']['kernel'])[:, :3], cent.T)
  np.testing.assert_array_equal(np.asarray(new['classifier_0']['kernel'])[:, :3], cent[::-1].T)
  assert np.all(np.asarray(new['classifier']['kernel'])[:, 3:] == 9.0)
  np.testing.assert_array_equal(new['bnneck']['scale'], params['bnneck']['scale'])


def test_camera_proxies():
  feats = np.array([[[1, 0], [0, 1], [1, 1], [3, 0], [5, 5]]], np.float32)
  labels = np.array([0, 0, 0, 1, -1])
  cams = np.array([0, 1, 1, 0, 0])
  proxies, plabels, pcams, mask = M.camera_proxies(feats, labels, cams, capacity=4)
  np.testing.assert_array_equal(plabels, [0, 0, 1, -1])
  np.testing.assert_array_equal(pcams, [0, 1, 0, -1])
  np.testing.assert_array_equal(mask, [True, True, True, False])
  s = np.sqrt(0.5 ** 2 + 1)
  np.testing.assert_allclose(proxies[0, :3], [[1, 0], [0.5 / s, 1 / s], [1, 0]], rtol=1e-6)
  with pytest.raises(ValueError, match='max_proxies'):
    M.camera_proxies(feats, labels, cams, capacity=2)


def test_sampler_prefers_other_cameras_and_skips_outliers():
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, -1, -1, 2, 2, 2, 2])
  cams = np.array([0, 1, 1, 2, 0, 0, 0, 0, 0, 3, 3, 0, 1, 2, 3])
  s = samplers.CameraAwareSampler(labels, cams, batch_size=8, num_instances=4, seed=0, epoch=1,
                           steps_per_epoch=5)
  batches = s.steps(5, 10)
  assert batches.shape == (5, 8) and s.num_samples == 15
  assert not np.isin(batches, [9, 10]).any()
  for group in batches.reshape(-1, 4):
    assert len(set(labels[group])) == 1
    if labels[group[0]] != 1:  # clusters seen by several cameras: others from other cameras
      assert np.all(cams[group[1:]] != cams[group[0]])
  again = samplers.CameraAwareSampler(labels, cams, 8, 4, 0, 1, 5).steps(7, 9)
  np.testing.assert_array_equal(again, batches[2:4])
  with pytest.raises(ValueError, match='not in epoch'):
    s.steps(0, 2)


# ---------------------------------------------------------------- model

def test_stripe_pool_is_adaptive_average_pooling():
  fm = np.arange(2 * 5 * 2 * 3, dtype=np.float32).reshape(2, 5, 2, 3)
  got = np.asarray(pplr_model.stripe_pool(jnp.asarray(fm), 3))
  rows = [(0, 2), (1, 4), (3, 5)]  # adaptive pooling of 5 rows into 3
  want = np.stack([fm[:, a:b].mean((1, 2)) for a, b in rows], 1)
  np.testing.assert_allclose(got, want, rtol=1e-6)



class _ToyBN(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    h = nn.Dense(3)(x.reshape(x.shape[0], -1).astype(jnp.float32))
    return {'embedding': nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)}


def test_grouped_batch_norm_is_per_group():
  model = _ToyBN()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
  variables = model.init(jax.random.key(0), x, train=False)
  apply = lambda images: model.apply(variables, images, train=True, mutable=['batch_stats'])
  grouped, stats = M.apply_grouped(model, variables, x, 2)
  whole, _ = apply(x)
  assert np.abs(np.asarray(grouped['embedding'] - whole['embedding'])).max() > 0.1
  alone = [apply(x[2 * g:2 * g + 2]) for g in range(2)]
  for g in range(2):
    np.testing.assert_allclose(grouped['embedding'][2 * g:2 * g + 2], alone[g][0]['embedding'],
                               atol=1e-4)  # (float32 variance of 2 samples)
  jax.tree.map(lambda s, a, b: np.testing.assert_allclose(s, (a + b) / 2, rtol=1e-5, atol=1e-6),
               stats['batch_stats'], alone[0][1]['batch_stats'], alone[1][1]['batch_stats'])
  with pytest.raises(ValueError, match='bn_group_size'):
    M.apply_grouped(model, variables, x, 3)


# ---------------------------------------------------------------- end to end

def tiny_config(tmp_path, variant=None):
  config = tiny.config('pplr', tmp_path, variant, epochs=1, steps=2)
  config.input.height, config.input.width = 48, 16
  config.train.log_every_steps = 1
  config.eval.untrained = False
  config.eval.histogram_baseline = False
  config.pplr.k1 = 10
  config.pplr.k = 5
  config.pplr.eps = 0.7
  return config


@pytest.mark.slow  # The suite trains :cam in test_training_never_reads_identity_labels.
def test_end_to_end_cam_variant(tmp_path):
  config = tiny_config(tmp_path, 'cam')
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 0.0 <= results['mAP'] <= 1.0 and results['steps'] == 2
  rows = clustering.EpochLog(tmp_path / 'run', 'pplr_epochs').rows()
  assert [r['epoch'] for r in rows] == [1]
  assert rows[0]['clusters'] >= 1 and len(rows[0]['agreement']) == 3
  np.testing.assert_allclose(rows[0]['mAP'], results['mAP'], rtol=1e-6)
  assert (tmp_path / 'run' / 'pplr_epochs.png').stat().st_size > 0
  assert (tmp_path / 'run' / 'report.md').exists()


def test_training_never_reads_identity_labels(tmp_path):
  """begin_epoch + train steps give the same state when the train split's labels and pids are
  replaced by garbage: only images and cameras feed training (the :cam variant, whose camera
  proxies read the cameras)."""
  config = tiny_config(tmp_path, 'cam')

  def run_once(workdir, train_split=None):
    run = train.build_run(config, workdir)
    if train_split is not None:
      data = dataclasses.replace(run.data, splits={**run.data.splits, 'train': train_split})
      run = dataclasses.replace(run, data=data, method=M.build(config, data, run.mesh, workdir))
    state = run.method.begin_epoch(run.method.state, 0)
    for batch in run.method.batches(state, 0, 2):
      state, _ = run.train_step(state, batch)
    run.checkpointer.close()
    return run, jax.device_get(state)

  run, a = run_once(tmp_path / 'a')
  # The model: BNNeck without bias, classifiers at the capacity.
  assert 'bias' not in a.params['bnneck'] and 'bias' not in a.params['bnneck_2']
  capacity = M.capacity(config, len(run.data.train))
  assert a.params['classifier_2']['kernel'].shape[1] == capacity
  # Unit-norm test features.
  feats = parts.embedder(run.method.inference, run.mesh)(
      a.params, a.batch_stats, run.data.splits['query'], config.input, config.eval.batch_size)
  np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
  n = len(run.data.train)
  garbage = np.random.default_rng(7).integers(1000, 2000, n).astype(np.int32)
  _, b = run_once(tmp_path / 'b', dataclasses.replace(run.data.train, labels=garbage,
                                                        pids=garbage))
  np.testing.assert_array_equal(a.extra.labels, b.extra.labels)
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  assert int(a.extra.num_clusters) >= 1
