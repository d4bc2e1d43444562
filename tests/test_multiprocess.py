"""Two processes on one machine train and evaluate as one process with the same devices would.

The job is the user's command (`python -m jreid.main ... --coordinator=localhost:PORT
--num_processes=2 --process_id=I`, run through tests/multiprocess_main.py, which records what
each process reads and writes): each process has 2 CPU devices and the collectives between them
go through gloo. One process is SIGKILLed mid-training: the other must end (JAX's heartbeat),
and the same command resumes from the last complete checkpoint. The result is compared with one
process of 4 devices: the same global batch on the same number of devices.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import tiny
from jreid import checkpoint
from jreid import metric_writers
from jreid import train

STEPS = 6
HEARTBEAT_S = 10
GLOBAL_BATCH = tiny.OVERRIDES['batch_size']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(workdir: pathlib.Path, tmp_path: pathlib.Path, record: str, devices: int,
           process: tuple[str, int, int] | None = None) -> subprocess.Popen:
  overrides = {**tiny.OVERRIDES, 'dataset.cache_dir': tmp_path / 'cache', 'train.epochs': 1,
               'train.steps_per_epoch': STEPS, 'train.checkpoint_every_steps': 1}
  cmd = [sys.executable, str(tiny.REPO / 'tests' / 'multiprocess_main.py'),
         '--config=configs/bagtricks.py', f'--workdir={workdir}']
  cmd += [f'--config.{k}={v}' for k, v in overrides.items()]
  if process:
    coordinator, count, index = process
    cmd += [f'--coordinator={coordinator}', f'--num_processes={count}', f'--process_id={index}',
            f'--heartbeat_timeout={HEARTBEAT_S}']
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices} {tiny.XLA_FLAGS}',
         'JREID_RECORD_DIR': str(tmp_path / record),
         # The resumed job reuses the first one's compiled step (same code, same layout).
         'JAX_COMPILATION_CACHE_DIR': str(tmp_path / f'jit-cache-{devices}'),
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
  log = tmp_path / f'{record}-{process[2] if process else 0}.log'
  with open(log, 'w') as out:  # The child keeps its own copy of the file descriptor.
    return subprocess.Popen(cmd, cwd=tiny.REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _two_processes(workdir, tmp_path, record, coordinator):
  return [_start(workdir, tmp_path, record, 2, (coordinator, 2, i)) for i in range(2)]


def _log(tmp_path, record, index):
  return (tmp_path / f'{record}-{index}.log').read_text()


def _records(tmp_path, record, index):
  return metric_writers.read_jsonl(tmp_path / record / f'{index}.jsonl')


def _params(workdir: pathlib.Path):
  """The step and parameters (numpy) of the last checkpoint in `workdir`."""
  step = checkpoint.complete_steps(workdir / 'checkpoints')[-1]
  path = workdir / 'checkpoints' / str(step) / 'state'
  with ocp.PyTreeCheckpointer() as reader:
    tree = reader.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  return step, state['params']


def _wait(procs, timeout):
  deadline = time.time() + timeout
  for proc in procs:
    proc.wait(timeout=max(1, deadline - time.time()))
  return [proc.returncode for proc in procs]


def test_two_processes_train_evaluate_survive_a_kill_and_equal_one_process(tmp_path):
  one, two = tmp_path / 'one', tmp_path / 'two'
  procs, reference = [], None
  try:
    train.load_data(tiny.config('bagtricks', tmp_path))  # The synthetic data, generated once.
    reference = _start(one, tmp_path, 'one', 4)
    # Two processes, one killed once the first checkpoint is complete.
    coordinator = f'localhost:{_free_port()}'
    procs = _two_processes(two, tmp_path, 'killed', coordinator)
    deadline = time.time() + 240
    while not checkpoint.complete_steps(two / 'checkpoints'):
      assert all(p.poll() is None for p in procs), _log(tmp_path, 'killed', 0)
      assert time.time() < deadline, _log(tmp_path, 'killed', 0)
      time.sleep(0.02)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    codes = _wait(procs, timeout=HEARTBEAT_S + 60)
    # The survivor ends instead of waiting forever: its collective with the dead process fails
    # (one line), or JAX's coordination service stops it when the heartbeats stop.
    assert codes[1] == -signal.SIGKILL
    assert codes[0] != 0 and time.time() - killed < HEARTBEAT_S + 30
    survivor = _log(tmp_path, 'killed', 0)
    assert ('jreid: error: process 0 of 2 lost another process of the job' in survivor
            or 'stopped sending heartbeats' in survivor), survivor[-3000:]
    assert not (two / 'metrics.json').exists()
    stopped_at = max(checkpoint.complete_steps(two / 'checkpoints'))
    assert stopped_at < STEPS

    # The same command resumes from the last complete checkpoint and finishes.
    procs = _two_processes(two, tmp_path, 'resumed', coordinator)
    assert _wait(procs, timeout=240) == [0, 0], _log(tmp_path, 'resumed', 0)
    assert reference.wait(timeout=240) == 0, _log(tmp_path, 'one', 0)
  finally:
    for proc in [*procs, reference]:
      if proc is not None and proc.poll() is None:
        proc.kill()
  resumed_log = _log(tmp_path, 'resumed', 0)
  assert 'resuming from checkpoint at step' in resumed_log
  resumed_from = int(resumed_log.split('resuming from checkpoint at step ')[1].split('/')[0])
  assert 0 < resumed_from <= stopped_at
  assert '2 process(es)' in resumed_log and '4 cpu device(s)' in resumed_log

  # Parameters and metrics equal the 1-process run's (sums in another order: float rounding).
  step_one, params_one = _params(one)
  step_two, params_two = _params(two)
  assert step_one == step_two == STEPS
  leaves_one, leaves_two = (jax_leaves(p) for p in (params_one, params_two))
  assert [k for k, _ in leaves_one] == [k for k, _ in leaves_two]
  for (name, a), (_, b) in zip(leaves_one, leaves_two):
    # Adam turns a gradient of about 0 into a step of about lr of either sign: a rare element
    # differs by a small part of the layer's scale, the rest by rounding.
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max(), err_msg=name)
    assert np.mean(np.abs(b - a) > 1e-6 + 1e-5 * np.abs(a)) < 1e-3, name
  metrics_one = json.loads((one / 'metrics.json').read_text())
  metrics_two = json.loads((two / 'metrics.json').read_text())
  for key in ('rank1', 'rank5', 'mAP', 'mINP', 'num_valid_queries'):
    assert metrics_two[key] == pytest.approx(metrics_one[key], abs=1e-6), key
  curve_one = metric_writers.read_jsonl(one / 'metrics.jsonl')
  curve_two = metric_writers.read_jsonl(two / 'metrics.jsonl')
  assert [r['step'] for r in curve_two] == list(range(1, STEPS + 1))
  np.testing.assert_allclose([r['loss'] for r in curve_two], [r['loss'] for r in curve_one],
                             rtol=1e-5)

  # Each process read only its half of every global batch, in training and in evaluation.
  half = GLOBAL_BATCH // 2
  reads_one = _records(tmp_path, 'one', 0)
  global_batches = {r['step']: r['index'] for r in reads_one if r['kind'] == 'train'}
  assert sorted(global_batches) == list(range(STEPS))
  for index in range(2):
    rows = [r for name in ('killed', 'resumed') for r in _records(tmp_path, name, index)]
    train_rows = [r for r in rows if r['kind'] == 'train']
    assert {r['step'] for r in train_rows} == set(range(STEPS))
    for r in train_rows:
      assert r['index'] == global_batches[r['step']][index * half:(index + 1) * half]
  for split in ('query', 'gallery'):
    whole = [r['index'] for r in reads_one if r['kind'] == 'eval' and r['split'] == split]
    halves = [[r['index'] for r in _records(tmp_path, 'resumed', i)
               if r['kind'] == 'eval' and r['split'] == split] for i in range(2)]
    assert len(halves[0]) == len(halves[1]) == len(whole)
    for batch, first, second in zip(whole, *halves):
      assert first + second == batch
  # Only process 0 wrote the metrics, the curves and the report; process 1 wrote nothing in the
  # workdir but its write probe (and its part of the checkpoints).
  written = [{pathlib.Path(r['path']).relative_to(two).as_posix()
              for name in ('killed', 'resumed') for r in _records(tmp_path, name, i)
              if r['kind'] == 'write' and pathlib.Path(r['path']).is_relative_to(two)}
             for i in range(2)]
  assert {'metrics.json.tmp', 'metrics.jsonl', 'report.md', 'config.json.tmp'} <= written[0]
  assert not {p for p in written[1]
              if not p.startswith(('checkpoints/', '.write_test_'))}, written[1]
  assert (two / 'report.html').exists() and (two / 'cmc.png').exists()


def jax_leaves(tree, prefix=''):
  """(path, array) of every leaf of a nested dict, sorted by path."""
  out = []
  for key in sorted(tree):
    value = tree[key]
    if isinstance(value, dict):
      out += jax_leaves(value, f'{prefix}{key}/')
    else:
      out.append((f'{prefix}{key}', np.asarray(value)))
  return out


@pytest.mark.parametrize('flags,message', [
    (['--coordinator=localhost:12355'], r'--num_processes, --process_id missing: pass all of '
     r'--coordinator=HOST:PORT --num_processes=N --process_id=I, or none of them'),
    (['--coordinator=localhost', '--num_processes=2', '--process_id=0'],
     r"--coordinator='localhost': expected HOST:PORT of process 0"),
    (['--coordinator=localhost:12355', '--num_processes=2', '--process_id=2'],
     r'--process_id=2 with --num_processes=2: expected 0 <= process_id < num_processes'),
])
def test_an_incomplete_process_layout_is_one_clear_line(tmp_path, flags, message):
  cmd = [sys.executable, '-m', 'jreid.main', '--config=configs/bagtricks.py',
         f'--workdir={tmp_path}', *flags]
  proc = subprocess.run(cmd, cwd=tiny.REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert re.fullmatch(rf'jreid: error: {message}.*', proc.stderr.strip()), proc.stderr


def test_only_the_errors_of_a_lost_process_read_as_one():
  from jreid import main  # pylint: disable=g-import-not-at-top
  lost_peer = main._lost_peer  # pylint: disable=protected-access
  # What the survivor's all-reduce raised when its peer was SIGKILLed (jax 0.10.2, gloo).
  assert lost_peer(jax.errors.JaxRuntimeError(
      'UNKNOWN: Gloo all-reduce failed: [external/gloo/gloo/transport/tcp/pair.cc:538] Read '
      'error [127.0.0.1]:52147: Connection reset by peer'))
  # Other errors keep their traceback.
  assert not lost_peer(jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: out of memory'))
  assert not lost_peer(RuntimeError('Connection reset by peer'))
