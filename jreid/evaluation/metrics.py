"""Re-ID ranking metrics: CMC, mAP and mINP under the Market-1501 / FastReID protocol.

Per query, the gallery is sorted by ascending distance (ties broken by gallery index: stable
sort), then

* gallery items with the query's identity *and* camera are removed (they are trivial matches);
* junk gallery items (pid ``-1``) are removed. FastReID drops them when it loads the dataset, so
  removing them here gives the same numbers on galleries that still contain them. Distractors
  (pid ``0``) stay in the ranking as ordinary non-matches;
* a query left with no correct match is skipped: it counts in neither the CMC nor the mAP/mINP
  denominators, only in ``num_skipped``. A query with pid ``-1`` can only match junk items, which
  are removed, so it is always skipped.

For a valid query with hits at 1-based ranks ``r_1 < ... < r_n`` of the remaining list:
``CMC(k) = [r_1 <= k]``, ``AP = mean_i(i / r_i)`` and ``INP = n / r_n`` (FastReID's
``num_rel / (max_pos_idx + 1)``). The reported curves are means over valid queries; the CMC is
computed up to ``min(max_rank, num_gallery)``.

The fast path never sorts a gallery row. The rank of a correct match ``j`` of query ``i`` is one
plus the number of kept items that a stable argsort puts before it, i.e. with
``(d[i, k], k) < (d[i, j], j)``; only items with ``d[i, k] <= max_j d[i, j]`` (up to the last
correct match) can do so. Per chunk of queries: the correct matches come from an index of the
gallery by identity (no ``[chunk, g]`` id comparisons), one comparison pass finds the candidates
below each query's last match, and one ``np.sort`` of unique int64 keys
``(row, order-preserving code of the float32 distance, column)`` over the candidates gives every
match's exact rank, ties included. Cost: one pass over the distances plus a sort of the
candidates (few for a good model; bounded by ``_CANDIDATES_PER_STEP`` per step, so a bad model
costs time, not memory). CMC(1..max_rank) needs the first match's rank, AP all of them and INP
the last one. Memory is ``O(chunk x num_gallery)`` bytes; ``evaluate_features`` never builds
the full matrix.

``protocol='cuhk03'`` is the CUHK03 single-gallery-shot protocol (``evaluate_cuhk03``) and
``roc=True`` adds the verification ROC (``jreid.evaluation.roc``) from the same pass.
"""

from collections.abc import Iterable
import dataclasses

import jax
import numpy as np

from jreid.evaluation import distance
from jreid.evaluation import roc as roc_lib

JUNK_PID = -1
PROTOCOLS = ('market', 'cuhk03')

# Bound on the candidate (row, column) pairs sorted at once by the counting ranker.
# About 100 bytes of temporaries per candidate: 4M candidates, 0.4 GB (1 << 24 measured 4.1 GB
# peak RSS end to end at MSMT17 scale, against 1.7 GB for the distance matmul alone).
_CANDIDATES_PER_STEP = 1 << 22

_TABLE_COLUMNS = (('Rank-1', 'rank1'), ('Rank-5', 'rank5'), ('Rank-10', 'rank10'),
                  ('mAP', 'mAP'), ('mINP', 'mINP'))


@dataclasses.dataclass
class RankResult:
  """Ranking metrics of one query/gallery evaluation; all values are fractions in [0, 1].

  Attributes:
    cmc: float64 ``[min(max_rank, num_gallery)]``; ``cmc[k - 1]`` is the fraction of valid
      queries with a correct match in the top k.
    all_ap: float64 ``[num_valid]`` average precision of each valid query, in query order.
    all_inp: float64 ``[num_valid]`` inverse negative penalty of each valid query.
    num_valid: number of queries with at least one correct match.
    num_skipped: number of queries without any (excluded from every mean).
  """

  cmc: np.ndarray
  all_ap: np.ndarray
  all_inp: np.ndarray
  num_valid: int
  num_skipped: int
  roc: roc_lib.RocResult | None = None

  @property
  def mAP(self) -> float:  # pylint: disable=invalid-name
    return float(np.mean(self.all_ap))

  @property
  def mINP(self) -> float:  # pylint: disable=invalid-name
    return float(np.mean(self.all_inp))

  def rank(self, k: int) -> float:
    """Rank-k accuracy ``cmc[k - 1]``.

    Beyond the computed length the value is only known when the curve has already reached 1
    (always the case when ``max_rank`` was clipped to the gallery size); otherwise this raises.
    """
    if k < 1:
      raise ValueError(f'Rank-k needs k >= 1, got {k}.')
    if k <= len(self.cmc):
      return float(self.cmc[k - 1])
    if self.cmc[-1] == 1.0:
      return 1.0
    raise ValueError(
        f'Rank-{k} was not computed: the CMC curve stops at rank {len(self.cmc)}. '
        f'Evaluate with max_rank >= {k}.')

  def to_dict(self) -> dict[str, float | int]:
    """Rank-1/5/10, mAP and mINP as python floats (fractions, not percent), plus query counts
    and, when the ROC was computed, ``TPR@FPR=1e-04`` etc."""
    out = {
        'rank1': self.rank(1),
        'rank5': self.rank(5),
        'rank10': self.rank(10),
        'mAP': self.mAP,
        'mINP': self.mINP,
        'num_valid_queries': int(self.num_valid),
        'num_skipped_queries': int(self.num_skipped),
    }
    if self.roc is not None:
      out.update(self.roc.to_dict())
    return out


def sorted_hits(
    dist_block: np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
  """Sorts each row of a ``[n, g]`` distance block and marks the gallery items in that order.

  Returns:
    ``(hits, kept)``, two bool ``[n, g]`` arrays in each query's ranking order: ``kept`` is False
    for removed items (same pid and camera as the query, or junk); ``hits`` marks kept items
    with the query's pid.
  """
  same_pid = g_pids[None, :] == q_pids[:, None]
  kept = ~(same_pid & (g_camids[None, :] == q_camids[:, None])) & (g_pids != JUNK_PID)[None, :]
  # 0 = removed, 1 = kept miss, 2 = hit: one uint8 gather instead of gathering pids and cameras.
  status = kept.astype(np.uint8) + (same_pid & kept).astype(np.uint8)
  order = np.argsort(dist_block, axis=1, kind='stable')
  ranked = np.take_along_axis(status, order, axis=1)
  return ranked == 2, ranked != 0


def query_scores(
    hits: np.ndarray, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Per-query ranking scores from the ranked hit matrix of a chunk of queries.

  Args:
    hits: bool ``[n, m]``, True where the item ranked at that column is a correct match.
    kept: bool ``[n, m]``, True for the items that count in the ranking (``hits`` implies
      ``kept``); removed items do not take up a rank.

  Returns:
    ``(valid, first_rank, ap, inp)``: ``valid`` bool ``[n]`` (at least one hit); for the valid
    queries only, in order: the 1-based rank of the first hit (the query's CMC is
    ``[first_rank <= k]``), the average precision and the inverse negative penalty.
  """
  num_hits = hits.sum(axis=1)
  valid = num_hits > 0
  # 1-based position of every item among the kept items of its row.
  position = np.cumsum(kept, axis=1, dtype=np.int32)
  rows, cols = np.nonzero(hits)  # row-major: each row's hits in ranking order.
  hit_rank = position[rows, cols]
  row_start = np.cumsum(num_hits) - num_hits
  hit_ordinal = np.arange(1, len(rows) + 1) - row_start[rows]  # i for the i-th hit of its row.
  precision_sum = np.bincount(rows, weights=hit_ordinal / hit_rank, minlength=hits.shape[0])
  first = row_start[valid]
  last = first + num_hits[valid] - 1
  ap = precision_sum[valid] / num_hits[valid]
  inp = num_hits[valid] / hit_rank[last]
  return valid, hit_rank[first], ap, inp


def _check_ids(q_pids, g_pids, q_camids, g_camids, num_query: int, num_gallery: int):
  """Returns the id arrays as int32 numpy arrays after checking their lengths."""
  arrays = []
  for name, ids, expected in (('q_pids', q_pids, num_query), ('g_pids', g_pids, num_gallery),
                              ('q_camids', q_camids, num_query),
                              ('g_camids', g_camids, num_gallery)):
    ids = np.asarray(ids)
    if ids.shape != (expected,):
      side = 'query' if name.startswith('q') else 'gallery'
      raise ValueError(
          f'{name} has shape {ids.shape} but there are {expected} {side} items: pass one id '
          f'per {side} item, in the same order as the {side} features / distance columns.')
    arrays.append(ids.astype(np.int32))
  return arrays


class _GalleryIndex:
  """The gallery grouped by identity, to list each query's same-identity items directly."""

  def __init__(self, g_pids: np.ndarray, g_camids: np.ndarray):
    self.g_pids = g_pids
    self.g_camids = g_camids
    self.order = np.argsort(g_pids, kind='stable')  # by pid, then gallery index
    self.sorted_pids = g_pids[self.order]
    self.junk_cols = np.flatnonzero(g_pids == JUNK_PID)
    self.is_junk = g_pids == JUNK_PID

  def same_pid_pairs(self, q_pids: np.ndarray, q_camids: np.ndarray):
    """``(rows, cols, same_cam)``: every gallery item with the query's (non-junk) identity,
    row-major with ascending columns, and whether it was seen by the query's camera."""
    start = np.searchsorted(self.sorted_pids, q_pids, 'left')
    end = np.searchsorted(self.sorted_pids, q_pids, 'right')
    end = np.where(q_pids == JUNK_PID, start, end)
    counts = end - start
    rows = np.repeat(np.arange(len(q_pids)), counts)
    offsets = np.repeat(start - (np.cumsum(counts) - counts), counts)
    cols = self.order[np.arange(int(counts.sum())) + offsets]
    return rows, cols, self.g_camids[cols] == q_camids[rows]


def _first_ap_inp(rows: np.ndarray, ranks: np.ndarray, n: int):
  """``(valid, first_rank, ap, inp)`` as ``query_scores`` from the ranks of every hit."""
  order = np.lexsort((ranks, rows))
  rows, ranks = rows[order], ranks[order]
  num_hits = np.bincount(rows, minlength=n)
  valid = num_hits > 0
  row_start = np.cumsum(num_hits) - num_hits
  ordinal = np.arange(1, len(rows) + 1) - row_start[rows]
  precision_sum = np.bincount(rows, weights=ordinal / ranks, minlength=n)
  first = row_start[valid]
  last = first + num_hits[valid] - 1
  return (valid, ranks[first], precision_sum[valid] / num_hits[valid],
          num_hits[valid] / ranks[last])


def _hit_ranks(block: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray,
               gallery: _GalleryIndex, hit_rows: np.ndarray, hit_cols: np.ndarray) -> np.ndarray:
  """1-based rank among the kept items of each hit, as a stable argsort of its row gives it."""
  n, num_gallery = block.shape
  ranks = np.zeros(len(hit_rows), np.int64)
  if not len(hit_rows):
    return ranks
  col_bits = max(1, int(num_gallery - 1).bit_length())
  if col_bits > 31:
    raise ValueError(f'Galleries of more than 2**31 items are not supported, got {num_gallery}.')
  hit_dist = block[hit_rows, hit_cols]
  last = np.full(n, -np.inf, np.float32)
  np.maximum.at(last, hit_rows, hit_dist)
  # Rows go in groups whose candidates fit in one sort step and whose row index fits in the key.
  max_rows = 1 << (32 - col_bits)
  counts = np.count_nonzero(block <= last[:, None], axis=1)
  group_of_row = np.zeros(n, np.int64)
  total, group, rows_in_group = 0, 0, 0
  for i, c in enumerate(counts):  # n is a chunk of queries: a short loop
    if rows_in_group and (total + c > _CANDIDATES_PER_STEP or rows_in_group >= max_rows):
      group, total, rows_in_group = group + 1, 0, 0
    group_of_row[i] = group
    total += c
    rows_in_group += 1
  hit_group = group_of_row[hit_rows]
  shift_code = np.uint64(col_bits)
  shift_row = np.uint64(32 + col_bits)
  for g in range(group + 1):
    rows = np.flatnonzero(group_of_row == g)
    r0 = rows[0]
    sub = block[rows[0]:rows[-1] + 1]
    c_rows, c_cols = np.divmod(np.flatnonzero(sub <= last[rows[0]:rows[-1] + 1, None]),
                               num_gallery)
    q_rows = c_rows + r0
    kept = ~gallery.is_junk[c_cols] & (
        (gallery.g_pids[c_cols] != q_pids[q_rows]) | (gallery.g_camids[c_cols] != q_camids[q_rows]))
    c_rows, c_cols = c_rows[kept], c_cols[kept]
    keys = ((c_rows.astype(np.uint64) << shift_row)
            | (roc_lib.ordered_code(sub[c_rows, c_cols]).astype(np.uint64) << shift_code)
            | c_cols.astype(np.uint64))
    keys.sort()
    in_group = np.flatnonzero(hit_group == g)
    h_rows = hit_rows[in_group] - r0
    h_keys = ((h_rows.astype(np.uint64) << shift_row)
              | (roc_lib.ordered_code(hit_dist[in_group]).astype(np.uint64) << shift_code)
              | hit_cols[in_group].astype(np.uint64))
    position = np.searchsorted(keys, h_keys)
    row_start = np.searchsorted(keys, h_rows.astype(np.uint64) << shift_row)
    ranks[in_group] = position - row_start + 1
  return ranks


def _rank_chunk(block, q_pids, q_camids, gallery: _GalleryIndex, roc=None):
  """``(valid, first_rank, ap, inp)`` of a chunk of queries by counting (module docstring)."""
  rows, cols, same_cam = gallery.same_pid_pairs(q_pids, q_camids)
  hit_rows, hit_cols = rows[~same_cam], cols[~same_cam]
  if roc is not None:
    roc.add(block, q_pids, gallery.junk_cols, rows, cols, hit_rows, hit_cols)
  ranks = _hit_ranks(block, q_pids, q_camids, gallery, hit_rows, hit_cols)
  return _first_ap_inp(hit_rows, ranks, len(block))


def _check_block(start: int, block: np.ndarray) -> None:
  if np.isnan(block.max(axis=1)).any():
    raise ValueError(
        f'The distances of queries {start}..{start + len(block) - 1} contain NaN: check the '
        'features for NaN/inf (a diverged model or a failed checkpoint restore).')


def _evaluate_blocks(
    blocks: Iterable[tuple[int, np.ndarray]],
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
    num_gallery: int,
    roc: bool = False,
    fpr_targets: tuple[float, ...] = roc_lib.DEFAULT_FPRS,
) -> RankResult:
  """Ranks ``(start, distance block)`` chunks of queries and reduces them to a RankResult."""
  if max_rank < 1:
    raise ValueError(f'max_rank must be >= 1, got {max_rank}.')
  max_rank = min(max_rank, num_gallery)
  gallery = _GalleryIndex(g_pids, g_camids)
  accumulator = None
  if roc:
    accumulator = roc_lib.RocAccumulator(
        *roc_lib.pair_counts(q_pids, q_camids, g_pids, g_camids), fpr_targets=fpr_targets)
  first_ranks, aps, inps = [], [], []
  num_skipped = 0
  for start, block in blocks:
    block = np.asarray(block, np.float32)
    _check_block(start, block)
    rows = slice(start, start + len(block))
    valid, first_rank, ap, inp = _rank_chunk(block, q_pids[rows], q_camids[rows], gallery,
                                             accumulator)
    num_skipped += int(np.sum(~valid))
    first_ranks.append(first_rank)
    aps.append(ap)
    inps.append(inp)

  first_rank = np.concatenate(first_ranks) if first_ranks else np.zeros(0, np.int64)
  num_valid = len(first_rank)
  if num_valid == 0:
    raise ValueError(
        f'None of the {num_skipped} queries has a correct match in the gallery (after removing '
        'same-camera matches and junk): check that query and gallery ids come from the same '
        'dataset and that the camera ids are right.')
  # Queries first hit at rank r count in cmc[r - 1:]; ranks past max_rank land in a spill bin.
  counts = np.bincount(np.minimum(first_rank, max_rank + 1) - 1, minlength=max_rank + 1)
  cmc = np.cumsum(counts[:max_rank]) / num_valid
  return RankResult(cmc=cmc.astype(np.float64), all_ap=np.concatenate(aps),
                    all_inp=np.concatenate(inps), num_valid=num_valid, num_skipped=num_skipped,
                    roc=accumulator.result() if accumulator is not None else None)


def _cuhk03_blocks(blocks, q_pids, g_pids, q_camids, g_camids, max_rank, num_gallery,
                   num_repeats, seed) -> RankResult:
  """CUHK03 single-gallery-shot CMC (see ``evaluate_cuhk03``); AP/INP on the full ranking."""
  if max_rank < 1:
    raise ValueError(f'max_rank must be >= 1, got {max_rank}.')
  if num_repeats < 1:
    raise ValueError(f'num_repeats must be >= 1, got {num_repeats}.')
  max_rank = min(max_rank, num_gallery)
  rng = np.random.default_rng(seed)
  cmc_sum = np.zeros(max_rank)
  aps, inps = [], []
  num_valid = num_skipped = 0
  for start, block in blocks:
    block = np.asarray(block, np.float32)
    _check_block(start, block)
    rows = slice(start, start + len(block))
    hits, kept = sorted_hits(block, q_pids[rows], q_camids[rows], g_pids, g_camids)
    order = np.argsort(block, axis=1, kind='stable')
    for i in range(len(block)):
      row_hits = hits[i][kept[i]]
      if not row_hits.any():
        num_skipped += 1
        continue
      ranked_pids = g_pids[order[i]][kept[i]]
      # Identities in order of first appearance in the ranking, each with its positions.
      pids, first_pos, inverse = np.unique(ranked_pids, return_index=True, return_inverse=True)
      by_appearance = np.argsort(first_pos)
      draws = rng.random((num_repeats, len(pids)))
      position_order = np.argsort(inverse, kind='stable')  # positions grouped by identity
      group_counts = np.bincount(inverse, minlength=len(pids))
      group_start = np.cumsum(group_counts) - group_counts
      ident = by_appearance  # identity index of each draw column
      choice = np.floor(draws * group_counts[ident]).astype(np.int64)
      sampled = position_order[group_start[ident] + choice]  # [repeats, identities] positions
      own = np.flatnonzero(ident == np.searchsorted(pids, q_pids[start + i]))[0]
      rank = 1 + np.sum(sampled < sampled[:, own:own + 1], axis=1)
      cmc_sum += np.mean(rank[:, None] <= np.arange(1, max_rank + 1)[None, :], axis=0)
      num_valid += 1
    valid, _, ap, inp = query_scores(hits, kept)
    aps.append(ap)
    inps.append(inp)
  if num_valid == 0:
    raise ValueError(
        f'None of the {num_skipped} queries has a correct match in the gallery (after removing '
        'same-camera matches and junk): check the query and gallery ids and cameras.')
  return RankResult(cmc=cmc_sum / num_valid, all_ap=np.concatenate(aps),
                    all_inp=np.concatenate(inps), num_valid=num_valid, num_skipped=num_skipped)


def evaluate_rank(
    distmat: np.ndarray | jax.Array | tuple,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    chunk_size: int = 1024,
    protocol: str = 'market',
    roc: bool = False,
    fpr_targets: tuple[float, ...] = roc_lib.DEFAULT_FPRS,
    num_repeats: int = 10,
    seed: int = 0,
) -> RankResult:
  """CMC, mAP and mINP of a ``[num_query, num_gallery]`` distance matrix (smaller = closer).

  Args:
    distmat: query-gallery distances, or a tuple ``(query_feats, gallery_feats[, metric])``
      evaluated by ``evaluate_features`` without building the matrix.
    q_pids, g_pids: identity of each query / gallery item (``-1`` = junk, ``0`` = distractor).
    q_camids, g_camids: camera of each query / gallery item.
    max_rank: length of the CMC curve, clipped to the gallery size.
    chunk_size: queries ranked at once; memory is ``O(chunk_size x num_gallery)``.
    protocol: ``'market'`` (module docstring) or ``'cuhk03'`` (``evaluate_cuhk03``).
    roc: also compute the verification ROC (``result.roc``, ``jreid.evaluation.roc``); Market
      protocol only.
    fpr_targets: FPRs at which the ROC's TPR is reported.
    num_repeats, seed: CUHK03 gallery sampling repeats and seed.

  Raises:
    ValueError: on mismatched shapes, NaN distances, or when no query has a valid match.
  """
  if isinstance(distmat, tuple):
    if len(distmat) not in (2, 3):
      raise ValueError('evaluate_rank takes a distance matrix or a tuple (query_feats, '
                       f'gallery_feats[, metric]), got a tuple of {len(distmat)} items.')
    return evaluate_features(*distmat[:2], q_pids, g_pids, q_camids, g_camids,
                             metric=distmat[2] if len(distmat) == 3 else 'cosine',
                             max_rank=max_rank, chunk_size=chunk_size, protocol=protocol,
                             roc=roc, fpr_targets=fpr_targets, num_repeats=num_repeats,
                             seed=seed)
  distmat = np.asarray(distmat)
  if distmat.ndim != 2:
    raise ValueError(f'distmat must be a 2-D [num_query, num_gallery] array, got shape '
                     f'{distmat.shape}.')
  if chunk_size < 1:
    raise ValueError(f'chunk_size must be a positive number of queries, got {chunk_size}.')
  num_query, num_gallery = distmat.shape
  ids = _check_ids(q_pids, g_pids, q_camids, g_camids, num_query, num_gallery)
  blocks = ((start, distmat[start:start + chunk_size])
            for start in range(0, num_query, chunk_size))
  return _dispatch(blocks, ids, max_rank, num_gallery, protocol, roc, fpr_targets, num_repeats,
                   seed)


def _dispatch(blocks, ids, max_rank, num_gallery, protocol, roc, fpr_targets, num_repeats, seed):
  if protocol not in PROTOCOLS:
    raise ValueError(f'Unknown evaluation protocol {protocol!r}: use one of {PROTOCOLS}.')
  if protocol == 'cuhk03':
    if roc:
      raise ValueError("roc=True is computed with protocol='market' only: evaluate the ROC "
                       'in a separate call.')
    return _cuhk03_blocks(blocks, *ids, max_rank=max_rank, num_gallery=num_gallery,
                          num_repeats=num_repeats, seed=seed)
  return _evaluate_blocks(blocks, *ids, max_rank=max_rank, num_gallery=num_gallery, roc=roc,
                          fpr_targets=fpr_targets)


def evaluate_cuhk03(
    distmat: np.ndarray | jax.Array,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    num_repeats: int = 10,
    seed: int = 0,
    chunk_size: int = 1024,
) -> RankResult:
  """CUHK03 single-gallery-shot protocol (the classic ``eval_cuhk03`` of torchreid).

  Per query, after removing same-identity same-camera items and junk: ``num_repeats`` times,
  keep one gallery item per identity drawn uniformly among that identity's kept items; the
  query's CMC is the mean over repeats of ``[rank of its own identity's sample <= k]``, ranks
  counted among the sampled items. AP and INP use the full (unsampled) ranking, as torchreid.

  Draws (reproducible, ``np.random.default_rng(seed)``): for each valid query in order, one
  ``rng.random((num_repeats, num_identities))`` with identities in order of first appearance in
  the query's ranking; item ``floor(u * count)`` (in ranking order) of an identity is taken.
  torchreid draws with ``np.random.choice`` in the same identity order, so its numbers differ by
  sampling noise only.
  """
  return evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank,
                       chunk_size=chunk_size, protocol='cuhk03', num_repeats=num_repeats,
                       seed=seed)


def evaluate_features(
    query_feats: np.ndarray | jax.Array,
    gallery_feats: np.ndarray | jax.Array,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    metric: str = 'cosine',
    max_rank: int = 50,
    chunk_size: int = 1024,
    protocol: str = 'market',
    roc: bool = False,
    fpr_targets: tuple[float, ...] = roc_lib.DEFAULT_FPRS,
    num_repeats: int = 10,
    seed: int = 0,
) -> RankResult:
  """``evaluate_rank(compute_distance(query_feats, gallery_feats, metric), ...)`` in chunks.

  Each chunk of ``chunk_size`` queries has its distances computed on the device (JAX) and is
  ranked on the host by counting (module docstring) while the device computes the next one; the
  full ``q x g`` matrix is never built.

  Args:
    query_feats, gallery_feats: ``[num_query, dim]`` and ``[num_gallery, dim]`` features.
    q_pids, g_pids, q_camids, g_camids: as in ``evaluate_rank``.
    metric: ``'cosine'`` or ``'euclidean'`` (see ``jreid.evaluation.distance``).
    max_rank: length of the CMC curve, clipped to the gallery size.
    chunk_size: queries per chunk; memory is ``O(chunk_size x num_gallery)``.
    protocol, roc, fpr_targets, num_repeats, seed: as in ``evaluate_rank``.
  """
  num_query, num_gallery = np.shape(query_feats)[0], np.shape(gallery_feats)[0]
  ids = _check_ids(q_pids, g_pids, q_camids, g_camids, num_query, num_gallery)
  blocks = distance.iter_distance_blocks(query_feats, gallery_feats, metric, chunk_size)
  return _dispatch(blocks, ids, max_rank, num_gallery, protocol, roc, fpr_targets, num_repeats,
                   seed)


def format_results_table(rows: dict[str, dict[str, float]], name_header: str = 'Model') -> str:
  """A markdown table ``name | Rank-1 | Rank-5 | Rank-10 | mAP | mINP`` in percent.

  Args:
    rows: row name -> metrics dict as from ``RankResult.to_dict()`` (fractions in [0, 1]);
      a missing or None metric prints as ``-``, other keys are ignored.
    name_header: header of the first column.
  """
  header = [name_header] + [title for title, _ in _TABLE_COLUMNS]
  body = []
  for name, metrics in rows.items():
    cells = [str(name)]
    for _, key in _TABLE_COLUMNS:
      value = metrics.get(key)
      if value is None:
        cells.append('-')
        continue
      if not 0.0 <= value <= 1.0:
        raise ValueError(
            f'format_results_table expects fractions in [0, 1], got {key}={value} in row '
            f'{name!r}: divide percentages by 100.')
      cells.append(f'{100.0 * value:.2f}')
    body.append(cells)
  widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]

  def line(cells: list[str]) -> str:
    padded = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
    return '| ' + ' | '.join(padded) + ' |'

  rule = '|:' + '-' * (widths[0] + 1) + '|' + '|'.join('-' * (w + 1) + ':' for w in widths[1:])
  return '\n'.join([line(header), rule + '|'] + [line(cells) for cells in body])
