r"""AGW (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook"), FastReID's
Base-AGW recipe: BoT + non-local blocks (ResNet-50 [0, 2, 3, 0]), GeM pooling (p = 3),
cross-entropy with label smoothing 0.1 + weighted-regularisation triplet (softmax-weighted mining,
soft margin).

Default: the embedded synthetic dataset on a 2-core CPU (ResNet-18 at width 32 with non-local
blocks, 96x48 input, 8 epochs):

  python -m jreid.main --config=configs/agw.py --workdir=/tmp/agw

FastReID model-zoo recipes (`DATASET[,BACKBONE]`, BACKBONE one of r50 (default), r50_ibn, s50,
r101_ibn; 256x128, P=16 K=4, Adam 3.5e-4, warmup 10 epochs, steps at 40/90, 120 epochs):

  python -m jreid.main --config=configs/agw.py:market1501 --workdir=runs/agw_market \
      --config.dataset.root=/path/to/Market-1501-v15.09.15
  python -m jreid.main --config=configs/agw.py:dukemtmc,r50_ibn --workdir=runs/agw_duke \
      --config.dataset.root=/path/to/DukeMTMC-reID
  python -m jreid.main --config=configs/agw.py:msmt17,r101_ibn --workdir=runs/agw_msmt \
      --config.dataset.root=/path/to/MSMT17_V1
  python -m jreid.main --config=configs/agw.py:veri,s50 --workdir=runs/agw_veri \
      --config.dataset.root=/path/to/VeRi

ImageNet weights: add --config.model.pretrained=/path/to/resnet50.pth (torchvision/IBN-Net).
"""

import ml_collections

from jreid import config_args
from jreid.methods import supervised


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = supervised.fastreid_variant(arg, 'configs/agw.py')
  # Base-AGW.yml: _BASE_ Base-bagtricks.yml (our bagtricks variant with the same data/backbone).
  config = config_args.sibling(__file__, 'bagtricks.py', arg)
  if variant.dataset != 'synthreid':  # A named variant: FastReID's model-zoo AGW row beside ours.
    config.eval.published = f'agw,{variant.backbone}'
  # FastReID's ResNeSt carries non-local blocks too; jreid's ResNeSt has none yet (deviation).
  config.model.backbone.with_nl = variant.backbone != 's50'
  config.model.pooling.name = 'gem'
  config.model.pooling.gem_p = 3.0
  config.model.pooling.gem_learnable = False
  config.loss.names = ('cross_entropy', 'triplet')
  config.loss.cross_entropy.epsilon = 0.1
  config.loss.triplet.margin = 0.0  # soft margin
  config.loss.triplet.hard_mining = False  # softmax-weighted (WRT)
  config.loss.triplet.norm_feat = False
  return config
