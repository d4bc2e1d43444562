"""Image transforms for re-ID training, as TensorFlow ops on one uint8 image [H, W, 3].

Every transform is built by a factory, `factory(**params) -> transform`, and a transform is a
function `(image, seed) -> image` where `seed` is a stateless seed (int32/int64 tensor of
shape [2]). All randomness comes from `tf.random.stateless_*` ops, so the output is a pure
function of (image, seed), eagerly and inside `tf.data` maps alike. Each factory registers
itself in `TRANSFORMS` with `augment_registry.register_op`, declaring the `config.augment` keys
that supply its defaults: resize, flip, pad_crop, random_erasing, color_jitter,
random_grayscale, cutout, random_occlusion (QAConv), random_affine, rotation here, autoaugment
and augmix in `data_pipelines.autoaugment` (imported below, so importing this module registers
every op). `build_train_transform` assembles FastReID's training recipe from the
`config.augment` settings, or the ordered chain `config.augment.ops`.

Batch transforms (`BATCH_TRANSFORMS`: random_patch) take a batch and one seed per image; they
run after batching (`build_batch_transform`, `config.augment.batch_ops`).
"""

from __future__ import annotations

import ast
import inspect
import math
import os
from collections.abc import Sequence
from typing import Any

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

import tensorflow as tf  # pylint: disable=g-import-not-at-top

# pylint: disable=g-import-not-at-top
from data_pipelines import augment_registry
# AutoAugment and AugMix register themselves when their module is imported.
from data_pipelines import autoaugment  # pylint: disable=unused-import
from data_pipelines.augment_primitives import (
    affine_inverse, affine_params, check_prob, coin, to_uint8, warp_affine)
from data_pipelines.augment_registry import (
    BATCH_TRANSFORMS, TRANSFORMS, BatchTransform, Transform, config_defaults, register_batch_op,
    register_op)
# pylint: enable=g-import-not-at-top

# ImageNet mean pixel in 0..255 (0.485, 0.456, 0.406) * 255, rounded to uint8.
IMAGENET_MEAN_UINT8 = (124, 116, 104)
# FastReID's default ColorJitter strengths (INPUT.CJ.*); config.augment.color_jitter_* override.
DEFAULT_JITTER = {'brightness': 0.15, 'contrast': 0.15, 'saturation': 0.1, 'hue': 0.1}


@register_op('resize')
def resize(height: int, width: int) -> Transform:
  """Bilinear resize to [height, width] without antialiasing, rounded back to uint8.

  Half-pixel centres, i.e. `torch.nn.functional.interpolate(mode='bilinear',
  align_corners=False, antialias=False)` on the 0..255 values. The seed is unused.
  """
  if int(height) < 1 or int(width) < 1:
    raise ValueError(f'resize: height and width (config.input) must be >= 1, got {height}x{width}.')
  size = (int(height), int(width))

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    del seed
    out = tf.image.resize(image, size, method='bilinear', antialias=False)
    return tf.ensure_shape(to_uint8(out), (*size, 3))

  return apply


@register_op('flip', config_keys={'prob': 'flip_prob'}, gate='prob')
def flip(prob: float = 0.5) -> Transform:
  """Horizontal flip with probability `prob`; the coin is `coin(seed, prob)`."""
  prob = check_prob('flip: prob (config.augment.flip_prob)', prob)

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    return tf.cond(coin(seed, prob), lambda: tf.reverse(image, axis=[1]), lambda: image)

  return apply


def crop_offsets(seed: tf.Tensor, padding: int) -> tf.Tensor:
  """(top, left) of the crop of `pad_crop`: uniform integers in [0, 2 * padding], int32 [2]."""
  return tf.random.stateless_uniform([2], seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32)


@register_op('pad_crop', config_keys={'padding': 'pad'}, gate='padding')
def pad_crop(padding: int = 10) -> Transform:
  """Zero-pad every side by `padding`, then crop a random window of the original size.

  torchvision `Pad(padding)` followed by `RandomCrop(size)`: the window's top-left corner is
  `crop_offsets(seed, padding)` in the padded image.
  """
  if int(padding) < 0:
    raise ValueError(f'pad_crop: padding (config.augment.pad) must be >= 0, got {padding}.')
  padding = int(padding)

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    top_left = crop_offsets(seed, padding)
    out = tf.slice(padded, tf.concat([top_left, [0]], axis=0), tf.shape(image))
    return tf.ensure_shape(out, image.shape)

  return apply


def erasing_box(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                area: tuple[float, float], min_aspect: float,
                max_attempts: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """The rectangle random erasing fills (Zhong et al., AAAI 2020).

  Draws `max_attempts` candidates at once: area fraction `a ~ U(area)`, aspect ratio `r = h / w`
  log-uniform in [min_aspect, 1 / min_aspect], `h = round(sqrt(a * H * W * r))`,
  `w = round(sqrt(a * H * W / r))`. The first candidate with 1 <= h < H and 1 <= w < W wins;
  its top-left corner is uniform over the positions that keep it inside the image.

  Returns:
    (found, top, left, h, w): bool scalar (False if no candidate fits) and int32 scalars.
  """
  area_seed, aspect_seed, position_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  h_img, w_img = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  target = tf.random.stateless_uniform([max_attempts], area_seed, area[0], area[1]) * h_img * w_img
  log_aspect = math.log(min_aspect)
  aspect = tf.exp(tf.random.stateless_uniform([max_attempts], aspect_seed, log_aspect, -log_aspect))
  hs = tf.round(tf.sqrt(target * aspect))
  ws = tf.round(tf.sqrt(target / aspect))
  fits = (hs >= 1) & (hs < h_img) & (ws >= 1) & (ws < w_img)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  h, w = hs[first], ws[first]
  u = tf.random.stateless_uniform([2], position_seed)
  top = tf.minimum(tf.floor(u[0] * (h_img - h + 1)), h_img - h)
  left = tf.minimum(tf.floor(u[1] * (w_img - w + 1)), w_img - w)
  return (tf.reduce_any(fits), tf.cast(top, tf.int32), tf.cast(left, tf.int32),
          tf.cast(h, tf.int32), tf.cast(w, tf.int32))


@register_op('random_erasing', gate='prob', config_keys={
    'prob': 'random_erasing_prob', 'value': 'random_erasing_value'})
def random_erasing(prob: float = 0.5, area: Sequence[float] = (0.02, 0.4), min_aspect: float = 0.3,
                   value: str | float = 'mean', max_attempts: int = 100) -> Transform:
  """With probability `prob`, fill the `erasing_box` rectangle.

  Args:
    prob: probability of erasing.
    area: (min, max) fraction of the image area the rectangle covers.
    min_aspect: r; the aspect ratio h / w lies in [r, 1 / r].
    value: 'random' (independent uniform 0..255 per pixel and channel), 'mean' (ImageNet mean
      pixel, IMAGENET_MEAN_UINT8) or a number in [0, 255].
    max_attempts: candidate rectangles tried before giving up (no erasing).

  The seed splits into three: the coin, the rectangle, the random fill values.
  """
  prob = check_prob('random_erasing: prob (config.augment.random_erasing_prob)', prob)
  area = tuple(float(a) for a in area)
  if len(area) != 2 or not 0.0 < area[0] <= area[1] < 1.0:
    raise ValueError(f'random_erasing: area must be (min, max) with 0 < min <= max < 1, got {area}.')
  if not 0.0 < float(min_aspect) <= 1.0:
    raise ValueError(f'random_erasing: min_aspect must be in (0, 1], got {min_aspect}.')
  if value not in ('random', 'mean') and (isinstance(value, str) or not 0 <= value <= 255):
    raise ValueError("random_erasing: value (config.augment.random_erasing_value) must be 'random', "
                     f"'mean' or a number in [0, 255], got {value!r}.")
  if int(max_attempts) < 1:
    raise ValueError(f'random_erasing: max_attempts must be >= 1, got {max_attempts}.')

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    coin_seed, box_seed, fill_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    shape = tf.shape(image)
    found, top, left, h, w = erasing_box(box_seed, shape[0], shape[1], area, float(min_aspect),
                                         int(max_attempts))

    def erase() -> tf.Tensor:
      # Slices and concatenations: tf.where over the whole image is much slower on CPU.
      fill_shape = tf.stack([h, w, 3])
      if value == 'random':
        fill = tf.random.stateless_uniform(fill_shape, fill_seed, 0, 256, dtype=tf.int32)
        fill = tf.cast(fill, tf.uint8)
      else:
        pixel = IMAGENET_MEAN_UINT8 if value == 'mean' else (round(value),) * 3
        fill = tf.broadcast_to(tf.constant(pixel, tf.uint8), fill_shape)
      band = image[top:top + h]
      band = tf.concat([band[:, :left], fill, band[:, left + w:]], axis=1)
      return tf.concat([image[:top], band, image[top + h:]], axis=0)

    out = tf.cond(found & coin(coin_seed, prob), erase, lambda: image)
    return tf.ensure_shape(out, image.shape)

  return apply


def jitter_factors(seed: tf.Tensor, brightness: float, contrast: float, saturation: float,
                   hue: float) -> tf.Tensor:
  """Random colour jitter factors (b, c, s, hue shift), float32 [4].

  Brightness, contrast and saturation factors are uniform in [max(0, 1 - x), 1 + x] for
  strength x; the hue shift is uniform in [-hue, hue] (a fraction of the colour circle).
  """
  lo = tf.constant([max(0.0, 1.0 - brightness), max(0.0, 1.0 - contrast),
                    max(0.0, 1.0 - saturation), -hue])
  hi = tf.constant([1.0 + brightness, 1.0 + contrast, 1.0 + saturation, hue])
  return lo + (hi - lo) * tf.random.stateless_uniform([4], seed)


def _luma(r: tf.Tensor, g: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """ITU-R 601-2 luma of float colour planes."""
  return 0.299 * r + 0.587 * g + 0.114 * b


def adjust_colors(image: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
  """torchvision `ColorJitter` adjustments with given `jitter_factors`, in fixed order.

  On float 0..255 values, clipped to [0, 255] after each step: brightness `x * b`; contrast
  blends with the mean luma, `m + c * (x - m)`; saturation blends with the per-pixel luma; hue
  rotates the HSV hue by the shift (`tf.image.adjust_hue`, skipped when the shift is 0).
  Rounded to uint8 once at the end.
  """
  # Works on separate colour planes: broadcasting [H, W, 1] against [H, W, 3] is slow on CPU.
  planes = tf.unstack(tf.cast(image, tf.float32), axis=-1)
  planes = [tf.clip_by_value(p * factors[0], 0.0, 255.0) for p in planes]
  mean = tf.reduce_mean(_luma(*planes))
  planes = [tf.clip_by_value(mean + factors[1] * (p - mean), 0.0, 255.0) for p in planes]
  gray = _luma(*planes)
  planes = [tf.clip_by_value(gray + factors[2] * (p - gray), 0.0, 255.0) for p in planes]
  x = tf.stack(planes, axis=-1)
  x = tf.cond(tf.equal(factors[3], 0.0), lambda: x,
              lambda: tf.image.adjust_hue(x / 255.0, factors[3]) * 255.0)
  return to_uint8(x)


@register_op('color_jitter', gate='prob', config_keys={
    'prob': 'color_jitter_prob', **{k: f'color_jitter_{k}' for k in DEFAULT_JITTER}})
def color_jitter(brightness: float = DEFAULT_JITTER['brightness'],
                 contrast: float = DEFAULT_JITTER['contrast'],
                 saturation: float = DEFAULT_JITTER['saturation'],
                 hue: float = DEFAULT_JITTER['hue'], prob: float = 0.5) -> Transform:
  """With probability `prob`, `adjust_colors` with random `jitter_factors`.

  FastReID's `RandomApply([ColorJitter(...)], p)`, except that the four adjustments always run
  in the fixed order brightness, contrast, saturation, hue (torchvision shuffles the order).
  The seed splits into two: the coin, the factors.
  """
  prob = check_prob('color_jitter: prob (config.augment.color_jitter_prob)', prob)
  strengths = {'brightness': brightness, 'contrast': contrast, 'saturation': saturation}
  for name, strength in strengths.items():
    if float(strength) < 0:
      raise ValueError(f'color_jitter: {name} must be >= 0, got {strength}.')
  if not 0.0 <= float(hue) <= 0.5:
    raise ValueError(f'color_jitter: hue must be in [0, 0.5], got {hue}.')

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    coin_seed, factor_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    factors = jitter_factors(factor_seed, float(brightness), float(contrast), float(saturation),
                             float(hue))
    return tf.cond(coin(coin_seed, prob), lambda: adjust_colors(image, factors), lambda: image)

  return apply


@register_op('random_grayscale')
def random_grayscale(prob: float = 0.5) -> Transform:
  """With probability `prob`, the ITU-R 601-2 luma in all three channels (torchvision's
  `RandomGrayscale`, rounded to uint8). Cross-modality re-ID uses it on visible images so that
  the network leans on shape rather than colour, which infrared images do not have (a grey
  image is left as it is).
  """
  prob = check_prob('random_grayscale: prob', prob)

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = tf.convert_to_tensor(image)

    def grey() -> tf.Tensor:
      luma = _luma(*tf.unstack(tf.cast(image, tf.float32), axis=-1))
      return to_uint8(tf.stack([luma] * 3, axis=-1))

    return tf.cond(coin(seed, prob), grey, lambda: image)

  return apply


def _paste_box(image: tf.Tensor, top: tf.Tensor, left: tf.Tensor, fill: tf.Tensor) -> tf.Tensor:
  """`image` with the rectangle at (top, left) of the shape of `fill` [h, w, 3] replaced by it.

  Slices and concatenations (not a full-image `tf.where`, which is much slower on CPU).
  """
  h, w = tf.shape(fill)[0], tf.shape(fill)[1]
  band = image[top:top + h]
  band = tf.concat([band[:, :left], fill, band[:, left + w:]], axis=1)
  return tf.concat([image[:top], band, image[top + h:]], axis=0)


def _fill_pixel(value: str | float, name: str) -> tuple[int, int, int]:
  """An RGB fill colour from 'mean' (IMAGENET_MEAN_UINT8) or a number in [0, 255]."""
  if value == 'mean':
    return IMAGENET_MEAN_UINT8
  if isinstance(value, str) or not 0 <= value <= 255:
    raise ValueError(f"{name}: value must be 'mean' or a number in [0, 255], got {value!r}.")
  return (round(value),) * 3


def cutout_box(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
               length: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """The square of `cutout` (DeVries & Taylor, 2017), clipped to the image.

  Its centre (cy, cx) is uniform over the pixels; it covers rows
  [max(0, cy - length // 2), min(H, cy - length // 2 + length)) and likewise columns.

  Returns:
    (top, left, h, w) int32 scalars; h, w >= 1.
  """
  centre = tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
  cy, cx = centre[0] % height, centre[1] % width
  top, left = tf.maximum(cy - length // 2, 0), tf.maximum(cx - length // 2, 0)
  bottom = tf.minimum(cy - length // 2 + length, height)
  right = tf.minimum(cx - length // 2 + length, width)
  return top, left, bottom - top, right - left


@register_op('cutout')
def cutout(prob: float = 0.5, size: float = 0.5, value: str | float = 0) -> Transform:
  """With probability `prob`, fill a square of side `round(size * min(H, W))` (see `cutout_box`).

  Args:
    prob: probability of cutting out.
    size: side of the square as a fraction of the shorter image side, in (0, 1].
    value: 'mean' (IMAGENET_MEAN_UINT8) or a number in [0, 255] (DeVries & Taylor use 0).

  The seed splits into two: the coin, the square's centre.
  """
  prob = check_prob('cutout: prob', prob)
  if not 0.0 < float(size) <= 1.0:
    raise ValueError(f'cutout: size must be a fraction of the shorter side in (0, 1], got {size}.')
  pixel = _fill_pixel(value, 'cutout')

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    coin_seed, box_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    shape = tf.shape(image)
    side = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    length = tf.maximum(tf.cast(tf.round(float(size) * side), tf.int32), 1)
    top, left, h, w = cutout_box(box_seed, shape[0], shape[1], length)
    fill = tf.broadcast_to(tf.constant(pixel, tf.uint8), tf.stack([h, w, 3]))
    out = tf.cond(coin(coin_seed, prob), lambda: _paste_box(image, top, left, fill),
                  lambda: image)
    return tf.ensure_shape(out, image.shape)

  return apply


def occlusion_box(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor, min_size: float,
                  max_size: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """The white square of QAConv's `RandomOcclusion`: (top, left, side), int32 scalars.

  With S = min(H, W): side s is a uniform integer in [max(1, int(S * min_size)),
  max(that + 1, int(S * max_size))), top in [0, H - s) and left in [0, W - s) (each at least
  one choice), as QAConv's `np.random.randint` calls.
  """
  s_max_img = tf.minimum(height, width)
  s_float = tf.cast(s_max_img, tf.float32)
  lo = tf.maximum(1, tf.cast(tf.floor(s_float * min_size), tf.int32))
  hi = tf.maximum(lo + 1, tf.cast(tf.floor(s_float * max_size), tf.int32))
  u = tf.random.stateless_uniform([3], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
  side = tf.minimum(lo + u[0] % (hi - lo), s_max_img)
  top = u[1] % tf.maximum(height - side, 1)
  left = u[2] % tf.maximum(width - side, 1)
  return top, left, side


@register_op('random_occlusion')
def random_occlusion(min_size: float = 0.0, max_size: float = 0.8, prob: float = 1.0) -> Transform:
  """QAConv's `RandomOcclusion`: a white (255) square of random side at a random position.

  See `occlusion_box`; QAConv's recipe uses min_size=0, max_size=0.8 on every image
  (prob 1). max_size 0 disables it, as in QAConv. The seed splits into two: coin, square.
  """
  prob = check_prob('random_occlusion: prob', prob)
  if not 0.0 <= float(min_size) <= float(max_size) <= 1.0:
    raise ValueError('random_occlusion: need 0 <= min_size <= max_size <= 1, got '
                     f'min_size={min_size}, max_size={max_size}.')
  min_size, max_size = float(min_size), float(max_size)

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    if max_size == 0.0:
      return image
    coin_seed, box_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    shape = tf.shape(image)
    top, left, side = occlusion_box(box_seed, shape[0], shape[1], min_size, max_size)
    fill = tf.fill(tf.stack([side, side, 3]), tf.constant(255, tf.uint8))
    out = tf.cond(coin(coin_seed, prob), lambda: _paste_box(image, top, left, fill),
                  lambda: image)
    return tf.ensure_shape(out, image.shape)

  return apply


@register_op('random_affine')
def random_affine(degrees: float = 10.0, translate: Sequence[float] = (0.0, 0.0),
                  scale: Sequence[float] = (1.0, 1.0), shear: float = 0.0, prob: float = 1.0,
                  fill: float = 0.0) -> Transform:
  """With probability `prob`, torchvision `RandomAffine` (nearest neighbour, constant fill).

  Args:
    degrees: rotation range (-degrees, degrees).
    translate: (fx, fy); shifts up to fx * W and fy * H pixels.
    scale: (min, max) zoom factor.
    shear: shear angle range (-shear, shear) in degrees, along x.
    prob: probability of warping at all.
    fill: value of pixels that come from outside the image.

  See `affine_params` and `affine_inverse`. The seed splits into two: coin, parameters.
  """
  prob = check_prob('random_affine: prob', prob)
  translate = tuple(float(t) for t in translate)
  scale = tuple(float(s) for s in scale)
  if not 0.0 <= float(degrees) <= 180.0:
    raise ValueError(f'random_affine: degrees must be in [0, 180], got {degrees}.')
  if len(translate) != 2 or not all(0.0 <= t <= 1.0 for t in translate):
    raise ValueError(f'random_affine: translate must be (fx, fy) in [0, 1], got {translate}.')
  if len(scale) != 2 or not 0.0 < scale[0] <= scale[1]:
    raise ValueError(f'random_affine: scale must be (min, max) with 0 < min <= max, got {scale}.')
  if not 0.0 <= float(shear) < 90.0:
    raise ValueError(f'random_affine: shear must be in [0, 90) degrees, got {shear}.')
  if not 0 <= float(fill) <= 255:
    raise ValueError(f'random_affine: fill must be in [0, 255], got {fill}.')

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    coin_seed, param_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    shape = tf.shape(image)
    params = affine_params(param_seed, float(degrees), translate, scale, float(shear), shape[0],
                           shape[1])
    inverse = affine_inverse(params, shape[0], shape[1])
    return tf.cond(coin(coin_seed, prob), lambda: warp_affine(image, inverse, float(fill)),
                   lambda: image)

  return apply


@register_op('rotation')
def rotation(degrees: float = 5.0, prob: float = 1.0) -> Transform:
  """torchvision `RandomRotation(degrees)`: `random_affine` with rotation only (QAConv: 5)."""
  return random_affine(degrees=degrees, prob=prob)


def get_transform(name: str, **params: Any) -> Transform:
  """The transform of the op registered as `name`, built with `params`."""
  return TRANSFORMS.get(name)(**params)


def compose(transforms: Sequence[Transform]) -> Transform:
  """Applies `transforms` in order; transform i gets row i of `stateless_split(seed, n)`."""
  transforms = tuple(transforms)

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, max(1, len(transforms)))
    for i, transform in enumerate(transforms):
      image = transform(image, seeds[i])
    return image

  return apply


def parse_op(spec: str) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
  """Splits an op string `'name'` or `'name(arg, key=value, ...)'` (Python literals).

  Returns:
    (name, positional args, keyword args).

  Raises:
    ValueError: not of that form; the message quotes the string.
  """
  hint = (f'config.augment.ops entry {spec!r} must be a transform name, optionally with literal '
          "arguments, e.g. 'flip' or 'random_affine(degrees=10, scale=(0.9, 1.1))'.")
  try:
    node = ast.parse(str(spec).strip(), mode='eval').body
  except SyntaxError as e:
    raise ValueError(hint) from e
  if isinstance(node, ast.Name):
    return node.id, (), {}
  if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
    raise ValueError(hint)
  try:
    args = tuple(ast.literal_eval(a) for a in node.args)
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
  except ValueError as e:
    raise ValueError(hint) from e
  if None in kwargs:
    raise ValueError(hint)
  return node.func.id, args, kwargs


# FastReID's training recipe when config.augment.ops is empty (after resizing), each op left
# out while its gate key holds 0.
DEFAULT_OPS = ('flip', 'pad_crop', 'color_jitter', 'random_erasing')


def build_transform_chain(ops: Sequence[str], aug_cfg: Any, size: tuple[int, int]) -> Transform:
  """The transform chain of `config.augment.ops`, in the listed order.

  Each entry is parsed by `parse_op`. Parameters not given in the entry default to the
  `config.augment` keys the op declares (`register_op(config_keys=...)`: flip_prob; pad;
  random_erasing_prob/_value; color_jitter_*), then to the factory's defaults. 'resize' takes
  no arguments and resizes to `size`; it runs first unless listed elsewhere (e.g. after
  'autoaugment', as FastReID applies AutoAugment to the original image).
  """
  chain = []
  names = []
  for spec in ops:
    name, args, kwargs = parse_op(spec)
    try:
      factory = TRANSFORMS.get(name)
    except ValueError as e:
      raise ValueError(f'config.augment.ops entry {spec!r}: {e}.') from None
    names.append(name)
    if name == 'resize':
      if args or kwargs:
        raise ValueError("config.augment.ops: 'resize' takes no arguments (its size is "
                         'config.input.height/width).')
      chain.append(resize(*size))
      continue
    try:
      given = inspect.signature(factory).bind(*args, **kwargs).arguments
    except TypeError as e:
      raise ValueError(f'config.augment.ops: bad arguments in {spec!r}: {e}.') from e
    defaults = config_defaults(name, aug_cfg)
    gate, key = augment_registry.gate(name) or (None, None)
    if gate in defaults and gate not in given and not defaults[gate]:
      raise ValueError(
          f'config.augment.ops lists {spec!r} but its default {gate} comes from '
          f'config.augment.{key} = {defaults[gate]!r}, so it would never apply; set that key or '
          f"write '{name}({gate}=...)'.")
    chain.append(factory(**{**defaults, **given}))
  if 'resize' not in names:
    chain.insert(0, resize(*size))
  return compose(chain)


def patch_box(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor, area: tuple[float, float],
              min_ratio: float, max_attempts: int = 100
              ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """The patch FastReID's `RandomPatch` cuts: (found, top, left, h, w), int32 scalars.

  Draws `max_attempts` candidates at once: area fraction a ~ U(area), aspect r ~ U(min_ratio,
  1 / min_ratio) (uniform, not log-uniform, as FastReID), h = round(sqrt(a H W r)),
  w = round(sqrt(a H W / r)); the first with 1 <= h < H and 1 <= w < W wins, its top-left
  corner uniform over the positions that keep it inside.
  """
  area_seed, aspect_seed, position_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  h_img, w_img = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  target = tf.random.stateless_uniform([max_attempts], area_seed, area[0], area[1]) * h_img * w_img
  aspect = tf.random.stateless_uniform([max_attempts], aspect_seed, min_ratio, 1.0 / min_ratio)
  hs = tf.round(tf.sqrt(target * aspect))
  ws = tf.round(tf.sqrt(target / aspect))
  fits = (hs >= 1) & (hs < h_img) & (ws >= 1) & (ws < w_img)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  h, w = hs[first], ws[first]
  u = tf.random.stateless_uniform([2], position_seed)
  top = tf.minimum(tf.floor(u[0] * (h_img - h + 1)), h_img - h)
  left = tf.minimum(tf.floor(u[1] * (w_img - w + 1)), w_img - w)
  return (tf.reduce_any(fits), tf.cast(top, tf.int32), tf.cast(left, tf.int32),
          tf.cast(h, tf.int32), tf.cast(w, tf.int32))


def random_patch_draws(seed: tf.Tensor, batch_size: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(donor offset int32 in [1, B), u float32 [3]) of one image of `random_patch`.

  The donor of image b is (b + offset) % B; u[0] < prob pastes at all, u[1] < prob_flip
  mirrors the patch, u[2] is unused (reserved); paste position and patch box use their own
  seeds (see `random_patch`).
  """
  offset = tf.random.stateless_uniform([], seed, 1, max(2, batch_size), dtype=tf.int32)
  return offset, tf.random.stateless_uniform([3], seed)


@register_batch_op('random_patch')
def random_patch(prob: float = 0.5, area: Sequence[float] = (0.01, 0.5), min_ratio: float = 0.1,
                 prob_flip: float = 0.5) -> BatchTransform:
  """FastReID `RandomPatch` as a batch transform: `(images [B, H, W, 3], seeds [B, 2]) -> images`.

  FastReID keeps a pool of patches cut from earlier images and, with probability `prob`, pastes
  a random pool patch (mirrored with probability `prob_flip`) at a random position. A pool is
  state across images; here the pool is the other images of the same batch: image b takes a
  `patch_box` from donor image (b + offset) % B (`random_patch_draws`) and pastes it at a
  uniform position inside itself. Everything is a pure function of (images, seeds); the donor
  depends on the batch the image is in. With B = 1 the donor is the image itself.

  Per image, seeds[b] splits into three: draws (donor, coins), patch box, paste position.
  """
  prob = check_prob('random_patch: prob', prob)
  prob_flip = check_prob('random_patch: prob_flip', prob_flip)
  area = tuple(float(a) for a in area)
  if len(area) != 2 or not 0.0 < area[0] <= area[1] < 1.0:
    raise ValueError(f'random_patch: area must be (min, max) with 0 < min <= max < 1, got {area}.')
  if not 0.0 < float(min_ratio) <= 1.0:
    raise ValueError(f'random_patch: min_ratio must be in (0, 1], got {min_ratio}.')

  def apply(images: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
    images = tf.convert_to_tensor(images)
    batch = images.shape[0]
    if batch is None:
      raise ValueError('random_patch needs a static batch size (batch with drop_remainder).')
    shape = tf.shape(images)

    def one(b: tf.Tensor) -> tf.Tensor:
      image = images[b]
      draw_seed, box_seed, paste_seed = tf.unstack(
          tf.random.experimental.stateless_split(seeds[b], 3))
      offset, u = random_patch_draws(draw_seed, batch)
      donor = images[(b + offset) % batch]
      found, top, left, h, w = patch_box(box_seed, shape[1], shape[2], area, float(min_ratio))

      def paste() -> tf.Tensor:
        patch = donor[top:top + h, left:left + w]
        patch = tf.cond(u[1] < prob_flip, lambda: tf.reverse(patch, axis=[1]), lambda: patch)
        v = tf.random.stateless_uniform([2], paste_seed)
        y = tf.minimum(tf.cast(tf.floor(v[0] * tf.cast(shape[1] - h + 1, tf.float32)), tf.int32),
                       shape[1] - h)
        x = tf.minimum(tf.cast(tf.floor(v[1] * tf.cast(shape[2] - w + 1, tf.float32)), tf.int32),
                       shape[2] - w)
        return _paste_box(image, y, x, patch)

      return tf.ensure_shape(tf.cond(found & (u[0] < prob), paste, lambda: image), image.shape)

    return tf.map_fn(one, tf.range(batch), fn_output_signature=images.dtype)

  return apply


def build_batch_transform(aug_cfg: Any) -> BatchTransform | None:
  """The batch transforms of `config.augment.batch_ops` (op strings as `parse_op`), or None.

  Applied to a batch of already transformed images, after `ds.batch(...)`, with one stateless
  seed per image (the per-image seed folded with 1, for instance).
  """
  ops = tuple(aug_cfg.get('batch_ops', ()) or ())
  if not ops:
    return None
  chain = []
  for spec in ops:
    name, args, kwargs = parse_op(spec)
    try:
      factory = BATCH_TRANSFORMS.get(name)
    except ValueError as e:
      raise ValueError(f'config.augment.batch_ops entry {spec!r}: {e}.') from None
    try:
      chain.append(factory(*args, **kwargs))
    except TypeError as e:
      raise ValueError(f'config.augment.batch_ops: bad arguments in {spec!r}: {e}.') from e

  def apply(images: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
    """Op i gets the seeds folded with i (op 0: the seeds themselves)."""
    for i, op in enumerate(chain):
      op_seeds = seeds if i == 0 else tf.map_fn(
          lambda s, i=i: tf.random.experimental.stateless_fold_in(s, i), seeds)
      images = op(images, op_seeds)
    return images

  return apply


def build_train_transform(aug_cfg: Any, size: tuple[int, int]) -> Transform:
  """The training transform of `config.augment`.

  Args:
    aug_cfg: `config.augment`. When `aug_cfg.ops` (optional) is a non-empty list of op strings,
      the chain is `build_transform_chain(aug_cfg.ops, aug_cfg, size)`. Otherwise it is
      FastReID's recipe, DEFAULT_OPS (flip, pad + crop, colour jitter, random erasing) with
      their parameters from flip_prob, pad, color_jitter_prob (and optionally
      color_jitter_{brightness,contrast,saturation,hue}, defaults DEFAULT_JITTER),
      random_erasing_prob and random_erasing_value; an op whose key holds 0 (or is absent) is
      left out.
    size: (height, width) of the output.

  Returns:
    `(image uint8 [h, w, 3], seed [2]) -> image uint8 [height, width, 3]`.
  """
  if aug_cfg.get('ops'):
    return build_transform_chain(tuple(aug_cfg.ops), aug_cfg, size)
  ops = [name for name in DEFAULT_OPS if aug_cfg.get(augment_registry.gate(name)[1], 0) > 0]
  return build_transform_chain(ops, aug_cfg, size)
