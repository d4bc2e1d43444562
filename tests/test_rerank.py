"""Tests of k-reciprocal re-ranking and the Jaccard distance against loop-by-loop references."""

import numpy as np
import pytest

from jreid.evaluation import distance
from jreid.evaluation import metrics
from jreid.evaluation import rerank


def stable_rank(dist):
  return np.argsort(dist, axis=1, kind='stable')


def reciprocal_set(rank, i, width):
  """Items j among the first `width` of i's ranking that have i among their first `width`."""
  result = []
  for j in rank[i, :width]:
    if i in list(rank[j, :width]):
      result.append(int(j))
  return result


def encode_and_jaccard(dist, rank, full_width, half_width, k2, rows, cols):
  """Steps 1-4 of the module docstring, one item at a time; returns jaccard[rows][:, cols]."""
  n = dist.shape[0]
  v = np.zeros((n, n), np.float64)
  for p in range(n):
    full = reciprocal_set(rank, p, full_width)
    expanded = set(full)
    for c in full:
      half = reciprocal_set(rank, c, half_width)
      if len(set(half) & set(full)) > 2.0 / 3.0 * len(half):
        expanded |= set(half)
    expanded = sorted(expanded)
    weights = np.exp(-dist[p, expanded].astype(np.float64))
    v[p, expanded] = weights / weights.sum()
  if k2 != 1:
    v = np.stack([v[rank[p, :k2]].mean(axis=0) for p in range(n)])
  jaccard = np.zeros((len(rows), len(cols)))
  for a, p in enumerate(rows):
    for b, g in enumerate(cols):
      shared = 0.0
      for j in range(n):
        if v[p, j] != 0 and v[g, j] != 0:
          shared += min(v[p, j], v[g, j])
      jaccard[a, b] = 1.0 - shared / (2.0 - shared)
  return jaccard


def reference_rerank(q_g, q_q, g_g, k1, k2, lambda_value):
  num_query = q_g.shape[0]
  original = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
  original = (original / original.max(axis=0)).T  # column max, then transposed
  n = original.shape[0]
  rank = stable_rank(original)
  jaccard = encode_and_jaccard(original, rank, k1 + 1, int(np.around(k1 / 2)) + 1, k2,
                               list(range(num_query)), list(range(num_query, n)))
  return (1 - lambda_value) * jaccard + lambda_value * original[:num_query, num_query:]


def reference_jaccard(features, k1, k2, metric):
  x = features.astype(np.float64)
  if metric == 'cosine':
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 2.0 - 2.0 * x @ x.T
  else:
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  rank = stable_rank(dist)[:, :k1]
  n = len(x)
  jaccard = encode_and_jaccard(dist, rank, k1, int(np.around(k1 / 2)) + 1, k2,
                               list(range(n)), list(range(n)))
  return np.maximum(jaccard, 0.0)


def euclidean(a, b):
  return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).astype(np.float32)


@pytest.mark.parametrize('k1,k2,lambda_value', [(20, 6, 0.3), (5, 3, 0.5), (4, 1, 0.0)])
def test_rerank_matches_reference(k1, k2, lambda_value):
  rng = np.random.default_rng(k1 + k2)
  q, g = rng.normal(size=(7, 8)), rng.normal(size=(23, 8))
  q_g, q_q, g_g = euclidean(q, g), euclidean(q, q), euclidean(g, g)
  got = rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value)
  assert got.shape == (7, 23) and got.dtype == np.float32
  np.testing.assert_allclose(got, reference_rerank(q_g, q_q, g_g, k1, k2, lambda_value),
                             atol=1e-6, rtol=0)


def test_rerank_hand_built_case():
  # Points on a line: query at 0; gallery at 0.1, 0.2 (same cluster) and 5, 5.1 (far cluster).
  q = np.array([[0.0]])
  g = np.array([[0.1], [0.2], [5.0], [5.1]])
  q_g, q_q, g_g = euclidean(q, g), euclidean(q, q), euclidean(g, g)
  got = rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1=2, k2=1, lambda_value=0.0)
  # R(query, 2) = {query, 0.1, 0.2}; the far points share nothing with it: distance exactly 1.
  np.testing.assert_allclose(got[0, 2:], [1.0, 1.0], atol=1e-7)
  assert got[0, 0] < got[0, 1] < 1.0
  np.testing.assert_allclose(got, reference_rerank(q_g, q_q, g_g, 2, 1, 0.0), atol=1e-6, rtol=0)
  # lambda = 1 leaves the normalised original distance: d^2 / max_j d(j, query)^2.
  only_original = rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1=2, k2=1, lambda_value=1.0)
  np.testing.assert_allclose(only_original[0], q_g[0] ** 2 / 5.1 ** 2, rtol=1e-6)


def test_rerank_improves_planted_clusters():
  # Identities are clusters elongated along random directions: a query's nearest neighbours
  # include other identities, but its k-reciprocal neighbourhood is its own cluster.
  rng = np.random.default_rng(0)
  num_ids, per_id, dim = 8, 6, 16
  centers = rng.normal(size=(num_ids, dim)) * 1.2
  pids = np.repeat(np.arange(1, num_ids + 1), per_id)
  directions = rng.normal(size=(num_ids, dim))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  feats = (centers[pids - 1] + rng.normal(size=(len(pids), 1)) * 2.0 * directions[pids - 1]
           + rng.normal(size=(len(pids), dim)) * 0.3)
  is_query = np.tile(np.arange(per_id) == 0, num_ids)
  q, g = feats[is_query], feats[~is_query]
  q_pids, g_pids = pids[is_query], pids[~is_query]
  q_cams, g_cams = np.zeros(len(q), int), np.ones(len(g), int)
  q_g, q_q, g_g = euclidean(q, g), euclidean(q, q), euclidean(g, g)

  before = metrics.evaluate_rank(q_g, q_pids, g_pids, q_cams, g_cams)
  reranked = rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1=6, k2=3, lambda_value=0.3)
  after = metrics.evaluate_rank(reranked, q_pids, g_pids, q_cams, g_cams)
  assert not np.array_equal(np.argsort(reranked, axis=1), np.argsort(q_g, axis=1))
  assert after.mAP > before.mAP + 0.05, (before.mAP, after.mAP)


@pytest.mark.parametrize('metric', ['cosine', 'euclidean'])
@pytest.mark.parametrize('k1,k2', [(30, 6), (7, 3), (5, 1)])
def test_jaccard_distance_matches_reference(metric, k1, k2):
  rng = np.random.default_rng(k1)
  features = rng.normal(size=(30, 8)).astype(np.float32)
  got = rerank.jaccard_distance(features, k1=k1, k2=k2, metric=metric)
  assert got.shape == (30, 30) and got.dtype == np.float32
  np.testing.assert_allclose(got, reference_jaccard(features, k1, k2, metric), atol=1e-6, rtol=0)


def test_jaccard_distance_two_far_clusters():
  rng = np.random.default_rng(1)
  features = np.concatenate([rng.normal(size=(5, 4)) * 0.01 + 10.0,
                             rng.normal(size=(5, 4)) * 0.01 - 10.0]).astype(np.float32)
  got = rerank.jaccard_distance(features, k1=4, k2=2, metric='euclidean')
  # Different clusters share no k-reciprocal neighbour: distance exactly 1; a point to itself: 0.
  np.testing.assert_array_equal(got[:5, 5:], 1.0)
  np.testing.assert_allclose(np.diag(got), 0.0, atol=1e-6)
  assert (got[:5, :5] < 1.0).all()


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match='g_g_dist'):
    rerank.k_reciprocal_rerank(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 2)))
  with pytest.raises(ValueError, match='k1'):
    rerank.jaccard_distance(np.zeros((4, 2)), k1=30)
  with pytest.raises(ValueError, match='metric'):
    rerank.jaccard_distance(np.ones((4, 2)), k1=3, k2=1, metric='l1')


def test_ties_are_broken_by_index():
  # Integer features with many duplicates: rankings rely on the stable (index) tie order.
  rng = np.random.default_rng(3)
  features = rng.integers(0, 3, size=(24, 3)).astype(np.float32)
  got = rerank.jaccard_distance(features, k1=6, k2=3, metric='euclidean')
  np.testing.assert_allclose(got, reference_jaccard(features, 6, 3, 'euclidean'), atol=1e-6,
                             rtol=0)
  q_g, q_q, g_g = (euclidean(features[:6], features[6:]), euclidean(features[:6], features[:6]),
                   euclidean(features[6:], features[6:]))
  np.testing.assert_allclose(rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1=5, k2=2),
                             reference_rerank(q_g, q_q, g_g, 5, 2, 0.3), atol=1e-6, rtol=0)


def test_chunked_computation_matches(monkeypatch):
  rng = np.random.default_rng(5)
  features = rng.normal(size=(30, 8)).astype(np.float32)
  q_g, q_q, g_g = (euclidean(features[:9], features[9:]), euclidean(features[:9], features[:9]),
                   euclidean(features[9:], features[9:]))
  whole = (rerank.jaccard_distance(features, k1=8, k2=3),
           rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1=8, k2=3))
  monkeypatch.setattr(rerank, '_RANK_CHUNK_ROWS', 4)
  monkeypatch.setattr(rerank, '_JACCARD_CHUNK_ELEMENTS', 50)
  chunked = (rerank.jaccard_distance(features, k1=8, k2=3),
             rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1=8, k2=3))
  for a, b in zip(whole, chunked):
    np.testing.assert_array_equal(a, b)


def test_rerank_asymmetric_inputs_match_reference():
  # The classic algorithm reads columns of [[qq, qg], [qg^T, gg]]: asymmetric inputs check that
  # the chunked rows are columns, not rows.
  rng = np.random.default_rng(11)
  q_g = rng.random((6, 20)).astype(np.float32)
  q_q = rng.random((6, 6)).astype(np.float32)
  g_g = rng.random((20, 20)).astype(np.float32)
  got = rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1=5, k2=3, lambda_value=0.3)
  np.testing.assert_allclose(got, reference_rerank(q_g, q_q, g_g, 5, 3, 0.3), atol=1e-6, rtol=0)


def test_rerank_transpose_tiles(monkeypatch):
  rng = np.random.default_rng(12)
  q, g = rng.normal(size=(9, 4)), rng.normal(size=(31, 4))
  q_g, q_q, g_g = euclidean(q, g), euclidean(q, q) + 0.01, euclidean(g, g)
  whole = rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1=6, k2=2)
  monkeypatch.setattr(rerank, '_TRANSPOSE_TILE', 4)
  monkeypatch.setattr(rerank, '_RANK_CHUNK_ROWS', 5)
  np.testing.assert_array_equal(rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1=6, k2=2), whole)


def planted_problem(seed, num_ids=12, per_id=6, dim=16):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(num_ids, dim)) * 1.2
  pids = np.repeat(np.arange(1, num_ids + 1), per_id)
  directions = rng.normal(size=(num_ids, dim))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  feats = (centers[pids - 1] + rng.normal(size=(len(pids), 1)) * 2.0 * directions[pids - 1]
           + rng.normal(size=(len(pids), dim)) * 0.3).astype(np.float32)
  is_query = np.tile(np.arange(per_id) == 0, num_ids)
  return feats[is_query], feats[~is_query], pids[is_query], pids[~is_query]


@pytest.mark.parametrize('host_blas', [True, False])  # the CPU path and the accelerators' path
@pytest.mark.parametrize('metric', ['euclidean', 'cosine'])
def test_rerank_features_equals_exact_mode(metric, host_blas):
  q, g, q_pids, g_pids = planted_problem(1)
  feats = np.concatenate([q, g])
  dist = distance.compute_distance(feats, feats, metric)
  nq = len(q)
  # rerank_features takes the distances as symmetric (row maxima): symmetrise for the exact mode.
  dist = (dist + dist.T) / 2
  exact = rerank.k_reciprocal_rerank(dist[:nq, nq:], dist[:nq, :nq], dist[nq:, nq:], k1=6, k2=3)
  scalable = rerank.rerank_features(q, g, k1=6, k2=3, metric=metric, chunk_size=16,
                                    host_blas=host_blas)
  np.testing.assert_allclose(scalable, exact, atol=2e-5, rtol=0)
  q_cams, g_cams = np.zeros(len(q), int), np.ones(len(g), int)
  map_exact = metrics.evaluate_rank(exact, q_pids, g_pids, q_cams, g_cams).mAP
  map_scalable = metrics.evaluate_rank(scalable, q_pids, g_pids, q_cams, g_cams).mAP
  assert abs(map_exact - map_scalable) < 0.005
  before = metrics.evaluate_features(q, g, q_pids, g_pids, q_cams, g_cams, metric=metric).mAP
  assert map_scalable > before


def test_rerank_features_in_small_steps(monkeypatch):
  q, g, _, _ = planted_problem(2, num_ids=5)
  whole = rerank.rerank_features(q, g, k1=5, k2=2)
  monkeypatch.setattr(rerank, '_PAIRS_PER_STEP', 3)  # several padded steps
  # Same neighbours and weights; XLA sums the pair distances in a shape-dependent order.
  np.testing.assert_allclose(rerank.rerank_features(q, g, k1=5, k2=2, chunk_size=7), whole,
                             rtol=0, atol=1e-6)


@pytest.mark.parametrize('workers', [1, 3])
def test_rerank_features_does_not_depend_on_threads_or_tiles(monkeypatch, workers):
  # Chunks reduced by several threads, the distance passes in tiles of any height and the
  # Jaccard rows in chunks of any size: every entry must keep its bits.
  q, g, _, _ = planted_problem(3, num_ids=9)
  monkeypatch.setattr(distance, 'default_workers', lambda: 1)
  whole = rerank.rerank_features(q, g, k1=5, k2=3, chunk_size=1024)
  monkeypatch.setattr(distance, 'default_workers', lambda: workers)
  monkeypatch.setattr(distance, '_TILE_BYTES', 3 * 4 * (len(q) + len(g)))  # 3-row tiles
  monkeypatch.setattr(rerank, '_JACCARD_CHUNK_ELEMENTS', 2 * len(g))
  np.testing.assert_array_equal(rerank.rerank_features(q, g, k1=5, k2=3, chunk_size=7), whole)


def test_rerank_features_bad_inputs():
  with pytest.raises(ValueError, match='same dim'):
    rerank.rerank_features(np.ones((2, 3)), np.ones((4, 2)))
  with pytest.raises(ValueError, match='NaN'):
    rerank.rerank_features(np.full((2, 3), np.nan), np.ones((4, 3)), k1=2, k2=1)
