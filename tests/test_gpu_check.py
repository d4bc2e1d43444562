"""benchmarks/gpu_check.sh --dry-run: the GPU benchmark scripts run (tiny shapes, CPU) with the
modules the GPU machine lacks made unimportable, and write their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import tiny

# The GPU machine has none of these (/work/shared/GOTCHAS.md).
_ABSENT = ('tensorflow', 'tensorflow_datasets', 'faiss', 'ml_collections', 'clu')

# As if not installed: `import x` raises ModuleNotFoundError, importlib.util.find_spec('x')
# (how PyTorch probes optional modules) returns None.
_BLOCKER = f'''
import sys
sys.modules.update(dict.fromkeys({_ABSENT!r}))
'''


def test_blocker_blocks(tmp_path):
  (tmp_path / 'sitecustomize.py').write_text(_BLOCKER)
  env = {**os.environ, 'PYTHONPATH': str(tmp_path)}
  out = subprocess.run([sys.executable, '-c', 'import ml_collections'], env=env,
                       capture_output=True, text=True)
  assert out.returncode == 1 and 'ModuleNotFoundError' in out.stderr


def test_gpu_check_dry_run_without_tensorflow_faiss_or_ml_collections(tmp_path):
  site = tmp_path / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(_BLOCKER)
  env = {**os.environ, 'PYTHONPATH': str(site), 'PYTHON': sys.executable, 'XLA_FLAGS': ''}
  out_dir = tmp_path / 'results'
  proc = subprocess.run(['bash', 'benchmarks/gpu_check.sh', '--dry-run', str(out_dir)],
                        cwd=tiny.REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert sorted(p.name for p in out_dir.iterdir()) == [
      'qaconv_speed_dryrun.json', 'rank_speed_dryrun.json', 'train_speed_dryrun.json']

  train = json.loads((out_dir / 'train_speed_dryrun.json').read_text())
  assert train['dry_run'] and train['bf16'] and 'benchmarks/train_speed.py' in train['command']
  assert train['versions']['jax'] and train['versions']['torch']
  for side in ('jax', 'torch'):
    assert train[side]['images_per_s'] > 0, side
  assert train['jax']['forward_flops_per_image'] > 0
  assert train['jax']['mfu'] is None and train['peak_flops'] is None  # No CPU peak is made up.
  assert 'ratio_jax_over_torch' in train

  qaconv = json.loads((out_dir / 'qaconv_speed_dryrun.json').read_text())
  assert qaconv['dry_run'] and qaconv['pairs'] == 8 * 32
  assert set(qaconv['msmt17_projection_seconds']) >= {'jreid_fused_float32',
                                                      'jreid_fused_bfloat16', 'torch_float32'}
  # jreid and the PyTorch baseline scored the same pairs alike.
  assert qaconv['max_abs_difference'] < 1e-4 * max(qaconv['max_abs_logit'], 1.0)

  rank = json.loads((out_dir / 'rank_speed_dryrun.json').read_text())
  assert rank['dry_run'] and rank['seconds'] > 0 and rank['num_query'] == 64
  assert 0.0 <= rank['metrics_of_random_features']['mAP'] <= 1.0
  assert 'gpu_check: results in' in proc.stdout


def test_gpu_check_refuses_to_write_gpu_figures_without_a_gpu(tmp_path):
  env = {**os.environ, 'PYTHON': sys.executable, 'XLA_FLAGS': '', 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.run(['bash', 'benchmarks/gpu_check.sh'], cwd=tiny.REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert 'JAX sees no GPU here' in proc.stderr
