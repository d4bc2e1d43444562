"""A trained state on query/gallery splits: metrics for the table and what the report plots."""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from jreid.evaluation import RankResult, alpha_query_expansion, compute_distance
from jreid.evaluation import evaluate_features, evaluate_rank, rerank_features


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
    query, gallery: the splits the distances refer to (the gallery may be a subset of the
      dataset's gallery split, e.g. QAConv's without junk images).
  """

  metrics: dict[str, float]
  result: RankResult
  query_features: np.ndarray | None = None
  gallery_features: np.ndarray | None = None
  distmat: np.ndarray | None = None
  metric: str = 'cosine'
  extra_rows: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
  query: Any = None
  gallery: Any = None

  def query_distances(self, i: int) -> np.ndarray:
    """Distances of query i to every gallery item, float [G]."""
    if self.distmat is not None:
      return np.asarray(self.distmat[i])
    return compute_distance(self.query_features[i:i + 1], self.gallery_features,
                            self.metric)[0]


def protocol_kwargs(eval_cfg: ml_collections.ConfigDict, seed: int = 0) -> dict[str, Any]:
  """The ranking protocol of `config.eval` as keyword arguments of `evaluate_rank`:
  `protocol` ('market' or 'cuhk03'), and for 'cuhk03' its repeats and sampling seed."""
  protocol = eval_cfg.get('protocol', 'market')
  if protocol == 'market':
    return {'protocol': 'market'}
  return {'protocol': protocol, 'num_repeats': int(eval_cfg.get('cuhk03_repeats', 10)),
          'seed': int(seed)}


def rank_with_protocol(distmat, query, gallery, eval_cfg: ml_collections.ConfigDict,
                       roc: bool = False) -> RankResult:
  """`evaluate_rank` of `distmat` (a distance matrix or (query_feats, gallery_feats, metric))
  with config.eval's protocol and max_rank. The ROC, a verification measure over all pairs, is
  the Market protocol's under either protocol."""
  kwargs = protocol_kwargs(eval_cfg)
  ids = (query.pids, gallery.pids, query.camids, gallery.camids)
  market = kwargs['protocol'] == 'market'
  result = evaluate_rank(distmat, *ids, max_rank=eval_cfg.max_rank, roc=roc and market,
                         **kwargs)
  if roc and not market:
    curve = evaluate_rank(distmat, *ids, max_rank=eval_cfg.max_rank, roc=True).roc
    result = dataclasses.replace(result, roc=curve)
  return result


def rank_metrics(query_feats: np.ndarray, gallery_feats: np.ndarray, query, gallery, metric: str,
                 max_rank: int) -> RankResult:
  """Market-protocol rank metrics of features of the `query` and `gallery` splits."""
  return evaluate_features(query_feats, gallery_feats, query.pids, gallery.pids, query.camids,
                           gallery.camids, metric=metric, max_rank=max_rank)


def evaluate_embeddings(qf: np.ndarray, gf: np.ndarray, query, gallery,
                        eval_cfg: ml_collections.ConfigDict, post: bool = True) -> EvalOutput:
  """Market-protocol rank metrics of query and gallery embeddings.

  `config.eval` options: `metric`, `max_rank`, `protocol` ('market' or CUHK03's single-gallery-
  shot 'cuhk03', `cuhk03_repeats` draws), `roc` (TPR at FPR 1e-4/1e-3/1e-2 and the curve for the
  report), and the post-processing row `aqe` (FastReID's alpha query expansion of query and
  gallery) then `rerank` (k-reciprocal re-ranking, scalable mode), reported next to the plain
  result. `post=False` leaves out the ROC and the post-processed row.
  """
  ev = eval_cfg
  result = rank_with_protocol((qf, gf, ev.metric), query, gallery, ev, roc=post and ev.roc)
  output = EvalOutput(result.to_dict(), result, qf, gf, metric=ev.metric, query=query,
                      gallery=gallery)
  if not post:
    return output
  steps = []
  pq, pg = qf, gf
  if ev.aqe:
    pq, pg = alpha_query_expansion(qf, gf, qe_times=ev.aqe_times, qe_k=ev.aqe_k,
                                   alpha=ev.aqe_alpha)
    steps.append('aqe')
  if ev.rerank:
    dist = rerank_features(pq, pg, k1=ev.rerank_k1, k2=ev.rerank_k2,
                           lambda_value=ev.rerank_lambda, metric=ev.metric)
    post_result = rank_with_protocol(dist, query, gallery, ev)
    steps.append('rerank')
  elif steps:
    post_result = rank_with_protocol((pq, pg, ev.metric), query, gallery, ev)
  if steps:
    output.extra_rows[' + '.join(steps)] = post_result.to_dict()
  return output
