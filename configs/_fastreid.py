"""Shared pieces of the FastReID model-zoo recipes (configs/bagtricks.py, agw.py, sbs.py, mgn.py).

A variant argument is `DATASET[,BACKBONE]`, e.g. `market1501,r50_ibn`: DATASET is one of
`DATASETS`, BACKBONE one of `BACKBONES` (FastReID's model-zoo names; default r50).
"""

import ml_collections

# FastReID model-zoo backbone names -> jreid backbone names.
BACKBONES = {
    'r50': 'resnet50',
    'r50_ibn': 'resnet50_ibn_a',  # FastReID WITH_IBN: IBN-a.
    's50': 'resnest50',
    'r101_ibn': 'resnet101_ibn_a',
}
DATASETS = ('market1501', 'dukemtmc', 'msmt17', 'veri')


def parse_variant(arg: str | None, config_file: str) -> tuple[str, str]:
  """'market1501,r50_ibn' -> ('market1501', 'r50_ibn'); None -> ('synthreid', '')."""
  if not arg:
    return 'synthreid', ''
  dataset, _, backbone = arg.partition(',')
  if dataset not in DATASETS:
    raise ValueError(f'unknown variant {dataset!r} of {config_file}: use one of '
                     f'{", ".join(":" + d for d in DATASETS)} (optionally with a backbone, e.g. '
                     ':market1501,r50_ibn) or no variant (the embedded synthetic run).')
  backbone = backbone or 'r50'
  if backbone not in BACKBONES:
    raise ValueError(f'unknown backbone {backbone!r} in the variant of {config_file}: use one of '
                     f'{", ".join(BACKBONES)}.')
  return dataset, backbone


def set_recipe_data(config: ml_collections.ConfigDict, dataset: str, backbone: str) -> None:
  """The dataset and backbone of a named variant (FastReID uses one recipe for every person set)."""
  config.dataset.name = dataset
  config.model.backbone.name = BACKBONES[backbone]
  if backbone != 's50':
    # FastReID's ResNet stem max-pool (unpadded, ceil mode; jreid.models.resnet.stem_max_pool):
    # the model zoo was trained with it, so its checkpoints need it to give FastReID's features.
    config.model.backbone.stem_pool = 'fastreid'
  if dataset == 'veri':
    # FastReID configs/VeRi: square vehicle crops.
    config.input.height, config.input.width = 256, 256
