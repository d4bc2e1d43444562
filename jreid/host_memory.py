"""Transparent huge pages for the host's large allocations, set by the command-line entry points.

XLA:CPU allocates a training step's large temporaries (the activations) with malloc on every
execution. glibc serves allocations above its mmap threshold (32 MB at most) with a fresh mmap
and returns them at free, so every step first-touches its activations again, 4 KB at a time:
millions of page faults per ResNet-50 step on a CPU. With the glibc tunable
``glibc.malloc.hugetlb=1`` (glibc >= 2.35) glibc advises those mappings as transparent huge pages,
and where the kernel's THP mode is ``madvise`` (the usual default) a fault then maps 2 MB. glibc
reads its tunables when a process starts, so ``python -m jreid.main`` and the ``jreid`` command
run their own command line once more with the tunable set (``ensure_hugepage_malloc``); the
computation is the same, only the mapping of memory changes. ``benchmarks/train_speed.py`` records
the effect (``results/train_speed_cpu.json``).

``JREID_HUGEPAGES=0`` keeps the process as it was started.
"""

from __future__ import annotations

import os
import pathlib
import platform
import sys

ENV_OPT_OUT = 'JREID_HUGEPAGES'
TUNABLE = 'glibc.malloc.hugetlb'
_THP_MODE = pathlib.Path('/sys/kernel/mm/transparent_hugepage/enabled')


def _glibc_version() -> tuple[int, ...]:
  name, version = platform.libc_ver()
  if name != 'glibc':
    return ()
  try:
    return tuple(int(part) for part in version.split('.')[:2])
  except ValueError:
    return ()


def hugepage_malloc_wanted() -> bool:
  """Whether re-running the process with ``glibc.malloc.hugetlb=1`` would take effect: Linux
  with glibc >= 2.35, THP in ``madvise`` mode, the tunable not yet set, and no opt-out."""
  if sys.platform != 'linux' or os.environ.get(ENV_OPT_OUT, '1') == '0':
    return False
  if TUNABLE in os.environ.get('GLIBC_TUNABLES', ''):
    return False  # set by the user, or this is the re-run
  if _glibc_version() < (2, 35):
    return False
  try:
    return '[madvise]' in _THP_MODE.read_text()
  except OSError:
    return False


def ensure_hugepage_malloc() -> None:
  """Re-executes this process's command line with ``glibc.malloc.hugetlb=1`` added to
  ``GLIBC_TUNABLES`` when ``hugepage_malloc_wanted()``; returns where it does not (or cannot).

  Call it first thing in a command's ``__main__``: the process keeps its id, arguments and
  environment, and the re-run finds the tunable set, so it happens once.
  """
  argv = getattr(sys, 'orig_argv', None)
  if not argv or not hugepage_malloc_wanted():
    return
  tunables = os.environ.get('GLIBC_TUNABLES')
  os.environ['GLIBC_TUNABLES'] = f'{tunables}:{TUNABLE}=1' if tunables else f'{TUNABLE}=1'
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execv(sys.executable, [sys.executable, *argv[1:]])
  except OSError:
    pass  # keep running as started
