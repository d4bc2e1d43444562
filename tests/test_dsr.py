"""DSR partial matching: the batched distances against a plain numpy least-squares solver, the
alignment-free property, and the 'dsr' row of a supervised run and of a partial test set."""

from __future__ import annotations

import numpy as np
import pytest

import tiny
from jreid import checkpoint
from jreid import parts
from jreid import train
from jreid.evaluation import dsr
from jreid.evaluation import evaluate_rank
from jreid.method import Inference


def _numpy_dsr(query, gallery, lam, normalize):
  """Per pair: W = argmin ||X - Y W||^2 + lam ||W||^2 by np.linalg.solve, error / N."""
  out = np.zeros((len(query), len(gallery)))
  for i, q in enumerate(query):
    x = q.reshape(-1, q.shape[-1]).astype(np.float64)
    if normalize:
      x = x / np.linalg.norm(x, axis=1, keepdims=True)
    x = x.T  # d x N: one column per location.
    for j, g in enumerate(gallery):
      y = g.reshape(-1, g.shape[-1]).astype(np.float64)
      if normalize:
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
      y = y.T
      w = np.linalg.solve(y.T @ y + lam * np.eye(y.shape[1]), y.T @ x)
      out[i, j] = np.sum((x - y @ w) ** 2) / x.shape[1]
  return out


@pytest.mark.parametrize('lam,normalize', [(0.01, True), (0.5, True), (0.1, False)])
def test_dsr_equals_a_numpy_least_squares_solver(lam, normalize):
  rng = np.random.default_rng(0)
  query = rng.normal(size=(5, 4, 2, 24)).astype(np.float32)  # N = 8 locations.
  gallery = rng.normal(size=(7, 3, 3, 24)).astype(np.float32)  # M = 9: another map size.
  expected = _numpy_dsr(query, gallery, lam, normalize)
  # Blocks that do not divide the counts (the last ones padded), and the defaults.
  for blocks in ({'query_block': 2, 'gallery_block': 3}, {}):
    got = dsr.dsr_distance(query, gallery, lam, normalize, **blocks)
    assert got.shape == (5, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-5)
  flat = dsr.dsr_distance(query.reshape(5, 8, 24), gallery.reshape(7, 9, 24), lam, normalize)
  np.testing.assert_allclose(flat, expected, rtol=2e-4, atol=1e-5)


def test_multi_scale_blocks_and_the_fused_distance_equal_numpy():
  rng = np.random.default_rng(3)
  maps = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)
  blocks = dsr.block_features(maps, (1, 2, 3))
  expected = []
  for k in (1, 2, 3):  # Every k x k window, row by row, stride 1.
    for i in range(4 - k + 1):
      for j in range(3 - k + 1):
        expected.append(maps[:, i:i + k, j:j + k].mean(axis=(1, 2)))
  assert blocks.shape == (2, 12 + 6 + 2, 5)
  np.testing.assert_allclose(blocks, np.stack(expected, 1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dsr.block_features(maps, (1, 5)), maps.reshape(2, 12, 5))  # 5 > 3
  query, gallery = maps, rng.normal(size=(3, 4, 3, 5)).astype(np.float32)
  np.testing.assert_allclose(
      dsr.dsr_distance(query, gallery, 0.1, scales=(1, 2)),
      _numpy_dsr(dsr.block_features(query, (1, 2)), dsr.block_features(gallery, (1, 2)), 0.1,
                 True), rtol=2e-4, atol=1e-5)
  a, b = rng.random((3, 4)), 10.0 * rng.random((3, 4)) + 5.0
  z = lambda d: (d - d.mean()) / d.std()
  np.testing.assert_allclose(dsr.fuse_with_global(a, b), z(a) + z(b), rtol=1e-5, atol=1e-6)


def test_a_partial_query_is_rebuilt_from_its_whole_body_without_alignment():
  """A query showing only gallery 3's upper body, stretched to the full map (each row twice),
  is nearest to gallery 3 by DSR; the mean-pooled feature is nearer to another gallery."""
  rng = np.random.default_rng(1)
  gallery = rng.normal(size=(6, 8, 4, 32)).astype(np.float32)
  gallery /= np.linalg.norm(gallery, axis=-1, keepdims=True)
  query = np.repeat(gallery[3, :4], 2, axis=0)[None]  # Rows 0-3 of gallery 3, stretched.
  # A decoy whose every location is the upper body's mean feature (plus a little noise): its
  # pooled feature is the query's, its locations rebuild none of the query's.
  mean = query[0].mean(axis=(0, 1))
  decoy = mean / np.linalg.norm(mean) + 0.05 * rng.normal(size=(8, 4, 32)).astype(np.float32)
  gallery[0] = decoy / np.linalg.norm(decoy, axis=-1, keepdims=True)
  dist = dsr.dsr_distance(query, gallery, lam=0.01)[0]
  assert np.argmin(dist) == 3 and dist[3] < 0.01 < dist.min(initial=1.0, where=np.arange(6) != 3)
  pooled = lambda m: m.mean(axis=(-3, -2)) / np.linalg.norm(m.mean(axis=(-3, -2)), axis=-1,
                                                              keepdims=True)
  assert np.argmax(pooled(gallery) @ pooled(query)[0]) == 0


def test_dsr_errors_name_the_problem():
  maps = np.zeros((2, 4, 8), np.float32)
  with pytest.raises(ValueError, match='lam must be > 0'):
    dsr.dsr_distance(maps, maps, lam=0.0)
  with pytest.raises(ValueError, match='query maps have 8 channels, gallery maps 6'):
    dsr.dsr_distance(maps, np.zeros((2, 4, 6), np.float32))
  with pytest.raises(ValueError, match=r'must be \[n, h, w, d\] or \[n, h\*w, d\], got \(4, 8\)'):
    dsr.dsr_distance(maps[0], maps)


def _partial_reid_layout(root, query, gallery):
  """A Partial-REID folder (partial_body_images/, whole_body_images/; PPP_NN.jpg) made of the
  images of two splits, identities renumbered 1..n."""
  common = sorted(p for p in set(query.pids) & set(gallery.pids) if p > 0)
  ids = {pid: i + 1 for i, pid in enumerate(common)}
  for split, folder in ((query, 'partial_body_images'), (gallery, 'whole_body_images')):
    (root / folder).mkdir(parents=True)
    counts = {}
    for image, pid in zip(split.images, split.pids):
      if pid in ids:
        counts[pid] = counts.get(pid, 0) + 1
        (root / folder / f'{ids[pid]:03d}_{counts[pid]:02d}.jpg').write_bytes(image)


def test_supervised_dsr_row_on_occluded_queries_and_a_partial_test_set(tmp_path):
  config = tiny.config('dsr', tmp_path, epochs=1, steps=2)
  assert config.dataset.name == 'synthreid_occluded' and config.dsr.enabled
  config.eval.untrained = False
  config.eval.histogram_baseline = False
  config.eval.roc = False
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  for key in ('mAP', 'dsr/mAP', 'dsr + global/mAP', '@synthreid/mAP', '@synthreid + dsr/mAP'):
    assert 0.0 <= results[key] <= 1.0, key
  assert 'trained + dsr' in (tmp_path / 'run' / 'report.md').read_text()

  # The row is DSR of the trained network's feature maps of the query and gallery splits.
  run = train.build_run(config, tmp_path / 'run', write_config=False)
  state = run.checkpointer.restore(run.method.state)
  run.checkpointer.close()
  model = run.method.inference.model
  maps_of = parts.embedder(Inference(
      model=model, init=None,
      embed=lambda v, x: model.apply(v, x, train=False, feature_map=True)['feature_map']),
      run.mesh)
  query, gallery = run.data.splits['query'], run.data.splits['gallery']
  qm = maps_of(state.params, state.batch_stats, query, config.input, 32)
  gm = maps_of(state.params, state.batch_stats, gallery, config.input, 32)
  assert qm.shape[1:] == (2, 1, 8 * config.model.backbone.width)  # 32x16 input, stride 16.
  assert config.dsr.scales == (1, 2, 3)  # Blocks larger than the 2 x 1 map are skipped.
  expected = evaluate_rank(dsr.dsr_distance(qm, gm, config.dsr.lam, scales=config.dsr.scales),
                           query.pids, gallery.pids, query.camids, gallery.camids,
                           max_rank=config.eval.max_rank)
  assert results['dsr/mAP'] == pytest.approx(expected.to_dict()['mAP'], abs=1e-6)

  # A Partial-REID test set (the occluded queries and the gallery in its layout) gets its row.
  _partial_reid_layout(tmp_path / 'Partial_REID', query, gallery)
  config.eval.testsets = (f'partial_reid:{tmp_path / "Partial_REID"}',)
  last = checkpoint.complete_steps(tmp_path / 'run' / 'checkpoints')[-1]
  out = train.evaluate_checkpoint(config, str(tmp_path / 'eval'),
                                  str(tmp_path / 'run' / 'checkpoints' / str(last)))
  assert 0.0 <= out['@partial_reid + dsr/mAP'] <= 1.0
  assert 0.0 <= out['@partial_reid/mAP'] <= 1.0
