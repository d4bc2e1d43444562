"""VERI-Wild read from a user's extracted folder, as a TFDS builder per test size.

VERI-Wild (Lou et al., "VERI-Wild: A Large Dataset and a New Method for Vehicle
Re-Identification in the Wild", CVPR 2019) is obtained from its authors. The extracted folder
holds

  <root>/images/<VVVVV>/<IIIIII>.jpg              images of vehicle VVVVV
  <root>/train_test_split/train_list.txt          lines '<VVVVV>/<IIIIII>'
  <root>/train_test_split/test_3000.txt, test_3000_query.txt      small test: gallery, query
  <root>/train_test_split/test_5000.txt, test_5000_query.txt      medium
  <root>/train_test_split/test_10000.txt, test_10000_query.txt    large
  <root>/train_test_split/vehicle_info.txt        header line, then
                                                  '<VVVVV>/<IIIIII>;<camera>;<time>;<model>;<type>;<color>'

(`vehicle_info.txt` directly under the root is accepted too.) As in FastReID, the gallery list
includes the query images. camid is the camera number of vehicle_info.txt as given (VERI-Wild
numbers its 174 cameras itself); session is 1 and frame the image id.

  splits = load_veriwild('~/data/VERI-Wild', test_size='small')
"""

from __future__ import annotations

import dataclasses
import functools
import os

from data_pipelines import reader_utils
from data_pipelines import reid_folder
from data_pipelines.types import DatasetError, ReIDSplit

HOMEPAGE = 'https://github.com/PKU-IMRE/VERI-Wild'
TEST_SIZES = {'small': 3000, 'medium': 5000, 'large': 10000}
INFO_FILES = ('train_test_split/vehicle_info.txt', 'vehicle_info.txt')


@dataclasses.dataclass(frozen=True)
class VeRiWildLayout(reid_folder.Layout):
  """images/ plus list files and vehicle_info.txt for the cameras."""

  test_vehicles: int = 3000

  def lists(self) -> dict[str, str]:
    return {'train': 'train_test_split/train_list.txt',
            'query': f'train_test_split/test_{self.test_vehicles}_query.txt',
            'gallery': f'train_test_split/test_{self.test_vehicles}.txt'}

  def info_path(self, root: str) -> str:
    for name in INFO_FILES:
      if os.path.isfile(os.path.join(root, name)):
        return os.path.join(root, name)
    raise self.missing_error(root, INFO_FILES[0], kind='file')

  def cameras(self, root: str) -> dict[str, int]:
    """'<vid>/<image id>' -> camera number, from vehicle_info.txt."""
    path = self.info_path(root)
    cameras = {}
    for number, line in reader_utils.read_lines(path)[1:]:  # The first line is a header.
      fields = line.split(';')
      if len(fields) < 2 or '/' not in fields[0] or not fields[1].strip().isdecimal():
        raise DatasetError(
            f'veriwild: cannot parse line {number} of {path}: {line!r}; expected '
            "'<vid>/<image id>;<camera>;<time>;<model>;<type>;<color>' (e.g. "
            "'00001/000001;28;2018-03-11 11:24:45;Changan;SUV;white').")
      cameras[fields[0].strip()] = int(fields[1])
    return cameras

  def scan(self, root: str) -> reid_folder.Files:
    if not os.path.isdir(os.path.join(root, 'images')):
      raise self.missing_error(root, 'images/')
    for list_name in self.lists().values():
      if not os.path.isfile(os.path.join(root, list_name)):
        raise self.missing_error(root, list_name, kind='file')
    cameras = self.cameras(root)
    info = self.info_path(root)
    files = {}
    for split, list_name in self.lists().items():
      list_path = os.path.join(root, list_name)
      items = []
      for number, line in reader_utils.read_lines(list_path):
        fields = line.split('/')
        if len(fields) != 2 or not all(field.isdecimal() for field in fields):
          raise DatasetError(
              f'veriwild: cannot parse line {number} of {list_path}: {line!r}; expected '
              "'<vid>/<image id>' (e.g. '00001/000001'). Re-extract the archive.")
        if line not in cameras:
          raise DatasetError(f'veriwild: {line!r} (line {number} of {list_path}) has no line in '
                             f'{info}, so its camera is unknown. Re-extract the archive.')
        path = f'images/{line}.jpg'
        if not os.path.isfile(os.path.join(root, path)):
          raise DatasetError(
              f'veriwild: {os.path.join(root, path)}, listed on line {number} of {list_path}, '
              f'does not exist. Re-extract the archive. {self.expected}')
        items.append((path, reader_utils.ParsedImage(pid=int(fields[0]), camid=cameras[line],
                                                     frame=int(fields[1]))))
      if not items:
        raise self.empty_error(split, list_path, "lines '<vid>/<image id>'")
      files[split] = sorted(items, key=lambda item: item[0])
    return files

  def watched_paths(self, root: str) -> list[str]:
    return [os.path.join(root, name) for name in self.lists().values()] + [self.info_path(root)]


@functools.cache
def builder(test_size: str) -> type[reid_folder.ReIDFolderBuilder]:
  """The TFDS builder of one test size ('small', 'medium' or 'large')."""
  if test_size not in TEST_SIZES:
    raise DatasetError(f'veriwild: test size must be one of {sorted(TEST_SIZES)} '
                       f'(config.dataset.test_size), got {test_size!r}.')
  vehicles = TEST_SIZES[test_size]
  layout = VeRiWildLayout(
      name=f'veriwild_{vehicles}',
      description=f'VERI-Wild vehicle re-identification: 30,671 training vehicles; test set of '
      f'{vehicles} vehicles.',
      homepage=HOMEPAGE,
      expected=(
          'Expected the extracted VERI-Wild layout: <root>/images/<vid>/<image id>.jpg and '
          '<root>/train_test_split/ holding train_list.txt, test_{3000,5000,10000}.txt, '
          "test_{3000,5000,10000}_query.txt (lines '<vid>/<image id>') and vehicle_info.txt "
          f'(the cameras). Obtain VERI-Wild from its authors ({HOMEPAGE}), extract it and pass '
          'the folder holding images/ and train_test_split/.'),
      test_vehicles=vehicles,
  )
  return reader_utils.make_builder(layout, f'VeRiWild{vehicles}')


def load_veriwild(root: str | os.PathLike[str], test_size: str = 'small',
                  data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads VERI-Wild with the `test_size` query and gallery lists.

  Raises:
    DatasetError: bad test size, or the folder does not hold a readable VERI-Wild layout.
  """
  return reader_utils.load_splits(builder(test_size), root, data_dir)
