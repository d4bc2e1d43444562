"""jreid.published: the FastReID model-zoo table is complete and internally consistent, and the
named variants of the configs put their published rows beside their own.

Each check holds for every entry of the source table (docs/MODEL_ZOO.md of JDAI-CV/fast-reid at
the revision named in published.py), so it fails on a real transcription error: a missing or
misnamed row, a value typed without its decimal point, or two columns swapped.
"""

import importlib
import re

import pytest

from jreid import published
from jreid import train
from jreid.evaluation import format_results_table

PERSON_SETS = ('market1501', 'dukemtmc', 'msmt17')
# The documented grid: BoT/AGW/SBS x four backbones on each person set, MGN with R50-ibn only,
# and SBS(R50-ibn) on VeRi.
GRID = ({(m, b, d) for m in ('bagtricks', 'agw', 'sbs')
         for b in ('r50', 'r50_ibn', 's50', 'r101_ibn') for d in PERSON_SETS}
        | {('mgn', 'r50_ibn', d) for d in PERSON_SETS} | {('sbs', 'r50_ibn', 'veri')})


def test_model_zoo_covers_exactly_the_documented_grid():
  assert set(published.FASTREID_MODEL_ZOO) == GRID
  assert re.fullmatch('[0-9a-f]{40}', published.FASTREID_MODEL_ZOO_REVISION)


@pytest.mark.parametrize('key', sorted(GRID))
def test_model_zoo_entry_is_percentages_in_order(key):
  entry = published.FASTREID_MODEL_ZOO[key]
  assert set(entry) == {'rank1', 'mAP', 'mINP'}
  assert all(0.0 < v <= 100.0 for v in entry.values()), entry
  # Holds for every row of the table: a swapped column breaks it.
  assert entry['mINP'] < entry['mAP'] < entry['rank1'], (key, entry)


def test_vehicle_tables_are_ordered_by_gallery_size():
  sizes = ('small', 'medium', 'large')
  vid, wild = published.FASTREID_VEHICLEID, published.FASTREID_VERIWILD
  assert tuple(vid) == sizes and tuple(wild) == sizes
  for size in sizes:
    assert set(vid[size]) == {'rank1', 'rank5'} and vid[size]['rank1'] < vid[size]['rank5']
    assert set(wild[size]) == {'rank1', 'mAP', 'mINP'}
    assert wild[size]['mINP'] < wild[size]['mAP'] < wild[size]['rank1']
  for table in (vid, wild):
    for metric in table['small']:
      values = [table[s][metric] for s in sizes]
      assert all(0.0 < v <= 100.0 for v in values)
      assert values == sorted(values, reverse=True), (metric, values)  # larger gallery, harder


def test_lookups_read_the_one_table():
  assert published.FASTREID_MODEL_ZOO_V1 is published.FASTREID_MODEL_ZOO  # deprecated alias
  for key in GRID:
    assert published.lookup_model_zoo(*key) is published.FASTREID_MODEL_ZOO[key]
    assert published.lookup(*key) is published.FASTREID_MODEL_ZOO[key]
  assert published.lookup_model_zoo('bagtricks', 'r18', 'market1501') is None
  for key, table in ((('agw', 'r50', 'regdb'), published.CROSS_MODALITY),
                     (('pplr', 'r50', 'msmt17'), published.PPLR_PAPER)):
    assert published.lookup(*key) is table[key]
  assert published.lookup('agw', 'r50', 'cuhk03') is None


def test_fastreid_paper_table1_row_is_the_r101_ibn_sbs_recipe_on_the_person_sets():
  table = published.FASTREID_PAPER_TABLE1
  assert set(table) == {('sbs', 'r101_ibn', d) for d in PERSON_SETS}
  for key, entry in table.items():
    assert set(entry) == {'rank1', 'mAP'} and 0.0 < entry['mAP'] < entry['rank1'] <= 100.0, key
    # The paper's model and the later model-zoo checkpoint of the same recipe agree within a point.
    zoo = published.FASTREID_MODEL_ZOO[key]
    assert abs(entry['rank1'] - zoo['rank1']) <= 1.0 and abs(entry['mAP'] - zoo['mAP']) <= 1.0
  # Harder sets score lower: Market1501 > DukeMTMC > MSMT17.
  m_aps = [table[('sbs', 'r101_ibn', d)]['mAP'] for d in PERSON_SETS]
  assert m_aps == sorted(m_aps, reverse=True)


# --- published rows beside a run's own (config.eval.published, jreid.published.published_rows)


def _config(name, variant):
  return importlib.import_module(f'configs.{name}').get_config(variant)


def _as_fractions(entry):
  return {k: None if v is None else v / 100.0 for k, v in entry.items()}


@pytest.mark.parametrize('name', ('bagtricks', 'agw', 'sbs', 'mgn'))
def test_every_fastreid_recipe_variant_is_put_beside_its_model_zoo_row(name):
  for dataset in ('market1501', 'dukemtmc', 'msmt17', 'veri'):
    for backbone in ('r50', 'r50_ibn', 's50', 'r101_ibn'):
      if name == 'mgn' and backbone == 's50':
        continue
      config = _config(name, f'{dataset},{backbone}')
      assert config.eval.published == f'{name},{backbone}'
      rows = train.published_rows(config)
      zoo = published.FASTREID_MODEL_ZOO.get((name, backbone, dataset))
      zoo_rows = {k: v for k, v in rows.items() if 'model zoo' in k}
      if zoo is None:
        assert not zoo_rows, (name, dataset, backbone)
      else:
        (label, metrics), = zoo_rows.items()
        assert metrics == _as_fractions(zoo)
        recipe = {'bagtricks': 'BoT', 'agw': 'AGW', 'sbs': 'SBS', 'mgn': 'MGN'}[name]
        assert label.startswith(f'published FastReID model zoo {recipe}('), label
      table1 = published.FASTREID_PAPER_TABLE1.get((name, backbone, dataset))
      assert rows.get('published FastReID paper, Table 1') == (
          None if table1 is None else _as_fractions(table1))
  # The embedded synthetic default is compared with nothing.
  assert _config(name, None).eval.published == ''
  assert train.published_rows(_config(name, None)) == {}


def test_pplr_cross_modality_and_qaconv_variants_get_their_papers_rows():
  cases = [
      (('pplr', 'market1501_cam'), {'published PPLR (camera-aware)':
                                    published.PPLR_PAPER[('pplr_cam', 'r50', 'market1501')]}),
      # The plain PPLR numbers are not yet checked against the paper: never printed.
      (('pplr', 'market1501'), {}),
      (('pplr', 'msmt17_cam'), {'published PPLR (camera-aware)':
                                published.PPLR_PAPER[('pplr_cam', 'r50', 'msmt17')]}),
      (('agw_sysu', 'paper'), {
          'published AGW, SYSU-MM01 all-search, infrared->visible':
              published.CROSS_MODALITY[('agw', 'r50', 'sysu_mm01_all')]}),
      (('cmgr_sysu', 'paper'), {
          'published CMGR, SYSU-MM01 all-search, infrared->visible':
              published.CROSS_MODALITY[('cmgr', 'r50', 'sysu_mm01_all')],
          'published CMGR, SYSU-MM01 indoor-search, infrared->visible':
              published.CROSS_MODALITY[('cmgr', 'r50', 'sysu_mm01_indoor')]}),
      (('agw_regdb', 'paper'), {'published AGW, RegDB visible->thermal':
                                published.CROSS_MODALITY[('agw', 'r50', 'regdb')]}),
  ]
  for (name, variant), want in cases:
    rows = train.published_rows(_config(name, variant))
    assert rows == {k: _as_fractions(v) for k, v in want.items()}, (name, variant)
    assert train.published_rows(_config(name, None)) == {}
  # QAConv: one row per configured test set the README reports for that training set.
  config = _config('qaconv', 'msmt17_all')
  config.eval.testsets = ('market1501:/data/Market-1501', 'cuhk03_np_detected:/data/cuhk03',
                          'dukemtmc:/data/duke')
  rows = train.published_rows(config)
  assert rows == {
      'published QAConv 2.1, test market1501': {'rank1': pytest.approx(0.824), 'mAP': 0.569},
      'published QAConv 2.1, test cuhk03_np_detected': {'rank1': 0.276, 'mAP': 0.28}}
  assert train.published_rows(_config('qaconv', None)) == {}


def test_unknown_published_method_is_a_clear_error_and_rows_follow_the_baselines():
  with pytest.raises(ValueError, match=r"config.eval.published='bot,r50'.*unknown method 'bot'"):
    published.published_rows('bot,r50', 'market1501')
  reference = published.published_rows('sbs,r101_ibn', 'market1501')
  rows = train.table_rows({'rank1': 0.5, 'mAP': 0.4, 'rerank/mAP': 0.45},
                           {'untrained': {'mAP': 0.1}}, reference)
  assert list(rows) == ['trained', 'trained + rerank', 'untrained',
                        'published FastReID model zoo SBS(R101-ibn)',
                        'published FastReID paper, Table 1']
  table = format_results_table(rows)
  assert '| published FastReID paper, Table 1' in table and '96.30' in table and '90.30' in table
