"""Evaluation from features at Market-1501 and MSMT17 scale, three difficulty levels.

    python benchmarks/eval_scale.py            # writes results/eval_scale_cpu.json
    python benchmarks/eval_scale.py --scales market --levels realistic
    python benchmarks/eval_scale.py --quick    # small shapes, a few seconds (used by the tests)

Per scale and difficulty level (``_bench_util.make_problem``: 256-d planted features, cosine
distance, Market-like distractors and junk at Market scale), each in its own subprocess:

* ``baseline``: what FastReID's compiled evaluator (``evaluate_cy`` / ``eval_market1501_cy``)
  does, with its per-query loop compiled by numba instead of Cython: the full float32 distance
  matrix (the same distance blocks as jreid: ``jreid.evaluation.compute_distance``),
  ``np.argsort`` of the whole matrix at once, the int64 match matrix
  ``g_pids[indices] == q_pids[:, None]`` (built in 1024-row blocks: at once it would need 23 GB at
  MSMT17 scale, more than this machine has), then per query: copy its order,
  drop same-identity same-camera items (and junk, which FastReID drops when loading), cumulative
  sums, INP, clamped CMC and AP as its loop computes them. Times of the three steps are reported
  separately.
* ``jreid``: ``jreid.evaluation.evaluate_features`` (the public entry of ``jreid.inference``).
* ``matmul``: the same distance blocks, computed as ``evaluate_features`` computes them
  (``distance.map_distance_blocks``: one block per worker thread) and discarded: the floor of
  any evaluation from features.
* ``before`` (with ``--before``): the ``jreid`` child of this script as of commit
  ``PREVIOUS_COMMIT`` (one block computed in a thread while the caller ranked the previous one),
  run in a copy of the repository at that commit (``_bench_util.checkout_at_commit``). Its
  results must be those of today's (the same AP per query).

Time is wall-clock of the evaluation call; peak RSS is the child's VmHWM after the features are
made (``_bench_util.reset_peak``), features and runtime included. jreid's numbers are checked
against the baseline's (the baseline sorts with an unstable argsort, as FastReID, so queries
with a correct match tied with another item at the same float32 distance may differ; the
largest difference is reported).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _bench_util as util  # pylint: disable=g-import-not-at-top

MAX_RANK = 50
CHUNK = 1024
MODES = ('baseline', 'jreid', 'matmul')
PREVIOUS_COMMIT = 'ea469a8'


def _fastreid_loop():
  """FastReID's per-query loop, compiled with numba (imported here: only the baseline needs it)."""
  try:
    import numba  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit('The baseline needs numba: pip install -e ".[bench]"') from e

  @numba.njit(cache=False)
  def loop(indices, matches, start, q_pids, g_pids, q_camids, g_camids, max_rank, all_cmc,
           all_ap, all_inp, valid):
    num_rows, num_g = indices.shape
    order = np.zeros(num_g, np.int64)
    raw_cmc = np.zeros(num_g, np.float32)
    cmc = np.zeros(num_g, np.float32)
    tmp_cmc = np.zeros(num_g, np.float32)
    for row in range(num_rows):
      q_idx = start + row
      q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
      for k in range(num_g):
        order[k] = indices[row, k]
      num_real = 0
      meet = False
      for k in range(num_g):
        o = order[k]
        if g_pids[o] == -1:  # junk (FastReID drops it when loading the dataset)
          continue
        if g_pids[o] != q_pid or g_camids[o] != q_camid:
          raw_cmc[num_real] = matches[row, k]
          num_real += 1
          if matches[row, k] > 0:
            meet = True
      if not meet:
        continue
      acc = np.float32(0.0)
      for k in range(num_real):
        acc += raw_cmc[k]
        cmc[k] = acc
      max_pos = 0
      for k in range(num_real):
        if raw_cmc[k] == 1 and k > max_pos:
          max_pos = k
      all_inp[q_idx] = cmc[max_pos] / (max_pos + 1.0)
      for k in range(num_real):
        if cmc[k] > 1:
          cmc[k] = 1
      for r in range(max_rank):
        all_cmc[q_idx, r] = cmc[r]
      valid[q_idx] = True
      acc = np.float32(0.0)
      for k in range(num_real):
        acc += raw_cmc[k]
        tmp_cmc[k] = acc
      num_rel = np.float32(0.0)
      total = np.float32(0.0)
      for k in range(num_real):
        total += (tmp_cmc[k] / (k + 1.0)) * raw_cmc[k]
        num_rel += raw_cmc[k]
      all_ap[q_idx] = total / num_rel

  return loop


def baseline_evaluate(query, gallery, q_pids, g_pids, q_camids, g_camids, timings, loop):
  """The FastReID evaluation (module docstring); fills ``timings`` with its steps."""
  from jreid.evaluation import distance  # pylint: disable=g-import-not-at-top
  q_pids, g_pids, q_camids, g_camids = (np.asarray(a, np.int64)
                                        for a in (q_pids, g_pids, q_camids, g_camids))
  num_q, num_g = len(q_pids), len(g_pids)
  max_rank = min(MAX_RANK, num_g)
  all_cmc = np.zeros((num_q, max_rank), np.float32)
  all_ap = np.zeros(num_q, np.float32)
  all_inp = np.zeros(num_q, np.float32)
  valid = np.zeros(num_q, bool)
  with util.Timer() as t:
    distmat = distance.compute_distance(query, gallery, 'cosine', chunk_size=CHUNK)
  timings['distance_matrix_s'] = t.seconds
  with util.Timer() as t:
    indices = np.argsort(distmat, axis=1)
  timings['argsort_s'] = t.seconds
  timings['matches_s'] = timings['loop_s'] = 0.0
  for start in range(0, num_q, CHUNK):
    rows = slice(start, start + CHUNK)
    with util.Timer() as t:
      matches = (g_pids[indices[rows]] == q_pids[rows, np.newaxis]).astype(np.int64)
    timings['matches_s'] += t.seconds
    with util.Timer() as t:
      loop(indices[rows], matches, start, q_pids, g_pids, q_camids, g_camids, max_rank, all_cmc,
           all_ap, all_inp, valid)
    timings['loop_s'] += t.seconds
  return (all_cmc[valid].mean(0).astype(np.float64), all_ap[valid].astype(np.float64),
          all_inp[valid].astype(np.float64))


def child(mode: str, scale: str, level: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import distance  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import metrics  # pylint: disable=g-import-not-at-top
  query, gallery, q_pids, g_pids, q_camids, g_camids = util.make_problem(scale, level)
  query, gallery = jnp.asarray(query), jnp.asarray(gallery)
  out = {'mode': mode, 'scale': scale, 'level': level, 'backend': jax.default_backend()}
  # Every mode compiles outside its timed call: the [CHUNK, g] distance step, the baseline's
  # numba loop.
  for _ in distance.iter_distance_blocks(query[:CHUNK], gallery, 'cosine', CHUNK):
    pass
  if mode == 'baseline':
    loop = _fastreid_loop()
    ids64 = [np.asarray(a, np.int64) for a in (q_pids, g_pids, q_camids, g_camids)]
    loop(np.zeros((1, len(g_pids)), np.int64), np.zeros((1, len(g_pids)), np.int64), 0, *ids64,
         1, np.zeros((len(q_pids), 1), np.float32), *(np.zeros(len(q_pids), t)
                                                      for t in (np.float32, np.float32, bool)))
  util.reset_peak()
  out['rss_before_gb'] = util.rss_gb()
  timings = {}
  with util.Timer() as t:
    if mode == 'baseline':
      cmc, all_ap, all_inp = baseline_evaluate(query, gallery, q_pids, g_pids, q_camids,
                                               g_camids, timings, loop)
    elif mode == 'jreid':
      result = metrics.evaluate_features(query, gallery, q_pids, g_pids, q_camids, g_camids,
                                         metric='cosine', max_rank=MAX_RANK, chunk_size=CHUNK)
      cmc, all_ap, all_inp = result.cmc, result.all_ap, result.all_inp
    else:
      distance.map_distance_blocks(lambda start, block: None, query, gallery, 'cosine', CHUNK)
      cmc = None
  out['seconds'] = t.seconds
  out.update(timings)
  out['peak_rss_gb'] = util.peak_rss_gb()
  if cmc is not None:
    out.update(rank1=float(cmc[0]), mAP=float(np.mean(all_ap)), mINP=float(np.mean(all_inp)),
               num_valid=int(len(all_ap)))
    np.save(_ap_path(mode, scale, level), all_ap)
  return out


def _ap_path(mode, scale, level):
  return os.path.join('/tmp', f'eval_scale_{mode}_{scale}_{level}_ap.npy')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--child', nargs=3, metavar=('MODE', 'SCALE', 'LEVEL'))
  parser.add_argument('--scales', default='market,msmt17')
  parser.add_argument('--levels', default=','.join(util.LEVELS))
  parser.add_argument('--quick', action='store_true', help='small shapes (tests)')
  parser.add_argument('--before', action='store_true',
                      help=f'also time evaluate_features as of commit {PREVIOUS_COMMIT}')
  parser.add_argument('--out', default=None, help='results file name (default: '
                      'eval_scale_cpu.json; --quick writes nothing unless given)')
  args = parser.parse_args()
  if args.child:
    util.emit(child(*args.child))
    return
  scales = ['quick'] if args.quick else args.scales.split(',')
  payload = util.machine_info()
  payload['command'] = 'python benchmarks/eval_scale.py ' + ' '.join(sys.argv[1:])
  payload['setup'] = {'dim': 256, 'metric': 'cosine', 'max_rank': MAX_RANK,
                      'chunk_size': CHUNK, 'noise': {s: util.NOISE[s] for s in scales}}
  payload['results'] = {}
  out = args.out or (None if args.quick else 'eval_scale_cpu.json')
  for scale in scales:
    num_q, num_g = util.SCALES[scale][:2]
    for level in args.levels.split(','):
      runs = util.run_modes(__file__, MODES, [scale, level],
                            PREVIOUS_COMMIT if args.before else None,
                            lambda mode: _ap_path(mode, scale, level))
      base, ours, floor = runs['baseline'], runs['jreid'], runs['matmul']
      ap_diff = np.abs(np.load(_ap_path('jreid', scale, level))
                       - np.load(_ap_path('baseline', scale, level)))
      summary = {
          'num_query': num_q, 'num_gallery': num_g,
          'mAP': ours['mAP'], 'rank1': ours['rank1'], 'mINP': ours['mINP'],
          'speedup_vs_baseline': base['seconds'] / ours['seconds'],
          'speedup_vs_baseline_without_its_matrix': (
              (base['seconds'] - base['distance_matrix_s']) / ours['seconds']),
          'jreid_over_matmul_floor': ours['seconds'] / floor['seconds'],
          'max_ap_difference': float(ap_diff.max()),
          'queries_with_ap_difference_over_1e-6': int(np.sum(ap_diff > 1e-6)),
          'runs': runs,
      }
      if 'before' in runs:
        summary['speedup_vs_before'] = runs['before']['seconds'] / ours['seconds']
        np.testing.assert_array_equal(np.load(_ap_path('before', scale, level)),
                                      np.load(_ap_path('jreid', scale, level)))
      assert base['num_valid'] == ours['num_valid']
      assert abs(base['mAP'] - ours['mAP']) < 1e-4, (base['mAP'], ours['mAP'])
      payload['results'][f'{scale}/{level}'] = summary
      print(f'{scale} ({num_q} x {num_g}) {level}: mAP {ours["mAP"]:.3f}, Rank-1 '
            f'{ours["rank1"]:.3f}, mINP {ours["mINP"]:.3f}\n'
            f'  baseline {base["seconds"]:.1f} s (matrix {base["distance_matrix_s"]:.1f}, argsort '
            f'{base["argsort_s"]:.1f}, matches {base["matches_s"]:.1f}, loop '
            f'{base["loop_s"]:.1f}), peak {base["peak_rss_gb"]:.2f} GB\n'
            f'  jreid    {ours["seconds"]:.2f} s ({summary["speedup_vs_baseline"]:.1f}x; '
            f'{summary["speedup_vs_baseline_without_its_matrix"]:.1f}x the baseline without its '
            f'matrix), peak {ours["peak_rss_gb"]:.2f} GB\n'
            f'  matmul   {floor["seconds"]:.2f} s (jreid = {summary["jreid_over_matmul_floor"]:.2f}'
            f'x the floor), peak {floor["peak_rss_gb"]:.2f} GB; largest AP difference '
            f'{summary["max_ap_difference"]:.2g}', flush=True)
      if 'before' in runs:
        print(f'  before   {runs["before"]["seconds"]:.2f} s (now '
              f'{summary["speedup_vs_before"]:.1f}x faster), peak '
              f'{runs["before"]["peak_rss_gb"]:.2f} GB', flush=True)
      if out:  # after every level: a later failure keeps what was measured
        path = util.write_results(out, payload)
  if out:
    print('wrote', path)


if __name__ == '__main__':
  main()
