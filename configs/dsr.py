r"""DSR partial re-ID (He et al., "Deep Spatial Feature Reconstruction for Partial Person
Re-identification", CVPR 2018; FastReID's partial re-ID project): a Bag-of-Tricks network tested
two ways, by its pooled embedding and by DSR, the reconstruction error of each query's spatial
feature map from each gallery map (jreid/evaluation/dsr.py), a 'dsr' row of the results.

Default: the embedded SynthReID with occluded and partial queries (dataset 'synthreid_occluded':
half the queries have an object in front of 20-50% of the body, half are upper-body crops
stretched to the full image; the training images and the gallery are SynthReID's), trained with
the Bag-of-Tricks default recipe (configs/bagtricks.py: ResNet-18 at width 32, 8 epochs) at the
images' own size, 128x64, on a 2-core CPU; the holistic SynthReID queries as a second test set.
The recorded run is benchmarks/results/dsr_synthreid_occluded_cpu.json:

  python -m jreid.main --config=configs/dsr.py --workdir=/tmp/dsr

The partial and occluded test sets (test-only: train on Market-1501 as the FastReID project,
test on Partial-REID, Partial-iLIDS and Occluded-REID; each 'name:root'):

  python -m jreid.main --config=configs/dsr.py:market1501 --workdir=runs/dsr_market \
      --config.dataset.root=/path/to/Market-1501-v15.09.15 \
      --config.eval.testsets="('partial_reid:/path/to/Partial_REID','partial_ilids:/path/to/Partial_iLIDS','occluded_reid:/path/to/Occluded_REID')"

Any supervised config gets the DSR row with `--config.dsr.enabled=True` (e.g. configs/sbs.py).
DSR holds every test image's feature map in memory and scores every query-gallery pair by a
matrix product: meant for the partial test sets (hundreds of images), not Market-scale galleries.
"""

import ml_collections

from jreid import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = config_args.parse_arg(
      arg, where='configs/dsr.py', shorthands={'market1501': {'dataset': 'market1501'}},
      choices={'dataset': ('synthreid_occluded', 'market1501')}, dataset='synthreid_occluded')
  if variant.dataset == 'market1501':
    config = config_args.sibling(__file__, 'bagtricks.py', 'market1501')
    config.eval.published = ''  # Its test sets are the partial ones, not Market-1501's.
  else:
    config = config_args.sibling(__file__, 'bagtricks.py')
    config.dataset.name = 'synthreid_occluded'
    config.eval.testsets = ('synthreid',)  # The same people with holistic queries.
    # The images' own size (the Bag-of-Tricks default halves it for speed): an 8 x 4 feature map
    # keeps the locality DSR matches regions with (6 x 3 at 96 x 48 is too coarse for it).
    config.input.height, config.input.width = 128, 64
  config.dsr.enabled = True
  return config
