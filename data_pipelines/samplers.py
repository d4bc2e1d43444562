"""Identity samplers: which training images make up each batch (numpy only).

Samplers (each a `Sampler`): `PKSampler` (FastReID NaiveIdentitySampler),
`BalancedIdentitySampler` (prefers other cameras), `SetReWeightSampler` (per-set identity quotas),
picked by `config.sampler.name` in `build_sampler`; `CameraAwareSampler` (pseudo identities of the
unsupervised methods); in their own modules, `graph_sampler.GraphSampler` (QAConv-GS) and
`cross_modality_sampler.CrossModalitySampler` (visible + infrared images per identity).

The P x K sampler follows FastReID's `NaiveIdentitySampler`: every batch holds P distinct
identities with K images each, the K images of an identity consecutive. The data order is a
pure function of `(seed, epoch)`, so a run resumed at any step sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Sampler(Protocol):
  """What the input pipeline (`input_pipeline.train_iterator`) and the train loop need of a
  sampler: the image indices of every global step."""

  num_samples: int  # Images of the split it samples from.
  batch_size: int  # Global batch size.
  batches_per_epoch: int  # Steps of one epoch.

  def steps(self, start: int, stop: int) -> np.ndarray:
    """Image indices of global steps start..stop-1, int [stop - start, batch_size]."""


class EpochSampler:
  """Shared `epoch` / `steps` / caching of samplers whose epoch e is a pure function of (seed, e).

  Subclasses set num_ids, num_instances, seed, num_samples, batches_per_epoch and implement
  `_build(epoch) -> int array [batches_per_epoch, batch_size]`; a sampler whose batch is not
  P * K (e.g. visible + infrared images per identity) overrides `batch_size`.
  """

  num_ids: int
  num_instances: int
  seed: int
  num_samples: int
  batches_per_epoch: int
  _cache: dict[int, np.ndarray]

  @property
  def batch_size(self) -> int:
    """Global batch size P * K."""
    return self.num_ids * self.num_instances

  def _build(self, epoch: int) -> np.ndarray:
    raise NotImplementedError

  def _epoch(self, epoch: int) -> np.ndarray:
    if epoch not in self._cache:
      out = np.asarray(self._build(epoch), np.int32)
      out.flags.writeable = False
      if len(self._cache) >= 2:
        del self._cache[min(self._cache)]
      self._cache[epoch] = out
    return self._cache[epoch]

  def epoch(self, epoch: int) -> np.ndarray:
    """Image indices of every batch of `epoch`, int32 [batches_per_epoch, P * K]."""
    if int(epoch) < 0:
      raise ValueError(f'{type(self).__name__}.epoch: epoch must be >= 0, got {epoch}.')
    return self._epoch(int(epoch)).copy()

  def steps(self, start: int, stop: int) -> np.ndarray:
    """Image indices of global steps start..stop-1, int32 [stop - start, P * K].

    Global step s is batch s % batches_per_epoch of epoch s // batches_per_epoch.
    """
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop:
      raise ValueError(f'{type(self).__name__}.steps: need 0 <= start <= stop, got '
                       f'start={start}, stop={stop}.')
    n = self.batches_per_epoch
    out = np.empty((stop - start, self.batch_size), np.int32)
    for e in range(start // n, -(-stop // n)):
      lo, hi = max(start, e * n), min(stop, (e + 1) * n)
      out[lo - start:hi - start] = self._epoch(e)[lo - e * n:hi - e * n]
    return out


class PKSampler(EpochSampler):
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
    _check_sizes('PKSampler', num_ids, num_instances, seed)
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

  def _build(self, epoch: int) -> np.ndarray:
    """Batches of `epoch`: rounds of the identities until batches_per_epoch are drawn."""
    batches: list[np.ndarray] = []
    round_index = 0
    while len(batches) < self.batches_per_epoch:
      batches.extend(self._round(epoch, round_index))
      round_index += 1
    return np.stack(batches[:self.batches_per_epoch])


def _check_sizes(name: str, num_ids: int, num_instances: int, seed: int) -> None:
  """P, K and the seed of every identity sampler: one clear error naming the setting."""
  if int(num_instances) < 1:
    raise ValueError(f'{name}: num_instances (K, config.sampler.num_instances) must be >= 1, '
                     f'got {num_instances}.')
  if int(num_ids) < 1:
    raise ValueError(f'{name}: num_ids (P = global batch size / K) must be >= 1, got {num_ids}; '
                     'increase the batch size or lower config.sampler.num_instances.')
  if int(seed) < 0:
    raise ValueError(f'{name}: seed must be a non-negative integer, got {seed}.')


def _check_common(name: str, labels: np.ndarray, camids: np.ndarray, num_ids: int,
                  num_instances: int, seed: int, batches_per_epoch: int | None) -> None:
  """Argument checks shared by the camera-aware samplers; messages name the setting."""
  if labels.ndim != 1 or labels.size == 0:
    raise ValueError(f'{name} needs a non-empty 1-D array of labels, got shape {labels.shape}.')
  if not np.issubdtype(labels.dtype, np.integer) or not np.issubdtype(camids.dtype, np.integer):
    raise ValueError(f'{name} labels and camids must be integers, got {labels.dtype} and '
                     f'{camids.dtype}.')
  if camids.shape != labels.shape:
    raise ValueError(f'{name}: camids shape {camids.shape} differs from labels shape '
                     f'{labels.shape}; pass split.camids of the same split.')
  _check_sizes(name, num_ids, num_instances, seed)
  if batches_per_epoch is not None and int(batches_per_epoch) < 1:
    raise ValueError(f'{name}: batches_per_epoch must be >= 1 or None, got {batches_per_epoch}.')


class BalancedIdentitySampler(EpochSampler):
  """P identities x K images per batch, preferring other cameras (FastReID BalancedIdentitySampler).

  A round permutes all identities (dropping the last `I % P` of the permutation) and cuts the
  permutation into batches of P identities. For each identity it draws an anchor image
  uniformly; the other K - 1 images are drawn from the identity's images taken by *other*
  cameras than the anchor's (without replacement when there are at least K - 1 of them, with
  replacement otherwise); if every image of the identity comes from the anchor's camera, from
  its other images (same rule), and if the identity has a single image, that image is
  repeated. A group is the anchor followed by the K - 1 others, so the K images of an identity
  are consecutive, as with `PKSampler`. Round r of epoch e draws all randomness from
  `np.random.default_rng([seed, e, r])`; an epoch takes batches of rounds 0, 1, ... until it
  has `batches_per_epoch` (default N // (P * K), at least 1).

  Differences from FastReID, all deliberate: FastReID samples with replacement when exactly
  K - 1 candidates exist (here: without), and streams rounds across epochs (here each epoch
  restarts, so the order is a pure function of (seed, epoch)).
  """

  def __init__(self, labels: np.ndarray, camids: np.ndarray, num_ids: int, num_instances: int,
               seed: int, batches_per_epoch: int | None = None):
    """Indexes images by identity and camera.

    Args:
      labels: int identity label of every training image, shape [N].
      camids: int camera id of every training image, shape [N].
      num_ids: P, distinct identities per batch.
      num_instances: K, images per identity per batch.
      seed: non-negative integer.
      batches_per_epoch: batches per epoch; defaults to max(1, N // (P * K)).

    Raises:
      ValueError: bad arguments; the message names the setting to change.
    """
    labels, camids = np.asarray(labels), np.asarray(camids)
    name = 'BalancedIdentitySampler'
    _check_common(name, labels, camids, num_ids, num_instances, seed, batches_per_epoch)
    ids, inverse = np.unique(labels, return_inverse=True)
    if int(num_ids) > len(ids):
      raise ValueError(
          f'{name}: a batch needs P={num_ids} distinct identities but the training split has '
          f'only {len(ids)}; lower the batch size (P = batch size / K) or raise '
          f'config.sampler.num_instances (K={num_instances}).')
    self.num_ids = int(num_ids)
    self.num_instances = int(num_instances)
    self.seed = int(seed)
    self.num_samples = len(labels)
    self.batches_per_epoch = (int(batches_per_epoch) if batches_per_epoch is not None
                              else max(1, len(labels) // self.batch_size))
    order = np.argsort(inverse, kind='stable')
    bounds = np.cumsum(np.bincount(inverse))[:-1]
    self._members = np.split(order, bounds)  # image indices of identity i, ascending
    self._camids = camids.astype(np.int64)
    self._cache = {}

  def _group(self, rng: np.random.Generator, members: np.ndarray) -> np.ndarray:
    """Anchor + K - 1 images of one identity (see the class docstring)."""
    k = self.num_instances
    anchor = members[rng.integers(len(members))]
    if k == 1:
      return np.array([anchor])
    candidates = members[self._camids[members] != self._camids[anchor]]
    if not len(candidates):
      candidates = members[members != anchor]
    if not len(candidates):
      return np.full(k, anchor)
    others = rng.choice(candidates, size=k - 1, replace=len(candidates) < k - 1)
    return np.concatenate([[anchor], others])

  def _round(self, epoch: int, round_index: int) -> list[np.ndarray]:
    rng = np.random.default_rng([self.seed, epoch, round_index])
    perm = rng.permutation(len(self._members))
    perm = perm[:len(perm) - len(perm) % self.num_ids]
    return [np.concatenate([self._group(rng, self._members[i]) for i in chunk])
            for chunk in perm.reshape(-1, self.num_ids)]

  def _build(self, epoch: int) -> np.ndarray:
    batches: list[np.ndarray] = []
    round_index = 0
    while len(batches) < self.batches_per_epoch:
      batches.extend(self._round(epoch, round_index))
      round_index += 1
    return np.stack(batches[:self.batches_per_epoch])


class SetReWeightSampler(EpochSampler):
  """Per-set identity quotas per batch (FastReID SetReWeightSampler).

  Images belong to sets (FastReID uses the camera id field, which its multi-dataset training
  sets to the source dataset). With weights w (one per set, in ascending set-id order) and
  P = m * sum(w) identities per batch, every batch takes m * w[s] distinct identities from set
  s, drawn without replacement with probability proportional to their number of images in
  that set, and K images of each identity (from all its images; without replacement when it
  has at least K, with replacement otherwise). Identities are distinct across the whole batch
  (sets are visited in order; an identity already taken is excluded from later sets). The
  identity groups are then shuffled; each stays K consecutive images, so the P x K layout of
  `PKSampler` holds (FastReID shuffles single images, which breaks per-device triplet mining).
  Batch b of epoch e draws from `np.random.default_rng([seed, e, b])`; batches_per_epoch
  defaults to N // (P * K).
  """

  def __init__(self, labels: np.ndarray, sets: np.ndarray, num_ids: int, num_instances: int,
               seed: int, set_weight: tuple[int, ...] | None = None,
               batches_per_epoch: int | None = None):
    """Indexes identities per set.

    Args:
      labels: int identity label of every training image, shape [N].
      sets: int set id of every training image (e.g. camids), shape [N].
      num_ids: P, identities per batch; must be a multiple of sum(set_weight).
      num_instances: K, images per identity.
      seed: non-negative integer.
      set_weight: identities per set per unit (config.sampler.set_weight); None or empty: 1 each.
      batches_per_epoch: batches per epoch; defaults to max(1, N // (P * K)).

    Raises:
      ValueError: bad arguments; the message names the setting to change.
    """
    labels, sets = np.asarray(labels), np.asarray(sets)
    name = 'SetReWeightSampler'
    _check_common(name, labels, sets, num_ids, num_instances, seed, batches_per_epoch)
    set_ids = np.unique(sets)
    weights = tuple(int(w) for w in set_weight) if set_weight else (1,) * len(set_ids)
    if len(weights) != len(set_ids) or min(weights) < 0 or sum(weights) < 1:
      raise ValueError(
          f'{name}: config.sampler.set_weight must have one non-negative weight per set '
          f'({len(set_ids)} sets: {set_ids.tolist()}) and a positive sum, got {weights}.')
    if int(num_ids) % sum(weights):
      raise ValueError(
          f'{name}: P = {num_ids} identities per batch is not a multiple of sum(set_weight) = '
          f'{sum(weights)}; change the batch size or config.sampler.set_weight.')
    per_batch = int(num_ids) // sum(weights)
    self.num_ids = int(num_ids)
    self.num_instances = int(num_instances)
    self.seed = int(seed)
    self.num_samples = len(labels)
    self.batches_per_epoch = (int(batches_per_epoch) if batches_per_epoch is not None
                              else max(1, len(labels) // self.batch_size))
    self.set_weight = weights
    ids, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind='stable')
    self._members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    # Per set: its identities, their selection probabilities, and how many to take.
    self._sets = []
    for s, w in zip(set_ids, weights):
      in_set = inverse[sets == s]
      set_ids_of, counts = np.unique(in_set, return_counts=True)
      if per_batch * w > len(set_ids_of):
        raise ValueError(
            f'{name}: set {s} has {len(set_ids_of)} identities but a batch takes '
            f'{per_batch * w} from it; lower its config.sampler.set_weight or the batch size.')
      self._sets.append((set_ids_of, counts / counts.sum(), per_batch * w))
    self._cache = {}

  def _batch(self, rng: np.random.Generator) -> np.ndarray:
    k = self.num_instances
    taken: list[int] = []
    for ids_of, probs, count in self._sets:
      if count == 0:
        continue
      free = ~np.isin(ids_of, taken)
      p = probs * free
      if np.count_nonzero(p) < count:
        raise ValueError('SetReWeightSampler: identities shared between sets leave too few free '
                         'identities for a set quota; lower config.sampler.set_weight.')
      taken.extend(rng.choice(ids_of, size=count, replace=False, p=p / p.sum()).tolist())
    groups = []
    for i in taken:
      members = self._members[i]
      groups.append(rng.choice(members, size=k, replace=len(members) < k))
    return np.concatenate([groups[g] for g in rng.permutation(len(groups))])

  def _build(self, epoch: int) -> np.ndarray:
    return np.stack([self._batch(np.random.default_rng([self.seed, epoch, b]))
                     for b in range(self.batches_per_epoch)])


class CameraAwareSampler:
  """P x K batches of pseudo identities, K images per cluster preferring other cameras.

  For the unsupervised methods (PPLR, Cluster Contrast), built each epoch from that epoch's
  pseudo labels: each round visits the clusters in random order; for each it draws an anchor
  image and K-1 more images of the cluster from cameras other than the anchor's (all others if
  the cluster was seen by one camera only), as the references' `RandomMultipleGallerySampler`.
  Rounds are concatenated and cut into batches of P x K, so a batch at a round boundary may hold a
  cluster twice (the reference drops the tail of each pass). Only images with label >= 0 (not
  DBSCAN outliers) are drawn. The order is a pure function of (seed, epoch, labels); `steps`
  covers the global steps of epoch `epoch` only (steps_per_epoch each).
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
                       'DBSCAN outlier); raise the DBSCAN eps of the method.')
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


SAMPLERS = ('pk', 'balanced', 'set_reweight')


def build_sampler(sampler_cfg, labels: np.ndarray, camids: np.ndarray, batch_size: int,
                  seed: int, batches_per_epoch: int | None = None):
  """The training sampler named by `sampler_cfg.name` (config.sampler).

  Args:
    sampler_cfg: config.sampler: name ('pk' | 'balanced' | 'set_reweight'), num_instances (K),
      set_weight (set_reweight only; optional).
    labels: identity label of every training image, int [N].
    camids: camera id of every training image, int [N] (set ids for 'set_reweight').
    batch_size: global batch size; must be a multiple of K (P = batch_size // K).
    seed: non-negative integer.
    batches_per_epoch: batches per epoch, or None for N // batch_size.

  Returns:
    A sampler with num_samples, batch_size, batches_per_epoch, epoch(e), steps(start, stop).
  """
  name = sampler_cfg.name
  k = int(sampler_cfg.num_instances)
  if k < 1 or batch_size % k:
    raise ValueError(f'batch_size {batch_size} is not a positive multiple of '
                     f'config.sampler.num_instances (K) {k}; the P x K samplers need '
                     'batch_size = P * K.')
  p = batch_size // k
  if name == 'pk':
    return PKSampler(labels, p, k, seed, batches_per_epoch)
  if name == 'balanced':
    return BalancedIdentitySampler(labels, camids, p, k, seed, batches_per_epoch)
  if name == 'set_reweight':
    return SetReWeightSampler(labels, camids, p, k, seed, tuple(sampler_cfg.get('set_weight', ())),
                              batches_per_epoch)
  raise ValueError(f'Unknown config.sampler.name {name!r}; known: {", ".join(SAMPLERS)}.')
