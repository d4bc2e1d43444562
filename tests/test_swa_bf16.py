"""Stochastic weight averaging (FastReID SOLVER.SWA) and bfloat16 compute in the supervised step."""

import math
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny
from jreid import checkpoint
from jreid import config_checks
from jreid import models
from jreid import objectives
from jreid import optim
from jreid import parallel
from jreid import parts
from jreid import step as step_lib
from jreid import train
from jreid.config_defaults import method_config
from jreid.method import Inference, Method
from jreid.methods import supervised
from jreid.models import baseline
from jreid.models import resnet

H, W = 32, 16


def _config(**swa):
  config = method_config('supervised')
  config.input.height, config.input.width = H, W
  config.batch_size = 16
  config.optim.warmup_epochs = 1
  config.optim.milestones = (2,)
  if swa:
    config.optim.swa.enabled = True
    config.optim.swa.update(swa)
  return config


def small_model(config, num_classes=4):
  """jreid's Baseline on a two-stage ResNet (stem + 2 BasicBlocks, width 8): quick to compile."""
  backbone = resnet.ResNet(resnet.BasicBlock, (1, 1), width=8,
                           dtype=baseline.DTYPES[config.model.dtype])
  pooling = models.POOLINGS.get(config.model.pooling.name)(config.model.pooling)
  head = models.HEADS.get(config.model.head.name)(config.model.head, num_classes)
  return models.Baseline(backbone, pooling, head)


def _batches(num, seed=0):
  rng = np.random.default_rng(seed)
  return [{'image': rng.integers(0, 256, (16, H, W, 3), dtype=np.uint8),
           'label': np.repeat(rng.permutation(4).astype(np.int32), 4)} for _ in range(num)]


def small_method(config, mesh, steps_per_epoch, batches=None, num_classes=4):
  """The supervised method's parts on `small_model`."""
  model = small_model(config, num_classes)
  images = jnp.zeros((1, H, W, 3), jnp.uint8)
  inf = Inference(model=model, init=lambda rng: model.init(rng, images, train=False),
                  embed=lambda v, x: model.apply(v, x, train=False)['embedding'])
  tx, schedule = parts.optimizer(config, steps_per_epoch, parts.abstract_params(inf))
  return Method(name='supervised', inference=inf, state=parts.initial_state(inf, tx, config, mesh),
                tx=tx, schedule=schedule, forward=supervised.forward_fn(model),
                objective=supervised.objective_fn(config), steps_per_epoch=steps_per_epoch,
                batches=batches, evaluate=None, fingerprint=parts.fingerprint(config, num_classes),
                describe='')


def _setup_step(config, steps_per_epoch, mesh):
  method = small_method(config, mesh, steps_per_epoch)
  return method.inference.model, method.state, step_lib.make_train_step(method, config, mesh)


# Learning rate of the SWA phase.


def reference_swa_lr(step, base_lr, start, freq, factor, eta_min):
  """torch CosineAnnealingWarmRestarts(T_0=freq, eta_min) from `start`, base = factor x lr."""
  if step < start:
    return base_lr(step)
  t = (step - start) % freq
  top = factor * base_lr(start)
  return eta_min + (top - eta_min) * (1 + math.cos(math.pi * t / freq)) / 2


def test_cyclic_swa_lr_matches_reference():
  config = _config(start_epoch=3, freq=4, lr_factor=10.0, eta_min_lr=1e-6)
  spe, total = 5, 30
  base = optim.learning_rate_schedule(config.optim, spe, total)
  sched = optim.swa_learning_rate_schedule(config.optim, base, spe, total)
  for step in range(total):
    want = reference_swa_lr(step, lambda s: float(base(s)), 15, 4, 10.0, 1e-6)
    np.testing.assert_allclose(float(sched(step)), want, rtol=1e-5)
  assert float(sched(15)) == pytest.approx(10 * 3.5e-5, rel=1e-5)  # lr 3.5e-4 x 0.1 after epoch 2.
  # Without cyclic_lr (FastReID LR_SCHED=False) or without SWA: the main schedule unchanged.
  config.optim.swa.cyclic_lr = False
  assert optim.swa_learning_rate_schedule(config.optim, base, spe, total) is base
  config.optim.swa.enabled = False
  assert optim.swa_learning_rate_schedule(config.optim, base, spe, total) is base


@pytest.mark.parametrize('swa,match', [
    (dict(start_epoch=6), r'swa.start_epoch=6 must be in \[0, train.epochs=6\)'),
    (dict(start_epoch=5, freq=8), 'longer than the SWA phase'),
    (dict(freq=0), 'freq=0 must be >= 1'),
])
def test_swa_config_errors_name_the_key(swa, match):
  config = _config(**swa)
  with pytest.raises(ValueError, match=match):
    optim.swa_learning_rate_schedule(config.optim, lambda s: 0.1, 5, 30)


def test_swa_checkpoints_do_not_restore_into_runs_without_swa(tmp_path):
  """The fingerprint names SWA only when on: earlier checkpoints still match runs without it."""
  with_swa, without = _config(start_epoch=1), _config()
  assert parts.fingerprint(with_swa, 4) == {**parts.fingerprint(without, 4), 'swa': True}
  with pytest.raises(checkpoint.CheckpointMismatchError, match='swa: checkpoint has True'):
    checkpoint.check_fingerprint(parts.fingerprint(with_swa, 4), parts.fingerprint(without, 4),
                                 tmp_path)


# The SWA phase of a run: running average, swap, BatchNorm recomputation, exact resume.


def tiny_config(tmp_path):
  config = tiny.config('bagtricks', tmp_path)
  config.input.height, config.input.width = H, W
  config.train.epochs = 2
  config.train.steps_per_epoch = 4
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 100
  config.optim.swa.enabled = True
  config.optim.swa.start_epoch = 1  # Step 4: averages after steps 6 and 8.
  config.optim.swa.freq = 2
  config.optim.swa.bn_update_steps = 2
  return config


def _bn_reference(model, params, batch_stats, batches):
  """Per BatchNorm checked: the mean over batches of the mean / biased variance of its input
  (the output of the layer before it, captured in train mode), in float64 numpy."""
  inputs = {('backbone', 'bn1'): ('backbone', 'conv1'),
            ('backbone', 'layer2_0', 'bn2'): ('backbone', 'layer2_0', 'conv2'),
            ('head', 'bnneck'): ('pooling',)}
  feats = {bn: [] for bn in inputs}
  capture = jax.jit(lambda images: model.apply(
      {'params': params, 'batch_stats': batch_stats}, images, train=True,
      mutable=['batch_stats', 'intermediates'],
      capture_intermediates=lambda m, _: isinstance(m, nn.Conv) or m.name == 'pooling')[1])
  for batch in batches:
    mutated = jax.device_get(capture(batch['image']))
    for bn, source in inputs.items():
      node = mutated['intermediates']
      for key in source:
        node = node[key]
      x = np.asarray(node['__call__'][0], np.float64)
      feats[bn].append(x.reshape(-1, x.shape[-1]))
  return {bn: (np.mean([f.mean(0) for f in fs], 0), np.mean([f.var(0) for f in fs], 0))
          for bn, fs in feats.items()}


def _random_batches(start_step, stop_step, num_classes=4):
  """In-memory random batches, a function of the step like the real pipeline's (without
  tf.data's start-up time)."""
  for step in range(start_step, stop_step):
    rng = np.random.default_rng(step)
    yield {'image': rng.integers(0, 256, (16, H, W, 3), dtype=np.uint8),
           'label': np.repeat(rng.choice(num_classes, 4, replace=False), 4).astype(np.int32)}


def test_swa_phase_average_bn_update_and_exact_resume(tmp_path):
  config = tiny_config(tmp_path)
  mesh = parallel.create_mesh()
  method = small_method(config, mesh, 4, batches=lambda state, a, b: _random_batches(a, b))
  initial = jax.device_get(method.state)
  fresh = lambda: jax.device_put(initial, parallel.replicated_sharding(mesh))

  def make_run(workdir):
    workdir.mkdir()
    return train.Run(config, workdir, mesh, None, method,
                     checkpoint.Checkpointer(workdir / 'checkpoints', method.fingerprint))

  run = make_run(tmp_path / 'a')
  snapshots, preempt_at = {}, [None]
  step_fn = run.train_step

  def recording_step(state, batch):
    state, metrics = step_fn(state, batch)
    step = int(state.step)
    snapshots[step] = jax.device_get(state.params)
    if step == preempt_at[0]:
      os.kill(os.getpid(), signal.SIGTERM)  # A preempted job: checkpoint and stop.
    return state, metrics

  run.train_step = recording_step
  a = jax.device_get(train.train(run, fresh(), 0))
  swa = optim.swa_state(a.opt_state)
  assert int(a.step) == 8 and int(swa.num_averaged) == 2
  # The running average is the mean of the params after steps 6 and 8 ...
  expected = jax.tree.map(lambda x, y: (x.astype(np.float64) + y) / 2, snapshots[6], snapshots[8])
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7),
               swa.average, expected)
  # ... and replaced the params after the last step (FastReID's swap_swa_param).
  jax.tree.map(np.testing.assert_array_equal, a.params, swa.average)
  assert not np.allclose(a.params['backbone']['conv1']['kernel'],
                         snapshots[8]['backbone']['conv1']['kernel'])
  # BatchNorm statistics recomputed for the averaged weights on the run's last 2 batches.
  batches = list(_random_batches(6, 8))
  for bn, (mean, var) in _bn_reference(method.inference.model, a.params, a.batch_stats,
                                       batches).items():
    got = a.batch_stats
    for key in bn:
      got = got[key]
    np.testing.assert_allclose(got['mean'], mean, rtol=1e-4, atol=1e-6, err_msg=str(bn))
    np.testing.assert_allclose(got['var'], var, rtol=1e-4, atol=1e-6, err_msg=str(bn))

  # The same run in a second workdir, preempted after step 7 (mid-cycle, one snapshot averaged),
  # then resumed from its checkpoint: the final state equals the uninterrupted run's.
  first = run.checkpointer
  run_b = make_run(tmp_path / 'b')
  step_b = run_b.train_step

  def preempting_step(state, batch):
    state, metrics = step_b(state, batch)
    if int(state.step) == preempt_at[0]:
      os.kill(os.getpid(), signal.SIGTERM)
    return state, metrics

  run_b.train_step = preempting_step
  preempt_at[0] = 7
  with pytest.raises(train.Preempted, match='step 7/8'):
    train.train(run_b, fresh(), 0)
  preempt_at[0] = None
  restored = run_b.checkpointer.restore(fresh())
  assert int(restored.step) == 7 and int(optim.swa_state(restored.opt_state).num_averaged) == 1
  b = jax.device_get(train.train(run_b, restored, 7))
  for x, y in ((a.params, b.params), (a.batch_stats, b.batch_stats), (a.opt_state, b.opt_state)):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7), x, y)
  first.close()
  run_b.checkpointer.close()


# bfloat16 compute (config.model.dtype).


def test_bf16_step_is_close_to_float32_with_float32_params_and_statistics():
  mesh = parallel.create_mesh(jax.devices()[:1])
  host = _batches(1)[0]
  batch = parallel.shard_batch(host, mesh)
  config = _config()
  config.model.dtype = 'bfloat16'
  _, state, step = _setup_step(config, 10, mesh)
  initial = jax.device_get(state.params)
  assert 'bf16' in step.lower(state, batch).as_text()  # Compiled with bfloat16 operations.
  state, metrics = jax.device_get(step(state, batch))
  assert np.isfinite(metrics['loss'])
  for tree in (state.params, state.batch_stats, state.opt_state):  # Master weights, statistics.
    assert all(x.dtype in (np.float32, np.int32) for x in jax.tree.leaves(tree))

  # The float32 model with the same (float32) initial params: the same loss up to bf16 rounding.
  config.model.dtype = 'float32'
  model32 = small_model(config)

  def loss32(params, batch_stats):
    outputs, mutated = model32.apply({'params': params, 'batch_stats': batch_stats},
                                     host['image'], train=True, labels=host['label'],
                                     mutable=['batch_stats'])
    terms = objectives.compute_losses(outputs, host['label'], config.loss)
    return objectives.total_loss(terms), mutated['batch_stats']

  variables32 = jax.jit(lambda: model32.init(jax.random.key(config.seed, impl='rbg'),
                                             jnp.zeros((1, H, W, 3), jnp.uint8), train=False))()
  jax.tree.map(np.testing.assert_array_equal, variables32['params'], initial)
  lowered = jax.jit(loss32).lower(variables32['params'], variables32['batch_stats'])
  assert 'bf16' not in lowered.as_text()
  want, stats32 = jax.device_get(lowered.compile()(variables32['params'],
                                                   variables32['batch_stats']))
  np.testing.assert_allclose(metrics['loss'], want, rtol=5e-2)
  np.testing.assert_allclose(state.batch_stats['backbone']['bn1']['mean'],
                             stats32['backbone']['bn1']['mean'], rtol=5e-2, atol=5e-2)


def test_swa_and_dtype_keys_are_accepted_on_the_command_line():
  argv = ['main', '--config=configs/bagtricks.py', '--config.optim.swa.enabled=true',
          '--config.optim.swa.start_epoch=50', '--config.optim.swa.freq', '10',
          '--config.model.dtype=bfloat16']
  config_checks.check_command_line(argv)
  with pytest.raises(config_checks.ConfigError, match="did you mean 'optim.swa.freq'"):
    config_checks.check_command_line(argv + ['--config.optim.swa.freqq=3'])
  with pytest.raises(config_checks.ConfigError, match='is an int'):
    config_checks.check_command_line(argv + ['--config.optim.swa.freq=often'])
