"""QAConv all-pairs scoring speed: jreid (JAX) against a PyTorch baseline, same machine, one run.

The baseline is the matcher as the paper and reference code compute it: for each 128 x 128 block
of (query, gallery) maps, `torch.einsum('p c s, g c r -> p g r s')` materialises every location
similarity, then max over each direction, BatchNorm -> shared Linear -> sum -> BatchNorm, under
`torch.no_grad()`. jreid's `pairwise_scores` computes the same logits with a fused
"matmul then max" path (and, for information, bfloat16 and the direct block path).

Maps are 24 x 8 locations x 128 channels (a 384 x 128 input through ResNet-50 layer3), random
and L2-normalised. Prints pairs/s, the speed ratio, the agreement of the two implementations and
the projected time of the full MSMT17 test (11,659 queries x 82,161 gallery = 958M pairs), and
writes everything to benchmarks/results/qaconv_speed_<backend>.json.

  python benchmarks/qaconv_speed.py                 # CPU: about 1 minute on 2 idle cores
  python benchmarks/qaconv_speed.py --device-info   # also print the devices
  python benchmarks/qaconv_speed.py --num-query 2048 --num-gallery 16384   # a GPU run
  python benchmarks/qaconv_speed.py --dry-run --output /tmp/x.json   # tiny shapes, seconds

On an accelerator, the utilisation of each jreid run is printed too: 2 x hw^2 x c multiply-adds
per pair x pairs/s over the device's dense matmul peak (bfloat16, or CUDA-core float32 for the
float32 run, which uses Precision.HIGHEST; see _device_peak.py).

Imports only numpy, jax, flax (through jreid.models) and torch: no TensorFlow or faiss.
"""

import argparse
import json
import os
import platform
import sys
import time

# JAX and PyTorch share the GPU in one process: JAX takes memory as it needs it, not 75% up front.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=wrong-import-position
from _device_peak import peak_flops  # noqa: E402
from jreid.models.qaconv import QAConvMatcher, default_chunks, pairwise_scores  # noqa: E402

HEIGHT, WIDTH, CHANNELS = 24, 8, 128
HW = HEIGHT * WIDTH
MSMT17_PAIRS = 11_659 * 82_161
FLOPS_PER_PAIR = 2 * HW * HW * CHANNELS  # The location-similarity matmul; the maxima are extra.


def make_maps(rng: np.random.Generator, n: int) -> np.ndarray:
  x = rng.standard_normal((n, HW, CHANNELS)).astype(np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_variables(rng: np.random.Generator) -> dict:
  """Matcher variables with non-default values, so both implementations use every term."""
  variables = QAConvMatcher(HW).init(
      jax.random.key(0), jnp.zeros((1, HW, CHANNELS)), jnp.zeros((1, HW, CHANNELS)), train=False
  )
  variables = jax.tree.map(np.asarray, variables)
  variables['params']['fc']['kernel'] = (
      1.0 / HW + 0.1 / HW * rng.standard_normal((HW, 1))).astype(np.float32)
  variables['params']['fc']['bias'] = np.array([0.1], np.float32)
  variables['params']['bn']['scale'] = np.array([1.3], np.float32)
  variables['params']['bn']['bias'] = np.array([-0.2], np.float32)
  variables['params']['logit_bn']['scale'] = np.array([2.0], np.float32)
  variables['params']['logit_bn']['bias'] = np.array([0.5], np.float32)
  variables['batch_stats']['bn'] = {'mean': np.array([0.4], np.float32),
                                    'var': np.array([0.03], np.float32)}
  variables['batch_stats']['logit_bn'] = {'mean': np.array([1.0], np.float32),
                                          'var': np.array([0.5], np.float32)}
  return jax.tree.map(jnp.asarray, variables)


# ----------------------------------------------------------------------------- PyTorch baseline


def torch_baseline(variables, device: str, dtype_name: str):
  """(score_fn(query [P, c, hw], gallery [G, c, hw]) -> [P, G] numpy, torch module)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  class PaperQAConv(nn.Module):
    """QAConv as in the paper: einsum over channels, max both ways, BN -> FC -> sum -> BN."""

    def __init__(self, hw: int):
      super().__init__()
      self.hw = hw
      self.bn = nn.BatchNorm1d(1)
      self.fc = nn.Linear(hw, 1)
      self.logit_bn = nn.BatchNorm1d(1)

    def forward(self, prob, gal):  # [p, c, hw], [g, c, hw]
      score = torch.einsum('p c s, g c r -> p g r s', prob, gal)
      score = torch.cat((score.max(dim=2)[0], score.max(dim=3)[0]), dim=-1)
      score = self.bn(score.reshape(-1, 1, self.hw)).reshape(-1, self.hw)
      score = self.fc(score).reshape(-1, 2).sum(dim=1, keepdim=True)
      return self.logit_bn(score).reshape(prob.shape[0], gal.shape[0])

  module = PaperQAConv(HW)
  p, s = variables['params'], variables['batch_stats']
  t = lambda a: torch.tensor(np.asarray(a, np.float32))
  with torch.no_grad():
    for name in ('bn', 'logit_bn'):
      getattr(module, name).weight.copy_(t(p[name]['scale']))
      getattr(module, name).bias.copy_(t(p[name]['bias']))
      getattr(module, name).running_mean.copy_(t(s[name]['mean']))
      getattr(module, name).running_var.copy_(t(s[name]['var']))
    module.fc.weight.copy_(t(p['fc']['kernel']).T)
    module.fc.bias.copy_(t(p['fc']['bias']))
  dtype = {'float32': torch.float32, 'float16': torch.float16}[dtype_name]
  module = module.to(device=device, dtype=dtype).eval()

  def score(prob, gal, block: int = 128):
    out = torch.zeros(prob.shape[0], gal.shape[0], dtype=dtype, device=device)
    with torch.no_grad():
      for i in range(0, prob.shape[0], block):
        for k in range(0, gal.shape[0], block):
          out[i:i + block, k:k + block] = module(prob[i:i + block], gal[k:k + block])
    return out.float().cpu().numpy()

  def to_device(maps: np.ndarray):
    return torch.tensor(maps.transpose(0, 2, 1).copy()).to(device=device, dtype=dtype)

  return score, to_device


# ----------------------------------------------------------------------------- timing


def timed(fn, *args):
  start = time.perf_counter()
  out = fn(*args)
  return time.perf_counter() - start, out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  gpu = jax.default_backend() != 'cpu'
  parser.add_argument('--num-query', type=int, default=1024 if gpu else 128)
  parser.add_argument('--num-gallery', type=int, default=16384 if gpu else 256)
  parser.add_argument('--info-query', type=int, default=None,
                      help='queries for the bf16/direct (information) runs; default: smaller set')
  parser.add_argument('--repeats', type=int, default=2, help='timed runs, interleaved; best kept')
  parser.add_argument('--block', type=int, default=128)
  parser.add_argument('--skip-torch', action='store_true')
  parser.add_argument('--device-info', action='store_true')
  parser.add_argument('--output', default=None)
  parser.add_argument('--dry-run', action='store_true',
                      help='tiny sets (8 x 32 maps, blocks of 8, one repeat): checks the script')
  args = parser.parse_args()
  if args.dry_run:
    args.num_query, args.num_gallery, args.block, args.repeats = 8, 32, 8, 1
    args.info_query = 8

  backend = jax.default_backend()
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch_version = torch.__version__
    torch_device = 'cuda' if torch.cuda.is_available() and gpu else 'cpu'
  except ImportError:
    torch, torch_version, torch_device = None, None, None
    args.skip_torch = True
  machine = {
      'platform': platform.platform(),
      'processor': platform.processor() or platform.machine(),
      'cpu_count': os.cpu_count(),
      'jax_backend': backend,
      'jax_devices': [str(d) for d in jax.devices()],
      'torch_device': torch_device,
      'torch_threads': torch.get_num_threads() if torch is not None else None,
      # Other processes share the machine; a load above the core count slows both sides.
      'load_average_at_start': os.getloadavg(),
  }
  machine['device_kind'] = jax.devices()[0].device_kind
  if gpu and torch is not None and torch.cuda.is_available():
    machine['gpu'] = torch.cuda.get_device_name(0)
  if args.device_info:
    print(json.dumps(machine, indent=2))

  rng = np.random.default_rng(0)
  variables = make_variables(rng)
  query = make_maps(rng, args.num_query)
  gallery = make_maps(rng, args.num_gallery)
  pairs = args.num_query * args.num_gallery
  qc, gc = default_chunks()
  print(f'{args.num_query} x {args.num_gallery} = {pairs:,} pairs of {HEIGHT}x{WIDTH}x{CHANNELS} '
        f'maps; blocks {args.block}x{args.block}; fused sub-block {qc}x{gc}; backend {backend}.')

  q_dev, g_dev = jax.device_put(query), jax.device_put(gallery)

  def jreid_run(q, g, dtype=jnp.float32, method='fused'):
    return pairwise_scores(variables, q, g, query_block=args.block, gallery_block=args.block,
                           dtype=dtype, method=method)

  # Compile once on one query block against the same gallery (same block shapes).
  jreid_run(q_dev[:args.block], g_dev)
  results = {'jreid_fused_float32': [], 'torch_float32': []}
  torch_scores = jreid_scores = None
  if not args.skip_torch:
    torch_score, to_device = torch_baseline(variables, torch_device, 'float32')
    tq, tg = to_device(query), to_device(gallery)
    torch_score(tq[:8], tg[:8])  # warm-up
  for _ in range(args.repeats):
    if not args.skip_torch:
      seconds, torch_scores = timed(torch_score, tq, tg)
      results['torch_float32'].append(pairs / seconds)
      print(f'  torch float32 (einsum + max, 128x128 blocks): {pairs / seconds:12,.0f} pairs/s')
    seconds, jreid_scores = timed(jreid_run, q_dev, g_dev)
    results['jreid_fused_float32'].append(pairs / seconds)
    print(f'  jreid fused float32:                          {pairs / seconds:12,.0f} pairs/s')

  # For information: bfloat16 and the direct block path, on a smaller query set on CPU.
  info_q = args.info_query or (args.num_query if gpu else max(args.block // 4, 16))
  info_pairs = info_q * args.num_gallery
  info = {}
  for name, dtype, method in (('jreid_fused_bfloat16', jnp.bfloat16, 'fused'),
                              ('jreid_direct_float32', jnp.float32, 'direct')):
    jreid_run(q_dev[:info_q], g_dev, dtype, method)  # compile
    seconds, _ = timed(jreid_run, q_dev[:info_q], g_dev, dtype, method)
    info[name] = info_pairs / seconds
    print(f'  {name} ({info_q} x {args.num_gallery}): {info[name]:12,.0f} pairs/s')

  best = {k: max(v) for k, v in results.items() if v}
  # Fraction of the device's matmul peak (None on CPUs, whose peak is not tabulated).
  utilisation = {}
  for name, rate in {**best, **info}.items():
    if name.startswith('jreid'):
      peak = peak_flops(machine['device_kind'], 'bfloat16' if 'bfloat16' in name else 'float32')
      utilisation[name] = rate * FLOPS_PER_PAIR / peak if peak else None
      if peak:
        print(f'  {name}: {100 * utilisation[name]:.1f}% of the {peak / 1e12:.0f} TFLOP/s peak')
  summary = {
      'pairs': pairs,
      'pairs_per_second': best,
      'pairs_per_second_all_runs': results,
      'information_runs': {'pairs': info_pairs, 'pairs_per_second': info},
      'msmt17_projection_seconds': {k: MSMT17_PAIRS / v for k, v in {**best, **info}.items()},
      'matmul_peak_fraction': utilisation,
  }
  print(f'Projected full MSMT17 test ({MSMT17_PAIRS:,} pairs):')
  for k, v in summary['msmt17_projection_seconds'].items():
    print(f'  {k}: {v:,.0f} s ({v / 60:.1f} min)')
  if torch_scores is not None:
    ratio = best['jreid_fused_float32'] / best['torch_float32']
    diff = float(np.max(np.abs(torch_scores - jreid_scores)))
    scale = float(np.max(np.abs(torch_scores)))
    summary.update(speedup_fused_float32_vs_torch=ratio, max_abs_difference=diff,
                   max_abs_logit=scale)
    print(f'jreid fused float32 / torch float32 = {ratio:.2f}x '
          f'(max |difference| {diff:.2e} on logits up to {scale:.1f})')

  import flax  # pylint: disable=g-import-not-at-top
  record = {
      'benchmark': 'qaconv_speed',
      'command': 'python ' + ' '.join(sys.argv),
      'machine': machine,
      'versions': {'python': platform.python_version(), 'jax': jax.__version__,
                   'flax': flax.__version__, 'numpy': np.__version__, 'torch': torch_version},
      'maps': {'height': HEIGHT, 'width': WIDTH, 'channels': CHANNELS},
      'dry_run': args.dry_run,
      'block': args.block,
      'fused_sub_block': [qc, gc],
      **summary,
  }
  output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results',
                                       f'qaconv_speed_{backend}.json')
  os.makedirs(os.path.dirname(output), exist_ok=True)
  with open(output, 'w') as f:
    json.dump(record, f, indent=2)
  print(f'Wrote {output}')


if __name__ == '__main__':
  main()
