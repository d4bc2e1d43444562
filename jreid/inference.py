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
from jreid.evaluation import RankResult, evaluate_features


def make_predict_fn(model, mesh: jax.sharding.Mesh):
  """jit(variables, batch) -> (embedding, index, mask), all replicated on every device."""

  def predict(variables, batch):
    emb = model.apply(variables, batch['image'], train=False)['embedding']
    return emb, batch['index'], batch['mask']

  return jax.jit(predict, out_shardings=parallel.replicated_sharding(mesh))


def extract_features(predict, variables: dict[str, Any], split: ReIDSplit,
                     input_cfg: ml_collections.ConfigDict, batch_size: int,
                     mesh: jax.sharding.Mesh) -> np.ndarray:
  """Embeddings of every image of `split`, float32 [N, D], in split order."""
  parallel.check_batch_size(batch_size, mesh, what='eval.batch_size')
  feats: np.ndarray | None = None
  seen = np.zeros(len(split), bool)
  for batch in input_pipeline.eval_iterator(split, input_cfg, batch_size=batch_size,
                                            process_index=jax.process_index(),
                                            process_count=jax.process_count()):
    emb, index, mask = jax.device_get(predict(variables, parallel.shard_batch(batch, mesh)))
    if feats is None:
      feats = np.zeros((len(split), emb.shape[-1]), np.float32)
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
  metrics: dict[str, float]
  result: RankResult
  query_features: np.ndarray
  gallery_features: np.ndarray


def evaluate_splits(model, variables: dict[str, Any], query: ReIDSplit, gallery: ReIDSplit,
                    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> EvalOutput:
  """Extracts query and gallery features and computes the Market-protocol rank metrics."""
  predict = make_predict_fn(model, mesh)
  qf = extract_features(predict, variables, query, config.input, config.eval.batch_size, mesh)
  gf = extract_features(predict, variables, gallery, config.input, config.eval.batch_size, mesh)
  result = rank_metrics(qf, gf, query, gallery, config.eval.metric, config.eval.max_rank)
  return EvalOutput(result.to_dict(), result, qf, gf)
