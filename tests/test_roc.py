"""Tests of the chunked verification ROC against a brute-force numpy reference over all pairs."""

import numpy as np
import pytest

from jreid import evaluation
from jreid.evaluation import roc


def reference_pairs(distmat, q_pids, g_pids, q_camids, g_camids):
  """Positive and negative pair distances, one pair at a time."""
  pos, neg = [], []
  for i in range(distmat.shape[0]):
    for j in range(distmat.shape[1]):
      if q_pids[i] == -1 or g_pids[j] == -1:
        continue  # junk
      if q_pids[i] == g_pids[j] and q_camids[i] == g_camids[j]:
        continue  # same identity, same camera
      (pos if q_pids[i] == g_pids[j] else neg).append(distmat[i, j])
  return np.array(pos, np.float32), np.array(neg, np.float32)


def reference_tpr_at_fpr(pos, neg, target):
  """Largest TPR over every threshold t (accept d < t) with FPR <= target."""
  best = 0.0
  for t in np.concatenate([np.unique(np.concatenate([pos, neg])), [np.inf]]):
    if np.mean(neg < t) <= target:
      best = max(best, np.mean(pos < t))
  return best


def problem(seed, num_q=25, num_g=70, coarse=False):
  rng = np.random.default_rng(seed)
  q_pids = rng.integers(-1, 6, num_q)  # junk queries too
  g_pids = rng.integers(-1, 6, num_g)
  q_camids = rng.integers(0, 3, num_q)
  g_camids = rng.integers(0, 3, num_g)
  distmat = rng.random((num_q, num_g)).astype(np.float32)
  distmat -= 0.6 * (q_pids[:, None] == g_pids[None, :])  # positives closer; some negative d
  if coarse:
    distmat = np.round(distmat * 8) / 8  # many ties
  return distmat.astype(np.float32), q_pids, g_pids, q_camids, g_camids


TARGETS = (0.01, 0.05, 0.2, 0.5)


@pytest.mark.parametrize('seed,coarse', [(0, False), (1, False), (2, True), (3, True)])
@pytest.mark.parametrize('chunk_size', [1, 7, 1024])
def test_roc_matches_reference(seed, coarse, chunk_size):
  distmat, q_pids, g_pids, q_camids, g_camids = problem(seed, coarse=coarse)
  result = evaluation.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, roc=True,
                                    fpr_targets=TARGETS, chunk_size=chunk_size).roc
  pos, neg = reference_pairs(distmat, q_pids, g_pids, q_camids, g_camids)
  assert (result.num_positive, result.num_negative) == (len(pos), len(neg))
  expected = [reference_tpr_at_fpr(pos, neg, f) for f in TARGETS]
  np.testing.assert_allclose(result.tpr_at_fpr, expected, rtol=0, atol=1e-12)
  for f, t, tpr in zip(TARGETS, result.thresholds, result.tpr_at_fpr):
    assert np.mean(neg < t) <= f and np.mean(pos < t) == tpr
  # Every curve point is an exact (FPR, TPR) pair at its threshold (accept d <= threshold).
  for fpr, tpr, t in zip(result.fpr[1:], result.tpr[1:], result.curve_thresholds[1:]):
    assert fpr == np.mean(neg <= t) and tpr == np.mean(pos <= t)
  assert result.fpr[-1] == 1.0 and result.tpr[-1] == 1.0
  assert np.all(np.diff(result.fpr) >= 0) and np.all(np.diff(result.tpr) >= 0)


def test_roc_by_hand():
  # Query pid 1 cam 0. Gallery: g0 pid 1 cam 0 (removed), g1 pid 1 cam 1 d=.3 (positive),
  # g2 pid 2 d=.1, g3 pid 3 d=.2, g4 pid -1 d=.0 (junk), g5 pid 1 cam 2 d=.5 (positive).
  # Negatives .1 and .2: FPR <= 0.5 allows one negative, so t = .2 and TPR = 0 (no positive
  # below .2); FPR <= 0.99 allows one too; FPR = 1 would allow both: TPR 1 at t = inf.
  distmat = np.array([[.0, .3, .1, .2, .0, .5]], np.float32)
  g_pids = np.array([1, 1, 2, 3, -1, 1])
  g_camids = np.array([0, 1, 0, 0, 0, 2])
  result = evaluation.evaluate_rank(distmat, np.array([1]), g_pids, np.array([0]), g_camids,
                                    roc=True, fpr_targets=(0.4, 0.5, 0.99)).roc
  assert (result.num_positive, result.num_negative) == (2, 2)
  np.testing.assert_array_equal(result.tpr_at_fpr, [0.0, 0.0, 0.0])
  np.testing.assert_allclose(result.thresholds, [.1, .2, .2])
  assert evaluation.evaluate_rank(distmat, np.array([1]), g_pids, np.array([0]), g_camids,
                                  roc=True).to_dict()['TPR@FPR=1e-04'] == 0.0


def test_roc_from_features_equals_distmat():
  rng = np.random.default_rng(0)
  q, g = rng.normal(size=(12, 8)).astype(np.float32), rng.normal(size=(40, 8)).astype(np.float32)
  q_pids, g_pids = rng.integers(1, 5, 12), rng.integers(1, 5, 40)
  q_cams, g_cams = rng.integers(0, 2, 12), rng.integers(0, 2, 40)
  a = evaluation.evaluate_features(q, g, q_pids, g_pids, q_cams, g_cams, roc=True,
                                   fpr_targets=TARGETS, chunk_size=5).roc
  distmat = evaluation.compute_distance(q, g)
  b = evaluation.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, roc=True,
                               fpr_targets=TARGETS).roc
  np.testing.assert_array_equal(a.tpr_at_fpr, b.tpr_at_fpr)
  np.testing.assert_array_equal(a.fpr, b.fpr)


def test_pair_counts():
  distmat, q_pids, g_pids, q_camids, g_camids = problem(5)
  pos, neg = reference_pairs(distmat, q_pids, g_pids, q_camids, g_camids)
  assert roc.pair_counts(q_pids, q_camids, g_pids, g_camids) == (len(pos), len(neg))


def test_ordered_code_preserves_order():
  values = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, 7.0, np.inf], np.float32)
  codes = roc.ordered_code(values)
  assert np.all(np.diff(codes.astype(np.int64)) >= 0)
  assert codes[3] == codes[4]  # -0.0 == 0.0
  assert len(np.unique(codes)) == len(values) - 1
  np.testing.assert_array_equal(roc.from_ordered_code(codes)[[0, 1, 5, 6, 8]],
                                values[[0, 1, 5, 6, 8]])


def test_bad_targets_raise():
  distmat, q_pids, g_pids, q_camids, g_camids = problem(0)
  with pytest.raises(ValueError, match='FPR'):
    evaluation.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, roc=True,
                             fpr_targets=(0.0,))
