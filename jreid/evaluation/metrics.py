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
``(d[i, k], k) < (d[i, j], j)``. Per chunk of queries the correct matches come from an index of
the gallery by identity (no ``[chunk, g]`` id comparisons); junk columns are NaN in the block
(set in the jitted distance step by ``evaluate_features``), so no comparison counts them; the
same-identity same-camera items are few and are subtracted afterwards. Per query row, with its
matches sorted by ``(distance, column)``, each match's count comes either from one counting pass
over the row (``count(d[:j] <= t) + count(d[j:] < t)``: ties before the match's column count,
after it not), or from a sorted copy of the row's entries up to a bound (a binary search, and a
look at the row for the rare exact ties). The ranker picks, per row, how many of the deepest
matches to count by passes and sorts the entries below the rest; a sorted sample of the row
estimates each plan's cost. An easy query costs one pass and a small sort; a hard one (matches
deep in the ranking) at most about one pass per match. CMC(1..max_rank) needs
the first match's rank, AP all of them and INP the last one. Chunks are ranked in parallel
threads (``distance.default_workers()``: numpy's loops release the GIL); memory is
``O(chunk x num_gallery)`` per thread, and ``evaluate_features`` never builds the full matrix.

``protocol='cuhk03'`` is the CUHK03 single-gallery-shot protocol (``evaluate_cuhk03``) and
``roc=True`` adds the verification ROC (``jreid.evaluation.roc``) from the same pass.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jreid.evaluation import distance
from jreid.evaluation import roc as roc_lib

JUNK_PID = -1
PROTOCOLS = ('market', 'cuhk03')

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


# Costs of the ways the ranker counts a row's entries below a hit, in counting passes over the
# row (compare + count, the cheapest step); ``f`` is the fraction of the row taken. Extracting
# the entries below a bound: a fixed part plus a part that grows with the mask's mixing (branch
# mispredictions) and one per entry; sorting: per sorted entry, more for a whole row. Fitted on
# the 2-core CPU (benchmarks/eval_scale.py); they only choose between plans that give the same
# counts.
_EXTRACT_FIXED = 2.5
_EXTRACT_MIXING = 100.0  # per unit of f, up to _EXTRACT_MIXING_MAX
_EXTRACT_MIXING_MAX = 5.0
_EXTRACT_ENTRY = 3.0
_SORT_ENTRY = 22.0
_SORT_ROW = 31.0
# Entries of each row sorted per chunk to estimate how many entries lie below each hit.
_SAMPLE_SIZE = 256


def _sort_cost(fraction: np.ndarray) -> np.ndarray:
  """Passes to extract and sort the ``fraction`` of a row below a bound (or sort it all)."""
  extract = (_EXTRACT_FIXED + np.minimum(_EXTRACT_MIXING * fraction, _EXTRACT_MIXING_MAX)
             + (_EXTRACT_ENTRY + _SORT_ENTRY) * fraction)
  return np.minimum(extract, _SORT_ROW)


def _row_counts(x: np.ndarray, values: np.ndarray, cols: np.ndarray, top: int,
                extract: bool, buf: np.ndarray) -> np.ndarray:
  """``#{k : (x[k], k) < (values[s], cols[s])}`` for one row's hits sorted by
  ``(value, column)``; NaN entries (masked junk) never count.

  The hits from ``top`` on are counted with one pass over the row each; the first ``top`` are
  read off a sorted copy of the entries up to hit ``top - 1`` (``extract``) or of the row.
  """
  g, m = len(x), len(values)
  counts = np.empty(m, np.int64)
  for s in range(top, m):
    # Stable order: equal entries before the hit's column come first, those after it do not.
    j, v = cols[s], values[s]
    counts[s] = (np.count_nonzero(np.less_equal(x[:j], v, out=buf[:j]))
                 + np.count_nonzero(np.less(x[j:], v, out=buf[j:g])))
  if top:
    if extract:
      ranked = np.compress(np.less_equal(x, values[top - 1], out=buf[:g]), x)
      ranked.sort()
    else:
      ranked = np.sort(x)  # NaN sort last
    lo = np.searchsorted(ranked, values[:top], 'left')
    counts[:top] = lo
    tied = np.flatnonzero(np.searchsorted(ranked, values[:top], 'right') - lo > 1)
    for s in tied:  # other entries at the hit's distance: those in earlier columns come first
      counts[s] += np.count_nonzero(x[:cols[s]] == values[s])
  return counts


def _plans(block: np.ndarray, rows: np.ndarray, values: np.ndarray, bounds: np.ndarray):
  """Per row with hits, ``(top, extract)`` of the cheapest plan of ``_row_counts``.

  The plan "sort up to hit ``s``, count the deeper ones by passes" costs
  ``_sort_cost(f_s) + (m - 1 - s)`` passes, "count all" ``m``; ``f_s`` is estimated from a
  sorted sample of each row. Hits are sorted by ``(row, value)``; ``bounds`` are row offsets.
  """
  n, g = block.shape
  sample_cols = np.unique(np.linspace(0, g - 1, min(_SAMPLE_SIZE, g)).astype(np.int64))
  # One searchsorted for all rows: (row, order-preserving code) keys of the sorted samples.
  codes = roc_lib.ordered_code(np.sort(block[:, sample_cols], axis=1)).astype(np.int64)
  codes += np.arange(n, dtype=np.int64)[:, None] << 32
  hit_keys = roc_lib.ordered_code(values).astype(np.int64) + (rows.astype(np.int64) << 32)
  fraction = (np.searchsorted(codes.ravel(), hit_keys, 'right') - rows * len(sample_cols)) / len(
      sample_cols)
  m = np.diff(bounds)
  within = np.arange(len(rows)) - bounds[rows]
  cost = _sort_cost(fraction) + (m[rows] - 1 - within)
  has = np.flatnonzero(m)
  best = np.minimum.reduceat(cost, bounds[has])
  # The first hit (lowest s) reaching the minimum: top = s + 1.
  at_best = np.flatnonzero(cost <= best[np.searchsorted(has, rows)])
  first_best = np.full(n, len(rows), np.int64)
  np.minimum.at(first_best, rows[at_best], within[at_best])
  top = np.where(best < m[has], first_best[has] + 1, 0)
  chosen = bounds[has] + np.maximum(top - 1, 0)
  return has, top, _sort_cost(fraction[chosen]) < _SORT_ROW


def _pairs_before(rows, values, cols, other_rows, other_values, other_cols) -> np.ndarray:
  """For each ``(row, value, col)``, the number of other triples of the same row that sort
  before it by ``(value, col)``. Rows are grouped so that ``(row, value code, col)`` fits in
  one uint64 sort key."""
  out = np.zeros(len(rows), np.int64)
  if not len(rows) or not len(other_rows):
    return out
  num_cols = int(max(cols.max(), other_cols.max())) + 1
  col_bits = max(1, (num_cols - 1).bit_length())
  rows_per_group = 1 << (32 - col_bits)
  shift_code, shift_row = np.uint64(col_bits), np.uint64(32 + col_bits)

  def keys(r, v, c):
    return ((r.astype(np.uint64) << shift_row)
            | (roc_lib.ordered_code(v).astype(np.uint64) << shift_code) | c.astype(np.uint64))

  for first in range(0, int(max(rows.max(), other_rows.max())) + 1, rows_per_group):
    sel = (rows >= first) & (rows < first + rows_per_group)
    other = (other_rows >= first) & (other_rows < first + rows_per_group)
    if not sel.any() or not other.any():
      continue
    other_keys = np.sort(keys(other_rows[other] - first, other_values[other], other_cols[other]))
    r = rows[sel] - first
    out[sel] = (np.searchsorted(other_keys, keys(r, values[sel], cols[sel]))
                - np.searchsorted(other_keys, r.astype(np.uint64) << shift_row))
  return out


def _hit_ranks(block: np.ndarray, hit_rows: np.ndarray, hit_cols: np.ndarray,
               removed_rows: np.ndarray, removed_cols: np.ndarray,
               plan: int | None = None) -> np.ndarray:
  """1-based rank among the kept items of each hit, as a stable argsort of its row gives it.

  ``block`` has its junk columns set to NaN (never counted); ``removed_*`` are the same-pid
  same-camera pairs, subtracted from the counts.
  """
  n, num_gallery = block.shape
  ranks = np.zeros(len(hit_rows), np.int64)
  if not len(hit_rows):
    return ranks
  if num_gallery >= 1 << 31:
    raise ValueError(f'Galleries of more than 2**31 items are not supported, got {num_gallery}.')
  hit_dist = block[hit_rows, hit_cols]
  order = np.lexsort((hit_cols, hit_dist, hit_rows))
  rows, values, cols = hit_rows[order], hit_dist[order], hit_cols[order]
  bounds = np.searchsorted(rows, np.arange(n + 1))
  has, top, extract = _plans(block, rows, values, bounds)
  if plan is not None:  # tests: the same plan for every row
    top = np.clip(np.diff(bounds)[has] - plan, 0, None)
  buf = np.empty(num_gallery, bool)
  counts = np.empty(len(rows), np.int64)
  for i, t, e in zip(has, top, extract):
    a, b = bounds[i], bounds[i + 1]
    counts[a:b] = _row_counts(block[i], values[a:b], cols[a:b], t, e, buf)
  counts -= _pairs_before(rows, values, cols, removed_rows, block[removed_rows, removed_cols],
                          removed_cols)
  ranks[order] = counts + 1
  return ranks


def _rank_chunk(block, q_pids, q_camids, gallery: _GalleryIndex, roc=None,
                junk_masked: bool = False, plan: int | None = None):
  """``(valid, first_rank, ap, inp)`` of a chunk of queries by counting (module docstring).

  Unless ``junk_masked`` (junk columns already NaN), junk columns are masked in a copy.
  """
  rows, cols, same_cam = gallery.same_pid_pairs(q_pids, q_camids)
  hit_rows, hit_cols = rows[~same_cam], cols[~same_cam]
  if roc is not None:
    roc.add(block, q_pids, gallery.junk_cols, rows, cols, hit_rows, hit_cols)
  if not junk_masked and len(gallery.junk_cols):
    block = np.array(block, np.float32)
    block[:, gallery.junk_cols] = np.nan
  ranks = _hit_ranks(block, hit_rows, hit_cols, rows[same_cam], cols[same_cam], plan)
  return _first_ap_inp(hit_rows, ranks, len(block))


def _check_block(start: int, block: np.ndarray) -> None:
  if np.isnan(block.max(axis=1)).any():
    raise ValueError(
        f'The distances of queries {start}..{start + len(block) - 1} contain NaN: check the '
        'features for NaN/inf (a diverged model or a failed checkpoint restore).')


def _evaluate_blocks(
    map_blocks: Callable[[Callable[[int, np.ndarray], tuple]], list[tuple]],
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
    num_gallery: int,
    roc: bool = False,
    fpr_targets: tuple[float, ...] = roc_lib.DEFAULT_FPRS,
    junk_masked: bool = False,
) -> RankResult:
  """Ranks chunks of queries and reduces them to a RankResult.

  ``map_blocks(fn)`` returns ``[fn(start, distance block)]`` over the chunks in order, calling
  ``fn`` from any number of threads. With ``junk_masked`` the blocks come with junk columns
  already NaN and finite elsewhere (from checked features), so they are not checked for NaN.
  """
  if max_rank < 1:
    raise ValueError(f'max_rank must be >= 1, got {max_rank}.')
  max_rank = min(max_rank, num_gallery)
  gallery = _GalleryIndex(g_pids, g_camids)
  accumulator = None
  if roc:
    accumulator = roc_lib.RocAccumulator(
        *roc_lib.pair_counts(q_pids, q_camids, g_pids, g_camids), fpr_targets=fpr_targets)

  def rank(start: int, block: np.ndarray):
    block = np.asarray(block, np.float32)
    if not junk_masked:
      _check_block(start, block)
    rows = slice(start, start + len(block))
    return _rank_chunk(block, q_pids[rows], q_camids[rows], gallery, accumulator, junk_masked)

  first_ranks, aps, inps = [], [], []
  num_skipped = 0
  for valid, first_rank, ap, inp in map_blocks(rank):
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
  _check_protocol(protocol)
  starts = range(0, num_query, chunk_size)
  if protocol == 'cuhk03':
    _check_cuhk03_options(roc)
    blocks = ((start, distmat[start:start + chunk_size]) for start in starts)
    return _cuhk03_blocks(blocks, *ids, max_rank=max_rank, num_gallery=num_gallery,
                          num_repeats=num_repeats, seed=seed)

  def map_blocks(fn):
    return distance.ordered_map(lambda start, _: fn(start, distmat[start:start + chunk_size]),
                                starts, distance.default_workers())

  return _evaluate_blocks(map_blocks, *ids, max_rank=max_rank, num_gallery=num_gallery, roc=roc,
                          fpr_targets=fpr_targets)


def _check_cuhk03_options(roc: bool) -> None:
  if roc:
    raise ValueError("roc=True is computed with protocol='market' only: evaluate the ROC "
                     'in a separate call.')


def _check_protocol(protocol: str) -> None:
  if protocol not in PROTOCOLS:
    raise ValueError(f'Unknown evaluation protocol {protocol!r}: use one of {PROTOCOLS}.')


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

  Each chunk of ``chunk_size`` queries has its distances computed on the device (JAX; numpy's
  BLAS when the device is the CPU) and is ranked on the host by counting (module docstring),
  several chunks at once in threads (``distance.map_distance_blocks``); the full ``q x g``
  matrix is never built.

  Args:
    query_feats, gallery_feats: ``[num_query, dim]`` and ``[num_gallery, dim]`` features.
    q_pids, g_pids, q_camids, g_camids: as in ``evaluate_rank``.
    metric: ``'cosine'`` or ``'euclidean'`` (see ``jreid.evaluation.distance``).
    max_rank: length of the CMC curve, clipped to the gallery size.
    chunk_size: queries per chunk; memory is ``O(chunk_size x num_gallery)`` per thread.
    protocol, roc, fpr_targets, num_repeats, seed: as in ``evaluate_rank``.
  """
  _check_protocol(protocol)
  num_query, num_gallery = np.shape(query_feats)[0], np.shape(gallery_feats)[0]
  ids = _check_ids(q_pids, g_pids, q_camids, g_camids, num_query, num_gallery)
  if protocol == 'cuhk03':
    _check_cuhk03_options(roc)
    blocks = distance.iter_distance_blocks(query_feats, gallery_feats, metric, chunk_size)
    return _cuhk03_blocks(blocks, *ids, max_rank=max_rank, num_gallery=num_gallery,
                          num_repeats=num_repeats, seed=seed)
  for name, feats in (('query', query_feats), ('gallery', gallery_feats)):
    # Finite squared norms rule out NaN distances, so the blocks need no NaN check.
    if np.ndim(feats) == 2 and not _finite_squared_norms(feats):
      raise ValueError(
          f'The {name} features contain NaN or inf (or values whose squares overflow float32): '
          'check the model output (a diverged model or a failed checkpoint restore).')

  def map_blocks(fn):
    return distance.map_distance_blocks(fn, query_feats, gallery_feats, metric, chunk_size,
                                        nan_columns=ids[1] == JUNK_PID)

  return _evaluate_blocks(map_blocks, *ids, max_rank=max_rank, num_gallery=num_gallery, roc=roc,
                          fpr_targets=fpr_targets, junk_masked=True)


@jax.jit
def _finite_squared_norms_on_device(feats: jax.Array) -> jax.Array:
  return jnp.all(jnp.isfinite(jnp.sum(feats * feats, axis=1)))


def _finite_squared_norms(feats) -> bool:
  """Whether every row's float32 squared norm is finite; on the host for host data (no copy, no
  compilation per shape), on the device for device arrays (no transfer)."""
  if isinstance(feats, jax.Array) and any(d.platform != 'cpu' for d in feats.devices()):
    return bool(_finite_squared_norms_on_device(jnp.asarray(feats, jnp.float32)))
  feats = np.asarray(feats, np.float32)
  return bool(np.isfinite(np.einsum('ij,ij->i', feats, feats)).all())


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
