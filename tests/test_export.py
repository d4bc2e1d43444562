"""jreid.export: every format gives jreid's outputs (1e-4) at two batch sizes, for every model.

The artifacts are run the way a user runs them, without jreid: StableHLO through
`jax.export.deserialize`, the SavedModel through `tf.saved_model.load`, TFLite in
`tf.lite.Interpreter` (input resized to the batch) and ONNX in onnxruntime. Models are the
`model` sections of configs/bagtricks.py, mgn.py and qaconv.py at tiny widths on 64x32 images
(96x32 for MGN, whose three stripes need 6 feature-map rows). Their variables are random, drawn
in numpy from the shapes `jax.eval_shape` gives (compiling `model.init` would take longer than
all the exports), and the BatchNorm running statistics are then set to the batch statistics of
other random images, as training leaves them: the outputs keep a trained network's scale (units
to tens) and inference-mode BatchNorm matters.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from configs import bagtricks, mgn, qaconv as qaconv_config
from jreid import export
from jreid.models import build_model, qaconv

H, W = 64, 32  # the input of the models but MGN, and of the file-handling tests
# Outputs agree within 1e-4 of their largest magnitude (absolute 1e-4 for outputs within +-1, as
# QAConv's maps and L2-normalised embeddings). The raw embeddings here reach about 10, where
# jreid's own function already differs at the 1e-4 level between two valid XLA compilations (the
# variables passed as arguments or baked in as constants, as an export does).
ATOL = 1e-4
REPO = pathlib.Path(__file__).resolve().parents[1]

# name -> (config module, backbone, width, input height, output key)
MODELS = {
    'resnet': (bagtricks, 'resnet18', 8, H, 'embedding'),
    'resnet_ibn': (bagtricks, 'resnet18_ibn_a', 8, H, 'embedding'),
    'osnet': (bagtricks, 'osnet_x1_0', 16, H, 'embedding'),
    'mgn': (mgn, 'resnet50', 8, 96, 'embedding'),
    'qaconv': (qaconv_config, 'resnet18', 8, H, 'feature_map'),
}


def _random_variables(shapes, rng):
  """Variables of the given shapes: He-normal kernels, BatchNorm scales and variances in
  [0.5, 1.5], biases and means ~N(0, 0.1), GeM exponents in [2.5, 3.5]."""

  def one(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == 'kernel':
      x = rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape)
    elif name in ('scale', 'var'):
      x = rng.uniform(0.5, 1.5, shape)
    elif name in ('bias', 'mean'):
      x = rng.normal(0, 0.1, shape)
    elif name == 'p':
      x = rng.uniform(2.5, 3.5, shape)
    else:
      raise AssertionError(f'no random values for variable {name!r}')
    return jnp.asarray(x, leaf.dtype)

  return jax.tree_util.tree_map_with_path(one, shapes)


def _calibrated(model, variables, images, **kwargs):
  """`variables` with every BatchNorm running statistic set to its batch statistic on `images`.

  One train-mode pass from statistics 0 and one from 1 give, per statistic, r0 = (1 - m) b and
  r1 = m + (1 - m) b for a layer of momentum m and batch statistic b: m = r1 - r0, b = r0 / (1 - m).
  """

  @jax.jit
  def update(v, fill):
    v = {**v, 'batch_stats': jax.tree.map(lambda x: jnp.full_like(x, fill), v['batch_stats'])}
    _, new = model.apply(v, images, train=True, mutable=['batch_stats'], **kwargs)
    return new['batch_stats']

  r0, r1 = update(variables, 0.0), update(variables, 1.0)

  def solve(old, a, b):
    momentum = b - a
    return jnp.where(momentum < 0.999, a / (1 - momentum), old)  # 1: a layer the pass skips

  return {**variables, 'batch_stats': jax.tree.map(solve, variables['batch_stats'], r0, r1)}


@functools.cache
def _images(height=H):
  return np.random.default_rng(0).integers(0, 256, (8, height, W, 3), dtype=np.uint8)


@functools.cache
def _model(name):
  """(fn, variables, jreid's outputs on the 8 images) of a tiny model."""
  config_module, backbone, width, height, key = MODELS[name]
  cfg = config_module.get_config().model
  cfg.backbone.name = backbone
  cfg.backbone.width = width
  if name == 'qaconv':
    cfg.qaconv.neck = 32
  if name == 'mgn':
    cfg.head.embedding_dim = 16
  model = build_model(cfg, 10)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((2, height, W, 3), jnp.uint8))
  variables = _random_variables(shapes, np.random.default_rng(1))
  calibration = np.random.default_rng(2).integers(0, 256, (16, height, W, 3), dtype=np.uint8)
  labels = {} if name == 'qaconv' else {'labels': jnp.zeros(16, jnp.int32)}  # margin classifiers
  variables = _calibrated(model, variables, calibration, **labels)

  def fn(v, images):
    return model.apply(v, images, train=False)[key]

  expected = np.asarray(jax.jit(fn)(variables, _images(height)))
  return fn, variables, expected


def _path(tmp_path, fmt):
  return tmp_path / {'stablehlo': 'model.stablehlo', 'savedmodel': 'model_savedmodel',
                     'tflite': 'model.tflite', 'onnx': 'model.onnx'}[fmt]


# Each runner takes the artifact path and the named inputs (in argument order) and returns the
# first output, using only the format's own runtime.


def _run_stablehlo(path, inputs):
  exported = jax.export.deserialize(bytearray(pathlib.Path(path).read_bytes()))
  return np.asarray(exported.call(*inputs.values()))


@functools.cache
def _tf():
  tf = pytest.importorskip('tensorflow')
  tf.config.set_visible_devices([], 'GPU')
  return tf


def _run_savedmodel(path, inputs):
  tf = _tf()
  loaded = tf.saved_model.load(str(path))  # kept while the signature runs: it owns the weights
  signature = loaded.signatures['serving_default']
  assert set(signature.structured_input_signature[1]) == set(inputs)
  (value,) = signature(**{k: tf.constant(v) for k, v in inputs.items()}).values()
  return value.numpy()


def _run_tflite(path, inputs):
  tf = _tf()
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # tf.lite.Interpreter's deprecation notice (LiteRT).
    interpreter = tf.lite.Interpreter(model_path=str(path))
  details = {d['name']: d for d in interpreter.get_input_details()}
  for name, array in inputs.items():
    d = details[f'serving_default_{name}:0']
    assert d['shape_signature'][0] == -1  # dynamic batch
    interpreter.resize_tensor_input(d['index'], array.shape)
  interpreter.allocate_tensors()
  for name, array in inputs.items():
    interpreter.set_tensor(details[f'serving_default_{name}:0']['index'], array)
  interpreter.invoke()
  return interpreter.get_tensor(interpreter.get_output_details()[0]['index'])


def _run_onnx(path, inputs):
  ort = pytest.importorskip('onnxruntime')
  session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
  assert [i.name for i in session.get_inputs()] == list(inputs)
  assert all(isinstance(i.shape[0], str) for i in session.get_inputs())  # dynamic batch
  return session.run(None, inputs)[0]


RUNNERS = {'stablehlo': _run_stablehlo, 'savedmodel': _run_savedmodel, 'tflite': _run_tflite,
           'onnx': _run_onnx}


def _needs(fmt):
  if fmt in ('savedmodel', 'tflite'):
    _tf()
  if fmt == 'onnx':
    pytest.importorskip('jax2onnx')
    pytest.importorskip('onnxruntime')


# The suite checks ONNX for every model, TFLite for ResNet, IBN and QAConv, and StableHLO and
# SavedModel for ResNet and QAConv; the deep graphs' (OSNet, MGN) other formats and IBN's
# StableHLO and SavedModel are in `pytest -m slow` (the budget of the suite, not their behaviour).
_IN_SUITE = {('resnet', 'stablehlo'), ('resnet', 'savedmodel'), ('resnet', 'tflite'),
             ('resnet_ibn', 'tflite'), ('qaconv', 'stablehlo'), ('qaconv', 'savedmodel'),
             ('qaconv', 'tflite')} | {(name, 'onnx') for name in MODELS}


@pytest.mark.parametrize('name,fmt', [
    pytest.param(name, fmt, marks=() if (name, fmt) in _IN_SUITE else pytest.mark.slow)
    for name in MODELS for fmt in export.FORMATS])
def test_export_matches_jreid(name, fmt, tmp_path):
  _needs(fmt)
  fn, variables, expected = _model(name)
  height = MODELS[name][3]
  # jax2onnx's transpose-pair removal dominates the export of OSNet and MGN (see
  # export.export's onnx_optimize); the other models run it.
  path = export.export(fn, variables, input_shape=(height, W), format=fmt,
                       path=_path(tmp_path, fmt), output_name=MODELS[name][4],
                       onnx_optimize=name not in ('osnet', 'mgn'))
  images = _images(height)
  tolerance = ATOL * max(1.0, float(np.abs(expected).max()))
  for n in (8, 3):  # two batch sizes from the one artifact
    out = RUNNERS[fmt](path, {'images': images[:n]})
    assert out.dtype == np.float32 and out.shape == expected[:n].shape
    np.testing.assert_allclose(out, expected[:n], rtol=0, atol=tolerance)
    if MODELS[name][4] == 'embedding':  # as retrieval uses them: L2-normalised, within 1e-4
      unit = lambda e: e / np.linalg.norm(e, axis=-1, keepdims=True)
      np.testing.assert_allclose(unit(out), unit(expected[:n]), rtol=0, atol=ATOL)


@functools.cache
def _matcher():
  """(variables, query maps, gallery maps, jreid's scores) with trained-looking variables."""
  rng = np.random.default_rng(2)
  h, w, c = 4, 2, 32

  def maps(n):
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)

  query, gallery = maps(8), maps(11)
  variables = qaconv.QAConvMatcher(h * w).init(jax.random.PRNGKey(0), query, gallery, train=False)
  variables = jax.tree.map(lambda a: a + jnp.asarray(rng.normal(0, 0.3, a.shape), a.dtype),
                           variables)
  variables['batch_stats'] = jax.tree.map(jnp.abs, variables['batch_stats'])
  return variables, query, gallery, qaconv.pairwise_scores(variables, query, gallery)


@pytest.mark.parametrize('fmt', ['stablehlo', 'savedmodel', 'onnx'])
def test_qaconv_matcher_export_matches_pairwise_scores(fmt, tmp_path):
  _needs(fmt)
  variables, query, gallery, expected = _matcher()
  path = export.export_qaconv_matcher(variables, map_shape=query.shape[1:], format=fmt,
                                      path=_path(tmp_path, fmt))
  for nq, ng in ((8, 11), (3, 5)):  # both dimensions dynamic
    out = RUNNERS[fmt](path, {'query_maps': query[:nq], 'gallery_maps': gallery[:ng]})
    assert out.shape == (nq, ng)
    np.testing.assert_allclose(out, expected[:nq, :ng], rtol=0, atol=ATOL)
  np.testing.assert_allclose(export.load(path)(query[:3], gallery[:5]), expected[:3, :5], rtol=0,
                             atol=ATOL)


def test_qaconv_matcher_refuses_tflite_and_wrong_shapes(tmp_path):
  variables = _matcher()[0]
  with pytest.raises(ValueError, match="'tflite' is not supported"):
    export.export_qaconv_matcher(variables, map_shape=(4, 2, 32), format='tflite',
                                 path=tmp_path / 'm.tflite')
  with pytest.raises(ValueError, match='built for 8 locations'):
    export.export_qaconv_matcher(variables, map_shape=(4, 4, 32), format='stablehlo',
                                 path=tmp_path / 'm.stablehlo')
  assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('window,strides,padding', [
    ((1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))),  # torchvision's stem pool
    ((1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (0, 1), (0, 1), (0, 0))),  # ceil mode (FastReID's)
    ((1, 2, 2, 1), (1, 2, 2, 1), ((0, 0),) * 4),
    ((1, 3, 2, 1), (1, 1, 2, 1), ((0, 0), (2, 0), (0, 1), (0, 0))),
])
def test_rewrites_equal_the_primitives(window, strides, padding):
  """The TFLite/ONNX rewrites: max pooling as slices, constant-index gathers as slices, exact
  (the input holds negative values, so the padding must act as -inf)."""

  def f(x):
    pooled = lax.reduce_window(x, -jnp.inf, lax.max, window, strides, padding)
    return pooled[..., 1:3] * 2 + pooled[:, :, :, 0:1] - x[:, :1, :1, 2:3]

  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 7, 6, 4)), jnp.float32)
  # A symbolic batch, as in an export: the slicing is then traced as gathers.
  spec = jax.ShapeDtypeStruct((*jax.export.symbolic_shape('b'), 7, 6, 4), jnp.float32)
  closed = jax.make_jaxpr(f)(spec)
  assert {'reduce_window_max', 'gather'} <= {e.primitive.name for e in closed.jaxpr.eqns}
  rewritten = lambda x: export._eval_rewritten(closed.jaxpr, closed.consts, x, max_pool=True)[0]
  primitives = {e.primitive.name for e in jax.make_jaxpr(rewritten)(spec).jaxpr.eqns}
  assert not primitives & {'reduce_window_max', 'gather', 'pad'}
  out = jax.export.export(jax.jit(rewritten))(spec).call(x)
  np.testing.assert_array_equal(out, jax.jit(f)(x))


def _tiny_fn():
  """A one-layer 'model' for the file-handling tests (fast to export)."""
  variables = {'w': jnp.arange(3, dtype=jnp.float32) / 255.0}
  return (lambda v, x: x.astype(jnp.float32).mean(axis=(1, 2)) * v['w']), variables


def test_unknown_format_is_one_line_and_writes_nothing(tmp_path):
  fn, variables = _tiny_fn()
  with pytest.raises(ValueError) as e:
    export.export(fn, variables, input_shape=(8, 4), format='torchscript', path=tmp_path / 'x')
  assert str(e.value) == ("export: unknown format 'torchscript'; use one of stablehlo, "
                          'savedmodel, tflite, onnx.')
  with pytest.raises(ValueError, match=r'input_shape must be \(height, width\)'):
    export.export(fn, variables, input_shape=(8, 4, 3), format='onnx', path=tmp_path / 'x')
  assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('fmt', export.FORMATS)
def test_load_existing_path_and_overwrite(fmt, tmp_path):
  """jreid's loader runs each format; an existing path needs overwrite=True and is replaced
  whole."""
  _needs(fmt)
  fn, variables = _tiny_fn()
  path = _path(tmp_path, fmt)
  export.export(fn, variables, input_shape=(8, 4), format=fmt, path=path)
  images = np.full((2, 8, 4, 3), 255, np.uint8)
  np.testing.assert_allclose(export.load(path)(images), np.tile([0, 1, 2], (2, 1)), atol=1e-6)
  with pytest.raises(FileExistsError) as e:
    export.export(fn, variables, input_shape=(8, 4), format=fmt, path=path)
  assert str(e.value) == (f'export: {path} already exists; pass overwrite=True to replace it, '
                          'or choose another path.')
  doubled = {'w': variables['w'] * 2}
  export.export(fn, doubled, input_shape=(8, 4), format=fmt, path=path, overwrite=True)
  np.testing.assert_allclose(export.load(path)(images), np.tile([0, 2, 4], (2, 1)), atol=1e-6)
  assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left behind


def test_failed_export_leaves_the_old_artifact(tmp_path):
  fn, variables = _tiny_fn()
  path = tmp_path / 'model.stablehlo'
  export.export(fn, variables, input_shape=(8, 4), format='stablehlo', path=path)
  before = path.read_bytes()

  def broken(v, x):
    raise RuntimeError('trace failed')

  with pytest.raises(RuntimeError, match='trace failed'):
    export.export(broken, variables, input_shape=(8, 4), format='stablehlo', path=path,
                  overwrite=True)
  assert path.read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    export.load(tmp_path / 'missing.onnx')
  (tmp_path / 'model.bin').write_bytes(b'')
  with pytest.raises(ValueError, match='cannot tell the format'):
    export.load(tmp_path / 'model.bin')


def test_stablehlo_is_lowered_for_cpu_cuda_and_tpu(tmp_path):
  fn, variables = _tiny_fn()
  path = export.export(fn, variables, input_shape=(8, 4), format='stablehlo',
                       path=tmp_path / 'm.stablehlo')
  exported = jax.export.deserialize(bytearray(path.read_bytes()))
  assert exported.platforms == ('cpu', 'cuda', 'tpu')
  assert str(exported.in_avals[0].shape[0]) == 'batch'


def test_import_loads_no_converter():
  """Layering: importing jreid.export imports neither TensorFlow nor the ONNX packages."""
  script = ('import sys, jreid.export\n'
            'print(sorted(m for m in ("tensorflow", "jax2onnx", "onnxruntime", "onnx") '
            'if m in sys.modules))\n')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          check=True, cwd=REPO)
  assert result.stdout.strip() == '[]'


def test_onnx_artifact_runs_in_a_process_without_jax(tmp_path):
  """The ONNX file is all a user needs: onnxruntime and numpy, no jreid, no JAX."""
  _needs('onnx')
  fn, variables, expected = _model('resnet')
  path = export.export(fn, variables, input_shape=(H, W), format='onnx',
                       path=tmp_path / 'model.onnx', output_name='embedding')
  np.save(tmp_path / 'images.npy', _images()[:5])
  script = (
      'import sys, json, numpy as np, onnxruntime as ort\n'
      'sys.modules["jax"] = None; sys.modules["jreid"] = None\n'
      's = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])\n'
      'out = s.run(["embedding"], {"images": np.load(sys.argv[2])})[0]\n'
      'print(json.dumps(out.tolist()))\n')
  result = subprocess.run([sys.executable, '-c', script, str(path), str(tmp_path / 'images.npy')],
                          capture_output=True, text=True, check=True, cwd=tmp_path,
                          env={**os.environ, 'PYTHONPATH': ''})
  np.testing.assert_allclose(np.array(json.loads(result.stdout), np.float32), expected[:5],
                             rtol=0, atol=ATOL * max(1.0, float(np.abs(expected).max())))


def test_benchmark_quick_runs(tmp_path):
  _needs('onnx')
  _needs('tflite')
  out = tmp_path / 'export_formats.json'
  subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'export_formats.py'), '--quick',
                  '--out', str(out)], check=True, capture_output=True, text=True, cwd=REPO,
                 timeout=300)
  result = json.loads(out.read_text())
  assert set(result['formats']) == set(export.FORMATS)
  scale = max(1.0, result['embedding_max_abs'])
  for fmt, row in result['formats'].items():
    assert row['size_bytes'] > 0, fmt
    assert row['max_abs_diff'] <= ATOL * scale, fmt
    assert row['max_abs_diff_l2_normalised'] <= ATOL, fmt
    assert set(row['latency_ms']) == {'batch_1', 'batch_32'}, fmt
