"""Tests for the Market-1501 reader on tiny folders in the real layout."""

import io
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from data_pipelines import market1501
from data_pipelines.types import DatasetError

# The fixture folder: real-layout names, a '.jpg.jpg' file, junk (-1) and distractors (0000) in
# the gallery, and one junk image in train that the reader must drop.
FILES = {
    'bounding_box_train': [
        '0002_c1s1_000451_03.jpg', '0002_c2s1_000301_01.jpg', '0007_c1s2_001234_00.jpg',
        '0007_c3s3_054321_02.jpg.jpg', '0010_c6s4_000010_01.jpg', '-1_c1s1_000999_00.jpg'],
    'query': ['0002_c1s1_000001_00.jpg', '0007_c2s2_000002_00.jpg', '0010_c5s3_000003_00.jpg'],
    'bounding_box_test': [
        '-1_c1s1_000100_00.jpg', '0000_c3s1_000200_05.jpg', '0002_c2s1_000300_01.jpg',
        '0007_c4s2_000400_00.jpg', '0010_c6s4_000500_02.jpg', '0010_c6s6_123456_07.jpg'],
}
SPLITS = {'train': 'bounding_box_train', 'query': 'query', 'gallery': 'bounding_box_test'}


def reference_fields(name):
  """(pid, camid, session, frame, bbox) of a Market-1501 name, by plain string splitting."""
  pid, camera_session, frame, bbox = name.split('.')[0].split('_')
  return int(pid), int(camera_session[1]) - 1, int(camera_session[3]), int(frame), int(bbox)


def expected_names(split):
  """The image names a split must hold, in file-name order (junk dropped from train)."""
  names = sorted(FILES[SPLITS[split]])
  if split == 'train':
    names = [name for name in names if not name.startswith('-1')]
  return names


def tiny_jpeg(seed):
  """A distinct 8x4 JPEG per seed."""
  pixels = np.random.default_rng(seed).integers(0, 256, (8, 4, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG')
  return buffer.getvalue()


def write_market(root):
  """Writes the FILES layout under root, plus the clutter of the real archive."""
  seed = 0
  for folder, names in FILES.items():
    os.makedirs(root / folder)
    (root / folder / 'Thumbs.db').write_bytes(b'not an image')
    (root / folder / f'._{names[0]}').write_bytes(b'macOS resource fork')
    for name in names:
      (root / folder / name).write_bytes(tiny_jpeg(seed))
      seed += 1
  os.makedirs(root / 'gt_bbox')
  (root / 'gt_bbox' / 'not_a_market_name.jpg').write_bytes(tiny_jpeg(seed))
  return root


@pytest.fixture(scope='module')
def loaded(tmp_path_factory):
  """A fixture folder and what `load_market1501` returns for it."""
  root = write_market(tmp_path_factory.mktemp('market') / 'Market-1501-v15.09.15')
  data_dir = tmp_path_factory.mktemp('tfds')
  return root, data_dir, market1501.load_market1501(root, data_dir=data_dir)


@pytest.fixture
def market(tmp_path):
  return write_market(tmp_path / 'Market-1501-v15.09.15')


@pytest.mark.parametrize('name, fields', [
    ('0002_c1s1_000451_03.jpg', (2, 0, 1, 451, 3)),
    ('1501_c6s4_001234_12.jpg', (1501, 5, 4, 1234, 12)),
    ('0000_c3s2_000000_00.jpg', (0, 2, 2, 0, 0)),
    ('-1_c2s3_123456_07.jpg', (-1, 1, 3, 123456, 7)),
    ('0007_c3s3_054321_02.jpg.jpg', (7, 2, 3, 54321, 2)),
    ('/some/query/0042_c5s2_000100_01.jpg', (42, 4, 2, 100, 1)),
])
def test_parse_name(name, fields):
  parsed = market1501.parse_market1501_name(name)
  assert (parsed.pid, parsed.camid, parsed.session, parsed.frame, parsed.bbox) == fields
  assert fields == reference_fields(os.path.basename(name))


@pytest.mark.parametrize('name', [
    'foo.jpg', '002_c1s1_000451_03.jpg', '0002_c0s1_000451_03.jpg', '0002_c1s1_00451_03.jpg',
    '0002_c1_000451_03.jpg', '0002_c1s1_000451_03.JPG', '0002_c1s1_000451_03.jpg.png',
    '0002_c1s1_000451_03_x.jpg', '٠٠٠٢_c1s1_000451_03.jpg'])
def test_parse_rejects_malformed_names(name):
  with pytest.raises(DatasetError) as error:
    market1501.parse_market1501_name(f'/x/query/{name}')
  assert str(error.value) == (
      f'market1501: cannot parse {name!r} in /x/query: expected PPPP_cCsS_FFFFFF_NN.jpg '
      '(e.g. 0002_c1s1_000451_03.jpg)')


def test_scan_lists_sorted_parsed_images(market):
  files = market1501.scan_market1501(market)
  assert list(files) == ['train', 'query', 'gallery']
  for split, folder in SPLITS.items():
    assert [path for path, _ in files[split]] == [f'{folder}/{n}' for n in expected_names(split)]
    for path, parsed in files[split]:
      fields = (parsed.pid, parsed.camid, parsed.session, parsed.frame, parsed.bbox)
      assert fields == reference_fields(os.path.basename(path))


def test_load_fields_and_labels(loaded):
  root, _, splits = loaded
  assert {split: len(data) for split, data in splits.items()} == {
      'train': 5, 'query': 3, 'gallery': 6}
  for split, data in splits.items():
    names = expected_names(split)
    fields = np.array([reference_fields(name) for name in names])
    assert data.name == split
    assert data.filenames == [f'{SPLITS[split]}/{name}' for name in names]
    np.testing.assert_array_equal(data.pids, fields[:, 0])
    np.testing.assert_array_equal(data.camids, fields[:, 1])
    np.testing.assert_array_equal(data.sessions, fields[:, 2])
    np.testing.assert_array_equal(data.frames, fields[:, 3])
    assert (data.pids.dtype, data.camids.dtype, data.sessions.dtype, data.frames.dtype,
            data.labels.dtype) == (np.int32, np.int32, np.int32, np.int64, np.int32)
    assert data.images.dtype == object and data.images.shape == (len(names),)
    for image, filename in zip(data.images, data.filenames):
      assert image == (root / filename).read_bytes()
  np.testing.assert_array_equal(splits['train'].pids, [2, 2, 7, 7, 10])
  np.testing.assert_array_equal(splits['train'].labels, [0, 0, 1, 1, 2])
  np.testing.assert_array_equal(splits['gallery'].pids, [-1, 0, 2, 7, 10, 10])
  np.testing.assert_array_equal(splits['gallery'].labels, splits['gallery'].pids)
  np.testing.assert_array_equal(splits['query'].labels, [2, 7, 10])
  assert splits['gallery'].summary() == {'ids': 5, 'images': 6, 'cameras': 5}


def test_fast_reader_matches_tfds_reader(loaded):
  """`load_market1501` parses TFRecords in batches; TFDS's own reader must give the same."""
  root, data_dir, splits = loaded
  (prepared,) = data_dir.iterdir()
  builder = market1501.Market1501(data_dir=prepared)
  for split, data in splits.items():
    dataset = builder.as_dataset(
        split=split, decoders={'image': market1501.tfds.decode.SkipDecoding()})
    examples = list(market1501.tfds.as_numpy(dataset))
    assert [e['filename'].decode() for e in examples] == data.filenames
    assert [e['image'] for e in examples] == list(data.images)
    np.testing.assert_array_equal([e['pid'] for e in examples], data.pids)
    np.testing.assert_array_equal([e['camid'] for e in examples], data.camids)
    np.testing.assert_array_equal([e['session'] for e in examples], data.sessions)
    np.testing.assert_array_equal([e['frame'] for e in examples], data.frames)


def count_preparations(monkeypatch):
  """Counts calls of the builder's `_split_generators` (called once per preparation)."""
  calls = []
  split_generators = market1501.Market1501._split_generators

  def counted(self, dl_manager):
    calls.append(dl_manager.manual_dir)
    return split_generators(self, dl_manager)

  monkeypatch.setattr(market1501.Market1501, '_split_generators', counted)
  return calls


def test_second_load_reuses_the_prepared_copy(market, tmp_path, monkeypatch):
  monkeypatch.setenv('JREID_CACHE', str(tmp_path / 'cache'))
  calls = count_preparations(monkeypatch)
  first = market1501.load_market1501(market)
  second = market1501.load_market1501(market)
  assert len(calls) == 1
  (prepared,) = (tmp_path / 'cache' / 'tfds').iterdir()
  assert prepared.name.startswith('market1501_')
  assert (prepared / 'market1501' / '1.0.0' / 'dataset_info.json').exists()
  for split in SPLITS:
    assert second[split].filenames == first[split].filenames
    assert list(second[split].images) == list(first[split].images)


def test_changed_folder_is_prepared_again(market, tmp_path, monkeypatch):
  calls = count_preparations(monkeypatch)
  data_dir = tmp_path / 'tfds'
  market1501.load_market1501(market, data_dir=data_dir)

  # A new image.
  (market / 'query' / '0010_c6s4_000004_00.jpg').write_bytes(tiny_jpeg(100))
  splits = market1501.load_market1501(market, data_dir=data_dir)
  assert len(calls) == 2
  assert splits['query'].filenames[-1] == 'query/0010_c6s4_000004_00.jpg'
  assert splits['query'].images[-1] == tiny_jpeg(100)

  # Same names and counts, one image rewritten (a newer mtime).
  rewritten = market / 'bounding_box_test' / '0007_c4s2_000400_00.jpg'
  rewritten.write_bytes(tiny_jpeg(101))
  newer = os.stat(market / 'query').st_mtime_ns + 10**9
  os.utime(rewritten, ns=(newer, newer))
  splits = market1501.load_market1501(market, data_dir=data_dir)
  assert len(calls) == 3
  assert splits['gallery'].images[3] == tiny_jpeg(101)
  assert len(list(data_dir.iterdir())) == 1  # Each new copy replaced the one before.


def test_missing_root(tmp_path):
  with pytest.raises(DatasetError, match=r'dataset folder .*nowhere does not exist\. Expected the '
                     r'extracted Market-1501 layout: <root>/bounding_box_train/.*Download '
                     r'Market-1501-v15\.09\.15\.zip from https://'):
    market1501.load_market1501(tmp_path / 'nowhere', data_dir=tmp_path / 'tfds')


def test_missing_split_folder(market, tmp_path):
  shutil.rmtree(market / 'bounding_box_test')
  with pytest.raises(DatasetError, match=r'Market-1501-v15\.09\.15 has no bounding_box_test/ '
                     r'folder\. Expected the extracted Market-1501 layout'):
    market1501.load_market1501(market, data_dir=tmp_path / 'tfds')
  assert not (tmp_path / 'tfds').exists()


def test_parent_folder_names_the_nested_dataset(market, tmp_path):
  with pytest.raises(DatasetError, match=r'has no bounding_box_train/ folder\. Did you mean '
                     r'.*/Market-1501-v15\.09\.15\?'):
    market1501.load_market1501(market.parent, data_dir=tmp_path / 'tfds')


def test_empty_split(market, tmp_path):
  for name in FILES['query']:
    os.remove(market / 'query' / name)
  with pytest.raises(DatasetError, match=r"no images in .*/query \(split 'query'\): expected "
                     r'files named PPPP_cCsS_FFFFFF_NN\.jpg'):
    market1501.load_market1501(market, data_dir=tmp_path / 'tfds')


def test_malformed_name_in_folder(market, tmp_path):
  (market / 'query' / 'foo.jpg').write_bytes(tiny_jpeg(0))
  with pytest.raises(DatasetError) as error:
    market1501.load_market1501(market, data_dir=tmp_path / 'tfds')
  assert str(error.value) == (
      f"market1501: cannot parse 'foo.jpg' in {market / 'query'}: expected "
      'PPPP_cCsS_FFFFFF_NN.jpg (e.g. 0002_c1s1_000451_03.jpg)')


def test_corrupt_image_is_stored_as_it_is(market, tmp_path):
  # validate.validate_splits skips or refuses it by name (test_reliability.py).
  broken = market / 'bounding_box_train' / '0002_c2s1_000301_01.jpg'
  broken.write_bytes(b'')
  data_dir = tmp_path / 'tfds'
  assert market1501.load_market1501(market, data_dir=data_dir)['train'].images[1] == b''
  broken.write_bytes(tiny_jpeg(7))
  splits = market1501.load_market1501(market, data_dir=data_dir)
  assert splits['train'].images[1] == tiny_jpeg(7)


def test_concurrent_preparation_uses_the_copy_that_won(market, tmp_path, monkeypatch):
  """Another process finishing the same copy while this one prepares it (multi-host jobs)."""
  data_dir = tmp_path / 'tfds'
  split_generators = market1501.Market1501._split_generators
  calls = []

  def racing(self, dl_manager):
    calls.append(dl_manager.manual_dir)
    if len(calls) == 1:
      market1501.load_market1501(market, data_dir=data_dir)  # The other process wins the race.
    return split_generators(self, dl_manager)

  monkeypatch.setattr(market1501.Market1501, '_split_generators', racing)
  splits = market1501.load_market1501(market, data_dir=data_dir)
  assert len(calls) == 2
  assert splits['train'].filenames == [f'bounding_box_train/{n}' for n in expected_names('train')]
  (prepared,) = data_dir.iterdir()
  assert [p.name for p in (prepared / 'market1501').iterdir()] == ['1.0.0']
