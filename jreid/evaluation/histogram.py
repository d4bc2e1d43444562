"""Colour-histogram features: the hand-crafted, no-learning re-ID baseline.

Each image becomes a joint colour histogram (HSV or RGB) per horizontal stripe; each stripe's
histogram is L1-normalised and square-rooted (Hellinger map), and the concatenation is
L2-normalised, so the cosine similarity of two images is the dot product of their features
(and equals the Bhattacharyya coefficient averaged over stripes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_CHUNK = 256  # images per step of color_histogram_features

def rgb_to_hsv(images: np.ndarray) -> np.ndarray:
  """uint8 RGB [..., 3] -> float32 HSV [..., 3], each channel in [0, 1] (hue in [0, 1)).

  Same convention as ``colorsys.rgb_to_hsv``: value = max, saturation = (max - min) / max,
  hue = 0 for greys.
  """
  rgb = np.asarray(images, np.float32) / 255.0
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  top, bottom = rgb.max(axis=-1), rgb.min(axis=-1)
  delta = top - bottom
  safe = np.where(delta > 0, delta, 1.0)
  hue = np.where(top == r, ((g - b) / safe) % 6.0,
                 np.where(top == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
  hue = np.where(delta > 0, hue / 6.0, 0.0)
  sat = np.where(top > 0, delta / np.where(top > 0, top, 1.0), 0.0)
  return np.stack([hue, sat, top], axis=-1).astype(np.float32)


def _bin_indices(images: np.ndarray, bins: Sequence[int], space: str) -> np.ndarray:
  """Joint bin index of every pixel, int64 [N, H, W], computed exactly with integers."""
  rgb = images.astype(np.int64)
  if space == 'rgb':
    channels = [rgb[..., c] * bins[c] // 255 for c in range(3)]
  else:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    top, bottom = rgb.max(axis=-1), rgb.min(axis=-1)
    delta = top - bottom
    # Hue in sixths as a fraction with denominator delta: sector * delta + signed difference.
    sixths = np.where(top == r, np.where(g >= b, g - b, 6 * delta + g - b),
                      np.where(top == g, 2 * delta + b - r, 4 * delta + r - g))
    safe = np.maximum(delta, 1)
    hue = np.where(delta > 0, sixths * bins[0] // (6 * safe), 0)
    sat = np.where(top > 0, delta * bins[1] // np.maximum(top, 1), 0)
    channels = [hue, sat, top * bins[2] // 255]
  channels = [np.minimum(c, b - 1) for c, b in zip(channels, bins)]
  return (channels[0] * bins[1] + channels[1]) * bins[2] + channels[2]


def grey_world(images: np.ndarray, target: int = 128) -> np.ndarray:
  """Grey-world colour constancy: scales each channel of each image to mean ``target``.

  ``out = min(255, floor(x * target / mean))`` per image and channel, in exact integer
  arithmetic; an all-zero channel stays zero. Cancels global gains and per-channel colour casts.

  Args:
    images: uint8 [N, H, W, 3].
    target: the channel mean after scaling.

  Returns:
    uint8 [N, H, W, 3].
  """
  x = np.asarray(images).astype(np.int64)
  count = x.shape[1] * x.shape[2]
  total = np.maximum(x.sum(axis=(1, 2), keepdims=True), 1)
  return np.minimum(x * (target * count) // total, 255).astype(np.uint8)


def color_histogram_features(images: np.ndarray, bins: Sequence[int] = (8, 8, 8),
                             space: str = 'hsv', stripes: int = 3,
                             colour_constancy: bool = True) -> np.ndarray:
  """Hellinger-mapped joint colour histograms over horizontal stripes.

  With ``colour_constancy`` each image is first normalised by ``grey_world`` (hand-crafted
  re-ID features normalise illumination the same way, e.g. Retinex in LOMO); without it a
  camera's colour cast or gain moves every pixel to other bins and the baseline collapses to
  matching backgrounds.

  Bin edges are uniform on each channel in [0, 1] (hue, saturation, value as in
  ``rgb_to_hsv``; RGB channels as c / 255); the last bin is closed. Bin indices are computed
  with exact integer arithmetic, so pixels on a bin edge never flip with rounding. Row ``r``
  of an image of height ``H`` belongs to stripe ``r * stripes // H``.

  Args:
    images: uint8 [N, H, W, 3] RGB images.
    bins: bins per channel (hue, saturation, value) or (red, green, blue).
    space: 'hsv' or 'rgb'.
    stripes: number of horizontal stripes (1: one histogram of the whole image).
    colour_constancy: apply ``grey_world`` first.

  Returns:
    float32 [N, stripes * prod(bins)] features with unit L2 norm.
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f'color_histogram_features needs uint8 images [N, H, W, 3], got '
                     f'{images.dtype} {images.shape}; convert with np.asarray(x, np.uint8).')
  if space not in ('hsv', 'rgb'):
    raise ValueError(f"space={space!r}; use 'hsv' or 'rgb'.")
  if len(bins) != 3 or min(bins) < 1:
    raise ValueError(f'bins={bins!r}; give three positive bin counts, e.g. (8, 8, 8).')
  n, h, w, _ = images.shape
  if not 1 <= stripes <= h:
    raise ValueError(f'stripes={stripes} must be between 1 and the image height {h}.')
  size = int(np.prod(bins))
  stripe = (np.arange(h) * stripes // h)[None, :, None]
  hist = np.zeros((n, stripes * size), np.float32)
  for start in range(0, n, _CHUNK):  # bounded memory: the integer temporaries are 8 B/pixel
    chunk = images[start:start + _CHUNK]
    if colour_constancy:
      chunk = grey_world(chunk)
    m = len(chunk)
    index = (np.arange(m)[:, None, None] * stripes + stripe) * size + _bin_indices(
        chunk, bins, space)
    counts = np.bincount(index.ravel(), minlength=m * stripes * size).reshape(m, stripes, size)
    counts = np.sqrt(counts / counts.sum(axis=-1, keepdims=True)).reshape(m, stripes * size)
    hist[start:start + m] = counts / np.linalg.norm(counts, axis=-1, keepdims=True)
  return hist
