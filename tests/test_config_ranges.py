"""Range checks of numeric config keys (jreid.config_ranges): one line, before any work."""

from __future__ import annotations

import math
import os
import pathlib
import subprocess
import sys
import time

import ml_collections
import pytest

import tiny
from jreid import config_checks
from jreid import config_ranges
from jreid.config_checks import ConfigError

REPO = pathlib.Path(__file__).resolve().parent.parent


def _all_configs():
  """(name, config) of every config file and variant in configs/ (tiny.VARIANTS)."""
  out = []
  for name, variants in sorted(tiny.VARIANTS.items()):
    for variant in variants:
      spec = f'{REPO}/configs/{name}.py' + (f':{variant}' if variant else '')
      out.append((f'{name}.py:{variant}', config_checks.load_config_file(spec)))
  return out


def _is_numeric(value) -> bool:
  number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)
  return number(value) or (isinstance(value, tuple) and bool(value) and all(map(number, value)))


def _config(key: str, value) -> ml_collections.ConfigDict:
  """A config holding only `key` = `value`."""
  tree: dict = {}
  node = tree
  *parents, leaf = key.split('.')
  for part in parents:
    node = node.setdefault(part, {})
  node[leaf] = value
  return ml_collections.ConfigDict(tree)


def _message(key: str, value) -> str:
  with pytest.raises(ConfigError) as info:
    config_ranges.check_ranges(_config(key, value))
  return str(info.value)


def test_every_config_variant_is_in_range():
  configs = _all_configs()
  assert len(configs) > 20
  for name, config in configs:
    config_ranges.check_ranges(config)  # A shipped recipe never trips its own checks.
    assert name


def test_every_numeric_key_of_every_config_has_a_range():
  missing = set()
  for name, config in _all_configs():
    for key, value in config_checks.flatten(config):
      if _is_numeric(value) and key not in config_ranges.RANGES:
        missing.add(f'{key} ({name})')
  assert not missing, 'add these keys to jreid.config_ranges.RANGES: ' + ', '.join(sorted(missing))


def test_messages_name_the_key_the_value_and_the_range():
  assert _message('train.epochs', -3) == (
      'config.train.epochs=-3 is out of range: must be an integer >= 1.')
  assert _message('train.epochs', 0) == (
      'config.train.epochs=0 is out of range: must be an integer >= 1.')
  assert _message('sampler.num_instances', 0) == (
      'config.sampler.num_instances=0 is out of range: must be an integer >= 1.')
  assert _message('optim.lr', 0.0) == 'config.optim.lr=0.0 is out of range: must be a number > 0.'
  assert _message('optim.lr', math.inf) == (
      'config.optim.lr=inf is out of range: must be a number > 0.')
  assert _message('augment.flip_prob', 1.5) == (
      'config.augment.flip_prob=1.5 is out of range: must be a number in [0, 1].')
  assert _message('input.height', 100000) == (
      'config.input.height=100000 is out of range: must be an integer in [16, 2048].')
  assert _message('eval.rerank_lambda', -0.1) == (
      'config.eval.rerank_lambda=-0.1 is out of range: must be a number in [0, 1].')
  assert _message('eval.rerank_k1', 0) == (
      'config.eval.rerank_k1=0 is out of range: must be an integer >= 1.')
  assert _message('pplr.eps', 0.0) == ('config.pplr.eps=0.0 is out of range: must be a number in '
                                       '(0, 1] (DBSCAN radius on the Jaccard distance).')
  assert _message('pplr.min_samples', 0) == (
      'config.pplr.min_samples=0 is out of range: must be an integer >= 1.')
  assert _message('data.num_parallel_calls', 0) == (
      'config.data.num_parallel_calls=0 is out of range: must be an integer >= 1, or -1 '
      '(-1: tf.data AUTOTUNE).')
  assert _message('model.backbone.last_stride', 3) == (
      'config.model.backbone.last_stride=3 is out of range: must be 1 or 2.')
  assert _message('model.backbone.nl_layers', (0, 2, 3)) == (
      'config.model.backbone.nl_layers=(0, 2, 3) is out of range: must be () or a tuple of 4 '
      'integers >= 0 (non-local blocks per ResNet stage).')
  assert _message('optim.momentum', 1.0) == (
      'config.optim.momentum=1.0 is out of range: must be a number in [0, 1).')
  assert _message('train.epochs', 2.5) == (
      'config.train.epochs=2.5 is out of range: must be an integer >= 1.')
  assert _message('train.epochs', True) == (
      'config.train.epochs=True is out of range: must be an integer >= 1.')
  assert _message('model.pooling.gem_eps_mode', 'sum') == (
      "config.model.pooling.gem_eps_mode='sum' is not one of 'auto', 'clamp', 'add'.")
  for key, good in (('data.num_parallel_calls', -1), ('data.prefetch', -1), ('data.prefetch', 0),
                    ('model.backbone.nl_layers', ()), ('loss.cross_entropy.epsilon', -1.0),
                    ('train.epochs', 1), ('input.height', 2048), ('optim.gamma', 1.0),
                    ('model.pooling.gem_eps_mode', 'add')):
    config_ranges.check_ranges(_config(key, good))


def _bad_and_good(valid: config_ranges.Range) -> tuple[list, list]:
  """Values just outside and on the edges of `valid`, from its bounds."""
  step = 1 if valid.integer else 0.25
  bad, good = [math.nan, 'text', True], list(valid.also)
  if valid.integer:
    bad.append(float(valid.lo if valid.lo is not None else 0) + 0.5)
  for bound, is_open, sign in ((valid.lo, valid.lo_open, -1), (valid.hi, valid.hi_open, 1)):
    if bound is None:
      continue
    (bad if is_open else good).append(bound)
    bad += [bound + sign * step, bound + sign * 2 * step]
    good.append(bound - sign * step if valid.lo is None or valid.hi is None
                or valid.hi - valid.lo > 2 * step else (valid.lo + valid.hi) / 2)
  if valid.lo is None and valid.hi is None:
    good.append(0.5)
  bad = [x for x in bad if not (isinstance(x, (int, float)) and not isinstance(x, bool)
                                and x in valid.also)]
  if valid.integer:
    good = [int(x) for x in good]
  if not valid.each:
    return bad, good
  n = next((n for n in valid.lengths if n), 1)
  bad = [(x,) * n for x in bad] + ['not a tuple']
  if valid.lengths:
    bad.append((good[0],) * (max(valid.lengths) + 1))
  return bad, [(x,) * n for x in good]


def test_every_table_entry_refuses_a_bad_value_and_accepts_a_good_one():
  for key, valid in config_ranges.RANGES.items():
    bad, good = _bad_and_good(valid)
    assert len(bad) >= 3 and good, key
    for value in bad:
      shown = tuple(value) if isinstance(value, list) else value
      assert _message(key, value) == (
          f'config.{key}={shown!r} is out of range: must be {valid.describe()}.'), (key, value)
    for value in good:
      config_ranges.check_ranges(_config(key, value))
    config_ranges.check_ranges(_config(key, None))  # A placeholder the code fills in.
  config_ranges.check_ranges(ml_collections.ConfigDict({'other_method': {'k1': -5}}))


def test_describe():
  assert config_ranges.COUNT.describe() == 'an integer >= 1'
  assert config_ranges.PROB.describe() == 'a number in [0, 1]'
  assert config_ranges.POSITIVE.describe() == 'a number > 0'
  assert config_ranges.DECAY.describe() == 'a number in (0, 1]'
  assert config_ranges.RANGES['cross_modality.shots'].describe() == 'a tuple of integers >= 1'
  assert config_ranges.RANGES['model.pixel_std'].describe() == 'a tuple of 3 numbers > 0'
  assert config_ranges.RANGES['loss.cross_entropy.epsilon'].describe() == (
      'a number < 1 (< 0: probability-based smoothing)')


def test_rules_between_keys():
  from configs import bagtricks, pplr, qaconv  # pylint: disable=g-import-not-at-top
  from jreid.methods import cross_modality  # pylint: disable=g-import-not-at-top

  def error(config, **changes):
    config = config_checks.with_overrides(config, [(k.replace('__', '.'), str(v))
                                                   for k, v in changes.items()])
    with pytest.raises(ConfigError) as info:
      config_ranges.check_ranges(config)
    return str(info.value)

  base = bagtricks.get_config()
  assert error(base, batch_size=24, sampler__num_instances=16) == (
      'config.batch_size=24 is not divisible by config.sampler.num_instances=16: the P x K '
      'sampler needs batch_size = P * K, e.g. batch_size=16.')
  assert error(base, input__height=2048, input__width=2048, batch_size=128) == (
      'config.input.height x config.input.width x config.batch_size = 2048 x 2048 x 128 = '
      '536870912 pixels per batch is out of range: must be <= 268435456 (2**28, 3 GiB of float32 '
      'input); lower the image size or the batch size.')
  assert 'config.eval.batch_size = 2048 x 1024 x 256' in error(
      base, input__height=2048, input__width=1024, eval__batch_size=256)
  config_ranges.check_ranges(config_checks.with_overrides(
      base, [('input.height', '2048'), ('input.width', '2048'), ('batch_size', '64'),
             ('eval.batch_size', '64')]))
  assert error(base, eval__rerank_k1=5, eval__rerank_k2=6) == (
      'config.eval.rerank_k2=6 is out of range: must be <= config.eval.rerank_k1=5 '
      '(k-reciprocal re-ranking needs k2 <= k1).')
  assert error(qaconv.get_config(), eval__rerank_k2=30).startswith('config.eval.rerank_k2=30')
  assert error(pplr.get_config(), pplr__k2=31).startswith('config.pplr.k2=31 is out of range')
  assert error(pplr.get_config('market1501'), pplr__bn_group_size=24) == (
      'config.pplr.bn_group_size=24 does not divide config.batch_size=64: use a divisor of the '
      'batch, or 0 (whole batch).')
  assert error(base, dataset__synth__num_cameras=3) == (
      'config.dataset.synth: Invalid SynthReIDSpec: need 2 <= min_cameras_per_id <= '
      'max_cameras_per_id <= num_cameras.')
  assert error(base, dataset__synth_vehicle__min_images_per_id=30).startswith(
      'config.dataset.synth_vehicle: Invalid SynthVehicleSpec: need 2 * min_cameras_per_id')
  agw = cross_modality.recipe_config('agw', 'sysu', None)
  config_ranges.check_ranges(agw)  # Its sampler.num_instances is not the batch's K.
  assert error(agw, batch_size=48) == (
      'config.batch_size=48 does not match the cross-modality batch config.cross_modality.num_ids '
      'x (num_visible + num_infrared) = 8 x (4 + 4) = 64: set config.batch_size=64.')


def test_overrides_are_applied_as_ml_collections_applies_them():
  from configs import bagtricks  # pylint: disable=g-import-not-at-top
  base = bagtricks.get_config()
  argv = ['main', '--config=x.py', '--config.optim.milestones=3', '--config.optim.milestones=5',
          '--config.optim.lr', '0.5', '--config.train.epochs=4', '--config.train.epochs=7',
          '--noconfig.eval.roc', '--config.eval.flip', '--config.model.pixel_std=(1, 2, 3)',
          '--config.dataset.name=market1501']
  _, overrides = config_checks.parse_command_line(argv)
  config = config_checks.with_overrides(base, overrides)
  assert config.optim.milestones == (3, 5)
  assert config.optim.lr == 0.5 and config.train.epochs == 7
  assert config.eval.roc is False and config.eval.flip is True
  assert config.model.pixel_std == (1, 2, 3) and config.dataset.name == 'market1501'
  assert base.train.epochs == 8 and base.optim.milestones != (3, 5)  # The original is unchanged.


def _run_main(args, cwd=REPO) -> tuple[subprocess.CompletedProcess, float]:
  env = {**os.environ, 'XLA_FLAGS': tiny.XLA_FLAGS}
  env.pop('JREID_TRACEBACK', None)
  start = time.monotonic()
  proc = subprocess.run([sys.executable, '-m', 'jreid.main', *map(str, args)], cwd=cwd,
                        capture_output=True, text=True, env=env, timeout=120)
  return proc, time.monotonic() - start


def _tree(path: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else b'<dir>'
          for p in sorted(path.rglob('*'))}


@pytest.mark.parametrize('override, fragment', [
    ('train.epochs=-3', 'config.train.epochs=-3 is out of range: must be an integer >= 1.'),
    ('sampler.num_instances=0', 'config.sampler.num_instances=0 is out of range'),
])
def test_main_refuses_an_out_of_range_value_before_any_work(tmp_path, override, fragment):
  fresh = tmp_path / 'fresh'
  proc, seconds = _run_main([f'--config={REPO}/configs/bagtricks.py', f'--workdir={fresh}',
                             f'--config.{override}'])
  assert proc.returncode == 1, proc.stderr
  lines = proc.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith('jreid: error: '), proc.stderr
  assert fragment in lines[0]
  assert not fresh.exists()  # Nothing written: the check ran before the workdir was made.
  assert seconds < 60  # Start-up only (a dataset or a compile would take longer on 2 cores).

  # An existing workdir stays byte-for-byte as it was.
  used = tmp_path / 'used'
  (used / 'checkpoints' / '3').mkdir(parents=True)
  (used / 'config.json').write_text('{"train": {"epochs": 8}}')
  before = _tree(used)
  proc, _ = _run_main([f'--config={REPO}/configs/bagtricks.py', f'--workdir={used}',
                       f'--config.{override}'])
  assert proc.returncode == 1 and fragment in proc.stderr
  assert _tree(used) == before
