"""Pseudo labels from features, shared by the unsupervised methods (PPLR, Cluster Contrast).

Each epoch: the Jaccard distance of k-reciprocal encodings (Zhong et al., CVPR 2017) of the
L2-normalised training features, then DBSCAN on it (precomputed distances); DBSCAN's outliers get
label -1 and are not sampled that epoch. Centroids of the clusters initialise classifiers (PPLR)
or the memory (Cluster Contrast).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from jreid.evaluation import rerank


def jaccard_dbscan(features: np.ndarray, k1: int, k2: int, eps: float, min_samples: int
                   ) -> np.ndarray:
  """DBSCAN labels (int32 [N], -1 for outliers) on the Jaccard distance of the features."""
  from sklearn.cluster import DBSCAN  # pylint: disable=g-import-not-at-top
  n = len(features)
  dist = rerank.jaccard_distance(features, k1=min(k1, n), k2=k2, metric='cosine')
  ids = DBSCAN(eps=eps, min_samples=min_samples, metric='precomputed',
               n_jobs=-1).fit_predict(dist.astype(np.float64))
  return ids.astype(np.int32)


def num_clusters(labels: np.ndarray) -> int:
  """Clusters of DBSCAN labels (0..K-1; -1 outliers)."""
  labels = np.asarray(labels)
  return int(labels.max()) + 1 if (labels >= 0).any() else 0


def cluster_centroids(features: np.ndarray, labels: np.ndarray, num: int) -> np.ndarray:
  """L2-normalised mean of the rows of each cluster 0..num-1, float32 [num, D]."""
  features = np.asarray(features, np.float64)
  keep = labels >= 0
  sums = np.zeros((num, features.shape[1]))
  np.add.at(sums, labels[keep], features[keep])
  counts = np.bincount(labels[keep], minlength=num)[:, None]
  means = sums / np.maximum(counts, 1)
  return (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(
      np.float32)


def clustering_nmi(true_ids: np.ndarray, labels: np.ndarray) -> float:
  """NMI of the clustered images' labels against their true identities (a report-only measure
  of the pseudo labels; the true identities never reach training)."""
  from sklearn.metrics import normalized_mutual_info_score  # pylint: disable=g-import-not-at-top
  clustered = labels >= 0
  if not clustered.any():
    return 0.0
  return float(normalized_mutual_info_score(np.asarray(true_ids)[clustered], labels[clustered]))


class EpochLog:
  """One JSON row per epoch of pseudo-labelling statistics (`<name>.jsonl` in the workdir) and
  their plot (`<name>.png`): clusters and outliers, NMI against the hidden identities (reported
  only), test mAP per epoch (the untrained network's at epoch 0 when baselines.json has it),
  and optionally one more panel of per-epoch curves (`extra`: row key -> panel title, the row
  value a list of numbers, one curve each)."""

  def __init__(self, workdir, name: str, extra: tuple[str, str] | None = None):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / f'{name}.jsonl'
    self.png = self.workdir / f'{name}.png'
    self.extra = extra

  def rows(self) -> list[dict]:
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

  def write(self, row: dict) -> None:
    """Adds (or replaces, after a resume) the row of `row['epoch']`, atomically."""
    rows = [r for r in self.rows() if r['epoch'] != row['epoch']] + [row]
    rows.sort(key=lambda r: r['epoch'])
    tmp = self.path.with_suffix('.jsonl.tmp')
    tmp.write_text(''.join(json.dumps(r, sort_keys=True) + '\n' for r in rows))
    tmp.replace(self.path)

  def plot(self):
    """Writes the PNG; returns its path, or None before the first row."""
    from jreid import report  # pylint: disable=g-import-not-at-top
    rows = self.rows()
    if not rows:
      return None
    plt = report.pyplot()
    epochs = [r['epoch'] for r in rows]
    fig, axes = plt.subplots(1, 4 if self.extra else 3, figsize=(16 if self.extra else 12, 3.4))
    axes[0].plot(epochs, [r['clusters'] for r in rows], 'o-', label='clusters')
    axes[0].plot(epochs, [r['outliers'] for r in rows], 's-', label='outliers')
    axes[0].set_title('pseudo identities')
    axes[0].legend()
    axes[1].plot(epochs, [r['nmi'] for r in rows], 'o-')
    axes[1].set_title('NMI vs hidden labels (report only)')
    if self.extra:
      key, title = self.extra
      for p in range(len(rows[0][key])):
        axes[2].plot(epochs, [r[key][p] for r in rows], 'o-', label=f'part {p}')
      axes[2].set_title(title)
      axes[2].legend()
    points = [(r['epoch'], r['mAP']) for r in rows if 'mAP' in r]
    baselines = self.workdir / 'baselines.json'
    if baselines.exists():
      untrained = json.loads(baselines.read_text()).get('untrained')
      if untrained:
        points = [(0, untrained['mAP'])] + points
    if points:
      axes[-1].plot([e for e, _ in points], [100 * v for _, v in points], 'o-')
    axes[-1].set_title('test mAP (%)')
    for ax in axes:
      ax.set_xlabel('epoch')
      ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(self.png, dpi=90)
    plt.close(fig)
    return self.png
