"""Tests of the colour-histogram baseline against plain per-pixel loop references."""

import colorsys
from fractions import Fraction
import math

import numpy as np
import pytest

from jreid.evaluation import histogram


def tiny_images(seed: int, n: int = 3, h: int = 7, w: int = 5) -> np.ndarray:
  """Random colours plus greys, black, white and pure hues (the edge cases of HSV)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
  images[:, 0, 0] = 0
  images[:, 0, 1] = 255
  images[:, 0, 2] = rng.integers(0, 256, 1)[0]  # grey
  images[:, 1, :3] = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
  images[:, 2, 0] = [255, 0, 64]  # red with blue above green: hue wraps near 1
  images[:, 2, 1] = [96, 255, 160]
  return images


def reference_grey_world(image: np.ndarray) -> np.ndarray:
  h, w, _ = image.shape
  out = np.zeros_like(image)
  for c in range(3):
    total = max(sum(int(image[i, j, c]) for i in range(h) for j in range(w)), 1)
    for i in range(h):
      for j in range(w):
        out[i, j, c] = min(255, int(image[i, j, c]) * 128 * h * w // total)
  return out


def reference_bin(pixel, bins, space) -> int:
  """Joint bin of one pixel, from the textbook HSV formulas in exact fractions."""
  r, g, b = (Fraction(int(x), 255) for x in pixel)
  if space == 'rgb':
    channels = (r, g, b)
  else:
    top, bottom = max(r, g, b), min(r, g, b)
    delta = top - bottom
    if delta == 0:
      hue = Fraction(0)
    elif top == r:
      hue = ((g - b) / delta) % 6
    elif top == g:
      hue = (b - r) / delta + 2
    else:
      hue = (r - g) / delta + 4
    sat = delta / top if top > 0 else Fraction(0)
    channels = (hue / 6, sat, top)
  index = [min(math.floor(x * n), n - 1) for x, n in zip(channels, bins)]
  return (index[0] * bins[1] + index[1]) * bins[2] + index[2]


def reference_features(images, bins, space, stripes, colour_constancy):
  size = bins[0] * bins[1] * bins[2]
  features = []
  for image in images:
    if colour_constancy:
      image = reference_grey_world(image)
    h, w, _ = image.shape
    vector = []
    for s in range(stripes):
      counts = [0] * size
      for i in range(h):
        if i * stripes // h == s:
          for j in range(w):
            counts[reference_bin(image[i, j], bins, space)] += 1
      total = sum(counts)
      vector += [math.sqrt(c / total) for c in counts]
    norm = math.sqrt(sum(x * x for x in vector))
    features.append([x / norm for x in vector])
  return np.array(features)


def test_rgb_to_hsv_matches_colorsys():
  images = tiny_images(0)
  hsv = histogram.rgb_to_hsv(images)
  assert hsv.dtype == np.float32 and hsv.shape == images.shape
  for pixel, got in zip(images.reshape(-1, 3), hsv.reshape(-1, 3)):
    want = colorsys.rgb_to_hsv(*(pixel / 255.0))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_grey_world_matches_reference_and_cancels_a_cast():
  images = tiny_images(1)
  got = histogram.grey_world(images)
  for image, out in zip(images, got):
    np.testing.assert_array_equal(out, reference_grey_world(image))
  dark = images // 2
  tinted = dark.copy()
  tinted[..., 0] *= 2  # the red channel of `dark` with twice the gain
  np.testing.assert_array_equal(histogram.grey_world(tinted)[..., 0],
                                histogram.grey_world(dark)[..., 0])
  assert histogram.grey_world(np.zeros((1, 2, 2, 3), np.uint8)).max() == 0


@pytest.mark.parametrize('bins, space, stripes, colour_constancy', [
    ((8, 8, 8), 'hsv', 3, True),
    ((8, 8, 8), 'hsv', 1, False),
    ((4, 3, 2), 'hsv', 2, False),
    ((3, 4, 5), 'rgb', 7, True),
])
def test_features_match_loop_reference(bins, space, stripes, colour_constancy):
  images = tiny_images(2)
  got = histogram.color_histogram_features(images, bins=bins, space=space, stripes=stripes,
                                           colour_constancy=colour_constancy)
  want = reference_features(images, bins, space, stripes, colour_constancy)
  assert got.dtype == np.float32 and got.shape == (3, stripes * np.prod(bins))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize('pixel, bins, want', [
    ((8, 6, 0), (8, 1, 1), 1),  # hue exactly 1/8 (red is the maximum)
    ((0, 2, 8), (8, 1, 1), 5),  # hue exactly 5/8 (blue is the maximum)
    ((8, 0, 6), (8, 1, 1), 7),  # hue exactly 7/8 (red maximum, wraps around)
    ((8, 7, 7), (1, 8, 1), 1),  # saturation exactly 1/8
    ((51, 51, 51), (1, 1, 5), 1),  # value exactly 1/5
    ((255, 255, 255), (1, 1, 5), 4),  # value 1 falls in the last (closed) bin
])
def test_pixels_on_bin_edges_go_to_the_upper_bin(pixel, bins, want):
  image = np.array(pixel, np.uint8).reshape(1, 1, 1, 3)
  feature = histogram.color_histogram_features(image, bins=bins, stripes=1,
                                               colour_constancy=False)
  assert reference_bin(pixel, bins, 'hsv') == want
  np.testing.assert_array_equal(feature[0], np.eye(np.prod(bins))[want])


def test_same_colours_same_feature_different_colours_lower():
  images = tiny_images(3, n=2, h=12, w=6)
  flipped = images[:, :, ::-1]
  f, g = histogram.color_histogram_features(images), histogram.color_histogram_features(flipped)
  np.testing.assert_allclose(f, g, atol=1e-7)
  assert f[0] @ f[1] < 0.99


@pytest.mark.parametrize('kwargs, message', [
    ({'images': np.zeros((2, 4, 4, 3), np.float32)}, 'uint8'),
    ({'images': np.zeros((4, 4, 3), np.uint8)}, 'uint8'),
    ({'images': np.zeros((1, 4, 4, 3), np.uint8), 'space': 'lab'}, 'space'),
    ({'images': np.zeros((1, 4, 4, 3), np.uint8), 'stripes': 5}, 'stripes'),
    ({'images': np.zeros((1, 4, 4, 3), np.uint8), 'bins': (8, 0, 8)}, 'bins'),
])
def test_bad_input_raises_one_clear_error(kwargs, message):
  with pytest.raises(ValueError, match=message):
    histogram.color_histogram_features(**kwargs)


def test_chunking_does_not_change_features(monkeypatch):
  images = tiny_images(4, n=5)
  whole = histogram.color_histogram_features(images)
  monkeypatch.setattr(histogram, '_CHUNK', 2)
  np.testing.assert_array_equal(histogram.color_histogram_features(images), whole)
