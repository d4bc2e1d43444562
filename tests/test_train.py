"""End to end: train_and_evaluate on a tiny model and a tiny synthetic set; resume; sharding."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny
from jreid import metric_writers
from jreid import parallel
from jreid import parts
from jreid import step as step_lib
from jreid import train
from jreid.method import Method
from jreid.methods import supervised


def tiny_config(tmp_path, epochs=2):
  return tiny.config('bagtricks', tmp_path, epochs=epochs)


def _final_params(workdir, config):
  run = train.build_run(config, workdir, write_config=False)
  state = run.checkpointer.restore(run.method.state)
  run.checkpointer.close()
  return int(state.step), jax.device_get(state.params)


def test_train_and_evaluate_end_to_end_and_resume(tmp_path):
  config = tiny_config(tmp_path, epochs=1)
  run = tmp_path / 'run'
  results = train.train_and_evaluate(config, str(run))
  for key in ('rank1', 'rank5', 'rank10', 'mAP', 'mINP', 'untrained_mAP', 'histogram_mAP'):
    assert 0.0 <= results[key] <= 1.0, key
  on_disk = json.loads((run / 'metrics.json').read_text())
  assert on_disk['mAP'] == results['mAP']
  assert json.loads((run / 'config.json').read_text())['train']['epochs'] == 1
  for name in ('report.md', 'report.html', 'cmc.png', 'rank_lists.png', 'training_curves.png'):
    assert (run / name).stat().st_size > 0, name
  rows = metric_writers.read_jsonl(run / 'metrics.jsonl')
  assert [r['step'] for r in rows] == [2, 3]
  assert list((run / 'tensorboard').iterdir())

  # The same command again: finished, nothing retrained.
  again = train.train_and_evaluate(config, str(run))
  assert again == results

  # Extending the run resumes at step 3 and ends exactly where an uninterrupted run ends.
  config2 = tiny_config(tmp_path, epochs=2)
  train.train_and_evaluate(config2, str(run))
  straight = tmp_path / 'straight'
  train.train_and_evaluate(config2, str(straight))
  step_a, params_a = _final_params(run, config2)
  step_b, params_b = _final_params(straight, config2)
  assert step_a == step_b == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               params_a, params_b)
  rows_a = metric_writers.read_jsonl(run / 'metrics.jsonl')
  rows_b = metric_writers.read_jsonl(straight / 'metrics.jsonl')
  # Logs every 2 steps and at the end of each 3-step epoch; both runs log steps 5-6 at step 6.
  assert [r['step'] for r in rows_a] == [2, 3, 4, 6]
  assert [r['step'] for r in rows_b] == [2, 3, 4, 6]
  np.testing.assert_allclose(rows_a[-1]['loss'], rows_b[-1]['loss'], rtol=1e-5)

  # --mode=eval on the latest checkpoint gives the metrics of the finished run, in eval-6/; the
  # training run's own report, metrics and config are not touched.
  kept = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
  evaluated = train.evaluate_checkpoint(config2, str(run))
  final = json.loads((run / 'metrics.json').read_text())
  assert evaluated['step'] == 6
  np.testing.assert_allclose(evaluated['mAP'], final['mAP'], rtol=1e-6)
  assert json.loads((run / 'eval-6' / 'metrics.json').read_text())['mAP'] == evaluated['mAP']

  # Evaluation options: flip test, AQE + re-ranking row, ROC, and a second (domain-B) test set.
  config3 = tiny_config(tmp_path, epochs=2)
  config3.eval.flip = True
  config3.eval.aqe = True
  config3.eval.rerank = True
  config3.eval.testsets = ('synthreid_b',)
  more = train.evaluate_checkpoint(config3, str(run))
  assert more['mAP'] != evaluated['mAP']  # Flip-averaged features rank differently.
  for key in ('aqe + rerank/mAP', '@synthreid_b/mAP', '@synthreid_b + aqe + rerank/mAP',
              'TPR@FPR=1e-02'):
    assert 0.0 <= more[key] <= 1.0, key
  text = (run / 'eval-6' / 'report.md').read_text()
  for row in ('trained + aqe + rerank', 'trained, test synthreid_b', 'roc.png', 'distances.png'):
    assert row in text, row
  assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == kept

  # A changed recipe on the finished run is refused, naming the change; nothing is written.
  config4 = tiny_config(tmp_path, epochs=2)
  config4.optim.lr = 0.5
  with pytest.raises(train.ConfigChangedError, match=r"optim.lr: 0.001 -> 0.5.*new --workdir"):
    train.train_and_evaluate(config4, str(run))
  assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == kept


def test_checkpoint_from_another_architecture_is_refused(tmp_path):
  config = tiny_config(tmp_path, epochs=1)
  config.eval.untrained = False
  config.eval.histogram_baseline = False
  run = tmp_path / 'run'
  train.train_and_evaluate(config, str(run))
  config.model.backbone.name = 'resnet34'
  with pytest.raises(ValueError, match='different model'):
    train.evaluate_checkpoint(config, str(run))


def step_method(config, num_classes, mesh, steps_per_epoch=10):
  """The supervised method's step parts for `config`, without data (batches come in memory)."""
  inf = supervised.inference(config, num_classes)
  tx, schedule = parts.optimizer(config, steps_per_epoch, parts.abstract_params(inf))
  return Method(name='supervised', inference=inf, state=parts.initial_state(inf, tx, config, mesh),
                tx=tx, schedule=schedule, forward=supervised.forward_fn(inf.model),
                objective=supervised.objective_fn(config), steps_per_epoch=steps_per_epoch,
                batches=None, evaluate=None, fingerprint={}, describe='')


def _step_on(devices, config, num_classes, batch):
  mesh = parallel.create_mesh(devices)
  method = step_method(config, num_classes, mesh)
  step = step_lib.make_train_step(method, config, mesh)
  state, losses = method.state, []
  for _ in range(2):
    state, metrics = step(state, parallel.shard_batch(batch, mesh))
    losses.append(float(metrics['loss']))
  return losses, jax.device_get(state.params), jax.device_get(state.batch_stats)


def test_sharded_step_equals_single_device_step(tmp_path):
  assert jax.device_count() == 8, 'tests/conftest.py forces 8 CPU devices'
  config = tiny_config(tmp_path)
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (16, 32, 16, 3), dtype=np.uint8),
           'label': np.repeat(np.arange(4, dtype=np.int32), 4)}
  one = _step_on(jax.devices()[:1], config, 4, batch)
  eight = _step_on(jax.devices(), config, 4, batch)
  np.testing.assert_allclose(one[0], eight[0], rtol=1e-5)
  for a, b in ((one[1], eight[1]), (one[2], eight[2])):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6), a, b)


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
  mesh = parallel.create_mesh()
  with pytest.raises(ValueError, match='not divisible by the number of devices'):
    parallel.check_batch_size(12, mesh)


def test_core_modules_do_not_import_tensorflow():
  code = ('import sys, jreid.models, jreid.losses, jreid.evaluation; '
          'bad = [m for m in ("tensorflow", "tensorflow_datasets", "faiss") if m in sys.modules]; '
          'assert not bad, bad')
  subprocess.run([sys.executable, '-c', code], check=True)


def test_nan_loss_stops_the_run_with_a_clear_message(tmp_path):
  config = tiny_config(tmp_path, epochs=1)
  config.eval.untrained = False
  config.eval.histogram_baseline = False
  config.optim.lr = 1e30  # Adam's first step throws the weights to infinity.
  with pytest.raises(train.TrainingDivergedError, match='NaN or infinite by step 2; no checkpoint'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not list((tmp_path / 'run' / 'checkpoints').glob('[0-9]*'))


@pytest.mark.parametrize('signum,code,name', [(signal.SIGTERM, 0, 'SIGTERM'),
                                               (signal.SIGINT, 130, r'Ctrl-C \(SIGINT\)')])
def test_stop_signal_writes_a_checkpoint_and_exits_cleanly(tmp_path, signum, code, name):
  """A preempted job (SIGTERM) or Ctrl-C: a checkpoint, one line saying how to resume, no
  traceback; exit 0 (preemption) or 130 (Ctrl-C)."""
  run = tmp_path / 'run'
  overrides = {**tiny.OVERRIDES, 'dataset.cache_dir': tmp_path / 'cache', 'train.epochs': 200,
               'train.checkpoint_every_steps': 500}
  cmd = [sys.executable, '-m', 'jreid.main', '--config=configs/bagtricks.py', f'--workdir={run}']
  cmd += [f'--config.{k}={v}' for k, v in overrides.items()]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, 'XLA_FLAGS': tiny.XLA_FLAGS})
  deadline = time.time() + 300
  while not metric_writers.read_jsonl(run / 'metrics.jsonl'):
    assert proc.poll() is None, proc.communicate()
    assert time.time() < deadline
    time.sleep(0.2)
  started = time.time()
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == code, err
  assert re.fullmatch(rf'jreid: {name} received: checkpoint written at step \d+/600 in \S+; run '
                      'the same command to resume.', err.strip().splitlines()[-1]), err
  assert 'Traceback' not in err
  assert time.time() - started < 30  # One step, one checkpoint: not the rest of the epoch.
  steps = [int(p.name) for p in (run / 'checkpoints').glob('[0-9]*')]
  assert steps and 0 < max(steps) < 600
