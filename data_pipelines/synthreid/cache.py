"""Writing SynthReID to disk in the Market-1501 layout, atomically, and caching it by spec.

``ensure_synthreid(cache_dir)`` returns ``cache_dir / synthreid_v1_<spec_hash>``, generating it
on first use; `publish_atomically` and `ensure_cached` serve every synthetic dataset (the
infrared variant, SynthVehicle).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
import time

from PIL import Image

from data_pipelines.synthreid.plan import camera_graph, plan_shots
from data_pipelines.synthreid.render import render_shot
from data_pipelines.synthreid.spec import (
    FPS, SESSION, SYNTHREID_VERSION, SynthReIDSpec, spec_hash)
from data_pipelines.types import DatasetError

SPLIT_DIRS = {'train': 'bounding_box_train', 'gallery': 'bounding_box_test', 'query': 'query'}
MARKER = 'synthreid.json'  # version, spec, counts, camera graph, generation time


def default_cache_dir() -> pathlib.Path:
  """``$JREID_CACHE`` if set, else ``~/.cache/jreid``."""
  return pathlib.Path(os.environ.get('JREID_CACHE') or pathlib.Path.home() / '.cache' / 'jreid')


def write_dataset(directory: pathlib.Path, spec: SynthReIDSpec) -> dict[str, int]:
  """Draws and writes every image under ``directory``; returns the counts."""
  for name in SPLIT_DIRS.values():
    (directory / name).mkdir(parents=True, exist_ok=True)
  shots = plan_shots(spec)
  for shot in shots:
    Image.fromarray(render_shot(spec, shot)).save(
        directory / SPLIT_DIRS[shot.split] / shot.filename, quality=spec.jpeg_quality)
  counts = {}
  for split in ('train', 'query', 'gallery'):
    counts[f'{split}_ids'] = len({s.pid for s in shots if s.split == split and s.pid > 0})
    counts[f'{split}_images'] = sum(s.split == split for s in shots)
  return {
      **counts,
      'distractors': sum(s.pid == 0 for s in shots),
      'junk': sum(s.pid == -1 for s in shots),
      'cameras': len({s.cam for s in shots}),
  }


def _is_complete(root: pathlib.Path, marker: str = MARKER) -> bool:
  return (root / marker).is_file()


def publish_atomically(root: str | os.PathLike, spec: dict, marker: str,
                       write: Callable[[pathlib.Path], dict], *,
                       overwrite: bool = False) -> pathlib.Path:
  """Writes a generated dataset to ``root`` atomically and returns ``root``.

  ``write(directory)`` fills a temporary directory next to ``root`` and returns the JSON-able
  info that is written to ``directory / marker`` (with the generation time added); the directory
  is then renamed to ``root``, so ``root`` either does not exist or is complete. If another
  process publishes the same ``spec`` at ``root`` meanwhile, its copy is kept and this one
  discarded. Shared by every synthetic dataset (SynthReID, its infrared variant, SynthVehicle).

  Raises:
    FileExistsError: ``root`` already holds files and ``overwrite`` is False, or another process
      wrote another spec there meanwhile.
  """
  root = pathlib.Path(root)
  if root.exists() and any(root.iterdir()) and not overwrite:
    raise FileExistsError(f'{root} already exists and is not empty; delete it, choose another '
                          'directory, or pass overwrite=True (--overwrite).')
  root.parent.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{root.name}.tmp-', dir=root.parent))
  try:
    info = write(tmp)
    info['generation_seconds'] = round(time.perf_counter() - start, 3)
    (tmp / marker).write_text(json.dumps(info, indent=2) + '\n')
    if overwrite and root.exists():
      trash = pathlib.Path(tempfile.mkdtemp(prefix=f'.{root.name}.old-', dir=root.parent))
      os.replace(root, trash / 'old')
      shutil.rmtree(trash)
    try:
      os.replace(tmp, root)
    except OSError:
      if not _is_complete(root, marker):
        raise
      other = json.loads((root / marker).read_text()).get('spec')
      if other != spec:
        raise FileExistsError(f'{root} was written meanwhile with another spec; delete it or '
                              'choose another directory.') from None
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
  return root


def ensure_cached(root: pathlib.Path, marker: str,
                  generate: Callable[[pathlib.Path], pathlib.Path]) -> pathlib.Path:
  """``root`` if it holds ``marker`` (complete), else ``generate(root)``; refuses foreign dirs."""
  if _is_complete(root, marker):
    return root
  if root.exists() and any(root.iterdir()):
    raise DatasetError(f'{root} exists but has no {marker} (not written by this '
                       'generator, or damaged); delete the directory and run again.')
  return generate(root)


def generate_synthreid(root: str | os.PathLike, spec: SynthReIDSpec = SynthReIDSpec(), *,
                       overwrite: bool = False) -> pathlib.Path:
  """Writes the dataset of ``spec`` to ``root`` atomically and returns ``root``.

  The images are written to a temporary directory next to ``root`` that is then renamed to
  ``root``, so ``root`` either does not exist or is complete. If another process publishes the
  same spec at ``root`` meanwhile, its copy is kept and this one discarded.

  Raises:
    FileExistsError: ``root`` already holds files and ``overwrite`` is False.
  """

  def write(directory: pathlib.Path) -> dict:
    counts = write_dataset(directory, spec)
    return {
        'name': 'SynthReID', 'version': SYNTHREID_VERSION, 'spec': dataclasses.asdict(spec),
        'spec_hash': spec_hash(spec), 'layout': 'market1501', 'fps': FPS, 'sessions': [SESSION],
        'counts': counts,
        'camera_graph_m': [[a, b, d] for (a, b), d in camera_graph(spec).items()],
    }
  return publish_atomically(root, dataclasses.asdict(spec), MARKER, write,
                            overwrite=overwrite)


def ensure_synthreid(cache_dir: str | os.PathLike | None = None,
                     spec: SynthReIDSpec = SynthReIDSpec()) -> pathlib.Path:
  """The dataset of ``spec`` under ``cache_dir`` (default ``default_cache_dir()``).

  Returns ``cache_dir / f'synthreid_v{SYNTHREID_VERSION}_{spec_hash(spec)}'`` at once if it is
  complete, else generates it first. Processes racing to generate it all get the same copy.
  """
  cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  root = cache_dir / f'synthreid_v{SYNTHREID_VERSION}_{spec_hash(spec)}'
  return ensure_cached(root, MARKER, lambda r: generate_synthreid(r, spec))
