"""AutoAugment (ImageNet policy) and AugMix as stateless TensorFlow transforms.

Both are built from the same image operations on uint8 images [H, W, 3] (PIL `ImageOps` /
`ImageEnhance` semantics, written here from their definitions): posterize, solarize,
autocontrast, equalize, invert, the enhance blends (colour, contrast, brightness, sharpness)
and the geometric ops (rotate, shear, translate) through `augment_primitives.warp_affine`
(nearest neighbour, fill 0). Every random choice comes from one `tf.random.stateless_*` draw per
transform, exposed by `autoaugment_draws` / `augmix_draws` so tests can replay it.

References: Cubuk et al., "AutoAugment: Learning Augmentation Policies from Data", CVPR 2019
(ImageNet policy and magnitude bins as torchvision's `AutoAugment(IMAGENET)`); Hendrycks et al.,
"AugMix: A Simple Data Processing Method to Improve Robustness and Uncertainty", ICLR 2020.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from data_pipelines.augment_primitives import affine_inverse, check_prob, coin, warp_affine
from data_pipelines.augment_registry import Transform, register_op

# ----------------------------------------------------------------------------- image ops


def posterize(image: tf.Tensor, bits: tf.Tensor | int) -> tf.Tensor:
  """Keeps the `bits` (0..8) most significant bits of every value."""
  shift = 8 - tf.cast(bits, tf.int32)
  x = tf.cast(image, tf.int32)
  return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(x, shift), shift), tf.uint8)


def solarize(image: tf.Tensor, threshold: tf.Tensor | float) -> tf.Tensor:
  """Values >= threshold become 255 - value."""
  x = tf.convert_to_tensor(image)
  return tf.where(tf.cast(x, tf.float32) >= tf.cast(threshold, tf.float32), 255 - x, x)


def invert(image: tf.Tensor) -> tf.Tensor:
  """255 - value."""
  return 255 - tf.convert_to_tensor(image)


def autocontrast(image: tf.Tensor) -> tf.Tensor:
  """Per channel, stretches [min, max] to [0, 255]: floor((x - lo) * 255 / (hi - lo)).

  A constant channel is left as is. Integer arithmetic, so exact.
  """
  x = tf.cast(image, tf.int32)
  lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
  hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
  span = hi - lo
  stretched = (x - lo) * 255 // tf.maximum(span, 1)
  return tf.cast(tf.where(span > 0, stretched, x), tf.uint8)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
  """PIL `ImageOps.equalize` on one uint8 channel [H, W]."""
  x = tf.cast(channel, tf.int32)
  hist = tf.math.bincount(x, minlength=256, maxlength=256, dtype=tf.int32)
  last = tf.gather(hist, tf.reduce_max(x))  # count of the largest value present
  step = (tf.reduce_sum(hist) - last) // 255
  lut = tf.minimum((tf.cumsum(hist, exclusive=True) + step // 2) // tf.maximum(step, 1), 255)
  return tf.cast(tf.where(step > 0, tf.gather(lut, x), x), tf.uint8)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """PIL `ImageOps.equalize`, per channel.

  With the histogram h of a channel and step = (sum(h) - h[max value]) // 255, value v maps to
  min(255, (step // 2 + sum(h[:v])) // step); a channel with step 0 is left as is.
  """
  channels = tf.unstack(tf.convert_to_tensor(image), axis=-1)
  return tf.stack([_equalize_channel(c) for c in channels], axis=-1)


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
  """PIL `ImageEnhance`: degenerate + factor * (image - degenerate), clipped, rounded."""
  image = tf.cast(image, tf.float32)
  out = degenerate + tf.cast(factor, tf.float32) * (image - degenerate)
  return tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)


def _gray(image: tf.Tensor) -> tf.Tensor:
  """ITU-R 601-2 luma (float, not rounded), [H, W, 1]."""
  x = tf.cast(image, tf.float32)
  return 0.299 * x[..., :1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:]


def color(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
  """Saturation: blend with the per-pixel luma (factor 0: grey, 1: unchanged)."""
  return _blend(_gray(image), image, factor)


def contrast(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
  """Contrast: blend with the mean luma of the image."""
  return _blend(tf.reduce_mean(_gray(image)), image, factor)


def brightness(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
  """Brightness: blend with black."""
  return _blend(tf.constant(0.0), image, factor)


_SMOOTH = [[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]


def sharpness(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
  """Sharpness: blend with PIL's SMOOTH filter (3x3, centre 5, others 1, / 13), rounded.

  The one-pixel border keeps its values in the smoothed image, as in PIL. Needs H, W >= 3.
  """
  x = tf.cast(image, tf.float32)
  kernel = tf.tile(tf.constant(_SMOOTH)[:, :, None, None] / 13.0, [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], 'VALID')[0]
  smooth = tf.round(smooth)
  inside = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(inside, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), x)
  return _blend(degenerate, image, factor)


def _size(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  shape = tf.shape(image)
  return tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)


def rotate(image: tf.Tensor, degrees: tf.Tensor | float) -> tf.Tensor:
  """Counter-clockwise (on screen) rotation about the image centre, fill 0."""
  h, w = _size(image)
  params = tf.stack([tf.cast(degrees, tf.float32), 0.0, 0.0, 1.0, 0.0])
  return warp_affine(image, affine_inverse(params, h, w))


def shear_x(image: tf.Tensor, m: tf.Tensor | float) -> tf.Tensor:
  """PIL shear: output (x, y) takes input (x + m y, y), fill 0."""
  m = tf.cast(m, tf.float32)
  return warp_affine(image, tf.stack([1.0, m, 0.0, 0.0, 1.0, 0.0]))


def shear_y(image: tf.Tensor, m: tf.Tensor | float) -> tf.Tensor:
  """PIL shear: output (x, y) takes input (x, m x + y), fill 0."""
  m = tf.cast(m, tf.float32)
  return warp_affine(image, tf.stack([1.0, 0.0, 0.0, m, 1.0, 0.0]))


def translate_x(image: tf.Tensor, pixels: tf.Tensor | float) -> tf.Tensor:
  """PIL translate: output (x, y) takes input (x + pixels, y), fill 0."""
  p = tf.cast(pixels, tf.float32)
  return warp_affine(image, tf.stack([1.0, 0.0, p, 0.0, 1.0, 0.0]))


def translate_y(image: tf.Tensor, pixels: tf.Tensor | float) -> tf.Tensor:
  """PIL translate: output (x, y) takes input (x, y + pixels), fill 0."""
  p = tf.cast(pixels, tf.float32)
  return warp_affine(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, p]))


def _switch(index: tf.Tensor, branches: list[Callable[[], tf.Tensor]]) -> tf.Tensor:
  """`tf.switch_case`; eagerly, just the chosen branch (same result, no per-call tracing)."""
  if tf.executing_eagerly():
    return branches[int(index)]()
  return tf.switch_case(index, branches)


# ----------------------------------------------------------------------------- AutoAugment

# The ImageNet policy (Cubuk et al., appendix; torchvision AutoAugmentPolicy.IMAGENET):
# 25 sub-policies of two (op, probability, magnitude bin) each.
IMAGENET_POLICY: tuple[tuple[tuple[str, float, int | None], ...], ...] = (
    (('Posterize', 0.4, 8), ('Rotate', 0.6, 9)),
    (('Solarize', 0.6, 5), ('AutoContrast', 0.6, None)),
    (('Equalize', 0.8, None), ('Equalize', 0.6, None)),
    (('Posterize', 0.6, 7), ('Posterize', 0.6, 6)),
    (('Equalize', 0.4, None), ('Solarize', 0.2, 4)),
    (('Equalize', 0.4, None), ('Rotate', 0.8, 8)),
    (('Solarize', 0.6, 3), ('Equalize', 0.6, None)),
    (('Posterize', 0.8, 5), ('Equalize', 1.0, None)),
    (('Rotate', 0.2, 3), ('Solarize', 0.6, 8)),
    (('Equalize', 0.6, None), ('Posterize', 0.4, 6)),
    (('Rotate', 0.8, 8), ('Color', 0.4, 0)),
    (('Rotate', 0.4, 9), ('Equalize', 0.6, None)),
    (('Equalize', 0.0, None), ('Equalize', 0.8, None)),
    (('Invert', 0.6, None), ('Equalize', 1.0, None)),
    (('Color', 0.6, 4), ('Contrast', 1.0, 8)),
    (('Rotate', 0.8, 8), ('Color', 1.0, 2)),
    (('Color', 0.8, 8), ('Solarize', 0.8, 7)),
    (('Sharpness', 0.4, 7), ('Invert', 0.6, None)),
    (('ShearX', 0.6, 5), ('Equalize', 1.0, None)),
    (('Color', 0.4, 0), ('Equalize', 0.6, None)),
    (('Equalize', 0.4, None), ('Solarize', 0.2, 4)),
    (('Solarize', 0.6, 5), ('AutoContrast', 0.6, None)),
    (('Invert', 0.6, None), ('Equalize', 1.0, None)),
    (('Color', 0.6, 4), ('Contrast', 1.0, 8)),
    (('Equalize', 0.8, None), ('Equalize', 0.6, None)),
)

NUM_BINS = 10


def autoaugment_magnitude(name: str, magnitude_bin: int | None, height: int | None = None,
                          width: int | None = None) -> float:
  """The unsigned magnitude of bin `magnitude_bin` (0..9), torchvision's bins.

  ShearX/Y: linspace(0, 0.3); TranslateX/Y: linspace(0, 150 / 331 * W or H); Rotate:
  linspace(0, 30) degrees; Color/Contrast/Brightness/Sharpness: linspace(0, 0.9) (factor
  1 +- magnitude); Posterize: 8 - round(bin / 2.25) bits; Solarize: linspace(255, 0).
  Ops without a magnitude give 0.
  """
  if magnitude_bin is None:
    return 0.0
  frac = magnitude_bin / (NUM_BINS - 1)
  if name in ('ShearX', 'ShearY'):
    return 0.3 * frac
  if name == 'TranslateX':
    return 150.0 / 331.0 * width * frac
  if name == 'TranslateY':
    return 150.0 / 331.0 * height * frac
  if name == 'Rotate':
    return 30.0 * frac
  if name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    return 0.9 * frac
  if name == 'Posterize':
    return float(8 - round(magnitude_bin / ((NUM_BINS - 1) / 4)))
  if name == 'Solarize':
    return 255.0 * (1.0 - frac)
  return 0.0


SIGNED_OPS = ('ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate', 'Color', 'Contrast',
              'Brightness', 'Sharpness')


def apply_named_op(image: tf.Tensor, name: str, magnitude: tf.Tensor | float) -> tf.Tensor:
  """Applies AutoAugment op `name` with its signed magnitude (enhance ops: factor 1 + m)."""
  ops: dict[str, Callable[[], tf.Tensor]] = {
      'ShearX': lambda: shear_x(image, magnitude),
      'ShearY': lambda: shear_y(image, magnitude),
      'TranslateX': lambda: translate_x(image, magnitude),
      'TranslateY': lambda: translate_y(image, magnitude),
      'Rotate': lambda: rotate(image, magnitude),
      'Color': lambda: color(image, 1.0 + magnitude),
      'Contrast': lambda: contrast(image, 1.0 + magnitude),
      'Brightness': lambda: brightness(image, 1.0 + magnitude),
      'Sharpness': lambda: sharpness(image, 1.0 + magnitude),
      'Posterize': lambda: posterize(image, tf.cast(magnitude, tf.int32)),
      'Solarize': lambda: solarize(image, magnitude),
      'AutoContrast': lambda: autocontrast(image),
      'Equalize': lambda: equalize(image),
      'Invert': lambda: invert(image),
  }
  if name not in ops:
    raise ValueError(f'Unknown AutoAugment op {name!r}; known: {sorted(ops)}.')
  return ops[name]()


def autoaugment_draws(seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(sub-policy index int32 in [0, 25), u float32 [5]) of one `autoaugment` call.

  u[0] is the coin of the whole transform, u[1 + i] < p_i applies op i of the sub-policy and
  u[3 + i] < 0.5 negates its magnitude (signed ops only).
  """
  index_seed, u_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  index = tf.random.stateless_uniform([], index_seed, 0, len(IMAGENET_POLICY), dtype=tf.int32)
  return index, tf.random.stateless_uniform([5], u_seed)


@register_op('autoaugment')
def autoaugment(prob: float = 1.0) -> Transform:
  """With probability `prob`, one random sub-policy of the AutoAugment ImageNet policy.

  torchvision `AutoAugment(AutoAugmentPolicy.IMAGENET)` semantics (uniform sub-policy, each op
  applied with its probability, signed magnitudes negated with probability 1/2), nearest
  neighbour warps with fill 0; the draws are `autoaugment_draws(seed)`. FastReID applies it
  (INPUT.AUTOAUG) with a probability, before resizing. The policy is held as tables indexed
  by the drawn sub-policy, so the graph has one branch per distinct op, not per sub-policy.
  """
  prob = check_prob('autoaugment: prob', prob)
  names = sorted({name for policy in IMAGENET_POLICY for name, _, _ in policy})
  op_table = tf.constant([[names.index(n) for n, _, _ in pol] for pol in IMAGENET_POLICY])
  prob_table = tf.constant([[p for _, p, _ in pol] for pol in IMAGENET_POLICY], tf.float32)
  magnitude_table = tf.constant(
      [[autoaugment_magnitude(n, m) for n, _, m in pol] for pol in IMAGENET_POLICY], tf.float32)
  signed_table = tf.constant([[n in SIGNED_OPS for n, _, _ in pol] for pol in IMAGENET_POLICY])

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    index, u = autoaugment_draws(seed)

    def policy() -> tf.Tensor:
      out = image
      for i in range(2):
        m = magnitude_table[index, i]
        m = tf.where(signed_table[index, i] & (u[3 + i] < 0.5), -m, m)
        branches = [lambda n=n, im=out, m=m: apply_named_op(im, n, m) for n in names]
        out = tf.cond(u[1 + i] < prob_table[index, i],
                      lambda b=branches, i=i: _switch(op_table[index, i], b), lambda im=out: im)
      return out

    out = tf.cond(u[0] < prob, policy, lambda: image)
    return tf.ensure_shape(out, image.shape)

  return apply


# ----------------------------------------------------------------------------- AugMix

# The operations of AugMix (Hendrycks et al., `augmentations`); 'all' adds the enhance ops,
# which overlap ImageNet-C corruptions and are off in the paper's default.
AUGMIX_OPS = ('AutoContrast', 'Equalize', 'Posterize', 'Rotate', 'Solarize', 'ShearX',
              'ShearY', 'TranslateX', 'TranslateY')
AUGMIX_OPS_ALL = AUGMIX_OPS + ('Color', 'Contrast', 'Brightness', 'Sharpness')


def augmix_magnitude(name: str, level: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """AugMix's magnitude of `name` at `level` in [0.1, severity], before the random sign.

  int_parameter(l, M) = floor(l * M / 10); float_parameter(l, M) = l * M / 10.
  Posterize: 4 - int_parameter(l, 4) bits; Solarize: 256 - int_parameter(l, 256);
  Rotate: int_parameter(l, 30) degrees; Shear: float_parameter(l, 0.3); TranslateX/Y:
  int_parameter(l, W / 3 or H / 3) pixels; enhance ops: float_parameter(l, 1.8) + 0.1 - 1
  (the factor is 1 + this). AutoContrast/Equalize: 0.
  """
  level = tf.cast(level, tf.float32)
  int_param = lambda maxval: tf.floor(level * maxval / 10.0)
  if name == 'Posterize':
    return 4.0 - int_param(4.0)
  if name == 'Solarize':
    return 256.0 - int_param(256.0)
  if name == 'Rotate':
    return int_param(30.0)
  if name in ('ShearX', 'ShearY'):
    return level * 0.3 / 10.0
  if name == 'TranslateX':
    return int_param(width / 3.0)
  if name == 'TranslateY':
    return int_param(height / 3.0)
  if name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    return level * 1.8 / 10.0 + 0.1 - 1.0
  return tf.constant(0.0)


def augmix_draws(seed: tf.Tensor, width: int, max_depth: int, depth: int, severity: float,
                 alpha: float, num_ops: int) -> dict[str, tf.Tensor]:
  """All random draws of one `augmix` call.

  Returns:
    {'weights': float32 [width] ~ Dirichlet(alpha), 'mix': float32 ~ Beta(alpha, alpha),
     'depth': int32 [width] (depth if > 0 else uniform in [1, max_depth]),
     'ops': int32 [width, max_depth] uniform op indices, 'levels': float32 [width, max_depth]
     ~ U(0.1, severity), 'negate': bool [width, max_depth] (probability 1/2)}.
  """
  s = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
  gammas = tf.random.stateless_gamma([width + 2], s[0], alpha=alpha)
  weights = gammas[:width] / tf.reduce_sum(gammas[:width])
  mix = gammas[width] / (gammas[width] + gammas[width + 1])
  if depth > 0:
    depths = tf.fill([width], depth)
  else:
    depths = tf.random.stateless_uniform([width], s[1], 1, max_depth + 1, dtype=tf.int32)
  shape = [width, max_depth]
  return {
      'weights': weights, 'mix': mix, 'depth': depths,
      'ops': tf.random.stateless_uniform(shape, s[2], 0, num_ops, dtype=tf.int32),
      'levels': tf.random.stateless_uniform(shape, s[3], 0.1, severity),
      'negate': tf.random.stateless_uniform(shape, s[4]) < 0.5,
  }


@register_op('augmix')
def augmix(severity: float = 3.0, width: int = 3, depth: int = -1, alpha: float = 1.0,
           all_ops: bool = False, prob: float = 1.0) -> Transform:
  """With probability `prob`, AugMix (Hendrycks et al., ICLR 2020, Algorithm 1).

  `width` chains each apply `depth` (or, for depth <= 0, a uniform 1..3) random ops of
  AUGMIX_OPS (AUGMIX_OPS_ALL with all_ops) to the uint8 image, each op with a level
  U(0.1, severity) (`augmix_magnitude`) and a random sign for signed ops. The chains are mixed
  with Dirichlet(alpha) weights w and the result blended with the original by m ~ Beta(alpha,
  alpha): round((1 - m) x + m sum_i w_i chain_i(x)) on 0..255 values (the mixing is linear, so
  this equals mixing after a per-channel normalisation). Draws: `augmix_draws`.
  """
  prob = check_prob('augmix: prob', prob)
  if int(width) < 1:
    raise ValueError(f'augmix: width must be >= 1, got {width}.')
  if int(depth) > 3 or not 0.1 < float(severity) <= 10.0 or float(alpha) <= 0.0:
    raise ValueError('augmix: need depth <= 3 (<= 0: random 1..3), 0.1 < severity <= 10 and '
                     f'alpha > 0; got depth={depth}, severity={severity}, alpha={alpha}.')
  names = AUGMIX_OPS_ALL if all_ops else AUGMIX_OPS
  max_depth = int(depth) if int(depth) > 0 else 3

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    h, w = image.shape[0], image.shape[1]
    if h is None or w is None:
      raise ValueError('augmix needs a static image size; put it after resize.')
    coin_seed, draw_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    draws = augmix_draws(draw_seed, int(width), max_depth, int(depth), float(severity),
                         float(alpha), len(names))

    def op_branches(current: tf.Tensor, level: tf.Tensor, negate: tf.Tensor):
      def branch(name: str) -> tf.Tensor:
        m = augmix_magnitude(name, level, h, w)
        if name in ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY'):
          m = tf.where(negate, -m, m)
        return tf.ensure_shape(apply_named_op(current, name, m), image.shape)
      return [lambda n=n: branch(n) for n in names]

    def step(k, current, mix):
      # Step k is op j of chain i; a chain starts from the original image and, after its
      # last step, is added to the mix with its weight.
      i, j = k // max_depth, k % max_depth
      current = tf.cond(tf.equal(j, 0), lambda: image, lambda: current)
      branches = op_branches(current, draws['levels'][i, j], draws['negate'][i, j])
      current = tf.cond(j < draws['depth'][i], lambda: _switch(draws['ops'][i, j], branches),
                        lambda: current)
      mix = tf.cond(tf.equal(j, max_depth - 1),
                    lambda: mix + draws['weights'][i] * tf.cast(current, tf.float32),
                    lambda: mix)
      return k + 1, current, mix

    def mixed() -> tf.Tensor:
      _, _, mix = tf.while_loop(
          lambda k, *_: k < int(width) * max_depth, step,
          (tf.constant(0), image, tf.zeros(tf.shape(image), tf.float32)))
      out = (1.0 - draws['mix']) * tf.cast(image, tf.float32) + draws['mix'] * mix
      return tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)

    out = tf.cond(coin(coin_seed, prob), mixed, lambda: image)
    return tf.ensure_shape(out, image.shape)

  return apply

