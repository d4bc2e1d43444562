"""Image transforms for re-ID training, as TensorFlow ops on one uint8 image [H, W, 3].

Every transform is built by a factory, `factory(**params) -> transform`, and a transform is a
function `(image, seed) -> image` where `seed` is a stateless seed (int32/int64 tensor of
shape [2]). All randomness comes from `tf.random.stateless_*` ops, so the output is a pure
function of (image, seed), eagerly and inside `tf.data` maps alike. Factories are registered by
name in `TRANSFORMS`; `build_train_transform` assembles FastReID's training recipe from the
`config.augment` settings.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

import tensorflow as tf  # pylint: disable=g-import-not-at-top

Transform = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

# ImageNet mean pixel in 0..255 (0.485, 0.456, 0.406) * 255, rounded to uint8.
IMAGENET_MEAN_UINT8 = (124, 116, 104)
# FastReID's default ColorJitter strengths (INPUT.CJ.*); config.augment.color_jitter_* override.
DEFAULT_JITTER = {'brightness': 0.15, 'contrast': 0.15, 'saturation': 0.1, 'hue': 0.1}


def _check_prob(name: str, prob: float) -> float:
  if not 0.0 <= float(prob) <= 1.0:
    raise ValueError(f'{name} must be a probability in [0, 1], got {prob}.')
  return float(prob)


def _coin(seed: tf.Tensor, prob: float) -> tf.Tensor:
  """Bernoulli(prob) draw: `tf.random.stateless_uniform([], seed) < prob`."""
  return tf.random.stateless_uniform([], seed) < prob


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


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
    return tf.ensure_shape(_to_uint8(out), (*size, 3))

  return apply


def flip(prob: float = 0.5) -> Transform:
  """Horizontal flip with probability `prob`; the coin is `_coin(seed, prob)`."""
  prob = _check_prob('flip: prob (config.augment.flip_prob)', prob)

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    return tf.cond(_coin(seed, prob), lambda: tf.reverse(image, axis=[1]), lambda: image)

  return apply


def crop_offsets(seed: tf.Tensor, padding: int) -> tf.Tensor:
  """(top, left) of the crop of `pad_crop`: uniform integers in [0, 2 * padding], int32 [2]."""
  return tf.random.stateless_uniform([2], seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32)


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
  prob = _check_prob('random_erasing: prob (config.augment.random_erasing_prob)', prob)
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
      # Slices and concatenations: tf.where over the whole image is ~10x slower on CPU.
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

    out = tf.cond(found & _coin(coin_seed, prob), erase, lambda: image)
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
  return _to_uint8(x)


def color_jitter(brightness: float = DEFAULT_JITTER['brightness'],
                 contrast: float = DEFAULT_JITTER['contrast'],
                 saturation: float = DEFAULT_JITTER['saturation'],
                 hue: float = DEFAULT_JITTER['hue'], prob: float = 0.5) -> Transform:
  """With probability `prob`, `adjust_colors` with random `jitter_factors`.

  FastReID's `RandomApply([ColorJitter(...)], p)`, except that the four adjustments always run
  in the fixed order brightness, contrast, saturation, hue (torchvision shuffles the order).
  The seed splits into two: the coin, the factors.
  """
  prob = _check_prob('color_jitter: prob (config.augment.color_jitter_prob)', prob)
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
    return tf.cond(_coin(coin_seed, prob), lambda: adjust_colors(image, factors), lambda: image)

  return apply


TRANSFORMS: dict[str, Callable[..., Transform]] = {
    'resize': resize,
    'flip': flip,
    'pad_crop': pad_crop,
    'random_erasing': random_erasing,
    'color_jitter': color_jitter,
}


def get_transform(name: str, **params: Any) -> Transform:
  """The transform `TRANSFORMS[name](**params)`."""
  if name not in TRANSFORMS:
    raise ValueError(f'Unknown transform {name!r}; known: {sorted(TRANSFORMS)}.')
  return TRANSFORMS[name](**params)


def compose(transforms: Sequence[Transform]) -> Transform:
  """Applies `transforms` in order; transform i gets row i of `stateless_split(seed, n)`."""
  transforms = tuple(transforms)

  def apply(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, max(1, len(transforms)))
    for i, transform in enumerate(transforms):
      image = transform(image, seeds[i])
    return image

  return apply


def build_train_transform(aug_cfg: Any, size: tuple[int, int]) -> Transform:
  """FastReID's training transform: resize, flip, pad + crop, colour jitter, random erasing.

  Args:
    aug_cfg: `config.augment` with flip_prob, pad, random_erasing_prob, random_erasing_value,
      color_jitter_prob and optionally color_jitter_{brightness,contrast,saturation,hue}
      (defaults DEFAULT_JITTER). An augmentation with probability (or padding) 0 is left out.
    size: (height, width) of the output.

  Returns:
    `(image uint8 [h, w, 3], seed [2]) -> image uint8 [height, width, 3]`.
  """
  ops = [resize(*size)]
  if aug_cfg.flip_prob > 0:
    ops.append(flip(aug_cfg.flip_prob))
  if aug_cfg.pad > 0:
    ops.append(pad_crop(aug_cfg.pad))
  if aug_cfg.color_jitter_prob > 0:
    strengths = {k: aug_cfg.get(f'color_jitter_{k}', v) for k, v in DEFAULT_JITTER.items()}
    ops.append(color_jitter(prob=aug_cfg.color_jitter_prob, **strengths))
  if aug_cfg.random_erasing_prob > 0:
    ops.append(random_erasing(aug_cfg.random_erasing_prob, value=aug_cfg.random_erasing_value))
  return compose(ops)
