"""CUHK03 read from a user's files: CUHK03-NP (a folder, as a TFDS builder) and the classic
CUHK03 (`cuhk-03.mat`, 20 train/test splits).

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

**Classic CUHK03** (Li et al. 2014: 1,467 identities seen by the two cameras of one of five camera
pairs, up to 5 images per camera, hand-drawn ('labeled') and detected boxes) is distributed as
`cuhk03_release/cuhk-03.mat`, a MATLAB v7.3 file (HDF5). MATLAB stores arrays column-major, so
every HDF5 dataset holds the transpose of the MATLAB array:

  labeled, detected   cell {1 x 5}: per camera pair, a cell {num_ids x 10} of uint8 images
                      (H x W x 3; images 1-5 from the pair's first camera, 6-10 from the
                      second; a missing image is an empty array)
  testsets            cell {1 x 20}: per split, a double [100 x 2] of (camera pair, person
                      index), both 1-based

Split t (1..20, `config.dataset.trial`) is the standard classic protocol (torchreid's
`cuhk03_classic_split`): its 100 listed identities are the test set and the other 1,367 the
training set; 'query' and 'gallery' both hold every test image, so each query is matched against
the same identity's images from the other camera (the evaluation drops the same camera), under
the single-gallery-shot protocol `config.eval.protocol='cuhk03'`. The paper's numbers are the mean
over the 20 splits (one run per `config.dataset.trial`).

Identity ids are `1000 x pair + person` (e.g. 2015: person 15 of pair 2), camera ids
`2 x (pair - 1) + view` (0..9: the two cameras of each pair), session the pair, frame the image
number 1..10. The images are extracted once into PNG files under the cache
(`<data_dir>/cuhk03_classic_<key>/`, the key from the .mat file's path, size and time), as the
reference tools do:

  splits = load_cuhk03_classic('~/data/cuhk03_release/cuhk-03.mat', kind='labeled', trial=1)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile

import numpy as np

from data_pipelines import reader_utils
from data_pipelines import reid_folder
from data_pipelines.types import DatasetError, ReIDSplit, relabel

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


# ----------------------------------------------------------------------------- classic CUHK03

CLASSIC_HOMEPAGE = 'https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html'
MAT_NAME = 'cuhk-03.mat'
CLASSIC_TRIALS = tuple(range(1, 21))
_IMAGES_PER_ID = 10  # 5 per camera of the pair.
_CLASSIC_NAME = re.compile(r'^(\d)_(\d{3})_([12])_(\d{2})\.png$')
_CLASSIC_EXPECTED = (
    f'Expected the classic CUHK03 file {MAT_NAME} (MATLAB v7.3, from cuhk03_release.zip, '
    f'{CLASSIC_HOMEPAGE}): pass the file, or the folder holding it (or holding '
    f'cuhk03_release/{MAT_NAME}), as --config.dataset.root.')


def find_mat_file(root: str | os.PathLike[str]) -> str:
  """The path of `cuhk-03.mat` from `root`: the file itself, or a folder holding it (directly or
  in `cuhk03_release/`).

  Raises:
    DatasetError: no such file.
  """
  root = os.path.abspath(os.path.expanduser(os.fspath(root)))
  for path in (root, os.path.join(root, MAT_NAME),
               os.path.join(root, 'cuhk03_release', MAT_NAME)):
    if os.path.isfile(path):
      return path
  raise DatasetError(f'cuhk03 (classic): no {MAT_NAME} at {root}. {_CLASSIC_EXPECTED}')


def _png(image: np.ndarray) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


def _extract_mat(path: str, target: str) -> None:
  """Writes every image of `path` as `<kind>/<pair>_<person>_<view>_<image>.png` and the 20 test
  splits as `testsets.json` into the new folder `target`."""
  try:
    import h5py  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise DatasetError('cuhk03 (classic) reads cuhk-03.mat with h5py: pip install h5py.') from None
  try:
    mat = h5py.File(path, 'r')
  except OSError as e:
    raise DatasetError(f'cuhk03 (classic): {path} cannot be read as a MATLAB v7.3 (HDF5) file '
                       f'({e}). {_CLASSIC_EXPECTED}') from None
  with mat:
    missing = [key for key in ('labeled', 'detected', 'testsets') if key not in mat]
    if missing:
      raise DatasetError(f'cuhk03 (classic): {path} has no {missing[0]!r} array (it has '
                         f'{", ".join(sorted(k for k in mat if not k.startswith("#")))}). '
                         f'{_CLASSIC_EXPECTED}')

    def deref(ref) -> np.ndarray:
      return mat[ref][()].T  # MATLAB is column-major: HDF5 holds the transpose.

    for kind in ('labeled', 'detected'):
      os.makedirs(os.path.join(target, kind))
      for pair, pair_ref in enumerate(mat[kind][()].reshape(-1), start=1):
        cells = deref(pair_ref)  # [num_ids, 10] references
        for person, row in enumerate(cells, start=1):
          for index, ref in enumerate(row, start=1):
            image = deref(ref)
            if image.ndim != 3 or image.size == 0:  # An empty cell: no such image.
              continue
            view = 1 if index <= _IMAGES_PER_ID // 2 else 2
            name = f'{pair}_{person:03d}_{view}_{index:02d}.png'
            with open(os.path.join(target, kind, name), 'wb') as f:
              f.write(_png(np.ascontiguousarray(image, dtype=np.uint8)))
    testsets = [deref(ref).astype(np.int64).tolist() for ref in mat['testsets'][()].reshape(-1)]
  with open(os.path.join(target, 'testsets.json'), 'w') as f:
    json.dump(testsets, f)


def prepare_classic(root: str | os.PathLike[str],
                    data_dir: str | os.PathLike[str] | None = None) -> str:
  """The folder of the classic CUHK03 images extracted from `cuhk-03.mat` (done once per file;
  copies of an earlier version of the same file are removed)."""
  from data_pipelines import market1501  # pylint: disable=g-import-not-at-top
  path = find_mat_file(root)
  data_dir = os.path.expanduser(os.fspath(data_dir)) if data_dir else market1501.default_data_dir()
  stat = os.stat(path)
  path_key = hashlib.sha256(path.encode()).hexdigest()[:8]
  content_key = hashlib.sha256(f'{stat.st_size}\n{stat.st_mtime_ns}'.encode()).hexdigest()[:12]
  prefix = os.path.join(data_dir, f'cuhk03_classic_{path_key}_')
  target = prefix + content_key
  if os.path.isfile(os.path.join(target, 'testsets.json')):
    return target
  os.makedirs(data_dir, exist_ok=True)
  print(f'cuhk03 (classic): extracting the images of {path} into {target} (once).', flush=True)
  tmp = tempfile.mkdtemp(prefix='.cuhk03_classic_', dir=data_dir)
  try:
    os.rmdir(tmp)
    _extract_mat(path, tmp)
    os.replace(tmp, target)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  for stale in os.listdir(data_dir):
    full = os.path.join(data_dir, stale)
    if full.startswith(prefix) and full != target:
      shutil.rmtree(full, ignore_errors=True)
  return target


def load_cuhk03_classic(root: str | os.PathLike[str], kind: str = 'labeled', trial: int = 1,
                        data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Split `trial` (1..20) of the classic CUHK03's `kind` boxes (module docstring).

  Args:
    root: `cuhk-03.mat`, or the folder holding it (or `cuhk03_release/cuhk-03.mat`).
    kind: 'labeled' or 'detected'.
    trial: which of the file's 20 test splits.
    data_dir: where the extracted images are kept (default: `$JREID_CACHE/tfds`).

  Raises:
    DatasetError: bad kind or trial, or a file that is not the classic CUHK03 layout.
  """
  if kind not in KINDS:
    raise DatasetError(f'cuhk03 (classic): unknown kind {kind!r}; expected one of {KINDS}.')
  if trial not in CLASSIC_TRIALS:
    raise DatasetError(f'cuhk03 (classic): config.dataset.trial={trial} is not one of the '
                       f'file\'s test splits 1..{len(CLASSIC_TRIALS)}.')
  folder = prepare_classic(root, data_dir)
  with open(os.path.join(folder, 'testsets.json')) as f:
    testsets = json.load(f)
  if len(testsets) < trial:
    raise DatasetError(f'cuhk03 (classic): {find_mat_file(root)} holds {len(testsets)} test '
                       f'splits, not {trial}; use config.dataset.trial in 1..{len(testsets)}.')
  test_ids = {1000 * int(pair) + int(person) for pair, person in testsets[trial - 1]}
  names = sorted(n for n in os.listdir(os.path.join(folder, kind)) if _CLASSIC_NAME.match(n))
  rows = []
  for name in names:
    pair, person, view, index = (int(x) for x in _CLASSIC_NAME.match(name).groups())
    rows.append((f'{kind}/{name}', 1000 * pair + person, 2 * (pair - 1) + view - 1, pair, index))
  absent = sorted(test_ids - {row[1] for row in rows})
  if absent:
    raise DatasetError(f'cuhk03 (classic): test split {trial} lists identity {absent[0]} '
                       f'(camera pair {absent[0] // 1000}, person {absent[0] % 1000}), which has '
                       f'no {kind} image in {find_mat_file(root)}. {_CLASSIC_EXPECTED}')

  def split(name: str, chosen: list[tuple[str, int, int, int, int]]) -> ReIDSplit:
    images = np.empty(len(chosen), dtype=object)
    for i, (filename, *_) in enumerate(chosen):
      with open(os.path.join(folder, filename), 'rb') as f:
        images[i] = f.read()
    pids = np.asarray([row[1] for row in chosen], np.int32)
    return ReIDSplit(
        name=name, images=images, pids=pids,
        camids=np.asarray([row[2] for row in chosen], np.int32),
        sessions=np.asarray([row[3] for row in chosen], np.int32),
        frames=np.asarray([row[4] for row in chosen], np.int64),
        filenames=[row[0] for row in chosen],
        labels=relabel(pids) if name == 'train' else pids.copy())

  test = [row for row in rows if row[1] in test_ids]
  return {'train': split('train', [row for row in rows if row[1] not in test_ids]),
          'query': split('query', test), 'gallery': split('gallery', test)}
