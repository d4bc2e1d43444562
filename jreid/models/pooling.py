"""Global poolings: feature map [B, h, w, C] -> feature vector [B, C], computed in float32.

The aggregation module of FastReID (He et al., "FastReID", Sec. 2.2; `fastreid/layers/pooling.py`):
  'max'       f_c = max_{x in X_c} x                                  (eq. 1)
  'avg'       f_c = mean_{x in X_c} x                                 (eq. 2)
  'gem'       f_c = (mean_{x in X_c} max(x, eps)^p)^(1/p), p fixed or learnable (eq. 3);
              with gem_eps_mode 'add' (AGW's reference code) (mean_{x in X_c} x^p + eps)^(1/p)
  'attention' f_c = sum_{x in X_c} w x / sum w, w = softmax attention weights (eq. 4)
  'avgmax'    f_c = avg + max (FastReID's AdaptiveAvgMaxPool2d)
  'clipavg'   f_c = clamp(avg, 0, 1) (FastReID's ClipGlobalAvgPool2d)

Registered factories take the `model.pooling` config section (a mapping).
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jreid.models import POOLINGS
from jreid.models.conv import Conv


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


# `model.pooling.gem_eps_mode` -> where GeM's epsilon goes and its value.
GEM_EPS_MODES = ('auto', 'clamp', 'add')
GEM_EPS = {'clamp': 1e-6, 'add': 1e-12}


class GeneralizedMeanPool(nn.Module):
  """GeM (Radenovic et al., 2018): FastReID's (mean_hw(max(x, eps)^p))^(1/p), or AGW's
  (mean_hw(x^p) + eps)^(1/p).

  The two differ only where a channel is (nearly) zero at every location: it pools to eps
  (1e-6) with the clamp and to eps^(1/p) (1e-4 for p = 3, eps = 1e-12) with the sum, which a
  BNNeck then scales by 1/sqrt(var). A released model is evaluated as its authors' code does.

  Attributes:
    p: the exponent (3 in FastReID); the initial value when learnable.
    learnable: if True, p is a parameter named 'p' of shape [1] (FastReID's
      GeneralizedMeanPoolingP); otherwise a constant.
    eps: the clamp's lower bound ('clamp') or the term added to the mean ('add').
    eps_mode: 'clamp' (FastReID: every activation clamped at eps, which keeps x^p and its root
      finite for any input) or 'add' (AGW's reference: eps added to the mean of x^p; the input
      is a ReLU output, negative values are taken as 0).
  """

  p: float = 3.0
  learnable: bool = False
  eps: float = GEM_EPS['clamp']
  eps_mode: str = 'clamp'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.eps_mode not in ('clamp', 'add'):
      raise ValueError(f"GeneralizedMeanPool: eps_mode must be 'clamp' or 'add', got "
                       f'{self.eps_mode!r}; fix config.model.pooling.gem_eps_mode.')
    if self.learnable:
      p = self.param('p', nn.initializers.constant(self.p), (1,), jnp.float32)
    else:
      p = jnp.float32(self.p)
    x = x.astype(jnp.float32)
    if self.eps_mode == 'add':
      return (jnp.mean(jnp.maximum(x, 0.0)**p, axis=(1, 2)) + self.eps) ** (1.0 / p)
    x = jnp.maximum(x, self.eps)
    return jnp.mean(x**p, axis=(1, 2)) ** (1.0 / p)


class AvgMaxPool(nn.Module):
  """Sum of the spatial mean and the spatial maximum (FastReID's AdaptiveAvgMaxPool2d)."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x.astype(jnp.float32)
    return jnp.mean(x, axis=(1, 2)) + jnp.max(x, axis=(1, 2))


class ClipAvgPool(nn.Module):
  """Spatial mean clamped to [0, 1] (FastReID's ClipGlobalAvgPool2d)."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return jnp.clip(jnp.mean(x.astype(jnp.float32), axis=(1, 2)), 0.0, 1.0)


class AttentionPool(nn.Module):
  """Softmax-attention weighted average over the spatial positions (FastReID paper, eq. 4).

  f_c = sum_hw w_c(h, w) x_c(h, w) with w_c = softmax over the positions of a 1x1 convolution of
  the feature map (bias-free: a per-channel bias cancels in the softmax). The paper gives the
  formula but not the layer that scores the positions, and FastReID's code has no attention
  pooling; this is that formula with the simplest learned scorer.

  Attributes:
    per_channel: True scores every channel separately (a C -> C 1x1 convolution, one weight map
      W_c per channel as in eq. 4; C^2 parameters); False shares one map over the channels
      (a C -> 1 convolution, as in Girdhar & Ramanan's attention pooling; C parameters).

  The scorer starts at zero, so an untrained attention pooling equals average pooling.
  """

  per_channel: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x.astype(jnp.float32)
    batch, height, width, channels = x.shape
    scores = Conv(channels if self.per_channel else 1, (1, 1), use_bias=False,
                  kernel_init=nn.initializers.zeros, dtype=jnp.float32, name='attention')(x)
    weights = jax.nn.softmax(scores.reshape(batch, height * width, -1), axis=1)
    return jnp.sum(weights * x.reshape(batch, height * width, channels), axis=1)


@POOLINGS.register('avg')
def avg(cfg: Mapping[str, Any]) -> GlobalAvgPool:
  del cfg  # no options
  return GlobalAvgPool()


@POOLINGS.register('max')
def max_(cfg: Mapping[str, Any]) -> GlobalMaxPool:
  del cfg  # no options
  return GlobalMaxPool()


def gem_eps_mode(cfg: Mapping[str, Any], release: str = '') -> str:
  """`cfg['gem_eps_mode']` of a `model.pooling` section, 'auto' resolved: 'add' for a model
  released by AGW's code (`release='agw'`), else 'clamp' (FastReID's)."""
  mode = cfg.get('gem_eps_mode', 'auto')
  if mode not in GEM_EPS_MODES:
    raise ValueError(f'config.model.pooling.gem_eps_mode must be one of {GEM_EPS_MODES}, got '
                     f'{mode!r}.')
  if mode == 'auto':
    return 'add' if release == 'agw' else 'clamp'
  return mode


@POOLINGS.register('gem')
def gem(cfg: Mapping[str, Any], release: str = '') -> GeneralizedMeanPool:
  """GeM from the `model.pooling` section; `release` as `gem_eps_mode`."""
  mode = gem_eps_mode(cfg, release)
  return GeneralizedMeanPool(p=float(cfg['gem_p']), learnable=bool(cfg['gem_learnable']),
                             eps=GEM_EPS[mode], eps_mode=mode)


@POOLINGS.register('attention')
def attention(cfg: Mapping[str, Any]) -> AttentionPool:
  return AttentionPool(per_channel=bool(cfg.get('attention_per_channel', True)))


@POOLINGS.register('avgmax')
def avgmax(cfg: Mapping[str, Any]) -> AvgMaxPool:
  del cfg  # no options
  return AvgMaxPool()


@POOLINGS.register('clipavg')
def clipavg(cfg: Mapping[str, Any]) -> ClipAvgPool:
  del cfg  # no options
  return ClipAvgPool()
