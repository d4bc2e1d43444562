"""A refactor keeps behaviour: each default config, shrunk to a few steps, run by two checkouts.

  git worktree add /tmp/before 5086bd1
  python benchmarks/same_seed.py --before /tmp/before --after . --out results/NAME.json

For every config (and variant) in CONFIGS, each checkout trains a tiny version of it (the same
shrinking for both: small synthetic dataset, width-8 backbones, 2 epochs of 3 steps, seed 0) in a
process of its own and evaluates it; the record holds both checkouts' test metrics and per-step
losses and whether they are equal. The shrinking only sets keys that both checkouts read (a key a
checkout refuses is a layout change, not a recipe change, and is said in the record).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'benchmarks'))
import _bench_util  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIGS = (('bagtricks', ''), ('sbs', ''), ('mgn', ''), ('qaconv', ''), ('pplr', ''),
           ('pplr', 'cam'), ('agw_sysu', ''), ('cmgr_sysu', ''))

# Run inside the checkout's own interpreter session: argv = tree, config, variant, cache.
_CHILD = r'''
import json, os, pathlib, sys, tempfile
tree, name, variant, cache = sys.argv[1:5]
os.chdir(tree)
sys.path.insert(0, tree)
from jreid.config_checks import load_config_file
from jreid import train
config = load_config_file(f'configs/{name}.py' + (f':{variant}' if variant else ''))
config.dataset.cache_dir = cache
s = config.dataset.synth
s.num_train_ids, s.num_test_ids, s.num_distractors, s.num_junk = 16, 12, 10, 5
config.model.backbone.width = 8
config.input.height, config.input.width = 48, 16
config.augment.pad = 2
config.batch_size = 16
config.train.epochs = 2
config.train.steps_per_epoch = 3
config.train.log_every_steps = 1
config.train.checkpoint_every_steps = 100
config.optim.warmup_epochs = 1
config.optim.milestones = (1,)
config.optim.delay_epochs = 0
config.optim.freeze_iters = min(config.optim.freeze_iters, 2)
config.eval.batch_size = 32
config.eval.rank_list_queries = 2
if 'sampler' in config and name not in ('agw_sysu', 'cmgr_sysu'):
  config.sampler.num_instances = min(config.sampler.num_instances, 4)
if name == 'qaconv':
  config.input.height = 64; config.batch_size = 8; s.num_train_ids = 12
  config.train.steps_per_epoch = 0  # QAConv makes one batch per class (a set value is refused).
if name == 'mgn':
  config.model.head.embedding_dim = 8
if name == 'pplr':
  config.pplr.k1, config.pplr.eps, config.pplr.k = 10, 0.7, 5
if name in ('agw_sysu', 'cmgr_sysu'):
  cm = config.cross_modality
  cm.num_ids, cm.num_visible, cm.num_infrared, cm.num_trials = 4, 2, 2, 2
  config.model.backbone.nl_layers = (0, 1, 1, 0)
workdir = pathlib.Path(tempfile.mkdtemp()) / 'run'
results = train.train_and_evaluate(config, str(workdir))
rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines() if l.strip()]
print('RESULT ' + json.dumps({
    'metrics': {k: v for k, v in results.items() if k != 'wall_time_s'},
    'losses': [r['loss'] for r in rows if 'loss' in r]}))
'''


def run(tree: pathlib.Path, name: str, variant: str, cache: str) -> dict:
  env = {**os.environ, 'XLA_FLAGS': '', 'PYTHONPATH': str(tree)}
  out = subprocess.run([sys.executable, '-c', _CHILD, str(tree), name, variant, cache],
                       capture_output=True, text=True, env=env)
  lines = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
  if out.returncode != 0 or not lines:
    return {'error': out.stderr.strip().splitlines()[-1] if out.stderr.strip() else 'no result'}
  return json.loads(lines[-1][len('RESULT '):])


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--before', required=True, help='the checkout before the change')
  parser.add_argument('--after', default=str(REPO), help='the checkout after it')
  parser.add_argument('--out', required=True, help='the JSON record to write')
  parser.add_argument('--configs', default=','.join(n + (f':{v}' if v else '') for n, v in CONFIGS),
                      help='comma-separated NAME[:VARIANT] to run (default: all of CONFIGS)')
  args = parser.parse_args()
  configs = [tuple(c.split(':', 1)) if ':' in c else (c, '') for c in args.configs.split(',')]
  before, after = pathlib.Path(args.before).resolve(), pathlib.Path(args.after).resolve()
  cache = tempfile.mkdtemp(prefix='jreid_same_seed_')
  record = {'benchmark': 'same seed, same metrics: tiny default runs of two checkouts',
            'command': ' '.join(['python', *sys.argv]),
            **_bench_util.machine_info(('jax', 'jaxlib', 'flax', 'optax', 'numpy')),
            'before': _describe(before), 'after': _describe(after), 'runs': []}
  for name, variant in configs:
    a, b = run(before, name, variant, cache), run(after, name, variant, cache)
    shared = sorted(set(a.get('metrics', {})) & set(b.get('metrics', {})))
    same = ('error' not in a and 'error' not in b and a['losses'] == b['losses'] and
            all(a['metrics'][k] == b['metrics'][k] for k in shared))
    differences = {}
    if not same and 'error' not in a and 'error' not in b:
      # How far apart: float rounding that sends training on another trajectory shows as small
      # loss differences growing over the steps, not as a different recipe.
      differences = {
          'max_metric': max((abs(a['metrics'][k] - b['metrics'][k]) for k in shared), default=0),
          'max_loss': max((abs(x - y) for x, y in zip(_flat(a['losses']), _flat(b['losses']))),
                          default=0)}
    record['runs'].append({'config': name + (f':{variant}' if variant else ''), 'same': same,
                           'differences': differences, 'before': a, 'after': b,
                           'keys_after_only': sorted(set(b.get('metrics', {})) - set(shared))})
    print(f'{name}{":" + variant if variant else ""}: {"same" if same else "DIFFERENT"}',
          flush=True)
  pathlib.Path(args.out).write_text(json.dumps(record, indent=2) + '\n')
  return 0


def _flat(losses) -> list[float]:
  if isinstance(losses, dict):
    return [v for key in sorted(losses) for v in _flat(losses[key])]
  if isinstance(losses, (list, tuple)):
    return [v for item in losses for v in _flat(item)]
  return [float(losses)]


def _describe(tree: pathlib.Path) -> str:
  try:
    return subprocess.run(['git', 'log', '-1', '--format=%h %s'], cwd=tree, capture_output=True,
                          text=True, check=True).stdout.strip()[:120]
  except (OSError, subprocess.CalledProcessError):
    return str(tree)


if __name__ == '__main__':
  sys.exit(main())
