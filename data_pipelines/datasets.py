"""Dataset names are the config vocabulary: `config.dataset.name` -> train/query/gallery splits."""

from __future__ import annotations

import pathlib
from typing import Callable

import ml_collections

from data_pipelines import dukemtmc
from data_pipelines import market1501
from data_pipelines import msmt17
from data_pipelines import synthreid
from data_pipelines import veri
from data_pipelines.types import DatasetError, ReIDSplit

Loader = Callable[[ml_collections.ConfigDict], dict[str, ReIDSplit]]
DATASETS: dict[str, Loader] = {}


def register(name: str):
  def wrap(fn: Loader) -> Loader:
    DATASETS[name] = fn
    return fn
  return wrap


def cache_dir(cfg: ml_collections.ConfigDict) -> pathlib.Path:
  return pathlib.Path(cfg.cache_dir).expanduser() if cfg.cache_dir else synthreid.default_cache_dir()


@register('synthreid')
def _synthreid(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  spec = synthreid.SynthReIDSpec(**cfg.synth.to_dict())
  root = synthreid.ensure_synthreid(cache_dir(cfg), spec)
  return market1501.load_market1501(root, data_dir=root.parent / (root.name + '_tfds'))


def _extracted(cfg: ml_collections.ConfigDict, load: Callable[..., dict[str, ReIDSplit]],
               example_root: str, layout: str) -> dict[str, ReIDSplit]:
  """Loads a public dataset from `cfg.root`, preparing it under `cfg.cache_dir` when set."""
  if not cfg.root:
    raise DatasetError(
        f'dataset {cfg.name} needs --config.dataset.root={example_root} (the extracted official '
        f'archive with {layout}).')
  data_dir = cache_dir(cfg) / 'tfds' if cfg.cache_dir else None
  return load(cfg.root, data_dir=data_dir)


@register('market1501')
def _market1501(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  return _extracted(cfg, market1501.load_market1501, '/path/to/Market-1501-v15.09.15',
                    'bounding_box_train/, bounding_box_test/ and query/')


@register('dukemtmc')
def _dukemtmc(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  return _extracted(cfg, dukemtmc.load_dukemtmc, '/path/to/DukeMTMC-reID',
                    'bounding_box_train/, bounding_box_test/ and query/')


@register('msmt17')
def _msmt17(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  return _extracted(cfg, msmt17.load_msmt17, '/path/to/MSMT17_V1',
                    'train/ and test/, or mask_train_v2/ and mask_test_v2/, and list_*.txt')


@register('veri')
def _veri(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  return _extracted(cfg, veri.load_veri, '/path/to/VeRi',
                    'image_train/, image_query/ and image_test/')


def load_dataset(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  """The 'train', 'query' and 'gallery' splits of `cfg.name`."""
  if cfg.name not in DATASETS:
    raise DatasetError(f'unknown dataset {cfg.name!r}; known: {", ".join(sorted(DATASETS))}')
  splits = DATASETS[cfg.name](cfg)
  for name in ('train', 'query', 'gallery'):
    if name not in splits or len(splits[name]) == 0:
      raise DatasetError(f'dataset {cfg.name!r} has an empty {name!r} split')
  return splits
