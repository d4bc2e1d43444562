"""MSMT17 (V1 or V2) read from a user's extracted folder, as a TFDS builder with `manual_dir`.

MSMT17 (Wei et al., "Person Transfer GAN to Bridge Domain Gap for Person Re-Identification",
CVPR 2018) is obtained from its authors after signing a licence. Its identities are given by list
files, not by folders: the extracted `MSMT17_V1` (or `MSMT17_V2`, faces masked) folder holds

  <root>/train/ or <root>/mask_train_v2/    training images, one sub-folder per identity
  <root>/test/  or <root>/mask_test_v2/     query and gallery images
  <root>/list_train.txt, list_val.txt       '<path under the train folder> <pid>' per line
  <root>/list_query.txt, list_gallery.txt   '<path under the test folder> <pid>' per line

The version is detected from the folders present. Split 'train' is list_train alone (30,248
images), the conventional setting of torchreid and FastReID whose published numbers jreid is
compared with; list_val (the rest of the paper's 32,621-image training set) is left out, as
those code bases do unless `combineall` is set. 'query' is list_query and 'gallery' list_gallery; ids are
those of the list files (train and test ids are numbered separately, both from 0).

Image names are `PPPP_NNN_CC_DDDDperiod_XXXX_Y.jpg` (e.g. 0000_000_01_0303morning_0015_0.jpg):
identity, image number, camera CC in 01-15 (camid = CC-1), recording date MMDD with the time of
day, then two counters. Only the camera is used, as by the reference implementations; the
counters are not frame numbers, so every image has session 1 and frame 0.

  splits = load_msmt17('~/data/MSMT17_V1')
"""

from __future__ import annotations

import dataclasses
import os
import re

from data_pipelines import reid_folder
from data_pipelines.types import DatasetError, ReIDSplit

HOMEPAGE = 'https://www.pkuvmc.com/publications/msmt17.html'

# Version -> (train folder, test folder).
VERSIONS = {'MSMT17_V1': ('train', 'test'), 'MSMT17_V2': ('mask_train_v2', 'mask_test_v2')}
# Split -> [(list file, True for the train folder, False for the test folder)].
LIST_FILES = {
    'train': [('list_train.txt', True)],
    'query': [('list_query.txt', False)],
    'gallery': [('list_gallery.txt', False)],
}

_EXPECTED_NAME = ('PPPP_NNN_CC_DDDDperiod_XXXX_Y.jpg, camera CC in 01-15 '
                  '(e.g. 0000_000_01_0303morning_0015_0.jpg)')


@dataclasses.dataclass(frozen=True)
class MSMT17Name:
  """The fields of an MSMT17 image: id from the list file, camera and date from the file name."""

  pid: int
  camid: int
  date: str  # MMDD followed by the time of day, e.g. '0303morning'.
  session: int = 1
  frame: int = 0


NAME_FORMAT = reid_folder.NameFormat(
    dataset='msmt17',
    regex=re.compile(r'(\d{4})_\d{3}_(0[1-9]|1[0-5])_(\d{4}[a-z]+)_\d{4}_\d+\.jpg', re.ASCII),
    expected=_EXPECTED_NAME,
    fields=lambda m: MSMT17Name(pid=int(m[1]), camid=int(m[2]) - 1, date=m[3]),
)


def parse_msmt17_name(filename: str) -> MSMT17Name:
  """Parses an MSMT17 image name (or a path ending in one); the camera becomes zero-based.

  The id is the one in the name; `MSMT17Layout.scan` replaces it by the list file's.

  Raises:
    DatasetError: naming the file and the expected pattern.
  """
  return NAME_FORMAT.parse(filename)


@dataclasses.dataclass(frozen=True)
class MSMT17Layout(reid_folder.Layout):
  """MSMT17's image folders plus list files, V1 or V2."""

  def version(self, root: str) -> str:
    """'MSMT17_V1' or 'MSMT17_V2', from the image folders present under `root`.

    Raises:
      DatasetError: neither or both versions' folders, or only one folder of a version.
    """
    present = [version for version, folders in VERSIONS.items()
               if any(os.path.isdir(os.path.join(root, folder)) for folder in folders)]
    if len(present) > 1:
      raise DatasetError(
          f'msmt17: {root} holds both the V1 folders (train/, test/) and the V2 folders '
          '(mask_train_v2/, mask_test_v2/); keep each version in its own folder and pass one.')
    if not present:  # Name the file both versions have, to find a nested copy of either.
      raise self.missing_error(root, 'list_train.txt', kind='file')
    for folder in VERSIONS[present[0]]:
      if not os.path.isdir(os.path.join(root, folder)):
        raise self.missing_error(root, f'{folder}/')
    return present[0]

  def scan(self, root: str) -> reid_folder.Files:
    """Reads the list files; paths are relative to `root`, ids from the lists, sorted by path."""
    train_folder, test_folder = VERSIONS[self.version(root)]
    files = {}
    for split, lists in LIST_FILES.items():
      items = []
      for list_name, in_train in lists:
        items += self._read_list(root, list_name, train_folder if in_train else test_folder)
      items.sort(key=lambda item: item[0])
      if not items:
        raise self.empty_error(split, ' and '.join(name for name, _ in lists),
                               "lines '<path> <pid>'")
      files[split] = items
    return files

  def _read_list(self, root: str, list_name: str, folder: str) -> list[tuple[str, MSMT17Name]]:
    """[(path relative to root, parsed name with the listed id)] of one list file."""
    list_path = os.path.join(root, list_name)
    if not os.path.isfile(list_path):
      raise self.missing_error(root, list_name, kind='file')
    items = []
    with open(list_path) as f:
      for number, line in enumerate(f, start=1):
        if not line.strip():
          continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdecimal():
          raise DatasetError(
              f'msmt17: cannot parse line {number} of {list_path}: {line.strip()!r}; expected '
              "'<image path under the image folder> <pid>' (e.g. "
              "'0000/0000_000_01_0303morning_0015_0.jpg 0'). Re-extract the archive.")
        path = f'{folder}/{fields[0]}'
        image = os.path.join(root, path)
        if not os.path.isfile(image):
          raise DatasetError(
              f'msmt17: {image}, listed on line {number} of {list_path}, does not exist. '
              f'Re-extract the archive; the folder may be incomplete. {self.expected}')
        name = NAME_FORMAT.parse(image)
        items.append((path, dataclasses.replace(name, pid=int(fields[1]))))
    return items

  def watched_paths(self, root: str) -> list[str]:
    folders = VERSIONS[self.version(root)]
    list_names = [name for lists in LIST_FILES.values() for name, _ in lists]
    return [os.path.join(root, name) for name in (*folders, *list_names)]


LAYOUT = MSMT17Layout(
    name='msmt17',
    description='MSMT17 person re-identification: 4,101 identities, 15 cameras.',
    homepage=HOMEPAGE,
    expected=(
        'Expected the extracted MSMT17 layout: <root>/train/ and <root>/test/ (MSMT17_V1) or '
        '<root>/mask_train_v2/ and <root>/mask_test_v2/ (MSMT17_V2), next to '
        '<root>/list_train.txt, list_val.txt, list_query.txt and list_gallery.txt with lines '
        f"'<path under the image folder> <pid>' and images named {_EXPECTED_NAME}. Obtain "
        f'MSMT17 from its authors ({HOMEPAGE}), extract it and pass the extracted folder (the '
        'one holding list_train.txt).'),
)


class MSMT17(reid_folder.ReIDFolderBuilder):
  """MSMT17 prepared from the folder passed as `DownloadConfig(manual_dir=...)`."""

  LAYOUT = LAYOUT


def load_msmt17(root: str | os.PathLike[str],
                data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads an MSMT17_V1 or MSMT17_V2 folder; see `reid_folder.load` for the cache and splits.

  Raises:
    DatasetError: the folder does not hold a readable MSMT17 layout.
  """
  return reid_folder.load(MSMT17, root, data_dir)
