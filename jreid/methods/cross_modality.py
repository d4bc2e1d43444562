"""RGB-infrared cross-modality re-ID: `config.method = 'cross_modality'`.

AGW's cross-modality baseline (Ye et al., "Deep Learning for Person Re-identification: A Survey
and Outlook") and the cross-modality graph-reasoning model ("Efficient Cross-modality Graph
Reasoning for RGB-Infrared Person Re-identification", IEEE SPL 2021) as parts of the shared loop:

* model: `two_stream` (`jreid.models.two_stream`): a modality-specific stem (+ layer1) per
  modality, shared ResNet stages with non-local blocks, optional graph reasoning, GeM, BNNeck;
  every image goes through its own modality's stream, so each batch carries a 'modality' array
  (0 visible, 1 infrared) derived on the host from the split's camera ids;
* sampler: `CrossModalitySampler`, P identities x (K_v visible + K_ir infrared) images;
* losses: the terms of `config.loss.names` (`jreid.objectives`), including 'wrt', the weighted
  regularisation triplet (`jreid.losses.wrt`): AGW = cross_entropy + wrt, graph
  reasoning = cross_entropy + 2 x hard triplet (margin 0.3);
* evaluation: `jreid.evaluation.cross_modality`. SYSU-MM01 layout ('sysu' protocol: the
  'sysu_mm01' and 'synthreid_ir' datasets): infrared queries against visible galleries sampled
  per trial (`config.cross_modality.num_trials`, seeds 0..n-1), for each search mode and number of
  shots configured; the first (mode, shots) pair gives the headline `rank1/rank10/rank20/mAP/
  mINP`, the others are prefixed (`indoor_single_rank1`, `all_multi10_mAP`, ...). RegDB ('regdb'
  protocol): the split's query modality to the other one (headline) and the reverse direction
  (prefixed with its name). Both protocols also report the reverse direction on the full test sets
  (`visible_to_infrared_*` for SYSU); the report shows the rank lists of both directions
  (`rank_lists.png`, `rank_lists_reverse.png`).

Sections owned: `model` (two-stream), `loss`, `cross_modality` (its sampler's P, K_v, K_ir and the
protocol).
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any

from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jreid import evaluator
from jreid import losses
from jreid import models
from jreid import objectives
from jreid import parts
from jreid.evaluation import cross_modality as cm_eval
from jreid.method import Data, Inference, Method, TrainState

PROTOCOLS = ('sysu', 'regdb')
# Datasets each protocol evaluates. The synthetic infrared variant has the SYSU-MM01 layout;
# the 'regdb' protocol on it (full test sets, standard CMC, both directions) stands in for RegDB,
# which has no synthetic counterpart.
PROTOCOL_DATASETS = {'sysu': ('sysu_mm01', 'synthreid_ir'), 'regdb': ('regdb', 'synthreid_ir')}


def default_config() -> ml_collections.ConfigDict:
  """The sections this method owns (AGW's SYSU-MM01 recipe; `recipe_config` fills the rest)."""
  from jreid.models.two_stream import default_two_stream_config  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.method = 'cross_modality'
  c.model = models.default_model_config()
  c.model.name = 'two_stream'
  c.model.two_stream = default_two_stream_config()
  c.loss = objectives.loss_config(('cross_entropy', 'wrt'), 'triplet',
                                  cross_entropy={'epsilon': 0.0, 'variant': 'bot'})
  m = c.cross_modality = ml_collections.ConfigDict()
  m.protocol = 'sysu'  # 'sysu' (SYSU-MM01 layout) | 'regdb'.
  m.num_ids = 8  # P identities per batch.
  m.num_visible = 4  # K_v visible images per identity.
  m.num_infrared = 4  # K_ir infrared images per identity.
  m.num_trials = 10  # SYSU gallery draws (seeds 0..num_trials-1).
  m.search_modes = ('all', 'indoor')  # SYSU: the first (mode, shots) pair is the headline.
  m.shots = (1, 10)  # SYSU: single-shot and multi-shot (10 per identity and camera).
  return c


def check_config(config: ml_collections.ConfigDict) -> None:
  """The protocol, its dataset and the model, checked before the data is loaded."""
  cm = config.cross_modality
  if cm.protocol not in PROTOCOLS:
    raise ValueError(f'config.cross_modality.protocol must be one of {PROTOCOLS}, got '
                     f'{cm.protocol!r}.')
  if config.dataset.name not in PROTOCOL_DATASETS[cm.protocol]:
    raise ValueError(
        f'config.cross_modality.protocol={cm.protocol!r} evaluates the datasets '
        f'{PROTOCOL_DATASETS[cm.protocol]}, but config.dataset.name is '
        f'{config.dataset.name!r}; set the protocol that matches the dataset.')
  if config.model.name != 'two_stream':
    raise ValueError(f"config.method='cross_modality' needs config.model.name='two_stream', "
                     f'got {config.model.name!r}.')
  if cm.protocol == 'sysu':
    bad = [m for m in cm.search_modes if m not in ('all', 'indoor')]
    if bad or not cm.search_modes or not cm.shots or min(cm.shots) < 1:
      raise ValueError("config.cross_modality.search_modes must be a non-empty subset of "
                       "('all', 'indoor') and shots a non-empty tuple of numbers >= 1, got "
                       f'{cm.search_modes} and {cm.shots}.')
    if cm.num_trials < 1:
      raise ValueError(f'config.cross_modality.num_trials must be >= 1, got {cm.num_trials}.')
  per_batch = cm.num_ids * (cm.num_visible + cm.num_infrared)
  if per_batch != config.batch_size:
    raise ValueError(
        f'config.batch_size={config.batch_size} but the cross-modality sampler makes batches '
        f'of num_ids x (num_visible + num_infrared) = {cm.num_ids} x ({cm.num_visible} + '
        f'{cm.num_infrared}) = {per_batch}; set config.batch_size to that.')


def is_infrared(dataset: str, split) -> np.ndarray:
  """Bool [N]: the infrared (thermal) images of a split (RegDB: camid 1; SYSU layout: camids
  2 and 5)."""
  from data_pipelines import regdb  # pylint: disable=g-import-not-at-top
  from data_pipelines import sysu_mm01  # pylint: disable=g-import-not-at-top
  if dataset == 'regdb':
    return regdb.is_infrared(split)
  return sysu_mm01.is_infrared(split)


def inference(config: ml_collections.ConfigDict, num_classes: int) -> Inference:
  """The two-stream model; every image goes through its modality's stream (`modality`: 0
  visible, 1 infrared, from the split's cameras)."""
  model = models.build_model(config.model, num_classes)
  images = jnp.zeros((2, config.input.height, config.input.width, 3), jnp.uint8)
  modality = jnp.array([0, 1], jnp.int32)
  dataset = config.dataset.name

  def init(rng):
    return model.init(rng, images, modality, train=False)

  def embed_fn(variables, images, modality):
    return model.apply(variables, images, modality, train=False)['embedding']

  def per_image(split):
    return {'modality': is_infrared(dataset, split).astype(np.int32)}

  return Inference(model=model, init=init, embed=embed_fn, per_image=per_image)


def build(config: ml_collections.ConfigDict, data: Data, mesh: jax.sharding.Mesh,
          workdir: pathlib.Path) -> Method:
  from data_pipelines import cross_modality_sampler  # pylint: disable=g-import-not-at-top
  from data_pipelines import sysu_mm01  # pylint: disable=g-import-not-at-top
  from data_pipelines.types import DatasetError  # pylint: disable=g-import-not-at-top
  cm = config.cross_modality
  inf = inference(config, data.num_classes)
  model = inf.model
  train_split = data.train
  infrared = is_infrared(config.dataset.name, train_split)
  if infrared.all() or not infrared.any():
    raise DatasetError(f'dataset {config.dataset.name!r}: the train split holds only '
                       f'{"infrared" if infrared.all() else "visible"} images; cross-modality '
                       'training needs both.')
  sampler = cross_modality_sampler.CrossModalitySampler(
      train_split.labels, infrared, num_ids=cm.num_ids, num_visible=cm.num_visible,
      num_infrared=cm.num_infrared, seed=config.seed,
      batches_per_epoch=config.train.steps_per_epoch or None)
  steps = sampler.batches_per_epoch
  tx, schedule = parts.optimizer(config, steps, parts.abstract_params(inf))
  state = parts.initial_state(inf, tx, config, mesh, load_weights=_load_weights(config))
  features_of = parts.embedder(inf, mesh, flip=bool(config.eval.flip))
  modality = infrared.astype(np.int32)

  def batches(state, start, stop):
    for batch in parts.sampler_batches(config, train_split, sampler, start, stop):
      batch['modality'] = modality[batch['index']]
      yield batch

  def forward(params, batch_stats, batch, rng):
    del rng
    outputs, mutated = model.apply({'params': params, 'batch_stats': batch_stats},
                                   batch['image'], batch['modality'], train=True,
                                   mutable=['batch_stats'])
    return outputs, mutated['batch_stats']

  def objective(outputs, batch, state: TrainState):
    terms = objectives.compute_losses(outputs, batch['label'], config.loss)
    metrics = {**{f'loss_{k}': v for k, v in terms.items()},
               'accuracy': jnp.mean(jnp.argmax(outputs['logits'], -1) == batch['label']),
               'wrt_accuracy': losses.wrt_accuracy(outputs['features'], batch['label'])}
    return objectives.total_loss(terms), metrics, state.extra

  def reverse_name() -> str:
    if cm.protocol == 'sysu':
      return 'visible_to_infrared'
    query_ir = bool(is_infrared(config.dataset.name, data.splits['query']).all())
    return 'visible_to_thermal' if query_ir else 'thermal_to_visible'

  def evaluate(state: TrainState, splits=None, post: bool = True) -> evaluator.EvalOutput:
    """The protocol's metrics on `splits` (default: this dataset's); this method has no
    post-processed rows, so `post` changes nothing."""
    del post
    splits = splits or data.splits
    query, gallery = splits['query'], splits['gallery']
    qf = features_of(state.params, state.batch_stats, query, config.input,
                     config.eval.batch_size)
    gf = features_of(state.params, state.batch_stats, gallery, config.input,
                     config.eval.batch_size)
    metric, max_rank = config.eval.metric, config.eval.max_rank
    metrics: dict[str, Any] = {}
    if cm.protocol == 'sysu':
      headline = None
      for mode in cm.search_modes:
        for shots in cm.shots:
          galleries = [sysu_mm01.sample_gallery(gallery, trial, mode, int(shots))
                       for trial in range(cm.num_trials)]
          trials = cm_eval.evaluate_sysu(qf, gf, query.pids, gallery.pids, query.camids,
                                         gallery.camids, galleries, metric, max_rank)
          kind = 'single' if shots == 1 else f'multi{shots}'
          prefix = '' if headline is None else f'{mode}_{kind}_'
          metrics.update({prefix + k: v for k, v in trials.metrics().items()})
          if headline is None:
            headline = trials.mean_result()
      result = headline
    else:
      result = cm_eval.evaluate_regdb(qf, gf, query.pids, gallery.pids, query.camids,
                                      gallery.camids, metric, max_rank)
      metrics.update(cm_eval.rank_dict(result))
    # The reverse direction on the full test sets (Market-style ranking).
    reverse = cm_eval.evaluate_regdb(gf, qf, gallery.pids, query.pids, gallery.camids,
                                     query.camids, metric, max_rank)
    metrics.update({f'{reverse_name()}_{k}': v for k, v in cm_eval.rank_dict(reverse).items()})
    return evaluator.EvalOutput(metrics, result, qf, gf, metric=metric, query=query,
                                gallery=gallery)

  def direction_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(row label, metrics key prefix) of every evaluated setting, headline first."""
    reverse = reverse_name()
    forward_name = ('infrared_to_visible' if cm.protocol == 'sysu' else
                    '_to_'.join(reversed(reverse.split('_to_'))))
    rows = []
    if cm.protocol == 'sysu':
      for i, (mode, shots) in enumerate((m, s) for m in cm.search_modes for s in cm.shots):
        kind = 'single-shot' if shots == 1 else f'multi-shot ({shots})'
        prefix = '' if i == 0 else f'{mode}_{"single" if shots == 1 else f"multi{shots}"}_'
        rows.append((f'{forward_name.replace("_", " ")}, {mode}-search {kind}', prefix))
    else:
      rows.append((forward_name.replace('_', ' '), ''))
    rows.append((f'{reverse.replace("_", " ")} (full test sets)', f'{reverse}_'))
    return [(label, prefix) for label, prefix in rows if f'{prefix}mAP' in metrics]

  def report_sections(state: TrainState, output: evaluator.EvalOutput, out_dir: pathlib.Path):
    """Both directions' metrics in one table, and the rank lists of the other direction
    (gallery modality to query modality; the query direction's are the report's own)."""
    from jreid import report  # pylint: disable=g-import-not-at-top
    del state
    metrics = output.metrics
    ranks = (1, 10, 20)
    lines = ['| direction | ' + ' | '.join(f'Rank-{k}' for k in ranks) + ' | mAP | mINP |',
             '|:--|' + '--:|' * (len(ranks) + 2)]
    for label, prefix in direction_rows(metrics):
      cells = [metrics.get(f'{prefix}rank{k}') for k in ranks]
      cells += [metrics[f'{prefix}mAP'], metrics[f'{prefix}mINP']]
      lines.append(f'| {label} | ' + ' | '.join(
          '-' if v is None else f'{100 * v:.2f}' for v in cells) + ' |')
    sections = [('Both directions', 'Rank-k (CMC), mAP and mINP in percent of each evaluated '
                 'direction and setting.\n\n' + '\n'.join(lines), None)]
    reverse = evaluator.EvalOutput({}, output.result, output.gallery_features,
                                   output.query_features, metric=output.metric)
    report.plot_rank_lists(output.gallery, output.query, reverse.query_distances,
                           out_dir / 'rank_lists_reverse.png',
                           num_queries=config.eval.rank_list_queries)
    name = reverse_name().replace('_', ' ')
    return sections + [(
        f'Rank lists, {name}', f'Each row: a {name.split()[0]} query (the test gallery images) '
        'and its top-10 matches among the other modality\'s test images (the query set); '
        'green: same identity, red: different.', 'rank_lists_reverse.png')]

  ts = config.model.two_stream
  graph = ts.graph
  on = [k for k in ('local_to_local', 'global_to_local', 'local_to_global',
                    'modality_similarity') if graph[k]]
  bb = config.model.backbone
  protocol = (f'SYSU-MM01 protocol, {cm.num_trials} trials, modes {tuple(cm.search_modes)}, '
              f'shots {tuple(cm.shots)}; headline = first mode single-shot, CMC over the '
              'identity ranking as the reference (image-ranking CMC as image_rank*)'
              if cm.protocol == 'sysu' else 'RegDB protocol (standard CMC), both directions')
  describe = (
      f'Two-stream `{bb.name}` (width {bb.width}, last stride {bb.last_stride}), '
      f'{"stem + layer1" if ts.specific_stages else "stem"} '
      f'{"shared by both modalities (one stream)" if ts.single_stream else "per modality"}, '
      f'non-local {"on" if bb.with_nl else "off"} (inter channels '
      f'{bb.nl_inter_channels or "C/2"}), graph reasoning: {", ".join(on) or "off"}; pooling '
      f'`{config.model.pooling.name}`, head `{config.model.head.name}`; losses '
      f'{", ".join(config.loss.names)}; sampler {cm.num_ids} ids x ({cm.num_visible} visible + '
      f'{cm.num_infrared} infrared), {config.train.epochs * steps} steps ({config.train.epochs} '
      f'epochs x {steps}), input {config.input.height}x{config.input.width}'
      f'{parts.describe_options(config)}. {protocol}. Rank lists: `rank_lists.png` (query '
      'modality to gallery), `rank_lists_reverse.png` (the other direction).')
  return Method(
      name='cross_modality', inference=inf, state=state, tx=tx, schedule=schedule,
      forward=forward, objective=objective, steps_per_epoch=steps, batches=batches,
      evaluate=evaluate, fingerprint=parts.fingerprint(config, data.num_classes),
      describe=describe, report_sections=report_sections)


def _load_weights(config: ml_collections.ConfigDict):
  """ImageNet weights of a ResNet into both streams (`load_pretrained_two_stream`); with
  config.model.pretrained_scope='all', a released AGW model (`jreid.weights_agw`) for the whole
  model; None without config.model.pretrained."""
  path = config.model.get('pretrained', '')
  if not path:
    return None

  def load(variables):
    if config.model.get('pretrained_scope', 'backbone') == 'all':
      from jreid import weights  # pylint: disable=g-import-not-at-top
      return weights.load_pretrained(variables, path, config.model, scope='all', log=parts.log)
    variables, left_out = load_pretrained_two_stream(variables, path, config.model)
    parts.log(f'pretrained weights from {path}; left as initialised: {", ".join(left_out)}')
    return variables

  return load


# Backbone modules that an ImageNet ResNet has no weights for: they keep their initial values
# (non-local blocks start as the identity, as do the graph-reasoning modules, whose gammas are 0).
_NEW_BACKBONE_MODULES = re.compile(r'^(NL_\d+_\d+|graph)$')


def load_pretrained_two_stream(variables: dict[str, Any], path: str | os.PathLike[str],
                               model_cfg: Any = None) -> tuple[dict[str, Any], list[str]]:
  """The two-stream model's `variables` with an ImageNet ResNet state dict (torchvision, timm or
  IBN-Net naming, e.g. torchvision's resnet50-0676ba61.pth) in its backbone.

  The file's stem (`conv1`, `bn1`, and `layer1` when it is modality-specific) is copied into both
  the visible and the infrared stream (the one shared front of a single-stream model); the shared
  stages load as named. The non-local blocks, the graph-reasoning modules, the pooling (GeM), the
  BNNeck and the classifier are not in an ImageNet file and stay as initialised; they are returned
  by name. Everything else is strict (`jreid.weights.merge`): a model weight the file lacks, a file
  weight without a place in the model or a shape mismatch is a `WeightConversionError` naming them.

  Returns:
    (new variables as numpy arrays, names of the modules left as initialised).
  """
  from jreid import weights  # pylint: disable=g-import-not-at-top
  state_dict = weights.load_torch_state_dict(path)
  source = f'weight file {path}'
  if model_cfg is not None:
    source += f' (config.model.backbone.name={model_cfg["backbone"]["name"]!r})'
  if weights.is_fastreid(state_dict):
    raise weights.WeightConversionError(
        f'{source} is a FastReID checkpoint; the two-stream model takes a plain ImageNet ResNet '
        'state dict (torchvision, timm or IBN-Net) in config.model.pretrained.')
  if weights.find_converter(state_dict).name == 'agw':
    raise weights.WeightConversionError(
        f'{source} is a whole AGW cross-modality model: load it with '
        "--config.model.pretrained_scope=all (the default 'backbone' takes ImageNet weights).")
  flat = traverse_util.flatten_dict(jax.device_get(variables))
  backbone = {p for p in flat if p[1:2] == ('backbone',)}
  fronts = sorted({p[2] for p in backbone if p[2] in ('visible', 'infrared', 'shared')})
  streams = {p[3] for p in backbone if p[2] == fronts[0]}  # conv1, bn1 (+ layer1_*)
  converted = {}
  for p, value in weights.convert_resnet(state_dict, ('backbone',)).items():
    if p[2] in streams:
      for stream in fronts:
        converted[(p[0], p[1], stream, *p[2:])] = value
    else:
      converted[p] = value
  kept = sorted({p[2] for p in backbone if _NEW_BACKBONE_MODULES.match(p[2])})
  for p in backbone:
    if p[2] in kept:
      converted[p] = flat[p]
  merged = weights.merge(variables, converted, ('backbone',), source)
  others = sorted({p[1] for p in flat if p[1] != 'backbone'})
  return merged, [f'backbone/{k}' for k in kept] + others


MODELS = ('agw', 'cmgr')
VARIANTS = ('synthreid', 'paper')


def recipe_config(model: str, protocol: str, variant: str | None) -> ml_collections.ConfigDict:
  """The config of `configs/{model}_{protocol}.py:variant` (those files document the commands);
  the variant is `recipe=synthreid|paper`, or `:paper` for short (`jreid.config_args`).

  'paper': AGW's recipe (two-stream ResNet-50, last stride 1, non-local blocks, GeM p=3, BNNeck,
  SGD Nesterov momentum 0.9, weight decay 5e-4, lr 0.1 for the BNNeck and classifier and 0.01 for
  the rest, linear warmup over 10 epochs from 0.01, x0.1 at epoch 20, x0.01 at 50, 81 epochs,
  288x144 input, pad 10 + crop + flip, batch 8 ids x (4 visible + 4 infrared)); CE + WRT for AGW,
  CE + 2 x hard triplet (margin 0.3) and stem + layer1 per modality with the graph reasoning
  modules for 'cmgr'. The warmup is per epoch as the reference's (lr x (epoch + 1) / 10 in epoch
  0..9: `optim.warmup_per_epoch`). The backbone starts from ImageNet weights given as
  `--config.model.pretrained=/path/to/resnet50-0676ba61.pth` (torchvision's ResNet-50; see
  `load_pretrained_two_stream`); without it, from random initialisation. 'synthreid': the same
  model and losses on SynthReID-IR, shrunk to a ResNet-18 of width 16 at 96x48 with per-image
  input standardisation, Adam 1e-3, 16 epochs (AGW; 8 for the heavier CMGR) with a per-step
  warmup, from random initialisation, to run on a 2-core CPU.
  """
  # pylint: disable=g-import-not-at-top
  from jreid import config_args
  from jreid.config_defaults import method_config
  # pylint: enable=g-import-not-at-top
  if model not in MODELS or protocol not in PROTOCOLS:
    raise ValueError(f'recipe_config: model must be one of {MODELS} and protocol one of '
                     f'{PROTOCOLS}, got {model!r}, {protocol!r}.')
  arg = config_args.parse_arg(variant, where=f'configs/{model}_{protocol}.py',
                              shorthands={v: {'recipe': v} for v in VARIANTS},
                              choices={'recipe': VARIANTS}, recipe='synthreid')
  variant = arg.recipe
  config = method_config('cross_modality')
  config.cross_modality.protocol = protocol
  if protocol == 'regdb':
    config.cross_modality.search_modes = ('all',)
    config.cross_modality.shots = (1,)

  m = config.model
  m.name = 'two_stream'
  m.backbone.name = 'resnet50'
  m.backbone.width = 64
  m.backbone.last_stride = 1
  m.backbone.with_nl = True
  m.backbone.nl_layers = (0, 2, 3, 0)  # After blocks 2, 3 of layer2 and 3, 4, 5 of layer3.
  m.backbone.nl_inter_channels = 0  # C // 2 as intended; 1 reproduces the reference's bug.
  m.pooling.name = 'gem'
  m.pooling.gem_p = 3.0
  m.head.name = 'bnneck'
  m.head.neck_feat = 'before'  # The metric loss sees the pooled feature (AGW's x_pool).

  # Plain mean cross-entropy (torch's CrossEntropyLoss): default_config's cross_entropy section.
  if model == 'agw':
    config.loss.names = ('cross_entropy', 'wrt')
  else:
    config.loss.names = ('cross_entropy', 'triplet')
    config.loss.triplet.weight = 2.0
    config.loss.triplet.margin = 0.3
    config.loss.triplet.hard_mining = True
    config.loss.triplet.norm_feat = False
    m.two_stream.specific_stages = 1
    for switch in ('local_to_local', 'global_to_local', 'local_to_global', 'modality_similarity'):
      m.two_stream.graph[switch] = True

  config.optim.name = 'sgd'
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.lr = 0.1
  config.optim.lr_factors = (('^backbone/', 0.1),)  # Head (BNNeck, classifier) at 0.1, rest 0.01.
  config.optim.weight_decay = config.optim.weight_decay_norm = 5e-4
  config.optim.weight_decay_bias = 5e-4
  config.optim.schedule = 'multistep'
  config.optim.milestones = (20, 50)
  config.optim.gamma = 0.1
  config.optim.warmup_epochs = 10
  config.optim.warmup_factor = 0.1
  config.optim.warmup_method = 'linear'
  config.optim.warmup_per_epoch = True  # lr x (epoch + 1) / 10, constant within an epoch.
  config.train.epochs = 81
  config.input.height, config.input.width = 288, 144
  config.augment.pad = 10
  config.augment.flip_prob = 0.5
  config.augment.random_erasing_prob = 0.0
  config.batch_size = 64  # 8 ids x (4 visible + 4 infrared).
  config.eval.metric = 'cosine'
  config.eval.max_rank = 20
  config.eval.histogram_baseline = False  # Colour histograms mean little across modalities.
  config.dataset.name = 'sysu_mm01' if protocol == 'sysu' else 'regdb'

  if variant == 'synthreid':
    config.dataset.name = 'synthreid_ir'
    m.backbone.name = 'resnet18'
    m.backbone.width = 16
    m.backbone.nl_layers = (0, 2, 2, 0)
    config.input.height, config.input.width = 96, 48
    config.augment.pad = 4
    config.optim.name = 'adam'
    config.optim.lr = 1e-3
    config.optim.lr_factors = ()
    config.optim.warmup_epochs = 1
    config.optim.warmup_per_epoch = False
    # Each image standardised by its own channel statistics (grey-world): cancels the visible
    # cameras' gain and colour cast and the thermal cameras' level offsets.
    m.input_norm = 'per_image'
    config.optim.milestones = (12,) if model == 'agw' else (6,)
    config.train.epochs = 16 if model == 'agw' else 8
    config.train.log_every_steps = 10
  else:  # The paper's ResNet-50 numbers beside ours (jreid.published.CROSS_MODALITY).
    config.eval.published = f'{model},r50'
  return config
