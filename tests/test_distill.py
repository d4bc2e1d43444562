"""Knowledge distillation: the KD losses against plain numpy, the teacher's inference-mode
outputs (from a FastReID checkpoint, against torch), and a tiny run that trains its teacher first,
distils, resumes exactly and evaluates."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny
from jreid import config_checks
from jreid import models
from jreid import train
from jreid.losses import distill as distill_losses
from jreid.methods import distill


# ----------------------------------------------------------------------------- numpy references


def _log_softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _kl(target, logits, t):
  """mean over rows of sum_c p log(p / q), p = softmax(target / t), q = softmax(logits / t)."""
  lp, lq = _log_softmax(target / t), _log_softmax(logits / t)
  return np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1))


def _pkt(student, teacher, eps=1e-7):
  """The PKT paper's loss, written with loops: p_{j|i} over j != i of the cosine kernel."""

  def conditional(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    p = np.zeros((n, n))
    for i in range(n):
      kernel = {j: (x[i] @ x[j] + 1) / 2 for j in range(n) if j != i}
      total = sum(kernel.values())
      for j, k in kernel.items():
        p[i, j] = k / total
    return p

  ps, pt = conditional(student.astype(np.float64)), conditional(teacher.astype(np.float64))
  n = len(student)
  return np.mean([sum(pt[i, j] * (np.log(pt[i, j] + eps) - np.log(ps[i, j] + eps))
                      for j in range(n) if j != i) for i in range(n)])


def test_logit_losses_equal_numpy():
  rng = np.random.default_rng(0)
  s = rng.normal(0, 3, (6, 11)).astype(np.float32)
  t = rng.normal(0, 3, (6, 11)).astype(np.float32)
  for temperature in (1.0, 4.0, 16.0):
    np.testing.assert_allclose(distill_losses.kd_logit_loss(s, t, 'kl', temperature),
                               temperature**2 * _kl(t, s, temperature), rtol=1e-5)
    np.testing.assert_allclose(
        distill_losses.kd_logit_loss(s, t, 'jsdiv', temperature),
        temperature**2 * (_kl(t, s, temperature) + _kl(s, t, temperature)) / 2, rtol=1e-5)
  np.testing.assert_allclose(distill_losses.kd_logit_loss(s, t, 'l1'), np.abs(s - t).mean(),
                             rtol=1e-6)
  assert float(distill_losses.kd_logit_loss(t, t, 'kl', 4.0)) == pytest.approx(0.0, abs=1e-6)
  # Only the student learns: no gradient reaches the teacher's logits.
  grad_s, grad_t = jax.grad(lambda a, b: distill_losses.kd_logit_loss(a, b, 'jsdiv', 16.0),
                            argnums=(0, 1))(s, t)
  assert np.abs(grad_s).max() > 0 and np.abs(grad_t).max() == 0
  with pytest.raises(ValueError, match="kd_logit.mode must be one of .*got 'kld'"):
    distill_losses.kd_logit_loss(s, t, 'kld')
  with pytest.raises(ValueError, match='the teacher must be trained on the same identities'):
    distill_losses.kd_logit_loss(s, t[:, :5], 'kl')


def test_pkt_equals_the_papers_formula_in_numpy():
  rng = np.random.default_rng(1)
  student = rng.normal(size=(7, 5)).astype(np.float32)
  teacher = rng.normal(size=(7, 12)).astype(np.float32)  # Another embedding size.
  np.testing.assert_allclose(distill_losses.pkt_loss(student, teacher), _pkt(student, teacher),
                             rtol=1e-4)
  # Only directions count: a student that is a scaled teacher has nothing left to learn.
  assert float(distill_losses.pkt_loss(3.0 * teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
  grad = jax.grad(distill_losses.pkt_loss, argnums=(0, 1))(student, teacher)
  assert np.abs(grad[0]).max() > 0 and np.abs(grad[1]).max() == 0


@pytest.mark.parametrize('cls_layer', ['linear', 'circle'])
def test_teacher_logits_are_its_classifier_on_the_eval_embedding(cls_layer):
  cfg = models.default_model_config()
  cfg.backbone.name, cfg.backbone.width = 'resnet18', 4
  cfg.head.cls_layer, cfg.head.cls_scale, cfg.head.cls_margin = cls_layer, 16.0, 0.25
  model = models.build_model(cfg, 5)
  images = np.random.default_rng(2).integers(0, 256, (3, 32, 16, 3), dtype=np.uint8)
  variables = model.init(jax.random.key(0), images, train=False)
  # BatchNorm statistics away from their initial values: eval mode must use them.
  variables = {'params': variables['params'], 'batch_stats': jax.tree.map(
      lambda x: x + 0.3, variables['batch_stats'])}
  labels = jnp.asarray([0, 3, 4])
  out = distill.teacher_outputs(model, cfg, variables, images, labels)
  emb = np.asarray(model.apply(variables, images, train=False)['embedding'])
  np.testing.assert_allclose(out['teacher_embedding'], emb, rtol=1e-6)
  w = np.asarray(variables['params']['head']['classifier']['kernel'])
  if cls_layer == 'linear':
    expected = emb @ w
  else:  # Margin-free: s cos (FastReID's pred_class_logits), whatever the labels.
    expected = 16.0 * (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (
        w / np.linalg.norm(w, axis=0, keepdims=True))
  np.testing.assert_allclose(out['teacher_logits'], expected, rtol=1e-4, atol=1e-5)


def test_teacher_from_a_fastreid_checkpoint_gives_fastreids_embedding_and_logits(tmp_path):
  torch = pytest.importorskip('torch')
  from test_weights import WIDTH, TBaseline, _images, _randomise, _torch_input  # pylint: disable=g-import-not-at-top
  net = _randomise(TBaseline(7, nl=(0, 2, 3, 0), ceil=True), 2)
  path = tmp_path / 'model_final.pth'
  torch.save({'model': net.state_dict(), 'iteration': 100}, path)
  config = tiny.config('distill', tmp_path)
  t = config.distill.teacher_model
  t.backbone.name, t.backbone.width, t.backbone.with_nl = 'resnet50', WIDTH, True
  t.backbone.stem_pool = 'fastreid'
  t.pooling.name, t.pooling.gem_learnable = 'gem', True
  config.input.height, config.input.width = 64, 32
  config.distill.teacher_weights = str(path)
  teacher = distill._teacher_from_weights(config, 7)  # pylint: disable=protected-access
  images = _images(3)
  out = distill.teacher_outputs(teacher.model, t, teacher.variables, images, jnp.zeros(2, int))
  with torch.no_grad():
    emb = net(_torch_input(images, t.pixel_mean, t.pixel_std))
    logits = emb @ net.heads.weight.T  # FastReID's linear classifier: F.linear(feat, weight).
  np.testing.assert_allclose(out['teacher_embedding'], emb.numpy(), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(out['teacher_logits'], logits.numpy(), atol=1e-4, rtol=1e-4)
  assert teacher.source['weights'] == str(path)


def test_config_errors_name_the_fix(tmp_path):
  config = tiny.config('distill', tmp_path)
  config.distill.teacher_workdir, config.distill.teacher_weights = '/a', '/b.pth'
  with pytest.raises(config_checks.ConfigError, match='are both set: give one teacher'):
    config_checks.check_config(config)
  config = tiny.config('distill', tmp_path)
  config.loss.kd_logit.mode = 'kld'
  with pytest.raises(config_checks.ConfigError, match='kd_logit.mode must be one of'):
    config_checks.check_config(config)
  # The student alone needs no teacher: its KD settings at their defaults, or it is refused.
  alone = tiny.config('distill', tmp_path, 'alone')
  assert 'kd_logit' not in alone.loss.names
  config_checks.check_config(alone)
  with pytest.raises(FileNotFoundError, match='has no config.json: pass the --workdir'):
    distill.load_teacher_run(tmp_path / 'nothing')


def _small(tmp_path):
  config = tiny.config('distill', tmp_path, epochs=2, steps=2)
  config.distill.teacher_model.backbone.width = 8
  config.model.backbone.width = 4
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 100
  config.eval.untrained = False
  config.eval.histogram_baseline = False
  config.eval.roc = False
  return config


def test_distill_trains_its_teacher_first_then_the_student_and_resumes_exactly(tmp_path):
  config = _small(tmp_path)
  config.train.checkpoint_every_steps = 1
  config.train.keep_checkpoints = 5
  straight = train.build_run(config, tmp_path / 'straight')  # Trains the teacher first.
  folder = tmp_path / 'straight' / 'teacher'
  assert (folder / 'metrics.json').exists() and (folder / 'report.md').exists()
  teacher_config = json.loads((folder / 'config.json').read_text())
  assert teacher_config['method'] == 'supervised'
  assert teacher_config['model']['backbone']['width'] == 8
  assert teacher_config['loss']['names'] == ['cross_entropy', 'triplet']
  # The teacher in the state is the teacher run's last checkpoint, unchanged by training.
  _, meta, step, variables = distill.load_teacher_run(folder)
  assert step == 4 and meta['method'] == 'supervised'
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight.method.state.extra.teacher),
               variables)
  a = jax.device_get(train.train(straight, straight.method.state, 0))
  straight.checkpointer.close()
  jax.tree.map(np.testing.assert_array_equal, a.extra.teacher, variables)
  logged = [json.loads(line) for line in (tmp_path / 'straight' / 'metrics.jsonl').open()]
  assert all(m['loss_kd_logit'] > 0 and m['loss_kd_pkt'] > 0 for m in logged)

  # The same teacher given as a workdir, resumed from the straight run's checkpoint of step 3:
  # the same end (the teacher comes back from the checkpoint, the student's state exactly).
  config.distill.teacher_workdir = str(folder)
  resumed = tmp_path / 'resumed'
  shutil.copytree(tmp_path / 'straight', resumed, ignore=shutil.ignore_patterns('teacher'))
  shutil.rmtree(resumed / 'checkpoints' / '4')
  (resumed / 'metrics.json').unlink(missing_ok=True)
  run = train.build_run(config, resumed, write_config=False)
  assert run.method.fingerprint['teacher']['workdir'] == str(folder)
  restored = run.checkpointer.restore(run.method.state)
  assert int(restored.step) == 3
  run.step_fn = straight.step_fn  # The same config's compiled step (saves a compilation).
  b = jax.device_get(train.train(run, restored, 3))
  run.checkpointer.close()
  for x, y in ((a.params, b.params), (a.batch_stats, b.batch_stats), (a.opt_state, b.opt_state),
               (a.extra, b.extra)):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), x, y)

  # A teacher of another image size is refused, naming both sizes.
  config.input.height = 48
  with pytest.raises(ValueError, match='trained on 32x16 images and the student on 48x16'):
    distill.load_teacher(config, run.data, run.mesh, resumed)
