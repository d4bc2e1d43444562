"""Evaluation at Market-1501 and MSMT17 scale: jreid against the classic numpy evaluation.

    python benchmarks/eval_scale.py   # both scales; writes results/eval_scale_cpu.json
    python benchmarks/eval_scale.py --scales market

(a) Ranking + metrics from a given float32 distance matrix: ``jreid.evaluation.evaluate_rank``
    against the classic code (FastReID's ``eval_func`` in Python: a full ``np.argsort`` of the
    rows, the match matrix, then one query at a time; junk removal added so both give the same
    numbers). The classic code argsorts the whole matrix at once, which at MSMT17 scale needs
    ``q x g x 20`` bytes (int64 order, int64 gathered pids, int32 matches: 19 GB) more than this
    machine has, so the baseline here runs it on 1024-row slices (same work per row, less
    memory); its all-at-once extra memory is reported as computed. Extra memory = peak RSS minus
    RSS with the matrix in memory.
(b) End to end from 2048-d features: ``evaluate_features`` (JAX distance chunks + counting
    ranker) against the bare distance matmul over the same chunks; peak RSS of the whole process
    (features included).

Each measurement runs in its own subprocess (peak RSS from ``getrusage``). Data: planted
identities (features = identity centre + noise; Market-like distractors and junk), fixed seeds,
so every subprocess sees the same problem. The two mAPs are checked equal.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _bench_util as util  # pylint: disable=g-import-not-at-top

SCALES = {
    # num_query, num_gallery, identities, cameras, distractor fraction, junk fraction
    'market': (3368, 15913, 750, 6, 0.2, 0.15),
    'msmt17': (11659, 82161, 3060, 15, 0.0, 0.0),
}
BASELINE_ROWS = 1024
MAX_RANK = 50


def make_ids(scale: str):
  num_q, num_g, num_ids, num_cams, distract, junk = SCALES[scale]
  rng = np.random.default_rng(0)
  q_pids = rng.integers(1, num_ids + 1, num_q)
  g_pids = rng.integers(1, num_ids + 1, num_g)
  kind = rng.random(num_g)
  g_pids[kind < distract + junk] = 0
  g_pids[kind < junk] = -1
  return (q_pids, g_pids, rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g))


NOISE = {64: 1.1, 2048: 3.2}  # Market-like difficulty: mAP about 0.7-0.8, mINP 0.2-0.3


def make_features(scale: str, dim: int):
  """JAX features: identity centre + noise (distractors / junk: their own random centres)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  q_pids, g_pids, _, _ = make_ids(scale)
  num_ids = SCALES[scale][2]

  @jax.jit
  def features(key, pids, centres):
    k1, k2 = jax.random.split(key)
    own = jax.random.normal(k1, (pids.shape[0], dim))
    base = jnp.where((pids > 0)[:, None], centres[jnp.maximum(pids, 1) - 1], own)
    return base + NOISE[dim] * jax.random.normal(k2, (pids.shape[0], dim))

  centres = jax.random.normal(jax.random.key(1), (num_ids, dim))
  query = features(jax.random.key(2), jnp.asarray(q_pids), centres)
  gallery = features(jax.random.key(3), jnp.asarray(g_pids), centres)
  return query, gallery


def classic_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=MAX_RANK):
  """FastReID's Python ``eval_func`` (argsort, match matrix, per-query loop), junk removed."""
  num_q, num_g = distmat.shape
  max_rank = min(max_rank, num_g)
  all_cmc, all_ap, all_inp = [], [], []
  for start in range(0, num_q, BASELINE_ROWS):
    rows = slice(start, start + BASELINE_ROWS)
    indices = np.argsort(distmat[rows], axis=1)
    matches = (g_pids[indices] == q_pids[rows, np.newaxis]).astype(np.int32)
    for i in range(indices.shape[0]):
      q_idx = start + i
      order = indices[i]
      remove = ((g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
                | (g_pids[order] == -1))
      raw_cmc = matches[i][np.invert(remove)]
      if not np.any(raw_cmc):
        continue
      cmc = raw_cmc.cumsum()
      pos_idx = np.where(raw_cmc == 1)[0]
      all_inp.append(cmc[pos_idx.max()] / (pos_idx.max() + 1.0))
      cmc[cmc > 1] = 1
      all_cmc.append(cmc[:max_rank])
      num_rel = raw_cmc.sum()
      tmp_cmc = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0) * raw_cmc
      all_ap.append(tmp_cmc.sum() / num_rel)
  return (np.asarray(all_cmc, np.float32).mean(0), float(np.mean(all_ap)),
          float(np.mean(all_inp)))


def child(mode: str, scale: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import distance  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import metrics  # pylint: disable=g-import-not-at-top
  q_pids, g_pids, q_camids, g_camids = make_ids(scale)
  out = {'mode': mode, 'scale': scale, 'backend': jax.default_backend()}
  if mode.startswith('distmat'):
    # The given matrix: distances of 64-d planted features (cosine), float32.
    query, gallery = make_features(scale, 64)
    distmat = distance.compute_distance(query, gallery, 'cosine', chunk_size=2048)
    del query, gallery
    util.reset_peak()
    out['rss_with_matrix_gb'] = util.rss_gb()
    with util.Timer() as t:
      if mode == 'distmat-classic':
        cmc, m_ap, m_inp = classic_evaluate(distmat, q_pids, g_pids, q_camids, g_camids)
      else:
        result = metrics.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                                       max_rank=MAX_RANK)
        cmc, m_ap, m_inp = result.cmc, result.mAP, result.mINP
    out['extra_peak_gb'] = util.peak_rss_gb() - out['rss_with_matrix_gb']
  else:
    query, gallery = make_features(scale, 2048)
    query.block_until_ready()
    gallery.block_until_ready()
    util.reset_peak()
    out['rss_with_features_gb'] = util.rss_gb()
    with util.Timer() as t:
      if mode == 'features-matmul':
        checksum = 0.0
        for _, block in distance.iter_distance_blocks(query, gallery, 'cosine', 1024):
          checksum += float(block[:, 0].sum())  # the block is on the host
        cmc, m_ap, m_inp = None, None, None
      else:
        result = metrics.evaluate_features(query, gallery, q_pids, g_pids, q_camids, g_camids,
                                           metric='cosine', max_rank=MAX_RANK, chunk_size=1024)
        cmc, m_ap, m_inp = result.cmc, result.mAP, result.mINP
  out['seconds'] = t.seconds
  # Peak during the measured step (data preparation excluded; it peaks at the same sizes).
  out['peak_rss_gb'] = util.peak_rss_gb()
  out['process_peak_rss_gb'] = util.process_peak_rss_gb()
  if cmc is not None:
    out.update(rank1=float(cmc[0]), mAP=m_ap, mINP=m_inp)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--child', nargs=2, metavar=('MODE', 'SCALE'))
  parser.add_argument('--scales', default='market,msmt17')
  parser.add_argument('--out', default='eval_scale_cpu.json')
  args = parser.parse_args()
  if args.child:
    util.emit(child(*args.child))
    return
  payload = util.machine_info()
  payload['command'] = 'python benchmarks/eval_scale.py ' + ' '.join(sys.argv[1:])
  payload['scales'] = {}
  for scale in args.scales.split(','):
    num_q, num_g = SCALES[scale][:2]
    runs = {mode: util.run_child(__file__, [mode, scale])
            for mode in ('distmat-classic', 'distmat-jreid', 'features-matmul', 'features-jreid')}
    classic, ours = runs['distmat-classic'], runs['distmat-jreid']
    assert abs(classic['mAP'] - ours['mAP']) < 1e-6, (classic['mAP'], ours['mAP'])
    assert abs(classic['mINP'] - ours['mINP']) < 1e-6
    summary = {
        'num_query': num_q, 'num_gallery': num_g,
        'distmat_speedup': classic['seconds'] / ours['seconds'],
        'distmat_extra_gb': {'jreid': ours['extra_peak_gb'],
                             'classic_on_1024_row_slices': classic['extra_peak_gb'],
                             'classic_all_at_once_computed': num_q * num_g * 20 / 2**30},
        'features_time_ratio_to_matmul': (runs['features-jreid']['seconds']
                                          / runs['features-matmul']['seconds']),
        'features_peak_rss_gb': runs['features-jreid']['peak_rss_gb'],
        'runs': runs,
    }
    payload['scales'][scale] = summary
    print(f'{scale} ({num_q} x {num_g}):')
    print(f'  (a) from a float32 distance matrix: classic {classic["seconds"]:.1f} s, '
          f'jreid {ours["seconds"]:.2f} s -> {summary["distmat_speedup"]:.1f}x faster; extra '
          f'memory jreid {ours["extra_peak_gb"]:.2f} GB, classic {classic["extra_peak_gb"]:.2f}'
          f' GB on 1024-row slices '
          f'({summary["distmat_extra_gb"]["classic_all_at_once_computed"]:.1f}'
          f' GB all at once); mAP {ours["mAP"]:.4f} = {classic["mAP"]:.4f}')
    print(f'  (b) from 2048-d features: bare matmul {runs["features-matmul"]["seconds"]:.1f} s, '
          f'evaluate_features {runs["features-jreid"]["seconds"]:.1f} s -> '
          f'{summary["features_time_ratio_to_matmul"]:.2f}x; peak RSS '
          f'{summary["features_peak_rss_gb"]:.2f} GB (matmul alone '
          f'{runs["features-matmul"]["peak_rss_gb"]:.2f} GB)', flush=True)
  print('wrote', util.write_results(args.out, payload))


if __name__ == '__main__':
  main()
