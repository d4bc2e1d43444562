"""A user's own re-ID data: a folder of images plus CSV files naming each image's id and camera.

For data that follows no public layout. The folder holds the images (any sub-folders; JPEG,
PNG, BMP or TIFF) and one CSV file per split:

  <root>/train.csv     required
  <root>/query.csv     optional (with gallery.csv)
  <root>/gallery.csv   optional (with query.csv)

Each CSV file has a header row with the columns `path,pid,camid` and optionally `session` and
`frame`, then one row per image:

  path,pid,camid
  images/alice_cam0_001.jpg,1,0
  images/alice_cam1_007.jpg,1,1

`path` is relative to the root ('/'-separated), `pid` an integer id (-1 junk, ignored in
training), `camid` a zero-based camera index, `session` (default 1) and `frame` (default 0)
integers. Rows keep the file's order. Select it with `config.dataset.name = 'csv'` and
`config.dataset.root = <root>`:

  splits = load_csv_folder('~/data/my_reid')
"""

from __future__ import annotations

import csv
import dataclasses
import os

from data_pipelines import reader_utils
from data_pipelines import reid_folder
from data_pipelines.types import DatasetError, ReIDSplit

REQUIRED_COLUMNS = ('path', 'pid', 'camid')
OPTIONAL_COLUMNS = ('session', 'frame')
SPLIT_FILES = {'train': 'train.csv', 'query': 'query.csv', 'gallery': 'gallery.csv'}

_EXPECTED = (
    'Expected a folder of images with <root>/train.csv (and optionally query.csv with '
    'gallery.csv), each with the header row path,pid,camid[,session,frame] and one row per image, '
    "e.g. 'images/0001_a.jpg,1,0'; paths are relative to <root>.")


@dataclasses.dataclass(frozen=True)
class CSVFolderLayout(reid_folder.Layout):
  """Images listed by CSV files (see the module docstring)."""

  def scan(self, root: str) -> reid_folder.Files:
    if not os.path.isfile(os.path.join(root, 'train.csv')):
      raise self.missing_error(root, 'train.csv', kind='file')
    present = [split for split in ('query', 'gallery')
               if os.path.isfile(os.path.join(root, SPLIT_FILES[split]))]
    if len(present) == 1:
      missing = SPLIT_FILES['gallery' if present == ['query'] else 'query']
      raise DatasetError(f'csv: {root} has {SPLIT_FILES[present[0]]} but no {missing}; give '
                         f'both or neither. {self.expected}')
    files = {}
    for split in ('train', *present):
      items = self._read(root, SPLIT_FILES[split])
      if split == 'train':
        items = [item for item in items if item[1].pid != -1]
      if not items:
        raise self.empty_error(split, os.path.join(root, SPLIT_FILES[split]),
                               'one row per image after the header')
      files[split] = items
    return files

  def _read(self, root: str, csv_name: str) -> list[tuple[str, reader_utils.ParsedImage]]:
    csv_path = os.path.join(root, csv_name)
    with open(csv_path, newline='') as f:
      rows = list(csv.reader(f))
    if not rows:
      raise DatasetError(f'csv: {csv_path} is empty. {self.expected}')
    header = [column.strip() for column in rows[0]]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing or unknown or len(set(header)) != len(header):
      raise DatasetError(
          f'csv: the header of {csv_path} is {",".join(header)!r}: expected the columns '
          f'path,pid,camid and optionally session,frame, each once. {self.expected}')
    column = {name: index for index, name in enumerate(header)}
    items = []
    for number, row in enumerate(rows[1:], start=2):
      if not any(cell.strip() for cell in row):
        continue
      where = f'csv: line {number} of {csv_path}'
      if len(row) != len(header):
        raise DatasetError(f'{where} has {len(row)} fields, the header {len(header)}. '
                           f'{self.expected}')
      values = {name: row[index].strip() for name, index in column.items()}
      path = values['path']
      fields = {name: reader_utils.int_field(values[name], name, where, 'an integer')
                for name in ('pid', 'camid', *OPTIONAL_COLUMNS) if name in values}
      if fields['pid'] < -1 or fields['camid'] < 0:
        raise DatasetError(f'{where}: pid must be >= -1 and camid >= 0, got pid '
                           f'{fields["pid"]} and camid {fields["camid"]}.')
      if (os.path.isabs(path) or '\\' in path or '..' in path.split('/') or
          not reader_utils.is_image_file(os.path.basename(path))):
        raise DatasetError(
            f'{where}: path {path!r} must be a relative, \'/\'-separated path of a '
            f'{"/".join(reader_utils.IMAGE_SUFFIXES)} file under {root}.')
      if not os.path.isfile(os.path.join(root, path)):
        raise DatasetError(f'{where}: image {os.path.join(root, path)} does not exist.')
      items.append((path, reader_utils.ParsedImage(**fields)))
    return items

  def watched_paths(self, root: str) -> list[str]:
    return [os.path.join(root, name) for name in SPLIT_FILES.values()
            if os.path.isfile(os.path.join(root, name))]


LAYOUT = CSVFolderLayout(
    name='csv_folder',
    description="A user's re-ID images listed by CSV files.",
    homepage='',
    expected=_EXPECTED,
)

CSVFolder = reader_utils.make_builder(LAYOUT, 'CSVFolder')


def load_csv_folder(root: str | os.PathLike[str],
                    data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads a folder of images listed by CSV files; missing query/gallery come back empty.

  Raises:
    DatasetError: a missing or malformed CSV file, or a listed image that does not exist.
  """
  return reader_utils.load_splits(CSVFolder, root, data_dir)
