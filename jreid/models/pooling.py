"""Global poolings: feature map [B, h, w, C] -> feature vector [B, C], computed in float32.

Registered factories take the `model.pooling` config section (a mapping).
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jreid.models import POOLINGS


class GlobalAvgPool(nn.Module):
  """Mean over the spatial positions."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


class GlobalMaxPool(nn.Module):
  """Maximum over the spatial positions."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return jnp.max(x.astype(jnp.float32), axis=(1, 2))


class GeneralizedMeanPool(nn.Module):
  """GeM (Radenovic et al., 2018), FastReID semantics: (mean_hw(max(x, eps)^p))^(1/p).

  Attributes:
    p: the exponent (3 in FastReID); the initial value when learnable.
    learnable: if True, p is a parameter named 'p' of shape [1] (FastReID's
      GeneralizedMeanPoolingP); otherwise a constant.
    eps: lower clamp that keeps x^p and its root finite.
  """

  p: float = 3.0
  learnable: bool = False
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.learnable:
      p = self.param('p', nn.initializers.constant(self.p), (1,), jnp.float32)
    else:
      p = jnp.float32(self.p)
    x = jnp.maximum(x.astype(jnp.float32), self.eps)
    return jnp.mean(x**p, axis=(1, 2)) ** (1.0 / p)


@POOLINGS.register('avg')
def avg(cfg: Mapping[str, Any]) -> GlobalAvgPool:
  del cfg  # no options
  return GlobalAvgPool()


@POOLINGS.register('max')
def max_(cfg: Mapping[str, Any]) -> GlobalMaxPool:
  del cfg  # no options
  return GlobalMaxPool()


@POOLINGS.register('gem')
def gem(cfg: Mapping[str, Any]) -> GeneralizedMeanPool:
  return GeneralizedMeanPool(p=float(cfg['gem_p']), learnable=bool(cfg['gem_learnable']))
