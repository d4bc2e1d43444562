"""benchmarks/published.py: the FastReID model-zoo table is complete and internally consistent.

Each check holds for every entry of the source table (docs/MODEL_ZOO.md of JDAI-CV/fast-reid at
the revision named in published.py), so it fails on a real transcription error: a missing or
misnamed row, a value typed without its decimal point, or two columns swapped.
"""

import re

import pytest

from benchmarks import published

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
