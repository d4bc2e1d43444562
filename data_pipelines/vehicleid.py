"""VehicleID read from a user's extracted folder, as a TFDS builder per test size.

VehicleID (Liu et al., "Deep Relative Distance Learning: Tell the Difference Between Similar
Vehicles", CVPR 2016) is obtained from its authors. The extracted `VehicleID_V1.0` holds

  <root>/image/<IIIIIII>.jpg                      images, named by a 7-digit image id
  <root>/train_test_split/train_list.txt          13,164 vehicles   lines '<image id> <vehicle id>'
  <root>/train_test_split/test_list_800.txt       small test set    (same format)
  <root>/train_test_split/test_list_1600.txt      medium
  <root>/train_test_split/test_list_2400.txt      large

VehicleID has no camera labels. Protocol (FastReID, after the paper): the test set's query and
gallery are drawn per trial: one random image of each vehicle is its gallery image, the other
images are queries. `load_vehicleid(root, test_size, seed)` draws them with
`numpy.random.default_rng(seed)` (vehicles in ascending id order, one uniform pick each).
Train images have camid 0; query images camid 0 and gallery images camid 1, so the evaluation's
same-camera rule drops nothing. Session is 1; frame is the image id.

  splits = load_vehicleid('~/data/VehicleID_V1.0', test_size='small', seed=0)
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from data_pipelines import reader_utils
from data_pipelines import reid_folder
from data_pipelines.types import DatasetError, ReIDSplit

HOMEPAGE = 'https://www.pkuml.org/resources/pku-vehicleid.html'
TEST_SIZES = {'small': 800, 'medium': 1600, 'large': 2400}


@dataclasses.dataclass(frozen=True)
class VehicleIDLayout(reid_folder.Layout):
  """image/ plus train and test list files; scans splits 'train' and 'test'."""

  test_vehicles: int = 800

  def lists(self) -> dict[str, str]:
    return {'train': 'train_test_split/train_list.txt',
            'test': f'train_test_split/test_list_{self.test_vehicles}.txt'}

  def scan(self, root: str) -> reid_folder.Files:
    if not os.path.isdir(os.path.join(root, 'image')):
      raise self.missing_error(root, 'image/')
    files = {}
    for split, list_name in self.lists().items():
      list_path = os.path.join(root, list_name)
      if not os.path.isfile(list_path):
        raise self.missing_error(root, list_name, kind='file')
      items = []
      for number, line in reader_utils.read_lines(list_path):
        fields = line.split()
        if len(fields) != 2 or not all(field.isdecimal() for field in fields):
          raise DatasetError(
              f'vehicleid: cannot parse line {number} of {list_path}: {line!r}; expected '
              "'<image id> <vehicle id>' (e.g. '0004598 0003'). Re-extract the archive.")
        path = f'image/{fields[0]}.jpg'
        if not os.path.isfile(os.path.join(root, path)):
          raise DatasetError(
              f'vehicleid: {os.path.join(root, path)}, listed on line {number} of {list_path}, '
              f'does not exist. Re-extract the archive. {self.expected}')
        items.append((path, reader_utils.ParsedImage(pid=int(fields[1]), camid=0,
                                                     frame=int(fields[0]))))
      if not items:
        raise self.empty_error(split, list_path, "lines '<image id> <vehicle id>'")
      files[split] = sorted(items, key=lambda item: item[0])
    return files

  def watched_paths(self, root: str) -> list[str]:
    return [os.path.join(root, name) for name in self.lists().values()]


@functools.cache
def builder(test_size: str) -> type[reid_folder.ReIDFolderBuilder]:
  """The TFDS builder of one test size ('small', 'medium' or 'large')."""
  if test_size not in TEST_SIZES:
    raise DatasetError(f'vehicleid: test size must be one of {sorted(TEST_SIZES)} '
                       f'(config.dataset.test_size), got {test_size!r}.')
  vehicles = TEST_SIZES[test_size]
  layout = VehicleIDLayout(
      name=f'vehicleid_{vehicles}',
      description=f'VehicleID vehicle re-identification: 13,164 training vehicles; test set of '
      f'{vehicles} vehicles.',
      homepage=HOMEPAGE,
      expected=(
          'Expected the extracted VehicleID layout: <root>/image/ holding <image id>.jpg and '
          '<root>/train_test_split/ holding train_list.txt and test_list_800.txt, '
          "test_list_1600.txt, test_list_2400.txt with lines '<image id> <vehicle id>'. Obtain "
          f'VehicleID from its authors ({HOMEPAGE}), extract it and pass the folder holding '
          'image/ (VehicleID_V1.0/).'),
      test_vehicles=vehicles,
  )
  return reader_utils.make_builder(layout, f'VehicleID{vehicles}')


def split_query_gallery(test: ReIDSplit, seed: int) -> tuple[ReIDSplit, ReIDSplit]:
  """(query, gallery): per vehicle (ascending id) one uniformly drawn gallery image, the rest query.

  Query images get camid 0 and gallery images camid 1; both keep the test split's path order.
  """
  rng = np.random.default_rng(seed)
  is_gallery = np.zeros(len(test), bool)
  for pid in np.unique(test.pids):
    members = np.flatnonzero(test.pids == pid)
    is_gallery[members[rng.integers(len(members))]] = True
  query_idx, gallery_idx = np.flatnonzero(~is_gallery), np.flatnonzero(is_gallery)
  return (reader_utils.subset(test, query_idx, 'query', np.zeros(len(query_idx), np.int32)),
          reader_utils.subset(test, gallery_idx, 'gallery', np.ones(len(gallery_idx), np.int32)))


def load_vehicleid(root: str | os.PathLike[str], test_size: str = 'small', seed: int = 0,
                   data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads VehicleID with the `test_size` test list split into query and gallery by `seed`.

  Raises:
    DatasetError: bad test size, or the folder does not hold a readable VehicleID layout.
  """
  splits = reader_utils.load_splits(builder(test_size), root, data_dir)
  query, gallery = split_query_gallery(splits.pop('test'), seed)
  return {'train': splits['train'], 'query': query, 'gallery': gallery}
