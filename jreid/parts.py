"""Parts that method modules compose: optimiser and schedule, initial state, fingerprint, the
training batches of a sampler, and the evaluation of embeddings.

Each is a plain function of the config (and the run's data and mesh); a method uses the ones it
needs and writes only what is its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jreid import embed
from jreid import evaluator
from jreid import optim
from jreid import parallel
from jreid.method import Data, Inference, TrainState

PyTree = Any


def image_inference(model, config: ml_collections.ConfigDict) -> Inference:
  """`Inference` of a model whose eval-mode outputs hold 'embedding' for uint8 images at
  config.input's size (the Baseline, PPLR's part network, ...)."""
  images = jnp.zeros((1, config.input.height, config.input.width, 3), jnp.uint8)

  def init(rng):
    return model.init(rng, images, train=False)

  def embed_fn(variables, images):
    return model.apply(variables, images, train=False)['embedding']

  return Inference(model=model, init=init, embed=embed_fn)


def log(msg: str) -> None:
  """A line on stdout from process 0 only."""
  if jax.process_index() == 0:
    print(msg, flush=True)


def optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int, abstract_params: PyTree
              ) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
  """config.optim's optimiser for these params, and its learning-rate schedule (with SWA's
  cyclic phase when enabled)."""
  total = int(config.train.epochs) * int(steps_per_epoch)
  schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch, total)
  schedule = optim.swa_learning_rate_schedule(config.optim, schedule, steps_per_epoch, total)
  tx = optim.build_optimizer(config.optim, schedule, abstract_params,
                             steps_per_epoch=steps_per_epoch)
  return tx, schedule


def abstract_params(inference: Inference) -> PyTree:
  """Shapes and dtypes of the model's params, without computing them."""
  return jax.eval_shape(inference.init, jax.random.key(0))['params']


def init_rng(config: ml_collections.ConfigDict) -> jax.Array:
  # The 'rbg' generator compiles the initialisers several times faster than threefry on CPU.
  return jax.random.key(config.seed, impl='rbg')


def initial_state(inference: Inference, tx: optax.GradientTransformation,
                  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                  extra: PyTree = None,
                  load_weights: Callable[[PyTree], PyTree] | None = None) -> TrainState:
  """The train state at step 0, replicated on the mesh.

  load_weights: `host variables -> variables` applied after initialisation (pretrained weights
    named by config.model.pretrained; see jreid.weights).
  """
  variables = jax.jit(inference.init)(init_rng(config))
  if load_weights is not None:
    variables = load_weights(jax.device_get(variables))

  def init(variables, extra):
    params = variables['params']
    return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                      extra=extra)

  extra = {} if extra is None else extra
  return jax.jit(init, out_shardings=parallel.replicated_sharding(mesh))(variables, extra)


def pretrained_loader(config: ml_collections.ConfigDict):
  """`variables -> variables` with the weights of config.model.pretrained (torchvision, timm or
  IBN-Net ImageNet ResNets, FastReID model-zoo checkpoints, PPLR's released weights:
  jreid.weights.load_pretrained) in the model's backbone, or in the whole model with
  config.model.pretrained_scope='all'; None when config.model.pretrained is empty."""
  path = config.model.get('pretrained', '')
  if not path:
    return None
  scope = config.model.get('pretrained_scope', 'backbone')

  def load(variables):
    from jreid import weights  # pylint: disable=g-import-not-at-top
    return weights.load_pretrained(variables, path, config.model, scope=scope, log=log)

  return load


# Keys of config.model added after checkpoints were written, with the value that behaves as
# before the key: left out of the fingerprint at that value, so those checkpoints still restore.
_LATER_MODEL_KEYS = ((('pretrained_scope',), 'backbone'), (('pooling', 'gem_eps_mode'), 'auto'),
                     (('two_stream', 'single_stream'), False))


def model_fingerprint(model_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """config.model as a checkpoint records it (and `jreid.FeatureExtractor` checks it)."""
  model = json.loads(model_config.to_json_best_effort())
  for path, default in _LATER_MODEL_KEYS:
    *parents, key = path
    node = model
    for parent in parents:
      node = node.get(parent) if isinstance(node, dict) else None
    if isinstance(node, dict) and key in node and node[key] == default:
      del node[key]
  return model


def fingerprint(config: ml_collections.ConfigDict, num_classes: int, **more) -> dict[str, Any]:
  """What a checkpoint must match to be restored into this run: the method, the model config,
  the classifier size, the dataset, SWA (its average is in the optimiser state), and `more`."""
  fp = {'method': config.method, 'model': model_fingerprint(config.model),
        'num_classes': int(num_classes), 'dataset': config.dataset.name}
  if optim.swa_enabled(config.optim):
    fp['swa'] = True
  fp.update(more)
  return json.loads(json.dumps(fp))


def sampler_batches(config: ml_collections.ConfigDict, split, sampler, start: int, stop: int
                    ) -> Iterator[dict[str, np.ndarray]]:
  """Augmented training batches of global steps start..stop-1 of `sampler` over `split`."""
  from data_pipelines import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.train_iterator(
      split, sampler, config.input, config.augment, seed=config.seed, start_step=start,
      num_steps=stop, process_index=jax.process_index(), process_count=jax.process_count(),
      num_parallel_calls=config.data.num_parallel_calls, prefetch=config.data.prefetch)


def pseudo_label_batches(config: ml_collections.ConfigDict, split, steps_per_epoch: int):
  """`(state, start, stop) -> batches` of the unsupervised methods: P x K batches over the pseudo
  labels in `state.extra.labels` (-1: not sampled), each cluster's images preferring other
  cameras (`data_pipelines.samplers.CameraAwareSampler`, rebuilt when the epoch or the labels
  change). The pipeline sees the split with the pseudo labels in place of its identities, so the
  true ones are never read for training. Batches carry 'image', 'index' and 'camid'."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from data_pipelines import samplers  # pylint: disable=g-import-not-at-top
  camids = np.asarray(split.camids, np.int32)
  cache = {}

  def batches(state: TrainState, start: int, stop: int):
    epoch = start // steps_per_epoch
    labels = np.asarray(jax.device_get(state.extra.labels))
    key = (epoch, labels.tobytes())
    if key not in cache:
      cache.clear()
      cache[key] = samplers.CameraAwareSampler(labels, camids, config.batch_size,
                                               config.sampler.num_instances, config.seed, epoch,
                                               steps_per_epoch)
    view = dataclasses.replace(split, labels=labels, pids=labels)
    for batch in sampler_batches(config, view, cache[key], start, stop):
      yield {'image': batch['image'], 'index': batch['index'], 'camid': camids[batch['index']]}

  return batches


def embedder(inference: Inference, mesh: jax.sharding.Mesh, flip: bool = False):
  """`(params, batch_stats, split, input_cfg, batch_size) -> outputs of every image of split`:
  the embedding path of `inference`, compiled once per flip setting."""
  fn = embed.make_embed_fn(inference.embed, mesh, flip=flip)

  def run(params, batch_stats, split, input_cfg, batch_size, progress=True):
    per_image = inference.per_image(split) if inference.per_image else None
    return embed.embed_split(fn, inference.variables(params, batch_stats), split, input_cfg,
                             batch_size, mesh, per_image=per_image, progress=progress)

  return run


def embedding_evaluation(inference: Inference, config: ml_collections.ConfigDict,
                         mesh: jax.sharding.Mesh, data: Data):
  """`Method.evaluate` of a method whose test features are embeddings compared by
  config.eval.metric (Market protocol; flip test, ROC, AQE and re-ranking from config.eval)."""
  run = embedder(inference, mesh, flip=bool(config.eval.flip))

  def evaluate(state: TrainState, splits=None, post: bool = True) -> evaluator.EvalOutput:
    splits = splits or data.splits
    query, gallery = splits['query'], splits['gallery']
    qf = run(state.params, state.batch_stats, query, config.input, config.eval.batch_size)
    gf = run(state.params, state.batch_stats, gallery, config.input, config.eval.batch_size)
    return evaluator.evaluate_embeddings(qf, gf, query, gallery, config.eval, post=post)

  return evaluate


def describe_options(config: ml_collections.ConfigDict) -> str:
  """'; SWA ...; layers frozen ...; compute dtype ...' for the shared options that are on."""
  parts = []
  if optim.swa_enabled(config.optim):
    parts.append(f'SWA from epoch {config.optim.swa.start_epoch}, averaged every '
                 f'{config.optim.swa.freq} steps, BatchNorm statistics recomputed')
  if config.optim.freeze_iters and config.optim.freeze_layers:
    parts.append(f'{", ".join(config.optim.freeze_layers)} frozen for the first '
                 f'{config.optim.freeze_iters} steps')
  if config.model.get('dtype', 'float32') != 'float32':
    parts.append(f'compute dtype {config.model.dtype}')
  return ''.join(f'; {p}' for p in parts)
