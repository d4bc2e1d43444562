"""PPLR losses (Cho et al., "Part-based Pseudo Label Refinement for Unsupervised Person
Re-identification", CVPR 2022): pure functions, arrays in, scalar out, jit-able.

The classifiers of PPLR grow and shrink with the number of clusters of each epoch. To keep jit
shapes fixed, jreid allocates them at a fixed capacity C_max and passes a boolean `class_mask`
[C_max] (True for the classes 0..K-1 of the current epoch): masked classes get logit -inf, so
every softmax, every uniform distribution and every label-smoothing constant is over the K valid
classes only, and each loss equals the one computed on the unpadded [B, K] logits. With
`class_mask=None` all C_max classes are valid.

  cross_agreement      |R_g ∩ R_p| / |R_g ∪ R_p| of the top-k neighbour lists (self excluded)
  refined_soft_target  beta * one-hot + (1 - beta) * sum_p softmax(ca)_p softmax(part logits_p)
  pglr_loss            cross-entropy of the global logits with the refined soft target
  aals_loss            ca * CE + (1 - ca) * KL(uniform || softmax)  (agreement-aware smoothing)
  smoothed_ce          (1 - eps) one-hot + eps / K label-smoothed CE (parts, first epochs)
  camera_proxy_loss    inter-camera contrastive loss against per-(cluster, camera) proxies
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jreid.losses.distances import l2_normalize


def _masked_log_softmax(logits: jnp.ndarray, class_mask: jnp.ndarray | None):
  """log_softmax over the valid classes; (log probs with 0 on masked classes, mask, K)."""
  logits = logits.astype(jnp.float32)
  if class_mask is None:
    class_mask = jnp.ones(logits.shape[-1], bool)
  class_mask = jnp.asarray(class_mask, bool)
  masked = jnp.where(class_mask, logits, -jnp.inf)
  log_probs = jax.nn.log_softmax(masked, axis=-1)
  log_probs = jnp.where(class_mask, log_probs, 0.0)  # 0 * -inf would be NaN in the sums below
  num_valid = jnp.sum(class_mask).astype(jnp.float32)
  return log_probs, class_mask, num_valid


@functools.partial(jax.jit, static_argnums=(3,))
def _topk_block(x: jnp.ndarray, rows: jnp.ndarray, start: jnp.ndarray, k: int) -> jnp.ndarray:
  """Top-k most similar rows of x for each row of `rows` (rows start..; self excluded)."""
  sims = jnp.matmul(rows, x.T, precision=jax.lax.Precision.HIGHEST)
  local = jnp.arange(rows.shape[0])
  sims = sims.at[local, start + local].set(-jnp.inf)
  return jax.lax.top_k(sims, k)[1]


def neighbour_lists(features: jnp.ndarray, k: int, chunk: int = 2048) -> jnp.ndarray:
  """Indices [N, k] of each row's k nearest other rows (cosine similarity; self excluded).

  Ties are broken by the lower index (`lax.top_k`). Rows are processed in chunks, so memory is
  [chunk, N], never [N, N]. PPLR ranks L2-normalised features by Euclidean distance, which is
  the same order.
  """
  x = l2_normalize(jnp.asarray(features, jnp.float32))
  n = x.shape[0]
  if not 1 <= k < n:
    raise ValueError(f'neighbour_lists needs 1 <= k < num_samples ({n}), got k={k}.')
  out = [_topk_block(x, x[start:start + chunk], jnp.int32(start), k)
         for start in range(0, n, chunk)]
  return jnp.concatenate(out).astype(jnp.int32)


def agreement_from_lists(ranked_g: jnp.ndarray, ranked_p: jnp.ndarray) -> jnp.ndarray:
  """|R_g ∩ R_p| / |R_g ∪ R_p| per row of two [N, k] neighbour lists (no repeats in a row)."""
  ranked_g = jnp.asarray(ranked_g)
  ranked_p = jnp.asarray(ranked_p)
  inter = jnp.sum(ranked_g[:, :, None] == ranked_p[:, None, :], axis=(1, 2)).astype(jnp.float32)
  union = ranked_g.shape[1] + ranked_p.shape[1] - inter
  return inter / union


def cross_agreement(features_g: jnp.ndarray, features_p: jnp.ndarray, k: int = 20) -> jnp.ndarray:
  """Cross-agreement scores [N, P] of PPLR (Eq. 2): per sample and part, the Jaccard similarity
  of its top-k neighbour set in the global feature space and in that part's space.

  Args:
    features_g: [N, D] global features.
    features_p: [N, P, D] part features.
    k: neighbours per list (PPLR: 20), the sample itself excluded.
  """
  ranked_g = neighbour_lists(features_g, k)
  return jnp.stack([agreement_from_lists(ranked_g, neighbour_lists(features_p[:, p], k))
                    for p in range(features_p.shape[1])], axis=1)


def refined_soft_target(part_logits: jnp.ndarray, labels: jnp.ndarray, scores: jnp.ndarray,
                        beta: float = 0.5,
                        class_mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """The part-guided refined label of PPLR (Eq. 4), a constant for the gradient.

  Args:
    part_logits: [B, P, C] part classifier logits.
    labels: [B] pseudo labels in the valid classes.
    scores: [B, P] cross-agreement scores; w = softmax over parts of them.
    beta: weight of the one-hot label.
    class_mask: [C] valid classes (None: all).

  Returns:
    [B, C]: beta * one-hot + (1 - beta) * sum_p w_p softmax(part_logits_p) (0 on masked classes).
  """
  log_probs, class_mask, _ = _masked_log_softmax(part_logits, class_mask)
  probs = jnp.where(class_mask, jnp.exp(log_probs), 0.0)  # [B, P, C]
  weights = jax.nn.softmax(scores.astype(jnp.float32), axis=1)  # [B, P]
  ensemble = jnp.einsum('bp,bpc->bc', weights, probs)
  onehot = jax.nn.one_hot(labels, part_logits.shape[-1], dtype=jnp.float32)
  return jax.lax.stop_gradient(beta * onehot + (1.0 - beta) * ensemble)


def pglr_loss(logits_g: jnp.ndarray, part_logits: jnp.ndarray, labels: jnp.ndarray,
              scores: jnp.ndarray, beta: float = 0.5,
              class_mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """Part-guided label refinement loss: mean_i -sum_c target_ic log softmax(logits_g)_ic."""
  target = refined_soft_target(part_logits, labels, scores, beta, class_mask)
  log_probs, _, _ = _masked_log_softmax(logits_g, class_mask)
  return jnp.mean(-jnp.sum(target * log_probs, axis=-1))


def aals_loss(logits: jnp.ndarray, labels: jnp.ndarray, ca: jnp.ndarray,
              class_mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """Agreement-aware label smoothing (Eq. 6) of one part classifier.

  mean_i ca_i * CE(y_i, p_i) + (1 - ca_i) * KL(u || p_i), u uniform over the K valid classes:
  KL(u || p) = sum_c (1/K) (log(1/K) - log p_c).

  Args:
    logits: [B, C] part logits; labels: [B] pseudo labels; ca: [B] agreement scores of the part.
  """
  log_probs, class_mask, num_valid = _masked_log_softmax(logits, class_mask)
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  ce = -jnp.sum(onehot * log_probs, axis=-1)
  uniform = class_mask.astype(jnp.float32) / num_valid
  kl = jnp.sum(jnp.where(class_mask, uniform * (-jnp.log(num_valid) - log_probs), 0.0), axis=-1)
  ca = ca.astype(jnp.float32)
  return jnp.mean(ca * ce + (1.0 - ca) * kl)


def smoothed_ce(logits: jnp.ndarray, labels: jnp.ndarray, epsilon: float = 0.1,
                class_mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """Label-smoothed CE with targets (1 - eps) one-hot + eps / K over the K valid classes
  (Szegedy et al.; PPLR's `CrossEntropyLabelSmooth` with K = the epoch's cluster count)."""
  log_probs, class_mask, num_valid = _masked_log_softmax(logits, class_mask)
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  targets = (1.0 - epsilon) * onehot + epsilon * class_mask.astype(jnp.float32) / num_valid
  return jnp.mean(-jnp.sum(targets * log_probs, axis=-1))


def camera_proxy_loss(features: jnp.ndarray, labels: jnp.ndarray, cams: jnp.ndarray,
                      proxies: jnp.ndarray, proxy_labels: jnp.ndarray, proxy_cams: jnp.ndarray,
                      proxy_mask: jnp.ndarray | None = None, num_hards: int = 50,
                      temperature: float = 0.07) -> jnp.ndarray:
  """Inter-camera contrastive loss of PPLR's camera-aware variant (`InterCamProxy`).

  For anchor i with similarities s_ij = cos(f_i, proxy_j) / temperature: positives P_i = the
  proxies of its cluster from other cameras; negatives N_i = the `num_hards` proxies of other
  clusters with the highest s_ij (chosen without gradient). The loss of i is the cross-entropy
  of softmax over P_i ∪ N_i with the target 1/|P_i| on each positive; anchors without a positive
  add 0 but count in the mean over the batch. Where fewer than `num_hards` other-cluster
  proxies exist, all of them are the negatives (the reference would then fill the list with
  other proxies of the anchor's own cluster).

  Args:
    features: [B, D] features (L2-normalised here).
    labels, cams: [B] pseudo label and camera of each anchor.
    proxies: [M, D] L2-normalised proxies (padded to a fixed M).
    proxy_labels, proxy_cams: [M] cluster and camera of each proxy.
    proxy_mask: [M] bool, False on padding (None: all valid).
    num_hards: hard negatives per anchor (PPLR: 50). temperature: PPLR 0.07.
  """
  m = proxies.shape[0]
  if proxy_mask is None:
    proxy_mask = jnp.ones(m, bool)
  x = l2_normalize(features.astype(jnp.float32))
  sims = jnp.matmul(x, proxies.astype(jnp.float32).T,
                    precision=jax.lax.Precision.HIGHEST) / temperature  # [B, M]
  same = labels[:, None] == proxy_labels[None, :]
  pos = same & (cams[:, None] != proxy_cams[None, :]) & proxy_mask[None, :]
  neg = ~same & proxy_mask[None, :]
  hards = min(int(num_hards), m)
  ranked = jnp.where(neg, jax.lax.stop_gradient(sims), -jnp.inf)
  _, hard_idx = jax.lax.top_k(ranked, hards)
  hard = jnp.zeros_like(neg).at[jnp.arange(x.shape[0])[:, None], hard_idx].set(True) & neg
  num_pos = jnp.sum(pos, axis=1)
  has_pos = num_pos > 0
  # Rows without a positive use every column, so that no row is all -inf (NaN gradients).
  selected = (pos | hard) | ~has_pos[:, None]
  lse = jax.nn.logsumexp(jnp.where(selected, sims, -jnp.inf), axis=1)
  mean_pos = jnp.sum(jnp.where(pos, sims, 0.0), axis=1) / jnp.maximum(num_pos, 1)
  per_anchor = jnp.where(has_pos, lse - mean_pos, 0.0)
  return jnp.mean(per_anchor)
