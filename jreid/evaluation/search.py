"""Exact k-nearest-neighbour search of queries in a gallery.

Two backends give the same ``(distances, indices)``:

* ``'numpy'``: distance blocks of ``chunk_size`` queries from ``jreid.evaluation.distance``
  (jitted JAX matmuls on an accelerator, numpy's BLAS on a CPU device), then per block an
  ``np.argpartition`` to the k candidates and a sort of those k by ``(distance, index)``;
* ``'faiss'``: ``IndexFlatIP`` (cosine, on L2-normalised features) or ``IndexFlatL2``
  (euclidean), moved to every GPU when faiss was built with GPUs. faiss is imported lazily, so it
  is optional.

Distances follow ``jreid.evaluation.distance``: ``'cosine'`` is ``1 - cos`` and ``'euclidean'``
is the (not squared) Euclidean distance. Each row is sorted by ascending distance, ties broken
by gallery index (as a stable argsort of the full row).

``backend='auto'`` picks faiss when faiss has GPUs; otherwise faiss-cpu for dims < 256 and
numpy/JAX for dims >= 256. Measured on this project's 2-core CPU machine, shared with other jobs
(load average 2-3, so +-30%), faiss-cpu 1.15.1 vs the numpy/JAX path on CPU; 2000 queries,
20000 gallery items, k=10, cosine; best of 2, seconds::

    dim    numpy/JAX   faiss-cpu   (plain q @ g.T alone)
    128    0.43        0.12        0.08
    256    0.60        0.47
    512    0.84        0.86
    2048   2.85        2.45        2.09

At 2048-d the matmul alone beats faiss-cpu (as noted in GOTCHAS), but the top-k selection
(argpartition of each 20000-wide row) costs about as much again, so end to end the two are
within noise from 256-d up; numpy/JAX is chosen there because it needs no faiss, runs on the
JAX accelerator and orders ties exactly. Below 256-d faiss-cpu is clearly faster.
"""

import numpy as np

from jreid.evaluation import distance
from jreid.evaluation import roc

BACKENDS = ('auto', 'faiss', 'numpy')

# Below this feature dimension faiss-cpu beat the numpy/JAX path (module docstring).
_FAISS_CPU_MAX_DIM = 256


def topk_smallest(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """The ``k`` smallest entries of each row, ascending, ties broken by column index.

  Equal to ``order = np.argsort(block, axis=1, kind='stable')[:, :k]`` and the values there,
  but ``O(m)`` per row: ``np.argpartition`` finds k candidates, which are sorted by
  ``(value, column)``. Rows where the k-th value is tied with a value outside the candidates
  (argpartition would pick arbitrarily among them) fall back to the stable argsort.

  Args:
    block: ``[n, m]`` array without NaN.
    k: ``1 <= k <= m``.

  Returns:
    ``(values [n, k], columns [n, k] int64)``.
  """
  n, m = block.shape
  if not 1 <= k <= m:
    raise ValueError(f'k must be between 1 and the number of columns ({m}), got {k}.')
  if n and m >= _THRESHOLD_MIN_COLUMNS and 8 * k * _SAMPLE_FACTOR <= m:
    return _topk_by_threshold(block, k)
  if 2 * k >= m:
    order = np.argsort(block, axis=1, kind='stable')[:, :k]
  else:
    candidates = np.argpartition(block, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(block, candidates, axis=1)
    order = np.take_along_axis(candidates, np.lexsort((candidates, values), axis=1), axis=1)
    kth = values.max(axis=1)
    tied = np.count_nonzero(block <= kth[:, None], axis=1) > k
    if tied.any():
      order[tied] = np.argsort(block[tied], axis=1, kind='stable')[:, :k]
  order = order.astype(np.int64)
  return np.take_along_axis(block, order, axis=1), order


# Wide rows use a sampled threshold instead of argpartition (see _topk_by_threshold).
_THRESHOLD_MIN_COLUMNS = 4096
_SAMPLE_FACTOR = 8


def _topk_by_threshold(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """``topk_smallest`` for wide rows: the k-th smallest value of ``_SAMPLE_FACTOR * k`` evenly
  spaced columns bounds each row's k-th smallest from above, so the items ``<=`` it (about
  ``_SAMPLE_FACTOR``-fold fewer than the row) contain the exact top k, ties included; those are
  sorted by ``(value, column)``. One comparison pass instead of an int64 argpartition copy."""
  n, m = block.shape
  sample_cols = np.unique(np.linspace(0, m - 1, max(_SAMPLE_FACTOR * k, 1024)).astype(np.int64))
  sample = block[:, sample_cols]
  bound = np.partition(sample, k - 1, axis=1)[:, k - 1]
  # flatnonzero + divmod: 2-D np.nonzero was several times slower here.
  rows, cols = np.divmod(np.flatnonzero(block <= bound[:, None]), m)
  col_bits = max(1, int(m - 1).bit_length())
  if n.bit_length() + col_bits <= 32:
    # One sort of unique uint64 keys (row, order-preserving value code, column).
    keys = ((rows.astype(np.uint64) << np.uint64(32 + col_bits))
            | (roc.ordered_code(block[rows, cols]).astype(np.uint64) << np.uint64(col_bits))
            | cols.astype(np.uint64))
    keys.sort()
    cols = (keys & np.uint64((1 << col_bits) - 1)).astype(np.int64)
    rows = (keys >> np.uint64(32 + col_bits)).astype(np.int64)
  else:
    order = np.lexsort((cols, block[rows, cols], rows))
    rows, cols = rows[order], cols[order]
  start = np.searchsorted(rows, np.arange(n))
  take = start[:, None] + np.arange(k)[None, :]
  columns = cols[take].astype(np.int64)
  return np.take_along_axis(block, columns, axis=1), columns


def _auto_backend(dim: int) -> str:
  """faiss with GPUs, else faiss-cpu below 256-d, else numpy (measured, see module doc)."""
  try:
    import faiss  # pylint: disable=import-outside-toplevel
  except ImportError:
    return 'numpy'
  if hasattr(faiss, 'get_num_gpus') and faiss.get_num_gpus() > 0:
    return 'faiss'
  return 'faiss' if dim < _FAISS_CPU_MAX_DIM else 'numpy'


def _search_numpy(query, gallery, k, metric, chunk_size):
  distances = np.empty((query.shape[0], k), np.float32)
  indices = np.empty((query.shape[0], k), np.int64)

  def store(start: int, block: np.ndarray) -> None:  # rows of its own: safe in any thread
    rows = slice(start, start + block.shape[0])
    distances[rows], indices[rows] = topk_smallest(block, k)

  distance.map_distance_blocks(store, query, gallery, metric, chunk_size)
  return distances, indices


def _search_faiss(query, gallery, k, metric):
  try:
    import faiss  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        "search(backend='faiss') needs faiss: `pip install faiss-cpu` (or a faiss GPU build), "
        "or use backend='numpy'.") from e
  query = np.ascontiguousarray(query, dtype=np.float32)
  gallery = np.ascontiguousarray(gallery, dtype=np.float32)
  if metric == 'cosine':
    query = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    gallery = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    index = faiss.IndexFlatIP(gallery.shape[1])
  else:
    index = faiss.IndexFlatL2(gallery.shape[1])
  if hasattr(faiss, 'get_num_gpus') and faiss.get_num_gpus() > 0:
    index = faiss.index_cpu_to_all_gpus(index)
  index.add(gallery)
  scores, indices = index.search(query, k)
  if metric == 'cosine':
    distances = 1.0 - scores
  else:
    distances = np.sqrt(np.maximum(scores, 0.0))
  indices = indices.astype(np.int64)
  # faiss does not order equal distances by index: sort the k results by (distance, index).
  order = np.lexsort((indices, distances), axis=1)
  return (np.take_along_axis(distances, order, axis=1).astype(np.float32),
          np.take_along_axis(indices, order, axis=1))


def search(
    query: np.ndarray,
    gallery: np.ndarray,
    k: int,
    metric: str = 'cosine',
    backend: str = 'auto',
    chunk_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
  """Exact k nearest gallery items of every query.

  Args:
    query: ``[num_query, dim]`` features.
    gallery: ``[num_gallery, dim]`` features.
    k: neighbours per query, ``1 <= k <= num_gallery``.
    metric: ``'cosine'`` (``1 - cos``) or ``'euclidean'``.
    backend: ``'numpy'`` (JAX matmuls or, on CPU, numpy's BLAS + numpy top-k), ``'faiss'`` or
      ``'auto'`` (faiss when it has GPUs or dim < 256, else numpy; see the module docstring for
      the measurement).
    chunk_size: queries per distance block on the numpy backend.

  Returns:
    ``(distances [num_query, k] float32, indices [num_query, k] int64)``, each row by
    ascending distance, ties by gallery index. On the faiss backend ties are ordered by index
    within the k results, but which of several items tied at the k-th distance is returned is
    faiss's choice.
  """
  if metric not in distance.METRICS:
    raise ValueError(f'Unknown search metric {metric!r}: use one of {distance.METRICS}.')
  if backend not in BACKENDS:
    raise ValueError(f'Unknown search backend {backend!r}: use one of {BACKENDS}.')
  query = np.asarray(query, dtype=np.float32)
  gallery = np.asarray(gallery, dtype=np.float32)
  if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
    raise ValueError(
        f'search needs [num_query, dim] and [num_gallery, dim] features of the same dim, got '
        f'shapes {query.shape} and {gallery.shape}.')
  if not 1 <= k <= gallery.shape[0]:
    raise ValueError(
        f'k must be between 1 and the gallery size ({gallery.shape[0]}), got {k}.')
  if not (np.isfinite(query).all() and np.isfinite(gallery).all()):
    raise ValueError('The features contain NaN or inf: check the model output (a diverged '
                     'model or a failed checkpoint restore).')
  if backend == 'auto':
    backend = _auto_backend(query.shape[1])
  if backend == 'faiss':
    return _search_faiss(query, gallery, k, metric)
  return _search_numpy(query, gallery, k, metric, chunk_size)
