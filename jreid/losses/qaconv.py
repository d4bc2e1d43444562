"""QAConv losses on matcher logits (pure functions, arrays in, scalar out).

Liao & Shao, ECCV 2020 (class memory, QAConv 1.x) and CVPR 2022 (pairwise matching, QAConv 2.0;
hard triplet on graph-sampled batches, QAConv 2.1 / QAConv-GS). Scores are similarities (higher =
more alike), e.g. `jreid.models.qaconv.qaconv_batch_scores`.

As in the reference trainer, every loss is first computed per anchor (per row of `scores`), and the
mean is taken over the finite rows only (non-finite rows, e.g. from an overflow, are dropped; if
none is finite the loss is 0 and `finite_fraction` says so).
"""

import jax
import jax.numpy as jnp

# The reference masks with +-1e15 rather than +-inf, so an anchor without positives (or
# negatives) gets a finite hinge of 0 and counts in the mean.
_BIG = 1e15


def _same_label(labels: jnp.ndarray) -> jnp.ndarray:
  return labels[:, None] == labels[None, :]


def hardest_pairs(scores: jnp.ndarray, labels: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(min positive score, max negative score) per anchor of a [B, B] batch score matrix.

  Positives are the other images of the anchor's label (the diagonal is excluded); an anchor
  without positives gets 1e15, one without negatives -1e15, as the reference.
  """
  scores = scores.astype(jnp.float32)
  same = _same_label(labels)
  eye = jnp.eye(scores.shape[0], dtype=bool)
  min_pos = jnp.min(jnp.where(same & ~eye, scores, _BIG), axis=1)
  max_neg = jnp.max(jnp.where(same, -_BIG, scores), axis=1)
  return min_pos, max_neg


def _finite_mean(values: jnp.ndarray, finite: jnp.ndarray) -> jnp.ndarray:
  count = jnp.sum(finite)
  return jnp.where(finite, values, 0.0).sum() / jnp.maximum(count, 1)


def qaconv_triplet_terms(
    scores: jnp.ndarray, labels: jnp.ndarray, margin: float = 16.0
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Per-anchor QAConv 2.1 hard triplet loss and accuracy, each [B].

  loss_a = relu(margin - (min_pos_a - max_neg_a)) (PyTorch `MarginRankingLoss` with target 1);
  accuracy_a = min_pos_a >= max_neg_a.
  """
  min_pos, max_neg = hardest_pairs(scores, labels)
  loss = jax.nn.relu(margin - (min_pos - max_neg))
  return loss, (min_pos >= max_neg).astype(jnp.float32)


def qaconv_triplet_loss(
    scores: jnp.ndarray, labels: jnp.ndarray, margin: float = 16.0
) -> jnp.ndarray:
  """QAConv 2.1 hard triplet loss on a [B, B] logit matrix: mean over finite anchors."""
  loss, _ = qaconv_triplet_terms(scores, labels, margin)
  return _finite_mean(loss, jnp.isfinite(loss))


def qaconv_triplet_metrics(
    scores: jnp.ndarray, labels: jnp.ndarray, margin: float = 16.0
) -> dict[str, jnp.ndarray]:
  """{'loss', 'accuracy', 'finite_fraction'} of the triplet loss (accuracy over finite anchors)."""
  loss, acc = qaconv_triplet_terms(scores, labels, margin)
  finite = jnp.isfinite(loss)
  return {
      'loss': _finite_mean(loss, finite),
      'accuracy': _finite_mean(acc, finite),
      'finite_fraction': jnp.mean(finite.astype(jnp.float32)),
  }


def _bce_with_logits(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Elementwise binary cross-entropy on logits, numerically stable (as PyTorch's)."""
  return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def pairwise_matching_terms(
    scores: jnp.ndarray, labels: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Per-anchor QAConv 2.0 pairwise matching loss and accuracy, each [B].

  loss_a = sum over all b (the diagonal included, as the reference) of
  BCE-with-logits(scores[a, b], labels[a] == labels[b]); accuracy_a = min_pos_a > max_neg_a.
  """
  scores = scores.astype(jnp.float32)
  targets = _same_label(labels).astype(jnp.float32)
  loss = _bce_with_logits(scores, targets).sum(axis=1)
  min_pos, max_neg = hardest_pairs(jax.lax.stop_gradient(scores), labels)
  return loss, (min_pos > max_neg).astype(jnp.float32)


def pairwise_matching_loss(scores: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """QAConv 2.0 pairwise matching loss on a [B, B] logit matrix: mean over finite anchors."""
  loss, _ = pairwise_matching_terms(scores, labels)
  return _finite_mean(loss, jnp.isfinite(loss))


# ----------------------------------------------------------------------------- class memory


def init_class_memory(num_classes: int, hw: int, channels: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(memory [C, hw, channels] zeros, valid [C] zeros): one feature map per training class."""
  return jnp.zeros((num_classes, hw, channels), jnp.float32), jnp.zeros((num_classes,), jnp.float32)


def class_memory_terms(
    scores: jnp.ndarray, labels: jnp.ndarray, valid: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Per-sample QAConv 1.x class-memory loss and accuracy, each [B].

  `scores` [B, C] are the matcher logits of the batch's maps (query) against the class memory
  (gallery, gradient stopped). The loss is a focal-weighted BCE against the one-hot label:
  loss_b = sum over classes c with valid[c] of BCE(s, y) * (1 - p)^2 if y else p^2, p = sigmoid(s);
  accuracy_b = argmax_c scores[b] == labels[b].
  """
  scores = scores.astype(jnp.float32)
  onehot = jax.nn.one_hot(labels, scores.shape[1], dtype=jnp.float32)
  prob = jax.nn.sigmoid(scores)
  weight = jnp.square(jnp.where(onehot > 0, 1.0 - prob, prob))
  loss = (_bce_with_logits(scores, onehot) * weight * valid[None, :]).sum(axis=1)
  acc = (jnp.argmax(scores, axis=1) == labels).astype(jnp.float32)
  return loss, acc


def class_memory_loss(
    scores: jnp.ndarray, labels: jnp.ndarray, valid: jnp.ndarray
) -> jnp.ndarray:
  """QAConv 1.x class-memory loss (see `class_memory_terms`): mean over finite samples."""
  loss, _ = class_memory_terms(scores, labels, valid)
  return _finite_mean(loss, jnp.isfinite(loss))


def class_memory_update(
    memory: jnp.ndarray, valid: jnp.ndarray, maps: jnp.ndarray, labels: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Writes the batch's maps [B, hw, c] into their classes' memory slots (after the loss).

  Where a class appears several times in the batch, one of its maps is kept (the reference's
  indexed assignment does the same). Returns (memory, valid).
  """
  maps = jax.lax.stop_gradient(maps).astype(memory.dtype)
  maps = maps.reshape((maps.shape[0],) + memory.shape[1:])
  return memory.at[labels].set(maps), valid.at[labels].set(1.0)
