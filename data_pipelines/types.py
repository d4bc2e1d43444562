"""Data structures shared by every dataset reader and the input pipeline."""

from __future__ import annotations

import dataclasses

import numpy as np


class DatasetError(ValueError):
  """A dataset on disk does not look as expected; the message names the file and the fix."""


@dataclasses.dataclass
class ReIDSplit:
  """One split of a re-ID dataset, held in memory as encoded images plus metadata.

  Attributes:
    name: split name ('train', 'query', 'gallery').
    images: object array of encoded image bytes (JPEG/PNG), shape [N].
    pids: original identity ids as in the file names (-1 junk, 0 distractor), int32 [N].
    camids: zero-based camera ids, int32 [N].
    sessions: one-based recording session (Market-1501 'sS'), int32 [N].
    frames: frame number within the session, int64 [N].
    filenames: file names relative to the dataset root, list of N str.
    labels: contiguous training labels 0..num_ids-1 (train split), or a copy of pids, int32 [N].
  """

  name: str
  images: np.ndarray
  pids: np.ndarray
  camids: np.ndarray
  sessions: np.ndarray
  frames: np.ndarray
  filenames: list[str]
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.pids)

  @property
  def num_ids(self) -> int:
    return int(len(np.unique(self.pids)))

  @property
  def num_cams(self) -> int:
    return int(len(np.unique(self.camids)))

  def summary(self) -> dict[str, int]:
    """Counts a report prints: identities, images and cameras."""
    return {'ids': self.num_ids, 'images': len(self), 'cameras': self.num_cams}


def relabel(pids: np.ndarray) -> np.ndarray:
  """Maps arbitrary identity ids to contiguous labels 0..K-1 in sorted id order."""
  _, labels = np.unique(np.asarray(pids), return_inverse=True)
  return labels.astype(np.int32)
