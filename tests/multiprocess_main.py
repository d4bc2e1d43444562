"""`python -m jreid.main` with a record of what this process reads and writes (for tests).

Run as `python tests/multiprocess_main.py <the flags of jreid.main>`: the command runs unchanged,
and every process appends to `$JREID_RECORD_DIR/<process index>.jsonl` one line per

* training batch it feeds: {'kind': 'train', 'step': global step, 'index': split positions};
* evaluation batch it feeds: {'kind': 'eval', 'split': name, 'index': positions, -1 on padding};
* file it opens for writing: {'kind': 'write', 'path': the path}.

tests/test_multiprocess.py compares the records of a 2-process job with those of 1 process.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pathlib
import runpy
import sys

_RECORD_DIR = pathlib.Path(os.environ['JREID_RECORD_DIR'])
# From the command line, not JAX: asking JAX before jax.distributed.initialize() would start it
# as a single process.
_PROCESS = next((a.split('=', 1)[1] for a in sys.argv if a.startswith('--process_id=')), '0')
_open = builtins.open


def _record(row: dict) -> None:
  with _open(_RECORD_DIR / f'{_PROCESS}.jsonl', 'a') as f:
    f.write(json.dumps(row) + '\n')


def _recording_open(file, mode='r', *args, **kwargs):
  if any(c in mode for c in 'wax+') and isinstance(file, (str, os.PathLike)):
    _record({'kind': 'write', 'path': os.path.abspath(os.fspath(file))})
  return _open(file, mode, *args, **kwargs)


def _install() -> None:
  from data_pipelines import input_pipeline  # pylint: disable=g-import-not-at-top
  train_iterator, eval_iterator = input_pipeline.train_iterator, input_pipeline.eval_iterator

  def recorded_train(*args, start_step, **kwargs):
    for step, batch in enumerate(train_iterator(*args, start_step=start_step, **kwargs),
                                 start_step):
      _record({'kind': 'train', 'step': step, 'index': batch['index'].tolist()})
      yield batch

  def recorded_eval(split, *args, **kwargs):
    for batch in eval_iterator(split, *args, **kwargs):
      _record({'kind': 'eval', 'split': split.name, 'index': batch['index'].tolist()})
      yield batch

  input_pipeline.train_iterator, input_pipeline.eval_iterator = recorded_train, recorded_eval
  builtins.open = io.open = _recording_open


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  _RECORD_DIR.mkdir(parents=True, exist_ok=True)
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
  _install()
  sys.argv[0] = 'jreid.main'
  runpy.run_module('jreid.main', run_name='__main__', alter_sys=True)
