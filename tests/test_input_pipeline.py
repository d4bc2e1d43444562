"""Tests for data_pipelines.transforms and data_pipelines.input_pipeline."""

import colorsys
import io

import ml_collections
import numpy as np
import pytest
from PIL import Image

from data_pipelines import input_pipeline
from data_pipelines import transforms
from data_pipelines.samplers import PKSampler
from data_pipelines.types import DatasetError, ReIDSplit

import tensorflow as tf  # pylint: disable=g-bad-import-order  (after data_pipelines quiets it)

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- helpers


def _encode(array, fmt='PNG'):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=fmt, **({'quality': 95} if fmt == 'JPEG' else {}))
  return buffer.getvalue()


def _index_image(i, height, width):
  """Channel 0 holds i, channel 1 the column, channel 2 the row: order and flips are visible."""
  image = np.empty((height, width, 3), np.uint8)
  image[..., 0] = i
  image[..., 1] = np.arange(width)[None, :]
  image[..., 2] = np.arange(height)[:, None]
  return image


def _split(images, pids, fmt='PNG', name='train'):
  n = len(images)
  encoded = np.empty(n, object)
  encoded[:] = [_encode(a, fmt) for a in images]
  pids = np.asarray(pids, np.int32)
  return ReIDSplit(name=name, images=encoded, pids=pids, camids=np.zeros(n, np.int32),
                   sessions=np.ones(n, np.int32), frames=np.arange(n, dtype=np.int64),
                   filenames=[f'{i:04d}_c1s1_{i:06d}_00.png' for i in range(n)],
                   labels=pids.copy())


def _input_cfg(height, width):
  return ml_collections.ConfigDict({'height': height, 'width': width})


def _augment_cfg(flip=0.0, pad=0, erasing=0.0, value='mean', jitter=0.0):
  return ml_collections.ConfigDict({
      'flip_prob': flip, 'pad': pad, 'random_erasing_prob': erasing,
      'random_erasing_value': value, 'color_jitter_prob': jitter})


def _seed(i):
  return tf.constant([i, 1000 + i], tf.int64)


def _in_tf_data(transform, image, seed):
  ds = tf.data.Dataset.from_tensors((image, seed)).map(transform)
  return next(iter(ds.as_numpy_iterator()))


def _numpy_bilinear(image, out_h, out_w):
  """Half-pixel-centre bilinear resize, no antialiasing (torch align_corners=False)."""
  def weights(out_size, in_size):
    x = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
    lo = np.floor(x).astype(int)
    return lo, np.minimum(lo + 1, in_size - 1), x - lo
  y0, y1, fy = weights(out_h, image.shape[0])
  x0, x1, fx = weights(out_w, image.shape[1])
  img = image.astype(np.float64)
  top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
  bottom = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
  return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def _numpy_jitter(image, b, c, s):
  """torchvision ColorJitter brightness, contrast, saturation blends on 0..255 floats."""
  luma = lambda x: 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
  x = np.clip(image.astype(np.float64) * b, 0, 255)
  m = luma(x).mean()
  x = np.clip(m + c * (x - m), 0, 255)
  g = luma(x)[..., None]
  return np.clip(g + s * (x - g), 0, 255)


def _numpy_hue(image, shift):
  out = np.empty(image.shape, np.float64)
  for idx in np.ndindex(image.shape[:2]):
    h, s, v = colorsys.rgb_to_hsv(*(image[idx] / 255.0))
    out[idx] = np.array(colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)) * 255
  return out


def _assert_rounds_to(actual, reference):
  """uint8 `actual` is `reference` rounded: within 0.5 (+ float32 slack) everywhere."""
  assert actual.dtype == np.uint8 and actual.shape == reference.shape
  np.testing.assert_array_less(np.abs(actual - reference), 0.5 + 2e-3)


def _box_of(diff):
  """Bounding box (top, left, h, w) of a boolean mask that must be a filled rectangle."""
  rows, cols = np.flatnonzero(diff.any(1)), np.flatnonzero(diff.any(0))
  top, left, h, w = rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
  assert diff.sum() == h * w and diff[top:top + h, left:left + w].all()
  return top, left, h, w


# ----------------------------------------------------------------------------- transforms


def test_resize_matches_numpy_bilinear():
  image = RNG.integers(0, 256, (13, 7, 3), dtype=np.uint8)
  for h, w in [(26, 14), (20, 9), (6, 3), (13, 7)]:
    out = transforms.resize(h, w)(tf.constant(image), _seed(0)).numpy()
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    _assert_rounds_to(out, _numpy_bilinear(image, h, w))
  np.testing.assert_array_equal(transforms.resize(13, 7)(tf.constant(image), _seed(0)), image)


def test_flip_matches_numpy_and_its_coin():
  image = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
  np.testing.assert_array_equal(transforms.flip(1.0)(image, _seed(0)), image[:, ::-1])
  np.testing.assert_array_equal(transforms.flip(0.0)(image, _seed(0)), image)
  flipped = 0
  for i in range(64):
    out = transforms.flip(0.5)(image, _seed(i)).numpy()
    heads = tf.random.stateless_uniform([], _seed(i)).numpy() < 0.5
    np.testing.assert_array_equal(out, image[:, ::-1] if heads else image)
    flipped += heads
  assert 16 < flipped < 48


def test_pad_crop_is_a_window_of_the_zero_padded_image():
  h, w, pad = 9, 6, 2
  image = np.zeros((h, w, 3), np.uint8)
  image[..., 0] = 1 + np.arange(h)[:, None]  # row + 1; 0 marks padding
  image[..., 1] = 1 + np.arange(w)[None, :]  # column + 1
  padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])
  offsets = set()
  for i in range(120):
    out = transforms.pad_crop(pad)(tf.constant(image), _seed(i)).numpy()
    # Recover the window from a pixel of the original image (the centre is never padding).
    # out[i, j] = padded[top + i, left + j] = image[top + i - pad, left + j - pad].
    top = int(out[h // 2, w // 2, 0]) - 1 + pad - h // 2
    left = int(out[h // 2, w // 2, 1]) - 1 + pad - w // 2
    np.testing.assert_array_equal(out, padded[top:top + h, left:left + w])
    np.testing.assert_array_equal(transforms.crop_offsets(_seed(i), pad), [top, left])
    offsets.add((top, left))
  assert offsets == {(t, l) for t in range(2 * pad + 1) for l in range(2 * pad + 1)}


@pytest.mark.parametrize('value', ['mean', 'random', 0])
def test_random_erasing_fills_one_rectangle_within_bounds(value):
  h, w = 64, 32
  image = np.full((h, w, 3), 7, np.uint8)
  lo, hi, r = 0.02, 0.4, 0.3
  erase = transforms.random_erasing(1.0, area=(lo, hi), min_aspect=r, value=value)
  shapes = []
  for i in range(40):
    out = erase(tf.constant(image), _seed(i)).numpy()
    changed = (out != image).any(-1)
    top, left, bh, bw = _box_of(changed)
    assert bh < h and bw < w
    # h = round(sqrt(a H W r)), w = round(sqrt(a H W / r)) for some a in [lo, hi] and
    # r in [r_min, 1 / r_min]; undo the rounding with +-0.5.
    assert (bh + 0.5) * (bw + 0.5) >= lo * h * w and (bh - 0.5) * (bw - 0.5) <= hi * h * w
    assert (bh + 0.5) / (bw - 0.5) >= r and (bh - 0.5) / (bw + 0.5) <= 1 / r
    patch = out[top:top + bh, left:left + bw]
    if value == 'mean':
      assert (patch == np.array(transforms.IMAGENET_MEAN_UINT8, np.uint8)).all()
    elif value == 0:
      assert (patch == 0).all()
    else:
      assert len(np.unique(patch)) > min(100, patch.size // 4)
    np.testing.assert_array_equal(out[~changed], image[~changed])
    shapes.append((bh, bw))
  ratios = np.array([a / b for a, b in shapes])
  assert (ratios > 1).any() and (ratios < 1).any()


def test_random_erasing_box_agrees_with_erasing_box_and_prob():
  image = np.full((40, 20, 3), 200, np.uint8)
  erased = 0
  for i in range(60):
    coin_seed, box_seed, _ = tf.unstack(tf.random.experimental.stateless_split(_seed(i), 3))
    found, top, left, bh, bw = (t.numpy() for t in transforms.erasing_box(
        box_seed, 40, 20, (0.02, 0.4), 0.3, 100))
    heads = tf.random.stateless_uniform([], coin_seed).numpy() < 0.5
    out = transforms.random_erasing(0.5)(tf.constant(image), _seed(i)).numpy()
    expected = image.copy()
    if found and heads:
      expected[top:top + bh, left:left + bw] = transforms.IMAGENET_MEAN_UINT8
      erased += 1
    np.testing.assert_array_equal(out, expected)
  assert 15 < erased < 45
  # Nothing fits in a 1x1 image (h < H is impossible): no erasing.
  tiny = np.full((1, 1, 3), 9, np.uint8)
  np.testing.assert_array_equal(transforms.random_erasing(1.0)(tiny, _seed(0)), tiny)
  np.testing.assert_array_equal(transforms.random_erasing(0.0)(image, _seed(0)), image)


def test_adjust_colors_matches_numpy_blends():
  image = RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8)
  for b, c, s in [(1.0, 1.0, 1.0), (1.3, 0.7, 1.2), (0.8, 1.25, 0.0), (2.0, 2.0, 2.0)]:
    out = transforms.adjust_colors(tf.constant(image), tf.constant([b, c, s, 0.0])).numpy()
    _assert_rounds_to(out, _numpy_jitter(image, b, c, s))


def test_adjust_colors_hue_matches_colorsys():
  image = RNG.integers(0, 256, (5, 4, 3), dtype=np.uint8)
  for shift in [0.1, -0.25, 0.5]:
    out = transforms.adjust_colors(tf.constant(image), tf.constant([1.0, 1.0, 1.0, shift]))
    _assert_rounds_to(out.numpy(), _numpy_hue(image, shift))


def test_color_jitter_uses_its_factors_and_coin():
  image = RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8)
  jitter = transforms.color_jitter(0.4, 0.3, 0.2, 0.1, prob=0.5)
  applied = 0
  for i in range(40):
    coin_seed, factor_seed = tf.unstack(tf.random.experimental.stateless_split(_seed(i), 2))
    factors = transforms.jitter_factors(factor_seed, 0.4, 0.3, 0.2, 0.1).numpy()
    assert 0.6 <= factors[0] <= 1.4 and 0.7 <= factors[1] <= 1.3
    assert 0.8 <= factors[2] <= 1.2 and -0.1 <= factors[3] <= 0.1
    heads = tf.random.stateless_uniform([], coin_seed).numpy() < 0.5
    expected = transforms.adjust_colors(image, factors).numpy() if heads else image
    np.testing.assert_array_equal(jitter(tf.constant(image), _seed(i)), expected)
    applied += heads
  assert 8 < applied < 32


@pytest.mark.parametrize('name,params', [
    ('resize', {'height': 12, 'width': 10}),
    ('flip', {}),
    ('pad_crop', {'padding': 3}),
    ('random_erasing', {'prob': 0.9, 'value': 'random'}),
    ('color_jitter', {'prob': 0.9}),
])
def test_each_transform_in_tf_data_equals_eager(name, params):
  transform = transforms.get_transform(name, **params)
  image = RNG.integers(0, 256, (16, 8, 3), dtype=np.uint8)
  outputs = set()
  for i in range(6):
    eager = transform(tf.constant(image), _seed(i)).numpy()
    np.testing.assert_array_equal(_in_tf_data(transform, image, _seed(i)), eager)
    outputs.add(eager.tobytes())
  # Random transforms vary with the seed (a flip has two possible outputs, prob 0.9 < 1).
  assert len(outputs) >= {'resize': 1, 'flip': 2}.get(name, 4)


def test_build_train_transform():
  image = RNG.integers(0, 256, (16, 8, 3), dtype=np.uint8)
  plain = transforms.build_train_transform(_augment_cfg(), (32, 16))
  np.testing.assert_array_equal(plain(tf.constant(image), _seed(0)),
                                transforms.resize(32, 16)(image, _seed(0)))
  full = transforms.build_train_transform(
      _augment_cfg(flip=0.5, pad=4, erasing=0.5, value='random', jitter=0.5), (32, 16))
  for i in range(4):
    eager = full(tf.constant(image), _seed(i)).numpy()
    assert eager.shape == (32, 16, 3) and eager.dtype == np.uint8
    np.testing.assert_array_equal(_in_tf_data(full, image, _seed(i)), eager)


def test_transform_arguments_are_checked():
  with pytest.raises(ValueError, match="unknown transform 'rotate'; did you mean 'rotation'"):
    transforms.get_transform('rotate')
  with pytest.raises(ValueError, match='flip_prob'):
    transforms.flip(1.5)
  with pytest.raises(ValueError, match='config.augment.pad'):
    transforms.pad_crop(-1)
  with pytest.raises(ValueError, match='random_erasing_value'):
    transforms.random_erasing(value='median')
  with pytest.raises(ValueError, match='area'):
    transforms.random_erasing(area=(0.5, 0.1))
  with pytest.raises(ValueError, match='hue'):
    transforms.color_jitter(hue=0.8)


# ----------------------------------------------------------------------------- train pipeline

H, W = 8, 4
PIDS = np.repeat(np.arange(10), [3, 4, 5, 6, 4, 2, 8, 4, 5, 7])  # 48 images, 10 identities


@pytest.fixture(scope='module')
def train_split():
  return _split([_index_image(i, H, W) for i in range(len(PIDS))], PIDS)


def _train_batches(split, sampler, augment_cfg, start, stop, **kwargs):
  return list(input_pipeline.train_iterator(
      split, sampler, _input_cfg(H, W), augment_cfg, seed=3, start_step=start, num_steps=stop,
      **kwargs))


def test_train_batches_follow_the_sampler(train_split):
  sampler = PKSampler(train_split.labels, 3, 4, seed=0)  # 48 // 12 = 4 batches per epoch
  batches = _train_batches(train_split, sampler, _augment_cfg(), 2, 9)
  expected = sampler.steps(2, 9)
  assert len(batches) == 7
  for batch, indices in zip(batches, expected):
    assert batch['image'].shape == (12, H, W, 3) and batch['image'].dtype == np.uint8
    assert batch['label'].dtype == np.int32 and batch['index'].dtype == np.int32
    np.testing.assert_array_equal(batch['index'], indices)
    np.testing.assert_array_equal(batch['label'], PIDS[indices])
    np.testing.assert_array_equal(batch['image'], [_index_image(i, H, W) for i in indices])


def test_train_images_are_resized_and_augmented(train_split):
  sampler = PKSampler(train_split.labels, 3, 4, seed=0)
  (batch,) = list(input_pipeline.train_iterator(
      train_split, sampler, _input_cfg(16, 8), _augment_cfg(flip=1.0), seed=0, start_step=0,
      num_steps=1))
  assert batch['image'].shape == (12, 16, 8, 3)
  for image, index in zip(batch['image'], batch['index']):
    resized = transforms.resize(16, 8)(_index_image(index, H, W), _seed(0)).numpy()
    np.testing.assert_array_equal(image, resized[:, ::-1])


def test_resuming_gives_the_batches_of_an_uninterrupted_run(train_split):
  sampler = PKSampler(train_split.labels, 3, 4, seed=1)
  augment = _augment_cfg(flip=0.5, pad=2, erasing=0.5, value='random', jitter=0.5)
  full = _train_batches(train_split, sampler, augment, 0, 7)
  resumed = _train_batches(train_split, sampler, augment, 5, 7)
  assert len(full) == 7 and len(resumed) == 2
  for a, b in zip(full[5:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # Augmentation is on, and its randomness differs between positions: the same image drawn
  # twice into a batch (identities with fewer than K images) is augmented differently.
  raw = np.stack([_index_image(i, H, W) for i in full[0]['index']])
  assert (full[0]['image'] != raw).any()
  repeats = [(b['image'][i], b['image'][j]) for b in full for i in range(12) for j in range(i)
             if b['index'][i] == b['index'][j]]
  assert repeats and any((x != y).any() for x, y in repeats)


def test_processes_take_contiguous_slices_of_the_global_batch(train_split):
  sampler = PKSampler(train_split.labels, 3, 4, seed=2)
  augment = _augment_cfg(flip=0.5, pad=2, erasing=0.5, value='random')
  single = _train_batches(train_split, sampler, augment, 1, 4)
  parts = [_train_batches(train_split, sampler, augment, 1, 4, process_index=p, process_count=2)
           for p in range(2)]
  for step, batch in enumerate(single):
    assert parts[0][step]['image'].shape == (6, H, W, 3)
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][step][key], parts[1][step][key]]), batch[key])


def test_train_iterator_checks_its_arguments(train_split):
  sampler = PKSampler(train_split.labels, 3, 4, seed=0)
  with pytest.raises(ValueError, match='multiple of the process count'):
    _train_batches(train_split, sampler, _augment_cfg(), 0, 1, process_count=5)
  with pytest.raises(ValueError, match='process_index'):
    _train_batches(train_split, sampler, _augment_cfg(), 0, 1, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='start_step'):
    _train_batches(train_split, sampler, _augment_cfg(), 3, 2)
  with pytest.raises(ValueError, match='split.labels'):
    _train_batches(train_split, PKSampler(PIDS[:20], 3, 4, seed=0), _augment_cfg(), 0, 1)


# ----------------------------------------------------------------------------- eval pipeline


@pytest.mark.parametrize('n,batch_size', [(10, 4), (8, 4), (3, 8)])
def test_eval_covers_the_split_once_in_order(n, batch_size):
  split = _split([_index_image(i, H, W) for i in range(n)], np.arange(n), name='query')
  batches = list(input_pipeline.eval_iterator(split, _input_cfg(H, W), batch_size=batch_size))
  assert len(batches) == input_pipeline.num_eval_batches(n, batch_size) == -(-n // batch_size)
  index = np.concatenate([b['index'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  images = np.concatenate([b['image'] for b in batches])
  for b in batches:
    assert b['image'].shape == (batch_size, H, W, 3) and b['image'].dtype == np.uint8
    assert b['index'].dtype == np.int32 and b['mask'].dtype == bool
  np.testing.assert_array_equal(index[mask], np.arange(n))
  np.testing.assert_array_equal(mask, np.arange(len(mask)) < n)
  assert (index[~mask] == -1).all() and (images[~mask] == 0).all()
  np.testing.assert_array_equal(images[mask], [_index_image(i, H, W) for i in range(n)])


def test_eval_process_shares():
  n, batch_size = 11, 4
  split = _split([_index_image(i, H, W) for i in range(n)], np.arange(n), name='gallery')
  single = list(input_pipeline.eval_iterator(split, _input_cfg(H, W), batch_size=batch_size))
  parts = [list(input_pipeline.eval_iterator(split, _input_cfg(H, W), batch_size=batch_size,
                                             process_index=p, process_count=2)) for p in range(2)]
  assert len(parts[0]) == len(parts[1]) == len(single) == 3
  # Global batch g holds positions 4g..4g+3; process p takes 4g + 2p + {0, 1}.
  np.testing.assert_array_equal(parts[1][2]['index'], [10, -1])
  np.testing.assert_array_equal(parts[1][2]['mask'], [True, False])
  for g, batch in enumerate(single):
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][g][key], parts[1][g][key]]), batch[key])


def test_eval_decodes_jpeg_and_resizes():
  n = 5
  smooth = [np.clip(_index_image(0, 32, 16).astype(int) * 4 + 30 * i, 0, 255).astype(np.uint8)
            for i in range(n)]
  split = _split(smooth, np.arange(n), fmt='JPEG', name='query')
  (batch,) = list(input_pipeline.eval_iterator(split, _input_cfg(64, 32), batch_size=8))
  assert batch['image'].shape == (8, 64, 32, 3)
  for i in range(n):
    reference = _numpy_bilinear(smooth[i], 64, 32)
    assert np.abs(batch['image'][i] - reference).mean() < 2.0  # JPEG quality 95


def test_corrupt_image_names_the_file():
  split = _split([_index_image(i, H, W) for i in range(6)], np.arange(6), name='query')
  split.images[4] = b'not an image'
  with pytest.raises(DatasetError, match='0004_c1s1_000004_00.png'):
    list(input_pipeline.eval_iterator(split, _input_cfg(H, W), batch_size=4))


def test_num_eval_batches():
  assert [input_pipeline.num_eval_batches(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
  with pytest.raises(ValueError, match='batch_size >= 1'):
    input_pipeline.num_eval_batches(3, 0)


def test_batch_ops_apply_random_patch_deterministically(train_split):
  """config.augment.batch_ops run on each batch after the per-image chain, seeded per image."""
  sampler = PKSampler(train_split.labels, 3, 4, seed=0)
  plain = _train_batches(train_split, sampler, _augment_cfg(), 0, 2)
  cfg = _augment_cfg()
  cfg.batch_ops = ('random_patch(prob=1.0)',)
  patched = _train_batches(train_split, sampler, cfg, 0, 2)
  again = _train_batches(train_split, sampler, cfg, 0, 2)
  for a, b, c in zip(plain, patched, again):
    assert set(b) == set(a)  # The per-image seeds do not leak into the batch.
    np.testing.assert_array_equal(b['index'], a['index'])
    np.testing.assert_array_equal(b['image'], c['image'])
    assert (b['image'] != a['image']).any()
