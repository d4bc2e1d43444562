"""Training objectives chosen by name from `config.loss` (FastReID's MODEL.LOSSES), for every
method.

`config.loss.names` lists the terms; each term has its own sub-config with a `weight` (FastReID's
SCALE) and its options. A term is a function (inputs, labels, term config) -> scalar, registered
with its default options where it is defined (`@register(name, **defaults)`). `inputs` are the
model's outputs plus the targets a method adds for the batch (PPLR's agreement scores, Cluster
Contrast's centroid memory, ...):

  cross_entropy    logits                   epsilon (< 0: probability-based smoothing), variant
  focal            logits                   alpha, gamma
  triplet          features                 margin (0: soft margin), norm_feat, hard_mining
  circle, cosface  features                 margin, gamma (pair-wise circle loss / CosFace)
  wrt              features                 (AGW's weighted regularisation triplet)
  qaconv_triplet   scores (QAConv [B, B])   margin (QAConv 2.1)
  qaconv_pairwise  scores                   (QAConv 2.0 pairwise matching BCE)
  pplr_pglr        logits, part_logits, agreement, class_mask        beta
  pplr_part        part_logits, agreement, class_mask, use_aals      epsilon
  camera_proxy     embedding, part_embeddings, camid, proxies, ...   num_hards, temperature

A method module may register its own terms the same way (Cluster Contrast's 'cluster_memory').
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jreid import losses
from jreid.registry import Registry

LOSSES = Registry('loss')
DEFAULTS: dict[str, dict[str, Any]] = {}
LossFn = Callable[[dict[str, Any], jax.Array, ml_collections.ConfigDict], jax.Array]


def register(name: str, **defaults):
  """Registers a loss term under `name` with its default options (a `weight` of 1 is added)."""

  def decorator(fn: LossFn) -> LossFn:
    LOSSES.register(name)(fn)
    DEFAULTS[name] = {'weight': 1.0, **defaults}
    return fn

  return decorator


def loss_config(names: Sequence[str], *others: str, **options: dict[str, Any]
                ) -> ml_collections.ConfigDict:
  """A `config.loss` section: `names` (the terms used) and one sub-config per term of `names`
  and `others` (terms a user may switch on with config.loss.names), at their registered defaults
  updated by `options[name]`."""
  cfg = ml_collections.ConfigDict()
  cfg.names = tuple(names)
  for name in (*names, *others):
    if name not in DEFAULTS:
      try:
        LOSSES.get(name)  # The nearest registered name.
      except ValueError as e:
        raise ValueError(f'config.loss: {e}') from None
    defaults = DEFAULTS[name]
    cfg[name] = ml_collections.ConfigDict({**defaults, **options.get(name, {})})
  return cfg


@register('cross_entropy', epsilon=0.1, variant='fastreid', alpha=0.2)
def _cross_entropy(inputs, labels, cfg):
  return losses.cross_entropy(inputs['logits'], labels, epsilon=cfg.epsilon, variant=cfg.variant,
                              alpha=cfg.alpha)


@register('focal', alpha=0.25, gamma=2.0)
def _focal(inputs, labels, cfg):
  return losses.focal_loss(inputs['logits'], labels, alpha=cfg.alpha, gamma=cfg.gamma)


@register('triplet', margin=0.3, norm_feat=False, hard_mining=True)
def _triplet(inputs, labels, cfg):
  return losses.triplet_loss(inputs['features'], labels, margin=cfg.margin,
                             norm_feat=cfg.norm_feat, hard_mining=cfg.hard_mining)


@register('wrt')
def _wrt(inputs, labels, cfg):
  del cfg  # Only its weight, applied by compute_losses.
  return losses.weighted_regularization_triplet(inputs['features'], labels)


@register('circle', margin=0.25, gamma=128.0)
def _circle(inputs, labels, cfg):
  return losses.pairwise_circle_loss(inputs['features'], labels, margin=cfg.margin,
                                     gamma=cfg.gamma)


@register('cosface', margin=0.25, gamma=128.0)
def _cosface(inputs, labels, cfg):
  return losses.pairwise_cosface_loss(inputs['features'], labels, margin=cfg.margin,
                                      gamma=cfg.gamma)


@register('qaconv_triplet', margin=16.0)
def _qaconv_triplet(inputs, labels, cfg):
  return losses.qaconv_triplet_loss(inputs['scores'], labels, margin=cfg.margin)


@register('qaconv_pairwise')
def _qaconv_pairwise(inputs, labels, cfg):
  del cfg
  return losses.pairwise_matching_loss(inputs['scores'], labels)


@register('pplr_pglr', beta=0.5)
def _pplr_pglr(inputs, labels, cfg):
  return losses.pglr_loss(inputs['logits'], inputs['part_logits'], labels, inputs['agreement'],
                          cfg.beta, inputs['class_mask'])


@register('pplr_part', epsilon=0.1)
def _pplr_part(inputs, labels, cfg):
  """Mean over parts of label-smoothed CE, or agreement-aware label smoothing once
  inputs['use_aals'] (PPLR's `aals_epoch`)."""
  part_logits = inputs['part_logits']
  num_parts = part_logits.shape[1]
  terms = []
  for p in range(num_parts):
    aals = losses.aals_loss(part_logits[:, p], labels, inputs['agreement'][:, p],
                            inputs['class_mask'])
    ce = losses.smoothed_ce(part_logits[:, p], labels, cfg.epsilon, inputs['class_mask'])
    terms.append(jnp.where(inputs['use_aals'], aals, ce))
  return sum(terms) / num_parts


@register('camera_proxy', weight=0.5, num_hards=50, temperature=0.07)
def _camera_proxy(inputs, labels, cfg):
  """PPLR's inter-camera proxy loss of the global feature plus the mean over parts."""
  parts = inputs['part_embeddings']
  feats = [inputs['embedding']] + [parts[:, p] for p in range(parts.shape[1])]
  terms = [losses.camera_proxy_loss(f, labels, inputs['camid'], inputs['proxies'][i],
                                    inputs['proxy_labels'], inputs['proxy_cams'],
                                    inputs['proxy_mask'], cfg.num_hards, cfg.temperature)
           for i, f in enumerate(feats)]
  return terms[0] + sum(terms[1:]) / (len(terms) - 1)


def compute_losses(inputs: dict[str, Any], labels: jax.Array,
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
                       '(its weight and options); add one, as jreid.objectives.loss_config does.')
    term_cfg = cfg[name]
    terms[name] = term_cfg.weight * _over_branches(name, loss_fn, inputs, labels, term_cfg)
  return terms


# The model output each term reads. A multi-branch model (MGN) also returns
# outputs['branch_' + key], a list of arrays: the term is then the mean of the loss over that list
# (FastReID's MGN: CE on 8 logits x 1/8, triplet on 5 features x 1/5).
TERM_INPUTS = {'cross_entropy': 'logits', 'focal': 'logits', 'triplet': 'features',
               'circle': 'features', 'cosface': 'features'}


def _over_branches(name: str, loss_fn: LossFn, inputs: dict[str, Any], labels: jax.Array,
                   term_cfg: ml_collections.ConfigDict) -> jax.Array:
  key = TERM_INPUTS.get(name)
  branches = inputs.get(f'branch_{key}') if key else None
  if not branches:
    return loss_fn(inputs, labels, term_cfg)
  values = [loss_fn({**inputs, key: value}, labels, term_cfg) for value in branches]
  return sum(values) / len(values)


def total_loss(terms: dict[str, jax.Array]) -> jax.Array:
  return sum(terms.values(), jnp.zeros([], jnp.float32))


def unused_term_sections(cfg: ml_collections.ConfigDict) -> list[str]:
  """Term sections of `cfg` (config.loss) that differ from their defaults while their term is not
  in cfg.names: settings that would be silently ignored."""
  out = []
  for name, value in cfg.items():
    if name == 'names' or name in cfg.names or name not in DEFAULTS:
      continue
    if dict(value) != DEFAULTS[name]:
      out.append(name)
  return out
