"""The tiny settings every end-to-end test shrinks a config to (seconds per run on a CPU).

`config(name, tmp_path)` loads `configs/<name>.py` (by path, as `jreid.main` does) and shrinks it:
a SynthReID of 16 + 12 identities, a width-8 backbone, 32x16 images, batch 16, 3 steps per epoch.
`OVERRIDES` are the same settings as `--config.KEY=VALUE` flags for subprocess runs.
"""

from __future__ import annotations

import os
import pathlib
import signal

from jreid import config_checks

REPO = pathlib.Path(__file__).resolve().parent.parent

# XLA_FLAGS of the jreid processes tests start (one CPU device): tiny programs compile faster
# without LLVM's backend optimisation (conftest.py).
XLA_FLAGS = '--xla_backend_optimization_level=0'

OVERRIDES = {
    'dataset.synth.num_train_ids': 16, 'dataset.synth.num_test_ids': 12,
    'dataset.synth.num_distractors': 10, 'dataset.synth.num_junk': 5,
    'model.backbone.width': 8, 'input.height': 32, 'input.width': 16, 'batch_size': 16,
    'train.epochs': 2, 'train.steps_per_epoch': 3, 'train.log_every_steps': 1,
    'train.checkpoint_every_steps': 1, 'eval.untrained': False,
    'eval.histogram_baseline': False, 'optim.warmup_epochs': 1, 'optim.milestones': '(1,)',
    'eval.batch_size': 32, 'eval.rank_list_queries': 2,
}


# Every config file and the variants its docstring documents (tests/test_methods.py checks the
# table covers configs/).
FASTREID = ('market1501', 'dukemtmc', 'msmt17', 'veri')
VARIANTS = {
    'bagtricks': [None, *FASTREID, 'market1501,r50_ibn', 'msmt17,s50', 'veri,r101_ibn',
                  'dataset=dukemtmc,backbone=r50_ibn'],
    'agw': [None, *FASTREID, 'market1501,s50'],
    'sbs': [None, *FASTREID, 'msmt17,r101_ibn'],
    'mgn': [None, *FASTREID, 'market1501,r50_ibn'],
    'qaconv': [None, 'market1501', 'msmt17', 'msmt17_all', 'randperson',
               'dataset=msmt17,combine_all=true', 'v1', 'market1501,v1', 'msmt17_all,v1'],
    'pplr': [None, 'cam', 'market1501', 'market1501_cam', 'msmt17', 'msmt17_cam', 'veri',
             'veri_cam', 'market1501,cam'],
    'agw_sysu': [None, 'paper'], 'agw_regdb': [None, 'paper'],
    'cmgr_sysu': [None, 'paper'], 'cmgr_regdb': [None, 'paper', 'recipe=paper'],
    'cluster_contrast': [None, 'hard', 'market1501', 'msmt17', 'market1501,hard'],
    'distill': [None, 'alone', 'market1501', 'dukemtmc', 'msmt17', 'market1501,alone'],
    'dsr': [None, 'market1501'],
}


def shrink(config, cache_dir, epochs: int = 2, steps: int = 3):
  """`config` with the tiny data, model and schedule (in place; returned)."""
  config.dataset.cache_dir = str(cache_dir)
  synth = config.dataset.synth
  synth.num_train_ids, synth.num_test_ids = 16, 12
  synth.num_distractors, synth.num_junk = 10, 5
  config.model.backbone.width = 8
  config.input.height, config.input.width = 32, 16
  config.augment.pad = 2
  config.batch_size = 16
  if 'sampler' in config:
    config.sampler.num_instances = min(config.sampler.num_instances, 4)
  config.train.epochs = epochs
  config.train.steps_per_epoch = steps
  config.train.log_every_steps = 2
  config.train.checkpoint_every_steps = 2
  config.optim.warmup_epochs = 1
  config.optim.milestones = (1,)
  config.optim.delay_epochs = 0
  config.optim.freeze_iters = min(config.optim.freeze_iters, 1)
  config.eval.batch_size = 32
  config.eval.rank_list_queries = 2
  return config


def config(name: str, tmp_path, variant: str | None = None, **kwargs):
  """configs/<name>.py[:variant], shrunk (`shrink`), its data cached under tmp_path/cache."""
  spec = f'{REPO}/configs/{name}.py' + (f':{variant}' if variant else '')
  return shrink(config_checks.load_config_file(spec), pathlib.Path(tmp_path) / 'cache', **kwargs)


def interrupt_at(run, stop: int) -> None:
  """Sends SIGTERM to this process after global step `stop` of `run` (the loop then checkpoints
  and raises train.Preempted), as a preempted job would get it."""
  step_fn = run.train_step

  def step(state, batch):
    state, metrics = step_fn(state, batch)
    if int(state.step) == stop:
      os.kill(os.getpid(), signal.SIGTERM)
    return state, metrics

  run.train_step = step
