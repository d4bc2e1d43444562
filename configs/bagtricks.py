r"""Bag of Tricks (BoT) strong baseline (Luo et al. 2019; FastReID's Base-bagtricks recipe).

Default: the embedded synthetic dataset SynthReID v1 on a 2-core CPU in under 10 minutes
(ResNet-18 at width 32 and 96x48 input instead of ResNet-50 at 256x128, batch 8 ids x 4 images,
Adam 1e-3, 8 epochs; the recorded run is benchmarks/results/bagtricks_synthreid_cpu.json):

  python -m jreid.main --config=configs/bagtricks.py --workdir=/tmp/run

The paper recipe on Market-1501 (ResNet-50, 256x128, P=16 K=4, Adam 3.5e-4, warmup 10 epochs,
steps at epochs 40/90, 120 epochs, CE with label smoothing 0.1 + triplet margin 0.3, BNNeck):

  python -m jreid.main --config=configs/bagtricks.py:market1501 --workdir=runs/bot_market \
      --config.dataset.root=/path/to/Market-1501-v15.09.15

The other FastReID model-zoo datasets and backbones (`DATASET[,BACKBONE]`, BACKBONE one of
r50 (default), r50_ibn, s50, r101_ibn; also written `:dataset=msmt17,backbone=r50_ibn`):

  python -m jreid.main --config=configs/bagtricks.py:dukemtmc --workdir=runs/bot_duke \
      --config.dataset.root=/path/to/DukeMTMC-reID
  python -m jreid.main --config=configs/bagtricks.py:msmt17,r50_ibn --workdir=runs/bot_msmt \
      --config.dataset.root=/path/to/MSMT17_V1
  python -m jreid.main --config=configs/bagtricks.py:market1501,r101_ibn --workdir=runs/bot_r101 \
      --config.dataset.root=/path/to/Market-1501-v15.09.15
  python -m jreid.main --config=configs/bagtricks.py:veri,r50_ibn --workdir=runs/bot_veri \
      --config.dataset.root=/path/to/VeRi

Evaluate the latest checkpoint of a run, or a given one:

  python -m jreid.main --config=configs/bagtricks.py --workdir=/tmp/run --mode=eval
  python -m jreid.main --config=configs/bagtricks.py --workdir=/tmp/eval --mode=eval \
      --checkpoint=/tmp/run/checkpoints/<step>

Any key can be overridden, e.g. `--config.optim.lr=1e-3 --config.model.backbone.name=resnet50`.
"""

import ml_collections

from jreid.config_defaults import method_config
from jreid.methods import supervised


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = supervised.fastreid_variant(arg, 'configs/bagtricks.py')
  config = method_config('supervised')

  # FastReID Base-bagtricks.yml.
  config.model.backbone.name = 'resnet50'
  config.model.backbone.last_stride = 1
  config.model.pooling.name = 'avg'
  config.model.head.name = 'bnneck'
  config.model.head.neck_feat = 'before'
  config.loss.names = ('cross_entropy', 'triplet')
  config.loss.cross_entropy.epsilon = 0.1
  config.loss.triplet.margin = 0.3
  config.loss.triplet.hard_mining = True
  config.optim.name = 'adam'
  config.optim.lr = 3.5e-4
  config.optim.weight_decay = 5e-4
  config.optim.weight_decay_norm = 5e-4
  config.optim.weight_decay_bias = 5e-4
  config.optim.schedule = 'multistep'
  config.optim.milestones = (40, 90)
  config.optim.gamma = 0.1
  config.optim.warmup_epochs = 10
  config.optim.warmup_factor = 0.1
  config.augment.flip_prob = 0.5
  config.augment.pad = 10
  config.augment.random_erasing_prob = 0.5
  config.sampler.num_instances = 4
  config.batch_size = 64
  config.input.height, config.input.width = 256, 128
  config.train.epochs = 120

  if variant.dataset == 'synthreid':
    config.dataset.name = 'synthreid'
    config.model.backbone.name = 'resnet18'
    config.model.backbone.width = 32
    config.input.height, config.input.width = 96, 48
    config.augment.pad = 4
    config.batch_size = 32
    config.optim.lr = 1e-3
    config.optim.warmup_epochs = 1
    config.optim.milestones = (7,)
    config.train.epochs = 8
    config.eval.batch_size = 128
  else:
    supervised.set_fastreid_data(config, variant.dataset, variant.backbone)
    config.eval.published = f'bagtricks,{variant.backbone}'  # FastReID's model-zoo row beside ours
  return config
