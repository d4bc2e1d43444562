"""Market-1501 read from a user's extracted folder, as a TFDS builder with `manual_dir`.

Market-1501 (Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015) cannot
be downloaded by a script. The user extracts `Market-1501-v15.09.15.zip` and passes the folder:

  <root>/bounding_box_train/   training images                      -> split 'train'
  <root>/bounding_box_test/    gallery, with junk and distractors   -> split 'gallery'
  <root>/query/                query images                         -> split 'query'

(`gt_bbox/` and `gt_query/` of the archive are ignored.) File names are
`PPPP_cCsS_FFFFFF_NN.jpg`: identity PPPP (`0000` distractor, `-1` junk), camera C (camid = C-1),
session S, frame FFFFFF, bounding box NN. jreid's synthetic dataset is written in the same
layout and read by the same code.

`load_market1501(root)` prepares the TFDS dataset once and reads it back into `ReIDSplit`s:

  splits = load_market1501('~/data/Market-1501-v15.09.15')
  splits['train'].images[0]  # the original JPEG bytes of bounding_box_train/0002_c1s1_000451_03.jpg
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import io
import os
import re
import shutil

import numpy as np

from data_pipelines.types import DatasetError, ReIDSplit, relabel

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

try:
  tf.config.set_visible_devices([], 'GPU')  # The GPUs belong to JAX.
except RuntimeError:  # TF initialised its devices earlier in this process: too late to hide them.
  pass

HOMEPAGE = 'https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html'

# Split name -> folder under the dataset root.
SPLIT_FOLDERS = {'train': 'bounding_box_train', 'query': 'query', 'gallery': 'bounding_box_test'}

# PPPP_cCsS_FFFFFF_NN.jpg; some files of the public archive end in '.jpg.jpg'. Market-1501 has
# cameras 1-6; any single digit 1-9 is accepted so that synthetic data may use more cameras.
NAME_PATTERN = re.compile(r'(-1|\d{4})_c([1-9])s(\d)_(\d{6})_(\d{2})\.jpg(?:\.jpg)?', re.ASCII)

_EXPECTED_NAME = 'PPPP_cCsS_FFFFFF_NN.jpg (e.g. 0002_c1s1_000451_03.jpg)'
_LAYOUT = (
    'Expected the extracted Market-1501 layout: <root>/bounding_box_train/, '
    '<root>/bounding_box_test/ and <root>/query/ holding images named '
    f'{_EXPECTED_NAME}. Download Market-1501-v15.09.15.zip from {HOMEPAGE}, extract it and pass '
    'the extracted folder (the one holding bounding_box_train/).')
_JUNK_PID = -1


@dataclasses.dataclass(frozen=True)
class Market1501Name:
  """The fields of a Market-1501 file name."""

  pid: int
  camid: int
  session: int
  frame: int
  bbox: int


def parse_market1501_name(filename: str) -> Market1501Name:
  """Parses `PPPP_cCsS_FFFFFF_NN.jpg` (or a path ending in it); the camera becomes zero-based.

  Raises:
    DatasetError: naming the file (and its folder, when `filename` is a path) and the expected
      pattern.
  """
  folder, base = os.path.split(filename)
  return _parse_name(base, folder)


def _parse_name(base: str, folder: str) -> Market1501Name:
  """`parse_market1501_name` of `folder/base`, without joining and splitting paths."""
  match = NAME_PATTERN.fullmatch(base)
  if match is None:
    where = f' in {folder}' if folder else ''
    raise DatasetError(f'market1501: cannot parse {base!r}{where}: expected {_EXPECTED_NAME}')
  pid, camera, session, frame, bbox = map(int, match.groups())
  return Market1501Name(pid=pid, camid=camera - 1, session=session, frame=frame, bbox=bbox)


def _is_image_name(name: str) -> bool:
  """Images are '*.jpg' files, except hidden ones (macOS '._*' copies); Thumbs.db etc. are not."""
  return name.lower().endswith('.jpg') and not name.startswith('.')


def _missing_folder_error(root: str, folder: str) -> DatasetError:
  """The error for a root without `folder`, pointing at a nested copy of the dataset if any."""
  if not os.path.isdir(root):
    return DatasetError(f'market1501: dataset folder {root} does not exist. {_LAYOUT}')
  nested = sorted(entry.path for entry in os.scandir(root)
                  if os.path.isdir(os.path.join(entry.path, folder)))
  hint = f' Did you mean {nested[0]}?' if nested else ''
  return DatasetError(f'market1501: {root} has no {folder}/ folder.{hint} {_LAYOUT}')


def scan_market1501(root: str | os.PathLike[str]) -> dict[str, list[tuple[str, Market1501Name]]]:
  """Lists and parses the images of each split.

  Non-image files are skipped; junk images (pid -1) are dropped from 'train' (no label can be
  learned from them) and kept, with pid -1, in 'gallery' and 'query'.

  Args:
    root: the extracted dataset folder.

  Returns:
    {'train', 'query', 'gallery'} -> [(path relative to root, parsed name)] sorted by path.

  Raises:
    DatasetError: missing root or split folder, malformed image name, or a split without images.
  """
  root = os.path.expanduser(os.fspath(root))
  splits = {}
  for split, folder in SPLIT_FOLDERS.items():
    directory = os.path.join(root, folder)
    if not os.path.isdir(directory):
      raise _missing_folder_error(root, folder)
    names = sorted(entry.name for entry in os.scandir(directory)
                   if entry.is_file() and _is_image_name(entry.name))
    items = [(f'{folder}/{name}', _parse_name(name, directory)) for name in names]
    if split == 'train':
      items = [(path, name) for path, name in items if name.pid != _JUNK_PID]
    if not items:
      raise DatasetError(
          f'market1501: no images in {directory} (split {split!r}): expected files named '
          f'{_EXPECTED_NAME}. Re-extract the archive; the folder may be incomplete.')
    splits[split] = items
  return splits


def reid_features() -> tfds.features.FeaturesDict:
  """The example features of every re-ID folder dataset: original JPEG bytes plus metadata."""
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
      'pid': np.int32,
      'camid': np.int32,
      'session': np.int32,
      'frame': np.int64,
      'filename': tfds.features.Text(),
  })


class Market1501(tfds.core.GeneratorBasedBuilder):
  """Market-1501 prepared from the folder passed as `DownloadConfig(manual_dir=...)`."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: original JPEG bytes, ids, cameras, sessions, frames.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download Market-1501-v15.09.15.zip from {HOMEPAGE} and extract it. Pass the extracted folder
  (the one holding bounding_box_train/, bounding_box_test/ and query/) as `manual_dir`, e.g.
  `load_market1501('/data/Market-1501-v15.09.15')`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='Market-1501 person re-identification: 1,501 identities, 6 cameras.',
        features=reid_features(),
        homepage=HOMEPAGE,
        # Examples keep the file-name order of `scan_market1501`.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(root, items)
            for split, items in scan_market1501(root).items()}

  def _generate_examples(self, root: str, items: list[tuple[str, Market1501Name]]):
    """Yields (index, example) with the file's bytes unchanged.

    A file that is not a decodable image (empty, truncated, not an image at all) is stored as it
    is: `validate.validate_splits` skips or refuses it, naming it (config.data.on_corrupt).
    """
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


def default_data_dir() -> str:
  """Where prepared datasets live: `$JREID_CACHE/tfds`, by default `~/.cache/jreid/tfds`."""
  cache = os.environ.get('JREID_CACHE') or os.path.join('~', '.cache', 'jreid')
  return os.path.join(os.path.expanduser(cache), 'tfds')


def _folder_key(root: str, files: dict[str, list[tuple[str, Market1501Name]]]) -> str:
  """A short hash of the folder's path, image count per split and newest modification time.

  Adding, removing, renaming or rewriting an image changes the key (a rename changes the split
  folder's mtime). Replacing an image by another one with the same mtime (`cp -p`) does not.
  """
  mtimes = [os.stat(os.path.join(root, folder)).st_mtime_ns for folder in SPLIT_FOLDERS.values()]
  mtimes += [os.stat(f'{root}/{path}').st_mtime_ns for items in files.values() for path, _ in items]
  counts = ','.join(f'{split}={len(items)}' for split, items in files.items())
  state = f'{root}\n{counts}\n{max(mtimes)}'
  return hashlib.sha256(state.encode()).hexdigest()[:12]


def _read_split(builder: Market1501, split: str) -> ReIDSplit:
  """Reads a prepared split back, images still encoded, in file-name order.

  Equivalent to `builder.as_dataset(split, decoders={'image': tfds.decode.SkipDecoding()})` (the
  tests hold them equal) but parses whole batches of records at once from the split's TFRecord
  shards, as TFDS documents for custom readers: several times faster than TFDS's per-example
  parsing.
  """
  shards = [os.fspath(path) for path in builder.info.splits[split].filepaths]
  records = tf.data.TFRecordDataset(shards)
  spec = builder.info.features.tf_example_spec
  columns = {key: [] for key in spec}
  for serialized in records.batch(8192):
    batch = tf.io.parse_example(serialized, spec)  # Eager: no tf.function tracing to pay for.
    for key, column in columns.items():
      column.append(batch[key].numpy())
  columns = {key: np.concatenate(column) for key, column in columns.items()}
  pids = columns['pid'].astype(np.int32)
  return ReIDSplit(
      name=split,
      images=columns['image'].astype(object),
      pids=pids,
      camids=columns['camid'].astype(np.int32),
      sessions=columns['session'].astype(np.int32),
      frames=columns['frame'].astype(np.int64),
      filenames=[name.decode() for name in columns['filename']],
      labels=relabel(pids) if split == 'train' else pids.copy(),
  )


def load_market1501(root: str | os.PathLike[str],
                    data_dir: str | os.PathLike[str] | None = None) -> dict[str, ReIDSplit]:
  """Loads a Market-1501-layout folder, preparing its TFDS copy on first use.

  The copy is written by TFDS (atomically, per version directory) to
  `<data_dir>/market1501_<root hash>_<key>`, where the key hashes the folder's absolute path, its
  image count per split and its newest modification time: a changed folder gets a fresh copy that
  replaces the old one (`prepare_copy`), an unchanged one is read back without preparing. Nothing
  is ever downloaded.

  Args:
    root: the extracted dataset folder (see the module docstring for the layout).
    data_dir: directory holding prepared copies; default `default_data_dir()`
      (`$JREID_CACHE/tfds`, `$JREID_CACHE` defaulting to `~/.cache/jreid`).

  Returns:
    {'train', 'query', 'gallery'} -> ReIDSplit with the JPEG bytes as stored in the files, in
    file-name order. Train labels are the ids relabeled to 0..K-1; query/gallery labels are the
    ids themselves (-1 junk, 0 distractor).

  Raises:
    DatasetError: the folder does not hold a readable Market-1501 layout (see `scan_market1501`).
  """
  root = os.path.abspath(os.path.expanduser(os.fspath(root)))
  files = scan_market1501(root)
  data_dir = os.path.expanduser(os.fspath(data_dir)) if data_dir else default_data_dir()
  builder = prepare_copy(Market1501, root, data_dir, 'market1501', _folder_key(root, files))
  return {split: _read_split(builder, split) for split in SPLIT_FOLDERS}


def prepare_copy(builder_cls: type[tfds.core.GeneratorBasedBuilder], root: str, data_dir: str,
                 name: str, content_key: str) -> tfds.core.GeneratorBasedBuilder:
  """The prepared copy of the folder `root` under `data_dir`: one per dataset `name` and root.

  The copy of the folder's current content (`content_key`, e.g. `_folder_key`) lives in
  `<data_dir>/<name>_<root hash>_<content_key>`. Once it is prepared, the copies of the same
  root's earlier contents are deleted: a folder edited three times leaves one copy, not three.
  """
  root_key = hashlib.sha256(root.encode()).hexdigest()[:8]
  prefix = f'{name}_{root_key}_'
  target = os.path.join(data_dir, prefix + content_key)
  builder = prepare_builder(builder_cls, root, target)
  for stale in glob.glob(os.path.join(glob.escape(data_dir), glob.escape(prefix) + '*')):
    if os.path.abspath(stale) != os.path.abspath(target):
      shutil.rmtree(stale, ignore_errors=True)
  return builder


def prepare_builder(builder_cls: type[tfds.core.GeneratorBasedBuilder], root: str,
                    data_dir: str) -> tfds.core.GeneratorBasedBuilder:
  """Prepares a manual_dir builder from `root` into `data_dir` (once) and returns it.

  Nothing is downloaded; statistics are skipped and examples go to plain TFRecord files. TFDS's
  "Downloading and preparing dataset" line is replaced by one saying what happens to the local
  folder. A preparation that fails (or is interrupted) removes the `data_dir` it created.
  """
  builder = builder_cls(data_dir=data_dir)
  if os.path.isfile(os.path.join(builder.data_dir, 'dataset_info.json')):
    return builder  # Prepared before (builder.data_dir is the version's folder).
  tfds.disable_progress_bar()
  created = not os.path.exists(data_dir)
  print(f'jreid: preparing a cached copy of {root} in {data_dir} (once, and again when the '
        'folder changes)', flush=True)
  try:
    try:
      with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints that it downloads.
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=root,
                try_download_gcs=False,
                compute_stats=tfds.download.ComputeStatsMode.SKIP),
            file_format='tfrecord')
    except OSError:
      # Another process (e.g. another host of the same job) renamed its finished copy into place
      # first, so TFDS could not rename ours: read theirs.
      builder = builder_cls(data_dir=data_dir)
      if not builder.is_prepared():
        raise
  except BaseException:
    if created:
      shutil.rmtree(data_dir, ignore_errors=True)
    raise
  return builder
