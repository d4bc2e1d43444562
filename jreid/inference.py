"""A trained model outside its training run: `FeatureExtractor`.

  fx = jreid.FeatureExtractor.from_workdir('runs/market')
  features = fx('photos/')        # float32 [N, D], L2-normalised, in `list_images` order
  fx.scores(query, gallery)       # [Q, G] similarities (QAConv: its matcher's scores)

Only `config.json` and one checkpoint are read: the model comes from the method's data-free
`inference(config, num_classes)` (`jreid.method.Inference`), `num_classes` from the checkpoint's
`meta` item, and only the params and BatchNorm statistics are restored (not the optimiser state),
so no dataset has to be on disk. Images go through the one embedding path (`jreid.embed`), in
fixed-size batches split over every device: files are decoded and resized by the evaluation
pipeline itself (`data_pipelines.input_pipeline.eval_iterator`), and in-memory images of another
size are resized by the same op (`data_pipelines.transforms.resize`), so the features equal the
ones the run's evaluation computed. Images already at the model's input size need no TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from jreid import checkpoint as checkpoint_lib
from jreid import embed
from jreid import method as method_lib
from jreid import parallel
from jreid import parts

PyTree = Any
PathLike = str | os.PathLike

# The image files a folder is searched for (as the dataset readers list them: BMP and TIFF are
# converted to PNG on reading).
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff')
MODALITIES = {'visible': 0, 'infrared': 1}


class InputError(ValueError):
  """Images, a workdir or a checkpoint that cannot be used; the message names the fix."""


def is_image_file(name: str) -> bool:
  """An image file name of a supported format, not a hidden file (macOS '._*' copies)."""
  return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith('.')


def list_images(folder: PathLike) -> list[pathlib.Path]:
  """The image files under `folder` (sub-folders included), sorted by their relative path.

  Raises:
    InputError: `folder` is not a directory, or holds no image file.
  """
  folder = pathlib.Path(folder).expanduser()
  if not folder.is_dir():
    what = 'does not exist' if not folder.exists() else 'is not a folder'
    raise InputError(f'image folder {folder} {what}: pass a folder of images.')
  found = []
  for root, dirs, files in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    found += [pathlib.Path(root) / f for f in files if is_image_file(f)]
  if not found:
    raise InputError(f'no images in {folder} (looked for {", ".join(IMAGE_SUFFIXES)} files, '
                     'sub-folders included): pass the folder that holds the images.')
  return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def image_files(images: PathLike | Sequence[PathLike]) -> list[pathlib.Path]:
  """A folder (`list_images`), an image file, or a list of image files, as a list of files."""
  if isinstance(images, (str, os.PathLike)):
    path = pathlib.Path(images).expanduser()
    if path.is_dir():
      return list_images(path)
    images = [path]
  files = [pathlib.Path(p).expanduser() for p in images]
  for path in files:
    if not path.is_file():
      what = 'is a folder: pass it alone' if path.is_dir() else 'does not exist'
      raise InputError(f'image {path} {what}.')
  if not files:
    raise InputError('no images given: pass a folder, image files or uint8 arrays [N, H, W, 3].')
  return files


def load_config(source: PathLike | dict | ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A run's config: a ConfigDict, a dict, a `config.json` a run wrote (JSON lists become the
  configs' tuples), or a config file `configs/X.py[:variant]`."""
  if isinstance(source, ml_collections.ConfigDict):
    return source
  if isinstance(source, dict):
    return ml_collections.ConfigDict(_tuples(source))
  spec = str(source)
  if spec.partition(':')[0].endswith('.py'):
    from jreid import config_checks  # pylint: disable=g-import-not-at-top
    return config_checks.load_config_file(spec)
  path = pathlib.Path(spec).expanduser()
  if not path.is_file():
    raise InputError(f'config {path} does not exist: pass the config.json of a run (or a config '
                     'file configs/X.py).')
  try:
    raw = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise InputError(f'config {path} is not valid JSON ({e}): pass the config.json a run '
                     'wrote.') from None
  if not isinstance(raw, dict) or 'method' not in raw or 'model' not in raw:
    raise InputError(f'config {path} is not a jreid run config (no method/model): pass the '
                     'config.json a run wrote.')
  return ml_collections.ConfigDict(_tuples(raw))


def _tuples(tree: Any) -> Any:
  """JSON's lists as tuples: the configs hold sequences as tuples."""
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(_tuples(v) for v in tree)
  return tree


def checkpoint_dir(workdir: PathLike, step: int | None = None) -> pathlib.Path:
  """The directory of the checkpoint at `step` (default: the latest) of a run's workdir.

  Raises:
    InputError: no such workdir, no config.json, no (such) complete checkpoint.
  """
  workdir = pathlib.Path(workdir).expanduser()
  if not workdir.is_dir():
    raise InputError(f'workdir {workdir} does not exist: pass the --workdir of a trained run.')
  if not (workdir / 'config.json').is_file():
    raise InputError(f'{workdir} is not a jreid run (no config.json): pass the --workdir of a '
                     'trained run.')
  steps = checkpoint_lib.complete_steps(workdir / 'checkpoints')
  if not steps:
    raise InputError(f'no checkpoint in {workdir}/checkpoints: train first (python -m jreid.main '
                     f'--config=... --workdir={workdir}).')
  if step is None:
    step = steps[-1]
  if int(step) not in steps:
    raise InputError(f'{workdir} has no checkpoint of step {step}; it holds step(s) '
                     f'{", ".join(map(str, steps))}.')
  return workdir / 'checkpoints' / str(int(step))


def _restore(path: pathlib.Path, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """(inference, params, batch_stats, step, meta) of a checkpoint: the meta item checked against
  the config's method and model, then only params, BatchNorm statistics and step restored."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  checkpoint_lib.check_checkpoint_path(path)
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  meta = checkpointer.restore(path, ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  if 'method' not in meta:  # Checkpoints written before every method recorded its name.
    model = meta.get('model') or {}
    meta = {**meta, 'method': 'cross_modality' if model.get('name') == 'two_stream'
            else 'supervised'}
  expected = {'method': config.method, 'model': parts.model_fingerprint(config.model)}
  checkpoint_lib.check_fingerprint({k: meta.get(k) for k in expected}, expected, path)
  inference = _inference(config, int(meta['num_classes']))
  abstract = jax.eval_shape(inference.init, jax.random.key(0))
  replicated = parallel.replicated_sharding(mesh)
  item = {'step': jax.ShapeDtypeStruct((), np.int32), 'params': abstract['params'],
          'batch_stats': abstract.get('batch_stats', {})}
  item = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), item)
  restored = checkpointer.restore(path, ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
      partial_restore=True)))['state']
  return (inference, restored['params'], restored['batch_stats'], int(restored['step']), meta)


# Inference parts and compiled embedding functions, shared by the extractors of one architecture
# (a notebook loading several checkpoints of a run compiles once).
_INFERENCE: dict[str, method_lib.Inference] = {}
_EMBED_FNS: dict[tuple[int, bool, jax.sharding.Mesh], Any] = {}


def _architecture(config: ml_collections.ConfigDict, num_classes: int) -> str:
  """What `method.inference` builds from: the whole config (methods read their own sections)."""
  return json.dumps({'config': json.loads(config.to_json_best_effort()),
                     'num_classes': int(num_classes)}, sort_keys=True)


def _inference(config: ml_collections.ConfigDict, num_classes: int) -> method_lib.Inference:
  key = _architecture(config, num_classes)
  if key not in _INFERENCE:
    _INFERENCE[key] = method_lib.inference(config, num_classes)
  return _INFERENCE[key]


def _embed_fn(inference: method_lib.Inference, mesh: jax.sharding.Mesh, flip: bool):
  key = (id(inference), flip, mesh)
  if key not in _EMBED_FNS:
    _EMBED_FNS[key] = embed.make_embed_fn(inference.embed, mesh, flip=flip)
  return _EMBED_FNS[key]


def _l2_normalize(x: np.ndarray) -> np.ndarray:
  return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


class FeatureExtractor:
  """A trained model's embedding of images: `fx(images) -> float32 [N, D]`.

  Attributes:
    config: the run's config.
    method: config.method.
    step: the checkpoint's step.
    input_size: (height, width) images are resized to.
    is_matcher: True when the outputs are feature maps compared by a learned matcher (QAConv):
      `fx(images)` gives [N, h, w, c] maps and `fx.scores` the matcher's scores.
    flip: whether outputs are averaged with those of the mirrored images (flip test).
    normalize: whether embeddings are L2-normalised (feature maps are returned as the model
      gives them).
    metric: how the embeddings are compared ('cosine' or 'euclidean', config.eval.metric).
    meta: the checkpoint's fingerprint (method, model config, number of classes, dataset).
  """

  def __init__(self, config: ml_collections.ConfigDict, inference: method_lib.Inference,
               params: PyTree, batch_stats: PyTree, *, step: int = 0,
               fingerprint: dict[str, Any] | None = None, flip: bool | None = None,
               normalize: bool = True, batch_size: int | None = None,
               mesh: jax.sharding.Mesh | None = None, progress: bool = False,
               source: str = ''):
    """Use `from_workdir` or `from_checkpoint`; this takes restored variables.

    Args:
      flip: average with the mirrored images (None: the run's config.eval.flip).
      normalize: L2-normalise embeddings (False keeps them as the model gives them).
      batch_size: images per batch over all devices (default config.eval.batch_size), rounded
        up to a multiple of the device count; fewer images use a smaller power-of-two batch.
      progress: show a progress bar (on a terminal) while embedding.
      source: where the model came from, for messages.
    """
    self.config = config
    self.method = str(config.method)
    self.step = int(step)
    self.source = source
    self.input_size = (int(config.input.height), int(config.input.width))
    self.flip = bool(config.eval.flip) if flip is None else bool(flip)
    self.normalize = bool(normalize)
    self.metric = str(config.eval.get('metric', 'cosine'))
    self.progress = progress
    self._inference = inference
    self.meta = dict(fingerprint or {})
    self._mesh = mesh or parallel.create_mesh()
    devices = self._mesh.devices.size
    size = int(config.eval.batch_size if batch_size is None else batch_size)
    if size < 1:
      raise InputError(f'batch_size must be at least 1, got {size}.')
    self.batch_size = -(-size // devices) * devices
    self._params, self._batch_stats = params, batch_stats
    self._variables = inference.variables(params, batch_stats)
    self._fn = _embed_fn(inference, self._mesh, self.flip)
    self.is_matcher = inference.score is not None
    self._model_id = None

  @classmethod
  def from_workdir(cls, workdir: PathLike, step: int | None = None, **options) -> FeatureExtractor:
    """The model of a run's workdir: its config.json and the checkpoint at `step` (default: the
    latest). `options` are the constructor's (flip, normalize, batch_size, mesh, progress)."""
    path = checkpoint_dir(workdir, step)
    config = load_config(pathlib.Path(workdir).expanduser() / 'config.json')
    return cls.from_checkpoint(path, config, **options)

  @classmethod
  def from_checkpoint(cls, path: PathLike, config: PathLike | dict | ml_collections.ConfigDict,
                      **options) -> FeatureExtractor:
    """The model of one checkpoint directory `WORKDIR/checkpoints/<step>` with the config that
    trained it (a ConfigDict, a run's config.json, or configs/X.py[:variant]).

    Raises:
      FileNotFoundError: `path` is not a checkpoint.
      jreid.checkpoint.CheckpointMismatchError: the checkpoint holds another method or model.
    """
    config = load_config(config)
    mesh = options.pop('mesh', None) or parallel.create_mesh()
    path = pathlib.Path(path).expanduser().absolute()
    inference, params, stats, step, meta = _restore(path, config, mesh)
    return cls(config, inference, params, stats, step=step, fingerprint=meta, mesh=mesh,
               source=str(path), **options)

  # Embedding.

  def __call__(self, images, modality: int | str | Sequence[int] | None = None) -> np.ndarray:
    """The embeddings (or QAConv feature maps) of `images`.

    Args:
      images: a folder (its images in `list_images` order), an image file, a list of image
        files, uint8 RGB arrays [N, H, W, 3] (or one [H, W, 3]), or a list of [H, W, 3] arrays
        of any sizes. Images not at `input_size` are resized as the evaluation pipeline does.
      modality: cross-modality models only: 0 / 'visible' or 1 / 'infrared', for every image or
        one per image.

    Returns:
      float32 [N, D] embeddings, L2-normalised unless `normalize=False`; [N, h, w, c] feature
      maps when `is_matcher`.
    """
    files = None
    if isinstance(images, (str, os.PathLike)) or (
        isinstance(images, (list, tuple)) and images and
        all(isinstance(p, (str, os.PathLike)) for p in images)):
      files = image_files(images)
      n = len(files)
    else:
      arrays = self._arrays(images)
      n = len(arrays)
    per_image = self._per_image(modality, n)
    batch_size = self._batch_for(n)
    if files is not None:
      out = embed.embed_split(self._fn, self._variables, _files_split(files), self.config.input,
                              batch_size, self._mesh, per_image=per_image,
                              progress=self.progress)
    else:
      out = embed.embed_batches(self._fn, self._variables,
                                embed.array_batches(arrays, batch_size), n, self._mesh,
                                per_image=per_image, desc='embedding', progress=self.progress)
    return jax.tree.map(self._finish, out)

  def _finish(self, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return _l2_normalize(x) if self.normalize and x.ndim == 2 else x

  def _batch_for(self, n: int) -> int:
    """The batch size for n images: a power of two when smaller than batch_size (few compiled
    shapes), a multiple of the device count."""
    devices = self._mesh.devices.size
    if n >= self.batch_size:
      return self.batch_size
    size = 1 << max(0, (n - 1).bit_length())
    return min(self.batch_size, -(-size // devices) * devices)

  def _arrays(self, images) -> np.ndarray:
    """uint8 [N, H, W, 3] at input_size from the array inputs `__call__` accepts."""
    if isinstance(images, (list, tuple)):
      if not images:
        raise InputError('no images given: pass a folder, image files or uint8 arrays '
                         '[N, H, W, 3].')
      items = [self._check_array(np.asarray(x), f'images[{i}]', single=True)
               for i, x in enumerate(images)]
      return np.stack([self._resize(x) for x in items])
    array = self._check_array(np.asarray(images), 'images')
    if array.ndim == 3:
      array = array[None]
    if array.shape[1:3] == self.input_size:
      return array
    return np.stack([self._resize(x) for x in array])

  @staticmethod
  def _check_array(x: np.ndarray, name: str, single: bool = False) -> np.ndarray:
    shapes = '[H, W, 3]' if single else '[N, H, W, 3] or [H, W, 3]'
    if x.dtype != np.uint8 or x.ndim not in ((3,) if single else (3, 4)) or x.shape[-1] != 3:
      raise InputError(f'{name} is {x.dtype} {list(x.shape)}: expected uint8 RGB {shapes} '
                       '(0..255), as decoded from an image file.')
    if x.ndim == 4 and len(x) == 0:
      raise InputError(f'{name} holds no image.')
    return x

  def _resize(self, image: np.ndarray) -> np.ndarray:
    if image.shape[:2] == self.input_size:
      return image
    from data_pipelines import transforms  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return transforms.resize(*self.input_size)(tf.constant(image), tf.zeros([2], tf.int32)).numpy()

  def _per_image(self, modality, n: int) -> dict[str, np.ndarray] | None:
    if self._inference.per_image is None:
      if modality is not None:
        raise InputError(f'modality= is for cross-modality models; this model ({self.method}) '
                         'embeds every image alike: leave it out.')
      return None
    if modality is None:
      raise InputError(f'this model ({self.method}) embeds each image with the stream of its '
                       'modality: pass modality=0 (visible) or modality=1 (infrared), one value '
                       'for all images or one per image.')
    values = np.asarray([MODALITIES.get(m, m) if isinstance(m, str) else m
                         for m in np.atleast_1d(np.asarray(modality, object))])
    if values.dtype == object or not np.isin(values, (0, 1)).all():
      raise InputError(f'modality must be 0 / "visible" or 1 / "infrared", got {modality!r}.')
    if len(values) == 1:
      values = np.repeat(values, n)
    if len(values) != n:
      raise InputError(f'modality has {len(values)} values for {n} images: pass one for all '
                       'images or one per image.')
    return {'modality': values.astype(np.int32)}

  # Comparing.

  def _outputs(self, x, modality) -> np.ndarray:
    """`x` when it is already outputs of this model (a float array), else `self(x)`."""
    if hasattr(x, 'dtype') and np.issubdtype(np.dtype(x.dtype), np.floating):
      return np.asarray(x, np.float32)
    return self(x, modality=modality)

  def scores(self, query, gallery, query_modality=None, gallery_modality=None) -> np.ndarray:
    """Similarities [Q, G] (higher = more alike) of query and gallery items: images as
    `__call__` takes them, or float outputs of this extractor.

    QAConv: the learned matcher's scores of each pair of feature maps. Embeddings: the cosine
    similarity (metric 'cosine'), or minus the Euclidean distance ('euclidean').
    """
    q = self._outputs(query, query_modality)
    g = self._outputs(gallery, gallery_modality)
    if self.is_matcher:
      inf = self._inference
      return np.asarray(inf.score(inf.score_variables(self._params, self._batch_stats), q, g),
                        np.float32)
    return -self.distances(q, g)

  def distances(self, query, gallery, query_modality=None, gallery_modality=None) -> np.ndarray:
    """Distances [Q, G] as the run's evaluation ranks them (lower = more alike): `1 - cos` or
    Euclidean for embeddings (`jreid.evaluation.compute_distance`), minus the matcher's score
    for QAConv."""
    from jreid.evaluation import compute_distance  # pylint: disable=g-import-not-at-top
    q = self._outputs(query, query_modality)
    g = self._outputs(gallery, gallery_modality)
    if self.is_matcher:
      from jreid.evaluation import qaconv_rerank  # pylint: disable=g-import-not-at-top
      return np.asarray(qaconv_rerank.qaconv_distance(self.scores(q, g)), np.float32)
    return np.asarray(compute_distance(q, g, self.metric), np.float32)

  @property
  def model_id(self) -> str:
    """A digest of the method, model config and weights: features of two extractors with the
    same model_id (and flip / normalize settings) are comparable."""
    if self._model_id is None:
      digest = hashlib.blake2b(digest_size=12)
      digest.update(json.dumps({'method': self.method,
                                'model': json.loads(self.config.model.to_json_best_effort()),
                                'input': list(self.input_size)}, sort_keys=True).encode())
      leaves = jax.tree_util.tree_leaves_with_path(
          jax.device_get({'params': self._params, 'batch_stats': self._batch_stats}))
      for path, leaf in leaves:
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
      self._model_id = digest.hexdigest()
    return self._model_id

  def export(self, path: PathLike, format: str | None = None,  # pylint: disable=redefined-builtin
             *, modality: int | str | None = None, overwrite: bool = False,
             platforms: Sequence[str] | None = None) -> list[pathlib.Path]:
    """Writes this extractor as files that run without jreid (`jreid.export`).

    The artifact maps uint8 images [N, H, W, 3] at `input_size` (any N) to what `self(images)`
    returns for them: the embeddings with this extractor's flip and normalize settings, or the
    feature maps of a matcher. A matcher (QAConv) also gets its scoring function
    `(query_maps, gallery_maps) -> scores [Q, G]` (`fx.scores`) next to it, as
    `<name>.matcher<suffix>`. Load either with `jreid.export.load(path)`.

    Args:
      path: the file to write ('.stablehlo', '.onnx', '.tflite'; a folder for 'savedmodel').
      format: one of `jreid.export.FORMATS`; None: from the suffix of `path`.
      modality: cross-modality models: the modality the artifact embeds (0 / 'visible' or
        1 / 'infrared'), baked in.
      overwrite: replace existing files; otherwise an existing path is an error.
      platforms: 'stablehlo' and 'savedmodel': the platforms to lower for (default: CPU, CUDA,
        TPU).

    Returns:
      The paths written: the model's, then the matcher's.
    """
    from jreid import export as export_lib  # pylint: disable=g-import-not-at-top
    path = pathlib.Path(path).expanduser()
    if format is None:
      format = export_lib.SUFFIXES.get(path.suffix)
      if format is None:
        raise InputError(f'{path}: no export format for the suffix {path.suffix!r}: name the file '
                         f'with one of {sorted(export_lib.SUFFIXES)} or pass format= (one of '
                         f'{", ".join(export_lib.FORMATS)}).')
    if format not in export_lib.FORMATS:
      raise InputError(f'unknown export format {format!r}: use one of '
                       f'{", ".join(export_lib.FORMATS)}.')
    if self.is_matcher and format == 'tflite':
      raise InputError(f'{self.method} compares feature maps with a learned matcher, which TFLite '
                       'cannot take (it orders inputs by name); export as stablehlo, savedmodel or '
                       'onnx.')
    per_image = self._per_image(modality, 1)  # Cross-modality models need one modality.
    embed_fn = self._inference.embed
    if self.flip:
      embed_fn = embed.flip_average(embed_fn)
    extra = {k: int(v[0]) for k, v in (per_image or {}).items()}
    normalize = self.normalize and not self.is_matcher

    def fn(variables, images):
      import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
      inputs = {k: jnp.full((images.shape[0],), v, jnp.int32) for k, v in extra.items()}
      out = embed_fn(variables, images, **inputs)
      if normalize:
        out = out / jnp.maximum(jnp.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
      return out.astype(jnp.float32)

    options = {} if platforms is None else {'platforms': tuple(platforms)}
    variables = jax.device_get(self._variables)
    matcher_path = None
    if self.is_matcher:
      matcher_path = path.with_name(f'{path.stem}.matcher{path.suffix}')
      for target in (path, matcher_path):
        if not overwrite and target.exists():
          raise FileExistsError(f'{target} exists: pass overwrite=True (--overwrite) or another '
                                'path.')
    written = [export_lib.export(
        fn, variables, input_shape=self.input_size, format=format, path=path,
        output_name='feature_maps' if self.is_matcher else 'embedding', overwrite=overwrite,
        **options)]
    if matcher_path is not None:
      image = jax.ShapeDtypeStruct((1, *self.input_size, 3), np.uint8)
      maps = jax.eval_shape(fn, variables, image)
      written.append(export_lib.export_qaconv_matcher(
          jax.device_get(self._inference.score_variables(self._params, self._batch_stats)),
          map_shape=maps.shape[1:], format=format, path=matcher_path, overwrite=overwrite,
          **options))
    return written

  def describe(self) -> dict[str, Any]:
    """What a features file records about the model that computed them."""
    return {'method': self.method, 'step': self.step, 'source': self.source,
            'model_id': self.model_id, 'flip': self.flip, 'normalize': self.normalize,
            'metric': self.metric, 'input_size': list(self.input_size),
            'outputs': 'feature_maps' if self.is_matcher else 'embeddings'}

  def __repr__(self) -> str:
    return (f'FeatureExtractor({self.method}, step {self.step}, input {self.input_size[0]}x'
            f'{self.input_size[1]}, flip={self.flip}, normalize={self.normalize}, '
            f'{self._mesh.devices.size} device(s))')


def _files_split(files: list[pathlib.Path]):
  """The files as a split the evaluation pipeline reads (their bytes as the readers store them);
  undecodable files are named."""
  from data_pipelines import reader_utils  # pylint: disable=g-import-not-at-top
  from data_pipelines import validate  # pylint: disable=g-import-not-at-top
  from data_pipelines.types import ReIDSplit  # pylint: disable=g-import-not-at-top
  n = len(files)
  images = np.empty(n, dtype=object)
  images[:] = [reader_utils.encoded_image(str(f), 'images') for f in files]
  split = ReIDSplit(name='images', images=images, pids=np.full(n, -1, np.int32),
                    camids=np.zeros(n, np.int32), sessions=np.ones(n, np.int32),
                    frames=np.zeros(n, np.int64), filenames=[str(f) for f in files],
                    labels=np.full(n, -1, np.int32))
  bad = validate.find_corrupt(split, decode=False)
  if len(bad):
    names = [str(files[i]) for i in bad]
    shown = ', '.join(names[:5]) + (f' and {len(names) - 5} more' if len(names) > 5 else '')
    raise InputError(f'{len(bad)} of the {n} images are not complete JPEG/PNG files (empty, '
                     f'truncated or no image): {shown}. Replace or remove them.')
  return split


# Dataset file-name layouts whose person id and camera `ids_from_names` reads, in the order
# tried (their patterns do not overlap): module of data_pipelines, parser.
NAME_LAYOUTS = (('market1501', 'market1501', 'parse_market1501_name'),
                ('dukemtmc', 'dukemtmc', 'parse_dukemtmc_name'),
                ('msmt17', 'msmt17', 'parse_msmt17_name'),
                ('veri', 'veri', 'parse_veri_name'),
                ('cuhk03_np', 'cuhk03', 'parse_cuhk03_np_name'))


def ids_from_names(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Person ids and zero-based camera ids parsed from image file names, with the dataset readers'
  parsers (`NAME_LAYOUTS`: Market-1501 `PPPP_cCsS_FFFFFF_NN.jpg`, as SynthReID writes too,
  DukeMTMC-reID, MSMT17, VeRi-776, CUHK03-NP).

  Returns:
    (pids int32 [N], camids int32 [N], layouts [N]): -1, -1 and '' for a name of no known
    layout. Market-1501's junk images keep their id -1 and its distractors 0.
  """
  import importlib  # pylint: disable=g-import-not-at-top
  from data_pipelines.types import DatasetError  # pylint: disable=g-import-not-at-top
  parsers = [(layout, getattr(importlib.import_module(f'data_pipelines.{module}'), fn))
             for layout, module, fn in NAME_LAYOUTS]
  pids = np.full(len(names), -1, np.int32)
  camids = np.full(len(names), -1, np.int32)
  layouts = [''] * len(names)
  for i, name in enumerate(names):
    base = os.path.basename(str(name))
    for layout, parse in parsers:
      try:
        parsed = parse(base)
      except DatasetError:
        continue
      pids[i], camids[i], layouts[i] = parsed.pid, parsed.camid, layout
      break
  return pids, camids, layouts
