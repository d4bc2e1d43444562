"""k-reciprocal re-ranking from features at Market-1501 scale, three difficulty levels.

    python benchmarks/rerank_scale.py          # writes results/rerank_scale_cpu.json
    python benchmarks/rerank_scale.py --quick  # small shapes, a few seconds (used by the tests)

Market scale (3,368 queries + 15,913 gallery items), 256-d planted features
(``_bench_util.make_problem``, L2-normalised), euclidean distances, k1=20, k2=6, lambda=0.3, each in its own
subprocess:

* ``baseline``: the dense algorithm of Zhong et al.'s reference code as FastReID ships it
  (``re_ranking(q_g_dist, q_q_dist, g_g_dist)``), in plain numpy: the ``(q+g)^2`` matrix
  squared, divided by its column maxima and transposed, a full argsort of every row, the
  k-reciprocal sets and their expansion one item at a time, ``V`` and its query expansion as
  dense ``(q+g)^2`` matrices, an inverted index of ``V``'s columns and the Jaccard sums one query
  at a time. ``V`` is float32 (the reference stores float16) so that both sides compute in
  float32. Its three input matrices come from the same features through
  ``jreid.evaluation.compute_distance``; their time is reported apart.
* ``jreid``: ``jreid.evaluation.rerank_features``, from the features.
* ``before`` (with ``--before``): the ``jreid`` child of this script as of commit
  ``PREVIOUS_COMMIT`` (chunks reduced by one thread), run in a copy of the repository at that
  commit (``_bench_util.checkout_at_commit``); the parent reports whether today's result is
  bitwise the same.

Each child reports wall time and peak RSS (VmHWM after the features are made; features and
runtime included), the mAP before and after re-ranking, and saves its result; the parent
reports the fraction of entries where jreid and the baseline differ by more than 1e-4 (float32
rounding differs between the two, so near-ties in a ranking can flip a neighbour).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import _bench_util as util  # pylint: disable=g-import-not-at-top

K1, K2, LAMBDA = 20, 6, 0.3
MODES = ('baseline', 'jreid')
PREVIOUS_COMMIT = 'ea469a8'
TOLERANCE = 1e-4


def baseline_rerank(q_g, q_q, g_g, k1=K1, k2=K2, lambda_value=LAMBDA):
  """Zhong et al.'s dense re-ranking, step by step as in the reference code (module docstring)."""
  num_query = q_g.shape[0]
  original = np.concatenate([np.concatenate([q_q, q_g], axis=1),
                             np.concatenate([q_g.T, g_g], axis=1)], axis=0)
  original = np.power(original, 2).astype(np.float32)
  original = np.transpose(original / np.max(original, axis=0))
  total = original.shape[0]
  weights = np.zeros_like(original, dtype=np.float32)
  initial_rank = np.argsort(original).astype(np.int32)
  half = int(np.around(k1 / 2)) + 1
  for i in range(total):
    forward = initial_rank[i, :k1 + 1]
    backward = initial_rank[forward, :k1 + 1]
    reciprocal = forward[np.where(backward == i)[0]]
    expanded = reciprocal
    for candidate in reciprocal:
      c_forward = initial_rank[candidate, :half]
      c_backward = initial_rank[c_forward, :half]
      c_reciprocal = c_forward[np.where(c_backward == candidate)[0]]
      if len(np.intersect1d(c_reciprocal, reciprocal)) > 2.0 / 3.0 * len(c_reciprocal):
        expanded = np.append(expanded, c_reciprocal)
    expanded = np.unique(expanded)
    w = np.exp(-original[i, expanded])
    weights[i, expanded] = w / np.sum(w)
  original = original[:num_query]
  if k2 != 1:
    expanded_weights = np.zeros_like(weights, dtype=np.float32)
    for i in range(total):
      expanded_weights[i] = np.mean(weights[initial_rank[i, :k2]], axis=0)
    weights = expanded_weights
  del initial_rank
  inverted = [np.where(weights[:, i] != 0)[0] for i in range(total)]
  jaccard = np.zeros_like(original, dtype=np.float32)
  for i in range(num_query):
    overlap = np.zeros((1, total), dtype=np.float32)
    nonzero = np.where(weights[i] != 0)[0]
    for j in nonzero:
      rows = inverted[j]
      overlap[0, rows] += np.minimum(weights[i, j], weights[rows, j])
    jaccard[i] = 1 - overlap / (2 - overlap)
  final = jaccard * (1 - lambda_value) + original * lambda_value
  return final[:num_query, num_query:]


def _result_path(mode, scale, level):
  return os.path.join('/tmp', f'rerank_scale_{mode}_{scale}_{level}.npy')


def child(mode: str, scale: str, level: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import distance  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import metrics  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import rerank  # pylint: disable=g-import-not-at-top
  query, gallery, q_pids, g_pids, q_camids, g_camids = util.make_problem(scale, level)
  # L2-normalised, so that the difficulty levels (set for cosine) hold for euclidean distances.
  query /= np.linalg.norm(query, axis=1, keepdims=True)
  gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
  out = {'mode': mode, 'scale': scale, 'level': level, 'backend': jax.default_backend()}
  # Compile the distance steps outside the timed call.
  for chunk in (1024, 4096):
    for _ in distance.iter_distance_blocks(query[:chunk], gallery[:16], 'euclidean', chunk):
      pass
  util.reset_peak()
  out['rss_before_gb'] = util.rss_gb()
  with util.Timer() as total:
    if mode == 'baseline':
      with util.Timer() as t:
        q_g = distance.compute_distance(query, gallery, 'euclidean')
        q_q = distance.compute_distance(query, query, 'euclidean')
        g_g = distance.compute_distance(gallery, gallery, 'euclidean')
      out['distance_matrices_s'] = t.seconds
      with util.Timer() as t:
        result = baseline_rerank(q_g, q_q, g_g)
      out['algorithm_s'] = t.seconds
    else:
      result = rerank.rerank_features(query, gallery, k1=K1, k2=K2, lambda_value=LAMBDA,
                                      metric='euclidean')
  out['seconds'] = total.seconds
  out['peak_rss_gb'] = util.peak_rss_gb()
  np.save(_result_path(mode, scale, level), result)
  before = metrics.evaluate_features(query, gallery, q_pids, g_pids, q_camids, g_camids,
                                     metric='euclidean')
  after = metrics.evaluate_rank(result, q_pids, g_pids, q_camids, g_camids)
  out.update(mAP_before=before.mAP, mAP=after.mAP, rank1_before=before.rank(1),
             rank1=after.rank(1))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--child', nargs=3, metavar=('MODE', 'SCALE', 'LEVEL'))
  parser.add_argument('--levels', default=','.join(util.LEVELS))
  parser.add_argument('--quick', action='store_true', help='small shapes (tests)')
  parser.add_argument('--before', action='store_true',
                      help=f'also time rerank_features as of commit {PREVIOUS_COMMIT}')
  parser.add_argument('--out', default=None, help='results file name (default: '
                      'rerank_scale_cpu.json; --quick writes nothing unless given)')
  args = parser.parse_args()
  if args.child:
    util.emit(child(*args.child))
    return
  scale = 'quick' if args.quick else 'market'
  payload = util.machine_info()
  payload['command'] = 'python benchmarks/rerank_scale.py ' + ' '.join(sys.argv[1:])
  payload['setup'] = {'k1': K1, 'k2': K2, 'lambda': LAMBDA, 'metric': 'euclidean', 'dim': 256,
                      'noise': util.NOISE[scale], 'tolerance': TOLERANCE}
  payload['results'] = {}
  out = args.out or (None if args.quick else 'rerank_scale_cpu.json')
  num_q, num_g = util.SCALES[scale][:2]
  for level in args.levels.split(','):
    runs = util.run_modes(__file__, MODES, [scale, level],
                          PREVIOUS_COMMIT if args.before else None,
                          lambda mode: _result_path(mode, scale, level))
    base, ours = runs['baseline'], runs['jreid']
    diff = np.abs(np.load(_result_path('jreid', scale, level))
                  - np.load(_result_path('baseline', scale, level)))
    summary = {
        'num_query': num_q, 'num_gallery': num_g,
        'mAP_before': ours['mAP_before'], 'mAP': ours['mAP'], 'rank1': ours['rank1'],
        'speedup_vs_baseline': base['seconds'] / ours['seconds'],
        'speedup_vs_baseline_algorithm_only': base['algorithm_s'] / ours['seconds'],
        'fraction_differing': float(np.mean(diff > TOLERANCE)),
        'max_difference': float(diff.max()),
        'runs': runs,
    }
    if 'before' in runs:
      summary['speedup_vs_before'] = runs['before']['seconds'] / ours['seconds']
      summary['bitwise_equal_to_before'] = bool(np.array_equal(
          np.load(_result_path('before', scale, level)), np.load(_result_path('jreid', scale,
                                                                               level))))
    payload['results'][f'{scale}/{level}'] = summary
    print(f'{scale} ({num_q} + {num_g}) {level}: mAP {ours["mAP_before"]:.3f} -> '
          f'{ours["mAP"]:.3f} (baseline -> {base["mAP"]:.3f})\n'
          f'  baseline {base["seconds"]:.1f} s (matrices {base["distance_matrices_s"]:.1f}, '
          f'algorithm {base["algorithm_s"]:.1f}), peak {base["peak_rss_gb"]:.2f} GB\n'
          f'  jreid    {ours["seconds"]:.2f} s ({summary["speedup_vs_baseline"]:.1f}x; '
          f'{summary["speedup_vs_baseline_algorithm_only"]:.1f}x the algorithm alone), peak '
          f'{ours["peak_rss_gb"]:.2f} GB; entries differing by > {TOLERANCE:g}: '
          f'{summary["fraction_differing"]:.2e} (largest {summary["max_difference"]:.2g})',
          flush=True)
    if 'before' in runs:
      print(f'  before   {runs["before"]["seconds"]:.2f} s (now {summary["speedup_vs_before"]:.1f}x'
            f' faster), peak {runs["before"]["peak_rss_gb"]:.2f} GB; bitwise equal: '
            f'{summary["bitwise_equal_to_before"]}', flush=True)
    if out:  # after every level: a later failure (e.g. the OOM killer) keeps what was measured
      path = util.write_results(out, payload)
  if out:
    print('wrote', path)


if __name__ == '__main__':
  main()
