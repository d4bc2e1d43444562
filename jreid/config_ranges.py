"""Range checks of the numeric config keys: a value out of range is one line, before any work.

`RANGES` maps each numeric key a user may set (dotted, without the leading `config.`) to its
valid values; `check_ranges(config)` checks every key of the table that `config` has (each
method's config has its own sections, so absent keys are skipped), then the rules that tie two
keys together, and raises `jreid.config_checks.ConfigError` such as

  config.train.epochs=-3 is out of range: must be an integer >= 1.

`jreid.config_checks.check_command_line` calls it on the config with the command-line overrides
applied, so a bad value stops the run before any dataset is read, model compiled or workdir
written. A new numeric config key needs an entry here (tests/test_config_ranges.py checks that
every numeric key of every config variant has one).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections



class ConfigError(ValueError):
  """The config file or a command-line override is wrong; the message names the fix
  (`jreid.config_checks.ConfigError`, defined here so that this module needs no other)."""

# The input batch (height x width x images) is refused above this many pixels: 2**28 pixels are
# 3 GiB of float32 RGB input before the first convolution, far beyond any re-ID recipe (a
# 2048x2048 batch of 64, or 4096 images of 384x128 on a pod, is the most it admits).
MAX_BATCH_PIXELS = 2**28


def _fmt(x: float) -> str:
  return str(int(x)) if float(x).is_integer() else repr(x)


@dataclasses.dataclass(frozen=True)
class Range:
  """The valid values of one numeric key.

  Attributes:
    integer: an int is required (a bool is not one); else any finite int or float.
    lo: lowest valid value (None: no bound).
    hi: highest valid value (None: no bound).
    lo_open: `lo` itself is invalid.
    hi_open: `hi` itself is invalid.
    also: special values valid outside [lo, hi], e.g. -1 for tf.data AUTOTUNE.
    note: what the special values mean, shown in the message, e.g. '0: off'.
    each: the value is a tuple and each element must be in range.
    lengths: the valid tuple lengths (`each` only); () = any.
  """

  integer: bool
  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False
  hi_open: bool = False
  also: tuple[float, ...] = ()
  note: str = ''
  each: bool = False
  lengths: tuple[int, ...] = ()

  def _scalar_ok(self, x: Any) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
      return False
    if self.integer and not isinstance(x, int):
      return False
    if not math.isfinite(x):
      return False
    if x in self.also:
      return True
    if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
      return False
    if self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)):
      return False
    return True

  def ok(self, value: Any) -> bool:
    """True when `value` is valid."""
    if not self.each:
      return self._scalar_ok(value)
    if not isinstance(value, (tuple, list)):
      return False
    if self.lengths and len(value) not in self.lengths:
      return False
    return all(map(self._scalar_ok, value))

  def _bounds(self) -> str:
    kind = 'integer' if self.integer else 'number'
    lo, hi = self.lo, self.hi
    if lo is not None and hi is not None:
      if self.integer and lo + 1 == hi and not (self.lo_open or self.hi_open):
        return f'{_fmt(lo)} or {_fmt(hi)}'
      return (f'{kind} in {"(" if self.lo_open else "["}{_fmt(lo)}, '
              f'{_fmt(hi)}{")" if self.hi_open else "]"}')
    if lo is not None:
      return f'{kind} {">" if self.lo_open else ">="} {_fmt(lo)}'
    if hi is not None:
      return f'{kind} {"<" if self.hi_open else "<="} {_fmt(hi)}'
    return kind

  def describe(self) -> str:
    """The valid values in words, e.g. 'an integer >= 1' or 'a number in [0, 1]'."""
    bounds = self._bounds()
    if self.each:
      plural = bounds.replace('integer', 'integers', 1).replace('number', 'numbers', 1)
      if self.lengths:
        counts = ' or '.join(str(n) for n in self.lengths if n)
        text = f'a tuple of {counts} {plural}'
        if 0 in self.lengths:
          text = f'() or {text}'
      else:
        text = f'a tuple of {plural}'
    elif bounds[0].isdigit():
      text = bounds  # '1 or 2'
    else:
      text = ('an ' if bounds[0] in 'aeiou' else 'a ') + bounds
    if self.also:
      text += ', or ' + ' or '.join(_fmt(x) for x in self.also)
    if self.note:
      text += f' ({self.note})'
    return text


def _int(lo: float | None = None, hi: float | None = None, **kw) -> Range:
  return Range(True, lo, hi, **kw)


def _num(lo: float | None = None, hi: float | None = None, **kw) -> Range:
  return Range(False, lo, hi, **kw)


COUNT = _int(1)
NONNEG_INT = _int(0)
PROB = _num(0, 1)
POSITIVE = _num(0, lo_open=True)
NONNEG = _num(0)
SIDE = _int(16, 2048)  # Image sides in pixels: the batch bound below keeps the product in memory.
DECAY = _num(0, 1, lo_open=True)  # A multiplicative decay of the learning rate.
WEIGHT = NONNEG  # A loss term's weight (0 turns the term off).
BETA = _num(0, 1, hi_open=True)  # Adam betas, momentum, dropout.
SEED = NONNEG_INT
JPEG_QUALITY = _int(1, 100)


def _synth_ranges(prefix: str, *, max_ids: int, max_cameras: int, max_duration: float,
                  min_width: int) -> dict[str, Range]:
  """The ranges of the synthetic dataset spec sections (SynthReIDSpec, SynthVehicleSpec)."""
  return {
      f'{prefix}.seed': SEED,
      f'{prefix}.num_train_ids': _int(1, max_ids),
      f'{prefix}.num_test_ids': _int(1, max_ids),
      f'{prefix}.min_images_per_id': _int(4),
      f'{prefix}.max_images_per_id': _int(4),
      f'{prefix}.min_cameras_per_id': _int(2, max_cameras),
      f'{prefix}.max_cameras_per_id': _int(2, max_cameras),
      f'{prefix}.max_query_cameras': _int(1, max_cameras),
      f'{prefix}.num_cameras': _int(2, max_cameras),
      f'{prefix}.height': _int(16, 1024),
      f'{prefix}.width': _int(min_width, 1024),
      f'{prefix}.jpeg_quality': JPEG_QUALITY,
      f'{prefix}.duration_s': _num(0, max_duration, lo_open=True),
  }


RANGES: dict[str, Range] = {
    'seed': SEED,
    'batch_size': COUNT,
    # dataset
    'dataset.trial': _int(1, note='RegDB split file 1..10; classic CUHK03 split 1..20; '
                          'VehicleID draw seed'),
    **_synth_ranges('dataset.synth', max_ids=4999, max_cameras=9, max_duration=30000,
                    min_width=8),
    'dataset.synth.num_distractors': NONNEG_INT,
    'dataset.synth.num_junk': NONNEG_INT,
    'dataset.synth.num_colour_groups': COUNT,
    'dataset.synth.min_speed_mps': POSITIVE,
    'dataset.synth.max_speed_mps': POSITIVE,
    **_synth_ranges('dataset.synth_vehicle', max_ids=9998, max_cameras=20, max_duration=100000,
                    min_width=16),
    # input, augmentation, sampling, tf.data
    'input.height': SIDE,
    'input.width': SIDE,
    'augment.flip_prob': PROB,
    'augment.pad': _int(0, 512),
    'augment.random_erasing_prob': PROB,
    'augment.color_jitter_prob': PROB,
    'sampler.num_instances': COUNT,
    'sampler.set_weight': _int(0, each=True, note='identities per camera set; () = 1 each'),
    'data.num_parallel_calls': _int(1, also=(-1,), note='-1: tf.data AUTOTUNE'),
    'data.prefetch': _int(0, also=(-1,), note='-1: tf.data AUTOTUNE'),
    # model
    'model.backbone.width': _int(1, 4096),
    'model.backbone.last_stride': _int(1, 2),
    'model.backbone.nl_inter_channels': _int(0, note='0: channels // 2'),
    'model.backbone.nl_layers': _int(0, each=True, lengths=(0, 4),
                                     note='non-local blocks per ResNet stage'),
    'model.backbone.patch_stride': _int(1, 16),
    'model.pooling.gem_p': POSITIVE,
    'model.head.embedding_dim': _int(0, note='0: no reduction layer'),
    'model.head.cls_scale': POSITIVE,
    'model.head.cls_margin': NONNEG,
    'model.head.dropout': BETA,
    'model.pixel_mean': _num(each=True, lengths=(3,)),
    'model.pixel_std': _num(0, lo_open=True, each=True, lengths=(3,)),
    'model.qaconv.neck': _int(0, note='0: no neck convolution'),
    'model.two_stream.specific_stages': _int(0, 1),
    'model.two_stream.graph.reduction': COUNT,
    'model.two_stream.graph.num_global_nodes': COUNT,
    'model.two_stream.graph.stage': _int(1, 4),
    # loss
    'loss.cross_entropy.weight': WEIGHT,
    'loss.cross_entropy.epsilon': _num(hi=1, hi_open=True,
                                       note='< 0: probability-based smoothing'),
    'loss.cross_entropy.alpha': PROB,
    'loss.triplet.weight': WEIGHT,
    'loss.triplet.margin': _num(0, note='0: soft margin'),
    'loss.focal.weight': WEIGHT,
    'loss.focal.alpha': PROB,
    'loss.focal.gamma': NONNEG,
    'loss.circle.weight': WEIGHT,
    'loss.circle.margin': NONNEG,
    'loss.circle.gamma': POSITIVE,
    'loss.cosface.weight': WEIGHT,
    'loss.cosface.margin': NONNEG,
    'loss.cosface.gamma': POSITIVE,
    'loss.wrt.weight': WEIGHT,
    'loss.qaconv_triplet.weight': WEIGHT,
    'loss.qaconv_triplet.margin': NONNEG,
    'loss.qaconv_pairwise.weight': WEIGHT,
    'loss.qaconv_class_memory.weight': WEIGHT,
    'loss.pplr_pglr.weight': WEIGHT,
    'loss.pplr_pglr.beta': PROB,
    'loss.pplr_part.weight': WEIGHT,
    'loss.pplr_part.epsilon': BETA,
    'loss.camera_proxy.weight': WEIGHT,
    'loss.camera_proxy.num_hards': COUNT,
    'loss.camera_proxy.temperature': POSITIVE,
    'loss.cluster_memory.weight': WEIGHT,
    'loss.cluster_memory.temperature': POSITIVE,
    'loss.kd_logit.weight': WEIGHT,
    'loss.kd_logit.temperature': POSITIVE,
    'loss.kd_pkt.weight': WEIGHT,
    # optimiser and schedule
    'optim.lr': POSITIVE,
    'optim.momentum': BETA,
    'optim.adam_b1': BETA,
    'optim.adam_b2': BETA,
    'optim.adam_eps': POSITIVE,
    'optim.weight_decay': NONNEG,
    'optim.weight_decay_norm': NONNEG,
    'optim.weight_decay_bias': NONNEG,
    'optim.bias_lr_factor': NONNEG,
    'optim.clip_grad_norm': _num(0, note='0: off'),
    'optim.milestones': _int(0, each=True, note='epochs'),
    'optim.gamma': DECAY,
    'optim.delay_epochs': NONNEG,
    'optim.eta_min_lr': NONNEG,
    'optim.warmup_epochs': NONNEG,
    'optim.warmup_factor': PROB,
    'optim.freeze_iters': NONNEG_INT,
    'optim.swa.start_epoch': NONNEG_INT,
    'optim.swa.freq': COUNT,
    'optim.swa.lr_factor': POSITIVE,
    'optim.swa.eta_min_lr': NONNEG,
    'optim.swa.bn_update_steps': _int(0, note='0: one epoch'),
    # the loop
    'train.epochs': COUNT,
    'train.steps_per_epoch': _int(0, note='0: training images // batch_size'),
    'train.log_every_steps': COUNT,
    'train.checkpoint_every_steps': COUNT,
    'train.keep_checkpoints': COUNT,
    'train.eval_every_epochs': _int(0, note='0: only at the end'),
    # evaluation
    'eval.batch_size': COUNT,
    'eval.max_rank': _int(10, note='the results report Rank-10'),
    'eval.rank_list_queries': NONNEG_INT,
    'eval.aqe_k': COUNT,
    'eval.aqe_alpha': NONNEG,
    'eval.aqe_times': COUNT,
    'eval.rerank_k1': COUNT,
    'eval.rerank_k2': COUNT,
    'eval.rerank_lambda': PROB,
    'eval.cuhk03_repeats': COUNT,
    # DSR partial matching (config.dsr, supervised methods)
    'dsr.lam': POSITIVE,
    'dsr.scales': _int(1, each=True, note='block sizes of the multi-scale representation'),
    # QAConv (config.qaconv)
    'qaconv.gs_pre_epochs': NONNEG_INT,
    'qaconv.decay_ratio': _num(0, 1, note='0: no adaptive schedule'),
    'qaconv.decay_factor': DECAY,
    'qaconv.query_block': COUNT,
    'qaconv.gallery_block': COUNT,
    'qaconv.tau': POSITIVE,
    'qaconv.sigma': POSITIVE,
    'qaconv.K': COUNT,
    'qaconv.alpha': NONNEG,
    # PPLR (config.pplr)
    'pplr.num_parts': COUNT,
    'pplr.k1': COUNT,
    'pplr.k2': COUNT,
    'pplr.eps': _num(0, 1, lo_open=True, note='DBSCAN radius on the Jaccard distance'),
    'pplr.min_samples': COUNT,
    'pplr.k': COUNT,
    'pplr.aals_epoch': NONNEG_INT,
    'pplr.max_clusters': _int(0, note='0: training images // min_samples'),
    'pplr.max_proxies': _int(0, note='0: min(training images, clusters x cameras)'),
    'pplr.bn_group_size': _int(0, note='0: whole batch'),
    'pplr.eval_every_epochs': _int(0, note='0: never'),
    # cross-modality (config.cross_modality)
    'cross_modality.num_ids': COUNT,
    'cross_modality.num_visible': COUNT,
    'cross_modality.num_infrared': COUNT,
    'cross_modality.num_trials': COUNT,
    'cross_modality.shots': _int(1, each=True),
    # Cluster Contrast (config.cluster_contrast)
    'cluster_contrast.k1': COUNT,
    'cluster_contrast.k2': COUNT,
    'cluster_contrast.eps': _num(0, 1, lo_open=True, note='DBSCAN radius on the Jaccard distance'),
    'cluster_contrast.min_samples': COUNT,
    'cluster_contrast.momentum': PROB,
    'cluster_contrast.max_clusters': _int(0, note='0: training images // min_samples'),
    'cluster_contrast.eval_every_epochs': _int(0, note='0: never'),
}
# Distillation (config.distill): the teacher's network has the ranges of config.model.
RANGES.update({'distill.teacher_model.' + key[len('model.'):]: valid
               for key, valid in list(RANGES.items()) if key.startswith('model.')})


# The string keys with a fixed set of values (checked like the numeric ranges).
CHOICES: dict[str, tuple[str, ...]] = {
    'model.pretrained_scope': ('backbone', 'all'),
    'model.pooling.gem_eps_mode': ('auto', 'clamp', 'add'),
    'eval.protocol': ('market', 'cuhk03'),
}


_MISSING = object()


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value at dotted `key`, or _MISSING when the config has no such key."""
  node: Any = config
  for part in key.split('.'):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      return _MISSING
    node = node[part]
  return node


def _has(config: ml_collections.ConfigDict, *keys: str) -> bool:
  return all(_get(config, key) is not _MISSING for key in keys)


def _check_pairs(config: ml_collections.ConfigDict) -> None:
  """The rules that tie two or more keys together (each key is already in its own range)."""
  get = lambda key: _get(config, key)
  if 'cross_modality' in config:
    if _has(config, 'batch_size', 'cross_modality.num_ids', 'cross_modality.num_visible',
            'cross_modality.num_infrared'):
      cm = config.cross_modality
      size = cm.num_ids * (cm.num_visible + cm.num_infrared)
      if config.batch_size != size:
        raise ConfigError(
            f'config.batch_size={config.batch_size} does not match the cross-modality batch '
            f'config.cross_modality.num_ids x (num_visible + num_infrared) = {cm.num_ids} x '
            f'({cm.num_visible} + {cm.num_infrared}) = {size}: set config.batch_size={size}.')
  elif _has(config, 'batch_size', 'sampler.num_instances'):
    batch, k = get('batch_size'), get('sampler.num_instances')
    if batch % k:
      raise ConfigError(
          f'config.batch_size={batch} is not divisible by config.sampler.num_instances={k}: '
          'the P x K sampler needs batch_size = P * K, e.g. '
          f'batch_size={max(k, batch - batch % k)}.')
  if _has(config, 'input.height', 'input.width'):
    height, width = get('input.height'), get('input.width')
    for key in ('batch_size', 'eval.batch_size'):
      if _has(config, key) and height * width * get(key) > MAX_BATCH_PIXELS:
        raise ConfigError(
            f'config.input.height x config.input.width x config.{key} = {height} x {width} x '
            f'{get(key)} = {height * width * get(key)} pixels per batch is out of range: must '
            f'be <= {MAX_BATCH_PIXELS} (2**28, 3 GiB of float32 input); lower the image size or '
            'the batch size.')
  k1, k2 = 'eval.rerank_k1', 'eval.rerank_k2'
  if _has(config, k1, k2) and get(k2) > get(k1):
    raise ConfigError(f'config.{k2}={get(k2)} is out of range: must be <= '
                      f'config.{k1}={get(k1)} (k-reciprocal re-ranking needs k2 <= k1).')
  for section in ('pplr', 'cluster_contrast'):
    k1, k2 = f'{section}.k1', f'{section}.k2'
    if _has(config, k1, k2) and get(k2) > get(k1):
      raise ConfigError(f'config.{k2}={get(k2)} is out of range: must be <= '
                        f'config.{k1}={get(k1)} (the Jaccard distance needs k2 <= k1).')
  if _has(config, 'pplr.bn_group_size', 'batch_size'):
    group, batch = get('pplr.bn_group_size'), get('batch_size')
    if group and batch % group:
      raise ConfigError(f'config.pplr.bn_group_size={group} does not divide '
                        f'config.batch_size={batch}: use a divisor of the batch, or 0 (whole '
                        'batch).')
  if get('model.pretrained_scope') == 'all' and not get('model.pretrained'):
    raise ConfigError("config.model.pretrained_scope='all' loads a whole trained model from "
                      'config.model.pretrained, which is empty: pass the weight file with '
                      '--config.model.pretrained=FILE.')
  if 'cross_modality' in config and get('eval.protocol') == 'cuhk03':
    raise ConfigError("config.eval.protocol='cuhk03' is not read by the cross-modality method: "
                      'it evaluates with config.cross_modality.protocol; leave eval.protocol at '
                      "'market'.")
  _check_sources(config)
  _check_synth_specs(config)


def _check_sources(config: ml_collections.ConfigDict) -> None:
  """config.dataset.sources: known dataset names, each once, not the run's own dataset."""
  sources = _get(config, 'dataset.sources')
  if sources is _MISSING or not sources:
    return
  if isinstance(sources, str):
    raise ConfigError(f'config.dataset.sources={sources!r} must be a tuple of dataset names, '
                      f'e.g. --config.dataset.sources="(\'synthreid_b\',)".')
  if 'cross_modality' in config:
    raise ConfigError('config.dataset.sources is not supported by the cross-modality method (its '
                      'modality is read from the camera ids of one dataset); leave it empty.')
  from data_pipelines import datasets  # pylint: disable=g-import-not-at-top
  names = [str(entry).partition(':')[0] for entry in sources]
  for name in names:
    if name not in datasets.DATASETS:
      raise ConfigError(f'config.dataset.sources: unknown dataset {name!r}; known: '
                        f'{", ".join(sorted(datasets.DATASETS))}.')
  own = _get(config, 'dataset.name')
  if own in names:
    raise ConfigError(f'config.dataset.sources names {own!r}, the run\'s own dataset '
                      '(config.dataset.name), which is always the first source: list only the '
                      'others.')
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    raise ConfigError(f'config.dataset.sources names {twice[0]!r} twice: each dataset once.')


def _check_synth_specs(config: ml_collections.ConfigDict) -> None:
  """The rules between the keys of a synthetic dataset spec, as its dataclass states them."""
  from data_pipelines import synthreid  # pylint: disable=g-import-not-at-top
  from data_pipelines import synthvehicle  # pylint: disable=g-import-not-at-top
  for key, spec_type in (('dataset.synth', synthreid.SynthReIDSpec),
                         ('dataset.synth_vehicle', synthvehicle.SynthVehicleSpec)):
    section = _get(config, key)
    fields = {f.name for f in dataclasses.fields(spec_type)}
    if not isinstance(section, ml_collections.ConfigDict) or set(section.keys()) != fields:
      continue  # Not the whole spec: the dataset code reports what is missing.
    try:
      spec_type(**section.to_dict())
    except ValueError as e:
      raise ConfigError(f'config.{key}: {e}') from None


def check_ranges(config: ml_collections.ConfigDict) -> None:
  """Checks every key of `RANGES` and `CHOICES` that `config` has, then the rules between keys.

  Raises:
    ConfigError: the first value out of range, naming the key, its value and the valid range.
  """
  for key, valid in RANGES.items():
    value = _get(config, key)
    if value is _MISSING or value is None:
      continue  # Another method's key, or a placeholder the code fills in.
    if not valid.ok(value):
      if isinstance(value, list):
        value = tuple(value)
      raise ConfigError(f'config.{key}={value!r} is out of range: must be {valid.describe()}.')
  for key, valid in CHOICES.items():
    value = _get(config, key)
    if value is not _MISSING and value not in valid:
      raise ConfigError(f'config.{key}={value!r} is not one of {", ".join(map(repr, valid))}.')
  _check_pairs(config)
