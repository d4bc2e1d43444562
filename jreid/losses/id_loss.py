"""Identity (softmax cross-entropy) loss with label smoothing (Szegedy et al., 2016).

The focal loss, the other identity loss, is in `focal.py`.
"""

import jax
import jax.numpy as jnp

VARIANTS = ('fastreid', 'bot')


def cross_entropy(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    epsilon: float = 0.0,
    variant: str = 'fastreid',
    alpha: float = 0.2,
) -> jnp.ndarray:
  """Label-smoothed softmax cross-entropy, a scalar.

  Per sample, loss_i = -sum_c t_ic log softmax(logits_i)_c with targets t:
    variant='fastreid' (FastReID `cross_entropy_loss`): 1 - e on the label and e / (C - 1) on
      every other class; the batch reduction is sum_i loss_i / max(#{i: loss_i != 0}, 1).
      e = epsilon for epsilon >= 0; epsilon < 0 selects FastReID's probability-based (adaptive)
      smoothing, per sample e_i = alpha * softmax(logits_i)[y_i]: confident samples are
      smoothed more. The targets are constants for the gradient (FastReID's no_grad).
    variant='bot' (Luo et al., "Bag of Tricks", `CrossEntropyLabelSmooth`):
      (1 - epsilon) * onehot + epsilon / C; mean over the batch.
  epsilon=0 is plain cross-entropy (up to FastReID's non-zero-count reduction).

  Args:
    logits: [B, C] class scores (any float dtype; computed in float32).
    labels: [B] integer labels in [0, C). Out-of-range labels cannot be checked under jit and
      give a wrong loss: map identities to 0..C-1 first.
    epsilon: smoothing weight in [0, 1); < 0 for adaptive smoothing ('fastreid' only).
    variant: 'fastreid' or 'bot'.
    alpha: the adaptive smoothing factor (used when epsilon < 0; FastReID's CE.ALPHA).
  """
  if variant not in VARIANTS:
    raise ValueError(f'cross_entropy variant must be one of {VARIANTS}, got {variant!r}.')
  if epsilon < 0 and variant != 'fastreid':
    raise ValueError(
        f'cross_entropy epsilon < 0 (probability-based smoothing) exists only in the '
        f"'fastreid' variant, got variant {variant!r}; set config.loss.cross_entropy.variant "
        "to 'fastreid' or epsilon >= 0."
    )
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if variant == 'fastreid':
    if epsilon >= 0:
      smooth = jnp.float32(epsilon)
    else:
      prob_label = jnp.sum(jnp.exp(log_probs) * onehot, axis=-1, keepdims=True)
      smooth = alpha * prob_label
    targets = onehot * (1.0 - smooth) + (1.0 - onehot) * smooth / max(num_classes - 1, 1)
    targets = jax.lax.stop_gradient(targets)
    per_sample = -jnp.sum(targets * log_probs, axis=-1)
    num_nonzero = jnp.maximum(jnp.count_nonzero(per_sample), 1)
    return jnp.sum(per_sample) / num_nonzero
  targets = (1.0 - epsilon) * onehot + epsilon / num_classes
  return jnp.mean(-jnp.sum(targets * log_probs, axis=-1))
