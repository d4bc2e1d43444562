"""Tests for data_pipelines.samplers.PKSampler."""

import numpy as np
import pytest

from data_pipelines.samplers import PKSampler


def _labels(counts):
  """Labels with counts[i] images of identity 10 * i, shuffled so identities interleave."""
  labels = np.repeat(10 * np.arange(len(counts)), counts).astype(np.int32)
  return labels[np.random.default_rng(123).permutation(len(labels))]


# 12 identities, two of them with fewer than K = 4 images.
COUNTS = [1, 2, 4, 5, 7, 8, 9, 12, 4, 6, 15, 3]


def _check_batch(batch, labels, p, k):
  """One batch: P distinct identities, K consecutive images each."""
  assert batch.shape == (p * k,)
  groups = labels[batch].reshape(p, k)
  assert (groups == groups[:, :1]).all(), groups
  assert len(np.unique(groups[:, 0])) == p


@pytest.mark.parametrize('p,k', [(3, 4), (2, 2), (5, 1), (12, 3)])
def test_every_batch_has_p_ids_times_k_images(p, k):
  labels = _labels(COUNTS)
  sampler = PKSampler(labels, p, k, seed=0)
  assert sampler.batch_size == p * k
  assert sampler.batches_per_epoch == max(1, len(labels) // (p * k))
  for e in range(3):
    batches = sampler.epoch(e)
    assert batches.dtype == np.int32
    assert batches.shape == (sampler.batches_per_epoch, p * k)
    assert batches.min() >= 0 and batches.max() < len(labels)
    for batch in batches:
      _check_batch(batch, labels, p, k)


def test_identities_with_fewer_than_k_images_are_sampled_with_replacement():
  labels = _labels(COUNTS)
  sampler = PKSampler(labels, 3, 4, seed=1, batches_per_epoch=40)
  members = {pid: set(np.flatnonzero(labels == pid)) for pid in np.unique(labels)}
  seen = set()
  for batch in sampler.epoch(0):
    for group in batch.reshape(3, 4):
      pid = labels[group[0]]
      assert set(group) <= members[pid]
      if len(members[pid]) >= 4:
        assert len(set(group)) == 4  # a group of an identity with >= K images has no repeats
      else:
        seen.add(pid)
  assert seen == {0, 10, 110}  # identities with 1, 2 and 3 images appear, padded to K


def test_groups_within_a_round_do_not_repeat_images():
  # 6 identities with 8 images each, P = 2, K = 4: one round is exactly 6 batches and uses
  # every image exactly once.
  labels = _labels([8] * 6)
  sampler = PKSampler(labels, 2, 4, seed=3)
  batches = sampler.epoch(0)
  assert batches.shape == (6, 8)
  np.testing.assert_array_equal(np.sort(batches.ravel()), np.arange(48))


def test_same_seed_and_epoch_give_the_same_order():
  labels = _labels(COUNTS)
  a = PKSampler(labels, 3, 4, seed=7)
  b = PKSampler(labels, 3, 4, seed=7)
  np.testing.assert_array_equal(a.epoch(2), b.epoch(2))
  np.testing.assert_array_equal(a.epoch(0), PKSampler(labels, 3, 4, seed=7).epoch(0))
  assert not np.array_equal(a.epoch(0), a.epoch(1))
  assert not np.array_equal(a.epoch(0), PKSampler(labels, 3, 4, seed=8).epoch(0))


def test_epoch_returns_a_copy():
  sampler = PKSampler(_labels(COUNTS), 3, 4, seed=0)
  first = sampler.epoch(0)
  first[:] = -1
  assert (sampler.epoch(0) >= 0).all()


def test_steps_equal_concatenated_epochs():
  labels = _labels(COUNTS)
  sampler = PKSampler(labels, 3, 4, seed=5)
  n = sampler.batches_per_epoch
  everything = np.concatenate([sampler.epoch(e) for e in range(5)])
  for start, stop in [(0, n), (3, 3 + 2 * n + 2), (n, 4 * n), (2 * n + 1, 2 * n + 2), (4, 4)]:
    steps = sampler.steps(start, stop)
    assert steps.dtype == np.int32 and steps.shape == (stop - start, 12)
    np.testing.assert_array_equal(steps, everything[start:stop])
  # Out-of-order requests (no cache effects).
  np.testing.assert_array_equal(sampler.steps(4 * n, 5 * n), everything[4 * n:])
  np.testing.assert_array_equal(sampler.steps(0, 2), everything[:2])


def test_every_identity_appears_once_per_round():
  # Every identity has between K and 2K - 1 images, so it forms exactly one group per round,
  # and 12 identities / P = 3 gives exactly 4 batches per round; the default epoch (58 images
  # // 12 = 4 batches) is therefore one round with every identity exactly once.
  labels = _labels([4, 5, 6, 7, 4, 4, 5, 5, 6, 4, 4, 4])
  sampler = PKSampler(labels, 3, 4, seed=11)
  for e in range(3):
    batches = sampler.epoch(e)
    assert batches.shape == (4, 12)
    ids = labels[batches[:, ::4]].ravel()
    np.testing.assert_array_equal(np.sort(ids), np.unique(labels))


def test_every_identity_with_k_images_appears_in_a_default_epoch():
  # Market-1501-like spread of images per identity.
  counts = np.random.default_rng(0).integers(2, 40, size=120)
  labels = _labels(counts)
  sampler = PKSampler(labels, 8, 4, seed=0)
  for e in range(3):
    seen = np.unique(labels[sampler.epoch(e)])
    assert set(10 * np.flatnonzero(counts >= 4)) <= set(seen)


def test_epoch_longer_than_one_round_uses_new_rounds():
  # One identity holds most images: a round ends after 3 batches (when fewer than P = 2
  # identities have groups left), so 20 batches need several rounds.
  labels = _labels([40, 4, 4, 4])
  sampler = PKSampler(labels, 2, 4, seed=2, batches_per_epoch=20)
  batches = sampler.epoch(0)
  assert batches.shape == (20, 8)
  for batch in batches:
    _check_batch(batch, labels, 2, 4)
  # Every batch holds a group of a small identity, and their 12 images form 3 groups per round.
  small = labels[batches[:, ::4]] != 0
  assert small.any(axis=1).all()
  assert small.sum() > 3


def test_single_identity_per_batch_and_tiny_split():
  labels = np.array([5, 5, 7], np.int32)
  sampler = PKSampler(labels, 1, 4, seed=0)
  assert sampler.batches_per_epoch == 1  # 3 // 4 == 0, at least 1
  batch = sampler.epoch(0)[0]
  _check_batch(batch, labels, 1, 4)


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_ids=13, num_instances=4), 'only 12'),
    (dict(num_ids=3, num_instances=0), 'num_instances'),
    (dict(num_ids=0, num_instances=4), 'num_ids'),
    (dict(num_ids=3, num_instances=4, seed=-1), 'seed'),
    (dict(num_ids=3, num_instances=4, batches_per_epoch=0), 'batches_per_epoch'),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
  kwargs = {'seed': 0, **kwargs}
  with pytest.raises(ValueError, match=match):
    PKSampler(_labels(COUNTS), **kwargs)


def test_bad_labels_and_steps_raise_clear_errors():
  with pytest.raises(ValueError, match='non-empty'):
    PKSampler(np.zeros([0], np.int32), 1, 1, seed=0)
  with pytest.raises(ValueError, match='integers'):
    PKSampler(np.zeros([4], np.float32), 1, 1, seed=0)
  sampler = PKSampler(_labels(COUNTS), 3, 4, seed=0)
  with pytest.raises(ValueError, match='start <= stop'):
    sampler.steps(5, 4)
  with pytest.raises(ValueError, match='epoch must be >= 0'):
    sampler.epoch(-1)
