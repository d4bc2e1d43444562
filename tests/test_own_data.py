"""A user's own data (the `csv` dataset): README's example, one cached copy per root, cleanup."""

from __future__ import annotations

import errno
import io
import os
import pathlib
import re

import ml_collections
import numpy as np
import pytest
from PIL import Image

from data_pipelines import datasets
from data_pipelines import market1501
from data_pipelines import reader_utils
from jreid import config_checks

REPO = pathlib.Path(__file__).resolve().parent.parent


def _readme_section() -> str:
  text = (REPO / 'README.md').read_text()
  headings = re.findall(r'^## (.+)$', text, re.M)
  assert headings[headings.index('Running') + 1] == 'Your own data'
  return text.split('## Your own data\n', 1)[1].split('\n## ', 1)[0]


def _jpeg(seed: int) -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 256, (16, 8, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG')
  return buffer.getvalue()


def _write_folder(root: pathlib.Path, csv_text: str) -> None:
  """A csv dataset folder: the same rows in all three files, an image for each row."""
  for number, line in enumerate(csv_text.strip().splitlines()[1:]):
    path = root / line.split(',')[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_jpeg(number))
  for name in ('train.csv', 'query.csv', 'gallery.csv'):
    (root / name).write_text(csv_text.strip() + '\n')


def _config(root: pathlib.Path, cache: pathlib.Path) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'name': 'csv', 'root': str(root), 'cache_dir': str(cache)})


def _copies(cache: pathlib.Path) -> list[str]:
  tfds_dir = cache / 'tfds'
  return sorted(p.name for p in tfds_dir.iterdir()) if tfds_dir.exists() else []


def test_readme_example_loads_and_prints_no_download(tmp_path, capfd):
  section = _readme_section()
  example = section.split('```\n')[1]  # The first code block: the CSV file.
  assert example.startswith('path,pid,camid\n')
  _write_folder(tmp_path / 'shop', example)
  capfd.readouterr()
  splits = datasets.load_dataset(_config(tmp_path / 'shop', tmp_path / 'cache'))
  out = capfd.readouterr()
  assert 'Downloading' not in out.out + out.err and 'downloaded' not in out.out + out.err
  assert f'jreid: preparing a cached copy of {tmp_path / "shop"}' in out.out
  assert splits['train'].filenames == ['cam0/alice_001.jpg', 'cam1/alice_007.jpg',
                                       'cam0/bob_002.jpg', 'cam1/bob_010.jpg']
  np.testing.assert_array_equal(splits['query'].pids, [1, 1, 2, 2])
  np.testing.assert_array_equal(splits['gallery'].camids, [0, 1, 0, 1])
  assert splits['train'].images[2] == _jpeg(2)
  # Read back, not prepared again.
  datasets.load_dataset(_config(tmp_path / 'shop', tmp_path / 'cache'))
  assert 'preparing' not in capfd.readouterr().out
  # The README's command passes the command-line checks.
  command = section.split('```\n')[3]
  argv = ['main'] + command.replace('\\\n', ' ').split()[3:]
  config_checks.check_command_line([a.replace('$HOME', str(tmp_path)).replace(
      '--config=configs/', f'--config={REPO}/configs/') for a in argv])


def test_three_edits_leave_one_prepared_copy(tmp_path):
  root, cache = tmp_path / 'shop', tmp_path / 'cache'
  rows = ['path,pid,camid'] + [f'img/{p}_{c}.jpg,{p},{c}' for p in (1, 2, 3) for c in (0, 1)]
  _write_folder(root, '\n'.join(rows))
  other = tmp_path / 'other'
  _write_folder(other, '\n'.join(rows))
  datasets.load_dataset(_config(other, cache))
  datasets.load_dataset(_config(root, cache))
  assert len(_copies(cache)) == 2  # One per root.
  other_copy = set(_copies(cache))

  def bump(path):  # A newer modification time, as an edit some seconds later has.
    newest = max(os.stat(p).st_mtime_ns for p in root.rglob('*'))
    os.utime(path, ns=(newest + 10**9, newest + 10**9))

  # 1. A new image and row.
  (root / 'img' / '4_0.jpg').write_bytes(_jpeg(40))
  with open(root / 'train.csv', 'a') as f:
    f.write('img/4_0.jpg,4,0\n')
  bump(root / 'train.csv')
  assert len(datasets.load_dataset(_config(root, cache))['train']) == 7
  # 2. An image rewritten.
  (root / 'img' / '1_0.jpg').write_bytes(_jpeg(10))
  bump(root / 'img' / '1_0.jpg')
  assert datasets.load_dataset(_config(root, cache))['train'].images[0] == _jpeg(10)
  # 3. A row removed.
  (root / 'gallery.csv').write_text('\n'.join(rows[:-1]) + '\n')
  bump(root / 'gallery.csv')
  splits = datasets.load_dataset(_config(root, cache))
  assert len(splits['gallery']) == 5 and splits['train'].images[0] == _jpeg(10)

  copies = _copies(cache)
  assert len(copies) == 2, copies  # Still one per root: each edit replaced the root's copy.
  assert other_copy & set(copies)  # The other root's copy is untouched.


def test_a_failed_preparation_leaves_nothing_and_keeps_the_previous_copy(tmp_path, monkeypatch):
  root, cache = tmp_path / 'shop', tmp_path / 'cache'
  rows = ['path,pid,camid'] + [f'img/{p}_{c}.jpg,{p},{c}' for p in (1, 2) for c in (0, 1)]
  _write_folder(root, '\n'.join(rows))
  read = reader_utils.encoded_image
  calls = []

  def disk_full_at_the_third(path, dataset):
    calls.append(path)
    if len(calls) == 3:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return read(path, dataset)

  monkeypatch.setattr(reader_utils, 'encoded_image', disk_full_at_the_third)
  with pytest.raises(OSError, match='No space left on device'):
    datasets.load_dataset(_config(root, cache))
  assert _copies(cache) == []
  assert not [p for p in cache.rglob('*') if p.is_dir() and p != cache / 'tfds']

  monkeypatch.undo()
  datasets.load_dataset(_config(root, cache))
  (good,) = _copies(cache)
  # An edit whose preparation is interrupted (Ctrl-C) leaves the earlier copy as it was.
  (root / 'img' / '1_0.jpg').write_bytes(_jpeg(99))
  os.utime(root / 'img' / '1_0.jpg', ns=(2 * 10**18, 2 * 10**18))

  def interrupted(path, dataset):
    raise KeyboardInterrupt

  monkeypatch.setattr(reader_utils, 'encoded_image', interrupted)
  with pytest.raises(KeyboardInterrupt):
    datasets.load_dataset(_config(root, cache))
  assert _copies(cache) == [good]
  assert os.path.isfile(next((cache / 'tfds' / good).rglob('dataset_info.json')))


def test_the_market_layout_keeps_one_copy_per_root_too(tmp_path):
  root = tmp_path / 'Market'
  for folder, names in (('bounding_box_train', ['0001_c1s1_000001_00.jpg',
                                                '0001_c2s1_000002_00.jpg']),
                        ('query', ['0002_c1s1_000003_00.jpg']),
                        ('bounding_box_test', ['0002_c2s1_000004_00.jpg'])):
    (root / folder).mkdir(parents=True)
    for seed, name in enumerate(names):
      (root / folder / name).write_bytes(_jpeg(seed))
  data_dir = tmp_path / 'tfds'
  market1501.load_market1501(root, data_dir=data_dir)
  (root / 'query' / '0002_c3s1_000005_00.jpg').write_bytes(_jpeg(5))
  os.utime(root / 'query', ns=(2 * 10**18, 2 * 10**18))
  assert len(market1501.load_market1501(root, data_dir=data_dir)['query']) == 2
  (copy,) = data_dir.iterdir()
  assert re.fullmatch(r'market1501_[0-9a-f]{8}_[0-9a-f]{12}', copy.name)
