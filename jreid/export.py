"""Export a jreid model (or the QAConv matcher) to a file that runs without jreid.

Four formats, each with the variables baked in and a dynamic batch size:

  'stablehlo'   `jax.export` serialized StableHLO (one file); runs wherever JAX runs, through
                `load_stablehlo` (`jax.export.deserialize(...).call`). Lowered for several
                platforms at once (CPU, CUDA, TPU by default), so one file serves all of them.
  'savedmodel'  a TensorFlow SavedModel directory made with `jax2tf` (the StableHLO inside an
                `XlaCallModule` op, the weights as variables): TF Serving,
                `tf.saved_model.load` (keep the loaded object alive while calling it).
  'tflite'      converted by `tf.lite.TFLiteConverter` from the SavedModel's serving function
                (lowered for CPU; builtin TFLite ops): resize the input tensor to the batch
                before `allocate_tensors()`.
  'onnx'        through `jax2onnx` (one self-contained file, weights inside): onnxruntime and
                other ONNX runtimes.

Usage::

  model = build_model(config.model, num_classes)
  embed = lambda variables, images: model.apply(variables, images, train=False)['embedding']
  export(embed, variables, input_shape=(256, 128), format='onnx', path='model.onnx',
         output_name='embedding')
  run = load('model.onnx')          # any format; numpy in, numpy out
  embeddings = run(images)           # uint8 [N, 256, 128, 3] -> float32 [N, D]

  export_qaconv_matcher(matcher_variables, map_shape=(24, 8, 128), format='stablehlo',
                        path='matcher.stablehlo')
  scores = load('matcher.stablehlo')(query_maps, gallery_maps)   # [Nq, Ng]

Lowering choices made here so that the converters get graphs they handle:

* TFLite and ONNX are traced with every convolution left to XLA (`conv.xla_convolutions()`):
  jreid's CPU rewrite of 1x1 convolutions as matrix products is staged with
  `lax.platform_dependent`, which neither converter supports, and both runtimes have their own
  convolution kernels. StableHLO and SavedModel keep it (it is a per-platform branch there).
* TFLite and ONNX get the function as a jaxpr evaluated again with two rewrites
  (`_eval_rewritten`). With a symbolic batch dimension JAX traces `x[..., a:b]` and
  `x[..., i]` (IBN's channel split, MGN's stripes) as `gather` with constant indices, which
  TFLite's converter rejects ("vhlo.dynamic_gather_v1 ... not part of the vhlo support"); such a
  gather becomes `lax.slice`. For ONNX, max pooling becomes the maximum of strided slices of the
  input, its borders extended by repeating the edge rows and columns (a window that reaches into
  the padding also covers the edge it repeats, so this equals -inf padding exactly): jax2onnx
  lowers `reduce_window_max` to an ONNX MaxPool over all four NHWC axes, which onnxruntime
  refuses ("Unsupported pooling size"), and its `pad` lowering fails on a symbolic batch
  dimension.
* ONNX: the jaxpr is traced before jax2onnx runs. During its own tracing jax2onnx replaces
  `flax.linen.max_pool` by a shim that rejects positional window shapes and explicit padding
  pairs, both of which jreid's stem pooling uses.
* The QAConv matcher has two inputs; TFLite orders inputs by name (gallery before query), so the
  matcher is not exported to TFLite.

TensorFlow, jax2onnx and onnxruntime are imported only inside the functions that need them
(`pip install jreid[export]` adds the ONNX packages).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import pathlib
import shutil
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jreid.models import conv

FORMATS = ('stablehlo', 'savedmodel', 'tflite', 'onnx')

# Platforms of the 'stablehlo' and 'savedmodel' artifacts: lowering for a platform needs no
# device of that kind, and the file then runs on any of them.
DEFAULT_PLATFORMS = ('cpu', 'cuda', 'tpu')

# File suffixes `load` recognises (a directory is a SavedModel).
SUFFIXES = {'.stablehlo': 'stablehlo', '.tflite': 'tflite', '.onnx': 'onnx'}

# An input: (shape, dtype, name); a str in the shape names a dynamic dimension (the same name
# twice means the same size).
InputSpec = tuple[tuple[int | str, ...], Any, str]


def export(
    fn: Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    *,
    input_shape: Sequence[int],
    format: str,  # pylint: disable=redefined-builtin
    path: str | os.PathLike[str],
    dtype: Any = np.uint8,
    channels: int = 3,
    output_name: str = 'output',
    overwrite: bool = False,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    onnx_optimize: bool = True,
) -> pathlib.Path:
  """Exports `fn(variables, images)` for images [batch, H, W, channels] of any batch size.

  Args:
    fn: a pure JAX function of (variables, images) returning one float array whose first axis
      is the batch (embeddings [N, D], QAConv feature maps [N, h, w, c]), e.g.
      `lambda v, x: model.apply(v, x, train=False)['embedding']`.
    variables: the model variables, baked into the artifact (see `export_function`).
    input_shape: (H, W) of the images the model was trained for.
    format: one of FORMATS.
    path: the file (a directory for 'savedmodel') to write.
    dtype: image dtype (uint8: jreid models take images in 0..255 and normalise them).
    channels: image channels.
    output_name: the name of the output in the SavedModel, TFLite and ONNX signatures.
    overwrite: replace an existing `path`; otherwise an existing path is an error.
    platforms: 'stablehlo' and 'savedmodel' only: the platforms lowered for.
    onnx_optimize: 'onnx' only: run jax2onnx's removal of the transpose pairs it puts around
      each NHWC convolution. Its time grows faster than linearly with the number of nodes and
      dominates the export of deep graphs (OSNet, MGN); False skips it and leaves that work to
      the runtime's own graph optimizer.

  Returns:
    The path written.
  """
  height, width = _check_input_shape(input_shape)
  frozen = _as_arrays(variables)
  specs = [(('batch', height, width, int(channels)), dtype, 'images')]
  return export_function(
      fn, specs, variables=frozen, format=format, path=path, output_name=output_name,
      overwrite=overwrite, platforms=platforms, onnx_optimize=onnx_optimize)


def export_qaconv_matcher(
    matcher_variables: Any,
    *,
    map_shape: Sequence[int],
    format: str,  # pylint: disable=redefined-builtin
    path: str | os.PathLike[str],
    overwrite: bool = False,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
) -> pathlib.Path:
  """Exports the QAConv scoring function `(query_maps, gallery_maps) -> scores [Nq, Ng]`.

  The artifact computes `QAConvMatcher.apply(variables, q, g, train=False)` (the logits
  `jreid.models.qaconv.pairwise_scores` returns; higher = more similar) for query maps
  [Nq, h, w, c] and gallery maps [Ng, h, w, c], Nq and Ng both dynamic. It holds the
  [Nq, Ng, hw, hw] location similarities at once, so call it on blocks of maps (a few dozen
  each) for large sets.

  Args:
    matcher_variables: {'params', 'batch_stats'} of a `QAConvMatcher`.
    map_shape: (h, w, c) of the feature maps (`QAConvNet` output).
    format: 'stablehlo', 'savedmodel' or 'onnx'.
    path, overwrite, platforms: as `export`.

  Returns:
    The path written.
  """
  from jreid.models import qaconv  # pylint: disable=g-import-not-at-top

  if format == 'tflite':
    raise ValueError("export_qaconv_matcher: format 'tflite' is not supported (TFLite orders "
                     'inputs by name, which would put the gallery before the query); use '
                     'stablehlo, savedmodel or onnx.')
  if len(map_shape) != 3 or min(int(d) for d in map_shape) < 1:
    raise ValueError(f'export_qaconv_matcher: map_shape must be (h, w, c) of the feature maps, '
                     f'got {tuple(map_shape)}.')
  h, w, c = (int(d) for d in map_shape)
  hw = int(np.shape(matcher_variables['params']['fc']['kernel'])[0])
  if hw != h * w:
    raise ValueError(f'export_qaconv_matcher: the matcher was built for {hw} locations, but '
                     f'map_shape {tuple(map_shape)} has h*w = {h * w}; pass the feature-map shape '
                     'of the network it was trained with.')
  matcher = qaconv.QAConvMatcher(hw)
  frozen = _as_arrays(matcher_variables)

  def scores(variables, query_maps, gallery_maps):
    return matcher.apply(variables, query_maps, gallery_maps, train=False)

  specs = [(('queries', h, w, c), np.float32, 'query_maps'),
           (('gallery', h, w, c), np.float32, 'gallery_maps')]
  return export_function(scores, specs, variables=frozen, format=format, path=path,
                         output_name='scores', overwrite=overwrite, platforms=platforms)


def export_function(
    fn: Callable[..., jax.Array],
    inputs: Sequence[InputSpec],
    *,
    variables: Any = None,
    format: str,  # pylint: disable=redefined-builtin
    path: str | os.PathLike[str],
    output_name: str = 'output',
    overwrite: bool = False,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    onnx_optimize: bool = True,
) -> pathlib.Path:
  """Exports a JAX function of arrays with named dynamic dimensions.

  Args:
    fn: `fn(*arrays) -> array`, or `fn(variables, *arrays)` when `variables` is given;
      traceable with symbolic dimensions.
    inputs: one (shape, dtype, name) per argument; a str in a shape is a dynamic dimension
      (the same str in two places means the same size).
    variables: a pytree of arrays baked into the artifact: constants of the StableHLO and ONNX
      graphs, variables of the SavedModel (stored once, beside the graph), frozen by the TFLite
      converter.
    format, path, output_name, overwrite, platforms, onnx_optimize: as `export`.

  Returns:
    The path written.
  """
  if format not in FORMATS:
    raise ValueError(f'export: unknown format {format!r}; use one of {", ".join(FORMATS)}.')
  path = pathlib.Path(path)
  if _exists(path) and not overwrite:
    raise FileExistsError(f'export: {path} already exists; pass overwrite=True to replace it, '
                          'or choose another path.')
  specs = [(tuple(shape), np.dtype(dtype), str(name)) for shape, dtype, name in inputs]
  names = [name for _, _, name in specs]
  if format == 'tflite' and names != sorted(names):
    raise ValueError(f'export: TFLite orders the inputs of a model by name, and {names} do not '
                     'sort in argument order; rename them, or choose another format.')
  platforms = tuple(platforms)
  if variables is None:
    variables, with_variables = {}, (lambda v, *arrays: fn(*arrays))
  else:
    with_variables = fn
  if format == 'savedmodel':
    write = functools.partial(_save_savedmodel, with_variables, variables, specs,
                              output_name=output_name, platforms=platforms)
  else:
    closed = functools.partial(with_variables, variables)
    if format == 'stablehlo':
      data = _stablehlo_bytes(closed, specs, platforms)
    elif format == 'tflite':
      data = _tflite_bytes(with_variables, variables, specs, output_name)
    else:
      data = _onnx_bytes(closed, specs, output_name, optimize=onnx_optimize)
    write = functools.partial(_write_bytes, data)
  _write_atomically(path, write)
  return path


# ----------------------------------------------------------------------------- loading


def load(path: str | os.PathLike[str],
         format: str | None = None,  # pylint: disable=redefined-builtin
         **kwargs) -> Callable[..., np.ndarray]:
  """A callable running an exported artifact: numpy arrays in (positional, export order),
  a float32 numpy array out.

  `format` defaults to the one the path names: a directory is a SavedModel, otherwise the
  suffix ('.stablehlo', '.tflite', '.onnx'). `kwargs` go to the format's loader.
  """
  path = pathlib.Path(path)
  if not _exists(path):
    raise FileNotFoundError(f'load: {path} does not exist; give the path an export wrote.')
  if format is None:
    format = 'savedmodel' if path.is_dir() else SUFFIXES.get(path.suffix)
    if format is None:
      raise ValueError(f'load: cannot tell the format of {path} from its suffix; pass format= '
                       f'one of {", ".join(FORMATS)} (suffixes: {", ".join(SUFFIXES)}).')
  loaders = {'stablehlo': load_stablehlo, 'savedmodel': load_savedmodel,
             'tflite': load_tflite, 'onnx': load_onnx}
  if format not in loaders:
    raise ValueError(f'load: unknown format {format!r}; use one of {", ".join(FORMATS)}.')
  return loaders[format](path, **kwargs)


def load_stablehlo(path: str | os.PathLike[str]) -> Callable[..., np.ndarray]:
  """Runs a 'stablehlo' export with JAX (compiled once per input shape)."""
  exported = jax.export.deserialize(bytearray(pathlib.Path(path).read_bytes()))
  call = jax.jit(exported.call)
  return lambda *arrays: np.asarray(call(*arrays))


def load_savedmodel(path: str | os.PathLike[str]) -> Callable[..., np.ndarray]:
  """Runs a 'savedmodel' export with TensorFlow, on CPU (see `_import_tf`)."""
  tf = _import_tf()
  module = tf.saved_model.load(str(path))  # Referenced by `run`: it owns the variables.

  def run(*arrays):
    out = module.serve(*[tf.constant(a) for a in arrays])  # positional, as exported
    return next(iter(out.values())).numpy()

  return run


def load_tflite(path: str | os.PathLike[str], num_threads: int | None = None
                ) -> Callable[..., np.ndarray]:
  """Runs a 'tflite' export in `tf.lite.Interpreter`, resizing the inputs to each call's shapes.

  `num_threads` goes to the interpreter (None: its default).
  """
  tf = _import_tf()
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # "tf.lite.Interpreter is deprecated" (moving to LiteRT).
    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
  names = _tflite_input_order(interpreter)
  output = interpreter.get_output_details()[0]['index']
  lock = threading.Lock()  # One interpreter: calls from several threads take turns.

  def run(*arrays):
    with lock:
      for index, a in zip(names, arrays):
        interpreter.resize_tensor_input(index, np.shape(a))
      interpreter.allocate_tensors()
      for index, a in zip(names, arrays):
        interpreter.set_tensor(index, np.ascontiguousarray(a))
      interpreter.invoke()
      return np.array(interpreter.get_tensor(output))

  return run


def load_onnx(path: str | os.PathLike[str], providers: Sequence[str] = ('CPUExecutionProvider',)
              ) -> Callable[..., np.ndarray]:
  """Runs an 'onnx' export with onnxruntime."""
  ort = _import_optional('onnxruntime')
  options = ort.SessionOptions()
  options.log_severity_level = 3  # errors only, not its notes on unused initializers
  session = ort.InferenceSession(str(path), options, providers=list(providers))
  names = [i.name for i in session.get_inputs()]

  def run(*arrays):
    return session.run(None, {n: np.ascontiguousarray(a) for n, a in zip(names, arrays)})[0]

  return run


# ----------------------------------------------------------------------------- formats


def _symbolic_specs(specs: Sequence[tuple[tuple[Any, ...], np.dtype, str]]
                    ) -> list[jax.ShapeDtypeStruct]:
  """ShapeDtypeStructs with one jax.export symbolic dimension per dynamic dimension name."""
  names = list(dict.fromkeys(d for shape, _, _ in specs for d in shape if isinstance(d, str)))
  symbols = dict(zip(names, jax.export.symbolic_shape(', '.join(names)))) if names else {}
  return [jax.ShapeDtypeStruct(tuple(symbols[d] if isinstance(d, str) else int(d) for d in shape),
                               dtype) for shape, dtype, _ in specs]


def _stablehlo_bytes(fn, specs, platforms) -> bytes:
  exported = jax.export.export(jax.jit(fn), platforms=platforms)(*_symbolic_specs(specs))
  return bytes(exported.serialize())


def _tf_module(fn, variables, specs, output_name, platforms, rewrite: bool = False):
  """A tf.Module holding `variables` as tf.Variables and `serve`, a tf.function of
  `fn(variables, *arrays)` through jax2tf, batch-polymorphic, returning {output_name: y}.

  The variables enter the StableHLO as arguments (jax2tf's way for large models), not as
  constants: the SavedModel stores them once, and the TFLite converter freezes them once
  instead of copying constants through every pass.
  """
  tf = _import_tf()
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top

  leaves, treedef = jax.tree_util.tree_flatten(variables)

  def flat(leaves, *arrays):
    return fn(jax.tree_util.tree_unflatten(treedef, leaves), *arrays)

  polymorphic = [None] + ['(' + ', '.join(str(d) for d in shape) + ')' for shape, _, _ in specs]
  converted = jax2tf.convert(_rewriting(flat, max_pool=False) if rewrite else flat,
                             polymorphic_shapes=polymorphic, with_gradient=False,
                             native_serialization_platforms=platforms)
  module = tf.Module()
  module.weights = [tf.Variable(np.asarray(x), trainable=False) for x in leaves]

  def serve(*arrays):
    return {output_name: converted(module.weights, *arrays)}

  signature = [tf.TensorSpec([None if isinstance(d, str) else int(d) for d in shape],
                             tf.as_dtype(dtype), name=name) for shape, dtype, name in specs]
  module.serve = tf.function(serve, input_signature=signature, autograph=False)
  return module


def _save_savedmodel(fn, variables, specs, directory: pathlib.Path, *, output_name: str,
                     platforms: Sequence[str]) -> None:
  tf = _import_tf()
  module = _tf_module(fn, variables, specs, output_name, platforms)
  # The tf.function itself as the signature: its concrete function is saved once ('serving_default'
  # from a separate concrete function would store the graph twice).
  tf.saved_model.save(module, str(directory), signatures=module.serve)


def _tflite_bytes(fn, variables, specs, output_name) -> bytes:
  """TFLite flatbuffer converted from the SavedModel's serving function (CPU lowering)."""
  tf = _import_tf()
  with conv.xla_convolutions():
    module = _tf_module(fn, variables, specs, output_name, ('cpu',), rewrite=True)
    concrete = module.serve.get_concrete_function()
  converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
  return bytes(converter.convert())


def _onnx_bytes(fn, specs, output_name, *, optimize: bool) -> bytes:
  jax2onnx = _import_jax2onnx()
  symbolic = _symbolic_specs(specs)
  with conv.xla_convolutions():
    closed = jax.make_jaxpr(fn)(*symbolic)
  inlined = functools.partial(_eval_rewritten, closed.jaxpr, closed.consts, max_pool=True)
  # onnx_ir warns for each intermediate value whose type it leaves out of the file (the scalar
  # shapes jax2onnx builds for a dynamic batch); the runtime infers them, nothing is lost.
  serde_logger = logging.getLogger('onnx_ir.serde')
  level = serde_logger.level
  serde_logger.setLevel(logging.ERROR)
  try:
    with _onnx_graph_cleanup(optimize):
      model = jax2onnx.to_onnx(
          inlined, inputs=symbolic, model_name='jreid',
          input_names=[name for _, _, name in specs], output_names=[output_name])
    return model.SerializeToString()
  finally:
    serde_logger.setLevel(level)


# ----------------------------------------------------------------------------- rewrites


# Call primitives whose body is evaluated in place, so that the rewrites reach inside them.
_INLINED = ('pjit', 'jit', 'closed_call', 'core_call', 'custom_jvp_call', 'custom_vjp_call',
            'remat', 'checkpoint')

# Index arithmetic evaluated while rewriting (the start indices of a gather): outputs at most
# this many elements, computed from literals only.
_FOLD_LIMIT = 64


def _rewriting(fn: Callable[..., Any], max_pool: bool) -> Callable[..., Any]:
  """`fn` traced to a jaxpr and evaluated again with the rewrites of `_eval_rewritten`.

  Traced inside the caller's trace (jax2tf's), so the jaxpr's symbolic dimensions are the
  caller's.
  """

  def run(*args):
    specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
    closed = jax.make_jaxpr(fn)(*specs)
    (out,) = _eval_rewritten(closed.jaxpr, closed.consts, *jax.tree.leaves(args),
                             max_pool=max_pool)
    return out

  return run


def _eval_rewritten(jaxpr, consts, *args, max_pool: bool) -> list[Any]:
  """Evaluates a jaxpr under the current trace, inlining calls and rewriting two primitives.

  * `gather` with constant start indices and no batch dimensions (how `x[..., a:b]` and
    `x[..., i]` are traced when the batch dimension is symbolic) becomes `lax.slice`: TFLite's
    converter has no dynamic gather.
  * `reduce_window_max` (max pooling), when `max_pool`, becomes `_max_pool_by_slices` (see the
    module docstring).
  """
  from jax.extend import core as jex_core  # pylint: disable=g-import-not-at-top

  env: dict[Any, Any] = {}
  folded: dict[Any, np.ndarray] = {}  # vars whose value is known here (from literals)

  def read(v):
    return v.val if isinstance(v, jex_core.Literal) else env[v]

  def known(v):
    if isinstance(v, jex_core.Literal):
      return np.asarray(v.val)
    return folded.get(v)

  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    body = next((eqn.params[k] for k in ('jaxpr', 'call_jaxpr', 'fun_jaxpr')
                 if k in eqn.params), None)
    outs = None
    if name == 'gather' and known(eqn.invars[1]) is not None:
      sliced = _gather_as_slice(invals[0], known(eqn.invars[1]), **eqn.params)
      outs = None if sliced is None else [sliced]
    elif max_pool and name == 'reduce_window_max' and _slices_cover(**eqn.params):
      outs = [_max_pool_by_slices(*invals, **eqn.params)]
    elif name in _INLINED and body is not None:
      if hasattr(body, 'consts'):  # ClosedJaxpr
        outs = _eval_rewritten(body.jaxpr, body.consts, *invals, max_pool=max_pool)
      else:
        outs = _eval_rewritten(body, (), *invals, max_pool=max_pool)
    elif (not eqn.primitive.multiple_results and eqn.invars
          and all(known(v) is not None for v in eqn.invars)
          and all(np.prod(v.aval.shape) <= _FOLD_LIMIT for v in eqn.outvars)
          and all(isinstance(d, int) for v in eqn.outvars for d in v.aval.shape)):
      with jax.ensure_compile_time_eval():
        value = np.asarray(_bind(eqn, [known(v) for v in eqn.invars]))
      folded[eqn.outvars[0]] = value
      outs = [value]
    if outs is None:
      outs = _bind(eqn, invals)
      if not eqn.primitive.multiple_results:
        outs = [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _bind(eqn, invals):
  params = eqn.primitive.get_bind_params(eqn.params)
  if isinstance(params, tuple):  # Older JAX: (subfuns, params).
    subfuns, params = params
    invals = [*subfuns, *invals]
  return eqn.primitive.bind(*invals, **params)


def _gather_as_slice(operand, indices: np.ndarray, *, dimension_numbers, slice_sizes, mode,
                     **_) -> Any:
  """`lax.gather` with one constant start-index vector as `lax.slice` (None where it is not
  one: batched indices, batching dimensions, or an out-of-bounds start in 'fill' mode)."""
  dn = dimension_numbers
  rank = len(slice_sizes)
  if (indices.ndim != 1 or len(indices) != len(dn.start_index_map)
      or dn.operand_batching_dims or dn.start_indices_batching_dims
      or tuple(dn.offset_dims) != tuple(range(rank - len(dn.collapsed_slice_dims)))):
    return None
  starts = [0] * rank
  for axis, start in zip(dn.start_index_map, indices.tolist()):
    starts[axis] = int(start)
  limits = []
  for axis, (start, size, dim) in enumerate(zip(starts, slice_sizes, operand.shape)):
    if not (isinstance(size, int) and isinstance(dim, int)):  # symbolic: the whole axis only
      if start != 0 or not _same_dim(size, dim):
        return None
      limits.append(dim)
      continue
    clamped = min(max(start, 0), dim - size)
    if clamped != start and mode == lax.GatherScatterMode.FILL_OR_DROP:
      return None
    starts[axis] = clamped
    limits.append(clamped + size)
  out = lax.slice(operand, starts, limits)
  return lax.squeeze(out, tuple(dn.collapsed_slice_dims)) if dn.collapsed_slice_dims else out


def _same_dim(a, b) -> bool:
  try:
    return bool(a == b)
  except Exception:  # pylint: disable=broad-except
    return False


def _slices_cover(*, window_dimensions, padding, base_dilation, window_dilation, **_) -> bool:
  """Whether `_max_pool_by_slices` computes this reduce_window_max exactly: no dilation, and
  padding narrower than the window on each side (every window then holds an input element)."""
  return (all(d == 1 for d in base_dilation) and all(d == 1 for d in window_dilation)
          and all(lo < w and hi < w for (lo, hi), w in zip(padding, window_dimensions)))


def _max_pool_by_slices(x, *, window_dimensions, window_strides, padding, **_):
  """`lax.reduce_window_max` as the maximum of strided slices, borders extended by repetition."""
  for axis, (lo, hi) in enumerate(padding):
    if lo or hi:
      size = x.shape[axis]
      first = lax.slice_in_dim(x, 0, 1, axis=axis)
      last = lax.slice_in_dim(x, size - 1, size, axis=axis)
      x = lax.concatenate([first] * lo + [x] + [last] * hi, axis)
  out = None
  for start in itertools.product(*[range(w) for w in window_dimensions]):
    limit = [s + (n - w) // st * st + 1
             for s, n, w, st in zip(start, x.shape, window_dimensions, window_strides)]
    part = lax.slice(x, start, limit, window_strides)
    out = part if out is None else jnp.maximum(out, part)
  return out


_CLEANUP_LOCK = threading.Lock()


@contextlib.contextmanager
def _onnx_graph_cleanup(enabled: bool) -> Iterator[None]:
  """With enabled=False, jax2onnx's transpose-pair removal is skipped for this conversion.

  jax2onnx has no switch for it: its graph optimizer calls the module-level
  `remove_redundant_transpose_pairs_ir` of `jax2onnx.converter.ir_optimizations`, replaced here
  by a no-op while converting (its other clean-ups, dead nodes and common subexpressions, still
  run). If that name is gone (another jax2onnx), the pass runs as usual.
  """
  try:
    from jax2onnx.converter import ir_optimizations  # pylint: disable=g-import-not-at-top
  except ImportError:
    ir_optimizations = None
  name = 'remove_redundant_transpose_pairs_ir'
  if enabled or not hasattr(ir_optimizations, name):
    yield
    return
  with _CLEANUP_LOCK:
    original = getattr(ir_optimizations, name)
    setattr(ir_optimizations, name, lambda graph: None)
    try:
      yield
    finally:
      setattr(ir_optimizations, name, original)


# ----------------------------------------------------------------------------- helpers


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int]:
  shape = tuple(input_shape)
  if len(shape) != 2 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
    raise ValueError(f'export: input_shape must be (height, width) in pixels, as the model was '
                     f'trained (config.input.height, config.input.width); got {shape}.')
  return int(shape[0]), int(shape[1])


def _as_arrays(tree: Any) -> Any:
  return jax.tree.map(jnp.asarray, tree)


def _exists(path: pathlib.Path) -> bool:
  return path.exists() or path.is_symlink()


def _write_bytes(data: bytes, target: pathlib.Path) -> None:
  with open(target, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _write_atomically(path: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
  """`write(tmp)` to a temporary name beside `path`, then renames it to `path`.

  A reader sees the old artifact or the whole new one, never a part; an existing path is moved
  aside first (a directory cannot be renamed over) and removed once the new one is in place.
  """
  tag = uuid.uuid4().hex[:8]
  tmp = path.with_name(f'.{path.name}.tmp-{tag}')
  path.parent.mkdir(parents=True, exist_ok=True)
  try:
    write(tmp)
    if _exists(path):
      old = path.with_name(f'.{path.name}.old-{tag}')
      os.replace(path, old)
      try:
        os.replace(tmp, path)
      except BaseException:
        os.replace(old, path)
        raise
      _remove(old)
    else:
      os.replace(tmp, path)
  finally:
    if _exists(tmp):
      _remove(tmp)


def _remove(path: pathlib.Path) -> None:
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path)
  else:
    path.unlink()


def _import_tf():
  """TensorFlow, quiet and CPU-only: the exporters and loaders need no GPU, and TensorFlow would
  otherwise take the memory of every GPU that JAX uses in the same process."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with contextlib.suppress(RuntimeError):  # Already initialised: leave it.
    tf.config.set_visible_devices([], 'GPU')
  return tf


def _import_optional(name: str):
  try:
    return __import__(name)
  except ImportError:
    raise ImportError(f'export: the ONNX format needs the {name} package; install it with '
                      "`pip install 'jreid[export]'`.") from None


def _import_jax2onnx():
  # Importing its plugins logs a warning with a traceback for each optional plugin that does not
  # load with this JAX (dm_pix's); none of them is used here.
  plugin_logger = logging.getLogger('jax2onnx.plugins.plugin_system')
  level = plugin_logger.level
  plugin_logger.setLevel(logging.ERROR)
  try:
    module = _import_optional('jax2onnx')
    from jax2onnx.plugins import plugin_system  # pylint: disable=g-import-not-at-top

    plugin_system.import_all_plugins()
  finally:
    plugin_logger.setLevel(level)
  return module


def _tflite_input_order(interpreter) -> list[int]:
  """Tensor indices of the interpreter's inputs in the argument order of the export.

  TFLite keeps a signature's inputs ordered by name; `export_function` refuses a TFLite export
  whose input names do not sort in argument order, so the name order is the argument order.
  """
  details = interpreter.get_input_details()
  if len(details) == 1:
    return [details[0]['index']]
  names = interpreter.get_signature_list()['serving_default']['inputs']
  index = {d['name']: d['index'] for d in details}
  return [index[f'serving_default_{name}:0'] for name in sorted(names)]
