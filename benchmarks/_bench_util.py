"""Shared helpers of the scale benchmarks: features of controlled difficulty, one subprocess per
measurement, results JSON."""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from importlib import metadata

import numpy as np

# num_query, num_gallery, identities, cameras, distractor fraction, junk fraction (gallery).
SCALES = {
    'market': (3368, 15913, 750, 6, 0.2, 0.15),
    'msmt17': (11659, 82161, 3060, 15, 0.0, 0.0),
    'quick': (300, 2000, 60, 4, 0.1, 0.05),
}
LEVELS = ('easy', 'realistic', 'hard')
# Noise scale per difficulty level, chosen so that the mAP is about 0.9 / 0.35-0.5 / 0.1 (the
# measured values are in the results files). 'realistic' gives Rank-1 about 0.8 with mAP about
# 0.45, as a ResNet-50 on MSMT17 does.
NOISE = {
    'market': {'easy': 1.4, 'realistic': 1.8, 'hard': 2.5},
    'msmt17': {'easy': 1.3, 'realistic': 1.8, 'hard': 2.3},
    'quick': {'easy': 1.2, 'realistic': 2.2, 'hard': 3.0},
}
NOISE_SPREAD = 0.15  # log-normal spread of the per-image noise scale (some images are worse)
CAMERA_SHIFT = 0.5  # size of each camera's shared offset, relative to an identity's centre


def make_problem(scale: str, level: str, dim: int = 256, seed: int = 0):
  """Features of planted identities at a controlled difficulty, and their ids.

  Every image is ``centre(identity) + camera offset + s * noise`` with standard normal centres,
  offsets of size ``CAMERA_SHIFT`` (the camera bias that makes cross-camera matches hard) and
  ``s = NOISE[scale][level] * lognormal(0, NOISE_SPREAD)``; distractors (pid 0) and junk
  (pid -1) have centres of their own. Deterministic in ``seed``.

  Returns:
    ``(query [q, dim] float32, gallery [g, dim] float32, q_pids, g_pids, q_camids, g_camids)``.
  """
  num_q, num_g, num_ids, num_cams, distract, junk = SCALES[scale]
  rng = np.random.default_rng(seed)
  g_pids = rng.integers(1, num_ids + 1, num_g)
  kind = rng.random(num_g)
  g_pids[kind < distract + junk] = 0
  g_pids[kind < junk] = -1
  q_pids = rng.integers(1, num_ids + 1, num_q)
  q_camids = rng.integers(0, num_cams, num_q)
  g_camids = rng.integers(0, num_cams, num_g)
  centres = rng.standard_normal((num_ids + 1, dim), dtype=np.float32)
  offsets = CAMERA_SHIFT * rng.standard_normal((num_cams, dim), dtype=np.float32)
  sigma = NOISE[scale][level]

  def features(pids, cams):
    base = centres[np.maximum(pids, 0)]
    own = pids <= 0
    base[own] = rng.standard_normal((int(own.sum()), dim), dtype=np.float32)
    scale_ = sigma * np.exp(NOISE_SPREAD * rng.standard_normal(len(pids))).astype(np.float32)
    base += offsets[cams]
    base += scale_[:, None] * rng.standard_normal((len(pids), dim), dtype=np.float32)
    return base

  return (features(q_pids, q_camids), features(g_pids, g_camids), q_pids, g_pids, q_camids,
          g_camids)


def _status_gb(field: str) -> float:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1]) / 2**20
  raise KeyError(field)


def checkout_at_commit(commit: str) -> str:
  """A temporary copy of the repository's tracked files at ``commit`` (``git archive``): a
  benchmark's child run there imports that version of the whole library, so "before" is
  measured as it was, not one module of it against today's others. Made once per process and
  removed when it exits."""
  if commit not in _CHECKOUTS:
    import atexit  # pylint: disable=g-import-not-at-top
    import shutil  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = tempfile.mkdtemp(prefix=f'jreid_{commit}_')
    atexit.register(shutil.rmtree, folder, True)
    archive = subprocess.run(['git', 'archive', commit], cwd=root, check=True,
                             capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', folder], input=archive, check=True)
    _CHECKOUTS[commit] = folder
  return _CHECKOUTS[commit]


_CHECKOUTS = {}


def peak_rss_gb() -> float:
  """Peak resident memory since the last ``reset_peak`` (or start), GiB (Linux VmHWM)."""
  return _status_gb('VmHWM')


def rss_gb() -> float:
  """Resident memory now, GiB."""
  return _status_gb('VmRSS')


def reset_peak() -> None:
  """Restarts the peak-RSS count from the current RSS (Linux ``clear_refs`` 5), so that data
  preparation does not hide the measured step's peak. Waits first: XLA frees the temporaries of
  the data generation asynchronously (one run reset at 4.1 GB, before 2.4 GB of them were
  returned)."""
  gc.collect()
  time.sleep(3)
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')


def process_peak_rss_gb() -> float:
  """Peak resident memory of the whole process life (getrusage; not reset by reset_peak)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_modes(script: str, modes: tuple[str, ...], args: list[str], before_commit: str | None,
              saved_path) -> dict[str, dict]:
  """``{mode: run_child(script, [mode, *args])}``; with ``before_commit``, first ``'before'``: the
  ``jreid`` child of the same script as of that commit, run in its checkout, whose saved result
  (``saved_path(mode)``: the file a child writes) is moved to ``saved_path('before')`` before
  today's ``jreid`` child writes its own."""
  runs = {}
  if before_commit:
    old_script = os.path.join(checkout_at_commit(before_commit), 'benchmarks',
                              os.path.basename(script))
    runs['before'] = run_child(old_script, ['jreid', *args])
    os.replace(saved_path('jreid'), saved_path('before'))
  runs.update({mode: run_child(script, [mode, *args]) for mode in modes})
  return runs


def run_child(script: str, args: list[str]) -> dict:
  """Runs ``python script --child ARGS`` and returns the JSON dict it prints last."""
  out = subprocess.run([sys.executable, script, '--child', *args], check=False,
                       capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f'{os.path.basename(script)} --child {" ".join(args)} failed '
                       f'(exit {out.returncode}):\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def emit(result: dict) -> None:
  print(json.dumps(result), flush=True)


class Timer:

  def __enter__(self):
    self.start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.start


def machine_info(packages=('jax', 'jaxlib', 'numpy', 'scipy', 'numba', 'llvmlite')) -> dict:
  """{'machine', 'versions' (of `packages` where installed), 'date'} of a benchmark record."""
  versions = {}
  for name in packages:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  with open('/proc/meminfo') as f:
    mem_kb = int(f.readline().split()[1])
  try:
    load = os.getloadavg()
  except OSError:
    load = None
  return {
      'machine': {'cpu_cores': os.cpu_count(), 'memory_gb': round(mem_kb / 2**20, 1),
                  'python': platform.python_version(), 'platform': platform.platform(),
                  'cpu_model': _cpu_model(), 'load_average_at_start': load},
      'versions': versions,
      'date': time.strftime('%Y-%m-%d'),
  }


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def write_results(name: str, payload: dict) -> str:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', name)
  with open(path, 'w') as f:
    json.dump(payload, f, indent=2)
    f.write('\n')
  return path
