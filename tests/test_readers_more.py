"""Tests for the CUHK03-NP, CSV, SYSU-MM01, RegDB, RandPerson, ClonedPerson, partial / occluded,
VehicleID and VERI-Wild readers on tiny folders in each dataset's official layout."""

import io
import os
import random
import re
import shutil

import ml_collections
import numpy as np
from PIL import Image
import pytest

from data_pipelines import clonedperson
from data_pipelines import combine
from data_pipelines import csv_folder
from data_pipelines import cuhk03
from data_pipelines import datasets
from data_pipelines import partial
from data_pipelines import randperson
from data_pipelines import regdb
from data_pipelines import sysu_mm01
from data_pipelines import vehicleid
from data_pipelines import veriwild
from data_pipelines.types import DatasetError, ReIDSplit

_SEED = [0]


def pixels(seed):
  return np.random.default_rng(seed).integers(0, 256, (8, 4, 3), dtype=np.uint8)


def image_bytes(fmt, seed=None, mode='RGB'):
  """A distinct tiny image in `fmt` ('JPEG', 'PNG', 'BMP', 'TIFF')."""
  if seed is None:
    _SEED[0] += 1
    seed = _SEED[0]
  image = Image.fromarray(pixels(seed))
  if mode != 'RGB':
    image = image.convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, format=fmt)
  return buffer.getvalue()


def write(path, data):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


def write_text(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(''.join(f'{line}\n' for line in lines))


def decoded(data):
  return np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))


def columns(split):
  return list(zip(split.filenames, split.pids.tolist(), split.camids.tolist(),
                  split.sessions.tolist(), split.frames.tolist()))


def check_bytes(root, split):
  """Stored bytes equal the files' (JPEG/PNG), or decode to the same pixels (BMP/TIFF)."""
  for data, filename in zip(split.images, split.filenames):
    original = (root / filename).read_bytes()
    if filename.lower().endswith(('.jpg', '.png')):
      assert data == original
    else:
      assert data.startswith(b'\x89PNG')
      np.testing.assert_array_equal(decoded(data), decoded(original))


def sorted_labels(pids):
  order = {pid: label for label, pid in enumerate(sorted(set(pids)))}
  return [order[pid] for pid in pids]


# CUHK03-NP ----------------------------------------------------------------------------------

CUHK = {
    'bounding_box_train': ['0001_c1_1.png', '0001_c2_6.png', '0003_c1_2.png', '0007_c2_10.png'],
    'query': ['0010_c1_1.png', '0012_c2_7.png'],
    'bounding_box_test': ['0010_c2_6.png', '0012_c1_3.png', '0015_c1_1.png'],
}


def write_cuhk(root):
  for kind in cuhk03.KINDS:
    for folder, names in CUHK.items():
      for name in names:
        write(root / kind / folder / name, image_bytes('PNG'))
      (root / kind / folder / 'Thumbs.db').write_bytes(b'x')
  return root


def cuhk_rows(kind, folder):
  rows = []
  for name in sorted(CUHK[folder]):
    pid, camera, number = name[:-4].split('_')
    rows.append((f'{kind}/{folder}/{name}', int(pid), int(camera[1]) - 1, 1, int(number)))
  return rows


def test_cuhk03_np(tmp_path):
  root = write_cuhk(tmp_path / 'cuhk03-np')
  splits = cuhk03.load_cuhk03_np(root, 'detected', data_dir=tmp_path / 'tfds')
  for split, folder in (('train', 'bounding_box_train'), ('query', 'query'),
                        ('gallery', 'bounding_box_test')):
    assert columns(splits[split]) == cuhk_rows('detected', folder)
    check_bytes(root, splits[split])
  np.testing.assert_array_equal(splits['train'].labels, [0, 0, 1, 2])
  np.testing.assert_array_equal(splits['gallery'].labels, [10, 12, 15])
  assert splits['train'].summary() == {'ids': 3, 'images': 4, 'cameras': 2}
  # The labeled copy through the registry, with combine-all.
  cfg = ml_collections.ConfigDict({'name': 'cuhk03_np_labeled', 'root': str(root),
                                   'cache_dir': str(tmp_path / 'cache'), 'combine_all': True})
  combined = datasets.load_dataset(cfg)
  assert combined['train'].filenames == (
      [r[0] for r in cuhk_rows('labeled', 'bounding_box_train')] +
      [r[0] for r in cuhk_rows('labeled', 'query')] +
      [r[0] for r in cuhk_rows('labeled', 'bounding_box_test')])
  # Test ids shifted by max train id + 1 = 8; query and gallery share ids 10 and 12.
  np.testing.assert_array_equal(combined['train'].pids, [1, 1, 3, 7, 18, 20, 18, 20, 23])
  np.testing.assert_array_equal(combined['train'].labels, [0, 0, 1, 2, 3, 4, 3, 4, 5])
  assert combined['query'].filenames == [r[0] for r in cuhk_rows('labeled', 'query')]


def test_cuhk03_np_errors(tmp_path):
  root = write_cuhk(tmp_path / 'cuhk03-np')
  shutil.rmtree(root / 'labeled' / 'query')
  with pytest.raises(DatasetError, match=r'cuhk03_np_labeled: .*cuhk03-np has no labeled/query/ '
                     r'folder\. Expected the extracted CUHK03-NP layout: <root>/labeled/'):
    cuhk03.load_cuhk03_np(root, 'labeled', data_dir=tmp_path / 'tfds')
  with pytest.raises(DatasetError, match=r'has no detected/bounding_box_train/ folder\. Did you '
                     r'mean .*cuhk03-np\?'):
    cuhk03.load_cuhk03_np(tmp_path, 'detected', data_dir=tmp_path / 'tfds')
  write(root / 'detected' / 'query' / '0001_c3_1.png', image_bytes('PNG'))
  with pytest.raises(DatasetError, match=re.escape(
      f"cuhk03_np: cannot parse '0001_c3_1.png' in {root / 'detected' / 'query'}: expected "
      'PPPP_cC_N.png, camera C in 1-2 (e.g. 0001_c1_1.png)')):
    cuhk03.load_cuhk03_np(root, 'detected', data_dir=tmp_path / 'tfds')
  with pytest.raises(DatasetError, match=r"unknown kind 'both'"):
    cuhk03.load_cuhk03_np(root, 'both')
  assert not (tmp_path / 'tfds').exists()


# combine-all --------------------------------------------------------------------------------

def make_split(name, pids, camids, prefix):
  n = len(pids)
  return ReIDSplit(name=name, images=np.array([f'{prefix}{i}'.encode() for i in range(n)],
                                              dtype=object),
                   pids=np.array(pids, np.int32), camids=np.array(camids, np.int32),
                   sessions=np.ones(n, np.int32), frames=np.arange(n, dtype=np.int64),
                   filenames=[f'{prefix}/{i}.jpg' for i in range(n)],
                   labels=np.array(pids, np.int32))


def test_combine_all_reference():
  splits = {'train': make_split('train', [0, 5, 5], [0, 1, 2], 't'),
            'query': make_split('query', [0, 2, -1], [0, 1, 1], 'q'),
            'gallery': make_split('gallery', [0, 2, 9, -1], [2, 2, 0, 0], 'g')}
  # MSMT-like: id 0 is a person in both id spaces; only -1 is junk.
  combined = combine.combine_all(splits, combine.junk_ids('msmt17'))['train']
  expected = [('t/0.jpg', 0), ('t/1.jpg', 5), ('t/2.jpg', 5), ('q/0.jpg', 6), ('q/1.jpg', 8),
              ('g/0.jpg', 6), ('g/1.jpg', 8), ('g/2.jpg', 15)]
  assert list(zip(combined.filenames, combined.pids.tolist())) == expected
  np.testing.assert_array_equal(combined.labels, sorted_labels([p for _, p in expected]))
  np.testing.assert_array_equal(combined.camids, [0, 1, 2, 0, 1, 2, 2, 0])
  assert list(combined.images) == [b't0', b't1', b't2', b'q0', b'q1', b'g0', b'g1', b'g2']
  np.testing.assert_array_equal(combined.frames, [0, 1, 2, 0, 1, 0, 1, 2])
  # Market-like: 0000 is a distractor and is dropped too.
  market = combine.combine_all(splits, combine.junk_ids('market1501'))['train']
  assert market.filenames == ['t/0.jpg', 't/1.jpg', 't/2.jpg', 'q/1.jpg', 'g/1.jpg', 'g/2.jpg']
  np.testing.assert_array_equal(market.labels, [0, 1, 1, 2, 2, 3])


# CSV folder ---------------------------------------------------------------------------------

def write_csv(root):
  write(root / 'images' / 'a.jpg', image_bytes('JPEG'))
  write(root / 'images' / 'b.bmp', image_bytes('BMP'))
  write(root / 'images' / 'sub' / 'c.png', image_bytes('PNG'))
  write(root / 'images' / 'd.jpg', image_bytes('JPEG'))
  write(root / 'images' / 'e.jpg', image_bytes('JPEG'))
  write_text(root / 'train.csv', ['path,pid,camid,frame', 'images/b.bmp,7,1,30',
                                  'images/a.jpg,3,0,10', 'images/e.jpg,-1,0,0', ''])
  write_text(root / 'query.csv', ['camid,pid,path', '2,7,images/sub/c.png'])
  write_text(root / 'gallery.csv', ['path,pid,camid,session', 'images/d.jpg,7,0,3',
                                    'images/e.jpg,-1,1,1'])
  return root


def test_csv_folder(tmp_path):
  root = write_csv(tmp_path / 'mine')
  splits = csv_folder.load_csv_folder(root, data_dir=tmp_path / 'tfds')
  # Rows keep the file's order; junk (-1) is dropped from train only.
  assert columns(splits['train']) == [('images/b.bmp', 7, 1, 1, 30), ('images/a.jpg', 3, 0, 1, 10)]
  assert columns(splits['query']) == [('images/sub/c.png', 7, 2, 1, 0)]
  assert columns(splits['gallery']) == [('images/d.jpg', 7, 0, 3, 0), ('images/e.jpg', -1, 1, 1, 0)]
  np.testing.assert_array_equal(splits['train'].labels, [1, 0])
  for split in splits.values():
    check_bytes(root, split)
  # Train-only data: no query.csv and gallery.csv gives empty splits.
  os.remove(root / 'query.csv')
  os.remove(root / 'gallery.csv')
  splits = csv_folder.load_csv_folder(root, data_dir=tmp_path / 'tfds')
  assert (len(splits['train']), len(splits['query']), len(splits['gallery'])) == (2, 0, 0)


@pytest.mark.parametrize('edit, message', [
    (lambda r: os.remove(r / 'train.csv'), r'csv_folder: .*mine has no train\.csv file\. Expected '
     r'a folder of images'),
    (lambda r: os.remove(r / 'gallery.csv'), r'has query\.csv but no gallery\.csv; give both'),
    (lambda r: write_text(r / 'train.csv', ['path,id,camid', 'images/a.jpg,1,0']),
     r"the header of .*train\.csv is 'path,id,camid': expected the columns path,pid,camid"),
    (lambda r: write_text(r / 'train.csv', ['path,pid,camid', 'images/a.jpg,x,0']),
     r"line 2 of .*train\.csv: pid 'x' is not an integer"),
    (lambda r: write_text(r / 'train.csv', ['path,pid,camid', 'images/zz.jpg,1,0']),
     r'line 2 of .*train\.csv: image .*images/zz\.jpg does not exist'),
    (lambda r: write_text(r / 'train.csv', ['path,pid,camid', '../a.jpg,1,0']),
     r"path '\.\./a\.jpg' must be a relative, '/'-separated path"),
    (lambda r: write_text(r / 'train.csv', ['path,pid,camid', 'images/a.jpg,1']),
     r'line 2 of .*train\.csv has 2 fields, the header 3'),
    (lambda r: write_text(r / 'train.csv', ['path,pid,camid']),
     r"no images in .*train\.csv \(split 'train'\)"),
])
def test_csv_folder_errors(edit, message, tmp_path):
  root = write_csv(tmp_path / 'mine')
  edit(root)
  with pytest.raises(DatasetError, match=message):
    csv_folder.load_csv_folder(root, data_dir=tmp_path / 'tfds')


def test_corrupt_image(tmp_path):
  # Stored as it is: validate.validate_splits skips or refuses it by name (test_reliability.py).
  root = write_csv(tmp_path / 'mine')
  (root / 'images' / 'a.jpg').write_bytes(b'')
  (root / 'images' / 'b.bmp').write_bytes(b'BM' + b'\0' * 10)
  splits = csv_folder.load_csv_folder(root, data_dir=tmp_path / 'tfds')
  assert list(splits['train'].images) == [b'BM' + b'\0' * 10, b'']


# SYSU-MM01 ----------------------------------------------------------------------------------

SYSU_IDS = {'train_id.txt': [1, 2], 'val_id.txt': [4], 'test_id.txt': [6, 9]}
# (camera, id) -> image numbers.
SYSU_IMAGES = {
    (1, 1): [1, 2], (3, 1): [1], (6, 2): [3, 4], (4, 4): [1], (5, 4): [2],
    (1, 6): [1, 2, 3], (2, 6): [5], (3, 6): [1, 2], (6, 6): [7], (4, 9): [1, 3, 8, 9],
    (5, 9): [2], (3, 9): [4], (2, 9): [2, 6],
    (2, 7): [1],  # id 7 is in no list: never read.
}


def write_sysu(root):
  for (camera, pid), numbers in SYSU_IMAGES.items():
    for number in numbers:
      write(root / f'cam{camera}' / f'{pid:04d}' / f'{number:04d}.jpg', image_bytes('JPEG'))
  for camera in range(1, 7):
    (root / f'cam{camera}').mkdir(parents=True, exist_ok=True)
  for name, ids in SYSU_IDS.items():
    write_text(root / 'exp' / name, [','.join(str(i) for i in ids)])
  return root


def sysu_rows(ids, cameras):
  return sorted((f'cam{c}/{p:04d}/{n:04d}.jpg', p, c - 1, 1, n)
                for (c, p), numbers in SYSU_IMAGES.items() if c in cameras and p in ids
                for n in numbers)


def reference_sysu_gallery(root, trial, mode):
  """AGW's single-shot gallery draw, on the folder (plain re-statement of the reference)."""
  random.seed(trial)
  cameras = ['cam1', 'cam2', 'cam4', 'cam5'] if mode == 'all' else ['cam1', 'cam2']
  ids = ['%04d' % x for x in SYSU_IDS['test_id.txt']]
  files = []
  for pid in sorted(ids):
    for cam in cameras:
      img_dir = os.path.join(root, cam, pid)
      if os.path.isdir(img_dir):
        files.append(random.choice(sorted(img_dir + '/' + i for i in os.listdir(img_dir))))
  return [os.path.relpath(f, root) for f in files]


@pytest.fixture(scope='module')
def sysu(tmp_path_factory):
  root = write_sysu(tmp_path_factory.mktemp('sysu') / 'SYSU-MM01')
  return root, sysu_mm01.load_sysu_mm01(root, data_dir=tmp_path_factory.mktemp('tfds'))


def test_sysu_mm01_splits(sysu):
  root, splits = sysu
  assert columns(splits['train']) == sysu_rows({1, 2, 4}, range(1, 7))
  assert columns(splits['query']) == sysu_rows({6, 9}, (3, 6))
  assert columns(splits['gallery']) == sysu_rows({6, 9}, (1, 2, 4, 5))
  for split in splits.values():
    check_bytes(root, split)
  np.testing.assert_array_equal(sysu_mm01.is_infrared(splits['train']),
                                ['cam3' in f or 'cam6' in f for f in splits['train'].filenames])
  assert sysu_mm01.is_infrared(splits['query']).all()
  assert not sysu_mm01.is_infrared(splits['gallery']).any()
  assert splits['gallery'].summary() == {'ids': 2, 'images': 11, 'cameras': 4}


@pytest.mark.parametrize('mode', ['all', 'indoor'])
def test_sysu_mm01_gallery_trials_match_reference(sysu, mode):
  root, splits = sysu
  gallery = splits['gallery']
  draws = set()
  for trial in range(10):
    chosen = sysu_mm01.sample_gallery(gallery, trial, mode)
    picked = [gallery.filenames[i] for i in chosen]
    assert picked == reference_sysu_gallery(str(root), trial, mode)
    draws.add(tuple(picked))
  assert len(draws) > 1  # The trials differ.
  multi = sysu_mm01.sample_gallery(gallery, 3, mode, shots=10)
  # Multi-shot: every image of each (id, camera) once, as there are fewer than 10.
  cameras = (1, 2, 4, 5) if mode == 'all' else (1, 2)
  assert sorted(gallery.filenames[i] for i in multi) == [
      r[0] for r in sysu_rows({6, 9}, cameras)]


def test_sysu_mm01_errors(tmp_path):
  root = write_sysu(tmp_path / 'SYSU-MM01')
  data_dir = tmp_path / 'tfds'
  write_text(root / 'exp' / 'test_id.txt', ['6;9'])
  with pytest.raises(DatasetError, match=r"sysu_mm01: cannot parse .*exp/test_id\.txt: expected "
                     r"comma-separated ids on one line"):
    sysu_mm01.load_sysu_mm01(root, data_dir=data_dir)
  os.remove(root / 'exp' / 'val_id.txt')
  with pytest.raises(DatasetError, match=r'SYSU-MM01 has no exp/val_id\.txt file\. Expected the '
                     r'extracted SYSU-MM01 layout'):
    sysu_mm01.load_sysu_mm01(root, data_dir=data_dir)
  shutil.rmtree(root / 'cam6')
  with pytest.raises(DatasetError, match=r'SYSU-MM01 has no cam6/ folder\.'):
    sysu_mm01.load_sysu_mm01(root, data_dir=data_dir)
  root = write_sysu(tmp_path / 'other')
  write(root / 'cam1' / '0006' / 'img1.jpg', image_bytes('JPEG'))
  with pytest.raises(DatasetError, match=r"sysu_mm01: cannot parse 'img1\.jpg' in .*cam1/0006: "
                     r'expected NNNN\.jpg'):
    sysu_mm01.load_sysu_mm01(root, data_dir=data_dir)
  assert not data_dir.exists()


# RegDB --------------------------------------------------------------------------------------

def regdb_name(pid, modality, number):
  letter = modality[0].lower()
  return f'{modality}/{pid}/male_back_{letter}_{number:05d}_{pid}.bmp'


REGDB_LISTS = {  # (trial, list) -> [(pid folder, image number, label)].
    (1, 'train_visible'): [(1, 1, 0), (1, 2, 0), (3, 5, 1)],
    (1, 'train_thermal'): [(1, 1, 0), (3, 5, 1)],
    (1, 'test_visible'): [(2, 3, 0), (4, 7, 1)],
    (1, 'test_thermal'): [(2, 3, 0), (2, 4, 0), (4, 7, 1)],
    (2, 'train_visible'): [(2, 3, 0)],
    (2, 'train_thermal'): [(2, 4, 0)],
    (2, 'test_visible'): [(1, 1, 0), (3, 5, 1)],
    (2, 'test_thermal'): [(1, 1, 0), (3, 5, 1)],
}


def write_regdb(root):
  for (trial, list_name), rows in REGDB_LISTS.items():
    modality = 'Visible' if 'visible' in list_name else 'Thermal'
    lines = []
    for pid, number, label in rows:
      path = regdb_name(pid, modality, number)
      if not (root / path).exists():  # Thermal images are 8-bit grey BMPs.
        write(root / path, image_bytes('BMP', mode='RGB' if modality == 'Visible' else 'L'))
      lines.append(f'{path} {label}')
    write_text(root / 'idx' / f'{list_name}_{trial}.txt', lines)
  return root


def regdb_rows(trial, list_name, camid):
  modality = 'Visible' if camid == 0 else 'Thermal'
  return [(regdb_name(pid, modality, number), label, camid, 1, line)
          for line, (pid, number, label) in enumerate(REGDB_LISTS[(trial, list_name)], start=1)]


def test_regdb(tmp_path):
  root = write_regdb(tmp_path / 'RegDB')
  splits = regdb.load_regdb(root, trial=1, data_dir=tmp_path / 'tfds')
  assert columns(splits['train']) == (regdb_rows(1, 'train_visible', 0) +
                                      regdb_rows(1, 'train_thermal', 1))
  assert columns(splits['query']) == regdb_rows(1, 'test_visible', 0)
  assert columns(splits['gallery']) == regdb_rows(1, 'test_thermal', 1)
  np.testing.assert_array_equal(splits['train'].labels, [0, 0, 1, 0, 1])
  np.testing.assert_array_equal(regdb.is_infrared(splits['train']), [0, 0, 0, 1, 1])
  for split in splits.values():
    check_bytes(root, split)
  # Grey thermal BMPs come back as 3-channel PNGs.
  assert decoded(splits['gallery'].images[0]).shape == (8, 4, 3)
  # Trial 2 through the registry, thermal to visible through the loader.
  cfg = ml_collections.ConfigDict({'name': 'regdb', 'root': str(root), 'trial': 2,
                                   'cache_dir': str(tmp_path / 'cache')})
  assert columns(datasets.load_dataset(cfg)['query']) == regdb_rows(2, 'test_visible', 0)
  swapped = regdb.load_regdb(root, trial=1, query_modality='thermal', data_dir=tmp_path / 'tfds')
  assert (swapped['query'].name, swapped['gallery'].name) == ('query', 'gallery')
  assert columns(swapped['query']) == regdb_rows(1, 'test_thermal', 1)
  assert columns(swapped['gallery']) == regdb_rows(1, 'test_visible', 0)
  assert len(list((tmp_path / 'tfds').iterdir())) == 1  # The swap needs no new copy.


def test_regdb_errors(tmp_path):
  root = write_regdb(tmp_path / 'RegDB')
  data_dir = tmp_path / 'tfds'
  with pytest.raises(DatasetError, match=r'trial must be one of 1\.\.10'):
    regdb.load_regdb(root, trial=11, data_dir=data_dir)
  lists = root / 'idx'
  write_text(lists / 'test_thermal_1.txt', [f'{regdb_name(2, "Visible", 3)} 0'])
  with pytest.raises(DatasetError, match=r"line 1 of .*test_thermal_1\.txt lists "
                     r"'Visible/2/.*', not an image under Thermal/"):
    regdb.load_regdb(root, data_dir=data_dir)
  write_text(lists / 'test_thermal_1.txt', [regdb_name(2, 'Thermal', 3)])
  with pytest.raises(DatasetError, match=r"cannot parse line 1 of .*test_thermal_1\.txt: "
                     r"'Thermal/2/male_back_t_00003_2\.bmp'; expected '<image path"):
    regdb.load_regdb(root, data_dir=data_dir)
  write_text(lists / 'test_thermal_1.txt', [f'{regdb_name(2, "Thermal", 9)} 0'])
  with pytest.raises(DatasetError, match=r'Thermal/2/male_back_t_00009_2\.bmp, listed on line 1 '
                     r'of .*test_thermal_1\.txt, does not exist'):
    regdb.load_regdb(root, data_dir=data_dir)
  os.remove(lists / 'test_thermal_1.txt')
  with pytest.raises(DatasetError, match=r'RegDB has no idx/test_thermal_1\.txt file\. Expected '
                     r'the extracted RegDB layout'):
    regdb.load_regdb(root, data_dir=data_dir)
  assert not data_dir.exists()


# RandPerson and ClonedPerson ----------------------------------------------------------------

RANDPERSON = ['000000_s00_c00_f000264.jpg', '000000_s00_c01_f001632.jpg',
              '000003_s04_c00_f010000.jpg', '000007_s10_c01_f000024.jpg']


def test_randperson(tmp_path):
  root = tmp_path / 'randperson'
  for name in RANDPERSON:
    write(root / 'randperson_subset' / name, image_bytes('JPEG'))
  splits = randperson.load_randperson(root, data_dir=tmp_path / 'tfds')
  # camid = offset[scene] + camera with offsets 0, 2, 4, 6, 8, ... (scene 4 -> 8, 10 -> 15).
  assert columns(splits['train']) == [
      ('randperson_subset/000000_s00_c00_f000264.jpg', 0, 0, 1, 264),
      ('randperson_subset/000000_s00_c01_f001632.jpg', 0, 1, 1, 1632),
      ('randperson_subset/000003_s04_c00_f010000.jpg', 3, 8, 5, 10000),
      ('randperson_subset/000007_s10_c01_f000024.jpg', 7, 16, 11, 24)]
  np.testing.assert_allclose(randperson.time_seconds(splits['train']),
                             [264 / 24, 1632 / 24, (640000 + 10000) / 24, (3490000 + 24) / 24])
  np.testing.assert_array_equal(splits['train'].labels, [0, 0, 1, 2])
  assert len(splits['query']) == len(splits['gallery']) == 0
  write(root / 'randperson_subset' / '000001_s11_c00_f000001.jpg', image_bytes('JPEG'))
  with pytest.raises(DatasetError, match=r"randperson: scene 11 of '000001_s11_c00_f000001\.jpg' "
                     r'is not one of the 11 scenes'):
    randperson.load_randperson(root, data_dir=tmp_path / 'tfds')
  with pytest.raises(DatasetError, match=r'has no randperson_subset/ folder\. Did you mean'):
    randperson.load_randperson(tmp_path, data_dir=tmp_path / 'tfds')


CLONED = {
    'train': ['700000_s02_c00_f023389.jpg', '700000_s06_c00_f023413.jpg',
              '700002_s12_c03_f000001.jpg', '-1_s00_c00_f000002.jpg'],
    'test/query': ['705227_s02_c02_f001117.jpg', '705624_s12_c00_f003229.jpg'],
    'test/gallery': ['705228_s06_c02_f005521.jpg', '705624_s12_c02_f002965.jpg',
                     '-1_s03_c01_f000100.jpg'],
}


def test_clonedperson(tmp_path):
  root = tmp_path / 'clonedperson'
  for folder, names in CLONED.items():
    for name in names:
      write(root / folder / name, image_bytes('JPEG'))
  splits = clonedperson.load_clonedperson(root, data_dir=tmp_path / 'tfds')
  assert columns(splits['train']) == [  # Junk dropped from train; camid = offset[scene] + cam.
      ('train/700000_s02_c00_f023389.jpg', 700000, 0, 3, 23389),
      ('train/700000_s06_c00_f023413.jpg', 700000, 12, 7, 23413),
      ('train/700002_s12_c03_f000001.jpg', 700002, 23, 13, 1)]
  assert columns(splits['gallery']) == [
      ('test/gallery/-1_s03_c01_f000100.jpg', -1, 5, 4, 100),
      ('test/gallery/705228_s06_c02_f005521.jpg', 705228, 14, 7, 5521),
      ('test/gallery/705624_s12_c02_f002965.jpg', 705624, 22, 13, 2965)]
  np.testing.assert_array_equal(clonedperson.clonedperson_qaconv_camids(splits['gallery']),
                                [1, 2, 2])
  assert splits['query'].camids.tolist() == [2, 20]
  write(root / 'test' / 'query' / '705227_s02_c2_f001117.jpg', image_bytes('JPEG'))
  with pytest.raises(DatasetError, match=r"clonedperson: cannot parse '705227_s02_c2_f001117\.jpg'"
                     r' in .*test/query: expected PPPPPP_sSS_cCC_fFFFFFF\.jpg'):
    clonedperson.load_clonedperson(root, data_dir=tmp_path / 'tfds')


# Partial-REID, Partial-iLIDS, Occluded-REID -------------------------------------------------

def test_partial_datasets(tmp_path):
  data_dir = tmp_path / 'tfds'
  reid = tmp_path / 'Partial_REID'
  for folder in ('partial_body_images', 'whole_body_images', 'occluded_body_images'):
    for name in ('001_01.jpg', '001_02.jpg', '060_05.jpg'):
      write(reid / folder / name, image_bytes('JPEG'))
  splits = partial.load_partial('partial_reid', reid, data_dir)
  assert columns(splits['query']) == [('partial_body_images/001_01.jpg', 1, 0, 1, 1),
                                      ('partial_body_images/001_02.jpg', 1, 0, 1, 2),
                                      ('partial_body_images/060_05.jpg', 60, 0, 1, 5)]
  assert [row[1:3] for row in columns(splits['gallery'])] == [(1, 1), (1, 1), (60, 1)]
  assert len(splits['train']) == 0

  ilids = tmp_path / 'Partial_iLIDS'
  for folder, names in (('query', ['001.jpg', '119.jpg']), ('gallery', ['001.jpg', '119.jpg'])):
    for name in names:
      write(ilids / folder / name, image_bytes('JPEG'))
  splits = partial.load_partial('partial_ilids', ilids, data_dir)
  assert columns(splits['query']) == [('query/001.jpg', 1, 0, 1, 0), ('query/119.jpg', 119, 0, 1, 0)]
  assert columns(splits['gallery']) == [('gallery/001.jpg', 1, 1, 1, 0),
                                        ('gallery/119.jpg', 119, 1, 1, 0)]

  occluded = tmp_path / 'Occluded_REID'
  for folder in ('occluded_body_images', 'whole_body_images'):
    for pid, number in ((1, 1), (1, 2), (200, 3)):
      write(occluded / folder / f'{pid:03d}' / f'{pid:03d}_{number:02d}.tif', image_bytes('TIFF'))
  cfg = ml_collections.ConfigDict({'name': 'occluded_reid', 'root': str(occluded),
                                   'cache_dir': str(tmp_path / 'cache')})
  splits = datasets.DATASETS['occluded_reid'](cfg)
  assert columns(splits['query']) == [('occluded_body_images/001/001_01.tif', 1, 0, 1, 1),
                                      ('occluded_body_images/001/001_02.tif', 1, 0, 1, 2),
                                      ('occluded_body_images/200/200_03.tif', 200, 0, 1, 3)]
  assert splits['gallery'].camids.tolist() == [1, 1, 1]
  check_bytes(occluded, splits['query'])
  # Errors: a missing gallery folder, a malformed name.
  shutil.rmtree(occluded / 'whole_body_images')
  with pytest.raises(DatasetError, match=r'occluded_reid: .*Occluded_REID has no '
                     r'whole_body_images/ folder\. Expected the extracted Occluded-REID layout'):
    partial.load_partial('occluded_reid', occluded, data_dir)
  write(reid / 'whole_body_images' / '001-03.jpg', image_bytes('JPEG'))
  with pytest.raises(DatasetError, match=r"partial_reid: cannot parse '001-03\.jpg' in "
                     r'.*whole_body_images: expected PPP_NN\.jpg'):
    partial.load_partial('partial_reid', reid, data_dir)


# VehicleID ----------------------------------------------------------------------------------

VEHICLEID_TRAIN = [('0000001', 2), ('0000002', 2), ('0000005', 9)]
VEHICLEID_TEST = {800: [('0000010', 3), ('0000011', 3), ('0000012', 3), ('0000020', 8),
                        ('0000021', 8), ('0000030', 11)],
                  1600: [('0000010', 3), ('0000020', 8), ('0000040', 12), ('0000041', 12)]}


def write_vehicleid(root):
  rows = VEHICLEID_TRAIN + [row for rows in VEHICLEID_TEST.values() for row in rows]
  for image, _ in set(rows):
    write(root / 'image' / f'{image}.jpg', image_bytes('JPEG'))
  write_text(root / 'train_test_split' / 'train_list.txt', [f'{i} {v:04d}' for i, v in
                                                            VEHICLEID_TRAIN])
  for size, rows in VEHICLEID_TEST.items():
    write_text(root / 'train_test_split' / f'test_list_{size}.txt',
               [f'{i} {v:04d}' for i, v in rows])
  return root


def test_vehicleid(tmp_path):
  root = write_vehicleid(tmp_path / 'VehicleID_V1.0')
  splits = vehicleid.load_vehicleid(root, 'small', seed=0, data_dir=tmp_path / 'tfds')
  assert columns(splits['train']) == [(f'image/{i}.jpg', v, 0, 1, int(i))
                                      for i, v in VEHICLEID_TRAIN]
  query, gallery = splits['query'], splits['gallery']
  # One gallery image per vehicle, the rest queries; together the test list.
  assert sorted(gallery.pids.tolist()) == [3, 8, 11]
  assert sorted(query.filenames + gallery.filenames) == [f'image/{i}.jpg'
                                                         for i, _ in VEHICLEID_TEST[800]]
  assert (query.camids == 0).all() and (gallery.camids == 1).all()
  # The draw by hand: vehicles ascending, one integer draw each.
  rng = np.random.default_rng(0)
  expected = []
  for members in ([0, 1, 2], [3, 4], [5]):
    expected.append(VEHICLEID_TEST[800][members[rng.integers(len(members))]][0])
  assert gallery.filenames == [f'image/{i}.jpg' for i in expected]
  other = {tuple(vehicleid.load_vehicleid(root, 'small', seed=s, data_dir=tmp_path / 'tfds')
                 ['gallery'].filenames) for s in range(6)}
  assert len(other) > 1  # The seed changes the draw (and reuses the prepared copy).
  assert len(list((tmp_path / 'tfds').iterdir())) == 1
  cfg = ml_collections.ConfigDict({'name': 'vehicleid', 'root': str(root), 'trial': 0,
                                   'test_size': 'medium', 'cache_dir': str(tmp_path / 'cache')})
  medium = datasets.load_dataset(cfg)
  assert sorted(medium['gallery'].pids.tolist()) == [3, 8, 12]
  assert medium['query'].filenames in (['image/0000040.jpg'], ['image/0000041.jpg'])


def test_vehicleid_errors(tmp_path):
  root = write_vehicleid(tmp_path / 'VehicleID_V1.0')
  data_dir = tmp_path / 'tfds'
  with pytest.raises(DatasetError, match=r"test size must be one of \['large', 'medium', "
                     r"'small'\] \(config\.dataset\.test_size\), got 'huge'"):
    vehicleid.load_vehicleid(root, 'huge', data_dir=data_dir)
  with pytest.raises(DatasetError, match=r'VehicleID_V1\.0 has no train_test_split/'
                     r'test_list_2400\.txt file\. Expected the extracted VehicleID layout'):
    vehicleid.load_vehicleid(root, 'large', data_dir=data_dir)
  write_text(root / 'train_test_split' / 'test_list_800.txt', ['0000010,3'])
  with pytest.raises(DatasetError, match=r"cannot parse line 1 of .*test_list_800\.txt: "
                     r"'0000010,3'; expected '<image id> <vehicle id>'"):
    vehicleid.load_vehicleid(root, 'small', data_dir=data_dir)
  assert not data_dir.exists()


# VERI-Wild ----------------------------------------------------------------------------------

VERIWILD = {
    'train_list.txt': ['00001/000001', '00001/000002', '00004/000010'],
    'test_3000_query.txt': ['00010/000100'],
    'test_3000.txt': ['00010/000100', '00010/000101', '00012/000120'],
}
VERIWILD_CAMERAS = {'00001/000001': 28, '00001/000002': 3, '00004/000010': 174,
                    '00010/000100': 1, '00010/000101': 2, '00012/000120': 1}


def write_veriwild(root):
  for key in VERIWILD_CAMERAS:
    write(root / 'images' / f'{key}.jpg', image_bytes('JPEG'))
  for name, lines in VERIWILD.items():
    write_text(root / 'train_test_split' / name, lines)
  write_text(root / 'train_test_split' / 'vehicle_info.txt',
             ['id/image;Camera ID;Time;Model;Type;Color'] +
             [f'{key};{camera};2018-03-11 11:24:45;Changan;SUV;white'
              for key, camera in VERIWILD_CAMERAS.items()])
  return root


def test_veriwild(tmp_path):
  root = write_veriwild(tmp_path / 'VERI-Wild')
  cfg = ml_collections.ConfigDict({'name': 'veriwild', 'root': str(root), 'test_size': 'small',
                                   'cache_dir': str(tmp_path / 'cache')})
  splits = datasets.load_dataset(cfg)
  for split, name in (('train', 'train_list.txt'), ('query', 'test_3000_query.txt'),
                      ('gallery', 'test_3000.txt')):
    assert columns(splits[split]) == [
        (f'images/{key}.jpg', int(key[:5]), VERIWILD_CAMERAS[key], 1, int(key[6:]))
        for key in sorted(VERIWILD[name])]
    check_bytes(root, splits[split])
  assert splits['train'].summary() == {'ids': 2, 'images': 3, 'cameras': 3}
  with pytest.raises(DatasetError, match=r'VERI-Wild has no train_test_split/test_5000_query\.txt '
                     r'file\. Expected the extracted VERI-Wild layout'):
    veriwild.load_veriwild(root, 'medium', data_dir=tmp_path / 'tfds')
  write_text(root / 'train_test_split' / 'vehicle_info.txt',
             ['header'] + [f'{k};{c};t;m;t;c' for k, c in VERIWILD_CAMERAS.items()
                           if k != '00012/000120'])
  with pytest.raises(DatasetError, match=r"veriwild: '00012/000120' \(line 3 of .*test_3000\.txt\) "
                     r'has no line in .*vehicle_info\.txt'):
    veriwild.load_veriwild(root, 'small', data_dir=tmp_path / 'tfds')


def test_registry_needs_root():
  for name in ('cuhk03_np_detected', 'csv', 'sysu_mm01', 'regdb', 'randperson', 'vehicleid',
               'veriwild', 'partial_reid', 'clonedperson'):
    cfg = ml_collections.ConfigDict({'name': name, 'root': '', 'cache_dir': ''})
    with pytest.raises(DatasetError, match=rf'dataset {name} needs --config\.dataset\.root='):
      datasets.load_dataset(cfg)
