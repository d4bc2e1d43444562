"""Re-ID datasets read from a user's extracted folder: one TFDS builder and loader for all layouts.

Public re-ID datasets cannot be downloaded by a script; the user extracts the official archive and
passes its folder. A dataset is described by a `Layout`: which folders (or list files) hold each
split, how an image file name is parsed, and what to tell the user when the folder does not look
right. `ReIDFolderBuilder` turns a layout into a TFDS builder (`manual_dir` = the extracted folder)
and `load` prepares the TFDS copy once, in a cache folder keyed by the folder's content, and reads
it back into `ReIDSplit`s:

  class DukeMTMC(ReIDFolderBuilder):
    LAYOUT = FolderLayout(name='dukemtmc', folders={'train': 'bounding_box_train', ...}, ...)

  splits = load(DukeMTMC, '~/data/DukeMTMC-reID')

The examples and the cache behaviour are those of `market1501` (whose read-back and cache
location this module reuses), so that Market-1501 can be expressed as a `FolderLayout` too.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import os
import re
from typing import Callable, ClassVar, Mapping, Protocol

import numpy as np

from data_pipelines import market1501
import tensorflow_datasets as tfds  # After market1501, which quiets TensorFlow first.
from data_pipelines.types import DatasetError, ReIDSplit


class ImageName(Protocol):
  """The fields of a parsed image name that a split stores (`Market1501Name` is one)."""

  pid: int
  camid: int
  session: int
  frame: int


# Split name -> [(image path relative to the root, '/'-separated; parsed name)], sorted by path.
Files = dict[str, list[tuple[str, ImageName]]]


@dataclasses.dataclass(frozen=True)
class NameFormat:
  """A file-name grammar: a regular expression and how its match becomes an `ImageName`.

  Attributes:
    dataset: the dataset's short name, prefixed to error messages.
    regex: matched against the whole base name.
    expected: the pattern in words with an example, quoted in error messages.
    fields: builds the parsed name from a successful match.
  """

  dataset: str
  regex: re.Pattern[str]
  expected: str
  fields: Callable[[re.Match[str]], ImageName]

  def parse(self, filename: str) -> ImageName:
    """Parses a base name or a path ending in one.

    Raises:
      DatasetError: naming the file (and its folder, when `filename` is a path) and `expected`.
    """
    folder, base = os.path.split(filename)
    match = self.regex.fullmatch(base)
    if match is None:
      where = f' in {folder}' if folder else ''
      raise DatasetError(f'{self.dataset}: cannot parse {base!r}{where}: expected {self.expected}')
    return self.fields(match)


@dataclasses.dataclass(frozen=True)
class Layout(abc.ABC):
  """How a dataset lies on disk and how to explain it to the user.

  Attributes:
    name: short name: TFDS builder name, cache-folder prefix and error-message prefix.
    description: one line for the TFDS dataset info.
    homepage: where the dataset is obtained.
    expected: the expected layout in words, with where to get the dataset; ends every error
      about a missing or incomplete folder and the builder's manual download instructions.
  """

  name: str
  description: str
  homepage: str
  expected: str

  @abc.abstractmethod
  def scan(self, root: str) -> Files:
    """Lists and parses the images of the splits 'train', 'query' and 'gallery' under `root`.

    Raises:
      DatasetError: the folder does not hold this layout; the message names what is wrong.
    """

  @abc.abstractmethod
  def watched_paths(self, root: str) -> list[str]:
    """Folders and list files (besides the images) whose modification changes the content key."""

  def missing_error(self, root: str, entry: str, kind: str = 'folder') -> DatasetError:
    """The error for a `root` without `entry` ('name/' for a folder), pointing at a nested copy.

    Args:
      root: the folder the user passed.
      entry: the missing folder (with a trailing '/') or file, relative to `root`.
      kind: 'folder' or 'file', for the message.
    """
    if not os.path.isdir(root):
      return DatasetError(f'{self.name}: dataset folder {root} does not exist. {self.expected}')
    nested = sorted(child.path for child in os.scandir(root)
                    if child.is_dir() and os.path.exists(os.path.join(child.path, entry)))
    hint = f' Did you mean {nested[0]}?' if nested else ''
    return DatasetError(f'{self.name}: {root} has no {entry} {kind}.{hint} {self.expected}')

  def empty_error(self, split: str, where: str, expected: str) -> DatasetError:
    """The error for a split without images."""
    return DatasetError(
        f'{self.name}: no images in {where} (split {split!r}): expected {expected}. Re-extract '
        'the archive; the folder may be incomplete.')


@dataclasses.dataclass(frozen=True)
class FolderLayout(Layout):
  """A layout with one folder of images per split, every fact about an image in its name.

  Attributes:
    folders: split name -> folder under the root.
    name_format: the grammar of the image names.
    train_excludes: ids dropped from 'train' (e.g. Market-1501's junk id -1, from which no label
      can be learned); they are kept in 'query' and 'gallery'.
  """

  folders: Mapping[str, str]
  name_format: NameFormat
  train_excludes: frozenset[int] = frozenset()

  def scan(self, root: str) -> Files:
    """Lists the '*.jpg' images of each split folder (hidden and other files are skipped)."""
    files = {}
    for split, folder in self.folders.items():
      directory = os.path.join(root, folder)
      if not os.path.isdir(directory):
        raise self.missing_error(root, f'{folder}/')
      names = sorted(entry.name for entry in os.scandir(directory)
                     if entry.is_file() and is_image_name(entry.name))
      items = [(f'{folder}/{name}', self.name_format.parse(os.path.join(directory, name)))
               for name in names]
      if split == 'train':
        items = [(path, name) for path, name in items if name.pid not in self.train_excludes]
      if not items:
        raise self.empty_error(split, directory, f'files named {self.name_format.expected}')
      files[split] = items
    return files

  def watched_paths(self, root: str) -> list[str]:
    return [os.path.join(root, folder) for folder in self.folders.values()]


def is_image_name(name: str) -> bool:
  """Images are '*.jpg' files, except hidden ones (macOS '._*' copies); Thumbs.db etc. are not."""
  return market1501._is_image_name(name)  # pylint: disable=protected-access


class ReIDFolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A dataset prepared from the folder passed as `DownloadConfig(manual_dir=...)`.

  Subclasses set `LAYOUT`; the builder's name and manual download instructions follow from it.
  The features are those of `market1501.Market1501`: original JPEG bytes, pid, zero-based camid,
  session, frame and the path relative to the root.
  """

  LAYOUT: ClassVar[Layout]
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: original JPEG bytes, ids, cameras, sessions, frames.'}

  def __init_subclass__(cls, **kwargs):
    cls.name = cls.LAYOUT.name
    cls.MANUAL_DOWNLOAD_INSTRUCTIONS = cls.LAYOUT.expected
    super().__init_subclass__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.LAYOUT.description,
        features=market1501.reid_features(),
        homepage=self.LAYOUT.homepage,
        # Examples keep the path order of `Layout.scan`.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(root, items)
            for split, items in self.LAYOUT.scan(root).items()}

  def _generate_examples(self, root: str, items: list[tuple[str, ImageName]]):
    """Yields (index, example) with the file's bytes unchanged (see Market1501's)."""
    for index, (path, name) in enumerate(items):
      with open(os.path.join(root, path), 'rb') as f:
        image = f.read()
      yield index, {
          'image': image,
          'pid': name.pid,
          'camid': name.camid,
          'session': name.session,
          'frame': name.frame,
          'filename': path,
      }


def folder_key(root: str, layout: Layout, files: Files) -> str:
  """A short hash of the folder's path, image count per split and newest modification time.

  The times are those of the layout's watched folders and list files and of every image: adding,
  removing, renaming or rewriting an image, or editing a list file, changes the key. Replacing an
  image by another one with the same mtime (`cp -p`) does not.
  """
  mtimes = [os.stat(path).st_mtime_ns for path in layout.watched_paths(root)]
  mtimes += [os.stat(f'{root}/{path}').st_mtime_ns for items in files.values() for path, _ in items]
  counts = ','.join(f'{split}={len(items)}' for split, items in files.items())
  state = f'{root}\n{counts}\n{max(mtimes)}'
  return hashlib.sha256(state.encode()).hexdigest()[:12]


def load(builder_cls: type[ReIDFolderBuilder], root: str | os.PathLike[str],
         data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads an extracted dataset folder, preparing its TFDS copy on first use.

  The copy is written by TFDS (atomically, per version directory) to
  `<data_dir>/<name>_<root hash>_<key>`, where the key is `folder_key`: a changed folder gets a
  fresh copy that replaces the old one (`market1501.prepare_copy`), an unchanged one is read back
  without preparing. Nothing is ever downloaded.

  Args:
    builder_cls: the dataset's builder (its `LAYOUT` describes the folder).
    root: the extracted dataset folder.
    data_dir: directory holding prepared copies; default `market1501.default_data_dir()`
      (`$JREID_CACHE/tfds`, `$JREID_CACHE` defaulting to `~/.cache/jreid`).

  Returns:
    {'train', 'query', 'gallery'} -> ReIDSplit with the JPEG bytes as stored in the files, in
    path order. Train labels are the ids relabelled to 0..K-1; query/gallery labels are the ids.

  Raises:
    DatasetError: the folder does not hold a readable dataset of this layout.
  """
  layout = builder_cls.LAYOUT
  root = os.path.abspath(os.path.expanduser(os.fspath(root)))
  files = layout.scan(root)
  data_dir = os.path.expanduser(os.fspath(data_dir)) if data_dir else market1501.default_data_dir()
  builder = market1501.prepare_copy(builder_cls, root, data_dir, layout.name,
                                    folder_key(root, layout, files))
  # The same features as Market-1501, hence its batched TFRecord read-back.
  return {split: market1501._read_split(builder, split)  # pylint: disable=protected-access
          for split in ('train', 'query', 'gallery')}
