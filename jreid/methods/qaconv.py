"""QAConv-GS (QAConv 2.1) training and evaluation: `config.method = 'qaconv'`.

Liao & Shao, ECCV 2020 (QAConv, TLift) and CVPR 2022 (graph sampling). The setup plugs the
QAConv pieces into the shared train loop (`jreid.train`):

* model: `QAConvNet` (ResNet trunk to layer3, 3x3 neck, channel L2 normalisation; every
  BatchNorm of the network frozen) and `QAConvMatcher` (the learnable head); parameters
  `{'net': ..., 'matcher': ...}`;
* sampler: `GraphSampler`, rebuilt at the start of every epoch from the current model (one random
  image per class, all-pairs QAConv distances between them, each class with its k nearest
  classes forms a batch); the first `qaconv.gs_pre_epochs` epochs use random class neighbours
  (the reference's random P x K start);
* loss: the QAConv 2.1 hard triplet on matcher logits (margin 16), or the 2.0 pairwise matching
  BCE (`qaconv.loss = 'pairwise'`);
* optimiser: SGD Nesterov, lr x0.1 on the backbone (`optim.lr_factors`), weight decay, gradient
  clipping (all from `config.optim`);
* adaptive schedule: after every epoch e (1-based) with mean loss L_e, once L_e < `decay_ratio` x
  L_2 (the second epoch's loss), the learning rate is multiplied by 0.1 and the run ends after
  epoch min(`train.epochs`, e + e // 2);
* evaluation: feature maps of query and gallery, all-pairs QAConv logits block by block
  (`pairwise_scores`), distance = -logit; with `qaconv.tlift` also the reference's QAConv-score
  k-reciprocal re-ranking and TLift on top of it (rows 'rerank' and 'rerank + TLift').

The schedule state, the running epoch loss and the sampler's state live in `TrainState.extra`,
so a run killed anywhere resumes exactly (the epoch's batches are restored, not rebuilt).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data_pipelines import graph_sampler
from data_pipelines import input_pipeline
from data_pipelines.types import ReIDSplit
from jreid import inference
from jreid import losses
from jreid import models
from jreid import optim
from jreid import parallel
from jreid import train as train_lib
from jreid.evaluation import evaluate_rank
from jreid.evaluation import qaconv_rerank
from jreid.evaluation import tlift as tlift_lib
from jreid.models import qaconv as qaconv_lib

TrainState = train_lib.TrainState


def qaconv_config() -> ml_collections.ConfigDict:
  """The `config.qaconv` section (method settings outside the model)."""
  c = ml_collections.ConfigDict()
  c.loss = 'triplet'  # 'triplet' (QAConv 2.1) | 'pairwise' (QAConv 2.0 BCE).
  c.margin = 16.0  # Triplet margin on matcher logits.
  c.gs_pre_epochs = 1  # Epochs of random class neighbours before graph sampling starts.
  c.decay_ratio = 0.7  # Adaptive schedule: decay once the epoch loss < ratio x epoch 2's loss.
  c.decay_factor = 0.1
  c.score_dtype = 'float32'  # Evaluation matmul: 'float32' | 'bfloat16'.
  c.query_block = 128  # Evaluation blocks of maps scored at once.
  c.gallery_block = 128
  c.tlift = True  # Also report re-ranking and re-ranking + TLift (needs image times).
  c.time_model = 'frame'  # 'frame' (one clock, frame / 25 s: SynthReID) | 'market1501'.
  c.tau = 100.0  # TLift parameters (reference defaults).
  c.sigma = 200.0
  c.K = 10
  c.alpha = 0.2
  c.rerank_k1 = 20
  c.rerank_k2 = 6
  c.rerank_lambda = 0.3
  # Distance the re-ranking works on: 'sigmoid' = 1 - sigmoid(logit / 10) (ECCV 2020 reference;
  # bounded) or 'negative' = -logit (QAConv 2.x reference; ill-defined for some logit scales).
  c.rerank_distance = 'sigmoid'
  return c


def _subset(split: ReIDSplit, keep: np.ndarray, name: str | None = None) -> ReIDSplit:
  """The images `keep` (indices, or a boolean mask) of `split`, in that order."""
  keep = np.asarray(keep)
  idx = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
  return ReIDSplit(name=name or split.name, images=split.images[idx], pids=split.pids[idx],
                   camids=split.camids[idx], sessions=split.sessions[idx],
                   frames=split.frames[idx], filenames=[split.filenames[i] for i in idx],
                   labels=split.labels[idx])


class QAConvSetup(train_lib.Setup):
  """`config.method = 'qaconv'`: see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: pathlib.Path):
    if 'qaconv' not in config:
      raise ValueError("config.method='qaconv' needs a config.qaconv section; start from "
                       'configs/qaconv.py.')
    super().__init__(config, workdir)
    # The reference tests against a gallery without junk images (its loader drops pid -1).
    gallery = self.splits['gallery']
    self.test_gallery = _subset(gallery, gallery.pids != -1)

  # Construction.

  def build_sampler(self):
    config = self.config
    return graph_sampler.GraphSampler(self.train_split.labels, config.batch_size,
                                      config.sampler.num_instances, config.seed)

  def build_model(self):
    net = models.build_model(self.config.model, self.num_classes)
    hw = self._locations(net)
    self.matcher = qaconv_lib.QAConvMatcher(hw=hw)
    return net

  def _locations(self, net) -> int:
    shape = jax.eval_shape(lambda: net.init(jax.random.key(0), self._dummy_images()))
    out = jax.eval_shape(lambda v: net.apply(v, self._dummy_images()), shape)
    _, h, w, _ = out['feature_map'].shape
    return h * w

  def _init_variables(self, rng):
    net_vars = self.model.init(rng, self._dummy_images(), train=False)
    maps = self.model.apply(net_vars, self._dummy_images())['feature_map']
    matcher_vars = self.matcher.init(rng, maps, maps, train=False)
    return ({'net': net_vars['params'], 'matcher': matcher_vars['params']},
            {'net': net_vars.get('batch_stats', {}), 'matcher': matcher_vars['batch_stats']})

  def abstract_params(self):
    return jax.eval_shape(lambda: self._init_variables(jax.random.key(0))[0])

  def create_state(self) -> TrainState:
    c = self.sampler.num_classes
    b = self.config.batch_size

    def init(params, batch_stats):
      extra = {
          'lr_scale': jnp.ones([], jnp.float32),
          'end_epoch': jnp.zeros([], jnp.int32),  # 0 until the adaptive schedule decides it.
          'base_loss': jnp.full([], jnp.nan, jnp.float32),
          'loss_sum': jnp.zeros([], jnp.float32),
          'loss_count': jnp.zeros([], jnp.int32),
          'gs_epoch': jnp.full([], -1, jnp.int32),
          'gs_positions': jnp.zeros([c], jnp.int32),
          'gs_batches': jnp.zeros([c, b], jnp.int32),
      }
      return TrainState(step=jnp.zeros([], jnp.int32), params=params, batch_stats=batch_stats,
                        opt_state=self.tx.init(params), extra=extra)

    rng = jax.random.key(self.config.seed, impl='rbg')
    params, batch_stats = jax.jit(self._init_variables)(rng)
    pretrained = self.config.model.get('pretrained', '')
    if pretrained:
      # ImageNet weights of a ResNet (torchvision / IBN-Net state dict) for the layer3 trunk.
      from jreid import weights  # pylint: disable=g-import-not-at-top
      net = weights.load_pretrained_trunk(
          jax.device_get({'params': params['net'], 'batch_stats': batch_stats['net']}),
          pretrained, self.config.model)
      params = {**params, 'net': net['params']}
      batch_stats = {**batch_stats, 'net': net['batch_stats']}
    return jax.jit(init, out_shardings=parallel.replicated_sharding(self.mesh))(params,
                                                                                 batch_stats)

  def fingerprint(self) -> dict[str, Any]:
    fp = super().fingerprint()
    fp['method'] = 'qaconv'
    return fp

  # Epoch hooks.

  def num_epochs(self, state: TrainState) -> int:
    end = int(state.extra['end_epoch'])
    return min(end, self.config.train.epochs) if end else self.config.train.epochs

  def _put(self, value) -> jax.Array:
    return jax.device_put(value, parallel.replicated_sharding(self.mesh))

  def begin_epoch(self, state: TrainState, epoch: int) -> TrainState:
    extra = jax.device_get(state.extra)
    saved = {'positions': extra['gs_positions'].astype(np.int64), 'epoch': int(extra['gs_epoch']),
             'batches': extra['gs_batches']}
    self.sampler.load_state_dict(saved)
    if int(extra['gs_epoch']) == epoch:  # Resumed inside this epoch: its batches are restored.
      return state
    if epoch < self.config.qaconv.gs_pre_epochs:
      # Random class neighbours (the reference's random start before the first graph).
      rng = np.random.default_rng([self.config.seed, 3, epoch])
      class_dist = rng.random((self.sampler.num_classes, self.sampler.num_classes))
    else:
      reps = self.sampler.pick_representatives(epoch)
      maps = self.feature_maps(state, _subset(self.train_split, reps, 'representatives'))
      class_dist = -self.scores(state, maps, maps)
    self.sampler.build_epoch(epoch, class_dist)
    built = self.sampler.state_dict()
    new_extra = dict(state.extra)
    new_extra.update(
        gs_epoch=self._put(jnp.asarray(epoch, jnp.int32)),
        gs_positions=self._put(jnp.asarray(built['positions'], jnp.int32)),
        gs_batches=self._put(jnp.asarray(built['batches'], jnp.int32)),
        loss_sum=self._put(jnp.zeros([], jnp.float32)),
        loss_count=self._put(jnp.zeros([], jnp.int32)))
    return state.replace(extra=new_extra)

  def end_epoch(self, state: TrainState, epoch: int) -> TrainState:
    """The adaptive schedule (module docstring), decided once per epoch on the host."""
    cfg = self.config.qaconv
    extra = jax.device_get(state.extra)
    loss = float(extra['loss_sum']) / max(int(extra['loss_count']), 1)
    finished = epoch + 1  # 1-based number of the epoch that just ended.
    base_loss = float(extra['base_loss'])
    lr_scale = float(extra['lr_scale'])
    end_epoch = int(extra['end_epoch'])
    if finished == 2:
      base_loss = loss
    if finished >= 2 and lr_scale == 1.0 and loss < cfg.decay_ratio * base_loss:
      lr_scale = cfg.decay_factor
      end_epoch = min(self.config.train.epochs, finished + finished // 2)
      train_lib._log(f'epoch {finished}: loss {loss:.4g} < {cfg.decay_ratio} x {base_loss:.4g} '
                     f'(epoch 2): learning rate x{cfg.decay_factor}, training ends after epoch '
                     f'{end_epoch}.')
    new_extra = dict(state.extra)
    new_extra.update(base_loss=self._put(jnp.asarray(base_loss, jnp.float32)),
                     lr_scale=self._put(jnp.asarray(lr_scale, jnp.float32)),
                     end_epoch=self._put(jnp.asarray(end_epoch, jnp.int32)))
    return state.replace(extra=new_extra)

  # The train step.

  def make_train_step(self):
    net, matcher, tx, cfg = self.model, self.matcher, self.tx, self.config.qaconv
    schedule = self.schedule

    def train_step(state: TrainState, batch):
      labels = batch['label']

      def loss_fn(params):
        out, net_vars = net.apply(
            {'params': params['net'], 'batch_stats': state.batch_stats['net']}, batch['image'],
            train=True, mutable=['batch_stats'])  # Unchanged when BatchNorm is frozen.
        maps = out['feature_map']
        scores, matcher_stats = qaconv_lib.qaconv_batch_scores(
            matcher, {'params': params['matcher'], 'batch_stats': state.batch_stats['matcher']},
            maps, train=True)
        if cfg.loss == 'triplet':
          terms = losses.qaconv_triplet_metrics(scores, labels, cfg.margin)
        elif cfg.loss == 'pairwise':
          terms = {'loss': losses.pairwise_matching_loss(scores, labels),
                   'accuracy': losses.qaconv_triplet_metrics(scores, labels, 0.0)['accuracy']}
        else:
          raise ValueError(f"config.qaconv.loss must be 'triplet' or 'pairwise', got {cfg.loss!r}.")
        return terms['loss'], (terms, matcher_stats, net_vars.get('batch_stats', {}))

      (loss, (terms, matcher_stats, net_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      # The adaptive decay scales the whole step: SGD applies the learning rate last.
      scale = state.extra['lr_scale']
      updates = jax.tree.map(lambda u: u * scale, updates)
      params = optax.apply_updates(state.params, updates)
      extra = dict(state.extra)
      extra['loss_sum'] = state.extra['loss_sum'] + loss
      extra['loss_count'] = state.extra['loss_count'] + 1
      metrics = {**{k: v for k, v in terms.items()}, 'grad_norm': optax.global_norm(grads),
                 'lr': schedule(state.step) * scale}
      new_state = state.replace(
          step=state.step + 1, params=params, opt_state=opt_state, extra=extra,
          batch_stats={'net': net_stats, 'matcher': matcher_stats})
      return new_state, metrics

    replicated = parallel.replicated_sharding(self.mesh)
    return jax.jit(train_step, donate_argnums=(0,),
                   in_shardings=(replicated, parallel.data_sharding(self.mesh)),
                   out_shardings=(replicated, replicated))

  # Evaluation.

  def feature_maps(self, state: TrainState, split: ReIDSplit) -> np.ndarray:
    """Feature maps [N, h, w, c] of a split (eval transform)."""
    if getattr(self, '_predict', None) is None:
      self._predict = inference.make_predict_fn(self.model, self.mesh, output='feature_map')
    variables = {'params': state.params['net'], 'batch_stats': state.batch_stats['net']}
    return inference.extract_features(self._predict, variables, split, self.config.input,
                                      self.config.eval.batch_size, self.mesh)

  def scores(self, state: TrainState, query_maps: np.ndarray, gallery_maps: np.ndarray):
    cfg = self.config.qaconv
    variables = {'params': state.params['matcher'], 'batch_stats': state.batch_stats['matcher']}
    dtype = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[cfg.score_dtype]
    return qaconv_lib.pairwise_scores(variables, query_maps, gallery_maps,
                                      query_block=cfg.query_block,
                                      gallery_block=cfg.gallery_block, dtype=dtype)

  def evaluate(self, state: TrainState, splits: dict[str, Any] | None = None,
               post: bool = True) -> inference.EvalOutput:
    """QAConv rank metrics on `splits` (default: this dataset's), with re-ranking and TLift rows
    where the images have times (module docstring)."""
    cfg = self.config.qaconv
    if splits is None:
      query, gallery = self.splits['query'], self.test_gallery
      time_splits, time_model = [self.train_split, query, gallery], cfg.time_model
    else:
      query = splits['query']
      gallery = _subset(splits['gallery'], splits['gallery'].pids != -1)
      time_splits = [s for s in (splits.get('train'), query, gallery) if s is not None and len(s)]
      time_model = None  # Only the training dataset's clock is configured.
    qmaps = self.feature_maps(state, query)
    gmaps = self.feature_maps(state, gallery)
    qg = self.scores(state, qmaps, gmaps)
    max_rank = self.config.eval.max_rank

    def rank(dist):
      return evaluate_rank(dist, query.pids, gallery.pids, query.camids, gallery.camids,
                           max_rank=max_rank)

    dist = qaconv_rerank.qaconv_distance(qg)
    result = rank(dist)
    extra_rows = {}
    if post and cfg.tlift and time_model:
      q_times, g_times = tlift_lib.split_times(time_splits, time_model=time_model)[-2:]
      out = qaconv_rerank.qaconv_rerank_tlift(
          qg, self.scores(state, qmaps, qmaps), self.scores(state, gmaps, gmaps), query.camids,
          gallery.camids, q_times, g_times, k1=cfg.rerank_k1, k2=cfg.rerank_k2,
          lambda_value=cfg.rerank_lambda, tau=cfg.tau, sigma=cfg.sigma, K=cfg.K, alpha=cfg.alpha,
          distance=cfg.rerank_distance)
      extra_rows['rerank'] = rank(out['rerank']).to_dict()
      extra_rows['rerank + TLift'] = rank(out['tlift']).to_dict()
    return inference.EvalOutput(result.to_dict(), result, distmat=dist, extra_rows=extra_rows,
                                gallery=gallery)

  def report_sections(self, state: TrainState, output: inference.EvalOutput):
    """Correspondences of a few queries with their best gallery match (paper Fig. 2)."""
    from jreid import report  # pylint: disable=g-import-not-at-top
    query = self.splits['query']
    gallery = output.gallery if output.gallery is not None else self.splits['gallery']
    rows = np.linspace(0, len(query) - 1, num=min(4, len(query))).astype(int)
    best = [int(np.argmin(output.query_distances(int(i)))) for i in rows]
    qmaps = self.feature_maps(state, _subset(query, rows, 'query'))
    gmaps = self.feature_maps(state, _subset(gallery, np.asarray(best), 'gallery'))
    size = (self.config.input.height, self.config.input.width)
    pairs = []
    for k, (qi, gi) in enumerate(zip(rows, best)):
      same = 'same identity' if query.pids[qi] == gallery.pids[gi] else 'different identity'
      pairs.append((report._decode(query.images[qi], size),  # pylint: disable=protected-access
                    report._decode(gallery.images[gi], size),  # pylint: disable=protected-access
                    qmaps[k], gmaps[k], f'query {query.pids[qi]} / top-1 {gallery.pids[gi]} '
                    f'({same})'))
    plot_correspondences(pairs, self.workdir / 'correspondences.png', qmaps.shape[1:3])
    return [('QAConv correspondences', 'Each query (left) with its top-ranked gallery image '
             '(right); lines join the most confident matched locations (the best gallery '
             'location of each query location), brightest = most confident.',
             'correspondences.png')]

  def describe(self) -> str:
    config = self.config
    m = config.model
    return (f'QAConv-GS: backbone `{m.backbone.name}` (width {m.backbone.width}) to '
            f'{m.qaconv.final_layer}, neck {m.qaconv.neck}, matcher over {self.matcher.hw} '
            f'locations; {config.qaconv.loss} loss; graph sampler with batch {config.batch_size} '
            f'({config.batch_size // config.sampler.num_instances} classes x '
            f'{config.sampler.num_instances}), {self.steps_per_epoch} steps per epoch, at most '
            f'{config.train.epochs} epochs with the adaptive schedule; input '
            f'{config.input.height}x{config.input.width}.')


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
  plt = report._plt()  # pylint: disable=protected-access
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
