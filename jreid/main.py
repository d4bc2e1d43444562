r"""Entry point: python -m jreid.main --config=configs/X.py[:variant] --workdir=DIR [--mode=eval].

Config values are overridden with `--config.a.b=value`; the config is locked, so a misspelt key is
an error. See each config's docstring for the exact commands of its variants.
"""

import os
import sys

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
flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() (multi-host GPU/TPU jobs).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every step of their work at INFO.
  from jreid import parallel  # pylint: disable=g-import-not-at-top
  from jreid import train  # pylint: disable=g-import-not-at-top
  from jreid.checkpoint import CheckpointMismatchError  # pylint: disable=g-import-not-at-top
  from data_pipelines.types import DatasetError  # pylint: disable=g-import-not-at-top
  if FLAGS.multihost:
    parallel.initialize_distributed()
  try:
    if FLAGS.mode == 'train':
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
      train.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)
  except train.Preempted as e:
    print(f'jreid: {e}', file=sys.stderr)
  except (DatasetError, CheckpointMismatchError, FileNotFoundError, PermissionError,
          train.TrainingDivergedError) as e:
    # A user's mistake or a diverged run: one clear message, not a traceback.
    print(f'jreid: error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
