"""k-reciprocal re-ranking and the Jaccard distance of k-reciprocal encodings.

Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017.
With ``N(p, k)`` the first ``k + 1`` items of ``p``'s ranking (``p`` itself included), the
k-reciprocal set is ``R(p, k) = {j in N(p, k) : p in N(j, k)}``. Each probe ``p`` gets

1. the expanded set ``R*(p) = R(p, k1) ∪ R(c, k1/2)`` over the candidates ``c in R(p, k1)``
   with ``|R(c, k1/2) ∩ R(p, k1)| > 2/3 |R(c, k1/2)|`` (``k1/2`` rounded half to even);
2. a vector ``V_p`` with ``V_p[j] = exp(-d(p, j)) / sum_{j' in R*(p)} exp(-d(p, j'))`` on
   ``R*(p)`` and 0 elsewhere;
3. local query expansion (when ``k2 > 1``): ``V_p <- mean(V_i for i in the first k2 items of p's
   ranking)``;
4. the Jaccard distance ``1 - m / (2 - m)`` with ``m = sum_j min(V_p[j], V_g[j])``.

Rankings are stable argsorts (ties by index), of which only the first ``k1 + 1`` items are
ever used: rows of distances are reduced to them chunk by chunk (``search.topk_smallest``), so
no ``N x N`` matrix or argsort is built. The sparse ``V`` and the overlaps are built with
scipy.sparse; the Jaccard sums run over an inverted index (columns of ``V``) in row chunks and
only over pairs with shared support (all others are exactly 1), so the cost is
``O(N x k1 x |R*|)`` on top of one pass over the distances.

The steps are public (``initial_rank``, ``expanded_sets``, ``encode_weights``,
``local_query_expansion``, ``jaccard_of_weights``) so that variants such as the QAConv
reference's re-ranking (``qaconv_rerank``) reuse them.

Two modes of the same algorithm:

* exact, ``k_reciprocal_rerank(q_g, q_q, g_g)``: the classic dense algorithm on given matrices
  (columns of the block matrix, as the original code's transpose), equal to it on any input;
* scalable, ``rerank_features(query_feats, gallery_feats)``: distances computed in row chunks
  with JAX matmuls (numpy's BLAS on a CPU device) and taken as symmetric, each chunk reduced in
  the same step to its row maxima, its first ``k1 + 1`` neighbours and, for query rows, the
  normalised gallery part; memory is the ``[q, g]`` result plus the features and
  ``O(chunk x (q+g))`` per worker thread, time one ``(q+g)^2`` matmul plus the sparse steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from jreid.evaluation import distance
from jreid.evaluation import search as search_lib

JACCARD_METRICS = ('cosine', 'euclidean')

# Rows of the (q+g)^2 matrix built and reduced to their top k1 + 1 at once.
_RANK_CHUNK_ROWS = 1024
# Pairs whose distances rerank_features recomputes per jitted step (two [pairs, dim] gathers:
# 0.5 GB at 2048-d).
_PAIRS_PER_STEP = 1 << 15
# Tile side of the blocked transposes.
_TRANSPOSE_TILE = 256
# Bound on the dense [rows, columns] accumulator of one chunk of Jaccard rows.
_JACCARD_CHUNK_ELEMENTS = 1 << 20


def initial_rank(dist: np.ndarray, width: int) -> np.ndarray:
  """First ``width`` columns of the stable ascending argsort of each row (in row chunks).

  Args:
    dist: ``[n, m]`` distances (row ``p``: the distances that rank ``p``'s neighbours).
    width: columns kept, clipped to ``m``.

  Returns:
    int64 ``[n, min(width, m)]``.
  """
  width = min(width, dist.shape[1])
  return np.concatenate([
      search_lib.topk_smallest(dist[start:start + _RANK_CHUNK_ROWS], width)[1]
      for start in range(0, dist.shape[0], _RANK_CHUNK_ROWS)])


def _reciprocal_sets(rank: np.ndarray, width: int) -> scipy.sparse.csr_matrix:
  """Bool CSR ``R`` with ``R[i, j]`` iff ``j`` is in ``rank[i, :width]`` and ``i`` in
  ``rank[j, :width]``."""
  n = rank.shape[0]
  forward = rank[:, :width]
  rows = np.repeat(np.arange(n), forward.shape[1])
  cols = forward.reshape(-1)
  edges = np.sort(rows * n + cols)
  reverse = cols * n + rows
  found = np.minimum(np.searchsorted(edges, reverse), len(edges) - 1)
  reciprocal = edges[found] == reverse  # (np.isin was several times slower)
  return scipy.sparse.csr_matrix(
      (np.ones(int(reciprocal.sum()), bool), (rows[reciprocal], cols[reciprocal])),
      shape=(n, n))


def expanded_sets(rank: np.ndarray, full_width: int, half_width: int) -> scipy.sparse.csr_matrix:
  """Bool CSR of ``R*(p)``: ``R(p)`` plus each candidate's half set that overlaps it enough.

  Args:
    rank: ``initial_rank`` output, at least ``full_width`` columns.
    full_width: ``|N(p, k1)|`` (``k1 + 1`` in Zhong et al.'s code, ``k1`` in SpCL's).
    half_width: ``|N(c, k1/2)|`` of the candidates.
  """
  full = _reciprocal_sets(rank, full_width).astype(np.int32)
  half = _reciprocal_sets(rank, half_width).astype(np.int32)
  overlap = (full @ half.T).multiply(full).tocsr()  # |R_half(c) ∩ R(p)| for c in R(p).
  half_size = np.asarray(half.sum(axis=1)).ravel()
  overlap.data = (overlap.data > (2.0 / 3.0) * half_size[overlap.indices]).astype(np.int32)
  overlap.eliminate_zeros()
  return (full + overlap @ half).astype(bool).tocsr()


def encode_weights(dist, expanded: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
  """Float32 CSR ``V``: ``softmax(-dist[p, R*(p)])`` on each row's expanded set.

  Args:
    dist: a dense ``[n, n]`` array or a function ``(rows, cols) -> float32 values``.
    expanded: ``expanded_sets`` output.
  """
  expanded = expanded.tocsr()
  expanded.sort_indices()
  rows = np.repeat(np.arange(expanded.shape[0]), np.diff(expanded.indptr))
  values = dist(rows, expanded.indices) if callable(dist) else dist[rows, expanded.indices]
  weights = np.exp(-values).astype(np.float32)
  sums = np.bincount(rows, weights=weights, minlength=expanded.shape[0]).astype(np.float32)
  weights /= sums[rows]
  return scipy.sparse.csr_matrix((weights, expanded.indices, expanded.indptr),
                                 shape=expanded.shape)


def local_query_expansion(v: scipy.sparse.csr_matrix, rank: np.ndarray,
                           k2: int) -> scipy.sparse.csr_matrix:
  """Local query expansion: rows ``mean(V[rank[p, :k2]])`` of the ``encode_weights`` output."""
  n = v.shape[0]
  neighbours = rank[:, :k2]
  average = scipy.sparse.csr_matrix(
      (np.full(neighbours.size, 1.0 / neighbours.shape[1], np.float32),
       (np.repeat(np.arange(n), neighbours.shape[1]), neighbours.reshape(-1))),
      shape=(n, n))
  expanded = (average @ v).tocsr()
  expanded.eliminate_zeros()
  return expanded


def _for_shared_overlaps(v: scipy.sparse.csr_matrix, rows: np.ndarray, cols: np.ndarray,
                         fn) -> None:
  """Calls ``fn(start, n_rows, shared, m)`` per chunk of ``rows``, chunks in parallel threads:
  ``shared`` are the flat indices into the ``[n_rows, len(cols)]`` block of the pairs whose
  ``V`` rows share support, ``m`` their float32 ``sum_j min(V[rows[a], j], V[cols[b], j])``
  (every other pair of the block has ``m = 0``). Each pair's sum runs in the same order
  whatever the threads, so the values do not depend on them."""
  v = v.tocsr()
  # Inverted index: for each feature j, the positions b with V[cols[b], j] != 0.
  inverted = v[cols].T.tocsr()  # [features, len(cols)]
  chunk = max(1, _JACCARD_CHUNK_ELEMENTS // max(len(cols), 1))

  def overlaps(start: int, _) -> None:
    block = v[rows[start:start + chunk]].tocoo()
    counts = np.diff(inverted.indptr)[block.col]
    total = int(counts.sum())
    offsets = np.repeat(inverted.indptr[block.col] - (np.cumsum(counts) - counts), counts)
    entry = np.arange(total) + offsets
    mins = np.minimum(np.repeat(block.data, counts), inverted.data[entry])
    flat = np.repeat(block.row.astype(np.int64), counts) * len(cols) + inverted.indices[entry]
    n_rows = min(chunk, len(rows) - start)
    overlap = np.bincount(flat, weights=mins, minlength=n_rows * len(cols))
    shared = np.flatnonzero(overlap != 0)  # (a bool mask: several times faster than on floats)
    fn(start, n_rows, shared, overlap[shared].astype(np.float32))

  distance.ordered_map(overlaps, range(0, len(rows), chunk), distance.default_workers())


def jaccard_of_weights(v: scipy.sparse.csr_matrix, rows: np.ndarray, cols: np.ndarray,
                       out: np.ndarray | None = None) -> np.ndarray:
  """``1 - m / (2 - m)``, ``m[a, b] = sum_j min(V[rows[a], j], V[cols[b], j])``, float32.

  Pairs whose ``V`` rows share no support have ``m = 0``, distance exactly 1: only the pairs
  reached through the inverted index are summed, and only they are computed. Written into
  ``out`` when given.
  """
  if out is None:
    out = np.empty((len(rows), len(cols)), np.float32)

  def store(start, n_rows, shared, m):
    part = out[start:start + n_rows].reshape(-1)
    part.fill(1.0)
    part[shared] = 1.0 - m / (2.0 - m)

  _for_shared_overlaps(v, rows, cols, store)
  return out


def _check_square(name: str, x: np.ndarray, n: int) -> None:
  if x.shape != (n, n):
    raise ValueError(f'{name} must have shape ({n}, {n}), got {x.shape}.')


def _column_max_squared(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray) -> np.ndarray:
  """``max_i block[i, p]^2`` of every column of ``[[qq, qg], [qg^T, gg]]``, float32, without
  squaring (or copying) the matrices: the max of squares is the square of the max magnitude."""
  def magnitude(x, axis):
    return np.maximum(x.max(axis=axis), -x.min(axis=axis))
  query = np.maximum(magnitude(q_q, 0), magnitude(q_g, 1))
  gallery = np.maximum(magnitude(q_g, 0), magnitude(g_g, 0))
  return np.square(np.concatenate([query, gallery]).astype(np.float32))


def _transpose_into(out: np.ndarray, x: np.ndarray) -> None:
  """``out[:] = x.T`` in square tiles: a plain strided transpose of a slice of a large matrix
  was about 10x slower (cache misses)."""
  for start in range(0, x.shape[0], _TRANSPOSE_TILE):
    out[:, start:start + _TRANSPOSE_TILE] = x[start:start + _TRANSPOSE_TILE].T


def _normalised_rows(q_g, q_q, g_g, colmax, start, stop) -> np.ndarray:
  """Rows ``start:stop`` of the classic ``(block^2 / column max)^T``: row p is column p of the
  block ``[[qq, qg], [qg^T, gg]]``, squared, divided by its maximum. float32 ``[rows, q+g]``."""
  num_query = q_q.shape[0]
  rows = np.empty((stop - start, num_query + g_g.shape[0]), np.float32)
  if start < num_query:  # query columns: [qq[:, p]; qg[p, :]]
    end = min(stop, num_query)
    _transpose_into(rows[:end - start, :num_query], q_q[:, start:end])
    rows[:end - start, num_query:] = q_g[start:end]
  if stop > num_query:  # gallery columns: [qg[:, j]; gg[:, j]]
    lo, hi = max(start, num_query) - num_query, stop - num_query
    offset = max(start, num_query) - start
    _transpose_into(rows[offset:, :num_query], q_g[:, lo:hi])
    _transpose_into(rows[offset:, num_query:], g_g[:, lo:hi])
  np.square(rows, out=rows)
  rows /= colmax[start:stop, None]
  return rows


def k_reciprocal_rerank(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
  """Re-ranked ``[num_query, num_gallery]`` distances (Zhong et al., CVPR 2017), exact mode.

  The classic dense algorithm: the ``(q+g) x (q+g)`` matrix ``[[qq, qg], [qg^T, gg]]`` is
  squared, each column divided by its maximum and the result transposed (so row ``p`` holds
  ``d(., p)^2 / max_j d(j, p)^2``); rankings, ``N(p, k1)`` (``k1 + 1`` items) and the weights
  ``V`` come from it (see the module docstring) and the result is
  ``(1 - lambda) * jaccard + lambda * original`` on the query-gallery block.

  Results equal the dense algorithm, but the ``(q+g)^2`` matrix is never built: its rows are
  made from the inputs ``_RERANK_CHUNK_ROWS`` at a time and reduced to their top ``k1 + 1``
  (``search.topk_smallest``), the weights ``V`` read the few entries they need from the inputs,
  and the Jaccard term is computed only for pairs with shared support. Extra memory is the
  ``[q, g]`` result plus ``O(chunk x (q+g))``. For distances that do not fit in memory, use
  ``rerank_features``.

  Args:
    q_g_dist: ``[q, g]`` query-gallery distances (e.g. ``compute_distance``).
    q_q_dist: ``[q, q]`` query-query distances.
    g_g_dist: ``[g, g]`` gallery-gallery distances.
    k1: size of the k-reciprocal neighbourhoods.
    k2: size of the local query expansion (1 disables it).
    lambda_value: weight of the original distance.

  Returns:
    float32 ``[q, g]`` distances (smaller = closer).
  """
  q_g_dist = np.asarray(q_g_dist, np.float32)
  q_q_dist = np.asarray(q_q_dist, np.float32)
  g_g_dist = np.asarray(g_g_dist, np.float32)
  if q_g_dist.ndim != 2:
    raise ValueError(f'q_g_dist must be a [num_query, num_gallery] matrix, got {q_g_dist.shape}.')
  num_query, num_gallery = q_g_dist.shape
  _check_square('q_q_dist', q_q_dist, num_query)
  _check_square('g_g_dist', g_g_dist, num_gallery)
  _check_params(k1, k2, lambda_value)
  colmax = _column_max_squared(q_g_dist, q_q_dist, g_g_dist)
  if not np.isfinite(colmax).all():
    raise ValueError('The distance matrices contain NaN or inf: check the features.')
  total = num_query + num_gallery
  width = min(max(k1 + 1, k2), total)
  rank = np.concatenate([
      search_lib.topk_smallest(
          _normalised_rows(q_g_dist, q_q_dist, g_g_dist, colmax, start,
                           min(start + _RANK_CHUNK_ROWS, total)), width)[1]
      for start in range(0, total, _RANK_CHUNK_ROWS)])

  def original(rows, cols):
    """Entries ``(block[cols, rows])^2 / colmax[rows]`` of the normalised transposed matrix."""
    values = np.empty(len(rows), np.float32)
    for row_is_q in (True, False):
      for col_is_q in (True, False):
        sel = ((rows < num_query) == row_is_q) & ((cols < num_query) == col_is_q)
        p = rows[sel] - (0 if row_is_q else num_query)
        j = cols[sel] - (0 if col_is_q else num_query)
        if row_is_q and col_is_q:
          values[sel] = q_q_dist[j, p]
        elif row_is_q:
          values[sel] = q_g_dist[p, j]
        elif col_is_q:
          values[sel] = q_g_dist[j, p]
        else:
          values[sel] = g_g_dist[j, p]
    values = np.square(values)
    values /= colmax[rows]
    return values

  out = np.empty((num_query, num_gallery), np.float32)
  for start in range(0, num_query, _RANK_CHUNK_ROWS):
    rows = slice(start, min(start + _RANK_CHUNK_ROWS, num_query))
    np.divide(np.square(q_g_dist[rows]), colmax[rows][:, None], out=out[rows])
  return _rerank_from_rank(rank, original, num_query, k1, k2, lambda_value, out)


def _check_params(k1: int, k2: int, lambda_value: float) -> None:
  if k1 < 1 or k2 < 1:
    raise ValueError(f'k1 and k2 must be >= 1, got k1={k1}, k2={k2}.')
  if not 0.0 <= lambda_value <= 1.0:
    raise ValueError(f'lambda_value must be in [0, 1], got {lambda_value}.')


def _rerank_from_rank(rank, original, num_query, k1, k2, lambda_value, out):
  """Steps 1-4 of the module docstring from the top lists and an entry lookup of the
  normalised distance. ``out`` holds the ``[q, g]`` original term on entry and the result,
  ``(1 - lambda) * jaccard + lambda * original``, on return (no second ``[q, g]`` array)."""
  total = rank.shape[0]
  expanded = expanded_sets(rank, k1 + 1, int(np.around(k1 / 2)) + 1)
  v = encode_weights(original, expanded)
  if k2 != 1:
    v = local_query_expansion(v, rank, k2)
  keep, mix = np.float32(lambda_value), np.float32(1.0 - lambda_value)

  def store(start, n_rows, shared, m):
    part = out[start:start + n_rows].reshape(-1)
    part *= keep
    # Jaccard distance 1 (no shared support) everywhere but at the shared pairs; each entry is
    # the float32 sum (1 - lambda) * jaccard + lambda * original.
    mixed = (1.0 - m / (2.0 - m)) * mix + part[shared]
    part += mix
    part[shared] = mixed

  _for_shared_overlaps(v, np.arange(num_query), np.arange(num_query, total), store)
  return out


@functools.partial(jax.jit, static_argnames='metric')
def _pair_values(feats: jax.Array, stats: jax.Array, rows: jax.Array, cols: jax.Array,
                 metric: str) -> jax.Array:
  """``d(feats[rows[i]], feats[cols[i]])^2`` as ``distance_block`` computes it, one per pair."""
  a, b = feats[rows], feats[cols]
  if metric == 'cosine':
    d = 1.0 - jnp.sum(distance.normalize(a) * b, axis=1) * stats[cols]
  else:
    d = jnp.sqrt(jnp.maximum(jnp.sum(a * a, axis=1) + stats[cols] - 2.0 * jnp.sum(a * b, axis=1),
                             0.0))
  return jnp.square(d)


@functools.partial(jax.jit, static_argnames=('metric', 'width', 'num_query', 'keep'))
def _reduced_rows(rows: jax.Array, feats: jax.Array, stats: jax.Array, metric: str, width: int,
                  num_query: int, keep: bool):
  """Rows of squared distances against all features, reduced to ``(max_j d^2, the first width
  columns of the stable ascending order, d^2 / max_j d^2 on the gallery columns if keep)``."""
  squared = jnp.square(distance.distance_block(rows, feats, metric, stats))
  row_max = jnp.max(squared, axis=1)
  # top_k orders equal values by index, as a stable ascending argsort does. Ranking d^2 rather
  # than d^2 / max (a positive scale) saves a pass; the two orders differ only where the
  # division rounds two distinct values to one.
  _, top = jax.lax.top_k(-squared, width)
  kept = squared[:, num_query:] / row_max[:, None] if keep else None
  return row_max, top, kept


def _reduced_rows_on_host(rows: np.ndarray, feats: np.ndarray, stats: np.ndarray, metric: str,
                          width: int, num_query: int, buffer: np.ndarray,
                          kept_out: np.ndarray | None):
  """``_reduced_rows`` in numpy: the rows' distances from the host BLAS into ``buffer``, the
  same reductions, made tile by tile while each tile is in cache; returns ``(row max, top)``
  and writes the normalised gallery part into ``kept_out`` when given."""
  row_max = np.empty(len(rows), np.float32)
  top = np.empty((len(rows), width), np.int64)
  for start, tile in distance.host_distance_tiles(rows, feats, metric, stats,
                                                  out=buffer[:len(rows)]):
    end = start + len(tile)
    np.square(tile, out=tile)
    row_max[start:end] = tile.max(axis=1)
    top[start:end] = search_lib.topk_smallest(tile, width)[1]
    if kept_out is not None:
      np.divide(tile[:, num_query:], row_max[start:end, None], out=kept_out[start:end])
  return row_max, top


def rerank_features(
    query_feats: np.ndarray,
    gallery_feats: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = 'euclidean',
    chunk_size: int = 1024,
    host_blas: bool = True,
) -> np.ndarray:
  """k-reciprocal re-ranking from features, scalable mode (any size that the result fits).

  The same algorithm as ``k_reciprocal_rerank`` applied to the distances of all ``q + g``
  items among themselves (``jreid.evaluation.distance``, ``metric``), taken as symmetric: the
  column maximum of the classic algorithm is each item's row maximum. Rows of distances are
  computed ``chunk_size`` at a time on the JAX device (with numpy's BLAS when that device is
  the CPU, see ``host_blas``, one chunk per worker thread) and reduced there to their maximum,
  their first ``k1 + 1`` neighbours (ranked by ``d^2``: the same order as ``d^2 / max`` except
  where that division rounds two values to one) and, for query rows, the normalised gallery
  part; the weights ``V`` recompute the few distances they need from the features (jitted, in
  steps of ``_PAIRS_PER_STEP`` pairs); the Jaccard term is sparse. Memory: the features, the
  ``[q, g]`` float32 result and ``O(chunk_size x (q+g))`` per worker thread; time: one
  ``(q+g)^2`` matmul plus the sparse steps. Equal to ``k_reciprocal_rerank`` on the matrices of
  ``compute_distance`` up to float32 rounding of the distances (tested;
  ``benchmarks/rerank_scale.py`` reports the fraction of entries that differ).

  Args:
    query_feats: ``[q, dim]`` features.
    gallery_feats: ``[g, dim]`` features.
    k1, k2, lambda_value: as in ``k_reciprocal_rerank``.
    metric: ``'euclidean'`` (the original paper's) or ``'cosine'`` (``1 - cos``).
    chunk_size: rows of distances per step.
    host_blas: on a CPU device, compute the rows with numpy's BLAS
      (``distance.host_distance_block``, faster there than XLA's product); False keeps them in
      the jitted step that accelerators run.

  Returns:
    float32 ``[q, g]`` distances.
  """
  query_feats = np.asarray(query_feats, np.float32)
  gallery_feats = np.asarray(gallery_feats, np.float32)
  if (query_feats.ndim != 2 or gallery_feats.ndim != 2
      or query_feats.shape[1] != gallery_feats.shape[1]):
    raise ValueError(
        f'rerank_features needs [num_query, dim] and [num_gallery, dim] features of the same '
        f'dim, got {query_feats.shape} and {gallery_feats.shape}.')
  _check_params(k1, k2, lambda_value)
  if not (np.isfinite(query_feats).all() and np.isfinite(gallery_feats).all()):
    raise ValueError('The features contain NaN or inf: check the model output.')
  if metric not in distance.METRICS:
    raise ValueError(f'Unknown distance metric {metric!r}: use one of {distance.METRICS}.')
  if chunk_size < 1:
    raise ValueError(f'chunk_size must be a positive number of rows, got {chunk_size}.')
  num_query = query_feats.shape[0]
  feats = np.concatenate([query_feats, gallery_feats])
  total = feats.shape[0]
  width = min(max(k1 + 1, k2), total)
  rank = np.empty((total, width), np.int64)
  rowmax = np.empty(total, np.float32)
  query_original = np.empty((num_query, total - num_query), np.float32)
  device_feats = jnp.asarray(feats)
  stats = distance.gallery_statistics(device_feats, metric)
  # Chunks never straddle the query/gallery boundary: only query rows keep their gallery part.
  starts = [(start, min(start + chunk_size, num_query)) for start in range(0, num_query,
                                                                           chunk_size)]
  starts += [(start, min(start + chunk_size, total)) for start in range(num_query, total,
                                                                        chunk_size)]
  if host_blas and distance.on_cpu(device_feats):
    # On a CPU device numpy's BLAS computes the rows (distance.host_distance_tiles); each worker
    # thread computes and reduces whole chunks in its own buffer (a fresh array per chunk is
    # slow to touch) and stores the results in their disjoint rows.
    host_stats = distance.host_gallery_statistics(feats, metric)

    def reduce_chunk(bounds, buffer):
      first, stop = bounds
      rowmax[first:stop], rank[first:stop] = _reduced_rows_on_host(
          feats[first:stop], feats, host_stats, metric, width, num_query, buffer,
          query_original[first:stop] if first < num_query else None)

    distance.ordered_map(reduce_chunk, starts, distance.default_workers(),
                         lambda: np.empty((min(chunk_size, total), total), np.float32))
  else:
    # Row chunks are cut from a zero-padded copy, so every step has the same shape (one
    # compilation per kind of chunk); the padded rows' results are dropped. The next chunk is
    # dispatched before the host stores the current one (overlap).
    padded = jnp.concatenate([device_feats, jnp.zeros((chunk_size, feats.shape[1]),
                                                      jnp.float32)])
    pending = None
    for bounds in starts + [None]:
      dispatched = None
      if bounds is not None:
        first = bounds[0]
        dispatched = (bounds, _reduced_rows(
            jax.lax.dynamic_slice_in_dim(padded, first, chunk_size), device_feats, stats, metric,
            width, num_query, first < num_query))
      if pending is not None:
        (first, stop), (block_max, top, kept) = pending
        rowmax[first:stop] = np.asarray(block_max)[:stop - first]
        rank[first:stop] = np.asarray(top)[:stop - first]
        if kept is not None:
          query_original[first:stop] = np.asarray(kept)[:stop - first]
      pending = dispatched

  def original(rows, cols):
    values = np.empty(len(rows), np.float32)
    for start in range(0, len(rows), _PAIRS_PER_STEP):
      r, c = rows[start:start + _PAIRS_PER_STEP], cols[start:start + _PAIRS_PER_STEP]
      n = len(r)
      if n < _PAIRS_PER_STEP:  # padded to one shape: one compilation
        r = np.pad(r, (0, _PAIRS_PER_STEP - n))
        c = np.pad(c, (0, _PAIRS_PER_STEP - n))
      values[start:start + n] = np.asarray(
          _pair_values(device_feats, stats, jnp.asarray(r), jnp.asarray(c), metric))[:n]
    return values / rowmax[rows]

  return _rerank_from_rank(rank, original, num_query, k1, k2, lambda_value, query_original)


def jaccard_distance(
    features: np.ndarray,
    k1: int = 30,
    k2: int = 6,
    metric: str = 'cosine',
) -> np.ndarray:
  """``[n, n]`` Jaccard distances of k-reciprocal encodings, for clustering (SpCL / PPLR).

  The variant of ``compute_jaccard_distance`` in SpCL and PPLR: distances among the features
  themselves (no original-distance term, no column normalisation), ``N(p, k1)`` of ``k1`` items
  (p included; ``k1/2`` sets take ``round(k1/2) + 1``), weights ``softmax(-d)`` over ``R*(p)``,
  ``k2`` local query expansion, and negative distances (rounding) clipped to 0.

  Args:
    features: ``[n, dim]`` features.
    k1: neighbourhood size.
    k2: local query expansion size (1 disables it).
    metric: ``'cosine'``: ``d = 2 - 2 cos`` (the squared Euclidean distance of the
      L2-normalised features; SpCL's ``2 - 2 x.y`` on normalised inputs), or ``'euclidean'``:
      the squared Euclidean distance of the raw features.

  Returns:
    float32 ``[n, n]`` distances in ``[0, 1]``.
  """
  if metric not in JACCARD_METRICS:
    raise ValueError(f'Unknown metric {metric!r}: use one of {JACCARD_METRICS}.')
  features = np.asarray(features, np.float32)
  if features.ndim != 2:
    raise ValueError(f'features must be a [num_samples, dim] array, got {features.shape}.')
  if not np.isfinite(features).all():
    raise ValueError('The features contain NaN or inf: check the model output.')
  n = features.shape[0]
  if not 1 <= k2 <= k1 <= n:
    raise ValueError(f'Need 1 <= k2 <= k1 <= num_samples ({n}), got k1={k1}, k2={k2}.')
  x = jnp.asarray(features)
  if metric == 'cosine':
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    dist = 2.0 - 2.0 * jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
  else:
    sq = jnp.sum(x * x, axis=1)
    dist = jnp.maximum(
        sq[:, None] + sq[None, :] - 2.0 * jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST),
        0.0)
  dist = np.asarray(dist)

  rank = initial_rank(dist, k1)
  expanded = expanded_sets(rank, k1, int(np.around(k1 / 2)) + 1)
  v = encode_weights(dist, expanded)
  if k2 != 1:
    v = local_query_expansion(v, rank, k2)
  everyone = np.arange(n)
  return np.maximum(jaccard_of_weights(v, everyone, everyone), 0.0)
