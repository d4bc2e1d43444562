"""Knowledge-distillation losses (pure functions: arrays in, scalar out).

FastReID's distillation (He et al., "FastReID: A Pytorch Toolbox for General Instance
Re-identification", distillation section; its projects/FastDistill) trains a small student with
its own re-ID losses plus a loss on the teacher's identity logits and one on its embeddings:

* logits, with temperature T (Hinton et al., "Distilling the Knowledge in a Neural Network"):
  p = softmax(z / T) for the teacher (p_t) and the student (p_s);

    'kl'     T^2 * mean_b KL(p_t || p_s)
    'jsdiv'  T^2 * mean_b (KL(p_t || p_s) + KL(p_s || p_t)) / 2: FastDistill's "JS Div" (the
             symmetrised KL it names the JS divergence; T = 16 there)
    'l1'     mean over batch and classes of |z_s - z_t| (no temperature)

  The T^2 keeps the gradient's scale independent of T.

* embeddings, probabilistic knowledge transfer (PKT; Passalis & Tefas, "Learning Deep
  Representations with Probabilistic Knowledge Transfer", ECCV 2018): within the batch, the cosine
  kernel K(a, b) = (cos(a, b) + 1) / 2 turned into conditional probabilities
  p_{j|i} = K(x_i, x_j) / sum_{k != i} K(x_i, x_k) (j != i), and

    PKT = mean_i sum_{j != i} p^t_{j|i} log(p^t_{j|i} / p^s_{j|i}).

  Only the similarity structure is matched, so the student and teacher embeddings may differ in
  size (e.g. 512 and 2048).

The teacher's outputs are constants (`stop_gradient`); the student's carry the gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOGIT_MODES = ('kl', 'jsdiv', 'l1')


def _kl(target_logits: jnp.ndarray, logits: jnp.ndarray, temperature: float) -> jnp.ndarray:
  """mean over rows of KL(softmax(target / T) || softmax(logits / T))."""
  target = jax.nn.log_softmax(target_logits / temperature, axis=-1)
  log_q = jax.nn.log_softmax(logits / temperature, axis=-1)
  return jnp.mean(jnp.sum(jnp.exp(target) * (target - log_q), axis=-1))


def kd_logit_loss(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, mode: str = 'kl',
                  temperature: float = 4.0) -> jnp.ndarray:
  """The logit-distillation loss of `mode` (module docstring) of [B, C] logits."""
  s = student_logits.astype(jnp.float32)
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  if s.shape != t.shape:
    raise ValueError(f'kd_logit: student logits {s.shape} and teacher logits {t.shape} differ; '
                     'the teacher must be trained on the same identities as the student.')
  if mode == 'kl':
    return temperature**2 * _kl(t, s, temperature)
  if mode == 'jsdiv':
    return temperature**2 * (_kl(t, s, temperature) + _kl(s, t, temperature)) / 2
  if mode == 'l1':
    return jnp.mean(jnp.abs(s - t))
  raise ValueError(f'config.loss.kd_logit.mode must be one of {LOGIT_MODES}, got {mode!r}.')


def _conditional(features: jnp.ndarray, eps: float) -> jnp.ndarray:
  """p_{j|i} of the cosine kernel, [B, B] with a zero diagonal."""
  f = features.astype(jnp.float32)
  f = f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), eps)
  kernel = (f @ f.T + 1.0) / 2.0
  kernel = kernel * (1.0 - jnp.eye(f.shape[0], dtype=f.dtype))
  return kernel / jnp.maximum(jnp.sum(kernel, axis=-1, keepdims=True), eps)


def pkt_loss(student: jnp.ndarray, teacher: jnp.ndarray, eps: float = 1e-7) -> jnp.ndarray:
  """PKT of [B, D_s] student and [B, D_t] teacher embeddings (module docstring)."""
  if student.shape[0] != teacher.shape[0]:
    raise ValueError(f'kd_pkt: {student.shape[0]} student and {teacher.shape[0]} teacher '
                     'embeddings; they must be of the same images.')
  p_s = _conditional(student, eps)
  p_t = jax.lax.stop_gradient(_conditional(teacher, eps))
  off = 1.0 - jnp.eye(p_t.shape[0], dtype=p_t.dtype)
  terms = p_t * (jnp.log(p_t + eps) - jnp.log(p_s + eps)) * off
  return jnp.mean(jnp.sum(terms, axis=-1))
