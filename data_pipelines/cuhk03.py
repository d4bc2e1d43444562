"""CUHK03-NP (detected or labeled) read from a user's extracted folder, as a TFDS builder.

CUHK03 (Li et al., "DeepReID: Deep Filter Pairing Neural Network for Person Re-identification",
CVPR 2014) in the new protocol of Zhong et al. ("Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), distributed as `cuhk03-np.zip` with Market-1501's folder
layout, one copy per kind of bounding box:

  <root>/detected/bounding_box_train/   767 training ids        -> split 'train'
  <root>/detected/query/                query images             -> split 'query'
  <root>/detected/bounding_box_test/    gallery (700 test ids)   -> split 'gallery'
  <root>/labeled/...                    the same for the hand-drawn boxes

File names are `PPPP_cC_N.png`: identity PPPP, camera C in 1-2 of the id's camera pair
(camid = C-1) and image number N (stored as the frame; session 1). There are no junk or
distractor images. `kind` selects 'detected' or 'labeled':

  splits = load_cuhk03_np('~/data/cuhk03-np', kind='detected')
"""

from __future__ import annotations

import os
import re

from data_pipelines import reader_utils
from data_pipelines import reid_folder
from data_pipelines.types import DatasetError, ReIDSplit

HOMEPAGE = 'https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP'
KINDS = ('detected', 'labeled')

_EXPECTED_NAME = 'PPPP_cC_N.png, camera C in 1-2 (e.g. 0001_c1_1.png)'

NAME_FORMAT = reid_folder.NameFormat(
    dataset='cuhk03_np',
    regex=re.compile(r'(\d{4})_c([12])_(\d+)\.(?:png|jpg)', re.ASCII),
    expected=_EXPECTED_NAME,
    fields=lambda m: reader_utils.ParsedImage(pid=int(m[1]), camid=int(m[2]) - 1,
                                              frame=int(m[3])),
)


def parse_cuhk03_np_name(filename: str) -> reader_utils.ParsedImage:
  """Parses `PPPP_cC_N.png` (or a path ending in it); the camera becomes zero-based.

  Raises:
    DatasetError: naming the file and the expected pattern.
  """
  return NAME_FORMAT.parse(filename)


def layout(kind: str) -> reader_utils.AnyImageFolderLayout:
  """The layout of one kind ('detected' or 'labeled') under the extracted `cuhk03-np` folder."""
  if kind not in KINDS:
    raise DatasetError(f'cuhk03_np: unknown kind {kind!r}; expected one of {KINDS}.')
  return reader_utils.AnyImageFolderLayout(
      name=f'cuhk03_np_{kind}',
      description=f'CUHK03-NP ({kind} boxes) person re-identification: 767 + 700 ids, 2 '
      'cameras per id.',
      homepage=HOMEPAGE,
      expected=(
          f'Expected the extracted CUHK03-NP layout: <root>/{kind}/bounding_box_train/, '
          f'<root>/{kind}/bounding_box_test/ and <root>/{kind}/query/ holding images named '
          f'{_EXPECTED_NAME}. Download cuhk03-np.zip ({HOMEPAGE}), extract it and pass the '
          'extracted folder (the one holding detected/ and labeled/).'),
      folders={'train': f'{kind}/bounding_box_train', 'query': f'{kind}/query',
               'gallery': f'{kind}/bounding_box_test'},
      name_format=NAME_FORMAT,
  )


BUILDERS = {kind: reader_utils.make_builder(layout(kind), f'CUHK03NP{kind.title()}')
            for kind in KINDS}


def load_cuhk03_np(root: str | os.PathLike[str], kind: str = 'detected',
                   data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads the `kind` boxes of a CUHK03-NP folder; see `reid_folder.load` for the cache.

  Raises:
    DatasetError: unknown kind, or the folder does not hold a readable CUHK03-NP layout.
  """
  if kind not in KINDS:
    raise DatasetError(f'cuhk03_np: unknown kind {kind!r}; expected one of {KINDS}.')
  return reader_utils.load_splits(BUILDERS[kind], root, data_dir)
