"""Tests of exact k-nearest-neighbour search against a brute-force numpy reference."""

import importlib.util

import numpy as np
import pytest

from jreid.evaluation import search as search_lib

HAS_FAISS = importlib.util.find_spec('faiss') is not None


def reference_search(query, gallery, k, metric):
  """Every distance in float64, each row sorted by (distance, gallery index)."""
  q, g = query.astype(np.float64), gallery.astype(np.float64)
  if metric == 'cosine':
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    dist = 1.0 - q @ g.T
  else:
    dist = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
  indices = np.array([sorted(range(len(g)), key=lambda j: (row[j], j))[:k] for row in dist])
  return np.take_along_axis(dist, indices, axis=1), indices


def backends():
  return ['numpy', pytest.param('faiss', marks=pytest.mark.skipif(
      not HAS_FAISS, reason='faiss is not installed'))]


@pytest.mark.parametrize('backend', backends())
@pytest.mark.parametrize('metric', ['cosine', 'euclidean'])
@pytest.mark.parametrize('k', [1, 5, 40])
def test_search_matches_reference(backend, metric, k):
  rng = np.random.default_rng(k)
  query = rng.normal(size=(13, 8)).astype(np.float32)
  gallery = rng.normal(size=(40, 8)).astype(np.float32)
  distances, indices = search_lib.search(query, gallery, k, metric=metric, backend=backend)
  ref_dist, ref_idx = reference_search(query, gallery, k, metric)
  assert distances.dtype == np.float32 and indices.dtype == np.int64
  assert distances.shape == indices.shape == (13, k)
  np.testing.assert_array_equal(indices, ref_idx)
  np.testing.assert_allclose(distances, ref_dist, atol=2e-6, rtol=0)


def test_search_chunks_and_auto_backend_agree():
  rng = np.random.default_rng(0)
  query = rng.normal(size=(10, 300)).astype(np.float32)
  gallery = rng.normal(size=(50, 300)).astype(np.float32)
  ref_dist, ref_idx = reference_search(query, gallery, 7, 'cosine')
  for kwargs in ({'backend': 'numpy', 'chunk_size': 3}, {'backend': 'auto'}):
    distances, indices = search_lib.search(query, gallery, 7, **kwargs)
    np.testing.assert_array_equal(indices, ref_idx)
    np.testing.assert_allclose(distances, ref_dist, atol=2e-6, rtol=0)


@pytest.mark.parametrize('backend', backends())
def test_ties_ordered_by_gallery_index(backend):
  query = np.array([[0.0, 0.0]], np.float32)
  # Distances 1, 1, 0, 1, 2, 1: ties at distance 1, including across the k-th place.
  gallery = np.array([[1, 0], [0, 1], [0, 0], [-1, 0], [2, 0], [0, -1]], np.float32)
  distances, indices = search_lib.search(query, gallery, 6, metric='euclidean', backend=backend)
  np.testing.assert_array_equal(indices, [[2, 0, 1, 3, 5, 4]])
  np.testing.assert_allclose(distances, [[0, 1, 1, 1, 1, 2]], atol=1e-6)
  if backend == 'numpy':  # faiss picks freely among items tied at the k-th distance.
    _, indices = search_lib.search(query, gallery, 2, metric='euclidean', backend=backend)
    np.testing.assert_array_equal(indices, [[2, 0]])


def test_topk_smallest_equals_stable_argsort():
  rng = np.random.default_rng(1)
  block = rng.integers(0, 5, size=(50, 40)).astype(np.float32)  # many ties
  for k in (1, 3, 19, 21, 40):
    values, order = search_lib.topk_smallest(block, k)
    expected = np.argsort(block, axis=1, kind='stable')[:, :k]
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(block, expected, axis=1))


def test_bad_inputs_raise():
  gallery = np.ones((4, 3), np.float32)
  with pytest.raises(ValueError, match='k must be'):
    search_lib.search(gallery, gallery, 5)
  with pytest.raises(ValueError, match='backend'):
    search_lib.search(gallery, gallery, 2, backend='annoy')
  with pytest.raises(ValueError, match='same dim'):
    search_lib.search(np.ones((2, 2)), gallery, 2)
  with pytest.raises(ValueError, match='NaN'):
    search_lib.search(np.full((2, 3), np.nan), gallery, 2)


def test_without_faiss_auto_falls_back_to_numpy(monkeypatch):
  monkeypatch.setitem(__import__('sys').modules, 'faiss', None)  # `import faiss` now fails.
  rng = np.random.default_rng(2)
  query, gallery = rng.normal(size=(3, 16)), rng.normal(size=(9, 16))
  _, indices = search_lib.search(query, gallery, 4, backend='auto')
  np.testing.assert_array_equal(indices, reference_search(query, gallery, 4, 'cosine')[1])
  with pytest.raises(ImportError, match="backend='numpy'"):
    search_lib.search(query, gallery, 4, backend='faiss')


@pytest.mark.skipif(not HAS_FAISS, reason='faiss is not installed')
def test_faiss_results_are_sorted_by_distance_then_index():
  # IndexFlatIP returns equal scores in decreasing index order; search reorders them.
  gallery = np.tile(np.array([[1.0, 0.0]], np.float32), (30, 1))
  query = np.array([[1.0, 1.0], [2.0, 0.0]], np.float32)
  distances, indices = search_lib.search(query, gallery, 10, metric='cosine', backend='faiss')
  for row_dist, row_idx in zip(distances, indices):
    np.testing.assert_array_equal(np.lexsort((row_idx, row_dist)), np.arange(10))
    assert len(set(row_idx)) == 10


@pytest.mark.parametrize('k', [1, 5, 60])
def test_topk_smallest_wide_rows_use_sampled_threshold(k, monkeypatch):
  # Rows of >= 4096 columns take the sampled-threshold path: exact, ties and -0.0 included.
  calls = []
  original = search_lib._topk_by_threshold
  monkeypatch.setattr(search_lib, '_topk_by_threshold',
                      lambda block, k: calls.append(k) or original(block, k))
  rng = np.random.default_rng(k)
  block = rng.integers(0, 300, size=(6, 5000)).astype(np.float32) / 4
  block[0, :100] = 0.0
  block[0, 50:70] = -0.0
  block[1] = 3.0  # one value everywhere
  block[2, ::2] = -1.0
  values, order = search_lib.topk_smallest(block, k)
  expected = np.argsort(block, axis=1, kind='stable')[:, :k]
  np.testing.assert_array_equal(order, expected)
  np.testing.assert_array_equal(values, np.take_along_axis(block, expected, axis=1))
  assert calls == [k]
