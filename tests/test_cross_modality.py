"""RGB-infrared cross-modality re-ID: WRT loss, SYSU protocol, blocks, sampler, two-stream model.

Every library function is held equal to a plain numpy reference written here, transcribing the
reference code's semantics (AGW's `TripletLoss_WRT`, `process_gallery_sysu`, `eval_sysu`).
"""

import os
import random

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import sysu_mm01
from data_pipelines.cross_modality_sampler import CrossModalitySampler
from data_pipelines.types import ReIDSplit
from jreid import losses
from jreid.evaluation import cross_modality as cm_eval
from jreid.models import graph_reasoning
from jreid.models import two_stream
from jreid.models.nonlocal_block import NonLocal


# --------------------------------------------------------------------------------------------
# WRT


def reference_wrt(x, y):
  """AGW's TripletLoss_WRT, written out with loops."""
  x = np.asarray(x, np.float64)
  n = len(x)
  d = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 1e-12))
  total = 0.0
  for i in range(n):
    pos = [j for j in range(n) if y[j] == y[i]]
    neg = [j for j in range(n) if y[j] != y[i]]

    def weights(values, members):
      masked = np.zeros(n)
      masked[members] = values[members]
      shift = masked.max()  # max over the row of values * mask (0 outside the mask)
      e = np.zeros(n)
      e[members] = np.exp(values[members] - shift)
      return e / (e.sum() + 1e-6)

    d_ap = np.sum(weights(d[i], pos) * d[i])
    d_an = np.sum(weights(-d[i], neg) * d[i])
    total += np.log1p(np.exp(d_ap - d_an))
  return total / n


def test_wrt_equals_reference():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(12, 5)).astype(np.float32) * 2
  y = np.repeat(np.arange(3), 4)
  got = losses.weighted_regularization_triplet(jnp.asarray(x), jnp.asarray(y))
  np.testing.assert_allclose(float(got), reference_wrt(x, y), rtol=1e-5)
  # It is the soft-margin, softmax-weighted case of the general triplet loss.
  np.testing.assert_allclose(
      float(got), float(losses.triplet_loss(jnp.asarray(x), jnp.asarray(y), margin=0.0,
                                            hard_mining=False)), rtol=1e-6)
  assert 0.0 <= float(losses.wrt_accuracy(jnp.asarray(x), jnp.asarray(y))) <= 1.0
  # Separated clusters: every anchor correctly ordered and a small loss.
  apart = x / 10 + 3.0 * np.eye(5)[y]
  assert float(losses.wrt_accuracy(jnp.asarray(apart), jnp.asarray(y))) == 1.0
  assert float(losses.weighted_regularization_triplet(jnp.asarray(apart), jnp.asarray(y))) < 0.05
  # The reference's quirk, kept: when every negative is very far, exp(-d) vanishes against the
  # 1e-6 of the normaliser, the negative weights go to 0 and so does d^n.
  far = x / 10 + 50.0 * np.eye(5)[y]
  np.testing.assert_allclose(
      float(losses.weighted_regularization_triplet(jnp.asarray(far), jnp.asarray(y))),
      reference_wrt(far, y), rtol=1e-3)  # float32 distances of ~70: the expansion loses digits
  assert float(losses.wrt_accuracy(jnp.asarray(far), jnp.asarray(y))) == 0.0


# --------------------------------------------------------------------------------------------
# SYSU-MM01 protocol


def write_sysu_layout(root, rng):
  """Empty image files in the SYSU-MM01 layout: ids 1..6, cameras 1..6, 1-4 images each."""
  for pid in range(1, 7):
    for cam in range(1, 7):
      if rng.random() < 0.25:
        continue
      folder = root / f'cam{cam}' / f'{pid:04d}'
      folder.mkdir(parents=True)
      for n in rng.choice(np.arange(1, 20), size=rng.integers(1, 5), replace=False):
        (folder / f'{n:04d}.jpg').write_bytes(b'')
  return list(range(1, 7))


def reference_gallery(root, ids, trial, mode):
  """AGW's process_gallery_sysu (single-shot): paths of one trial's gallery."""
  random.seed(trial)
  cameras = ['cam1', 'cam2', 'cam4', 'cam5'] if mode == 'all' else ['cam1', 'cam2']
  files = []
  for pid in sorted('%04d' % i for i in ids):
    for cam in cameras:
      img_dir = os.path.join(root, cam, pid)
      if os.path.isdir(img_dir):
        new_files = sorted(img_dir + '/' + i for i in os.listdir(img_dir))
        files.append(random.choice(new_files))
  return [os.path.relpath(f, root) for f in files]


def split_from_folder(root, cameras, name):
  """The split the SYSU reader builds from the folder (path order), without TFDS."""
  names = sorted(os.path.relpath(os.path.join(d, f), root)
                 for d, _, fs in os.walk(root) for f in fs
                 if int(os.path.relpath(d, root).split('/')[0][3:]) in cameras)
  pids = np.array([int(n.split('/')[1]) for n in names], np.int32)
  camids = np.array([int(n.split('/')[0][3:]) - 1 for n in names], np.int32)
  n = len(names)
  return ReIDSplit(name, np.array([b''] * n, object), pids, camids, np.ones(n, np.int32),
                   np.zeros(n, np.int64), names, pids.copy())


@pytest.mark.parametrize('mode', ['all', 'indoor'])
def test_sysu_gallery_sampling_equals_reference(tmp_path, mode):
  ids = write_sysu_layout(tmp_path, np.random.default_rng(1))
  gallery = split_from_folder(tmp_path, (1, 2, 4, 5), 'gallery')
  for trial in range(3):
    got = [gallery.filenames[i] for i in sysu_mm01.sample_gallery(gallery, trial, mode)]
    assert got == reference_gallery(str(tmp_path), ids, trial, mode)
  multi = sysu_mm01.sample_gallery(gallery, 0, mode, shots=10)
  groups = {}
  for i in multi:
    groups.setdefault((gallery.pids[i], gallery.camids[i]), []).append(i)
  for (pid, camid), members in groups.items():  # every image (<= 10 per id-camera), no repeats
    expected = np.flatnonzero((gallery.pids == pid) & (gallery.camids == camid))
    assert sorted(members) == list(expected)


def reference_eval_sysu(distmat, q_pids, g_pids, q_cams, g_cams, max_rank):
  """AGW's eval_sysu with 1-based camera numbers (cam3 query drops every cam2 gallery image)."""
  indices = np.argsort(distmat, axis=1, kind='stable')
  cmc_id, cmc_img, aps, inps = [], [], [], []
  for q in range(len(q_pids)):
    order = indices[q]
    keep = ~((q_cams[q] == 3) & (g_cams[order] == 2))
    ranked = g_pids[order][keep]
    matches = (ranked == q_pids[q]).astype(np.int32)
    if not matches.any():
      continue
    unique = []
    for p in ranked:
      if p not in unique:
        unique.append(p)
    id_match = (np.array(unique) == q_pids[q]).astype(np.int32).cumsum()
    id_match = np.concatenate([id_match, np.full(max_rank, id_match[-1])])[:max_rank]
    cmc_id.append(id_match)
    cmc = matches.cumsum()
    last = np.max(np.where(matches == 1))
    inps.append(cmc[last] / (last + 1.0))
    cmc_img.append(np.minimum(cmc, 1)[:max_rank])
    aps.append(np.sum(cmc / (np.arange(len(cmc)) + 1.0) * matches) / matches.sum())
  return np.mean(cmc_id, 0), np.mean(cmc_img, 0), np.mean(aps), np.mean(inps), len(aps)


def test_sysu_rank_equals_reference():
  rng = np.random.default_rng(2)
  q_pids = rng.integers(0, 8, 40)
  q_cams = rng.choice([3, 6], 40)
  g_pids = np.repeat(np.arange(10), 6)
  g_cams = np.tile([1, 2, 4, 5, 1, 2], 10)
  dist = rng.random((40, 60))
  dist[:, ::7] = 0.5  # ties, broken by gallery index
  for max_rank in (5, 20):
    got = cm_eval.sysu_rank(dist, q_pids, g_pids, q_cams - 1, g_cams - 1, max_rank=max_rank)
    cmc, image_cmc, m_ap, m_inp, valid = reference_eval_sysu(dist, q_pids, g_pids, q_cams,
                                                             g_cams, max_rank)
    np.testing.assert_allclose(got.cmc, cmc)
    np.testing.assert_allclose(got.image_cmc, image_cmc)
    np.testing.assert_allclose(got.mAP, m_ap)
    np.testing.assert_allclose(got.mINP, m_inp)
    assert got.num_valid == valid
  assert np.all(got.cmc >= got.image_cmc) and got.cmc[0] == got.image_cmc[0]


def test_camera3_camera2_rule():
  # One query of identity 1 from camera 3; gallery: id 2 on camera 2 (nearest), id 1 on
  # camera 2, id 1 on camera 1. Camera-2 images are dropped for camera-3 queries only.
  g_pids, g_camids = np.array([2, 1, 1]), np.array([1, 1, 0])
  dist = np.array([[0.1, 0.2, 0.3]])
  from_cam3 = cm_eval.sysu_rank(dist, np.array([1]), g_pids, np.array([2]), g_camids, 3)
  from_cam6 = cm_eval.sysu_rank(dist, np.array([1]), g_pids, np.array([5]), g_camids, 3)
  assert from_cam3.cmc.tolist() == [1.0, 1.0, 1.0] and from_cam3.mAP == 1.0  # camera 1 kept
  assert from_cam6.image_cmc.tolist() == [0.0, 1.0, 1.0]
  np.testing.assert_allclose(from_cam6.mAP, (1 / 2 + 2 / 3) / 2)
  # Only camera-2 gallery images of id 1 for a camera-3 query: the query is skipped.
  only_cam2 = cm_eval.sysu_rank(np.repeat(dist[:, :2], 2, 0), np.array([1, 1]), g_pids[:2],
                                np.array([2, 5]), g_camids[:2], 3)
  assert (only_cam2.num_valid, only_cam2.num_skipped) == (1, 1)
  np.testing.assert_allclose(only_cam2.mAP, 0.5)  # the camera-6 query: its match at rank 2


def test_evaluate_sysu_averages_trials():
  rng = np.random.default_rng(3)
  qf, gf = rng.normal(size=(10, 4)), rng.normal(size=(30, 4))
  q_pids, g_pids = rng.integers(0, 5, 10), np.repeat(np.arange(5), 6)
  q_cams, g_cams = rng.choice([2, 5], 10), np.tile([0, 1, 3], 10)
  galleries = [rng.choice(30, 12, replace=False) for _ in range(3)]
  result = cm_eval.evaluate_sysu(qf, gf, q_pids, g_pids, q_cams, g_cams, galleries, max_rank=5)
  means = result.metrics()
  qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
  per_trial = []
  for idx in galleries:
    gn = gf[idx] / np.linalg.norm(gf[idx], axis=1, keepdims=True)
    per_trial.append(cm_eval.sysu_rank(1 - qn @ gn.T, q_pids, g_pids[idx], q_cams, g_cams[idx],
                                       max_rank=5))
  np.testing.assert_allclose(means['mAP'], np.mean([t.mAP for t in per_trial]), rtol=1e-6)
  np.testing.assert_allclose(means['rank5'], np.mean([t.cmc[4] for t in per_trial]), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Non-local and graph-reasoning blocks


def randomize(variables, seed, scale=0.3):
  """Every parameter and statistic replaced by random values (variances positive)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
  rng = np.random.default_rng(seed)
  out = []
  for path, leaf in leaves:
    value = rng.normal(size=leaf.shape) * scale
    if 'var' in jax.tree_util.keystr(path):
      value = np.abs(value) + 0.5
    out.append(jnp.asarray(value, leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def conv1x1(x, p):
  return x @ np.asarray(p['kernel']).reshape(x.shape[-1], -1) + np.asarray(p['bias'])


def test_nonlocal_equals_reference():
  x = np.random.default_rng(4).normal(size=(2, 3, 2, 6)).astype(np.float32)
  block = NonLocal(inter_channels=0)
  variables = jax.jit(lambda: block.init(jax.random.key(0), x, train=False))()
  apply = jax.jit(lambda v: block.apply(v, x, train=False))
  np.testing.assert_allclose(apply(variables), x)  # zero BN: identity
  variables = randomize(variables, 5)
  got = np.asarray(apply(variables))
  p, s = variables['params'], variables['batch_stats']
  b, h, w, c = x.shape
  flat = x.reshape(b, h * w, c).astype(np.float64)
  g, theta, phi = (conv1x1(flat, p[k]) for k in ('g', 'theta', 'phi'))
  assert g.shape[-1] == c // 2
  f = theta @ phi.transpose(0, 2, 1) / (h * w)
  y = conv1x1(f @ g, p['W_conv'])
  bn = p['W_bn']
  y = (y - s['W_bn']['mean']) / np.sqrt(s['W_bn']['var'] + 1e-5) * bn['scale'] + bn['bias']
  np.testing.assert_allclose(got, (y + flat).reshape(x.shape), rtol=1e-4, atol=1e-5)


def reference_attention(a, b, p):
  q, k, v = conv1x1(a, p['query']), conv1x1(b, p['key']), conv1x1(b, p['value'])
  e = q @ k.transpose(0, 2, 1)
  att = np.exp(e - e.max(-1, keepdims=True))
  att /= att.sum(-1, keepdims=True)
  return p['gamma'] * (att @ v)


def reference_graph(x, p, num_global):
  b, h, w, c = x.shape
  local = x.reshape(b, h * w, c).astype(np.float64)
  bounds = [(int(np.floor(i * h / num_global)), int(np.ceil((i + 1) * h / num_global)))
            for i in range(num_global)]
  glob = np.stack([x[:, lo:hi].mean(axis=(1, 2)) for lo, hi in bounds], axis=1)
  out = local + reference_attention(local, glob, p['global_to_local'])
  out = out + reference_attention(local, local, p['local_to_local'])
  upd = reference_attention(glob, local, p['local_to_global'])
  row_stripe = [r * num_global // h for r in range(h)]
  out = out + np.repeat(upd[:, row_stripe], w, axis=1)
  energy = out.transpose(0, 2, 1) @ out
  energy = energy.max(-1, keepdims=True) - energy
  att = np.exp(energy - energy.max(-1, keepdims=True))
  att /= att.sum(-1, keepdims=True)
  out = out + p['modality_similarity']['gamma'] * (out @ att.transpose(0, 2, 1))
  return out.reshape(b, h, w, c)


@pytest.mark.parametrize('num_global', [1, 2])
def test_graph_reasoning_equals_reference(num_global):
  x = np.random.default_rng(6).normal(size=(2, 5, 2, 32)).astype(np.float32) * 0.5
  block = graph_reasoning.CrossModalityGraphReasoning(reduction=16, num_global_nodes=num_global)
  variables = jax.jit(block.init)(jax.random.key(0), x)
  apply = jax.jit(block.apply)
  np.testing.assert_allclose(apply(variables, x), x)  # gammas start at 0: identity
  assert variables['params']['local_to_local']['query']['kernel'].shape == (32, 2)  # C / 16
  variables = randomize(variables, 7, scale=0.2)
  got = np.asarray(apply(variables, x))
  assert got.shape == x.shape
  params = jax.tree.map(np.asarray, flax.core.unfreeze(variables['params']))
  np.testing.assert_allclose(got, reference_graph(x, params, num_global), rtol=2e-4, atol=2e-5)
  # Switches: all off is the identity, parameters of disabled modules are absent.
  off = graph_reasoning.CrossModalityGraphReasoning(False, False, False, False)
  assert off.init(jax.random.key(0), x) == {} or not off.init(jax.random.key(0), x).get('params')
  only_l2l = graph_reasoning.CrossModalityGraphReasoning(True, False, False, False)
  assert set(only_l2l.init(jax.random.key(0), x)['params']) == {'local_to_local'}


# --------------------------------------------------------------------------------------------
# Sampler


@pytest.mark.parametrize('p,kv,kir', [(8, 4, 4), (3, 2, 1)])
def test_sampler_batches(p, kv, kir):
  rng = np.random.default_rng(8)
  labels = np.repeat(np.arange(12), 10)
  infrared = rng.random(len(labels)) < 0.4
  infrared[::10], infrared[1::10] = True, False  # every id has both modalities
  labels[-3:] = 12  # id 12: visible only, never sampled
  infrared[-3:] = False
  sampler = CrossModalitySampler(labels, infrared, p, kv, kir, seed=3)
  n_vis, n_ir = int((~infrared).sum()), int(infrared.sum())
  assert sampler.batches_per_epoch == max(n_vis, n_ir) // (p * kv) + 1
  assert sampler.batch_size == p * (kv + kir) and sampler.num_skipped_ids == 1
  batches = sampler.epoch(0)
  assert batches.shape == (sampler.batches_per_epoch, p * (kv + kir))
  for batch in batches:
    groups = batch.reshape(p, kv + kir)
    ids = labels[groups[:, 0]]
    assert len(set(ids)) == p and 12 not in ids
    assert np.all(labels[groups] == ids[:, None])
    assert not infrared[groups[:, :kv]].any() and infrared[groups[:, kv:]].all()
  np.testing.assert_array_equal(sampler.steps(2, 5), np.concatenate(
      [batches, sampler.epoch(1)])[2:5])
  np.testing.assert_array_equal(CrossModalitySampler(labels, infrared, p, kv, kir, 3).epoch(0),
                                batches)
  with pytest.raises(ValueError, match='num_ids'):
    CrossModalitySampler(labels, infrared, 13, kv, kir)


# --------------------------------------------------------------------------------------------
# Two-stream model


def tiny_model(specific_stages=0, single_stream=False):
  from jreid import models  # pylint: disable=g-import-not-at-top
  cfg = models.default_model_config()
  cfg.name = 'two_stream'
  cfg.backbone.name = 'resnet18'
  cfg.backbone.width = 4
  cfg.backbone.with_nl = True
  cfg.backbone.nl_inter_channels = 0
  cfg.pooling.name = 'gem'
  cfg.two_stream = two_stream.default_two_stream_config()
  cfg.two_stream.specific_stages = specific_stages
  cfg.two_stream.single_stream = single_stream
  return models.build_model(cfg, 5)


def test_two_stream_routing_and_masked_statistics():
  model = tiny_model(specific_stages=1)
  rng = np.random.default_rng(9)
  images = jnp.asarray(rng.integers(0, 255, (4, 32, 16, 3)), jnp.uint8)
  modality = jnp.array([0, 1, 0, 1])
  # The 'rbg' generator: the initialisers compile several times faster than threefry on CPU.
  variables = jax.jit(lambda: model.init(jax.random.key(0, impl='rbg'), images, modality,
                                         train=False))()
  params = variables['params']['backbone']
  assert {'visible', 'infrared', 'NL_2_0', 'layer2_0'} <= set(params)
  assert 'layer1_0' in params['visible'] and 'layer1_0' not in params
  variables = {'params': variables['params'],
               'batch_stats': randomize(variables['batch_stats'], 10, 0.1)}
  embed = jax.jit(lambda x, m: model.apply(variables, x, m, train=False)['embedding'])
  emb = embed(images, modality)
  assert emb.shape == (4, 32)
  # Each image goes through its own stream only: the same result alone with its modality.
  # (Batches of one image repeated: same shapes, no recompilation; eval BatchNorm is per image.)
  for i in (0, 1):
    alone = embed(images[jnp.full(4, i)], jnp.full(4, modality[i]))
    np.testing.assert_allclose(alone[0], emb[i], rtol=1e-4, atol=1e-5)
  assert not np.allclose(embed(images, 1 - modality), emb, atol=1e-3)

  # Training: a stream's BatchNorm statistics come from its own modality's images only.
  @jax.jit
  def visible_stats(imgs):
    _, updated = model.apply(variables, imgs, modality, train=True, mutable=['batch_stats'])
    return updated['batch_stats']['backbone']['visible']['bn1']['mean']

  other = images.at[1].set(0).at[3].set(255)  # infrared images changed
  np.testing.assert_allclose(visible_stats(images), visible_stats(other), rtol=1e-6)
  assert not np.allclose(visible_stats(images), visible_stats(images.at[0].set(0)))

  # One stream (config.model.two_stream.single_stream): the network above with the visible
  # front in both streams, for either modality; its BatchNorm statistics see the whole batch.
  single = tiny_model(specific_stages=1, single_stream=True)
  fronts = {k: v for k, v in variables.items()}
  for collection in ('params', 'batch_stats'):
    backbone = dict(variables[collection]['backbone'])
    backbone['shared'] = backbone.pop('visible')
    del backbone['infrared']
    fronts[collection] = {**variables[collection], 'backbone': backbone}
  assert jax.tree.structure(fronts) == jax.tree.structure(jax.eval_shape(
      lambda: single.init(jax.random.key(0, impl='rbg'), images, modality, train=False)))
  copied = {c: {**variables[c], 'backbone': {**variables[c]['backbone'],
                                             'infrared': variables[c]['backbone']['visible']}}
            for c in variables}
  want = model.apply(copied, images, modality, train=False)['embedding']
  for m in (modality, 1 - modality):
    np.testing.assert_allclose(single.apply(fronts, images, m, train=False)['embedding'], want,
                               rtol=1e-6, atol=1e-7)
  _, updated = single.apply(fronts, images, modality, train=True, mutable=['batch_stats'])
  _, changed = single.apply(fronts, other, modality, train=True, mutable=['batch_stats'])
  assert not np.allclose(updated['batch_stats']['backbone']['shared']['bn1']['mean'],
                         changed['batch_stats']['backbone']['shared']['bn1']['mean'])


# --------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize('name', ['agw_sysu', 'agw_regdb', 'cmgr_sysu', 'cmgr_regdb'])
def test_configs(name):
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(__file__), '..', 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  default, paper = module.get_config(), module.get_config('paper')
  assert default.dataset.name == 'synthreid_ir' and default.method == 'cross_modality'
  assert paper.input.height == 288 and paper.train.epochs == 81 and paper.batch_size == 64
  assert paper.optim.nesterov and paper.optim.milestones == (20, 50)
  if name.startswith('agw'):
    assert tuple(paper.loss.names) == ('cross_entropy', 'wrt')
  else:
    assert paper.loss.triplet.weight == 2.0 and paper.model.two_stream.specific_stages == 1
  with pytest.raises(ValueError, match='unknown variant'):
    module.get_config('market1501')


# --------------------------------------------------------------------------------------------
# The paper recipe: per-epoch warmup and ImageNet weights


def reference_adjust_learning_rate(base_lr, epoch):
  """AGW train.py's adjust_learning_rate: (backbone group lr, bottleneck/classifier lr)."""
  if epoch < 10:
    lr = base_lr * (epoch + 1) / 10
  elif epoch < 20:
    lr = base_lr
  elif epoch < 50:
    lr = base_lr * 0.1
  else:
    lr = base_lr * 0.01
  return 0.1 * lr, lr


@pytest.mark.parametrize('name', ['agw_sysu', 'cmgr_regdb'])
def test_paper_schedule_equals_reference_per_epoch(name):
  from jreid import optim  # pylint: disable=g-import-not-at-top
  cfg = _config_module(name).get_config('paper').optim
  assert cfg.warmup_per_epoch
  spe = 3
  sched = jax.jit(jax.vmap(optim.learning_rate_schedule(cfg, spe, 81 * spe)))
  lrs = np.asarray(sched(jnp.arange(81 * spe)), np.float64).reshape(81, spe)
  tree = {'backbone': {'visible': {'conv1': {'kernel': 0}}, 'layer2_0': {'bn1': {'bias': 0}}},
          'head': {'classifier': {'kernel': 0}, 'bnneck': {'scale': 0}}}
  _, factors = optim.param_hyperparams(tree, cfg)
  for epoch in range(81):
    backbone, new = reference_adjust_learning_rate(0.1, epoch)
    for step_lr in lrs[epoch]:  # constant within the epoch
      np.testing.assert_allclose(step_lr * factors['backbone']['visible']['conv1']['kernel'],
                                 backbone, rtol=1e-6)
      np.testing.assert_allclose(step_lr * factors['backbone']['layer2_0']['bn1']['bias'],
                                 backbone, rtol=1e-6)
      np.testing.assert_allclose(step_lr * factors['head']['classifier']['kernel'], new,
                                 rtol=1e-6)
      np.testing.assert_allclose(step_lr * factors['head']['bnneck']['scale'], new, rtol=1e-6)
  # The default (per-step) warmup is unchanged: it grows inside epoch 0.
  cfg.warmup_per_epoch = False
  per_step = optim.learning_rate_schedule(cfg, spe, 81 * spe)
  assert float(per_step(0)) < float(per_step(1)) < float(per_step(2))
  cfg.warmup_per_epoch, cfg.warmup_epochs = True, 2.5
  with pytest.raises(ValueError, match='whole number of warmup_epochs'):
    optim.learning_rate_schedule(cfg, spe, 81 * spe)


def _config_module(name):
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(__file__), '..', 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def torch_resnet18(width):
  """A torchvision-named ResNet-18 (basic blocks) of the given width, last stride 1, with random
  weights and BatchNorm statistics, built from torch.nn primitives."""
  torch = pytest.importorskip('torch')
  tnn = torch.nn

  class Block(tnn.Module):

    def __init__(self, inplanes, planes, stride):
      super().__init__()
      self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
      self.bn1 = tnn.BatchNorm2d(planes)
      self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
      self.bn2 = tnn.BatchNorm2d(planes)
      self.downsample = None
      if stride != 1 or inplanes != planes:
        self.downsample = tnn.Sequential(tnn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                         tnn.BatchNorm2d(planes))

    def forward(self, x):
      y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
      return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

  class Net(tnn.Module):

    def __init__(self):
      super().__init__()
      self.conv1 = tnn.Conv2d(3, width, 7, 2, 3, bias=False)
      self.bn1 = tnn.BatchNorm2d(width)
      self.maxpool = tnn.MaxPool2d(3, 2, 1)
      inplanes = width
      for i in range(4):
        planes, stride = width * 2**i, (1, 2, 2, 1)[i]
        setattr(self, f'layer{i + 1}', tnn.Sequential(Block(inplanes, planes, stride),
                                                       Block(planes, planes, 1)))
        inplanes = planes
      self.fc = tnn.Linear(inplanes, 10)

    def forward(self, x):
      x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
      return self.layer4(self.layer3(self.layer2(self.layer1(x))))

  torch.manual_seed(0)
  net = Net().eval()
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, tnn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
  return net


@pytest.mark.parametrize('specific_stages', [0, 1])
def test_pretrained_resnet_fills_both_streams(tmp_path, specific_stages):
  torch = pytest.importorskip('torch')
  from jreid import models  # pylint: disable=g-import-not-at-top
  from jreid import weights  # pylint: disable=g-import-not-at-top
  from jreid.methods import cross_modality  # pylint: disable=g-import-not-at-top
  width = 16
  net = torch_resnet18(width)
  torch.save(net.state_dict(), tmp_path / 'r18.pth')  # with fc.* and num_batches_tracked
  cfg = models.default_model_config()
  cfg.name = 'two_stream'
  cfg.backbone.name = 'resnet18'
  cfg.backbone.width = width
  cfg.backbone.with_nl = True
  cfg.backbone.nl_layers = (0, 1, 1, 0)
  cfg.pooling.name = 'gem'
  cfg.two_stream = two_stream.default_two_stream_config()
  cfg.two_stream.specific_stages = specific_stages
  cfg.two_stream.graph.local_to_local = bool(specific_stages)  # graph reasoning with the cmgr
  cfg.two_stream.graph.modality_similarity = bool(specific_stages)
  model = models.build_model(cfg, 5)
  images, modality = jnp.zeros((2, 64, 32, 3), jnp.uint8), jnp.array([0, 1])
  # The model's variables as zeros (no compiled init): the non-local blocks (zero BatchNorm
  # scale) and the graph modules (zero gammas) are then the identity, as after their own init.
  initial = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(
      lambda: model.init(jax.random.key(0), images, modality, train=False)))
  loaded, left_out = cross_modality.load_pretrained_two_stream(initial, tmp_path / 'r18.pth', cfg)
  expected = ['backbone/NL_2_0', 'backbone/NL_3_0'] + (['backbone/graph'] if specific_stages
                                                       else []) + ['head']
  assert left_out == expected
  p, p0 = loaded['params']['backbone'], initial['params']['backbone']
  for module in ('NL_2_0', 'NL_3_0') + (('graph',) if specific_stages else ()):
    jax.tree.map(np.testing.assert_array_equal, p[module], p0[module])
  jax.tree.map(np.testing.assert_array_equal, loaded['params']['head'], initial['params']['head'])
  np.testing.assert_array_equal(p['visible']['conv1']['kernel'],
                                net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
  jax.tree.map(np.testing.assert_array_equal, p['visible'], p['infrared'])
  assert ('layer1_0' in p['visible']) == bool(specific_stages)
  # A single-stream model's one front gets the stem too.
  cfg.two_stream.single_stream = True
  single = models.build_model(cfg, 5)
  initial_single = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(
      lambda: single.init(jax.random.key(0), images, modality, train=False)))
  shared = cross_modality.load_pretrained_two_stream(initial_single, tmp_path / 'r18.pth',
                                                     cfg)[0]['params']['backbone']
  assert 'visible' not in shared and 'infrared' not in shared
  jax.tree.map(np.testing.assert_array_equal, shared['shared'], p['visible'])
  cfg.two_stream.single_stream = False

  # The trunk of each stream equals the torch network's layer4 output (eval mode).
  x = np.random.default_rng(11).normal(size=(2, 64, 32, 3)).astype(np.float32)
  trunk = jax.jit(lambda v, x, m: model.backbone.apply(
      {'params': v['params']['backbone'], 'batch_stats': v['batch_stats']['backbone']}, x, m,
      train=False))
  with torch.no_grad():
    want = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  for m in ([0, 0], [1, 1], [0, 1]):
    got = np.asarray(trunk(loaded, x, jnp.array(m)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

  # Strict elsewhere: a missing tensor and a FastReID checkpoint are clear errors.
  state = {k: v.numpy() for k, v in net.state_dict().items() if k != 'layer3.0.conv1.weight'}
  np.savez(tmp_path / 'cut.npz', **state)
  with pytest.raises(weights.WeightConversionError, match='layer3_0/conv1/kernel'):
    cross_modality.load_pretrained_two_stream(initial, tmp_path / 'cut.npz', cfg)
  np.savez(tmp_path / 'fastreid.npz', **{f'backbone.{k}': v for k, v in state.items()})
  with pytest.raises(weights.WeightConversionError, match='FastReID checkpoint'):
    cross_modality.load_pretrained_two_stream(initial, tmp_path / 'fastreid.npz', cfg)


def test_two_stream_takes_input_norm_from_the_config():
  """The two-stream model normalises with `baseline.normalize_input` (tested there)."""
  from jreid import models  # pylint: disable=g-import-not-at-top
  from configs import agw_sysu  # pylint: disable=g-import-not-at-top
  cfg = agw_sysu.get_config().model
  assert cfg.input_norm == 'per_image'  # the SynthReID-IR default
  assert models.build_model(cfg, num_classes=3).input_norm == 'per_image'
  cfg.input_norm = 'fixed'
  assert models.build_model(cfg, num_classes=3).input_norm == 'fixed'
  cfg.input_norm = 'grey'
  with pytest.raises(ValueError, match='input_norm'):
    models.build_model(cfg, num_classes=3)
