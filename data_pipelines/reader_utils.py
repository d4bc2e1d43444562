"""Shared pieces of the public-dataset readers beyond Market-1501's layout.

`reid_folder` covers datasets whose splits are folders of JPEG files with every fact in the
name. The other readers (CUHK03-NP, RegDB, SYSU-MM01, RandPerson, ClonedPerson, the partial
sets, VehicleID, VERI-Wild, CSV folders) also need:

  * other image formats: CUHK03-NP ships PNG files, RegDB BMP and Occluded-REID TIFF.
    `encoded_image` keeps JPEG and PNG bytes unchanged and converts BMP/TIFF losslessly to RGB
    PNG, so that every stored image decodes with `tf.io.decode_image` (JPEG or PNG) in the input
    pipeline;
  * splits that a dataset does not have (RandPerson is train-only, Partial-REID test-only) or
    that a protocol derives after reading (VehicleID's query/gallery draw): `load_splits` reads
    the splits a layout scans and returns empty `ReIDSplit`s for the others;
  * builders made per variant (VehicleID test size, RegDB trial): `make_builder`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import types

import numpy as np

from data_pipelines import market1501
from data_pipelines import reid_folder
from data_pipelines.types import DatasetError, ReIDSplit

SPLITS = ('train', 'query', 'gallery')
# Image files the readers list (case-insensitive); hidden files ('._x.jpg') are skipped.
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff')

_CONVERTED_MAGICS = (b'BM', b'II*\x00', b'MM\x00*')  # BMP, little- and big-endian TIFF.


@dataclasses.dataclass(frozen=True)
class ParsedImage:
  """The facts a split stores about one image (the `reid_folder.ImageName` protocol)."""

  pid: int
  camid: int
  session: int = 1
  frame: int = 0


def is_image_file(name: str) -> bool:
  """An image file of a supported format, not a hidden file (macOS '._*' copies)."""
  return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith('.')


def list_images(directory: str) -> list[str]:
  """Sorted base names of the image files directly in `directory`."""
  return sorted(entry.name for entry in os.scandir(directory)
                if entry.is_file() and is_image_file(entry.name))


def encoded_image(path: str, dataset: str) -> bytes:  # pylint: disable=unused-argument
  """The bytes to store for the image file at `path`: JPEG or PNG as is, BMP/TIFF as RGB PNG.

  Anything else (an empty, truncated or unreadable BMP/TIFF, a file that is no image at all) is
  stored as it is, so that `validate.validate_splits` skips or refuses it by name
  (config.data.on_corrupt) instead of the preparation stopping at the first one.
  """
  with open(path, 'rb') as f:
    data = f.read()
  if data.startswith(_CONVERTED_MAGICS):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    try:
      with Image.open(io.BytesIO(data)) as image:
        buffer = io.BytesIO()
        image.convert('RGB').save(buffer, format='PNG')
      return buffer.getvalue()
    except (OSError, ValueError):
      return data  # Not decodable: validate reports it.
  return data


def _generate_examples(self, root: str, items):
  """Yields (index, example), images as `encoded_image` stores them."""
  for index, (path, name) in enumerate(items):
    yield index, {
        'image': encoded_image(os.path.join(root, path), self.LAYOUT.name),
        'pid': name.pid,
        'camid': name.camid,
        'session': name.session,
        'frame': name.frame,
        'filename': path,
    }


def make_builder(layout: reid_folder.Layout,
                 class_name: str) -> type[reid_folder.ReIDFolderBuilder]:
  """A TFDS builder for `layout` that accepts every `IMAGE_SUFFIXES` format.

  The class is not added to TFDS's registry (variants are made on demand, and `load_splits`
  instantiates it directly).
  """
  def body(namespace):
    namespace.update(LAYOUT=layout, _generate_examples=_generate_examples,
                     __module__=__name__, __doc__=f'{layout.description} (prepared from '
                     '`DownloadConfig(manual_dir=...)`).')
  return types.new_class(class_name, (reid_folder.ReIDFolderBuilder,),
                         {'skip_registration': True}, body)


def empty_split(name: str) -> ReIDSplit:
  """A split without images (of a dataset that has no such split)."""
  return ReIDSplit(name=name, images=np.zeros((0,), dtype=object),
                   pids=np.zeros((0,), np.int32), camids=np.zeros((0,), np.int32),
                   sessions=np.zeros((0,), np.int32), frames=np.zeros((0,), np.int64),
                   filenames=[], labels=np.zeros((0,), np.int32))


def subset(split: ReIDSplit, indices, name: str | None = None,
           camids: np.ndarray | None = None) -> ReIDSplit:
  """The images `indices` of `split` (in that order), optionally renamed and with new camids.

  Labels are copied (not relabelled): relabel a new training split with `types.relabel`.
  """
  indices = np.asarray(indices, dtype=np.int64)
  return ReIDSplit(
      name=name or split.name, images=split.images[indices], pids=split.pids[indices],
      camids=split.camids[indices] if camids is None else np.asarray(camids, np.int32),
      sessions=split.sessions[indices], frames=split.frames[indices],
      filenames=[split.filenames[i] for i in indices], labels=split.labels[indices])


def load_splits(builder_cls: type[reid_folder.ReIDFolderBuilder], root: str | os.PathLike[str],
                data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """`reid_folder.load` for layouts that scan any subset of splits (named as they like).

  Returns:
    The scanned splits, plus an empty 'train', 'query' or 'gallery' for each not scanned; the
    'train' labels are relabelled ids, the others copies of the ids.
  """
  layout = builder_cls.LAYOUT
  root = os.path.abspath(os.path.expanduser(os.fspath(root)))
  files = layout.scan(root)
  data_dir = os.path.expanduser(os.fspath(data_dir)) if data_dir else market1501.default_data_dir()
  builder = market1501.prepare_copy(builder_cls, root, data_dir, layout.name,
                                    reid_folder.folder_key(root, layout, files))
  splits = {split: market1501._read_split(builder, split)  # pylint: disable=protected-access
            for split in files}
  for split in SPLITS:
    splits.setdefault(split, empty_split(split))
  return splits


def read_lines(path: str) -> list[tuple[int, str]]:
  """(line number, stripped line) of the non-blank lines of a text file."""
  with open(path) as f:
    return [(number, line.strip()) for number, line in enumerate(f, start=1) if line.strip()]


@dataclasses.dataclass(frozen=True)
class AnyImageFolderLayout(reid_folder.FolderLayout):
  """`reid_folder.FolderLayout` listing every `IMAGE_SUFFIXES` file, not only '*.jpg'.

  Folders mapped to '' in `optional` may be missing: the split is then left out (empty).
  """

  optional: frozenset[str] = frozenset()

  def scan(self, root: str) -> reid_folder.Files:
    files = {}
    for split, folder in self.folders.items():
      directory = os.path.join(root, folder)
      if not os.path.isdir(directory):
        if split in self.optional:
          continue
        raise self.missing_error(root, f'{folder}/')
      items = [(f'{folder}/{name}', self.name_format.parse(os.path.join(directory, name)))
               for name in list_images(directory)]
      if split == 'train':
        items = [(path, name) for path, name in items if name.pid not in self.train_excludes]
      if not items:
        raise self.empty_error(split, directory, f'files named {self.name_format.expected}')
      files[split] = items
    return files

  def watched_paths(self, root: str) -> list[str]:
    return [os.path.join(root, folder) for folder in self.folders.values()
            if os.path.isdir(os.path.join(root, folder))]


def int_field(value: str, what: str, where: str, expected: str) -> int:
  """`int(value)`, or a DatasetError naming the field, the place and the expected form."""
  if not re.fullmatch(r'-?\d+', value.strip()):
    raise DatasetError(f'{where}: {what} {value!r} is not an integer; expected {expected}')
  return int(value)
