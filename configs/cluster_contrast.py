r"""Cluster Contrast (Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification",
ACCV 2022): unsupervised re-ID with DBSCAN pseudo labels on the Jaccard distance each epoch and a
cluster-level memory of centroids (InfoNCE, temperature 0.05, momentum update). No identity label
of the training split is used (jreid/methods/cluster_contrast.py).

Default: the embedded synthetic dataset SynthReID on a 2-core CPU in under 10 minutes (ResNet-18
at width 32, 96x48 input standardised per image as the PPLR default, batch 8 pseudo ids x 4, Adam
3.5e-4 (x0.1 at epoch 10), 12 epochs x 40 steps, DBSCAN eps 0.5; no ImageNet weights; per-epoch
test mAP in cluster_contrast_epochs.jsonl / .png; the recorded run is
benchmarks/results/cluster_contrast_synthreid_cpu.json):

  python -m jreid.main --config=configs/cluster_contrast.py --workdir=/tmp/cc

The memory updated by each identity's hardest sample instead of every sample (the paper's
"hard" variant, the reference's --use-hard):

  python -m jreid.main --config=configs/cluster_contrast.py:hard --workdir=/tmp/cc_hard

The paper recipe (the reference's README and run_code.sh: ResNet-50, GeM, 256x128, batch 256 =
16 pseudo ids x 16, Adam 3.5e-4 weight decay 5e-4, x0.1 every 20 epochs, 50 epochs of 200
iterations (400 on MSMT17), memory momentum 0.1, DBSCAN eps 0.6 (0.7 on MSMT17), k1 30, k2 6,
min_samples 4):

  python -m jreid.main --config=configs/cluster_contrast.py:market1501 --workdir=runs/cc_market \
      --config.dataset.root=/path/to/Market-1501-v15.09.15 \
      --config.model.pretrained=/path/to/resnet50-0676ba61.pth
  python -m jreid.main --config=configs/cluster_contrast.py:msmt17 --workdir=runs/cc_msmt \
      --config.dataset.root=/path/to/MSMT17_V1 \
      --config.model.pretrained=/path/to/resnet50-0676ba61.pth

Variants combine: `:market1501,hard` (or `:dataset=market1501,memory_update=hard`).
"""

import ml_collections

from jreid import config_args
from jreid.config_defaults import method_config

DATASETS = ('synthreid', 'market1501', 'msmt17')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  shorthands = {d: {'dataset': d} for d in DATASETS}
  shorthands['hard'] = {'memory_update': 'hard'}
  variant = config_args.parse_arg(arg, where='configs/cluster_contrast.py', shorthands=shorthands,
                                  choices={'dataset': DATASETS,
                                           'memory_update': ('mean', 'hard')},
                                  dataset='synthreid', memory_update='mean')
  config = method_config('cluster_contrast')
  config.cluster_contrast.memory_update = variant.memory_update

  # The paper recipe (examples/cluster_contrast_train_usl.py of the reference).
  config.model.backbone.name = 'resnet50'
  config.model.backbone.last_stride = 1
  config.model.pooling.name = 'gem'
  config.model.head.name = 'bnneck'
  config.optim.name = 'adam'
  config.optim.lr = 3.5e-4
  config.optim.weight_decay = 5e-4
  config.optim.weight_decay_norm = 5e-4
  config.optim.weight_decay_bias = 5e-4
  config.optim.schedule = 'multistep'
  config.optim.milestones = (20, 40)
  config.optim.gamma = 0.1
  config.optim.warmup_epochs = 0
  config.augment.flip_prob = 0.5
  config.augment.pad = 10
  config.augment.random_erasing_prob = 0.5
  config.sampler.num_instances = 16
  config.batch_size = 256
  config.input.height, config.input.width = 256, 128
  config.train.epochs = 50
  config.train.steps_per_epoch = 200
  config.train.log_every_steps = 50
  config.eval.histogram_baseline = False

  config.dataset.name = variant.dataset
  if variant.dataset == 'synthreid':
    config.model.backbone.name = 'resnet18'
    config.model.backbone.width = 32
    config.input.height, config.input.width = 96, 48
    config.augment.pad = 4
    config.batch_size = 32
    config.sampler.num_instances = 4
    config.train.epochs = 12
    config.train.steps_per_epoch = 40
    config.train.log_every_steps = 20
    config.optim.milestones = (10,)
    # From random weights, per-image standardisation cancels SynthReID's per-camera colour cast,
    # which would otherwise drive the first clusters (as in configs/pplr.py).
    config.model.input_norm = 'per_image'
    config.augment.color_jitter_prob = 0.5
    config.cluster_contrast.eps = 0.5
    config.eval.batch_size = 128
    config.eval.histogram_baseline = True
  elif variant.dataset == 'msmt17':
    config.train.steps_per_epoch = 400
    config.cluster_contrast.eps = 0.7
  return config
