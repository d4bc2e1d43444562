"""Orbax checkpoints of the train state in `<workdir>/checkpoints`.

Each checkpoint holds the train state and a JSON `meta` item with the model fingerprint (the
model config and number of classes). Orbax writes a checkpoint into a temporary directory
(`<step>.orbax-checkpoint-tmp-*`) and renames it to `<step>` when complete, so a run killed during
a save (SIGKILL, a full disk) resumes from the last complete one; the leftover temporary directory
is never read and is deleted when the next run opens the checkpoints.

`load_torch_state_dict` reads PyTorch weights safely (`torch.load(weights_only=True)`,
safetensors or a pickle-free `.npz`, told apart by their first bytes) for the weight converters.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import shutil
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """A checkpoint was written by a run with another architecture or dataset."""


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (full disk, quota, I/O error); earlier ones are intact."""


class WeightFileError(ValueError):
  """A weight file is not a state dict of tensors (or cannot be read safely)."""


def _os_error(exc: BaseException) -> OSError | None:
  """The OSError in the cause/context chain of `exc`, if any."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    if isinstance(exc, OSError):
      return exc
    seen.add(id(exc))
    exc = exc.__cause__ or exc.__context__
  return None


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
  """Keeps the last `keep` checkpoints of a run; saves asynchronously."""

  def __init__(self, directory: str | pathlib.Path, fingerprint: dict[str, Any], keep: int = 2):
    self.directory = pathlib.Path(directory).absolute()
    self.fingerprint = json.loads(json.dumps(fingerprint))  # Normalised as JSON round-trips it.
    if jax.process_index() == 0:
      remove_incomplete(self.directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'meta'))
    self._saving: int | None = None  # The step of the save that may still be in flight.

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    """Starts an asynchronous save of `state` as `step`.

    Raises:
      CheckpointWriteError: this save, or the previous one still in flight, failed to write.
    """
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(self.fingerprint)),
                         force=True)
      self._saving = step
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(e, self._saving if self._saving is not None else step) from e

  def restore(self, target: Any, step: int | None = None) -> Any:
    """Restores the state at `step` (default: latest) onto the shardings of `target`."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}')
    path = self.directory / str(step)
    meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    check_fingerprint(meta, self.fingerprint, path)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(target))))
    return restored['state']

  def wait(self) -> None:
    """Blocks until the last save is on disk; CheckpointWriteError if it failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(e, self._saving) from e
    self._saving = None

  def _write_error(self, exc: Exception, step: int | None) -> Exception:
    """A CheckpointWriteError for a failed write, else `exc` itself (not an I/O problem)."""
    os_error = _os_error(exc)
    if os_error is None:
      return exc
    reason = os_error.strerror or os.strerror(os_error.errno or 0) or str(os_error)
    try:
      kept = self._manager.latest_step()
    except Exception:  # pylint: disable=broad-except
      kept = None
    kept = (f'the last complete checkpoint (step {kept}) is intact' if kept is not None
            else 'no earlier checkpoint exists')
    fix = ('free disk space' if os_error.errno in (errno.ENOSPC, errno.EDQUOT)
           else 'check the file system')
    return CheckpointWriteError(
        os_error.errno, f'cannot write the checkpoint of step {step} in {self.directory}: '
        f'{reason}; {kept}. {fix.capitalize()} and run the same command to resume from it.')

  def close(self) -> None:
    """Waits for the last save (CheckpointWriteError if it failed) and releases the manager."""
    try:
      self.wait()
    finally:
      self._manager.close()


def remove_incomplete(directory: pathlib.Path) -> list[pathlib.Path]:
  """Deletes the temporary directories of saves that never completed; returns them.

  Orbax writes step N into `N.orbax-checkpoint-tmp*` and renames it to `N` once complete, so
  such a directory is what a killed or failed save left behind: never a checkpoint to restore.
  """
  removed = []
  if directory.is_dir():
    for path in directory.glob('*.orbax-checkpoint-tmp*'):
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
  return removed


def check_fingerprint(found: dict[str, Any], expected: dict[str, Any], path: pathlib.Path) -> None:
  """CheckpointMismatchError listing the differences when a checkpoint's fingerprint (its `meta`
  item) is not this run's."""
  if 'method' not in found and 'method' in expected:
    # Checkpoints written before every method recorded its name: the supervised method's, or the
    # cross-modality method's (the only one with a two-stream model) had none.
    model = found.get('model') or {}
    name = 'cross_modality' if model.get('name') == 'two_stream' else 'supervised'
    found = {**found, 'method': name}
  if found == expected:
    return
  diffs = [f'{k}: checkpoint has {found.get(k)!r}, this run has {expected.get(k)!r}'
           for k in sorted(set(found) | set(expected)) if found.get(k) != expected.get(k)]
  raise CheckpointMismatchError(
      f'checkpoint {path} was written by a different model or dataset ({"; ".join(diffs)}). '
      'Use a new --workdir for this config, or pass the config that wrote the checkpoint.')


def complete_steps(directory: str | pathlib.Path) -> list[int]:
  """The steps of the complete checkpoints in `directory` (`<step>/state`), ascending."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir()
                if p.name.isdigit() and (p / 'state').is_dir())


def _steps_hint(directory: pathlib.Path) -> str:
  steps = complete_steps(directory)
  if not steps:
    return ''
  shown = ', '.join(map(str, steps))
  return (f'{directory} holds the checkpoints of step{"s" if len(steps) > 1 else ""} {shown}: '
          f'pass e.g. --checkpoint={directory / str(steps[-1])}')


def check_checkpoint_path(path: str | pathlib.Path) -> pathlib.Path:
  """The absolute `path` when it is one checkpoint directory `WORKDIR/checkpoints/<step>`.

  Cheap (no Orbax): a run can call it before loading data to fail early on a mistyped path.

  Raises:
    FileNotFoundError: no such directory (naming the steps that do exist beside it), or a path
      that is not one checkpoint (naming the checkpoints inside it, if it holds some).
  """
  path = pathlib.Path(path).expanduser().absolute()
  if not path.exists():
    hint = _steps_hint(path.parent)
    if hint:
      raise FileNotFoundError(f'checkpoint {path} does not exist; {hint}.')
    where = (f'{path.parent} holds no complete checkpoint' if path.parent.is_dir()
             else f'neither does {path.parent}')
    raise FileNotFoundError(f'checkpoint {path} does not exist ({where}): pass a directory '
                            'WORKDIR/checkpoints/<step> of a trained run.')
  if (path / 'state').is_dir():
    return path
  # The workdir or its checkpoints folder instead of one step of it.
  for inner in (path / 'checkpoints', path):
    hint = _steps_hint(inner)
    if hint:
      raise FileNotFoundError(f'{path} is not one jreid checkpoint but {hint}.')
  kind = 'a file' if path.is_file() else 'a directory without state/ and meta/'
  raise FileNotFoundError(f'{path} is not a jreid checkpoint ({kind}): expected a directory like '
                          'WORKDIR/checkpoints/<step> containing state/ and meta/.')


def restore_from_path(path: str | pathlib.Path, target: Any, fingerprint: dict[str, Any]) -> Any:
  """Restores a state from one checkpoint directory `<dir>/checkpoints/<step>` (--checkpoint).

  Raises:
    FileNotFoundError: `path` is not a checkpoint (see `check_checkpoint_path`).
    CheckpointMismatchError: the checkpoint was written by another model or dataset.
  """
  path = check_checkpoint_path(path)
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  meta = checkpointer.restore(path, ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  check_fingerprint(meta, json.loads(json.dumps(fingerprint)), path)
  restored = checkpointer.restore(path, ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract(target))))
  return restored['state']


def _is_tensor(value: Any) -> bool:
  return hasattr(value, 'shape') and hasattr(value, 'dtype')


def _numpy_globals() -> list[Any]:
  """What `torch.load(weights_only=True)` may rebuild besides tensors: numpy arrays, scalars and
  dtypes, which released checkpoints keep beside their weights (AGW's cross-modality baseline
  stores its test CMC curve as an array). Under the names of numpy 2 and of numpy 1, which wrote
  most of those files."""
  from numpy._core import multiarray  # pylint: disable=g-import-not-at-top
  reconstruct = multiarray._reconstruct  # pylint: disable=protected-access
  dtypes = {type(np.dtype(code)) for code in '?bhilqBHILQefdgFDGUSV'}
  return [reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes,
          (reconstruct, 'numpy.core.multiarray._reconstruct'),
          (multiarray.scalar, 'numpy.core.multiarray.scalar')]


# Where released checkpoints nest their weights: FastReID 'model', open-reid/PPLR 'state_dict',
# AGW's cross-modality baseline 'net'.
_NESTED_KEYS = ('state_dict', 'model', 'net')
# QAConv's checkpoint.pth.tar holds the network under 'model' and the matcher inside the loss
# module under 'criterion': both are weights of the model, kept as 'model.*' and 'criterion.*'.
_SPLIT_KEYS = ('model', 'criterion')


def _unwrap_checkpoint(obj: Any) -> Any:
  """The state dict inside a checkpoint dict (see `_NESTED_KEYS`, `_SPLIT_KEYS`), or `obj`."""
  if not isinstance(obj, Mapping):
    return obj
  if all(isinstance(obj.get(key), Mapping) for key in _SPLIT_KEYS):
    return {f'{key}.{name}': value for key in _SPLIT_KEYS for name, value in obj[key].items()}
  for key in _NESTED_KEYS:
    if isinstance(obj.get(key), Mapping):
      return obj[key]
  return obj


# What load_torch_state_dict reads, for the messages about what a file is instead.
EXPECTED_WEIGHTS = ('expected PyTorch weights written by torch.save(model.state_dict(), path), a '
                    '.safetensors file or an .npz of named arrays')
INSTALL_HINT = 'pip install "jreid[torch]"'


def _zip_kind(path: pathlib.Path) -> tuple[str, str]:
  try:
    with zipfile.ZipFile(path) as archive:
      names = archive.namelist()
  except (zipfile.BadZipFile, OSError, ValueError):
    return 'other', 'a damaged or truncated zip archive'
  if any(name.endswith('/data.pkl') or name == 'data.pkl' for name in names):
    return 'torch', 'a PyTorch file (torch.save zip format)'
  if names and all(name.endswith('.npy') for name in names):
    return 'npz', 'an .npz archive'
  shown = ', '.join(names[:3]) + (', ...' if len(names) > 3 else '')
  return 'other', f'a zip archive of other files ({shown or "empty"})'


def _as_text(head: bytes) -> str | None:
  """`head` decoded when it is UTF-8 text without control characters, else None."""
  for cut in range(4):  # The 512 bytes may end inside a multi-byte character.
    try:
      text = head[:len(head) - cut].decode('utf-8')
      break
    except UnicodeDecodeError:
      continue
  else:
    return None
  if any(ord(c) < 32 and c not in '\t\n\r\f' for c in text):
    return None
  return text


def sniff_weight_file(path: str | os.PathLike[str]) -> tuple[str, str]:
  """What a weight file holds, judged by its first bytes (not its name).

  Returns:
    (kind, description): kind is 'torch' (torch.save's zip or legacy pickle format),
    'safetensors', 'npz' or 'other'; the description says what it is in words, e.g. 'an HTML
    page (a failed download?)'.
  """
  path = pathlib.Path(path)
  size = path.stat().st_size
  with open(path, 'rb') as f:
    head = f.read(512)
  if not head:
    return 'other', 'an empty file'
  if head[:4] in (b'PK\x03\x04', b'PK\x05\x06'):
    return _zip_kind(path)
  if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
    return 'torch', "a pickle (torch.save's legacy format, or another Python object)"
  if len(head) > 8 and head[8:9] == b'{' and 2 <= int.from_bytes(head[:8], 'little') <= size - 8:
    return 'safetensors', 'a .safetensors file'
  if head.startswith(b'\x93NUMPY'):
    return 'other', 'a single .npy array without parameter names (save with np.savez instead)'
  if head.startswith(b'\x1f\x8b'):
    return 'other', 'a gzip archive (extract it first)'
  if head.startswith(b'\x89HDF\r\n\x1a\n'):
    return 'other', 'an HDF5 file (Keras/TensorFlow weights?)'
  if len(head) > 262 and head[257:262] == b'ustar':
    return 'other', 'a tar archive (extract it first)'
  text = _as_text(head)
  if text is not None:
    stripped = text.lstrip()
    if stripped.startswith('version https://git-lfs'):
      return 'other', 'a Git LFS pointer, not the file itself (run git lfs pull)'
    if stripped[:15].lower().startswith(('<!doctype html', '<html')):
      return 'other', 'an HTML page (a failed download?)'
    first = stripped.splitlines()[0] if stripped else ''
    first = first[:40] + ('...' if len(first) > 40 else '')
    return 'other', f'a text file starting {first!r}'
  return 'other', f'unrecognised binary data (first bytes {head[:8].hex(" ")})'


def load_torch_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """A PyTorch state dict (name -> tensor) as numpy arrays, loaded without unpickling code.

  The format is judged from the file's first bytes (`sniff_weight_file`), whatever its name:
  torch.save's formats with `torch.load(weights_only=True)` (needs torch), which refuses
  arbitrary pickled objects (numpy arrays beside the weights are allowed), unwrapping a checkpoint
  dict that nests the weights under 'state_dict', 'model' or 'net' (QAConv's 'model' and
  'criterion' become 'model.*' and 'criterion.*'); safetensors with the safetensors package;
  `.npz` with `np.load(allow_pickle=False)`. `pip install "jreid[torch]"` installs both
  packages.

  Raises:
    FileNotFoundError: no file at `path`.
    WeightFileError: the file is not one of these formats (the message says what it is), holds
      something other than a mapping of names to tensors, cannot be loaded safely, or needs a
      package that is not installed.
  """
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise FileNotFoundError(f'weight file {path} does not exist.')
  kind, what = sniff_weight_file(path)
  if kind == 'safetensors':
    try:
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise WeightFileError(f'{path} is a .safetensors file, which needs the safetensors package: '
                            f'{INSTALL_HINT}.') from None
    try:
      obj = load_file(str(path))
    except Exception as e:  # pylint: disable=broad-except
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise WeightFileError(f'{path} has a .safetensors header but cannot be read ({first}); '
                            'the file may be truncated: download it again.') from None
  elif kind == 'npz':
    try:
      with np.load(path, allow_pickle=False) as archive:
        obj = {key: archive[key] for key in archive.files}
    except (ValueError, OSError) as e:
      raise WeightFileError(f'{path} is not a .npz archive of plain arrays ({e}); save numeric '
                            'arrays with np.savez(path, **state_dict).') from None
  elif kind == 'torch':
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise WeightFileError(f'{path} is {what}, which needs torch to read: {INSTALL_HINT} '
                            '(or convert it to .safetensors or .npz where torch is installed).'
                            ) from None
    try:
      with open(path, 'rb') as f:  # A file object: torch.load judges a path by its suffix.
        allowed = getattr(torch.serialization, 'safe_globals', None)  # torch >= 2.5
        with allowed(_numpy_globals()) if allowed else contextlib.nullcontext():
          obj = torch.load(f, weights_only=True, map_location='cpu')
    except Exception as e:  # pylint: disable=broad-except
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise WeightFileError(
          f'{path} cannot be loaded as PyTorch weights with weights_only=True ({first}). jreid '
          'never unpickles arbitrary objects: save the weights with '
          'torch.save(model.state_dict(), path).') from None
    obj = _unwrap_checkpoint(obj)
  else:
    raise WeightFileError(f'{path} is not a weight file: it is {what}; {EXPECTED_WEIGHTS}.')
  if not isinstance(obj, Mapping) or not obj:
    raise WeightFileError(f'{path} holds a {type(obj).__name__}, not a state dict: expected a '
                          'non-empty mapping of parameter names to tensors, as written by '
                          'torch.save(model.state_dict(), path).')
  bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not _is_tensor(v)]
  if bad:
    raise WeightFileError(f'{path} is not a state dict: the entries {bad[:5]} are not tensors '
                          '(expected a mapping of parameter names to tensors, as written by '
                          'torch.save(model.state_dict(), path)).')
  out = {}
  for key, value in obj.items():
    if hasattr(value, 'detach'):  # A torch tensor; bfloat16 has no numpy equivalent.
      value = value.detach().cpu()
      if str(value.dtype) == 'torch.bfloat16':
        value = value.float()
      value = value.numpy()
    out[key] = np.asarray(value)
  return out
