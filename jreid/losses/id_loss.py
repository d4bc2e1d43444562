"""Identity (softmax cross-entropy) loss with label smoothing (Szegedy et al., 2016)."""

import jax
import jax.numpy as jnp

VARIANTS = ('fastreid', 'bot')


def cross_entropy(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    epsilon: float = 0.0,
    variant: str = 'fastreid',
) -> jnp.ndarray:
  """Label-smoothed softmax cross-entropy, a scalar.

  Per sample, loss_i = -sum_c t_ic log softmax(logits_i)_c with targets t:
    variant='fastreid' (FastReID `cross_entropy_loss`): 1 - epsilon on the label and
      epsilon / (C - 1) on every other class; the batch reduction is
      sum_i loss_i / max(#{i: loss_i != 0}, 1).
    variant='bot' (Luo et al., "Bag of Tricks", `CrossEntropyLabelSmooth`):
      (1 - epsilon) * onehot + epsilon / C; mean over the batch.
  epsilon=0 is plain cross-entropy (up to FastReID's non-zero-count reduction).

  Args:
    logits: [B, C] class scores (any float dtype; computed in float32).
    labels: [B] integer labels in [0, C). Out-of-range labels cannot be checked under jit and
      give a wrong loss: map identities to 0..C-1 first.
    epsilon: smoothing weight in [0, 1).
    variant: 'fastreid' or 'bot'.
  """
  if variant not in VARIANTS:
    raise ValueError(f'cross_entropy variant must be one of {VARIANTS}, got {variant!r}.')
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if variant == 'fastreid':
    targets = onehot * (1.0 - epsilon) + (1.0 - onehot) * epsilon / max(num_classes - 1, 1)
    per_sample = -jnp.sum(targets * log_probs, axis=-1)
    num_nonzero = jnp.maximum(jnp.count_nonzero(per_sample), 1)
    return jnp.sum(per_sample) / num_nonzero
  targets = (1.0 - epsilon) * onehot + epsilon / num_classes
  return jnp.mean(-jnp.sum(targets * log_probs, axis=-1))
