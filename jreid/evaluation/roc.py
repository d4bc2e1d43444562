"""Verification ROC over all query-gallery pairs, computed chunk by chunk (no full score matrix).

Pairs: every (query, gallery) pair except junk ones (either side with pid ``-1``) and pairs of the
same identity seen by the same camera (as FastReID's ``evaluate_roc`` removes them). A pair is
*positive* when both have the same identity, *negative* otherwise (distractors, pid ``0``, are
ordinary other identities).

Convention: the standard verification one. A pair is accepted when its distance is below a
threshold ``t``; ``TPR(t) = #{positives with d < t} / #positives`` and
``FPR(t) = #{negatives with d < t} / #negatives``. ``TPR@FPR=f`` is the largest TPR of any
threshold with ``FPR <= f``: with ``k = floor(f * #negatives)``, ``t`` is the ``(k + 1)``-th
smallest negative distance (so ties at ``t`` are all rejected) and the value is exact.

FastReID instead feeds ``sklearn.metrics.roc_curve`` labels 0 for positives and 1 for negatives
with the *distance* as score, i.e. it reports the fraction of negatives rejected at a given
fraction of positives rejected, read at the nearest point of sklearn's thinned curve; those
numbers are not comparable with the ones here.

Memory: all positive distances (few: one list per query) are kept; negatives are counted in a
histogram over the top ``HIST_BITS`` bits of an order-preserving integer code of the float32
distance (no value range needed; bucket edges are exact ROC points), and only the negatives in
the lowest buckets that can hold the ``floor(max_fpr * #negatives) + 1`` smallest are kept.
"""

import dataclasses
import threading

import numpy as np

HIST_BITS = 20
_SHIFT = 32 - HIST_BITS
DEFAULT_FPRS = (1e-4, 1e-3, 1e-2)
JUNK_PID = -1
# Rows of a distance block turned into integer codes at once (bounds the temporaries).
_ROWS_PER_STEP = 256


def ordered_code(values: np.ndarray) -> np.ndarray:
  """uint32 codes with ``code(a) < code(b)`` iff ``a < b`` for float32 values (no NaN).

  ``-0.0`` and ``0.0`` get the same code.
  """
  bits = (np.asarray(values, np.float32) + np.float32(0.0)).view(np.uint32)
  negative = (bits >> np.uint32(31)).astype(bool)
  return np.where(negative, ~bits, bits | np.uint32(0x80000000))


def from_ordered_code(codes: np.ndarray) -> np.ndarray:
  """Inverse of ``ordered_code``: float32 values."""
  codes = np.asarray(codes, np.uint32)
  positive = (codes >> np.uint32(31)).astype(bool)
  bits = np.where(positive, codes & np.uint32(0x7FFFFFFF), ~codes)
  return bits.view(np.float32)


@dataclasses.dataclass
class RocResult:
  """TPR at target FPRs and the ROC curve (see the module docstring for the convention).

  Attributes:
    fpr_targets: the target false positive rates.
    tpr_at_fpr: float64, exact TPR at each target FPR.
    thresholds: float32 distance threshold of each target (pairs with ``d < t`` accepted;
      ``inf`` when the target allows every negative).
    fpr, tpr: float64 curve points (exact, at histogram bucket edges), ascending FPR, for plots.
    curve_thresholds: float32 threshold of each curve point (``d <= threshold`` accepted).
    num_positive, num_negative: number of positive and negative pairs.
  """

  fpr_targets: tuple[float, ...]
  tpr_at_fpr: np.ndarray
  thresholds: np.ndarray
  fpr: np.ndarray
  tpr: np.ndarray
  curve_thresholds: np.ndarray
  num_positive: int
  num_negative: int

  def to_dict(self) -> dict[str, float]:
    """``{'TPR@FPR=1e-04': tpr, ...}`` (fractions), FastReID's key names."""
    return {f'TPR@FPR={f:.0e}': float(t) for f, t in zip(self.fpr_targets, self.tpr_at_fpr)}


def pair_counts(q_pids, q_camids, g_pids, g_camids) -> tuple[int, int]:
  """Numbers of positive and negative pairs, from the ids alone."""
  q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
  valid_q = q_pids != JUNK_PID
  num_valid_g = int(np.sum(g_pids != JUNK_PID))
  g_ok = g_pids != JUNK_PID
  pid_values, pid_counts = np.unique(g_pids[g_ok], return_counts=True)
  pair_keys, pair_counts_ = np.unique(
      np.stack([g_pids[g_ok], np.asarray(g_camids)[g_ok]], axis=1), axis=0, return_counts=True)

  def lookup(values, counts, queries):
    if len(values) == 0:
      return np.zeros(len(queries), np.int64)
    pos = np.clip(np.searchsorted(values, queries), 0, len(values) - 1)
    return np.where(values[pos] == queries, counts[pos], 0)

  same_pid = lookup(pid_values, pid_counts, q_pids[valid_q])
  # Same pid and camera: encode the pair as one sortable integer.
  scale = int(max(np.max(np.abs(g_camids), initial=0), np.max(np.abs(q_camids), initial=0))) * 2 + 3
  pair_code = pair_keys[:, 0].astype(np.int64) * scale + pair_keys[:, 1]
  order = np.argsort(pair_code)
  q_code = (q_pids[valid_q].astype(np.int64) * scale + np.asarray(q_camids)[valid_q])
  same_cam = lookup(pair_code[order], pair_counts_[order], q_code)
  num_pos = int(np.sum(same_pid - same_cam))
  num_neg = int(np.sum(num_valid_g - same_pid))
  return num_pos, num_neg


class RocAccumulator:
  """Collects positive distances and the negative histogram block by block.

  ``add`` may be called from several threads (blocks ranked in parallel) and in any block order:
  the result is the same.
  """

  def __init__(self, num_positive: int, num_negative: int,
               fpr_targets: tuple[float, ...] = DEFAULT_FPRS):
    for f in fpr_targets:
      if not 0.0 < f < 1.0:
        raise ValueError(f'ROC target FPRs must be in (0, 1), got {f}.')
    self.fpr_targets = tuple(float(f) for f in fpr_targets)
    self.num_positive = num_positive
    self.num_negative = num_negative
    # The smallest negatives that must be known exactly.
    self.num_kept = min(int(np.floor(max(self.fpr_targets) * num_negative)) + 1, num_negative)
    self.hist = np.zeros(1 << HIST_BITS, np.int64)
    self.positives = []
    self.low_negatives = np.zeros(0, np.float32)
    self.cut_bucket = (1 << HIST_BITS) - 1  # negatives in buckets <= this are kept
    self.seen_negatives = 0
    self._lock = threading.Lock()

  def add(self, block: np.ndarray, q_pids: np.ndarray, junk_cols: np.ndarray,
          same_rows: np.ndarray, same_cols: np.ndarray, pos_rows: np.ndarray,
          pos_cols: np.ndarray) -> None:
    """Adds a block of queries.

    Args:
      block: float32 ``[n, g]`` distances.
      q_pids: ``[n]`` query pids (junk rows are ignored).
      junk_cols: indices of the junk gallery items.
      same_rows, same_cols: every same-pid pair of the block (non-junk queries).
      pos_rows, pos_cols: the positives among them (different camera).
    """
    with self._lock:
      self._add(block, q_pids, junk_cols, same_rows, same_cols, pos_rows, pos_cols)

  def _add(self, block, q_pids, junk_cols, same_rows, same_cols, pos_rows, pos_cols) -> None:
    self.positives.append(block[pos_rows, pos_cols])
    rows = np.flatnonzero(q_pids != JUNK_PID)
    hist = np.zeros_like(self.hist)
    codes_parts = []
    for start in range(0, len(rows), _ROWS_PER_STEP):
      part_rows = rows[start:start + _ROWS_PER_STEP]
      codes = ordered_code(block[part_rows]) >> np.uint32(_SHIFT)
      hist += np.bincount(codes.ravel(), minlength=len(hist))
      codes_parts.append((part_rows, codes))
    if len(junk_cols):
      junk = ordered_code(block[np.ix_(rows, junk_cols)]) >> np.uint32(_SHIFT)
      hist -= np.bincount(junk.ravel(), minlength=len(hist))
    same = ordered_code(block[same_rows, same_cols]) >> np.uint32(_SHIFT)
    hist -= np.bincount(same, minlength=len(hist))
    self.hist += hist
    self.seen_negatives += int(hist.sum())

    # Lowest bucket that holds the num_kept-th smallest negative seen so far.
    cumulative = np.cumsum(self.hist)
    if cumulative[-1] >= self.num_kept:
      self.cut_bucket = min(self.cut_bucket, int(np.searchsorted(cumulative, self.num_kept)))
    cut = np.uint32(self.cut_bucket)
    # Negatives at or below the cut: candidates minus junk columns and same-pid pairs.
    is_junk_col = np.zeros(block.shape[1], bool)
    is_junk_col[junk_cols] = True
    same_set = np.zeros(0, np.int64)
    if len(same_rows):
      same_set = np.sort(same_rows.astype(np.int64) * block.shape[1] + same_cols)
    found = [self.low_negatives[ordered_code(self.low_negatives) >> np.uint32(_SHIFT) <= cut]]
    for part_rows, codes in codes_parts:
      r, c = np.nonzero(codes <= cut)
      r = part_rows[r]
      keep = ~is_junk_col[c]
      if len(same_set):
        flat = r.astype(np.int64) * block.shape[1] + c
        pos = np.clip(np.searchsorted(same_set, flat), 0, len(same_set) - 1)
        keep &= same_set[pos] != flat
      found.append(block[r[keep], c[keep]])
    self.low_negatives = np.concatenate(found)

  def result(self) -> RocResult:
    if self.num_positive == 0 or self.num_negative == 0:
      raise ValueError(
          f'The ROC needs positive and negative pairs, got {self.num_positive} positive and '
          f'{self.num_negative} negative pairs: check the query and gallery ids.')
    if self.seen_negatives != self.num_negative:
      raise AssertionError(f'counted {self.seen_negatives} negatives, expected '
                           f'{self.num_negative}')
    positives = np.sort(np.concatenate(self.positives))
    low = np.sort(self.low_negatives)
    tprs, thresholds = [], []
    for f in self.fpr_targets:
      k = int(np.floor(f * self.num_negative))
      if k >= self.num_negative:
        tprs.append(1.0)
        thresholds.append(np.inf)
        continue
      t = low[k]
      thresholds.append(t)
      tprs.append(np.searchsorted(positives, t, side='left') / self.num_positive)
    # Curve: exact points at the upper edge of every non-empty bucket.
    pos_hist = np.bincount(ordered_code(positives) >> np.uint32(_SHIFT),
                           minlength=len(self.hist))
    buckets = np.flatnonzero((self.hist > 0) | (pos_hist > 0))
    fpr = np.cumsum(self.hist)[buckets] / self.num_negative
    tpr = np.cumsum(pos_hist)[buckets] / self.num_positive
    edges = (buckets.astype(np.uint64) + 1) << np.uint64(_SHIFT)
    curve_thresholds = from_ordered_code((edges - 1).astype(np.uint32))
    return RocResult(
        fpr_targets=self.fpr_targets, tpr_at_fpr=np.asarray(tprs, np.float64),
        thresholds=np.asarray(thresholds, np.float32), fpr=np.concatenate([[0.0], fpr]),
        tpr=np.concatenate([[0.0], tpr]),
        curve_thresholds=np.concatenate([[-np.inf], curve_thresholds]).astype(np.float32),
        num_positive=self.num_positive, num_negative=self.num_negative)
