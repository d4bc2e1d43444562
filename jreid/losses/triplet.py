"""Batch triplet loss (Hermans et al., "In Defense of the Triplet Loss"), FastReID semantics.

For every anchor i of the batch, with distances d (Euclidean, or FastReID's cosine 2 - 2cos):
  hard mining:  d_ap = max_{j: y_j = y_i} d_ij   (j = i included, as FastReID's masks do)
                d_an = min_{j: y_j != y_i} d_ij
  weighted mining (AGW's weighted regularisation triplet, Ye et al.):
                d_ap = sum_j w_ij d_ij over positives, w = softmax(d) over positives
                d_an = sum_j w_ij d_ij over negatives, w = softmax(-d) over negatives
The loss is mean_i relu(d_ap - d_an + margin) for margin > 0 and the soft margin
mean_i softplus(d_ap - d_an) for margin == 0.
"""

import jax
import jax.numpy as jnp

from jreid.losses.distances import pairwise_cosine, pairwise_euclidean


def _softmax_weights(values: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Row-wise softmax of `values` restricted to `mask`, as FastReID's `softmax_weights`.

  The shift is the row maximum of values * mask, so entries outside the mask count as 0 in
  it, and the normaliser has 1e-6 added; both change the weights when all masked values are
  far below 0 (far negatives), and are kept because the published AGW/FastReID numbers use
  them.
  """
  shift = jnp.max(values * mask, axis=1, keepdims=True)
  exp = jnp.exp(values - shift) * mask
  return exp / (jnp.sum(exp, axis=1, keepdims=True) + 1e-6)


def triplet_loss(
    embeddings: jnp.ndarray,
    labels: jnp.ndarray,
    margin: float = 0.3,
    norm_feat: bool = False,
    hard_mining: bool = True,
) -> jnp.ndarray:
  """Triplet loss over all anchors of a batch, a scalar (see the module docstring).

  Args:
    embeddings: [B, D] features (computed in float32).
    labels: [B] integer identity labels.
    margin: > 0 for the hinge relu(d_ap - d_an + margin); 0 for the soft margin.
    norm_feat: use FastReID's cosine distance 2 - 2cos instead of the Euclidean one.
    hard_mining: batch-hard mining if True, softmax-weighted (AGW) mining otherwise.
    (margin, norm_feat and hard_mining are Python values: static arguments under jit.)

  An anchor without negatives in the batch contributes 0 to the hinge and to the soft margin.
  FastReID falls back to margin 0.3 when PyTorch's soft margin overflows to inf; softplus here
  is computed stably and never does.
  """
  if margin < 0:
    raise ValueError(f'triplet margin must be >= 0 (0 = soft margin), got {margin}.')
  distance = pairwise_cosine if norm_feat else pairwise_euclidean
  dist = distance(embeddings, embeddings)
  is_pos = labels[:, None] == labels[None, :]
  if hard_mining:
    dist_ap = jnp.max(jnp.where(is_pos, dist, -jnp.inf), axis=1)
    dist_an = jnp.min(jnp.where(is_pos, jnp.inf, dist), axis=1)
  else:
    pos = is_pos.astype(jnp.float32)
    neg = 1.0 - pos
    dist_ap = jnp.sum(dist * _softmax_weights(dist * pos, pos), axis=1)
    dist_an = jnp.sum(dist * _softmax_weights(-dist * neg, neg), axis=1)
  if margin > 0:
    return jnp.mean(jax.nn.relu(dist_ap - dist_an + margin))
  return jnp.mean(jax.nn.softplus(dist_ap - dist_an))
