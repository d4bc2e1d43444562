"""Runs a default run as a user would and records it in benchmarks/results/.

  python benchmarks/record_run.py --out benchmarks/results/cluster_contrast_synthreid_cpu.json \
      -- --config=configs/cluster_contrast.py

Everything after `--` goes to `python -m jreid.main` (a fresh --workdir is added unless given).
The record holds the command, the commit, the machine (cores, load average at the start, device),
the versions, the wall and CPU time of the whole process, and the run's metrics.json; an existing
record is kept beside the new one as NAME.previous.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


def _versions() -> dict[str, str]:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  out = {'python': platform.python_version()}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'tensorflow', 'orbax-checkpoint'):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  return out


def _commit() -> str:
  try:
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.strip()
    return head + (' (with uncommitted changes)' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', required=True, help='the JSON record to write')
  parser.add_argument('--what', default='', help='one line saying what the run is')
  parser.add_argument('main_args', nargs=argparse.REMAINDER,
                      help='-- then the flags of python -m jreid.main')
  args = parser.parse_args()
  main_args = [a for a in args.main_args if a != '--']
  if not any(a.startswith('--config=') for a in main_args):
    parser.error('pass the run\'s flags after --, at least --config=...')
  out = pathlib.Path(args.out)
  if not out.parent.is_dir():
    parser.error(f'--out {out}: the folder {out.parent} does not exist.')
  if not any(a.startswith('--workdir=') for a in main_args):
    main_args.append(f'--workdir={tempfile.mkdtemp(prefix="jreid_record_")}')
  workdir = pathlib.Path(next(a for a in main_args if a.startswith('--workdir='))
                         .split('=', 1)[1])
  command = [sys.executable, '-m', 'jreid.main', *main_args]
  load = os.getloadavg()
  start = time.time()
  process = subprocess.run(command, cwd=REPO)
  wall = time.time() - start
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  if process.returncode != 0:
    print(f'record_run: the run failed (exit code {process.returncode}); nothing recorded.',
          file=sys.stderr)
    return process.returncode
  record = {
      'benchmark': args.what or f'default run: {" ".join(main_args[:-1])}',
      'command': 'python -m jreid.main ' + ' '.join(shlex.quote(a) for a in main_args),
      'commit': _commit(),
      'date': datetime.date.today().isoformat(),
      'machine': {'platform': platform.platform(), 'cpu_count': os.cpu_count(),
                  'load_average_at_start': [round(x, 2) for x in load],
                  'device': 'CPU only (no GPU lent to this task)'},
      'versions': _versions(),
      'wall_time_s': round(wall, 1),
      'cpu_time_s': round(usage.ru_utime + usage.ru_stime, 1),
      'metrics': json.loads((workdir / 'metrics.json').read_text()),
  }
  if out.exists():
    out.replace(out.with_suffix('.previous.json'))
  tmp = out.with_name(f'.{out.name}.tmp')
  tmp.write_text(json.dumps(record, indent=2) + '\n')
  tmp.replace(out)
  print(f'record_run: {out} ({wall:.0f} s wall)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
