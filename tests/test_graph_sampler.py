"""Tests of the QAConv-GS graph sampler."""

import numpy as np
import pytest

from data_pipelines.graph_sampler import GraphSampler

# 10 classes with 1..6 images (class 3 has one image, fewer than num_instances), shuffled.
COUNTS = [4, 6, 2, 1, 5, 3, 6, 2, 4, 3]


def make_labels(seed=0):
  labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
  return np.random.default_rng(seed).permutation(labels)


def line_distances(seed):
  """Classes at random points on a line; distance = |x_i - x_j| (distinct, no ties)."""
  x = np.random.default_rng(seed).random(len(COUNTS))
  return np.abs(x[:, None] - x[None, :])


def plain_nearest(dist, i, k):
  """The k classes nearest to i, itself excluded, ties by index."""
  others = sorted((dist[i, j], j) for j in range(len(dist)) if j != i)
  return [j for _, j in others[:k]]


def test_batches_hold_a_class_and_its_nearest_classes():
  labels = make_labels()
  sampler = GraphSampler(labels, batch_size=8, num_instances=2, seed=1)
  assert sampler.num_neighbours == 3 and sampler.batches_per_epoch == 10
  dist = line_distances(0)
  batches = sampler.build_epoch(0, dist)
  assert batches.shape == (10, 8) and batches.dtype == np.int32
  centres = []
  for batch in batches:
    groups = labels[batch].reshape(4, 2)
    assert (groups[:, 0] == groups[:, 1]).all()  # num_instances images of one class each
    centre = groups[-1, 0]  # the class itself comes last, its neighbours nearest first
    assert list(groups[:-1, 0]) == plain_nearest(dist, centre, 3)
    centres.append(centre)
  assert sorted(centres) == list(range(10))  # every class is a centre exactly once
  one_image = np.flatnonzero(labels == 3)[0]
  for batch in batches:  # a class with one image repeats it
    groups = batch.reshape(4, 2)
    for g in groups:
      if labels[g[0]] == 3:
        assert (g == one_image).all()


def consumed_sequences(batches_by_epoch, labels):
  """Per class, the images it handed out in the reference's order (unshuffled batch order)."""
  seqs = {c: [] for c in range(len(COUNTS))}
  for batches in batches_by_epoch:
    by_centre = {labels[b[-1]]: b for b in batches}
    for centre in range(len(COUNTS)):
      for img in by_centre[centre]:
        seqs[labels[img]].append(img)
  return seqs


def test_per_class_pointer_reshuffles_and_carries_over_epochs():
  labels = make_labels(2)
  sampler = GraphSampler(labels, batch_size=8, num_instances=2, seed=3)
  dists = [line_distances(10), line_distances(11), line_distances(12)]
  epochs = []
  expected_positions = np.zeros(len(COUNTS), np.int64)
  for e, dist in enumerate(dists):
    epochs.append(sampler.build_epoch(e, dist))
    uses = np.bincount(labels[epochs[-1]].reshape(-1), minlength=len(COUNTS))
    expected_positions += uses
    np.testing.assert_array_equal(sampler.positions, expected_positions)
  seqs = consumed_sequences(epochs, labels)
  for c, seq in seqs.items():
    members = sorted(np.flatnonzero(labels == c))
    n = len(members)
    # The stream is a concatenation of permutations of the class's images, across epochs.
    for r in range(len(seq) // n):
      assert sorted(seq[r * n:(r + 1) * n]) == members, (c, r)


def test_deterministic_in_seed_and_epoch():
  labels = make_labels()
  dist = line_distances(4)
  a = GraphSampler(labels, 8, 2, seed=5)
  b = GraphSampler(labels, 8, 2, seed=5)
  c = GraphSampler(labels, 8, 2, seed=6)
  np.testing.assert_array_equal(a.pick_representatives(2), b.pick_representatives(2))
  reps = a.pick_representatives(2)
  np.testing.assert_array_equal(labels[reps], np.arange(len(COUNTS)))
  assert any(not np.array_equal(a.pick_representatives(0), a.pick_representatives(e))
             for e in range(1, 4))
  ea, eb, ec = a.build_epoch(0, dist), b.build_epoch(0, dist), c.build_epoch(0, dist)
  np.testing.assert_array_equal(ea, eb)
  assert not np.array_equal(ea, ec)
  # The batch order is shuffled: the centres are not in class order in every epoch.
  orders = [list(labels[a.build_epoch(e, dist)[:, -1]]) for e in range(1, 4)]
  assert any(o != sorted(o) for o in orders)


def test_steps_and_state_round_trip():
  labels = make_labels()
  dists = [line_distances(20), line_distances(21)]
  sampler = GraphSampler(labels, 8, 2, seed=0)
  e0 = sampler.build_epoch(0, dists[0])
  np.testing.assert_array_equal(sampler.steps(0, 10), e0)
  with pytest.raises(ValueError, match='epoch 1 .* has not been built'):
    sampler.steps(8, 12)
  state = sampler.state_dict()
  e1 = sampler.build_epoch(1, dists[1])
  np.testing.assert_array_equal(sampler.steps(8, 12), np.concatenate([e0[8:], e1[:2]]))
  resumed = GraphSampler(labels, 8, 2, seed=0)
  resumed.load_state_dict(state)
  np.testing.assert_array_equal(resumed.steps(3, 10), e0[3:])  # mid-epoch resume
  np.testing.assert_array_equal(resumed.build_epoch(1, dists[1]), e1)
  # epoch_indices: representatives -> caller's distance -> batches.
  other = GraphSampler(labels, 8, 2, seed=0)
  seen = []
  out = other.epoch_indices(0, lambda reps: (seen.append(reps), dists[0])[1])
  np.testing.assert_array_equal(seen[0], other.pick_representatives(0))
  np.testing.assert_array_equal(out, e0)


def test_rejects_bad_settings():
  labels = make_labels()
  with pytest.raises(ValueError, match='multiple of num_instances'):
    GraphSampler(labels, 9, 2, seed=0)
  with pytest.raises(ValueError, match='needs 11 distinct classes'):
    GraphSampler(labels, 22, 2, seed=0)
  sampler = GraphSampler(labels, 8, 2, seed=0)
  with pytest.raises(ValueError, match=r'class_dist must be \[10, 10\]'):
    sampler.build_epoch(0, np.zeros((9, 9)))
  with pytest.raises(ValueError, match='NaN'):
    sampler.build_epoch(0, np.full((10, 10), np.nan))
