"""Vision Transformer backbones (Dosovitskiy et al., 2021) for re-ID, as FastReID/TransReID.

ViT-S/16 and ViT-B/16 in timm's layout (`vit_small_patch16_224`, `vit_base_patch16_224`):
patch embedding (a 16x16 convolution with bias), a class token, learned position embeddings,
pre-norm blocks (LayerNorm eps 1e-6 -> multi-head self-attention with qkv bias -> residual;
LayerNorm -> MLP 4x with exact GELU -> residual) and a final LayerNorm. `patch_stride < 16`
gives TransReID's overlapping patches (stride 12 in its recipes); the token grid then is
((H - 16) // stride + 1) x ((W - 16) // stride + 1), and the position embedding has one entry
per token of that grid (FastReID resizes pretrained ones to it on import).

The output is FastReID's: the class token after the final norm as a 1x1 feature map
[B, 1, 1, C], so every pooling layer passes it through.

Parameter names follow timm's state dict: `patch_embed` (`patch_embed.proj`), `cls_token`,
`pos_embed`, `blocks_{i}/{norm1, attn/{qkv, proj}, norm2, mlp/{fc1, fc2}}`, `norm`.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jreid.models import BACKBONES

_dense_init = nn.initializers.truncated_normal(0.02)  # timm's trunc_normal_(std=.02)


class DropPath(nn.Module):
  """Stochastic depth: drops a sample's residual branch with probability `rate` in training."""

  rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if not train or self.rate == 0.0:
      return x
    keep = jax.random.bernoulli(self.make_rng('dropout'), 1.0 - self.rate,
                                (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / (1.0 - self.rate), 0.0).astype(x.dtype)


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection (timm `Attention`)."""

  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    batch, tokens, dim = x.shape
    head_dim = dim // self.num_heads
    qkv = nn.Dense(3 * dim, kernel_init=_dense_init, dtype=self.dtype, name='qkv')(x)
    qkv = qkv.reshape(batch, tokens, 3, self.num_heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32) / jnp.sqrt(head_dim)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    y = jnp.einsum('bhqk,bkhd->bqhd', weights, v).reshape(batch, tokens, dim)
    return nn.Dense(dim, kernel_init=_dense_init, dtype=self.dtype, name='proj')(y)


class Mlp(nn.Module):
  """fc1 -> exact GELU -> fc2."""

  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    y = nn.Dense(self.hidden, kernel_init=_dense_init, dtype=self.dtype, name='fc1')(x)
    y = nn.gelu(y, approximate=False)
    return nn.Dense(x.shape[-1], kernel_init=_dense_init, dtype=self.dtype, name='fc2')(y)


class Block(nn.Module):
  """Pre-norm transformer block."""

  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)
    x = x + DropPath(self.drop_path)(Attention(self.num_heads, self.dtype, name='attn')(
        norm('norm1')(x)), train)
    hidden = int(x.shape[-1] * self.mlp_ratio)
    return x + DropPath(self.drop_path)(Mlp(hidden, self.dtype, name='mlp')(norm('norm2')(x)),
                                        train)


class VisionTransformer(nn.Module):
  """ViT trunk: NHWC images -> class token [B, 1, 1, embed_dim].

  Attributes:
    embed_dim, depth, num_heads, mlp_ratio: the transformer's shape (ViT-B: 768, 12, 12, 4).
    patch_size: side of the square patches (16).
    patch_stride: stride of the patch embedding; < patch_size overlaps patches (TransReID).
    drop_path_rate: stochastic depth, rising linearly from 0 to this over the blocks.
    dtype: compute dtype.
  """

  embed_dim: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  patch_size: int = 16
  patch_stride: int = 16
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    p, s = self.patch_size, self.patch_stride
    if not 0 < s <= p:
      raise ValueError(f'VisionTransformer: patch_stride must be in 1..{p}, got {s}.')
    if x.shape[1] < p or x.shape[2] < p:
      raise ValueError(f'VisionTransformer: images of {x.shape[1]}x{x.shape[2]} are smaller than '
                       f'one {p}x{p} patch; use larger config.input sizes.')
    x = nn.Conv(self.embed_dim, (p, p), strides=(s, s), padding='VALID', dtype=self.dtype,
                name='patch_embed')(x)
    batch, h, w, dim = x.shape
    x = x.reshape(batch, h * w, dim)
    cls = self.param('cls_token', _dense_init, (1, 1, dim))
    pos = self.param('pos_embed', _dense_init, (1, h * w + 1, dim))
    x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, dim)).astype(x.dtype), x], axis=1)
    x = x + pos.astype(x.dtype)
    for i in range(self.depth):
      rate = self.drop_path_rate * i / max(1, self.depth - 1)
      x = Block(self.num_heads, self.mlp_ratio, rate, self.dtype, name=f'blocks_{i}')(x, train)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name='norm')(x)
    return x[:, 0][:, None, None, :]


def _vit(embed_dim: int, num_heads: int, name: str):
  """A factory `(cfg, dtype) -> VisionTransformer`; cfg['width'] / 64 scales the embedding
  (64 = the published model), cfg['patch_stride'] (default 16) sets the patch stride."""

  def build(cfg: Mapping[str, Any], dtype: Any = jnp.float32) -> VisionTransformer:
    dim = embed_dim * int(cfg['width']) // 64
    if dim < num_heads or dim % num_heads:
      raise ValueError(f'config.model.backbone.width={cfg["width"]} gives {name!r} an embedding '
                       f'of {dim}, not a multiple of its {num_heads} heads; use a multiple of 8.')
    return VisionTransformer(embed_dim=dim, num_heads=num_heads,
                             patch_stride=int(cfg.get('patch_stride', 16)), dtype=dtype)

  return build


vit_small = BACKBONES.register('vit_small')(_vit(384, 6, 'vit_small'))
vit_base = BACKBONES.register('vit_base')(_vit(768, 12, 'vit_base'))
