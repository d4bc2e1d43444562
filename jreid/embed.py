"""The one embedding path: a method's outputs for every image of a split.

Used by evaluation (embeddings or QAConv feature maps), by the per-epoch pseudo-labelling of
PPLR and Cluster Contrast, by QAConv's graph sampler and by `jreid.inference.FeatureExtractor`.

Batches have a fixed size, padded at the end with a mask (as big_vision's evaluators), so the
embedding function is compiled once. Each process feeds its share of every global batch; the
outputs stay split over the devices along 'data' and every process copies back only its own rows,
so nothing is exchanged per batch; the rows of all processes are gathered once, at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from jreid import parallel

PyTree = Any


def flip_average(embed: Callable[..., PyTree]) -> Callable[..., PyTree]:
  """`embed` averaged with its output on the horizontally mirrored images (flip test).

  Spatial outputs ([B, h, w, c] feature maps) of the mirrored images are mirrored back first, so
  each location is averaged with itself.
  """

  def flipped(variables, images, **per_image):
    a = embed(variables, images, **per_image)
    b = embed(variables, images[:, :, ::-1], **per_image)
    return jax.tree.map(lambda x, y: (x + (y[:, :, ::-1] if x.ndim == 4 else y)) / 2, a, b)

  return flipped


def make_embed_fn(embed: Callable[..., PyTree], mesh: jax.sharding.Mesh, flip: bool = False):
  """jit((variables, batch) -> outputs): `embed(variables, batch['image'], **other inputs)` with
  the outputs left split over the mesh along 'data' (as the batch)."""
  if flip:
    embed = flip_average(embed)

  def fn(variables, batch):
    inputs = {k: v for k, v in batch.items() if k != 'image'}
    return embed(variables, batch['image'], **inputs)

  return jax.jit(fn, out_shardings=parallel.data_sharding(mesh))


# Off a terminal (logs), only extractions of at least this many images show progress lines.
_LOG_PROGRESS_FROM = 5000


class Progress:
  """Items/s and ETA of a long extraction on stderr (process 0; sparse lines off a terminal)."""

  def __init__(self, total: int, desc: str, enabled: bool = True):
    self._bar = None
    tty = sys.stderr.isatty()
    if enabled and jax.process_index() == 0 and total and (tty or total >= _LOG_PROGRESS_FROM):
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total, desc=desc, unit='img', dynamic_ncols=True, leave=False,
                       mininterval=0.5 if tty else 10.0, smoothing=0.1)

  def update(self, n: int) -> None:
    if self._bar is not None:
      self._bar.update(n)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def local_rows(outputs: PyTree, mesh: jax.sharding.Mesh) -> PyTree:
  """This process's rows of outputs split along 'data', as numpy arrays."""
  if jax.process_count() == 1:
    return jax.device_get(outputs)
  local = multihost_utils.global_array_to_host_local_array(
      outputs, mesh, jax.sharding.PartitionSpec(parallel.DATA_AXIS))
  return jax.device_get(local)


def embed_batches(fn, variables: PyTree, batches: Iterable[dict[str, np.ndarray]],
                  num_items: int, mesh: jax.sharding.Mesh,
                  per_image: dict[str, np.ndarray] | None = None,
                  desc: str = 'embedding', progress: bool = True) -> PyTree:
  """The outputs of `fn` for `num_items` items fed as padded, masked batches.

  Args:
    fn: from `make_embed_fn`.
    batches: this process's share of every global batch: {'image', 'index' (-1 on padding),
      'mask'}, every process the same number of batches.
    num_items: items in total; output row i is item i.
    per_image: further inputs of the embedding, arrays [num_items] gathered by 'index'.

  Returns:
    The outputs' pytree with leaves float32 [num_items, ...], on every process.
  """
  per_image = per_image or {}
  outs, indices = [], []
  bar = Progress(num_items, desc, enabled=progress)
  try:
    for batch in batches:
      index, mask = batch['index'], batch['mask']
      inputs = {'image': batch['image'],
                **{k: np.asarray(v)[np.maximum(index, 0)] for k, v in per_image.items()}}
      out = local_rows(fn(variables, parallel.shard_batch(inputs, mesh)), mesh)
      outs.append(jax.tree.map(lambda x: np.asarray(x)[mask], out))
      indices.append(index[mask])
      bar.update(int(jax.process_count() * mask.sum()))
  finally:
    bar.close()
  if not outs:
    raise RuntimeError('embedding: no batch to embed.')
  local = jax.tree.map(lambda *xs: np.concatenate(xs), *outs)
  index = np.concatenate(indices)
  if jax.process_count() > 1:
    # Every process holds rows of equal count up to padding: pad to the largest, gather once.
    count = int(np.max(multihost_utils.process_allgather(np.array([len(index)]))))
    pad = count - len(index)
    local = jax.tree.map(lambda x: np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]),
                         local)
    index = np.concatenate([index, np.full(pad, -1, index.dtype)])
    local = jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x)).reshape(
        -1, *x.shape[1:]), local)
    index = np.asarray(multihost_utils.process_allgather(index)).reshape(-1)
    keep = index >= 0
    local = jax.tree.map(lambda x: x[keep], local)
    index = index[keep]
  seen = np.zeros(num_items, bool)
  seen[index] = True
  if not seen.all():
    raise RuntimeError(f'embedding missed {int((~seen).sum())} of {num_items} items.')

  def place(x):
    out = np.zeros((num_items, *x.shape[1:]), np.float32)
    out[index] = x
    return out

  return jax.tree.map(place, local)


def embed_split(fn, variables: PyTree, split, input_cfg: Any, batch_size: int,
                mesh: jax.sharding.Mesh, per_image: dict[str, np.ndarray] | None = None,
                progress: bool = True) -> PyTree:
  """The outputs of `fn` (`make_embed_fn`) for every image of `split` (a ReIDSplit), in split
  order: the images decoded and resized as the evaluation pipeline does."""
  from data_pipelines import input_pipeline  # pylint: disable=g-import-not-at-top
  parallel.check_batch_size(batch_size, mesh, what='eval.batch_size')
  batches = input_pipeline.eval_iterator(split, input_cfg, batch_size=batch_size,
                                         process_index=jax.process_index(),
                                         process_count=jax.process_count())
  return embed_batches(fn, variables, batches, len(split), mesh, per_image,
                       desc=f'embedding {split.name}', progress=progress)


def array_batches(images: np.ndarray, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """In-memory uint8 images [N, H, W, 3] as this process's share of padded, masked batches."""
  n = len(images)
  count, index = jax.process_count(), jax.process_index()
  local = batch_size // count
  for start in range(0, max(n, 1), batch_size):
    positions = start + index * local + np.arange(local)
    valid = positions < n
    batch = np.zeros((local, *images.shape[1:]), images.dtype)
    batch[valid] = images[positions[valid]]
    yield {'image': batch, 'index': np.where(valid, positions, -1).astype(np.int32),
           'mask': valid}
