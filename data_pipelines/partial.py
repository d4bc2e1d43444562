"""Partial and occluded person test sets: Partial-REID, Partial-iLIDS and Occluded-REID.

These are test-only datasets (train on Market-1501 or another source): the query holds partial
or occluded bodies, the gallery whole bodies. As in torchreid's and FastReID's readers, every
query image gets camid 0 and every gallery image camid 1, so the evaluation's same-camera rule
never removes the true matches. Session is 1; frame is the image number in the name (0 if none).

Partial-REID (Zheng et al., "Partial Person Re-identification", ICCV 2015), 60 ids:
  <root>/partial_body_images/PPP_NN.jpg   -> 'query'
  <root>/whole_body_images/PPP_NN.jpg     -> 'gallery'     (occluded_body_images/ is ignored)

Partial-iLIDS (He et al., "Deep Spatial Feature Reconstruction for Partial Person
Re-identification", CVPR 2018), 119 ids, in the PVPM/torchreid layout or FastReID's:
  <root>/partial_body_images/ or <root>/query/     PPP.jpg   -> 'query'
  <root>/whole_body_images/   or <root>/gallery/   PPP.jpg   -> 'gallery'

Occluded-REID (Zhuo et al., "Occluded Person Re-identification", ICME 2018), 200 ids, one
folder per id, TIFF images (stored as lossless PNG):
  <root>/occluded_body_images/PPP/PPP_NN.tif   -> 'query'
  <root>/whole_body_images/PPP/PPP_NN.tif      -> 'gallery'

  splits = load_partial('partial_reid', '~/data/Partial_REID')
"""

from __future__ import annotations

import dataclasses
import os
import re

from data_pipelines import reader_utils
from data_pipelines import reid_folder
from data_pipelines.types import DatasetError, ReIDSplit

QUERY_CAMID, GALLERY_CAMID = 0, 1


@dataclasses.dataclass(frozen=True)
class PartialLayout(reid_folder.Layout):
  """A query folder and a gallery folder (flat, or with one sub-folder per id).

  Attributes:
    folder_pairs: candidate (query folder, gallery folder) pairs; the first present is used.
    regex: a base name's grammar; group 1 the id, group 2 (optional) the image number.
    expected_name: the name pattern in words, for errors.
    per_id_folders: images lie in `<folder>/<PPP>/` (Occluded-REID); flat files are accepted too.
  """

  folder_pairs: tuple[tuple[str, str], ...] = ()
  regex: re.Pattern[str] = re.compile('')
  expected_name: str = ''
  per_id_folders: bool = False

  def folders(self, root: str) -> tuple[str, str]:
    for pair in self.folder_pairs:
      if all(os.path.isdir(os.path.join(root, folder)) for folder in pair):
        return pair
    query, gallery = self.folder_pairs[0]
    missing = gallery if os.path.isdir(os.path.join(root, query)) else query
    raise self.missing_error(root, f'{missing}/')

  def scan(self, root: str) -> reid_folder.Files:
    files = {}
    for split, folder, camid in zip(('query', 'gallery'), self.folders(root),
                                    (QUERY_CAMID, GALLERY_CAMID)):
      items = []
      directory = os.path.join(root, folder)
      paths = [name for name in reader_utils.list_images(directory)]
      if self.per_id_folders:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
          if entry.is_dir() and not entry.name.startswith('.'):
            paths += [f'{entry.name}/{name}' for name in reader_utils.list_images(entry.path)]
      for path in sorted(paths):
        match = self.regex.fullmatch(os.path.basename(path))
        if match is None:
          where = os.path.dirname(os.path.join(directory, path))
          raise DatasetError(f'{self.name}: cannot parse {os.path.basename(path)!r} in {where}: '
                             f'expected {self.expected_name}')
        items.append((f'{folder}/{path}', reader_utils.ParsedImage(
            pid=int(match[1]), camid=camid, frame=int(match[2] or 0))))
      if not items:
        raise self.empty_error(split, directory, f'files named {self.expected_name}')
      files[split] = items
    return files

  def watched_paths(self, root: str) -> list[str]:
    return [os.path.join(root, folder) for folder in self.folders(root)]


LAYOUTS = {
    'partial_reid': PartialLayout(
        name='partial_reid',
        description='Partial-REID: 60 ids, partial-body queries, whole-body gallery.',
        homepage='https://www.cv-foundation.org/openaccess/content_iccv_2015/html/'
        'Zheng_Partial_Person_Re-Identification_ICCV_2015_paper.html',
        expected=(
            'Expected the extracted Partial-REID layout: <root>/partial_body_images/ and '
            '<root>/whole_body_images/ holding images named PPP_NN.jpg (e.g. 001_01.jpg). Pass '
            'the folder holding them (Partial_REID/).'),
        folder_pairs=(('partial_body_images', 'whole_body_images'),),
        regex=re.compile(r'(\d+)_(\d+)\.jpg', re.ASCII),
        expected_name='PPP_NN.jpg (e.g. 001_01.jpg)'),
    'partial_ilids': PartialLayout(
        name='partial_ilids',
        description='Partial-iLIDS: 119 ids, partial-body queries, whole-body gallery.',
        homepage='https://github.com/hh23333/PVPM',
        expected=(
            'Expected the extracted Partial-iLIDS layout: <root>/partial_body_images/ and '
            '<root>/whole_body_images/ (or <root>/query/ and <root>/gallery/) holding images '
            'named PPP.jpg (e.g. 001.jpg). Pass the folder holding them (Partial_iLIDS/).'),
        folder_pairs=(('partial_body_images', 'whole_body_images'), ('query', 'gallery')),
        regex=re.compile(r'(\d+)(?:_(\d+))?\.jpg', re.ASCII),
        expected_name='PPP.jpg or PPP_NN.jpg (e.g. 001.jpg)'),
    'occluded_reid': PartialLayout(
        name='occluded_reid',
        description='Occluded-REID: 200 ids, occluded-body queries, whole-body gallery.',
        homepage='https://github.com/tinajia2012/ICME2018_Occluded-Person-Reidentification_'
        'datasets',
        expected=(
            'Expected the extracted Occluded-REID layout: <root>/occluded_body_images/ and '
            '<root>/whole_body_images/ holding one folder per id with images named PPP_NN.tif '
            '(e.g. 001/001_01.tif). Pass the folder holding them (Occluded_REID/).'),
        folder_pairs=(('occluded_body_images', 'whole_body_images'),),
        regex=re.compile(r'(\d+)_(\d+)\.(?:tif|tiff|jpg)', re.ASCII),
        expected_name='PPP_NN.tif (e.g. 001_01.tif)',
        per_id_folders=True),
}

BUILDERS = {name: reader_utils.make_builder(layout, name.title().replace('_', ''))
            for name, layout in LAYOUTS.items()}


def load_partial(name: str, root: str | os.PathLike[str],
                 data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads 'partial_reid', 'partial_ilids' or 'occluded_reid': empty 'train', 'query', 'gallery'.

  Raises:
    DatasetError: unknown name, or the folder does not hold the dataset's layout.
  """
  if name not in BUILDERS:
    raise DatasetError(f'unknown partial dataset {name!r}; expected one of {sorted(BUILDERS)}.')
  return reader_utils.load_splits(BUILDERS[name], root, data_dir)
