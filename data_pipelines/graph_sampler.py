"""QAConv-GS graph sampler: batches of mutually similar classes, rebuilt every epoch (numpy only).

Liao & Shao, "Graph Sampling Based Deep Metric Learning for Generalizable Person
Re-Identification", CVPR 2022; semantics of ``reid/utils/data/graph_sampler.py`` (V1.2) of
github.com/ShengcaiLiao/QAConv. At the start of every epoch, with the current model:

1. one random image per class (``pick_representatives``);
2. the caller scores all pairs of those images with QAConv and passes the ``[C, C]`` distance
   matrix (the reference: ``-score`` of the matcher in eval mode, half precision);
3. every class ``i`` and its ``k = batch_size / num_instances - 1`` nearest other classes (row
   ``i`` of the distances, the class itself excluded; the reference adds ``1e15`` to the
   diagonal, here it is set to ``inf``; ties go to the lower class index) form one batch, laid
   out as the neighbours nearest first and then the class itself, ``num_instances``
   consecutive images each (``build_epoch``);
4. one batch per class, so ``batches_per_epoch == C``; the batch order is shuffled.

Images come from a per-class pointer over the class's images in random order: a class hands
out its next ``num_instances`` images; when the pointer reaches the end the list is reshuffled
and the pointer restarts at 0, also in the middle of a batch (so a class with fewer images than
``num_instances`` repeats images, and one read straddling a reshuffle can repeat an image).
The pointers are *not* reset between epochs. Here each class's sequence of images is the
concatenation of permutations, permutation ``r`` of class ``c`` drawn from
``default_rng([seed, 1, c, r])``, and the pointer ``positions[c]`` is how many images the class
has handed out so far; that is the reference's pointer on a reproducible random stream.

Determinism: the representatives of epoch ``e`` and the batch order come from
``default_rng([seed, 0, e])`` and ``default_rng([seed, 2, e])``; the images depend in addition
on the distances and on ``positions`` (the images each class handed out in earlier epochs).
``state_dict`` / ``load_state_dict`` carry the positions and the last built epoch, so a resumed
run (also in the middle of an epoch) continues exactly.

How a trainer feeds it (the graph depends on the model, so epochs are built one at a time)::

  sampler = GraphSampler(train.labels, batch_size, num_instances, seed)
  C = sampler.batches_per_epoch
  for epoch in range(start_step // C, num_epochs):
    if epoch not built (fresh run or resumed at an epoch boundary):
      reps = sampler.pick_representatives(epoch)         # dataset indices, one per class
      maps = model feature maps of train images `reps`    # eval transform, eval mode
      sampler.build_epoch(epoch, -qaconv_scores(maps, maps))
    it = input_pipeline.train_iterator(train, sampler, ..., start_step=max(start_step, epoch * C),
                                       num_steps=(epoch + 1) * C)
    ... train; checkpoint sampler.state_dict() with the model.

``train_iterator`` only needs ``num_samples``, ``batch_size`` and ``steps(start, stop)``; global
step ``s`` is batch ``s % C`` of epoch ``s // C``, as with ``PKSampler``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# Bound on the elements of one chunk of distance rows sorted at once.
_SORT_CHUNK_ELEMENTS = 1 << 22


class GraphSampler:
  """Graph sampling (QAConv-GS): each batch is a class and its nearest classes.

  Attributes:
    num_classes: C, the distinct labels.
    num_instances: images per class in a batch.
    num_neighbours: k = batch_size / num_instances - 1 nearest classes per batch.
    batch_size: global batch size ``(k + 1) * num_instances``.
    batches_per_epoch: C (one batch per class).
    num_samples: N, the number of labels (training images).
    seed: non-negative base seed.
    positions: int64 ``[C]``, images each class has handed out so far (the reference's
      per-class pointer, unrolled).
  """

  def __init__(self, labels: Any, batch_size: int, num_instances: int, seed: int):
    """Indexes the images of every class.

    Args:
      labels: int class label of every training image ``[N]``.
      batch_size: global batch size; a multiple of ``num_instances``.
      num_instances: images per class per batch.
      seed: non-negative integer.

    Raises:
      ValueError: bad arguments; the message names the setting to change.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
      raise ValueError(f'GraphSampler needs a non-empty 1-D array of labels, got {labels.shape}.')
    if not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f'GraphSampler labels must be integers, got dtype {labels.dtype}.')
    batch_size, num_instances, seed = int(batch_size), int(num_instances), int(seed)
    if num_instances < 1:
      raise ValueError(f'GraphSampler: num_instances (config.sampler.num_instances) must be >= 1, '
                       f'got {num_instances}.')
    if batch_size < num_instances or batch_size % num_instances:
      raise ValueError(f'GraphSampler: the batch size ({batch_size}) must be a positive multiple '
                       f'of num_instances ({num_instances}); change one of them.')
    if seed < 0:
      raise ValueError(f'GraphSampler: seed must be a non-negative integer, got {seed}.')
    classes, inverse = np.unique(labels, return_inverse=True)
    num_neighbours = batch_size // num_instances - 1
    if num_neighbours > len(classes) - 1:
      raise ValueError(
          f'GraphSampler: a batch of {batch_size} with num_instances={num_instances} needs '
          f'{num_neighbours + 1} distinct classes but the training split has {len(classes)}; '
          'lower the batch size or raise config.sampler.num_instances.')
    self.num_classes = len(classes)
    self.num_instances = num_instances
    self.num_neighbours = num_neighbours
    self.batch_size = batch_size
    self.batches_per_epoch = self.num_classes
    self.num_samples = len(labels)
    self.seed = seed
    order = np.argsort(inverse, kind='stable')
    counts = np.bincount(inverse, minlength=self.num_classes)
    self._members = np.split(order.astype(np.int64), np.cumsum(counts)[:-1])
    self._counts = counts.astype(np.int64)
    self.positions = np.zeros(self.num_classes, np.int64)
    self._epochs: dict[int, np.ndarray] = {}

  def pick_representatives(self, epoch: int) -> np.ndarray:
    """One uniformly random image of every class, int64 ``[C]`` dataset indices, class order."""
    rng = np.random.default_rng([self.seed, 0, int(epoch)])
    pick = np.floor(rng.random(self.num_classes) * self._counts).astype(np.int64)
    return np.array([m[p] for m, p in zip(self._members, pick)], np.int64)

  def nearest_classes(self, class_dist: Any) -> np.ndarray:
    """The ``k`` nearest other classes of each class, nearest first, int64 ``[C, k]``."""
    c = self.num_classes
    dist = np.asarray(class_dist, np.float64)
    if dist.shape != (c, c):
      raise ValueError(f'GraphSampler: class_dist must be [{c}, {c}] (distances between the '
                       f'representatives of pick_representatives), got {dist.shape}.')
    if not np.isfinite(dist).all():
      raise ValueError('GraphSampler: class_dist contains NaN or inf; check the matcher output.')
    out = np.empty((c, self.num_neighbours), np.int64)
    chunk = max(1, _SORT_CHUNK_ELEMENTS // c)
    for start in range(0, c, chunk):
      rows = dist[start:start + chunk].copy()
      rows[np.arange(len(rows)), np.arange(start, start + len(rows))] = np.inf  # not itself
      out[start:start + len(rows)] = np.argsort(rows, axis=1, kind='stable')[:, :self.num_neighbours]
    return out

  def _draw(self, cls: int, stream: np.ndarray) -> np.ndarray:
    """Dataset indices at positions ``stream`` of class ``cls``'s image sequence."""
    n = self._counts[cls]
    rounds = stream // n
    out = np.empty(len(stream), np.int64)
    for r in np.unique(rounds):
      perm = np.random.default_rng([self.seed, 1, cls, int(r)]).permutation(n)
      sel = rounds == r
      out[sel] = self._members[cls][perm[stream[sel] % n]]
    return out

  def compose(self, epoch: int, neighbours: np.ndarray,
              positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pure core of ``build_epoch``: ``(batches [C, batch_size] int32, new positions)``."""
    c, m = self.num_classes, self.num_instances
    groups = np.concatenate([neighbours, np.arange(c)[:, None]], axis=1)  # class itself last
    flat = groups.reshape(-1)  # slots in batch order; each takes m images of its class
    # Occurrence number of each slot among the slots of its class (in batch, slot order).
    order = np.argsort(flat, kind='stable')
    uses = np.bincount(flat, minlength=c)
    first = np.concatenate([[0], np.cumsum(uses)[:-1]])
    occurrence = np.empty(len(flat), np.int64)
    occurrence[order] = np.arange(len(flat)) - first[flat[order]]
    stream = positions[flat][:, None] + occurrence[:, None] * m + np.arange(m)  # [slots, m]
    images = np.empty_like(stream)
    for cls in np.flatnonzero(uses):
      sel = flat == cls
      images[sel] = self._draw(int(cls), stream[sel].reshape(-1)).reshape(-1, m)
    batches = images.reshape(c, self.batch_size)
    batches = batches[np.random.default_rng([self.seed, 2, int(epoch)]).permutation(c)]
    return batches.astype(np.int32), positions + uses * m

  def build_epoch(self, epoch: int, class_dist: Any) -> np.ndarray:
    """Builds epoch ``epoch`` from the representatives' distances; advances ``positions``.

    Call once per epoch, in order, with the ``[C, C]`` distances between the images of
    ``pick_representatives(epoch)`` (row = probe).

    Returns:
      int32 ``[C, batch_size]`` dataset indices, one batch per row.
    """
    epoch = int(epoch)
    if epoch < 0:
      raise ValueError(f'GraphSampler.build_epoch: epoch must be >= 0, got {epoch}.')
    batches, self.positions = self.compose(epoch, self.nearest_classes(class_dist), self.positions)
    batches.flags.writeable = False
    self._epochs = {e: b for e, b in self._epochs.items() if e == epoch - 1}
    self._epochs[epoch] = batches
    return batches.copy()

  def epoch_indices(self, epoch: int, distance_fn: Callable[[np.ndarray], Any]) -> np.ndarray:
    """``build_epoch(epoch, distance_fn(pick_representatives(epoch)))``."""
    return self.build_epoch(epoch, distance_fn(self.pick_representatives(epoch)))

  def steps(self, start: int, stop: int) -> np.ndarray:
    """Image indices of global steps start..stop-1, int32 ``[stop - start, batch_size]``.

    Global step s is batch ``s % C`` of epoch ``s // C``; those epochs must have been built.
    """
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop:
      raise ValueError(f'GraphSampler.steps: need 0 <= start <= stop, got {start}, {stop}.')
    n = self.batches_per_epoch
    out = np.empty((stop - start, self.batch_size), np.int32)
    for e in range(start // n, -(-stop // n)):
      if e not in self._epochs:
        raise ValueError(
            f'GraphSampler.steps: epoch {e} (steps {e * n}..{(e + 1) * n - 1}) has not been built; '
            f'call build_epoch({e}, class_dist) with the current model first and request at most '
            'one epoch of steps at a time (the graph is rebuilt from the model every epoch).')
      lo, hi = max(start, e * n), min(stop, (e + 1) * n)
      out[lo - start:hi - start] = self._epochs[e][lo - e * n:hi - e * n]
    return out

  def state_dict(self) -> dict[str, Any]:
    """Positions and the last built epoch with its batches (for checkpoints)."""
    if not self._epochs:
      return {'positions': self.positions.copy(), 'epoch': -1,
              'batches': np.zeros((0, self.batch_size), np.int32)}
    last = max(self._epochs)
    return {'positions': self.positions.copy(), 'epoch': last,
            'batches': self._epochs[last].copy()}

  def load_state_dict(self, state: dict[str, Any]) -> None:
    """Restores ``state_dict()``; the next ``build_epoch`` continues from its positions."""
    positions = np.asarray(state['positions'], np.int64)
    batches = np.asarray(state['batches'], np.int32)
    if positions.shape != (self.num_classes,):
      raise ValueError(f'GraphSampler state has positions for {positions.shape} classes but the '
                       f'training split has {self.num_classes}; the checkpoint is from another '
                       'dataset or config.')
    self.positions = positions.copy()
    self._epochs = {}
    if int(state['epoch']) >= 0:
      if batches.shape != (self.batches_per_epoch, self.batch_size):
        raise ValueError(f'GraphSampler state has batches of shape {batches.shape}, expected '
                         f'{(self.batches_per_epoch, self.batch_size)}; the checkpoint is from '
                         'another config.')
      batches = batches.copy()
      batches.flags.writeable = False
      self._epochs[int(state['epoch'])] = batches
