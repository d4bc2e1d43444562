"""Training objectives chosen by name from `config.loss` (FastReID's MODEL.LOSSES).

`config.loss.names` lists the terms; each term has its own sub-config with a `weight` (FastReID's
SCALE). A term is a function (model outputs, labels, term config) -> scalar.
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
  return losses.cross_entropy(outputs['logits'], labels, epsilon=cfg.epsilon, variant=cfg.variant)


@LOSSES.register('triplet')
def _triplet(outputs, labels, cfg):
  return losses.triplet_loss(outputs['features'], labels, margin=cfg.margin,
                             norm_feat=cfg.norm_feat, hard_mining=cfg.hard_mining)


def compute_losses(outputs: dict[str, jax.Array], labels: jax.Array,
                   cfg: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Weighted loss terms keyed by name; the total is their sum."""
  terms: dict[str, Any] = {}
  for name in cfg.names:
    term_cfg = cfg[name]
    terms[name] = term_cfg.weight * LOSSES.get(name)(outputs, labels, term_cfg)
  return terms


def total_loss(terms: dict[str, jax.Array]) -> jax.Array:
  return sum(terms.values(), jnp.zeros([], jnp.float32))
