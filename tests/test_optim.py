"""Schedules and optimiser against plain references of FastReID's / torch.optim semantics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jreid import optim
from jreid.config_defaults import base_config


def _cfg(**kw):
  cfg = base_config().optim
  cfg.update(kw)
  return cfg


def reference_lr(step, spe, total_epochs, cfg):
  """FastReID: warmup factor per iteration times the epoch-level main schedule."""
  epoch = step // spe
  if cfg.schedule == 'multistep':
    lr = cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
  else:
    t = min(max((epoch - cfg.delay_epochs) / (total_epochs - cfg.delay_epochs), 0.0), 1.0)
    lr = cfg.eta_min_lr + (cfg.lr - cfg.eta_min_lr) * (1 + math.cos(math.pi * t)) / 2
  warmup = round(cfg.warmup_epochs * spe)
  if warmup and cfg.warmup_method == 'linear':
    alpha = min(step / warmup, 1.0)
    lr *= cfg.warmup_factor * (1 - alpha) + alpha
  elif warmup and step < warmup:
    lr *= cfg.warmup_factor
  return lr


@pytest.mark.parametrize('kw', [
    dict(schedule='multistep', milestones=(3, 6), warmup_epochs=2, warmup_factor=0.1),
    dict(schedule='multistep', milestones=(4,), warmup_epochs=1.5, warmup_method='constant'),
    dict(schedule='cosine', delay_epochs=2, eta_min_lr=1e-5, warmup_epochs=1),
    dict(schedule='cosine', warmup_epochs=0),
])
def test_schedule_matches_reference(kw):
  cfg = _cfg(lr=3.5e-4, **kw)
  spe, epochs = 7, 10
  sched = optim.learning_rate_schedule(cfg, spe, spe * epochs)
  for step in range(spe * epochs):
    np.testing.assert_allclose(float(sched(step)), reference_lr(step, spe, epochs, cfg), rtol=1e-5)


def test_unknown_schedule_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown optim.schedule 'step'"):
    optim.learning_rate_schedule(_cfg(schedule='step'), 10, 100)


def _params():
  return {
      'backbone': {'conv1': {'kernel': jnp.full((3,), 1.0)},
                   'bn1': {'scale': jnp.full((3,), 2.0), 'bias': jnp.full((3,), 0.5)}},
      'heads': {'classifier': {'kernel': jnp.full((3,), -1.0), 'bias': jnp.full((3,), 0.25)}},
  }


def test_parameter_groups_follow_fastreid():
  cfg = _cfg(weight_decay=5e-4, weight_decay_norm=1e-3, weight_decay_bias=0.0, bias_lr_factor=2.0,
             lr_factors=(('^backbone/', 0.1),))
  wd, lrf = optim.param_hyperparams(_params(), cfg)
  assert wd == {'backbone': {'conv1': {'kernel': 5e-4}, 'bn1': {'scale': 1e-3, 'bias': 0.0}},
                'heads': {'classifier': {'kernel': 5e-4, 'bias': 0.0}}}
  assert lrf == {'backbone': {'conv1': {'kernel': 0.1}, 'bn1': {'scale': 0.1, 'bias': 0.2}},
                 'heads': {'classifier': {'kernel': 1.0, 'bias': 2.0}}}


def torch_adam_reference(p, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
  """torch.optim.Adam with L2 weight decay added to the gradient."""
  m = np.zeros_like(p); v = np.zeros_like(p)
  for t, g in enumerate(grads, start=1):
    g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
  return p


def torch_sgd_reference(p, grads, lr, wd, momentum, nesterov):
  buf = None
  for g in grads:
    g = g + wd * p
    buf = g if buf is None else momentum * buf + g
    p = p - lr * (g + momentum * buf if nesterov else buf)
  return p


@pytest.mark.parametrize('name,nesterov', [('adam', False), ('sgd', False), ('sgd', True)])
def test_optimizer_matches_torch_semantics(name, nesterov):
  cfg = _cfg(name=name, nesterov=nesterov, lr=0.05, weight_decay=0.01, weight_decay_norm=0.01,
             weight_decay_bias=0.01, warmup_epochs=0, schedule='constant', freeze_iters=0)
  p0 = np.array([1.0, -2.0, 0.5], np.float32)
  params = {'w': {'kernel': jnp.asarray(p0)}}
  rng = np.random.default_rng(0)
  grads = [rng.normal(size=3).astype(np.float32) for _ in range(5)]
  tx = optim.build_optimizer(cfg, optim.learning_rate_schedule(cfg, 10, 100), params)
  state = tx.init(params)
  for g in grads:
    upd, state = tx.update({'w': {'kernel': jnp.asarray(g)}}, state, params)
    params = jax.tree.map(lambda a, b: a + b, params, upd)
  if name == 'adam':
    expected = torch_adam_reference(p0.astype(np.float64), grads, 0.05, 0.01)
  else:
    expected = torch_sgd_reference(p0.astype(np.float64), grads, 0.05, 0.01, 0.9, nesterov)
  np.testing.assert_allclose(np.asarray(params['w']['kernel']), expected, rtol=1e-5, atol=1e-6)


def test_freeze_keeps_frozen_layers_and_their_optimizer_state():
  cfg = _cfg(name='adam', lr=0.1, warmup_epochs=0, schedule='constant', freeze_iters=3,
             freeze_layers=('^backbone/',), clip_grad_norm=1.0)
  params = _params()
  tx = optim.build_optimizer(cfg, optim.learning_rate_schedule(cfg, 10, 100), params)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  update = jax.jit(tx.update)
  history = []
  for _ in range(5):
    upd, state = update(grads, state, params)
    history.append(upd)
    params = jax.tree.map(lambda a, b: a + b, params, upd)
  for step, upd in enumerate(history):
    moved = float(jnp.abs(upd['backbone']['conv1']['kernel']).max())
    assert (moved == 0.0) == (step < 3), (step, moved)
    assert float(jnp.abs(upd['heads']['classifier']['kernel']).max()) > 0
  # After the freeze the first backbone update is a first Adam step (|update| = lr), which shows
  # that its moments and step count were untouched during the freeze.
  np.testing.assert_allclose(np.abs(np.asarray(history[3]['backbone']['conv1']['kernel'])), 0.1,
                             rtol=1e-3)
