r"""Entry point: python -m jreid.main --config=configs/X.py[:variant] --workdir=DIR [--mode=eval].

Config values are overridden with `--config.a.b=value`; the config is locked, so a misspelt key is
an error. See each config's docstring for the exact commands of its variants.

Several processes (one per machine, or several on one machine) run the same command, each with
`--coordinator=HOST:PORT --num_processes=N --process_id=I` (HOST:PORT of process 0), or with
`--multihost` where SLURM, Open MPI or a TPU pod tells JAX the layout. See README "GPUs".

A user's mistake (bad paths, dataset layout, config keys and values, a checkpoint of another
model, a full disk) ends the run with exit code 1 and one line `jreid: error: ...` naming the fix;
set JREID_TRACEBACK=1 to see the full traceback instead. See README "Reliability".
"""

import os
import pathlib
import signal
import sys
import traceback

if __name__ == '__main__':  # before the heavy imports: it may re-run this command once
  from jreid import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.ensure_hugepage_malloc()

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/bagtricks.py[:variant].',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the report.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                  'train: train (resuming if possible) then test; eval: test a checkpoint only.')
flags.DEFINE_string('checkpoint', None, '--mode=eval: a checkpoint directory WORKDIR/checkpoints/<step>'
                    ' (default: the latest in --workdir).')
flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() with the process layout '
                  'detected from the environment (SLURM, Open MPI, TPU pods).')
flags.DEFINE_string('coordinator', None, 'HOST:PORT of process 0 (with --num_processes and '
                    '--process_id: a job of several processes).')
flags.DEFINE_integer('num_processes', None, 'Number of processes of the job.')
flags.DEFINE_integer('process_id', None, 'This process, 0 .. num_processes - 1.')
flags.DEFINE_integer('heartbeat_timeout', 100, 'Seconds without a heartbeat after which a process '
                     'of a multi-process job is taken as dead and the job ends.')
flags.mark_flags_as_required(['config', 'workdir'])


_REPO = pathlib.Path(__file__).resolve().parent.parent
_OWN_CODE = tuple(str(_REPO / d) + os.sep for d in ('jreid', 'data_pipelines', 'configs'))


_several_processes = False  # Set once jax.distributed is initialised with more than one process.


def _exit(code: int) -> None:
  """sys.exit(code); in a job of several processes, os._exit(code) instead: JAX's shutdown at
  exit waits (minutes) for every process, and the others may be waiting for this one inside a
  collective. They end too once this process stops sending heartbeats."""
  if _several_processes:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access
  sys.exit(code)


def _fail(message: str) -> None:
  """Ends the process with one line on stderr and exit code 1."""
  message = ' '.join(str(message).split())  # One line, whatever the exception text held.
  print(f'jreid: error: {message}', file=sys.stderr, flush=True)
  _exit(1)


def _raised_by_jreid(exc: BaseException) -> bool:
  """True when jreid itself raised `exc` (its innermost frame is jreid code), i.e. a check."""
  frames = traceback.extract_tb(exc.__traceback__)
  return bool(frames) and os.path.abspath(frames[-1].filename).startswith(_OWN_CODE)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with config errors reported in one line (see `jreid.config_checks`)."""
  from jreid import config_checks  # pylint: disable=g-import-not-at-top
  try:
    config_checks.check_command_line(argv)
    rest = FLAGS(argv)
    FLAGS.config  # pylint: disable=pointless-statement  # Loads it now: errors are reported here.
  except config_checks.ConfigError as e:
    _fail(e)
  except flags.Error as e:
    _fail(f"{str(e).rstrip('.')}. Pass --helpfull to see the flags.")
  except (KeyError, AttributeError, ValueError, TypeError, OSError) as e:
    if os.environ.get('JREID_TRACEBACK'):
      raise
    _fail(f'cannot read the config ({type(e).__name__}: {e}).')
  return rest


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every step of their work at INFO.
  from jreid import parallel  # pylint: disable=g-import-not-at-top
  from jreid import train  # pylint: disable=g-import-not-at-top
  from jreid.checkpoint import CheckpointMismatchError  # pylint: disable=g-import-not-at-top
  from jreid.checkpoint import CheckpointWriteError  # pylint: disable=g-import-not-at-top
  from data_pipelines.types import DatasetError  # pylint: disable=g-import-not-at-top
  global _several_processes
  layout = (FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  if FLAGS.multihost or any(v is not None for v in layout):
    try:
      parallel.initialize_distributed(*layout, heartbeat_timeout_s=FLAGS.heartbeat_timeout)
    except ValueError as e:
      _fail(e)
    import jax  # pylint: disable=g-import-not-at-top
    _several_processes = jax.process_count() > 1
  try:
    if FLAGS.mode == 'train':
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
      train.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)
  except train.Preempted as e:
    print(f'jreid: {e}', file=sys.stderr, flush=True)
    # Ctrl-C ends with the shell's code for SIGINT; a preempted (SIGTERM) job ends cleanly.
    _exit(130 if e.signum == signal.SIGINT else 0)
  except KeyboardInterrupt:
    if os.environ.get('JREID_TRACEBACK'):
      raise
    print('jreid: interrupted (Ctrl-C) before training started or after it ended; nothing of '
          'the run is lost: run the same command to resume from the last checkpoint.',
          file=sys.stderr, flush=True)
    _exit(130)
  except (DatasetError, CheckpointMismatchError, CheckpointWriteError, FileNotFoundError,
          PermissionError, train.TrainingDivergedError) as e:
    # A user's mistake, a full disk or a diverged run: one clear message, not a traceback.
    if os.environ.get('JREID_TRACEBACK'):
      raise
    _fail(e)
  except RuntimeError as e:
    # In a job of several processes, a collective with a process that died fails here (or JAX's
    # coordination service stops this process first).
    if not _several_processes or os.environ.get('JREID_TRACEBACK') or not _lost_peer(e):
      raise
    import jax  # pylint: disable=g-import-not-at-top
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    _fail(f'process {jax.process_index()} of {jax.process_count()} lost another process of the '
          f'job ({first[:200]}); the job has ended. Run the same command on every process to '
          'resume from the last complete checkpoint.')
  except (ValueError, OSError) as e:
    # jreid's own checks (batch size, K, workdir, config values) raise these with a message that
    # names the fix; the same types from deep inside a library are bugs: keep their traceback.
    if os.environ.get('JREID_TRACEBACK') or not _raised_by_jreid(e):
      raise
    _fail(e)


def _lost_peer(exc: BaseException) -> bool:
  """True for the errors of a collective or a barrier whose other side has gone."""
  text = str(exc).lower()
  return type(exc).__name__ in ('JaxRuntimeError', 'XlaRuntimeError') and any(
      s in text for s in ('connection reset', 'connection closed', 'connection refused',
                          'broken pipe', 'gloo', 'unavailable', 'deadline_exceeded',
                          'heartbeat'))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
