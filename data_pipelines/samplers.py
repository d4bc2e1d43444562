"""Identity samplers: which training images make up each batch (numpy only).

The P x K sampler follows FastReID's `NaiveIdentitySampler`: every batch holds P distinct
identities with K images each, the K images of an identity consecutive. The data order is a
pure function of `(seed, epoch)`, so a run resumed at any step sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np


class PKSampler:
  """P identities x K instances per batch, FastReID `NaiveIdentitySampler` semantics.

  One epoch is built in rounds. A round shuffles the image indices of every identity, samples
  with replacement up to K images for identities with fewer than K, and cuts each identity's
  list into groups of K (an incomplete tail group is dropped). Batches are then formed by
  choosing P distinct identities uniformly at random among those with groups left and popping
  one group from each, until fewer than P identities have groups left. Round `r` of epoch `e`
  draws all its randomness from `np.random.default_rng([seed, e, r])`. An epoch takes batches
  from rounds 0, 1, ... until it has exactly `batches_per_epoch` of them. With the default
  `len(labels) // (P * K)`, round 0 usually falls a little short (dropped tails, identities
  left over at its end), so an epoch is round 0 plus the first batches of round 1. FastReID
  instead streams rounds across epoch boundaries; restarting at round 0 every epoch is what
  makes the order a pure function of (seed, epoch).

  Attributes:
    num_ids: P, identities per batch.
    num_instances: K, images per identity in a batch.
    seed: non-negative base seed.
    num_samples: N, the number of labels (training images).
    batches_per_epoch: batches returned by `epoch(e)`.
  """

  def __init__(self, labels: np.ndarray, num_ids: int, num_instances: int, seed: int,
               batches_per_epoch: int | None = None):
    """Indexes the images of every identity.

    Args:
      labels: int identity label of every training image, shape [N].
      num_ids: P, distinct identities per batch.
      num_instances: K, images per identity per batch.
      seed: non-negative integer; the data order is a pure function of (seed, epoch).
      batches_per_epoch: batches per epoch; defaults to max(1, N // (P * K)).

    Raises:
      ValueError: bad arguments; the message names the setting to change.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
      raise ValueError(f'PKSampler needs a non-empty 1-D array of labels, got shape {labels.shape}.')
    if not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f'PKSampler labels must be integers, got dtype {labels.dtype}.')
    if int(num_instances) < 1:
      raise ValueError(f'PKSampler: num_instances (K, config.sampler.num_instances) must be >= 1, '
                       f'got {num_instances}.')
    if int(num_ids) < 1:
      raise ValueError(f'PKSampler: num_ids (P = global batch size / K) must be >= 1, got {num_ids}; '
                       'increase the batch size or lower config.sampler.num_instances.')
    if int(seed) < 0:
      raise ValueError(f'PKSampler: seed must be a non-negative integer, got {seed}.')
    ids, inverse = np.unique(labels, return_inverse=True)
    if int(num_ids) > len(ids):
      raise ValueError(
          f'PKSampler: a batch needs P={num_ids} distinct identities but the training split has '
          f'only {len(ids)}; lower the batch size (P = batch size / K) or raise '
          f'config.sampler.num_instances (K={num_instances}).')
    if batches_per_epoch is not None and int(batches_per_epoch) < 1:
      raise ValueError(f'PKSampler: batches_per_epoch must be >= 1 or None, got {batches_per_epoch}.')

    self.num_ids = int(num_ids)
    self.num_instances = int(num_instances)
    self.seed = int(seed)
    self.num_samples = len(labels)
    self.batches_per_epoch = (int(batches_per_epoch) if batches_per_epoch is not None
                              else max(1, len(labels) // self.batch_size))
    self._inverse = inverse.astype(np.int64)  # identity number 0..I-1 of every image
    counts = np.bincount(inverse)
    self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # of each identity, sorted
    self._full_groups = counts // self.num_instances  # groups of K distinct images
    self._num_groups = np.maximum(self._full_groups, 1)  # groups per round
    small = np.flatnonzero(counts < self.num_instances)
    self._small_members = [np.flatnonzero(inverse == i) for i in small]
    self._cache: dict[int, np.ndarray] = {}

  @property
  def batch_size(self) -> int:
    """Global batch size P * K."""
    return self.num_ids * self.num_instances

  def _round(self, epoch: int, round_index: int) -> list[np.ndarray]:
    """All batches of one round (see the class docstring), each int [P * K]."""
    k = self.num_instances
    rng = np.random.default_rng([self.seed, epoch, round_index])
    # Image indices grouped by identity, in random order within each identity.
    order = np.lexsort((rng.random(len(self._inverse)), self._inverse))
    ids = self._inverse[order]
    # Cut each identity's list into groups of K, dropping the tail: rows of `groups`.
    keep = np.arange(len(order)) - self._starts[ids] < self._full_groups[ids] * k
    groups = order[keep].reshape(-1, k)
    group_ids = ids[keep][::k]
    # Identities with fewer than K images: one group sampled with replacement.
    if self._small_members:
      padded = [rng.choice(members, size=k, replace=True) for members in self._small_members]
      groups = np.concatenate([groups, np.stack(padded)])
      group_ids = np.concatenate([group_ids, self._inverse[[m[0] for m in self._small_members]]])
    row_order = np.argsort(group_ids, kind='stable')
    groups = groups[row_order]  # identity i owns rows next_row[i]..next_row[i] + left[i] - 1
    next_row = np.concatenate([[0], np.cumsum(self._num_groups)[:-1]])
    left = self._num_groups.copy()
    available = list(range(len(left)))  # identities with groups left
    batches = []
    while len(available) >= self.num_ids:
      chosen = rng.choice(len(available), size=self.num_ids, replace=False)
      picked = np.array([available[c] for c in chosen])
      batches.append(groups[next_row[picked]].reshape(-1))
      next_row[picked] += 1
      left[picked] -= 1
      for c in np.sort(chosen)[::-1]:  # delete from the back so positions stay valid
        if left[available[c]] == 0:
          del available[c]
    return batches

  def _epoch(self, epoch: int) -> np.ndarray:
    """Read-only batches of `epoch`; keeps two epochs cached (training moves forward)."""
    if epoch not in self._cache:
      batches: list[np.ndarray] = []
      round_index = 0
      while len(batches) < self.batches_per_epoch:
        batches.extend(self._round(epoch, round_index))
        round_index += 1
      out = np.stack(batches[:self.batches_per_epoch]).astype(np.int32)
      out.flags.writeable = False
      if len(self._cache) >= 2:
        del self._cache[min(self._cache)]
      self._cache[epoch] = out
    return self._cache[epoch]

  def epoch(self, epoch: int) -> np.ndarray:
    """Image indices of every batch of `epoch`, int32 [batches_per_epoch, P * K]."""
    if int(epoch) < 0:
      raise ValueError(f'PKSampler.epoch: epoch must be >= 0, got {epoch}.')
    return self._epoch(int(epoch)).copy()

  def steps(self, start: int, stop: int) -> np.ndarray:
    """Image indices of global steps start..stop-1, int32 [stop - start, P * K].

    Global step s is batch s % batches_per_epoch of epoch s // batches_per_epoch.
    """
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop:
      raise ValueError(f'PKSampler.steps: need 0 <= start <= stop, got start={start}, stop={stop}.')
    n = self.batches_per_epoch
    out = np.empty((stop - start, self.batch_size), np.int32)
    for e in range(start // n, -(-stop // n)):
      lo, hi = max(start, e * n), min(stop, (e + 1) * n)
      out[lo - start:hi - start] = self._epoch(e)[lo - e * n:hi - e * n]
    return out
