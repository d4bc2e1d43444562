"""jreid.index.GalleryIndex: exact (faiss or numpy) and approximate (IVF-PQ, HNSW) search, saved
and loaded, against a plain numpy brute-force search."""

import json
import subprocess
import sys

import numpy as np
import pytest

import tiny
from jreid import index as index_lib
from jreid.index import GalleryIndex, GalleryIndexError


def brute_force(query, gallery, k, metric):
  """Plain numpy: every distance, a stable argsort per row."""
  q, g = np.asarray(query, np.float64), np.asarray(gallery, np.float64)
  if metric == 'cosine':
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    dist = 1.0 - q @ g.T
  else:
    dist = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
  order = np.argsort(dist, axis=1, kind='stable')[:, :k]
  return np.take_along_axis(dist, order, axis=1), order


def clustered(n, dim, seed=0, num_queries=50):
  """Gallery vectors around n / 8 identity centres, and queries near some of the centres."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(max(1, n // 8), dim))
  gallery = centres[rng.integers(0, len(centres), n)] + 0.4 * rng.normal(size=(n, dim))
  query = centres[rng.integers(0, len(centres), num_queries)] + 0.4 * rng.normal(
      size=(num_queries, dim))
  return gallery.astype(np.float32), query.astype(np.float32)


@pytest.mark.parametrize('metric', ['cosine', 'euclidean'])
@pytest.mark.parametrize('backend', ['faiss', 'numpy'])
def test_flat_index_is_exact_and_survives_save_and_load(metric, backend, tmp_path, monkeypatch):
  if backend == 'numpy':
    monkeypatch.setattr(index_lib, '_faiss', lambda: None)  # As without faiss installed.
  gallery, query = clustered(400, 24)
  names = [f'cam{i % 3}/img_{i:04d}.jpg' for i in range(len(gallery))]
  pids, camids = np.arange(400) // 8, np.arange(400) % 3
  built = GalleryIndex.build(gallery, names=names, pids=pids, camids=camids, kind='auto',
                             metric=metric, info={'model_id': 'abc'})
  assert built.kind == 'flat' and built.backend == backend
  built.save(tmp_path / 'gallery.index')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['gallery.index',
                                                        'gallery.index.items.npz']
  loaded = GalleryIndex.load(tmp_path / 'gallery.index')
  assert loaded.backend == backend and loaded.info == {'model_id': 'abc'}
  assert loaded.names.tolist() == names and loaded.pids.tolist() == pids.tolist()
  assert loaded.camids.tolist() == camids.tolist()
  expected_d, expected_i = brute_force(query, gallery, 10, metric)
  for idx in (built, loaded):
    dist, rows = idx.search(query, 10)
    np.testing.assert_array_equal(rows, expected_i)
    np.testing.assert_allclose(dist, expected_d, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kind', ['ivfpq', 'hnsw'])
def test_approximate_indexes_find_most_true_neighbours(kind, tmp_path):
  gallery, query = clustered(10000, 32)
  built = GalleryIndex.build(gallery, kind=kind)
  if kind == 'ivfpq':
    assert built.params == {'nlist': 128, 'm': 4, 'nbits': 8, 'nprobe': 8}
  built.save(tmp_path / 'g.index')
  loaded = GalleryIndex.load(tmp_path / 'g.index')
  expected_d, expected_i = brute_force(query, gallery, 10, 'cosine')
  dist, rows = loaded.search(query, 10)
  recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, expected_i)])
  assert recall >= (0.5 if kind == 'ivfpq' else 0.9), recall
  np.testing.assert_array_equal(loaded.search(query, 10)[1], built.search(query, 10)[1])
  # HNSW holds the vectors: its distances are the exact cosine distances of the rows returned.
  # IVF-PQ's are those of the 4-byte codes: cosine distances, approximated.
  g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
  q = query / np.linalg.norm(query, axis=1, keepdims=True)
  exact = 1.0 - np.einsum('qd,qkd->qk', q, g[rows])
  if kind == 'hnsw':
    np.testing.assert_allclose(dist, exact, atol=1e-4)
    assert np.all(expected_d[:, -1] <= dist[:, -1] + 1e-5)  # No closer 10th neighbour than exact.
  else:
    assert np.corrcoef(dist.ravel(), exact.ravel())[0, 1] > 0.8
  assert np.all(np.diff(dist, axis=1) >= 0)


def test_defaults_from_the_gallery_size():
  assert index_lib.ivfpq_defaults(100_000, 256) == {'nlist': 256, 'm': 32, 'nbits': 8,
                                                    'nprobe': 16}
  assert index_lib.ivfpq_defaults(1_000_000, 256) == {'nlist': 1024, 'm': 32, 'nbits': 8,
                                                      'nprobe': 64}
  assert index_lib.ivfpq_defaults(1_000_000, 2048)['m'] == 64
  assert index_lib.resolve_kind('auto', 999_999) == 'flat'
  assert index_lib.resolve_kind('auto', 1_000_000) == 'ivfpq'


def test_bad_builds_and_loads_name_the_fix(tmp_path, monkeypatch):
  gallery, query = clustered(100, 16)
  with pytest.raises(GalleryIndexError, match=r"unknown index kind 'ivf': use one of auto, "
                     'flat, ivfpq, hnsw'):
    GalleryIndex.build(gallery, kind='ivf')
  with pytest.raises(GalleryIndexError, match=r'100 features are too few to train an IVF-PQ'):
    GalleryIndex.build(gallery, kind='ivfpq')
  with pytest.raises(GalleryIndexError, match=r'float array \[N, D\]'):
    GalleryIndex.build(np.zeros((3, 4, 4, 2), np.float32))
  with pytest.raises(GalleryIndexError, match=r'3 features but 2 names'):
    GalleryIndex.build(gallery[:3], names=['a', 'b'])
  with pytest.raises(GalleryIndexError, match=r'nlist, nprobe: not an option of the flat index '
                     r'\(kind auto picks flat below 1000000 items: pass kind ivfpq or hnsw\); its options '
                     'are none'):
    GalleryIndex.build(gallery, nlist=8, nprobe=2)
  with pytest.raises(GalleryIndexError, match=r'ef_search: not an option of the ivfpq index'):
    GalleryIndex.build(gallery, kind='ivfpq', ef_search=3)
  built = GalleryIndex.build(gallery)
  with pytest.raises(GalleryIndexError, match=r'do not match the index dimension 16'):
    built.search(query[:, :8])
  with pytest.raises(GalleryIndexError, match=r'index .*nothing.index does not exist'):
    GalleryIndex.load(tmp_path / 'nothing.index')
  built.save(tmp_path / 'g.index')
  (tmp_path / 'g.index.items.npz').unlink()
  with pytest.raises(GalleryIndexError, match=r'g.index.items.npz is missing'):
    GalleryIndex.load(tmp_path / 'g.index')
  monkeypatch.setattr(index_lib, '_faiss', lambda: None)
  with pytest.raises(GalleryIndexError, match=r"a 'hnsw' index needs faiss: pip install "
                     'faiss-cpu'):
    GalleryIndex.build(gallery, kind='hnsw')


def test_index_benchmark_quick(tmp_path):
  """benchmarks/index_scale.py --quick: every kind built and measured on a small gallery."""
  out = tmp_path / 'index_scale.json'
  run = subprocess.run([sys.executable, 'benchmarks/index_scale.py', '--quick', '--out', str(out)],
                       cwd=tiny.REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  result = json.loads(out.read_text())
  rows = {(r['gallery_size'], r['kind']): r for r in result['results']}
  assert set(k for _, k in rows) == {'flat', 'ivfpq', 'hnsw'}
  for row in rows.values():
    assert row['recall_at_10'] <= 1.0 and row['search_ms_p50'] <= row['search_ms_p99']
  assert all(r['recall_at_10'] == 1.0 for (n, k), r in rows.items() if k == 'flat')
  assert result['command'].startswith('python benchmarks/index_scale.py --quick')
