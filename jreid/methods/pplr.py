"""PPLR: unsupervised re-ID with part-based pseudo-label refinement (config.method='pplr').

Cho et al., "Part-based Pseudo Label Refinement for Unsupervised Person Re-identification",
CVPR 2022, and its camera-aware variant ('camera_proxy' in `config.loss.names`). No identity label
of the training split is used in training: the train split is seen only through its images and
cameras; the true identities (`split.pids`) are read once per epoch to *report* the clustering
quality (NMI).

Each epoch, in `begin_epoch`:
  1. global and part features (L2-normalised, post-BNNeck) of the whole train split, eval mode;
  2. pseudo labels: Jaccard distance (k1, k2) + DBSCAN (eps, min_samples) on the global features
     (`jreid.clustering`); DBSCAN outliers get label -1 and are not sampled this epoch;
  3. cross-agreement scores [N, P] (top-k = 20 neighbour lists, self excluded);
  4. the first K columns of every classifier are set to the L2-normalised cluster centroids of
     its feature (K = clusters of the epoch);
  5. (camera-aware) the L2-normalised mean feature of every (cluster, camera) pair: the proxies.
Pseudo labels, scores, K, proxies and the epoch's statistics are the typed `PPLRState` with fixed
shapes (labels int32 [N]; scores float32 [N, P]; proxies float32 [P + 1, M, D] padded to the
capacity M with a mask), so a run resumed mid-epoch continues with exactly the same targets.

Classifier capacity. The classifiers are allocated with `pplr.max_clusters` columns (default
N // min_samples, the most clusters DBSCAN can form); logits of the columns >= K are masked to
-inf inside the losses (`jreid.losses.pplr`), which equals the loss of an unpadded K-way
classifier. More clusters than the capacity is an error naming the key.

Sampling: `data_pipelines.samplers.CameraAwareSampler` over the epoch's pseudo labels.

Loss per step (reference `PPLRTrainer(CAM)`), the terms of `config.loss`: 'pplr_pglr' (CE of the
global logits with the part-refined soft target, beta) + 'pplr_part' (mean over parts of
label-smoothed CE before `pplr.aals_epoch`, agreement-aware label smoothing after) + 'triplet'
(soft-margin batch-hard on the post-BN global feature) [+ 'camera_proxy' (inter-camera proxy
loss of the global + mean part features, weight lam_cam)].

Per-GPU BatchNorm of the reference (4 GPUs x 16 images) is `pplr.bn_group_size`: the batch is
split into groups that each get their own BatchNorm statistics (a vmap over groups); running
statistics are the mean of the groups'.

Report: `pplr_epochs.jsonl` (one row per epoch: clusters, outliers, NMI against the hidden
labels, mean agreement per part, test mAP/rank-1 when evaluated) and `pplr_epochs.png` in the
workdir.

Sections owned: `model` (PPLR's part network), `loss`, `sampler` (K), `pplr`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jreid import clustering
from jreid import embed
from jreid import objectives
from jreid import parallel
from jreid import parts
from jreid.losses import pplr as pplr_losses
from jreid.method import Data, Inference, Method, TrainState
from jreid.models import pplr as pplr_model


def default_config() -> ml_collections.ConfigDict:
  """The sections this method owns, at the reference's Market-1501 values."""
  from jreid.models import default_model_config  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.method = 'pplr'
  base = default_model_config()  # The keys PPLRNet reads (no pooling / head: its own branches).
  c.model = ml_collections.ConfigDict({k: base[k] for k in (
      'name', 'backbone', 'pixel_mean', 'pixel_std', 'input_norm', 'dtype', 'pretrained')})
  c.model.name = 'pplr'
  c.loss = objectives.loss_config(('pplr_pglr', 'pplr_part', 'triplet'), 'camera_proxy',
                                  triplet={'margin': 0.0})
  c.sampler = ml_collections.ConfigDict({'num_instances': 4})  # K per pseudo identity.
  p = c.pplr = ml_collections.ConfigDict()
  p.num_parts = 3  # Horizontal stripes of the part branch.
  p.k1 = 30  # Jaccard distance (k-reciprocal encoding) neighbourhood.
  p.k2 = 6  # Jaccard distance local query expansion.
  p.eps = 0.5  # DBSCAN radius on the Jaccard distance.
  p.min_samples = 4  # DBSCAN min_samples.
  p.k = 20  # Neighbours of the cross-agreement lists (self excluded).
  p.aals_epoch = 5  # First epoch (0-based) of agreement-aware label smoothing.
  p.max_clusters = 0  # Classifier capacity; 0 = len(train) // min_samples.
  p.max_proxies = 0  # (cluster, camera) proxy capacity; 0 = min(len(train), clusters x cams).
  p.bn_group_size = 0  # BatchNorm statistics per group of this many images; 0 = whole batch.
  p.eval_every_epochs = 1  # Test mAP into pplr_epochs.jsonl every this many epochs; 0 = never.
  return c


def camera_aware(config: ml_collections.ConfigDict) -> bool:
  """The camera-aware variant: the inter-camera proxy loss is one of the terms."""
  return 'camera_proxy' in config.loss.names


@flax.struct.dataclass
class PPLRState:
  """The epoch's pseudo labels and targets (checkpointed; fixed shapes)."""
  epoch: jax.Array  # The epoch whose pseudo labels these are (-1: none yet).
  labels: jax.Array  # int32 [N], -1 for outliers.
  scores: jax.Array  # float32 [N, P] cross agreement.
  num_clusters: jax.Array
  num_outliers: jax.Array
  nmi: jax.Array  # Reported only.
  proxies: jax.Array  # float32 [P + 1, M, D] (global, then parts).
  proxy_labels: jax.Array  # int32 [M]
  proxy_cams: jax.Array  # int32 [M]
  proxy_mask: jax.Array  # bool [M]


def capacity(config: ml_collections.ConfigDict, num_train: int) -> int:
  """Classifier columns: config.pplr.max_clusters, or N // min_samples."""
  return int(config.pplr.max_clusters) or max(1, num_train // int(config.pplr.min_samples))


def inference(config: ml_collections.ConfigDict, num_classes: int) -> Inference:
  """The part network; test embeddings are its L2-normalised global features."""
  return parts.image_inference(
      pplr_model.build_pplr(config.model, num_classes, int(config.pplr.num_parts)), config)


def reinit_classifiers(params: Any, centroids: list[np.ndarray], num_parts: int) -> Any:
  """Params with columns 0..K-1 of `classifier` and `classifier_p` set to the centroids.

  `centroids[0]` is the global one [K, D], `centroids[1 + p]` part p's. Other columns unchanged.
  """
  params = dict(params)
  names = ['classifier'] + [f'classifier_{p}' for p in range(num_parts)]
  for name, c in zip(names, centroids):
    kernel = jnp.asarray(params[name]['kernel'])
    params[name] = {**params[name], 'kernel': kernel.at[:, :c.shape[0]].set(jnp.asarray(c.T))}
  return params


def camera_proxies(features: np.ndarray, labels: np.ndarray, camids: np.ndarray,
                   capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """L2-normalised mean feature per (cluster, camera), padded to `capacity`.

  Args:
    features: [S, N, D] (S feature spaces: global then parts).
  Returns:
    proxies [S, capacity, D], proxy cluster [capacity], proxy camera [capacity] (int32), mask.
  """
  keep = labels >= 0
  pairs, inverse = np.unique(np.stack([labels[keep], camids[keep]], 1), axis=0,
                             return_inverse=True)
  inverse = inverse.reshape(-1)
  m = len(pairs)
  if m > capacity:
    raise ValueError(f'{m} (cluster, camera) proxies exceed the capacity config.pplr.max_proxies '
                     f'= {capacity}; raise it.')
  s, _, d = features.shape
  proxies = np.zeros((s, capacity, d), np.float32)
  for i in range(s):
    sums = np.zeros((m, d))
    np.add.at(sums, inverse, np.asarray(features[i][keep], np.float64))
    means = sums / np.bincount(inverse, minlength=m)[:, None]
    proxies[i, :m] = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
  plabels = np.full(capacity, -1, np.int32)
  pcams = np.full(capacity, -1, np.int32)
  plabels[:m], pcams[:m] = pairs[:, 0], pairs[:, 1]
  return proxies, plabels, pcams, np.arange(capacity) < m


def apply_grouped(model, variables: dict[str, Any], images: jax.Array, group_size: int):
  """model.apply in training mode with BatchNorm statistics per group of `group_size` images
  (per-GPU BatchNorm of multi-GPU PyTorch runs); returns (outputs, mean batch_stats)."""
  b = images.shape[0]
  if not group_size or group_size >= b:
    return model.apply(variables, images, train=True, mutable=['batch_stats'])
  if b % group_size:
    raise ValueError(f'config.pplr.bn_group_size {group_size} must divide the batch size {b}.')
  grouped = images.reshape(b // group_size, group_size, *images.shape[1:])
  outputs, mutated = jax.vmap(
      lambda x: model.apply(variables, x, train=True, mutable=['batch_stats']))(grouped)
  outputs = jax.tree.map(lambda o: o.reshape(b, *o.shape[2:]), outputs)
  return outputs, jax.tree.map(lambda s: jnp.mean(s, axis=0), mutated)


def build(config: ml_collections.ConfigDict, data: Data, mesh: jax.sharding.Mesh,
          workdir: pathlib.Path) -> Method:
  pcfg = config.pplr
  train_split = data.train
  camids = np.asarray(train_split.camids, np.int32)
  num_train, num_parts = len(camids), int(pcfg.num_parts)
  cap = capacity(config, num_train)
  cam = camera_aware(config)
  proxy_cap = 1 if not cam else (int(pcfg.max_proxies) or
                                 min(num_train, cap * (int(camids.max()) + 1)))
  inf = inference(config, cap)
  model = inf.model
  steps = int(config.train.steps_per_epoch) or max(1, num_train // config.batch_size)
  tx, schedule = parts.optimizer(config, steps, parts.abstract_params(inf))
  dim = int(parts.abstract_params(inf)['bnneck']['scale'].shape[0])
  extra = PPLRState(
      epoch=jnp.array(-1, jnp.int32), labels=jnp.full((num_train,), -1, jnp.int32),
      scores=jnp.zeros((num_train, num_parts), jnp.float32), num_clusters=jnp.array(0, jnp.int32),
      num_outliers=jnp.array(0, jnp.int32), nmi=jnp.array(0.0, jnp.float32),
      proxies=jnp.zeros((num_parts + 1, proxy_cap, dim), jnp.float32),
      proxy_labels=jnp.full((proxy_cap,), -1, jnp.int32),
      proxy_cams=jnp.full((proxy_cap,), -1, jnp.int32), proxy_mask=jnp.zeros((proxy_cap,), bool))
  state = parts.initial_state(inf, tx, config, mesh, extra=extra,
                              load_weights=parts.pretrained_loader(config))
  replicated = parallel.replicated_sharding(mesh)
  evaluate = parts.embedding_evaluation(inf, config, mesh, data)

  def both(variables, images):
    out = model.apply(variables, images, train=False)
    return out['embedding'], out['part_embeddings']

  train_features_fn = embed.make_embed_fn(both, mesh)

  def train_features(state: TrainState) -> tuple[np.ndarray, np.ndarray]:
    """Normalised global [N, D] and part [N, P, D] features of the train split (eval mode)."""
    return embed.embed_split(train_features_fn, inf.variables(state.params, state.batch_stats),
                             train_split, config.input, config.eval.batch_size, mesh)

  def begin_epoch(state: TrainState, epoch: int) -> TrainState:
    if int(jax.device_get(state.extra.epoch)) == epoch:  # resumed inside this epoch
      return state
    feats_g, feats_p = train_features(state)
    labels = clustering.jaccard_dbscan(feats_g, pcfg.k1, pcfg.k2, pcfg.eps, pcfg.min_samples)
    k = clustering.num_clusters(labels)
    if k == 0:
      raise ValueError(f'epoch {epoch}: DBSCAN found no cluster (eps={pcfg.eps}, min_samples='
                       f'{pcfg.min_samples}); raise config.pplr.eps.')
    if k > cap:
      raise ValueError(f'epoch {epoch}: DBSCAN found {k} clusters, more than the classifier '
                       f'capacity config.pplr.max_clusters = {cap}; raise it.')
    scores = np.asarray(pplr_losses.cross_agreement(feats_g, feats_p,
                                                    k=min(pcfg.k, num_train - 1)))
    centroids = [clustering.cluster_centroids(feats_g, labels, k)] + [
        clustering.cluster_centroids(feats_p[:, p], labels, k) for p in range(num_parts)]
    params = reinit_classifiers(jax.device_get(state.params), centroids, num_parts)
    # Reported only: the hidden identities never reach the training state's inputs.
    nmi = clustering.clustering_nmi(train_split.pids, labels)
    new = dict(epoch=np.int32(epoch), labels=labels, scores=scores.astype(np.float32),
               num_clusters=np.int32(k), num_outliers=np.int32((labels < 0).sum()),
               nmi=np.float32(nmi))
    if cam:
      proxies, plabels, pcams, pmask = camera_proxies(
          np.concatenate([feats_g[None], feats_p.transpose(1, 0, 2)]), labels, camids, proxy_cap)
      new.update(proxies=proxies, proxy_labels=plabels, proxy_cams=pcams, proxy_mask=pmask)
    extra = jax.device_put(state.extra.replace(**{k: jnp.asarray(v) for k, v in new.items()}),
                           replicated)
    return state.replace(params=jax.device_put(params, replicated), extra=extra)

  batches = parts.pseudo_label_batches(config, train_split, steps)

  group = int(pcfg.bn_group_size)

  def forward(params, batch_stats, batch, rng):
    del rng
    outputs, mutated = apply_grouped(model, {'params': params, 'batch_stats': batch_stats},
                                     batch['image'], group)
    return outputs, mutated['batch_stats']

  def objective(outputs, batch, state: TrainState):
    extra = state.extra
    labels = extra.labels[batch['index']]
    class_mask = jnp.arange(cap) < extra.num_clusters
    inputs = {**outputs, 'features': outputs['embedding'],
              'agreement': extra.scores[batch['index']], 'class_mask': class_mask,
              'use_aals': state.step // steps >= pcfg.aals_epoch, 'camid': batch['camid'],
              'proxies': extra.proxies, 'proxy_labels': extra.proxy_labels,
              'proxy_cams': extra.proxy_cams, 'proxy_mask': extra.proxy_mask}
    terms = objectives.compute_losses(inputs, labels, config.loss)
    logits = jnp.where(class_mask, outputs['logits'], -jnp.inf)
    metrics = {**{f'loss_{k}': v for k, v in terms.items()},
               'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}
    return objectives.total_loss(terms), metrics, extra

  epoch_log = clustering.EpochLog(workdir, 'pplr_epochs', ('agreement', 'mean cross agreement'))

  def end_epoch(state: TrainState, epoch: int) -> TrainState:
    extra = jax.device_get(state.extra)
    clustered = extra.labels >= 0
    row = {'epoch': epoch + 1, 'step': int(state.step),
           'clusters': int(extra.num_clusters), 'outliers': int(extra.num_outliers),
           'nmi': float(extra.nmi),
           'agreement': [float(v) for v in extra.scores[clustered].mean(axis=0)]}
    every = int(pcfg.eval_every_epochs)
    if every and ((epoch + 1) % every == 0 or epoch + 1 == config.train.epochs):
      metrics = evaluate(state).metrics
      row['mAP'], row['rank1'] = float(metrics['mAP']), float(metrics['rank1'])
    if jax.process_index() == 0:
      epoch_log.write(row)
      epoch_log.plot()
    parts.log(f'pplr epoch {epoch + 1}: ' + ', '.join(
        f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}' for k, v in row.items()
        if k != 'agreement') + f', agreement {np.round(row["agreement"], 3).tolist()}')
    return state

  def report_sections(state, output, out_dir):
    """The per-epoch pseudo-labelling curves (clusters, outliers, NMI, agreement, test mAP)."""
    del state, output
    png = epoch_log.plot()
    if png is None:
      return []
    return [('Pseudo-labelling per epoch', 'Clusters and outliers of DBSCAN, clustering quality '
             'against the hidden training identities (NMI; reported only, never used in '
             'training), mean cross agreement per part, and test mAP after each epoch.',
             os.path.relpath(png, out_dir))]

  m = config.model
  describe = (
      f'PPLR{" with camera-aware proxies" if cam else ""} (Cho et al., CVPR 2022), '
      f'unsupervised: backbone `{m.backbone.name}` (width {m.backbone.width}, last stride '
      f'{m.backbone.last_stride}), global + {num_parts} part BNNeck branches, classifier '
      f'capacity {cap}; per epoch Jaccard (k1={pcfg.k1}, k2={pcfg.k2}) + DBSCAN '
      f'(eps={pcfg.eps}, min_samples={pcfg.min_samples}), cross agreement k={pcfg.k}, '
      f'beta={config.loss.pplr_pglr.beta}, AALS from epoch {pcfg.aals_epoch}'
      + (f', lam_cam={config.loss.camera_proxy.weight}' if cam else '') +
      f'; {config.train.epochs * steps} steps ({config.train.epochs} epochs x {steps}), batch '
      f'{config.batch_size} ({config.sampler.num_instances} per pseudo identity), input '
      f'{config.input.height}x{config.input.width}{parts.describe_options(config)}. Per-epoch '
      'clustering statistics and test mAP: pplr_epochs.jsonl, pplr_epochs.png.')
  return Method(
      name='pplr', inference=inf, state=state, tx=tx, schedule=schedule, forward=forward,
      objective=objective, steps_per_epoch=steps, batches=batches, evaluate=evaluate,
      fingerprint=parts.fingerprint(config, cap, num_parts=num_parts,
                                    proxy_capacity=proxy_cap, num_train=num_train),
      describe=describe, begin_epoch=begin_epoch, end_epoch=end_epoch,
      report_sections=report_sections)
