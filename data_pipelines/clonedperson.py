"""ClonedPerson (Wang et al., "Cloning Outfits from Real-World Images to 3D Characters for
Generalizable Person Re-Identification", CVPR 2022) read from a user's extracted folder.

The extracted `clonedperson.tar.gz` holds

  <root>/train/          training images         -> split 'train'
  <root>/test/query/     query images            -> split 'query'
  <root>/test/gallery/   gallery images          -> split 'gallery'

named `PPPPPP_sSS_cCC_fFFFFFF.jpg` (e.g. 700000_s02_c00_f023389.jpg): person, scene SS (00-12),
camera CC within the scene, frame. camid = CLONEDPERSON_CAMERA_OFFSET[scene] + camera (QAConv's
table); `clonedperson_qaconv_camids` gives the camids QAConv's code effectively uses. Session is
scene + 1. The name grammar is RandPerson's (`data_pipelines.randperson`) with 13 scenes, junk id
-1 and frames of up to 7 digits.

  splits = load_clonedperson('~/data/clonedperson')
"""

from __future__ import annotations

import os
import re

import numpy as np

from data_pipelines import reader_utils
from data_pipelines import reid_folder
from data_pipelines.types import DatasetError, ReIDSplit

CLONEDPERSON_HOMEPAGE = 'https://github.com/Yanan-Wang-cs/ClonedPerson'
# First camid of each of the 13 scenes' cameras (QAConv's table; scenes sharing an offset share
# their camera network).
CLONEDPERSON_CAMERA_OFFSET = (0, 0, 0, 4, 4, 8, 12, 12, 12, 12, 16, 16, 20)
_CLONED_EXPECTED_NAME = ('PPPPPP_sSS_cCC_fFFFFFF.jpg, scene SS in 00-12 '
                         '(e.g. 700000_s02_c00_f023389.jpg)')


def _cloned_fields(match: re.Match[str]) -> reader_utils.ParsedImage:
  scene = int(match[2])
  if scene >= len(CLONEDPERSON_CAMERA_OFFSET):
    raise DatasetError(f'clonedperson: scene {scene} of {match[0]!r} is not one of the 13 scenes '
                       f'00-12: expected {_CLONED_EXPECTED_NAME}')
  return reader_utils.ParsedImage(
      pid=int(match[1]), camid=CLONEDPERSON_CAMERA_OFFSET[scene] + int(match[3]),
      session=scene + 1, frame=int(match[4]))


CLONEDPERSON_NAME_FORMAT = reid_folder.NameFormat(
    dataset='clonedperson',
    regex=re.compile(r'(\d{6}|-1)_s(\d{2})_c(\d{2})_f(\d{6,7})\.jpg', re.ASCII),
    expected=_CLONED_EXPECTED_NAME,
    fields=_cloned_fields,
)


def parse_clonedperson_name(filename: str) -> reader_utils.ParsedImage:
  """Parses `PPPPPP_sSS_cCC_fFFFFFF.jpg`; camid = CLONEDPERSON_CAMERA_OFFSET[scene] + camera.

  Raises:
    DatasetError: naming the file and the expected pattern.
  """
  return CLONEDPERSON_NAME_FORMAT.parse(filename)


def clonedperson_qaconv_camids(split: ReIDSplit) -> np.ndarray:
  """The camids QAConv's ClonedPerson reader yields: the within-scene camera number only.

  Its code overrides the scene by 2 before the offset lookup (offset 0), so cameras of different
  scenes share ids; use these to reproduce its same-camera filtering exactly.
  """
  offsets = np.asarray(CLONEDPERSON_CAMERA_OFFSET, np.int32)[split.sessions - 1]
  return (split.camids - offsets).astype(np.int32)


CLONEDPERSON_LAYOUT = reader_utils.AnyImageFolderLayout(
    name='clonedperson',
    description='ClonedPerson synthetic persons: 5,621 ids, 24 cameras in 13 scenes.',
    homepage=CLONEDPERSON_HOMEPAGE,
    expected=(
        'Expected the extracted ClonedPerson layout: <root>/train/, <root>/test/query/ and '
        f'<root>/test/gallery/ holding images named {_CLONED_EXPECTED_NAME}. Download '
        f'clonedperson.tar.gz ({CLONEDPERSON_HOMEPAGE}), extract it and pass the folder holding '
        'train/ and test/.'),
    folders={'train': 'train', 'query': 'test/query', 'gallery': 'test/gallery'},
    name_format=CLONEDPERSON_NAME_FORMAT,
    train_excludes=frozenset({-1}),
)

ClonedPerson = reader_utils.make_builder(CLONEDPERSON_LAYOUT, 'ClonedPerson')


def load_clonedperson(root: str | os.PathLike[str],
                      data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads ClonedPerson (junk id -1 dropped from 'train' only, as for Market-1501).

  Raises:
    DatasetError: the folder does not hold a readable ClonedPerson layout.
  """
  return reader_utils.load_splits(ClonedPerson, root, data_dir)
