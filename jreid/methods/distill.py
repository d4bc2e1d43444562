"""Knowledge distillation: a small student learns from a trained teacher (config.method='distill').

FastReID's distillation (He et al., "FastReID: A Pytorch Toolbox for General Instance
Re-identification", distillation section; projects/FastDistill): the student (a Baseline of
`config.model`, e.g. ResNet-18/34 or OSNet) is trained as the supervised method trains it (the
terms of `config.loss`, P x K batches of `config.sampler`), plus two terms on what the teacher
makes of the same augmented images:

  'kd_logit'  the student's identity logits against the teacher's (mode 'kl' with temperature,
              FastDistill's 'jsdiv', or 'l1': jreid.losses.distill);
  'kd_pkt'    probabilistic knowledge transfer of the teacher's embedding similarities.

The logits are the margin-free ones (FastReID's `pred_class_logits`: x W for the linear
classifier, s cos for the margin layers); the teacher's come from its eval-mode embedding and its
classifier weights, so the teacher runs wholly in inference mode (BatchNorm running statistics,
no dropout), inside the same jitted train step as the student.

The teacher (`config.distill`), one of:

* `teacher_workdir`: a finished jreid run (its config.json and latest checkpoint), rebuilt with
  its own method's inference (`jreid.method.inference`) and restored (params and BatchNorm
  statistics only);
* `teacher_weights`: a FastReID model-zoo checkpoint, loaded whole (`jreid.weights.load_pretrained`
  with scope 'all') into a Baseline of `teacher_model`;
* neither: the teacher is trained first, with this run's recipe (optimiser, schedule, data,
  sampler and the student's own loss terms) and `teacher_model` as the network, into
  `<workdir>/teacher` (a normal supervised run: resumable, with its own report); FastDistill
  trains its teacher with the student's SBS recipe in the same way.

Where the teacher's weights live: in the method's typed state (`DistillState.teacher`), an input
of the jitted step like the student's own weights. Closed over instead, they would become
constants embedded in the compiled program (hundreds of MB for a ResNet-101 teacher, compiled into
the executable). The price is the checkpoint: each one holds the teacher too (about its weight
file's size); the step donates the state and returns the teacher unchanged, so no copy is made
per step. The fingerprint names the teacher, so a run is never resumed with another one.

Sections owned: `loss`, `sampler`, `dsr` (as the supervised method), `distill`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from jreid import models
from jreid import objectives
from jreid import parallel
from jreid import parts
from jreid.losses import distill as distill_losses
from jreid.method import Data, Inference, Method, TrainState
from jreid.methods import supervised
from jreid.models.classifiers import Classifier

KD_TERMS = ('kd_logit', 'kd_pkt')


@objectives.register('kd_logit', mode='kl', temperature=4.0)
def _kd_logit(inputs, labels, cfg):
  """The student's margin-free logits against the teacher's (jreid.losses.distill)."""
  del labels
  student = inputs.get('pred_class_logits', inputs['logits'])
  return distill_losses.kd_logit_loss(student, inputs['teacher_logits'], cfg.mode,
                                      cfg.temperature)


@objectives.register('kd_pkt')
def _kd_pkt(inputs, labels, cfg):
  """PKT of the student's (post-neck) embedding against the teacher's."""
  del labels, cfg  # Only its weight, applied by compute_losses.
  return distill_losses.pkt_loss(inputs['embedding'], inputs['teacher_embedding'])


def default_config() -> ml_collections.ConfigDict:
  """The sections this method owns: the supervised method's, the KD terms, the teacher."""
  c = supervised.default_config()
  c.method = 'distill'
  c.loss = objectives.loss_config(('cross_entropy', 'triplet', 'kd_logit', 'kd_pkt'), 'focal',
                                  'circle', 'cosface')
  d = c.distill = ml_collections.ConfigDict()
  d.teacher_workdir = ''  # A finished jreid run to distil from.
  d.teacher_weights = ''  # Or a FastReID model-zoo checkpoint of a Baseline of teacher_model.
  # The teacher's network: for teacher_weights, and for the teacher trained first when neither
  # is given (a teacher_workdir's own config.json says what its network is).
  d.teacher_model = models.default_model_config()
  return c


def check_config(config: ml_collections.ConfigDict) -> None:
  supervised.check_config(config)
  d = config.distill
  if d.teacher_workdir and d.teacher_weights:
    raise ValueError('config.distill.teacher_workdir and config.distill.teacher_weights are both '
                     'set: give one teacher (a jreid run or a FastReID checkpoint).')
  if d.teacher_model.name != 'baseline':
    raise ValueError(f"config.distill.teacher_model.name must be 'baseline' (FastReID's Baseline "
                     f'with a classifier), got {d.teacher_model.name!r}.')
  if config.model.name != 'baseline':
    raise ValueError(f"config.method='distill' trains a Baseline student (config.model.name="
                     f"'baseline'), got {config.model.name!r}.")
  if 'kd_logit' in config.loss.names:
    mode = config.loss.kd_logit.mode
    if mode not in distill_losses.LOGIT_MODES:
      raise ValueError(f'config.loss.kd_logit.mode must be one of {distill_losses.LOGIT_MODES}, '
                       f'got {mode!r}.')


@flax.struct.dataclass
class DistillState:
  """The teacher's variables ({'params', 'batch_stats'}), constant through training."""
  teacher: Any


def inference(config: ml_collections.ConfigDict, num_classes: int) -> Inference:
  """The student: a Baseline of config.model (the embedding is what is tested and exported)."""
  return supervised.inference(config, num_classes)


# ----------------------------------------------------------------------------- the teacher


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A teacher network in inference mode.

  Attributes:
    model: the Baseline (flax module).
    model_cfg: its `model` config section (the classifier layer of its logits).
    variables: host {'params', 'batch_stats'}.
    source: what it is, for the fingerprint and the report (JSON-able).
  """
  model: Any
  model_cfg: Any
  variables: Any
  source: dict[str, Any]


def teacher_outputs(teacher_model, model_cfg: ml_collections.ConfigDict, variables,
                    images: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """The teacher's eval-mode embedding [B, D] and margin-free logits [B, C] (no gradient).

  The logits are its classifier applied to the eval embedding: the feature the classifier reads
  in training (post-neck), here with the BatchNorm running statistics.
  """
  embedding = teacher_model.apply(variables, images, train=False)['embedding']
  head = model_cfg.head
  kernel = variables['params']['head']['classifier']['kernel']
  classifier = Classifier(kernel.shape[-1], str(head.get('cls_layer', 'linear')),
                          float(head.get('cls_scale', 1.0)), float(head.get('cls_margin', 0.0)))
  out = classifier.apply({'params': {'kernel': kernel}}, embedding, labels)
  logits = out.get('pred_class_logits', out['logits'])
  return {'teacher_embedding': jax.lax.stop_gradient(embedding),
          'teacher_logits': jax.lax.stop_gradient(logits)}


def _teacher_from_weights(config: ml_collections.ConfigDict, num_classes: int) -> Teacher:
  from jreid import weights  # pylint: disable=g-import-not-at-top
  model_cfg = config.distill.teacher_model
  model = models.build_model(model_cfg, num_classes)
  images = jnp.zeros((1, config.input.height, config.input.width, 3), jnp.uint8)
  variables = jax.device_get(jax.jit(lambda rng: model.init(rng, images, train=False))(
      parts.init_rng(config)))
  path = config.distill.teacher_weights
  variables = weights.load_pretrained(variables, path, model_cfg, scope='all')
  variables = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  return Teacher(model, model_cfg, variables,
                 {'weights': str(pathlib.Path(path).expanduser().absolute()),
                  'model': json.loads(model_cfg.to_json_best_effort())})


def load_teacher_run(workdir: str | pathlib.Path, mesh: jax.sharding.Mesh | None = None
                     ) -> tuple[ml_collections.ConfigDict, dict[str, Any], int, Any]:
  """(config, fingerprint, step, {'params', 'batch_stats'} on host) of a jreid run's latest
  checkpoint, restored with the run's own method inference.

  Raises:
    FileNotFoundError: the folder is not a jreid run with a checkpoint (the message says which).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from jreid import checkpoint  # pylint: disable=g-import-not-at-top
  from jreid import method as method_lib  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir).expanduser().absolute()
  config_path = workdir / 'config.json'
  if not config_path.is_file():
    raise FileNotFoundError(f'config.distill.teacher_workdir={str(workdir)!r} has no config.json: '
                            'pass the --workdir of a trained jreid run.')
  steps = checkpoint.complete_steps(workdir / 'checkpoints')
  if not steps:
    raise FileNotFoundError(f'config.distill.teacher_workdir={str(workdir)!r} has no complete '
                            'checkpoint in checkpoints/: train that run first.')
  teacher_config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  path = workdir / 'checkpoints' / str(steps[-1])
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  meta = checkpointer.restore(path, ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  inf = method_lib.inference(teacher_config, int(meta['num_classes']))
  abstract = jax.eval_shape(inf.init, jax.random.key(0))
  sharding = (parallel.replicated_sharding(mesh) if mesh is not None
              else jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  target = {'params': abstract['params'], 'batch_stats': abstract.get('batch_stats', {})}
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        target)
  # Only params and BatchNorm statistics: not the optimiser state nor the method's own state.
  restored = checkpointer.restore(path, ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True)))['state']
  checkpointer.close()
  return teacher_config, meta, steps[-1], jax.device_get(restored)


def _teacher_from_run(workdir: pathlib.Path, mesh: jax.sharding.Mesh) -> Teacher:
  teacher_config, meta, step, variables = load_teacher_run(workdir, mesh)
  model_cfg = teacher_config.model
  if teacher_config.method not in ('supervised', 'distill') or model_cfg.name != 'baseline':
    raise ValueError(f'config.distill.teacher_workdir={str(workdir)!r} holds a '
                     f'{teacher_config.method!r} run of a {model_cfg.name!r} model; a teacher is a '
                     "Baseline with a classifier (a 'supervised' or 'distill' run).")
  model = models.build_model(model_cfg, int(meta['num_classes']))
  source = {'workdir': str(workdir), 'step': int(step), 'dataset': meta.get('dataset'),
            'model': json.loads(model_cfg.to_json_best_effort()),
            'input': [int(teacher_config.input.height), int(teacher_config.input.width)]}
  return Teacher(model, model_cfg, variables, source)


def teacher_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The supervised run that trains the teacher: this config's recipe with the teacher's network
  (`config.distill.teacher_model`) and the loss terms other than the KD ones."""
  from jreid import config_defaults  # pylint: disable=g-import-not-at-top
  t = config_defaults.method_config('supervised')
  for key, value in config.items():
    if key in ('method', 'distill', 'loss'):
      continue
    t[key] = copy.deepcopy(value)
  t.model = copy.deepcopy(config.distill.teacher_model)
  t.loss.names = tuple(n for n in config.loss.names if n not in KD_TERMS)
  for name in t.loss.keys():
    if name != 'names' and name in config.loss:
      t.loss[name] = copy.deepcopy(config.loss[name])
  return t


def _trained_teacher(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                     mesh: jax.sharding.Mesh) -> Teacher:
  """The teacher trained first into `<workdir>/teacher` (resumed if it was interrupted; a
  finished one is reused)."""
  from jreid import train  # pylint: disable=g-import-not-at-top
  folder = workdir / 'teacher'
  t = teacher_config(config)
  if not (folder / 'metrics.json').exists():
    parts.log(f'distill: no teacher given (config.distill.teacher_workdir / teacher_weights): '
              f'training one first into {folder} ({t.model.backbone.name}, the run\'s recipe)')
  train.train_and_evaluate(t, str(folder))
  return _teacher_from_run(folder, mesh)


def load_teacher(config: ml_collections.ConfigDict, data: Data, mesh: jax.sharding.Mesh,
                 workdir: pathlib.Path) -> Teacher:
  """The teacher of config.distill (module docstring), checked against the student's data."""
  d = config.distill
  if d.teacher_weights:
    teacher = _teacher_from_weights(config, data.num_classes)
  elif d.teacher_workdir:
    teacher = _teacher_from_run(pathlib.Path(d.teacher_workdir), mesh)
  else:
    teacher = _trained_teacher(config, workdir, mesh)
  classes = int(teacher.variables['params']['head']['classifier']['kernel'].shape[-1])
  if 'kd_logit' in config.loss.names and classes != data.num_classes:
    raise ValueError(f'the teacher classifies {classes} identities and the student trains on '
                     f'{data.num_classes} ({config.dataset.name}): logit distillation needs the '
                     'same identities; use a teacher trained on this dataset, or leave kd_logit '
                     'out of config.loss.names.')
  size = (teacher.source or {}).get('input')
  if size and list(size) != [config.input.height, config.input.width]:
    raise ValueError(f'the teacher run was trained on {size[0]}x{size[1]} images and the student '
                     f'on {config.input.height}x{config.input.width}: both see the same images; '
                     'set config.input.height/width to the teacher\'s.')
  return teacher


# ----------------------------------------------------------------------------- the method


def build(config: ml_collections.ConfigDict, data: Data, mesh: jax.sharding.Mesh,
          workdir: pathlib.Path) -> Method:
  uses_teacher = any(n in KD_TERMS for n in config.loss.names)
  if not uses_teacher:  # The student trained alone: the baseline of the KD runs.
    method = supervised.build(config, data, mesh, workdir)
    return dataclasses.replace(method, name='distill', describe='Student trained alone (no KD '
                               'term in config.loss.names): ' + method.describe)
  teacher = load_teacher(config, data, mesh, workdir)
  inf = inference(config, data.num_classes)
  sampler = supervised.build_sampler(config, data.train)
  steps = sampler.batches_per_epoch
  tx, schedule = parts.optimizer(config, steps, parts.abstract_params(inf))
  state = parts.initial_state(inf, tx, config, mesh, extra=DistillState(teacher.variables),
                              load_weights=parts.pretrained_loader(config))
  student_objective = supervised.objective_fn(config)
  t_model, t_cfg = teacher.model, teacher.model_cfg

  def objective(outputs, batch, state: TrainState):
    t_out = teacher_outputs(t_model, t_cfg, state.extra.teacher, batch['image'], batch['label'])
    loss, metrics, extra = student_objective({**outputs, **t_out}, batch, state)
    metrics['teacher_accuracy'] = jnp.mean(
        jnp.argmax(t_out['teacher_logits'], -1) == batch['label'])
    return loss, metrics, extra

  m, tm = config.model, t_cfg
  source = teacher.source or {}
  where = (f'the run in {source["workdir"]} (step {source["step"]})' if 'workdir' in source
           else f'the weights {source.get("weights")}')
  kd = [n for n in config.loss.names if n in KD_TERMS]
  kd_text = ', '.join(
      f'{n} ({config.loss[n].mode}, T={config.loss[n].temperature:g})' if n == 'kd_logit'
      else n for n in kd) or 'none'
  describe = (f'Distillation: student backbone `{m.backbone.name}` (width {m.backbone.width}), '
              f'pooling `{m.pooling.name}`, head `{m.head.name}`; teacher `{tm.backbone.name}` '
              f'(width {tm.backbone.width}) from {where}, in inference mode; losses '
              f'{", ".join(n for n in config.loss.names if n not in KD_TERMS)} + KD {kd_text}; '
              f'{config.train.epochs * steps} steps ({config.train.epochs} epochs x {steps}), batch '
              f'{config.batch_size}, input {config.input.height}x{config.input.width}'
              f'{parts.describe_options(config)}.')

  def report_sections(state, output, out_dir):
    del state, output
    metrics_path = pathlib.Path(source['workdir']) / 'metrics.json' if 'workdir' in source else None
    if metrics_path is None or not metrics_path.exists():
      return []
    results = json.loads(metrics_path.read_text())
    rows = '\n'.join(f'| {k} | {100 * results[k]:.2f} |' for k in ('rank1', 'mAP', 'mINP')
                     if k in results)
    return [('Teacher', f'The teacher ({tm.backbone.name}, {source["workdir"]}) on its own test '
             f'set:\n\n| metric | % |\n|:--|--:|\n{rows}', None)]

  return Method(
      name='distill', inference=inf, state=state, tx=tx, schedule=schedule,
      forward=supervised.forward_fn(inf.model), objective=objective, steps_per_epoch=steps,
      batches=lambda state, start, stop: parts.sampler_batches(config, data.train, sampler,
                                                               start, stop),
      evaluate=supervised.evaluation(inf, config, mesh, data),
      fingerprint=parts.fingerprint(config, data.num_classes, teacher=source),
      describe=describe, report_sections=report_sections)
