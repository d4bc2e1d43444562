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

Callers that reduce each block on the host (ranking, top-k) use ``map_distance_blocks``: on the
CPU path every worker thread computes a block into its own buffer and reduces it, so the cores
share both steps instead of one thread's reduction waiting on a product that splits the cores
between BLAS threads.
"""

from collections.abc import Callable, Iterator
import concurrent.futures
import functools
import os
import threading
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ('cosine', 'euclidean')

_HIGHEST = jax.lax.Precision.HIGHEST

# Worker threads of ``map_distance_blocks``: each holds one block, so memory grows with them.
_MAX_WORKERS = 4
# Bytes per tile of the host path's elementwise passes (a fraction of a core's L2 cache).
_TILE_BYTES = 1 << 20

_T = TypeVar('_T')


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


def _prepare(query, gallery, metric: str, chunk_size: int):
  """Checks the arguments of the block iterators; returns the features as float32 arrays."""
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
  return query, gallery


def _column_offset(num_gallery: int, nan_columns: np.ndarray | None) -> np.ndarray | None:
  """0 per column, NaN at ``nan_columns``; None when there are none."""
  if nan_columns is None:
    return None
  offset = np.zeros(num_gallery, np.float32)
  offset[np.asarray(nan_columns, bool)] = np.nan
  return offset


def _device_block_fn(gallery: jax.Array, metric: str, offset: np.ndarray | None):
  """The jitted block step with the gallery bound: ``query chunk -> [n, g]`` device array."""
  if offset is None:
    offset = np.zeros(gallery.shape[0], np.float32)
  return functools.partial(_block, gallery=gallery,
                           gallery_stats=gallery_statistics(gallery, metric),
                           column_offset=jnp.asarray(offset), metric=metric)


def iter_distance_blocks(
    query: np.ndarray | jax.Array,
    gallery: np.ndarray | jax.Array,
    metric: str = 'cosine',
    chunk_size: int = 4096,
    nan_columns: np.ndarray | None = None,
    host_blas: bool = True,
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
  """
  query, gallery = _prepare(query, gallery, metric, chunk_size)
  offset = _column_offset(gallery.shape[0], nan_columns)
  starts = range(0, query.shape[0], chunk_size)
  if host_blas and on_cpu(query, gallery):
    yield from _host_blocks(np.asarray(query), np.asarray(gallery), metric, starts, chunk_size,
                            offset)
    return
  block_fn = _device_block_fn(gallery, metric, offset)
  pending = None
  for start in starts:
    dispatched = (start, block_fn(query[start:start + chunk_size]))
    if pending is not None:
      yield pending[0], np.asarray(pending[1])
    pending = dispatched
  if pending is not None:
    yield pending[0], np.asarray(pending[1])


def default_workers() -> int:
  """Threads that ``map_distance_blocks`` uses: the usable cores, at most ``_MAX_WORKERS``."""
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    cores = os.cpu_count() or 1
  return max(1, min(cores, _MAX_WORKERS))


def ordered_map(work: Callable[..., _T], items: list, workers: int,
                worker_state: Callable[[], object] | None = None) -> list[_T]:
  """``[work(item, state) for item in items]`` over ``workers`` threads, results in item order.

  Each thread takes the next item when it is free and passes its own ``worker_state()`` (e.g. a
  buffer) to every call. After an exception no new item is started, and the exception of the
  earliest failing item is raised (items are handed out in order, so every earlier item ran).
  With one worker (or item) everything runs in the calling thread.
  """
  items = list(items)
  if workers <= 1 or len(items) <= 1:
    state = worker_state() if worker_state is not None else None
    return [work(item, state) for item in items]
  results = [None] * len(items)
  errors = {}
  indices = iter(range(len(items)))
  lock = threading.Lock()
  stop = threading.Event()

  def loop():
    state = worker_state() if worker_state is not None else None
    while not stop.is_set():
      with lock:
        i = next(indices, None)
      if i is None:
        return
      try:
        results[i] = work(items[i], state)
      except BaseException as e:  # pylint: disable=broad-exception-caught
        errors[i] = e
        stop.set()
        return

  threads = [threading.Thread(target=loop, daemon=True) for _ in range(min(workers, len(items)))]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  if errors:
    raise errors[min(errors)]
  return results


def map_distance_blocks(
    fn: Callable[[int, np.ndarray], _T],
    query: np.ndarray | jax.Array,
    gallery: np.ndarray | jax.Array,
    metric: str = 'cosine',
    chunk_size: int = 4096,
    nan_columns: np.ndarray | None = None,
    host_blas: bool = True,
    workers: int | None = None,
) -> list[_T]:
  """``[fn(start, block) for start, block in iter_distance_blocks(...)]``, blocks reduced in
  parallel.

  ``fn`` runs in ``workers`` threads at once (it must be thread-safe) and a block is valid only
  during its call (its buffer is reused). On the CPU path each thread computes its own blocks
  with numpy's BLAS into one buffer and reduces them (module docstring); on an accelerator the
  calling thread dispatches the blocks and the threads reduce them as they arrive, at most
  ``workers + 1`` blocks in flight.

  Args:
    fn: ``(start, block) -> result``; ``block`` is float32 ``[<= chunk_size, num_gallery]``.
    query, gallery, metric, chunk_size, nan_columns, host_blas: as in ``iter_distance_blocks``.
    workers: threads; default ``default_workers()``. Host memory is about ``workers`` blocks.

  Returns:
    The results in block order. The exception of the first failing block is raised.
  """
  query, gallery = _prepare(query, gallery, metric, chunk_size)
  offset = _column_offset(gallery.shape[0], nan_columns)
  starts = list(range(0, query.shape[0], chunk_size))
  workers = default_workers() if workers is None else max(1, int(workers))
  if host_blas and on_cpu(query, gallery):
    query, gallery = np.asarray(query), np.asarray(gallery)
    stats = host_gallery_statistics(gallery, metric)
    rows = min(chunk_size, query.shape[0])

    def work(start: int, buffer: np.ndarray) -> _T:
      chunk = query[start:start + chunk_size]
      return fn(start, host_distance_block(chunk, gallery, metric, stats, out=buffer[:len(chunk)],
                                           column_offset=offset))

    return ordered_map(work, starts, workers,
                       lambda: np.empty((rows, gallery.shape[0]), np.float32))
  if workers == 1:
    return [fn(start, block) for start, block in iter_distance_blocks(
        query, gallery, metric, chunk_size, nan_columns, host_blas=False)]
  block_fn = _device_block_fn(gallery, metric, offset)
  futures, in_flight = [], []
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    try:
      for start in starts:
        device_block = block_fn(query[start:start + chunk_size])  # dispatched, not waited for
        future = pool.submit(lambda s, b: fn(s, np.asarray(b)), start, device_block)
        futures.append(future)
        in_flight.append(future)
        while len(in_flight) > workers:
          in_flight.pop(0).result()
      return [future.result() for future in futures]
    finally:
      for future in futures:
        future.cancel()


def on_cpu(*arrays: jax.Array) -> bool:
  """Whether every device that holds these arrays is a CPU (where the host BLAS path runs)."""
  return all(d.platform == 'cpu' for x in arrays for d in x.devices())


def host_gallery_statistics(gallery: np.ndarray, metric: str) -> np.ndarray:
  """``gallery_statistics`` in numpy, float32."""
  if metric == 'cosine':
    return np.float32(1.0) / np.maximum(np.linalg.norm(gallery, axis=1), np.float32(1e-12))
  return np.einsum('ij,ij->i', gallery, gallery)


def host_distance_tiles(query: np.ndarray, gallery: np.ndarray, metric: str,
                        gallery_stats: np.ndarray, out: np.ndarray | None = None,
                        column_offset: np.ndarray | None = None,
                        tile_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
  """``distance_block`` in numpy (float32, BLAS product), yielded as ``(start, rows)`` tiles of
  the finished block.

  The product fills the whole ``[n, g]`` block (``out`` when given: float32, C-contiguous);
  the metric's elementwise passes then run one tile of ``tile_rows`` rows at a time (default:
  about ``_TILE_BYTES``, so a tile stays in a core's cache), and each tile is yielded while it
  is still there, for the caller to reduce before the next is made. A reused ``out`` matters on
  hosts where first touching fresh pages is slow: there a new block per chunk can cost as much
  as the product itself.

  ``column_offset`` (float32 ``[g]``, 0 or NaN) is added to every row within the passes the
  metric makes anyway; the values are those of adding it afterwards.
  """
  if metric == 'cosine':
    query = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), np.float32(1e-12))
    # 1 - s / |g| as s * (-1 / |g|) + 1: negating a product is exact, so the float32 values are
    # the same, and the offset rides in the addition.
    scale = -gallery_stats[None, :]
    one = np.float32(1.0) if column_offset is None else (np.float32(1.0) + column_offset)[None, :]
  else:
    query_sq = np.einsum('ij,ij->i', query, query)[:, None]
    if column_offset is not None:  # NaN survives the maximum and the square root
      gallery_stats = gallery_stats + column_offset
  out = np.matmul(query, gallery.T, out=out)  # gallery.T is a view: BLAS reads it transposed.
  if tile_rows is None:
    tile_rows = max(1, _TILE_BYTES // (4 * max(out.shape[1], 1)))
  for start in range(0, out.shape[0], tile_rows):
    tile = out[start:start + tile_rows]
    if metric == 'cosine':
      np.multiply(tile, scale, out=tile)
      np.add(tile, one, out=tile)
    else:
      tile *= np.float32(-2.0)
      tile += query_sq[start:start + tile_rows]
      tile += gallery_stats[None, :]
      np.maximum(tile, np.float32(0.0), out=tile)
      np.sqrt(tile, out=tile)
    yield start, tile


def host_distance_block(query: np.ndarray, gallery: np.ndarray, metric: str,
                        gallery_stats: np.ndarray, out: np.ndarray | None = None,
                        column_offset: np.ndarray | None = None) -> np.ndarray:
  """The whole block of ``host_distance_tiles`` (same arguments): the result is the only
  ``[n, g]`` array, written into ``out`` when given."""
  if out is None:
    out = np.empty((query.shape[0], gallery.shape[0]), np.float32)
  for _ in host_distance_tiles(query, gallery, metric, gallery_stats, out, column_offset):
    pass
  return out


def _host_blocks(query: np.ndarray, gallery: np.ndarray, metric: str, starts: range,
                 chunk_size: int, offset: np.ndarray | None) -> Iterator[tuple[int, np.ndarray]]:
  """``host_distance_block`` per chunk, the next block computed in a thread (BLAS and numpy's
  loops release the GIL) while the caller works on the current one."""
  gallery_stats = host_gallery_statistics(gallery, metric)

  def block(start: int) -> np.ndarray:
    return host_distance_block(query[start:start + chunk_size], gallery, metric, gallery_stats,
                               column_offset=offset)

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
