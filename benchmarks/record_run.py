"""Runs a default run as a user would and records it in benchmarks/results/.

  python benchmarks/record_run.py --out benchmarks/results/cluster_contrast_synthreid_cpu.json \
      -- --config=configs/cluster_contrast.py

Everything after `--` goes to `python -m jreid.main` (a fresh --workdir is added unless given).
The record holds the command, the commit, the machine (cores, load average at the start, device),
the versions, the wall and CPU time of the whole process, the run's metrics.json and its per-epoch
logs (`*_epochs.jsonl`); an existing record is kept beside the new one as NAME.previous.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import shlex
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'benchmarks'))
import _bench_util  # pylint: disable=g-import-not-at-top,wrong-import-position

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'tensorflow', 'orbax-checkpoint')


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
  info = _bench_util.machine_info(PACKAGES)
  commit = _commit()  # The code that runs, before anything else changes the tree.
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
      'commit': commit,
      'date': info['date'],
      'machine': {**info['machine'], 'device': 'CPU only (no GPU lent to this task)'},
      'versions': info['versions'],
      'wall_time_s': round(wall, 1),
      'cpu_time_s': round(usage.ru_utime + usage.ru_stime, 1),
      'metrics': json.loads((workdir / 'metrics.json').read_text()),
  }
  for log in sorted(workdir.glob('*_epochs.jsonl')):  # Per-epoch logs of the methods that keep one.
    record[log.stem] = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
  if out.exists():
    out.replace(out.with_suffix('.previous.json'))
  tmp = out.with_name(f'.{out.name}.tmp')
  tmp.write_text(json.dumps(record, indent=2) + '\n')
  tmp.replace(out)
  print(f'record_run: {out} ({wall:.0f} s wall)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
