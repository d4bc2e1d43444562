"""k-reciprocal re-ranking of QAConv scores and the reference's re-rank + TLift evaluation.

The QAConv reference (``reid/evaluators.py`` of github.com/ShengcaiLiao/QAConv) evaluates a
model three ways on data sets with time stamps: plain QAConv scores, k-reciprocal re-ranking
(Zhong et al., CVPR 2017) of the QAConv scores, and TLift on top of the re-ranked result.
What it does, kept here:

* distance = ``-score`` (the raw QAConv logits; no sigmoid) for the query-gallery block and for
  the query-query and gallery-gallery blocks, the latter two scored by the matcher as well;
  the gallery-query block is the transposed query-gallery block;
* its re-ranking differs from Zhong et al.'s (``rerank.k_reciprocal_rerank``) in one step: the
  ``(q+g)^2`` distance matrix is *not squared* before each column is divided by its maximum
  (then transposed). With negative distances this is a real difference: a column whose maximum
  is negative (every score of that item positive) flips sign, and so does its ranking.
  Everything after that (reciprocal sets with ``k1 + 1`` neighbours, expansion with
  ``round(k1/2) + 1``, ``exp(-d)`` weights, ``k2`` query expansion, Jaccard distance,
  ``(1 - lambda) * jaccard + lambda * original``) is shared with ``rerank``, whose building
  blocks are reused;
* TLift gets ``1 - reranked distance`` as its score and the final distance is
  ``1 - lifted score``.

``distance='sigmoid'`` uses the distance of the ECCV 2020 reference evaluator instead,
``1 - sigmoid(score / 10)``: positive and bounded, so the column normalisation and the ``exp(-d)``
weights stay well defined whatever the logits' scale (with ``-score``, a column maximum near 0
blows the normalised distances up and the weights overflow). The plain ranking is the same with
either distance (both decrease with the score); only re-ranking and TLift differ.

Deviations (numerical only): the reference stores the weights ``V`` and the Jaccard distances in
float16 and sorts with an unstable argsort; here they are float32 and ties go by index.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jreid.evaluation import rerank as rerank_lib
from jreid.evaluation import tlift as tlift_lib


DISTANCES = ('negative', 'sigmoid')


def qaconv_distance(scores: Any, distance: str = 'negative') -> np.ndarray:
  """Distance of QAConv scores (float32): ``-score`` (QAConv 2.x reference, ``'negative'``) or
  ``1 - sigmoid(score / 10)`` (ECCV 2020 reference, ``'sigmoid'``)."""
  scores = np.asarray(scores, np.float32)
  if distance == 'negative':
    return -scores
  if distance == 'sigmoid':
    return (1.0 - 1.0 / (1.0 + np.exp(-scores / 10.0))).astype(np.float32)
  raise ValueError(f'QAConv distance must be one of {DISTANCES}, got {distance!r}.')


def qaconv_rerank(q_g_scores: Any, q_q_scores: Any, g_g_scores: Any, k1: int = 20, k2: int = 6,
                  lambda_value: float = 0.3, distance: str = 'negative') -> np.ndarray:
  """Re-ranked ``[q, g]`` distances from QAConv scores, as the QAConv reference does it.

  Args:
    q_g_scores: ``[q, g]`` QAConv scores of queries (rows) against gallery items.
    q_q_scores: ``[q, q]`` QAConv scores among the queries.
    g_g_scores: ``[g, g]`` QAConv scores among the gallery items.
    k1: k-reciprocal neighbourhood size.
    k2: local query expansion size (1 disables it).
    lambda_value: weight of the (normalised) original distance.
    distance: ``'negative'`` or ``'sigmoid'`` (module docstring).

  Returns:
    float32 ``[q, g]`` distances (smaller = closer).
  """
  q_g = qaconv_distance(q_g_scores, distance)
  q_q = qaconv_distance(q_q_scores, distance)
  g_g = qaconv_distance(g_g_scores, distance)
  if q_g.ndim != 2:
    raise ValueError(f'q_g_scores must be a [num_query, num_gallery] matrix, got {q_g.shape}.')
  num_query, num_gallery = q_g.shape
  if q_q.shape != (num_query, num_query):
    raise ValueError(f'q_q_scores must have shape ({num_query}, {num_query}), got {q_q.shape}.')
  if g_g.shape != (num_gallery, num_gallery):
    raise ValueError(f'g_g_scores must have shape ({num_gallery}, {num_gallery}), got {g_g.shape}.')
  if k1 < 1 or k2 < 1:
    raise ValueError(f'k1 and k2 must be >= 1, got k1={k1}, k2={k2}.')
  if not 0.0 <= lambda_value <= 1.0:
    raise ValueError(f'lambda_value must be in [0, 1], got {lambda_value}.')
  original = np.block([[q_q, q_g], [q_g.T, g_g]])
  if not np.isfinite(original).all():
    raise ValueError('The QAConv scores contain NaN or inf: check the matcher output.')
  column_max = original.max(axis=0)
  if (column_max == 0).any():
    raise ValueError('A column of the QAConv distance matrix has maximum 0, so the reference '
                     "normalisation (divide by the column maximum) is undefined; check the scores.")
  original /= column_max  # not squared: the reference's only change to Zhong et al.
  original = np.ascontiguousarray(original.T)

  rank = rerank_lib.initial_rank(original, max(k1 + 1, k2))
  expanded = rerank_lib.expanded_sets(rank, k1 + 1, int(np.around(k1 / 2)) + 1)
  v = rerank_lib.encode_weights(original, expanded)
  if k2 != 1:
    v = rerank_lib.local_query_expansion(v, rank, k2)
  total = num_query + num_gallery
  jaccard = rerank_lib.jaccard_of_weights(v, np.arange(num_query), np.arange(num_query, total))
  final = jaccard * (1.0 - lambda_value) + original[:num_query, num_query:] * lambda_value
  return final.astype(np.float32)


def qaconv_rerank_tlift(q_g_scores: Any, q_q_scores: Any, g_g_scores: Any, q_cams: Any,
                        g_cams: Any, q_times: Any, g_times: Any, *, k1: int = 20, k2: int = 6,
                        lambda_value: float = 0.3, tau: float = 100.0, sigma: float = 200.0,
                        K: int = 10, alpha: float = 0.2,
                        distance: str = 'negative') -> dict[str, np.ndarray]:
  """The reference evaluator's three distance matrices for one test set.

  Args:
    q_g_scores, q_q_scores, g_g_scores: QAConv scores (see ``qaconv_rerank``).
    q_cams, g_cams: zero-based cameras of queries and gallery items.
    q_times, g_times: their times in seconds (``tlift.split_times``).
    k1, k2, lambda_value: re-ranking parameters (reference defaults).
    tau, sigma, K, alpha: TLift parameters (reference defaults).
    distance: the re-ranking's distance of scores, ``'negative'`` or ``'sigmoid'``.

  Returns:
    ``{'qaconv': -scores, 'rerank': re-ranked distances, 'tlift': 1 - TLift(1 - rerank)}``,
    each float32 ``[q, g]``; the reference reports the last as "rerank + TLift".
  """
  rerank_dist = qaconv_rerank(q_g_scores, q_q_scores, g_g_scores, k1, k2, lambda_value, distance)
  lifted = tlift_lib.tlift(1.0 - rerank_dist, q_cams, g_cams, q_times, g_times, tau=tau,
                           sigma=sigma, K=K, alpha=alpha)
  return {'qaconv': qaconv_distance(q_g_scores, distance), 'rerank': rerank_dist,
          'tlift': (1.0 - lifted).astype(np.float32)}
