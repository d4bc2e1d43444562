"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection"), FastReID's `focal_loss`."""

import jax
import jax.numpy as jnp


def focal_loss(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> jnp.ndarray:
  """mean_i -alpha (1 - p_i)^gamma log p_i, p_i = softmax(logits_i)[y_i]; a scalar.

  gamma = 0 and alpha = 1 is the plain cross-entropy; gamma > 0 down-weights the samples that
  are already classified well. The modulating factor is part of the gradient, as in FastReID.

  Args:
    logits: [B, C] class scores (computed in float32).
    labels: [B] integer labels in [0, C).
    alpha: the constant weight (FastReID MODEL.LOSSES.FL.ALPHA).
    gamma: the focusing exponent >= 0 (FastReID MODEL.LOSSES.FL.GAMMA).
  """
  if gamma < 0:
    raise ValueError(f'focal loss gamma must be >= 0, got {gamma}; fix config.loss.focal.gamma.')
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  log_p = jnp.sum(log_probs * onehot, axis=-1)
  # (1 - p)^gamma with 1 - p = -expm1(log p), exact where p ~ 1.
  weight = jnp.power(-jnp.expm1(log_p), gamma) if gamma else 1.0
  return jnp.mean(-alpha * weight * log_p)
