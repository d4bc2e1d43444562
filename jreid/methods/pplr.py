"""PPLR: unsupervised re-ID with part-based pseudo-label refinement (config.method='pplr').

Cho et al., "Part-based Pseudo Label Refinement for Unsupervised Person Re-identification",
CVPR 2022, and its camera-aware variant (`config.pplr.cam`). No identity label of the training
split is used in training: the train split is seen only through its images and cameras; the true
identities (`split.pids`) are read once per epoch to *report* the clustering quality (NMI).

Each epoch, in `begin_epoch`:
  1. global and part features (L2-normalised, post-BNNeck) of the whole train split, eval mode;
  2. Jaccard distance of k-reciprocal encodings (k1=30, k2=6) on the global features
     (`jreid.evaluation.rerank.jaccard_distance`), DBSCAN (eps, min_samples=4, precomputed);
     DBSCAN outliers get label -1 and are not sampled this epoch;
  3. cross-agreement scores [N, P] (top-k = 20 neighbour lists, self excluded);
  4. the first K columns of every classifier are set to the L2-normalised cluster centroids of
     its feature (K = clusters of the epoch);
  5. (cam variant) the L2-normalised mean feature of every (cluster, camera) pair: the proxies.
Pseudo labels, scores, K, proxies and the epoch's statistics are in `TrainState.extra` with fixed
shapes (labels int32 [N]; scores float32 [N, P]; proxies float32 [P + 1, M, D] padded to the
capacity M with a mask), so a run resumed mid-epoch continues with exactly the same targets.

Classifier capacity. The classifiers are allocated with `pplr.max_clusters` columns (default
N // min_samples, the most clusters DBSCAN can form); logits of the columns >= K are masked to
-inf inside the losses (`jreid.losses.pplr`), which equals the loss of an unpadded K-way
classifier. More clusters than the capacity is an error naming the key.

Sampling. `CameraAwareSampler`: each round visits the clusters in random order; for each it
draws an anchor image and K-1 more images of the cluster from cameras other than the anchor's
(all others if the cluster was seen by one camera only), as the reference
`RandomMultipleGallerySampler`. Rounds are concatenated and cut into batches of P x K, so a
batch at a round boundary may hold a cluster twice (the reference drops the tail of each pass).
The order is a pure function of (seed, epoch, pseudo labels).

Loss per step (reference `PPLRTrainer(CAM)`): PGLR cross-entropy of the global logits with the
part-refined soft target (beta) + mean over parts of label-smoothed CE (epochs < aals_epoch) or
agreement-aware label smoothing + soft-margin batch-hard triplet on the post-BN global feature
[+ lam_cam x (global + mean part) inter-camera proxy loss].

Per-GPU BatchNorm of the reference (4 GPUs x 16 images) is `pplr.bn_group_size`: the batch is
split into groups that each get their own BatchNorm statistics (a vmap over groups); running
statistics are the mean of the groups'.

Report: `pplr_epochs.jsonl` (one row per epoch: clusters, outliers, NMI against the hidden
labels, mean agreement per part, test mAP/rank-1 when evaluated) and `pplr_epochs.png` in the
workdir.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import types
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data_pipelines import input_pipeline
from jreid import parallel
from jreid import train
from jreid.evaluation import rerank
from jreid.losses import pplr as pplr_losses
from jreid.losses import triplet_loss
from jreid.models import pplr as pplr_model


class CameraAwareSampler:
  """P x K batches of pseudo identities, K images per cluster preferring other cameras.

  See the module docstring. Only images with label >= 0 are drawn. Provides what
  `input_pipeline.train_iterator` needs: `num_samples`, `batch_size`, `steps(start, stop)`;
  the steps are global steps of epoch `epoch` (steps_per_epoch each).
  """

  def __init__(self, labels: np.ndarray, camids: np.ndarray, batch_size: int,
               num_instances: int, seed: int, epoch: int, steps_per_epoch: int):
    labels = np.asarray(labels)
    camids = np.asarray(camids)
    if batch_size % num_instances:
      raise ValueError(f'batch_size {batch_size} is not divisible by sampler.num_instances '
                       f'{num_instances}; PPLR batches are P x K.')
    clusters = np.unique(labels[labels >= 0])
    if clusters.size == 0:
      raise ValueError('CameraAwareSampler: no clustered image to sample (every image is a '
                       'DBSCAN outlier); raise config.pplr.eps.')
    self.num_samples = len(labels)
    self.batch_size = int(batch_size)
    self.num_instances = int(num_instances)
    self.epoch = int(epoch)
    self.steps_per_epoch = int(steps_per_epoch)
    self.batches_per_epoch = self.steps_per_epoch
    self._members = [np.flatnonzero(labels == c) for c in clusters]
    self._camids = camids
    self._seed = int(seed)
    self._batches = self._epoch_batches()

  def _group(self, rng: np.random.Generator, members: np.ndarray) -> np.ndarray:
    k = self.num_instances
    anchor = members[rng.integers(len(members))]
    others = members[self._camids[members] != self._camids[anchor]]
    if others.size == 0:
      others = members[members != anchor]
    if others.size == 0:  # a single-image cluster: its image K times
      return np.full(k, anchor)
    picked = rng.choice(others, size=k - 1, replace=others.size < k)
    return np.concatenate([[anchor], picked])

  def _epoch_batches(self) -> np.ndarray:
    needed = self.steps_per_epoch * self.batch_size
    chunks, total, r = [], 0, 0
    while total < needed:
      rng = np.random.default_rng([self._seed, self.epoch, r])
      for c in rng.permutation(len(self._members)):
        group = self._group(rng, self._members[c])
        chunks.append(group)
        total += len(group)
      r += 1
    return np.concatenate(chunks)[:needed].reshape(self.steps_per_epoch, self.batch_size)

  def steps(self, start: int, stop: int) -> np.ndarray:
    """Image indices [stop - start, batch_size] of global steps start..stop-1 (this epoch)."""
    first = self.epoch * self.steps_per_epoch
    if not first <= start <= stop <= first + self.steps_per_epoch:
      raise ValueError(f'steps {start}..{stop} are not in epoch {self.epoch} '
                       f'(steps {first}..{first + self.steps_per_epoch}).')
    return self._batches[start - first:stop - first].astype(np.int64)


def cluster_centroids(features: np.ndarray, labels: np.ndarray, num_clusters: int) -> np.ndarray:
  """L2-normalised mean of the rows of each cluster 0..num_clusters-1, float32 [K, D]."""
  features = np.asarray(features, np.float64)
  keep = labels >= 0
  sums = np.zeros((num_clusters, features.shape[1]))
  np.add.at(sums, labels[keep], features[keep])
  counts = np.bincount(labels[keep], minlength=num_clusters)[:, None]
  means = sums / np.maximum(counts, 1)
  return (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(
      np.float32)


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


def pplr_objective(outputs: dict[str, jax.Array], labels: jax.Array, scores: jax.Array,
                   class_mask: jax.Array, use_aals: jax.Array, pcfg: Any,
                   cams: jax.Array | None = None, proxies: dict[str, jax.Array] | None = None):
  """Total PPLR loss and its terms for one batch of model outputs (see the module docstring)."""
  part_logits = outputs['part_logits']
  num_parts = part_logits.shape[1]
  terms = {'pglr': pplr_losses.pglr_loss(outputs['logits'], part_logits, labels, scores,
                                         pcfg.beta, class_mask)}
  part = []
  for p in range(num_parts):
    aals = pplr_losses.aals_loss(part_logits[:, p], labels, scores[:, p], class_mask)
    ce = pplr_losses.smoothed_ce(part_logits[:, p], labels, pcfg.epsilon, class_mask)
    part.append(jnp.where(use_aals, aals, ce))
  terms['part'] = sum(part) / num_parts
  terms['triplet'] = triplet_loss(outputs['embedding'], labels, margin=0.0)
  total = terms['pglr'] + terms['part'] + terms['triplet']
  if proxies is not None:
    feats = [outputs['embedding']] + [outputs['part_embeddings'][:, p] for p in range(num_parts)]
    cam_terms = [pplr_losses.camera_proxy_loss(
        f, labels, cams, proxies['proxies'][i], proxies['proxy_labels'], proxies['proxy_cams'],
        proxies['proxy_mask'], pcfg.num_hards, pcfg.temperature) for i, f in enumerate(feats)]
    terms['cam'] = cam_terms[0] + sum(cam_terms[1:]) / num_parts
    total = total + pcfg.lam_cam * terms['cam']
  return total, terms


class PPLRSetup(train.Setup):
  """The PPLR setup (see the module docstring); config keys in `config.pplr`."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: pathlib.Path):
    if 'pplr' not in config:
      raise ValueError("config.method='pplr' needs the config.pplr section: start from "
                       'configs/pplr.py.')
    self.pcfg = config.pplr
    self._extract = None
    self._sampler: CameraAwareSampler | None = None
    self._sampler_key = None
    # The base loads and validates the data, then calls the construction hooks below. (It also
    # sets num_classes from the train split's label count; PPLR uses `capacity` instead.)
    super().__init__(config, pathlib.Path(workdir))

  # Construction.

  @property
  def camids(self) -> np.ndarray:
    return np.asarray(self.train_split.camids, np.int32)

  @property
  def num_train(self) -> int:
    return len(self.train_split.camids)

  @property
  def num_parts(self) -> int:
    return int(self.pcfg.num_parts)

  @property
  def capacity(self) -> int:
    """Classifier columns: config.pplr.max_clusters, or N // min_samples."""
    return int(self.pcfg.max_clusters) or max(1, self.num_train // int(self.pcfg.min_samples))

  @property
  def proxy_capacity(self) -> int:
    """(cluster, camera) proxies held (1 when the camera loss is off)."""
    if not self.pcfg.cam:
      return 1
    num_cams = int(self.camids.max()) + 1
    return int(self.pcfg.max_proxies) or min(self.num_train, self.capacity * num_cams)

  def build_sampler(self):
    """Only the epoch length here: the sampler of an epoch is built from its pseudo labels."""
    steps = int(self.config.train.steps_per_epoch) or max(
        1, self.num_train // self.config.batch_size)
    return types.SimpleNamespace(batches_per_epoch=steps)

  def build_model(self):
    return pplr_model.build_pplr(self.config.model, self.capacity, self.num_parts)

  def feature_dim(self) -> int:
    return int(self.abstract_params()['bnneck']['scale'].shape[0])

  def initial_extra(self) -> dict[str, Any]:
    n, p, d, m = self.num_train, self.num_parts, self.feature_dim(), self.proxy_capacity
    return {
        'epoch': jnp.array(-1, jnp.int32),  # the epoch whose pseudo labels these are
        'labels': jnp.full((n,), -1, jnp.int32),
        'scores': jnp.zeros((n, p), jnp.float32),
        'num_clusters': jnp.array(0, jnp.int32),
        'num_outliers': jnp.array(0, jnp.int32),
        'nmi': jnp.array(0.0, jnp.float32),
        'proxies': jnp.zeros((p + 1, m, d), jnp.float32),
        'proxy_labels': jnp.full((m,), -1, jnp.int32),
        'proxy_cams': jnp.full((m,), -1, jnp.int32),
        'proxy_mask': jnp.zeros((m,), bool),
    }

  def create_state(self) -> train.TrainState:
    state = train.create_train_state(self.model, self.tx, self.config, self.mesh)
    extra = jax.device_put(self.initial_extra(), parallel.replicated_sharding(self.mesh))
    return state.replace(extra=extra)

  def fingerprint(self) -> dict[str, Any]:
    fp = train.model_fingerprint(self.config, self.capacity)
    fp.update(method='pplr', num_parts=self.num_parts, proxy_capacity=self.proxy_capacity,
              num_train=self.num_train)
    return fp

  # Pseudo-labelling.

  def extract_train_features(self, state: train.TrainState) -> tuple[np.ndarray, np.ndarray]:
    """Normalised global [N, D] and part [N, P, D] features of the train split (eval mode)."""
    if self._extract is None:
      model = self.model

      def predict(variables, batch):
        out = model.apply(variables, batch['image'], train=False)
        return out['embedding'], out['part_embeddings'], batch['index'], batch['mask']

      self._extract = jax.jit(predict, out_shardings=parallel.replicated_sharding(self.mesh))
    variables = self.variables(state)
    feats_g = feats_p = None
    for batch in input_pipeline.eval_iterator(
        self.train_split, self.config.input, batch_size=self.config.eval.batch_size,
        process_index=jax.process_index(), process_count=jax.process_count()):
      g, p, index, mask = jax.device_get(
          self._extract(variables, parallel.shard_batch(batch, self.mesh)))
      if feats_g is None:
        feats_g = np.zeros((self.num_train, g.shape[-1]), np.float32)
        feats_p = np.zeros((self.num_train, *p.shape[1:]), np.float32)
      feats_g[index[mask]] = g[mask]
      feats_p[index[mask]] = p[mask]
    return feats_g, feats_p

  def pseudo_labels(self, feats_g: np.ndarray) -> np.ndarray:
    """DBSCAN on the Jaccard distance of the global features; int32 [N], -1 for outliers."""
    from sklearn.cluster import DBSCAN  # pylint: disable=g-import-not-at-top
    pcfg = self.pcfg
    dist = rerank.jaccard_distance(feats_g, k1=min(pcfg.k1, self.num_train), k2=pcfg.k2,
                                   metric='cosine')
    ids = DBSCAN(eps=pcfg.eps, min_samples=pcfg.min_samples, metric='precomputed',
                 n_jobs=-1).fit_predict(dist.astype(np.float64))
    return ids.astype(np.int32)

  def begin_epoch(self, state: train.TrainState, epoch: int) -> train.TrainState:
    if int(jax.device_get(state.extra['epoch'])) == epoch:  # resumed inside this epoch
      return state
    from sklearn.metrics import normalized_mutual_info_score  # pylint: disable=g-import-not-at-top
    pcfg = self.pcfg
    feats_g, feats_p = self.extract_train_features(state)
    labels = self.pseudo_labels(feats_g)
    k = int(labels.max()) + 1 if (labels >= 0).any() else 0
    if k == 0:
      raise ValueError(f'epoch {epoch}: DBSCAN found no cluster (eps={pcfg.eps}, min_samples='
                       f'{pcfg.min_samples}); raise config.pplr.eps.')
    if k > self.capacity:
      raise ValueError(f'epoch {epoch}: DBSCAN found {k} clusters, more than the classifier '
                       f'capacity config.pplr.max_clusters = {self.capacity}; raise it.')
    scores = np.asarray(pplr_losses.cross_agreement(
        feats_g, feats_p, k=min(pcfg.k, self.num_train - 1)))
    centroids = [cluster_centroids(feats_g, labels, k)] + [
        cluster_centroids(feats_p[:, p], labels, k) for p in range(self.num_parts)]
    params = reinit_classifiers(jax.device_get(state.params), centroids, self.num_parts)
    clustered = labels >= 0
    # Reported only: the hidden identities never reach the training state's inputs.
    nmi = normalized_mutual_info_score(np.asarray(self.train_split.pids)[clustered],
                                       labels[clustered])
    extra = dict(jax.device_get(state.extra))
    extra.update(epoch=np.int32(epoch), labels=labels, scores=scores.astype(np.float32),
                 num_clusters=np.int32(k), num_outliers=np.int32((~clustered).sum()),
                 nmi=np.float32(nmi))
    if pcfg.cam:
      proxies, plabels, pcams, pmask = camera_proxies(
          np.concatenate([feats_g[None], feats_p.transpose(1, 0, 2)]), labels, self.camids,
          self.proxy_capacity)
      extra.update(proxies=proxies, proxy_labels=plabels, proxy_cams=pcams, proxy_mask=pmask)
    replicated = parallel.replicated_sharding(self.mesh)
    extra = jax.device_put({key: jnp.asarray(v) for key, v in extra.items()}, replicated)
    return state.replace(params=jax.device_put(params, replicated), extra=extra)

  # Training.

  def train_batches(self, state: train.TrainState, start_step: int, stop_step: int):
    config = self.config
    n = self.steps_per_epoch
    epoch = start_step // n
    labels = np.asarray(jax.device_get(state.extra['labels']))
    key = (epoch, labels.tobytes())
    if self._sampler_key != key:
      self._sampler = CameraAwareSampler(labels, self.camids, config.batch_size,
                                         config.sampler.num_instances, config.seed, epoch, n)
      self._sampler_key = key
    # The pipeline sees a view of the split without identities: labels and pids are the
    # pseudo labels (the true ones are never read for training).
    view = dataclasses.replace(self.train_split, labels=labels, pids=labels)
    for batch in input_pipeline.train_iterator(
        view, self._sampler, config.input, config.augment, seed=config.seed,
        start_step=start_step, num_steps=stop_step, process_index=jax.process_index(),
        process_count=jax.process_count(), num_parallel_calls=config.data.num_parallel_calls,
        prefetch=config.data.prefetch):
      yield {'image': batch['image'], 'index': batch['index'],
             'camid': self.camids[batch['index']]}

  def make_train_step(self):
    model, tx, schedule, pcfg = self.model, self.tx, self.schedule, self.pcfg
    n = self.steps_per_epoch
    cam = bool(pcfg.cam)
    group = int(pcfg.bn_group_size)

    def step(state: train.TrainState, batch: dict[str, jax.Array]):
      extra = state.extra
      labels = extra['labels'][batch['index']]
      scores = extra['scores'][batch['index']]
      class_mask = jnp.arange(self.capacity) < extra['num_clusters']
      use_aals = state.step // n >= pcfg.aals_epoch
      proxies = None
      if cam:
        proxies = {k: extra[k] for k in ('proxies', 'proxy_labels', 'proxy_cams', 'proxy_mask')}

      def loss_fn(params):
        outputs, mutated = apply_grouped(
            model, {'params': params, 'batch_stats': state.batch_stats}, batch['image'], group)
        total, terms = pplr_objective(outputs, labels, scores, class_mask, use_aals, pcfg,
                                      batch['camid'], proxies)
        return total, (terms, outputs, mutated['batch_stats'])

      (loss, (terms, outputs, batch_stats)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(state.params)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      logits = jnp.where(class_mask, outputs['logits'], -jnp.inf)
      metrics = {'loss': loss, **{f'loss_{k}': v for k, v in terms.items()},
                 'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels),
                 'grad_norm': optax.global_norm(grads), 'lr': schedule(state.step)}
      return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                           opt_state=opt_state), metrics

    replicated = parallel.replicated_sharding(self.mesh)
    return jax.jit(step, donate_argnums=(0,),
                   in_shardings=(replicated, parallel.data_sharding(self.mesh)),
                   out_shardings=(replicated, replicated))

  # Epoch report.

  def end_epoch(self, state: train.TrainState, epoch: int) -> train.TrainState:
    extra = jax.device_get({k: state.extra[k] for k in ('num_clusters', 'num_outliers', 'nmi',
                                                         'scores', 'labels')})
    clustered = extra['labels'] >= 0
    row = {'epoch': epoch + 1, 'step': int(state.step),
           'clusters': int(extra['num_clusters']), 'outliers': int(extra['num_outliers']),
           'nmi': float(extra['nmi']),
           'agreement': [float(v) for v in extra['scores'][clustered].mean(axis=0)]}
    every = int(self.pcfg.eval_every_epochs)
    if every and ((epoch + 1) % every == 0 or epoch + 1 == self.config.train.epochs):
      metrics = self.evaluate(state).metrics
      row['mAP'], row['rank1'] = float(metrics['mAP']), float(metrics['rank1'])
    if jax.process_index() == 0:
      write_epoch_row(self.workdir, row)
      plot_epochs(self.workdir)
    print(f'pplr epoch {epoch + 1}: ' + ', '.join(
        f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}' for k, v in row.items()
        if k != 'agreement') + f', agreement {np.round(row["agreement"], 3).tolist()}', flush=True)
    return state

  def report_sections(self, state, output):
    """The per-epoch pseudo-labelling curves (clusters, outliers, NMI, agreement, test mAP)."""
    del state, output
    if plot_epochs(self.workdir) is None:
      return []
    return [('Pseudo-labelling per epoch', 'Clusters and outliers of DBSCAN, clustering quality '
             'against the hidden training identities (NMI; reported only, never used in '
             'training), mean cross agreement per part, and test mAP after each epoch.',
             'pplr_epochs.png')]

  def describe(self) -> str:
    config, pcfg = self.config, self.pcfg
    return (f'PPLR{" with camera-aware proxies" if pcfg.cam else ""} (Cho et al., CVPR 2022), '
            f'unsupervised: backbone `{config.model.backbone.name}` (width '
            f'{config.model.backbone.width}, last stride {config.model.backbone.last_stride}), '
            f'global + {self.num_parts} part BNNeck branches, classifier capacity '
            f'{self.capacity}; per epoch Jaccard (k1={pcfg.k1}, k2={pcfg.k2}) + DBSCAN '
            f'(eps={pcfg.eps}, min_samples={pcfg.min_samples}), cross agreement k={pcfg.k}, '
            f'beta={pcfg.beta}, AALS from epoch {pcfg.aals_epoch}'
            + (f', lam_cam={pcfg.lam_cam}' if pcfg.cam else '') +
            f'; {self.total_steps} steps ({config.train.epochs} epochs x {self.steps_per_epoch}),'
            f' batch {config.batch_size} ({config.sampler.num_instances} per pseudo identity), '
            f'input {config.input.height}x{config.input.width}. Per-epoch clustering statistics '
            'and test mAP: pplr_epochs.jsonl, pplr_epochs.png.')


def write_epoch_row(workdir: pathlib.Path, row: dict[str, Any]) -> None:
  """Adds (or replaces, after a resume) the row of `row['epoch']` in pplr_epochs.jsonl."""
  path = pathlib.Path(workdir) / 'pplr_epochs.jsonl'
  rows = read_epoch_rows(workdir)
  rows = [r for r in rows if r['epoch'] != row['epoch']] + [row]
  rows.sort(key=lambda r: r['epoch'])
  tmp = path.with_suffix('.jsonl.tmp')
  tmp.write_text(''.join(json.dumps(r, sort_keys=True) + '\n' for r in rows))
  tmp.replace(path)


def read_epoch_rows(workdir: pathlib.Path) -> list[dict[str, Any]]:
  path = pathlib.Path(workdir) / 'pplr_epochs.jsonl'
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_epochs(workdir: pathlib.Path) -> pathlib.Path | None:
  """pplr_epochs.png: clusters/outliers, NMI, mean agreement per part, test mAP per epoch (the
  untrained network's mAP at epoch 0 when baselines.json has it)."""
  rows = read_epoch_rows(workdir)
  if not rows:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  epochs = [r['epoch'] for r in rows]
  fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
  axes[0].plot(epochs, [r['clusters'] for r in rows], 'o-', label='clusters')
  axes[0].plot(epochs, [r['outliers'] for r in rows], 's-', label='outliers')
  axes[0].set_title('pseudo identities')
  axes[0].legend()
  axes[1].plot(epochs, [r['nmi'] for r in rows], 'o-')
  axes[1].set_title('NMI vs hidden labels (report only)')
  for p in range(len(rows[0]['agreement'])):
    axes[2].plot(epochs, [r['agreement'][p] for r in rows], 'o-', label=f'part {p}')
  axes[2].set_title('mean cross agreement')
  axes[2].legend()
  points = [(r['epoch'], r['mAP']) for r in rows if 'mAP' in r]
  baselines = pathlib.Path(workdir) / 'baselines.json'
  if baselines.exists():
    untrained = json.loads(baselines.read_text()).get('untrained')
    if untrained:
      points = [(0, untrained['mAP'])] + points
  if points:
    axes[3].plot([e for e, _ in points], [100 * v for _, v in points], 'o-')
  axes[3].set_title('test mAP (%)')
  for ax in axes:
    ax.set_xlabel('epoch')
    ax.grid(alpha=0.3)
  fig.tight_layout()
  path = pathlib.Path(workdir) / 'pplr_epochs.png'
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path
