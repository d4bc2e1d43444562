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

The fast path works in query chunks: one stable ``argsort`` of a ``[chunk, num_gallery]`` block,
then vectorised numpy over the chunk, so memory is bounded by ``chunk x num_gallery`` and the
full distance matrix is never needed (``evaluate_features``).
"""

from collections.abc import Iterable
import dataclasses

import jax
import numpy as np

from jreid.evaluation import distance

JUNK_PID = -1

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
    """Rank-1/5/10, mAP and mINP as python floats (fractions, not percent), plus query counts."""
    return {
        'rank1': self.rank(1),
        'rank5': self.rank(5),
        'rank10': self.rank(10),
        'mAP': self.mAP,
        'mINP': self.mINP,
        'num_valid_queries': int(self.num_valid),
        'num_skipped_queries': int(self.num_skipped),
    }


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


def _evaluate_blocks(
    blocks: Iterable[tuple[int, np.ndarray]],
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
    num_gallery: int,
) -> RankResult:
  """Ranks ``(start, distance block)`` chunks of queries and reduces them to a RankResult."""
  if max_rank < 1:
    raise ValueError(f'max_rank must be >= 1, got {max_rank}.')
  max_rank = min(max_rank, num_gallery)
  first_ranks, aps, inps = [], [], []
  num_skipped = 0
  for start, block in blocks:
    if np.isnan(block).any():
      raise ValueError(
          f'The distances of queries {start}..{start + len(block) - 1} contain NaN: check the '
          'features for NaN/inf (a diverged model or a failed checkpoint restore).')
    rows = slice(start, start + len(block))
    hits, kept = sorted_hits(block, q_pids[rows], q_camids[rows], g_pids, g_camids)
    valid, first_rank, ap, inp = query_scores(hits, kept)
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
                    all_inp=np.concatenate(inps), num_valid=num_valid, num_skipped=num_skipped)


def evaluate_rank(
    distmat: np.ndarray | jax.Array,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    chunk_size: int = 1024,
) -> RankResult:
  """CMC, mAP and mINP of a ``[num_query, num_gallery]`` distance matrix (smaller = closer).

  Args:
    distmat: query-gallery distances.
    q_pids, g_pids: identity of each query / gallery item (``-1`` = junk, ``0`` = distractor).
    q_camids, g_camids: camera of each query / gallery item.
    max_rank: length of the CMC curve, clipped to the gallery size.
    chunk_size: queries ranked at once; memory is ``O(chunk_size x num_gallery)``.

  Raises:
    ValueError: on mismatched shapes, NaN distances, or when no query has a valid match.
  """
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
  return _evaluate_blocks(blocks, *ids, max_rank=max_rank, num_gallery=num_gallery)


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
) -> RankResult:
  """``evaluate_rank(compute_distance(query_feats, gallery_feats, metric), ...)`` in chunks.

  Each chunk of ``chunk_size`` queries has its distances computed on the device (JAX) and is
  ranked on the host while the device computes the next one; the full ``q x g`` matrix is never
  built.

  Args:
    query_feats, gallery_feats: ``[num_query, dim]`` and ``[num_gallery, dim]`` features.
    q_pids, g_pids, q_camids, g_camids: as in ``evaluate_rank``.
    metric: ``'cosine'`` or ``'euclidean'`` (see ``jreid.evaluation.distance``).
    max_rank: length of the CMC curve, clipped to the gallery size.
    chunk_size: queries per chunk; memory is ``O(chunk_size x num_gallery)``.
  """
  num_query, num_gallery = np.shape(query_feats)[0], np.shape(gallery_feats)[0]
  ids = _check_ids(q_pids, g_pids, q_camids, g_camids, num_query, num_gallery)
  blocks = distance.iter_distance_blocks(query_feats, gallery_feats, metric, chunk_size)
  return _evaluate_blocks(blocks, *ids, max_rank=max_rank, num_gallery=num_gallery)


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
