"""Supervised re-ID with identity labels: FastReID's Baseline recipes (BoT, AGW, SBS, MGN, ...).

`config.method = 'supervised'`. The model is built from the config's registries (backbone,
pooling, head: `jreid.models.build_model`), batches come from an identity sampler
(`config.sampler`: P x K, camera-balanced or set re-weighted), and the loss is the weighted sum of
the terms of `config.loss` (`jreid.objectives`). Test features are the embeddings, ranked by
`config.eval.metric`. With `config.dsr.enabled`, the test images' feature maps before pooling are
also ranked by DSR (Deep Spatial feature Reconstruction, partial re-ID: `jreid.evaluation.dsr`), a
'dsr' row of the results (and of every test set of `config.eval.testsets`), and by DSR and the
embedding distance standardised and summed, a 'dsr + global' row.

Sections owned: `loss`, `sampler`, `dsr`.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import ml_collections

from jreid import evaluator
from jreid import models
from jreid import objectives
from jreid import parts
from jreid.method import Data, Inference, Method, TrainState


def default_config() -> ml_collections.ConfigDict:
  """The sections this method owns, at FastReID's defaults (BoT: CE + triplet, P x K)."""
  c = ml_collections.ConfigDict()
  c.method = 'supervised'
  c.loss = objectives.loss_config(('cross_entropy', 'triplet'), 'focal', 'circle', 'cosface')
  c.sampler = ml_collections.ConfigDict()
  c.sampler.name = 'pk'  # 'pk' | 'balanced' | 'set_reweight' (data_pipelines.samplers).
  c.sampler.num_instances = 4  # K; P = batch_size // K.
  c.sampler.set_weight = ()  # 'set_reweight': identities per set (camid) per unit; () = 1 each.
  c.dsr = ml_collections.ConfigDict()
  c.dsr.enabled = False  # Also rank by DSR on the feature maps (a 'dsr' row; Baseline models).
  c.dsr.lam = 0.01  # Ridge regulariser of the reconstruction (unit-norm location features).
  c.dsr.normalize = True  # L2-normalise each location's feature before reconstructing.
  c.dsr.scales = (1, 2, 3)  # Multi-scale blocks: k x k neighbourhoods of the map, k in scales.
  return c


def check_config(config: ml_collections.ConfigDict) -> None:
  if config.dsr.enabled and not config.dsr.scales:
    raise ValueError('config.dsr.scales is empty: give the block sizes of the multi-scale '
                     'representation, e.g. (1,) for the locations alone or (1, 2, 3).')
  if config.dsr.enabled and config.model.name != 'baseline':
    raise ValueError(f"config.dsr.enabled=True ranks the feature maps of a Baseline "
                     f"(config.model.name='baseline'); {config.model.name!r} exposes none: set "
                     'config.dsr.enabled=False.')


def inference(config: ml_collections.ConfigDict, num_classes: int) -> Inference:
  """The model and its embedding (`outputs['embedding']` in eval mode)."""
  return parts.image_inference(models.build_model(config.model, num_classes), config)


def evaluation(inf: Inference, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               data: Data):
  """`Method.evaluate` of the embeddings (`parts.embedding_evaluation`), plus the 'dsr' row of
  the feature maps when config.dsr.enabled (one extraction gives both)."""
  if not config.dsr.enabled:
    return parts.embedding_evaluation(inf, config, mesh, data)
  from jreid.evaluation import dsr  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import compute_distance  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import evaluate_rank  # pylint: disable=g-import-not-at-top
  model = inf.model

  def embed_with_maps(variables, images):
    out = model.apply(variables, images, train=False, feature_map=True)
    return {'embedding': out['embedding'], 'feature_map': out['feature_map']}

  both = parts.embedder(Inference(model=model, init=inf.init, embed=embed_with_maps), mesh,
                        flip=bool(config.eval.flip))
  plain = parts.embedding_evaluation(inf, config, mesh, data)

  def evaluate(state: TrainState, splits=None, post: bool = True) -> evaluator.EvalOutput:
    if not post:  # The untrained network, per-epoch checks: the embeddings alone.
      return plain(state, splits, post)
    splits = splits or data.splits
    query, gallery = splits['query'], splits['gallery']
    q = both(state.params, state.batch_stats, query, config.input, config.eval.batch_size)
    g = both(state.params, state.batch_stats, gallery, config.input, config.eval.batch_size)
    output = evaluator.evaluate_embeddings(q['embedding'], g['embedding'], query, gallery,
                                           config.eval, post=post)
    dist = dsr.dsr_distance(q['feature_map'], g['feature_map'], lam=config.dsr.lam,
                            normalize=config.dsr.normalize, scales=tuple(config.dsr.scales))
    fused = dsr.fuse_with_global(dist, compute_distance(q['embedding'], g['embedding'],
                                                        config.eval.metric))
    for row, d in (('dsr', dist), ('dsr + global', fused)):
      output.extra_rows[row] = evaluate_rank(
          d, query.pids, gallery.pids, query.camids, gallery.camids,
          max_rank=config.eval.max_rank).to_dict()
    return output

  return evaluate


def build_sampler(config: ml_collections.ConfigDict, split):
  """config.sampler's identity sampler over a split's labels."""
  from data_pipelines import samplers  # pylint: disable=g-import-not-at-top
  return samplers.build_sampler(config.sampler, split.labels, split.camids, config.batch_size,
                                config.seed, config.train.steps_per_epoch or None)


def forward_fn(model):
  """The training-mode forward pass of a Baseline-style model; labels reach the classifier for
  margin layers (ArcFace, CosFace, CircleSoftmax)."""

  def forward(params, batch_stats, batch, rng):
    outputs, mutated = model.apply({'params': params, 'batch_stats': batch_stats},
                                   batch['image'], train=True, labels=batch['label'],
                                   mutable=['batch_stats'], rngs={'dropout': rng})
    return outputs, mutated['batch_stats']

  return forward


def objective_fn(config: ml_collections.ConfigDict):
  """The weighted terms of config.loss; accuracy of the margin-free logits (as FastReID)."""

  def objective(outputs, batch, state: TrainState):
    terms = objectives.compute_losses(outputs, batch['label'], config.loss)
    logits = outputs.get('pred_class_logits', outputs['logits'])
    metrics = {**{f'loss_{k}': v for k, v in terms.items()},
               'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label'])}
    return objectives.total_loss(terms), metrics, state.extra

  return objective


def build(config: ml_collections.ConfigDict, data: Data, mesh: jax.sharding.Mesh,
          workdir: pathlib.Path) -> Method:
  del workdir
  inf = inference(config, data.num_classes)
  sampler = build_sampler(config, data.train)
  steps = sampler.batches_per_epoch
  tx, schedule = parts.optimizer(config, steps, parts.abstract_params(inf))
  state = parts.initial_state(inf, tx, config, mesh, load_weights=parts.pretrained_loader(config))
  m = config.model
  describe = (f'Backbone `{m.backbone.name}` (width {m.backbone.width}, last stride '
              f'{m.backbone.last_stride}), pooling `{m.pooling.name}`, head `{m.head.name}`, losses '
              f'{", ".join(config.loss.names)}; {config.train.epochs * steps} steps '
              f'({config.train.epochs} epochs x {steps}), batch {config.batch_size}, input '
              f'{config.input.height}x{config.input.width}{parts.describe_options(config)}'
              + (f'; DSR rows: ridge reconstruction (lam {config.dsr.lam}) of the feature maps\' '
                 f'blocks of sizes {tuple(config.dsr.scales)}, alone and with the embedding '
                 'distance' if config.dsr.enabled else '') + '.')
  return Method(
      name='supervised', inference=inf, state=state, tx=tx, schedule=schedule,
      forward=forward_fn(inf.model), objective=objective_fn(config), steps_per_epoch=steps,
      batches=lambda state, start, stop: parts.sampler_batches(config, data.train, sampler,
                                                               start, stop),
      evaluate=evaluation(inf, config, mesh, data),
      fingerprint=parts.fingerprint(config, data.num_classes), describe=describe)


# FastReID's model-zoo recipes (configs/bagtricks.py, agw.py, sbs.py, mgn.py): a variant
# `DATASET[,BACKBONE]` (or `dataset=...,backbone=...`) selects the zoo's data and backbone.

# FastReID model-zoo backbone names -> jreid backbone names.
FASTREID_BACKBONES = {
    'r50': 'resnet50',
    'r50_ibn': 'resnet50_ibn_a',  # FastReID WITH_IBN: IBN-a.
    's50': 'resnest50',
    'r101_ibn': 'resnet101_ibn_a',
}
FASTREID_DATASETS = ('market1501', 'dukemtmc', 'msmt17', 'veri')


def fastreid_variant(arg: str | None, where: str) -> ml_collections.ConfigDict:
  """`dataset` ('synthreid' or a zoo dataset) and `backbone` (a zoo name) of a recipe's variant
  (jreid.config_args syntax: `:market1501,r50_ibn` or `:dataset=market1501,backbone=r50_ibn`)."""
  from jreid import config_args  # pylint: disable=g-import-not-at-top
  shorthands = {d: {'dataset': d} for d in FASTREID_DATASETS}
  shorthands.update({b: {'backbone': b} for b in FASTREID_BACKBONES})
  return config_args.parse_arg(
      arg, where=where, shorthands=shorthands,
      choices={'dataset': ('synthreid',) + FASTREID_DATASETS,
               'backbone': tuple(FASTREID_BACKBONES)},
      dataset='synthreid', backbone='r50')


def set_fastreid_data(config: ml_collections.ConfigDict, dataset: str, backbone: str) -> None:
  """The dataset and backbone of a named variant (FastReID uses one recipe for every person set)."""
  config.dataset.name = dataset
  config.model.backbone.name = FASTREID_BACKBONES[backbone]
  if backbone != 's50':
    # FastReID's ResNet stem max-pool (unpadded, ceil mode; jreid.models.resnet.stem_max_pool):
    # the model zoo was trained with it, so its checkpoints need it to give FastReID's features.
    config.model.backbone.stem_pool = 'fastreid'
  if dataset == 'veri':
    # FastReID configs/VeRi: square vehicle crops.
    config.input.height, config.input.width = 256, 256
