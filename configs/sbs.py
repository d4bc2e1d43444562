r"""FastReID's stronger baseline SBS (Base-SBS): BoT + non-local blocks, learnable GeM pooling,
BNNeck with the post-neck feature for the triplet loss, CircleSoftmax classifier (s 64, m 0.35),
cross-entropy (smoothing 0.1) + soft-margin batch-hard triplet, backbone frozen for the first 1000
iterations, 384x128 input, K=16, Adam 3.5e-4 with warmup then cosine annealing after a 30-epoch
delay to 7e-7, 60 epochs. (FastReID also enables AutoAugment with probability 0.1; jreid's
config has no AutoAugment switch yet, so the recipe runs without it.)

Default: the embedded synthetic dataset on a 2-core CPU (ResNet-18 at width 32, 96x48 input,
8 epochs, backbone frozen for 20 iterations):

  python -m jreid.main --config=configs/sbs.py --workdir=/tmp/sbs

FastReID model-zoo recipes (`DATASET[,BACKBONE]`, BACKBONE one of r50 (default), r50_ibn, s50,
r101_ibn):

  python -m jreid.main --config=configs/sbs.py:market1501 --workdir=runs/sbs_market \
      --config.dataset.root=/path/to/Market-1501-v15.09.15
  python -m jreid.main --config=configs/sbs.py:dukemtmc,r50_ibn --workdir=runs/sbs_duke \
      --config.dataset.root=/path/to/DukeMTMC-reID
  python -m jreid.main --config=configs/sbs.py:msmt17,r101_ibn --workdir=runs/sbs_msmt \
      --config.dataset.root=/path/to/MSMT17_V1
  python -m jreid.main --config=configs/sbs.py:veri,r50_ibn --workdir=runs/sbs_veri \
      --config.dataset.root=/path/to/VeRi
"""

import ml_collections

from configs import _fastreid
from configs import bagtricks


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, backbone = _fastreid.parse_variant(arg, 'configs/sbs.py')
  config = bagtricks.get_config(arg)  # Base-SBS.yml: _BASE_ Base-bagtricks.yml
  # FastReID's ResNeSt carries non-local blocks too; jreid's ResNeSt has none yet (deviation).
  config.model.backbone.with_nl = backbone != 's50'
  config.model.pooling.name = 'gem'
  config.model.pooling.gem_p = 3.0
  config.model.pooling.gem_learnable = True  # GeneralizedMeanPoolingP
  config.model.head.neck_feat = 'after'
  config.model.head.cls_layer = 'circle'
  config.model.head.cls_scale = 64.0
  config.model.head.cls_margin = 0.35
  config.loss.names = ('cross_entropy', 'triplet')
  config.loss.cross_entropy.epsilon = 0.1
  config.loss.triplet.margin = 0.0
  config.loss.triplet.hard_mining = True
  config.loss.triplet.norm_feat = False
  config.optim.name = 'adam'
  config.optim.lr = 3.5e-4
  config.optim.weight_decay = 5e-4
  config.optim.schedule = 'cosine'
  config.optim.delay_epochs = 30
  config.optim.eta_min_lr = 7e-7
  config.optim.warmup_factor = 0.1
  config.optim.warmup_epochs = 10  # FastReID WARMUP_ITERS 2000 ~ 10 Market epochs of 64 images.
  config.optim.freeze_layers = ('^backbone/',)
  config.optim.freeze_iters = 1000
  config.sampler.num_instances = 16
  config.train.epochs = 60
  if dataset == 'synthreid':
    config.sampler.num_instances = 4  # 8 ids x 4 images of the small synthetic set
    config.optim.delay_epochs = 4
    config.optim.warmup_epochs = 1
    config.optim.freeze_iters = 20
    config.train.epochs = 8
  elif dataset != 'veri':
    config.input.height, config.input.width = 384, 128
  return config
