"""Tests for jreid.losses against plain numpy references written with loops."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jreid.losses import cross_entropy, pairwise_cosine, pairwise_euclidean, triplet_loss

# ----------------------------------------------------------------------------- numpy references


def log_softmax_ref(row):
  shifted = row - row.max()
  return shifted - np.log(np.sum(np.exp(shifted)))


def cross_entropy_ref(logits, labels, epsilon, variant):
  logits = np.asarray(logits, np.float64)
  num_samples, num_classes = logits.shape
  losses = []
  for i in range(num_samples):
    log_probs = log_softmax_ref(logits[i])
    loss = 0.0
    for c in range(num_classes):
      if variant == 'fastreid':
        target = 1 - epsilon if c == labels[i] else epsilon / (num_classes - 1)
      else:
        target = (1 - epsilon) * (c == labels[i]) + epsilon / num_classes
      loss -= target * log_probs[c]
    losses.append(loss)
  if variant == 'fastreid':
    return sum(losses) / max(sum(loss != 0 for loss in losses), 1)
  return sum(losses) / num_samples


def euclidean_ref(a, b):
  return np.sqrt(max(np.sum(a * a) + np.sum(b * b) - 2 * np.sum(a * b), 1e-12))


def cosine_ref(a, b):
  return 2 - 2 * np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b))


def softmax_weights_ref(values, mask):
  """FastReID's softmax_weights on one row: shift by max(values * mask), normaliser + 1e-6."""
  shift = max(v * m for v, m in zip(values, mask))
  exps = [np.exp(v - shift) * m for v, m in zip(values, mask)]
  total = sum(exps) + 1e-6
  return [e / total for e in exps]


def triplet_ref(x, labels, margin, norm_feat, hard_mining):
  x = np.asarray(x, np.float64)
  n = len(x)
  distance = cosine_ref if norm_feat else euclidean_ref
  d = [[distance(x[i], x[j]) for j in range(n)] for i in range(n)]
  losses = []
  for i in range(n):
    pos = [labels[j] == labels[i] for j in range(n)]  # includes the anchor itself
    neg = [not p for p in pos]
    if hard_mining:
      d_ap = max(d[i][j] for j in range(n) if pos[j])
      d_an = min((d[i][j] for j in range(n) if neg[j]), default=np.inf)
    else:
      w_pos = softmax_weights_ref([d[i][j] * pos[j] for j in range(n)], pos)
      w_neg = softmax_weights_ref([-d[i][j] * neg[j] for j in range(n)], neg)
      d_ap = sum(d[i][j] * w_pos[j] for j in range(n))
      d_an = sum(d[i][j] * w_neg[j] for j in range(n))
    if margin > 0:
      losses.append(max(d_ap - d_an + margin, 0.0))
    else:
      losses.append(np.log1p(np.exp(d_ap - d_an)))
  return np.mean(losses)


def random_batch(seed, num_ids=4, per_id=4, dim=8, scale=1.0):
  rng = np.random.default_rng(seed)
  labels = np.repeat(rng.permutation(100)[:num_ids], per_id).astype(np.int32)
  x = rng.normal(size=(num_ids * per_id, dim)) * scale / np.sqrt(dim)
  return x.astype(np.float32), labels


TRIPLET_CASES = {
    'hard': dict(margin=0.3, norm_feat=False, hard_mining=True),
    'soft_margin': dict(margin=0.0, norm_feat=False, hard_mining=True),
    'weighted': dict(margin=0.0, norm_feat=False, hard_mining=False),
    'weighted_margin': dict(margin=0.3, norm_feat=False, hard_mining=False),
    'cosine': dict(margin=0.3, norm_feat=True, hard_mining=True),
    'cosine_weighted': dict(margin=0.0, norm_feat=True, hard_mining=False),
}

# ----------------------------------------------------------------------------- distances


def test_pairwise_distances_equal_numpy_reference():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 7)).astype(np.float32)
  y = rng.normal(size=(3, 7)).astype(np.float32)
  euclid = [[euclidean_ref(a, b) for b in y.astype(np.float64)] for a in x.astype(np.float64)]
  cosine = [[cosine_ref(a, b) for b in y.astype(np.float64)] for a in x.astype(np.float64)]
  np.testing.assert_allclose(pairwise_euclidean(x, y), euclid, rtol=1e-5)
  np.testing.assert_allclose(pairwise_cosine(x, y), cosine, rtol=1e-5, atol=1e-6)
  # The clamp: a point is 1e-6 (sqrt of 1e-12) from itself, not 0.
  same = np.ones((1, 3), np.float32)
  np.testing.assert_allclose(pairwise_euclidean(same, same), [[1e-6]], rtol=1e-6)
  np.testing.assert_allclose(pairwise_cosine(x, 3 * x).diagonal(), 0.0, atol=1e-6)


# ----------------------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize('variant', ['fastreid', 'bot'])
@pytest.mark.parametrize('epsilon', [0.0, 0.1])
def test_cross_entropy_equals_numpy_reference(variant, epsilon):
  rng = np.random.default_rng(1)
  logits = (rng.normal(size=(6, 5)) * 3).astype(np.float32)
  labels = rng.integers(0, 5, size=6).astype(np.int32)
  np.testing.assert_allclose(cross_entropy(logits, labels, epsilon, variant),
                             cross_entropy_ref(logits, labels, epsilon, variant), rtol=1e-5)


def test_cross_entropy_hand_computed():
  # Two classes, logits 0: log softmax = log(1/2) everywhere, whatever the targets.
  logits = np.zeros((2, 2), np.float32)
  labels = np.array([0, 1])
  np.testing.assert_allclose(cross_entropy(logits, labels, 0.1), np.log(2), rtol=1e-6)
  # Three classes, eps 0.3: FastReID targets (0.7, 0.15, 0.15), BoT targets (0.8, 0.1, 0.1).
  logits = np.array([[2.0, 0.0, -1.0]], np.float32)
  log_probs = logits[0] - np.log(np.exp(logits[0]).sum())
  np.testing.assert_allclose(cross_entropy(logits, [0], 0.3, 'fastreid'),
                             -(0.7 * log_probs[0] + 0.15 * log_probs[1] + 0.15 * log_probs[2]),
                             rtol=1e-6)
  np.testing.assert_allclose(cross_entropy(logits, [0], 0.3, 'bot'),
                             -(0.8 * log_probs[0] + 0.1 * log_probs[1] + 0.1 * log_probs[2]),
                             rtol=1e-6)


def test_cross_entropy_fastreid_divides_by_the_non_zero_losses():
  # Sample 0 is classified with certainty in float32: its loss is exactly 0 and FastReID's
  # reduction divides by the 2 non-zero losses, BoT's by the batch size 3.
  logits = np.array([[200.0, 0.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
  labels = np.array([0, 0, 2])
  loss_1 = -log_softmax_ref(logits[1].astype(np.float64))[0]
  loss_2 = np.log(3)
  np.testing.assert_allclose(cross_entropy(logits, labels), (loss_1 + loss_2) / 2, rtol=1e-6)
  np.testing.assert_allclose(cross_entropy(logits, labels, variant='bot'),
                             (loss_1 + loss_2) / 3, rtol=1e-6)
  # All losses zero: divided by max(0, 1), giving 0 rather than NaN.
  assert float(cross_entropy(logits[:1], labels[:1])) == 0.0


@pytest.mark.parametrize('variant', ['fastreid', 'bot'])
def test_cross_entropy_gradient_finite_jit_and_bfloat16(variant):
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(4, 6)).astype(np.float32)
  labels = np.array([0, 5, 2, 2])
  loss_fn = functools.partial(cross_entropy, epsilon=0.1, variant=variant)
  grad = jax.grad(loss_fn)(logits, labels)
  assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
  np.testing.assert_allclose(jax.jit(loss_fn)(logits, labels), loss_fn(logits, labels),
                             rtol=1e-6)
  loss_bf16 = loss_fn(jnp.asarray(logits, jnp.bfloat16), labels)
  assert loss_bf16.dtype == jnp.float32


def test_cross_entropy_rejects_unknown_variant():
  with pytest.raises(ValueError, match="variant must be one of \\('fastreid', 'bot'\\)"):
    cross_entropy(np.zeros((1, 2)), np.zeros(1, np.int32), variant='torch')


# ----------------------------------------------------------------------------- triplet


@pytest.mark.parametrize('case', TRIPLET_CASES)
@pytest.mark.parametrize('seed,scale', [(0, 1.0), (1, 3.0), (2, 20.0)])
def test_triplet_equals_numpy_reference(case, seed, scale):
  # Scale 20 puts negatives so far away that FastReID's softmax_weights quirks (the shift by a
  # row maximum that counts masked entries as 0, the + 1e-6) dominate the weighted variants.
  x, labels = random_batch(seed, scale=scale)
  kwargs = TRIPLET_CASES[case]
  np.testing.assert_allclose(triplet_loss(x, labels, **kwargs),
                             triplet_ref(x, labels, **kwargs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('case', TRIPLET_CASES)
def test_triplet_uneven_identities_and_singletons(case):
  # Identity sizes 3, 1 (only itself as positive), 2 and 4: masks, not a P x K reshape.
  rng = np.random.default_rng(3)
  labels = np.array([5, 5, 5, 9, 2, 2, 7, 7, 7, 7], np.int32)
  x = (rng.normal(size=(10, 6)) / np.sqrt(6)).astype(np.float32)
  kwargs = TRIPLET_CASES[case]
  np.testing.assert_allclose(triplet_loss(x, labels, **kwargs),
                             triplet_ref(x, labels, **kwargs), rtol=1e-5, atol=1e-5)


def test_triplet_hand_computed_batch():
  # Points on a line: 0, 1 (id 0) and 3, 5 (id 1).
  x = np.array([[0.0], [1.0], [3.0], [5.0]], np.float32)
  labels = np.array([0, 0, 1, 1])
  # d_ap = (1, 1, 2, 2), d_an = (3, 2, 2, 4).
  np.testing.assert_allclose(triplet_loss(x, labels, margin=0.3), 0.3 / 4, rtol=1e-6)
  soft = np.mean(np.log1p(np.exp([1 - 3, 1 - 2, 2 - 2, 2 - 4])))
  np.testing.assert_allclose(triplet_loss(x, labels, margin=0.0), soft, rtol=1e-6)
  # A singleton identity: its hardest positive is itself, at the clamped distance 1e-6.
  x = np.array([[0.0], [2.0], [3.0]], np.float32)
  labels = np.array([0, 1, 1])
  # d_ap = (1e-6, 1, 1), d_an = (2, 2, 3).
  expected = np.mean(np.log1p(np.exp([1e-6 - 2, 1 - 2, 1 - 3])))
  np.testing.assert_allclose(triplet_loss(x, labels, margin=0.0), expected, rtol=1e-6)


def test_triplet_without_negatives_is_zero_for_hard_mining():
  x, _ = random_batch(4, num_ids=1)
  labels = np.zeros(len(x), np.int32)
  assert float(triplet_loss(x, labels, margin=0.3)) == 0.0
  assert float(triplet_loss(x, labels, margin=0.0)) == 0.0
  assert np.isfinite(jax.grad(triplet_loss)(x, labels, 0.0)).all()


@pytest.mark.parametrize('case', TRIPLET_CASES)
def test_triplet_gradient_finite_and_jit(case):
  x, labels = random_batch(5)
  kwargs = TRIPLET_CASES[case]
  loss_fn = functools.partial(triplet_loss, **kwargs)
  grad = jax.grad(loss_fn)(x, labels)
  assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
  np.testing.assert_allclose(jax.jit(loss_fn)(x, labels), loss_fn(x, labels), rtol=1e-6)


def test_triplet_rejects_negative_margin():
  with pytest.raises(ValueError, match='margin must be >= 0'):
    triplet_loss(np.zeros((2, 3)), np.array([0, 1]), margin=-0.1)
