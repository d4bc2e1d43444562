r"""PPLR: unsupervised re-ID with part-based pseudo-label refinement (Cho et al., CVPR 2022).

No identity label of the training split is used; each epoch clusters the training images
(Jaccard distance + DBSCAN) and trains on the pseudo labels (jreid/methods/pplr.py).

Default: the embedded synthetic dataset SynthReID on a 2-core CPU (ResNet-18 at width 32, 96x48
input, each image standardised by its own channel statistics, batch 8 pseudo ids x 4, Adam
3.5e-4 (x0.1 at epoch 10), 12 epochs x 40 steps, DBSCAN eps 0.5, colour jitter 0.5, per-epoch
test mAP in pplr_epochs.jsonl / pplr_epochs.png; no ImageNet weights; the recorded run is
benchmarks/results/pplr_synthreid_cpu.json):

  python -m jreid.main --config=configs/pplr.py --workdir=/tmp/pplr

Deviation from the paper, for random initialisation: `model.input_norm='per_image'`. The
paper starts from ImageNet weights, whose features are largely invariant to a camera's colour
cast. From random weights with ImageNet-normalised input the first DBSCAN clusters are mostly
single-camera tracklets and PPLR training does not recover the untrained network's mAP within
this budget; standardising each image by its own per-channel mean and std (grey-world) cancels
SynthReID's per-camera gain and cast, and lets the pseudo labels carry identity (the
measurements are in the recorded run's notes).

The camera-aware variant (inter-camera proxy loss, 'camera_proxy' in config.loss.names) on the
same data (benchmarks/results/pplr_cam_synthreid_cpu.json):

  python -m jreid.main --config=configs/pplr.py:cam --workdir=/tmp/pplr_cam

The paper recipe (ResNet-50 last stride 1, 384x128, batch 64 = 16 x 4, Adam 3.5e-4 wd 5e-4,
x0.1 every 20 epochs, 50 epochs x 400 iterations, BatchNorm statistics per 16 images as the
reference's 4 GPUs), without / with camera labels:

  python -m jreid.main --config=configs/pplr.py:market1501 --workdir=runs/pplr_market \
      --config.dataset.root=/path/to/Market-1501-v15.09.15
  python -m jreid.main --config=configs/pplr.py:market1501_cam --workdir=runs/pplr_cam_market \
      --config.dataset.root=/path/to/Market-1501-v15.09.15
  python -m jreid.main --config=configs/pplr.py:msmt17 --workdir=runs/pplr_msmt \
      --config.dataset.root=/path/to/MSMT17_V1          # also :msmt17_cam (eps 0.6, lam_cam 1)
  python -m jreid.main --config=configs/pplr.py:veri --workdir=runs/pplr_veri \
      --config.dataset.root=/path/to/VeRi               # also :veri_cam (256x256, K=8, eps 0.7)

(`:market1501_cam` is also written `:market1501,cam` or `:dataset=market1501,cam=true`.) The
paper starts from an ImageNet-pretrained ResNet-50: add
--config.model.pretrained=/path/to/resnet50-0676ba61.pth (torchvision's state dict).
"""

import ml_collections

from jreid import config_args
from jreid.config_defaults import method_config

DATASETS = ('synthreid', 'market1501', 'msmt17', 'veri')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  shorthands = {d: {'dataset': d} for d in DATASETS}
  shorthands.update({f'{d}_cam': {'dataset': d, 'cam': True} for d in DATASETS[1:]})
  variant = config_args.parse_arg(arg, where='configs/pplr.py', shorthands=shorthands,
                                  choices={'dataset': DATASETS}, dataset='synthreid', cam=False)
  config = method_config('pplr')
  if variant.cam:
    config.loss.names = ('pplr_pglr', 'pplr_part', 'triplet', 'camera_proxy')

  # The paper recipe (examples/train_pplr.py, train_pplr_cam.py of the reference code).
  config.model.backbone.name = 'resnet50'
  config.model.backbone.last_stride = 1
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
  config.sampler.num_instances = 4
  config.batch_size = 64
  config.input.height, config.input.width = 384, 128
  config.train.epochs = 50
  config.train.steps_per_epoch = 400
  config.train.log_every_steps = 50
  config.pplr.bn_group_size = 16  # 4 GPUs x 16 images in the reference.
  config.eval.histogram_baseline = False

  config.dataset.name = variant.dataset
  if variant.dataset == 'synthreid':
    config.model.backbone.name = 'resnet18'
    config.model.backbone.width = 32
    config.input.height, config.input.width = 96, 48
    config.augment.pad = 4
    config.batch_size = 32
    config.train.epochs = 12
    config.train.steps_per_epoch = 40
    config.train.log_every_steps = 20
    config.optim.milestones = (10,)
    config.pplr.aals_epoch = 2
    # Without ImageNet weights the first clusters of ImageNet-normalised input are mostly one
    # camera each (SynthReID's cameras differ in gain and colour cast) and training on them
    # loses test mAP; each image standardised by its own channel statistics (grey-world) cancels
    # the cast (see the docstring).
    config.model.input_norm = 'per_image'
    config.augment.color_jitter_prob = 0.5
    config.pplr.bn_group_size = 0
    config.eval.batch_size = 128
    config.eval.histogram_baseline = True
  elif variant.dataset == 'market1501':
    config.pplr.eps = 0.4 if variant.cam else 0.5
    config.pplr.max_proxies = 4096
  elif variant.dataset == 'msmt17':
    config.pplr.eps = 0.6 if variant.cam else 0.5
    config.pplr.max_clusters = 4096
    config.pplr.max_proxies = 12288
    if variant.cam:
      config.loss.camera_proxy.weight = 1.0  # lam_cam
  elif variant.dataset == 'veri':
    config.input.height, config.input.width = 256, 256
    config.sampler.num_instances = 8
    config.pplr.eps = 0.7
    config.pplr.max_proxies = 8192
  if variant.dataset != 'synthreid':  # The paper's ResNet-50 numbers beside ours (jreid.published).
    config.eval.published = ('pplr_cam' if variant.cam else 'pplr') + ',r50'
  return config
