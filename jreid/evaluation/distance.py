"""Query-gallery distance matrices, computed in query chunks (jitted JAX matmuls; BLAS on CPU).

Two metrics, as in FastReID:

* ``'cosine'``: ``1 - <q, g>`` of L2-normalised features, in ``[0, 2]``;
* ``'euclidean'``: ``sqrt(max(|q|^2 + |g|^2 - 2 <q, g>, 0))`` of the raw features.

The gallery is placed on the device once; queries go through in chunks of ``chunk_size`` rows
and each ``[chunk, g]`` block comes back to the host as float32. Matmuls run at
``Precision.HIGHEST`` (no TF32/bf16 passes on GPU/TPU) so rankings match a float32 numpy
computation. When JAX's device is the CPU the blocks are computed on the host with numpy's BLAS
instead: XLA:CPU's float32 matrix product of these shapes (a few rows by a large gallery) runs
at about half the speed of the BLAS that numpy ships (``benchmarks/eval_scale.py`` measures
both), and the block ends on the host anyway.
"""

from collections.abc import Iterator
import concurrent.futures
import functools

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ('cosine', 'euclidean')

_HIGHEST = jax.lax.Precision.HIGHEST


def normalize(x: np.ndarray | jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """Returns ``x / max(||x||_2, eps)`` along ``axis`` (as ``torch.nn.functional.normalize``)."""
  x = jnp.asarray(x)
  norm = jnp.linalg.norm(x, axis=axis, keepdims=True)
  return x / jnp.maximum(norm, eps)


def gallery_statistics(gallery: jax.Array, metric: str) -> jax.Array:
  """What ``distance_block`` needs of the gallery besides the features: ``1 / |g|`` (cosine) or
  ``|g|^2`` (euclidean), ``[num_gallery]``."""
  if metric == 'cosine':
    return 1.0 / jnp.maximum(jnp.linalg.norm(gallery, axis=1), 1e-12)
  return jnp.sum(gallery * gallery, axis=1)


def distance_block(query: jax.Array, gallery: jax.Array, metric: str,
                   gallery_stats: jax.Array) -> jax.Array:
  """``[n, g]`` distances of a block of queries to the gallery (traceable: jit the caller).

  ``gallery_stats`` is ``gallery_statistics(gallery, metric)``.
  """
  if metric == 'cosine':
    # Scaling the product by 1 / |g| instead of normalising a copy of the gallery keeps memory
    # at one gallery (the MSMT17 gallery is 0.7 GB at 2048-d).
    sim = jnp.matmul(normalize(query), gallery.T, precision=_HIGHEST) * gallery_stats[None, :]
    return 1.0 - sim
  query_sq = jnp.sum(query * query, axis=1, keepdims=True)
  cross = jnp.matmul(query, gallery.T, precision=_HIGHEST)
  return jnp.sqrt(jnp.maximum(query_sq + gallery_stats[None, :] - 2.0 * cross, 0.0))


@functools.partial(jax.jit, static_argnames='metric')
def _block(query: jax.Array, gallery: jax.Array, gallery_stats: jax.Array,
           column_offset: jax.Array, metric: str) -> jax.Array:
  return distance_block(query, gallery, metric, gallery_stats) + column_offset[None, :]


def _as_features(x: np.ndarray | jax.Array, name: str) -> jax.Array:
  """Checks a [n, d] feature matrix and returns it as a float32 device array."""
  x = jnp.asarray(x, dtype=jnp.float32)
  if x.ndim != 2:
    raise ValueError(
        f'{name} features must be a 2-D [num_samples, feature_dim] array, got shape '
        f'{tuple(x.shape)}: flatten or pool the features before computing distances.')
  return x


def iter_distance_blocks(
    query: np.ndarray | jax.Array,
    gallery: np.ndarray | jax.Array,
    metric: str = 'cosine',
    chunk_size: int = 4096,
    nan_columns: np.ndarray | None = None,
    host_blas: bool = True,
    reuse_buffers: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
  """Yields ``(start, block)`` with ``block = distance(query[start:start + chunk_size], gallery)``.

  Each block is a float32 host array ``[<= chunk_size, num_gallery]``. The next block is
  dispatched to the device before the current one is handed out, so device work overlaps with
  whatever the caller does on the host with the block (e.g. sorting it).

  Args:
    query: ``[num_query, dim]`` features.
    gallery: ``[num_gallery, dim]`` features.
    metric: ``'cosine'`` or ``'euclidean'``.
    chunk_size: number of query rows per block.
    nan_columns: optional bool ``[num_gallery]``; these columns are NaN in every block (set in
      the same jitted step; the ranker's mask of junk gallery items).
    host_blas: on a CPU device, compute the blocks with numpy's BLAS (module docstring); False
      keeps them in XLA.
    reuse_buffers: on the host path, write the blocks into two buffers in turn: a block is then
      valid only until the caller asks for the next one (for callers that reduce each block
      before asking for the next).
  """
  if metric not in METRICS:
    raise ValueError(f'Unknown distance metric {metric!r}: use one of {METRICS}.')
  if chunk_size < 1:
    raise ValueError(f'chunk_size must be a positive number of query rows, got {chunk_size}.')
  query = _as_features(query, 'query')
  gallery = _as_features(gallery, 'gallery')
  if query.shape[1] != gallery.shape[1]:
    raise ValueError(
        f'Query features have dimension {query.shape[1]} but gallery features have '
        f'{gallery.shape[1]}: both must come from the same model and head.')

  offset = np.zeros(gallery.shape[0], np.float32)
  if nan_columns is not None:
    offset[np.asarray(nan_columns, bool)] = np.nan
  starts = range(0, query.shape[0], chunk_size)
  if host_blas and on_cpu(query, gallery):
    yield from _host_blocks(np.asarray(query), np.asarray(gallery), metric, starts, chunk_size,
                            offset if nan_columns is not None else None, reuse_buffers)
    return
  block_fn = functools.partial(_block, gallery=gallery,
                               gallery_stats=gallery_statistics(gallery, metric),
                               column_offset=jnp.asarray(offset), metric=metric)
  pending = None
  for start in starts:
    dispatched = (start, block_fn(query[start:start + chunk_size]))
    if pending is not None:
      yield pending[0], np.asarray(pending[1])
    pending = dispatched
  if pending is not None:
    yield pending[0], np.asarray(pending[1])


def on_cpu(*arrays: jax.Array) -> bool:
  """Whether every device that holds these arrays is a CPU (where the host BLAS path runs)."""
  return all(d.platform == 'cpu' for x in arrays for d in x.devices())


def host_gallery_statistics(gallery: np.ndarray, metric: str) -> np.ndarray:
  """``gallery_statistics`` in numpy, float32."""
  if metric == 'cosine':
    return np.float32(1.0) / np.maximum(np.linalg.norm(gallery, axis=1), np.float32(1e-12))
  return np.einsum('ij,ij->i', gallery, gallery)


def host_distance_block(query: np.ndarray, gallery: np.ndarray, metric: str,
                        gallery_stats: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
  """``distance_block`` in numpy (float32, BLAS product), with as few full-size passes as it
  can: the result is the only ``[n, g]`` array, updated in place; written into ``out`` (float32
  ``[n, g]``, C-contiguous) when given. A reused ``out`` matters on hosts where first touching
  fresh pages is slow: there a new block per chunk can cost as much as the product itself."""
  if metric == 'cosine':
    query = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), np.float32(1e-12))
    out = np.matmul(query, gallery.T, out=out)  # gallery.T is a view: BLAS reads it transposed.
    out *= gallery_stats[None, :]
    return np.subtract(np.float32(1.0), out, out=out)
  out = np.matmul(query, gallery.T, out=out)
  out *= np.float32(-2.0)
  out += np.einsum('ij,ij->i', query, query)[:, None]
  out += gallery_stats[None, :]
  np.maximum(out, np.float32(0.0), out=out)
  return np.sqrt(out, out=out)


def _host_blocks(query: np.ndarray, gallery: np.ndarray, metric: str, starts: range,
                 chunk_size: int, offset: np.ndarray | None,
                 reuse_buffers: bool) -> Iterator[tuple[int, np.ndarray]]:
  """``host_distance_block`` per chunk, the next block computed in a thread (BLAS and numpy's
  loops release the GIL) while the caller works on the current one; with ``reuse_buffers`` the
  blocks alternate between two buffers."""
  gallery_stats = host_gallery_statistics(gallery, metric)
  rows = min(chunk_size, query.shape[0])
  buffers = [np.empty((rows, gallery.shape[0]), np.float32) for _ in range(2)] if (
      reuse_buffers) else None

  def block(start: int) -> np.ndarray:
    q = query[start:start + chunk_size]
    target = None
    if buffers is not None:
      target = buffers[(start // chunk_size) % 2][:len(q)]
    out = host_distance_block(q, gallery, metric, gallery_stats, out=target)
    if offset is not None:
      out += offset[None, :]
    return out

  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    pending = None
    for start in starts:
      dispatched = (start, pool.submit(block, start))
      if pending is not None:
        yield pending[0], pending[1].result()
      pending = dispatched
    if pending is not None:
      yield pending[0], pending[1].result()


def compute_distance(
    query: np.ndarray | jax.Array,
    gallery: np.ndarray | jax.Array,
    metric: str = 'cosine',
    chunk_size: int = 4096,
) -> np.ndarray:
  """Returns the float32 ``[num_query, num_gallery]`` distance matrix on the host.

  Args:
    query: ``[num_query, dim]`` features.
    gallery: ``[num_gallery, dim]`` features.
    metric: ``'cosine'`` (``1 - cos``, features L2-normalised here) or ``'euclidean'``.
    chunk_size: query rows per matmul; bounds device memory to ``chunk_size x g``.
  """
  query = _as_features(query, 'query')
  gallery = _as_features(gallery, 'gallery')
  out = np.empty((query.shape[0], gallery.shape[0]), dtype=np.float32)
  if (metric in METRICS and chunk_size >= 1 and query.shape[1] == gallery.shape[1]
      and on_cpu(query, gallery)):  # (iter_distance_blocks names what is wrong otherwise)
    # Each chunk straight into its rows of the result (numpy's BLAS, see the module docstring).
    query, gallery = np.asarray(query), np.asarray(gallery)
    stats = host_gallery_statistics(gallery, metric)
    for start in range(0, query.shape[0], chunk_size):
      rows = slice(start, start + chunk_size)
      host_distance_block(query[rows], gallery, metric, stats, out=out[rows])
    return out
  for start, block in iter_distance_blocks(query, gallery, metric, chunk_size):
    out[start:start + block.shape[0]] = block
  return out
