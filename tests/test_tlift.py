"""Tests of TLift, the Market-1501 time parsing and QAConv-score re-ranking against plain loops."""

import types

import numpy as np
import pytest

from jreid.evaluation import qaconv_rerank
from jreid.evaluation import tlift


def reference_tlift(scores, q_cams, g_cams, q_times, g_times, num_cams, tau, sigma, k, alpha):
  """The TLift algorithm one query and one gallery camera at a time."""
  num_q, num_g = scores.shape
  weight = np.zeros((num_q, num_g))
  for i in range(num_q):
    if q_cams[i] >= num_cams:
      continue
    together = [j for j in range(num_q)
                if q_cams[j] == q_cams[i] and abs(q_times[j] - q_times[i]) < tau]
    for cam in range(num_cams):
      gallery = [g for g in range(num_g) if g_cams[g] == cam]
      if not gallery:
        continue
      entries = sorted(scores[j, g] for j in together for g in gallery)
      thr = entries[-k] if len(entries) > k else entries[0]
      pivots = [g for j in together for g in gallery if scores[j, g] >= thr]  # with repeats
      for h in gallery:
        weight[i, h] = np.mean([np.exp(-(g_times[h] - g_times[g]) ** 2 / sigma ** 2)
                                for g in pivots])
  return (weight + alpha) * scores


def random_case(seed, num_q=14, num_g=40, num_cams=3, ties=False):
  rng = np.random.default_rng(seed)
  scores = rng.random((num_q, num_g))
  if ties:
    scores = np.round(scores * 4) / 4  # five distinct values: many ties at the threshold
  q_cams = rng.integers(0, num_cams, num_q)
  g_cams = rng.integers(0, num_cams, num_g)
  q_times = rng.random(num_q) * 400
  g_times = rng.random(num_g) * 400
  return scores.astype(np.float32), q_cams, g_cams, q_times, g_times


@pytest.mark.parametrize('seed,k,ties', [(0, 3, False), (1, 10, False), (2, 1, False),
                                         (3, 4, True), (4, 200, False)])
def test_tlift_equals_loop_reference(seed, k, ties):
  scores, q_cams, g_cams, q_times, g_times = random_case(seed, ties=ties)
  expected = reference_tlift(scores.astype(np.float64), q_cams, g_cams, q_times, g_times,
                             num_cams=3, tau=100, sigma=200, k=k, alpha=0.2)
  got = tlift.tlift(scores, q_cams, g_cams, q_times, g_times, tau=100, sigma=200, K=k, alpha=0.2)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_tlift_edge_cameras():
  # Gallery camera 1 is empty; query camera 4 is outside the gallery's cameras (weight 0);
  # camera 2 has fewer gallery items than K; tight tau: most queries co-occur only with
  # themselves.
  scores, _, _, q_times, g_times = random_case(5, num_q=10, num_g=12)
  q_cams = np.array([0, 0, 2, 2, 4, 0, 2, 4, 0, 0])
  g_cams = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2])
  expected = reference_tlift(scores.astype(np.float64), q_cams, g_cams, q_times, g_times,
                             num_cams=3, tau=30, sigma=50, k=5, alpha=0.1)
  got = tlift.tlift(scores, q_cams, g_cams, q_times, g_times, tau=30, sigma=50, K=5, alpha=0.1)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(got[4], 0.1 * scores[4], rtol=1e-6)


def test_tlift_chunked_paths(monkeypatch):
  # Tiny chunk bound: the threshold, pivot and kernel loops run in many chunks.
  monkeypatch.setattr(tlift, '_CHUNK_ELEMENTS', 7)
  scores, q_cams, g_cams, q_times, g_times = random_case(6, num_q=20, num_g=30, num_cams=2)
  expected = reference_tlift(scores.astype(np.float64), q_cams, g_cams, q_times, g_times,
                             num_cams=2, tau=100, sigma=200, k=4, alpha=0.2)
  got = tlift.tlift(scores, q_cams, g_cams, q_times, g_times, K=4)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_tlift_companions_identify_the_true_match():
  # Queries 0, 1, 2 walk together past camera 0 around t=1000 s and reach camera 1 about
  # 100 s later. Companions 1 and 2 are matched confidently; query 0's true match (gallery 2,
  # t=1105) scores below a look-alike seen half an hour later (gallery 3). Query 3 is alone.
  q_cams = np.array([0, 0, 0, 0])
  q_times = np.array([1000.0, 1005.0, 1010.0, 5000.0])
  g_cams = np.array([1, 1, 1, 1, 1])
  g_times = np.array([1100.0, 1102.0, 1105.0, 3000.0, 5100.0])
  scores = np.array([
      [0.10, 0.10, 0.50, 0.60, 0.10],
      [0.90, 0.10, 0.10, 0.10, 0.10],
      [0.10, 0.85, 0.10, 0.10, 0.10],
      [0.10, 0.10, 0.10, 0.30, 0.25],
  ], np.float32)
  lifted = tlift.tlift(scores, q_cams, g_cams, q_times, g_times, tau=100, sigma=200, K=3,
                       alpha=0.2)
  assert scores[0].argmax() == 3 and lifted[0].argmax() == 2
  # Pivots of query 0: (1, g0), (2, g1), (0, g3): weight of g2 ~ 2/3, of g3 ~ 1/3.
  kernel = lambda dt: np.exp(-dt ** 2 / 200 ** 2)
  w2 = (kernel(5.0) + kernel(3.0) + kernel(1895.0)) / 3
  np.testing.assert_allclose(lifted[0, 2], (w2 + 0.2) * 0.5, rtol=1e-6)
  # Query 3 is alone: its pivots are its own entries >= its 3rd largest (0.1), so the three
  # tied at 0.1 all count: five pivots.
  pivot_times = g_times[[0, 1, 2, 3, 4]]
  w3 = kernel(g_times[:, None] - pivot_times[None, :]).mean(axis=1)
  np.testing.assert_allclose(lifted[3], (w3 + 0.2) * scores[3], rtol=1e-6)


def test_tlift_rejects_bad_inputs():
  scores, q_cams, g_cams, q_times, g_times = random_case(0)
  with pytest.raises(ValueError, match='tau > 0'):
    tlift.tlift(scores, q_cams, g_cams, q_times, g_times, tau=0)
  with pytest.raises(ValueError, match='q_times has'):
    tlift.tlift(scores, q_cams, g_cams, q_times[:-1], g_times)
  bad = scores.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match='NaN'):
    tlift.tlift(bad, q_cams, g_cams, q_times, g_times)


def reference_offsets(camids, sessions, frames):
  """The reference's loop: shifts frames in place, session by session (zero-based sessions)."""
  frames = frames.copy()
  offsets = np.zeros((6, 6), np.int64)
  for c in range(6):
    for s in range(1, 6):
      previous = (camids == c) & (sessions == s - 1)
      offsets[c, s] = (frames[previous].max() if previous.any() else 0) + offsets[c, s - 1]
      frames[(camids == c) & (sessions == s)] += offsets[c, s]
  return offsets, frames


def test_market1501_offsets_by_hand():
  # Camera 0: s1 frames up to 250, s2 up to 400, s3 one frame, s4 empty, s5 one frame.
  # A junk image (pid -1) with a huge frame in s1 must not count. Camera 2: only s1.
  camids = np.array([0, 0, 0, 0, 0, 0, 0, 2, 2])
  sessions = np.array([1, 1, 2, 2, 3, 5, 1, 1, 1])
  frames = np.array([100, 250, 30, 400, 10, 7, 99999, 500, 80])
  pids = np.array([1, 1, 2, 2, 3, 4, -1, 5, 0])
  offsets = tlift.market1501_session_offsets(camids, sessions, frames, pids)
  # Doubling quirk: offset[s] = shifted max of session s-1 + offset[s-1].
  np.testing.assert_array_equal(offsets[0], [0, 250, 900, 1810, 1810, 3627])
  np.testing.assert_array_equal(offsets[2], [0, 500, 500, 500, 500, 500])
  np.testing.assert_array_equal(offsets[1], 0)
  times = tlift.market1501_times(camids, sessions, frames, offsets)
  np.testing.assert_allclose(times[:6], np.array([100, 250, 280, 650, 910, 1817]) / 25.0)
  keep = pids != -1
  ref_offsets, ref_frames = reference_offsets(camids[keep], sessions[keep] - 1, frames[keep])
  np.testing.assert_array_equal(offsets, ref_offsets)
  np.testing.assert_allclose(times[keep], ref_frames / 25.0)


def test_split_times_market_and_synthreid():
  rng = np.random.default_rng(0)

  def split(n):
    return types.SimpleNamespace(camids=rng.integers(0, 6, n), sessions=rng.integers(1, 7, n),
                                 frames=rng.integers(0, 5000, n), pids=rng.integers(-1, 30, n))

  splits = [split(50), split(20), split(40)]
  times = tlift.split_times(splits, 'market1501')
  allc = np.concatenate([s.camids for s in splits])
  alls = np.concatenate([s.sessions for s in splits])
  allf = np.concatenate([s.frames for s in splits])
  keep = np.concatenate([s.pids for s in splits]) != -1
  offsets, _ = reference_offsets(allc[keep], alls[keep] - 1, allf[keep])
  for s, t in zip(splits, times):
    np.testing.assert_allclose(t, (s.frames + offsets[s.camids, s.sessions - 1]) / 25.0)
  # SynthReID: one session s1 on a common clock: frame / 25 under both models.
  synth = [types.SimpleNamespace(camids=s.camids, sessions=np.ones_like(s.sessions),
                                 frames=s.frames, pids=s.pids) for s in splits]
  for a, b, s in zip(tlift.split_times(synth, 'frame'), tlift.split_times(synth), synth):
    np.testing.assert_allclose(a, s.frames / 25.0)
    np.testing.assert_allclose(b, s.frames / 25.0)
  with pytest.raises(ValueError, match='time_model'):
    tlift.split_times(splits, 'duke')


def reference_qaconv_rerank(scores, num_query, k1, k2, lam):
  """The QAConv reference's re-ranking of -scores, one item at a time (float64)."""
  original = -scores.astype(np.float64)
  original = (original / original.max(axis=0)).T  # not squared
  n = original.shape[0]
  rank = np.argsort(original, axis=1, kind='stable')

  def reciprocal(i, width):
    return [j for j in rank[i, :width] if i in rank[j, :width]]

  v = np.zeros((n, n))
  for i in range(n):
    full = reciprocal(i, k1 + 1)
    expanded = set(full)
    for c in full:
      half = reciprocal(c, int(np.around(k1 / 2)) + 1)
      if len(set(half) & set(full)) > 2 / 3 * len(half):
        expanded |= set(half)
    expanded = sorted(expanded)
    w = np.exp(-original[i, expanded])
    v[i, expanded] = w / w.sum()
  if k2 != 1:
    v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
  jaccard = np.zeros((num_query, n))
  for i in range(num_query):
    m = np.minimum(v[i][None, :], v).sum(axis=1)
    jaccard[i] = 1 - m / (2 - m)
  final = jaccard * (1 - lam) + original[:num_query] * lam
  return final[:, num_query:]


@pytest.mark.parametrize('positive_column', [False, True])
def test_qaconv_rerank_equals_loop_reference(positive_column):
  rng = np.random.default_rng(7)
  num_query, num_gallery = 5, 13
  n = num_query + num_gallery
  x = rng.normal(size=(n, 4))
  scores = 3 * x @ x.T  # symmetric, like QAConv's two-way score
  if positive_column:
    # Every score of item 7 positive: its distance column has a negative maximum, which the
    # unsquared normalisation turns around (a reference quirk).
    scores[:, 7] = np.abs(scores[:, 7]) + 0.5
    scores[7, :] = scores[:, 7]
  q_g, q_q, g_g = scores[:num_query, num_query:], scores[:num_query, :num_query], scores[
      num_query:, num_query:]
  got = qaconv_rerank.qaconv_rerank(q_g, q_q, g_g, k1=4, k2=3, lambda_value=0.3)
  expected = reference_qaconv_rerank(scores, num_query, 4, 3, 0.3)
  np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


def test_qaconv_rerank_tlift_pipeline():
  rng = np.random.default_rng(3)
  num_query, num_gallery = 6, 15
  x = rng.normal(size=(num_query + num_gallery, 4))
  scores = 2 * x @ x.T
  q_g, q_q, g_g = scores[:num_query, num_query:], scores[:num_query, :num_query], scores[
      num_query:, num_query:]
  q_cams, g_cams = rng.integers(0, 2, num_query), rng.integers(0, 2, num_gallery)
  q_times, g_times = rng.random(num_query) * 300, rng.random(num_gallery) * 300
  out = qaconv_rerank.qaconv_rerank_tlift(q_g, q_q, g_g, q_cams, g_cams, q_times, g_times, k1=4,
                                          k2=2, K=3)
  np.testing.assert_allclose(out['qaconv'], -q_g, rtol=1e-6)
  rerank_dist = qaconv_rerank.qaconv_rerank(q_g, q_q, g_g, k1=4, k2=2)
  np.testing.assert_allclose(out['rerank'], rerank_dist)
  lifted = reference_tlift(1.0 - rerank_dist.astype(np.float64), q_cams, g_cams, q_times, g_times,
                           num_cams=2, tau=100, sigma=200, k=3, alpha=0.2)
  np.testing.assert_allclose(out['tlift'], 1.0 - lifted, rtol=1e-5, atol=1e-6)


def test_qaconv_rerank_sigmoid_distance_is_the_negative_one_on_mapped_scores():
  """'sigmoid' re-ranks d = 1 - sigmoid(s / 10), i.e. 'negative' on s' = sigmoid(s / 10) - 1."""
  rng = np.random.default_rng(5)
  qg, qq, gg = (rng.normal(0, 40, shape).astype(np.float32) for shape in ((5, 9), (5, 5), (9, 9)))
  mapped = [(1.0 / (1.0 + np.exp(-x / 10.0)) - 1.0).astype(np.float32) for x in (qg, qq, gg)]
  got = qaconv_rerank.qaconv_rerank(qg, qq, gg, k1=4, k2=2, distance='sigmoid')
  want = qaconv_rerank.qaconv_rerank(*mapped, k1=4, k2=2, distance='negative')
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert np.all(qaconv_rerank.qaconv_distance(qg, 'sigmoid') > 0)
