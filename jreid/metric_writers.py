"""Training scalars as JSON lines (`metrics.jsonl`) and TensorBoard events (`tensorboard/`);
`write_summary` adds the test metrics and images of an evaluation.

Only process 0 writes. On resume, lines logged after the restored checkpoint's step are dropped so
the curves of an interrupted run equal those of an uninterrupted one.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax


def read_jsonl(path: str | pathlib.Path) -> list[dict[str, Any]]:
  """Parses a JSON-lines file, ignoring a truncated last line (a run killed mid-write)."""
  rows = []
  path = pathlib.Path(path)
  if not path.exists():
    return rows
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      break
  return rows


class MetricWriter:

  def __init__(self, workdir: str | pathlib.Path, start_step: int = 0, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = pathlib.Path(workdir) / 'metrics.jsonl'
    self._tb = None
    if not self.enabled:
      return
    kept = [r for r in read_jsonl(self.path) if r.get('step', 0) <= start_step]
    with open(self.path, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(pathlib.Path(workdir) / 'tensorboard'), purge_step=start_step + 1)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    row = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def write_summary(logdir: str | pathlib.Path, step: int, scalars: dict[str, float],
                  images: dict[str, Any] | None = None) -> None:
  """Scalars and uint8 RGB images [H, W, 3] as TensorBoard events in `logdir` at `step` (process
  0 only), e.g. a run's test metrics and rank lists."""
  if jax.process_index() != 0:
    return
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  writer = SummaryWriter(str(logdir))
  try:
    for tag, value in scalars.items():
      writer.add_scalar(tag, float(value), int(step))
    for tag, image in (images or {}).items():
      writer.add_image(tag, image, int(step), dataformats='HWC')
  finally:
    writer.close()
