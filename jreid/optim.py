"""Learning-rate schedules and optimisers with FastReID's semantics.

Schedules: a warmup factor applied per iteration (linear from `warmup_factor` to 1, or constant),
then an epoch-level main schedule (multistep with `gamma` at `milestones`, or cosine annealing after
`delay_epochs` down to `eta_min_lr`). Milestones are absolute epochs counted from the start of
training.

Parameter groups follow FastReID's `get_default_optimizer_params`: parameters of normalisation
layers use `weight_decay_norm`; every bias uses `bias_lr_factor` and `weight_decay_bias`; `lr_factors`
multiplies the learning rate of parameters whose path matches a regex (e.g. the backbone at 0.1).
Weight decay is the L2 penalty added to the gradient before momentum/Adam, as in torch.optim.

`freeze_layers` + `freeze_iters`: parameters whose path matches one of the regexes receive no update,
no weight decay and keep their optimiser state untouched for the first `freeze_iters` steps (the
train step also keeps their BatchNorm statistics frozen).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

PyTree = Any


def path_str(path: tuple[Any, ...]) -> str:
  """'backbone/layer1_0/conv1/kernel' for a jax tree path."""
  parts = []
  for k in path:
    parts.append(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))))
  return '/'.join(parts)


def learning_rate_schedule(cfg: ml_collections.ConfigDict, steps_per_epoch: int,
                           total_steps: int) -> optax.Schedule:
  """Per-step learning rate: `cfg.lr` x warmup factor x main epoch-level schedule.

  Keys of `cfg` (config.optim): lr, warmup_epochs, warmup_factor, warmup_method ('linear' |
  'constant'), warmup_per_epoch (False: the linear factor grows every step, FastReID; True: it
  is constant within each epoch and goes from warmup_factor in the first warmup epoch to 1 in
  the last, as AGW's per-epoch adjust_learning_rate; needs whole warmup_epochs), schedule
  ('multistep' | 'cosine' | 'constant'), milestones (epochs), gamma, delay_epochs, eta_min_lr.
  """
  base_lr = float(cfg.lr)
  warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
  total_epochs = max(total_steps / steps_per_epoch, 1.0)
  milestones = np.asarray(sorted(cfg.milestones), np.int32) if cfg.milestones else None
  warmup_per_epoch = bool(cfg.get('warmup_per_epoch', False))
  if warmup_per_epoch and cfg.warmup_epochs != int(cfg.warmup_epochs):
    raise ValueError(f'config.optim.warmup_per_epoch=True needs a whole number of '
                     f'warmup_epochs, got {cfg.warmup_epochs}; round it or set '
                     'warmup_per_epoch=False.')

  def schedule(step):
    step = jnp.asarray(step)
    epoch = step // steps_per_epoch
    if cfg.schedule == 'multistep':
      n = jnp.sum(epoch >= milestones) if milestones is not None else 0
      lr = base_lr * cfg.gamma ** n
    elif cfg.schedule == 'cosine':
      t = jnp.clip((epoch - cfg.delay_epochs) / max(total_epochs - cfg.delay_epochs, 1.0), 0.0, 1.0)
      lr = cfg.eta_min_lr + (base_lr - cfg.eta_min_lr) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
    elif cfg.schedule == 'constant':
      lr = jnp.asarray(base_lr)
    else:
      raise ValueError(f"unknown optim.schedule {cfg.schedule!r}: use 'multistep', 'cosine' or "
                       "'constant'")
    if warmup_steps > 0:
      if cfg.warmup_method == 'linear' and warmup_per_epoch:
        # Piecewise constant per epoch, `warmup_factor` in epoch 0 to 1 in epoch W - 1; with
        # warmup_factor = 1 / W this is AGW's lr x (epoch + 1) / W.
        alpha = jnp.minimum(epoch / max(int(cfg.warmup_epochs) - 1, 1), 1.0)
        factor = cfg.warmup_factor * (1.0 - alpha) + alpha
      elif cfg.warmup_method == 'linear':
        alpha = jnp.minimum(step / warmup_steps, 1.0)
        factor = cfg.warmup_factor * (1.0 - alpha) + alpha
      elif cfg.warmup_method == 'constant':
        factor = jnp.where(step < warmup_steps, cfg.warmup_factor, 1.0)
      else:
        raise ValueError(f"unknown optim.warmup_method {cfg.warmup_method!r}: use 'linear' or "
                         "'constant'")
      lr = lr * factor
    return jnp.asarray(lr, jnp.float32)

  schedule(0)  # Validate the names eagerly, outside any trace.
  return schedule


def _is_norm_module(module: Any) -> bool:
  return isinstance(module, dict) and 'scale' in module


def param_hyperparams(params: PyTree, cfg: ml_collections.ConfigDict) -> tuple[PyTree, PyTree]:
  """Per-parameter weight decay and learning-rate factor trees (FastReID parameter groups)."""
  lr_factors = [(re.compile(p), float(f)) for p, f in cfg.lr_factors]

  def visit(tree, prefix):
    wd, lrf = {}, {}
    norm = _is_norm_module(tree)
    for name, value in tree.items():
      path = f'{prefix}/{name}' if prefix else name
      if isinstance(value, dict):
        wd[name], lrf[name] = visit(value, path)
        continue
      decay, factor = cfg.weight_decay, 1.0
      if norm:
        decay = cfg.weight_decay_norm
      for pattern, f in lr_factors:
        if pattern.search(path):
          factor *= f
      if name == 'bias':
        decay = cfg.weight_decay_bias
        factor *= cfg.bias_lr_factor
      wd[name], lrf[name] = float(decay), float(factor)
    return wd, lrf

  return visit(_as_dict(params), '')


def _as_dict(tree: PyTree) -> dict:
  if hasattr(tree, 'unfreeze'):
    tree = tree.unfreeze()
  return tree


def freeze_mask(params: PyTree, patterns: tuple[str, ...]) -> PyTree:
  """True for parameters whose path matches one of the regexes."""
  compiled = [re.compile(p) for p in patterns]
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(p.search(path_str(path)) for p in compiled), params)


def _add_decayed_weights_tree(wd: PyTree) -> optax.GradientTransformation:
  def update(updates, state, params=None):
    return jax.tree.map(lambda u, p, d: u + d * p if d else u, updates, params, wd), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def _scale_tree(factors: PyTree) -> optax.GradientTransformation:
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, f: u * f if f != 1.0 else u, updates, factors), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


class _SkipState(NamedTuple):
  count: jax.Array
  inner: optax.OptState


def _skip_first(inner: optax.GradientTransformation, num_steps: int) -> optax.GradientTransformation:
  """Zero updates and an untouched inner state for the first `num_steps` calls."""

  def init(params):
    return _SkipState(jnp.zeros([], jnp.int32), inner.init(params))

  def update(updates, state, params=None):
    new_updates, new_inner = inner.update(updates, state.inner, params)
    active = state.count >= num_steps
    new_updates = jax.tree.map(lambda u: jnp.where(active, u, jnp.zeros_like(u)), new_updates)
    new_inner = jax.tree.map(lambda n, o: jnp.where(active, n, o), new_inner, state.inner)
    return new_updates, _SkipState(state.count + 1, new_inner)

  return optax.GradientTransformation(init, update)


def build_optimizer(cfg: ml_collections.ConfigDict, schedule: optax.Schedule, params: PyTree,
                    steps_per_epoch: int | None = None) -> optax.GradientTransformationExtraArgs:
  """The optimiser described by config.optim for the given parameter tree.

  Keys: name ('adam' | 'sgd'), momentum, nesterov, adam_b1, adam_b2, adam_eps, weight_decay,
  weight_decay_norm, weight_decay_bias, bias_lr_factor, lr_factors, clip_grad_norm (0 = off),
  freeze_layers, freeze_iters, swa (needs `steps_per_epoch`).

  Its `update` takes an optional `lr_scale` argument (a scalar multiplying every update, e.g.
  QAConv's adaptive decay); SWA, last in the chain, averages the params the scaled update gives.
  """
  wd, lr_factor = param_hyperparams(params, cfg)
  if cfg.name == 'adam':
    core = lambda: optax.scale_by_adam(b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps)
  elif cfg.name == 'sgd':
    core = lambda: (optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov) if cfg.momentum
                    else optax.identity())
  else:
    raise ValueError(f"unknown optim.name {cfg.name!r}: use 'adam' or 'sgd'")

  chain = []
  if cfg.freeze_iters > 0 and cfg.freeze_layers:
    mask = freeze_mask(params, tuple(cfg.freeze_layers))
    # Frozen parameters: no gradient (so no share of the clipping norm), and a core optimiser
    # whose state stays untouched until the freeze ends.
    chain.append(_zero_first(mask, cfg.freeze_iters))
    labels = jax.tree.map(lambda m: 'frozen' if m else 'free', mask)
    core_tx = optax.multi_transform(
        {'frozen': _skip_first(core(), cfg.freeze_iters), 'free': core()}, labels)
  else:
    core_tx = core()
  if cfg.clip_grad_norm:
    chain.append(optax.clip_by_global_norm(cfg.clip_grad_norm))
  chain += [_add_decayed_weights_tree(wd), core_tx, _scale_tree(lr_factor),
            optax.scale_by_learning_rate(schedule), scale_by_lr_scale()]
  if swa_enabled(cfg):
    if not steps_per_epoch:
      raise ValueError('build_optimizer: config.optim.swa.enabled needs steps_per_epoch.')
    chain.append(swa(swa_start_step(cfg, steps_per_epoch), int(cfg.swa.freq)))
  return optax.chain(*chain)


def scale_by_lr_scale() -> optax.GradientTransformationExtraArgs:
  """Multiplies the updates by the `lr_scale` argument of `update` (1 when not given)."""

  def update(updates, state, params=None, *, lr_scale=None, **extra_args):
    del params, extra_args
    if lr_scale is None:
      return updates, state
    return jax.tree.map(lambda u: u * lr_scale, updates), state

  return optax.GradientTransformationExtraArgs(lambda _: optax.EmptyState(), update)


def _zero_first(mask: PyTree, num_steps: int) -> optax.GradientTransformation:
  """Zeroes the gradients of masked parameters for the first `num_steps` calls."""

  def update(updates, state, params=None):
    del params
    active = state.count >= num_steps
    updates = jax.tree.map(lambda u, m: jnp.where(active, u, jnp.zeros_like(u)) if m else u,
                           updates, mask)
    return updates, optax.ScaleByScheduleState(count=state.count + 1)

  return optax.GradientTransformation(
      lambda _: optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32)), update)


# Stochastic weight averaging (Izmailov et al., UAI 2018), as FastReID's SOLVER.SWA.


def swa_enabled(cfg: ml_collections.ConfigDict) -> bool:
  """Whether `config.optim.swa.enabled` is set (configs without the section: False)."""
  swa = cfg.get('swa', None)
  return bool(swa is not None and swa.enabled)


def swa_start_step(cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """The first step of the SWA phase: `config.optim.swa.start_epoch` x steps per epoch."""
  return int(cfg.swa.start_epoch) * int(steps_per_epoch)


def check_swa_config(cfg: ml_collections.ConfigDict, steps_per_epoch: int,
                     total_steps: int) -> None:
  """ValueError naming the key to fix when the SWA phase cannot average anything."""
  swa = cfg.swa
  total_epochs = total_steps // steps_per_epoch
  if not 0 <= int(swa.start_epoch) < total_epochs:
    raise ValueError(f'config.optim.swa.start_epoch={swa.start_epoch} must be in [0, '
                     f'train.epochs={total_epochs}): the SWA phase runs from that epoch to the '
                     'end of training.')
  if int(swa.freq) < 1:
    raise ValueError(f'config.optim.swa.freq={swa.freq} must be >= 1 (steps between averages).')
  phase = total_steps - swa_start_step(cfg, steps_per_epoch)
  if phase < int(swa.freq):
    raise ValueError(f'config.optim.swa.freq={swa.freq} is longer than the SWA phase ({phase} '
                     f'steps from epoch {swa.start_epoch}): nothing would be averaged; lower '
                     'freq or start_epoch.')
  if swa.cyclic_lr and (swa.lr_factor <= 0 or swa.eta_min_lr < 0):
    raise ValueError(f'config.optim.swa.lr_factor ({swa.lr_factor}) must be > 0 and eta_min_lr '
                     f'({swa.eta_min_lr}) >= 0.')


def swa_learning_rate_schedule(cfg: ml_collections.ConfigDict, schedule: optax.Schedule,
                               steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """`schedule`, then FastReID's cyclic SWA learning rate from `swa.start_epoch` on.

  With `swa.cyclic_lr`, step s of the SWA phase (t = s - start) uses
  `eta_min_lr + (lr_swa - eta_min_lr) * (1 + cos(pi * (t mod freq) / freq)) / 2`, with
  `lr_swa = lr_factor * schedule(start)`: torch's CosineAnnealingWarmRestarts(T_0=freq) started
  at the SWA phase, as FastReID's SWA hook with LR_SCHED. Each cycle ends on an averaging step
  (the lowest lr of the cycle). Without `cyclic_lr`, or with SWA disabled, `schedule` unchanged.
  Per-parameter factors (bias_lr_factor, lr_factors) still multiply this global rate.
  """
  if not swa_enabled(cfg):
    return schedule
  check_swa_config(cfg, steps_per_epoch, total_steps)
  swa = cfg.swa
  if not swa.cyclic_lr:
    return schedule
  start = swa_start_step(cfg, steps_per_epoch)
  freq = int(swa.freq)
  eta_min = float(swa.eta_min_lr)
  lr_swa = float(swa.lr_factor) * float(schedule(start))

  def swa_schedule(step):
    step = jnp.asarray(step)
    t = jnp.mod(jnp.maximum(step - start, 0), freq)
    cyclic = eta_min + (lr_swa - eta_min) * 0.5 * (1.0 + jnp.cos(jnp.pi * t / freq))
    return jnp.where(step >= start, cyclic, schedule(step)).astype(jnp.float32)

  return swa_schedule


class SWAState(NamedTuple):
  """SWA's running average of the params, in the optimiser state (checkpointed with it)."""
  count: jax.Array  # Updates seen: the global step.
  average: PyTree  # Mean of the params after each averaging step (float32, params-shaped).
  num_averaged: jax.Array


def swa(start_step: int, freq: int) -> optax.GradientTransformation:
  """Stochastic weight averaging as the last transformation of an optimiser chain.

  It passes the updates through unchanged and adds the params they give (params + updates) to
  its running mean after update s (1-based) when s > start_step and (s - start_step) % freq == 0
  (FastReID's SWA.update_swa every PERIOD steps): mean_{n+1} = mean_n + (p - mean_n) / (n + 1),
  so after n averages it is the mean of the n snapshots (torchcontrib's / FastReID's
  `update_swa`). `swa_state(opt_state).average` holds the result.
  """

  def init(params):
    return SWAState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params),
                    jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('optim.swa needs the params in update().')
    new_params = optax.apply_updates(params, updates)
    done = state.count + 1 - start_step  # Steps of the SWA phase done after this one.
    average = (done > 0) & (done % freq == 0)
    inv = 1.0 / (state.num_averaged + 1).astype(jnp.float32)
    mean = jax.tree.map(lambda m, p: jnp.where(average, m + (p - m) * inv.astype(m.dtype), m),
                        state.average, new_params)
    return updates, SWAState(state.count + 1, mean,
                             state.num_averaged + average.astype(jnp.int32))

  return optax.GradientTransformation(init, update)


def swa_state(opt_state: PyTree) -> SWAState:
  """The SWAState inside an optimiser state built with SWA enabled."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, SWAState))
           if isinstance(s, SWAState)]
  if len(found) != 1:
    raise ValueError('the optimiser state holds no SWA average: build the optimiser with '
                     'config.optim.swa.enabled=True.')
  return found[0]
