"""Multi-source training (config.dataset.sources): several datasets' training images in one run,
identities and cameras kept apart; two synthetic domains end to end."""


import numpy as np
import pytest

import tiny
from data_pipelines import combine
from data_pipelines.types import DatasetError, ReIDSplit
from jreid import config_checks
from jreid import train


def split(name, pids, camids, prefix):
  n = len(pids)
  images = np.empty(n, dtype=object)
  images[:] = [f'{prefix}{i}'.encode() for i in range(n)]
  return ReIDSplit(name=name, images=images,
                   pids=np.asarray(pids, np.int32), camids=np.asarray(camids, np.int32),
                   sessions=np.ones(n, np.int32), frames=np.arange(n, dtype=np.int64),
                   filenames=[f'{prefix}{i}.jpg' for i in range(n)],
                   labels=np.asarray(pids, np.int32))


def test_sources_keep_their_identities_and_cameras_apart():
  a = {'train': split('train', [3, 3, 7], [0, 2, 1], 'a'), 'query': split('query', [3], [1], 'q'),
       'gallery': split('gallery', [3, -1], [0, 0], 'g')}
  b = {'train': split('train', [0, 1, 1, 5], [0, 1, 0, 3], 'b'),
       'query': split('query', [1], [0], 'x'), 'gallery': split('gallery', [1], [1], 'y')}
  c = {'train': split('train', [2], [0], 'c')}
  out = combine.combine_sources([('a', a), ('b', b), ('c', c)])
  train = out['train']
  # b's ids are shifted past a's (max 7 -> +8), c's past b's (max 5 -> +8+6); cameras likewise.
  assert train.pids.tolist() == [3, 3, 7, 8, 9, 9, 13, 16]
  assert train.camids.tolist() == [0, 2, 1, 3, 4, 3, 6, 7]
  assert train.labels.tolist() == [0, 0, 1, 2, 3, 3, 4, 5]
  assert train.filenames == ['a0.jpg', 'a1.jpg', 'a2.jpg', 'b/b0.jpg', 'b/b1.jpg', 'b/b2.jpg',
                             'b/b3.jpg', 'c/c0.jpg']
  assert [bytes(x) for x in train.images] == [b'a0', b'a1', b'a2', b'b0', b'b1', b'b2', b'b3',
                                               b'c0']
  assert train.frames.tolist() == [0, 1, 2, 0, 1, 2, 3, 0]
  assert out['query'] is a['query'] and out['gallery'] is a['gallery']  # The first's test set.
  junk = {'train': split('train', [-1, 4], [0, 0], 'j')}
  with pytest.raises(DatasetError, match="source 'j': its train split holds junk images"):
    combine.combine_sources([('a', a), ('j', junk)])


def test_two_synthetic_domains_load_as_one_training_set(tmp_path):
  """config.dataset.sources through the run's data loading (`train.load_data`); the same two
  domains train end to end in tests/test_configs.py (the SBS recipe's tiny run)."""
  config = tiny.config('bagtricks', tmp_path)
  config.dataset.sources = ('synthreid_b',)
  config_checks.check_config(config)
  data = train.load_data(config)
  own = train.load_data(tiny.config('bagtricks', tmp_path))
  other_config = tiny.config('bagtricks', tmp_path)
  other_config.dataset.name = 'synthreid_b'
  other = train.load_data(other_config)
  combined, alone, second = data.train, own.train, other.train
  n = len(alone)
  assert len(combined) == n + len(second) and combined.filenames[:n] == alone.filenames
  assert combined.filenames[n:] == [f'synthreid_b/{f}' for f in second.filenames]
  np.testing.assert_array_equal(combined.pids[:n], alone.pids)
  np.testing.assert_array_equal(combined.pids[n:], second.pids + alone.pids.max() + 1)
  np.testing.assert_array_equal(combined.camids[n:], second.camids + alone.camids.max() + 1)
  assert data.num_classes == alone.num_ids + second.num_ids
  assert data.splits['query'].filenames == own.splits['query'].filenames
  assert data.splits['gallery'].filenames == own.splits['gallery'].filenames


@pytest.mark.parametrize('sources,message', [
    ("('synthreid_c',)", "config.dataset.sources: unknown dataset 'synthreid_c'; known: "),
    ("('synthreid',)", "config.dataset.sources names 'synthreid', the run's own dataset"),
    ("('synthreid_b','synthreid_b')", "config.dataset.sources names 'synthreid_b' twice"),
], ids=['unknown', 'own', 'twice'])
def test_bad_sources_are_one_line_before_any_data(sources, message):
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check_command_line(['main', f'--config={tiny.REPO}/configs/bagtricks.py',
                                      f'--config.dataset.sources={sources}'])
  assert str(e.value).startswith(message), str(e.value)
  with pytest.raises(config_checks.ConfigError, match='not supported by the cross-modality'):
    config_checks.check_command_line(['main', f'--config={tiny.REPO}/configs/agw_sysu.py',
                                      "--config.dataset.sources=('synthreid_b',)"])
