"""k-reciprocal re-ranking at Market-1501 and MSMT17 scale (k1=20, k2=6, lambda=0.3).

    python benchmarks/rerank_scale.py        # writes results/rerank_scale_cpu.json

* Market scale (3,368 + 15,913 items, 2048-d planted features, euclidean distances as in the
  paper): exact mode ``k_reciprocal_rerank(q_g, q_q, g_g)`` against the previous jreid
  implementation (commit bcdf44a: the classic dense algorithm on the full ``(q+g)^2`` float32
  matrix, loaded from git), both from the same given matrices; time and peak RSS during the
  call (inputs resident, 1.27 GB) and extra memory beyond the inputs; results checked equal.
  Then scalable mode ``rerank_features`` on the same features: its mAP against exact mode's.
* MSMT17 scale (11,659 + 82,161 items): scalable mode only (the dense matrices would be 35 GB);
  256-d features so that the ``(q+g)^2`` matmul takes minutes, not an hour, on this 2-core CPU
  (2048-d features would add 0.6 GB of features and 8x the matmul time; the rest is the same).

Each measurement runs in its own subprocess; peak RSS from /proc (VmHWM, reset after the data
is prepared).
"""

import argparse
import os
import subprocess
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import _bench_util as util  # pylint: disable=g-import-not-at-top
import eval_scale  # pylint: disable=g-import-not-at-top

K1, K2, LAMBDA = 20, 6, 0.3
PREVIOUS_COMMIT = 'bcdf44a'


def previous_rerank_module():
  source = subprocess.run(
      ['git', 'show', f'{PREVIOUS_COMMIT}:jreid/evaluation/rerank.py'], cwd=os.path.dirname(HERE),
      check=True, capture_output=True, text=True).stdout
  module = types.ModuleType('previous_rerank')
  exec(compile(source, 'previous_rerank.py', 'exec'), module.__dict__)  # pylint: disable=exec-used
  return module


def child(mode: str, scale: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import distance  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import metrics  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import rerank  # pylint: disable=g-import-not-at-top
  q_pids, g_pids, q_camids, g_camids = eval_scale.make_ids(scale)
  dim = 2048 if scale == 'market' else 256
  if dim not in eval_scale.NOISE:
    eval_scale.NOISE[dim] = 1.5
  query, gallery = eval_scale.make_features(scale, dim)
  out = {'mode': mode, 'scale': scale, 'dim': dim, 'backend': jax.default_backend()}
  if mode in ('exact', 'previous'):
    q_g = distance.compute_distance(query, gallery, 'euclidean')
    q_q = distance.compute_distance(query, query, 'euclidean')
    g_g = distance.compute_distance(gallery, gallery, 'euclidean')
    del query, gallery
    fn = rerank.k_reciprocal_rerank if mode == 'exact' else (
        previous_rerank_module().k_reciprocal_rerank)
    util.reset_peak()
    out['rss_with_inputs_gb'] = util.rss_gb()
    with util.Timer() as t:
      result = fn(q_g, q_q, g_g, k1=K1, k2=K2, lambda_value=LAMBDA)
    out['peak_rss_gb'] = util.peak_rss_gb()
    out['extra_peak_gb'] = out['peak_rss_gb'] - out['rss_with_inputs_gb']
    out['mAP_before'] = metrics.evaluate_rank(q_g, q_pids, g_pids, q_camids, g_camids).mAP
    np.save(f'/tmp/rerank_scale_{mode}.npy', result[:200])
  else:
    query, gallery = np.asarray(query), np.asarray(gallery)
    util.reset_peak()
    out['rss_with_inputs_gb'] = util.rss_gb()
    with util.Timer() as t:
      result = rerank.rerank_features(query, gallery, k1=K1, k2=K2, lambda_value=LAMBDA,
                                      metric='euclidean')
    out['peak_rss_gb'] = util.peak_rss_gb()
    out['extra_peak_gb'] = out['peak_rss_gb'] - out['rss_with_inputs_gb']
  out['seconds'] = t.seconds
  out['process_peak_rss_gb'] = util.process_peak_rss_gb()
  after = metrics.evaluate_rank(result, q_pids, g_pids, q_camids, g_camids)
  out.update(mAP=after.mAP, rank1=after.rank(1))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--child', nargs=2, metavar=('MODE', 'SCALE'))
  parser.add_argument('--out', default='rerank_scale_cpu.json')
  parser.add_argument('--skip_msmt17', action='store_true')
  args = parser.parse_args()
  if args.child:
    util.emit(child(*args.child))
    return
  payload = util.machine_info()
  payload['command'] = 'python benchmarks/rerank_scale.py ' + ' '.join(sys.argv[1:])
  payload['params'] = {'k1': K1, 'k2': K2, 'lambda': LAMBDA, 'metric': 'euclidean'}
  runs = {mode: util.run_child(__file__, [mode, 'market'])
          for mode in ('previous', 'exact', 'sparse')}
  previous, exact, sparse = runs['previous'], runs['exact'], runs['sparse']
  np.testing.assert_allclose(np.load('/tmp/rerank_scale_exact.npy'),
                             np.load('/tmp/rerank_scale_previous.npy'), atol=1e-6, rtol=0)
  payload['market'] = {
      'exact_speedup_vs_previous': previous['seconds'] / exact['seconds'],
      'sparse_minus_exact_mAP_points': 100 * (sparse['mAP'] - exact['mAP']),
      'runs': runs,
  }
  print('Market scale (3368 + 15913, 2048-d):')
  print(f'  exact mode: {exact["seconds"]:.1f} s, peak RSS {exact["peak_rss_gb"]:.2f} GB '
        f'({exact["extra_peak_gb"]:.2f} GB beyond the {exact["rss_with_inputs_gb"]:.2f} GB with '
        f'the input matrices); previous dense: {previous["seconds"]:.1f} s, '
        f'{previous["peak_rss_gb"]:.2f} GB ({previous["extra_peak_gb"]:.2f} GB extra) -> '
        f'{payload["market"]["exact_speedup_vs_previous"]:.1f}x faster; results equal')
  print(f'  mAP {exact["mAP_before"]:.4f} -> exact {exact["mAP"]:.4f}, scalable '
        f'{sparse["mAP"]:.4f} ({payload["market"]["sparse_minus_exact_mAP_points"]:+.3f} '
        f'points); scalable mode {sparse["seconds"]:.1f} s (incl. the (q+g)^2 matmul), peak '
        f'{sparse["peak_rss_gb"]:.2f} GB', flush=True)
  if not args.skip_msmt17:
    msmt = util.run_child(__file__, ['sparse', 'msmt17'])
    payload['msmt17'] = msmt
    print(f'MSMT17 scale (11659 + 82161, 256-d): scalable mode {msmt["seconds"]:.0f} s, peak '
          f'RSS {msmt["peak_rss_gb"]:.2f} GB (process {msmt["process_peak_rss_gb"]:.2f} GB), '
          f'mAP {msmt["mAP"]:.4f}')
  print('wrote', util.write_results(args.out, payload))


if __name__ == '__main__':
  main()
