"""QAConv 1.x from the config (`configs/qaconv.py:v1`): the class-memory loss, shuffled batches,
the memory in the checkpoint, and the layout of every other QAConv run unchanged."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

import tiny
from jreid import train
from jreid.methods import qaconv as qaconv_method


def _config(tmp_path, variant='v1', epochs=3):
  config = tiny.config('qaconv', tmp_path, variant, epochs=epochs, steps=0)
  config.dataset.synth.num_train_ids = 8  # About 120 images: 7 batches of 16 an epoch.
  config.input.height = 64  # 4 x 1 matching locations.
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 100
  config.eval.untrained = False
  config.eval.histogram_baseline = False
  config.eval.rerank = False
  config.qaconv.tlift = False
  config.optim.milestones = (100,)  # The learning rate stays at 0.05 in this short run.
  return config


def test_shuffle_sampler_is_a_pure_function_of_seed_and_epoch():
  sampler = qaconv_method.ShuffleSampler(50, 8, seed=3)
  assert sampler.batches_per_epoch == 6  # The last 2 images of every epoch are dropped.
  epoch0 = sampler.epoch(0)
  assert epoch0.shape == (6, 8) and len(np.unique(epoch0)) == 48 and epoch0.max() < 50
  assert not np.array_equal(epoch0, sampler.epoch(1))
  np.testing.assert_array_equal(epoch0, qaconv_method.ShuffleSampler(50, 8, seed=3).epoch(0))
  # Global steps 4..8 straddle the epoch boundary: batches 4, 5 of epoch 0 and 0, 1 of epoch 1.
  np.testing.assert_array_equal(sampler.steps(4, 8),
                                np.concatenate([epoch0[4:], sampler.epoch(1)[:2]]))
  with pytest.raises(ValueError, match='fewer than one batch of config.batch_size=64'):
    qaconv_method.ShuffleSampler(50, 64, seed=0)


def test_class_memory_training_lowers_the_loss_and_resumes_exactly(tmp_path):
  config = _config(tmp_path)
  assert config.loss.names == ('qaconv_class_memory',) and config.qaconv.sampler == 'random'
  straight = train.build_run(config, tmp_path / 'straight')
  method = straight.method
  spe = method.steps_per_epoch
  assert spe == len(straight.data.train) // config.batch_size
  memory = method.state.batch_stats['class_memory']
  num_classes = straight.data.num_classes
  assert memory['memory'].shape == (num_classes, 4, config.model.qaconv.neck)
  assert not np.asarray(memory['valid']).any()

  # The first step: the loss sees an empty memory (every class invalid: loss 0), then the batch's
  # maps (train mode, the step's starting weights) are written into their classes' slots.
  s0 = method.state
  batch = next(iter(method.batches(s0, 0, 1)))
  host0 = jax.device_get(s0)  # The step donates s0.
  s1, metrics = straight.train_step(s0, batch)
  assert float(metrics['loss']) == 0.0
  images = jax.numpy.asarray(batch['image'])
  net = method.inference.model
  s0_maps, _ = net.apply({'params': host0.params['net'], 'batch_stats': host0.batch_stats['net']},
                         images, train=True, mutable=['batch_stats'])
  s0_maps = np.asarray(s0_maps['feature_map']).reshape(len(images), -1, config.model.qaconv.neck)
  held = jax.device_get(s1.batch_stats['class_memory'])
  labels = np.asarray(batch['label'])
  np.testing.assert_array_equal(held['valid'], np.isin(np.arange(num_classes), labels))
  for label in np.unique(labels):
    rows = s0_maps[labels == label]
    # One of the class's maps of the batch is kept (as the reference's indexed assignment).
    assert min(np.abs(held['memory'][label] - r).max() for r in rows) < 1e-5

  a = jax.device_get(train.train(straight, s1, 1))
  straight.checkpointer.close()
  assert int(a.step) == 3 * spe
  assert np.asarray(a.batch_stats['class_memory']['valid']).all()
  losses = [json.loads(line) for line in (tmp_path / 'straight' / 'metrics.jsonl').open()]
  epoch = lambda e: np.mean([m['loss'] for m in losses if e * spe < m['step'] <= (e + 1) * spe])
  assert epoch(2) < 0.8 * epoch(1), [epoch(e) for e in range(3)]

  # Stopped inside epoch 2 and resumed from its checkpoint: the memory, the matcher statistics
  # and the weights end as in the uninterrupted run.
  run = train.build_run(config, tmp_path / 'resumed')
  tiny.interrupt_at(run, spe + 2)
  with pytest.raises(train.Preempted):
    train.train(run, run.method.state, 0)
  run.checkpointer.close()
  run = train.build_run(config, tmp_path / 'resumed')
  restored = run.checkpointer.restore(run.method.state)
  assert int(restored.step) == spe + 2
  b = jax.device_get(train.train(run, restored, spe + 2))
  run.checkpointer.close()
  for x, y in ((a.params, b.params), (a.batch_stats, b.batch_stats), (a.extra, b.extra)):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), x, y)


def test_qaconv_2_runs_keep_their_checkpoint_layout(tmp_path):
  """Runs without the class memory hold what they held before it existed, so their checkpoints
  restore: the same QAConvState fields and no memory in batch_stats."""
  names = [f.name for f in dataclasses.fields(qaconv_method.QAConvState)]
  assert names == ['lr_scale', 'end_epoch', 'base_loss', 'loss_sum', 'loss_count', 'gs_epoch',
                   'gs_positions', 'gs_batches']
  config = _config(tmp_path, variant=None, epochs=1)
  run = train.build_run(config, tmp_path / 'run')
  run.checkpointer.close()
  assert sorted(run.method.state.batch_stats) == ['matcher', 'net']
  assert 'class_memory' not in run.method.fingerprint and 'sampler' not in run.method.fingerprint
  # A v1 checkpoint has another layout: its fingerprint says so before orbax would fail.
  v1 = train.build_run(_config(tmp_path), tmp_path / 'run_v1')
  v1.checkpointer.close()
  assert v1.method.fingerprint['class_memory'] is True
  assert v1.method.fingerprint['sampler'] == 'random'
