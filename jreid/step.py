"""The one train step of every method, and BatchNorm statistics recomputed for given weights.

`make_train_step(method, config, mesh)` compiles `(state, batch) -> (state, metrics)`:

  outputs, batch_stats = method.forward(params, state.batch_stats, batch, rng)
  loss, metrics, extra = method.objective(outputs, batch, state)
  grads -> method.tx (weight decay, parameter groups, clipping, freezing, SWA) -> params

with `rng = fold_in(key(seed), step)`, the state donated, the batch split over the mesh's 'data'
axis and the state replicated. Layers frozen by `config.optim.freeze_layers` for the first
`freeze_iters` steps keep their BatchNorm running statistics too (FastReID's Freeze hook).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jreid import optim
from jreid import parallel
from jreid.method import Method, TrainState


def train_rng(seed: int, step: jax.Array) -> jax.Array:
  """The step's random key (dropout, ...): a pure function of (seed, step)."""
  return jax.random.fold_in(jax.random.key(seed, impl='rbg'), step)


def make_train_step(method: Method, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """The jitted pure train step of `method`: (state, batch) -> (state, metrics)."""
  freeze_iters = int(config.optim.freeze_iters) if config.optim.freeze_layers else 0
  freeze_layers = tuple(config.optim.freeze_layers)
  forward, objective, tx, schedule = method.forward, method.objective, method.tx, method.schedule
  lr_scale = method.lr_scale
  seed = int(config.seed)

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rng = train_rng(seed, state.step)

    def loss_fn(params):
      outputs, batch_stats = forward(params, state.batch_stats, batch, rng)
      loss, metrics, extra = objective(outputs, batch, state)
      return loss, (metrics, batch_stats, extra)

    (loss, (metrics, batch_stats, extra)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    scale = jnp.float32(1.0) if lr_scale is None else lr_scale(state.extra)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, lr_scale=scale)
    params = optax.apply_updates(state.params, updates)
    if freeze_iters:
      frozen = optim.freeze_mask(batch_stats, freeze_layers)
      keep = state.step < freeze_iters
      batch_stats = jax.tree.map(lambda m, new, old: jnp.where(keep & m, old, new),
                                 frozen, batch_stats, state.batch_stats)
    metrics = {'loss': loss, **metrics, 'grad_norm': optax.global_norm(grads),
               'lr': schedule(state.step) * scale}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, extra=extra)
    return new_state, metrics

  replicated = parallel.replicated_sharding(mesh)
  return jax.jit(train_step, donate_argnums=(0,),
                 in_shardings=(replicated, parallel.data_sharding(mesh)),
                 out_shardings=(replicated, replicated))


def make_batch_stats_update(forward, mesh: jax.sharding.Mesh, seed: int = 0):
  """`(params, batch_stats, batches) -> batch_stats`: BatchNorm running statistics recomputed for
  `params` (e.g. SWA weights), compiled once for reuse.

  `forward` is a method's training-mode forward pass (`Method.forward`), run over `batches`
  (host batches, placed on the mesh like the train step's, so statistics are over the global
  batch, dropout on as torch's `bn_update`). Every running mean/var becomes the plain average over
  the batches of that batch's statistic (the mean and the biased variance flax's BatchNorm
  computes in train mode): torchcontrib's / FastReID's `bn_update` (momentum=None, batches of
  equal size), with flax's biased variance as in every jreid train step. Statistics that train
  mode does not update (BatchNorm kept in inference mode) are returned unchanged.

  The momentum m of each BatchNorm is measured, not assumed: `running <- m * running + (1 - m) *
  batch` is evaluated from running = 0 and running = 2^20 on the first batch, which gives m; each
  batch's statistic is then (its update from running = 0) / (1 - m).
  """
  replicated = parallel.replicated_sharding(mesh)
  probe = 2.0 ** 20

  @functools.partial(jax.jit, out_shardings=replicated)
  def updated(params, batch_stats, fill, batch, index):
    """Every running statistic after one train-mode pass from running = fill."""
    stats = jax.tree.map(lambda x: jnp.full_like(x, fill), batch_stats)
    _, new = forward(params, stats, batch, train_rng(seed, index))
    return new

  @jax.jit
  def weights(low, high):
    """1 - m per statistic (0 where train mode leaves the statistic alone)."""
    return jax.tree.map(lambda lo, hi: 1.0 - (hi - lo) / probe, low, high)

  @jax.jit
  def add(sums, new, weight):
    return jax.tree.map(
        lambda acc, x, w: acc + jnp.where(w > 1e-5, x / jnp.maximum(w, 1e-5), 0.0),
        sums, new, weight)

  @jax.jit
  def finish(sums, weight, old, count):
    return jax.tree.map(lambda s, w, o: jnp.where(w > 1e-5, s / count, o), sums, weight, old)

  def update(params: Any, batch_stats: Any, batches: Iterable[dict[str, Any]]) -> Any:
    if not jax.tree.leaves(batch_stats):
      return batch_stats
    sums = jax.device_put(jax.tree.map(jnp.zeros_like, batch_stats), replicated)
    weight = None
    count = 0
    for batch in batches:
      batch = parallel.shard_batch(batch, mesh)
      # One compiled forward pass; `fill` is an argument, so the probe reuses it.
      new = updated(params, batch_stats, jnp.float32(0.0), batch, jnp.int32(count))
      if weight is None:
        high = updated(params, batch_stats, jnp.float32(probe), batch, jnp.int32(count))
        weight = weights(new, high)
      sums = add(sums, new, weight)
      count += 1
    if not count:
      raise ValueError('recompute_batch_stats: no batches were given.')
    return finish(sums, weight, batch_stats, jnp.float32(count))

  return update


def apply_swa(method: Method, state: TrainState, config: ml_collections.ConfigDict,
              mesh: jax.sharding.Mesh, total_steps: int) -> TrainState:
  """The end of SWA (FastReID's swap_swa_param + bn_update): params <- their SWA average (held
  in the optimiser state by `optim.swa`), BatchNorm statistics recomputed on the last
  `swa.bn_update_steps` training batches of the run (0: one epoch)."""
  swa = optim.swa_state(state.opt_state)
  num = min(int(config.optim.swa.bn_update_steps) or method.steps_per_epoch, total_steps)
  # A copy: the average stays in the optimiser state, and a donated state must not hold one
  # buffer twice.
  params = jax.tree.map(jnp.copy, swa.average)
  update = make_batch_stats_update(method.forward, mesh, seed=int(config.seed))
  batch_stats = update(params, state.batch_stats,
                       method.batches(state, total_steps - num, total_steps))
  if jax.process_index() == 0:
    print(f'SWA: params replaced by the average of {int(swa.num_averaged)} snapshots; BatchNorm '
          f'statistics recomputed on {num} training batches', flush=True)
  return state.replace(params=params, batch_stats=batch_stats)
