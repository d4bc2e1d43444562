"""Cluster Contrast: unsupervised re-ID with a cluster-level memory (config.method=
'cluster_contrast').

Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification", ACCV 2022. No identity
label of the training split is used in training (the true identities are read once per epoch to
*report* the clustering quality, NMI).

Each epoch (`begin_epoch`): the L2-normalised embeddings of the whole train split (eval mode),
pseudo labels by DBSCAN on their k-reciprocal Jaccard distance (`jreid.clustering`, shared with
PPLR; outliers are not sampled), and the memory set to the L2-normalised cluster centroids. Each
step: P x K batches over the pseudo identities (`CameraAwareSampler`, as the reference's
RandomMultipleGallerySampler), the InfoNCE of every normalised embedding against the memory
(temperature 0.05), then the memory updated from the batch with momentum m (no gradient):

  'mean': for every sample in batch order, c_y <- normalise(m c_y + (1 - m) f)   (ClusterMemory)
  'hard': for every pseudo identity y of the batch, its sample least similar to c_y (the hardest)
          alone updates it, c_y <- normalise(m c_y + (1 - m) f_hard)   (ClusterMemory, --use-hard)

The memory has a fixed capacity (`cluster_contrast.max_clusters`, default N // min_samples, the
most clusters DBSCAN can form); rows >= K are masked out of the softmax. Pseudo labels and the
memory are the typed `ClusterContrastState`, so a resumed run continues exactly.

Sections owned: `loss` ('cluster_memory'), `sampler` (K), `cluster_contrast`. The model is the
shared Baseline (backbone, GeM pooling, BNNeck) without a classifier.
"""

from __future__ import annotations

import os
import pathlib

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jreid import clustering
from jreid import embed
from jreid import models
from jreid import objectives
from jreid import parallel
from jreid import parts
from jreid.method import Data, Inference, Method, TrainState

MEMORY_UPDATES = ('mean', 'hard')


def _normalize(x: jnp.ndarray) -> jnp.ndarray:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cluster_contrast_loss(features: jnp.ndarray, labels: jnp.ndarray, memory: jnp.ndarray,
                          memory_mask: jnp.ndarray, temperature: float = 0.05) -> jnp.ndarray:
  """Mean over the batch of -log softmax(normalise(f) . memory^T / temperature)[label].

  Args:
    features: [B, D] embeddings (normalised here).
    labels: [B] pseudo labels in [0, K).
    memory: [M, D] L2-normalised centroids (constants: no gradient reaches them).
    memory_mask: [M] bool, True for the K rows in use.
    temperature: tau of the InfoNCE.
  """
  f = _normalize(features.astype(jnp.float32))
  logits = f @ jax.lax.stop_gradient(memory).T / temperature
  logits = jnp.where(memory_mask[None, :], logits, -jnp.inf)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def update_memory(memory: jnp.ndarray, features: jnp.ndarray, labels: jnp.ndarray,
                  momentum: float, mode: str = 'mean') -> jnp.ndarray:
  """The memory after one batch (module docstring); features normalised here, no gradient.

  Args:
    memory: [M, D] L2-normalised centroids.
    features: [B, D] the batch's embeddings.
    labels: [B] their pseudo labels.
    momentum: m, the weight of the old centroid.
    mode: 'mean' (every sample, in batch order) or 'hard' (the hardest sample per identity).
  """
  f = jax.lax.stop_gradient(_normalize(features.astype(jnp.float32)))
  if mode == 'mean':

    def one(i, mem):
      y = labels[i]
      return mem.at[y].set(_normalize(momentum * mem[y] + (1.0 - momentum) * f[i]))

    return jax.lax.fori_loop(0, f.shape[0], one, memory)
  if mode == 'hard':
    b, num = f.shape[0], memory.shape[0]
    sim = jnp.sum(f * memory[labels], axis=-1)  # Each sample's similarity to its centroid.
    lowest = jax.ops.segment_min(sim, labels, num_segments=num)
    # The first sample of least similarity per identity (np.argmin in the reference).
    first = jax.ops.segment_min(jnp.where(sim <= lowest[labels], jnp.arange(b), b), labels,
                                num_segments=num)
    present = first < b
    hard = f[jnp.minimum(first, b - 1)]
    updated = _normalize(momentum * memory + (1.0 - momentum) * hard)
    return jnp.where(present[:, None], updated, memory)
  raise ValueError(f'config.cluster_contrast.memory_update must be one of {MEMORY_UPDATES}, got '
                   f'{mode!r}.')


@objectives.register('cluster_memory', temperature=0.05)
def _cluster_memory(inputs, labels, cfg):
  """Cluster Contrast's InfoNCE of the embedding over the centroid memory."""
  return cluster_contrast_loss(inputs['embedding'], labels, inputs['memory'],
                               inputs['memory_mask'], cfg.temperature)


def default_config() -> ml_collections.ConfigDict:
  """The sections this method owns, at the reference's Market-1501 values."""
  c = ml_collections.ConfigDict()
  c.method = 'cluster_contrast'
  c.model = models.default_model_config()
  c.model.pooling.name = 'gem'  # The reference's --pooling-type default.
  c.model.head.name = 'bnneck'
  c.loss = objectives.loss_config(('cluster_memory',))
  c.sampler = ml_collections.ConfigDict({'num_instances': 16})  # K per pseudo identity.
  cc = c.cluster_contrast = ml_collections.ConfigDict()
  cc.k1 = 30  # Jaccard distance (k-reciprocal encoding) neighbourhood.
  cc.k2 = 6  # Jaccard distance local query expansion.
  cc.eps = 0.6  # DBSCAN radius on the Jaccard distance.
  cc.min_samples = 4  # DBSCAN min_samples.
  cc.momentum = 0.1  # Memory update: weight of the old centroid.
  cc.memory_update = 'mean'  # 'mean' | 'hard' (module docstring).
  cc.max_clusters = 0  # Memory capacity; 0 = len(train) // min_samples.
  cc.eval_every_epochs = 1  # Test mAP into cluster_contrast_epochs.jsonl; 0 = never.
  return c


def check_config(config: ml_collections.ConfigDict) -> None:
  cc = config.cluster_contrast
  if cc.memory_update not in MEMORY_UPDATES:
    raise ValueError(f'config.cluster_contrast.memory_update must be one of {MEMORY_UPDATES}, '
                     f'got {cc.memory_update!r}.')
  if not 0.0 <= cc.momentum <= 1.0:
    raise ValueError(f'config.cluster_contrast.momentum={cc.momentum} must be in [0, 1].')
  if config.model.name != 'baseline' or config.model.head.name not in ('bnneck', 'linear'):
    raise ValueError("config.method='cluster_contrast' trains a Baseline (config.model.name="
                     "'baseline') with a 'bnneck' or 'linear' head and no classifier.")


@flax.struct.dataclass
class ClusterContrastState:
  """The epoch's pseudo labels and the centroid memory (checkpointed; fixed shapes)."""
  epoch: jax.Array  # The epoch whose pseudo labels these are (-1: none yet).
  labels: jax.Array  # int32 [N], -1 for outliers.
  num_clusters: jax.Array
  num_outliers: jax.Array
  nmi: jax.Array  # Reported only.
  memory: jax.Array  # float32 [M, D] L2-normalised centroids.
  memory_mask: jax.Array  # bool [M]


def inference(config: ml_collections.ConfigDict, num_classes: int) -> Inference:
  """The Baseline without a classifier; embeddings are its post-BNNeck features."""
  del num_classes  # No classifier: the memory holds one centroid per pseudo identity.
  return parts.image_inference(models.build_model(config.model, 0), config)


def build(config: ml_collections.ConfigDict, data: Data, mesh: jax.sharding.Mesh,
          workdir: pathlib.Path) -> Method:
  cc = config.cluster_contrast
  train_split = data.train
  camids = np.asarray(train_split.camids, np.int32)
  num_train = len(camids)
  capacity = int(cc.max_clusters) or max(1, num_train // int(cc.min_samples))
  inf = inference(config, 0)
  model = inf.model
  steps = int(config.train.steps_per_epoch) or max(1, num_train // config.batch_size)
  tx, schedule = parts.optimizer(config, steps, parts.abstract_params(inf))
  dim = jax.eval_shape(lambda v: inf.embed(v, jnp.zeros(
      (1, config.input.height, config.input.width, 3), jnp.uint8)),
                       jax.eval_shape(inf.init, jax.random.key(0))).shape[-1]
  extra = ClusterContrastState(
      epoch=jnp.array(-1, jnp.int32), labels=jnp.full((num_train,), -1, jnp.int32),
      num_clusters=jnp.array(0, jnp.int32), num_outliers=jnp.array(0, jnp.int32),
      nmi=jnp.array(0.0, jnp.float32), memory=jnp.zeros((capacity, dim), jnp.float32),
      memory_mask=jnp.zeros((capacity,), bool))
  state = parts.initial_state(inf, tx, config, mesh, extra=extra,
                              load_weights=parts.pretrained_loader(config))
  replicated = parallel.replicated_sharding(mesh)
  evaluate = parts.embedding_evaluation(inf, config, mesh, data)
  features_fn = embed.make_embed_fn(inf.embed, mesh)

  def begin_epoch(state: TrainState, epoch: int) -> TrainState:
    if int(jax.device_get(state.extra.epoch)) == epoch:  # resumed inside this epoch
      return state
    feats = embed.embed_split(features_fn, inf.variables(state.params, state.batch_stats),
                              train_split, config.input, config.eval.batch_size, mesh)
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    labels = clustering.jaccard_dbscan(feats, cc.k1, cc.k2, cc.eps, cc.min_samples)
    k = clustering.num_clusters(labels)
    if k == 0:
      raise ValueError(f'epoch {epoch}: DBSCAN found no cluster (eps={cc.eps}, min_samples='
                       f'{cc.min_samples}); raise config.cluster_contrast.eps.')
    if k > capacity:
      raise ValueError(f'epoch {epoch}: DBSCAN found {k} clusters, more than the memory capacity '
                       f'config.cluster_contrast.max_clusters = {capacity}; raise it.')
    memory = np.zeros((capacity, dim), np.float32)
    memory[:k] = clustering.cluster_centroids(feats, labels, k)
    new = state.extra.replace(
        epoch=jnp.int32(epoch), labels=jnp.asarray(labels), num_clusters=jnp.int32(k),
        num_outliers=jnp.int32((labels < 0).sum()),
        # Reported only: the hidden identities never reach the training state's inputs.
        nmi=jnp.float32(clustering.clustering_nmi(train_split.pids, labels)),
        memory=jnp.asarray(memory), memory_mask=jnp.arange(capacity) < k)
    return state.replace(extra=jax.device_put(new, replicated))

  batches = parts.pseudo_label_batches(config, train_split, steps)

  def forward(params, batch_stats, batch, rng):
    outputs, mutated = model.apply({'params': params, 'batch_stats': batch_stats},
                                   batch['image'], train=True, mutable=['batch_stats'],
                                   rngs={'dropout': rng})
    return outputs, mutated['batch_stats']

  def objective(outputs, batch, state: TrainState):
    extra = state.extra
    labels = extra.labels[batch['index']]
    inputs = {**outputs, 'memory': extra.memory, 'memory_mask': extra.memory_mask}
    terms = objectives.compute_losses(inputs, labels, config.loss)
    sim = _normalize(outputs['embedding']) @ extra.memory.T
    accuracy = jnp.mean(jnp.argmax(jnp.where(extra.memory_mask, sim, -jnp.inf), -1) == labels)
    memory = update_memory(extra.memory, outputs['embedding'], labels, cc.momentum,
                           cc.memory_update)
    metrics = {**{f'loss_{k}': v for k, v in terms.items()}, 'accuracy': accuracy}
    return objectives.total_loss(terms), metrics, extra.replace(memory=memory)

  epoch_log = clustering.EpochLog(workdir, 'cluster_contrast_epochs')

  def end_epoch(state: TrainState, epoch: int) -> TrainState:
    extra = jax.device_get(state.extra)
    row = {'epoch': epoch + 1, 'step': int(state.step), 'clusters': int(extra.num_clusters),
           'outliers': int(extra.num_outliers), 'nmi': float(extra.nmi)}
    every = int(cc.eval_every_epochs)
    if every and ((epoch + 1) % every == 0 or epoch + 1 == config.train.epochs):
      metrics = evaluate(state, post=False).metrics
      row['mAP'], row['rank1'] = float(metrics['mAP']), float(metrics['rank1'])
    if jax.process_index() == 0:
      epoch_log.write(row)
      epoch_log.plot()
    parts.log(f'cluster contrast epoch {epoch + 1}: ' + ', '.join(
        f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}' for k, v in row.items()))
    return state

  def report_sections(state, output, out_dir):
    del state, output
    png = epoch_log.plot()
    if png is None:
      return []
    return [('Pseudo-labelling per epoch', 'Clusters and outliers of DBSCAN, clustering quality '
             'against the hidden training identities (NMI; reported only, never used in '
             'training) and test mAP after each epoch.', os.path.relpath(png, out_dir))]

  m = config.model
  describe = (
      f'Cluster Contrast (Dai et al., ACCV 2022), unsupervised: backbone `{m.backbone.name}` '
      f'(width {m.backbone.width}, last stride {m.backbone.last_stride}), pooling '
      f'`{m.pooling.name}`, head `{m.head.name}`, centroid memory of capacity {capacity} '
      f'({cc.memory_update} update, momentum {cc.momentum}, temperature '
      f'{config.loss.cluster_memory.temperature}); per epoch Jaccard (k1={cc.k1}, k2={cc.k2}) + '
      f'DBSCAN (eps={cc.eps}, min_samples={cc.min_samples}); {config.train.epochs * steps} steps '
      f'({config.train.epochs} epochs x {steps}), batch {config.batch_size} '
      f'({config.sampler.num_instances} per pseudo identity), input {config.input.height}x'
      f'{config.input.width}{parts.describe_options(config)}. Per-epoch clustering statistics '
      'and test mAP: cluster_contrast_epochs.jsonl, cluster_contrast_epochs.png.')
  return Method(
      name='cluster_contrast', inference=inf, state=state, tx=tx, schedule=schedule,
      forward=forward, objective=objective, steps_per_epoch=steps, batches=batches,
      evaluate=evaluate,
      fingerprint=parts.fingerprint(config, 0, memory_capacity=capacity, num_train=num_train),
      describe=describe, begin_epoch=begin_epoch, end_epoch=end_epoch,
      report_sections=report_sections)
