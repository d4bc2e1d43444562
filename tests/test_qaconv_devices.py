"""QAConv all-pairs scoring split over devices and processes equals the 1-device result.

The suite runs on 8 virtual CPU devices (conftest.py); the 2-process case starts two processes
with 2 devices each, as `jreid.main --coordinator=...` does.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny
from jreid.methods import qaconv as qaconv_method
from jreid.models.qaconv import pairwise_scores
from test_qaconv import np_qaconv, trained_looking_variables, unit_maps


@pytest.mark.parametrize('method,dtype', [('fused', jnp.float32), ('direct', jnp.float32),
                                          ('fused', jnp.bfloat16)])
def test_query_blocks_split_over_8_devices_equal_one_device(method, dtype):
  assert jax.device_count() == 8
  rng = np.random.default_rng(11)
  variables = trained_looking_variables(rng)
  q, g = unit_maps(rng, 37), unit_maps(rng, 29)
  kwargs = dict(query_block=4, gallery_block=8, method=method, dtype=dtype, query_chunk=2,
                gallery_chunk=4)
  calls = []
  split = pairwise_scores(variables, q, g, progress=lambda *a: calls.append(a), **kwargs)
  one = pairwise_scores(variables, q, g, devices=jax.devices()[:1], **kwargs)
  # Each pair is computed by the same program on whichever device holds its query block.
  np.testing.assert_array_equal(split, one)
  if dtype == jnp.float32:
    np.testing.assert_allclose(split, np_qaconv(q, g, variables)[0], rtol=1e-5, atol=1e-5)
  # 37 queries in blocks of 4 on 8 devices: 2 rounds of 32 rows; progress after each.
  assert calls == [(32 * 29, 37 * 29), (37 * 29, 37 * 29)]


def test_few_queries_still_use_every_device():
  rng = np.random.default_rng(12)
  variables = trained_looking_variables(rng)
  q, g = unit_maps(rng, 9), unit_maps(rng, 5)
  calls = []
  got = pairwise_scores(variables, q, g, query_block=128, gallery_block=128,
                        progress=lambda *a: calls.append(a))
  # 9 queries on 8 devices: blocks of 2 (one chunk each), one round.
  assert calls == [(9 * 5, 9 * 5)]
  np.testing.assert_allclose(got, np_qaconv(q, g, variables)[0], rtol=1e-5, atol=1e-5)


def test_scoring_progress_counts_pairs_on_process_0(monkeypatch):
  monkeypatch.setattr(sys, 'stderr', io.StringIO())  # Not a terminal: only large sets log.
  quiet = qaconv_method.ScoringProgress(10**6)
  assert quiet._bar is None  # pylint: disable=protected-access
  bar = qaconv_method.ScoringProgress(10**8)
  for done in (2 * 10**7, 6 * 10**7, 10**8):
    bar.update(done, 10**8)
  assert bar._bar.n == 10**8  # pylint: disable=protected-access
  bar.close()


_TWO_PROCESS_SCRIPT = '''
import sys
import jax
from jreid import parallel
parallel.initialize_distributed(sys.argv[1], 2, int(sys.argv[2]))
import numpy as np
sys.path.insert(0, 'tests')
from jreid.models.qaconv import pairwise_scores
from test_qaconv import trained_looking_variables, unit_maps
rng = np.random.default_rng(13)
variables = trained_looking_variables(rng)
q, g = unit_maps(rng, 23), unit_maps(rng, 17)
assert jax.device_count() == 4 and jax.local_device_count() == 2
scores = pairwise_scores(variables, q, g, query_block=4, gallery_block=8, query_chunk=2,
                         gallery_chunk=4)
np.save(sys.argv[3], scores)
'''


def test_two_processes_split_the_query_blocks_and_both_get_every_score(tmp_path):
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count=2 {tiny.XLA_FLAGS}'}
  procs = [subprocess.Popen([sys.executable, '-c', _TWO_PROCESS_SCRIPT, f'localhost:{port}',
                             str(i), str(tmp_path / f'{i}.npy')], cwd=tiny.REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  try:
    outputs = [p.communicate(timeout=120)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [0, 0], outputs
  rng = np.random.default_rng(13)
  variables = trained_looking_variables(rng)
  q, g = unit_maps(rng, 23), unit_maps(rng, 17)
  one = pairwise_scores(variables, q, g, query_block=4, gallery_block=8, query_chunk=2,
                        gallery_chunk=4, devices=jax.devices()[:1])
  for i in range(2):
    np.testing.assert_array_equal(np.load(tmp_path / f'{i}.npy'), one)
