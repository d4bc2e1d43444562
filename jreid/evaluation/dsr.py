"""DSR distances: Deep Spatial feature Reconstruction (He et al., "Deep Spatial Feature
Reconstruction for Partial Person Re-identification: Alignment-free Approach", CVPR 2018).

A query image's spatial feature map X = [x_1 .. x_N] (d x N, one column per location) is
reconstructed from a gallery image's map Y = [y_1 .. y_M] (d x M, the dictionary) by regularised
least squares, each query location by its own coefficients:

  W* = argmin_W ||X - Y W||_F^2 + lam ||W||_F^2 = (Y^T Y + lam I)^-1 Y^T X,

and the distance is the mean reconstruction error over the query's locations,

  dist(X, Y) = ||X - Y W*||_F^2 / N.

No alignment is needed: any query location may be rebuilt from any gallery locations, so a
partial or occluded query (a body part stretched to the full image, a body behind an object)
is compared with the part of the gallery body it shows. (The paper's sparse-coding form puts an
l1 penalty on W, solved iteratively; the l2 form has the closed form above, the one used here.)

Multi-scale blocks (the paper's multi-scale block representation): the columns of X and Y are
the features of every k x k block of the map (averaged, stride 1) for each k of `scales`, e.g.
(1, 2, 3): each location, and the 2 x 2 and 3 x 3 neighbourhoods, so a query region may match
a gallery region of another size (a stretched crop).

Batched form. With G = Y^T Y = U diag(s) U^T and Z = Y^T X, the residual is
||X||^2 - sum_k c_k ||u_k^T Z||^2 with c_k = (s_k + 2 lam) / (s_k + lam)^2 (from
||X - Y K Z||^2 = ||X||^2 - tr(Z^T (2K - K G K) Z), K = (G + lam I)^-1, and 2K - KGK = K + lam K^2),
so every gallery map becomes one matrix V = diag(sqrt(c)) U^T Y^T (M x d) and

  dist(X, Y) = (||X||_F^2 - ||V X||_F^2) / N:

one eigendecomposition per gallery image, then one matmul per (query, gallery) pair, jitted
block by block. Each location's feature is L2-normalised first (`normalize`), so `lam` has the
same meaning whatever the feature scale, and dist is in [0, 1].

Memory: every test image's feature map is held (h x w x d floats per image), which suits the
partial re-ID test sets (hundreds of images) better than Market-scale galleries.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST

# Elements of the largest [query block, gallery block, N, M] projection computed at once.
_BLOCK_ELEMENTS = 1 << 23


def _flat(maps: np.ndarray, what: str) -> np.ndarray:
  maps = np.asarray(maps, np.float32)
  if maps.ndim == 4:
    maps = maps.reshape(maps.shape[0], -1, maps.shape[-1])
  if maps.ndim != 3:
    raise ValueError(f'DSR {what} feature maps must be [n, h, w, d] or [n, h*w, d], got '
                     f'{maps.shape}.')
  return maps


def block_features(maps: np.ndarray, scales=(1,)) -> np.ndarray:
  """[n, L, d]: the mean feature of every k x k block (stride 1) of maps [n, h, w, d], for each
  k of `scales` (blocks larger than the map are skipped), the scales one after the other."""
  maps = np.asarray(maps, np.float32)
  if maps.ndim != 4:
    raise ValueError(f'DSR multi-scale blocks need maps [n, h, w, d], got {maps.shape}.')
  n, h, w, d = maps.shape
  out = []
  for k in scales:
    if k < 1:
      raise ValueError(f'DSR: block scales must be >= 1, got {k}.')
    if k > h or k > w:
      continue
    if k == 1:
      out.append(maps.reshape(n, -1, d))
      continue
    # Window sums from the cumulative sums (float64), then the mean of each k x k window.
    c = np.pad(maps.astype(np.float64).cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0), (0, 0)))
    sums = c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]
    out.append((sums / (k * k)).astype(np.float32).reshape(n, -1, d))
  if not out:
    raise ValueError(f'DSR: no block of scales {tuple(scales)} fits a {h}x{w} map.')
  return np.concatenate(out, axis=1)


def _normalize(x: jnp.ndarray) -> jnp.ndarray:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=('normalize',))
def gallery_dictionaries(maps: jnp.ndarray, lam: float, normalize: bool = True) -> jnp.ndarray:
  """V [g, M, d] of gallery maps [g, M, d] (module docstring): ||V x||^2 is the part of a query
  feature x the gallery map reconstructs (summed over its columns)."""
  y = _normalize(maps) if normalize else maps
  gram = jnp.einsum('gmc,gnc->gmn', y, y, precision=_HIGHEST)
  s, u = jnp.linalg.eigh(gram)
  s = jnp.maximum(s, 0.0)
  c = (s + 2.0 * lam) / jnp.square(s + lam)
  return jnp.einsum('gmk,gmc->gkc', u * jnp.sqrt(c)[:, None, :], y, precision=_HIGHEST)


@functools.partial(jax.jit, static_argnames=('normalize',))
def _block_distances(query: jnp.ndarray, dictionaries: jnp.ndarray,
                     normalize: bool = True) -> jnp.ndarray:
  """DSR distances [q, g] of query maps [q, N, d] to the gallery dictionaries [g, M, d]."""
  x = _normalize(query) if normalize else query
  proj = jnp.einsum('qnc,gkc->qgnk', x, dictionaries, precision=_HIGHEST)
  total = jnp.sum(jnp.square(x), axis=(1, 2))
  return (total[:, None] - jnp.sum(jnp.square(proj), axis=(2, 3))) / x.shape[1]


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  if len(x) == size:
    return x
  return np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)])


def dsr_distance(query_maps: np.ndarray, gallery_maps: np.ndarray, lam: float = 0.01,
                 normalize: bool = True, scales=None, query_block: int | None = None,
                 gallery_block: int | None = None) -> np.ndarray:
  """DSR distances [Q, G] (float32) of query maps to gallery maps (module docstring).

  Args:
    query_maps: [Q, h, w, d] or [Q, N, d] spatial feature maps of the queries.
    gallery_maps: [G, h', w', d] or [G, M, d] of the gallery (the dictionaries).
    lam: the ridge regulariser (> 0).
    normalize: L2-normalise every location's (block's) feature first.
    scales: block sizes of the multi-scale representation (`block_features`; maps [n, h, w, d]
      only), e.g. (1, 2, 3); None: the locations as given.
    query_block, gallery_block: maps scored at once (default: as many as keep one block's
      [q, g, N, M] projection under 2^23 elements). Blocks have fixed shapes (the last padded),
      so each function compiles once.
  """
  if not lam > 0:
    raise ValueError(f'DSR: lam must be > 0 (the ridge regulariser), got {lam}.')
  if scales is not None:
    query_maps = block_features(query_maps, scales)
    gallery_maps = block_features(gallery_maps, scales)
  q, g = _flat(query_maps, 'query'), _flat(gallery_maps, 'gallery')
  if q.shape[-1] != g.shape[-1]:
    raise ValueError(f'DSR: query maps have {q.shape[-1]} channels, gallery maps '
                     f'{g.shape[-1]}; they must come from the same network.')
  n, m = q.shape[1], g.shape[1]
  per_pair = n * m
  gallery_block = gallery_block or int(max(1, min(len(g), 256, _BLOCK_ELEMENTS // per_pair)))
  query_block = query_block or int(max(1, min(len(q), _BLOCK_ELEMENTS // (per_pair *
                                                                          gallery_block))))
  lam = jnp.float32(lam)
  out = np.empty((len(q), len(g)), np.float32)
  for g0 in range(0, len(g), gallery_block):
    block = g[g0:g0 + gallery_block]
    dictionaries = gallery_dictionaries(_pad(block, gallery_block), lam, normalize=normalize)
    for q0 in range(0, len(q), query_block):
      queries = q[q0:q0 + query_block]
      dist = _block_distances(_pad(queries, query_block), dictionaries, normalize=normalize)
      out[q0:q0 + len(queries), g0:g0 + len(block)] = np.asarray(dist)[:len(queries),
                                                                         :len(block)]
  return out


def fuse_with_global(dsr_dist: np.ndarray, global_dist: np.ndarray) -> np.ndarray:
  """DSR and global-feature distances [Q, G] on one scale and summed: each standardised over the
  whole matrix (mean 0, standard deviation 1; no labels, no tuned weight), so neither dominates by
  its units alone. The pooled feature sees the whole body at once, DSR matches regions: the sum
  keeps what each gets right."""

  def standard(d):
    d = np.asarray(d, np.float64)
    return (d - d.mean()) / max(float(d.std()), 1e-12)

  return (standard(dsr_dist) + standard(global_dist)).astype(np.float32)
