"""Feature extraction images/s: `jreid.FeatureExtractor` against the training-time evaluation
path (`jreid.parts.embedder`, as `Method.evaluate` embeds a split), on the same checkpoint.

A workdir with a checkpoint of the config's model (initial weights: speed does not depend on
them) is written to a temporary folder, with N JPEG images of Market-1501's size (128 x 64).
Measured, each after one untimed warm-up pass (compilation):

* `eval_path`: `parts.embedder` on a `ReIDSplit` of the encoded images (tf.data decode + resize,
  padded batches over every device), as the training run's evaluation;
* `extractor_files`: `FeatureExtractor.from_workdir(...)(folder)`: the files read from disk, then
  the same pipeline, plus L2 normalisation;
* `extractor_arrays`: `FeatureExtractor(...)(uint8 [N, H, W, 3])` already at the input size (no
  TensorFlow, no decoding).

Best of `--repeats` rounds in which the three take turns.

  python benchmarks/extract_speed.py        # BoT's Market-1501 model: ResNet-50, 256 x 128
  python benchmarks/extract_speed.py --quick            # a width-8 ResNet-18, 32 x 16
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _bench_util  # pylint: disable=g-import-not-at-top,wrong-import-position


def write_workdir(config, workdir: pathlib.Path) -> None:
  """config.json and checkpoints/0 of the config's model at its initial weights."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jreid import checkpoint, method, parts  # pylint: disable=g-import-not-at-top
  num_classes = 751
  inf = method.inference(config, num_classes)
  variables = jax.jit(inf.init)(parts.init_rng(config))
  state = method.TrainState(step=jnp.zeros([], jnp.int32), params=variables['params'],
                            batch_stats=variables.get('batch_stats', {}), opt_state={})
  workdir.mkdir(parents=True)
  (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', parts.fingerprint(config, num_classes))
  ckpt.save(0, state)
  ckpt.close()


def write_images(folder: pathlib.Path, n: int, size=(128, 64)) -> list[bytes]:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  folder.mkdir(parents=True)
  encoded = []
  for i in range(n):
    base = rng.integers(0, 256, (1, 1, 3))
    image = np.clip(base + rng.integers(-60, 60, (*size, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='JPEG', quality=90)
    encoded.append(buffer.getvalue())
    (folder / f'{i:05d}.jpg').write_bytes(encoded[-1])
  return encoded


def timed(fns: dict, repeats: int) -> dict[str, float]:
  """Best seconds of each function over `repeats` rounds, the functions taking turns within a
  round (so a change of the machine's load affects them alike), after one warm-up call each."""
  for fn in fns.values():
    fn()  # Warm-up: compilation and first allocations.
  best = {name: float('inf') for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      with _bench_util.Timer() as t:
        fn()
      best[name] = min(best[name], t.seconds)
  return best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--config', default='configs/bagtricks.py:market1501',
                      help='a config (its model and input size; no data is read)')
  parser.add_argument('--images', type=int, default=128)
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--out', default=None,
                      help='results JSON (default: results/extract_speed_cpu.json)')
  args = parser.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  from jreid import config_checks, inference, parallel, parts  # pylint: disable=g-import-not-at-top
  from data_pipelines.types import ReIDSplit  # pylint: disable=g-import-not-at-top
  repo = pathlib.Path(__file__).resolve().parent.parent
  config = config_checks.load_config_file(str(repo / args.config))
  n = 32 if args.quick else args.images
  if args.quick:
    config.model.backbone.name, config.model.backbone.width = 'resnet18', 8
    config.input.height, config.input.width = 32, 16
  config.eval.batch_size = args.batch_size
  payload = {
      'benchmark': 'extract_speed',
      'command': 'python benchmarks/extract_speed.py ' + ' '.join(sys.argv[1:]),
      **_bench_util.machine_info(),
      'note': ('The machine is shared with other developers (its load average is recorded at the '
               'start): rates vary by +-30% or more between runs; the three paths are measured '
               'back to back in one process.'),
      'jax_devices': [str(d) for d in jax.devices()],
      'model': {'config': args.config, 'backbone': config.model.backbone.name,
                'width': config.model.backbone.width,
                'input': [config.input.height, config.input.width]},
      'images': n, 'batch_size': args.batch_size, 'repeats': args.repeats,
  }
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    write_workdir(config, tmp / 'run')
    encoded = write_images(tmp / 'images', n)
    fx = inference.FeatureExtractor.from_workdir(tmp / 'run')
    split = ReIDSplit('query', np.array(encoded, object), np.zeros(n, np.int32),
                      np.zeros(n, np.int32), np.ones(n, np.int32), np.zeros(n, np.int64),
                      [f'{i:05d}.jpg' for i in range(n)], np.zeros(n, np.int32))
    mesh = parallel.create_mesh()
    inf = inference._inference(config, 751)  # pylint: disable=protected-access
    run = parts.embedder(inf, mesh)
    params, stats = fx._params, fx._batch_stats  # pylint: disable=protected-access
    from PIL import Image  # pylint: disable=g-import-not-at-top
    # Decoded and resized to the input size once, outside the timing.
    arrays = np.stack([fx._resize(np.asarray(Image.open(io.BytesIO(b)).convert('RGB')))  # pylint: disable=protected-access
                       for b in encoded])
    seconds = timed({
        'eval_path': lambda: run(params, stats, split, config.input, args.batch_size,
                                 progress=False),
        'extractor_files': lambda: fx(tmp / 'images'),
        'extractor_arrays': lambda: fx(arrays),
    }, args.repeats)
    same = np.abs(fx(tmp / 'images') - _normalised(run(params, stats, split, config.input,
                                                       args.batch_size, progress=False))).max()
  payload['images_per_s'] = {k: round(n / v, 2) for k, v in seconds.items()}
  payload['seconds'] = {k: round(v, 3) for k, v in seconds.items()}
  payload['max_abs_difference_files_vs_eval_path'] = float(same)
  print(json.dumps(payload['images_per_s']), flush=True)
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(payload, indent=2) + '\n')
  else:
    _bench_util.write_results('extract_speed_cpu.json', payload)


def _normalised(x):
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


if __name__ == '__main__':
  main()
