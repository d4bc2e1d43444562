r"""Knowledge distillation (FastReID's distillation; projects/FastDistill): a small student trained
with its re-ID losses plus the teacher's logits (KL with temperature, FastDistill's JS divergence,
or L1) and embedding similarities (PKT), the teacher in inference mode inside the same train step
(jreid/methods/distill.py).

Default: the embedded SynthReID on a 2-core CPU. With no teacher given, the run first trains the
teacher, the Bag-of-Tricks default (configs/bagtricks.py: ResNet-18 at width 32, 96x48, 8 epochs),
into <workdir>/teacher, then the student, the same network at width 16 (a quarter of the
multiply-adds), with the same recipe plus KD; the recorded runs, student alone and student + KD,
are in benchmarks/results/distill_synthreid_cpu.json:

  python -m jreid.main --config=configs/distill.py --workdir=/tmp/distill

The same student without distillation (the baseline the KD run is compared with):

  python -m jreid.main --config=configs/distill.py:alone --workdir=/tmp/distill_alone

A teacher of your own: a finished jreid run, or a FastReID model-zoo checkpoint of the network
described by config.distill.teacher_model:

  python -m jreid.main --config=configs/distill.py --workdir=/tmp/distill2 \
      --config.distill.teacher_workdir=/tmp/run
  python -m jreid.main --config=configs/distill.py:market1501 --workdir=runs/kd_market \
      --config.dataset.root=/path/to/Market-1501-v15.09.15 \
      --config.distill.teacher_weights=/path/to/market_sbs_R101-ibn.pth

The paper recipe (FastDistill's kd-sbs_r101ibn-sbs_r34: an SBS ResNet-101-IBN teacher, an SBS
ResNet-34 student without IBN or non-local blocks, 256x128, batch 256, Adam 7e-4 with the cosine
decay after epoch 30, 60 epochs, backbone frozen for the first 500 steps; KD by FastDistill's JS
divergence at temperature 16, plus PKT as in the FastReID paper). Without a teacher the run trains
the ResNet-101-IBN teacher first with the same recipe (as FastDistill trains its teacher with
SBS); ImageNet weights for the student: --config.model.pretrained:

  python -m jreid.main --config=configs/distill.py:market1501 --workdir=runs/kd_market \
      --config.dataset.root=/path/to/Market-1501-v15.09.15 \
      --config.model.pretrained=/path/to/resnet34-b627a593.pth \
      --config.distill.teacher_workdir=runs/sbs_r101ibn_market
  python -m jreid.main --config=configs/distill.py:dukemtmc --workdir=runs/kd_duke \
      --config.dataset.root=/path/to/DukeMTMC-reID

Variants: `:market1501`, `:dukemtmc`, `:msmt17` (the paper recipe on that dataset), `:alone`
(no KD terms: the student trained alone; combines, e.g. `:market1501,alone`).
"""

import copy

import ml_collections

from jreid import config_args
from jreid.config_defaults import method_config

DATASETS = ('synthreid', 'market1501', 'dukemtmc', 'msmt17')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = config_args.parse_arg(
      arg, where='configs/distill.py', shorthands={d: {'dataset': d} for d in DATASETS},
      choices={'dataset': DATASETS}, dataset='synthreid', alone=False)
  synthetic = variant.dataset == 'synthreid'
  if synthetic:
    base = config_args.sibling(__file__, 'bagtricks.py')
  else:
    base = config_args.sibling(__file__, 'sbs.py', f'{variant.dataset},r101_ibn')
  config = method_config('distill')
  for key, value in base.items():
    if key not in ('method', 'loss'):
      config[key] = copy.deepcopy(value)
  for name in base.loss.keys():
    config.loss[name] = copy.deepcopy(base.loss[name])
  config.eval.published = ''  # No published row for a distilled student.

  # The teacher: the recipe's own network (FastDistill: sbs_r101ibn); the student: a smaller one.
  config.distill.teacher_model = copy.deepcopy(base.model)
  if synthetic:
    config.model.backbone.width = 16
    kd = {'mode': 'kl', 'temperature': 4.0}
  else:
    # FastDistill Base-kd.yml (over Base-SBS) and kd-sbs_r101ibn-sbs_r34.yml.
    config.model.backbone.name = 'resnet34'
    config.model.backbone.with_ibn = ''
    config.model.backbone.with_nl = False
    config.model.backbone.stem_pool = 'torchvision'  # ImageNet ResNet-34 weights, no FastReID ones
    config.input.height, config.input.width = 256, 128
    config.batch_size = 256
    config.optim.lr = 7e-4
    config.optim.delay_epochs = 30
    config.optim.freeze_iters = 500
    config.train.epochs = 60
    kd = {'mode': 'jsdiv', 'temperature': 16.0}  # Distiller.jsdiv_loss(t=16).
  config.loss.names = tuple(base.loss.names)
  if not variant.alone:
    config.loss.names += ('kd_logit', 'kd_pkt')
    config.loss.kd_logit.mode = kd['mode']
    config.loss.kd_logit.temperature = kd['temperature']
  return config
