"""Tests of BalancedIdentitySampler, SetReWeightSampler and build_sampler."""

import hashlib

import ml_collections
import numpy as np
import pytest

from data_pipelines import samplers
from data_pipelines.samplers import BalancedIdentitySampler, PKSampler, SetReWeightSampler


def _dataset():
  """12 identities with varied image counts over 3 cameras, shuffled.

  Identity 0 has one image; identity 1 has 5 images all from camera 0; identity 2 has images
  from cameras 0 (six) and 1 (one); the rest are spread over the cameras at random.
  """
  rng = np.random.default_rng(7)
  labels, camids = [0], [2]
  labels += [1] * 5
  camids += [0] * 5
  labels += [2] * 7
  camids += [0] * 6 + [1]
  for pid in range(3, 12):
    n = int(rng.integers(2, 10))
    labels += [pid] * n
    camids += rng.integers(0, 3, n).tolist()
  labels, camids = np.array(labels, np.int32), np.array(camids, np.int32)
  perm = rng.permutation(len(labels))
  return labels[perm], camids[perm]


def _check_pk_layout(batch, labels, p, k):
  groups = labels[batch].reshape(p, k)
  assert (groups == groups[:, :1]).all(), groups
  assert len(np.unique(groups[:, 0])) == p


def _cfg(name, k=4, set_weight=()):
  return ml_collections.ConfigDict({'name': name, 'num_instances': k, 'set_weight': set_weight})


# ----------------------------------------------------------------------------- balanced


@pytest.mark.parametrize('p,k', [(3, 4), (4, 2), (12, 3), (2, 1)])
def test_balanced_batches_have_p_ids_times_k_images(p, k):
  labels, camids = _dataset()
  sampler = BalancedIdentitySampler(labels, camids, p, k, seed=0)
  assert sampler.batch_size == p * k
  assert sampler.batches_per_epoch == max(1, len(labels) // (p * k))
  for e in range(2):
    batches = sampler.epoch(e)
    assert batches.dtype == np.int32 and batches.shape == (sampler.batches_per_epoch, p * k)
    for batch in batches:
      _check_pk_layout(batch, labels, p, k)


def test_balanced_prefers_other_cameras():
  labels, camids = _dataset()
  k = 4
  sampler = BalancedIdentitySampler(labels, camids, 3, k, seed=1, batches_per_epoch=60)
  seen_single = seen_one_camera = 0
  for batch in sampler.epoch(0):
    for group in batch.reshape(-1, k):
      pid = labels[group[0]]
      members = np.flatnonzero(labels == pid)
      assert set(group) <= set(members)
      anchor, others = group[0], group[1:]
      other_cam = members[camids[members] != camids[anchor]]
      if len(other_cam):
        assert (camids[others] != camids[anchor]).all(), (pid, camids[group])
        if len(other_cam) >= k - 1:
          assert len(set(others)) == k - 1  # enough candidates: no repeats
      elif len(members) > 1:
        seen_one_camera += pid == 1
        assert anchor not in others and (camids[others] == camids[anchor]).all()
      else:
        seen_single += 1
        assert (group == anchor).all()
  assert seen_single > 0 and seen_one_camera > 0
  # Identity 2: an anchor from camera 0 is always followed by its only camera-1 image, K - 1 times.
  cam1 = np.flatnonzero((labels == 2) & (camids == 1))[0]
  groups = sampler.epoch(0).reshape(-1, k)
  of_2 = groups[labels[groups[:, 0]] == 2]
  assert len(of_2) > 0
  for group in of_2:
    if camids[group[0]] == 0:
      assert (group[1:] == cam1).all()


def test_balanced_round_uses_each_identity_at_most_once():
  labels, camids = _dataset()  # 12 identities; P = 5 -> 2 batches per round, 2 identities dropped
  sampler = BalancedIdentitySampler(labels, camids, 5, 2, seed=3, batches_per_epoch=2)
  for e in range(3):
    ids = labels[sampler.epoch(e)[:, ::2]].ravel()
    assert len(ids) == 10 and len(np.unique(ids)) == 10


def test_balanced_is_a_pure_function_of_seed_and_epoch():
  labels, camids = _dataset()
  a = BalancedIdentitySampler(labels, camids, 3, 4, seed=5)
  b = BalancedIdentitySampler(labels, camids, 3, 4, seed=5)
  np.testing.assert_array_equal(a.epoch(2), b.epoch(2))
  assert not np.array_equal(a.epoch(0), a.epoch(1))
  assert not np.array_equal(a.epoch(0), BalancedIdentitySampler(labels, camids, 3, 4, 6).epoch(0))
  n = a.batches_per_epoch
  everything = np.concatenate([a.epoch(e) for e in range(4)])
  for start, stop in [(0, n), (2, 2 * n + 1), (3 * n, 4 * n), (5, 5)]:
    np.testing.assert_array_equal(a.steps(start, stop), everything[start:stop])
  first = a.epoch(0)
  first[:] = -1
  assert (a.epoch(0) >= 0).all()


# ----------------------------------------------------------------------------- set re-weight


def test_set_reweight_layout_with_identities_in_several_sets():
  labels, camids = _dataset()
  # Sets are the cameras 0, 1, 2 (identities span cameras); weights (2, 1, 1) with P = 8 take
  # 4, 2, 2 identities per batch, all distinct, each K consecutive images.
  sampler = SetReWeightSampler(labels, camids, 8, 2, seed=0, set_weight=(2, 1, 1),
                               batches_per_epoch=30)
  assert sampler.batch_size == 16
  for batch in sampler.epoch(0):
    _check_pk_layout(batch, labels, 8, 2)


def test_set_reweight_draws_identities_by_image_count():
  # Two disjoint sets: set 0 holds identity 0 (1 image) and identity 1 (9 images); set 1 holds
  # identities 2 and 3 (3 images each). Weights (1, 1), P = 2: every batch takes one identity of
  # each set; identity 1 is drawn with probability 0.9.
  labels = np.array([0] + [1] * 9 + [2] * 3 + [3] * 3, np.int32)
  sets = np.array([0] * 10 + [1] * 6, np.int32)
  sampler = SetReWeightSampler(labels, sets, 2, 3, seed=4, batches_per_epoch=400)
  batches = sampler.epoch(0)
  ids = labels[batches[:, ::3]]
  from_set0 = np.where(np.isin(ids, [0, 1]), ids, -1).max(axis=1)
  assert (np.isin(ids, [0, 1]).sum(axis=1) == 1).all() and (np.isin(ids, [2, 3]).sum(1) == 1).all()
  np.testing.assert_allclose((from_set0 == 1).mean(), 0.9, atol=0.05)
  # K = 3 images: identity 0 (one image) is repeated; identity 1 (nine) has no repeats.
  for group in batches.reshape(-1, 3):
    if labels[group[0]] == 1:
      assert len(set(group)) == 3
    if labels[group[0]] == 0:
      assert (group == 0).all()
  # Group order is shuffled: the set-0 identity is not always first.
  assert 0.3 < np.isin(ids[:, 0], [0, 1]).mean() < 0.7


def test_set_reweight_weights_scale_with_batch():
  labels = np.repeat(np.arange(20), 3).astype(np.int32)
  sets = (np.arange(60) >= 30).astype(np.int32)  # identities 0-9 in set 0, 10-19 in set 1
  sampler = SetReWeightSampler(labels, sets, 6, 3, seed=0, set_weight=(2, 1))  # m = 2: 4 + 2
  for batch in sampler.epoch(0):
    ids = labels[batch[::3]]
    assert (ids < 10).sum() == 4 and (ids >= 10).sum() == 2
  np.testing.assert_array_equal(sampler.steps(0, 3), sampler.epoch(0)[:3])
  assert not np.array_equal(sampler.epoch(0), sampler.epoch(1))
  np.testing.assert_array_equal(
      sampler.epoch(1), SetReWeightSampler(labels, sets, 6, 3, 0, (2, 1)).epoch(1))


@pytest.mark.parametrize('kwargs,match', [
    (dict(set_weight=(1, 1)), 'one non-negative weight per set'),
    (dict(set_weight=(1, 1, 1), num_ids=4), 'not a multiple of sum'),
    (dict(set_weight=(0, 0, 6), num_ids=12), 'lower its config.sampler.set_weight'),
    (dict(set_weight=(1, 1, 1), num_instances=0), 'num_instances'),
])
def test_set_reweight_bad_arguments(kwargs, match):
  labels, camids = _dataset()
  kwargs = {'num_ids': 3, 'num_instances': 2, 'seed': 0, **kwargs}
  with pytest.raises(ValueError, match=match):
    SetReWeightSampler(labels, camids, **kwargs)


# ----------------------------------------------------------------------------- build_sampler


def test_build_sampler_by_name():
  labels, camids = _dataset()
  pk = samplers.build_sampler(_cfg('pk'), labels, camids, 12, seed=3, batches_per_epoch=None)
  assert isinstance(pk, PKSampler)
  np.testing.assert_array_equal(pk.epoch(1), PKSampler(labels, 3, 4, 3).epoch(1))
  balanced = samplers.build_sampler(_cfg('balanced'), labels, camids, 12, 3, 7)
  assert isinstance(balanced, BalancedIdentitySampler) and balanced.batches_per_epoch == 7
  reweight = samplers.build_sampler(_cfg('set_reweight', 2, (1, 1, 1)), labels, camids, 6, 0)
  assert isinstance(reweight, SetReWeightSampler) and reweight.set_weight == (1, 1, 1)
  for sampler in (pk, balanced, reweight):
    assert sampler.num_samples == len(labels)
    assert sampler.steps(0, 2).shape == (2, sampler.batch_size)
  with pytest.raises(ValueError, match='Unknown config.sampler.name'):
    samplers.build_sampler(_cfg('graph'), labels, camids, 12, 0)
  with pytest.raises(ValueError, match='positive multiple'):
    samplers.build_sampler(_cfg('balanced', k=5), labels, camids, 12, 0)
  with pytest.raises(ValueError, match='camids shape'):
    samplers.build_sampler(_cfg('balanced'), labels, camids[:-1], 12, 0)


def test_pk_sampler_output_is_unchanged():
  # Digest of PKSampler.steps computed with data_pipelines/samplers.py before the new samplers.
  labels = np.repeat(np.arange(30), np.random.default_rng(5).integers(1, 12, 30)).astype(np.int32)
  sampler = PKSampler(labels, 4, 4, seed=3)
  steps = sampler.steps(0, 3 * sampler.batches_per_epoch + 2)
  assert hashlib.sha256(steps.tobytes()).hexdigest() == (
      '2e47d1d062ef69c304b7a9780ca4605b861b0708322448ce23f192228b52c1cd')
