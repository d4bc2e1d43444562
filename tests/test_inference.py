"""jreid.FeatureExtractor: a trained model's embeddings from config.json and a checkpoint alone.

Runs are written here without data (a checkpoint of perturbed initial weights), so every test
also proves that no dataset is read. References: the method's own `embed` applied to the saved
variables and normalised with numpy, the evaluation pipeline's decoding and resizing, and the
QAConv matcher's literal layers.
"""

import io
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import tiny
from jreid import checkpoint
from jreid import inference
from jreid import method as method_lib
from jreid import parallel
from jreid import parts
from jreid.checkpoint import CheckpointMismatchError


def _perturbed(tree, seed):
  """The tree with every leaf moved a little (variances kept positive)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))
  rng = np.random.default_rng(seed)
  out = []
  for path, leaf in leaves:
    leaf = np.asarray(leaf)
    noise = rng.normal(size=leaf.shape).astype(leaf.dtype)
    if 'var' in jax.tree_util.keystr(path):
      out.append(leaf * (1.0 + 0.3 * np.tanh(noise)))
    else:
      out.append(leaf + 0.05 * noise)
  return jax.tree_util.tree_unflatten(treedef, out)


def tiny_config(name, tmp_path):
  config = tiny.config(name, tmp_path)
  if name == 'qaconv':
    config.input.height, config.input.width = 64, 32  # 4 x 2 matching locations.
  elif name == 'pplr':
    config.input.height = 48  # Three stripes of the feature map.
  return config


def write_run(config, workdir, num_classes=6, steps=(3,), seed=0):
  """A workdir as training leaves it (config.json, checkpoints/<step> with the run's fingerprint)
  with perturbed initial weights; returns the saved {'params', 'batch_stats'} and the method's
  inference parts. (The optimiser state is left empty: the extractor never reads it; the CLI
  tests use a trained run.)"""
  inf = method_lib.inference(config, num_classes)
  # The 'rbg' generator compiles initialisers several times faster than threefry on CPU.
  variables = jax.jit(inf.init)(jax.random.key(seed, impl='rbg'))
  saved = {'params': _perturbed(variables['params'], seed),
           'batch_stats': _perturbed(variables.get('batch_stats', {}), seed + 1)}
  state = method_lib.TrainState(step=jnp.zeros([], jnp.int32), opt_state={}, **saved)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', parts.fingerprint(config, num_classes))
  for step in steps:
    ckpt.save(step, state.replace(step=jnp.asarray(step, jnp.int32)))
  ckpt.close()
  return saved, inf


def reference(inf, saved, images, normalize=True, **per_image):
  """The method's embed on the saved variables, L2-normalised with numpy."""
  out = np.asarray(jax.jit(inf.embed)(inf.variables(saved['params'], saved['batch_stats']),
                                      jnp.asarray(images), **per_image), np.float64)
  if normalize and out.ndim == 2:
    out = out / np.linalg.norm(out, axis=1, keepdims=True)
  return out


def _images(n, size, seed=0):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (n, 1, 1, 3))
  noise = rng.integers(-40, 40, (n, *size, 3))
  return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def bot(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('bot')
  config = tiny_config('bagtricks', tmp)
  saved, inf = write_run(config, tmp / 'run', steps=(3, 5))
  return tmp / 'run', config, saved, inf


def test_from_workdir_equals_the_methods_embed_on_the_saved_weights(bot):
  workdir, config, saved, inf = bot
  fx = inference.FeatureExtractor.from_workdir(workdir)
  assert fx.step == 5 and fx.method == 'supervised' and not fx.is_matcher
  assert fx.batch_size % jax.device_count() == 0  # Batches split over the 8 test devices.
  images = _images(11, (32, 16))
  features = fx(images)
  assert features.dtype == np.float32 and features.shape == (11, 64)
  np.testing.assert_allclose(features, reference(inf, saved, images), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-6)
  raw = inference.FeatureExtractor.from_workdir(workdir, normalize=False)(images)
  np.testing.assert_allclose(raw, reference(inf, saved, images, normalize=False), rtol=1e-5,
                             atol=1e-5)
  # One image as [H, W, 3], and a list of them.
  np.testing.assert_allclose(fx(images[3])[0], features[3], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fx(list(images[:2])), features[:2], rtol=1e-5, atol=1e-6)
  # The flip test: the mean of the outputs of each image and its mirror image, then normalised.
  flipped = inference.FeatureExtractor.from_workdir(workdir, flip=True)(images)
  both = (reference(inf, saved, images, normalize=False) +
          reference(inf, saved, images[:, :, ::-1], normalize=False)) / 2
  np.testing.assert_allclose(flipped, both / np.linalg.norm(both, axis=1, keepdims=True),
                             rtol=1e-5, atol=1e-6)


def test_an_earlier_step_and_from_checkpoint(bot):
  workdir, config, saved, _ = bot
  images = _images(3, (32, 16), seed=1)
  latest = inference.FeatureExtractor.from_workdir(workdir)
  earlier = inference.FeatureExtractor.from_workdir(workdir, step=3)
  assert earlier.step == 3
  np.testing.assert_array_equal(earlier(images), latest(images))  # The same weights saved twice.
  for source in (workdir / 'config.json', config):
    fx = inference.FeatureExtractor.from_checkpoint(workdir / 'checkpoints' / '5', source)
    np.testing.assert_array_equal(fx(images), latest(images))
  with pytest.raises(inference.InputError, match=r'has no checkpoint of step 4; it holds '
                     r'step\(s\) 3, 5'):
    inference.FeatureExtractor.from_workdir(workdir, step=4)
  other = tiny_config('bagtricks', workdir.parent)
  other.model.backbone.width = 16
  with pytest.raises(CheckpointMismatchError, match=r"model: checkpoint has .*'width': 8"):
    inference.FeatureExtractor.from_checkpoint(workdir / 'checkpoints' / '5', other)
  assert latest.model_id == earlier.model_id
  assert latest.describe()['model_id'] == latest.model_id


def _encode(image, fmt):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format=fmt, quality=90)
  return buffer.getvalue()


def test_files_are_decoded_and_resized_as_the_evaluation_pipeline_does(bot, tmp_path):
  """Files of any size go through input_pipeline.eval_iterator; arrays of another size through
  the same resize op: the same features as TensorFlow-decoded arrays and as the run's own
  evaluation path (parts.embedder) on a split of the same files."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data_pipelines.types import ReIDSplit  # pylint: disable=g-import-not-at-top
  workdir, config, _, inf = bot
  fx = inference.FeatureExtractor.from_workdir(workdir)
  folder = tmp_path / 'photos'
  (folder / 'cam2').mkdir(parents=True)
  sizes = [(70, 33), (32, 16), (128, 64), (41, 90), (256, 128)]
  paths = []
  for i, size in enumerate(sizes):
    fmt = 'PNG' if i % 2 else 'JPEG'
    path = folder / ('cam2' if i == 1 else '') / f'p{i}.{fmt.lower().replace("jpeg", "jpg")}'
    path.write_bytes(_encode(_images(1, size, seed=i)[0], fmt))
    paths.append(path)
  (folder / 'notes.txt').write_text('not an image')
  listed = inference.list_images(folder)
  assert [p.relative_to(folder).as_posix() for p in listed] == [
      'cam2/p1.png', 'p0.jpg', 'p2.jpg', 'p3.png', 'p4.jpg']
  from_files = fx(folder)
  decoded = [tf.io.decode_image(p.read_bytes(), channels=3).numpy() for p in listed]
  np.testing.assert_allclose(fx(decoded), from_files, rtol=1e-5, atol=1e-6)
  # The training run's evaluation path on the same bytes.
  n = len(listed)
  split = ReIDSplit('query', np.array([p.read_bytes() for p in listed], object),
                    np.zeros(n, np.int32), np.zeros(n, np.int32), np.ones(n, np.int32),
                    np.zeros(n, np.int64), [str(p) for p in listed], np.zeros(n, np.int32))
  mesh = parallel.create_mesh()
  run_path = parts.embedder(inf, mesh)(fx._params, fx._batch_stats, split, config.input,  # pylint: disable=protected-access
                                       config.eval.batch_size, progress=False)
  np.testing.assert_allclose(from_files, run_path / np.linalg.norm(run_path, axis=1,
                                                                   keepdims=True),
                             rtol=1e-5, atol=1e-6)
  # Arrays already at the input size skip the resize: exact, since resizing to the same size is
  # the identity.
  from data_pipelines import transforms  # pylint: disable=g-import-not-at-top
  same = _images(4, (32, 16), seed=7)
  for image in same:
    np.testing.assert_array_equal(
        transforms.resize(32, 16)(tf.constant(image), tf.zeros([2], tf.int32)).numpy(), image)
  assert set(inference.IMAGE_SUFFIXES) == set(
      __import__('data_pipelines.reader_utils', fromlist=['x']).IMAGE_SUFFIXES)


def test_bad_inputs_name_the_fix(bot, tmp_path):
  workdir, _, _, _ = bot
  fx = inference.FeatureExtractor.from_workdir(workdir)
  with pytest.raises(inference.InputError, match=r'float32 \[2, 32, 16, 3\]: expected uint8 RGB'):
    fx(np.zeros((2, 32, 16, 3), np.float32))
  with pytest.raises(inference.InputError, match=r'expected uint8 RGB'):
    fx(np.zeros((2, 32, 16), np.uint8))
  (tmp_path / 'empty' / 'sub').mkdir(parents=True)
  (tmp_path / 'empty' / 'sub' / 'readme.txt').write_text('x')
  with pytest.raises(inference.InputError, match=r'no images in .*empty \(looked for \.jpg'):
    fx(tmp_path / 'empty')
  with pytest.raises(inference.InputError, match=r'image .*missing.jpg does not exist'):
    fx([tmp_path / 'missing.jpg'])
  (tmp_path / 'cut.jpg').write_bytes(_encode(_images(1, (32, 16))[0], 'JPEG')[:200])
  with pytest.raises(inference.InputError, match=r'1 of the 1 images are not complete.*cut.jpg'):
    fx([tmp_path / 'cut.jpg'])
  with pytest.raises(inference.InputError, match=r'modality= is for cross-modality models'):
    fx(_images(1, (32, 16)), modality=1)
  with pytest.raises(inference.InputError, match=r'batch_size must be at least 1, got 0'):
    inference.FeatureExtractor.from_workdir(workdir, batch_size=0)
  with pytest.raises(inference.InputError, match=r'workdir .*nowhere does not exist'):
    inference.FeatureExtractor.from_workdir(tmp_path / 'nowhere')
  (tmp_path / 'fresh').mkdir()
  (tmp_path / 'fresh' / 'config.json').write_text((workdir / 'config.json').read_text())
  with pytest.raises(inference.InputError, match=r'no checkpoint in .*fresh/checkpoints: train '
                     'first'):
    inference.FeatureExtractor.from_workdir(tmp_path / 'fresh')


def test_qaconv_gives_feature_maps_and_the_matchers_scores(tmp_path):
  from jreid.models import qaconv as qaconv_lib  # pylint: disable=g-import-not-at-top
  config = tiny_config('qaconv', tmp_path)
  saved, inf = write_run(config, tmp_path / 'run')
  fx = inference.FeatureExtractor.from_workdir(tmp_path / 'run')
  assert fx.is_matcher
  query, gallery = _images(3, (64, 32), seed=1), _images(5, (64, 32), seed=2)
  qmaps, gmaps = fx(query), fx(gallery)
  assert qmaps.shape[:3] == (3, 4, 2)
  np.testing.assert_allclose(qmaps, reference(inf, saved, query), rtol=1e-5, atol=1e-6)
  matcher = {'params': saved['params']['matcher'], 'batch_stats': saved['batch_stats']['matcher']}
  expected = qaconv_lib.pairwise_scores(matcher, qmaps, gmaps, method='direct')
  np.testing.assert_allclose(fx.scores(query, gallery), expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(fx.scores(qmaps, gmaps), expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(fx.distances(qmaps, gmaps), -expected, rtol=1e-4, atol=1e-4)

  # Exported: the network's maps and, beside it, the matcher's scores.
  from jreid import export  # pylint: disable=g-import-not-at-top
  paths = fx.export(tmp_path / 'qaconv.stablehlo', platforms=('cpu',))
  assert [p.name for p in paths] == ['qaconv.stablehlo', 'qaconv.matcher.stablehlo']
  np.testing.assert_allclose(export.load(paths[0])(query), qmaps, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(export.load(paths[1])(qmaps, gmaps), expected, rtol=1e-4, atol=1e-4)
  with pytest.raises(inference.InputError, match='TFLite cannot take'):
    fx.export(tmp_path / 'qaconv.tflite')
  with pytest.raises(FileExistsError, match='qaconv.matcher.stablehlo exists'):
    paths[0].unlink()
    fx.export(tmp_path / 'qaconv.stablehlo')


def test_cross_modality_needs_the_modality_of_each_image(tmp_path):
  config = tiny_config('agw_sysu', tmp_path)
  saved, inf = write_run(config, tmp_path / 'run')
  fx = inference.FeatureExtractor.from_workdir(tmp_path / 'run')
  images = _images(4, (32, 16))
  with pytest.raises(inference.InputError, match=r'pass modality=0 \(visible\) or modality=1 '
                     r'\(infrared\)'):
    fx(images)
  modality = np.array([0, 1, 1, 0], np.int32)
  expected = reference(inf, saved, images, modality=jnp.asarray(modality))
  np.testing.assert_allclose(fx(images, modality=modality), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fx(images, modality=['visible', 'infrared', 'infrared', 'visible']),
                             expected, rtol=1e-5, atol=1e-6)
  infrared = reference(inf, saved, images, modality=jnp.ones(4, jnp.int32))
  np.testing.assert_allclose(fx(images, modality='infrared'), infrared, rtol=1e-5, atol=1e-6)
  assert not np.allclose(infrared, expected)
  with pytest.raises(inference.InputError, match=r'modality has 3 values for 4 images'):
    fx(images, modality=[0, 1, 0])
  with pytest.raises(inference.InputError, match=r'modality must be 0 / "visible"'):
    fx(images, modality=2)

  # Exported for one modality, baked in; without one, the same error as fx(images).
  from jreid import export  # pylint: disable=g-import-not-at-top
  with pytest.raises(inference.InputError, match=r'pass modality=0 \(visible\)'):
    fx.export(tmp_path / 'agw.stablehlo')
  path, = fx.export(tmp_path / 'agw.stablehlo', modality='infrared', platforms=('cpu',))
  np.testing.assert_allclose(export.load(path)(images), fx(images, modality='infrared'),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', ['pplr', 'cluster_contrast'])
def test_other_methods_embed_from_their_checkpoint(name, tmp_path):
  config = tiny_config(name, tmp_path)
  saved, inf = write_run(config, tmp_path / 'run', num_classes=0 if name == 'cluster_contrast'
                         else 6)
  fx = inference.FeatureExtractor.from_workdir(tmp_path / 'run')
  images = _images(5, fx.input_size)
  np.testing.assert_allclose(fx(images), reference(inf, saved, images), rtol=1e-5, atol=1e-6)


def test_ids_are_parsed_from_known_file_name_layouts():
  names = ['bounding_box_test/0002_c1s1_000451_03.jpg', '-1_c3s2_000101_01.jpg',
           '0000_c6s1_000001_00.jpg', '0005_c2_f0046182.jpg', '0012_000_07_0303morning_0015_0.jpg',
           '0031_c014_00016450_0.jpg', '0001_c2_3.png', 'holiday/IMG_2041.jpg']
  pids, camids, layouts = inference.ids_from_names(names)
  assert pids.tolist() == [2, -1, 0, 5, 12, 31, 1, -1]
  assert camids.tolist() == [0, 2, 5, 1, 6, 13, 1, -1]
  assert layouts == ['market1501', 'market1501', 'market1501', 'dukemtmc', 'msmt17', 'veri',
                     'cuhk03_np', '']


def test_import_jreid_stays_light():
  out = subprocess.run(
      [sys.executable, '-c', 'import sys, jreid; assert "jax" not in sys.modules; '
       'assert "tensorflow" not in sys.modules; print(jreid.FeatureExtractor.__name__)'],
      cwd=tiny.REPO, capture_output=True, text=True, timeout=120,
      env={'PYTHONPATH': str(tiny.REPO), 'PATH': '/usr/bin:/bin'})
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == 'FeatureExtractor'
