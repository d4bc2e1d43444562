"""Pairwise metric losses on L2-normalised embeddings, FastReID semantics (`circle_loss.py`).

For every anchor i of the batch, with cosine similarities s_ij = <x_i/|x_i|, x_j/|x_j|>, positives
P_i = {j != i: y_j = y_i} and negatives N_i = {j: y_j != y_i}:

  circle (Sun et al., "Circle Loss", pair-wise form):
    loss_i = softplus(logsumexp_{j in P_i} -gamma a_p (s_ij - (1 - m))
                      + logsumexp_{j in N_i}  gamma a_n (s_ij - m)),
    a_p = max(1 + m - s_ij, 0), a_n = max(s_ij + m, 0), constants for the gradient;
  cosface (pair-wise CosFace, the same paper's unified form):
    loss_i = softplus(logsumexp_{j in P_i} -gamma s_ij + logsumexp_{j in N_i} gamma (s_ij + m)).

The loss is mean_i loss_i. An anchor without positives or without negatives contributes 0 (its
logsumexp over an empty set is -inf; FastReID gets ~0 from a -99999999 mask).
"""

import jax
import jax.numpy as jnp

from jreid.losses.distances import l2_normalize

_MASKED = -1e30  # stands for -inf in the logsumexps, and keeps gradients finite


def _similarities(embeddings: jnp.ndarray, labels: jnp.ndarray):
  """Cosine similarities [B, B] and the positive (self excluded) and negative masks."""
  x = l2_normalize(embeddings.astype(jnp.float32))
  sim = jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
  same = labels[:, None] == labels[None, :]
  is_pos = same & ~jnp.eye(len(labels), dtype=bool)
  return sim, is_pos, ~same


def _pair_loss(logit_p: jnp.ndarray, logit_n: jnp.ndarray, is_pos: jnp.ndarray,
               is_neg: jnp.ndarray) -> jnp.ndarray:
  lse_p = jax.nn.logsumexp(jnp.where(is_pos, logit_p, _MASKED), axis=1)
  lse_n = jax.nn.logsumexp(jnp.where(is_neg, logit_n, _MASKED), axis=1)
  return jnp.mean(jax.nn.softplus(lse_p + lse_n))


def pairwise_circle_loss(
    embeddings: jnp.ndarray,
    labels: jnp.ndarray,
    margin: float = 0.25,
    gamma: float = 128.0,
) -> jnp.ndarray:
  """Pair-wise circle loss over all anchors of a batch, a scalar (see the module docstring).

  Args:
    embeddings: [B, D] features (normalised here; computed in float32).
    labels: [B] integer identity labels.
    margin: m, the relaxation (FastReID MODEL.LOSSES.CIRCLE.MARGIN).
    gamma: the scale (FastReID MODEL.LOSSES.CIRCLE.GAMMA).
  """
  sim, is_pos, is_neg = _similarities(embeddings, labels)
  fixed = jax.lax.stop_gradient(sim)
  alpha_p = jnp.maximum(1.0 + margin - fixed, 0.0)
  alpha_n = jnp.maximum(fixed + margin, 0.0)
  logit_p = -gamma * alpha_p * (sim - (1.0 - margin))
  logit_n = gamma * alpha_n * (sim - margin)
  return _pair_loss(logit_p, logit_n, is_pos, is_neg)


def pairwise_cosface_loss(
    embeddings: jnp.ndarray,
    labels: jnp.ndarray,
    margin: float = 0.25,
    gamma: float = 128.0,
) -> jnp.ndarray:
  """Pair-wise CosFace loss over all anchors of a batch, a scalar (see the module docstring).

  Args:
    embeddings: [B, D] features (normalised here; computed in float32).
    labels: [B] integer identity labels.
    margin: m, added to the negative similarities (FastReID MODEL.LOSSES.COSFACE.MARGIN).
    gamma: the scale (FastReID MODEL.LOSSES.COSFACE.GAMMA).
  """
  sim, is_pos, is_neg = _similarities(embeddings, labels)
  return _pair_loss(-gamma * sim, gamma * (sim + margin), is_pos, is_neg)
