"""RegDB (visible-thermal) read from a user's extracted folder, as a TFDS builder per trial.

RegDB (Nguyen et al., "Person Detection and Identification Using Visible and Thermal Camera
Images", Sensors 2017) holds 412 people seen by one visible and one thermal camera, 10 images
each. The cross-modality protocol (Ye et al., "Hierarchical Discriminative Learning for
Visible Thermal Person Re-Identification", AAAI 2018; AGW) uses 10 random trials, each a
206/206 train/test split given by list files:

  <root>/Visible/<id>/<name>.bmp       visible images
  <root>/Thermal/<id>/<name>.bmp       thermal images
  <root>/idx/train_visible_{t}.txt, train_thermal_{t}.txt, test_visible_{t}.txt,
  test_thermal_{t}.txt                 lines '<path under root> <label>', trial t in 1..10

e.g. 'Visible/1/female_back_v_00001_1.bmp 0'. Splits of trial t:

  'train'    train_visible_t + train_thermal_t
  'query'    test_visible_t       (visible to thermal, the default; `query_modality='thermal'`
  'gallery'  test_thermal_t        swaps query and gallery)

Ids are the list files' labels. BMP images are stored as lossless PNG.

**Modality.** `ReIDSplit` has no modality field: camid 0 is the visible camera and camid 1 the
thermal one (`is_infrared(split)`), so the same-camera rule of the evaluation never drops a
cross-modality match. Session is 1, frame the image's line number in its list file.

  splits = load_regdb('~/data/RegDB', trial=1)
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from data_pipelines import reader_utils
from data_pipelines import reid_folder
from data_pipelines.types import DatasetError, ReIDSplit

HOMEPAGE = 'http://dm.dongguk.edu/link.html'
TRIALS = tuple(range(1, 11))
MODALITIES = {'visible': ('Visible', 0), 'thermal': ('Thermal', 1)}
VISIBLE_CAMID, THERMAL_CAMID = 0, 1


def is_infrared(split: ReIDSplit) -> np.ndarray:
  """Bool [N]: which images of a RegDB split are thermal (camid 1)."""
  return split.camids == THERMAL_CAMID


def _lists(trial: int) -> dict[str, list[tuple[str, str]]]:
  """Split -> [(list file under root, modality)] of a trial."""
  return {
      'train': [(f'idx/train_visible_{trial}.txt', 'visible'),
                (f'idx/train_thermal_{trial}.txt', 'thermal')],
      'query': [(f'idx/test_visible_{trial}.txt', 'visible')],
      'gallery': [(f'idx/test_thermal_{trial}.txt', 'thermal')],
  }


@dataclasses.dataclass(frozen=True)
class RegDBLayout(reid_folder.Layout):
  """Visible/ and Thermal/ image folders split by a trial's list files."""

  trial: int = 1

  def scan(self, root: str) -> reid_folder.Files:
    for folder, _ in MODALITIES.values():
      if not os.path.isdir(os.path.join(root, folder)):
        raise self.missing_error(root, f'{folder}/')
    files = {}
    for split, lists in _lists(self.trial).items():
      items = []
      for list_name, modality in lists:
        items += self._read_list(root, list_name, modality)
      if not items:
        raise self.empty_error(split, ' and '.join(name for name, _ in lists),
                               "lines '<path> <label>'")
      files[split] = items
    return files

  def _read_list(self, root: str, list_name: str,
                 modality: str) -> list[tuple[str, reader_utils.ParsedImage]]:
    list_path = os.path.join(root, list_name)
    if not os.path.isfile(list_path):
      raise self.missing_error(root, list_name, kind='file')
    folder, camid = MODALITIES[modality]
    items = []
    for number, line in reader_utils.read_lines(list_path):
      fields = line.split()
      if len(fields) != 2 or not fields[1].isdecimal():
        raise DatasetError(
            f"regdb: cannot parse line {number} of {list_path}: {line!r}; expected '<image path "
            f"under the root> <label>' (e.g. '{folder}/1/female_back_"
            f"{modality[0]}_00001_1.bmp 0'). Re-extract the archive.")
      path = fields[0]
      if not path.startswith(f'{folder}/'):
        raise DatasetError(f'regdb: line {number} of {list_path} lists {path!r}, not an image '
                           f'under {folder}/ as the {modality} list must.')
      if not os.path.isfile(os.path.join(root, path)):
        raise DatasetError(
            f'regdb: {os.path.join(root, path)}, listed on line {number} of {list_path}, does '
            f'not exist. Re-extract the archive; the folder may be incomplete. {self.expected}')
      items.append((path, reader_utils.ParsedImage(pid=int(fields[1]), camid=camid,
                                                   frame=number)))
    return items

  def watched_paths(self, root: str) -> list[str]:
    return [os.path.join(root, name) for lists in _lists(self.trial).values()
            for name, _ in lists]


@functools.cache
def builder(trial: int) -> type[reid_folder.ReIDFolderBuilder]:
  """The TFDS builder of one trial (1..10)."""
  if trial not in TRIALS:
    raise DatasetError(f'regdb: trial must be one of 1..10 (config.dataset.trial), got {trial!r}.')
  layout = RegDBLayout(
      name=f'regdb_trial{trial}',
      description='RegDB visible-thermal person re-identification: 412 ids, 1 visible and 1 '
      f'thermal camera; trial {trial}.',
      homepage=HOMEPAGE,
      expected=(
          'Expected the extracted RegDB layout: <root>/Visible/ and <root>/Thermal/ holding '
          '<id>/<name>.bmp, and <root>/idx/train_visible_{t}.txt, train_thermal_{t}.txt, '
          "test_visible_{t}.txt and test_thermal_{t}.txt (t = 1..10) with lines '<path under "
          "the root> <label>' (e.g. 'Visible/1/female_back_v_00001_1.bmp 0'). Obtain RegDB "
          f'from its authors ({HOMEPAGE}) and the idx/ split files with the cross-modality '
          're-ID code (e.g. AGW), and pass the folder holding Visible/, Thermal/ and idx/.'),
      trial=trial,
  )
  return reader_utils.make_builder(layout, f'RegDBTrial{trial}')


def load_regdb(root: str | os.PathLike[str], trial: int = 1, query_modality: str = 'visible',
               data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads one trial of a RegDB folder (splits in the module docstring).

  Args:
    root: the folder holding Visible/, Thermal/ and idx/.
    trial: 1..10.
    query_modality: 'visible' (visible to thermal search) or 'thermal' (thermal to visible).
    data_dir: the prepared-copy cache, as in `reid_folder.load`.

  Raises:
    DatasetError: bad trial, or the folder does not hold a readable RegDB layout.
  """
  if query_modality not in MODALITIES:
    raise DatasetError(f"regdb: query_modality must be 'visible' or 'thermal', got "
                       f'{query_modality!r}.')
  splits = reader_utils.load_splits(builder(trial), root, data_dir)
  if query_modality == 'thermal':
    query, gallery = splits['gallery'], splits['query']
    splits['query'] = dataclasses.replace(query, name='query')
    splits['gallery'] = dataclasses.replace(gallery, name='gallery')
  return splits
