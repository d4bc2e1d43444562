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

NUM_CLASSES = 751
P, K = 16, 4


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
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from jreid import losses  # pylint: disable=g-import-not-at-top
  from jreid import models  # pylint: disable=g-import-not-at-top

  cfg = {
      'name': 'baseline', 'dtype': 'bfloat16' if args.bf16 else 'float32',
      'backbone': {'name': 'resnet50', 'width': 64, 'last_stride': 1},
      'pooling': {'name': 'avg'},
      'head': {'name': 'bnneck', 'neck_feat': 'before', 'embedding_dim': 0},
      'pixel_mean': models.baseline.IMAGENET_MEAN, 'pixel_std': models.baseline.IMAGENET_STD,
  }
  model = models.build_model(cfg, NUM_CLASSES)
  images, labels = _batch(args.batch, args.height, args.width)
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
  return {'framework': 'jax', 'version': jax.__version__, 'device': str(jax.devices()[0]),
          'convolutions': 'xla' if xla_conv else 'jreid (1x1 as matrix products on CPU)',
          'first_step_s': compile_s, 'seconds': seconds,
          'images_per_s': args.steps * args.batch / seconds}


def bench_torch(args) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  device = 'cuda' if torch.cuda.is_available() else 'cpu'

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
      layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                nn.MaxPool2d(3, 2, 1)]
      inplanes = 64
      for i, n in enumerate((3, 4, 6, 3)):
        planes = 64 * 2**i
        for j in range(n):
          stride = (1 if i in (0, 3) else 2) if j == 0 else 1  # last stride 1
          layers.append(Bottleneck(inplanes, planes, stride))
          inplanes = planes * 4
      self.backbone = nn.Sequential(*layers)
      self.bnneck = nn.BatchNorm1d(2048)
      self.bnneck.bias.requires_grad_(False)
      self.classifier = nn.Linear(2048, NUM_CLASSES, bias=False)

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
  images, labels = _batch(args.batch, args.height, args.width)
  mean = torch.tensor((123.675, 116.28, 103.53), device=device).view(1, 3, 1, 1)
  std = torch.tensor((58.395, 57.12, 57.375), device=device).view(1, 3, 1, 1)
  x_u8 = torch.from_numpy(images).to(device).permute(0, 3, 1, 2)
  y = torch.from_numpy(labels).long().to(device)

  def step(state):
    x = ((x_u8.float() - mean) / std).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=args.bf16):
      logits, feats = model(x)
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
          'threads': torch.get_num_threads(), 'first_step_s': first, 'seconds': seconds,
          'images_per_s': args.steps * args.batch / seconds}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--height', type=int, default=256)
  parser.add_argument('--width', type=int, default=128)
  parser.add_argument('--steps', type=int, default=20, help='timed steps per framework')
  parser.add_argument('--warmup', type=int, default=3, help='untimed steps (incl. compile)')
  parser.add_argument('--bf16', action='store_true', help='bfloat16 compute on both sides')
  parser.add_argument('--only', choices=('jax', 'torch'), default=None)
  parser.add_argument('--xla-conv', action='store_true',
                      help='also time jreid with every convolution left to XLA')
  parser.add_argument('--out', default='', help='write the results as JSON here')
  args = parser.parse_args(argv)
  if args.batch % K:
    parser.error(f'--batch must be a multiple of K={K}')
  results = {'command': 'python ' + ' '.join([sys.argv[0]] + (argv or sys.argv[1:])),
             'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                         'cpu_count': os.cpu_count(),
                         'load_average_before': os.getloadavg()},
             'batch': args.batch, 'input': [args.height, args.width], 'steps': args.steps,
             'warmup': args.warmup, 'bf16': args.bf16}
  if args.only in (None, 'jax'):
    results['jax'] = bench_jax(args)
    print(f"jreid (JAX):  {results['jax']['images_per_s']:8.2f} images/s", flush=True)
    if args.xla_conv:
      results['jax_xla_conv'] = bench_jax(args, xla_conv=True)
      print(f"jreid, XLA convolutions: {results['jax_xla_conv']['images_per_s']:8.2f} images/s",
            flush=True)
      results['ratio_jax_over_jax_xla_conv'] = (results['jax']['images_per_s']
                                                / results['jax_xla_conv']['images_per_s'])
      print(f"ratio jreid / jreid with XLA convolutions: "
            f"{results['ratio_jax_over_jax_xla_conv']:.2f}")
  if args.only in (None, 'torch'):
    results['torch'] = bench_torch(args)
    print(f"PyTorch:      {results['torch']['images_per_s']:8.2f} images/s", flush=True)
  if 'jax' in results and 'torch' in results:
    results['ratio_jax_over_torch'] = (results['jax']['images_per_s']
                                       / results['torch']['images_per_s'])
    print(f"ratio jreid / PyTorch: {results['ratio_jax_over_torch']:.2f}")
  results['machine']['load_average_after'] = os.getloadavg()
  assert 'tensorflow' not in sys.modules, 'the benchmark must not import TensorFlow'
  if args.out:
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + '\n')
  return results


if __name__ == '__main__':
  main()
