"""Weighted regularisation triplet (WRT) loss of AGW (Ye et al., "Deep Learning for Person
Re-identification: A Survey and Outlook", Sec. 4.1, eq. 8).

For a batch of features f_i with identity labels y_i, with Euclidean distances
d_ij = sqrt(max(|f_i|^2 + |f_j|^2 - 2 f_i.f_j, 1e-12)):

  w_ij^p = exp(d_ij) / sum_{k in P_i} exp(d_ik)      over the positives P_i (y_k = y_i, k = i
                                                     included, as the reference's masks do)
  w_ij^n = exp(-d_ij) / sum_{k in N_i} exp(-d_ik)    over the negatives N_i (y_k != y_i)
  d_i^p = sum_{j in P_i} w_ij^p d_ij,   d_i^n = sum_{j in N_i} w_ij^n d_ij
  loss = mean_i log(1 + exp(d_i^p - d_i^n))          (soft margin: no margin to tune)

Far positives and near negatives get the largest weights, so every pair contributes, the hard
ones most. The softmax is computed as the reference's `softmax_weights`: shifted by the row
maximum of the masked values (entries outside the mask count as 0 there) with 1e-6 added to the
normaliser; both are kept because the published numbers use them. A consequence: when every
negative of an anchor is far (exp(-d) << 1e-6, d > ~14), the normaliser is the 1e-6, the
negative weights vanish and d^n goes to 0, so the loss grows instead of vanishing; features at
AGW's scale stay well below that. The same loss is
`jreid.losses.triplet_loss(x, y, margin=0.0, hard_mining=False)`; this module states it on its
own, with the fraction of correctly ordered anchors that AGW logs.
"""

import jax
import jax.numpy as jnp

from jreid.losses.distances import pairwise_euclidean


def _masked_softmax(values: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Row-wise softmax of `values` over the entries where `mask` is 1 (reference semantics)."""
  shift = jnp.max(values * mask, axis=1, keepdims=True)
  exp = jnp.exp(values - shift) * mask
  return exp / (jnp.sum(exp, axis=1, keepdims=True) + 1e-6)


def wrt_distances(features: jnp.ndarray, labels: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The weighted positive and negative distances (d^p, d^n) of every anchor, each [B]."""
  dist = pairwise_euclidean(features, features)
  pos = (labels[:, None] == labels[None, :]).astype(jnp.float32)
  neg = 1.0 - pos
  dist_ap = dist * pos
  dist_an = dist * neg
  weighted_ap = jnp.sum(dist_ap * _masked_softmax(dist_ap, pos), axis=1)
  weighted_an = jnp.sum(dist_an * _masked_softmax(-dist_an, neg), axis=1)
  return weighted_ap, weighted_an


def weighted_regularization_triplet(features: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """The WRT loss of a batch, a scalar (module docstring).

  Args:
    features: [B, D] features (AGW: the GeM-pooled feature before the BNNeck); float32 math.
    labels: [B] integer identity labels.
  """
  dist_ap, dist_an = wrt_distances(features, labels)
  return jnp.mean(jax.nn.softplus(dist_ap - dist_an))


def wrt_accuracy(features: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """Fraction of anchors with d^n >= d^p (the reference's `correct` count / B)."""
  dist_ap, dist_an = wrt_distances(features, labels)
  return jnp.mean((dist_an >= dist_ap).astype(jnp.float32))
