"""What a method is: the parts a method module builds and the shared loop composes.

A method is one module `jreid.methods.<name>`, found from `config.method`. It exposes

  default_config(arg) -> ConfigDict   the whole config of the method's defaults: the sections every
                                       method shares (`jreid.config_defaults.base_config`) plus the
                                       sections it owns (e.g. `qaconv`, `loss`, `sampler`);
  inference(config, num_classes)       -> Inference: the model and its embedding (and scoring)
                                       functions, built from the config alone (no data), as
                                       `jreid.inference.FeatureExtractor` and export use them;
  build(config, data, mesh, workdir)   -> Method: everything a training run needs.

`Method` is a plain frozen dataclass of parts: no base class, no constructor calling overridable
methods. Its state beyond params, BatchNorm statistics and the optimiser is a typed pytree
(`TrainState.extra`, a `flax.struct.dataclass` of the method, or an empty dict), checkpointed with
the rest, so a run resumed at any step continues exactly.

The shared pieces: `jreid.step.make_train_step` (the one jitted train step, built from
`forward` + `objective`), `jreid.embed` (the one embedding path), `jreid.train` (the loop).
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax
import jax
import ml_collections
import numpy as np
import optax

PyTree = Any
Batch = Mapping[str, Any]


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds.

  `extra` is the method's own typed state (a `flax.struct.dataclass`, e.g. PPLR's pseudo
  labels), or an empty dict for a method without one. (Its name and the field names of each
  method's state are those of the checkpoints' on-disk layout: keep them, or earlier
  checkpoints no longer restore.) Optimiser-side state (SWA's running average, frozen-layer counters) lives in
  `opt_state`, inside the optax transformations that own it.
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  extra: PyTree = flax.struct.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Data:
  """The dataset of a run, loaded and validated once, before anything is compiled.

  Attributes:
    splits: 'train', 'query', 'gallery' (`data_pipelines.types.ReIDSplit`).
    testsets: further test sets of `config.eval.testsets`: name -> {'query', 'gallery'}.
  """
  splits: Mapping[str, Any]
  testsets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

  @property
  def train(self):
    return self.splits['train']

  @property
  def num_classes(self) -> int:
    """Training identities (labels are 0..num_classes-1)."""
    return int(np.max(self.train.labels)) + 1


@dataclasses.dataclass(frozen=True)
class Inference:
  """A method's model as used outside training: built from the config alone.

  Attributes:
    model: the flax module (`model.init` / `model.apply`).
    init: `rng -> variables` ({'params', 'batch_stats'}), jittable.
    embed: `(variables, images uint8 [B, H, W, 3], **per_image) -> float32 outputs`: embeddings
      [B, D] (or a pytree of them, e.g. PPLR's global and part features), or feature maps
      [B, h, w, c] for matchers (QAConv). Pure: the embedding path jits it.
    variables: `(params, batch_stats) -> the variables embed takes` (QAConv: the network's part).
    score: `(variables, query outputs, gallery outputs) -> similarity [Q, G]` for methods that
      match pairs (QAConv); None: cosine / euclidean distances of the embeddings.
    score_variables: `(params, batch_stats) -> the variables score takes`.
    per_image: `split -> {name: array [N]}` of the further inputs `embed` takes per image (the
      two-stream model's modality), derived from a split's metadata; None when there are none.
    normalize: whether the embeddings are compared after L2 normalisation (cosine).
  """
  model: Any
  init: Callable[[jax.Array], PyTree]
  embed: Callable[..., PyTree]
  variables: Callable[[PyTree, PyTree], PyTree] = lambda params, batch_stats: {
      'params': params, 'batch_stats': batch_stats}
  score: Callable[[PyTree, Any, Any], Any] | None = None
  score_variables: Callable[[PyTree, PyTree], PyTree] | None = None
  per_image: Callable[[Any], dict[str, np.ndarray]] | None = None
  normalize: bool = True


# (params, batch_stats, batch, rng) -> (outputs, new batch_stats): the model in training mode.
ForwardFn = Callable[[PyTree, PyTree, Batch, jax.Array], tuple[Any, PyTree]]
# (outputs, batch, state) -> (loss, metrics, new extra): the objective of one batch.
ObjectiveFn = Callable[[Any, Batch, TrainState], tuple[jax.Array, dict[str, jax.Array], PyTree]]
EpochHook = Callable[[TrainState, int], TrainState]


@dataclasses.dataclass(frozen=True)
class Method:
  """The parts of a training run, built by a method module's `build`.

  Attributes:
    name: config.method.
    inference: the model and its embedding path (also used to evaluate).
    state: the initial train state, replicated on the mesh.
    tx: the optimiser (`jreid.optim.build_optimizer`: weight decay, parameter groups, clipping,
      freezing, SWA as optax transformations).
    schedule: step -> base learning rate (for the logs).
    forward, objective: the train step is `objective(forward(params, ...), batch, state)`,
      differentiated with respect to params (`jreid.step.make_train_step`).
    steps_per_epoch: steps of one epoch.
    batches: `(state, start, stop) -> host batches of global steps start..stop-1` (dicts of numpy
      arrays; the step places them on the mesh).
    evaluate: `(state, splits or None, post) -> jreid.evaluator.EvalOutput` on this dataset's
      query/gallery (splits None) or another test set; `post=False` leaves out post-processed
      rows (re-ranking, ...), e.g. for the untrained network.
    fingerprint: what a checkpoint must match to be restored into this run.
    describe: one paragraph on the model and recipe for the report.
    num_epochs: `state -> epochs of the run` (a method may end earlier, e.g. QAConv's adaptive
      schedule); None: config.train.epochs.
    begin_epoch, end_epoch: `(state, epoch) -> state` hooks (a sampler rebuilt from the current
      model, pseudo labels, an adaptive schedule), or None.
    report_sections: `(state, output, out_dir) -> [(title, markdown, PNG path relative to
      out_dir, or None)]`, or None; plots it draws go to out_dir (the run's workdir, or the
      `eval-<step>/` folder of --mode=eval).
    lr_scale: `extra -> scalar` multiplying every update (QAConv's adaptive decay), or None.
  """
  name: str
  inference: Inference
  state: TrainState
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  forward: ForwardFn
  objective: ObjectiveFn
  steps_per_epoch: int
  batches: Callable[[TrainState, int, int], Iterator[dict[str, np.ndarray]]]
  evaluate: Callable[..., Any]
  fingerprint: dict[str, Any]
  describe: str
  num_epochs: Callable[[TrainState], int] | None = None
  begin_epoch: EpochHook | None = None
  end_epoch: EpochHook | None = None
  report_sections: Callable[[TrainState, Any, pathlib.Path],
                            list[tuple[str, str, str | None]]] | None = None
  lr_scale: Callable[[PyTree], jax.Array] | None = None


def method_names() -> list[str]:
  """The modules of `jreid.methods` that define a method (have `build`)."""
  from jreid import methods  # pylint: disable=g-import-not-at-top
  names = []
  for info in pkgutil.iter_modules(methods.__path__):
    if not info.name.startswith('_'):
      names.append(info.name)
  return sorted(names)


def load(name: str):
  """The method module `jreid.methods.<name>`; a ValueError naming the known ones otherwise."""
  import difflib  # pylint: disable=g-import-not-at-top
  known = method_names()
  if name not in known:
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f'did you mean {close[0]!r}? ' if close else ''
    raise ValueError(f'config.method: unknown method {name!r}; {hint}known: {", ".join(known)} '
                     '(modules of jreid/methods/).')
  module = importlib.import_module(f'jreid.methods.{name}')
  for attr in ('default_config', 'inference', 'build'):
    if not callable(getattr(module, attr, None)):
      raise ValueError(f'jreid/methods/{name}.py is not a method module: it has no {attr}().')
  return module


def build(config: ml_collections.ConfigDict, data: Data, mesh: jax.sharding.Mesh,
          workdir: pathlib.Path) -> Method:
  """The method of `config.method`, built for this run."""
  return load(config.method).build(config, data, mesh, pathlib.Path(workdir))


def inference(config: ml_collections.ConfigDict, num_classes: int) -> Inference:
  """The data-free model part of `config.method`."""
  return load(config.method).inference(config, int(num_classes))
