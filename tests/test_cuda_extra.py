"""The `cuda` extra of setup.cfg: one CUDA major for JAX and faiss, and it resolves."""

from __future__ import annotations

import configparser
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

# The CUDA major each faiss GPU wheel on PyPI links against (their requirements, Dec 2026:
# faiss-gpu and faiss-gpu-cu12 need nvidia-*-cu12, faiss-gpu-cuvs the CUDA 13 nvidia-* wheels).
FAISS_GPU_CUDA = {'faiss-gpu': 12, 'faiss-gpu-cu11': 11, 'faiss-gpu-cu12': 12,
                  'faiss-gpu-cu12-cuvs': 12, 'faiss-gpu-cu13-cuvs': 13, 'faiss-gpu-cuvs': 13}


def _extra(name: str) -> list[str]:
  parser = configparser.ConfigParser()
  parser.read(REPO / 'setup.cfg')
  lines = parser['options.extras_require'][name].splitlines()
  return [line.split('#')[0].strip() for line in lines if line.split('#')[0].strip()]


def test_jax_and_faiss_use_the_same_cuda_major():
  requirements = _extra('cuda')
  jax_majors = {int(m) for r in requirements for m in re.findall(r'^jax\[cuda(\d+)', r)}
  faiss = [re.split(r'[<>=;\[ ]', r)[0] for r in requirements if r.startswith('faiss')]
  assert len(jax_majors) == 1 and len(faiss) == 1, requirements
  assert FAISS_GPU_CUDA[faiss[0]] == jax_majors.pop()
  readme = (REPO / 'README.md').read_text()
  assert f'pip install --force-reinstall --no-deps {faiss[0]}' in readme  # The GPUs section.


@pytest.mark.skipif(not os.environ.get('JREID_NETWORK_TESTS'),
                    reason='downloads about 3 GB of wheels: set JREID_NETWORK_TESTS=1')
def test_cuda_extra_resolves_to_one_cuda_major(tmp_path):
  report = tmp_path / 'report.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'pip', 'install', '--dry-run', '--ignore-installed', '--quiet',
       '--report', str(report), f'{REPO}[cuda]'], capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr
  versions = {item['metadata']['name'].lower(): item['metadata']['version']
              for item in json.loads(report.read_text())['install']}
  assert 'jax-cuda13-plugin' in versions and 'faiss-gpu-cuvs' in versions
  assert not [name for name in versions if re.search(r'cu1[0-2]\b', name)], sorted(versions)
  assert versions['nvidia-cuda-runtime'].split('.')[0] == '13'
