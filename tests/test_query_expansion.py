"""Tests of feature normalisation, flip averaging and query expansion against numpy references."""

import numpy as np
import pytest

from jreid.evaluation import query_expansion as qe


def l2(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def top_by_similarity(sim_row, k):
  """Indices of the k largest similarities, ties by index."""
  return sorted(range(len(sim_row)), key=lambda j: (-sim_row[j], j))[:k]


def reference_aqe(query, gallery, top_m):
  q, g = l2(query.astype(np.float64)), l2(gallery.astype(np.float64))
  out = []
  for i in range(len(q)):
    neighbours = top_by_similarity(q[i] @ g.T, top_m)
    out.append((q[i] + g[neighbours].sum(axis=0)) / (top_m + 1))
  return l2(np.array(out))


def reference_alpha_qe(query, gallery, qe_times, qe_k, alpha):
  """FastReID's aqe: expand queries and gallery together, weights sim ** alpha."""
  feats = np.concatenate([query, gallery]).astype(np.float64)
  for _ in range(qe_times):
    normed = l2(feats)
    sims = normed @ normed.T
    new = []
    for i in range(len(feats)):
      top = top_by_similarity(sims[i], qe_k)
      weights = sims[i, top] ** alpha
      new.append(np.mean(feats[top] * weights[:, None], axis=0))
    feats = np.array(new)
  feats = l2(feats)
  return feats[:len(query)], feats[len(query):]


def test_normalize_features():
  x = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
  np.testing.assert_allclose(qe.normalize_features(x), [[0.6, 0.8], [0, 0], [1, 0]], rtol=1e-7)
  np.testing.assert_array_equal(qe.normalize_features(x, 'none'), x.astype(np.float32))
  assert qe.normalize_features(x).dtype == np.float32
  with pytest.raises(ValueError, match='normalisation'):
    qe.normalize_features(x, 'l1')


def test_flip_average():
  a = np.array([[1.0, 2.0], [3.0, -4.0]])
  b = np.array([[3.0, 0.0], [1.0, 4.0]])
  np.testing.assert_array_equal(qe.flip_average(a, b), [[2.0, 1.0], [2.0, 0.0]])
  with pytest.raises(ValueError, match='same images'):
    qe.flip_average(a, b[:1])


@pytest.mark.parametrize('top_m', [1, 3, 10])
def test_average_query_expansion_matches_reference(top_m):
  rng = np.random.default_rng(top_m)
  query, gallery = rng.normal(size=(7, 16)), rng.normal(size=(23, 16))
  got = qe.average_query_expansion(query, gallery, top_m=top_m, chunk_size=3)
  assert got.shape == (7, 16) and got.dtype == np.float32
  np.testing.assert_allclose(got, reference_aqe(query, gallery, top_m), atol=1e-6, rtol=0)


def test_average_query_expansion_hand_built():
  query = np.array([[1.0, 0.0]])
  gallery = np.array([[0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]])  # cos: 0, 0.707, -1
  got = qe.average_query_expansion(query, gallery, top_m=1)
  expected = np.array([1.0, 0.0]) + np.array([1.0, 1.0]) / np.sqrt(2)
  np.testing.assert_allclose(got[0], expected / np.linalg.norm(expected), rtol=1e-6)


@pytest.mark.parametrize('qe_times,qe_k,alpha', [(1, 5, 3.0), (2, 3, 1.0), (1, 1, 3.0)])
def test_alpha_query_expansion_matches_reference(qe_times, qe_k, alpha):
  rng = np.random.default_rng(qe_k)
  # Positive features keep every similarity positive (sim ** alpha is then well defined).
  query, gallery = rng.uniform(size=(7, 16)), rng.uniform(size=(23, 16))
  got_q, got_g = qe.alpha_query_expansion(query, gallery, qe_times=qe_times, qe_k=qe_k,
                                          alpha=alpha, chunk_size=4)
  ref_q, ref_g = reference_alpha_qe(query, gallery, qe_times, qe_k, alpha)
  assert got_q.shape == (7, 16) and got_g.shape == (23, 16)
  np.testing.assert_allclose(got_q, ref_q, atol=1e-6, rtol=0)
  np.testing.assert_allclose(got_g, ref_g, atol=1e-6, rtol=0)


def test_alpha_query_expansion_hand_built():
  # Three items; with qe_k=2 each is combined with itself and its most similar other item.
  query = np.array([[1.0, 0.0]])
  gallery = np.array([[1.0, 1.0], [0.0, 3.0]])
  got_q, got_g = qe.alpha_query_expansion(query, gallery, qe_k=2, alpha=2.0)
  c = 1 / np.sqrt(2)  # cos(query, g0) = cos(g0, g1)
  expected_q = np.array([1.0, 0.0]) + c ** 2 * np.array([1.0, 1.0])
  expected_g1 = np.array([0.0, 3.0]) + c ** 2 * np.array([1.0, 1.0])
  np.testing.assert_allclose(got_q[0], expected_q / np.linalg.norm(expected_q), rtol=1e-6)
  np.testing.assert_allclose(got_g[1], expected_g1 / np.linalg.norm(expected_g1), rtol=1e-6)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match='same dim'):
    qe.average_query_expansion(np.ones((2, 3)), np.ones((4, 2)))
  with pytest.raises(ValueError, match='top_m'):
    qe.average_query_expansion(np.ones((2, 3)), np.ones((4, 3)), top_m=5)
  with pytest.raises(ValueError, match='qe_k'):
    qe.alpha_query_expansion(np.ones((2, 3)), np.ones((4, 3)), qe_k=7)
