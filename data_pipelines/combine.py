"""Combining splits: combine-all (one dataset's train, query and gallery images trained on
together) and multi-source training (several datasets' training images in one run).

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

Multi-source training (FastReID's `DATASETS.NAMES`, the basis of its domain-generalisation
recipes; `config.dataset.sources`): `combine_sources([(name, splits), ...])` returns the first
source's splits with 'train' replaced by every source's training images. Identities and cameras
of different sources never merge: source k's ids are shifted past the ids of sources 0..k-1
(`pids` = id + offset, `labels` all of them relabelled 0..K-1 in that order) and so are its
camera ids (camera-aware samplers keep seeing one camera as one camera); file names get the
source's name as a prefix ('synthreid_b/0001_c1s1_000001_00.jpg'). The first source keeps its
own ids and cameras (offset 0), so its 'query' and 'gallery', the run's test set, are unchanged.
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


def combine_sources(sources: Iterable[tuple[str, Mapping[str, ReIDSplit]]]
                    ) -> dict[str, ReIDSplit]:
  """The first source's splits with 'train' = every source's training images, each source's ids
  and cameras shifted past the earlier ones' (see the module docstring).

  Args:
    sources: (dataset name, {'train', 'query', 'gallery'}) in order; the first is the run's own.

  Raises:
    DatasetError: fewer than one source, or ids that do not fit in int32.
  """
  sources = list(sources)
  if not sources:
    raise DatasetError('combine_sources: no source to combine.')
  parts, id_offset, cam_offset = [], 0, 0
  for name, splits in sources:
    train = splits['train']
    pids = train.pids.astype(np.int64)
    if len(train) and pids.min() < 0:
      raise DatasetError(f'source {name!r}: its train split holds junk images (id < 0), which '
                         'carry no identity to train on.')
    parts.append((name, train, pids + id_offset, train.camids.astype(np.int64) + cam_offset))
    if len(train):
      id_offset += int(pids.max()) + 1
      cam_offset += int(train.camids.max()) + 1
  if id_offset > np.iinfo(np.int32).max:
    raise DatasetError('combine_sources: the shifted ids do not fit in int32.')
  first = sources[0][0]
  pids = np.concatenate([p for _, _, p, _ in parts])
  combined = ReIDSplit(
      name='train',
      images=np.concatenate([t.images for _, t, _, _ in parts]).astype(object),
      pids=pids.astype(np.int32),
      camids=np.concatenate([c for _, _, _, c in parts]).astype(np.int32),
      sessions=np.concatenate([t.sessions for _, t, _, _ in parts]).astype(np.int32),
      frames=np.concatenate([t.frames for _, t, _, _ in parts]).astype(np.int64),
      filenames=[f if name == first else f'{name}/{f}' for name, t, _, _ in parts
                 for f in t.filenames],
      labels=relabel(pids),
  )
  return {**sources[0][1], 'train': combined}
