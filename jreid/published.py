"""Published numbers that jreid's run reports put beside its own.

Each entry names its source. Values are percentages as printed in the source; None where the
source gives none. `published_rows` picks the rows of a run from `config.eval.published` (set by the
named variants of configs/*.py) and the run's dataset; the results table and report.md list them
under the run's own rows. Only the Python standard library is imported here.
"""

from collections.abc import Sequence

# RGB-infrared cross-modality re-ID, ImageNet-pretrained ResNet-50 two-stream, 288x144.
# AGW: Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook" (TPAMI 2021)
# and mangye16/Cross-Modal-Re-ID-baseline README; SYSU-MM01 all-search single-shot,
# RegDB visible -> thermal. CMGR: "Efficient Cross-modality Graph Reasoning for RGB-Infrared
# Person Re-identification" (IEEE SPL 2021). SYSU numbers use the identity-ranking CMC of the
# reference evaluation (jreid.evaluation.cross_modality).
CROSS_MODALITY = {
    ('agw', 'r50', 'sysu_mm01_all'): {'rank1': 47.50, 'mAP': 47.65, 'mINP': 35.30},
    ('agw', 'r50', 'regdb'): {'rank1': 70.05, 'mAP': 66.37, 'mINP': 50.19},
    ('cmgr', 'r50', 'sysu_mm01_all'): {'rank1': 52.64, 'mAP': 51.37, 'mINP': None},
    ('cmgr', 'r50', 'sysu_mm01_indoor'): {'rank1': 60.33, 'mAP': 66.75, 'mINP': None},
    ('cmgr', 'r50', 'regdb'): {'rank1': 75.58, 'mAP': 67.86, 'mINP': None},
}


# QAConv README (github.com/ShengcaiLiao/QAConv, "Performance"): direct cross-dataset evaluation,
# no transfer learning. Key: (training data, version) -> test set -> Rank-1/mAP, plus the
# training hours the README reports. ResNet-50(-IBN-b) to layer3, 384x128.
QACONV = {
    ('market1501', 'QAConv 1.0'): {'train_hours': 1.33, 'cuhk03_np_detected': (9.9, 8.6),
                                   'msmt17': (22.6, 7.0)},
    ('market1501', 'QAConv 2.1'): {'train_hours': 0.25, 'cuhk03_np_detected': (19.1, 18.1),
                                   'msmt17': (45.9, 17.2)},
    ('msmt17', 'QAConv 2.1'): {'train_hours': 0.73, 'cuhk03_np_detected': (20.9, 20.6),
                               'market1501': (79.1, 49.5)},
    ('msmt17_all', 'QAConv 1.0'): {'train_hours': 26.90, 'cuhk03_np_detected': (25.3, 22.6),
                                   'market1501': (72.6, 43.1)},
    ('msmt17_all', 'QAConv 2.1'): {'train_hours': 3.42, 'cuhk03_np_detected': (27.6, 28.0),
                                   'market1501': (82.4, 56.9)},
    ('randperson', 'QAConv 2.1'): {'train_hours': 2.0, 'cuhk03_np_detected': (18.4, 16.1),
                                   'market1501': (76.7, 46.7), 'msmt17': (45.1, 15.5)},
}


def qaconv_lookup(train: str, test: str, version: str = 'QAConv 2.1') -> dict[str, float] | None:
  """{'rank1', 'mAP'} of QAConv trained on `train` and tested on `test`, or None."""
  row = QACONV.get((train, version), {})
  if test not in row:
    return None
  rank1, m_ap = row[test]
  return {'rank1': rank1, 'mAP': m_ap}


def lookup(method: str, backbone: str, dataset: str) -> dict[str, float | None] | None:
  """The published numbers of a (method, backbone, dataset) triple, or None."""
  key = (method, backbone, dataset)
  return FASTREID_MODEL_ZOO.get(key) or CROSS_MODALITY.get(key) or PPLR_PAPER.get(key)


# FastReID model zoo: docs/MODEL_ZOO.md of JDAI-CV/fast-reid at commit
# c1dc4919ef9ca908b47472e4ef6082b980921253, the table whose rows link the v0.1.1 release
# checkpoints ("All numbers were obtained with 1 NVIDIA P40 GPU"; ImageNet-pretrained). Every value
# below was checked against that file. A stored copy headed "1 NVIDIA V100 GPU, PyTorch 1.6"
# prints the same numbers. Other revisions differ: docs/MODEL_ZOO.md at 1d6e970 has SBS(R101-ibn)
# MSMT17 85.1/63.3/16.6 (no checkpoint); the earlier top-level MODEL_ZOO.md (e.g. at ab4afdb) has
# other values in most rows; the first README/MODEL_ZOO tables have BoT(R50) Market1501
# 93.6/85.1/58.1 (the old FASTREID_MODEL_ZOO entries). Only the c1dc491 table is kept here; the
# FastReID paper's Table 1 is FASTREID_PAPER_TABLE1 below.
# Keys (method, backbone, dataset): methods bagtricks (the table's BoT), agw, sbs, mgn (the table
# labels the MGN row "SBS(R50-ibn)" but links configs/*/mgn_R50-ibn.yml); backbones r50, r50_ibn,
# s50, r101_ibn as the configs/*.py variants; values in percent. The one DukeMTMC BoT(S50) mAP the
# table prints with two decimals (80.13) is kept as printed.
FASTREID_MODEL_ZOO_REVISION = 'c1dc4919ef9ca908b47472e4ef6082b980921253'
FASTREID_MODEL_ZOO = {
    (m, b, d): {'rank1': r1, 'mAP': ap, 'mINP': inp}
    for (m, d), rows in {
        ('bagtricks', 'market1501'): {'r50': (94.4, 86.1, 59.4), 'r50_ibn': (94.9, 87.6, 64.1),
                                      's50': (95.2, 88.7, 66.9), 'r101_ibn': (95.4, 88.9, 67.4)},
        ('agw', 'market1501'): {'r50': (95.3, 88.2, 66.3), 'r50_ibn': (95.1, 88.7, 67.1),
                                's50': (95.3, 89.3, 68.5), 'r101_ibn': (95.5, 89.5, 69.5)},
        ('sbs', 'market1501'): {'r50': (95.4, 88.2, 64.8), 'r50_ibn': (95.7, 89.3, 67.5),
                                's50': (95.8, 89.4, 67.6), 'r101_ibn': (96.3, 90.3, 70.0)},
        ('mgn', 'market1501'): {'r50_ibn': (95.8, 89.8, 67.7)},
        ('bagtricks', 'dukemtmc'): {'r50': (87.2, 77.0, 42.1), 'r50_ibn': (89.3, 79.6, 45.2),
                                    's50': (90.0, 80.13, 45.8), 'r101_ibn': (91.2, 81.2, 47.5)},
        ('agw', 'dukemtmc'): {'r50': (89.0, 79.9, 46.1), 'r50_ibn': (90.5, 80.8, 47.6),
                              's50': (90.9, 82.4, 49.2), 'r101_ibn': (91.7, 82.3, 50.0)},
        ('sbs', 'dukemtmc'): {'r50': (90.3, 80.3, 46.5), 'r50_ibn': (90.8, 81.2, 47.0),
                              's50': (91.0, 81.4, 47.6), 'r101_ibn': (91.9, 83.6, 51.5)},
        ('mgn', 'dukemtmc'): {'r50_ibn': (91.1, 82.0, 46.8)},
        ('bagtricks', 'msmt17'): {'r50': (74.1, 50.2, 10.4), 'r50_ibn': (77.0, 54.4, 12.5),
                                  's50': (80.8, 59.9, 16.3), 'r101_ibn': (81.0, 59.4, 15.6)},
        ('agw', 'msmt17'): {'r50': (78.3, 55.6, 12.9), 'r50_ibn': (81.2, 59.7, 15.3),
                            's50': (82.6, 62.6, 17.7), 'r101_ibn': (82.0, 61.4, 17.3)},
        ('sbs', 'msmt17'): {'r50': (81.8, 58.4, 13.9), 'r50_ibn': (83.9, 60.6, 15.2),
                            's50': (84.1, 61.7, 15.2), 'r101_ibn': (84.8, 62.8, 16.3)},
        ('mgn', 'msmt17'): {'r50_ibn': (85.1, 65.4, 18.4)},
        # "VeRi Baseline", SBS(R50-ibn) (configs/VeRi/sbs_R50-ibn.yml).
        ('sbs', 'veri'): {'r50_ibn': (97.0, 81.9, 46.3)},
    }.items()
    for b, (r1, ap, inp) in rows.items()
}
# Deprecated alias of FASTREID_MODEL_ZOO (the two tables were merged); kept for old callers.
FASTREID_MODEL_ZOO_V1 = FASTREID_MODEL_ZOO

# Same file and commit, vehicle sets: BoT(R50-ibn) (configs/VehicleID/bagtricks_R50-ibn.yml and
# configs/VERIWild/bagtricks_R50-ibn.yml), "trained on 4 NVIDIA P40 GPU". VehicleID: "Test
# protocol: 10-fold cross-validation", Rank-1/Rank-5 per test size (small/medium/large).
FASTREID_VEHICLEID = {
    'small': {'rank1': 86.6, 'rank5': 97.9},
    'medium': {'rank1': 82.9, 'rank5': 96.0},
    'large': {'rank1': 80.6, 'rank5': 93.9},
}
FASTREID_VERIWILD = {
    'small': {'rank1': 96.4, 'mAP': 87.7, 'mINP': 69.2},
    'medium': {'rank1': 95.1, 'mAP': 83.5, 'mINP': 61.2},
    'large': {'rank1': 92.5, 'mAP': 77.3, 'mINP': 49.8},
}


# The FastReID paper (He et al., "FastReID: A Pytorch Toolbox for General Instance
# Re-identification", arXiv 2006.02631v4), Table 1, FastReID's own row: ResNet101-ibn, person
# re-ID, Rank-1 and mAP before query expansion and re-ranking. Source: a stored reading of the v4
# PDF that quotes this row ("FastReID (ResNet101-ibn) achieves R1=96.3%/mAP=90.3% on Market1501,
# R1=92.4%/mAP=83.2% on DukeMTMC, R1=85.1%/mAP=63.3% on MSMT17 (before QE/Rerank)"). All six
# numbers equal the SBS(R101-ibn) rows of the FastReID MODEL_ZOO.md revision of the paper's time
# (headed "1 NVIDIA P40 GPU, PyTorch 1.4, CUDA 10.1"; mINP 70.0/49.7/16.6 there), which is why the
# key names the SBS recipe. Not transcribed, for want of a readable copy of the table itself: the
# rows of the other methods Table 1 compares with, and FastReID's row with QE + re-ranking.
FASTREID_PAPER_TABLE1 = {
    ('sbs', 'r101_ibn', 'market1501'): {'rank1': 96.3, 'mAP': 90.3},
    ('sbs', 'r101_ibn', 'dukemtmc'): {'rank1': 92.4, 'mAP': 83.2},
    ('sbs', 'r101_ibn', 'msmt17'): {'rank1': 85.1, 'mAP': 63.3},
}


def lookup_model_zoo(method: str, backbone: str, dataset: str) -> dict[str, float] | None:
  """FastReID model-zoo numbers (FASTREID_MODEL_ZOO) of a (method, backbone, dataset), or None."""
  return FASTREID_MODEL_ZOO.get((method, backbone, dataset))


# PPLR (Cho et al., "Part-based Pseudo Label Refinement for Unsupervised Person
# Re-identification", CVPR 2022), fully unsupervised, ImageNet-pretrained ResNet-50, 384x128.
# 'pplr_cam' = with camera labels (train_pplr_cam.py). The pplr_cam rows were checked against
# the paper's Papers-with-Code entry; the plain pplr rows are the paper's Table 1 values as
# recalled here and should be re-checked against the PDF before being quoted.
PPLR_PAPER = {
    ('pplr', 'r50', 'market1501'): {'mAP': 81.5, 'rank1': 92.8, 'rank5': 97.1, 'rank10': 98.1},
    ('pplr', 'r50', 'msmt17'): {'mAP': 31.4, 'rank1': 61.1, 'rank5': 73.4, 'rank10': 77.8},
    ('pplr_cam', 'r50', 'market1501'): {'mAP': 84.4, 'rank1': 94.3, 'rank5': 97.8,
                                        'rank10': 98.6},
    ('pplr_cam', 'r50', 'msmt17'): {'mAP': 42.2, 'rank1': 73.3, 'rank5': 83.5, 'rank10': 86.5},
}
# Entries not yet checked against their source: kept for reference, never printed beside a run.
UNCHECKED = frozenset({('pplr', 'r50', 'market1501'), ('pplr', 'r50', 'msmt17')})


# Names of the recipes in the tables above, as the results table prints them.
_FASTREID_NAMES = {'bagtricks': 'BoT', 'agw': 'AGW', 'sbs': 'SBS', 'mgn': 'MGN'}
_BACKBONE_NAMES = {'r50': 'R50', 'r50_ibn': 'R50-ibn', 's50': 'S50', 'r101_ibn': 'R101-ibn'}
_CROSS_MODALITY_NAMES = {'agw': 'AGW', 'cmgr': 'CMGR'}
_PPLR_NAMES = {'pplr': 'PPLR', 'pplr_cam': 'PPLR (camera-aware)'}
PUBLISHED_METHODS = tuple(dict.fromkeys((*_FASTREID_NAMES, *_CROSS_MODALITY_NAMES, *_PPLR_NAMES,
                                          'qaconv')))
_CROSS_MODALITY_SETS = ('sysu_mm01', 'regdb')
# The settings and query -> gallery directions of the CROSS_MODALITY keys.
_CROSS_MODALITY_SETTINGS = {'sysu_mm01_all': 'SYSU-MM01 all-search, infrared->visible',
                            'sysu_mm01_indoor': 'SYSU-MM01 indoor-search, infrared->visible',
                            'regdb': 'RegDB visible->thermal'}


def _fractions(metrics: dict[str, float | None]) -> dict[str, float | None]:
  return {k: None if v is None else v / 100.0 for k, v in metrics.items()}


def published_rows(published: str, dataset: str, testsets: Sequence[str] = (),
                   search_modes: Sequence[str] = ('all',)) -> dict[str, dict[str, float | None]]:
  """The published results a run is compared with: row label -> metrics as fractions.

  Args:
    published: `config.eval.published`, 'METHOD,BACKBONE' (e.g. 'sbs,r50_ibn', 'pplr_cam,r50';
      'agw,r50' is FastReID's AGW on a person set and the cross-modality AGW on SYSU-MM01 or
      RegDB), or 'qaconv[,TRAIN]' (QAConv 2.1, ResNet-50-IBN-b, trained on TRAIN, default the
      run's dataset; 'qaconv,msmt17_all' for MSMT17 with all images); '' for none.
    dataset: `config.dataset.name`, the training set (and test set, except for QAConv).
    testsets: names of `config.eval.testsets` ('name' or 'name:/root'), QAConv's test sets.
    search_modes: SYSU-MM01 search modes evaluated ('all', 'indoor').

  Returns an empty dict where the tables hold no checked entry for this dataset (e.g. the
  embedded synthetic data; UNCHECKED entries are left out); raises ValueError for a method no
  table knows.
  """
  if not published:
    return {}
  method, _, backbone = published.partition(',')
  if method not in PUBLISHED_METHODS:
    raise ValueError(f'config.eval.published={published!r}: unknown method {method!r}; use '
                     f'METHOD,BACKBONE with METHOD one of {", ".join(PUBLISHED_METHODS)}, or \'\'.')
  rows: dict[str, dict[str, float | None]] = {}
  if method == 'qaconv':
    for name in testsets:
      test = name.partition(':')[0]
      entry = qaconv_lookup(backbone or dataset, test)
      if entry is not None:
        rows[f'published QAConv 2.1, test {test}'] = _fractions(entry)
    return rows
  backbone = backbone or 'r50'
  if dataset in _CROSS_MODALITY_SETS:
    keys = ([f'{dataset}_{mode}' for mode in search_modes] if dataset == 'sysu_mm01'
            else [dataset])
    for key in keys:
      entry = CROSS_MODALITY.get((method, backbone, key))
      if entry is not None:
        rows[f'published {_CROSS_MODALITY_NAMES[method]}, {_CROSS_MODALITY_SETTINGS[key]}'] = (
            _fractions(entry))
  elif method in _FASTREID_NAMES:
    label = f'{_FASTREID_NAMES[method]}({_BACKBONE_NAMES.get(backbone, backbone)})'
    entry = FASTREID_MODEL_ZOO.get((method, backbone, dataset))
    if entry is not None:
      rows[f'published FastReID model zoo {label}'] = _fractions(entry)
    entry = FASTREID_PAPER_TABLE1.get((method, backbone, dataset))
    if entry is not None:
      rows['published FastReID paper, Table 1'] = _fractions(entry)
  elif method in _PPLR_NAMES:
    entry = PPLR_PAPER.get((method, backbone, dataset))
    if entry is not None and (method, backbone, dataset) not in UNCHECKED:
      rows[f'published {_PPLR_NAMES[method]}'] = _fractions(entry)
  return rows
