"""TensorFlow primitives shared by the augmentation ops of `transforms` and `autoaugment`.

The Bernoulli coin every random op draws, the probability check its factory runs, rounding
back to uint8, and the nearest-neighbour affine warp with torchvision's `RandomAffine`
parameters (`random_affine`, `rotation` and AutoAugment's geometric ops warp through it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf


def check_prob(name: str, prob: float) -> float:
  """`prob` as a float; a ValueError naming `name` unless it lies in [0, 1]."""
  if not 0.0 <= float(prob) <= 1.0:
    raise ValueError(f'{name} must be a probability in [0, 1], got {prob}.')
  return float(prob)


def coin(seed: tf.Tensor, prob: float) -> tf.Tensor:
  """Bernoulli(prob) draw: `tf.random.stateless_uniform([], seed) < prob`."""
  return tf.random.stateless_uniform([], seed) < prob


def to_uint8(image: tf.Tensor) -> tf.Tensor:
  """Float 0..255 values rounded and clipped to uint8."""
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def warp_affine(image: tf.Tensor, inverse: tf.Tensor, fill: float = 0.0) -> tf.Tensor:
  """Nearest-neighbour affine warp of a uint8 image [H, W, 3] to the same size.

  `inverse` (float32 [6] = a, b, c, d, e, f) maps output pixel (x, y) (column, row; integer
  pixel indices) to the input point (a x + b y + c, d x + e y + f), computed in float32 and
  rounded half away from zero; points outside the image take `fill`.
  (`ImageProjectiveTransformV3`, the kernel behind `tf.keras` image layers.)
  """
  image = tf.convert_to_tensor(image)
  transform = tf.concat([tf.cast(inverse, tf.float32), tf.zeros([2], tf.float32)], axis=0)
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
      fill_value=tf.constant(fill, tf.float32), interpolation='NEAREST', fill_mode='CONSTANT')
  return tf.ensure_shape(out[0], image.shape)


def affine_params(seed: tf.Tensor, degrees: float, translate: Sequence[float],
                  scale: Sequence[float], shear: float, height: tf.Tensor,
                  width: tf.Tensor) -> tf.Tensor:
  """torchvision `RandomAffine.get_params`: float32 [5] = (angle, tx, ty, scale, shear).

  angle ~ U(-degrees, degrees); tx = round(U(-translate[0] * W, translate[0] * W)),
  ty likewise with translate[1] and H; scale ~ U(scale[0], scale[1]); shear (degrees, along
  x) ~ U(-shear, shear). One `stateless_uniform([5], seed)` draw u gives them in that order.
  """
  u = tf.random.stateless_uniform([5], seed)
  h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  return tf.stack([
      degrees * (2.0 * u[0] - 1.0),
      tf.round(translate[0] * w * (2.0 * u[1] - 1.0)),
      tf.round(translate[1] * h * (2.0 * u[2] - 1.0)),
      scale[0] + (scale[1] - scale[0]) * u[3],
      shear * (2.0 * u[4] - 1.0)])


def affine_inverse(params: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
  """The `warp_affine` inverse of the `affine_params` map, float32 [6].

  The forward map of input point p is `c + t + A (p - c)` with centre
  c = ((W - 1) / 2, (H - 1) / 2), t = (tx, ty) and A = R(angle) Sh(shear) diag(s, s), where
  R(a) = [[cos a, sin a], [-sin a, cos a]] (counter-clockwise on screen for a > 0, rows growing
  downwards, as torchvision) and Sh(f) = [[1, tan f], [0, 1]]. The inverse is
  p = A^-1 (q - c - t) + c.
  """
  params = tf.cast(params, tf.float32)
  angle = params[0] * (math.pi / 180.0)
  shear = params[4] * (math.pi / 180.0)
  s = params[3]
  cos, sin, tan = tf.cos(angle), tf.sin(angle), tf.tan(shear)
  # A = s * [[cos, cos * tan + sin], [-sin, cos - sin * tan]]; det(A) = s^2.
  a00, a01 = s * cos, s * (cos * tan + sin)
  a10, a11 = -s * sin, s * (cos - sin * tan)
  det = a00 * a11 - a01 * a10
  i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
  cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
  cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
  qx, qy = cx + params[1], cy + params[2]
  return tf.stack([i00, i01, cx - i00 * qx - i01 * qy, i10, i11, cy - i10 * qx - i11 * qy])
