"""QAConv-GS through the shared train loop: the adaptive schedule, pretrained trunks, options (its
end-to-end run, resume and --mode=eval: tests/test_methods.py)."""

import jax
import numpy as np
import pytest

from configs import qaconv as qaconv_config
from jreid import train
from jreid.methods import qaconv as qaconv_method


def tiny_config(tmp_path, epochs=2, frozen_bn=True):
  config = qaconv_config.get_config()
  config.model.qaconv.frozen_bn = frozen_bn
  config.dataset.cache_dir = str(tmp_path / 'cache')
  config.dataset.synth.num_train_ids = 12
  config.dataset.synth.num_test_ids = 10
  config.dataset.synth.num_distractors = 8
  config.dataset.synth.num_junk = 4
  config.model.backbone.width = 8
  config.input.height, config.input.width = 64, 32  # 4 x 2 matching locations.
  config.augment.pad = 2
  config.batch_size = 8  # 4 classes x 2 images.
  config.train.epochs = epochs
  config.train.log_every_steps = 5
  config.train.checkpoint_every_steps = 7
  config.eval.batch_size = 16
  config.eval.rank_list_queries = 2
  return config


def test_adaptive_schedule():
  def after(finished, loss, base_loss=np.nan, lr_scale=1.0, end_epoch=0):
    return qaconv_method.adaptive_schedule(finished, loss, base_loss, lr_scale, end_epoch,
                                           decay_ratio=0.7, decay_factor=0.1, max_epochs=60)

  # Epoch 1: nothing is decided.
  base, scale, end = after(1, 10.0)
  assert np.isnan(base) and (scale, end) == (1.0, 0)
  # Epoch 2 sets the base loss.
  assert after(2, 8.0) == (8.0, 1.0, 0)
  # Epoch 5: 5.7 >= 0.7 x 8 = 5.6: no decay yet.
  assert after(5, 5.7, base_loss=8.0) == (8.0, 1.0, 0)
  # Epoch 9: 5.5 < 5.6: lr x0.1, the run ends after epoch 9 + 9 // 2 = 13.
  base, scale, end = after(9, 5.5, base_loss=8.0)
  assert np.isclose(scale, 0.1) and end == 13
  # Decided once: a later, lower loss changes nothing.
  assert after(11, 1.0, base_loss=8.0, lr_scale=0.1, end_epoch=13)[1:] == (0.1, 13)
  # Never beyond config.train.epochs (min(60, e + e // 2)).
  assert after(45, 5.0, base_loss=8.0)[2] == 60


def test_the_adaptive_schedule_ends_the_run_and_scales_the_step(tmp_path):
  """num_epochs follows the decided end epoch, and the decay scales the logged learning rate."""
  config = tiny_config(tmp_path, epochs=60)
  run = train.build_run(config, tmp_path / 'a')
  state = run.method.state
  assert run.num_epochs(state) == 60
  decided = state.replace(extra=state.extra.replace(end_epoch=np.int32(13),
                                                    lr_scale=np.float32(0.1)))
  assert run.num_epochs(decided) == 13 and run.total_steps(decided) == 13 * 12
  run.checkpointer.close()


def _torch_names(tree, prefix=''):
  """jreid ResNet variables -> a torchvision-named state dict (the inverse of jreid.weights)."""
  out = {}
  for key, value in tree.items():
    name = {'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}.get(key, key)
    name = name.replace('_', '.', 1) if name.startswith('layer') else name
    path = f'{prefix}.{name}' if prefix else name
    if isinstance(value, dict):
      out.update(_torch_names(value, path))
    else:
      base, leaf = path.rsplit('.', 1)
      value = np.asarray(value)
      if leaf == 'kernel':
        out[f'{base}.weight'] = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
      else:
        out[f'{base}.' + {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
                          'var': 'running_var'}[leaf]] = value
  return out


def test_pretrained_trunk_weights_reach_the_train_state(tmp_path):
  """config.model.pretrained: a ResNet file (with a layer4 the trunk has not) initialises it."""
  config = tiny_config(tmp_path, epochs=1)
  run = train.build_run(config, tmp_path / 'a')
  state = run.method.state
  net = jax.device_get({'params': state.params['net']['backbone'],
                        'batch_stats': state.batch_stats['net']['backbone']})
  rng = np.random.default_rng(0)
  changed = jax.tree.map(lambda x: (x + rng.normal(0, 0.1, x.shape)).astype(x.dtype), net)
  state_dict = {**_torch_names(changed['params']), **_torch_names(changed['batch_stats'])}
  state_dict['layer4.0.conv1.weight'] = np.zeros((8, 8, 3, 3), np.float32)  # Not in the trunk.
  np.savez(tmp_path / 'r18.npz', **state_dict)
  run.checkpointer.close()

  config.model.pretrained = str(tmp_path / 'r18.npz')
  loaded = train.build_run(config, tmp_path / 'b')
  jax.tree.map(np.testing.assert_array_equal, changed['params'],
               jax.device_get(loaded.method.state.params['net']['backbone']))
  jax.tree.map(np.testing.assert_array_equal, changed['batch_stats'],
               jax.device_get(loaded.method.state.batch_stats['net']['backbone']))
  loaded.checkpointer.close()


def test_evaluation_options_without_meaning_for_pairwise_scores_are_refused(tmp_path):
  from jreid import config_checks  # pylint: disable=g-import-not-at-top
  for key, value, match in (('aqe', True, 'eval.aqe=True is not supported by QAConv'),
                            ('metric', 'euclidean', "eval.metric='euclidean' is not read"),
                            ('rerank', False, 'qaconv.tlift=True lifts the re-ranked')):
    config = tiny_config(tmp_path)
    config.eval[key] = value
    with pytest.raises(config_checks.ConfigError, match=match):
      config_checks.check_config(config)
