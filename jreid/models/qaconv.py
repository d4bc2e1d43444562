"""QAConv-GS (QAConv 2.1): feature-map network, query-adaptive matcher and all-pairs scoring.

Liao & Shao, "Interpretable and Generalizable Person Re-Identification with Query-Adaptive
Convolution and Temporal Lifting" (ECCV 2020) and "Graph Sampling Based Deep Metric Learning for
Generalizable Person Re-Identification" (CVPR 2022).

* `QAConvNet`: ResNet trunk up to layer3 -> 3x3 neck convolution to 128 channels -> channel-wise
  L2 normalisation, on images in [0, 1] (no ImageNet mean/std). The whole network keeps its
  BatchNorm layers in inference mode during training, as the reference does (it calls
  `model.eval()` every iteration "for a better generalization"); only the matcher's BatchNorms
  learn statistics.
* `QAConvMatcher`: for every (query, gallery) pair, the similarity of every query location with
  every gallery location (a dot product over channels), the best match of each query location
  over the gallery locations and of each gallery location over the query locations (2 x hw
  maxima), a BatchNorm over all those numbers as one feature, one Linear(hw -> 1) shared by both
  directions, the sum of the two directions and a final BatchNorm(1): one logit per pair.
* `pairwise_scores`: the evaluation all-pairs logits [P, G], block by block, the query blocks
  split over every device of every process, with a fused "matmul then max" path that never
  holds a block's [pb, gb, hw, hw] score tensor.
* `qaconv_batch_scores`: the [B, B] training logits of a batch, with the matcher's BatchNorm
  statistics update.

Inference-mode algebra used by the fused path: with the matcher's BatchNorms frozen, every layer
after the maxima is affine, so

  logit = alpha * (sum_i w_i max_j S_ij + sum_j w_j max_i S_ij) + beta

with w the Linear weight, alpha = a1 * a2 and beta = a2 * 2 * (b1 * sum(w) + fc_bias) + b2 (a, b
the scale and shift of each BatchNorm). `_folded_head` computes (w, alpha, beta); the `direct`
path applies the layers literally, and the tests hold both equal.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
from jax import lax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np

from jreid.models import ARCHITECTURES, BACKBONES
from jreid.models.baseline import DTYPES

# PyTorch BatchNorm1d defaults: running = (1 - 0.1) * running + 0.1 * batch, eps 1e-5.
BN_MOMENTUM = 0.1
BN_EPSILON = 1e-5

# PyTorch's default Conv2d initialisation (kaiming_uniform with a = sqrt(5)): U(+-1/sqrt(fan_in)).
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')

_HIGHEST = lax.Precision.HIGHEST

FINAL_LAYERS = {'layer2': 2, 'layer3': 3, 'layer4': 4}


# ----------------------------------------------------------------------------- feature maps


class QAConvNet(nn.Module):
  """Images -> L2-normalised feature maps for QAConv.

  Attributes:
    backbone: a ResNet trunk `(x, train) -> [B, h, w, C]`, already truncated (see
      `build_qaconv`); it is always run with `train=False` (frozen BatchNorm statistics).
    neck: channels of the 3x3 neck convolution (128); 0 skips the neck.
    neck_bn: True follows the reference: a bias-free neck convolution followed by a BatchNorm
      that, like every BatchNorm of the network, stays in inference mode, i.e. a learned
      per-channel scale and shift (the state dict `neck_conv.weight`, `neck_bn.*` loads as is).
      False uses one convolution with a bias instead (the same function class).
    dtype: compute dtype of the backbone and neck; the output is float32.
    frozen_bn: True (the reference, for ImageNet-pretrained weights): every BatchNorm stays in
      inference mode in training. False: training uses batch statistics and updates the running
      ones (apply with mutable=['batch_stats']); needed to train a backbone from scratch, where
      frozen initial statistics leave the network without normalisation.
  """

  backbone: nn.Module
  neck: int = 128
  neck_bn: bool = True
  dtype: Any = jnp.float32
  frozen_bn: bool = True

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
    """Feature maps of images in 0..255 (uint8 or float), NHWC.

    Returns:
      {'feature_map': [B, h, w, neck]} float32, unit L2 norm over channels at every location;
      the same in training and evaluation (`train` only matters to callers' BatchNorm handling).
    """
    # The reference trains with the whole network in eval mode (frozen_bn).
    update_bn = train and not self.frozen_bn
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(
          f'QAConvNet expects images shaped [batch, height, width, 3] (NHWC), got '
          f'{images.shape}; transpose NCHW input with x.transpose(0, 2, 3, 1).'
      )
    x = images.astype(jnp.float32) / 255.0
    x = self.backbone(x.astype(self.dtype), train=update_bn)
    if self.neck > 0:
      x = nn.Conv(
          self.neck,
          (3, 3),
          padding=((1, 1), (1, 1)),
          use_bias=not self.neck_bn,
          kernel_init=torch_conv_init,
          dtype=self.dtype,
          name='neck_conv',
      )(x)
      if self.neck_bn:
        x = nn.BatchNorm(
            use_running_average=not update_bn,
            momentum=1.0 - BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=self.dtype,
            name='neck_bn',
        )(x)
    x = x.astype(jnp.float32)
    # F.normalize: x / max(||x||, 1e-12) over channels.
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return {'feature_map': x / jnp.maximum(norm, 1e-12)}


def truncate_backbone(backbone: nn.Module, final_layer: str) -> nn.Module:
  """A ResNet trunk cut after `final_layer` ('layer2'..'layer4'), parameter names unchanged."""
  if final_layer not in FINAL_LAYERS:
    raise ValueError(
        f'config.model.qaconv.final_layer must be one of {sorted(FINAL_LAYERS)}, got '
        f'{final_layer!r}.'
    )
  stage_sizes = getattr(backbone, 'stage_sizes', None)
  if stage_sizes is None:
    raise ValueError(
        f'config.model.backbone.name: QAConv needs a ResNet-style backbone with `stage_sizes` '
        f'to cut after {final_layer}; {type(backbone).__name__} has none. Use resnet50 or '
        'resnet50_ibn_b.'
    )
  return backbone.clone(stage_sizes=tuple(stage_sizes)[:FINAL_LAYERS[final_layer]])


@ARCHITECTURES.register('qaconv')
def build_qaconv(cfg: Mapping[str, Any], num_classes: int) -> QAConvNet:
  """Builds `QAConvNet` from the `model` config section (see `qaconv_model_config`).

  `num_classes` is unused: QAConv learns through the matcher, which has no classifier.
  """
  del num_classes
  if cfg['dtype'] not in DTYPES:
    raise ValueError(
        f'config.model.dtype must be one of {sorted(DTYPES)}, got {cfg["dtype"]!r}.'
    )
  dtype = DTYPES[cfg['dtype']]
  try:
    factory = BACKBONES.get(cfg['backbone']['name'])
  except ValueError as e:
    raise ValueError(f'config.model.backbone.name: {e}') from None
  backbone = truncate_backbone(factory(cfg['backbone'], dtype), cfg['qaconv']['final_layer'])
  neck = int(cfg['qaconv']['neck'])
  if neck < 0:
    raise ValueError(f'config.model.qaconv.neck must be >= 0 (0 = no neck), got {neck}.')
  return QAConvNet(backbone, neck=neck, neck_bn=bool(cfg['qaconv']['neck_bn']), dtype=dtype,
                   frozen_bn=bool(cfg['qaconv'].get('frozen_bn', True)))


def qaconv_model_config() -> Any:
  """The `model` config section of QAConv-GS (ResNet-50 to layer3, neck 128).

  Returns an ml_collections.ConfigDict; ml_collections is imported here only, so the models run
  where it is not installed. `backbone.name = 'resnet50_ibn_b'` gives the IBN-Net-b variant.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top

  cfg = ml_collections.ConfigDict()
  cfg.name = 'qaconv'
  cfg.backbone = ml_collections.ConfigDict()
  cfg.backbone.name = 'resnet50'
  cfg.backbone.width = 64
  cfg.backbone.last_stride = 2  # layer4 is cut off, so unused; torchvision's value.
  cfg.qaconv = ml_collections.ConfigDict()
  cfg.qaconv.final_layer = 'layer3'
  cfg.qaconv.neck = 128
  cfg.qaconv.neck_bn = True  # Reference: bias-free conv + frozen BatchNorm (= scale and shift).
  cfg.qaconv.frozen_bn = True  # Reference (pretrained weights): BatchNorm frozen in training.
  cfg.pretrained = ''  # A torchvision/IBN-Net ResNet state dict for the trunk (layer4 unused).
  cfg.dtype = 'float32'
  return cfg


# ----------------------------------------------------------------------------- matcher


class ScalarBatchNorm(nn.Module):
  """PyTorch `BatchNorm1d(1)`: every element of the input is one sample of a single feature.

  Training normalises with the biased batch variance and updates the running variance with the
  unbiased one (as PyTorch does; flax's BatchNorm uses the biased one for both).
  Parameters `scale`, `bias` and statistics `mean`, `var` are shaped [1].
  """

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    scale = self.param('scale', nn.initializers.ones, (1,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (1,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((1,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((1,), jnp.float32))
    x = x.astype(jnp.float32)
    if train:
      mean = jnp.mean(x)
      var = jnp.mean(jnp.square(x - mean))
      if not self.is_initializing():
        n = x.size
        unbiased = var * (n / max(n - 1, 1))
        ra_mean.value = (1 - BN_MOMENTUM) * ra_mean.value + BN_MOMENTUM * mean
        ra_var.value = (1 - BN_MOMENTUM) * ra_var.value + BN_MOMENTUM * unbiased
    else:
      mean, var = ra_mean.value[0], ra_var.value[0]
    return (x - mean) * lax.rsqrt(var + BN_EPSILON) * scale[0] + bias[0]


class QAConvMatcher(nn.Module):
  """The learnable QAConv head: query-adaptive matching of feature maps to pair logits.

  Parameter names follow the reference module (`bn`, `fc`, `logit_bn`).

  Attributes:
    hw: locations per feature map (height x width).
    dtype: dtype of the location-similarity matmul (accumulation is always float32).
  """

  hw: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, query: jnp.ndarray, gallery: jnp.ndarray, train: bool) -> jnp.ndarray:
    """Logits [p, g] of query maps [p, hw, c] (or [p, h, w, c]) against gallery maps [g, hw, c].

    In training, the BatchNorm statistics update (apply with `mutable=['batch_stats']`).
    """
    q, g = _flat_maps(query, self.hw, 'query'), _flat_maps(gallery, self.hw, 'gallery')
    p_size, g_size = q.shape[0], g.shape[0]
    # score[p, g, i, j]: query location i against gallery location j.
    score = jnp.einsum(
        'pic,gjc->pgij', q.astype(self.dtype), g.astype(self.dtype),
        preferred_element_type=jnp.float32, precision=_precision(self.dtype),
    )
    # Reference order: max over gallery locations (one per query location), then max over query
    # locations (one per gallery location), concatenated.
    maxima = jnp.concatenate([score.max(axis=3), score.max(axis=2)], axis=-1)  # [p, g, 2hw]
    maxima = ScalarBatchNorm(name='bn')(maxima, train)
    fc = nn.Dense(
        1,
        kernel_init=nn.initializers.constant(1.0 / self.hw),
        bias_init=nn.initializers.zeros,
        name='fc',
    )
    per_direction = fc(maxima.reshape(p_size, g_size, 2, self.hw))[..., 0]  # [p, g, 2]
    logits = per_direction.sum(axis=-1)
    return ScalarBatchNorm(name='logit_bn')(logits, train)


def _precision(dtype: Any) -> Any:
  """Full float32 precision for float32 matmuls (GPUs would otherwise use TF32)."""
  return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def _flat_maps(maps: jnp.ndarray, hw: int, what: str) -> jnp.ndarray:
  """[n, h, w, c] or [n, hw, c] -> [n, hw, c], checking the number of locations."""
  if maps.ndim == 4:
    maps = maps.reshape(maps.shape[0], maps.shape[1] * maps.shape[2], maps.shape[3])
  if maps.ndim != 3 or maps.shape[1] != hw:
    raise ValueError(
        f'QAConv {what} maps must be [n, h*w={hw}, c] or [n, h, w, c] with h*w = {hw}, got '
        f'{maps.shape}; the matcher was built for {hw} locations (input size / 16 for layer3).'
    )
  return maps


def qaconv_batch_scores(
    matcher: QAConvMatcher,
    matcher_variables: Mapping[str, Any],
    maps: jnp.ndarray,
    train: bool = True,
) -> tuple[jnp.ndarray, Any]:
  """All-pairs logits [B, B] of a batch's maps against themselves, for the training losses.

  Returns:
    (scores, batch_stats): in training, the updated matcher BatchNorm statistics; in evaluation,
    the unchanged ones.
  """
  if not train:
    return matcher.apply(matcher_variables, maps, maps, train=False), matcher_variables[
        'batch_stats']
  scores, updates = matcher.apply(
      matcher_variables, maps, maps, train=True, mutable=['batch_stats']
  )
  return scores, updates['batch_stats']


# ----------------------------------------------------------------------------- all-pairs scoring


def _folded_head(variables: Mapping[str, Any]) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """(w [hw], alpha, beta) of the inference-mode head (see the module docstring)."""
  params, stats = variables['params'], variables['batch_stats']

  def affine(name):
    a = params[name]['scale'][0] * lax.rsqrt(stats[name]['var'][0] + BN_EPSILON)
    return a, params[name]['bias'][0] - stats[name]['mean'][0] * a

  a1, b1 = affine('bn')
  a2, b2 = affine('logit_bn')
  w = params['fc']['kernel'][:, 0].astype(jnp.float32)
  fc_bias = params['fc']['bias'][0]
  return w, a2 * a1, a2 * 2.0 * (b1 * jnp.sum(w) + fc_bias) + b2


def _fused_block(
    q: jnp.ndarray, g: jnp.ndarray, w: jnp.ndarray, query_chunk: int, gallery_chunk: int,
    dtype: Any,
) -> jnp.ndarray:
  """sum_i w_i max_j S_ij + sum_j w_j max_i S_ij for q [pb, hw, c] x g [gb, hw, c] -> [pb, gb].

  Loops (lax.map) over query_chunk x gallery_chunk sub-blocks: each step is one
  [qc*hw, c] x [c, gc*hw] matmul whose result is reduced to maxima at once, so only one
  sub-block's scores exist at a time (small enough to stay in cache on a CPU).
  """
  pb, hw, c = q.shape
  gb = g.shape[0]
  qc, gc = query_chunk, gallery_chunk
  q_chunks = q.reshape(pb // qc, qc * hw, c)
  g_chunks = g.reshape(gb // gc, gc * hw, c)
  precision = _precision(dtype)

  def one_query_chunk(qx):
    def one_gallery_chunk(gx):
      s = lax.dot_general(
          qx, gx, (((1,), (1,)), ((), ())),
          preferred_element_type=jnp.float32, precision=precision,
      ).reshape(qc, hw, gc, hw)  # [qc, i, gc, j]
      best_gallery = jnp.einsum('pig,i->pg', s.max(axis=3), w, precision=_HIGHEST)  # max over j, weight w_i
      best_query = jnp.einsum('pgj,j->pg', s.max(axis=1), w, precision=_HIGHEST)  # max over i, weight w_j
      return best_gallery + best_query

    return lax.map(one_gallery_chunk, g_chunks)  # [gb/gc, qc, gc]

  raw = lax.map(one_query_chunk, q_chunks)  # [pb/qc, gb/gc, qc, gc]
  return raw.transpose(0, 2, 1, 3).reshape(pb, gb)


@functools.partial(
    jax.jit, static_argnames=('method', 'hw', 'query_chunk', 'gallery_chunk', 'dtype')
)
def _score_query_block(
    variables: Mapping[str, Any], q: jnp.ndarray, gallery_blocks: jnp.ndarray, *, method: str,
    hw: int, query_chunk: int, gallery_chunk: int, dtype: Any,
) -> jnp.ndarray:
  """Logits of one query block [pb, hw, c] against all gallery blocks [nb, gb, hw, c] -> [pb, nb*gb]."""
  if method == 'fused':
    w, alpha, beta = _folded_head(variables)

    def one(gblk):
      return alpha * _fused_block(q, gblk, w, query_chunk, gallery_chunk, dtype) + beta
  else:
    matcher = QAConvMatcher(hw, dtype=dtype)

    def one(gblk):
      return matcher.apply(variables, q, gblk, train=False)

  out = lax.map(one, gallery_blocks)  # [nb, pb, gb]
  return out.transpose(1, 0, 2).reshape(q.shape[0], -1)


def default_chunks() -> tuple[int, int]:
  """(query_chunk, gallery_chunk) of the fused path for the default backend.

  Measured on a 2-core AMD EPYC (AVX2) with 24x8x128 maps: (1, 16) keeps each sub-block's
  scores (192 x 3072 floats) in cache. Accelerators prefer bigger matmuls.
  """
  return (1, 16) if jax.default_backend() == 'cpu' else (32, 32)


def pairwise_scores(
    matcher_variables: Mapping[str, Any],
    query_maps: Any,
    gallery_maps: Any,
    *,
    query_block: int = 128,
    gallery_block: int = 128,
    dtype: Any = jnp.float32,
    method: str = 'fused',
    query_chunk: int | None = None,
    gallery_chunk: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
  """QAConv logits [P, G] (higher = more similar) of all query/gallery pairs, in inference mode.

  The query blocks of `query_block` maps are split over `devices` (default: every device of
  every process): each round, every device scores one query block against the whole gallery,
  in blocks of `gallery_block` maps (lax.map). A device holds the gallery maps, its query block,
  the block's [query_block, G] logits and one sub-block's scores: memory per device does not
  grow with the number of queries. In a job of several processes, every process calls this with
  the same arguments (all maps on every process, as the embedding path gathers them) and gets
  the whole [P, G].

  Args:
    matcher_variables: {'params', 'batch_stats'} of a `QAConvMatcher`.
    query_maps: [P, hw, c] or [P, h, w, c] feature maps (numpy or jax).
    gallery_maps: [G, hw, c] or [G, h, w, c].
    query_block, gallery_block: block sizes (inputs are zero-padded to multiples, then cut).
      `query_block` shrinks so that every device gets a block when there are few queries.
    dtype: jnp.float32, or jnp.bfloat16 (bfloat16 inputs, float32 accumulation and maxima).
    method: 'fused' (sub-block matmul reduced to maxima at once, folded head) or 'direct'
      (the [pb, gb, hw, hw] block tensor and the literal BN/FC/BN layers).
    query_chunk, gallery_chunk: the fused path's sub-block (default `default_chunks()`); must
      divide the block sizes.
    devices: the devices to split the query blocks over (default `jax.devices()`).
    progress: called on the host after each round with (pairs scored so far, all pairs), e.g.
      to show pairs/s and the time left.

  Returns:
    float32 numpy array [P, G]. The reference ranks by distance = -logit.
  """
  if method not in ('fused', 'direct'):
    raise ValueError(f"pairwise_scores: method must be 'fused' or 'direct', got {method!r}.")
  dtype = jnp.dtype(dtype)
  if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise ValueError(f'pairwise_scores: dtype must be float32 or bfloat16, got {dtype}.')
  hw = int(matcher_variables['params']['fc']['kernel'].shape[0])
  q = _flat_maps(_local(query_maps), hw, 'query')
  g = _flat_maps(_local(gallery_maps), hw, 'gallery')
  if q.shape[2] != g.shape[2]:
    raise ValueError(
        f'pairwise_scores: query maps have {q.shape[2]} channels, gallery maps {g.shape[2]}.'
    )
  num_q, num_g = q.shape[0], g.shape[0]
  out = np.zeros((num_q, num_g), np.float32)
  if num_q == 0 or num_g == 0:
    return out
  devices = tuple(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError('pairwise_scores: devices is empty.')
  default_qc, default_gc = default_chunks()
  qc = query_chunk or min(default_qc, query_block)
  gc = gallery_chunk or min(default_gc, gallery_block)
  if query_block % qc or gallery_block % gc:
    raise ValueError(
        f'pairwise_scores: query_chunk {qc} must divide query_block {query_block} and '
        f'gallery_chunk {gc} gallery_block {gallery_block}.'
    )
  # Do not pad a small set up to a whole block (nor leave devices idle for want of blocks).
  per_device = -(-num_q // len(devices))
  query_block = min(query_block, -(-per_device // qc) * qc)
  gallery_block = min(gallery_block, -(-num_g // gc) * gc)
  round_rows = query_block * len(devices)
  q = _pad_rows(q.astype(dtype), round_rows)
  g = _pad_rows(g.astype(dtype), gallery_block).reshape(-1, gallery_block, hw, g.shape[2])
  mesh = jax.sharding.Mesh(np.asarray(devices), ('blocks',))
  split = NamedSharding(mesh, PartitionSpec('blocks'))
  replicated = NamedSharding(mesh, PartitionSpec())
  variables = jax.tree.map(lambda x: _place(_local(x), replicated), dict(matcher_variables))
  gallery = _place(g, replicated)
  score_round = _round_scorer(mesh, method=method, hw=hw, query_chunk=qc, gallery_chunk=gc,
                              dtype=dtype)
  pending = None  # Copy the previous round to the host while the next one computes.
  for start in range(0, q.shape[0], round_rows):
    result = score_round(variables, _place(q[start:start + round_rows], split), gallery)
    if pending is not None:
      _store(out, *pending, progress)
    pending = (start, result)
  _store(out, *pending, progress)
  return out


def _local(x: Any) -> np.ndarray | jax.Array:
  """`x` as an array of this process: a jax array of this process's devices stays where it is
  (no copy to the host); a replicated one spanning other processes gives its local copy."""
  if isinstance(x, jax.Array):
    return x if x.is_fully_addressable else x.addressable_data(0)
  return np.asarray(x)


def _place(x: np.ndarray | jax.Array, sharding: NamedSharding) -> jax.Array:
  """`x` (the whole array, on every process) laid out as `sharding`; every process places only
  the parts of its own devices."""
  if isinstance(x, jax.Array) and jax.process_count() == 1:
    return jax.device_put(x, sharding)
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


@functools.lru_cache(maxsize=16)
def _round_scorer(mesh: jax.sharding.Mesh, **kwargs) -> Callable[..., jax.Array]:
  """jit((variables, queries [D * pb, hw, c] split over the mesh, gallery blocks) -> logits
  [D * pb, nb * gb] split the same way): every device scores its query block (`kwargs` as
  `_score_query_block`)."""
  blocks = PartitionSpec('blocks')
  return jax.jit(jax.shard_map(
      lambda variables, q, gallery: _score_query_block(variables, q, gallery, **kwargs),
      mesh=mesh, in_specs=(PartitionSpec(), blocks, PartitionSpec()), out_specs=blocks))


def _pad_rows(x: np.ndarray | jax.Array, multiple: int) -> np.ndarray | jax.Array:
  """Zero-pads the first axis to a multiple of `multiple` (numpy stays numpy, jax stays jax)."""
  extra = -x.shape[0] % multiple
  pad = ((0, extra),) + ((0, 0),) * (x.ndim - 1)
  return (jnp.pad(x, pad) if isinstance(x, jax.Array) else np.pad(x, pad)) if extra else x


def _store(out: np.ndarray, start: int, block: jax.Array,
           progress: Callable[[int, int], None] | None) -> None:
  """Copies a round's rows into `out` (gathered from every process), dropping the padding."""
  if block.is_fully_addressable:
    rows = np.asarray(block)
  else:
    rows = np.asarray(multihost_utils.process_allgather(block, tiled=True))
  count = min(rows.shape[0], out.shape[0] - start)
  out[start:start + count] = rows[:count, :out.shape[1]]
  if progress is not None:
    progress((start + count) * out.shape[1], out.size)
