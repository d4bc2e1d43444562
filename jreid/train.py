"""The train loop of every method: `train_and_evaluate(config, workdir)` and `evaluate_checkpoint`.

A run is: the config checked (`jreid.config_checks.check_config`), the workdir prepared (a run
already there with another config is refused), the data loaded and validated once
(`load_data`), the method of `config.method` built from it (`jreid.method.build`), then the loop
here, which owns what every method shares: resuming from the latest checkpoint at the exact
step, epochs with the method's per-epoch hooks, the one compiled train step
(`jreid.step.make_train_step`), logging and progress, periodic, SIGTERM and Ctrl-C checkpoints,
NaN detection, SWA's end, the baselines, the final evaluation and the report.

Steps are data parallel over a mesh of every device of every process (state replicated, batch
split along 'data').
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jreid import checkpoint
from jreid import config_checks
from jreid import evaluator
from jreid import method as method_lib
from jreid import metric_writers
from jreid import optim
from jreid import parallel
from jreid import published
from jreid import report
from jreid import step as step_lib
from jreid.evaluation import format_results_table
from jreid.evaluation import histogram
from jreid.method import Data, Method, TrainState
from jreid.parts import log

# Keys a rerun of a workdir may change: they do not change what is trained (input pipeline
# threads, logging, checkpoint frequency, where the synthetic data is cached).
_HARMLESS_CHANGES = ('data.num_parallel_calls', 'data.prefetch', 'dataset.cache_dir',
                     'train.log_every_steps', 'train.checkpoint_every_steps',
                     'train.keep_checkpoints')


class ConfigChangedError(ValueError):
  """The workdir holds a run of another config."""


def _flat_json(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  tree = json.loads(config.to_json_best_effort()) if hasattr(config, 'to_json_best_effort') \
      else config

  def visit(node, prefix):
    for key, value in node.items():
      if isinstance(value, dict):
        yield from visit(value, f'{prefix}{key}.')
      else:
        yield f'{prefix}{key}', value

  return dict(visit(tree, ''))


def check_rerun(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> str | None:
  """Compares `config` with the one of the run in `workdir`; returns a line to log (a longer run)
  or None.

  Raises:
    ConfigChangedError: the run in the workdir was trained with another config (a larger
      train.epochs, which extends the run, and harmless keys excepted).
  """
  path = workdir / 'config.json'
  ran = (workdir / 'metrics.json').exists() or any(
      p.name.isdigit() for p in (workdir / 'checkpoints').glob('*'))
  if not path.exists() or not ran:
    return None
  old, new = _flat_json(json.loads(path.read_text())), _flat_json(config)
  # A key on one side only is a change of the config layout between jreid versions (a user
  # cannot add keys to a locked config), not of the recipe: only shared keys are compared.
  changed = [k for k in sorted(set(old) & set(new))
             if old[k] != new[k] and k not in _HARMLESS_CHANGES]
  note = None
  if 'train.epochs' in changed and isinstance(old.get('train.epochs'), int) and (
      new['train.epochs'] > old['train.epochs']):
    changed.remove('train.epochs')
    note = (f'extending the run in {workdir} from {old["train.epochs"]} to '
            f'{new["train.epochs"]} epochs')
  if changed:
    shown = '; '.join(f'{k}: {old[k]!r} -> {new[k]!r}' for k in changed[:8])
    more = f' and {len(changed) - 8} more' if len(changed) > 8 else ''
    hint = (' (to test the run with other evaluation settings, use --mode=eval)'
            if all(k.startswith('eval.') for k in changed) else '')
    raise ConfigChangedError(
        f'the workdir {workdir} holds a run trained with another config ({shown}{more}); use a '
        f'new --workdir for this config, or rerun with the config of that run{hint}. Only a '
        'larger train.epochs may change: it extends the run.')
  return note


def prepare_workdir(workdir: str | pathlib.Path, config: ml_collections.ConfigDict,
                    write_config: bool = True) -> pathlib.Path:
  """Creates the workdir (clear error if impossible), refuses a run of another config there, and
  writes the resolved config.json."""
  workdir = pathlib.Path(workdir).expanduser().absolute()
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f'.write_test_{jax.process_index()}'
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    raise OSError(f'cannot write to the workdir {workdir}: {e.strerror}. Pass a writable '
                  '--workdir.') from None
  if write_config:
    note = check_rerun(workdir, config)
    if note:
      log(note)
    _write_text(workdir / 'config.json',
                config.to_json_best_effort(indent=2, sort_keys=True) + '\n')
  return workdir


def load_data(config: ml_collections.ConfigDict) -> Data:
  """The dataset and the further test sets of `config.eval.testsets`, validated (corrupt images,
  empty splits, a query set without a valid match) before anything is compiled."""
  from data_pipelines import datasets  # pylint: disable=g-import-not-at-top
  from data_pipelines import validate  # pylint: disable=g-import-not-at-top
  on_corrupt = config.data.on_corrupt
  splits = validate.validate_splits(datasets.load_dataset(config.dataset), on_corrupt=on_corrupt)
  testsets = {}
  for entry in config.eval.get('testsets', ()):
    name = str(entry).partition(':')[0]
    if name != config.dataset.name:
      test = datasets.load_testset(config.dataset, entry)
      testsets[name] = validate.validate_splits({k: test[k] for k in ('query', 'gallery')},
                                                on_corrupt=on_corrupt)
  return Data(splits=splits, testsets=testsets)


@dataclasses.dataclass
class Run:
  """A method built for a workdir: what the loop works with."""
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  mesh: jax.sharding.Mesh
  data: Data
  method: Method
  checkpointer: checkpoint.Checkpointer
  step_fn: Any = None

  def num_epochs(self, state: TrainState) -> int:
    if self.method.num_epochs is None:
      return int(self.config.train.epochs)
    return int(self.method.num_epochs(state))

  def total_steps(self, state: TrainState) -> int:
    return self.num_epochs(state) * self.method.steps_per_epoch

  def train_step(self, state: TrainState, batch: dict[str, np.ndarray]):
    if self.step_fn is None:
      self.step_fn = step_lib.make_train_step(self.method, self.config, self.mesh)
    return self.step_fn(state, parallel.shard_batch(batch, self.mesh))


def build_run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
              write_config: bool = True) -> Run:
  """Checks the config, prepares the workdir, loads the data and builds the method."""
  config_checks.check_config(config)
  workdir = prepare_workdir(workdir, config, write_config=write_config)
  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  data = load_data(config)
  log(f'jreid: {jax.device_count()} {jax.devices()[0].platform} device(s), '
      f'{jax.process_count()} process(es); dataset {config.dataset.name}: '
      + ', '.join(f'{k} {v.summary()}' for k, v in data.splits.items()))
  method = method_lib.build(config, data, mesh, workdir)
  checkpointer = checkpoint.Checkpointer(workdir / 'checkpoints', method.fingerprint,
                                         keep=config.train.keep_checkpoints)
  return Run(config, workdir, mesh, data, method, checkpointer)


def _write_text(path: pathlib.Path, text: str) -> None:
  if jax.process_index() == 0:
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_text(text)
    tmp.replace(path)


def _read_json(path: pathlib.Path) -> Any:
  return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: pathlib.Path, obj: Any) -> None:
  # Insertion order kept: the results table is printed in this order, now and on a rerun.
  _write_text(path, json.dumps(obj, indent=2) + '\n')


def histogram_baseline(config: ml_collections.ConfigDict, splits) -> dict[str, float]:
  """Rank metrics of the hand-crafted colour-histogram features (no learning)."""
  from data_pipelines import input_pipeline  # pylint: disable=g-import-not-at-top
  feats = {}
  for name in ('query', 'gallery'):
    chunks = []
    for batch in input_pipeline.eval_iterator(splits[name], config.input,
                                              batch_size=config.eval.batch_size):
      chunks.append(histogram.color_histogram_features(batch['image'][batch['mask']]))
    feats[name] = np.concatenate(chunks)
  return evaluator.rank_with_protocol((feats['query'], feats['gallery'], 'cosine'),
                                      splits['query'], splits['gallery'], config.eval).to_dict()


def evaluate_testsets(run: Run, state: TrainState) -> dict[str, dict[str, float]]:
  """`config.eval.testsets` other than the training dataset: name -> metrics (and 'name + row'
  for their post-processed rows)."""
  out = {}
  for name, splits in run.data.testsets.items():
    log(f'evaluating on test set {name}: ' + ', '.join(
        f'{k} {splits[k].summary()}' for k in ('query', 'gallery')))
    output = run.method.evaluate(state, splits)
    out[name] = output.metrics
    for row, metrics in output.extra_rows.items():
      out[f'{name} + {row}'] = metrics
  return out


def flat_results(output: evaluator.EvalOutput, testsets: dict[str, dict[str, float]]
                 ) -> dict[str, Any]:
  """Metrics of the training dataset's test set, then 'row/metric' for post-processed rows
  ('rerank/mAP') and '@testset/metric' for further test sets ('@synthreid_b/mAP')."""
  results = dict(output.metrics)
  for row, metrics in output.extra_rows.items():
    results.update({f'{row}/{k}': v for k, v in metrics.items()})
  for name, metrics in testsets.items():
    results.update({f'@{name}/{k}': v for k, v in metrics.items()})
  return results


def published_rows(config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
  """The published rows of `config.eval.published` for this run's data (jreid.published)."""
  search_modes = (config.cross_modality.search_modes if 'cross_modality' in config
                  else ('all',))
  return published.published_rows(config.eval.published, config.dataset.name,
                                   config.eval.testsets, search_modes)


def table_rows(results: dict[str, Any], baselines: dict[str, Any] | None = None,
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


def _report(run: Run, out_dir: pathlib.Path, state: TrainState, output: evaluator.EvalOutput,
            rows, curves: pathlib.Path) -> None:
  if jax.process_index() == 0:
    sections = (run.method.report_sections(state, output, out_dir) if run.method.report_sections
                else [])
    report.write_report(out_dir, run.config, run.data.splits, run.method.describe, output,
                        rows=rows, extra_sections=sections, curves_path=curves)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (resuming from the workdir's latest checkpoint), evaluates and writes the report."""
  t_start = time.time()
  reference = published_rows(config)  # Checked before the data is loaded.
  run = build_run(config, workdir)
  workdir = run.workdir
  final_path = workdir / 'metrics.json'
  state = run.method.state
  start_step = 0
  if run.checkpointer.latest_step() is not None:
    state = run.checkpointer.restore(state)
    start_step = int(state.step)
    log(f'resuming from checkpoint at step {start_step}/{run.total_steps(state)}')
  if start_step >= run.total_steps(state) and final_path.exists():
    results = _read_json(final_path)
    log(f'run in {workdir} is already finished ({run.total_steps(state)} steps):')
    log(format_results_table(table_rows(results, _read_json(workdir / 'baselines.json'),
                                        reference)))
    run.checkpointer.close()
    return results

  baselines = _read_json(workdir / 'baselines.json') or {}
  if config.eval.untrained and 'untrained' not in baselines and start_step == 0:
    log('evaluating the untrained network...')
    baselines['untrained'] = run.method.evaluate(state, post=False).metrics
  if config.eval.histogram_baseline and 'histogram' not in baselines:
    baselines['histogram'] = histogram_baseline(config, run.data.splits)
  _write_json(workdir / 'baselines.json', baselines)

  state = train(run, state, start_step)

  log('evaluating...')
  output = run.method.evaluate(state)
  results = flat_results(output, evaluate_testsets(run, state))
  for name, metrics in baselines.items():
    results[f'{name}_mAP'] = metrics['mAP']
    results[f'{name}_rank1'] = metrics['rank1']
  results['steps'] = int(state.step)
  results['wall_time_s'] = time.time() - t_start  # This invocation only (not earlier, resumed ones).
  _write_json(final_path, results)
  rows = table_rows(results, baselines, reference)
  log(format_results_table(rows))
  _report(run, workdir, state, output, rows, workdir / 'metrics.jsonl')
  run.checkpointer.close()
  return results


def train(run: Run, state: TrainState, start_step: int) -> TrainState:
  """Runs the epochs from the one holding `start_step` to the end, logging and checkpointing."""
  config, method = run.config, run.method
  n = method.steps_per_epoch
  total = run.total_steps(state)
  if start_step >= total:
    return state
  writer = metric_writers.MetricWriter(run.workdir, start_step=start_step)
  progress = report.Progress(total=total, initial=start_step)
  pending = None  # Metrics summed on device since the last log.
  count = 0
  nonfinite = jnp.zeros([], bool)  # Any NaN/inf loss since the last checkpoint (on device).
  step = start_step

  def save_checkpoint():
    nonlocal nonfinite
    if bool(nonfinite):  # One host sync per checkpoint, never per step.
      raise _diverged(run, step)
    run.checkpointer.save(step, state)
    nonfinite = jnp.zeros([], bool)

  def checkpoint_or_stop():
    """A stop signal: checkpoint and stop; else the periodic checkpoint."""
    if signals.received:
      progress.close()
      save_checkpoint()
      run.checkpointer.wait()
      writer.close()
      raise Preempted(signals.received, step, total, run.checkpointer.directory)
    if step % config.train.checkpoint_every_steps == 0 and step < total:
      save_checkpoint()

  with _StopSignals() as signals:
    epoch = step // n
    while epoch < run.num_epochs(state):
      if method.begin_epoch is not None:
        state = method.begin_epoch(state, epoch)
      for batch in method.batches(state, step, (epoch + 1) * n):
        state, metrics = run.train_step(state, batch)
        step += 1
        nonfinite = nonfinite | ~jnp.isfinite(metrics['loss'])
        pending = metrics if pending is None else jax.tree.map(jnp.add, pending, metrics)
        count += 1
        if step % config.train.log_every_steps == 0 or step % n == 0:
          scalars = {k: float(v) / count for k, v in jax.device_get(pending).items()}
          if not np.isfinite(scalars['loss']):
            raise _diverged(run, step)
          scalars['epoch'] = step / n
          writer.write_scalars(step, scalars)
          progress.update(step, scalars)
          pending, count = None, 0
        if step % n:  # At the end of an epoch, only after end_epoch (its state is saved too).
          checkpoint_or_stop()
      if method.end_epoch is not None:
        state = method.end_epoch(state, epoch)
      epoch += 1
      if optim.swa_enabled(config.optim) and epoch == run.num_epochs(state):
        # Inside the last epoch's end, so the final checkpoint holds the averaged model.
        state = step_lib.apply_swa(method, state, config, run.mesh, run.total_steps(state))
      if run.total_steps(state) != total:  # The method changed the length of the run.
        total = run.total_steps(state)
        progress.set_total(total)
      checkpoint_or_stop()
      if config.train.eval_every_epochs and epoch < run.num_epochs(state) and (
          epoch % config.train.eval_every_epochs == 0):
        metrics = method.evaluate(state, post=False).metrics
        writer.write_scalars(step, {f'test/{k}': v for k, v in metrics.items()})
  progress.close()
  save_checkpoint()
  run.checkpointer.wait()
  writer.close()
  return state


class Preempted(Exception):
  """The run was asked to stop (SIGTERM, or Ctrl-C / SIGINT) and wrote a checkpoint; the same
  command resumes it."""

  def __init__(self, signum: int, step: int, total: int, directory: pathlib.Path):
    self.signum = signum
    name = 'SIGTERM' if signum == signal.SIGTERM else 'Ctrl-C (SIGINT)'
    super().__init__(f'{name} received: checkpoint written at step {step}/{total} in '
                     f'{directory}; run the same command to resume.')


class TrainingDivergedError(RuntimeError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


def _diverged(run: Run, step: int) -> TrainingDivergedError:
  run.checkpointer.wait()
  last = run.checkpointer.latest_step()
  kept = (f'the last good checkpoint (step {last}) is kept in {run.checkpointer.directory}'
          if last is not None else 'no checkpoint was written')
  return TrainingDivergedError(
      f'training diverged: the loss became NaN or infinite by step {step}; {kept}. Lower '
      'config.optim.lr, set config.optim.clip_grad_norm, or check the input data.')


class _StopSignals:
  """Records SIGTERM (e.g. a preempted cluster job) and the first Ctrl-C instead of dying
  mid-step; a second Ctrl-C interrupts at once."""

  def __init__(self):
    self.received = 0
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = self.received or signum
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    return False


def _whole_pretrained_model(config: ml_collections.ConfigDict) -> bool:
  return bool(config.model.get('pretrained', '')) and (
      config.model.get('pretrained_scope', 'backbone') == 'all')


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        checkpoint_path: str | None = None) -> dict[str, float]:
  """--mode=eval: tests the latest checkpoint of the workdir, or the given checkpoint directory,
  writing `eval-<step>/` (config, metrics, report) in the workdir; the training run's own
  config.json, metrics and report are never touched. A workdir without checkpoints and
  config.model.pretrained with config.model.pretrained_scope='all' tests that released model
  (`eval-0/`)."""
  reference = published_rows(config)
  if checkpoint_path:
    checkpoint.check_checkpoint_path(checkpoint_path)  # A mistyped path fails before the data.
  run = build_run(config, workdir, write_config=False)
  if checkpoint_path:
    state = checkpoint.restore_from_path(checkpoint_path, run.method.state,
                                         run.method.fingerprint)
  elif run.checkpointer.latest_step() is None and _whole_pretrained_model(config):
    # A released model (config.model.pretrained with scope 'all'), tested as it was loaded.
    state = run.method.state
    log(f'no checkpoint in {run.workdir}/checkpoints: evaluating the weights of '
        f'{config.model.pretrained} (config.model.pretrained_scope=all)')
  else:
    if run.checkpointer.latest_step() is None:
      run.checkpointer.close()
      raise FileNotFoundError(f'no checkpoint in {run.workdir}/checkpoints to evaluate: train '
                              'first, pass --checkpoint=DIR/checkpoints/<step>, or test a '
                              'released model with --config.model.pretrained=FILE '
                              '--config.model.pretrained_scope=all.')
    state = run.checkpointer.restore(run.method.state)
  out_dir = run.workdir / f'eval-{int(state.step)}'
  if jax.process_index() == 0:
    out_dir.mkdir(exist_ok=True)
  _write_text(out_dir / 'config.json', config.to_json_best_effort(indent=2, sort_keys=True) + '\n')
  output = run.method.evaluate(state)
  results = {**flat_results(output, evaluate_testsets(run, state)), 'step': int(state.step)}
  if checkpoint_path:
    results['checkpoint'] = str(pathlib.Path(checkpoint_path).absolute())
  _write_json(out_dir / 'metrics.json', results)
  log(f'checkpoint at step {int(state.step)} (results in {out_dir}):')
  rows = table_rows({k: v for k, v in results.items() if k != 'checkpoint'},
                    reference=reference)
  log(format_results_table(rows))
  _report(run, out_dir, state, output, rows, run.workdir / 'metrics.jsonl')
  run.checkpointer.close()
  return results
