"""FastReID recipe configs: every config x variant builds, locks and builds its model; each
config's default variant trains end to end on a tiny synthetic set."""

import importlib
import json

import pytest

import tiny
from jreid import models
from jreid import train

CONFIGS = ('bagtricks', 'agw', 'sbs', 'mgn')
DATASETS = ('market1501', 'dukemtmc', 'msmt17', 'veri')
BACKBONES = ('r50', 'r50_ibn', 's50', 'r101_ibn')


def _module(name):
  return importlib.import_module(f'configs.{name}')


def _variants(name):
  out = [None] + list(DATASETS)
  out += [f'{d},{b}' for d in DATASETS for b in BACKBONES if not (name == 'mgn' and b == 's50')]
  return out


@pytest.mark.parametrize('name', CONFIGS)
def test_every_variant_builds_and_locks(name):
  for variant in _variants(name):
    config = _module(name).get_config(variant)
    config.lock()
    with pytest.raises(AttributeError):
      config.optim.lr_typo = 1.0
    models.build_model(config.model, 10)  # the model constructs (no weights)
    if variant:
      dataset, _, backbone = variant.partition(',')
      assert config.dataset.name == dataset
      want = {'r50': 'resnet50', 'r50_ibn': 'resnet50_ibn_a', 's50': 'resnest50',
              'r101_ibn': 'resnet101_ibn_a'}[backbone or 'r50']
      assert config.model.backbone.name == want, variant
    else:
      assert config.dataset.name == 'synthreid'


def test_recipes_carry_fastreid_settings():
  agw = _module('agw').get_config('market1501')
  assert agw.model.backbone.with_nl and agw.model.pooling.name == 'gem'
  assert agw.loss.triplet.margin == 0.0 and not agw.loss.triplet.hard_mining
  sbs = _module('sbs').get_config('market1501,r50_ibn')
  assert (sbs.model.head.cls_layer, sbs.model.head.cls_scale, sbs.model.head.cls_margin) == (
      'circle', 64.0, 0.35)
  assert sbs.optim.schedule == 'cosine' and sbs.optim.freeze_iters == 1000
  assert (sbs.input.height, sbs.input.width, sbs.sampler.num_instances) == (384, 128, 16)
  # Base-SBS INPUT.AUTOAUG (ENABLED, PROB 0.1), applied first as FastReID's build_transforms.
  assert sbs.augment.ops[:2] == ('autoaugment(prob=0.1)', 'resize')
  assert _module('sbs').get_config().augment.ops == ()  # the cheap synthetic default
  assert sbs.model.backbone.stem_pool == 'fastreid'  # FastReID's ResNet stem max-pool
  assert _module('sbs').get_config().model.backbone.stem_pool == 'torchvision'
  mgn = _module('mgn').get_config('market1501,r50_ibn')
  assert mgn.model.name == 'mgn' and mgn.model.head.embedding_dim == 256
  assert not mgn.model.backbone.with_nl
  veri = _module('bagtricks').get_config('veri')
  assert (veri.input.height, veri.input.width) == (256, 256)
  with pytest.raises(ValueError, match='unknown variant'):
    _module('sbs').get_config('cuhk03')
  with pytest.raises(ValueError, match="unknown variant 'r18'"):
    _module('agw').get_config('market1501,r18')
  # The same variant in the key=value syntax; a contradiction is an error.
  assert _module('sbs').get_config('dataset=msmt17,backbone=r50_ibn').to_dict() == _module(
      'sbs').get_config('msmt17,r50_ibn').to_dict()
  with pytest.raises(ValueError, match='contradicts'):
    _module('bagtricks').get_config('dataset=veri,market1501')
  with pytest.raises(ValueError, match='ResNeSt'):
    _module('mgn').get_config('market1501,s50')
  # The default BoT variant is unchanged: ResNet-18 width 32 at 96x48.
  bot = _module('bagtricks').get_config()
  assert (bot.model.backbone.name, bot.model.backbone.width, bot.input.height) == (
      'resnet18', 32, 96)


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  """One synthetic dataset for the three runs."""
  return tmp_path_factory.mktemp('cache')


def _tiny(config, cache):
  config = tiny.shrink(config, cache, epochs=1, steps=3)
  config.train.log_every_steps = 3
  config.train.checkpoint_every_steps = 100
  config.eval.untrained = False
  config.eval.histogram_baseline = False
  return config


# Each config's build and checks run in the suite (above); training them end to end is in
# `pytest -m slow` (the suite trains the Baseline in test_methods and test_train).
@pytest.mark.parametrize('name', ['agw', 'sbs', 'mgn'])
@pytest.mark.slow
def test_default_variant_trains_end_to_end(name, tmp_path, cache_dir):
  config = _tiny(_module(name).get_config(), cache_dir)
  if name == 'mgn':
    config.input.height = 48  # 3 stripes of the stride-16 map
    config.model.head.embedding_dim = 8
  if name == 'sbs':
    # Multi-source training (tests/test_multi_source.py): a second synthetic domain's identities
    # train with SynthReID's.
    config.dataset.sources = ('synthreid_b',)
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['steps'] == 3
  for key in ('rank1', 'mAP', 'mINP'):
    assert 0.0 <= results[key] <= 1.0
  assert (tmp_path / 'run' / 'report.md').exists()
  if name == 'sbs':  # The classifier has a class per identity of both domains.
    checkpoints = tmp_path / 'run' / 'checkpoints'
    step = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    meta = json.loads((checkpoints / str(step) / 'meta' / 'metadata').read_text())
    assert meta['num_classes'] == 2 * config.dataset.synth.num_train_ids
