"""Gallery search at scale: `jreid.index.GalleryIndex` flat vs IVF-PQ vs HNSW.

For each gallery size (default 100k and 1M synthetic 256-d vectors) and index kind: the build time
(training + adding), the index size on disk, the latency of one query (p50 / p99 over single-query
searches), the throughput of a batch of queries, and recall@10 against the exact top 10 (the
numpy/JAX exact search of `jreid.evaluation.search`).

The vectors imitate re-ID embeddings: identities are random centres, each gallery item a centre
plus noise (about 8 items per identity), queries other noisy views of gallery identities, all
L2-normalised and compared by cosine distance. (Uniform random vectors would have no near
neighbours worth finding: every approximate index looks bad on them.)

  python benchmarks/index_scale.py                      # 100k and 1M, writes results/index_scale_cpu.json
  python benchmarks/index_scale.py --quick --out /tmp/x.json   # a 12k gallery, 32-d (the test)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _bench_util  # pylint: disable=g-import-not-at-top,wrong-import-position
from jreid import index as index_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from jreid.evaluation import search as search_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

NOISE = 0.45  # Noise scale per dimension against unit-variance centres.


def make_vectors(n: int, dim: int, num_queries: int, seed: int = 0,
                 chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
  """(gallery [n, dim], queries [num_queries, dim]), float32, L2-normalised (module doc)."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((max(1, n // 8), dim), dtype=np.float32)
  gallery = np.empty((n, dim), np.float32)
  for start in range(0, n, chunk):
    stop = min(n, start + chunk)
    ids = rng.integers(0, len(centres), stop - start)
    gallery[start:stop] = centres[ids] + NOISE * rng.standard_normal((stop - start, dim),
                                                                     dtype=np.float32)
  ids = rng.integers(0, len(centres), num_queries)
  queries = centres[ids] + NOISE * rng.standard_normal((num_queries, dim), dtype=np.float32)
  gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
  queries /= np.linalg.norm(queries, axis=1, keepdims=True)
  return gallery, queries


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
  k = exact.shape[1]
  return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k
                        for a, b in zip(found, exact)]))


def measure(kind: str, gallery: np.ndarray, queries: np.ndarray, exact: np.ndarray,
            latency_queries: int) -> dict:
  with _bench_util.Timer() as build:
    built = index_lib.GalleryIndex.build(gallery, kind=kind)
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / 'g.index'
    built.save(path)
    size = path.stat().st_size
  built.search(queries[:1], 10)  # Warm-up (first-call allocations).
  latencies = []
  for q in queries[:latency_queries]:
    start = time.perf_counter()
    built.search(q[None], 10)
    latencies.append(1000 * (time.perf_counter() - start))
  with _bench_util.Timer() as batch:
    _, rows = built.search(queries, 10)
  return {
      'kind': kind, 'backend': built.backend, 'params': built.params,
      'build_s': round(build.seconds, 3), 'index_bytes': int(size),
      'search_ms_p50': round(float(np.percentile(latencies, 50)), 4),
      'search_ms_p99': round(float(np.percentile(latencies, 99)), 4),
      'latency_queries': len(latencies),
      'batch_queries_per_s': round(len(queries) / batch.seconds, 1),
      'recall_at_10': round(recall_at(rows, exact), 4),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='a 12k x 32-d gallery (the test)')
  parser.add_argument('--sizes', default='100000,1000000', help='gallery sizes, comma-separated')
  parser.add_argument('--dim', type=int, default=256)
  parser.add_argument('--queries', type=int, default=1000, help='queries of the batch and recall')
  parser.add_argument('--latency-queries', type=int, default=200,
                      help='single-query searches timed for p50/p99')
  parser.add_argument('--kinds', default='flat,ivfpq,hnsw')
  parser.add_argument('--out', default=None, help='results JSON (default: '
                      'results/index_scale_cpu.json)')
  args = parser.parse_args()
  sizes = [12_000] if args.quick else [int(s) for s in args.sizes.split(',')]
  dim = 32 if args.quick else args.dim
  num_queries = 50 if args.quick else args.queries
  latency_queries = 20 if args.quick else args.latency_queries
  try:
    import faiss  # pylint: disable=g-import-not-at-top
    threads = faiss.omp_get_max_threads()
  except ImportError:
    threads = None
  payload = {
      'benchmark': 'index_scale',
      'command': 'python benchmarks/index_scale.py ' + ' '.join(sys.argv[1:]),
      **_bench_util.machine_info(),
      'note': ('The machine is shared with other developers (its load average is recorded at the '
               'start): times vary by +-30% or more between runs. Latency is one query per '
               'search() call; the batch rate is all queries in one call.'),
      'faiss_omp_threads': threads,
      'data': {'dim': dim, 'queries': num_queries, 'items_per_identity': 8, 'noise': NOISE,
               'metric': 'cosine'},
      'results': [],
  }
  for n in sizes:
    gallery, queries = make_vectors(n, dim, num_queries)
    with _bench_util.Timer() as exact_time:
      _, exact = search_lib.search(queries, gallery, 10, backend='numpy',
                                   chunk_size=index_lib._query_chunk(n))  # pylint: disable=protected-access
    payload.setdefault('exact_ground_truth_s', {})[str(n)] = round(exact_time.seconds, 3)
    for kind in args.kinds.split(','):
      row = {'gallery_size': n, **measure(kind, gallery, queries, exact, latency_queries)}
      print(row, flush=True)
      payload['results'].append(row)
      if args.out:
        pathlib.Path(args.out).write_text(json.dumps(payload, indent=2) + '\n')
      else:
        _bench_util.write_results('index_scale_cpu.json', payload)
    del gallery


if __name__ == '__main__':
  main()
