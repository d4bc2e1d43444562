"""The entry points' re-run with glibc's huge-page malloc (jreid.host_memory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jreid import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REPORT = '''
import os
from jreid import host_memory
print('start', os.environ.get('GLIBC_TUNABLES'), flush=True)
host_memory.ensure_hugepage_malloc()
print('after', os.environ.get('GLIBC_TUNABLES'))
'''

# Minor page faults of first touching 256 MB from malloc (numpy advises its own large arrays,
# so this goes through libc directly, as XLA's buffers do).
FAULTS = '''
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 256 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
pointer = libc.malloc(ctypes.c_size_t(size))
ctypes.memset(pointer, 1, size)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def run(code: str, **env: str) -> str:
  environ = {k: v for k, v in os.environ.items()
             if k not in ('GLIBC_TUNABLES', host_memory.ENV_OPT_OUT)}
  environ.update(env, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, '-c', code], env=environ, capture_output=True, text=True,
                       timeout=60, check=True)
  return out.stdout


def wanted_here() -> bool:
  saved = {k: os.environ.pop(k, None) for k in ('GLIBC_TUNABLES', host_memory.ENV_OPT_OUT)}
  try:
    return host_memory.hugepage_malloc_wanted()
  finally:
    os.environ.update({k: v for k, v in saved.items() if v is not None})


needs_thp = pytest.mark.skipif(not wanted_here(), reason='needs Linux, glibc >= 2.35 and THP in '
                               'madvise mode')


@needs_thp
def test_the_process_runs_again_once_with_the_tunable():
  assert run(REPORT).split('\n')[:3] == [
      'start None', 'start glibc.malloc.hugetlb=1', 'after glibc.malloc.hugetlb=1']


@needs_thp
def test_other_tunables_are_kept():
  lines = run(REPORT, GLIBC_TUNABLES='glibc.malloc.trim_threshold=1048576').split('\n')
  assert lines[1] == 'start glibc.malloc.trim_threshold=1048576:glibc.malloc.hugetlb=1'


def test_opt_out_and_a_user_setting_keep_the_process():
  assert run(REPORT, JREID_HUGEPAGES='0').split('\n')[:2] == ['start None', 'after None']
  assert run(REPORT, GLIBC_TUNABLES='glibc.malloc.hugetlb=0').split('\n')[:2] == [
      'start glibc.malloc.hugetlb=0', 'after glibc.malloc.hugetlb=0']


@needs_thp
def test_the_tunable_maps_large_allocations_in_huge_pages():
  # What the re-run is for: 256 MB first touched in 2 MB pages instead of 4 KB ones.
  plain = int(run(FAULTS))
  huge = int(run(FAULTS, GLIBC_TUNABLES='glibc.malloc.hugetlb=1'))
  assert plain > 50_000  # 65,536 pages of 4 KB
  assert huge < plain / 4, (plain, huge)
