"""Cluster Contrast: the loss and both memory updates against plain numpy, a tiny run end to end,
and no identity label read in training."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny
from jreid import clustering
from jreid import train
from jreid.methods import cluster_contrast as CC


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ref_loss(feats, labels, memory, k, temperature):
  """-log softmax over the first k centroids, mean over the batch (float64)."""
  f = _normalize(np.asarray(feats, np.float64))
  logits = f @ np.asarray(memory[:k], np.float64).T / temperature
  logits -= logits.max(axis=1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return -np.mean(log_probs[np.arange(len(labels)), labels])


def ref_update(memory, feats, labels, momentum, mode):
  """The reference's ClusterMemory backward: every sample in order ('mean'), or per identity
  its sample of least similarity to the centroid (first on ties, as np.argmin) ('hard')."""
  memory = np.array(memory, np.float64)
  f = _normalize(np.asarray(feats, np.float64))
  if mode == 'mean':
    for x, y in zip(f, labels):
      memory[y] = momentum * memory[y] + (1 - momentum) * x
      memory[y] /= np.linalg.norm(memory[y])
    return memory
  for y in dict.fromkeys(labels.tolist()):  # identities in order of appearance
    members = np.flatnonzero(labels == y)
    hard = members[np.argmin(f[members] @ memory[y])]
    memory[y] = momentum * memory[y] + (1 - momentum) * f[hard]
    memory[y] /= np.linalg.norm(memory[y])
  return memory


def _batch(seed=0, b=12, d=8, capacity=7, k=5):
  rng = np.random.default_rng(seed)
  feats = rng.normal(size=(b, d)).astype(np.float32)
  labels = rng.integers(0, k, b)
  memory = np.zeros((capacity, d), np.float32)
  memory[:k] = _normalize(rng.normal(size=(k, d)))
  return feats, labels, memory, np.arange(capacity) < k


def test_loss_is_infonce_over_the_valid_centroids():
  feats, labels, memory, mask = _batch()
  got = CC.cluster_contrast_loss(jnp.asarray(feats), jnp.asarray(labels), jnp.asarray(memory),
                                 jnp.asarray(mask), 0.05)
  np.testing.assert_allclose(got, ref_loss(feats, labels, memory, 5, 0.05), rtol=1e-5)
  # No gradient reaches the memory; the features get one.
  grads = jax.grad(lambda f, m: CC.cluster_contrast_loss(f, labels, m, mask, 0.05),
                   argnums=(0, 1))(jnp.asarray(feats), jnp.asarray(memory))
  assert np.all(np.asarray(grads[1]) == 0) and np.abs(np.asarray(grads[0])).max() > 0


@pytest.mark.parametrize('mode', ['mean', 'hard'])
def test_memory_updates_match_the_reference(mode):
  feats, labels, memory, _ = _batch(1)
  got = jax.jit(CC.update_memory, static_argnames='mode')(
      jnp.asarray(memory), jnp.asarray(feats), jnp.asarray(labels), 0.1, mode=mode)
  want = ref_update(memory, feats, labels, 0.1, mode)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  untouched = np.setdiff1d(np.arange(len(memory)), labels)
  np.testing.assert_array_equal(np.asarray(got)[untouched], memory[untouched])
  if mode == 'hard':  # differs from the mean update whenever an identity has several samples
    assert not np.allclose(want, ref_update(memory, feats, labels, 0.1, 'mean'))


def _tiny(tmp_path, variant=None):
  config = tiny.config('cluster_contrast', tmp_path, variant, epochs=2, steps=2)
  config.input.height = 48
  config.train.log_every_steps = 1
  config.cluster_contrast.k1 = 10
  config.cluster_contrast.eps = 0.7
  return config


@pytest.mark.slow  # The suite trains :hard in test_training_never_reads_identity_labels.
def test_end_to_end_hard_variant(tmp_path):
  config = _tiny(tmp_path, 'hard')
  assert config.cluster_contrast.memory_update == 'hard'
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['steps'] == 4 and 0.0 <= results['mAP'] <= 1.0
  rows = clustering.EpochLog(tmp_path / 'run', 'cluster_contrast_epochs').rows()
  assert [r['epoch'] for r in rows] == [1, 2] and rows[0]['clusters'] >= 1
  np.testing.assert_allclose(rows[-1]['mAP'], results['mAP'], rtol=1e-6)
  text = (tmp_path / 'run' / 'report.md').read_text()
  assert 'Cluster Contrast' in text and 'cluster_contrast_epochs.png' in text


def test_training_never_reads_identity_labels(tmp_path):
  """The pseudo labels, memory and parameters after the first epoch's steps are the same when
  the train split's labels and pids are garbage (the :hard variant: its memory update picks the
  hardest sample of each pseudo class)."""
  config = _tiny(tmp_path, 'hard')
  assert config.cluster_contrast.memory_update == 'hard'

  def first_steps(workdir, garbage=None):
    run = train.build_run(config, workdir)
    if garbage is not None:
      split = dataclasses.replace(run.data.train, labels=garbage, pids=garbage)
      data = dataclasses.replace(run.data, splits={**run.data.splits, 'train': split})
      run = dataclasses.replace(run, data=data, method=CC.build(config, data, run.mesh, workdir))
    state = run.method.begin_epoch(run.method.state, 0)
    for batch in run.method.batches(state, 0, 2):
      state, _ = run.train_step(state, batch)
    run.checkpointer.close()
    return run, jax.device_get(state)

  run, a = first_steps(tmp_path / 'a')
  garbage = np.random.default_rng(7).integers(1000, 2000, len(run.data.train)).astype(np.int32)
  _, b = first_steps(tmp_path / 'b', garbage)
  np.testing.assert_array_equal(a.extra.labels, b.extra.labels)
  np.testing.assert_array_equal(a.extra.memory, b.extra.memory)
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  k = int(a.extra.num_clusters)
  assert k >= 1 and a.extra.memory_mask.sum() == k
  np.testing.assert_allclose(np.linalg.norm(a.extra.memory[:k], axis=1), 1.0, rtol=1e-5)
