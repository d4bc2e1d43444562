"""Methods as plug-ins: what holds for every method and every config.

* every config x variant passes the whole-config checks, and a section or loss term the method
  never reads is a one-line error;
* configs load from any working directory;
* every method resumes exactly: a run stopped mid-epoch and resumed ends with the parameters and
  method state of an uninterrupted run, and its checkpoint evaluates with --checkpoint;
* SWA and layer freezing (optax transformations) work for every method.
"""

import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

import tiny
from jreid import checkpoint
from jreid import config_checks
from jreid import optim
from jreid import train

VARIANTS = tiny.VARIANTS
CONFIG_FILES = sorted(p.stem for p in (tiny.REPO / 'configs').glob('*.py'))


def _load(name, variant=None):
  spec = f'{tiny.REPO}/configs/{name}.py' + (f':{variant}' if variant else '')
  return config_checks.load_config_file(spec)


def test_every_config_file_is_covered():
  assert sorted(VARIANTS) == CONFIG_FILES


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_every_variant_passes_the_config_checks_and_unread_keys_are_errors(name):
  for variant in VARIANTS[name]:
    config = _load(name, variant)
    config_checks.check_config(config)
    # A section of another method is never read by this one: refused, naming it.
    foreign = ml_collections.ConfigDict({'k1': 20})
    bad = ml_collections.ConfigDict(config.to_dict())
    bad.pplr_section_of_another_method = foreign
    with pytest.raises(config_checks.ConfigError,
                       match=f"config.pplr_section_of_another_method is not read by method "
                       f"'{config.method}'"):
      config_checks.check_config(bad)
    # A loss term configured but not used would be silently ignored: refused.
    unused = [t for t in config.loss.keys() if t != 'names' and t not in config.loss.names]
    if unused:
      bad = ml_collections.ConfigDict(config.to_dict())
      bad.loss[unused[0]].weight = 7.0
      with pytest.raises(config_checks.ConfigError,
                         match=rf'config.loss.{unused[0]} is set but .* not in config.loss.names'):
        config_checks.check_config(bad)


def test_unknown_variants_and_moved_keys_name_the_fix():
  with pytest.raises(ValueError, match=r"configs/pplr.py: unknown variant 'camm'; use one of "
                     r".*:cam"):
    _load('pplr', 'camm')
  with pytest.raises(ValueError, match=r"unknown variant key 'datset'"):
    _load('qaconv', 'datset=msmt17')
  with pytest.raises(ValueError, match=r"dataset='cuhk03' is not one of"):
    _load('cluster_contrast', 'dataset=cuhk03')
  argv = ['main', f'--config={tiny.REPO}/configs/qaconv.py', '--config.qaconv.loss=triplet']
  with pytest.raises(config_checks.ConfigError,
                     match=r"'qaconv.loss' has moved: set config.loss.names"):
    config_checks.check_command_line(argv)
  with pytest.raises(config_checks.ConfigError, match='config.method: unknown method'):
    bad = _load('bagtricks')
    bad.method = 'bagtrick'
    config_checks.check_config(bad)


def test_configs_load_from_any_folder(tmp_path):
  """A config given by absolute path works from another folder: no `configs` package import."""
  code = ('import sys; from jreid import config_checks\n'
          f'for name in {CONFIG_FILES!r}:\n'
          f'  config_checks.check_config(config_checks.load_config_file("{tiny.REPO}/configs/"'
          ' + name + ".py"))\n'
          'print("ok")')
  env = {**os.environ, 'XLA_FLAGS': tiny.XLA_FLAGS, 'PYTHONPATH': str(tiny.REPO)}
  out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                       text=True, env=env, timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr
  # The user's command, stopped by a misspelt key once the config has loaded.
  out = subprocess.run([sys.executable, '-m', 'jreid.main',
                        f'--config={tiny.REPO}/configs/sbs.py:market1501',
                        f'--workdir={tmp_path}/run', '--config.optim.lrr=1'],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 1
  assert out.stderr.strip() == ("jreid: error: unknown config key 'optim.lrr'; did you mean "
                                "'optim.lr'?"), out.stderr


def _tiny(name, tmp_path):
  config = tiny.config(name, tmp_path, epochs=2, steps=2)
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 100
  config.eval.untrained = False
  config.eval.histogram_baseline = False
  if name == 'qaconv':
    config.input.height = 64  # 4 x 2 matching locations.
    config.batch_size = 8
    config.dataset.synth.num_train_ids = 4  # One graph-sampled batch per class: 4 steps an epoch.
    config.train.steps_per_epoch = 0
  elif name in ('pplr', 'cluster_contrast'):
    config.input.height = 48
    section = config[name]
    section.k1, section.eps = 10, 0.7
    if name == 'pplr':
      config.pplr.k = 5
  elif name == 'agw_sysu':
    cm = config.cross_modality
    cm.num_ids, cm.num_visible, cm.num_infrared, cm.num_trials = 4, 2, 2, 2
    config.model.backbone.nl_layers = (0, 1, 1, 0)
  return config


def _assert_same(a, b):
  for x, y in ((a.params, b.params), (a.batch_stats, b.batch_stats), (a.extra, b.extra),
               (a.opt_state, b.opt_state)):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), x, y)


@pytest.mark.parametrize('name', ['bagtricks', 'qaconv', 'pplr', 'agw_sysu', 'cluster_contrast'])
def test_every_method_resumes_exactly_and_its_checkpoint_evaluates(name, tmp_path):
  config = _tiny(name, tmp_path)
  straight = train.build_run(config, tmp_path / 'straight')
  spe = straight.method.steps_per_epoch
  a = jax.device_get(train.train(straight, straight.method.state, 0))
  straight.checkpointer.close()
  assert int(a.step) == 2 * spe

  # Stopped after the first step of epoch 2 (its sampler, pseudo labels and graph come from
  # the checkpoint, not rebuilt), then resumed from the checkpoint.
  run = train.build_run(config, tmp_path / 'resumed')
  tiny.interrupt_at(run, spe + 1)
  with pytest.raises(train.Preempted, match=f'step {spe + 1}/{2 * spe}'):
    train.train(run, run.method.state, 0)
  run.checkpointer.close()
  run = train.build_run(config, tmp_path / 'resumed')
  restored = run.checkpointer.restore(run.method.state)
  assert int(restored.step) == spe + 1
  b = jax.device_get(train.train(run, restored, spe + 1))
  run.checkpointer.close()
  _assert_same(a, b)

  # --mode=eval --checkpoint=DIR/checkpoints/<last> of this method, from another workdir.
  last = 2 * spe
  results = train.evaluate_checkpoint(config, str(tmp_path / 'eval'),
                                      str(tmp_path / 'straight' / 'checkpoints' / str(last)))
  assert results['step'] == last and 0.0 <= results['mAP'] <= 1.0
  assert (tmp_path / 'eval' / f'eval-{last}' / 'report.md').exists()
  if name == 'qaconv':
    # Its own rows (QAConv-score re-ranking, then TLift) and the ROC of its distances (frozen
    # BatchNorm: tests/test_qaconv.py).
    for row in ('rerank/', 'rerank + TLift/'):
      assert 0.0 <= results[f'{row}mAP'] <= 1.0, row
    assert 0.0 <= results['TPR@FPR=1e-02'] <= 1.0
    text = (tmp_path / 'eval' / f'eval-{last}' / 'report.md').read_text()
    assert 'trained + rerank + TLift' in text and 'QAConv-GS' in text
  with pytest.raises(FileNotFoundError, match=rf'does not exist; .* holds the checkpoints of step {last}'):
    train.evaluate_checkpoint(config, str(tmp_path / 'eval'),
                              str(tmp_path / 'straight' / 'checkpoints' / '999'))


@pytest.mark.parametrize('name,frozen', [('qaconv', '^net/backbone/'),
                                         ('agw_sysu', '^backbone/')])
def test_swa_and_freezing_work_for_every_method(name, frozen, tmp_path):
  """Layers frozen for the first 2 steps keep their params and BatchNorm statistics; SWA averages
  the params after every step of the second epoch and replaces the params with the average at
  the end."""
  config = _tiny(name, tmp_path)
  config.optim.freeze_layers = (frozen,)
  config.optim.freeze_iters = 2
  config.optim.swa.enabled = True
  config.optim.swa.start_epoch = 1
  config.optim.swa.freq = 1
  config.optim.swa.bn_update_steps = 1
  if name == 'qaconv':
    config.model.qaconv.frozen_bn = False  # BatchNorm statistics that training does move.
  run = train.build_run(config, tmp_path / 'run')
  initial = jax.device_get(run.method.state)
  snapshots = {}
  step_fn = run.train_step

  def recording_step(state, batch):
    state, metrics = step_fn(state, batch)
    snapshots[int(state.step)] = jax.device_get((state.params, state.batch_stats))
    return state, metrics

  run.train_step = recording_step
  final = jax.device_get(train.train(run, run.method.state, 0))
  run.checkpointer.close()
  mask = optim.freeze_mask(initial.params, (frozen,))
  for step in (1, 2):
    params, stats = snapshots[step]
    moved = jax.tree.map(lambda m, x, y: bool(m) and not np.array_equal(x, y), mask,
                         initial.params, params)
    assert not any(jax.tree.leaves(moved)), f'a frozen parameter moved at step {step}'
    unfrozen = jax.tree.map(lambda m, x, y: not m and not np.array_equal(x, y), mask,
                            initial.params, params)
    assert any(jax.tree.leaves(unfrozen))
    stats_mask = optim.freeze_mask(initial.batch_stats, (frozen,))
    jax.tree.map(lambda m, x, y: np.testing.assert_array_equal(x, y) if m else None,
                 stats_mask, initial.batch_stats, stats)
  moved = jax.tree.map(lambda m, x, y: bool(m) and not np.array_equal(x, y), mask,
                       snapshots[2][0], snapshots[3][0])
  assert any(jax.tree.leaves(moved)), 'the frozen layers never started training'
  swa = optim.swa_state(final.opt_state)
  spe = run.method.steps_per_epoch
  assert int(swa.num_averaged) == spe
  phase = [snapshots[s][0] for s in range(spe + 1, 2 * spe + 1)]
  expected = jax.tree.map(lambda *xs: np.mean(np.stack(xs).astype(np.float64), axis=0), *phase)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6),
               swa.average, expected)
  jax.tree.map(np.testing.assert_array_equal, final.params, swa.average)


def test_checkpoints_of_earlier_versions_match_their_method():
  """Supervised and cross-modality checkpoints written before methods recorded their name still
  match their runs."""
  config = _load('bagtricks')
  from jreid import parts  # pylint: disable=g-import-not-at-top
  fp = parts.fingerprint(config, 10)
  older = {k: v for k, v in fp.items() if k != 'method'}
  checkpoint.check_fingerprint(older, fp, tiny.REPO)
  two_stream = parts.fingerprint(_load('agw_sysu'), 10)
  checkpoint.check_fingerprint({k: v for k, v in two_stream.items() if k != 'method'},
                               two_stream, tiny.REPO)
  # Model keys added later are recorded only away from the value that behaves as before them.
  assert 'gem_eps_mode' not in two_stream['model']['pooling']
  assert 'single_stream' not in two_stream['model']['two_stream']
  config = _load('agw_sysu')
  config.model.two_stream.single_stream = True
  config.model.pooling.gem_eps_mode = 'add'
  changed = parts.fingerprint(config, 10)['model']
  assert changed['two_stream']['single_stream'] and changed['pooling']['gem_eps_mode'] == 'add'
  with pytest.raises(checkpoint.CheckpointMismatchError, match='method'):
    checkpoint.check_fingerprint(older, {**fp, 'method': 'cluster_contrast'}, tiny.REPO)
