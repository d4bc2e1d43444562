"""Cross-modality graph reasoning ("Efficient Cross-modality Graph Reasoning for RGB-Infrared
Person Re-identification", IEEE SPL 2021), as the paper describes it.

The released code of that paper builds its reasoning modules but never calls them in `forward`;
here they run. On a shared mid-level feature map x [B, h, w, C] the h*w positions are the
*local* nodes and a few pooled vectors the *global* nodes; three position-attention graphs
(DANet's position attention: query and key projections at C / `reduction`, value at C, softmax
affinities) pass messages between them, and a channel-attention module relates channels:

  local-to-local   L2L(x, x)       local nodes gather from every local node
  global-to-local  G2L(x, g)       local nodes gather from the global nodes
  local-to-global  L2G(g, x)       global nodes gather from the local nodes; each local node
                                   receives the update of the global node that covers it
  out = x + G2L(x, g) + L2L(x, x) + L2G(g, x)
  out = out + MS(out)              modality similarity: channel attention

`PositionAttention(a, b)` takes its queries from `a` and its keys and values from `b`:
softmax_b(q(a) k(b)^T) v(b), scaled by a learned `gamma` that starts at 0, so every module
starts as the identity (as the non-local block's zero BatchNorm) and cannot disturb the trunk
early in training.

Global nodes: the paper's global feature is the pooled feature map; `num_global_nodes` = 1 is
that (global average pooling), n > 1 splits the map into n horizontal stripes (part-level
global nodes, the usual re-ID body-part prior), each stripe's mean one node. With one node the
G2L softmax is over a single key, so G2L adds a learned projection of the global mean to every
position.

Modality similarity (`ModalitySimilarity`): DANet's channel attention,
attention = softmax_rowwise(max_row(E) - E) with E = X^T X the [C, C] channel Gram matrix over
the positions of one image; out = gamma * X attention^T. Channels that respond alike in both
modalities reinforce each other in the shared space. This is this module's reading of the
paper's "modality similarity" module, whose code was not released in working form.

Every module is a switch (`CrossModalityGraphReasoning` attributes), so the ablation of the
paper runs from the config. Cost: L2L is O((h w)^2 C / reduction) per image, the others are
O(h w n C) and O(h w C^2).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch's default Conv2d initialisation (kaiming_uniform_ with a=sqrt(5)): U(+-1/sqrt(fan_in)).
_torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def _projection(features: int, dtype: Any, name: str) -> nn.Dense:
  """A 1x1 convolution on nodes [B, N, C] (a Dense over channels, with bias)."""
  return nn.Dense(features, kernel_init=_torch_default_kernel_init, dtype=dtype, name=name)


class PositionAttention(nn.Module):
  """Graph message passing from the nodes `b` [B, M, C] to the nodes `a` [B, N, C] -> [B, N, C].

  Returns gamma * softmax_m(q(a_n) . k(b_m)) v(b_m) (no residual; the caller adds it).
  """

  reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    channels = a.shape[-1]
    inner = max(channels // self.reduction, 1)
    q = _projection(inner, self.dtype, 'query')(a)
    k = _projection(inner, self.dtype, 'key')(b)
    v = _projection(channels, self.dtype, 'value')(b)
    energy = jnp.einsum('bnc,bmc->bnm', q, k).astype(jnp.float32)
    attention = jax.nn.softmax(energy, axis=-1).astype(v.dtype)
    out = jnp.einsum('bnm,bmc->bnc', attention, v)
    gamma = self.param('gamma', nn.initializers.zeros, (1,), jnp.float32)
    return (gamma * out).astype(a.dtype)


class ModalitySimilarity(nn.Module):
  """Channel attention over nodes x [B, N, C] -> [B, N, C] (module docstring); no residual."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    xf = x.astype(jnp.float32)
    energy = jnp.einsum('bnc,bnd->bcd', xf, xf)
    energy = jnp.max(energy, axis=-1, keepdims=True) - energy
    attention = jax.nn.softmax(energy, axis=-1)
    out = jnp.einsum('bcd,bnd->bnc', attention, xf)
    gamma = self.param('gamma', nn.initializers.zeros, (1,), jnp.float32)
    return (gamma * out).astype(x.dtype)


def stripe_bounds(height: int, num_stripes: int) -> list[tuple[int, int]]:
  """Rows [start, stop) of each horizontal stripe, as adaptive average pooling cuts them."""
  return [((i * height) // num_stripes, -((-(i + 1) * height) // num_stripes))
          for i in range(num_stripes)]


def stripe_of_row(height: int, num_stripes: int) -> list[int]:
  """The stripe whose L2G update each row receives: floor(row * n / h)."""
  return [(row * num_stripes) // height for row in range(height)]


class CrossModalityGraphReasoning(nn.Module):
  """x [B, h, w, C] -> same shape (module docstring); identity at initialisation.

  Attributes:
    local_to_local, global_to_local, local_to_global, modality_similarity: module switches.
    reduction: query/key channels are C // reduction (16 in the paper).
    num_global_nodes: 1 = the global mean; n > 1 horizontal stripes.
    dtype: compute dtype.
  """

  local_to_local: bool = True
  global_to_local: bool = True
  local_to_global: bool = True
  modality_similarity: bool = True
  reduction: int = 16
  num_global_nodes: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    batch, height, width, channels = x.shape
    n = self.num_global_nodes
    if not 1 <= n <= height:
      raise ValueError(f'CrossModalityGraphReasoning: num_global_nodes must be in 1..{height} '
                       f'(the feature map height), got {n}; fix '
                       'config.model.two_stream.graph.num_global_nodes.')
    local = x.reshape(batch, height * width, channels)
    glob = jnp.stack([jnp.mean(x[:, lo:hi], axis=(1, 2)) for lo, hi in stripe_bounds(height, n)],
                     axis=1)  # [B, n, C]
    out = local
    if self.global_to_local:
      out = out + PositionAttention(self.reduction, self.dtype, name='global_to_local')(local, glob)
    if self.local_to_local:
      out = out + PositionAttention(self.reduction, self.dtype, name='local_to_local')(local, local)
    if self.local_to_global:
      update = PositionAttention(self.reduction, self.dtype, name='local_to_global')(glob, local)
      rows = jnp.asarray(stripe_of_row(height, n))
      per_row = update[:, rows]  # [B, h, C]
      out = out + jnp.broadcast_to(per_row[:, :, None], (batch, height, width, channels)).reshape(
          batch, height * width, channels)
    if self.modality_similarity:
      out = out + ModalitySimilarity(name='modality_similarity')(out)
    return out.reshape(batch, height, width, channels)
