"""RandPerson (synthetic persons) read from a user's extracted folder.

RandPerson (Wang et al., "Surpassing Real-World Source Training Data: Random 3D Characters for
Generalizable Person Re-Identification", ACM MM 2020) is a training-only dataset. Its
experiment subset extracts to

  <root>/randperson_subset/<PPPPPP>_s<SS>_c<CC>_f<FFFFFF>.jpg     -> split 'train'

(e.g. 000000_s00_c00_f000264.jpg): person, scene SS (11 scenes, 00-10), camera CC within the
scene and frame. Following QAConv's reader, cameras are numbered across scenes,
camid = CAMERA_OFFSET[scene] + camera, and time is (FRAME_OFFSET[scene] + frame) / 24 s
(`time_seconds`). Session is scene + 1, frame the file's frame. 'query' and 'gallery' are empty:
evaluate on other datasets.

  splits = load_randperson('~/data/randperson')
"""

from __future__ import annotations

import os
import re

import numpy as np

from data_pipelines import reader_utils
from data_pipelines import reid_folder
from data_pipelines.types import DatasetError, ReIDSplit

HOMEPAGE = 'https://github.com/VideoObjectSearch/RandPerson'
# First camid of each scene's cameras, and each scene's first frame on a common clock (QAConv).
CAMERA_OFFSET = (0, 2, 4, 6, 8, 9, 10, 12, 13, 14, 15)
FRAME_OFFSET = (0, 160000, 340000, 490000, 640000, 1070000, 1330000, 1590000, 1890000, 3190000,
                3490000)
FPS = 24

_EXPECTED_NAME = 'PPPPPP_sSS_cCC_fFFFFFF.jpg, scene SS in 00-10 (e.g. 000000_s00_c00_f000264.jpg)'


def _fields(match: re.Match[str]) -> reader_utils.ParsedImage:
  scene = int(match[2])
  if scene >= len(CAMERA_OFFSET):
    raise DatasetError(f'randperson: scene {scene} of {match[0]!r} is not one of the 11 scenes '
                       f'00-10: expected {_EXPECTED_NAME}')
  return reader_utils.ParsedImage(pid=int(match[1]), camid=CAMERA_OFFSET[scene] + int(match[3]),
                                  session=scene + 1, frame=int(match[4]))


NAME_FORMAT = reid_folder.NameFormat(
    dataset='randperson',
    regex=re.compile(r'(\d{6})_s(\d{2})_c(\d{2})_f(\d{6})\.jpg', re.ASCII),
    expected=_EXPECTED_NAME,
    fields=_fields,
)


def parse_randperson_name(filename: str) -> reader_utils.ParsedImage:
  """Parses `PPPPPP_sSS_cCC_fFFFFFF.jpg`; camid = CAMERA_OFFSET[scene] + camera.

  Raises:
    DatasetError: naming the file and the expected pattern.
  """
  return NAME_FORMAT.parse(filename)


def time_seconds(split: ReIDSplit) -> np.ndarray:
  """Float64 [N]: QAConv's RandPerson time, (FRAME_OFFSET[scene] + frame) / 24."""
  return (np.asarray(FRAME_OFFSET, np.int64)[split.sessions - 1] + split.frames) / FPS


LAYOUT = reader_utils.AnyImageFolderLayout(
    name='randperson',
    description='RandPerson synthetic persons (experiment subset): 8,000 ids, 19 cameras.',
    homepage=HOMEPAGE,
    expected=(
        'Expected the extracted RandPerson subset: <root>/randperson_subset/ holding images '
        f'named {_EXPECTED_NAME}. Download the subset ({HOMEPAGE}), extract it and pass the '
        'folder holding randperson_subset/.'),
    folders={'train': 'randperson_subset'},
    name_format=NAME_FORMAT,
)

RandPerson = reader_utils.make_builder(LAYOUT, 'RandPerson')


def load_randperson(root: str | os.PathLike[str],
                    data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads RandPerson: 'train' with every image, 'query' and 'gallery' empty.

  Raises:
    DatasetError: the folder does not hold a readable RandPerson layout.
  """
  return reader_utils.load_splits(RandPerson, root, data_dir)
