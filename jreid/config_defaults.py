"""The config sections every method shares, with FastReID-like defaults.

`base_config()` holds what the shared loop, data pipeline and evaluation read; a method adds the
sections it owns (`jreid.methods.<name>.default_config()`, e.g. `loss` and `sampler`);
`method_config(name)` is the two together, where every config in `configs/` starts. `jreid.main`
locks the result, so a misspelt key is an error instead of a silently ignored setting, and a
section the method never reads is an error too (`jreid.config_checks.check_config`).
"""

import dataclasses

import ml_collections

from data_pipelines import synthreid
from data_pipelines import synthvehicle
from jreid import models


def base_config() -> ml_collections.ConfigDict:
  """The shared sections (no method's own sections: see `method_config`)."""
  c = ml_collections.ConfigDict()
  c.method = 'supervised'  # The module jreid/methods/<method>.py.
  c.seed = 0
  c.batch_size = 64  # Global batch over all devices and processes.

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = 'synthreid'  # 'synthreid' | 'market1501' | 'dukemtmc' | 'msmt17' | 'veri'
  c.dataset.root = ''  # The extracted public dataset folder (not needed for synthreid).
  c.dataset.cache_dir = ''  # Synthetic data and prepared TFDS files; default $JREID_CACHE or ~/.cache/jreid.
  c.dataset.combine_all = False  # Train on train + query + gallery (QAConv --combine_all).
  c.dataset.test_size = 'small'  # VehicleID / VERI-Wild test list: 'small' | 'medium' | 'large'.
  c.dataset.trial = 1  # RegDB split file 1..10; classic CUHK03 split 1..20; VehicleID draw seed.
  # Multi-source training (FastReID DATASETS.NAMES): further datasets whose training images join
  # this one's, each 'name' or 'name:/path/to/root' (as eval.testsets), e.g.
  # ('msmt17:/data/MSMT17_V1',). Identities and cameras of each source stay apart; query and
  # gallery are config.dataset.name's.
  c.dataset.sources = ()
  c.dataset.synth = ml_collections.ConfigDict(dataclasses.asdict(synthreid.SynthReIDSpec()))
  # SynthVehicleSpec of dataset 'synthvehicle' (VeRi-776 layout).
  c.dataset.synth_vehicle = ml_collections.ConfigDict(
      dataclasses.asdict(synthvehicle.SynthVehicleSpec()))

  c.input = ml_collections.ConfigDict()
  c.input.height = 256
  c.input.width = 128

  c.augment = ml_collections.ConfigDict()
  c.augment.flip_prob = 0.5
  c.augment.pad = 10
  c.augment.random_erasing_prob = 0.5
  c.augment.random_erasing_value = 'mean'
  c.augment.color_jitter_prob = 0.0
  # Ordered op chain, e.g. ('flip', 'pad_crop', 'autoaugment(prob=0.1)', 'random_erasing'); each
  # 'name' or 'name(literal args)' of data_pipelines.transforms.TRANSFORMS, defaults from the
  # keys above. Empty: resize, flip, pad + crop, colour jitter, random erasing from those keys.
  c.augment.ops = ()
  # Batch ops after batching (transforms.build_batch_transform), e.g. ('random_patch(prob=0.5)',).
  c.augment.batch_ops = ()

  c.data = ml_collections.ConfigDict()
  c.data.num_parallel_calls = -1  # tf.data AUTOTUNE.
  c.data.prefetch = 2
  c.data.on_corrupt = 'skip'  # Undecodable images: 'skip' (counted, named once) | 'error'.

  # c.model.dtype is the compute dtype, 'float32' | 'bfloat16' (mixed precision): with bfloat16
  # convolutions and activations run in bfloat16, while params (master weights), optimiser state,
  # BatchNorm statistics, pooling, head, losses and gradients stay float32.
  c.model = models.default_model_config()

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adam'  # 'adam' | 'sgd'
  c.optim.lr = 3.5e-4
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.adam_b1 = 0.9
  c.optim.adam_b2 = 0.999
  c.optim.adam_eps = 1e-8
  c.optim.weight_decay = 5e-4
  c.optim.weight_decay_norm = 5e-4
  c.optim.weight_decay_bias = 5e-4
  c.optim.bias_lr_factor = 1.0
  c.optim.lr_factors = ()  # ((path regex, factor), ...), e.g. (('^backbone/', 0.1),).
  c.optim.clip_grad_norm = 0.0  # Global-norm clipping; 0 = off.
  c.optim.schedule = 'multistep'  # 'multistep' | 'cosine' | 'constant'
  c.optim.milestones = (40, 90)  # Epochs.
  c.optim.gamma = 0.1
  c.optim.delay_epochs = 0  # Cosine: constant lr for these epochs first.
  c.optim.eta_min_lr = 0.0
  c.optim.warmup_epochs = 10.0
  c.optim.warmup_factor = 0.1
  c.optim.warmup_method = 'linear'  # 'linear' | 'constant'
  c.optim.warmup_per_epoch = False  # True: the warmup factor is constant within an epoch.
  c.optim.freeze_layers = ('^backbone/',)  # Path regexes frozen for the first freeze_iters.
  c.optim.freeze_iters = 0
  # Stochastic weight averaging (FastReID SOLVER.SWA), for every method. From start_epoch to
  # the end of training the params are averaged every `freq` steps (in the optimiser state, so a
  # resumed run is exact); after the last epoch the params are replaced by the average and the
  # BatchNorm statistics recomputed on `bn_update_steps` training batches (0: one epoch), so the
  # final checkpoint and evaluation use the averaged model.
  c.optim.swa = ml_collections.ConfigDict()
  c.optim.swa.enabled = False
  c.optim.swa.start_epoch = 0  # First epoch of the SWA phase, in [0, train.epochs).
  c.optim.swa.freq = 2  # Steps between averages (FastReID SWA.PERIOD); also the lr cycle length.
  # cyclic_lr: lr in the SWA phase cosine-annealed from lr_factor x (lr at start_epoch) down to
  # eta_min_lr, restarting every `freq` steps (FastReID SWA.LR_SCHED); False: main schedule.
  c.optim.swa.cyclic_lr = True
  c.optim.swa.lr_factor = 10.0  # FastReID SWA.LR_FACTOR.
  c.optim.swa.eta_min_lr = 3.5e-6  # FastReID SWA.ETA_MIN_LR.
  c.optim.swa.bn_update_steps = 0  # Batches of the BatchNorm recomputation; 0: steps_per_epoch.

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 120
  c.train.steps_per_epoch = 0  # 0: len(train split) // batch_size, as FastReID.
  c.train.log_every_steps = 20
  c.train.checkpoint_every_steps = 500
  c.train.keep_checkpoints = 2
  c.train.eval_every_epochs = 0  # 0: evaluate only at the end.

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 128
  c.eval.metric = 'cosine'  # 'cosine' | 'euclidean'
  c.eval.max_rank = 50
  # Rank metrics: 'market' (every gallery item; FastReID's protocol) | 'cuhk03' (classic CUHK03
  # single-gallery-shot: one gallery image per identity drawn at random, cuhk03_repeats draws
  # averaged; mAP from the full ranking; jreid.evaluation.evaluate_cuhk03).
  c.eval.protocol = 'market'
  c.eval.cuhk03_repeats = 10
  c.eval.untrained = True  # Also evaluate the network before the first step.
  c.eval.histogram_baseline = True  # Hand-crafted colour-histogram baseline in the report.
  c.eval.rank_list_queries = 8  # Queries shown in the report's rank-list grid.
  c.eval.flip = False  # Flip test: average the features of each image and its mirror image.
  c.eval.roc = True  # Verification ROC (TPR at FPR 1e-4, 1e-3, 1e-2) and its plot.
  c.eval.aqe = False  # Post-processing row: FastReID alpha query expansion of query and gallery,
  c.eval.aqe_k = 5
  c.eval.aqe_alpha = 3.0
  c.eval.aqe_times = 1
  c.eval.rerank = False  # ... then k-reciprocal re-ranking (Zhong et al. 2017, scalable mode).
  c.eval.rerank_k1 = 20
  c.eval.rerank_k2 = 6
  c.eval.rerank_lambda = 0.3
  # More test sets for the same model, one table row each: names of data_pipelines.datasets, or
  # 'name:/path/to/root' for an extracted public dataset, e.g. ('synthreid_b',).
  c.eval.testsets = ()
  # The published PyTorch result this run is put beside, one row each under the run's own in the
  # results table and report (jreid.published.published_rows): 'METHOD,BACKBONE' such as
  # 'sbs,r50_ibn', 'pplr_cam,r50', 'agw,r50', or 'qaconv[,TRAIN]'; looked up with
  # config.dataset.name, so the embedded synthetic default gets none. Set by the named variants.
  c.eval.published = ''
  return c


def method_config(name: str) -> ml_collections.ConfigDict:
  """`base_config()` with the sections of method `name` (jreid/methods/<name>.py) added; a
  section the method defines replaces the shared one (e.g. QAConv's `model`)."""
  from jreid import method  # pylint: disable=g-import-not-at-top
  config = base_config()
  own = method.load(name).default_config()
  for key, value in own.items():
    config[key] = value
  config.method = name
  if 'pretrained' in config.model and 'pretrained_scope' not in config.model:
    # What config.model.pretrained fills (jreid.weights): 'backbone' (ImageNet weights, or the
    # backbone of a trained model) | 'all' (a trained model as released: FastReID model zoo,
    # QAConv, PPLR, AGW; --mode=eval then tests it without a checkpoint of its own).
    config.model.pretrained_scope = 'backbone'
  return config


def method_sections(name: str) -> list[str]:
  """The top-level keys a config of method `name` has (and the method reads)."""
  return list(method_config(name).keys())
