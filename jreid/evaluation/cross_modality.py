"""Cross-modality (RGB-infrared) evaluation protocols: SYSU-MM01 and RegDB, as AGW's code.

**SYSU-MM01** (Wu et al., ICCV 2017; `eval_sysu` of AGW, Ye et al.). Queries are the infrared
images (cameras 3 and 6); each *trial* samples a gallery of visible images: one (single-shot)
or ten (multi-shot) images per identity and camera, cameras 1, 2, 4, 5 ('all' search) or 1, 2
('indoor' search). The sampling is `data_pipelines.sysu_mm01.sample_gallery`; this module takes
the sampled indices, so it stays free of the data pipeline. Per query, on the gallery sorted by
ascending distance (stable):

* **camera-3 / camera-2 rule**: a query from camera 3 drops *every* gallery image from camera 2
  (any identity; cameras 2 and 3 are the same indoor room). Camera ids here are jreid's
  zero-based camids, so camera 3 is camid 2 and camera 2 is camid 1. No same-camera rule is
  needed otherwise (query and gallery cameras always differ) and there are no junk images.
* **CMC over the identity ranking** (the reference's `new_cmc`, "following the authors' released
  code"): the kept ranking is reduced to its identities in order of first appearance, and
  CMC(k) = [the query's identity is among the first k identities]. The standard CMC over the
  image ranking (`image_cmc`) is CMC(k) = [a correct image is among the first k images]. Rank-1
  is the same; at k > 1 the identity CMC is higher or equal, because several gallery images of
  one wrong identity take one identity rank but several image ranks. With a single-shot
  gallery of c cameras per identity the two differ at every k > 1. Published SYSU numbers use
  the identity CMC, so `rank1/rank10/rank20` here are those; `image_rank*` are the standard ones.
* mAP and mINP are the standard ones on the kept image ranking: AP = mean_i(i / r_i) over the
  hits' ranks r_i, INP = (number of hits) / (rank of the last hit).
* A query without any correct image left is skipped (counted in `num_skipped`).
* The reported numbers are the means over the trials (10 in the literature: seeds 0..9) of the
  per-trial means.

**RegDB** (Nguyen et al. 2017; `eval_regdb` of AGW): the standard Market-style ranking of
`jreid.evaluation.evaluate_features` (same identity *and* camera removed, which never happens
across modalities: visible is camid 0, thermal camid 1), standard CMC, in both directions
(visible -> thermal and thermal -> visible). Each of the 10 trials is its own training run on its
own split; `mean_metrics` averages the trials' numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from jreid.evaluation import distance as distance_lib
from jreid.evaluation.metrics import RankResult, evaluate_features

# SYSU-MM01 cameras 3 (infrared) and 2 (visible) as zero-based camids.
CAMERA3_CAMID = 2
CAMERA2_CAMID = 1
REPORTED_RANKS = (1, 5, 10, 20)


@dataclasses.dataclass
class SysuRankResult(RankResult):
  """`RankResult` whose `cmc` is the identity-ranking CMC; `image_cmc` the standard one."""

  image_cmc: np.ndarray | None = None

  def to_dict(self) -> dict[str, float | int]:
    out = super().to_dict()
    for k in REPORTED_RANKS:
      if k <= len(self.cmc):
        out[f'rank{k}'] = float(self.cmc[k - 1])
        out[f'image_rank{k}'] = float(self.image_cmc[k - 1])
    return out


def sysu_rank(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
              g_camids: np.ndarray, max_rank: int = 20) -> SysuRankResult:
  """Ranking metrics of one SYSU-MM01 trial (module docstring), vectorised over the queries.

  Args:
    distmat: [Q, G] distances (smaller = closer).
    q_pids, g_pids: identities; q_camids, g_camids: zero-based camids (camera 3 = 2).
    max_rank: CMC length, clipped to the gallery size.

  Raises:
    ValueError: on mismatched shapes, or when no query has a correct gallery image.
  """
  distmat = np.asarray(distmat, np.float64)
  q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
  q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
  num_query, num_gallery = distmat.shape
  if (q_pids.shape, q_camids.shape) != ((num_query,),) * 2 or (
      (g_pids.shape, g_camids.shape) != ((num_gallery,),) * 2):
    raise ValueError(f'sysu_rank: distmat is {distmat.shape} but there are {q_pids.shape} / '
                     f'{q_camids.shape} query and {g_pids.shape} / {g_camids.shape} gallery '
                     'ids/camids.')
  max_rank = min(max_rank, num_gallery)
  order = np.argsort(distmat, axis=1, kind='stable')
  ranked_pids = g_pids[order]
  keep = ~((q_camids == CAMERA3_CAMID)[:, None] & (g_camids[order] == CAMERA2_CAMID))
  hits = (ranked_pids == q_pids[:, None]) & keep
  valid = hits.any(axis=1)
  if not valid.any():
    raise ValueError('sysu_rank: no query has a correct match in the gallery; check that the '
                     'query and gallery hold the same test identities.')
  # 1-based rank of every position among the kept items of its row.
  kept_rank = np.cumsum(keep, axis=1)
  hits, kept_rank = hits[valid], kept_rank[valid]
  keep, ranked_pids = keep[valid], ranked_pids[valid]
  num_hits = hits.sum(axis=1)
  hit_count = np.cumsum(hits, axis=1)
  all_ap = np.sum(np.where(hits, hit_count / np.maximum(kept_rank, 1), 0.0), axis=1) / num_hits
  last_hit = np.max(np.where(hits, kept_rank, 0), axis=1)
  all_inp = num_hits / last_hit
  first_hit = np.min(np.where(hits, kept_rank, np.iinfo(np.int64).max), axis=1)
  ranks = np.arange(1, max_rank + 1)
  image_cmc = np.mean(first_hit[:, None] <= ranks[None, :], axis=0)
  # Identity ranking: the position of the query's identity among the kept identities ordered by
  # their first kept appearance = 1 + the identities whose first appearance comes earlier.
  ids, codes = np.unique(ranked_pids, return_inverse=True)
  codes = codes.reshape(ranked_pids.shape)
  rows = np.broadcast_to(np.arange(len(codes))[:, None], codes.shape)
  first_seen = np.full((len(codes), len(ids)), np.iinfo(np.int64).max)
  np.minimum.at(first_seen, (rows[keep], codes[keep]), kept_rank[keep])
  identity_rank = 1 + np.sum(first_seen < first_hit[:, None], axis=1)
  cmc = np.mean(identity_rank[:, None] <= ranks[None, :], axis=0)
  return SysuRankResult(cmc=cmc, all_ap=all_ap, all_inp=all_inp, num_valid=int(valid.sum()),
                        num_skipped=int((~valid).sum()), image_cmc=image_cmc)


@dataclasses.dataclass
class TrialsResult:
  """The per-trial results of one protocol (e.g. SYSU all-search single-shot, 10 trials)."""

  trials: list[SysuRankResult]

  def metrics(self) -> dict[str, float]:
    """Means over the trials of each trial's rank-k, mAP and mINP (fractions)."""
    per_trial = [t.to_dict() for t in self.trials]
    return mean_metrics(per_trial)

  def mean_result(self) -> SysuRankResult:
    """A result with the trial-mean CMC curves and every trial's AP/INP (for plots)."""
    return SysuRankResult(
        cmc=np.mean([t.cmc for t in self.trials], axis=0),
        all_ap=np.concatenate([t.all_ap for t in self.trials]),
        all_inp=np.concatenate([t.all_inp for t in self.trials]),
        num_valid=int(np.mean([t.num_valid for t in self.trials])),
        num_skipped=int(np.mean([t.num_skipped for t in self.trials])),
        image_cmc=np.mean([t.image_cmc for t in self.trials], axis=0))


def mean_metrics(per_trial: Sequence[Mapping[str, float]]) -> dict[str, float]:
  """Key-wise means of metric dicts (trials of one protocol, or RegDB's 10 trained trials)."""
  if not per_trial:
    raise ValueError('mean_metrics needs at least one trial.')
  keys = [k for k in per_trial[0] if all(k in t for t in per_trial)]
  return {k: float(np.mean([t[k] for t in per_trial])) for k in keys}


def evaluate_sysu(query_feats: np.ndarray, gallery_feats: np.ndarray, q_pids: np.ndarray,
                  g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray,
                  trial_galleries: Sequence[np.ndarray], metric: str = 'cosine',
                  max_rank: int = 20) -> TrialsResult:
  """The SYSU-MM01 protocol over trials.

  Args:
    query_feats: [Q, D] features of the infrared queries.
    gallery_feats: [G, D] features of every visible test image.
    q_pids, g_pids, q_camids, g_camids: identities and zero-based camids of both.
    trial_galleries: per trial, the indices into the gallery of that trial's sampled gallery
      (`data_pipelines.sysu_mm01.sample_gallery(gallery, trial, mode, shots)`).
    metric: 'cosine' (the reference: inner product of L2-normalised features) or 'euclidean'.
    max_rank: CMC length.
  """
  if not len(trial_galleries):
    raise ValueError('evaluate_sysu needs at least one trial gallery.')
  g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
  trials = []
  for indices in trial_galleries:
    indices = np.asarray(indices)
    dist = distance_lib.compute_distance(query_feats, np.asarray(gallery_feats)[indices], metric)
    trials.append(sysu_rank(np.asarray(dist), q_pids, g_pids[indices], q_camids,
                            g_camids[indices], max_rank=max_rank))
  return TrialsResult(trials)


def evaluate_regdb(query_feats: np.ndarray, gallery_feats: np.ndarray, q_pids: np.ndarray,
                   g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray,
                   metric: str = 'cosine', max_rank: int = 20) -> RankResult:
  """One RegDB direction (module docstring): standard ranking metrics; `rank20` added."""
  return evaluate_features(query_feats, gallery_feats, q_pids, g_pids, q_camids, g_camids,
                           metric=metric, max_rank=max_rank)


def rank_dict(result: RankResult) -> dict[str, float]:
  """`result.to_dict()` plus rank-20 where computed."""
  out = dict(result.to_dict())
  for k in REPORTED_RANKS:
    if k <= len(result.cmc):
      out[f'rank{k}'] = float(result.cmc[k - 1])
  return out
