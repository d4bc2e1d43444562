"""Ranking metrics at MSMT17 scale from features on the device (`evaluate_features`).

11,659 query and 82,161 gallery features (2048-d, L2-normalised, drawn on the device), identities
and cameras laid out as MSMT17's test set (3,060 identities, 15 cameras); the time is that of
one `evaluate_features` call (cosine distances on the device, CMC, mAP and mINP), after a call on
the first chunk of queries compiled the distance program. The features are random, so the
metrics themselves mean nothing; the call does the same work as on real features.

  python benchmarks/rank_speed.py --out benchmarks/results/rank_speed_gpu.json   # on a GPU
  python benchmarks/rank_speed.py --dry-run --out /tmp/x.json                    # tiny, seconds

Imports only numpy and jax (through jreid.evaluation): no TensorFlow or faiss.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from jreid.evaluation import evaluate_features

MSMT17 = {'num_query': 11_659, 'num_gallery': 82_161, 'identities': 3_060, 'cameras': 15}


def layout(num_query: int, num_gallery: int, identities: int, cameras: int, seed: int = 0):
  """(q_pids, g_pids, q_camids, g_camids): every identity in the gallery, queries drawn from
  them, cameras at random."""
  rng = np.random.default_rng(seed)
  g_pids = np.concatenate([np.arange(identities),
                           rng.integers(0, identities, num_gallery - identities)])
  q_pids = rng.integers(0, identities, num_query)
  return (q_pids, rng.permutation(g_pids), rng.integers(0, cameras, num_query),
          rng.integers(0, cameras, num_gallery))


def features(n: int, dim: int, seed: int) -> jax.Array:
  x = jax.random.normal(jax.random.key(seed), (n, dim), jnp.float32)
  return x / jnp.linalg.norm(x, axis=1, keepdims=True)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dim', type=int, default=2048)
  parser.add_argument('--chunk-size', type=int, default=None,
                      help="queries per chunk (default: evaluate_features' own)")
  parser.add_argument('--repeats', type=int, default=1, help='timed calls; the best is kept')
  parser.add_argument('--dry-run', action='store_true', help='64 x 512 features of 32-d')
  parser.add_argument('--out', default='', help='write the results as JSON here')
  args = parser.parse_args(argv)
  sizes = dict(MSMT17)
  if args.dry_run:
    sizes = {'num_query': 64, 'num_gallery': 512, 'identities': 40, 'cameras': 15}
    args.dim, args.repeats = 32, 1
  ids = layout(**sizes)
  query = features(sizes['num_query'], args.dim, 1)
  gallery = features(sizes['num_gallery'], args.dim, 2)
  jax.block_until_ready((query, gallery))
  kwargs = {'chunk_size': args.chunk_size} if args.chunk_size else {}
  chunk = args.chunk_size or 1024

  start = time.perf_counter()
  evaluate_features(query[:chunk], gallery, ids[0][:chunk], ids[1], ids[2][:chunk], ids[3],
                    **kwargs)
  first = time.perf_counter() - start
  times, result = [], None
  for _ in range(args.repeats):
    start = time.perf_counter()
    result = evaluate_features(query, gallery, *ids, **kwargs)
    times.append(time.perf_counter() - start)
  device = jax.devices()[0]
  versions = {'python': platform.python_version()}
  for name in ('jax', 'jaxlib', 'numpy'):
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  record = {
      'benchmark': 'rank_speed',
      'command': 'python ' + ' '.join([sys.argv[0]] + (argv or sys.argv[1:])),
      'device': str(device), 'device_kind': device.device_kind,
      'machine': {'platform': platform.platform(), 'cpu_count': os.cpu_count(),
                  'load_average_at_start': os.getloadavg()},
      'versions': versions, 'dry_run': args.dry_run, **sizes, 'dim': args.dim,
      'first_chunk_call_s': first, 'seconds_all_runs': times, 'seconds': min(times),
      'metrics_of_random_features': {k: v for k, v in result.to_dict().items()
                                     if k in ('rank1', 'mAP', 'mINP')},
  }
  print(f"evaluate_features, {sizes['num_query']:,} x {sizes['num_gallery']:,} ({args.dim}-d) on "
        f"{device.device_kind}: {min(times):.2f} s (first chunk, compiling: {first:.2f} s)")
  assert sys.modules.get('tensorflow') is None and sys.modules.get('faiss') is None
  if args.out:
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(record, indent=2) + '\n')
  return record


if __name__ == '__main__':
  main()
