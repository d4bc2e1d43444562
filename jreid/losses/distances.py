"""Pairwise distances between two sets of feature vectors, as FastReID computes them."""

import jax
import jax.numpy as jnp


def pairwise_euclidean(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
  """Euclidean distances [M, N] between rows of x [M, D] and y [N, D].

  sqrt(max(|x|^2 + |y|^2 - 2 x.y, 1e-12)) as FastReID's `euclidean_dist`: the clamp keeps the
  square root and its gradient finite where a distance is ~0 (e.g. a sample to itself). The
  matmul runs at full float32 precision (no TF32), as the expansion cancels catastrophically.
  """
  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  xx = jnp.sum(x * x, axis=1)[:, None]
  yy = jnp.sum(y * y, axis=1)[None, :]
  xy = jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.sqrt(jnp.maximum(xx + yy - 2.0 * xy, 1e-12))


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """Rows divided by their L2 norm, clamped below at eps (torch.nn.functional.normalize)."""
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, eps)


def pairwise_cosine(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
  """Cosine distances [M, N] as FastReID's `cosine_dist`: 2 - 2 cos(x_i, y_j), in [0, 4].

  Equal to the squared Euclidean distance between the L2-normalised rows.
  """
  x = l2_normalize(x.astype(jnp.float32))
  y = l2_normalize(y.astype(jnp.float32))
  return 2.0 - 2.0 * jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
