"""Reliability: bad input fails with one clear line, interrupted runs resume exactly, loading is safe.

The README section "Reliability" lists every case with the test that holds it.
"""

import dataclasses
import errno
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import tiny
from data_pipelines import datasets
from data_pipelines import input_pipeline
from data_pipelines import market1501
from data_pipelines import samplers
from data_pipelines import synthreid
from data_pipelines import validate
from data_pipelines.types import DatasetError, ReIDSplit
from jreid import checkpoint
from jreid import config_checks
from jreid import train

REPO = pathlib.Path(__file__).resolve().parent.parent

TINY = tiny.OVERRIDES


@pytest.fixture(scope='module')
def cache(tmp_path_factory) -> pathlib.Path:
  """A cache directory holding the tiny SynthReID dataset of `TINY`."""
  path = tmp_path_factory.mktemp('cache')
  spec = synthreid.SynthReIDSpec(num_train_ids=16, num_test_ids=12, num_distractors=10,
                                 num_junk=5)
  synthreid.ensure_synthreid(path, spec)
  return path


def _main(args, env=None, timeout=300) -> subprocess.CompletedProcess:
  """`python -m jreid.main ARGS` on one CPU device."""
  env = {**os.environ, 'XLA_FLAGS': tiny.XLA_FLAGS, **(env or {})}
  env.pop('JREID_TRACEBACK', None)
  return subprocess.run([sys.executable, '-m', 'jreid.main', *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, env=env, timeout=timeout)


def _command(workdir, cache_dir, **extra):
  overrides = {**TINY, 'dataset.cache_dir': cache_dir, **extra}
  return [f'--config={REPO}/configs/bagtricks.py', f'--workdir={workdir}'] + [
      f'--config.{k}={v}' for k, v in overrides.items()]


def _assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
  assert proc.returncode == 1, proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith('jreid: error:')]
  assert len(errors) == 1, proc.stderr
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


# 1. Bad input: through `python -m jreid.main` for representative cases ------------------------


def test_main_unknown_config_key_suggests_the_nearest_key(tmp_path):
  proc = _main(['--config=configs/bagtricks.py', f'--workdir={tmp_path}', '--config.optim.lrr=1'])
  _assert_one_line_error(proc, "unknown config key 'optim.lrr'; did you mean 'optim.lr'?")


def test_main_wrong_value_type_is_one_line(tmp_path):
  proc = _main(['--config=configs/bagtricks.py', f'--workdir={tmp_path}', '--config.optim.lr=fast'])
  _assert_one_line_error(proc, "config.optim.lr is a float (now 0.001); 'fast' is not a float")
  with pytest.raises(config_checks.ConfigError, match="config.batch_size is an int \\(now 32\\); "
                     "'abc' is not an int"):
    config_checks.check_command_line(
        ['main', f'--config={REPO}/configs/bagtricks.py', '--config.batch_size=abc'])


def test_main_missing_dataset_root_is_one_line(tmp_path):
  proc = _main(['--config=configs/bagtricks.py:market1501', f'--workdir={tmp_path / "run"}',
                f'--config.dataset.root={tmp_path / "nowhere"}',
                f'--config.dataset.cache_dir={tmp_path / "cache"}'])
  _assert_one_line_error(proc, f'dataset folder {tmp_path / "nowhere"} does not exist',
                         'bounding_box_train')


def _main_in_process(args, capsys) -> subprocess.CompletedProcess:
  """`jreid.main` in this process (no start-up cost): its flag parsing, then main()."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from jreid import main as jreid_main  # pylint: disable=g-import-not-at-top
  capsys.readouterr()
  code = 0
  argv = ['jreid.main', *map(str, args)]
  saved_argv, sys.argv = sys.argv, argv  # ml_collections reads the overrides from sys.argv.
  try:
    jreid_main.parse_flags(argv)
    jreid_main.main(['jreid.main'])
  except SystemExit as e:
    code = e.code
  finally:
    sys.argv = saved_argv
    flags.FLAGS.unparse_flags()
  out = capsys.readouterr()
  return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_main_batch_size_not_divisible_by_k_is_one_line(tmp_path, cache, capsys):
  proc = _main_in_process(_command(tmp_path / 'run', cache, batch_size=24,
                                   **{'sampler.num_instances': 16}), capsys)
  _assert_one_line_error(proc, 'config.batch_size=24 is not divisible by '
                         'config.sampler.num_instances=16')


def test_main_unwritable_workdir_is_one_line(tmp_path, capsys):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  proc = _main_in_process([f'--config={REPO}/configs/bagtricks.py',
                           f'--workdir={blocker / "run"}'], capsys)
  _assert_one_line_error(proc, f'cannot write to the workdir {blocker / "run"}',
                         'Pass a writable --workdir')


# 1. Bad input: through functions -------------------------------------------------------------


def test_config_checks_functions():
  from configs import bagtricks  # pylint: disable=g-import-not-at-top
  config = bagtricks.get_config()
  assert config_checks.suggest_key('dataset.nmae', config) == 'dataset.name'
  assert config_checks.suggest_key('optimm.lr', config) == 'optim.lr'
  with pytest.raises(config_checks.ConfigError, match="'model.backbone.widht'; did you mean "
                     "'model.backbone.width'"):
    config_checks.lookup(config, 'model.backbone.widht')
  assert config_checks.lookup(config, 'train.epochs') == 8
  with pytest.raises(config_checks.ConfigError, match='is a bool'):
    config_checks.check_value('eval.untrained', 'maybe', True)
  config_checks.check_value('optim.lr', '1e-3', 1e-3)
  config_checks.check_value('optim.milestones', '(1, 2)', (40, 90))  # left to ml_collections
  argv = ['main', '--config', 'configs/bagtricks.py:market1501', '--config.optim.lr', '0.1',
          '--noconfig.eval.untrained', '--workdir=/x', '--', '--config.zzz=1']
  assert config_checks.parse_command_line(argv) == (
      'configs/bagtricks.py:market1501', [('optim.lr', '0.1'), ('eval.untrained', 'false')])
  with pytest.raises(config_checks.ConfigError, match="unknown variant 'nope'"):
    config_checks.check_command_line(['main', f'--config={REPO}/configs/bagtricks.py:nope'])
  with pytest.raises(config_checks.ConfigError, match='does not exist'):
    config_checks.check_command_line(['main', '--config=configs/missing.py'])
  with pytest.raises(config_checks.ConfigError, match='needs a value'):
    config_checks.check_command_line(
        ['main', f'--config={REPO}/configs/bagtricks.py', '--config.batch_size'])


def _market_copy(cache: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  root = next(p for p in cache.iterdir() if p.is_dir() and not p.name.endswith('_tfds'))
  copy = tmp_path / 'market'
  shutil.copytree(root, copy)
  return copy


def test_missing_root_and_wrong_layout_and_bad_file_name(tmp_path, cache):
  config = train.ml_collections.ConfigDict({'name': 'market1501', 'root': '', 'cache_dir': ''})
  with pytest.raises(DatasetError, match='needs --config.dataset.root='):
    datasets.load_dataset(config)
  with pytest.raises(DatasetError, match='does not exist'):
    market1501.load_market1501(tmp_path / 'nowhere', data_dir=tmp_path / 'tfds')
  root = _market_copy(cache, tmp_path)
  # Wrong layout: the user passed the parent of the dataset folder.
  with pytest.raises(DatasetError, match=f'has no bounding_box_train/ folder. Did you mean {root}'):
    market1501.load_market1501(tmp_path, data_dir=tmp_path / 'tfds')
  (root / 'bounding_box_train' / 'person_001.jpg').write_bytes(b'\xff\xd8')
  with pytest.raises(DatasetError, match="cannot parse 'person_001.jpg' in .*bounding_box_train: "
                     'expected PPPP_cCsS_FFFFFF_NN.jpg'):
    market1501.load_market1501(root, data_dir=tmp_path / 'tfds')


def test_corrupt_and_truncated_jpegs_are_skipped_or_stop_the_run(tmp_path, cache, capfd):
  root = _market_copy(cache, tmp_path)
  files = sorted((root / 'bounding_box_train').glob('*.jpg'))
  truncated, garbage = files[3], files[10]
  truncated.write_bytes(truncated.read_bytes()[:300])
  garbage.write_bytes(b'\xff\xd8\xff' + bytes(range(256)) * 4 + b'\xff\xd9')  # markers, no image
  splits = market1501.load_market1501(root, data_dir=tmp_path / 'tfds')
  train_split = splits['train']
  bad_names = [f'bounding_box_train/{truncated.name}', f'bounding_box_train/{garbage.name}']
  np.testing.assert_array_equal(validate.find_corrupt(train_split, decode=False),
                                [train_split.filenames.index(bad_names[0])])  # markers only
  bad = validate.find_corrupt(train_split)
  assert [train_split.filenames[i] for i in bad] == bad_names

  capfd.readouterr()
  kept = validate.validate_splits(splits, on_corrupt='skip')
  err = capfd.readouterr().err
  warnings = [line for line in err.splitlines() if line.startswith('jreid: warning')]
  assert len(warnings) == 1 and 'skipping 2 image(s) that do not decode' in warnings[0]
  assert all(name in warnings[0] for name in bad_names)
  assert len(kept['train']) == len(train_split) - 2
  assert not set(bad_names) & set(kept['train'].filenames)
  assert kept['query'] is splits['query'] and kept['gallery'] is splits['gallery']
  # The kept images line up with their metadata; labels stay contiguous.
  index = [train_split.filenames.index(f) for f in kept['train'].filenames]
  np.testing.assert_array_equal(kept['train'].pids, train_split.pids[index])
  assert all(kept['train'].images[i] == train_split.images[j] for i, j in enumerate(index))
  assert set(kept['train'].labels) == set(range(len(np.unique(kept['train'].pids))))
  # The input pipeline decodes every kept image.
  batches = list(input_pipeline.eval_iterator(kept['train'], train.ml_collections.ConfigDict(
      {'height': 32, 'width': 16}), batch_size=64))
  assert sum(int(b['mask'].sum()) for b in batches) == len(kept['train'])

  with pytest.raises(DatasetError, match=re.escape(bad_names[0]) + '.*on_corrupt=skip'):
    validate.validate_splits(splits, on_corrupt='error')
  with pytest.raises(ValueError, match="on_corrupt must be 'skip' or 'error'"):
    validate.drop_corrupt(train_split, on_corrupt='ignore')


def _png(seed: int) -> bytes:
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  pixels = np.random.default_rng(seed).integers(0, 256, (32, 16, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(buffer, format='PNG')
  return buffer.getvalue()


def _spoil(folder: pathlib.Path) -> tuple[list[str], str]:
  """Turns files of `folder` into every kind of non-image; returns their names and a PNG's."""
  files = sorted(folder.glob('*.jpg'))
  contents = [
      bytes(np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8)),  # random bytes
      b'',  # an empty file
      b'person 12, camera 3: see notes.txt\n',  # a text file named .jpg
      files[3].read_bytes()[:300],  # a truncated JPEG
      _png(0)[:-40],  # a truncated PNG
  ]
  for path, content in zip(files, contents):
    path.write_bytes(content)
  files[len(contents)].write_bytes(_png(1))  # A PNG named .jpg decodes: it is kept.
  return [f'{folder.name}/{p.name}' for p in files[:len(contents)]], (
      f'{folder.name}/{files[len(contents)].name}')


def test_every_file_that_does_not_decode_is_skipped_or_named(tmp_path, cache, capfd):
  root = _market_copy(cache, tmp_path)
  bad, png = _spoil(root / 'bounding_box_train')
  splits = market1501.load_market1501(root, data_dir=tmp_path / 'tfds')  # Prepares without stopping.
  capfd.readouterr()
  kept = validate.validate_splits(splits, on_corrupt='skip')
  err = capfd.readouterr().err
  assert err.startswith('jreid: warning: skipping 5 image(s) that do not decode (empty, '
                        'truncated, corrupt or not a JPEG/PNG image; config.data.on_corrupt=skip): ')
  assert len(err.splitlines()) == 1 and all(name in err for name in bad) and png not in err
  assert len(kept['train']) == len(splits['train']) - 5 and png in kept['train'].filenames
  # The kept PNG goes through the input pipeline's decoder.
  index = kept['train'].filenames.index(png)
  one = dataclasses.replace(kept['train'], images=kept['train'].images[index:index + 1],
                            filenames=[png], pids=kept['train'].pids[index:index + 1],
                            camids=kept['train'].camids[index:index + 1],
                            sessions=kept['train'].sessions[index:index + 1],
                            frames=kept['train'].frames[index:index + 1],
                            labels=kept['train'].labels[index:index + 1])
  batch = next(input_pipeline.eval_iterator(one, train.ml_collections.ConfigDict(
      {'height': 32, 'width': 16}), batch_size=1))
  assert batch['mask'].sum() == 1 and batch['image'].std() > 0

  with pytest.raises(DatasetError) as info:
    validate.validate_splits(splits, on_corrupt='error')
  message = str(info.value)
  assert all(name in message for name in bad) and png not in message
  assert message.startswith("5 of the ")
  assert 'Replace or delete those files' in message and 'Re-extract the dataset' not in message


def test_main_on_corrupt_error_names_the_files_of_a_users_folder(tmp_path, cache):
  """A user's own CSV folder: the run stops naming the files, without archive advice."""
  source = _market_copy(cache, tmp_path)
  root = tmp_path / 'mine'
  (root / 'images').mkdir(parents=True)
  rows = {'train': ['path,pid,camid'], 'query': ['path,pid,camid'], 'gallery': ['path,pid,camid']}
  for split, folder in (('train', 'bounding_box_train'), ('query', 'query'),
                        ('gallery', 'bounding_box_test')):
    for path in sorted((source / folder).glob('*.jpg')):
      pid, cam = re.match(r'(-?\d+)_c(\d)', path.name).groups()
      shutil.copy(path, root / 'images' / f'{split}_{path.name}')
      rows[split].append(f'images/{split}_{path.name},{pid},{int(cam) - 1}')
  for split, lines in rows.items():
    (root / f'{split}.csv').write_text('\n'.join(lines) + '\n')
  bad, _ = _spoil(root / 'images')
  proc = _main(_command(tmp_path / 'run', cache, **{
      'dataset.name': 'csv', 'dataset.root': root, 'data.on_corrupt': 'error'}))
  _assert_one_line_error(proc, 'do not decode (empty, truncated, corrupt or not a JPEG/PNG image)',
                         *bad, 'Replace or delete those files',
                         'or set --config.data.on_corrupt=skip')
  assert 'Re-extract the dataset' not in proc.stderr
  # Local data is prepared, not downloaded: TFDS's "Downloading and preparing" is not shown.
  assert f'jreid: preparing a cached copy of {root}' in proc.stdout
  assert 'ownload' not in proc.stdout + proc.stderr


def _split(name, pids, camids, images=None) -> ReIDSplit:
  n = len(pids)
  return ReIDSplit(name=name, images=np.array(images or [b''] * n, dtype=object),
                   pids=np.array(pids, np.int32), camids=np.array(camids, np.int32),
                   sessions=np.ones(n, np.int32), frames=np.zeros(n, np.int64),
                   filenames=[f'{name}/{i}.jpg' for i in range(n)],
                   labels=np.array(pids, np.int32))


def test_empty_split_is_a_clear_error():
  empty = _split('query', [], [])
  with pytest.raises(DatasetError, match="the 'query' split is empty"):
    validate.validate_splits({'query': empty})
  with pytest.raises(DatasetError, match="'query' split is empty"):
    input_pipeline.eval_iterator(empty, None, batch_size=4)


def test_query_set_without_valid_matches_is_a_clear_error():
  gallery = _split('gallery', [1, 1, 2, 0, -1], [0, 1, 0, 2, 1])
  # Query 1 from camera 0 matches gallery id 1 in camera 1; the others have no valid match.
  assert validate.check_query_matches(_split('query', [1, 2, -1, 5], [0, 0, 1, 1]), gallery) == 1
  with pytest.raises(DatasetError, match='none of the 3 query images has a valid match'):
    validate.check_query_matches(_split('query', [2, -1, 5], [0, 1, 1]), gallery)


def test_identity_with_one_image_is_repeated_k_times_in_a_pk_batch():
  # Identity 0 has one image (position 0); identities 1-3 have four each.
  labels = np.array([0] + [1] * 4 + [2] * 4 + [3] * 4)
  sampler = samplers.PKSampler(labels, num_ids=2, num_instances=4, seed=0, batches_per_epoch=8)
  groups = sampler.epoch(0).reshape(-1, 4)
  single = groups[labels[groups[:, 0]] == 0]
  assert len(single) > 0
  np.testing.assert_array_equal(single, 0)  # sampled with replacement, as FastReID
  for group in groups[labels[groups[:, 0]] != 0]:
    assert len(set(group)) == 4 and len(set(labels[group])) == 1


def test_data_order_is_a_pure_function_of_seed_epoch_and_step():
  labels = np.repeat(np.arange(10), [4, 5, 6, 7, 4, 9, 3, 8, 4, 5])
  a = samplers.PKSampler(labels, num_ids=3, num_instances=4, seed=11, batches_per_epoch=5)
  a.steps(0, 40)  # Another history of calls must not change what step s returns.
  for step in (0, 7, 23, 39):
    b = samplers.PKSampler(labels, num_ids=3, num_instances=4, seed=11, batches_per_epoch=5)
    np.testing.assert_array_equal(a.steps(step, step + 1), b.steps(step, step + 1))
    np.testing.assert_array_equal(b.steps(step, step + 1)[0], b.epoch(step // 5)[step % 5])
  other_seed = samplers.PKSampler(labels, num_ids=3, num_instances=4, seed=12, batches_per_epoch=5)
  assert not np.array_equal(a.steps(0, 5), other_seed.steps(0, 5))


def test_torch_weight_file_that_is_not_a_state_dict(tmp_path):
  torch = pytest.importorskip('torch')
  weights = {'conv.weight': torch.arange(6, dtype=torch.float32).reshape(2, 3),
             'bn.num_batches_tracked': torch.tensor(3)}
  torch.save(weights, tmp_path / 'good.pth')
  loaded = checkpoint.load_torch_state_dict(tmp_path / 'good.pth')
  np.testing.assert_array_equal(loaded['conv.weight'], np.arange(6.0).reshape(2, 3))
  assert int(loaded['bn.num_batches_tracked']) == 3
  torch.save({'epoch': 3, 'state_dict': weights}, tmp_path / 'nested.pth')
  assert set(checkpoint.load_torch_state_dict(tmp_path / 'nested.pth')) == set(weights)

  torch.save([torch.zeros(2)], tmp_path / 'list.pth')
  with pytest.raises(checkpoint.WeightFileError, match='holds a list, not a state dict'):
    checkpoint.load_torch_state_dict(tmp_path / 'list.pth')
  torch.save({'lr': 0.1, 'w': torch.zeros(1)}, tmp_path / 'mixed.pth')
  with pytest.raises(checkpoint.WeightFileError, match=r"entries \['lr'\] are not tensors"):
    checkpoint.load_torch_state_dict(tmp_path / 'mixed.pth')
  # A whole pickled module is refused by weights_only=True instead of running its pickle.
  torch.save(torch.nn.Linear(2, 2), tmp_path / 'module.pth')
  with pytest.raises(checkpoint.WeightFileError, match='cannot be loaded as PyTorch weights with '
                     'weights_only=True'):
    checkpoint.load_torch_state_dict(tmp_path / 'module.pth')


def test_npz_and_safetensors_weight_files(tmp_path):
  np.savez(tmp_path / 'good.npz', w=np.ones((2, 2), np.float32))
  np.testing.assert_array_equal(checkpoint.load_torch_state_dict(tmp_path / 'good.npz')['w'],
                                np.ones((2, 2)))
  np.savez(tmp_path / 'objects.npz', w=np.array([{'a': 1}], dtype=object))
  with pytest.raises(checkpoint.WeightFileError, match='not a .npz archive of plain arrays'):
    checkpoint.load_torch_state_dict(tmp_path / 'objects.npz')
  with pytest.raises(FileNotFoundError, match='does not exist'):
    checkpoint.load_torch_state_dict(tmp_path / 'missing.pth')
  (tmp_path / 'w.safetensors').write_bytes(b'\0' * 16)  # More in tests/test_weight_files.py.
  with pytest.raises(checkpoint.WeightFileError, match='is not a weight file: it is unrecognised '
                     'binary data'):
    checkpoint.load_torch_state_dict(tmp_path / 'w.safetensors')


def test_main_with_a_weight_file_that_is_not_one_is_one_line(tmp_path, cache):
  weights = tmp_path / 'resnet50.pth'
  weights.write_text('<!DOCTYPE html>\n<html>Sign in</html>')
  proc = _main(_command(tmp_path / 'run', cache, **{'model.pretrained': weights}))
  _assert_one_line_error(proc, f'{weights} is not a weight file: it is an HTML page (a failed '
                         'download?); expected PyTorch weights written by torch.save(')


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(OSError, match='cannot write to the workdir .*Pass a writable --workdir'):
    train.prepare_workdir(blocker / 'run', train.ml_collections.ConfigDict({'a': 1}))


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
  from orbax.checkpoint._src.handlers import json_checkpoint_handler  # pylint: disable=g-import-not-at-top
  state = {'w': jax.numpy.arange(4.0), 'step': jax.numpy.array(1)}
  fingerprint = {'model': 'tiny'}
  ckpt = checkpoint.Checkpointer(tmp_path / 'ckpt', fingerprint)
  ckpt.save(1, state)
  ckpt.wait()

  async def disk_full(self, x, directory):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, '_save_fn', disk_full)
  with pytest.raises(checkpoint.CheckpointWriteError) as info:
    ckpt.save(2, {'w': jax.numpy.arange(4.0) + 1, 'step': jax.numpy.array(2)})
    ckpt.wait()
  message = str(info.value)
  assert 'cannot write the checkpoint of step 2' in message and 'No space left on device' in message
  assert 'the last complete checkpoint (step 1) is intact. Free disk space' in message
  assert info.value.errno == errno.ENOSPC
  monkeypatch.undo()
  ckpt.close()
  assert (tmp_path / 'ckpt' / '2.orbax-checkpoint-tmp').is_dir()  # The failed save's leftover.

  again = checkpoint.Checkpointer(tmp_path / 'ckpt', fingerprint)
  assert again.latest_step() == 1
  restored = again.restore(state)
  np.testing.assert_array_equal(restored['w'], np.arange(4.0))
  again.close()


def _tiny_checkpoints(directory: pathlib.Path, steps) -> None:
  """Real Orbax checkpoints of a tiny state at `steps` in `directory`."""
  ckpt = checkpoint.Checkpointer(directory, {'model': 'tiny'}, keep=len(steps))
  for step in steps:
    ckpt.save(step, {'w': jax.numpy.arange(3.0) + step})
  ckpt.close()


def test_checkpoint_path_that_does_not_exist_lists_the_steps_that_do(tmp_path):
  ckpts = tmp_path / 'run' / 'checkpoints'
  _tiny_checkpoints(ckpts, (3, 6))
  (ckpts / '9.orbax-checkpoint-tmp-1').mkdir()  # An unfinished save: not a step to offer.
  assert checkpoint.complete_steps(ckpts) == [3, 6]
  restored = checkpoint.restore_from_path(ckpts / '6', {'w': jax.numpy.zeros(3)},
                                          {'model': 'tiny'})
  np.testing.assert_array_equal(restored['w'], [6.0, 7.0, 8.0])
  missing = ckpts / '999'
  with pytest.raises(FileNotFoundError) as info:
    checkpoint.restore_from_path(missing, {'w': jax.numpy.zeros(3)}, {'model': 'tiny'})
  assert str(info.value) == (f'checkpoint {missing} does not exist; {ckpts} holds the checkpoints '
                             f'of steps 3, 6: pass e.g. --checkpoint={ckpts / "6"}.')
  # The workdir or its checkpoints folder instead of one step: it says which steps are inside.
  for folder in (tmp_path / 'run', ckpts):
    with pytest.raises(FileNotFoundError, match=re.escape(
        f'{folder} is not one jreid checkpoint but {ckpts} holds the checkpoints of steps 3, 6')):
      checkpoint.check_checkpoint_path(folder)
  # Paths that exist but are no checkpoint keep a clear message.
  (tmp_path / 'notes.txt').write_text('x')
  with pytest.raises(FileNotFoundError, match=re.escape(
      f'{tmp_path / "notes.txt"} is not a jreid checkpoint (a file): expected a directory like '
      'WORKDIR/checkpoints/<step> containing state/ and meta/.')):
    checkpoint.check_checkpoint_path(tmp_path / 'notes.txt')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='not a jreid checkpoint \\(a directory without'):
    checkpoint.check_checkpoint_path(tmp_path / 'empty')
  with pytest.raises(FileNotFoundError, match=re.escape(
      f'({tmp_path / "empty"} holds no complete checkpoint)')):
    checkpoint.check_checkpoint_path(tmp_path / 'empty' / '5')
  with pytest.raises(FileNotFoundError, match=re.escape(f'(neither does {tmp_path / "nowhere"})')):
    checkpoint.check_checkpoint_path(tmp_path / 'nowhere' / '5')


def test_main_eval_of_a_missing_checkpoint_step_lists_the_steps(tmp_path, cache):
  run = tmp_path / 'run'
  _tiny_checkpoints(run / 'checkpoints', (2, 4))
  proc = _main(_command(run, cache) + ['--mode=eval', f'--checkpoint={run}/checkpoints/999'])
  _assert_one_line_error(
      proc, f'checkpoint {run}/checkpoints/999 does not exist; {run}/checkpoints holds the '
      f'checkpoints of steps 2, 4: pass e.g. --checkpoint={run}/checkpoints/4.')


# 2. Interruption ---------------------------------------------------------------------------


def _complete_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / 'checkpoints').glob('*') if p.name.isdigit())


def test_sigkill_at_a_random_moment_then_resume_gives_the_uninterrupted_result(tmp_path, cache):
  # Compiled programs are shared through a persistent cache: only the first run compiles.
  env = {'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'jax_cache'),
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
         'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '-1', 'XLA_FLAGS': tiny.XLA_FLAGS}
  run = tmp_path / 'run'
  cmd = [sys.executable, '-m', 'jreid.main', *_command(run, cache)]
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env={**os.environ, **env})
  delay = np.random.default_rng(7).uniform(0.0, 0.4)  # Checkpoints every step: often mid-write.
  deadline = time.time() + 240
  while not _complete_steps(run):
    assert proc.poll() is None, 'the run ended before its first checkpoint'
    assert time.time() < deadline
    time.sleep(0.05)
  time.sleep(delay)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  complete = _complete_steps(run)
  assert complete and max(complete) < 6

  resumed = _main(_command(run, cache), env=env)
  assert resumed.returncode == 0, resumed.stderr
  assert f'resuming from checkpoint at step {max(complete)}/6' in resumed.stdout
  assert not [p for p in (run / 'checkpoints').iterdir() if 'tmp' in p.name]

  straight = _main(_command(tmp_path / 'straight', cache), env=env)
  assert straight.returncode == 0, straight.stderr
  a = json.loads((run / 'metrics.json').read_text())
  b = json.loads((tmp_path / 'straight' / 'metrics.json').read_text())
  for key in ('rank1', 'rank5', 'rank10', 'mAP', 'mINP', 'num_valid_queries', 'steps'):
    assert a[key] == b[key], key


# 4. Safe loading ---------------------------------------------------------------------------

_UNSAFE = [
    (re.compile(r'\bpickle\.loads?\('), 'unpickles a file'),
    (re.compile(r'\bcloudpickle\.loads?\(|\bdill\.loads?\(|\bjoblib\.load\('), 'unpickles a file'),
    (re.compile(r'allow_pickle\s*=\s*True'), 'lets numpy unpickle'),
    (re.compile(r'(?<![.\w])(?:eval|exec)\('), 'runs a string as code'),
]
# Reviewed exceptions: (file, line fragment, why it is safe).
_ALLOWED = [
    ('benchmarks/rerank_scale.py', 'exec(compile(source, ',
     'runs an older version of jreid\'s own re-ranking code for a speed comparison'),
]


def _source_files():
  for folder in ('jreid', 'data_pipelines', 'configs', 'benchmarks', 'tests'):
    yield from sorted((REPO / folder).rglob('*.py'))


def test_no_code_loads_untrusted_pickles():
  def flagged(line):
    return any(pattern.search(line) for pattern, _ in _UNSAFE)
  assert all(map(flagged, ['x = pickle.load(f)', 'np.load(p, allow_pickle=True)', 'eval(text)',
                           'exec(code, {})', 'joblib.load(p)']))
  assert not any(map(flagged, ['model.eval()', 'np.load(p)', 'evaluate(x)', 'pickle.dump(x, f)']))
  problems = []
  for path in _source_files():
    if path == pathlib.Path(__file__).resolve():
      continue  # The patterns above.
    for number, line in enumerate(path.read_text().splitlines(), 1):
      code = line.split('#', 1)[0]
      for pattern, why in _UNSAFE:
        allowed = any(path == REPO / file and fragment in code for file, fragment, _ in _ALLOWED)
        if pattern.search(code) and not allowed:
          problems.append(f'{path.relative_to(REPO)}:{number}: {why}: {line.strip()}')
      if 'torch.load(' in code and 'weights_only=True' not in code:
        problems.append(f'{path.relative_to(REPO)}:{number}: torch.load without '
                        f'weights_only=True: {line.strip()}')
  assert not problems, '\n'.join(problems)
