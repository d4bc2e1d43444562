"""Tests for the DukeMTMC-reID, MSMT17 (V1, V2) and VeRi-776 readers on tiny real-layout folders."""

import io
import os
import re
import shutil

import ml_collections
import numpy as np
from PIL import Image
import pytest

from data_pipelines import datasets
from data_pipelines import dukemtmc
from data_pipelines import market1501
from data_pipelines import msmt17
from data_pipelines import reid_folder
from data_pipelines import veri
from data_pipelines.types import DatasetError

SPLITS = ('train', 'query', 'gallery')

DUKE = {
    'bounding_box_train': ['0001_c2_f0046182.jpg', '0001_c6_f0102354.jpg', '0005_c1_f0000001.jpg',
                           '0012_c8_f0227540.jpg'],
    'query': ['0003_c1_f0046000.jpg', '0012_c5_f0000100.jpg'],
    'bounding_box_test': ['0003_c2_f0046200.jpg', '0012_c8_f0100000.jpg', '7000_c3_f0123456.jpg'],
}
DUKE_FOLDERS = {'train': 'bounding_box_train', 'query': 'query', 'gallery': 'bounding_box_test'}

VERI = {
    'image_train': ['0001_c001_00016450_0.jpg', '0001_c002_00030600_1.jpg',
                    '0010_c011_99999999_0.jpg', '0776_c020_00012345_0.jpg'],
    'image_query': ['0002_c002_00030600_1.jpg', '0005_c010_00000001_0.jpg'],
    'image_test': ['0002_c002_00031000_0.jpg', '0002_c003_00030700_0.jpg',
                   '0005_c019_00084512_1.jpg'],
}
VERI_FOLDERS = {'train': 'image_train', 'query': 'image_query', 'gallery': 'image_test'}

# List file -> lines '<path under the image folder> <pid>' (list_val is not part of 'train').
MSMT = {
    'list_train.txt': ['0000/0000_000_01_0303morning_0015_0.jpg 0',
                       '0000/0000_001_05_0303noon_0030_1.jpg 0',
                       '0009/0009_000_15_0113afternoon_0100_0.jpg 9'],
    'list_val.txt': ['0005/0005_000_10_0302morning_0007_0.jpg 5'],
    'list_query.txt': ['0003/0003_000_02_0304noon_0010_0.jpg 3'],
    'list_gallery.txt': ['0003/0003_001_07_0304afternoon_0200_0.jpg 3',
                         '0100/0100_000_12_0113morning_0001_1.jpg 100'],
}
MSMT_SPLIT_LISTS = {'train': ['list_train.txt'], 'query': ['list_query.txt'],
                    'gallery': ['list_gallery.txt']}
MSMT_FOLDERS = {'v1': ('train', 'test'), 'v2': ('mask_train_v2', 'mask_test_v2')}


def tiny_jpeg(seed):
  """A distinct 8x4 JPEG per seed."""
  pixels = np.random.default_rng(seed).integers(0, 256, (8, 4, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG')
  return buffer.getvalue()


def write_folders(root, files):
  """Writes {folder: [names]} under root, with the clutter of real archives."""
  seed = 0
  for folder, names in files.items():
    os.makedirs(root / folder)
    (root / folder / 'Thumbs.db').write_bytes(b'not an image')
    (root / folder / f'._{names[0]}').write_bytes(b'macOS resource fork')
    for name in names:
      (root / folder / name).write_bytes(tiny_jpeg(seed))
      seed += 1
  return root


def write_msmt(root, version):
  """Writes the MSMT list files and the images they list, in the V1 or V2 folders."""
  train_folder, test_folder = MSMT_FOLDERS[version]
  os.makedirs(root)
  for seed, (list_name, lines) in enumerate(MSMT.items()):
    (root / list_name).write_text(''.join(f'{line}\n' for line in lines))
    folder = train_folder if list_name in ('list_train.txt', 'list_val.txt') else test_folder
    for index, line in enumerate(lines):
      image = root / folder / line.split()[0]
      image.parent.mkdir(parents=True, exist_ok=True)
      image.write_bytes(tiny_jpeg(100 * seed + index))
  return root


# Plain reference parsers: (pid, camid, session, frame) by string splitting.
def duke_fields(name):
  pid, camera, frame = name[:-len('.jpg')].split('_')
  return int(pid), int(camera[1:]) - 1, 1, int(frame[1:])


def veri_fields(name):
  pid, camera, frame, _ = name[:-len('.jpg')].split('_')
  return int(pid), int(camera[1:]) - 1, 1, int(frame)


def msmt_expected(version, split):
  """[(path under root, pid, camid)] of a split, sorted by path."""
  train_folder, test_folder = MSMT_FOLDERS[version]
  rows = []
  for list_name in MSMT_SPLIT_LISTS[split]:
    folder = train_folder if split == 'train' else test_folder
    for line in MSMT[list_name]:
      path, pid = line.split(' ')
      rows.append((f'{folder}/{path}', int(pid), int(path.split('_')[2]) - 1))
  return sorted(rows)


def folder_expected(files, folders, fields, split):
  """[(path under root, pid, camid, session, frame)] of a split of a folder layout."""
  folder = folders[split]
  return [(f'{folder}/{name}', *fields(name)) for name in sorted(files[folder])]


def expected_rows(dataset, split):
  if dataset == 'dukemtmc':
    return folder_expected(DUKE, DUKE_FOLDERS, duke_fields, split)
  if dataset == 'veri':
    return folder_expected(VERI, VERI_FOLDERS, veri_fields, split)
  version = dataset.split('_')[1]
  return [(path, pid, camid, 1, 0) for path, pid, camid in msmt_expected(version, split)]


def write_dataset(root, dataset):
  if dataset == 'dukemtmc':
    return write_folders(root, DUKE)
  if dataset == 'veri':
    return write_folders(root, VERI)
  return write_msmt(root, dataset.split('_')[1])


LOADERS = {'dukemtmc': dukemtmc.load_dukemtmc, 'veri': veri.load_veri,
           'msmt17_v1': msmt17.load_msmt17, 'msmt17_v2': msmt17.load_msmt17}
ALL = tuple(LOADERS)


@pytest.fixture(scope='module', params=ALL)
def loaded(request, tmp_path_factory):
  """(dataset, root, splits) for each fixture folder."""
  dataset = request.param
  root = write_dataset(tmp_path_factory.mktemp(dataset) / 'data', dataset)
  return dataset, root, LOADERS[dataset](root, data_dir=tmp_path_factory.mktemp('tfds'))


@pytest.mark.parametrize('name, fields', [
    ('0001_c2_f0046182.jpg', (1, 1, 46182)), ('7000_c8_f0227540.jpg', (7000, 7, 227540)),
    ('/x/query/0000_c1_f0000000.jpg', (0, 0, 0))])
def test_parse_dukemtmc(name, fields):
  parsed = dukemtmc.parse_dukemtmc_name(name)
  assert (parsed.pid, parsed.camid, parsed.frame, parsed.session) == (*fields, 1)
  pid, camid, _, frame = duke_fields(os.path.basename(name))
  assert (pid, camid, frame) == fields


@pytest.mark.parametrize('name, fields', [
    ('0001_c001_00016450_0.jpg', (1, 0, 16450, 0)),
    ('0776_c020_99999999_1.jpg', (776, 19, 99999999, 1)),
    ('/x/image_test/0042_c011_00000007_2.jpg', (42, 10, 7, 2))])
def test_parse_veri(name, fields):
  parsed = veri.parse_veri_name(name)
  assert (parsed.pid, parsed.camid, parsed.frame, parsed.index, parsed.session) == (*fields, 1)
  pid, camid, _, frame = veri_fields(os.path.basename(name))
  assert (pid, camid, frame) == fields[:3]


@pytest.mark.parametrize('name, fields', [
    ('0000_000_01_0303morning_0015_0.jpg', (0, 0, '0303morning')),
    ('3059/3059_012_15_0113afternoon_1234_1.jpg', (3059, 14, '0113afternoon')),
    ('1040_007_10_0302noon_0001_0.jpg', (1040, 9, '0302noon'))])
def test_parse_msmt17(name, fields):
  parsed = msmt17.parse_msmt17_name(name)
  assert (parsed.pid, parsed.camid, parsed.date, parsed.session, parsed.frame) == (*fields, 1, 0)
  assert int(os.path.basename(name).split('_')[2]) - 1 == fields[1]


MALFORMED = [
    *[(dukemtmc.parse_dukemtmc_name, 'dukemtmc',
       'PPPP_cC_fFFFFFFF.jpg, camera C in 1-8 (e.g. 0001_c2_f0046182.jpg)', name)
      for name in ['foo.jpg', '001_c2_f0046182.jpg', '0001_c9_f0046182.jpg', '0001_c0_f0046182.jpg',
                   '0001_c2_f046182.jpg', '0001_c2_0046182.jpg', '0001_c2s1_000451_03.jpg',
                   '0001_c2_f0046182.JPG']],
    *[(veri.parse_veri_name, 'veri', 'VVVV_cCCC_FFFFFFFF_N.jpg, camera CCC in 001-020 '
       '(e.g. 0001_c001_00016450_0.jpg)', name)
      for name in ['foo.jpg', '0001_c000_00016450_0.jpg', '0001_c021_00016450_0.jpg',
                   '0001_c01_00016450_0.jpg', '0001_c001_0016450_0.jpg', '0001_c001_00016450.jpg']],
    *[(msmt17.parse_msmt17_name, 'msmt17', 'PPPP_NNN_CC_DDDDperiod_XXXX_Y.jpg, camera CC in '
       '01-15 (e.g. 0000_000_01_0303morning_0015_0.jpg)', name)
      for name in ['foo.jpg', '0000_000_00_0303morning_0015_0.jpg',
                   '0000_000_16_0303morning_0015_0.jpg', '0000_000_1_0303morning_0015_0.jpg',
                   '0000_000_01_morning_0015_0.jpg', '0000_000_01_0303morning_0015.jpg']],
]


@pytest.mark.parametrize('parse, dataset, expected, name', MALFORMED)
def test_parse_rejects_malformed_names(parse, dataset, expected, name):
  with pytest.raises(DatasetError) as error:
    parse(f'/x/query/{name}')
  assert str(error.value) == f'{dataset}: cannot parse {name!r} in /x/query: expected {expected}'


def test_load_fields_and_labels(loaded):
  dataset, root, splits = loaded
  assert list(splits) == list(SPLITS)
  for split, data in splits.items():
    rows = expected_rows(dataset, split)
    assert data.name == split
    assert data.filenames == [row[0] for row in rows]
    fields = np.array([row[1:] for row in rows])
    np.testing.assert_array_equal(data.pids, fields[:, 0])
    np.testing.assert_array_equal(data.camids, fields[:, 1])
    np.testing.assert_array_equal(data.sessions, fields[:, 2])
    np.testing.assert_array_equal(data.frames, fields[:, 3])
    assert (data.pids.dtype, data.camids.dtype, data.sessions.dtype, data.frames.dtype,
            data.labels.dtype) == (np.int32, np.int32, np.int32, np.int64, np.int32)
    assert data.images.dtype == object and data.images.shape == (len(rows),)
    for image, filename in zip(data.images, data.filenames):
      assert image == (root / filename).read_bytes()
    if split == 'train':
      # Sorted-id relabelling, by hand.
      order = {pid: label for label, pid in enumerate(sorted(set(fields[:, 0])))}
      np.testing.assert_array_equal(data.labels, [order[pid] for pid in fields[:, 0]])
    else:
      np.testing.assert_array_equal(data.labels, data.pids)


def test_expected_counts_and_labels(loaded):
  """The fixture facts, written out: a check of the references above."""
  dataset, _, splits = loaded
  counts = {split: len(data) for split, data in splits.items()}
  train = splits['train']
  if dataset == 'dukemtmc':
    assert counts == {'train': 4, 'query': 2, 'gallery': 3}
    np.testing.assert_array_equal(train.pids, [1, 1, 5, 12])
    np.testing.assert_array_equal(train.camids, [1, 5, 0, 7])
    np.testing.assert_array_equal(train.frames, [46182, 102354, 1, 227540])
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 2])
  elif dataset == 'veri':
    assert counts == {'train': 4, 'query': 2, 'gallery': 3}
    np.testing.assert_array_equal(train.pids, [1, 1, 10, 776])
    np.testing.assert_array_equal(train.camids, [0, 1, 10, 19])
    np.testing.assert_array_equal(train.frames, [16450, 30600, 99999999, 12345])
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 2])
  else:
    # list_val (id 5) is not part of the training split (torchreid/FastReID's setting).
    assert counts == {'train': 3, 'query': 1, 'gallery': 2}
    np.testing.assert_array_equal(train.pids, [0, 0, 9])
    np.testing.assert_array_equal(train.camids, [0, 4, 14])
    np.testing.assert_array_equal(train.labels, [0, 0, 1])
    np.testing.assert_array_equal(splits['gallery'].pids, [3, 100])
    np.testing.assert_array_equal(splits['gallery'].camids, [6, 11])
    folder = MSMT_FOLDERS[dataset.split('_')[1]][0]
    assert not any('0005_000_10' in f for f in train.filenames)
    assert train.filenames[2] == f'{folder}/0009/0009_000_15_0113afternoon_0100_0.jpg'


def test_fast_reader_matches_tfds_reader(loaded, tmp_path):
  dataset, root, splits = loaded
  builder_cls = {'dukemtmc': dukemtmc.DukeMTMC, 'veri': veri.VeRi}.get(dataset, msmt17.MSMT17)
  data_dir = tmp_path / 'tfds'
  LOADERS[dataset](root, data_dir=data_dir)
  (prepared,) = data_dir.iterdir()
  assert prepared.name.startswith(f'{builder_cls.name}_')
  builder = builder_cls(data_dir=prepared)
  for split, data in splits.items():
    examples = list(reid_folder.tfds.as_numpy(builder.as_dataset(
        split=split, decoders={'image': reid_folder.tfds.decode.SkipDecoding()})))
    assert [e['filename'].decode() for e in examples] == data.filenames
    assert [e['image'] for e in examples] == list(data.images)
    np.testing.assert_array_equal([e['pid'] for e in examples], data.pids)
    np.testing.assert_array_equal([e['camid'] for e in examples], data.camids)


def count_preparations(monkeypatch):
  calls = []
  split_generators = reid_folder.ReIDFolderBuilder._split_generators

  def counted(self, dl_manager):
    calls.append(self.name)
    return split_generators(self, dl_manager)

  monkeypatch.setattr(reid_folder.ReIDFolderBuilder, '_split_generators', counted)
  return calls


def test_cache_reused_and_refreshed_on_list_change(tmp_path, monkeypatch):
  root = write_msmt(tmp_path / 'MSMT17_V1', 'v1')
  monkeypatch.setenv('JREID_CACHE', str(tmp_path / 'cache'))
  calls = count_preparations(monkeypatch)
  first = msmt17.load_msmt17(root)
  second = msmt17.load_msmt17(root)
  assert calls == ['msmt17']
  assert second['train'].filenames == first['train'].filenames
  # Dropping a gallery line (an edited list file, a newer mtime) prepares a fresh copy.
  lines = MSMT['list_gallery.txt'][:1]
  (root / 'list_gallery.txt').write_text(''.join(f'{line}\n' for line in lines))
  newer = os.stat(root / 'train').st_mtime_ns + 10**9
  os.utime(root / 'list_gallery.txt', ns=(newer, newer))
  third = msmt17.load_msmt17(root)
  assert calls == ['msmt17', 'msmt17']
  assert len(third['gallery']) == 1
  assert len(list((tmp_path / 'cache' / 'tfds').iterdir())) == 1  # The new copy replaced the old.


@pytest.mark.parametrize('dataset, folder, layout', [
    ('dukemtmc', 'bounding_box_test', r'Expected the extracted DukeMTMC-reID layout: '
     r'<root>/bounding_box_train/'),
    ('veri', 'image_query', r'Expected the extracted VeRi-776 layout: <root>/image_train/'),
    ('msmt17_v1', 'test', r'Expected the extracted MSMT17 layout: <root>/train/ and <root>/test/'),
    ('msmt17_v2', 'mask_test_v2', r'Expected the extracted MSMT17 layout'),
])
def test_missing_folder(dataset, folder, layout, tmp_path):
  root = write_dataset(tmp_path / 'data', dataset)
  shutil.rmtree(root / folder)
  with pytest.raises(DatasetError, match=rf'data has no {folder}/ folder\. {layout}'):
    LOADERS[dataset](root, data_dir=tmp_path / 'tfds')
  assert not (tmp_path / 'tfds').exists()
  with pytest.raises(DatasetError, match=rf'dataset folder .*nowhere does not exist\. {layout}'):
    LOADERS[dataset](tmp_path / 'nowhere', data_dir=tmp_path / 'tfds')


@pytest.mark.parametrize('dataset', ALL)
def test_parent_folder_names_the_nested_dataset(dataset, tmp_path):
  write_dataset(tmp_path / 'data', dataset)
  with pytest.raises(DatasetError, match=r'has no \S+ (folder|file)\. Did you mean .*/data\?'):
    LOADERS[dataset](tmp_path, data_dir=tmp_path / 'tfds')


@pytest.mark.parametrize('dataset, folder, name', [
    ('dukemtmc', 'query', '0001_c2s1_000451_03.jpg'), ('veri', 'image_test', '0001_c1_0001_0.jpg')])
def test_malformed_name_in_folder(dataset, folder, name, tmp_path):
  root = write_dataset(tmp_path / 'data', dataset)
  (root / folder / name).write_bytes(tiny_jpeg(0))
  with pytest.raises(DatasetError, match=rf"{dataset}: cannot parse '{re.escape(name)}' in "
                     rf'{re.escape(str(root / folder))}: expected'):
    LOADERS[dataset](root, data_dir=tmp_path / 'tfds')


def test_msmt17_list_problems(tmp_path):
  root = write_msmt(tmp_path / 'MSMT17_V2', 'v2')
  data_dir = tmp_path / 'tfds'
  query = root / 'list_query.txt'
  query.write_text('0003/0003_000_02_0304noon_0010_0.jpg\n')
  with pytest.raises(DatasetError, match=r"cannot parse line 1 of .*list_query\.txt: "
                     r"'0003/0003_000_02_0304noon_0010_0\.jpg'; expected '<image path"):
    msmt17.load_msmt17(root, data_dir=data_dir)
  query.write_text('0003/0003_000_02_0304noon_0011_0.jpg 3\n')
  with pytest.raises(DatasetError, match=r'mask_test_v2/0003/0003_000_02_0304noon_0011_0\.jpg, '
                     r'listed on line 1 of .*list_query\.txt, does not exist'):
    msmt17.load_msmt17(root, data_dir=data_dir)
  (root / 'mask_test_v2' / '0003' / 'bad_name.jpg').write_bytes(tiny_jpeg(0))
  query.write_text('0003/bad_name.jpg 3\n')
  with pytest.raises(DatasetError, match=r"msmt17: cannot parse 'bad_name\.jpg' in "
                     r'.*mask_test_v2/0003: expected PPPP_NNN_CC'):
    msmt17.load_msmt17(root, data_dir=data_dir)
  query.write_text('\n')
  with pytest.raises(DatasetError, match=r"no images in list_query\.txt \(split 'query'\)"):
    msmt17.load_msmt17(root, data_dir=data_dir)
  os.remove(query)
  with pytest.raises(DatasetError, match=r'MSMT17_V2 has no list_query\.txt file\. Expected the '
                     r'extracted MSMT17 layout'):
    msmt17.load_msmt17(root, data_dir=data_dir)
  os.makedirs(root / 'train')
  with pytest.raises(DatasetError, match=r'holds both the V1 folders'):
    msmt17.load_msmt17(root, data_dir=data_dir)
  assert not data_dir.exists()


def test_folder_layout_expresses_market1501(tmp_path):
  """Market-1501 as a FolderLayout scans like `scan_market1501` (junk dropped from train)."""
  files = {'bounding_box_train': ['0002_c1s1_000451_03.jpg', '-1_c1s1_000999_00.jpg'],
           'query': ['0002_c2s1_000001_00.jpg'],
           'bounding_box_test': ['-1_c1s1_000100_00.jpg', '0002_c3s1_000300_01.jpg']}
  root = write_folders(tmp_path / 'market', files)
  layout = reid_folder.FolderLayout(
      name='market1501', description='', homepage='', expected='',
      folders=market1501.SPLIT_FOLDERS,
      name_format=reid_folder.NameFormat(
          dataset='market1501', regex=market1501.NAME_PATTERN, expected='',
          fields=lambda m: market1501.parse_market1501_name(m[0])),
      train_excludes=frozenset({-1}))
  assert layout.scan(str(root)) == market1501.scan_market1501(root)
  assert [path for path, _ in layout.scan(str(root))['train']] == [
      'bounding_box_train/0002_c1s1_000451_03.jpg']


@pytest.mark.parametrize('dataset', ALL)
def test_registry_round_trip(dataset, tmp_path):
  root = write_dataset(tmp_path / 'data', dataset)
  cfg = ml_collections.ConfigDict({'name': dataset.split('_v')[0], 'root': str(root),
                                   'cache_dir': str(tmp_path / 'cache')})
  splits = datasets.load_dataset(cfg)
  for split in SPLITS:
    assert splits[split].filenames == [row[0] for row in expected_rows(dataset, split)]
  (prepared,) = (tmp_path / 'cache' / 'tfds').iterdir()
  assert prepared.name.startswith(f'{cfg.name}_')
  cfg.root = ''
  with pytest.raises(DatasetError, match=rf'dataset {cfg.name} needs --config\.dataset\.root='):
    datasets.load_dataset(cfg)
