"""Classic CUHK03: a tiny `cuhk-03.mat` in the MATLAB v7.3 layout (HDF5 with object references,
arrays stored transposed), read into the 20 standard splits; the single-gallery-shot protocol as
a config key of any run."""

import io

import h5py
import ml_collections
import numpy as np
import pytest
from PIL import Image

import tiny
from data_pipelines import cuhk03
from data_pipelines import datasets
from data_pipelines.types import DatasetError
from jreid import config_checks
from jreid import evaluator
from jreid.evaluation import compute_distance, evaluate_cuhk03, evaluate_rank

# Camera pair -> persons -> the image numbers (1..10) each has; 1-5: first camera, 6-10: second.
PERSONS = {
    1: {1: (1, 2, 6, 7), 2: (1, 6), 3: (2, 3, 4, 8)},
    2: {1: (1, 5, 6, 10), 2: (3, 9)},
}
# 20 test splits of one (pair, person) each; split t tests person ((t - 1) % 5)-th of the list.
ALL_IDS = [(pair, person) for pair, persons in PERSONS.items() for person in persons]
TESTSETS = [[ALL_IDS[(t - 1) % len(ALL_IDS)], ALL_IDS[t % len(ALL_IDS)]] for t in range(1, 21)]


def image(kind, pair, person, index):
  """A distinct small RGB image (H 6, W 4) per box kind, identity and image number."""
  seed = [('labeled', 'detected').index(kind), pair, person, index]
  return np.random.default_rng(seed).integers(0, 256, (6, 4, 3), dtype=np.uint8)


def write_mat(path):
  """`cuhk-03.mat` as MATLAB v7.3 writes it: a 512-byte header, then HDF5 where every cell array
  is a dataset of object references into '#refs#' and every array is stored transposed (MATLAB
  is column-major); a missing image is an empty double (dims [0, 0], MATLAB_empty = 1)."""
  with h5py.File(path, 'w', userblock_size=512) as f:
    refs = f.create_group('#refs#')
    count = [0]

    def put(array, matlab_class, empty=False):
      count[0] += 1
      ds = refs.create_dataset(f'r{count[0]}', data=array)
      ds.attrs['MATLAB_class'] = np.bytes_(matlab_class)
      if empty:
        ds.attrs['MATLAB_empty'] = np.uint8(1)
      return ds.ref

    def cell(matlab_refs):
      """The HDF5 data of a MATLAB cell array of references (its transpose)."""
      data = np.empty(matlab_refs.shape[::-1], dtype=h5py.ref_dtype)
      data[...] = matlab_refs.T
      return data

    for kind in ('labeled', 'detected'):
      pairs = []
      for pair, persons in PERSONS.items():
        grid = np.empty((len(persons), 10), dtype=object)
        for row, (person, indices) in enumerate(persons.items()):
          for index in range(1, 11):
            if index in indices:
              grid[row, index - 1] = put(image(kind, pair, person, index).T, 'uint8')
            else:
              grid[row, index - 1] = put(np.zeros(2, np.uint64), 'double', empty=True)
        pairs.append(put(cell(grid), 'cell'))
      top = np.empty((1, len(pairs)), dtype=object)
      top[0, :] = pairs
      f.create_dataset(kind, data=cell(top)).attrs['MATLAB_class'] = np.bytes_('cell')
    splits = np.empty((1, 20), dtype=object)
    splits[0, :] = [put(np.asarray(t, np.float64).T, 'double') for t in TESTSETS]
    f.create_dataset('testsets', data=cell(splits)).attrs['MATLAB_class'] = np.bytes_('cell')
  with open(path, 'r+b') as f:
    f.write(b'MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2014 HDF5 '
            b'schema 1.00 .'.ljust(116) + b'\x00' * 8 + b'\x00\x02IM')


def rows(split):
  return [(name, int(p), int(c), int(s), int(fr)) for name, p, c, s, fr in zip(
      split.filenames, split.pids, split.camids, split.sessions, split.frames)]


def expected_rows(kind, ids):
  return [(f'{kind}/{pair}_{person:03d}_{1 if i <= 5 else 2}_{i:02d}.png', 1000 * pair + person,
           2 * (pair - 1) + (0 if i <= 5 else 1), pair, i)
          for pair, persons in PERSONS.items() for person, indices in persons.items()
          if (pair, person) in ids for i in indices]


@pytest.fixture(scope='module')
def mat(tmp_path_factory):
  folder = tmp_path_factory.mktemp('cuhk03_release')
  write_mat(folder / 'cuhk-03.mat')
  return folder


def test_the_20_splits_are_read_the_standard_way(mat, tmp_path):
  for kind, trial in (('labeled', 1), ('detected', 1), ('labeled', 7)):
    splits = cuhk03.load_cuhk03_classic(mat, kind, trial, data_dir=tmp_path)
    test_ids = set(TESTSETS[trial - 1])
    train_ids = set(ALL_IDS) - test_ids
    assert rows(splits['train']) == expected_rows(kind, train_ids)
    # Query and gallery both hold every test image (the evaluation drops the same camera).
    assert rows(splits['query']) == rows(splits['gallery']) == expected_rows(kind, test_ids)
    assert splits['train'].labels.tolist() == np.unique(
        splits['train'].pids, return_inverse=True)[1].tolist()
    np.testing.assert_array_equal(splits['query'].labels, splits['query'].pids)
    for split in splits.values():
      for name, data in zip(split.filenames, split.images):
        pair, person, _, index = (int(x) for x in name.split('/')[1][:-4].split('_'))
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))),
                                      image(kind, pair, person, index))


def test_the_images_are_extracted_once(mat, tmp_path, monkeypatch):
  cuhk03.load_cuhk03_classic(mat / 'cuhk-03.mat', 'labeled', 1, data_dir=tmp_path)
  monkeypatch.setattr(cuhk03, '_extract_mat', lambda *a: pytest.fail('extracted again'))
  splits = cuhk03.load_cuhk03_classic(mat, 'detected', 2, data_dir=tmp_path)
  assert rows(splits['query']) == expected_rows('detected', set(TESTSETS[1]))
  assert len([p for p in tmp_path.iterdir() if p.name.startswith('cuhk03_classic_')]) == 1


def test_dataset_names_and_the_trial_key(mat, tmp_path):
  cfg = ml_collections.ConfigDict({'name': 'cuhk03_detected', 'root': str(mat), 'trial': 4,
                                   'cache_dir': str(tmp_path), 'combine_all': False,
                                   'sources': ()})
  splits = datasets.load_dataset(cfg)
  assert rows(splits['gallery']) == expected_rows('detected', set(TESTSETS[3]))
  cfg.trial = 21
  with pytest.raises(DatasetError, match=r'config\.dataset\.trial=21 is not one of the file\'s '
                     r'test splits 1\.\.20'):
    datasets.load_dataset(cfg)


def test_files_that_are_not_the_classic_layout_are_named(tmp_path):
  with pytest.raises(DatasetError, match=r'no cuhk-03\.mat at .*cuhk03_release\.zip'):
    cuhk03.load_cuhk03_classic(tmp_path, data_dir=tmp_path / 'cache')
  (tmp_path / 'cuhk-03.mat').write_bytes(b'MATLAB 5.0 MAT-file' + b'\x00' * 200)
  with pytest.raises(DatasetError, match=r'cannot be read as a MATLAB v7\.3 \(HDF5\) file'):
    cuhk03.load_cuhk03_classic(tmp_path, data_dir=tmp_path / 'cache')
  with h5py.File(tmp_path / 'cuhk-03.mat', 'w') as f:
    f.create_dataset('labeled', data=np.zeros(3))
  with pytest.raises(DatasetError, match=r"has no 'detected' array \(it has labeled\)"):
    cuhk03.load_cuhk03_classic(tmp_path, data_dir=tmp_path / 'cache')
  assert not list((tmp_path / 'cache').iterdir())  # Nothing half-extracted is left behind.


class _Split:
  def __init__(self, pids, camids):
    self.pids, self.camids = np.asarray(pids), np.asarray(camids)


def test_the_protocol_key_ranks_embeddings_single_gallery_shot():
  rng = np.random.default_rng(0)
  query = _Split(np.repeat(np.arange(6), 2), np.tile([0, 1], 6))
  gallery = _Split(np.repeat(np.arange(8), 3), np.tile([0, 1, 1], 8))
  qf, gf = rng.normal(size=(12, 16)), rng.normal(size=(24, 16))
  ev = ml_collections.ConfigDict({'metric': 'cosine', 'max_rank': 10, 'roc': True, 'aqe': False,
                                  'rerank': True, 'rerank_k1': 6, 'rerank_k2': 3,
                                  'rerank_lambda': 0.3, 'protocol': 'cuhk03',
                                  'cuhk03_repeats': 7})
  out = evaluator.evaluate_embeddings(qf, gf, query, gallery, ev)
  ids = (query.pids, gallery.pids, query.camids, gallery.camids)
  want = evaluate_cuhk03(compute_distance(qf, gf, 'cosine'), *ids, max_rank=10, num_repeats=7)
  market = evaluate_rank(compute_distance(qf, gf, 'cosine'), *ids, max_rank=10, roc=True)
  np.testing.assert_allclose(out.result.cmc, want.cmc)
  assert out.metrics['mAP'] == pytest.approx(want.mAP)
  assert not np.allclose(want.cmc, market.cmc)  # The protocol changes the CMC.
  assert out.metrics['TPR@FPR=1e-02'] == market.to_dict()['TPR@FPR=1e-02']
  assert 'rerank' in out.extra_rows  # Post-processed rows are ranked by the same protocol.


def test_protocol_errors_are_one_line():
  bagtricks, agw = f'{tiny.REPO}/configs/bagtricks.py', f'{tiny.REPO}/configs/agw_sysu.py'
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check_command_line(['main', f'--config={bagtricks}',
                                      '--config.eval.protocol=cuhk'])
  assert str(e.value) == "config.eval.protocol='cuhk' is not one of 'market', 'cuhk03'."
  with pytest.raises(config_checks.ConfigError, match=r"protocol='cuhk03' is not read by the "
                     r'cross-modality method'):
    config_checks.check_command_line(['main', f'--config={agw}',
                                      '--config.eval.protocol=cuhk03'])
  config_checks.check_command_line(['main', f'--config={bagtricks}',
                                    '--config.eval.protocol=cuhk03',
                                    '--config.dataset.name=cuhk03_labeled'])
