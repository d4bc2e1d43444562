"""Training objectives chosen by name from `config.loss` (FastReID's MODEL.LOSSES).

`config.loss.names` lists the terms; each term has its own sub-config with a `weight` (FastReID's
SCALE). A term is a function (model outputs, labels, term config) -> scalar.

  cross_entropy  outputs['logits']    epsilon (< 0: probability-based smoothing), variant, alpha
  focal          outputs['logits']    alpha, gamma
  triplet        outputs['features']  margin, norm_feat, hard_mining
  circle         outputs['features']  margin, gamma (pair-wise circle loss)
  cosface        outputs['features']  margin, gamma (pair-wise CosFace)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from jreid import losses
from jreid.registry import Registry

LOSSES = Registry('loss')
LossFn = Callable[[dict[str, jax.Array], jax.Array, ml_collections.ConfigDict], jax.Array]


@LOSSES.register('cross_entropy')
def _cross_entropy(outputs, labels, cfg):
  return losses.cross_entropy(outputs['logits'], labels, epsilon=cfg.epsilon, variant=cfg.variant,
                              alpha=cfg.get('alpha', 0.2))


@LOSSES.register('focal')
def _focal(outputs, labels, cfg):
  return losses.focal_loss(outputs['logits'], labels, alpha=cfg.alpha, gamma=cfg.gamma)


@LOSSES.register('triplet')
def _triplet(outputs, labels, cfg):
  return losses.triplet_loss(outputs['features'], labels, margin=cfg.margin,
                             norm_feat=cfg.norm_feat, hard_mining=cfg.hard_mining)


@LOSSES.register('wrt')
def _wrt(outputs, labels, cfg):
  del cfg  # Only its weight, applied by compute_losses.
  return losses.weighted_regularization_triplet(outputs['features'], labels)


@LOSSES.register('circle')
def _circle(outputs, labels, cfg):
  return losses.pairwise_circle_loss(outputs['features'], labels, margin=cfg.margin,
                                     gamma=cfg.gamma)


@LOSSES.register('cosface')
def _cosface(outputs, labels, cfg):
  return losses.pairwise_cosface_loss(outputs['features'], labels, margin=cfg.margin,
                                      gamma=cfg.gamma)


def compute_losses(outputs: dict[str, jax.Array], labels: jax.Array,
                   cfg: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Weighted loss terms keyed by name; the total is their sum."""
  terms: dict[str, Any] = {}
  for name in cfg.names:
    try:
      loss_fn = LOSSES.get(name)
    except ValueError as e:
      raise ValueError(f'config.loss.names: {e}') from None
    if name not in cfg:
      raise ValueError(f'config.loss.names lists {name!r} but config.loss has no {name!r} section '
                       '(its weight and options); add one, as in jreid.config_defaults.')
    term_cfg = cfg[name]
    terms[name] = term_cfg.weight * _over_branches(name, loss_fn, outputs, labels, term_cfg)
  return terms


# The model output each term reads. A multi-branch model (MGN) also returns
# outputs['branch_' + key], a list of arrays: the term is then the mean of the loss over that list
# (FastReID's MGN: CE on 8 logits x 1/8, triplet on 5 features x 1/5).
TERM_INPUTS = {'cross_entropy': 'logits', 'focal': 'logits', 'triplet': 'features',
               'circle': 'features', 'cosface': 'features'}


def _over_branches(name: str, loss_fn: LossFn, outputs: dict[str, Any], labels: jax.Array,
                   term_cfg: ml_collections.ConfigDict) -> jax.Array:
  key = TERM_INPUTS.get(name)
  branches = outputs.get(f'branch_{key}') if key else None
  if not branches:
    return loss_fn(outputs, labels, term_cfg)
  values = [loss_fn({**outputs, key: value}, labels, term_cfg) for value in branches]
  return sum(values) / len(values)


def total_loss(terms: dict[str, jax.Array]) -> jax.Array:
  return sum(terms.values(), jnp.zeros([], jnp.float32))
