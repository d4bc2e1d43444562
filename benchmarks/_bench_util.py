"""Shared helpers of the scale benchmarks: one subprocess per measurement, results JSON."""

import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from importlib import metadata


def _status_gb(field: str) -> float:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1]) / 2**20
  raise KeyError(field)


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


def run_child(script: str, args: list[str]) -> dict:
  """Runs ``python script --child ARGS`` and returns the JSON dict it prints last."""
  out = subprocess.run([sys.executable, script, '--child', *args], check=True,
                       capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def emit(result: dict) -> None:
  print(json.dumps(result), flush=True)


class Timer:

  def __enter__(self):
    self.start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.start


def machine_info() -> dict:
  versions = {}
  for name in ('jax', 'jaxlib', 'numpy', 'scipy', 'faiss-cpu'):
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
                  'load_average_at_start': load},
      'versions': versions,
      'date': time.strftime('%Y-%m-%d'),
  }


def write_results(name: str, payload: dict) -> str:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', name)
  with open(path, 'w') as f:
    json.dump(payload, f, indent=2)
    f.write('\n')
  return path
