"""Fuzzing the command line: bad command lines generated from the config schema each end with exit
code 1, exactly one stderr line `jreid: error: ...`, no traceback, and a workdir that already held
a run left byte for byte as it was.

Every error must come before any dataset is loaded or model compiled, so each case takes a
fraction of a second: one driver process imports `jreid.main` once and forks a child per command
line (a child that got past the checks would start training: an alarm kills it and the case
fails).
"""

import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap

import ml_collections
import pytest

import tiny
from jreid import config_checks
from jreid import config_ranges

CONFIGS = ('bagtricks', 'qaconv', 'pplr', 'agw_sysu', 'cluster_contrast')

_DRIVER = textwrap.dedent('''
    import json, os, signal, sys
    from absl import app
    import jreid.main as main
    # What every command line needs, imported once before forking (no device is touched).
    from jreid import config_checks, config_defaults, method, train
    for name in method.method_names():
      config_defaults.method_config(name)
    results = []
    for argv in json.loads(sys.stdin.read()):
      read, write = os.pipe()
      pid = os.fork()
      if pid == 0:
        os.close(read)
        os.dup2(write, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        signal.alarm(60)  # A command line that passes the checks would start training.
        code = 0
        try:
          app.run(main.main, argv=['jreid.main', *argv], flags_parser=main.parse_flags)
        except SystemExit as e:
          code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: B036  # A traceback is what the test looks for.
          import traceback
          traceback.print_exc()
          code = 99
        sys.stderr.flush()
        os._exit(code)
      os.close(write)
      chunks = []
      while True:
        chunk = os.read(read, 65536)
        if not chunk:
          break
        chunks.append(chunk)
      os.close(read)
      _, status = os.waitpid(pid, 0)
      results.append([os.waitstatus_to_exitcode(status), b''.join(chunks).decode(errors='replace')])
    print(json.dumps(results))
''')


def _leaves(config):
  return [(k, v) for k, v in config_checks.flatten(config)
          if not isinstance(v, ml_collections.ConfigDict)]


def _bad_value(key, value):
  """A value of the right type outside the key's range, or None when the range has no outside."""
  for candidate in (-3, 0, -0.5, 1.5, 100000, 1e9):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return None
    if isinstance(value, int) and not isinstance(candidate, int):
      continue
    if not config_ranges.RANGES[key].ok(candidate):
      return candidate
  return None


def _cases(tmp_path, workdir):
  rng = random.Random(0)
  cases = []
  for name in CONFIGS:
    spec = f'--config={tiny.REPO}/configs/{name}.py'
    config = config_checks.load_config_file(spec.split('=', 1)[1])
    leaves = _leaves(config)
    # Misspelt keys: a letter dropped from the last part.
    for key, _ in rng.sample(leaves, 3):
      parent, _, leaf = key.rpartition('.')
      if len(leaf) > 3:
        cut = rng.randrange(len(leaf))
        wrong = leaf[:cut] + leaf[cut + 1:]
        cases.append([spec, f'--config.{parent + "." if parent else ""}{wrong}=1'])
    # Wrong types.
    typed = [(k, v) for k, v in leaves if isinstance(v, (bool, int, float))]
    for key, value in rng.sample(typed, 3):
      cases.append([spec, f'--config.{key}={"maybe" if isinstance(value, bool) else "fast"}'])
    # Out of range.
    ranged = [(k, v) for k, v in leaves if k in config_ranges.RANGES]
    out_of_range = [(k, _bad_value(k, v)) for k, v in rng.sample(ranged, len(ranged))]
    cases += [[spec, f'--config.{k}={bad}'] for k, bad in out_of_range if bad is not None][:4]
    # A section's key that another method owns.
    cases.append([spec, '--config.loss.circel.margin=1' if 'loss' in config else
                  '--config.qaconv.tau=1'])
  # Unknown variants and variant keys, a missing config file.
  cases += [[f'--config={tiny.REPO}/configs/bagtricks.py:cuhk99'],
            [f'--config={tiny.REPO}/configs/pplr.py:camm'],
            [f'--config={tiny.REPO}/configs/qaconv.py:datset=msmt17'],
            [f'--config={tiny.REPO}/configs/sbs.py:market1501,r18'],
            [f'--config={tiny.REPO}/configs/cluster_contrast.py:dataset=cuhk03'],
            ['--config=configs/nope.py'],
            [f'--config={tiny.REPO}/configs/agw_sysu.py', '--config.cross_modality.num_ids=3']]
  # Bad weight files and checkpoints.
  (tmp_path / 'text.pth').write_text('not weights\n')
  (tmp_path / 'empty.npz').write_bytes(b'')
  (tmp_path / 'page.safetensors').write_text('<!DOCTYPE html><html></html>')
  bot = f'--config={tiny.REPO}/configs/bagtricks.py'
  cases += [[bot, '--config.model.pretrained=/nonexistent/resnet50.pth'],
            [bot, f'--config.model.pretrained={tmp_path}/text.pth'],
            [bot, f'--config.model.pretrained={tmp_path}/empty.npz'],
            [bot, f'--config.model.pretrained={tmp_path}/page.safetensors'],
            [bot, '--mode=eval', f'--checkpoint={workdir}/checkpoints/999'],
            [bot, '--mode=eval', '--checkpoint=/nonexistent/checkpoints/5'],
            [bot, '--mode=bogus']]
  # The run in the workdir with a changed recipe: refused, nothing rewritten.
  run_flags = [f'--config.{k}={v}' for k, v in tiny.OVERRIDES.items()]
  cases += [[bot, *run_flags, '--config.optim.lr=0.5'],
            [bot, *run_flags, '--config.model.backbone.width=16']]
  return [[*c, f'--workdir={workdir}'] if not any(a.startswith('--workdir') for a in c) else c
          for c in cases]


def _digest(path):
  return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(path.rglob('*')) if p.is_file()}


@pytest.fixture
def workdir(tmp_path):
  """A workdir holding a run's config.json and a (stand-in) checkpoint of step 6."""
  path = tmp_path / 'run'
  config = config_checks.load_config_file(f'{tiny.REPO}/configs/bagtricks.py')
  (path / 'checkpoints' / '6' / 'state').mkdir(parents=True)
  (path / 'checkpoints' / '6' / 'meta').mkdir()
  (path / 'config.json').write_text(config.to_json_best_effort(indent=2, sort_keys=True) + '\n')
  (path / 'metrics.jsonl').write_text('{"step": 6, "loss": 1.0}\n')
  return path


def test_bad_command_lines_are_one_line_errors(tmp_path, workdir):
  cases = _cases(tmp_path, workdir)
  assert len(cases) >= 50, len(cases)
  before = _digest(workdir)
  env = {**os.environ, 'XLA_FLAGS': tiny.XLA_FLAGS, 'JREID_CACHE': str(tmp_path / 'cache')}
  env.pop('JREID_TRACEBACK', None)
  out = subprocess.run([sys.executable, '-c', _DRIVER], input=json.dumps(cases), cwd=tiny.REPO,
                       capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads(out.stdout.strip().splitlines()[-1])
  failures = []
  for argv, (code, err) in zip(cases, results):
    lines = [line for line in err.splitlines() if line.strip()]
    if code != 1 or len(lines) != 1 or not lines[0].startswith('jreid: error: ') or (
        'Traceback' in err):
      failures.append(f'{argv[1:] or argv}: exit {code}, stderr {err[-600:]!r}')
  assert not failures, f'{len(failures)} of {len(cases)}:\n' + '\n'.join(failures)
  assert _digest(workdir) == before
