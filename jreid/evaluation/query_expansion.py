"""Test-time feature post-processing: normalisation, flip averaging and query expansion.

* ``flip_average``: FastReID's flip test, the mean of the features of an image and of its
  horizontal flip.
* ``average_query_expansion`` (AQE, Chum et al., ICCV 2007): each query is replaced by the mean
  of itself and its top-m gallery neighbours (cosine, L2-normalised features).
* ``alpha_query_expansion`` (alpha-QE, Radenovic et al., TPAMI 2018), with FastReID's semantics:
  queries and gallery together form one set; each item becomes
  ``mean_{j in topk(i)} sim(i, j)^alpha * x_j`` over its ``qe_k`` most similar items of the set
  (itself included), repeated ``qe_times``.

Similarities are computed in row chunks with jitted JAX matmuls (``Precision.HIGHEST``), top-k
lists with ``jreid.evaluation.search.topk_smallest`` (ties by index).
"""

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jreid.evaluation import search as search_lib

NORMALIZE_MODES = ('l2', 'none')


def normalize_features(feats: np.ndarray, mode: str = 'l2') -> np.ndarray:
  """``'l2'``: rows divided by ``max(||row||_2, 1e-12)``; ``'none'``: unchanged. float32."""
  if mode not in NORMALIZE_MODES:
    raise ValueError(f'Unknown feature normalisation {mode!r}: use one of {NORMALIZE_MODES}.')
  feats = np.asarray(feats, np.float32)
  if mode == 'none':
    return feats
  return feats / np.maximum(np.linalg.norm(feats, axis=-1, keepdims=True), np.float32(1e-12))


def flip_average(feats: np.ndarray, flipped_feats: np.ndarray) -> np.ndarray:
  """``(feats + flipped_feats) / 2``: features of images and of their horizontal flips."""
  feats = np.asarray(feats, np.float32)
  flipped_feats = np.asarray(flipped_feats, np.float32)
  if feats.shape != flipped_feats.shape:
    raise ValueError(
        f'Features {feats.shape} and flipped features {flipped_feats.shape} differ in shape: '
        'extract both from the same images, in the same order.')
  return (feats + flipped_feats) / 2.0


@jax.jit
def _similarity_block(rows: jax.Array, table: jax.Array) -> jax.Array:
  return jnp.matmul(rows, table.T, precision=jax.lax.Precision.HIGHEST)


def _iter_top_similar(rows: np.ndarray, table: np.ndarray, k: int, chunk_size: int
                      ) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
  """Yields ``(row_slice, similarities [n, k], indices [n, k])`` per chunk of rows: the ``k``
  most similar table rows of each row, most similar first, ties by index."""
  table_device = jnp.asarray(table)
  for start in range(0, rows.shape[0], chunk_size):
    block = np.asarray(_similarity_block(jnp.asarray(rows[start:start + chunk_size]),
                                         table_device))
    neg_sims, indices = search_lib.topk_smallest(-block, k)
    yield slice(start, start + len(block)), -neg_sims, indices


def _check_pair(query_feats, gallery_feats) -> tuple[np.ndarray, np.ndarray]:
  query_feats = np.asarray(query_feats, np.float32)
  gallery_feats = np.asarray(gallery_feats, np.float32)
  if query_feats.ndim != 2 or gallery_feats.ndim != 2 or (
      query_feats.shape[1] != gallery_feats.shape[1]):
    raise ValueError(
        f'Query expansion needs [num_query, dim] and [num_gallery, dim] features of the same '
        f'dim, got {query_feats.shape} and {gallery_feats.shape}.')
  return query_feats, gallery_feats


def average_query_expansion(
    query_feats: np.ndarray,
    gallery_feats: np.ndarray,
    top_m: int = 5,
    chunk_size: int = 4096,
) -> np.ndarray:
  """Average query expansion: L2-normalised ``mean(q, g_1, ..., g_m)`` of normalised features.

  Args:
    query_feats: ``[num_query, dim]`` features.
    gallery_feats: ``[num_gallery, dim]`` features.
    top_m: gallery neighbours (by cosine similarity, ties by index) averaged into each query.
    chunk_size: queries per similarity block.

  Returns:
    float32 ``[num_query, dim]`` expanded, L2-normalised queries (the gallery is unchanged).
  """
  query_feats, gallery_feats = _check_pair(query_feats, gallery_feats)
  if not 1 <= top_m <= gallery_feats.shape[0]:
    raise ValueError(f'top_m must be between 1 and the gallery size ({gallery_feats.shape[0]}), '
                     f'got {top_m}.')
  query = normalize_features(query_feats)
  gallery = normalize_features(gallery_feats)
  expanded = np.empty_like(query)
  for rows, _, indices in _iter_top_similar(query, gallery, top_m, chunk_size):
    expanded[rows] = (query[rows] + gallery[indices].sum(axis=1)) / np.float32(top_m + 1)
  return normalize_features(expanded)


def alpha_query_expansion(
    query_feats: np.ndarray,
    gallery_feats: np.ndarray,
    qe_times: int = 1,
    qe_k: int = 5,
    alpha: float = 3.0,
    chunk_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
  """alpha-QE of queries and gallery together, as FastReID's ``aqe``.

  Each round, with ``x`` the current features of all ``q + g`` items and ``s`` the cosine
  similarities of their L2-normalised versions, every item becomes
  ``sum_{j in topk(i)} s_ij^alpha x_j / qe_k`` over its ``qe_k`` most similar items (itself
  included, ties by index).

  FastReID returns the un-normalised ``x``; this returns it L2-normalised, which changes no
  cosine distance or ranking.

  Args:
    query_feats: ``[num_query, dim]`` features.
    gallery_feats: ``[num_gallery, dim]`` features.
    qe_times: number of expansion rounds.
    qe_k: neighbours combined per item.
    alpha: exponent of the similarity weights (for a non-integer alpha, negative similarities
      among the top-k give NaN, as in FastReID).
    chunk_size: rows per similarity block.

  Returns:
    ``(query [num_query, dim], gallery [num_gallery, dim])``, float32, L2-normalised.
  """
  query_feats, gallery_feats = _check_pair(query_feats, gallery_feats)
  feats = np.concatenate([query_feats, gallery_feats])
  if not 1 <= qe_k <= feats.shape[0]:
    raise ValueError(
        f'qe_k must be between 1 and num_query + num_gallery ({feats.shape[0]}), got {qe_k}.')
  if qe_times < 1:
    raise ValueError(f'qe_times must be >= 1, got {qe_times}.')
  for _ in range(qe_times):
    normed = normalize_features(feats)
    expanded = np.empty_like(feats)
    for rows, sims, indices in _iter_top_similar(normed, normed, qe_k, chunk_size):
      weights = np.power(sims, np.float32(alpha))
      expanded[rows] = np.einsum('nk,nkd->nd', weights, feats[indices]) / np.float32(qe_k)
    feats = expanded
  feats = normalize_features(feats)
  num_query = query_feats.shape[0]
  return feats[:num_query], feats[num_query:]
