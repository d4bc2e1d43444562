"""The cross-modality identity sampler of AGW (Ye et al.; the reference's `IdentitySampler`).

Every batch holds P identities, each with K_v visible and K_ir infrared images (AGW: 8 x (4 + 4),
64 images). The P identities of a batch are distinct, drawn uniformly among the identities that
have images in both modalities; each identity's images are drawn *with replacement* within its
modality (as the reference's `np.random.choice(..., num_pos)`), so an identity with fewer than K
images of a modality still fills its slots. An epoch has floor(max(N_vis, N_ir) / (P * K_v)) + 1
batches (the reference's `int(N / (batchSize * num_pos)) + 1`).

Layout of a batch: identity by identity, each identity's K_v visible images then its K_ir
infrared ones, so `batch[i * (K_v + K_ir) : (i + 1) * (K_v + K_ir)]` is one identity. (The
reference feeds the 32 visible and the 32 infrared images as two tensors; the model here takes
one batch with a modality per image, so the order is free, and keeping an identity together
keeps per-device slices meaningful.)

Epoch `e` draws all its randomness from `np.random.default_rng([seed, e])`: the order is a pure
function of (seed, epoch), so a resumed run sees the batches of an uninterrupted one. The
interface is `PKSampler`'s (`num_samples`, `batch_size`, `batches_per_epoch`, `epoch`,
`steps`), which is what `input_pipeline.train_iterator` needs.
"""

from __future__ import annotations

import numpy as np

from data_pipelines import samplers


class CrossModalitySampler(samplers.EpochSampler):
  """P identities x (K_v visible + K_ir infrared) images per batch (module docstring).

  Attributes:
    num_ids: P.
    num_visible: K_v.
    num_infrared: K_ir.
    seed: non-negative base seed.
    num_samples: N, the number of training images.
    batches_per_epoch: batches of one epoch.
    num_skipped_ids: identities without images of both modalities (never sampled).
  """

  def __init__(self, labels: np.ndarray, infrared: np.ndarray, num_ids: int = 8,
               num_visible: int = 4, num_infrared: int = 4, seed: int = 0,
               batches_per_epoch: int | None = None):
    """Indexes the images of every identity by modality.

    Args:
      labels: int identity label of every training image, [N].
      infrared: bool [N], True for infrared images (e.g. `sysu_mm01.is_infrared(split)`).
      num_ids, num_visible, num_infrared: P, K_v, K_ir.
      seed: non-negative; the data order is a pure function of (seed, epoch).
      batches_per_epoch: defaults to floor(max(N_vis, N_ir) / (P * K_v)) + 1.

    Raises:
      ValueError: bad arguments, or fewer than P identities with both modalities.
    """
    labels = np.asarray(labels)
    infrared = np.asarray(infrared, bool)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f'CrossModalitySampler needs a non-empty 1-D integer label array, got '
                       f'shape {labels.shape} dtype {labels.dtype}.')
    if infrared.shape != labels.shape:
      raise ValueError(f'CrossModalitySampler: infrared has shape {infrared.shape}, labels '
                       f'{labels.shape}; pass one flag per training image.')
    for name, value in (('num_ids (P)', num_ids), ('num_visible (K_v)', num_visible),
                        ('num_infrared (K_ir)', num_infrared)):
      if int(value) < 1:
        raise ValueError(f'CrossModalitySampler: {name} must be >= 1, got {value}; fix '
                         'config.cross_modality.')
    if int(seed) < 0:
      raise ValueError(f'CrossModalitySampler: seed must be non-negative, got {seed}.')
    self.num_ids, self.num_visible, self.num_infrared = int(num_ids), int(num_visible), int(
        num_infrared)
    self.seed = int(seed)
    self.num_samples = len(labels)
    self._visible: dict[int, np.ndarray] = {}
    self._infrared: dict[int, np.ndarray] = {}
    for label in np.unique(labels):
      vis = np.flatnonzero((labels == label) & ~infrared)
      ir = np.flatnonzero((labels == label) & infrared)
      if len(vis) and len(ir):
        self._visible[int(label)], self._infrared[int(label)] = vis, ir
    self._ids = np.array(sorted(self._visible), np.int64)
    self.num_skipped_ids = int(len(np.unique(labels)) - len(self._ids))
    if len(self._ids) < self.num_ids:
      raise ValueError(
          f'CrossModalitySampler: a batch needs P={self.num_ids} distinct identities with both '
          f'visible and infrared images, but the training split has {len(self._ids)} such '
          f'identities; lower config.cross_modality.num_ids (P).')
    num_vis, num_ir = int((~infrared).sum()), int(infrared.sum())
    default = max(num_vis, num_ir) // (self.num_ids * self.num_visible) + 1
    if batches_per_epoch is not None and int(batches_per_epoch) < 1:
      raise ValueError(f'CrossModalitySampler: batches_per_epoch must be >= 1 or None, got '
                       f'{batches_per_epoch}.')
    self.batches_per_epoch = int(batches_per_epoch) if batches_per_epoch else default
    self._cache: dict[int, np.ndarray] = {}

  @property
  def batch_size(self) -> int:
    """Global batch size P * (K_v + K_ir)."""
    return self.num_ids * (self.num_visible + self.num_infrared)

  def _build(self, epoch: int) -> np.ndarray:
    """Batches of `epoch`: P identities, then K_v visible and K_ir infrared images of each
    (with replacement within an identity)."""
    rng = np.random.default_rng([self.seed, epoch])
    out = np.empty((self.batches_per_epoch, self.batch_size), np.int32)
    for b in range(self.batches_per_epoch):
      ids = rng.choice(self._ids, size=self.num_ids, replace=False)
      out[b] = np.concatenate([
          np.concatenate([rng.choice(self._visible[i], self.num_visible, replace=True),
                          rng.choice(self._infrared[i], self.num_infrared, replace=True)])
          for i in ids])
    return out

