"""Temporal Lifting (TLift) and the time stamps it needs (Market-1501, SynthReID).

Liao & Shao, "Interpretable and Generalizable Person Re-Identification with Query-Adaptive
Convolution and Temporal Lifting", ECCV 2020. TLift is model-free: people who walk together are
seen together by the next camera too. For a query ``i`` from camera ``a`` and the gallery items
of camera ``b``, the *pivot set* is the top-``K`` (query, gallery) matches of all queries of
camera ``a`` recorded within ``tau`` seconds of query ``i`` (``i`` included); every gallery
item of camera ``b`` is weighted by a Gaussian kernel of its time difference to the pivots, and
the score is lifted multiplicatively: ``out = (weight + alpha) * score``.

This module follows the reference implementation (``reid/tlift.py`` and
``reid/datasets/market.py`` of github.com/ShengcaiLiao/QAConv, as DESIGN.md requires), quirks
included. Each quirk is written out where it matters:

TLift (``tlift``):

* Co-occurrence is ``|t_j - t_i| < tau`` (strict), between queries *of the same camera* only.
* The pivot set is a set of (co-occurring query, gallery item) *entries*, not of gallery
  items: all entries of the ``[n_co, G_b]`` score block that are ``>= thr``, where ``thr`` is
  the ``K``-th largest entry of the block (or its minimum when the block has at most ``K``
  entries, so then every entry is a pivot). Ties at ``thr`` are all included (the set can
  exceed ``K``), and a gallery item matched by several co-occurring queries counts once per
  query: the weight is a mean over this multiset.
* The kernel is ``exp(-dt^2 / sigma^2)`` (no factor 2), ``dt`` in seconds.
* Same-camera pairs (``a == b``) are lifted too (the reference leaves the skip commented out).
* Cameras are ``0 .. num_cams - 1`` with ``num_cams = max(gallery camera) + 1`` by default;
  a query or gallery item whose camera lies outside that range gets weight 0, i.e. the
  score ``alpha * score``.
* The fusion is ``(weight + alpha) * score``, so the input should be a similarity that is
  positive for likely matches; the reference evaluator applies TLift to ``1 - d`` of the
  k-reciprocal re-ranked QAConv distances (``qaconv_rerank.qaconv_rerank_tlift``), and its
  docstring suggests ``sigmoid(score)`` for raw QAConv scores.
* Where the reference fails (a gallery camera in range with no items: indexing an empty sort;
  ``tau <= 0``: nobody co-occurs, not even the query itself) this implementation skips the
  camera, and rejects ``tau <= 0`` with a ValueError.

Reproducing the reference's numbers also needs its data: its dataset loader drops junk
detections (``pid == -1``) from the gallery before anything is scored, so they never enter
a pivot set or the re-ranking neighbourhoods. Drop them (``pids != -1``) before scoring to
match it; jreid's metrics ignore them either way.

Market-1501 time (``market1501_session_offsets``, ``market1501_times``): file names carry
camera ``cC``, session ``sS`` and a frame number counted within the session. The reference
turns them into one time line per camera by assuming each camera's sessions were recorded back
to back:

* ``offset[c][0] = 0`` and, for sessions ``s = 1 .. 5`` (zero-based; Market has ``s1`` to
  ``s6``) of cameras ``c = 0 .. 5``, ``offset[c][s] = offset[c][s-1] + M`` with ``M`` the
  largest frame number of session ``s - 1`` of camera ``c`` over train, query and gallery
  (0 when that session has no image);
* quirk: the frames of session ``s - 1`` have already been shifted by ``offset[c][s-1]``
  when ``M`` is taken (the reference shifts in place, session by session), so for ``s >= 2``
  ``M = raw_max + offset[c][s-1]`` and the offsets grow as ``2 * offset[c][s-1] + raw_max``
  (a session without images adds nothing);
* junk images (``pid == -1``) are not part of the maxima (the loader skipped them);
* cameras past 6 and sessions past 6 get no offset;
* time in seconds is ``(frame + offset[c][s]) / 25`` (25 fps).

SynthReID records one session ``s1`` with a common clock at 25 fps, so its time is
``frame / 25``: ``time_model='frame'`` in ``split_times``. The Market-1501 model gives the same
numbers there (session 1 has offset 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse

MARKET1501_FPS = 25.0
# Cameras and sessions the reference's offset table covers (6 x 6, zero-based).
MARKET1501_NUM_CAMS = 6
MARKET1501_NUM_SESSIONS = 6
TIME_MODELS = ('market1501', 'frame')

# Bound on the elements of a dense temporary (candidates, kernel and weight blocks).
_CHUNK_ELEMENTS = 1 << 22


def _as_1d(name: str, x: Any, dtype: Any, n: int | None = None) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 1:
    raise ValueError(f'{name} must be a 1-D array, got shape {x.shape}.')
  if n is not None and len(x) != n:
    raise ValueError(f'{name} has {len(x)} entries but {n} are needed (one per row/column of '
                     'the score matrix, in the same order).')
  return x.astype(dtype)


def market1501_session_offsets(camids: Any, sessions: Any, frames: Any,
                               pids: Any | None = None) -> np.ndarray:
  """The reference's per-camera session offsets in frames, int64 ``[6, 6]``.

  Pass the images of *all* splits (train, query and gallery concatenated): the reference takes
  each session's length as the largest frame number seen in any split. See the module
  docstring for the rule and its doubling quirk.

  Args:
    camids: zero-based camera ids, ``[N]`` (``ReIDSplit.camids``).
    sessions: one-based session numbers, ``[N]`` (``ReIDSplit.sessions``, ``sS`` in the name).
    frames: frame numbers within the session, ``[N]``.
    pids: optional identity ids ``[N]``; images with ``pid == -1`` (junk) are ignored, as the
      reference's loader skipped them.

  Returns:
    ``offsets[c, s]`` to add to frames of camera ``c`` and zero-based session ``s``.
  """
  camids = _as_1d('camids', camids, np.int64)
  sessions = _as_1d('sessions', sessions, np.int64, len(camids)) - 1
  frames = _as_1d('frames', frames, np.int64, len(camids))
  if pids is not None:
    keep = _as_1d('pids', pids, np.int64, len(camids)) != -1
    camids, sessions, frames = camids[keep], sessions[keep], frames[keep]
  offsets = np.zeros((MARKET1501_NUM_CAMS, MARKET1501_NUM_SESSIONS), np.int64)
  for c in range(MARKET1501_NUM_CAMS):
    for s in range(1, MARKET1501_NUM_SESSIONS):
      previous = (camids == c) & (sessions == s - 1)
      if previous.any():
        # The reference reads the frames of session s-1 after shifting them by offset[c, s-1].
        longest = int(frames[previous].max()) + (offsets[c, s - 1] if s - 1 >= 1 else 0)
      else:
        longest = 0
      offsets[c, s] = max(longest, 0) + offsets[c, s - 1]
  return offsets


def market1501_times(camids: Any, sessions: Any, frames: Any,
                     offsets: np.ndarray) -> np.ndarray:
  """Seconds ``(frame + offsets[camera, session - 1]) / 25`` of each image, float64 ``[N]``.

  Args:
    camids: zero-based camera ids ``[N]``.
    sessions: one-based sessions ``[N]``.
    frames: frame numbers ``[N]``.
    offsets: ``market1501_session_offsets`` of the whole dataset.

  Cameras or sessions outside the ``[6, 6]`` table get no offset (as in the reference).
  """
  camids = _as_1d('camids', camids, np.int64)
  sessions = _as_1d('sessions', sessions, np.int64, len(camids)) - 1
  frames = _as_1d('frames', frames, np.int64, len(camids))
  offsets = np.asarray(offsets, np.int64)
  inside = ((camids >= 0) & (camids < offsets.shape[0]) & (sessions >= 0)
            & (sessions < offsets.shape[1]))
  shift = np.zeros_like(frames)
  shift[inside] = offsets[camids[inside], sessions[inside]]
  return (frames + shift) / MARKET1501_FPS


def split_times(splits: Sequence[Any], time_model: str = 'market1501',
                fps: float = MARKET1501_FPS) -> list[np.ndarray]:
  """Seconds of every image of each split, for TLift.

  Args:
    splits: *all* splits of one dataset (e.g. ``[train, query, gallery]``), objects with
      ``camids``, ``sessions``, ``frames`` and ``pids`` (``data_pipelines.types.ReIDSplit``).
      The Market-1501 model takes session lengths over all of them, as the reference does.
    time_model: ``'market1501'``: the reference's cumulative per-camera session offsets
      (module docstring), or ``'frame'``: ``frame / fps`` on one common clock (SynthReID, whose
      cameras all record one session ``s1``).
    fps: frames per second for ``'frame'`` (the Market-1501 model is fixed at 25).

  Returns:
    One float64 array of seconds per split, in split order.
  """
  if time_model not in TIME_MODELS:
    raise ValueError(f'Unknown time_model {time_model!r}: use one of {TIME_MODELS}.')
  if time_model == 'frame':
    if fps <= 0:
      raise ValueError(f'fps must be positive, got {fps}.')
    return [np.asarray(s.frames, np.int64) / float(fps) for s in splits]
  offsets = market1501_session_offsets(
      np.concatenate([np.asarray(s.camids) for s in splits]),
      np.concatenate([np.asarray(s.sessions) for s in splits]),
      np.concatenate([np.asarray(s.frames) for s in splits]),
      np.concatenate([np.asarray(s.pids) for s in splits]))
  return [market1501_times(s.camids, s.sessions, s.frames, offsets) for s in splits]


def _kth_largest_rows(candidates: np.ndarray, k: int) -> np.ndarray:
  """The k-th largest entry of each row (rows padded with -inf have at least k real ones)."""
  return -np.partition(-candidates, k - 1, axis=1)[:, k - 1]


def _pivot_counts(block: np.ndarray, cooccur: np.ndarray, k: int) -> scipy.sparse.csr_matrix:
  """``counts[i, g]``: how often gallery column ``g`` is in query ``i``'s pivot multiset.

  ``block`` is the ``[P, G]`` score block of one query camera and one gallery camera and
  ``cooccur[i, j]`` says query ``j`` co-occurs with query ``i``. Query ``i``'s pivots are the
  entries ``(j, g)`` with ``cooccur[i, j]`` and ``block[j, g] >= thr_i`` (module docstring).

  Only each row's ``min(k, G)`` largest entries are looked at: the k-th largest entry of a union
  of rows is the k-th largest of the union of their top-k lists, and a row can hold pivots
  outside its top-k list when its k-th entry equals ``thr_i`` and is tied with an entry outside
  the list, in which case the whole row is compared.
  """
  num_p, num_g = block.shape
  width = min(k, num_g)
  if width < num_g:
    top_cols = np.argpartition(-block, width - 1, axis=1)[:, :width]
  else:
    top_cols = np.broadcast_to(np.arange(num_g), (num_p, num_g))
  top_vals = np.take_along_axis(block, top_cols, axis=1)
  top_min = top_vals.min(axis=1)
  # Rows with an entry outside their top list equal to the smallest entry in it.
  outside_tie = ((block == top_min[:, None]).sum(axis=1)
                 > (top_vals == top_min[:, None]).sum(axis=1))
  row_min = block.min(axis=1)
  n_co = cooccur.sum(axis=1)

  thr = np.empty(num_p, np.float64)
  big = n_co * num_g > k  # the block holds more than K entries: thr is its K-th largest
  rows = np.flatnonzero(big)
  chunk = max(1, _CHUNK_ELEMENTS // max(num_p * width, 1))
  for start in range(0, len(rows), chunk):
    r = rows[start:start + chunk]
    candidates = np.where(cooccur[r][:, :, None], top_vals[None], -np.inf).reshape(len(r), -1)
    thr[r] = _kth_largest_rows(candidates, k)
  small = np.flatnonzero(~big)  # at most K entries: thr is the minimum, all are pivots
  if len(small):
    thr[small] = np.where(cooccur[small], row_min[None], np.inf).min(axis=1)

  pair_i, pair_j = np.nonzero(cooccur)
  out_rows, out_cols = [], []
  pair_chunk = max(1, _CHUNK_ELEMENTS // width)
  for start in range(0, len(pair_i), pair_chunk):
    i, j = pair_i[start:start + pair_chunk], pair_j[start:start + pair_chunk]
    vals = top_vals[j]
    tie = outside_tie[j] & (top_min[j] >= thr[i])  # pivots may lie outside the top list
    hit = (vals >= thr[i][:, None]) & ~tie[:, None]
    out_rows.append(np.broadcast_to(i[:, None], hit.shape)[hit])
    out_cols.append(top_cols[j][hit])
    for a, b in zip(i[tie], j[tie]):
      cols = np.flatnonzero(block[b] >= thr[a])
      out_rows.append(np.full(len(cols), a))
      out_cols.append(cols)
  rows_all = np.concatenate(out_rows) if out_rows else np.zeros(0, np.int64)
  cols_all = np.concatenate(out_cols) if out_cols else np.zeros(0, np.int64)
  return scipy.sparse.csr_matrix(
      (np.ones(len(rows_all), np.float64), (rows_all, cols_all)), shape=(num_p, num_g))


def tlift(scores: Any, q_cams: Any, g_cams: Any, q_times: Any, g_times: Any, *,
          num_cams: int | None = None, tau: float = 100.0, sigma: float = 200.0, K: int = 10,
          alpha: float = 0.2) -> np.ndarray:
  """Temporal Lifting of a ``[num_query, num_gallery]`` similarity matrix (reference semantics).

  For query ``i`` (camera ``a``, time ``t_i``) and gallery camera ``b``::

    C_i     = {queries j of camera a : |t_j - t_i| < tau}
    thr_i   = K-th largest of scores[C_i, gallery of b]  (its minimum if it has <= K entries)
    P_i     = multiset of gallery items g of b, once per j in C_i with scores[j, g] >= thr_i
    w[i, h] = mean_{g in P_i} exp(-(t_h - t_g)^2 / sigma^2)      for every h of camera b
    out[i, h] = (w[i, h] + alpha) * scores[i, h]

  The module docstring lists the reference's quirks kept here. Cost: per gallery camera, a
  top-K pass over the score block, a sparse pivot-count matrix (about ``K`` entries per query)
  times the ``[G_b, G_b]`` time kernel, built in column chunks; memory is the output plus
  chunks of at most 4M elements, so Market-1501 (3368 x 15913) is about 0.3 GB.

  Args:
    scores: ``[Q, G]`` similarities (larger = more similar), e.g. ``1 - reranked distance``.
    q_cams: zero-based query cameras ``[Q]``.
    g_cams: zero-based gallery cameras ``[G]``.
    q_times: query times in seconds ``[Q]`` (``split_times``).
    g_times: gallery times in seconds ``[G]``.
    num_cams: cameras ``0 .. num_cams - 1`` taken part; default ``max(g_cams) + 1``.
    tau: co-occurrence window in seconds (``> 0``).
    sigma: kernel width in seconds (``> 0``).
    K: pivot entries per co-occurrence block (``>= 1``).
    alpha: regulariser of the multiplicative fusion.

  Returns:
    The lifted ``[Q, G]`` scores, float32 for float32 (or lower) input, else float64.
  """
  scores = np.asarray(scores)
  if scores.ndim != 2:
    raise ValueError(f'scores must be a [num_query, num_gallery] matrix, got shape {scores.shape}.')
  num_q, num_g = scores.shape
  q_cams = _as_1d('q_cams', q_cams, np.int64, num_q)
  g_cams = _as_1d('g_cams', g_cams, np.int64, num_g)
  q_times = _as_1d('q_times', q_times, np.float64, num_q)
  g_times = _as_1d('g_times', g_times, np.float64, num_g)
  if not (tau > 0 and sigma > 0):
    raise ValueError(f'TLift needs tau > 0 and sigma > 0 (seconds), got tau={tau}, sigma={sigma}.')
  if int(K) < 1:
    raise ValueError(f'TLift needs K >= 1, got K={K}.')
  if not (np.isfinite(q_times).all() and np.isfinite(g_times).all()):
    raise ValueError('TLift: the query/gallery times contain NaN or inf; check split_times.')
  dtype = np.result_type(scores.dtype, np.float32)
  if not np.issubdtype(dtype, np.floating):
    raise ValueError(f'scores must be real numbers, got dtype {scores.dtype}.')
  if not np.isfinite(scores).all():
    raise ValueError('TLift: the scores contain NaN or inf; check the matcher output.')
  if num_cams is None:
    num_cams = int(g_cams.max()) + 1 if num_g else 0

  out = (scores * alpha).astype(dtype)  # weight 0 wherever no camera pair applies
  query_groups = [np.flatnonzero(q_cams == c) for c in range(num_cams)]
  cooccur = [np.abs(q_times[p][:, None] - q_times[p][None, :]) < tau for p in query_groups]
  for g_cam in range(num_cams):
    g_idx = np.flatnonzero(g_cams == g_cam)
    if not len(g_idx):
      continue
    # One [Q, G_b] sparse matrix of pivot counts over the queries of every camera.
    coo_rows, coo_cols, coo_data = [], [], []
    for p_idx, co in zip(query_groups, cooccur):
      if not len(p_idx):
        continue
      counts = _pivot_counts(scores[np.ix_(p_idx, g_idx)].astype(np.float64), co, int(K)).tocoo()
      coo_rows.append(p_idx[counts.row])
      coo_cols.append(counts.col)
      coo_data.append(counts.data)
    if not coo_rows:
      continue
    pivots = scipy.sparse.csr_matrix(
        (np.concatenate(coo_data), (np.concatenate(coo_rows), np.concatenate(coo_cols))),
        shape=(num_q, len(g_idx)))
    num_pivots = np.asarray(pivots.sum(axis=1)).ravel()
    inverse = np.divide(1.0, num_pivots, out=np.zeros_like(num_pivots), where=num_pivots > 0)
    t = g_times[g_idx]
    chunk = max(1, _CHUNK_ELEMENTS // max(num_q, len(g_idx)))
    for start in range(0, len(g_idx), chunk):
      cols = slice(start, start + chunk)
      kernel = np.exp(-np.square(t[:, None] - t[None, cols]) / sigma ** 2)  # [G_b, chunk]
      weight = np.asarray(pivots @ kernel) * inverse[:, None]
      out[:, g_idx[cols]] = ((weight + alpha) * scores[:, g_idx[cols]]).astype(dtype)
  return out
