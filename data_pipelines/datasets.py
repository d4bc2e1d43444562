"""Dataset names are the config vocabulary: `config.dataset.name` -> train/query/gallery splits."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

import ml_collections

from data_pipelines import clonedperson
from data_pipelines import combine
from data_pipelines import csv_folder
from data_pipelines import cuhk03
from data_pipelines import dukemtmc
from data_pipelines import market1501
from data_pipelines import msmt17
from data_pipelines import partial
from data_pipelines import randperson
from data_pipelines import regdb
from data_pipelines import sysu_mm01
from data_pipelines import synthreid
from data_pipelines import synthvehicle
from data_pipelines import vehicleid
from data_pipelines import veri
from data_pipelines import veriwild
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


# Keys some readers below take, read with defaults so that a config without them loads:
# `trial` (RegDB split 1..10; VehicleID query/gallery draw seed), `test_size` ('small' |
# 'medium' | 'large', VehicleID and VERI-Wild), `combine_all` (see `load_dataset`).


def _cuhk03_np(kind: str) -> Loader:
  def load(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
    return _extracted(cfg, lambda root, data_dir: cuhk03.load_cuhk03_np(root, kind, data_dir),
                      '/path/to/cuhk03-np', f'{kind}/bounding_box_train/, '
                      f'{kind}/bounding_box_test/ and {kind}/query/')
  return load


register('cuhk03_np_detected')(_cuhk03_np('detected'))
register('cuhk03_np_labeled')(_cuhk03_np('labeled'))


def _cuhk03_classic(kind: str) -> Loader:
  def load(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
    return _extracted(
        cfg, lambda root, data_dir: cuhk03.load_cuhk03_classic(root, kind, cfg.get('trial', 1),
                                                               data_dir),
        '/path/to/cuhk03_release/cuhk-03.mat', f'the {kind} boxes and 20 test splits; split '
        '1..20 from config.dataset.trial')
  return load


# Classic CUHK03 (1,367 / 100 identities, 20 splits): evaluate with config.eval.protocol='cuhk03'.
register('cuhk03_detected')(_cuhk03_classic('detected'))
register('cuhk03_labeled')(_cuhk03_classic('labeled'))


@register('randperson')
def _randperson(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  return _extracted(cfg, randperson.load_randperson, '/path/to/randperson',
                    'randperson_subset/')


@register('clonedperson')
def _clonedperson(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  return _extracted(cfg, clonedperson.load_clonedperson, '/path/to/clonedperson',
                    'train/, test/query/ and test/gallery/')


@register('csv')
def _csv(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  return _extracted(cfg, csv_folder.load_csv_folder, '/path/to/my_images',
                    'train.csv and optionally query.csv and gallery.csv')


def _partial(name: str, example: str, layout: str) -> Loader:
  def load(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
    return _extracted(cfg, lambda root, data_dir: partial.load_partial(name, root, data_dir),
                      example, layout)
  return load


register('partial_reid')(_partial('partial_reid', '/path/to/Partial_REID',
                                  'partial_body_images/ and whole_body_images/'))
register('partial_ilids')(_partial('partial_ilids', '/path/to/Partial_iLIDS',
                                   'partial_body_images/ and whole_body_images/'))
register('occluded_reid')(_partial('occluded_reid', '/path/to/Occluded_REID',
                                   'occluded_body_images/ and whole_body_images/'))


@register('vehicleid')
def _vehicleid(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  return _extracted(
      cfg, lambda root, data_dir: vehicleid.load_vehicleid(
          root, cfg.get('test_size', 'small'), cfg.get('trial', 1), data_dir),
      '/path/to/VehicleID_V1.0', 'image/ and train_test_split/')


@register('veriwild')
def _veriwild(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  return _extracted(
      cfg, lambda root, data_dir: veriwild.load_veriwild(
          root, cfg.get('test_size', 'small'), data_dir),
      '/path/to/VERI-Wild', 'images/ and train_test_split/')


@register('sysu_mm01')
def _sysu_mm01(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  return _extracted(cfg, sysu_mm01.load_sysu_mm01, '/path/to/SYSU-MM01',
                    'cam1/ ... cam6/ and exp/')


@register('regdb')
def _regdb(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  return _extracted(
      cfg, lambda root, data_dir: regdb.load_regdb(root, cfg.get('trial', 1),
                                                   data_dir=data_dir),
      '/path/to/RegDB', 'Visible/, Thermal/ and idx/')


# Synthetic variants: each generated on first use and cached by its spec hash.


def _synthreid_variant(cfg: ml_collections.ConfigDict, **changes) -> dict[str, ReIDSplit]:
  """SynthReID of `cfg.synth` with some spec fields changed (its own cached copy)."""
  spec = dataclasses.replace(synthreid.SynthReIDSpec(**cfg.synth.to_dict()), **changes)
  root = synthreid.ensure_synthreid(cache_dir(cfg), spec)
  return market1501.load_market1501(root, data_dir=root.parent / (root.name + '_tfds'))


@register('synthreid_b')
def _synthreid_b(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  """Domain B of SynthReID: other palettes, scenes, camera styles and identities."""
  return _synthreid_variant(cfg, domain='b')


@register('synthreid_occluded')
def _synthreid_occluded(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  """SynthReID whose queries are occluded or upper-body crops; train and gallery unchanged."""
  return _synthreid_variant(cfg, query_occlusion='mixed')


@register('synthreid_ir')
def _synthreid_ir(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  """SynthReID's identities, visible and thermal, in the SYSU-MM01 layout read by its reader:
  infrared queries (camids 2, 5), visible gallery, train = train + val ids."""
  spec = synthreid.SynthReIDSpec(**cfg.synth.to_dict())
  root = synthreid.ensure_synthreid_ir(cache_dir(cfg), spec)
  return sysu_mm01.load_sysu_mm01(root, data_dir=root.parent / (root.name + '_tfds'))


@register('synthvehicle')
def _synthvehicle(cfg: ml_collections.ConfigDict) -> dict[str, ReIDSplit]:
  """Synthetic vehicles of `cfg.synth_vehicle` in the VeRi-776 layout, read by the VeRi reader."""
  fields = cfg.get('synth_vehicle')
  spec = synthvehicle.SynthVehicleSpec(**(fields.to_dict() if fields else {}))
  root = synthvehicle.ensure_synthvehicle(cache_dir(cfg), spec)
  return veri.load_veri(root, data_dir=root.parent / (root.name + '_tfds'))


def load_dataset(cfg: ml_collections.ConfigDict,
                 required: tuple[str, ...] = ('train', 'query', 'gallery')
                 ) -> dict[str, ReIDSplit]:
  """The 'train', 'query' and 'gallery' splits of `cfg.name`; `required` ones must be non-empty
  (a test set only needs 'query' and 'gallery', e.g. the test-only Partial-REID).

  With `cfg.sources` (multi-source training), 'train' also holds the training images of those
  datasets, their ids and cameras kept apart (`combine.combine_sources`); `combine_all` applies
  to every source.
  """
  if cfg.name not in DATASETS:
    raise DatasetError(f'unknown dataset {cfg.name!r}; known: {", ".join(sorted(DATASETS))}')
  splits = DATASETS[cfg.name](cfg)
  if cfg.get('combine_all', False):  # Train on train + query + gallery (QAConv).
    splits = combine.combine_all(splits, junk_pids=combine.junk_ids(cfg.name))
  sources = tuple(cfg.get('sources', ()) or ())
  if sources:
    named = [(cfg.name, splits)]
    for entry in sources:
      source_cfg = _entry_config(cfg, entry)
      source_cfg.sources = ()
      named.append((source_cfg.name, load_dataset(source_cfg, required=('train',))))
    splits = combine.combine_sources(named)
  for name in required:
    if name not in splits or len(splits[name]) == 0:
      raise DatasetError(f'dataset {cfg.name!r} has an empty {name!r} split' + (
          ': it cannot be trained on; use it as a test set (config.eval.testsets)'
          if name == 'train' else ': it cannot be tested on'))
  return splits


def load_testset(cfg: ml_collections.ConfigDict, entry: str) -> dict[str, ReIDSplit]:
  """The query and gallery splits of one `config.eval.testsets` entry, 'name' or 'name:root'.

  Everything else (cache folder, synthetic specs, test size, trial) comes from `cfg`
  (config.dataset); combine-all never applies to a test set.
  """
  test_cfg = _entry_config(cfg, entry)
  test_cfg.combine_all = False
  if 'sources' in test_cfg:
    test_cfg.sources = ()
  return load_dataset(test_cfg, required=('query', 'gallery'))


def _entry_config(cfg: ml_collections.ConfigDict, entry: str) -> ml_collections.ConfigDict:
  """A copy of `cfg` for another dataset named by 'name' or 'name:root' (a test set or a
  source): its root from the entry, or from `cfg` when it names the same dataset."""
  name, _, root = str(entry).partition(':')
  other = ml_collections.ConfigDict(cfg.to_dict())
  other.name = name
  if root:
    other.root = root
  elif name != cfg.name:
    other.root = ''
  return other
