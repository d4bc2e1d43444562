r"""Training throughput (images/s) of a ResNet-50 BoT step: jreid (JAX) vs an equivalent PyTorch step.

Both sides run the same step on the same machine, one after the other: ResNet-50 (last stride 1)
-> global average pooling -> BNNeck -> bias-free linear classifier (751 classes, Market-1501),
cross-entropy with label smoothing 0.1 (FastReID form) + batch-hard triplet (margin 0.3) on the
pooled feature, Adam 3.5e-4 with L2 weight decay 5e-4, on random uint8 batches of 64 x 256x128
(P=16 identities x K=4). No TensorFlow is imported (the GPU machine has none), and no data
pipeline is timed: the batch is on the device before timing.

  python benchmarks/train_speed.py                      # both, float32
  python benchmarks/train_speed.py --bf16               # bfloat16 compute (torch: autocast)
  python benchmarks/train_speed.py --steps 3 --warmup 1 --out benchmarks/results/x.json
  python benchmarks/train_speed.py --xla-conv           # also jreid with every conv left to XLA
  python benchmarks/train_speed.py --bf16 --torch-compile    # as benchmarks/gpu_check.sh runs it
  python benchmarks/train_speed.py --dry-run --out /tmp/x.json   # tiny shapes, seconds on a CPU

On a GPU, PyTorch runs with AMP (bfloat16 autocast), channels_last and cuDNN autotuning;
`--torch-compile` adds a run of the same step under `torch.compile` (recorded as an error if it
fails there). Each side's model FLOPs utilisation (MFU) is printed: 3 x the forward pass's FLOPs
(as XLA counts them before optimisation) per image x images/s, over the device's dense peak
(`_device_peak.py`: bfloat16, or TF32 for float32; `--peak-tflops` for other devices).

Like `python -m jreid.main`, the script first re-runs itself with glibc's huge-page malloc
(`jreid.host_memory`; `--no-hugepages` keeps the process as started); both frameworks run in that
one process, so both get it. The record's `glibc_tunables` says which way it ran.

The jreid step is the model/loss/optimiser of the supervised setup written out (jreid.models
Baseline, jreid.losses, optax) under one jax.jit with the state donated; the PyTorch step is
written here from torch.nn primitives (no torchvision needed). On CPU, jreid computes 1x1
convolutions as matrix products (jreid.models.conv); `--xla-conv` adds a third run with every
convolution left to XLA, the side-by-side measure of that rewrite.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _device_peak import peak_flops  # pylint: disable=g-import-not-at-top,wrong-import-position

# JAX and PyTorch share the GPU in one process: JAX takes memory as it needs it, not 75% up front.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

NUM_CLASSES = 751
P, K = 16, 4
RESNET50_BLOCKS = (3, 4, 6, 3)


def mfu(flops_per_image: float | None, images_per_s: float, peak: float | None) -> float | None:
  """Model FLOPs utilisation: 3 x forward FLOPs (forward + backward) per image x images/s / peak."""
  if not flops_per_image or not peak:
    return None
  return 3.0 * flops_per_image * images_per_s / peak


def _batch(batch: int, height: int, width: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
  labels = np.repeat(rng.choice(NUM_CLASSES, batch // K, replace=False), K).astype(np.int32)
  return images, labels


def _time(step, state, steps: int, warmup: int, sync):
  for _ in range(warmup):
    state = step(state)
  sync(state)
  t0 = time.perf_counter()
  for _ in range(steps):
    state = step(state)
  sync(state)
  return time.perf_counter() - t0


def bench_jax(args, xla_conv: bool = False) -> dict:
  import contextlib  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from jreid import losses  # pylint: disable=g-import-not-at-top
  from jreid import models  # pylint: disable=g-import-not-at-top

  cfg = {
      'name': 'baseline', 'dtype': 'bfloat16' if args.bf16 else 'float32',
      'backbone': {'name': 'resnet50', 'width': args.width, 'last_stride': 1},
      'pooling': {'name': 'avg'},
      'head': {'name': 'bnneck', 'neck_feat': 'before', 'embedding_dim': 0},
      'pixel_mean': models.baseline.IMAGENET_MEAN, 'pixel_std': models.baseline.IMAGENET_STD,
  }
  model = models.build_model(cfg, NUM_CLASSES)
  if tuple(args.blocks) != RESNET50_BLOCKS:  # A shallower trunk of the same blocks (--dry-run).
    model = model.clone(backbone=model.backbone.clone(stage_sizes=tuple(args.blocks)))
  images, labels = _batch(args.batch, args.height, args.image_width)
  images, labels = jax.device_put(images), jax.device_put(labels)
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.scale_by_adam(),
                   optax.scale_by_learning_rate(3.5e-4))
  variables = jax.jit(lambda: model.init(jax.random.key(0), images[:1], train=False))()
  state = (variables['params'], variables['batch_stats'], tx.init(variables['params']))

  def _step(state, images, labels):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      out, mutated = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                                 train=True, mutable=['batch_stats'])
      loss = (losses.cross_entropy(out['logits'], labels, epsilon=0.1)
              + losses.triplet_loss(out['features'], labels, margin=0.3))
      return loss, mutated['batch_stats']

    (_, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state

  # The batch is an argument (a device array), not a constant folded into the program.
  jitted = jax.jit(_step, donate_argnums=0)
  step = lambda state: jitted(state, images, labels)
  t0 = time.perf_counter()
  # The first call traces the step: that is when the convolution choice is read.
  with models.conv.xla_convolutions() if xla_conv else contextlib.nullcontext():
    state = step(state)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t0
  seconds = _time(step, state, args.steps, max(args.warmup - 1, 0), jax.block_until_ready)
  # Forward FLOPs as XLA counts them in the unoptimised program (backend independent).
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
      {'params': state[0], 'batch_stats': state[1]}, images[:1])
  cost = forward.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  device = jax.devices()[0]
  return {'framework': 'jax', 'version': jax.__version__, 'device': str(device),
          'device_kind': device.device_kind,
          'convolutions': 'xla' if xla_conv else 'jreid (1x1 as matrix products on CPU)',
          'first_step_s': compile_s, 'seconds': seconds,
          'images_per_s': args.steps * args.batch / seconds,
          'forward_flops_per_image': float(cost['flops']) if cost and 'flops' in cost else None}


def bench_torch(args, compile_model: bool = False) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  if device == 'cuda':
    torch.backends.cudnn.benchmark = True  # What a PyTorch user sets for fixed input shapes.

  class Bottleneck(nn.Module):

    def __init__(self, inplanes, planes, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
      self.bn3 = nn.BatchNorm2d(planes * 4)
      self.downsample = None
      if stride != 1 or inplanes != planes * 4:
        self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                        nn.BatchNorm2d(planes * 4))

    def forward(self, x):
      y = F.relu(self.bn1(self.conv1(x)))
      y = F.relu(self.bn2(self.conv2(y)))
      y = self.bn3(self.conv3(y))
      return F.relu(y + (x if self.downsample is None else self.downsample(x)))

  class BoT(nn.Module):

    def __init__(self):
      super().__init__()
      width = args.width
      layers = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.MaxPool2d(3, 2, 1)]
      inplanes = width
      for i, n in enumerate(args.blocks):
        planes = width * 2**i
        for j in range(n):
          stride = (1 if i in (0, 3) else 2) if j == 0 else 1  # last stride 1
          layers.append(Bottleneck(inplanes, planes, stride))
          inplanes = planes * 4
      self.backbone = nn.Sequential(*layers)
      self.bnneck = nn.BatchNorm1d(inplanes)
      self.bnneck.bias.requires_grad_(False)
      self.classifier = nn.Linear(inplanes, NUM_CLASSES, bias=False)

    def forward(self, x):
      pooled = self.backbone(x).mean(dim=(2, 3))
      return self.classifier(self.bnneck(pooled)), pooled

  def triplet(feats, labels, margin=0.3):
    d = torch.cdist(feats, feats).clamp(min=1e-12)
    same = labels[:, None] == labels[None]
    ap = torch.where(same, d, torch.full_like(d, -1e9)).max(1).values
    an = torch.where(same, torch.full_like(d, 1e9), d).min(1).values
    return F.relu(ap - an + margin).mean()

  def cross_entropy(logits, labels, eps=0.1):
    logp = F.log_softmax(logits.float(), 1)
    target = torch.full_like(logp, eps / (logp.shape[1] - 1))
    target.scatter_(1, labels[:, None], 1 - eps)
    return -(target * logp).sum(1).mean()

  model = BoT().to(device).to(memory_format=torch.channels_last).train()
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.Adam(params, lr=3.5e-4, weight_decay=5e-4)
  images, labels = _batch(args.batch, args.height, args.image_width)
  forward = torch.compile(model) if compile_model else model
  mean = torch.tensor((123.675, 116.28, 103.53), device=device).view(1, 3, 1, 1)
  std = torch.tensor((58.395, 57.12, 57.375), device=device).view(1, 3, 1, 1)
  x_u8 = torch.from_numpy(images).to(device).permute(0, 3, 1, 2)
  y = torch.from_numpy(labels).long().to(device)

  def step(state):
    x = ((x_u8.float() - mean) / std).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=args.bf16):
      logits, feats = forward(x)
    loss = cross_entropy(logits, y) + triplet(feats.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return state

  sync = (lambda _: torch.cuda.synchronize()) if device == 'cuda' else (lambda _: None)
  t0 = time.perf_counter()
  step(None)
  sync(None)
  first = time.perf_counter() - t0
  seconds = _time(step, None, args.steps, max(args.warmup - 1, 0), sync)
  return {'framework': 'torch', 'version': torch.__version__, 'device': device,
          'device_kind': torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu',
          'compiled': compile_model, 'channels_last': True,
          'autocast': 'bfloat16' if args.bf16 else None,
          'threads': torch.get_num_threads(), 'first_step_s': first, 'seconds': seconds,
          'images_per_s': args.steps * args.batch / seconds}


def _versions() -> dict:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  out = {'python': platform.python_version()}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'torch', 'torchvision'):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--height', type=int, default=256)
  parser.add_argument('--width', dest='image_width', type=int, default=128, help='image width')
  parser.add_argument('--backbone-width', dest='width', type=int, default=64,
                      help='channels of the ResNet stem (64: ResNet-50)')
  parser.add_argument('--blocks', type=lambda v: tuple(int(x) for x in v.split(',')),
                      default=RESNET50_BLOCKS, help='bottleneck blocks per stage (3,4,6,3)')
  parser.add_argument('--steps', type=int, default=20, help='timed steps per framework')
  parser.add_argument('--warmup', type=int, default=3, help='untimed steps (incl. compile)')
  parser.add_argument('--bf16', action='store_true', help='bfloat16 compute on both sides')
  parser.add_argument('--only', choices=('jax', 'torch'), default=None)
  parser.add_argument('--xla-conv', action='store_true',
                      help='also time jreid with every convolution left to XLA')
  parser.add_argument('--torch-compile', action='store_true',
                      help='also time PyTorch under torch.compile')
  parser.add_argument('--peak-tflops', type=float, default=None,
                      help='the device peak for the MFU, when _device_peak.py does not know it')
  parser.add_argument('--dry-run', action='store_true',
                      help='tiny shapes (batch 8 of 64x32, blocks 1,1, width 8, 2 steps)')
  parser.add_argument('--out', default='', help='write the results as JSON here')
  parser.add_argument('--no-hugepages', action='store_true',
                      help="run as started, without the re-run with glibc's huge-page malloc "
                      'that jreid\'s entry points make (jreid.host_memory)')
  args = parser.parse_args(argv)
  if args.dry_run:
    args.batch, args.height, args.image_width, args.width = 8, 64, 32, 8
    # Two stages of one block: what compiles fastest and still has every kind of layer.
    args.blocks, args.steps, args.warmup = (1, 1), 2, 1
  if args.batch % K:
    parser.error(f'--batch must be a multiple of K={K}')
  results = {'command': 'python ' + ' '.join([sys.argv[0]] + (argv or sys.argv[1:])),
             'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                         'cpu_count': os.cpu_count(),
                         'load_average_before': os.getloadavg()},
             'versions': _versions(),
             'glibc_tunables': os.environ.get('GLIBC_TUNABLES'),
             'batch': args.batch, 'input': [args.height, args.image_width], 'steps': args.steps,
             'warmup': args.warmup, 'bf16': args.bf16, 'dry_run': args.dry_run,
             'model': {'blocks': list(args.blocks), 'width': args.width}}
  peak = args.peak_tflops * 1e12 if args.peak_tflops else None

  def record(key: str, label: str, run: dict) -> None:
    """Adds a run, prints it, and rewrites --out: a run cut short (a time limit) keeps the
    figures measured so far."""
    nonlocal peak
    results[key] = run
    results.setdefault('device_kind', run['device_kind'])
    peak = peak or peak_flops(results['device_kind'], 'bfloat16' if args.bf16 else 'tf32')
    results['peak_flops'] = peak
    flops = results.get('jax', {}).get('forward_flops_per_image')
    for other in ('jax', 'jax_xla_conv', 'torch', 'torch_compile'):
      if other in results:
        results[other]['mfu'] = mfu(flops, results[other]['images_per_s'], peak)
    shown = f", MFU {100 * run['mfu']:.1f}%" if run['mfu'] is not None else ''
    print(f"{label + ':':28s} {run['images_per_s']:9.2f} images/s{shown}", flush=True)
    if 'jax' in results and 'jax_xla_conv' in results:
      results['ratio_jax_over_jax_xla_conv'] = (results['jax']['images_per_s']
                                                / results['jax_xla_conv']['images_per_s'])
    torch_runs = [results[k]['images_per_s'] for k in ('torch', 'torch_compile') if k in results]
    if 'jax' in results and 'torch' in results:
      results['ratio_jax_over_torch'] = (results['jax']['images_per_s']
                                         / results['torch']['images_per_s'])
      results['ratio_jax_over_best_torch'] = results['jax']['images_per_s'] / max(torch_runs)
    results['machine']['load_average_after'] = os.getloadavg()
    if args.out:
      pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
      pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + '\n')

  if args.only in (None, 'jax'):
    record('jax', 'jreid (JAX)', bench_jax(args))
    flops = results['jax']['forward_flops_per_image']
    if flops:
      kind = results['device_kind']
      print(f'model: {flops / 1e9:.3g} GFLOP per image forward (x3 for a training step); '
            + (f'peak {peak / 1e12:.0f} TFLOP/s ({kind})' if peak
               else f'no peak known for {kind!r}: no MFU'), flush=True)
    if args.xla_conv:
      record('jax_xla_conv', 'jreid, XLA convolutions', bench_jax(args, xla_conv=True))
      print(f"ratio jreid / jreid with XLA convolutions: "
            f"{results['ratio_jax_over_jax_xla_conv']:.2f}")
  if args.only in (None, 'torch'):
    record('torch', 'PyTorch', bench_torch(args))
    if args.torch_compile and args.dry_run:
      results['torch_compile_error'] = 'not tried in --dry-run (minutes of compilation on a CPU)'
    elif args.torch_compile:
      try:
        run = bench_torch(args, compile_model=True)
      except Exception as e:  # pylint: disable=broad-except
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        results['torch_compile_error'] = f'{type(e).__name__}: {first}'[:500]
        print(f"torch.compile failed here: {results['torch_compile_error']}", flush=True)
      else:
        record('torch_compile', 'PyTorch, torch.compile', run)
  if 'ratio_jax_over_torch' in results:
    print(f"ratio jreid / PyTorch: {results['ratio_jax_over_torch']:.2f} "
          f"(against the faster PyTorch run: {results['ratio_jax_over_best_torch']:.2f})")
  assert sys.modules.get('tensorflow') is None, 'the benchmark must not import TensorFlow'
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + '\n')
  return results


if __name__ == '__main__':
  if '--no-hugepages' not in sys.argv[1:]:
    # As `python -m jreid.main` runs: large host allocations in transparent huge pages (both
    # frameworks share the process, so both get them).
    from jreid import host_memory  # pylint: disable=g-import-not-at-top
    host_memory.ensure_hugepage_malloc()
  main()
