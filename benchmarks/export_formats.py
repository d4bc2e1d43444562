"""Export formats side by side: artifact size, output difference from jreid, CPU latency.

For one model, `jreid.export` writes each format (StableHLO, TensorFlow SavedModel, TFLite,
ONNX); each artifact is loaded in its own runtime (JAX, TensorFlow, the TFLite interpreter,
onnxruntime) and run on the same 8 images as jreid's jitted `model.apply`; the largest absolute
difference of the embeddings is recorded with the largest absolute embedding value beside it,
and that of the L2-normalised embeddings.
Latency is the median wall time of one call at batch 1 and at batch 32, after a warm-up call, with
jreid itself (the jitted function) as the first row. Each format is exported, loaded and timed in
a process of its own (the TensorFlow runtimes keep what they loaded until the process ends);
--quick runs them all in one.

The model is the BoT Baseline of configs/bagtricks.py (ResNet-50, 256x128), randomly initialised
(no download here), its BatchNorm running statistics set to the batch statistics of random images
so that activations keep a trained network's scale (--quick: a ResNet-18 at width 8 on 64x32).

  python benchmarks/export_formats.py            # ResNet-50 at 256x128: ~10 minutes on 2 cores
  python benchmarks/export_formats.py --quick    # ResNet-18 at width 8, 64x32 (the test suite)

Writes benchmarks/results/export_formats_cpu.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=wrong-import-position
from configs import bagtricks  # noqa: E402
from jreid import export  # noqa: E402
from jreid.models import build_model  # noqa: E402

VERSIONS = ('jax', 'jaxlib', 'flax', 'numpy', 'tensorflow-cpu', 'tensorflow', 'jax2onnx', 'onnx',
            'onnxruntime')


def _random_variables(shapes, rng):
  """He-normal kernels, unit BatchNorm scales, zero biases, GeM exponent 3."""

  def one(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == 'kernel':
      x = rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape)
    elif name in ('scale', 'var'):
      x = np.ones(shape)
    elif name == 'p':
      x = np.full(shape, 3.0)
    else:
      x = np.zeros(shape)
    return jnp.asarray(x, leaf.dtype)

  return jax.tree_util.tree_map_with_path(one, shapes)


def _calibrated(model, variables, images):
  """`variables` with every BatchNorm running statistic set to its batch statistic on `images`,
  as training leaves them (activations then keep a trained network's scale).

  One train-mode pass from statistics 0 and one from 1 give, per statistic, r0 = (1 - m) b and
  r1 = m + (1 - m) b for a layer of momentum m and batch statistic b: m = r1 - r0, b = r0 / (1 - m).
  """

  @jax.jit
  def update(v, fill):
    v = {**v, 'batch_stats': jax.tree.map(lambda x: jnp.full_like(x, fill), v['batch_stats'])}
    labels = jnp.zeros(images.shape[0], jnp.int32)
    _, new = model.apply(v, images, train=True, labels=labels, mutable=['batch_stats'])
    return new['batch_stats']

  r0, r1 = update(variables, 0.0), update(variables, 1.0)

  def solve(old, a, b):
    momentum = b - a
    return jnp.where(momentum < 0.999, a / (1 - momentum), old)

  return {**variables, 'batch_stats': jax.tree.map(solve, variables['batch_stats'], r0, r1)}


def _build(quick: bool):
  """(model, fn, variable shapes, input size, description)."""
  if quick:  # the embedded-data default, narrower
    cfg = bagtricks.get_config().model
    cfg.backbone.name, cfg.backbone.width = 'resnet18', 8
    size = (64, 32)
  else:  # the paper recipe's model (ResNet-50, last stride 1, BNNeck)
    config = bagtricks.get_config('market1501')
    cfg, size = config.model, (config.input.height, config.input.width)
  model = build_model(cfg, 751)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                          jax.ShapeDtypeStruct((1, *size, 3), jnp.uint8))

  def fn(v, images):
    return model.apply(v, images, train=False)['embedding']

  name = (f'configs/bagtricks.py{"" if quick else ":market1501"} model: Baseline, '
          f'{cfg.backbone.name} width {cfg.backbone.width}, {cfg.pooling.name} pooling, '
          f'{cfg.head.name} head')
  return model, fn, shapes, size, name


def _model(quick: bool):
  """(fn, variables, input size, description); variables drawn in numpy from the shapes
  (compiling model.init takes longer than a forward pass), then calibrated."""
  model, fn, shapes, size, name = _build(quick)
  rng = np.random.default_rng(0)
  calib = rng.integers(0, 256, (16, *size, 3), dtype=np.uint8)
  variables = _calibrated(model, _random_variables(shapes, rng), calib)
  return fn, variables, size, name


def _key(path) -> str:
  return '/'.join(str(p.key) for p in path)


def _save_variables(variables, path: str) -> None:
  leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
  np.savez(path, **{_key(p): np.asarray(x) for p, x in leaves})


def _load_variables(shapes, path: str):
  with np.load(path) as data:
    return jax.tree_util.tree_map_with_path(lambda p, _: jnp.asarray(data[_key(p)]), shapes)


def _child(fmt: str, workdir: str, quick: bool, repeats: dict) -> dict:
  """Exports, loads and times one format in this (fresh) process."""
  _, fn, shapes, size, _ = _build(quick)
  variables = _load_variables(shapes, os.path.join(workdir, 'variables.npz'))
  with np.load(os.path.join(workdir, 'data.npz')) as data:
    images, expected = data['images'], data['expected']
    batches = {n: data[f'batch_{n}'] for n in repeats}
  suffix = {'stablehlo': '.stablehlo', 'savedmodel': '', 'tflite': '.tflite', 'onnx': '.onnx'}
  path = os.path.join(workdir, 'model' + suffix[fmt])
  # The converters' own import (TensorFlow, jax2onnx's plugins) is not export time.
  if fmt == 'onnx':
    export._import_jax2onnx()  # pylint: disable=protected-access
  elif fmt != 'stablehlo':
    export._import_tf()  # pylint: disable=protected-access
  start = time.perf_counter()
  export.export(fn, variables, input_shape=size, format=fmt, path=path, output_name='embedding')
  seconds = time.perf_counter() - start
  kwargs = {'num_threads': os.cpu_count()} if fmt == 'tflite' else {}
  run = export.load(path, format=fmt, **kwargs)
  out = run(images)
  diff = float(np.abs(out - expected).max())
  unit = lambda e: e / np.linalg.norm(e, axis=-1, keepdims=True)
  return {
      'size_bytes': _size_bytes(path),
      'export_seconds': round(seconds, 1),
      'max_abs_diff': diff,
      'max_diff_over_max_abs': diff / float(np.abs(expected).max()),
      # As retrieval compares them (FeatureExtractor's default): L2-normalised.
      'max_abs_diff_l2_normalised': float(np.abs(unit(out) - unit(expected)).max()),
      'latency_ms': {f'batch_{n}': round(_latency_ms(run, b, repeats[n]), 2)
                     for n, b in batches.items()},
      'process_peak_rss_gb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
  }


def _size_bytes(path: str) -> int:
  if os.path.isdir(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
  return os.path.getsize(path)


def _latency_ms(run, images: np.ndarray, repeats: int) -> float:
  run(images)  # warm-up: compilation, allocation
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run(images)
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def _versions() -> dict:
  out = {'python': platform.python_version()}
  for name in VERSIONS:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='a tiny model (the test suite)')
  parser.add_argument('--formats', default=','.join(export.FORMATS),
                      help='comma-separated subset of ' + ', '.join(export.FORMATS))
  parser.add_argument('--repeats-1', type=int, default=0,
                      help='timed calls at batch 1 (default 20; 3 with --quick)')
  parser.add_argument('--repeats-32', type=int, default=0,
                      help='timed calls at batch 32 (default 5; 3 with --quick)')
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  parser.add_argument('--workdir', default='', help=argparse.SUPPRESS)
  parser.add_argument('--out', default=os.path.join(REPO, 'benchmarks', 'results',
                                                    'export_formats_cpu.json'))
  args = parser.parse_args(argv)
  formats = [f for f in args.formats.split(',') if f]
  unknown = sorted(set(formats) - set(export.FORMATS))
  if unknown:
    parser.error(f'--formats: unknown {", ".join(unknown)}; use {", ".join(export.FORMATS)}')
  repeats = {1: args.repeats_1 or (3 if args.quick else 20),
             32: args.repeats_32 or (3 if args.quick else 5)}

  if args.child:
    print(json.dumps(_child(args.child, args.workdir, args.quick, repeats)), flush=True)
    return {}

  load_at_start = os.getloadavg()
  fn, variables, size, name = _model(args.quick)
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (8, *size, 3), dtype=np.uint8)
  batches = {n: rng.integers(0, 256, (n, *size, 3), dtype=np.uint8) for n in repeats}
  jitted = jax.jit(fn)
  expected = np.asarray(jitted(variables, images))
  run_jreid = lambda x: np.asarray(jitted(variables, x))
  rows = {'jreid': {'latency_ms': {f'batch_{n}': round(_latency_ms(run_jreid, b, repeats[n]), 2)
                                   for n, b in batches.items()}}}
  print(f'{name} at {size[0]}x{size[1]}: |embedding| max {np.abs(expected).max():.3g}')
  print(f'{"format":<11} {"size MB":>8} {"export s":>9} {"max diff":>9} {"b1 ms":>8} '
        f'{"b32 ms":>8}')
  print(f'{"jreid":<11} {"":>8} {"":>9} {"":>9} {rows["jreid"]["latency_ms"]["batch_1"]:>8.1f} '
        f'{rows["jreid"]["latency_ms"]["batch_32"]:>8.1f}', flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    _save_variables(variables, os.path.join(tmp, 'variables.npz'))
    np.savez(os.path.join(tmp, 'data.npz'), images=images, expected=expected,
             **{f'batch_{n}': b for n, b in batches.items()})
    for fmt in formats:
      if args.quick:  # small enough to share this process (and its imports)
        row = rows[fmt] = _child(fmt, tmp, True, repeats)
      else:  # a fresh process each: TensorFlow keeps what it loaded, ResNet-50 weights included
        command = [sys.executable, os.path.abspath(__file__), '--child', fmt, '--workdir', tmp,
                   '--repeats-1', str(repeats[1]), '--repeats-32', str(repeats[32])]
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        row = rows[fmt] = json.loads(out.stdout.strip().splitlines()[-1])
      print(f'{fmt:<11} {row["size_bytes"] / 1e6:>8.1f} {row["export_seconds"]:>9.1f} '
            f'{row["max_abs_diff"]:>9.2e} {row["latency_ms"]["batch_1"]:>8.1f} '
            f'{row["latency_ms"]["batch_32"]:>8.1f}', flush=True)

  result = {
      'benchmark': 'export_formats',
      'command': 'python benchmarks/export_formats.py' + (' --quick' if args.quick else ''),
      'date': time.strftime('%Y-%m-%d'),
      'machine': {'cpu_cores': os.cpu_count(), 'platform': platform.platform(),
                  'processor': platform.processor(), 'jax_backend': jax.default_backend(),
                  'load_average_at_start': [round(x, 2) for x in load_at_start]},
      'versions': _versions(),
      'model': name,
      'input': {'height': size[0], 'width': size[1], 'dtype': 'uint8'},
      'embedding_max_abs': float(np.abs(expected).max()),
      'latency': 'median of ' + ', '.join(f'{r} calls at batch {n}' for n, r in repeats.items())
                 + ' after one warm-up call, each format in its own process; TFLite with '
                 'num_threads = cpu cores',
      'formats': {k: v for k, v in rows.items() if k != 'jreid'},
      'jreid': rows['jreid'],
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=2)
    f.write('\n')
  print('wrote', args.out)
  return result


if __name__ == '__main__':
  main()
