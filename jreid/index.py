"""A saved gallery for search: `GalleryIndex` (faiss, or a pure numpy exact index without it).

  index = GalleryIndex.build(features, names=names, kind='auto')
  index.save('gallery.index')            # gallery.index + gallery.index.items.npz
  distances, rows = GalleryIndex.load('gallery.index').search(query_features, k=10)

Kinds:

* `flat`: exact search. faiss `IndexFlatIP` on L2-normalised features (metric 'cosine') or
  `IndexFlatL2` ('euclidean'); without faiss, the features themselves, searched with
  `jreid.evaluation.search.search(backend='numpy')` (JAX matmuls, numpy's BLAS on a CPU device,
  + an exact top-k).
* `ivfpq`: faiss `IndexIVFPQ`, an inverted file of `nlist` k-means cells whose residuals are
  product-quantised to `m` bytes per vector (8-bit codes); a query visits `nprobe` cells.
  Defaults from the gallery size n and dimension d (`ivfpq_defaults`): nlist the power of two
  nearest sqrt(n) (at most n / 39, faiss's minimum of training points per cell), m the largest
  divisor of d that is at most min(64, d / 8) (32 bytes per 256-d vector: faiss trains
  sub-quantizers of fewer than 8 dimensions an order of magnitude slower), nprobe nlist / 16 (at
  least 1, at most 256). Trained on 64 points per cell (at least the 39 x 256 points the
  sub-quantizers need; fewer items than that: use `flat`).
* `hnsw`: faiss `IndexHNSWFlat` (hierarchical navigable small-world graph over the full vectors),
  M = 32 links per node, efConstruction 80, efSearch 128.
* `auto` (the default): `flat` below `APPROXIMATE_FROM` (one million) items, `ivfpq` from there
  (exact search of a million 256-d vectors reads 1 GB per query batch; IVF-PQ holds 32 MB).
  Recall@10 against exact search and latencies: `benchmarks/index_scale.py` and its results.

Distances are those of `jreid.evaluation` whatever the kind: `1 - cos` (cosine) or the Euclidean
distance, ascending. The approximate kinds work on squared L2 distances of normalised vectors for
cosine (`1 - cos = |a - b|^2 / 2`), so their distances are the same quantity: exact for the items
HNSW returns (it holds the vectors), approximated from the compressed codes for IVF-PQ.

On disk, `path` holds the faiss index (`faiss.write_index`; the numpy index: an `.npy` array) and
`path.items.npz` the item names, person ids, camera ids and a JSON header (kind, metric,
parameters, and what computed the features, e.g. the model's `model_id`), all read without
pickles.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

KINDS = ('auto', 'flat', 'ivfpq', 'hnsw')
METRICS = ('cosine', 'euclidean')
APPROXIMATE_FROM = 1_000_000
FORMAT = 1
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
_ADD_CHUNK = 65536
TRAIN_POINTS_PER_CELL = 64


class GalleryIndexError(ValueError):
  """An index that cannot be built, saved or loaded; the message names the fix."""


def items_path(path: str | os.PathLike) -> pathlib.Path:
  """The file beside an index holding its item names and ids."""
  path = pathlib.Path(path)
  return path.with_name(path.name + '.items.npz')


def _faiss():
  """The faiss module, or None when it is not installed."""
  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return faiss


def ivfpq_defaults(n: int, dim: int) -> dict[str, int]:
  """nlist, m, nbits and nprobe of an IVF-PQ index of n vectors of dimension dim (module doc)."""
  nlist = 1 << max(0, round(math.log2(math.sqrt(max(n, 1)))))
  nlist = int(max(1, min(nlist, n // 39)))
  m = max(d for d in range(1, min(64, max(dim // 8, 1)) + 1) if dim % d == 0)
  nprobe = int(min(256, max(1, nlist // 16)))
  return {'nlist': nlist, 'm': m, 'nbits': 8, 'nprobe': nprobe}


def resolve_kind(kind: str, n: int) -> str:
  """`auto` -> `flat` below APPROXIMATE_FROM items, `ivfpq` from there."""
  if kind not in KINDS:
    raise GalleryIndexError(f'unknown index kind {kind!r}: use one of {", ".join(KINDS)}.')
  if kind == 'auto':
    return 'flat' if n < APPROXIMATE_FROM else 'ivfpq'
  return kind


def _normalized(x: np.ndarray) -> np.ndarray:
  x = np.ascontiguousarray(x, dtype=np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class GalleryIndex:
  """Gallery features searchable by nearest neighbours, with the names and ids of the items.

  Attributes:
    kind: 'flat' | 'ivfpq' | 'hnsw'.
    metric: 'cosine' | 'euclidean'.
    backend: 'faiss' | 'numpy' (flat only, when faiss is not installed).
    dim: feature dimension.
    names: item names (e.g. image paths relative to the gallery folder), str [N].
    pids, camids: int [N] person and camera ids (-1 where unknown).
    params: the index parameters (nlist, m, nprobe, ...).
    info: what computed the features (model_id, method, step, ...), from the features file.
  """

  def __init__(self, index: Any, kind: str, metric: str, backend: str, dim: int,
               names: Sequence[str], pids: np.ndarray, camids: np.ndarray,
               params: dict[str, Any] | None = None, info: dict[str, Any] | None = None):
    self.index = index
    self.kind, self.metric, self.backend, self.dim = kind, metric, backend, int(dim)
    self.names = np.asarray(names, dtype=str)
    self.pids = np.asarray(pids, np.int64)
    self.camids = np.asarray(camids, np.int64)
    self.params = dict(params or {})
    self.info = dict(info or {})

  def __len__(self) -> int:
    return len(self.names)

  @classmethod
  def build(cls, features: np.ndarray, names: Sequence[str] | None = None,
            pids: Sequence[int] | None = None, camids: Sequence[int] | None = None,
            kind: str = 'auto', metric: str = 'cosine', info: dict[str, Any] | None = None,
            progress: bool = False, **params) -> GalleryIndex:
    """An index of `features` [N, D].

    Args:
      names, pids, camids: per item (default: the row numbers, -1, -1).
      kind: see the module docstring.
      metric: 'cosine' or 'euclidean'.
      info: stored with the index (what computed the features).
      progress: a progress bar while adding (on a terminal).
      params: ivfpq: nlist, m, nbits, nprobe; hnsw: hnsw_m, ef_construction, ef_search
        (defaults in the module docstring).

    Raises:
      GalleryIndexError: bad features, kind or metric, or an approximate kind without faiss.
    """
    features = np.asarray(features)
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
      raise GalleryIndexError(f'features must be a float array [N, D], got {features.dtype} '
                        f'{list(features.shape)}.')
    n, dim = features.shape
    if n == 0:
      raise GalleryIndexError('no features to index.')
    if not np.isfinite(features).all():
      raise GalleryIndexError('the features contain NaN or inf: check the model that computed '
                              'them.')
    if metric not in METRICS:
      raise GalleryIndexError(f'unknown metric {metric!r}: use one of {", ".join(METRICS)}.')
    requested, kind = kind, resolve_kind(kind, n)
    names = [str(i) for i in range(n)] if names is None else [str(x) for x in names]
    pids = np.full(n, -1) if pids is None else np.asarray(pids)
    camids = np.full(n, -1) if camids is None else np.asarray(camids)
    if not len(names) == len(pids) == len(camids) == n:
      raise GalleryIndexError(f'{n} features but {len(names)} names, {len(pids)} pids and '
                        f'{len(camids)} camids: pass one per feature row.')
    own = {'flat': set(), 'ivfpq': {'nlist', 'm', 'nbits', 'nprobe'},
           'hnsw': {'hnsw_m', 'ef_construction', 'ef_search'}}[kind]
    foreign = sorted(set(params) - own)
    if foreign:
      why = (f' (kind auto picks flat below {APPROXIMATE_FROM} items: pass kind ivfpq or hnsw)'
             if requested == 'auto' else '')
      raise GalleryIndexError(f'{", ".join(foreign)}: not an option of the {kind} index{why}; '
                              f'its options are {", ".join(sorted(own)) or "none"}.')
    data = _normalized(features) if metric == 'cosine' else np.ascontiguousarray(
        features, np.float32)
    faiss = _faiss()
    if faiss is None:
      if kind != 'flat':
        raise GalleryIndexError(f'a {kind!r} index needs faiss: pip install faiss-cpu (or use '
                          "--kind flat, exact search without faiss).")
      return cls(data, kind, metric, 'numpy', dim, names, pids, camids, {}, info)
    used: dict[str, Any] = {}
    if kind == 'flat':
      index = faiss.IndexFlatIP(dim) if metric == 'cosine' else faiss.IndexFlatL2(dim)
    elif kind == 'ivfpq':
      used = {**ivfpq_defaults(n, dim), **{k: v for k, v in params.items()
                                           if k in ('nlist', 'm', 'nbits', 'nprobe')}}
      if dim % used['m']:
        raise GalleryIndexError(f'm={used["m"]} does not divide the feature dimension {dim}.')
      fewest = 39 * max(used['nlist'], 1 << used['nbits'])  # faiss's k-means minimum.
      if n < fewest:
        raise GalleryIndexError(
            f'{n} features are too few to train an IVF-PQ index (nlist={used["nlist"]}, '
            f'{1 << used["nbits"]} codes per sub-vector need {fewest}): use kind flat (exact) '
            'for a gallery this small.')
      quantizer = faiss.IndexFlatL2(dim)
      index = faiss.IndexIVFPQ(quantizer, dim, used['nlist'], used['m'], used['nbits'])
      sample = data
      most = max(TRAIN_POINTS_PER_CELL * used['nlist'], fewest)
      if n > most:
        rows = np.sort(np.random.default_rng(0).choice(n, most, replace=False))
        sample = data[rows]
      index.train(sample)
      index.nprobe = int(used['nprobe'])
    else:
      used = {'hnsw_m': int(params.get('hnsw_m', HNSW_M)),
              'ef_construction': int(params.get('ef_construction', HNSW_EF_CONSTRUCTION)),
              'ef_search': int(params.get('ef_search', HNSW_EF_SEARCH))}
      index = faiss.IndexHNSWFlat(dim, used['hnsw_m'])
      index.hnsw.efConstruction = used['ef_construction']
      index.hnsw.efSearch = used['ef_search']
    bar = _progress(n, f'indexing ({kind})', progress)
    for start in range(0, n, _ADD_CHUNK):
      index.add(data[start:start + _ADD_CHUNK])
      bar.update(min(_ADD_CHUNK, n - start))
    bar.close()
    return cls(index, kind, metric, 'faiss', dim, names, pids, camids, used, info)

  def search(self, query: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest items of each query: (distances [Q, k] float32 ascending, rows [Q, k]
    int64). Rows an approximate index could not fill are -1 with distance inf."""
    query = np.asarray(query)
    if query.ndim != 2 or query.shape[1] != self.dim:
      raise GalleryIndexError(f'query features {list(query.shape)} do not match the index '
                              f'dimension {self.dim}: extract them with the model that computed '
                              'the gallery.')
    k = int(k)
    if not 1 <= k <= len(self):
      raise GalleryIndexError(f'topk must be between 1 and the gallery size ({len(self)}), '
                              f'got {k}.')
    q = _normalized(query) if self.metric == 'cosine' else np.ascontiguousarray(query, np.float32)
    if self.backend == 'numpy':
      from jreid.evaluation import search as search_lib  # pylint: disable=g-import-not-at-top
      return search_lib.search(q, self.index, k, metric=self.metric, backend='numpy',
                               chunk_size=_query_chunk(len(self)))
    raw, rows = self.index.search(q, k)
    rows = rows.astype(np.int64)
    if self.kind == 'flat' and self.metric == 'cosine':
      dist = 1.0 - raw
    elif self.metric == 'cosine':
      dist = raw / 2.0  # Squared L2 of unit vectors: 2 - 2 cos.
    else:
      dist = np.sqrt(np.maximum(raw, 0.0))
    dist = np.where(rows < 0, np.inf, dist).astype(np.float32)
    # Ties in index order, as the exact search orders them.
    order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), dist), axis=1)
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(rows, order, axis=1)

  def header(self) -> dict[str, Any]:
    return {'format': FORMAT, 'kind': self.kind, 'metric': self.metric, 'backend': self.backend,
            'dim': self.dim, 'count': len(self), 'params': self.params, 'info': self.info}

  def save(self, path: str | os.PathLike) -> None:
    """Writes `path` (the index) and `path.items.npz` (names, ids, header), each atomically."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + '.tmp')
    items_tmp = items_path(path).with_name(items_path(path).name + '.tmp.npz')
    try:
      if self.backend == 'numpy':
        with open(tmp, 'wb') as f:
          np.save(f, self.index)
      else:
        _faiss().write_index(self.index, str(tmp))
      np.savez(items_tmp, names=self.names, pids=self.pids, camids=self.camids,
               header=np.array(json.dumps(self.header())))
      tmp.replace(path)
      items_tmp.replace(items_path(path))
    finally:
      for leftover in (tmp, items_tmp):
        leftover.unlink(missing_ok=True)

  @classmethod
  def load(cls, path: str | os.PathLike) -> GalleryIndex:
    """An index written by `save`.

    Raises:
      GalleryIndexError: no such index, its items file is missing, or it needs faiss.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
      raise GalleryIndexError(f'index {path} does not exist: build it with jreid index --features '
                        f'FEATS.npz --out {path}.')
    items = items_path(path)
    if not items.is_file():
      raise GalleryIndexError(f'{items} is missing (the names and ids saved beside {path.name}): '
                        'rebuild the index with jreid index.')
    try:
      with np.load(items, allow_pickle=False) as data:
        header = json.loads(str(data['header']))
        names, pids, camids = data['names'], data['pids'], data['camids']
    except (ValueError, KeyError, OSError) as e:
      raise GalleryIndexError(f'{items} is not an items file of jreid index ({e}): rebuild the '
                        'index.') from None
    if header.get('backend') == 'numpy':
      with open(path, 'rb') as f:
        index = np.load(f, allow_pickle=False)
    else:
      faiss = _faiss()
      if faiss is None:
        raise GalleryIndexError(f'{path} is a faiss index: pip install faiss-cpu to search it.')
      index = faiss.read_index(str(path))
      if header['kind'] == 'ivfpq':
        index.nprobe = int(header['params']['nprobe'])
      elif header['kind'] == 'hnsw':
        index.hnsw.efSearch = int(header['params']['ef_search'])
    stored = len(index) if header.get('backend') == 'numpy' else int(index.ntotal)
    if len(names) != int(header['count']) or stored != len(names):
      raise GalleryIndexError(f'{path} and {items.name} disagree on the number of items: '
                              'rebuild the index.')
    return cls(index, header['kind'], header['metric'], header['backend'], header['dim'],
               names, pids, camids, header.get('params'), header.get('info'))


# Bytes of one block of query-gallery distances of the exact numpy search.
_BLOCK_BYTES = 1 << 28


def _query_chunk(gallery_size: int) -> int:
  """Queries per distance block, so a block stays near _BLOCK_BYTES whatever the gallery size."""
  return int(max(1, min(4096, _BLOCK_BYTES // (4 * max(gallery_size, 1)))))


class _NoBar:

  def update(self, n: int) -> None:
    del n

  def close(self) -> None:
    pass


def _progress(total: int, desc: str, enabled: bool):
  import sys  # pylint: disable=g-import-not-at-top
  if not enabled or not sys.stderr.isatty():
    return _NoBar()
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, desc=desc, unit='vec', dynamic_ncols=True, leave=False)
