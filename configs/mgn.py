r"""MGN (Wang et al., ACM MM 2018) with FastReID's Base-MGN recipe: the SBS recipe (learnable GeM,
CircleSoftmax s 64 m 0.35, neck feature 'after', CE 0.1 + soft-margin triplet, cosine schedule
with delay, 384x128, K=16) without non-local blocks, every head reducing to 256 dimensions
(1x1 conv + BNNeck), the trunk and the three branches frozen for the first 1000 iterations.
Losses: CE on the 8 features x 1/8, triplet on b1, b2, b3, [b21 b22], [b31 b32 b33] x 1/5; the
test embedding is the 8 post-neck features concatenated (8 x 256 = 2048).

Default: the embedded synthetic dataset on a 2-core CPU (ResNet-50 at width 8, 96x48 input,
8 epochs):

  python -m jreid.main --config=configs/mgn.py --workdir=/tmp/mgn

FastReID model-zoo recipes (`DATASET[,BACKBONE]`; the zoo has MGN R50-ibn; r50, r101_ibn work
too; s50 (ResNeSt) does not split like a ResNet and is refused):

  python -m jreid.main --config=configs/mgn.py:market1501,r50_ibn --workdir=runs/mgn_market \
      --config.dataset.root=/path/to/Market-1501-v15.09.15
  python -m jreid.main --config=configs/mgn.py:dukemtmc,r50_ibn --workdir=runs/mgn_duke \
      --config.dataset.root=/path/to/DukeMTMC-reID
  python -m jreid.main --config=configs/mgn.py:msmt17,r50_ibn --workdir=runs/mgn_msmt \
      --config.dataset.root=/path/to/MSMT17_V1
  python -m jreid.main --config=configs/mgn.py:veri,r50_ibn --workdir=runs/mgn_veri \
      --config.dataset.root=/path/to/VeRi
"""

import ml_collections

from jreid import config_args
from jreid.methods import supervised


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = supervised.fastreid_variant(arg, 'configs/mgn.py')
  dataset, backbone = variant.dataset, variant.backbone
  if backbone == 's50':
    raise ValueError('configs/mgn.py: MGN splits a Bottleneck ResNet after layer3[0]; ResNeSt '
                     "(s50) is not supported: use r50, r50_ibn or r101_ibn.")
  config = config_args.sibling(__file__, 'sbs.py', arg)  # Base-MGN.yml: _BASE_ Base-SBS.yml
  if dataset != 'synthreid':  # A named variant: FastReID's model-zoo MGN row beside ours.
    config.eval.published = f'mgn,{backbone}'
  config.model.name = 'mgn'
  config.model.backbone.with_nl = False
  config.model.head.embedding_dim = 256
  config.optim.freeze_layers = ('^backbone/', '^b1/', '^b2/', '^b3/')
  if dataset == 'synthreid':
    config.model.backbone.name = 'resnet50'
    config.model.backbone.width = 8
    config.model.head.embedding_dim = 32
  return config
