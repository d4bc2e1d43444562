"""VeRi-776 read from a user's extracted folder, as a TFDS builder with `manual_dir`.

VeRi-776 (Liu et al., "Large-scale vehicle re-identification in urban surveillance videos",
ICME 2016; "A Deep Learning-Based Approach to Progressive Vehicle Re-identification", ECCV 2016)
is obtained from its authors on request. The extracted `VeRi` folder holds:

  <root>/image_train/   training images (576 vehicles)       -> split 'train'
  <root>/image_query/   query images (200 vehicles)          -> split 'query'
  <root>/image_test/    gallery images (200 vehicles)        -> split 'gallery'

(the list, label XML and `gt_index.txt`/`jk_index.txt` files are ignored; the query/gallery
protocol drops same-id same-camera gallery images, as Market-1501's does). File names are
`VVVV_cCCC_FFFFFFFF_N.jpg`: vehicle VVVV, camera CCC in 001-020 (camid = CCC-1), frame FFFFFFFF
and an index N. VeRi has one recording session: session is 1 for every image.

  splits = load_veri('~/data/VeRi')
"""

from __future__ import annotations

import dataclasses
import os
import re

from data_pipelines import reid_folder
from data_pipelines.types import ReIDSplit

HOMEPAGE = 'https://vehiclereid.github.io/VeRi/'

_EXPECTED_NAME = 'VVVV_cCCC_FFFFFFFF_N.jpg, camera CCC in 001-020 (e.g. 0001_c001_00016450_0.jpg)'


@dataclasses.dataclass(frozen=True)
class VeRiName:
  """The fields of a VeRi-776 file name (`session` is always 1)."""

  pid: int
  camid: int
  frame: int
  index: int
  session: int = 1


NAME_FORMAT = reid_folder.NameFormat(
    dataset='veri',
    regex=re.compile(r'(\d{4})_c(00[1-9]|01\d|020)_(\d{8})_(\d)\.jpg', re.ASCII),
    expected=_EXPECTED_NAME,
    fields=lambda m: VeRiName(
        pid=int(m[1]), camid=int(m[2]) - 1, frame=int(m[3]), index=int(m[4])),
)

LAYOUT = reid_folder.FolderLayout(
    name='veri',
    description='VeRi-776 vehicle re-identification: 776 vehicles, 20 cameras.',
    homepage=HOMEPAGE,
    expected=(
        'Expected the extracted VeRi-776 layout: <root>/image_train/, <root>/image_query/ and '
        f'<root>/image_test/ holding images named {_EXPECTED_NAME}. Request VeRi from its '
        f'authors ({HOMEPAGE}), extract it and pass the extracted folder (the one holding '
        'image_train/).'),
    folders={'train': 'image_train', 'query': 'image_query', 'gallery': 'image_test'},
    name_format=NAME_FORMAT,
)


def parse_veri_name(filename: str) -> VeRiName:
  """Parses `VVVV_cCCC_FFFFFFFF_N.jpg` (or a path ending in it); the camera becomes zero-based.

  Raises:
    DatasetError: naming the file and the expected pattern.
  """
  return NAME_FORMAT.parse(filename)


class VeRi(reid_folder.ReIDFolderBuilder):
  """VeRi-776 prepared from the folder passed as `DownloadConfig(manual_dir=...)`."""

  LAYOUT = LAYOUT


def load_veri(root: str | os.PathLike[str],
              data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads a VeRi-776 folder; see `reid_folder.load` for the cache and the returned splits.

  Raises:
    DatasetError: the folder does not hold a readable VeRi-776 layout.
  """
  return reid_folder.load(VeRi, root, data_dir)
