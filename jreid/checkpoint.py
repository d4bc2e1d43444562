"""Orbax checkpoints of the train state in `<workdir>/checkpoints`.

Each checkpoint holds the train state and a JSON `meta` item with the model fingerprint (the
model config and number of classes). Orbax writes a checkpoint into a temporary directory and
renames it when complete, so a run killed during a save resumes from the last complete one.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """A checkpoint was written by a run with another architecture or dataset."""


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
  """Keeps the last `keep` checkpoints of a run; saves asynchronously."""

  def __init__(self, directory: str | pathlib.Path, fingerprint: dict[str, Any], keep: int = 2):
    self.directory = pathlib.Path(directory).absolute()
    self.fingerprint = json.loads(json.dumps(fingerprint))  # Normalised as JSON round-trips it.
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'meta'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(self.fingerprint)), force=True)

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
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def check_fingerprint(found: dict[str, Any], expected: dict[str, Any], path: pathlib.Path) -> None:
  if found == expected:
    return
  diffs = [f'{k}: checkpoint has {found.get(k)!r}, this run has {expected.get(k)!r}'
           for k in sorted(set(found) | set(expected)) if found.get(k) != expected.get(k)]
  raise CheckpointMismatchError(
      f'checkpoint {path} was written by a different model or dataset ({"; ".join(diffs)}). '
      'Use a new --workdir for this config, or pass the config that wrote the checkpoint.')


def restore_from_path(path: str | pathlib.Path, target: Any, fingerprint: dict[str, Any]) -> Any:
  """Restores a state from one checkpoint directory `<dir>/checkpoints/<step>` (--checkpoint)."""
  path = pathlib.Path(path).absolute()
  if not (path / 'state').is_dir():
    raise FileNotFoundError(
        f'{path} is not a jreid checkpoint: expected a directory like WORKDIR/checkpoints/<step> '
        'containing state/ and meta/.')
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  meta = checkpointer.restore(path, ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  check_fingerprint(meta, json.loads(json.dumps(fingerprint)), path)
  restored = checkpointer.restore(path, ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract(target))))
  return restored['state']
