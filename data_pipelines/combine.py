"""Combine-all: train on a dataset's train, query and gallery images together.

QAConv (`--combine_all`) and torchreid (`combineall=True`) train on every labelled image of a
dataset when it serves as a *source* for cross-dataset evaluation. `combine_all(splits)` returns
the splits with 'train' replaced by train + query + gallery:

  * junk images (id -1) and distractors (the dataset's `DISTRACTOR_IDS`, e.g. Market-1501's 0000)
    are dropped from the query and gallery parts: they carry no identity;
  * the train and test id spaces are kept apart (MSMT17 numbers both from 0): query/gallery ids
    are shifted by `max(train id) + 1`, so `pids` of the combined split are the train ids
    followed by the shifted test ids, and `labels` are all of them relabelled to 0..K-1 in
    sorted order;
  * the same id in query and gallery is one identity (it is the same person).

'query' and 'gallery' are returned unchanged (evaluating on them after training on them is
meaningless; evaluate on other datasets). Set `config.dataset.combine_all = True`.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from data_pipelines.types import DatasetError, ReIDSplit, relabel

JUNK_ID = -1
# Dataset name -> ids that are distractors (not persons) in its query/gallery.
DISTRACTOR_IDS: Mapping[str, frozenset[int]] = {
    'market1501': frozenset({0}),
    'synthreid': frozenset({0}),
}


def junk_ids(dataset: str) -> frozenset[int]:
  """The ids `combine_all` drops for `dataset`: -1 plus its distractors."""
  return frozenset({JUNK_ID}) | DISTRACTOR_IDS.get(dataset, frozenset())


def combine_all(splits: Mapping[str, ReIDSplit],
                junk_pids: Iterable[int] = (JUNK_ID,)) -> dict[str, ReIDSplit]:
  """The splits with 'train' = train + query + gallery (see the module docstring).

  Args:
    splits: {'train', 'query', 'gallery'} -> ReIDSplit.
    junk_pids: ids dropped from query and gallery (`junk_ids(name)` for a named dataset).

  Raises:
    DatasetError: the combined split is empty.
  """
  junk = np.asarray(sorted(set(junk_pids)), dtype=np.int64)
  train = splits['train']
  offset = int(train.pids.max()) + 1 if len(train) else 0
  parts = [(train, np.arange(len(train)), train.pids.astype(np.int64))]
  for name in ('query', 'gallery'):
    split = splits[name]
    keep = np.flatnonzero(~np.isin(split.pids, junk))
    parts.append((split, keep, split.pids[keep].astype(np.int64) + offset))
  pids = np.concatenate([p for _, _, p in parts])
  if not len(pids):
    raise DatasetError('combine_all: train, query and gallery hold no labelled image.')
  if pids.max() > np.iinfo(np.int32).max:
    raise DatasetError('combine_all: shifted ids do not fit in int32.')
  combined = ReIDSplit(
      name='train',
      images=np.concatenate([s.images[i] for s, i, _ in parts]).astype(object),
      pids=pids.astype(np.int32),
      camids=np.concatenate([s.camids[i] for s, i, _ in parts]).astype(np.int32),
      sessions=np.concatenate([s.sessions[i] for s, i, _ in parts]).astype(np.int32),
      frames=np.concatenate([s.frames[i] for s, i, _ in parts]).astype(np.int64),
      filenames=[s.filenames[j] for s, i, _ in parts for j in i],
      labels=relabel(pids),
  )
  return {**splits, 'train': combined}
