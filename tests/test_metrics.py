"""Tests of jreid.evaluation distances and ranking metrics against plain numpy references."""

import numpy as np
import pytest

from jreid import evaluation
from jreid.evaluation import metrics


def reference_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
  """The Market-1501 protocol, one query at a time, as in the classic evaluation code.

  Returns (cmc, all_ap, all_inp, num_skipped).
  """
  num_q, num_g = distmat.shape
  max_rank = min(max_rank, num_g)
  all_cmc, all_ap, all_inp = [], [], []
  num_skipped = 0
  for i in range(num_q):
    # Ascending distance, ties by gallery index.
    order = sorted(range(num_g), key=lambda j: (distmat[i, j], j))
    is_match = []  # one flag per gallery item that stays in the ranking
    for j in order:
      if g_pids[j] == -1:
        continue  # junk
      if g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i]:
        continue  # same identity seen by the same camera
      is_match.append(g_pids[j] == q_pids[i])
    if not any(is_match):
      num_skipped += 1
      continue

    cmc = []
    found = False
    for r in range(max_rank):
      if r < len(is_match) and is_match[r]:
        found = True
      cmc.append(1.0 if found else 0.0)
    all_cmc.append(cmc)

    hits = 0
    precisions = []
    last_hit_rank = 0
    for rank, match in enumerate(is_match, start=1):
      if match:
        hits += 1
        precisions.append(hits / rank)
        last_hit_rank = rank
    all_ap.append(sum(precisions) / hits)
    all_inp.append(hits / last_hit_rank)
  cmc = np.mean(np.array(all_cmc), axis=0)
  return cmc, np.array(all_ap), np.array(all_inp), num_skipped


def assert_matches_reference(result, distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  cmc, all_ap, all_inp, num_skipped = reference_evaluate(
      distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
  assert result.cmc.dtype == np.float64
  np.testing.assert_allclose(result.cmc, cmc, rtol=0, atol=1e-6)
  np.testing.assert_allclose(result.all_ap, all_ap, rtol=0, atol=1e-6)
  np.testing.assert_allclose(result.all_inp, all_inp, rtol=0, atol=1e-6)
  assert result.num_skipped == num_skipped
  assert result.num_valid == len(all_ap)
  np.testing.assert_allclose(result.mAP, np.mean(all_ap), rtol=0, atol=1e-6)
  np.testing.assert_allclose(result.mINP, np.mean(all_inp), rtol=0, atol=1e-6)


def random_problem(seed, num_q=30, num_g=80, num_ids=8, num_cams=4, dim=16):
  """Features and ids with repeated pids across cameras, junk (-1) and distractors (0)."""
  rng = np.random.default_rng(seed)
  q_pids = rng.integers(1, num_ids + 1, num_q)
  g_pids = rng.integers(-1, num_ids + 1, num_g)  # includes -1 junk and 0 distractors
  q_camids = rng.integers(0, num_cams, num_q)
  g_camids = rng.integers(0, num_cams, num_g)
  centers = rng.normal(size=(num_ids + 2, dim))
  q_feats = centers[q_pids + 1] + rng.normal(size=(num_q, dim))
  g_feats = centers[g_pids + 1] + rng.normal(size=(num_g, dim))
  return (q_feats.astype(np.float32), g_feats.astype(np.float32), q_pids, g_pids, q_camids,
          g_camids)


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
@pytest.mark.parametrize('chunk_size', [1, 7, 1024])
def test_evaluate_rank_matches_reference_on_random_problems(seed, chunk_size):
  _, _, q_pids, g_pids, q_camids, g_camids = random_problem(seed)
  rng = np.random.default_rng(100 + seed)
  # Coarse distances: many ties, which must be broken by gallery index.
  distmat = rng.integers(0, 10, size=(len(q_pids), len(g_pids))).astype(np.float32) / 10
  result = evaluation.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                                    max_rank=50, chunk_size=chunk_size)
  assert len(result.cmc) == 50
  assert_matches_reference(result, distmat, q_pids, g_pids, q_camids, g_camids, 50)


@pytest.mark.parametrize('seed', [0, 1])
def test_evaluate_rank_matches_reference_on_feature_distances(seed):
  q_feats, g_feats, q_pids, g_pids, q_camids, g_camids = random_problem(seed)
  distmat = evaluation.compute_distance(q_feats, g_feats, 'euclidean')
  result = evaluation.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20)
  assert len(result.cmc) == 20
  assert_matches_reference(result, distmat, q_pids, g_pids, q_camids, g_camids, 20)


def test_same_camera_exclusion_and_junk_by_hand():
  # Query 0: pid 1, camera 0. Gallery in distance order:
  #   g0 pid 1 cam 0 d=.1  removed (same pid and camera)
  #   g1 pid 2 cam 1 d=.2  rank 1, miss
  #   g2 pid 1 cam 1 d=.3  rank 2, hit
  #   g3 pid -1 cam 2 d=.35 removed (junk)
  #   g4 pid 0 cam 1 d=.4  rank 3, miss (distractor)
  #   g5 pid 1 cam 2 d=.5  rank 4, hit
  #   g6 pid 3 cam 0 d=.6  rank 5, miss
  # AP = (1/2 + 2/4) / 2 = 0.5; INP = 2 hits / rank 4 = 0.5; CMC = [0, 1, 1, 1, 1, 1, 1].
  # Without removing g0 the query would have rank-1 = 1 and AP = (1 + 2/3 + 3/6) / 3.
  # Query 1: pid 3, camera 0: its only match g6 is in camera 0 -> skipped.
  g_pids = np.array([1, 2, 1, -1, 0, 1, 3])
  g_camids = np.array([0, 1, 1, 2, 1, 2, 0])
  q_pids = np.array([1, 3])
  q_camids = np.array([0, 0])
  d = np.array([.1, .2, .3, .35, .4, .5, .6], np.float32)
  distmat = np.stack([d, d])
  result = evaluation.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50)
  assert result.num_valid == 1 and result.num_skipped == 1
  np.testing.assert_array_equal(result.cmc, [0, 1, 1, 1, 1, 1, 1])  # clipped to 7 = gallery
  np.testing.assert_allclose(result.all_ap, [0.5], atol=1e-12)
  np.testing.assert_allclose(result.all_inp, [0.5], atol=1e-12)
  assert result.rank(1) == 0.0 and result.rank(5) == 1.0
  assert result.rank(10) == 1.0  # past the clipped curve, which already reached 1
  assert_matches_reference(result, distmat, q_pids, g_pids, q_camids, g_camids, 50)


def test_ties_are_broken_by_gallery_index():
  # All distances equal: ranking = gallery order. The query (pid 1, cam 0) has its hit g1 at
  # rank 2, while query 1 (pid 2, cam 0) has hits g0 and g2 at ranks 1 and 3.
  # Query 0: AP = 1/2, INP = 1/2. Query 1: AP = (1/1 + 2/3) / 2 = 5/6, INP = 2/3.
  # CMC = [1/2, 1, 1].
  g_pids = np.array([2, 1, 2])
  g_camids = np.array([1, 1, 2])
  distmat = np.full((2, 3), 0.5, np.float32)
  result = evaluation.evaluate_rank(distmat, np.array([1, 2]), g_pids, np.array([0, 0]),
                                    g_camids)
  np.testing.assert_allclose(result.cmc, [0.5, 1, 1], atol=1e-12)
  np.testing.assert_allclose(result.all_ap, [0.5, 5 / 6], atol=1e-12)
  np.testing.assert_allclose(result.all_inp, [0.5, 2 / 3], atol=1e-12)


def test_matches_ranked_last():
  # Query (pid 1, cam 0): three non-matches first, then hits at ranks 4 and 5.
  #   AP = (1/4 + 2/5) / 2 = 0.325, INP = 2/5 = 0.4, CMC = [0, 0, 0, 1, 1] (clipped to g = 5).
  g_pids = np.array([3, 4, 5, 1, 1])
  g_camids = np.array([1, 1, 1, 1, 2])
  distmat = np.array([[.1, .2, .3, .8, .9]], np.float32)
  result = evaluation.evaluate_rank(distmat, np.array([1]), g_pids, np.array([0]), g_camids)
  np.testing.assert_array_equal(result.cmc, [0, 0, 0, 1, 1])
  np.testing.assert_allclose(result.all_ap, [0.325], atol=1e-12)
  np.testing.assert_allclose(result.all_inp, [0.4], atol=1e-12)

  # With max_rank = 3 both hits lie past the curve: it is all zeros, AP and INP unchanged.
  result = evaluation.evaluate_rank(distmat, np.array([1]), g_pids, np.array([0]), g_camids,
                                    max_rank=3)
  np.testing.assert_array_equal(result.cmc, [0, 0, 0])
  np.testing.assert_allclose(result.all_ap, [0.325], atol=1e-12)
  with pytest.raises(ValueError, match='max_rank >= 5'):
    result.rank(5)


def test_short_ranking_keeps_cmc_at_one():
  # Gallery in distance order: g0 pid 2 cam 0, g1 pid 2 cam 1, g2 pid 2 cam 1, g3 pid 1 cam 1,
  # g4 pid 3 cam 0.
  # Query 0 (pid 1, cam 0) keeps all 5 items, hit g3 at rank 4: AP = INP = 1/4,
  #   CMC = [0, 0, 0, 1, 1].
  # Query 1 (pid 2, cam 1) loses g1 and g2 (same camera) and keeps only 3 items: g0 hit at
  #   rank 1, AP = INP = 1, and its CMC stays 1 over all 5 ranks (not just the 3 it has).
  # Mean CMC = [.5, .5, .5, 1, 1].
  g_pids = np.array([2, 2, 2, 1, 3])
  g_camids = np.array([0, 1, 1, 1, 0])
  d = np.array([.1, .2, .3, .4, .5], np.float32)
  distmat = np.stack([d, d])
  result = evaluation.evaluate_rank(distmat, np.array([1, 2]), g_pids, np.array([0, 1]),
                                    g_camids, max_rank=50)
  np.testing.assert_allclose(result.cmc, [.5, .5, .5, 1, 1], atol=1e-12)
  np.testing.assert_allclose(result.all_ap, [.25, 1], atol=1e-12)
  np.testing.assert_allclose(result.all_inp, [.25, 1], atol=1e-12)


def test_query_with_junk_pid_is_skipped():
  g_pids = np.array([-1, 1])
  g_camids = np.array([1, 1])
  distmat = np.zeros((2, 2), np.float32)
  result = evaluation.evaluate_rank(distmat, np.array([-1, 1]), g_pids, np.array([0, 0]),
                                    g_camids)
  assert result.num_valid == 1 and result.num_skipped == 1
  # Query 1 ranks g1 first (g0 is junk): rank-1 = 1.
  np.testing.assert_array_equal(result.cmc, [1, 1])


def test_to_dict_and_table():
  result = evaluation.RankResult(
      cmc=np.linspace(0.9, 1.0, 12), all_ap=np.array([0.8, 0.6]),
      all_inp=np.array([0.5, 0.25]), num_valid=2, num_skipped=3)
  d = result.to_dict()
  assert d == {'rank1': pytest.approx(0.9), 'rank5': pytest.approx(0.9 + 4 * 0.1 / 11),
               'rank10': pytest.approx(0.9 + 9 * 0.1 / 11), 'mAP': pytest.approx(0.7),
               'mINP': pytest.approx(0.375), 'num_valid_queries': 2, 'num_skipped_queries': 3}
  assert all(type(v) is float for k, v in d.items() if not k.startswith('num'))
  assert type(d['num_valid_queries']) is int

  table = evaluation.format_results_table(
      {'bagtricks': d, 'paper': {'rank1': 0.941, 'mAP': 0.859}})
  lines = table.splitlines()
  assert lines[0].split('|')[1:-1] == [
      ' Model     ', ' Rank-1 ', ' Rank-5 ', ' Rank-10 ', '   mAP ', '  mINP ']
  assert [c.strip() for c in lines[2].split('|')[1:-1]] == [
      'bagtricks', '90.00', '93.64', '98.18', '70.00', '37.50']
  assert [c.strip() for c in lines[3].split('|')[1:-1]] == [
      'paper', '94.10', '-', '-', '85.90', '-']
  assert len({len(line) for line in lines}) == 1
  with pytest.raises(ValueError, match='divide percentages by 100'):
    evaluation.format_results_table({'x': {'rank1': 94.1}})


def test_bad_inputs_raise_clear_errors():
  distmat = np.zeros((2, 3), np.float32)
  pids, cams = np.array([1, 2]), np.array([0, 0])
  g_pids, g_cams = np.array([1, 2, 3]), np.array([1, 1, 1])
  with pytest.raises(ValueError, match='g_pids has shape'):
    evaluation.evaluate_rank(distmat, pids, g_pids[:2], cams, g_cams)
  with pytest.raises(ValueError, match='None of the 2 queries'):
    evaluation.evaluate_rank(distmat, np.array([7, 8]), g_pids, cams, g_cams)
  bad = distmat.copy()
  bad[1, 2] = np.nan
  with pytest.raises(ValueError, match='NaN'):
    evaluation.evaluate_rank(bad, pids, g_pids, cams, g_cams)
  with pytest.raises(ValueError, match='Unknown distance metric'):
    evaluation.compute_distance(np.zeros((2, 4)), np.zeros((3, 4)), 'cosin')
  with pytest.raises(ValueError, match='same model'):
    evaluation.compute_distance(np.zeros((2, 4)), np.zeros((3, 5)))


@pytest.mark.parametrize('metric', ['cosine', 'euclidean'])
def test_evaluate_features_equals_evaluate_rank(metric):
  q_feats, g_feats, q_pids, g_pids, q_camids, g_camids = random_problem(5, num_q=23)
  result = evaluation.evaluate_features(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids,
                                        metric=metric, max_rank=30, chunk_size=5)
  distmat = evaluation.compute_distance(q_feats, g_feats, metric, chunk_size=5)
  expected = evaluation.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                                      max_rank=30, chunk_size=1024)
  np.testing.assert_array_equal(result.cmc, expected.cmc)
  np.testing.assert_array_equal(result.all_ap, expected.all_ap)
  np.testing.assert_array_equal(result.all_inp, expected.all_inp)
  assert (result.num_valid, result.num_skipped) == (expected.num_valid, expected.num_skipped)
  assert_matches_reference(result, distmat, q_pids, g_pids, q_camids, g_camids, 30)


@pytest.mark.parametrize('chunk_size', [3, 4096])
def test_compute_distance_matches_numpy(chunk_size):
  rng = np.random.default_rng(0)
  q = rng.normal(size=(10, 16)).astype(np.float32)
  g = rng.normal(size=(13, 16)).astype(np.float32)
  g[4] = q[2]  # an exact duplicate: euclidean distance 0 up to float32 rounding
  q64, g64 = q.astype(np.float64), g.astype(np.float64)

  cos = evaluation.compute_distance(q, g, 'cosine', chunk_size=chunk_size)
  qn = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
  gn = g64 / np.linalg.norm(g64, axis=1, keepdims=True)
  assert cos.dtype == np.float32 and cos.shape == (10, 13)
  np.testing.assert_allclose(cos, 1 - qn @ gn.T, rtol=0, atol=1e-6)

  euc = evaluation.compute_distance(q, g, 'euclidean', chunk_size=chunk_size)
  direct = np.sqrt(((q64[:, None, :] - g64[None, :, :]) ** 2).sum(-1))
  assert euc.dtype == np.float32 and not np.isnan(euc).any()
  np.testing.assert_allclose(euc, direct, rtol=1e-5, atol=1e-5)
  assert euc[2, 4] < 1e-2  # sqrt of a clamped, possibly tiny negative difference


@pytest.mark.parametrize('metric', ['cosine', 'euclidean'])
def test_host_blas_blocks_equal_xla_blocks_and_numpy(metric):
  # On CPU the blocks come from numpy's BLAS (faster there); XLA's blocks stay the accelerator
  # path. Both must be the same distances, junk columns NaN in both.
  rng = np.random.default_rng(1)
  q = rng.normal(size=(11, 24)).astype(np.float32)
  g = rng.normal(size=(17, 24)).astype(np.float32)
  q[3] = 0.0  # normalised by eps, as torch.nn.functional.normalize
  junk = np.zeros(17, bool)
  junk[[2, 9]] = True
  q64, g64 = q.astype(np.float64), g.astype(np.float64)
  if metric == 'cosine':
    norm = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    ref = 1 - norm(q64) @ norm(g64).T
  else:
    ref = np.sqrt(((q64[:, None, :] - g64[None, :, :]) ** 2).sum(-1))
  ref[:, junk] = np.nan
  by = {}
  for host_blas in (True, False):
    blocks = list(evaluation.iter_distance_blocks(q, g, metric, chunk_size=4, nan_columns=junk,
                                                  host_blas=host_blas))
    assert [start for start, _ in blocks] == [0, 4, 8]
    by[host_blas] = np.concatenate([block for _, block in blocks])
    assert by[host_blas].dtype == np.float32
    np.testing.assert_allclose(by[host_blas], ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(by[True], by[False], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('metric', ['cosine', 'euclidean'])
def test_folded_column_offset_gives_the_values_of_adding_it_afterwards(metric):
  # The junk mask rides in the metric's own passes; every finite value must keep its bits.
  rng = np.random.default_rng(2)
  q = rng.normal(size=(9, 32)).astype(np.float32)
  g = (rng.normal(size=(40, 32)) * rng.uniform(0.1, 30, size=(40, 1))).astype(np.float32)
  junk = np.zeros(40, bool)
  junk[[0, 7, 39]] = True
  stats = evaluation.distance.host_gallery_statistics(g, metric)
  qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), np.float32(1e-12))
  if metric == 'cosine':
    expected = np.float32(1.0) - (qn @ g.T) * stats[None, :]
  else:
    sq = np.einsum('ij,ij->i', q, q)[:, None]
    expected = np.sqrt(np.maximum(q @ g.T * np.float32(-2.0) + sq + stats[None, :], 0))
  offset = np.where(junk, np.float32(np.nan), np.float32(0.0)).astype(np.float32)
  got = evaluation.distance.host_distance_block(q, g, metric, stats, column_offset=offset)
  plain = evaluation.distance.host_distance_block(q, g, metric, stats)
  np.testing.assert_array_equal(plain, expected)
  np.testing.assert_array_equal(got, expected + offset[None, :])
  assert np.isnan(got[:, junk]).all() and np.isfinite(got[:, ~junk]).all()
  for tile_rows in (1, 4, 100):  # the passes run tile by tile; each tile is yielded finished
    tiles = list(evaluation.distance.host_distance_tiles(q, g, metric, stats, column_offset=offset,
                                                         tile_rows=tile_rows))
    assert [start for start, _ in tiles] == list(range(0, 9, tile_rows))
    np.testing.assert_array_equal(np.concatenate([tile.copy() for _, tile in tiles]), got)


@pytest.mark.parametrize('host_blas', [True, False])
@pytest.mark.parametrize('workers', [1, 2, 3])
def test_map_distance_blocks_equals_iterating_the_blocks(host_blas, workers):
  rng = np.random.default_rng(3)
  q = rng.normal(size=(23, 16)).astype(np.float32)
  g = rng.normal(size=(31, 16)).astype(np.float32)
  junk = np.zeros(31, bool)
  junk[[4, 5]] = True
  expected = list(evaluation.iter_distance_blocks(q, g, 'euclidean', chunk_size=5,
                                                  nan_columns=junk, host_blas=host_blas))
  # The block is only valid during the call: keep a copy, as a reducing caller would not.
  got = evaluation.distance.map_distance_blocks(
      lambda start, block: (start, block.copy()), q, g, 'euclidean', chunk_size=5,
      nan_columns=junk, host_blas=host_blas, workers=workers)
  assert [start for start, _ in got] == [0, 5, 10, 15, 20]
  for (start, block), (expected_start, expected_block) in zip(got, expected):
    assert start == expected_start
    np.testing.assert_array_equal(block, expected_block)


@pytest.mark.parametrize('host_blas', [True, False])
def test_map_distance_blocks_raises_the_first_failing_block(host_blas):
  q = np.ones((40, 4), np.float32)
  calls = []

  def fn(start, block):
    calls.append(start)
    if start in (10, 30):
      raise ValueError(f'block {start}')
    return start

  with pytest.raises(ValueError, match='block 10'):
    evaluation.distance.map_distance_blocks(fn, q, q, chunk_size=5, host_blas=host_blas,
                                            workers=2)
  assert {0, 5, 10} <= set(calls)


def test_ordered_map_keeps_order_and_worker_state():
  states = []

  def state():
    states.append([])
    return states[-1]

  def work(item, mine):
    mine.append(item)
    return item * item

  assert evaluation.distance.ordered_map(work, range(20), 3, state) == [i * i for i in range(20)]
  assert 1 <= len(states) <= 3 and sorted(sum(states, [])) == list(range(20))


@pytest.mark.parametrize('roc', [False, True])
def test_parallel_ranking_equals_one_thread(monkeypatch, roc):
  q_feats, g_feats, q_pids, g_pids, q_camids, g_camids = random_problem(8, num_q=37)
  g_pids[[1, 5]] = -1
  results = {}
  for workers in (1, 3):
    monkeypatch.setattr(evaluation.distance, 'default_workers', lambda w=workers: w)
    results[workers] = (
        evaluation.evaluate_features(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids,
                                     chunk_size=4, roc=roc),
        evaluation.evaluate_rank(evaluation.compute_distance(q_feats, g_feats), q_pids, g_pids,
                                 q_camids, g_camids, chunk_size=4, roc=roc))
  for one, three in zip(results[1], results[3]):
    np.testing.assert_array_equal(one.cmc, three.cmc)
    np.testing.assert_array_equal(one.all_ap, three.all_ap)
    np.testing.assert_array_equal(one.all_inp, three.all_inp)
    if roc:
      np.testing.assert_array_equal(one.roc.tpr, three.roc.tpr)
      np.testing.assert_array_equal(one.roc.fpr, three.roc.fpr)
      np.testing.assert_array_equal(one.roc.tpr_at_fpr, three.roc.tpr_at_fpr)


def test_normalize():
  x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
  np.testing.assert_allclose(evaluation.normalize(x), [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
  np.testing.assert_allclose(evaluation.normalize(x.T, axis=0), [[0.6, 0.0], [0.8, 0.0]],
                             atol=1e-7)


# --- The counting ranker (no row sort), CUHK03 protocol, feature tuples. ---


def tied_problem(seed, num_q=40, num_g=120):
  """Continuous distances with planted exact ties (and -0.0 vs 0.0) around the matches."""
  _, _, q_pids, g_pids, q_camids, g_camids = random_problem(seed, num_q=num_q, num_g=num_g)
  rng = np.random.default_rng(seed + 7)
  distmat = rng.random((num_q, num_g)).astype(np.float32)
  for i in range(num_q):
    same = np.flatnonzero(g_pids == q_pids[i])
    others = rng.choice(num_g, size=5, replace=False)
    if len(same):
      distmat[i, others] = distmat[i, rng.choice(same)]  # ties with a match
  distmat[0, :10] = 0.0
  distmat[0, 10:20] = -0.0
  return distmat, q_pids, g_pids, q_camids, g_camids


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('chunk_size', [1, 16, 1024])
def test_counting_ranker_matches_reference_with_ties(seed, chunk_size):
  distmat, q_pids, g_pids, q_camids, g_camids = tied_problem(seed)
  result = evaluation.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=30,
                                    chunk_size=chunk_size)
  assert_matches_reference(result, distmat, q_pids, g_pids, q_camids, g_camids, 30)


@pytest.mark.parametrize('plan', [0, 1, 3, 1000])
def test_every_ranker_plan_matches_reference(plan):
  # plan = how many of each row's deepest matches are counted by passes (0: all from a sorted
  # copy, 1000: all by passes); every mix must give the plain per-row sort's numbers.
  distmat, q_pids, g_pids, q_camids, g_camids = tied_problem(4)
  hits, kept = metrics.sorted_hits(distmat, q_pids, q_camids, g_pids, g_camids)
  expected = metrics.query_scores(hits, kept)
  gallery = metrics._GalleryIndex(g_pids, g_camids)
  got = metrics._rank_chunk(distmat, q_pids, q_camids, gallery, plan=plan)
  for a, b in zip(got, expected):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize('seed', [0, 1])
def test_counting_ranker_on_wide_rows_with_ties_junk_and_same_camera(seed):
  # Wider than the ranker's sample (its cost estimates matter), coarse distances (many ties),
  # junk, distractors, same-camera matches and queries without any match.
  rng = np.random.default_rng(seed)
  num_q, num_g = 40, 3000
  g_pids = rng.integers(-1, 30, num_g)
  q_pids = rng.integers(1, 40, num_q)  # pids above 29 have no match
  q_camids, g_camids = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
  distmat = (rng.integers(0, 200, (num_q, num_g)) / 100).astype(np.float32)
  # A deep match in some rows: most of the row comes before it.
  distmat[:5, np.flatnonzero(g_pids == q_pids[0])[:1]] = 1.99
  hits, kept = metrics.sorted_hits(distmat, q_pids, q_camids, g_pids, g_camids)
  valid, first_rank, ap, inp = metrics.query_scores(hits, kept)
  assert 0 < valid.sum() < num_q
  result = evaluation.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50,
                                    chunk_size=16)
  np.testing.assert_allclose(result.all_ap, ap, rtol=0, atol=1e-12)
  np.testing.assert_allclose(result.all_inp, inp, rtol=0, atol=1e-12)
  cmc = np.mean(first_rank[:, None] <= np.arange(1, 51)[None, :], axis=0)
  np.testing.assert_allclose(result.cmc, cmc, rtol=0, atol=1e-12)
  assert result.num_skipped == num_q - valid.sum()


def test_ties_with_junk_and_same_camera_items_by_hand():
  # Query pid 1, camera 0; every gallery item at the same distance, so a stable argsort keeps
  # gallery order: g0 junk (removed), g1 pid 1 cam 0 (removed), g2 miss, g3 hit, g4 miss, g5 hit.
  # Kept ranking: g2, g3, g4, g5 -> hits at ranks 2 and 4: AP = (1/2 + 2/4) / 2, INP = 2/4.
  g_pids = np.array([-1, 1, 2, 1, 3, 1])
  g_camids = np.array([1, 0, 1, 1, 1, 2])
  distmat = np.full((1, 6), 0.5, np.float32)
  gallery = metrics._GalleryIndex(g_pids, g_camids)
  for plan in (0, 1000):
    valid, first_rank, ap, inp = metrics._rank_chunk(distmat, np.array([1]), np.array([0]),
                                                     gallery, plan=plan)
    assert valid.tolist() == [True] and first_rank.tolist() == [2]
    np.testing.assert_allclose(ap, [0.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(inp, [0.5], rtol=0, atol=1e-12)


def test_evaluate_features_rejects_non_finite_features():
  q_feats, g_feats, q_pids, g_pids, q_camids, g_camids = random_problem(7)
  g_feats[3, 1] = np.inf
  with pytest.raises(ValueError, match='gallery features contain NaN or inf'):
    evaluation.evaluate_features(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids)


def test_counting_ranker_equals_row_sort_scores():
  # query_scores(sorted_hits(...)) is the plain per-row sort; the counting path must agree.
  distmat, q_pids, g_pids, q_camids, g_camids = tied_problem(5)
  hits, kept = metrics.sorted_hits(distmat, q_pids, q_camids, g_pids, g_camids)
  valid, first_rank, ap, inp = metrics.query_scores(hits, kept)
  gallery = metrics._GalleryIndex(g_pids, g_camids)
  got = metrics._rank_chunk(distmat, q_pids, q_camids, gallery)
  for a, b in zip(got, (valid, first_rank, ap, inp)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_evaluate_rank_accepts_feature_tuple():
  q_feats, g_feats, q_pids, g_pids, q_camids, g_camids = random_problem(6)
  result = evaluation.evaluate_rank((q_feats, g_feats, 'euclidean'), q_pids, g_pids, q_camids,
                                    g_camids, max_rank=10, chunk_size=4)
  distmat = evaluation.compute_distance(q_feats, g_feats, 'euclidean')
  assert_matches_reference(result, distmat, q_pids, g_pids, q_camids, g_camids, 10)


def reference_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, num_repeats, seed):
  """Single-gallery-shot CMC, one query and one repeat at a time, with the documented draws."""
  rng = np.random.default_rng(seed)
  num_g = distmat.shape[1]
  max_rank = min(max_rank, num_g)
  all_cmc = []
  for i in range(len(q_pids)):
    order = sorted(range(num_g), key=lambda j: (distmat[i, j], j))
    ranked = [j for j in order if g_pids[j] != -1 and not (
        g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i])]
    if not any(g_pids[j] == q_pids[i] for j in ranked):
      continue
    identities = []  # in order of first appearance
    positions = {}
    for pos, j in enumerate(ranked):
      if g_pids[j] not in positions:
        identities.append(g_pids[j])
        positions[g_pids[j]] = []
      positions[g_pids[j]].append(pos)
    draws = rng.random((num_repeats, len(identities)))
    cmc = np.zeros(max_rank)
    for r in range(num_repeats):
      sampled = sorted(positions[pid][int(np.floor(draws[r, c] * len(positions[pid])))]
                       for c, pid in enumerate(identities))
      is_match = [g_pids[ranked[pos]] == q_pids[i] for pos in sampled]
      first = is_match.index(True) + 1
      cmc += [1.0 if k >= first else 0.0 for k in range(1, max_rank + 1)]
    all_cmc.append(cmc / num_repeats)
  return np.mean(all_cmc, axis=0)


@pytest.mark.parametrize('seed', [0, 1])
def test_cuhk03_protocol_matches_reference(seed):
  distmat, q_pids, g_pids, q_camids, g_camids = tied_problem(seed, num_q=15, num_g=60)
  result = evaluation.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20,
                                    protocol='cuhk03', num_repeats=4, seed=seed, chunk_size=6)
  expected = reference_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, 20, 4, seed)
  np.testing.assert_allclose(result.cmc, expected, rtol=0, atol=1e-9)
  # AP and INP: the full ranking, as the Market protocol.
  market = evaluation.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20)
  np.testing.assert_allclose(result.all_ap, market.all_ap, atol=1e-12)
  np.testing.assert_allclose(result.all_inp, market.all_inp, atol=1e-12)
  assert result.num_skipped == market.num_skipped


def test_cuhk03_by_hand():
  # Query pid 1 cam 0. Ranking: g0 pid 2, g1 pid 1 (cam 1), g2 pid 2, g3 pid 1 (cam 1).
  # Samples: pid 2 -> g0 or g2, pid 1 -> g1 or g3, each with probability 1/2. The match is at
  # rank 1 iff its sample comes first: only for the pair (g1, g2), so P(rank 1) = 1/4.
  g_pids = np.array([2, 1, 2, 1])
  g_camids = np.array([1, 1, 1, 1])
  distmat = np.array([[.1, .2, .3, .4]], np.float32)
  result = evaluation.evaluate_cuhk03(distmat, np.array([1]), g_pids, np.array([0]), g_camids,
                                      num_repeats=1000, seed=0)
  assert abs(result.cmc[0] - 0.25) < 0.05
  assert result.cmc[1] == 1.0 and len(result.cmc) == 4
  with pytest.raises(ValueError, match='protocol'):
    evaluation.evaluate_rank(distmat, np.array([1]), g_pids, np.array([0]), g_camids,
                             protocol='viper')
