"""The `jreid` command, run as a user runs it (a subprocess of the setup.cfg entry point), on a
tiny model that `jreid train` trains here; the README's "Use a trained model" commands exactly as
written; and one bad input per subcommand: one line `jreid: error: ...`, exit code 1, nothing
written.

References: features from `jreid.FeatureExtractor` in this process, rankings and APs by plain
numpy (every distance, a stable sort, the Market protocol's removals).
"""

import configparser
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tiny

RUN = 'runs/bagtricks'


def entry_point() -> list[str]:
  """`jreid` as pip installs it: the console script of setup.cfg, run by this interpreter."""
  cfg = configparser.ConfigParser()
  cfg.read(tiny.REPO / 'setup.cfg')
  scripts = dict(line.split('=', 1) for line in
                 cfg['options.entry_points']['console_scripts'].strip().splitlines())
  module, func = scripts['jreid '].strip().split(':')
  return [sys.executable, '-c', f'import sys; from {module} import {func}; '
          f'sys.argv[0] = "jreid"; sys.exit({func}())']


def jreid(cwd, *args, timeout=600):
  env = {**os.environ, 'PYTHONPATH': str(tiny.REPO)}
  return subprocess.run(entry_point() + list(args), cwd=cwd, capture_output=True, text=True,
                        env=env, timeout=timeout)


def _overrides(cache):
  values = {**tiny.OVERRIDES, 'train.epochs': 1, 'train.steps_per_epoch': 2,
            'dataset.cache_dir': str(cache)}
  return [f'--config.{k}={v}' for k, v in values.items()]


@pytest.fixture(scope='module')
def home(tmp_path_factory):
  """A folder as a user has it: runs/bagtricks trained by `jreid train`, and gallery/ and query/
  folders of images (SynthReID's, Market-1501 names)."""
  home = tmp_path_factory.mktemp('home')
  out = jreid(home, 'train', f'--config={tiny.REPO}/configs/bagtricks.py', f'--workdir={RUN}',
              *_overrides(home / 'cache'))
  assert out.returncode == 0, out.stderr[-3000:]
  data = next(p for p in (home / 'cache').iterdir() if (p / 'query').is_dir())
  shutil.copytree(data / 'bounding_box_test', home / 'gallery')
  shutil.copytree(data / 'query', home / 'query')
  return home


def _files(root):
  return {p.relative_to(root).as_posix() for p in pathlib.Path(root).rglob('*')
          if 'cache' not in p.relative_to(root).parts}


def readme_section():
  text = (tiny.REPO / 'README.md').read_text()
  section = text.split('## Use a trained model\n', 1)[1].split('\n## ', 1)[0]
  blocks = re.findall(r'```(\w*)\n(.*?)```', section, re.S)
  python = [code for lang, code in blocks if lang == 'python']
  shell = [code for lang, code in blocks if lang == '']
  assert len(python) == 1 and len(shell) == 1
  assert len(python[0].strip().splitlines()) == 3  # Three lines of Python.
  return python[0], [line for line in shell[0].splitlines() if line.strip()]


def market_ids(names):
  """Person and camera ids of Market-1501 names, read with a plain regular expression."""
  found = [re.match(r'(-1|\d{4})_c(\d)s\d_\d{6}_\d{2}\.jpg$', pathlib.Path(n).name)
           for n in names]
  return (np.array([int(m[1]) for m in found]), np.array([int(m[2]) - 1 for m in found]))


def plain_ap(dist_row, q_pid, q_cam, g_pids, g_cams):
  order = np.argsort(dist_row, kind='stable')
  keep = ~((g_pids[order] == q_pid) & (g_cams[order] == q_cam)) & (g_pids[order] != -1)
  hits = g_pids[order][keep] == q_pid
  if not hits.any():
    return None
  ranks = np.flatnonzero(hits) + 1
  return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def test_readme_commands_as_written(home):
  from jreid import inference  # pylint: disable=g-import-not-at-top
  python, commands = readme_section()
  out = subprocess.run([sys.executable, '-c', python +
                        '\nimport numpy as np\nnp.save("readme_features.npy", features)\n'],
                       cwd=home, capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'PYTHONPATH': str(tiny.REPO)})
  assert out.returncode == 0, out.stderr[-3000:]
  for line in commands:
    args = shlex.split(line)
    assert args[0] == 'jreid'
    out = jreid(home, *args[1:])
    assert out.returncode == 0, (line, out.stderr[-3000:])
    assert not out.stderr.strip(), (line, out.stderr)  # No warnings, no progress lines off a tty.

  # extract: the Python API's features, the sorted file names, the ids of their Market names.
  feats = np.load(home / 'gallery.npz')
  names = sorted(p.name for p in (home / 'gallery').iterdir())
  assert feats['names'].tolist() == names
  np.testing.assert_allclose(feats['features'], np.load(home / 'readme_features.npy'),
                             rtol=1e-6, atol=1e-7)
  pids, cams = market_ids(names)
  assert feats['pids'].tolist() == pids.tolist() and feats['camids'].tolist() == cams.tolist()
  info = json.loads(str(feats['info']))
  assert info['method'] == 'supervised' and info['step'] == 2 and info['normalize']

  # search: each query's top 10 are the plain numpy ranking of the same features.
  fx = inference.FeatureExtractor.from_workdir(home / RUN)
  assert fx.model_id == info['model_id']
  query_names = sorted(p.name for p in (home / 'query').iterdir())
  qf = fx(home / 'query')
  g = feats['features'].astype(np.float64)
  dist = 1.0 - qf.astype(np.float64) @ g.T
  results = json.loads((home / 'results.json').read_text())
  assert results['topk'] == 10 and results['kind'] == 'flat'
  assert [q['query'] for q in results['queries']] == query_names
  for i, q in enumerate(results['queries']):
    order = np.argsort(dist[i], kind='stable')[:10]
    assert [r['name'] for r in q['results']] == [names[j] for j in order]
    np.testing.assert_allclose([r['distance'] for r in q['results']], dist[i, order],
                               atol=1e-5)
  page = (home / 'results.html').read_text()
  sources = re.findall(r'src="([^"]*)"', page)
  assert len(sources) == len(query_names) * 11 and all(
      s.startswith('data:image/jpeg;base64,') for s in sources)
  assert names[int(np.argsort(dist[0], kind='stable')[0])] in page

  # visualize: the worst 20 queries, their APs equal to plain numpy APs, ascending; the
  # recomputed evaluation equals the one at the end of training.
  step_dir = home / RUN / 'visualize-2'
  summary = json.loads((step_dir / 'visualize.json').read_text())
  trained = json.loads((home / RUN / 'metrics.json').read_text())
  np.testing.assert_allclose(summary['metrics']['mAP'], trained['mAP'], rtol=1e-6)
  gf = fx(home / 'gallery')
  gdist = 1.0 - qf.astype(np.float64) @ gf.astype(np.float64).T
  qpids, qcams = market_ids(query_names)
  aps = [plain_ap(gdist[i], qpids[i], qcams[i], pids, cams) for i in range(len(query_names))]
  valid = sum(a is not None for a in aps)
  shown = summary['queries']
  assert len(shown) == min(20, valid)
  for record in shown:
    position = query_names.index(pathlib.PurePath(record['file']).name)
    assert record['AP'] == pytest.approx(aps[position], abs=1e-6)
    assert (step_dir / record['image']).stat().st_size > 0
  assert [r['AP'] for r in shown] == sorted(r['AP'] for r in shown)
  assert sorted(a for a in aps if a is not None)[:len(shown)] == pytest.approx(
      [r['AP'] for r in shown], abs=1e-6)
  assert (step_dir / 'roc.png').stat().st_size > 0

  # export: the ONNX model, run by onnxruntime on uint8 images at the input size, gives the
  # extractor's L2-normalised embeddings of the same arrays.
  from jreid import export  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, *fx.input_size, 3), dtype=np.uint8)
  onnx_out = export.load(home / 'bagtricks.onnx')(images)
  np.testing.assert_allclose(onnx_out, fx(images), atol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(onnx_out, axis=1), 1.0, atol=1e-5)


def test_train_wrote_a_self_contained_report_and_eval_its_own(home):
  out = jreid(home, 'eval', f'--config={tiny.REPO}/configs/bagtricks.py', f'--workdir={RUN}',
              *_overrides(home / 'cache'))
  assert out.returncode == 0, out.stderr[-3000:]
  run = home / RUN
  evaluated = json.loads((run / 'eval-2' / 'metrics.json').read_text())
  trained = json.loads((run / 'metrics.json').read_text())
  np.testing.assert_allclose(evaluated['mAP'], trained['mAP'], rtol=1e-6)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for folder in (run, run / 'eval-2'):
    page = (folder / 'report.html').read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith('data:image/png;base64,') for s in sources)
    assert '`' not in page and '<code>' in page and '<table>' in page
    tags = set()
    for events in (folder / 'tensorboard').glob('events.out.tfevents.*'):
      for record in tf.data.TFRecordDataset(str(events)):
        event = tf.compat.v1.Event.FromString(record.numpy())
        tags |= {(v.tag, v.WhichOneof('value')) for v in event.summary.value}
    assert ('test/mAP', 'simple_value') in tags and ('test/rank_lists', 'image') in tags


def test_every_subcommand_has_help(home):
  for name in ('extract', 'index', 'search', 'visualize', 'export'):
    out = jreid(home, name, '--help')
    assert out.returncode == 0 and f'usage: jreid {name}' in out.stdout, out.stderr
  out = jreid(home, 'train', '--help')
  assert out.returncode == 0 and '--config' in out.stdout and '--workdir' in out.stdout
  out = jreid(home, '--help')
  for name in ('train', 'eval', 'extract', 'index', 'search', 'visualize', 'export'):
    assert f'    {name}' in out.stdout


@pytest.mark.parametrize('args,message', [
    (['train', '--config=configs/nope.py', '--workdir=runs/new'],
     r"config file 'configs/nope.py' \(from --config=configs/nope.py\) does not exist"),
    (['eval', f'--config={tiny.REPO}/configs/bagtricks.py', f'--workdir={RUN}',
      '--config.optim.lrr=1'], r"unknown config key 'optim.lrr'; did you mean 'optim.lr'\?"),
    (['extract', '--workdir', 'runs/missing', '--images', 'gallery', '--out', 'g.npz'],
     r'workdir runs/missing does not exist: pass the --workdir of a trained run.'),
    (['index', '--features', 'x.npz', '--out', 'g.index', '--kind', 'lsh'],
     r"index: argument --kind: invalid choice: 'lsh'"),
    (['search', '--workdir', RUN, '--index', 'g.index', '--query', 'empty', '--out', 'r.html'],
     r'no images in empty'),
    (['visualize', '--workdir', 'runs/missing'],
     r'workdir runs/missing does not exist'),
    (['export', '--workdir', RUN, '--format', 'torchscript', '--out', 'm.pt'],
     r"export: argument --format: invalid choice: 'torchscript'"),
    (['export', '--workdir', RUN, '--format', 'onnx', '--out', 'm.tflite'],
     r'--out m.tflite: --format onnx writes NAME.onnx'),
])
def test_a_bad_input_is_one_line_and_writes_nothing(home, args, message):
  (home / 'empty').mkdir(exist_ok=True)
  if args[0] == 'search':  # An index to search, so that the query folder is what is wrong.
    from jreid.index import GalleryIndex  # pylint: disable=g-import-not-at-top
    GalleryIndex.build(np.eye(4, dtype=np.float32)).save(home / 'g.index')
  before = _files(home)
  out = jreid(home, *args)
  assert out.returncode == 1, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('jreid: error: '), out.stderr
  assert re.search(message, lines[0]), lines[0]
  assert _files(home) == before
