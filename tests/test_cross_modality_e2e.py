"""End to end: `train.train_and_evaluate` on the default variants of configs/agw_sysu.py and
configs/cmgr_sysu.py (SynthReID-IR, the SYSU protocol), shrunk to a few steps on tiny images.

Checks what a run leaves in its workdir: the headline infrared -> visible metrics and the
reverse (visible -> infrared) rows in metrics.json and metrics.jsonl's training rows, and a
report with the rank lists of both directions.
"""

import importlib.util
import json
import os

import numpy as np
import pytest

from jreid import train


def _config(name: str):
  path = os.path.join(os.path.dirname(__file__), '..', 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  """One tiny SynthReID-IR for both runs."""
  return tmp_path_factory.mktemp('cache')


def tiny(config, cache):
  config.dataset.cache_dir = str(cache)
  synth = config.dataset.synth
  synth.num_train_ids, synth.num_test_ids = 8, 6
  synth.min_images_per_id, synth.max_images_per_id = 8, 10
  synth.height, synth.width = 64, 32
  config.model.backbone.width = 8
  config.model.backbone.nl_layers = (0, 1, 1, 0)  # Fewer non-local blocks: a shorter compile.
  config.input.height, config.input.width = 32, 16
  config.augment.pad = 2
  cm = config.cross_modality
  cm.num_ids, cm.num_visible, cm.num_infrared = 4, 2, 2
  cm.num_trials = 2
  config.batch_size = 16
  config.train.epochs = 1
  config.train.steps_per_epoch = 2
  config.train.log_every_steps = 2
  config.train.checkpoint_every_steps = 100
  config.optim.milestones = (1,)
  config.eval.batch_size = 32
  config.eval.rank_list_queries = 2
  config.eval.untrained = False
  return config


def torchvision_resnet18_state(width: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Random weights under torchvision's ResNet-18 names and shapes (with its `fc`)."""
  rng = np.random.default_rng(seed)
  out = {}

  def conv(name, cout, cin, k):
    out[f'{name}.weight'] = rng.normal(0, 0.1, (cout, cin, k, k)).astype(np.float32)

  def bn(name, c):
    out[f'{name}.weight'] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    out[f'{name}.bias'] = rng.normal(0, 0.1, c).astype(np.float32)
    out[f'{name}.running_mean'] = rng.normal(0, 0.1, c).astype(np.float32)
    out[f'{name}.running_var'] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    out[f'{name}.num_batches_tracked'] = np.zeros((), np.int64)

  conv('conv1', width, 3, 7)
  bn('bn1', width)
  cin = width
  for i in range(4):
    c = width * 2**i
    for j in range(2):
      block = f'layer{i + 1}.{j}'
      conv(f'{block}.conv1', c, cin if j == 0 else c, 3)
      bn(f'{block}.bn1', c)
      conv(f'{block}.conv2', c, c, 3)
      bn(f'{block}.bn2', c)
      if j == 0 and cin != c:
        conv(f'{block}.downsample.0', c, cin, 1)
        bn(f'{block}.downsample.1', c)
    cin = c
  out['fc.weight'] = rng.normal(0, 0.1, (1000, cin)).astype(np.float32)
  out['fc.bias'] = np.zeros(1000, np.float32)
  return out


# Each run takes about 20 s of a 2-core CPU (mostly XLA compiles); the suite runs AGW, and the
# graph-reasoning model with JREID_SLOW_TESTS=1.
SLOW = pytest.mark.skipif(not os.environ.get('JREID_SLOW_TESTS'),
                          reason='set JREID_SLOW_TESTS=1 to run (about 20 s)')


@pytest.mark.parametrize('name', ['agw_sysu', pytest.param('cmgr_sysu', marks=SLOW)])
def test_default_variant_trains_and_reports_both_directions(name, tmp_path, cache_dir, capsys):
  config = tiny(_config(name), cache_dir)
  if name == 'agw_sysu':  # ImageNet-style weights into both stems (jreid.methods.cross_modality)
    np.savez(tmp_path / 'r18.npz', **torchvision_resnet18_state(config.model.backbone.width))
    config.model.pretrained = str(tmp_path / 'r18.npz')
  workdir = tmp_path / 'run'
  results = train.train_and_evaluate(config, str(workdir))
  assert results['steps'] == 2
  if name == 'agw_sysu':
    assert 'left as initialised: backbone/NL_2_0, backbone/NL_3_0, head' in (
        capsys.readouterr().out)

  # metrics.json: infrared -> visible (headline: all-search single-shot over 2 trials; then
  # indoor and multi-shot rows) and visible -> infrared on the full test sets.
  saved = json.loads((workdir / 'metrics.json').read_text())
  assert saved == pytest.approx(results)
  for key in ('rank1', 'rank5', 'mAP', 'mINP', 'indoor_single_rank1',
              'all_multi10_mAP', 'indoor_multi10_mINP', 'visible_to_infrared_rank1',
              'visible_to_infrared_mAP', 'visible_to_infrared_mINP'):
    assert 0.0 <= saved[key] <= 1.0, key
  assert saved['rank1'] <= saved['rank5'] and saved['num_valid_queries'] > 0
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  train_rows = [r for r in rows if 'loss' in r]
  assert [r['step'] for r in train_rows] == [2]
  assert np.isfinite(train_rows[0]['loss']) and 'loss_cross_entropy' in train_rows[0]
  assert ('loss_wrt' if name == 'agw_sysu' else 'loss_triplet') in train_rows[0]

  # The report: both directions' metrics and rank lists.
  report = (workdir / 'report.md').read_text()
  table = report.split('## Both directions\n', 1)[1].split('\n## ', 1)[0]
  rows = [line for line in table.splitlines() if line.startswith('| ')][1:]
  assert [r.split(' | ')[0][2:] for r in rows] == [
      'infrared to visible, all-search single-shot', 'infrared to visible, all-search '
      'multi-shot (10)', 'infrared to visible, indoor-search single-shot', 'infrared to '
      'visible, indoor-search multi-shot (10)', 'visible to infrared (full test sets)']
  assert f'| {100 * saved["mAP"]:.2f} | {100 * saved["mINP"]:.2f} |' in rows[0]
  assert f'| {100 * saved["visible_to_infrared_rank1"]:.2f} |' in rows[-1]
  assert '## Rank lists\n' in report and '![Rank lists](rank_lists.png)' in report
  assert '## Rank lists, visible to infrared' in report
  assert 'rank_lists_reverse.png' in report
  for png in ('rank_lists.png', 'rank_lists_reverse.png', 'cmc.png'):
    assert (workdir / png).stat().st_size > 0
  html = (workdir / 'report.html').read_text()
  assert '<td>visible to infrared (full test sets)</td>' in html
  assert 'rank_lists_reverse.png' in html
