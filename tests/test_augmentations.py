"""Tests of the augmentation ops added to data_pipelines.transforms and data_pipelines.autoaugment.

Each op is checked against a plain numpy (or PIL) reference given its random draws, eagerly and
inside tf.data; FastReID's default chain is held byte-identical to recorded digests, and every
op registers itself where it is defined.
"""

import hashlib

import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageOps

from data_pipelines import augment_primitives
from data_pipelines import augment_registry
from data_pipelines import autoaugment as aa
from data_pipelines import transforms
from jreid import config_defaults

import tensorflow as tf  # pylint: disable=g-bad-import-order  (after data_pipelines quiets it)

IMAGE = np.random.default_rng(0).integers(0, 256, (24, 12, 3), dtype=np.uint8)


def _seed(i):
  return tf.constant([i, 1000 + i], tf.int64)


def _split(seed, n):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _coin(seed, prob):
  return bool(tf.random.stateless_uniform([], seed).numpy() < prob)


def _in_tf_data(transform, image, seeds):
  """`transform(image, seed)` for each seed, in one tf.data pipeline (traced once)."""
  ds = tf.data.Dataset.from_tensor_slices(tf.stack(seeds)).map(lambda s: transform(image, s))
  return list(ds.as_numpy_iterator())


# ----------------------------------------------------------------------------- numpy references


def np_round_half_away(x):
  return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def np_warp(image, inverse, fill=0):
  """Nearest-neighbour warp: output (x, y) takes input round(a x + b y + c, d x + e y + f)."""
  a, b, c, d, e, f = np.asarray(inverse, np.float32)
  h, w = image.shape[:2]
  out = np.full_like(image, fill)
  for y in range(h):
    for x in range(w):
      xf, yf = np.float32(x), np.float32(y)
      xi = np_round_half_away(np.float32(np.float32(a * xf) + np.float32(b * yf)) + c)
      yi = np_round_half_away(np.float32(np.float32(d * xf) + np.float32(e * yf)) + f)
      if 0 <= xi < w and 0 <= yi < h:
        out[y, x] = image[int(yi), int(xi)]
  return out


def np_affine_inverse(angle, tx, ty, scale, shear, h, w):
  """Inverse of p -> c + t + R(angle) Sh(shear) s (p - c), as (a, b, c, d, e, f), float64."""
  a, f = np.deg2rad(angle), np.deg2rad(shear)
  rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
  forward = rot @ np.array([[1.0, np.tan(f)], [0.0, 1.0]]) * scale
  inv = np.linalg.inv(forward)
  centre = np.array([(w - 1) / 2, (h - 1) / 2])
  offset = centre - inv @ (centre + np.array([tx, ty]))
  return np.array([inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1]])


def np_luma(x):
  x = x.astype(np.float32)
  return (np.float32(0.299) * x[..., :1] + np.float32(0.587) * x[..., 1:2]
          + np.float32(0.114) * x[..., 2:])


def np_blend(degenerate, image, factor):
  out = degenerate + np.float32(factor) * (image.astype(np.float32) - degenerate)
  return np.round(np.clip(out, 0, 255)).astype(np.uint8)


def np_sharpness(image, factor):
  x = image.astype(np.float32)
  kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / np.float32(13)
  degenerate = x.copy()
  for y in range(1, x.shape[0] - 1):
    for xx in range(1, x.shape[1] - 1):
      window = x[y - 1:y + 2, xx - 1:xx + 2]
      degenerate[y, xx] = np.round((window * kernel[..., None]).sum(axis=(0, 1)))
  return np_blend(degenerate, image, factor)


def np_equalize(image):
  """PIL ImageOps.equalize per channel, written out."""
  out = image.copy()
  for ch in range(3):
    hist = np.bincount(image[..., ch].ravel(), minlength=256)
    nonzero = hist[hist > 0]
    step = (nonzero.sum() - nonzero[-1]) // 255
    if step == 0:
      continue
    lut = np.minimum((step // 2 + np.concatenate([[0], np.cumsum(hist)[:-1]])) // step, 255)
    out[..., ch] = lut[image[..., ch]]
  return out


def np_autocontrast(image):
  out = image.copy()
  for ch in range(3):
    lo, hi = int(image[..., ch].min()), int(image[..., ch].max())
    if hi > lo:
      out[..., ch] = (image[..., ch].astype(np.int64) - lo) * 255 // (hi - lo)
  return out


def np_op(image, name, m):
  """The numpy reference of `aa.apply_named_op`."""
  h, w = image.shape[:2]
  if name == 'Posterize':
    shift = 8 - int(m)
    return ((image.astype(np.int32) >> shift) << shift).astype(np.uint8)
  if name == 'Solarize':
    return np.where(image.astype(np.float32) >= np.float32(m), 255 - image, image)
  if name == 'Invert':
    return 255 - image
  if name == 'AutoContrast':
    return np_autocontrast(image)
  if name == 'Equalize':
    return np_equalize(image)
  if name == 'Color':
    return np_blend(np_luma(image), image, 1 + np.float32(m))
  if name == 'Contrast':
    return np_blend(np_luma(image).mean(), image, 1 + np.float32(m))
  if name == 'Brightness':
    return np_blend(np.float32(0), image, 1 + np.float32(m))
  if name == 'Sharpness':
    return np_sharpness(image, 1 + np.float32(m))
  if name == 'Rotate':
    return np_warp(image, augment_primitives.affine_inverse(tf.constant([m, 0, 0, 1, 0]), h, w).numpy())
  if name == 'ShearX':
    return np_warp(image, [1, m, 0, 0, 1, 0])
  if name == 'ShearY':
    return np_warp(image, [1, 0, 0, m, 1, 0])
  if name == 'TranslateX':
    return np_warp(image, [1, 0, m, 0, 1, 0])
  if name == 'TranslateY':
    return np_warp(image, [1, 0, 0, 0, 1, m])
  raise AssertionError(name)


def _assert_close_uint8(actual, expected, max_off_fraction=0.01):
  """Equal except for rare off-by-one roundings (float32 reduction order differs)."""
  assert actual.dtype == np.uint8 and actual.shape == expected.shape
  diff = np.abs(actual.astype(int) - expected.astype(int))
  assert diff.max() <= 1, diff.max()
  assert (diff > 0).mean() <= max_off_fraction


# ----------------------------------------------------------------------------- default chain


def _digest(cfg, size=(32, 16)):
  t = transforms.build_train_transform(cfg, size)
  img = np.random.default_rng(42).integers(0, 256, (40, 22, 3), dtype=np.uint8)
  h = hashlib.sha256()
  for i in range(16):
    h.update(t(tf.constant(img), tf.constant([i, 7 * i + 3], tf.int64)).numpy().tobytes())
  return h.hexdigest()


def test_default_chain_is_unchanged():
  # Digests of FastReID's recipe as first implemented (resize, flip, pad + crop, jitter, erasing).
  base = config_defaults.base_config().augment
  assert tuple(base.ops) == ()
  assert _digest(base) == 'd8ca8e6ebc5ba91d7cf4cd042fcdc6cef904fd84b0fd9a39ae37a107e4da1aed'
  full = ml_collections.ConfigDict(base.to_dict())
  full.color_jitter_prob = 0.5
  full.random_erasing_value = 'random'
  assert _digest(full) == '8ee1e509a7571be767208f1acd239cfdc25b05300d90ad74041857ef3052be61'
  # The same four ops listed in config.augment.ops give the same chain, byte for byte.
  full.ops = ('flip', 'pad_crop', 'color_jitter', 'random_erasing')
  assert _digest(full) == '8ee1e509a7571be767208f1acd239cfdc25b05300d90ad74041857ef3052be61'


# ----------------------------------------------------------------------------- box ops


@pytest.mark.parametrize('value,pixel', [(0, (0, 0, 0)), ('mean', transforms.IMAGENET_MEAN_UINT8)])
def test_cutout_matches_reference(value, pixel):
  op = transforms.cutout(prob=0.7, size=0.5, value=value)
  h, w = IMAGE.shape[:2]
  length = round(0.5 * min(h, w))
  applied = 0
  for i in range(12):
    out = op(tf.constant(IMAGE), _seed(i)).numpy()
    coin_seed, box_seed = _split(_seed(i), 2)
    centre = tf.random.stateless_uniform([2], box_seed, 0, 2**31 - 1, tf.int32).numpy()
    cy, cx = centre[0] % h, centre[1] % w
    expected = IMAGE.copy()
    if _coin(coin_seed, 0.7):
      applied += 1
      expected[max(cy - length // 2, 0):cy - length // 2 + length,
               max(cx - length // 2, 0):cx - length // 2 + length] = pixel
    np.testing.assert_array_equal(out, expected)
  assert 0 < applied < 12


def test_random_occlusion_matches_qaconv_reference():
  op = transforms.random_occlusion(min_size=0.0, max_size=0.8)
  h, w = IMAGE.shape[:2]
  sides = set()
  for i in range(12):
    out = op(tf.constant(IMAGE), _seed(i)).numpy()
    _, box_seed = _split(_seed(i), 2)
    u = tf.random.stateless_uniform([3], box_seed, 0, 2**31 - 1, tf.int32).numpy()
    lo, hi = max(1, int(12 * 0.0)), int(12 * 0.8)  # QAConv: randint(max(1, S * min), S * max)
    side = lo + u[0] % (hi - lo)
    top, left = u[1] % (h - side), u[2] % (w - side)
    expected = IMAGE.copy()
    expected[top:top + side, left:left + side] = 255
    np.testing.assert_array_equal(out, expected)
    sides.add(side)
    assert 1 <= side < 9 and top + side < h and left + side < w
  assert len(sides) > 3
  np.testing.assert_array_equal(transforms.random_occlusion(0.0, 0.0)(IMAGE, _seed(0)), IMAGE)


# ----------------------------------------------------------------------------- affine


def test_affine_inverse_matches_numpy():
  for params in [(30.0, 2.0, -3.0, 1.1, 8.0), (-7.5, 0.0, 0.0, 0.9, -4.0), (0, 1, 1, 1, 0)]:
    got = augment_primitives.affine_inverse(tf.constant(params), 24, 12).numpy()
    np.testing.assert_allclose(got, np_affine_inverse(*params, 24, 12), atol=1e-5)


def test_warp_is_exact_for_shifts_and_quarter_turns():
  square = IMAGE[:12]
  turned = augment_primitives.warp_affine(square, augment_primitives.affine_inverse(
      tf.constant([90.0, 0, 0, 1, 0]), 12, 12)).numpy()
  np.testing.assert_array_equal(turned, np.rot90(square))  # counter-clockwise, as torchvision
  shifted = augment_primitives.warp_affine(IMAGE, augment_primitives.affine_inverse(
      tf.constant([0.0, 3, -2, 1, 0]), 24, 12)).numpy()
  expected = np.zeros_like(IMAGE)
  expected[:-2, 3:] = IMAGE[2:, :-3]  # right by 3, up by 2
  np.testing.assert_array_equal(shifted, expected)


def test_random_affine_matches_reference():
  op = transforms.random_affine(degrees=20, translate=(0.1, 0.2), scale=(0.8, 1.2), shear=10,
                                prob=0.8)
  for i in range(6):
    coin_seed, param_seed = _split(_seed(i), 2)
    params = augment_primitives.affine_params(param_seed, 20.0, (0.1, 0.2), (0.8, 1.2), 10.0, 24,
                                      12).numpy()
    u = tf.random.stateless_uniform([5], param_seed).numpy()
    np.testing.assert_allclose(params, [20 * (2 * u[0] - 1), np.round(1.2 * (2 * u[1] - 1)),
                                        np.round(4.8 * (2 * u[2] - 1)), 0.8 + 0.4 * u[3],
                                        10 * (2 * u[4] - 1)], rtol=1e-5, atol=1e-5)
    out = op(tf.constant(IMAGE), _seed(i)).numpy()
    if _coin(coin_seed, 0.8):
      inverse = augment_primitives.affine_inverse(params, 24, 12).numpy()
      np.testing.assert_array_equal(out, np_warp(IMAGE, inverse))
    else:
      np.testing.assert_array_equal(out, IMAGE)


def test_rotation_stays_within_degrees():
  op = transforms.rotation(5.0)
  for i in range(4):
    _, param_seed = _split(_seed(i), 2)
    params = augment_primitives.affine_params(param_seed, 5.0, (0, 0), (1, 1), 0.0, 24, 12).numpy()
    assert abs(params[0]) <= 5 and params[3] == 1 and params[1] == params[2] == params[4] == 0
    inverse = augment_primitives.affine_inverse(params, 24, 12).numpy()
    np.testing.assert_array_equal(op(tf.constant(IMAGE), _seed(i)).numpy(),
                                  np_warp(IMAGE, inverse))


# ----------------------------------------------------------------------------- AutoAugment ops


def test_pixel_ops_match_pil():
  pil = Image.fromarray(IMAGE)
  for bits in (1, 4, 7, 8):
    np.testing.assert_array_equal(aa.posterize(IMAGE, bits), np.asarray(ImageOps.posterize(pil, bits)))
  for threshold in (0, 100, 255):
    np.testing.assert_array_equal(aa.solarize(IMAGE, threshold),
                                  np.asarray(ImageOps.solarize(pil, threshold)))
  np.testing.assert_array_equal(aa.solarize(IMAGE, 256.0), IMAGE)
  np.testing.assert_array_equal(aa.invert(IMAGE), np.asarray(ImageOps.invert(pil)))
  np.testing.assert_array_equal(aa.equalize(IMAGE), np.asarray(ImageOps.equalize(pil)))
  # Enough pixels for step = (N - last) // 255 > 1, so the rounding term step // 2 matters.
  skewed = (np.random.default_rng(1).beta(2, 5, (60, 50, 3)) * 255).astype(np.uint8)
  np.testing.assert_array_equal(aa.equalize(skewed), np.asarray(ImageOps.equalize(Image.fromarray(skewed))))
  np.testing.assert_array_equal(aa.equalize(skewed), np_equalize(skewed))
  low = (IMAGE // 4 + 60).astype(np.uint8)
  low[..., 2] = 77  # a constant channel is left alone
  np.testing.assert_array_equal(aa.equalize(low), np.asarray(ImageOps.equalize(Image.fromarray(low))))
  np.testing.assert_array_equal(aa.autocontrast(low), np_autocontrast(low))
  np.testing.assert_array_equal(aa.autocontrast(low), np.asarray(ImageOps.autocontrast(Image.fromarray(low))))


@pytest.mark.parametrize('name,m', [('Color', 0.5), ('Color', -0.7), ('Contrast', 0.8),
                                    ('Contrast', -0.3), ('Brightness', 0.4), ('Sharpness', 0.9),
                                    ('Sharpness', -0.9), ('Rotate', 17.0), ('ShearX', -0.3),
                                    ('ShearY', 0.2), ('TranslateX', 4.0), ('TranslateY', -5.0)])
def test_enhance_and_geometric_ops_match_numpy(name, m):
  out = aa.apply_named_op(tf.constant(IMAGE), name, tf.constant(m, tf.float32)).numpy()
  _assert_close_uint8(out, np_op(IMAGE, name, m), max_off_fraction=0.005)


def test_autoaugment_magnitudes_are_torchvision_bins():
  assert [aa.autoaugment_magnitude('Posterize', b) for b in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5,
                                                                          4, 4]
  np.testing.assert_allclose([aa.autoaugment_magnitude('Rotate', b) for b in (0, 9)], [0, 30])
  np.testing.assert_allclose(aa.autoaugment_magnitude('Solarize', 5), 255 * 4 / 9)
  np.testing.assert_allclose(aa.autoaugment_magnitude('ShearX', 5), 0.3 * 5 / 9)
  np.testing.assert_allclose(aa.autoaugment_magnitude('Color', 8), 0.8)
  assert len(aa.IMAGENET_POLICY) == 25


def test_autoaugment_replays_its_draws_in_numpy():
  op = aa.autoaugment(prob=0.9)
  policies_seen = set()
  changed = 0
  for i in range(16):
    out = op(tf.constant(IMAGE), _seed(i)).numpy()
    index, u = (t.numpy() for t in aa.autoaugment_draws(_seed(i)))
    expected = IMAGE
    if u[0] < 0.9:
      for j, (name, p, magnitude_bin) in enumerate(aa.IMAGENET_POLICY[index]):
        if u[1 + j] < p:
          m = np.float32(aa.autoaugment_magnitude(name, magnitude_bin))
          if name in aa.SIGNED_OPS and u[3 + j] < 0.5:
            m = -m
          expected = np_op(expected, name, m)
    _assert_close_uint8(out, expected)
    policies_seen.add(int(index))
    changed += not np.array_equal(out, IMAGE)
  assert len(policies_seen) >= 8 and changed >= 6


def test_augmix_replays_its_draws_in_numpy():
  op = aa.augmix(severity=3, width=3, depth=-1, alpha=1.0)
  for i in range(4):
    out = op(tf.constant(IMAGE), _seed(i)).numpy()
    coin_seed, draw_seed = _split(_seed(i), 2)
    assert _coin(coin_seed, 1.0)
    d = {k: v.numpy() for k, v in aa.augmix_draws(draw_seed, 3, 3, -1, 3.0, 1.0, 9).items()}
    np.testing.assert_allclose(d['weights'].sum(), 1, rtol=1e-6)
    assert 0 <= d['mix'] <= 1 and set(d['depth']) <= {1, 2, 3}
    assert (d['levels'] >= 0.1).all() and (d['levels'] < 3).all()
    mix = np.zeros(IMAGE.shape, np.float32)
    for c in range(3):
      x = IMAGE
      for j in range(d['depth'][c]):
        name, level = aa.AUGMIX_OPS[d['ops'][c, j]], float(d['levels'][c, j])
        m = {'Posterize': 4 - int(level * 4 / 10), 'Solarize': 256 - int(level * 256 / 10),
             'Rotate': int(level * 30 / 10), 'ShearX': level * 0.3 / 10,
             'ShearY': level * 0.3 / 10, 'TranslateX': int(level * (12 / 3) / 10),
             'TranslateY': int(level * (24 / 3) / 10)}.get(name, 0.0)
        if name in ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY') and d['negate'][c, j]:
          m = -m
        x = np_op(x, name, np.float32(m))
      mix += np.float32(d['weights'][c]) * x.astype(np.float32)
    expected = (1 - d['mix']) * IMAGE.astype(np.float32) + d['mix'] * mix
    _assert_close_uint8(out, np.round(np.clip(expected, 0, 255)).astype(np.uint8))


# ----------------------------------------------------------------------------- random patch


def test_patch_box_matches_numpy():
  for i in range(6):
    found, top, left, h, w = (int(t) for t in transforms.patch_box(_seed(i), 24, 12, (0.01, 0.5),
                                                                   0.1))
    area_seed, aspect_seed, position_seed = _split(_seed(i), 3)
    target = tf.random.stateless_uniform([100], area_seed, 0.01, 0.5).numpy() * 288
    aspect = tf.random.stateless_uniform([100], aspect_seed, 0.1, 10.0).numpy()
    hs, ws = np.round(np.sqrt(target * aspect)), np.round(np.sqrt(target / aspect))
    fits = np.flatnonzero((hs >= 1) & (hs < 24) & (ws >= 1) & (ws < 12))
    assert found and (h, w) == (hs[fits[0]], ws[fits[0]])
    u = tf.random.stateless_uniform([2], position_seed).numpy()
    assert (top, left) == (int(u[0] * (24 - h + 1)), int(u[1] * (12 - w + 1)))


def test_random_patch_matches_reference():
  images = np.random.default_rng(2).integers(0, 256, (4, 24, 12, 3), dtype=np.uint8)
  seeds = tf.constant([[i, 77] for i in range(4)], tf.int64)
  op = transforms.random_patch(prob=0.8, prob_flip=0.5)
  out = op(tf.constant(images), seeds).numpy()
  np.testing.assert_array_equal(_in_tf_data(op, images, [seeds])[0], out)
  pasted = flipped = 0
  for b in range(4):
    draw_seed, box_seed, paste_seed = _split(seeds[b], 3)
    offset, u = (t.numpy() for t in transforms.random_patch_draws(draw_seed, 4))
    assert 1 <= offset < 4
    found, top, left, h, w = (int(t) for t in transforms.patch_box(box_seed, 24, 12, (0.01, 0.5),
                                                                   0.1))
    expected = images[b].copy()
    if found and u[0] < 0.8:
      patch = images[(b + offset) % 4, top:top + h, left:left + w]
      if u[1] < 0.5:
        patch, flipped = patch[:, ::-1], flipped + 1
      v = tf.random.stateless_uniform([2], paste_seed).numpy()
      y, x = int(v[0] * (24 - h + 1)), int(v[1] * (12 - w + 1))
      expected[y:y + h, x:x + w] = patch
      pasted += 1
    np.testing.assert_array_equal(out[b], expected)
  assert pasted >= 2


def test_build_batch_transform():
  assert transforms.build_batch_transform(_cfg()) is None
  images = np.random.default_rng(3).integers(0, 256, (3, 24, 12, 3), dtype=np.uint8)
  seeds = tf.constant([[i, 5] for i in range(3)], tf.int64)
  batch_op = transforms.build_batch_transform(_cfg(batch_ops=('random_patch(prob=1.0)',)))
  np.testing.assert_array_equal(batch_op(images, seeds),
                                transforms.random_patch(prob=1.0)(images, seeds))
  with pytest.raises(ValueError, match="batch_ops entry 'flip': unknown batch transform"):
    transforms.build_batch_transform(_cfg(batch_ops=('flip',)))


# ----------------------------------------------------------------------------- tf.data, chain


@pytest.mark.parametrize('name,params', [
    ('cutout', {'prob': 1.0}), ('random_occlusion', {}),
    ('random_affine', {'degrees': 10, 'translate': (0.1, 0.1), 'scale': (0.9, 1.1), 'shear': 5}),
    ('rotation', {}), ('autoaugment', {}), ('augmix', {'all_ops': True})])
def test_each_new_transform_in_tf_data_equals_eager(name, params):
  transform = transforms.get_transform(name, **params)
  outputs = [transform(tf.constant(IMAGE), _seed(i)).numpy() for i in (1, 2)]
  for in_pipeline, eager in zip(_in_tf_data(transform, IMAGE, [_seed(1), _seed(2)]), outputs):
    np.testing.assert_array_equal(in_pipeline, eager)
  assert not all(np.array_equal(o, IMAGE) for o in outputs)


def _cfg(**overrides):
  cfg = ml_collections.ConfigDict(config_defaults.base_config().augment.to_dict())
  cfg.update(overrides)
  return cfg


def test_chain_from_config_ops():
  cfg = _cfg(flip_prob=1.0, ops=('flip', 'random_occlusion(max_size=0.5)', 'rotation(5)'))
  chain = transforms.build_train_transform(cfg, (24, 12))
  big = np.asarray(Image.fromarray(IMAGE).resize((24, 48)))
  in_pipeline = _in_tf_data(chain, big, [_seed(i) for i in range(3)])
  for i in range(3):
    seeds = _split(_seed(i), 4)
    x = transforms.resize(24, 12)(big, seeds[0])
    x = transforms.flip(1.0)(x, seeds[1])  # flip_prob taken from config.augment.flip_prob
    x = transforms.random_occlusion(max_size=0.5)(x, seeds[2])
    x = transforms.rotation(5.0)(x, seeds[3])
    np.testing.assert_array_equal(chain(tf.constant(big), _seed(i)), x)
    np.testing.assert_array_equal(in_pipeline[i], x)
  # 'resize' can be placed later, e.g. after AutoAugment on the original image.
  late = transforms.build_train_transform(_cfg(ops=('autoaugment', 'resize')), (24, 12))
  seeds = _split(_seed(0), 2)
  expected = transforms.resize(24, 12)(aa.autoaugment()(big, seeds[0]), seeds[1])
  np.testing.assert_array_equal(late(tf.constant(big), _seed(0)), expected)


@pytest.mark.parametrize('ops,match', [
    (('rotate',), "unknown transform 'rotate'; did you mean 'rotation'"), (('flip(',), 'must be a transform name'),
    (('resize(10, 5)',), 'takes no arguments'), (('flip(prob=0.5, bogus=1)',), 'bad arguments'),
    (('flip(prob=x)',), 'must be a transform name'), (('flip(prob=2.0)',), 'probability'),
    (('cutout(size=0)',), 'size'), (('random_affine(scale=(1.2, 1.1))',), 'scale'),
    (('augmix(depth=4)',), 'depth'),
    (('color_jitter',), r'color_jitter_prob = 0.0, so it would never apply')])
def test_bad_ops_raise_clear_errors(ops, match):
  with pytest.raises(ValueError, match=match):
    transforms.build_train_transform(_cfg(ops=ops), (24, 12))


def test_random_grayscale_matches_numpy_eagerly_and_in_tf_data():
  op = transforms.get_transform('random_grayscale', prob=0.5)
  luma = IMAGE.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  grey = np.repeat(np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
  seeds = [_seed(i) for i in range(12)]
  want = [grey if _coin(s, 0.5) else IMAGE for s in seeds]
  assert 0 < sum(w is grey for w in want) < len(want)  # both outcomes are exercised
  for s, w in zip(seeds, want):
    np.testing.assert_allclose(op(IMAGE, s).numpy(), w, atol=1)  # float32 vs float64 rounding
  for got, w in zip(_in_tf_data(op, IMAGE, seeds), want):
    np.testing.assert_allclose(got, w, atol=1)
  np.testing.assert_array_equal(op(grey, seeds[0]).numpy(), grey)  # grey stays grey
  with pytest.raises(ValueError, match='random_grayscale'):
    transforms.get_transform('random_grayscale', prob=1.5)


# ----------------------------------------------------------------------------- registry


def test_every_op_registers_itself_where_it_is_defined():
  assert augment_registry.TRANSFORMS.names() == sorted([
      'resize', 'flip', 'pad_crop', 'random_erasing', 'color_jitter', 'random_grayscale',
      'cutout', 'random_occlusion', 'random_affine', 'rotation', 'autoaugment', 'augmix'])
  assert augment_registry.TRANSFORMS.get('augmix') is aa.augmix
  assert augment_registry.TRANSFORMS.get('flip') is transforms.flip
  assert augment_registry.BATCH_TRANSFORMS.names() == ['random_patch']
  # The declared config keys are config.augment's (colour jitter strengths are optional keys).
  keys = set(config_defaults.base_config().augment)
  for name, declared in augment_registry.CONFIG_KEYS.items():
    for key in declared.values():
      assert key in keys or key in {f'color_jitter_{k}' for k in transforms.DEFAULT_JITTER}, name


def test_a_new_op_is_one_decorated_function(monkeypatch):
  registry = augment_registry.TRANSFORMS
  monkeypatch.setattr(registry, '_entries', dict(registry._entries))  # pylint: disable=protected-access
  monkeypatch.setattr(augment_registry, 'CONFIG_KEYS', dict(augment_registry.CONFIG_KEYS))
  monkeypatch.setattr(augment_registry, 'GATES', dict(augment_registry.GATES))

  @augment_registry.register_op('invert_test', config_keys={'prob': 'flip_prob'}, gate='prob')
  def invert_test(prob: float = 0.5):
    def apply(image, seed):
      return tf.cond(augment_primitives.coin(seed, prob), lambda: 255 - image, lambda: image)
    return apply

  # Its prob comes from config.augment.flip_prob, as it declares.
  chain = transforms.build_train_transform(_cfg(flip_prob=1.0, ops=('invert_test',)), (24, 12))
  np.testing.assert_array_equal(chain(tf.constant(IMAGE), _seed(0)), 255 - IMAGE)
  kept = transforms.build_train_transform(_cfg(ops=('invert_test(prob=0.0)',)), (24, 12))
  np.testing.assert_array_equal(kept(tf.constant(IMAGE), _seed(0)), IMAGE)
  with pytest.raises(ValueError, match='flip_prob = 0.0, so it would never apply'):
    transforms.build_train_transform(_cfg(flip_prob=0.0, ops=('invert_test',)), (24, 12))
  with pytest.raises(ValueError, match="did you mean 'invert_test'"):
    transforms.build_train_transform(_cfg(ops=('invert_tset',)), (24, 12))
  with pytest.raises(ValueError, match='registered twice'):
    augment_registry.register_op('invert_test')(invert_test)
