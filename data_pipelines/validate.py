"""Checks a loaded dataset before training starts, so that bad data fails early and clearly.

Every dataset reader produces `ReIDSplit`s holding the encoded image bytes; the functions here work
on those, so they apply to every dataset alike:

  splits = datasets.load_dataset(config.dataset)
  splits = validate.validate_splits(splits, on_corrupt=config.data.on_corrupt)

* `find_corrupt` decodes every image once with the decoder the input pipeline uses
  (`tf.io.decode_image`), in a parallel tf.data pass, after a cheap check of the JPEG/PNG start and
  end markers. A file that does not decode (empty, truncated, corrupt, or no image at all: the
  readers store any file as it is) is found here, at load time, instead of stopping a long run at
  the step that first draws it. A PNG named .jpg decodes, so it is kept.
* `drop_corrupt` removes those images ('skip', the default: counted and reported once with their
  file names) or stops with a `DatasetError` naming them ('error').
* `check_query_matches` stops before training when no query image has a valid match in the
  gallery (same identity, another camera), since every rank metric would then be undefined.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping

import numpy as np

from data_pipelines.types import DatasetError, ReIDSplit, relabel

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
import tensorflow as tf  # pylint: disable=g-import-not-at-top

ON_CORRUPT = ('skip', 'error')

_JPEG_START = b'\xff\xd8\xff'
_JPEG_END = b'\xff\xd9'
_PNG_START = b'\x89PNG\r\n\x1a\n'
_PNG_END = b'IEND\xaeB`\x82'
_SHOWN = 10  # File names quoted in a message; the rest are counted.
_UNDECODABLE = 'empty, truncated, corrupt or not a JPEG/PNG image'
# The data may be a public archive or a user's own folder: the advice fits both.
_FIX = 'Replace or delete those files (or re-extract them, if they came from an archive)'


def _markers_ok(data: bytes) -> bool:
  """True when `data` starts and ends like a complete JPEG or PNG file.

  A JPEG may carry a few bytes of padding after its end-of-image marker, so the marker is looked
  for in the last 32 bytes.
  """
  if data.startswith(_JPEG_START):
    return _JPEG_END in data[-32:]
  if data.startswith(_PNG_START):
    return data.rstrip(b'\0').endswith(_PNG_END)
  return False


def find_corrupt(split: ReIDSplit, decode: bool = True) -> np.ndarray:
  """Positions of the images of `split` that cannot be decoded, sorted, int64 [M].

  Args:
    split: any split of any dataset.
    decode: also decode every image that passes the marker check (a parallel tf.data pass with
      the input pipeline's decoder); False checks the markers only.
  """
  bad = [i for i, data in enumerate(split.images) if not _markers_ok(data)]
  if decode and len(split):
    candidates = np.setdiff1d(np.arange(len(split)), np.array(bad, np.int64))
    encoded = tf.constant(split.images[candidates], dtype=tf.string)

    def try_decode(index, data):
      image = tf.io.decode_image(data, channels=3, expand_animations=False)
      return index, tf.shape(image)

    ds = tf.data.Dataset.from_tensor_slices((candidates, encoded))
    ds = ds.map(try_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors().batch(4096)
    decoded = [index for index, _ in ds.as_numpy_iterator()]
    decoded = np.concatenate(decoded) if decoded else np.zeros(0, np.int64)
    bad.extend(np.setdiff1d(candidates, decoded).tolist())
  return np.array(sorted(bad), dtype=np.int64)


def subset(split: ReIDSplit, keep: np.ndarray) -> ReIDSplit:
  """The images of `split` at positions `keep`; a 'train' split is relabelled to 0..K-1."""
  keep = np.asarray(keep, dtype=np.int64)
  labels = split.labels[keep]
  if split.name == 'train':
    labels = relabel(labels)  # Unchanged unless an identity lost all its images.
  return dataclasses.replace(
      split, images=split.images[keep], pids=split.pids[keep], camids=split.camids[keep],
      sessions=split.sessions[keep], frames=split.frames[keep],
      filenames=[split.filenames[i] for i in keep], labels=labels)


def _quote(names: list[str]) -> str:
  shown = ', '.join(names[:_SHOWN])
  return shown + (f' and {len(names) - _SHOWN} more' if len(names) > _SHOWN else '')


def drop_corrupt(split: ReIDSplit, on_corrupt: str = 'skip', decode: bool = True,
                 warn: bool = True) -> ReIDSplit:
  """`split` without its undecodable images (`config.data.on_corrupt`).

  Args:
    split: any split.
    on_corrupt: 'skip' removes them and writes one warning naming them to stderr; 'error' raises.
    decode: see `find_corrupt`.
    warn: write the warning (callers that collect the names themselves pass False).

  Returns:
    The split itself when every image decodes, else a copy without the corrupt ones.

  Raises:
    DatasetError: on_corrupt='error' and some image is corrupt, or every image of the split is.
    ValueError: on_corrupt is not 'skip' or 'error'.
  """
  if on_corrupt not in ON_CORRUPT:
    raise ValueError(f"config.data.on_corrupt must be 'skip' or 'error', got {on_corrupt!r}.")
  bad = find_corrupt(split, decode=decode)
  if not len(bad):
    return split
  names = [split.filenames[i] for i in bad]
  what = (f'{len(bad)} of the {len(split)} images of the {split.name!r} split do not decode '
          f'({_UNDECODABLE}): {_quote(names)}')
  if on_corrupt == 'error':
    raise DatasetError(f'{what}. {_FIX}, or set --config.data.on_corrupt=skip to go on without '
                       'them.')
  if len(bad) == len(split):
    raise DatasetError(f'{what}: nothing is left. {_FIX}.')
  if warn:
    print(f'jreid: warning: {what}; skipping them (config.data.on_corrupt=skip).', file=sys.stderr,
          flush=True)
  return subset(split, np.setdiff1d(np.arange(len(split)), bad))


def check_query_matches(query: ReIDSplit, gallery: ReIDSplit) -> int:
  """Number of query images with a valid match; raises when there is none.

  A valid match (Market-1501 protocol) is a gallery image of the same identity taken by another
  camera; junk queries (pid -1) have none.

  Raises:
    DatasetError: no query has a valid match (every rank metric would be undefined).
  """
  pairs = {(int(p), int(c)) for p, c in zip(gallery.pids, gallery.camids)}
  cams: dict[int, set[int]] = {}
  for p, c in pairs:
    cams.setdefault(p, set()).add(c)
  num_valid = sum(1 for p, c in zip(query.pids, query.camids)
                  if p >= 0 and cams.get(int(p), set()) - {int(c)})
  if num_valid == 0:
    raise DatasetError(
        f'none of the {len(query)} query images has a valid match in the gallery (an image of the '
        'same identity from another camera), so rank-1 and mAP are undefined: check that the '
        'query and gallery splits come from the same dataset and that file names carry the right '
        'identity and camera.')
  return num_valid


def validate_splits(splits: Mapping[str, ReIDSplit], on_corrupt: str = 'skip',
                    decode: bool = True) -> dict[str, ReIDSplit]:
  """`drop_corrupt` on every split, one warning for all of them, then `check_query_matches`.

  Raises:
    DatasetError: an empty split, a corrupt image with on_corrupt='error', or no valid query.
  """
  out, skipped = {}, []
  for name, split in splits.items():
    if len(split) == 0:
      raise DatasetError(f'the {name!r} split is empty; check the dataset directory.')
    out[name] = drop_corrupt(split, on_corrupt, decode=decode, warn=False)
    if len(out[name]) != len(split):
      kept = set(out[name].filenames)
      skipped += [f for f in split.filenames if f not in kept]
  if skipped:
    print(f'jreid: warning: skipping {len(skipped)} image(s) that do not decode ({_UNDECODABLE}'
          f'; config.data.on_corrupt=skip): {_quote(skipped)}', file=sys.stderr, flush=True)
  if 'query' in out and 'gallery' in out:
    check_query_matches(out['query'], out['gallery'])
  return out
