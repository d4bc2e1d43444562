"""SYSU-MM01 (RGB-infrared) read from a user's extracted folder, as a TFDS builder.

SYSU-MM01 (Wu et al., "RGB-Infrared Cross-Modality Person Re-Identification", ICCV 2017) is
obtained from its authors. The extracted `SYSU-MM01` folder holds

  <root>/cam1/ ... <root>/cam6/          one folder per camera: cam1, cam2, cam4, cam5 visible
                                         (RGB), cam3 and cam6 infrared
  <root>/camN/<PPPP>/<NNNN>.jpg          images of identity PPPP (4 digits) by camera N
  <root>/exp/train_id.txt, val_id.txt, test_id.txt
                                         the split's ids, comma separated on one line

Splits, as in the reference code of AGW (Ye et al., "Deep Learning for Person
Re-identification: A Survey and Outlook") and of its cross-modality predecessors:

  'train'    every image of the train and val ids, all six cameras
  'query'    every infrared image (cam3, cam6) of the test ids
  'gallery'  every visible image (cam1, cam2, cam4, cam5) of the test ids

The evaluation protocol samples, per trial, one (single-shot) or ten (multi-shot) visible
images per id and camera from the gallery: `sample_gallery(gallery, trial, mode)`, where mode
'all' uses the four visible cameras and 'indoor' only cam1 and cam2.

**Modality.** `ReIDSplit` has no modality field: it follows from the camera. camid = N-1, so
camids 2 and 5 are infrared and `is_infrared(split)` says which images are. Session is 1, frame
the image number NNNN.

  splits = load_sysu_mm01('~/data/SYSU-MM01')
"""

from __future__ import annotations

import dataclasses
import os
import random
import re

import numpy as np

from data_pipelines import reader_utils
from data_pipelines import reid_folder
from data_pipelines.types import DatasetError, ReIDSplit

HOMEPAGE = 'https://github.com/wuancong/SYSU-MM01'
VISIBLE_CAMERAS = (1, 2, 4, 5)
INFRARED_CAMERAS = (3, 6)
INDOOR_VISIBLE_CAMERAS = (1, 2)
# Zero-based camera ids of the infrared cameras.
INFRARED_CAMIDS = tuple(camera - 1 for camera in INFRARED_CAMERAS)
ID_FILES = {'train': ('train_id.txt', 'val_id.txt'), 'test': ('test_id.txt',)}

_EXPECTED = (
    'Expected the extracted SYSU-MM01 layout: <root>/cam1/ ... <root>/cam6/ holding '
    '<PPPP>/<NNNN>.jpg (4-digit id folders, 4-digit image numbers, e.g. cam3/0001/0005.jpg) '
    'and <root>/exp/train_id.txt, val_id.txt and test_id.txt, each one line of comma-separated '
    f'ids. Obtain SYSU-MM01 from its authors ({HOMEPAGE}), extract it and pass the extracted '
    'folder (the one holding cam1/ and exp/).')
_IMAGE_NAME = re.compile(r'(\d{4})\.jpg', re.ASCII)


def is_infrared(split: ReIDSplit) -> np.ndarray:
  """Bool [N]: which images of a SYSU-MM01 split are infrared (cameras 3 and 6, camids 2, 5)."""
  return np.isin(split.camids, INFRARED_CAMIDS)


@dataclasses.dataclass(frozen=True)
class SYSUMM01Layout(reid_folder.Layout):
  """Camera folders of id folders, split by the id lists in exp/."""

  def read_ids(self, root: str, name: str) -> list[int]:
    """The ids of `exp/<name>` (one line, comma separated)."""
    path = os.path.join(root, 'exp', name)
    if not os.path.isfile(path):
      raise self.missing_error(root, f'exp/{name}', kind='file')
    with open(path) as f:
      text = f.read().strip()
    fields = [field.strip() for field in text.replace('\n', ',').split(',') if field.strip()]
    if not fields or not all(field.isdecimal() for field in fields):
      raise DatasetError(f'sysu_mm01: cannot parse {path}: expected comma-separated ids on one '
                         f"line (e.g. '1,2,4,5'), got {text[:60]!r}. Re-extract the archive.")
    return [int(field) for field in fields]

  def scan(self, root: str) -> reid_folder.Files:
    for camera in (*VISIBLE_CAMERAS, *INFRARED_CAMERAS):
      if not os.path.isdir(os.path.join(root, f'cam{camera}')):
        raise self.missing_error(root, f'cam{camera}/')
    train_ids = sorted(set(self.read_ids(root, ID_FILES['train'][0]) +
                           self.read_ids(root, ID_FILES['train'][1])))
    test_ids = sorted(set(self.read_ids(root, ID_FILES['test'][0])))
    files = {
        'train': self._images(root, train_ids, (*VISIBLE_CAMERAS, *INFRARED_CAMERAS)),
        'query': self._images(root, test_ids, INFRARED_CAMERAS),
        'gallery': self._images(root, test_ids, VISIBLE_CAMERAS),
    }
    for split, items in files.items():
      if not items:
        raise self.empty_error(split, f'{root}/cam*/<id>/', 'images <PPPP>/<NNNN>.jpg of the '
                               f'ids in exp/{"train_id.txt" if split == "train" else "test_id.txt"}')
    return dict(sorted(files.items(), key=lambda kv: reader_utils.SPLITS.index(kv[0])))

  def _images(self, root: str, ids: list[int],
              cameras: tuple[int, ...]) -> list[tuple[str, reader_utils.ParsedImage]]:
    """Images of `ids` by `cameras`, sorted by path (camera, id, number); absent folders skipped."""
    items = []
    for camera in sorted(cameras):
      for pid in ids:
        folder = f'cam{camera}/{pid:04d}'
        directory = os.path.join(root, folder)
        if not os.path.isdir(directory):
          continue  # Not every id is seen by every camera.
        for name in reader_utils.list_images(directory):
          match = _IMAGE_NAME.fullmatch(name)
          if match is None:
            raise DatasetError(f'sysu_mm01: cannot parse {name!r} in {directory}: expected '
                               'NNNN.jpg, a 4-digit image number (e.g. 0001.jpg)')
          items.append((f'{folder}/{name}', reader_utils.ParsedImage(
              pid=pid, camid=camera - 1, frame=int(match[1]))))
    return items

  def watched_paths(self, root: str) -> list[str]:
    return [os.path.join(root, 'exp', name) for names in ID_FILES.values() for name in names]


LAYOUT = SYSUMM01Layout(
    name='sysu_mm01',
    description='SYSU-MM01 RGB-infrared person re-identification: 491 ids, 4 visible and 2 '
    'infrared cameras.',
    homepage=HOMEPAGE,
    expected=_EXPECTED,
)

SYSUMM01 = reader_utils.make_builder(LAYOUT, 'SYSUMM01')


def load_sysu_mm01(root: str | os.PathLike[str],
                   data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads a SYSU-MM01 folder (splits in the module docstring; cache as `reid_folder.load`).

  Raises:
    DatasetError: the folder does not hold a readable SYSU-MM01 layout.
  """
  return reader_utils.load_splits(SYSUMM01, root, data_dir)


def sample_gallery(gallery: ReIDSplit, trial: int, mode: str = 'all', shots: int = 1) -> np.ndarray:
  """Indices into `gallery` of one evaluation trial's gallery (AGW's `process_gallery_sysu`).

  For each id (ascending) and each visible camera of `mode` (ascending) that saw it, the
  single-shot gallery takes one image drawn by Python's `random` seeded with `trial` from the
  id's images by that camera sorted by path: the same draws, in the same order, as the reference
  (`random.seed(trial)` then `random.choice`). Multi-shot (`shots` > 1) draws `min(shots, n)`
  images without replacement with `numpy.random.RandomState(trial)` (the reference uses numpy's
  unseeded global state there, so no exact parity exists).

  Args:
    gallery: the 'gallery' split of `load_sysu_mm01`.
    trial: the trial number (0..9 in the reference's 10-trial evaluation), used as the seed.
    mode: 'all' (cameras 1, 2, 4, 5) or 'indoor' (cameras 1, 2).
    shots: 1 (single-shot) or more (multi-shot, 10 in the literature).

  Returns:
    int64 indices, grouped by id then camera.
  """
  if mode not in ('all', 'indoor'):
    raise ValueError(f"sysu_mm01: search mode must be 'all' or 'indoor', got {mode!r}.")
  if shots < 1:
    raise ValueError(f'sysu_mm01: shots must be >= 1, got {shots}.')
  cameras = VISIBLE_CAMERAS if mode == 'all' else INDOOR_VISIBLE_CAMERAS
  groups: dict[tuple[int, int], list[int]] = {}
  for index, (pid, camid) in enumerate(zip(gallery.pids, gallery.camids)):
    groups.setdefault((int(pid), int(camid) + 1), []).append(index)
  python_rng = random.Random(trial)
  numpy_rng = np.random.RandomState(trial)
  chosen = []
  for pid in sorted({pid for pid, _ in groups}):
    for camera in cameras:
      members = sorted(groups.get((pid, camera), []), key=lambda i: gallery.filenames[i])
      if not members:
        continue
      if shots == 1:
        chosen.append(python_rng.choice(members))
      else:
        picks = numpy_rng.choice(len(members), min(shots, len(members)), replace=False)
        chosen.extend(members[i] for i in picks)
  return np.asarray(chosen, dtype=np.int64)
