"""The evaluation and re-ranking scale benchmarks, run as a user runs them, on small shapes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_benchmark(script: str, *args: str) -> str:
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, os.path.join('benchmarks', script), '--quick', *args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_eval_scale_quick_runs_baseline_jreid_and_floor():
  pytest.importorskip('numba')
  out = run_benchmark('eval_scale.py', '--levels', 'realistic')
  # The script itself asserts that jreid's mAP equals the compiled FastReID baseline's.
  header = re.search(r'quick \(300 x 2000\) realistic: mAP ([0-9.]+), Rank-1 ([0-9.]+)', out)
  assert header, out
  assert 0.3 < float(header.group(1)) < 0.7  # the 'realistic' difficulty level
  assert re.search(r'baseline [0-9.]+ s \(matrix [0-9.]+, argsort [0-9.]+, matches [0-9.]+, '
                   r'loop [0-9.]+\), peak [0-9.]+ GB', out), out
  assert re.search(r'jreid +[0-9.]+ s \([0-9.]+x;', out), out
  largest = float(re.search(r'largest AP difference ([0-9.e+-]+)', out).group(1))
  assert largest < 1e-4


def test_rerank_scale_quick_matches_dense_algorithm():
  out = run_benchmark('rerank_scale.py', '--levels', 'realistic')
  m = re.search(r'mAP ([0-9.]+) -> ([0-9.]+) \(baseline -> ([0-9.]+)\)', out)
  assert m, out
  before, ours, dense = map(float, m.groups())
  assert ours > before and abs(ours - dense) < 1e-3
  differing = float(re.search(r'differing by > 0.0001: ([0-9.e+-]+)', out).group(1))
  assert differing < 1e-3


def test_rerank_scale_quick_before_runs_the_earlier_commit_and_matches_it_bitwise():
  sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
  try:
    import rerank_scale  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  known = subprocess.run(['git', 'cat-file', '-e', f'{rerank_scale.PREVIOUS_COMMIT}^{{commit}}'],
                         cwd=ROOT, capture_output=True, check=False)
  if known.returncode:
    pytest.skip(f'commit {rerank_scale.PREVIOUS_COMMIT} is not in this clone (shallow?)')
  out = run_benchmark('rerank_scale.py', '--levels', 'realistic', '--before')
  assert re.search(r'before +[0-9.]+ s \(now [0-9.]+x faster\), peak [0-9.]+ GB; bitwise equal: '
                   r'True', out), out
