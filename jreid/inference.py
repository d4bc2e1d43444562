"""Feature extraction over a split and query/gallery evaluation.

Evaluation batches have a fixed size, padded at the end with a mask, so the prediction function is
compiled once. Each process feeds its share of every global batch; embeddings, indices and masks
come back replicated (`out_shardings=P()`), so every host ends with the features of the whole split.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np

from data_pipelines import input_pipeline
from data_pipelines.types import ReIDSplit
from jreid import parallel
from jreid.evaluation import RankResult, alpha_query_expansion, compute_distance
from jreid.evaluation import evaluate_features, evaluate_rank, rerank_features


def make_predict_fn(model, mesh: jax.sharding.Mesh, output: str = 'embedding', flip: bool = False):
  """jit(variables, batch) -> (model output `output`, index, mask), replicated on every device.

  flip: average the output with that of the horizontally flipped images (flip test).
  """

  def predict(variables, batch):
    emb = model.apply(variables, batch['image'], train=False)[output]
    if flip:
      emb = (emb + model.apply(variables, batch['image'][:, :, ::-1], train=False)[output]) / 2
    return emb, batch['index'], batch['mask']

  return jax.jit(predict, out_shardings=parallel.replicated_sharding(mesh))


def extract_features(predict, variables: dict[str, Any], split: ReIDSplit,
                     input_cfg: ml_collections.ConfigDict, batch_size: int,
                     mesh: jax.sharding.Mesh) -> np.ndarray:
  """The predicted output of every image of `split`, float32 [N, ...] (embeddings [N, D]),
  in split order."""
  parallel.check_batch_size(batch_size, mesh, what='eval.batch_size')
  feats: np.ndarray | None = None
  seen = np.zeros(len(split), bool)
  for batch in input_pipeline.eval_iterator(split, input_cfg, batch_size=batch_size,
                                            process_index=jax.process_index(),
                                            process_count=jax.process_count()):
    emb, index, mask = jax.device_get(predict(variables, parallel.shard_batch(batch, mesh)))
    if feats is None:
      feats = np.zeros((len(split), *emb.shape[1:]), np.float32)
    feats[index[mask]] = emb[mask]
    seen[index[mask]] = True
  if feats is None or not seen.all():
    raise RuntimeError(f'feature extraction of split {split.name!r} missed '
                       f'{int((~seen).sum())} of {len(split)} images')
  return feats


def rank_metrics(query_feats: np.ndarray, gallery_feats: np.ndarray, query: ReIDSplit,
                 gallery: ReIDSplit, metric: str, max_rank: int) -> RankResult:
  return evaluate_features(query_feats, gallery_feats, query.pids, gallery.pids, query.camids,
                           gallery.camids, metric=metric, max_rank=max_rank)


@dataclasses.dataclass
class EvalOutput:
  """What an evaluation returns: metrics for the table, and what the report plots.

  Attributes:
    metrics: flat name -> value (rank1, mAP, ...; methods may add e.g. tlift_mAP).
    result: the rank metrics with CMC and per-query values.
    query_features, gallery_features: embeddings [Q, D], [G, D] (feature-based methods), or None.
    distmat: query x gallery distances [Q, G] when the method computes them directly (QAConv),
      else None (distances come from the features).
    metric: 'cosine' | 'euclidean' for the features.
    extra_rows: further rows of the results table, e.g. {'rerank': metrics} (post-processing).
    gallery: the gallery the distances refer to, when not the dataset's whole gallery split.
  """

  metrics: dict[str, float]
  result: RankResult
  query_features: np.ndarray | None = None
  gallery_features: np.ndarray | None = None
  distmat: np.ndarray | None = None
  metric: str = 'cosine'
  extra_rows: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
  gallery: ReIDSplit | None = None

  def query_distances(self, i: int) -> np.ndarray:
    """Distances of query i to every gallery item, float [G]."""
    if self.distmat is not None:
      return np.asarray(self.distmat[i])
    return compute_distance(self.query_features[i:i + 1], self.gallery_features,
                            self.metric)[0]


def evaluate_splits(model, variables: dict[str, Any], query: ReIDSplit, gallery: ReIDSplit,
                    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> EvalOutput:
  """Extracts query and gallery features and computes the Market-protocol rank metrics.

  `config.eval` options: `flip` (average with the flipped images' features), `roc` (TPR at
  FPR 1e-4/1e-3/1e-2 and the curve for the report), and the post-processing row
  `aqe` (FastReID's alpha query expansion of query and gallery) then `rerank` (k-reciprocal
  re-ranking, scalable mode), reported next to the plain result.
  """
  ev = config.eval
  predict = make_predict_fn(model, mesh, flip=ev.get('flip', False))
  qf = extract_features(predict, variables, query, config.input, ev.batch_size, mesh)
  gf = extract_features(predict, variables, gallery, config.input, ev.batch_size, mesh)
  result = evaluate_features(qf, gf, query.pids, gallery.pids, query.camids, gallery.camids,
                             metric=ev.metric, max_rank=ev.max_rank, roc=ev.get('roc', False))
  output = EvalOutput(result.to_dict(), result, qf, gf, metric=ev.metric)
  steps = []
  pq, pg = qf, gf
  if ev.get('aqe', False):
    pq, pg = alpha_query_expansion(qf, gf, qe_times=ev.aqe_times, qe_k=ev.aqe_k,
                                   alpha=ev.aqe_alpha)
    steps.append('aqe')
  if ev.get('rerank', False):
    dist = rerank_features(pq, pg, k1=ev.rerank_k1, k2=ev.rerank_k2,
                           lambda_value=ev.rerank_lambda, metric=ev.metric)
    post = evaluate_rank(dist, query.pids, gallery.pids, query.camids, gallery.camids,
                         max_rank=ev.max_rank)
    steps.append('rerank')
  elif steps:
    post = evaluate_features(pq, pg, query.pids, gallery.pids, query.camids, gallery.camids,
                             metric=ev.metric, max_rank=ev.max_rank)
  if steps:
    output.extra_rows[' + '.join(steps)] = post.to_dict()
  return output
