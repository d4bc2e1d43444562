"""tf.data input pipelines: decode, resize, augment and batch the images of a `ReIDSplit`.

The encoded images of a split live in memory as one string tensor; each pipeline element is an
image index that a `map` gathers, decodes (`tf.io.decode_image`, JPEG or PNG) and transforms.
Batches come out as numpy arrays with static shapes; images stay uint8 (the model normalises).

Training order comes from a `PKSampler` and augmentation randomness from stateless seeds derived
from (seed, global step, position in the global batch), so the batches of step s are the same
whether a run starts at step 0 or resumes at step s, and the same on any number of processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from data_pipelines import transforms  # pylint: disable=g-import-not-at-top
from data_pipelines.samplers import PKSampler  # pylint: disable=g-import-not-at-top
from data_pipelines.types import DatasetError, ReIDSplit  # pylint: disable=g-import-not-at-top

AUTOTUNE = tf.data.AUTOTUNE

_gpus_hidden = False


def _hide_gpus() -> None:
  """Keeps TensorFlow off the GPUs (they belong to JAX); runs once per process."""
  global _gpus_hidden
  if not _gpus_hidden:
    try:
      tf.config.set_visible_devices([], 'GPU')
    except RuntimeError:  # TF already initialised its devices; nothing left to hide then.
      pass
    _gpus_hidden = True


def _check_split(split: ReIDSplit) -> None:
  if len(split) == 0:
    raise DatasetError(f'The {split.name!r} split is empty; check the dataset directory.')
  if len(split.images) != len(split) or len(split.labels) != len(split):
    raise DatasetError(f'The {split.name!r} split is inconsistent: {len(split.images)} images, '
                       f'{len(split.labels)} labels, {len(split)} ids; rebuild it with the reader.')


def _check_processes(batch_size: int, process_index: int, process_count: int) -> int:
  """Validates the process layout; returns the per-process batch size."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index must be in [0, {process_count}), got {process_index}.')
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(f'The global batch size {batch_size} must be a positive multiple of the '
                     f'process count {process_count}; change the batch size.')
  return batch_size // process_count


def _decode(encoded: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  image = tf.io.decode_image(tf.gather(encoded, index), channels=3, expand_animations=False)
  return tf.ensure_shape(image, (None, None, 3))


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  return options


def _iterate(ds: tf.data.Dataset, split: ReIDSplit,
             batch_indices: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
  """Yields the batches of `ds`; a decoding failure names the files of the failing batch."""
  it = ds.as_numpy_iterator()
  for indices in batch_indices:
    try:
      batch = next(it)
    except tf.errors.InvalidArgumentError as e:
      bad = []
      for i in np.unique(indices[indices >= 0]):
        try:
          tf.io.decode_image(split.images[i], channels=3, expand_animations=False)
        except tf.errors.InvalidArgumentError:
          bad.append(split.filenames[i])
      if not bad:
        raise
      raise DatasetError(f'Cannot decode image(s) {bad} of the {split.name!r} split (not a valid '
                         'JPEG/PNG); re-extract the dataset or delete those files.') from e
    yield batch


def train_iterator(split: ReIDSplit, sampler: PKSampler, input_cfg: Any, augment_cfg: Any, *,
                   seed: int, start_step: int, num_steps: int, process_index: int = 0,
                   process_count: int = 1, num_parallel_calls: int = AUTOTUNE,
                   prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
  """Augmented training batches of global steps start_step..num_steps-1.

  Step s uses the images `sampler.steps(s, s + 1)[0]` (global batch B = P * K); process p takes
  the contiguous slice [p * B / process_count, (p + 1) * B / process_count) of it. The image at
  position j of the global batch of step s is augmented with the stateless seed
  `fold_in(fold_in([0, seed], s), j)`, so resuming at any step and changing the process count
  leave every batch unchanged. The sampler's order for all steps is computed up front.

  Args:
    split: the training split; `sampler` must have been built on its labels.
    sampler: P x K sampler.
    input_cfg: `config.input` (height, width).
    augment_cfg: `config.augment` (see `transforms.build_train_transform`).
    seed: augmentation seed (non-negative).
    start_step: first global step.
    num_steps: the step to stop before (total steps of the run).
    process_index: this process (jax.process_index()).
    process_count: number of processes (jax.process_count()).
    num_parallel_calls: parallel decode/augment calls (`config.data.num_parallel_calls`).
    prefetch: batches prepared ahead (`config.data.prefetch`).

  Returns:
    An iterator over num_steps - start_step batches {'image': uint8 [B_local, H, W, 3],
    'label': int32 [B_local], 'index': int32 [B_local] (position in the split)},
    B_local = B / process_count. Arguments are checked when it is created.
  """
  _check_split(split)
  if sampler.num_samples != len(split):
    raise ValueError(f'The sampler was built on {sampler.num_samples} labels but the '
                     f'{split.name!r} split has {len(split)} images; build it from split.labels.')
  if not 0 <= start_step <= num_steps:
    raise ValueError(f'Need 0 <= start_step <= num_steps, got {start_step} and {num_steps}.')
  if seed < 0:
    raise ValueError(f'The augmentation seed must be non-negative, got {seed}.')
  local = _check_processes(sampler.batch_size, process_index, process_count)
  _hide_gpus()

  first = process_index * local
  indices = sampler.steps(start_step, num_steps)[:, first:first + local]
  steps = np.repeat(np.arange(start_step, num_steps, dtype=np.int64), local)
  positions = np.tile(np.arange(first, first + local, dtype=np.int64), num_steps - start_step)
  encoded = tf.constant(split.images, dtype=tf.string)
  labels = tf.constant(split.labels, dtype=tf.int32)
  augment = transforms.build_train_transform(augment_cfg, (input_cfg.height, input_cfg.width))
  base_seed = tf.constant([0, seed], dtype=tf.int64)

  batch_augment = transforms.build_batch_transform(augment_cfg)

  def load(step: tf.Tensor, position: tf.Tensor, index: tf.Tensor) -> dict[str, tf.Tensor]:
    example_seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(base_seed, step), position)
    out = {'image': augment(_decode(encoded, index), example_seed),
           'label': tf.gather(labels, index), 'index': index}
    if batch_augment is not None:
      out['seed'] = tf.random.experimental.stateless_fold_in(example_seed, 1)
    return out

  def augment_batch(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Batch transforms (config.augment.batch_ops, e.g. random_patch) on the process's batch."""
    seeds = batch.pop('seed')
    return {**batch, 'image': batch_augment(batch['image'], seeds)}

  ds = tf.data.Dataset.from_tensor_slices((steps, positions, indices.reshape(-1)))
  ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=True)
  ds = ds.batch(local, drop_remainder=True)
  if batch_augment is not None:
    ds = ds.map(augment_batch, num_parallel_calls=num_parallel_calls, deterministic=True)
  ds = ds.prefetch(prefetch).with_options(_options())
  return _iterate(ds, split, indices)


def num_eval_batches(n: int, batch_size: int) -> int:
  """Global batches needed to cover n images: ceil(n / batch_size)."""
  if n < 0 or batch_size < 1:
    raise ValueError(f'num_eval_batches needs n >= 0 and batch_size >= 1, got {n}, {batch_size}.')
  return -(-n // batch_size)


def eval_iterator(split: ReIDSplit, input_cfg: Any, *, batch_size: int, process_index: int = 0,
                  process_count: int = 1, num_parallel_calls: int = AUTOTUNE,
                  prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
  """Every image of `split` once, in split order, resized, in fixed-shape batches.

  Global batch g holds split positions [g * B, (g + 1) * B), B = batch_size; process p takes
  positions g * B + p * B / process_count + [0, B / process_count). Positions past the end of
  the split are padding (zero image, mask False, index -1). Every process yields
  `num_eval_batches(len(split), batch_size)` batches.

  Returns:
    An iterator over batches {'image': uint8 [B_local, H, W, 3], 'index': int32 [B_local]
    (-1 on padding), 'mask': bool [B_local] (False on padding)},
    B_local = batch_size / process_count.
  """
  _check_split(split)
  local = _check_processes(batch_size, process_index, process_count)
  _hide_gpus()

  n = len(split)
  positions = np.arange(num_eval_batches(n, batch_size) * batch_size, dtype=np.int32)
  positions = positions.reshape(-1, process_count, local)[:, process_index]
  indices = np.where(positions < n, positions, -1).astype(np.int32)
  encoded = tf.constant(split.images, dtype=tf.string)
  size = (input_cfg.height, input_cfg.width)
  resize = transforms.resize(*size)
  no_seed = tf.zeros([2], tf.int32)

  def load(index: tf.Tensor) -> dict[str, tf.Tensor]:
    valid = index >= 0
    image = tf.cond(valid, lambda: resize(_decode(encoded, index), no_seed),
                    lambda: tf.zeros((*size, 3), tf.uint8))
    return {'image': image, 'index': index, 'mask': valid}

  ds = tf.data.Dataset.from_tensor_slices(indices.reshape(-1))
  ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=True)
  ds = ds.batch(local, drop_remainder=True).prefetch(prefetch).with_options(_options())
  return _iterate(ds, split, indices)
