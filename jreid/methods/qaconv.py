"""QAConv-GS (QAConv 2.1) training and evaluation: `config.method = 'qaconv'`.

Liao & Shao, ECCV 2020 (QAConv, TLift) and CVPR 2022 (graph sampling). The parts:

* model: `QAConvNet` (ResNet trunk to layer3, 3x3 neck, channel L2 normalisation; every
  BatchNorm of the network frozen) and `QAConvMatcher` (the learnable head); parameters
  `{'net': ..., 'matcher': ...}`;
* sampler: `GraphSampler`, rebuilt at the start of every epoch from the current model (one random
  image per class, all-pairs QAConv distances between them, each class with its k nearest
  classes forms a batch); the first `qaconv.gs_pre_epochs` epochs use random class neighbours
  (the reference's random P x K start);
* loss: `config.loss` terms on the matcher's batch logits: 'qaconv_triplet' (QAConv 2.1 hard
  triplet, margin 16) or 'qaconv_pairwise' (QAConv 2.0 pairwise matching BCE); or QAConv 1.x's
  'qaconv_class_memory': the matcher's logits of every image of the batch against a memory of
  one feature map per training class (focal-weighted BCE against the one-hot label), the batch's
  maps then written into their classes' slots (no gradient reaches the memory);
* optimiser: SGD Nesterov, lr x0.1 on the backbone (`optim.lr_factors`), weight decay, gradient
  clipping (all from `config.optim`);
* adaptive schedule: after every epoch e (1-based) with mean loss L_e, once L_e < `decay_ratio` x
  L_2 (the second epoch's loss), the learning rate is multiplied by 0.1 and the run ends after
  epoch min(`train.epochs`, e + e // 2); `decay_ratio = 0` turns it off (QAConv 1.x: the step
  schedule of `config.optim` alone);
* QAConv 1.x sampling (`qaconv.sampler = 'random'`): every epoch a shuffle of all training
  images in batches of `batch_size` (the last partial batch dropped), as the 1.x reference's
  shuffled loader;
* evaluation: feature maps of query and gallery (flip-averaged with `eval.flip`), all-pairs
  QAConv logits block by block, distance = -logit, the ROC with `eval.roc`; with `eval.rerank`
  the reference's QAConv-score k-reciprocal re-ranking (`eval.rerank_k1/k2/lambda`), and with
  `qaconv.tlift` TLift on top of it (rows 'rerank' and 'rerank + TLift').

The schedule state, the running epoch loss and the sampler's state are the typed `QAConvState`,
so a run killed anywhere resumes exactly (the epoch's batches are restored, not rebuilt). The class
memory is a buffer the matcher reads in the forward pass and the train step rewrites, like a
BatchNorm running statistic, so it lives beside them: `batch_stats['class_memory']` = {'memory'
[C, h*w, c], 'valid' [C]} (the reference registers it as a buffer of its loss module). Only runs
with the class-memory loss have it, so the checkpoints of every other run keep their layout.

Sections owned: `model` (QAConv's), `loss`, `sampler` (K only: the batches are graph-sampled),
`qaconv`.
"""

from __future__ import annotations

import pathlib
import sys

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jreid import evaluator
from jreid import losses
from jreid.losses import qaconv as qaconv_losses
from jreid import models
from jreid import objectives
from jreid import parallel
from jreid import parts
from jreid.evaluation import qaconv_rerank
from jreid.evaluation import tlift as tlift_lib
from jreid.method import Data, Inference, Method, TrainState
from jreid.models import qaconv as qaconv_lib


def default_config() -> ml_collections.ConfigDict:
  """The sections this method owns (the QAConv 2.1 reference's values)."""
  c = ml_collections.ConfigDict()
  c.method = 'qaconv'
  c.model = qaconv_lib.qaconv_model_config()
  c.loss = objectives.loss_config(('qaconv_triplet',), 'qaconv_pairwise', 'qaconv_class_memory')
  c.sampler = ml_collections.ConfigDict({'num_instances': 2})  # K images per graph-sampled class.
  q = c.qaconv = ml_collections.ConfigDict()
  q.sampler = 'graph'  # 'graph' (QAConv 2.x) | 'random' (QAConv 1.x: shuffled images).
  q.gs_pre_epochs = 1  # Epochs of random class neighbours before graph sampling starts.
  # Adaptive schedule: decay once the epoch loss < ratio x epoch 2's loss; 0 = off.
  q.decay_ratio = 0.7
  q.decay_factor = 0.1
  q.score_dtype = 'float32'  # Evaluation matmul: 'float32' | 'bfloat16'.
  q.query_block = 128  # Evaluation blocks of maps scored at once.
  q.gallery_block = 128
  q.tlift = True  # Also report re-ranking + TLift (needs image times).
  q.time_model = 'frame'  # 'frame' (one clock, frame / 25 s: SynthReID) | 'market1501'.
  q.tau = 100.0  # TLift parameters (reference defaults).
  q.sigma = 200.0
  q.K = 10
  q.alpha = 0.2
  # Distance the re-ranking works on: 'sigmoid' = 1 - sigmoid(logit / 10) (ECCV 2020 reference;
  # bounded) or 'negative' = -logit (QAConv 2.x reference; ill-defined for some logit scales).
  q.rerank_distance = 'sigmoid'
  return c


def check_config(config: ml_collections.ConfigDict) -> None:
  """Evaluation options that mean nothing for pairwise scores are refused, not ignored."""
  if config.eval.aqe:
    raise ValueError('config.eval.aqe=True is not supported by QAConv: its test features are '
                     'feature maps compared by the matcher, with no embedding to expand; set it '
                     'to False (re-ranking: config.eval.rerank).')
  if config.eval.metric != 'cosine':
    raise ValueError(f'config.eval.metric={config.eval.metric!r} is not read by QAConv (it ranks '
                     'by the matcher\'s scores); leave it at its default.')
  if config.qaconv.tlift and not config.eval.rerank:
    raise ValueError('config.qaconv.tlift=True lifts the re-ranked distances (as the reference): '
                     'set config.eval.rerank=True too, or qaconv.tlift=False.')
  if config.train.steps_per_epoch:
    raise ValueError(f'config.train.steps_per_epoch={config.train.steps_per_epoch} is not read by '
                     'QAConv: its graph sampler makes one batch per training class each epoch; '
                     'leave it at 0.')
  if config.qaconv.score_dtype not in ('float32', 'bfloat16'):
    raise ValueError(f"config.qaconv.score_dtype must be 'float32' or 'bfloat16', got "
                     f'{config.qaconv.score_dtype!r}.')
  if config.qaconv.sampler not in SAMPLERS:
    raise ValueError(f'config.qaconv.sampler must be one of {SAMPLERS}, got '
                     f'{config.qaconv.sampler!r}.')


SAMPLERS = ('graph', 'random')


@objectives.register('qaconv_class_memory')
def _qaconv_class_memory(inputs, labels, cfg):
  """QAConv 1.x class-memory loss on the batch's logits against the class memory."""
  del cfg  # Only its weight, applied by compute_losses.
  return losses.class_memory_loss(inputs['memory_scores'], labels, inputs['memory_valid'])


def uses_class_memory(config: ml_collections.ConfigDict) -> bool:
  return 'qaconv_class_memory' in config.loss.names


class ShuffleSampler:
  """QAConv 1.x sampling: each epoch a permutation of every training image, cut into batches of
  `batch_size` (a last partial batch is dropped, as the reference's `drop_last=True` loader).

  Epoch e is a pure function of (seed, e), so a run resumed at any step sees the same batches.
  """

  def __init__(self, num_samples: int, batch_size: int, seed: int):
    if num_samples < batch_size:
      raise ValueError(f'the training split has {num_samples} images, fewer than one batch of '
                       f'config.batch_size={batch_size}; lower config.batch_size.')
    self.num_samples = int(num_samples)
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.batches_per_epoch = self.num_samples // self.batch_size

  def epoch(self, epoch: int) -> np.ndarray:
    """Image indices of every batch of `epoch`, int32 [batches_per_epoch, batch_size]."""
    order = np.random.default_rng([self.seed, 4, int(epoch)]).permutation(self.num_samples)
    n = self.batches_per_epoch * self.batch_size
    return order[:n].reshape(self.batches_per_epoch, self.batch_size).astype(np.int32)

  def steps(self, start: int, stop: int) -> np.ndarray:
    """Image indices of global steps start..stop-1, int32 [stop - start, batch_size]."""
    n = self.batches_per_epoch
    rows = [self.epoch(e)[max(start, e * n) - e * n:min(stop, (e + 1) * n) - e * n]
            for e in range(start // n, -(-stop // n))]
    return (np.concatenate(rows) if rows else np.zeros((0, self.batch_size), np.int32))


@flax.struct.dataclass
class QAConvState:
  """The adaptive schedule, the epoch's loss and the graph sampler's state (checkpointed)."""
  lr_scale: jax.Array  # 1, or decay_factor once the schedule decided.
  end_epoch: jax.Array  # 0 until the adaptive schedule decides it.
  base_loss: jax.Array  # Mean loss of epoch 2 (NaN before).
  loss_sum: jax.Array  # Of the running epoch.
  loss_count: jax.Array
  gs_epoch: jax.Array  # The epoch the sampler's batches are of (-1: none built).
  gs_positions: jax.Array  # [C] images each class handed out so far.
  gs_batches: jax.Array  # [C, B] the epoch's batches.


def _images(config: ml_collections.ConfigDict) -> jax.Array:
  return jnp.zeros((1, config.input.height, config.input.width, 3), jnp.uint8)


def _score_dtype(config: ml_collections.ConfigDict):
  return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[config.qaconv.score_dtype]


class ScoringProgress:
  """Pairs/s and time left of a long all-pairs scoring on stderr (process 0 only).

  On a terminal from `tty_from` pairs, in logs (a line every 30 s) from `log_from` pairs: the
  scoring of a public test set (MSMT17: about 10^9 pairs) shows it, the graph sampler's small
  sets do not.
  """

  def __init__(self, total: int, tty_from: int = 10**7, log_from: int = 10**8):
    self._bar = None
    self._done = 0
    tty = sys.stderr.isatty()
    if jax.process_index() == 0 and total >= (tty_from if tty else log_from):
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total, desc='QAConv scores', unit='pair', unit_scale=True,
                       dynamic_ncols=True, leave=False, mininterval=0.5 if tty else 30.0,
                       smoothing=0.1)

  def update(self, done: int, total: int) -> None:
    """`pairwise_scores`' progress callback: `done` of `total` pairs scored."""
    del total
    if self._bar is not None:
      self._bar.update(done - self._done)
    self._done = done

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def networks(config: ml_collections.ConfigDict, num_classes: int):
  """The feature-map network and the matcher over its h x w locations."""
  net = models.build_model(config.model, num_classes)
  images = _images(config)
  shapes = jax.eval_shape(lambda: net.apply(net.init(jax.random.key(0), images), images))
  _, h, w, _ = shapes['feature_map'].shape
  return net, qaconv_lib.QAConvMatcher(hw=h * w)


def inference(config: ml_collections.ConfigDict, num_classes: int) -> Inference:
  """The feature-map network and the matcher; `score` gives all-pairs QAConv logits."""
  net, matcher = networks(config, num_classes)
  images = _images(config)
  cfg = config.qaconv

  def init(rng):
    net_vars = net.init(rng, images, train=False)
    maps = net.apply(net_vars, images)['feature_map']
    matcher_vars = matcher.init(rng, maps, maps, train=False)
    return {'params': {'net': net_vars['params'], 'matcher': matcher_vars['params']},
            'batch_stats': {'net': net_vars.get('batch_stats', {}),
                            'matcher': matcher_vars['batch_stats']}}

  def embed_fn(variables, images):
    return net.apply(variables, images, train=False)['feature_map']

  def score(variables, query_maps, gallery_maps):
    bar = ScoringProgress(len(query_maps) * len(gallery_maps))
    try:
      return qaconv_lib.pairwise_scores(variables, query_maps, gallery_maps,
                                        query_block=cfg.query_block,
                                        gallery_block=cfg.gallery_block,
                                        dtype=_score_dtype(config), progress=bar.update)
    finally:
      bar.close()

  return Inference(
      model=net, init=init, embed=embed_fn,
      variables=lambda params, stats: {'params': params['net'], 'batch_stats': stats['net']},
      score=score,
      score_variables=lambda params, stats: {'params': params['matcher'],
                                             'batch_stats': stats['matcher']},
      normalize=False)


def map_shape(config: ml_collections.ConfigDict, num_classes: int) -> tuple[int, int]:
  """(h * w, channels) of the network's feature maps."""
  net = models.build_model(config.model, num_classes)
  images = _images(config)
  shapes = jax.eval_shape(lambda: net.apply(net.init(jax.random.key(0), images), images))
  _, h, w, c = shapes['feature_map'].shape
  return h * w, c


def class_memory_scores(matcher, matcher_variables, maps: jax.Array, memory: jax.Array,
                        valid: jax.Array):
  """The class-memory loss inputs of a batch and the matcher's updated BatchNorm statistics.

  `maps` [B, h, w, c] are the queries, `memory` [C, h*w, c] the gallery (no gradient); returns
  ({'memory_scores' [B, C], 'memory_valid' [C]}, matcher batch_stats).
  """
  scores, updates = matcher.apply(matcher_variables, maps, jax.lax.stop_gradient(memory),
                                  train=True, mutable=['batch_stats'])
  return {'memory_scores': scores, 'memory_valid': valid}, updates['batch_stats']


def _load_trunk(config: ml_collections.ConfigDict):
  """ImageNet weights of a ResNet (torchvision / IBN-Net state dict) for the layer3 trunk; with
  config.model.pretrained_scope='all', a released QAConv checkpoint (network and matcher,
  `jreid.weights_qaconv`) for the whole model."""
  path = config.model.get('pretrained', '')
  if not path:
    return None

  def load(variables):
    from jreid import weights  # pylint: disable=g-import-not-at-top
    if config.model.get('pretrained_scope', 'backbone') == 'all':
      return weights.load_pretrained(variables, path, config.model, scope='all', log=parts.log)
    net = weights.load_pretrained_trunk(
        {'params': variables['params']['net'], 'batch_stats': variables['batch_stats']['net']},
        path, config.model)
    return {'params': {**variables['params'], 'net': net['params']},
            'batch_stats': {**variables['batch_stats'], 'net': net['batch_stats']}}

  return load


def build(config: ml_collections.ConfigDict, data: Data, mesh: jax.sharding.Mesh,
          workdir: pathlib.Path) -> Method:
  from data_pipelines import graph_sampler  # pylint: disable=g-import-not-at-top
  from data_pipelines import validate  # pylint: disable=g-import-not-at-top
  cfg = config.qaconv
  inf = inference(config, data.num_classes)
  net, matcher = networks(config, data.num_classes)
  train_split = data.train
  graph = cfg.sampler == 'graph'
  if graph:
    sampler = graph_sampler.GraphSampler(train_split.labels, config.batch_size,
                                         config.sampler.num_instances, config.seed)
  else:
    sampler = ShuffleSampler(len(train_split), config.batch_size, config.seed)
  steps = sampler.batches_per_epoch
  tx, schedule = parts.optimizer(config, steps, parts.abstract_params(inf))
  # The graph sampler's state; one unused row without it (orbax saves no empty arrays).
  c, b = (sampler.num_classes if graph else 1), config.batch_size
  memory = uses_class_memory(config)
  batch_terms = [n for n in config.loss.names if n != 'qaconv_class_memory']
  extra = QAConvState(
      lr_scale=jnp.ones([], jnp.float32), end_epoch=jnp.zeros([], jnp.int32),
      base_loss=jnp.full([], jnp.nan, jnp.float32), loss_sum=jnp.zeros([], jnp.float32),
      loss_count=jnp.zeros([], jnp.int32), gs_epoch=jnp.full([], -1, jnp.int32),
      gs_positions=jnp.zeros([c], jnp.int32), gs_batches=jnp.zeros([c, b], jnp.int32))
  load_trunk = _load_trunk(config)

  def load_weights(variables):
    variables = load_trunk(variables) if load_trunk else variables
    if memory:  # Empty slots: `valid` keeps them out of the loss until a batch writes them.
      hw, channels = map_shape(config, data.num_classes)
      variables['batch_stats'] = {**variables['batch_stats'], 'class_memory': {
          'memory': np.zeros((data.num_classes, hw, channels), np.float32),
          'valid': np.zeros((data.num_classes,), np.float32)}}
    return variables

  state = parts.initial_state(inf, tx, config, mesh, extra=extra,
                              load_weights=load_weights if (load_trunk or memory) else None)
  maps_of = parts.embedder(inf, mesh, flip=False)
  test_maps_of = parts.embedder(inf, mesh, flip=bool(config.eval.flip))
  put = lambda value: jax.device_put(value, parallel.replicated_sharding(mesh))

  def scores(state, query_maps, gallery_maps):
    return inf.score(inf.score_variables(state.params, state.batch_stats), query_maps,
                     gallery_maps)

  def forward(params, batch_stats, batch, rng):
    del rng
    out, net_vars = net.apply(
        {'params': params['net'], 'batch_stats': batch_stats['net']}, batch['image'],
        train=True, mutable=['batch_stats'])  # Unchanged when BatchNorm is frozen.
    maps = out['feature_map']
    outputs = {}
    new_stats = {**batch_stats, 'net': net_vars.get('batch_stats', {})}
    matcher_stats = batch_stats['matcher']
    if batch_terms:
      outputs['scores'], matcher_stats = qaconv_lib.qaconv_batch_scores(
          matcher, {'params': params['matcher'], 'batch_stats': matcher_stats}, maps, train=True)
    if memory:
      # Scores against the memory as it was before this batch, then the batch written into it
      # (the reference updates its buffer after the loss, without gradient).
      held = batch_stats['class_memory']
      more, matcher_stats = class_memory_scores(
          matcher, {'params': params['matcher'], 'batch_stats': matcher_stats}, maps,
          held['memory'], held['valid'])
      outputs.update(more)
      mem, valid = losses.class_memory_update(held['memory'], held['valid'], maps,
                                              batch['label'])
      new_stats['class_memory'] = {'memory': mem, 'valid': valid}
    new_stats['matcher'] = matcher_stats
    return outputs, new_stats

  def objective(outputs, batch, state: TrainState):
    labels = batch['label']
    terms = objectives.compute_losses(outputs, labels, config.loss)
    loss = objectives.total_loss(terms)
    if 'scores' in outputs:
      quality = losses.qaconv_triplet_metrics(jax.lax.stop_gradient(outputs['scores']), labels,
                                              0.0)
    else:
      per_sample, acc = qaconv_losses.class_memory_terms(
          jax.lax.stop_gradient(outputs['memory_scores']), labels, outputs['memory_valid'])
      quality = {'accuracy': jnp.mean(acc),
                 'finite_fraction': jnp.mean(jnp.isfinite(per_sample).astype(jnp.float32))}
    metrics = {**{f'loss_{k}': v for k, v in terms.items()}, 'accuracy': quality['accuracy'],
               'finite_fraction': quality['finite_fraction']}
    extra = state.extra.replace(loss_sum=state.extra.loss_sum + loss,
                                loss_count=state.extra.loss_count + 1)
    return loss, metrics, extra

  def num_epochs(state: TrainState) -> int:
    end = int(state.extra.end_epoch)
    return min(end, config.train.epochs) if end else config.train.epochs

  def begin_epoch(state: TrainState, epoch: int) -> TrainState:
    if not graph:
      return state.replace(extra=state.extra.replace(
          loss_sum=put(jnp.zeros([], jnp.float32)), loss_count=put(jnp.zeros([], jnp.int32)))
      ) if epoch * steps == int(state.step) else state
    extra = jax.device_get(state.extra)
    sampler.load_state_dict({'positions': np.asarray(extra.gs_positions, np.int64),
                             'epoch': int(extra.gs_epoch), 'batches': extra.gs_batches})
    if int(extra.gs_epoch) == epoch:  # Resumed inside this epoch: its batches are restored.
      return state
    if epoch < cfg.gs_pre_epochs:
      # Random class neighbours (the reference's random start before the first graph).
      rng = np.random.default_rng([config.seed, 3, epoch])
      class_dist = rng.random((sampler.num_classes, sampler.num_classes))
    else:
      reps = validate.subset(train_split, sampler.pick_representatives(epoch))
      maps = maps_of(state.params, state.batch_stats, reps, config.input,
                     config.eval.batch_size, progress=False)
      class_dist = -scores(state, maps, maps)
    sampler.build_epoch(epoch, class_dist)
    built = sampler.state_dict()
    return state.replace(extra=state.extra.replace(
        gs_epoch=put(jnp.asarray(epoch, jnp.int32)),
        gs_positions=put(jnp.asarray(built['positions'], jnp.int32)),
        gs_batches=put(jnp.asarray(built['batches'], jnp.int32)),
        loss_sum=put(jnp.zeros([], jnp.float32)), loss_count=put(jnp.zeros([], jnp.int32))))

  def end_epoch(state: TrainState, epoch: int) -> TrainState:
    """The adaptive schedule (module docstring), decided once per epoch on the host."""
    extra = jax.device_get(state.extra)
    loss = float(extra.loss_sum) / max(int(extra.loss_count), 1)
    base_loss, lr_scale, end = adaptive_schedule(
        epoch + 1, loss, float(extra.base_loss), float(extra.lr_scale), int(extra.end_epoch),
        cfg.decay_ratio, cfg.decay_factor, config.train.epochs)
    return state.replace(extra=state.extra.replace(
        base_loss=put(jnp.asarray(base_loss, jnp.float32)),
        lr_scale=put(jnp.asarray(lr_scale, jnp.float32)),
        end_epoch=put(jnp.asarray(end, jnp.int32))))

  def evaluate(state: TrainState, splits=None, post: bool = True) -> evaluator.EvalOutput:
    """QAConv rank metrics on `splits` (default: this dataset's), with the re-ranking and TLift
    rows where configured and the images have times (module docstring)."""
    is_own = splits is None
    splits = splits or data.splits
    query = splits['query']
    # The reference tests against a gallery without junk images (its loader drops pid -1).
    gallery = validate.subset(splits['gallery'], np.flatnonzero(splits['gallery'].pids != -1))
    qmaps = test_maps_of(state.params, state.batch_stats, query, config.input,
                         config.eval.batch_size)
    gmaps = test_maps_of(state.params, state.batch_stats, gallery, config.input,
                         config.eval.batch_size)
    qg = scores(state, qmaps, gmaps)

    def rank(dist, roc=False):
      return evaluator.rank_with_protocol(dist, query, gallery, config.eval, roc=roc)

    dist = qaconv_rerank.qaconv_distance(qg)
    result = rank(dist, roc=post and config.eval.roc)
    extra_rows = {}
    if post and config.eval.rerank:
      qq, gg = scores(state, qmaps, qmaps), scores(state, gmaps, gmaps)
      ev = config.eval
      reranked = qaconv_rerank.qaconv_rerank(qg, qq, gg, ev.rerank_k1, ev.rerank_k2,
                                             ev.rerank_lambda, cfg.rerank_distance)
      extra_rows['rerank'] = rank(reranked).to_dict()
      if cfg.tlift and is_own:  # Only the training dataset's clock is configured.
        q_times, g_times = tlift_lib.split_times([train_split, query, gallery],
                                                 time_model=cfg.time_model)[-2:]
        lifted = tlift_lib.tlift(1.0 - reranked, query.camids, gallery.camids, q_times, g_times,
                                 tau=cfg.tau, sigma=cfg.sigma, K=cfg.K, alpha=cfg.alpha)
        extra_rows['rerank + TLift'] = rank((1.0 - lifted).astype(np.float32)).to_dict()
    return evaluator.EvalOutput(result.to_dict(), result, distmat=dist, extra_rows=extra_rows,
                                query=query, gallery=gallery)

  def report_sections(state: TrainState, output: evaluator.EvalOutput, out_dir: pathlib.Path):
    """Correspondences of a few queries with their best gallery match (paper Fig. 2)."""
    from jreid import report  # pylint: disable=g-import-not-at-top
    query, gallery = output.query, output.gallery
    rows = np.linspace(0, len(query) - 1, num=min(4, len(query))).astype(int)
    best = [int(np.argmin(output.query_distances(int(i)))) for i in rows]
    qmaps = maps_of(state.params, state.batch_stats, validate.subset(query, rows),
                    config.input, config.eval.batch_size, progress=False)
    gmaps = maps_of(state.params, state.batch_stats, validate.subset(gallery, np.asarray(best)),
                    config.input, config.eval.batch_size, progress=False)
    size = (config.input.height, config.input.width)
    pairs = []
    for k, (qi, gi) in enumerate(zip(rows, best)):
      same = 'same identity' if query.pids[qi] == gallery.pids[gi] else 'different identity'
      pairs.append((report.decode_image(query.images[qi], size),
                    report.decode_image(gallery.images[gi], size),
                    qmaps[k], gmaps[k], f'query {query.pids[qi]} / top-1 {gallery.pids[gi]} '
                    f'({same})'))
    plot_correspondences(pairs, out_dir / 'correspondences.png', qmaps.shape[1:3])
    return [('QAConv correspondences', 'Each query (left) with its top-ranked gallery image '
             '(right); lines join the most confident matched locations (the best gallery '
             'location of each query location), brightest = most confident.',
             'correspondences.png')]

  m = config.model
  if graph:
    sampling = (f'graph sampler with batch {config.batch_size} '
                f'({config.batch_size // config.sampler.num_instances} classes x '
                f'{config.sampler.num_instances})')
  else:
    sampling = f'shuffled images in batches of {config.batch_size}'
  if cfg.decay_ratio:
    length = f'at most {config.train.epochs} epochs with the adaptive schedule'
  else:
    length = f'{config.train.epochs} epochs, {config.optim.schedule} learning rate'
  memory_text = (f', class memory of {data.num_classes} feature maps' if memory else '')
  describe = (f'QAConv{"-GS" if graph else " 1.x"}: backbone `{m.backbone.name}` (width '
              f'{m.backbone.width}) to {m.qaconv.final_layer}, neck {m.qaconv.neck}, matcher over '
              f'{matcher.hw} locations; loss {", ".join(config.loss.names)}{memory_text}; '
              f'{sampling}, {steps} steps per epoch, {length}; input '
              f'{config.input.height}x{config.input.width}{parts.describe_options(config)}.')
  more = {}
  if memory:
    more['class_memory'] = True  # batch_stats holds the memory: another checkpoint layout.
  if not graph:
    more['sampler'] = cfg.sampler
  return Method(
      name='qaconv', inference=inf, state=state, tx=tx, schedule=schedule, forward=forward,
      objective=objective, steps_per_epoch=steps,
      batches=lambda state, start, stop: parts.sampler_batches(config, train_split, sampler,
                                                               start, stop),
      evaluate=evaluate, fingerprint=parts.fingerprint(config, data.num_classes, **more),
      describe=describe, num_epochs=num_epochs, begin_epoch=begin_epoch, end_epoch=end_epoch,
      report_sections=report_sections, lr_scale=lambda extra: extra.lr_scale)


def adaptive_schedule(finished: int, loss: float, base_loss: float, lr_scale: float,
                      end_epoch: int, decay_ratio: float, decay_factor: float,
                      max_epochs: int) -> tuple[float, float, int]:
  """QAConv's adaptive schedule after epoch `finished` (1-based) with mean loss `loss`.

  Returns the new (base_loss, lr_scale, end_epoch): epoch 2 sets the base loss; the first later
  epoch whose loss is below decay_ratio x base multiplies the learning rate by decay_factor and
  ends the run after epoch min(max_epochs, finished + finished // 2); decided once. decay_ratio
  0 never decides (the run keeps config.optim's schedule and train.epochs).
  """
  if finished == 2:
    base_loss = loss
  if decay_ratio > 0 and finished >= 2 and lr_scale == 1.0 and loss < decay_ratio * base_loss:
    lr_scale = decay_factor
    end_epoch = min(max_epochs, finished + finished // 2)
    parts.log(f'epoch {finished}: loss {loss:.4g} < {decay_ratio} x {base_loss:.4g} (epoch 2): '
              f'learning rate x{decay_factor}, training ends after epoch {end_epoch}.')
  return base_loss, lr_scale, end_epoch


def location_matches(query_map: np.ndarray, gallery_map: np.ndarray, top: int
                     ) -> list[tuple[int, int, float]]:
  """The `top` most confident location correspondences of one image pair (paper Fig. 2).

  For every query location, its best gallery location by the channel dot product (QAConv's
  max over gallery locations); the `top` query locations with the highest such similarity.

  Args:
    query_map, gallery_map: [h, w, c] feature maps of the two images.
    top: number of correspondences.

  Returns:
    [(query location, gallery location, similarity)] as flat indices into h x w, best first.
  """
  h, w, c = query_map.shape
  sim = query_map.reshape(h * w, c) @ gallery_map.reshape(h * w, c).T
  best = sim.argmax(axis=1)
  conf = sim[np.arange(h * w), best]
  order = np.argsort(-conf, kind='stable')[:top]
  return [(int(i), int(best[i]), float(conf[i])) for i in order]


def plot_correspondences(pairs, path: pathlib.Path, map_size: tuple[int, int],
                         top: int = 8) -> None:
  """Each row: a query and a gallery image side by side, lines joining matched locations.

  pairs: [(query image uint8 [H, W, 3], gallery image, query map [h, w, c], gallery map, title)].
  """
  from jreid import report  # pylint: disable=g-import-not-at-top
  plt = report.pyplot()
  fig, axes = plt.subplots(len(pairs), 1, figsize=(3.2, 3.0 * len(pairs)), squeeze=False)
  h, w = map_size
  for ax, (qimg, gimg, qmap, gmap, title) in zip(axes[:, 0], pairs):
    height, width = qimg.shape[:2]
    ax.imshow(np.concatenate([qimg, gimg], axis=1))
    cmap = plt.get_cmap('viridis')
    matches = location_matches(qmap, gmap, top)
    for rank, (qi, gi, _) in enumerate(matches):
      (qy, qx), (gy, gx) = divmod(qi, w), divmod(gi, w)
      ys = [(qy + 0.5) * height / h, (gy + 0.5) * height / h]
      xs = [(qx + 0.5) * width / w, width + (gx + 0.5) * width / w]
      ax.plot(xs, ys, '-o', color=cmap(rank / max(len(matches) - 1, 1)), lw=1.5, ms=3)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([]); ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
