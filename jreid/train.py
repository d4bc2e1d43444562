"""The train loop of every method: `train_and_evaluate(config, workdir)`.

A run is described by a *setup* chosen by `config.method` (see `METHODS`): the supervised
`Setup` below (backbone, pooling, head and loss terms from the config through registries), or a
method with its own recipe (QAConv-GS in `jreid.methods.qaconv`, ...). A setup owns the data, the
model, the jitted pure train step `(state, batch) -> (state, metrics)` and the evaluation; the loop
here owns what every run shares: resuming from the latest checkpoint at the exact step, epochs with
per-epoch hooks (a sampler rebuilt from the current model, an adaptive schedule), logging and
progress, periodic and SIGTERM checkpoints, NaN detection, the baselines and the report.

Steps are data parallel over a mesh of every device (state replicated, batch split along 'data').
"""

from __future__ import annotations

import functools
import importlib
import json
import pathlib
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data_pipelines import datasets
from data_pipelines import input_pipeline
from data_pipelines import samplers
from data_pipelines import validate
from jreid import checkpoint
from jreid import inference
from jreid import metric_writers
from jreid import models
from jreid import objectives
from jreid import optim
from jreid import parallel
from jreid import published
from jreid import report
from jreid.registry import Registry
from jreid.evaluation import format_results_table
from jreid.evaluation import histogram


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds. `extra` is method state (e.g. an adaptive schedule)."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  extra: Any = flax.struct.field(default_factory=dict)


def _lazy_setup(path: str):
  """A setup factory importing 'module:Class' on use (method modules import this one)."""

  def build(config: ml_collections.ConfigDict, workdir: pathlib.Path):
    module, attr = path.split(':')
    return getattr(importlib.import_module(module), attr)(config, workdir)

  return build


# config.method -> the setup of a run.
METHODS = Registry('method')
METHODS.register('supervised')(_lazy_setup('jreid.train:Setup'))
METHODS.register('qaconv')(_lazy_setup('jreid.methods.qaconv:QAConvSetup'))
METHODS.register('pplr')(_lazy_setup('jreid.methods.pplr:PPLRSetup'))
METHODS.register('cross_modality')(_lazy_setup('jreid.methods.cross_modality:CrossModalitySetup'))


def build_setup(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> 'Setup':
  """The setup of the method named by config.method, built for this run."""
  try:
    build = METHODS.get(config.method)
  except ValueError as e:
    raise ValueError(f'config.method: {e}') from None
  return build(config, workdir)


def prepare_workdir(workdir: str | pathlib.Path, config: ml_collections.ConfigDict) -> pathlib.Path:
  """Creates the workdir (clear error if impossible) and writes the resolved config.json."""
  workdir = pathlib.Path(workdir).expanduser().absolute()
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / '.write_test'
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    raise OSError(f'cannot write to the workdir {workdir}: {e.strerror}. Pass a writable '
                  '--workdir.') from None
  if jax.process_index() == 0:
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2, sort_keys=True) + '\n')
  return workdir


def model_fingerprint(config: ml_collections.ConfigDict, num_classes: int) -> dict[str, Any]:
  """What a checkpoint must match to be restored into this run."""
  fingerprint = {'model': json.loads(config.model.to_json_best_effort()),
                 'num_classes': int(num_classes), 'dataset': config.dataset.name}
  if optim.swa_enabled(config.optim):
    # Its state holds the SWA average: switching SWA on or off needs a new workdir (a clear
    # mismatch error instead of a failed restore). Absent when off, so older checkpoints match.
    fingerprint['swa'] = True
  return fingerprint


def create_train_state(model, tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh) -> TrainState:
  """Initialises parameters and optimiser state directly into replicated shardings."""
  shape = (1, config.input.height, config.input.width, 3)

  def init_variables(rng):
    return model.init(rng, jnp.zeros(shape, jnp.uint8), train=False)

  def init(variables):
    params = variables['params']
    # SWA: the running average of the params and its count (fixed shapes, checkpointed).
    extra = {'swa': optim.swa_init(params)} if optim.swa_enabled(config.optim) else {}
    return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                      extra=extra)

  # The 'rbg' generator compiles the initialisers several times faster than threefry on CPU.
  rng = jax.random.key(config.seed, impl='rbg')
  variables = jax.jit(init_variables)(rng)
  if config.model.get('pretrained', ''):
    # ImageNet / FastReID weights (torchvision, timm, IBN-Net or model-zoo state dicts).
    from jreid import weights  # pylint: disable=g-import-not-at-top
    variables = weights.load_pretrained(jax.device_get(variables), config.model.pretrained,
                                        config.model)
  return jax.jit(init, out_shardings=parallel.replicated_sharding(mesh))(variables)


def make_train_step(model, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                    steps_per_epoch: int = 0):
  """The jitted pure train step: (state, batch) -> (state, metrics). State is donated.

  With `config.optim.swa.enabled` (and `state.extra['swa']` from `create_train_state`), the
  params after step s are added to the SWA average when s > start and (s - start) % freq == 0,
  start = swa.start_epoch x steps per epoch (FastReID's SWA.update_swa every PERIOD steps).
  """
  freeze_iters = config.optim.freeze_iters if config.optim.freeze_layers else 0
  swa = optim.swa_enabled(config.optim)
  if swa:
    if steps_per_epoch < 1:
      raise ValueError('make_train_step: config.optim.swa.enabled needs steps_per_epoch.')
    swa_start = optim.swa_start_step(config.optim, steps_per_epoch)
    swa_freq = int(config.optim.swa.freq)

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rng = jax.random.fold_in(jax.random.key(config.seed, impl='rbg'), state.step)

    def loss_fn(params):
      # Labels reach the classifier for margin layers (ArcFace, CosFace, CircleSoftmax).
      outputs, mutated = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                     batch['image'], train=True, labels=batch['label'],
                                     mutable=['batch_stats'], rngs={'dropout': rng})
      terms = objectives.compute_losses(outputs, batch['label'], config.loss)
      return objectives.total_loss(terms), (terms, outputs, mutated['batch_stats'])

    (loss, (terms, outputs, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if freeze_iters:
      # Frozen layers keep their BatchNorm running statistics too (FastReID's Freeze hook).
      frozen = optim.freeze_mask(batch_stats, tuple(config.optim.freeze_layers))
      keep = state.step < freeze_iters
      batch_stats = jax.tree.map(lambda m, new, old: jnp.where(keep & m, old, new),
                                 frozen, batch_stats, state.batch_stats)
    # Margin layers: accuracy of the margin-free logits, as FastReID reports it.
    logits = outputs.get('pred_class_logits', outputs['logits'])
    metrics = {'loss': loss, **{f'loss_{k}': v for k, v in terms.items()},
               'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
               'grad_norm': optax.global_norm(grads), 'lr': schedule(state.step)}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    if swa:
      if 'swa' not in state.extra:
        raise ValueError("config.optim.swa.enabled but the train state has no extra['swa']; "
                         'create it with jreid.train.create_train_state.')
      done = state.step + 1 - swa_start  # Steps of the SWA phase done after this one.
      average = (done > 0) & (done % swa_freq == 0)
      new_state = new_state.replace(
          extra={**state.extra, 'swa': optim.swa_update(state.extra['swa'], params, average)})
    return new_state, metrics

  replicated = parallel.replicated_sharding(mesh)
  return jax.jit(train_step, donate_argnums=(0,),
                 in_shardings=(replicated, parallel.data_sharding(mesh)),
                 out_shardings=(replicated, replicated))


def recompute_batch_stats(model, variables: dict[str, Any], batches: Iterable[dict[str, Any]],
                          mesh: jax.sharding.Mesh, seed: int = 0) -> Any:
  """BatchNorm running statistics recomputed for `variables['params']` (e.g. SWA weights).

  The model runs in train mode (dropout on, as torch's `bn_update`) over `batches` (host
  batches, placed on the mesh like the train step's, so statistics are over the global batch);
  every running mean/var becomes the plain average over the batches of that batch's statistics
  (the mean and the biased variance flax's BatchNorm computes in train mode). This is
  torchcontrib's / FastReID's `bn_update` (momentum=None: cumulative average, batches of equal
  size), except that the variance is flax's biased one, as in every jreid train step. Statistics
  that train mode does not update (BatchNorm kept in inference mode) are returned unchanged.
  """
  return make_batch_stats_update(model, mesh, seed)(variables, batches)


def make_batch_stats_update(model, mesh: jax.sharding.Mesh, seed: int = 0):
  """`(variables, batches) -> batch_stats` of `recompute_batch_stats`, compiled once for reuse.

  The momentum m of each BatchNorm is measured, not assumed: `running <- m * running + (1 - m) *
  batch` is evaluated from running = 0 and running = 2^20 on the first batch, which gives m; each
  batch's statistic is then (its update from running = 0) / (1 - m).
  """
  replicated = parallel.replicated_sharding(mesh)
  probe = 2.0 ** 20

  @functools.partial(jax.jit, out_shardings=replicated)
  def updated(params, batch_stats, fill, batch, index):
    """Every running statistic after one train-mode pass from running = fill."""
    stats = jax.tree.map(lambda x: jnp.full_like(x, fill), batch_stats)
    rng = jax.random.fold_in(jax.random.key(seed, impl='rbg'), index)
    kwargs = {'labels': batch['label']} if 'label' in batch else {}
    _, mutated = model.apply({'params': params, 'batch_stats': stats}, batch['image'], train=True,
                             mutable=['batch_stats'], rngs={'dropout': rng}, **kwargs)
    return mutated['batch_stats']

  @jax.jit
  def weights(low, high):
    """1 - m per statistic (0 where train mode leaves the statistic alone)."""
    return jax.tree.map(lambda lo, hi: 1.0 - (hi - lo) / probe, low, high)

  @jax.jit
  def add(sums, new, weight):
    return jax.tree.map(
        lambda acc, x, w: acc + jnp.where(w > 1e-5, x / jnp.maximum(w, 1e-5), 0.0),
        sums, new, weight)

  @jax.jit
  def finish(sums, weight, old, count):
    return jax.tree.map(lambda s, w, o: jnp.where(w > 1e-5, s / count, o), sums, weight, old)

  def update(variables: dict[str, Any], batches: Iterable[dict[str, Any]]) -> Any:
    params, batch_stats = variables['params'], variables.get('batch_stats', {})
    if not jax.tree.leaves(batch_stats):
      return batch_stats
    sums = jax.device_put(jax.tree.map(jnp.zeros_like, batch_stats), replicated)
    weight = None
    count = 0
    for batch in batches:
      batch = parallel.shard_batch({k: v for k, v in batch.items() if k in ('image', 'label')},
                                   mesh)
      # One compiled forward pass; `fill` is an argument, so the probe reuses it.
      new = updated(params, batch_stats, jnp.float32(0.0), batch, jnp.int32(count))
      if weight is None:
        high = updated(params, batch_stats, jnp.float32(probe), batch, jnp.int32(count))
        weight = weights(new, high)
      sums = add(sums, new, weight)
      count += 1
    if not count:
      raise ValueError('recompute_batch_stats: no batches were given.')
    return finish(sums, weight, batch_stats, jnp.float32(count))

  return update


class Setup:
  """The supervised setup (config.method='supervised'): a P x K sampler, a Baseline-style model
  built from the config's registries, and the weighted loss terms of `config.loss`.

  It is also the base class of method setups, which override the hooks the loop calls:

    num_epochs(state)                  epochs of the run (may depend on method state)
    begin_epoch(state, epoch)          before an epoch's first step (or its resumed step)
    train_batches(state, start, stop)  host batches of global steps start..stop-1
    train_step(state, batch)           the jitted pure step -> (state, metrics)
    end_epoch(state, epoch)            after an epoch's last step
    evaluate(state)                    -> inference.EvalOutput on the query/gallery splits
    describe()                         one paragraph on the model and recipe for the report
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: pathlib.Path):
    self.config = config
    self.workdir = workdir
    self.mesh = parallel.create_mesh()
    parallel.check_batch_size(config.batch_size, self.mesh)
    self.splits = datasets.load_dataset(config.dataset)
    # Corrupt/truncated images (config.data.on_corrupt), empty splits and a query set with no
    # valid match fail here, before anything is compiled.
    self.splits = validate.validate_splits(self.splits, on_corrupt=config.data.on_corrupt)
    self.train_split = self.splits['train']
    self.num_classes = int(self.train_split.labels.max()) + 1
    self.testsets = self.load_testsets()
    self.sampler = self.build_sampler()
    self.steps_per_epoch = self.sampler.batches_per_epoch
    self.model = self.build_model()
    self.schedule = optim.learning_rate_schedule(config.optim, self.steps_per_epoch,
                                                 config.train.epochs * self.steps_per_epoch)
    if optim.swa_enabled(config.optim):
      self._check_swa_support()
    # SWA phase: FastReID's cyclic learning rate (the schedule itself when SWA is off).
    self.schedule = optim.swa_learning_rate_schedule(
        config.optim, self.schedule, self.steps_per_epoch,
        config.train.epochs * self.steps_per_epoch)
    self.tx = optim.build_optimizer(config.optim, self.schedule, self.abstract_params())
    self.state = self.create_state()
    self.checkpointer = checkpoint.Checkpointer(
        workdir / 'checkpoints', self.fingerprint(), keep=config.train.keep_checkpoints)
    self._train_step = None
    self._bn_update = None  # SWA's BatchNorm recomputation, compiled on first use.

  # Construction (overridden by methods).

  def build_sampler(self):
    config = self.config
    k = config.sampler.num_instances
    if config.batch_size % k:
      raise ValueError(f'batch_size {config.batch_size} is not divisible by '
                       f'sampler.num_instances (K) {k}; the P x K sampler needs batch_size = P * K.')
    return samplers.build_sampler(config.sampler, self.train_split.labels,
                                  self.train_split.camids, config.batch_size, config.seed,
                                  config.train.steps_per_epoch or None)

  def build_model(self):
    return models.build_model(self.config.model, self.num_classes)

  def _dummy_images(self) -> jax.Array:
    return jnp.zeros((1, self.config.input.height, self.config.input.width, 3), jnp.uint8)

  def abstract_params(self):
    return jax.eval_shape(lambda: self.model.init(jax.random.key(0), self._dummy_images(),
                                                  train=False))['params']

  def create_state(self) -> TrainState:
    return create_train_state(self.model, self.tx, self.config, self.mesh)

  def fingerprint(self) -> dict[str, Any]:
    return model_fingerprint(self.config, self.num_classes)

  def _check_swa_support(self) -> None:
    """SWA lives in the supervised create_state / train step / end_epoch: a method that
    replaces one of them would silently ignore it, so it is refused."""
    own = [name for name in ('create_state', 'make_train_step', 'end_epoch')
           if getattr(type(self), name) is not getattr(Setup, name)]
    if own:
      raise ValueError(f'config.optim.swa.enabled=True is not supported by method '
                       f'{self.config.method!r} (it has its own {", ".join(own)}); SWA is '
                       'implemented for the supervised setup. Set '
                       'config.optim.swa.enabled=False.')

  # Hooks of the loop.

  @property
  def total_steps(self) -> int:
    """Steps of the run as configured (a method may end earlier; see num_epochs)."""
    return self.config.train.epochs * self.steps_per_epoch

  def num_epochs(self, state: TrainState) -> int:
    del state
    return self.config.train.epochs

  def begin_epoch(self, state: TrainState, epoch: int) -> TrainState:
    del epoch
    return state

  def end_epoch(self, state: TrainState, epoch: int) -> TrainState:
    if optim.swa_enabled(self.config.optim) and epoch == self.num_epochs(state) - 1:
      state = self.apply_swa(state)
    return state

  def apply_swa(self, state: TrainState) -> TrainState:
    """The end of SWA (FastReID's swap_swa_param + bn_update): params <- their SWA average,
    BatchNorm statistics recomputed on the last `swa.bn_update_steps` training batches of the
    run (0: one epoch). Runs inside the last end_epoch, so the final checkpoint holds it."""
    swa = state.extra['swa']
    total = self.total_steps
    num = min(int(self.config.optim.swa.bn_update_steps) or self.steps_per_epoch, total)
    # A copy: the average stays in extra, and a donated state must not hold one buffer twice.
    params = jax.tree.map(jnp.copy, swa['params'])
    if self._bn_update is None:
      self._bn_update = make_batch_stats_update(self.model, self.mesh, seed=self.config.seed)
    batch_stats = self._bn_update({'params': params, 'batch_stats': state.batch_stats},
                                  self.train_batches(state, total - num, total))
    _log(f'SWA: params replaced by the average of {int(swa["count"])} snapshots; BatchNorm '
         f'statistics recomputed on {num} training batches')
    return state.replace(params=params, batch_stats=batch_stats)

  def train_batches(self, state: TrainState, start_step: int, stop_step: int):
    del state
    config = self.config
    return input_pipeline.train_iterator(
        self.train_split, self.sampler, config.input, config.augment, seed=config.seed,
        start_step=start_step, num_steps=stop_step, process_index=jax.process_index(),
        process_count=jax.process_count(), num_parallel_calls=config.data.num_parallel_calls,
        prefetch=config.data.prefetch)

  def make_train_step(self):
    return make_train_step(self.model, self.tx, self.schedule, self.config, self.mesh,
                           steps_per_epoch=self.steps_per_epoch)

  def train_step(self, state: TrainState, batch: dict[str, np.ndarray]):
    if self._train_step is None:
      self._train_step = self.make_train_step()
    return self._train_step(state, parallel.shard_batch(batch, self.mesh))

  def variables(self, state: TrainState) -> dict[str, Any]:
    return {'params': state.params, 'batch_stats': state.batch_stats}

  def evaluate(self, state: TrainState, splits: dict[str, Any] | None = None,
               post: bool = True) -> inference.EvalOutput:
    """Rank metrics on `splits` ('query', 'gallery'; default: this dataset's); `post=False`
    skips the post-processed rows (re-ranking, ...), e.g. for the untrained baseline."""
    splits = splits or self.splits
    config = self.config
    if not post:
      config = ml_collections.ConfigDict(config.to_dict())
      config.eval.aqe = config.eval.rerank = config.eval.roc = False
    return inference.evaluate_splits(
        self.model, self.variables(state), splits['query'], splits['gallery'], config,
        self.mesh)

  def load_testsets(self) -> dict[str, dict[str, Any]]:
    """The query/gallery splits of `config.eval.testsets` (other than the training dataset),
    loaded when the run starts so that a missing folder fails before training, not after."""
    out = {}
    for entry in self.config.eval.get('testsets', ()):
      name = str(entry).partition(':')[0]
      if name != self.config.dataset.name:
        splits = datasets.load_testset(self.config.dataset, entry)
        out[name] = validate.validate_splits(
            {k: splits[k] for k in ('query', 'gallery')}, on_corrupt=self.config.data.on_corrupt)
    return out

  def evaluate_testsets(self, state: TrainState) -> dict[str, dict[str, float]]:
    """`config.eval.testsets` other than the training dataset: name -> metrics."""
    out = {}
    for name, splits in self.testsets.items():
      _log(f'evaluating on test set {name}: ' + ', '.join(
          f'{k} {splits[k].summary()}' for k in ('query', 'gallery')))
      output = self.evaluate(state, splits)
      out[name] = output.metrics
      for row, metrics in output.extra_rows.items():
        out[f'{name} + {row}'] = metrics
    return out

  def report_sections(self, state: TrainState, output: inference.EvalOutput
                      ) -> list[tuple[str, str, str | None]]:
    """A method's own report sections (title, markdown, PNG written into the workdir)."""
    del state, output
    return []

  def describe(self) -> str:
    config = self.config
    return (f'Backbone `{config.model.backbone.name}` (width {config.model.backbone.width}, last '
            f'stride {config.model.backbone.last_stride}), pooling `{config.model.pooling.name}`, '
            f'head `{config.model.head.name}`, losses {", ".join(config.loss.names)}; '
            f'{self.total_steps} steps ({config.train.epochs} epochs x {self.steps_per_epoch}), '
            f'batch {config.batch_size}, input {config.input.height}x{config.input.width}'
            f'{self._describe_options()}.')

  def _describe_options(self) -> str:
    """'; SWA ...; compute dtype ...' for the options that are on."""
    config = self.config
    parts = []
    if optim.swa_enabled(config.optim):
      parts.append(f'SWA from epoch {config.optim.swa.start_epoch}, averaged every '
                   f'{config.optim.swa.freq} steps, BatchNorm statistics recomputed')
    if config.model.get('dtype', 'float32') != 'float32':
      parts.append(f'compute dtype {config.model.dtype}')
    return ''.join(f'; {p}' for p in parts)


def _read_json(path: pathlib.Path) -> dict[str, Any] | None:
  return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: pathlib.Path, obj: Any) -> None:
  if jax.process_index() == 0:
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + '\n')
    tmp.replace(path)


def _log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def histogram_baseline(setup: Setup) -> dict[str, float]:
  """Rank metrics of the hand-crafted colour-histogram features (no learning)."""
  feats = {}
  for name in ('query', 'gallery'):
    chunks = []
    for batch in input_pipeline.eval_iterator(setup.splits[name], setup.config.input,
                                              batch_size=setup.config.eval.batch_size):
      chunks.append(histogram.color_histogram_features(batch['image'][batch['mask']]))
    feats[name] = np.concatenate(chunks)
  return inference.rank_metrics(feats['query'], feats['gallery'], setup.splits['query'],
                                setup.splits['gallery'], metric='cosine',
                                max_rank=setup.config.eval.max_rank).to_dict()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (resuming from the workdir's latest checkpoint), evaluates and writes the report."""
  workdir = prepare_workdir(workdir, config)
  t_start = time.time()
  reference = _published_rows(config)  # Checked before the data is loaded.
  setup = build_setup(config, workdir)
  _log(f'jreid: {jax.device_count()} {jax.devices()[0].platform} device(s), '
       f'{jax.process_count()} process(es); dataset {config.dataset.name}: '
       + ', '.join(f'{k} {v.summary()}' for k, v in setup.splits.items()))
  final_path = workdir / 'metrics.json'
  state = setup.state
  start_step = 0
  if setup.checkpointer.latest_step() is not None:
    state = setup.checkpointer.restore(state)
    start_step = int(state.step)
    _log(f'resuming from checkpoint at step {start_step}/{_total_steps(setup, state)}')
  if start_step >= _total_steps(setup, state) and final_path.exists():
    results = _read_json(final_path)
    _log(f'run in {workdir} is already finished ({_total_steps(setup, state)} steps):')
    _log(format_results_table(_table_rows(results, _read_json(workdir / 'baselines.json'),
                                          reference)))
    return results

  baselines = _read_json(workdir / 'baselines.json') or {}
  if config.eval.untrained and 'untrained' not in baselines and start_step == 0:
    _log('evaluating the untrained network...')
    baselines['untrained'] = setup.evaluate(state, post=False).metrics
  if config.eval.histogram_baseline and 'histogram' not in baselines:
    baselines['histogram'] = histogram_baseline(setup)
  _write_json(workdir / 'baselines.json', baselines)

  state = train(setup, state, start_step)

  _log('evaluating...')
  output = setup.evaluate(state)
  results = _flat_results(output, setup.evaluate_testsets(state))
  for name, metrics in baselines.items():
    results[f'{name}_mAP'] = metrics['mAP']
    results[f'{name}_rank1'] = metrics['rank1']
  results['steps'] = int(state.step)
  results['wall_time_s'] = time.time() - t_start  # This invocation only (not earlier, resumed ones).
  _write_json(final_path, results)
  rows = _table_rows(results, baselines, reference)
  _log(format_results_table(rows))
  if jax.process_index() == 0:
    report.write_report(workdir, config, setup, output, baselines, rows=rows,
                        extra_sections=setup.report_sections(state, output))
  setup.checkpointer.close()
  return results


def _flat_results(output: inference.EvalOutput, testsets: dict[str, dict[str, float]]
                  ) -> dict[str, Any]:
  """Metrics of the training dataset's test set, then 'row/metric' for post-processed rows
  ('rerank/mAP') and '@testset/metric' for further test sets ('@synthreid_b/mAP')."""
  results = dict(output.metrics)
  for row, metrics in output.extra_rows.items():
    results.update({f'{row}/{k}': v for k, v in metrics.items()})
  for name, metrics in testsets.items():
    results.update({f'@{name}/{k}': v for k, v in metrics.items()})
  return results


def _published_rows(config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
  """The published rows of `config.eval.published` for this run's data (jreid.published)."""
  search_modes = (config.cross_modality.search_modes if 'cross_modality' in config
                  else ('all',))
  return published.published_rows(config.eval.published, config.dataset.name,
                                   config.eval.testsets, search_modes)


def _table_rows(results: dict[str, Any], baselines: dict[str, Any] | None = None,
                reference: dict[str, dict[str, Any]] | None = None):
  """The results table: the trained model, its further rows, baselines, published numbers."""
  rows = {'trained': results}
  for key, value in results.items():  # Further rows stored as 'row/metric' or '@testset/metric'.
    if '/' in key:
      row, metric = key.split('/', 1)
      label = f'trained, test {row[1:]}' if row.startswith('@') else f'trained + {row}'
      rows.setdefault(label, {})[metric] = value
  baselines = baselines or {}
  for name in ('untrained', 'histogram'):
    if name in baselines:
      rows[name] = baselines[name]
  rows.update(reference or {})
  return rows


def _total_steps(setup: Setup, state: TrainState) -> int:
  return setup.num_epochs(state) * setup.steps_per_epoch


def train(setup: Setup, state: TrainState, start_step: int) -> TrainState:
  """Runs the epochs from the one holding `start_step` to the end, logging and checkpointing."""
  config = setup.config
  n = setup.steps_per_epoch
  total = _total_steps(setup, state)
  if start_step >= total:
    return state
  writer = metric_writers.MetricWriter(setup.workdir, start_step=start_step)
  progress = report.Progress(total=total, initial=start_step)
  pending = None  # Metrics summed on device since the last log.
  count = 0
  nonfinite = jnp.zeros([], bool)  # Any NaN/inf loss since the last checkpoint (on device).
  step = start_step

  def save_checkpoint():
    nonlocal nonfinite
    if bool(nonfinite):  # One host sync per checkpoint, never per step.
      raise _diverged(setup, step)
    setup.checkpointer.save(step, state)
    nonfinite = jnp.zeros([], bool)

  def checkpoint_or_stop():
    """SIGTERM: checkpoint and stop; else the periodic checkpoint."""
    if sigterm.received:
      progress.close()
      save_checkpoint()
      setup.checkpointer.wait()
      writer.close()
      raise Preempted(f'SIGTERM received: checkpoint written at step {step}/{total} in '
                      f'{setup.checkpointer.directory}; run the same command to resume.')
    if step % config.train.checkpoint_every_steps == 0 and step < total:
      save_checkpoint()

  with _SigtermFlag() as sigterm:
    epoch = step // n
    while epoch < setup.num_epochs(state):
      state = setup.begin_epoch(state, epoch)
      for batch in setup.train_batches(state, step, (epoch + 1) * n):
        state, metrics = setup.train_step(state, batch)
        step += 1
        nonfinite = nonfinite | ~jnp.isfinite(metrics['loss'])
        pending = metrics if pending is None else jax.tree.map(jnp.add, pending, metrics)
        count += 1
        if step % config.train.log_every_steps == 0 or step % n == 0:
          scalars = {k: float(v) / count for k, v in jax.device_get(pending).items()}
          if not np.isfinite(scalars['loss']):
            raise _diverged(setup, step)
          scalars['epoch'] = step / n
          writer.write_scalars(step, scalars)
          progress.update(step, scalars)
          pending, count = None, 0
        if step % n:  # At the end of an epoch, only after end_epoch (its state is saved too).
          checkpoint_or_stop()
      state = setup.end_epoch(state, epoch)
      epoch += 1
      if _total_steps(setup, state) != total:  # The method changed the length of the run.
        total = _total_steps(setup, state)
        progress.set_total(total)
      checkpoint_or_stop()
      if config.train.eval_every_epochs and epoch < setup.num_epochs(state) and (
          epoch % config.train.eval_every_epochs == 0):
        metrics = setup.evaluate(state, post=False).metrics
        writer.write_scalars(step, {f'test/{k}': v for k, v in metrics.items()})
  progress.close()
  save_checkpoint()
  setup.checkpointer.wait()
  writer.close()
  return state


class Preempted(Exception):
  """The run was asked to stop (SIGTERM) and wrote a checkpoint; the same command resumes it."""


class TrainingDivergedError(RuntimeError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


def _diverged(setup: Setup, step: int) -> TrainingDivergedError:
  setup.checkpointer.wait()
  last = setup.checkpointer.latest_step()
  kept = (f'the last good checkpoint (step {last}) is kept in {setup.checkpointer.directory}'
          if last is not None else 'no checkpoint was written')
  return TrainingDivergedError(
      f'training diverged: the loss became NaN or infinite by step {step}; {kept}. Lower '
      'config.optim.lr, set config.optim.clip_grad_norm, or check the input data.')


class _SigtermFlag:
  """Records SIGTERM (e.g. a preempted cluster job) instead of dying mid-step."""

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        checkpoint_path: str | None = None) -> dict[str, float]:
  """--mode=eval: test the latest checkpoint of the workdir, or the given checkpoint directory."""
  workdir = prepare_workdir(workdir, config)
  reference = _published_rows(config)
  setup = build_setup(config, workdir)
  if checkpoint_path:
    state = checkpoint.restore_from_path(checkpoint_path, setup.state,
                                         model_fingerprint(config, setup.num_classes))
  else:
    if setup.checkpointer.latest_step() is None:
      raise FileNotFoundError(f'no checkpoint in {workdir}/checkpoints to evaluate: train first, '
                              'or pass --checkpoint=DIR/checkpoints/<step>.')
    state = setup.checkpointer.restore(setup.state)
  output = setup.evaluate(state)
  results = {**_flat_results(output, setup.evaluate_testsets(state)), 'step': int(state.step)}
  _write_json(workdir / 'eval_metrics.json', results)
  _log(f'checkpoint at step {int(state.step)}:')
  rows = _table_rows(results, reference=reference)
  _log(format_results_table(rows))
  if jax.process_index() == 0:
    report.write_report(workdir, config, setup, output, {}, rows=rows,
                        extra_sections=setup.report_sections(state, output))
  setup.checkpointer.close()
  return results
