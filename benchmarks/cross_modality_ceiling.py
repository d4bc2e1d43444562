r"""What limits the cross-modality default on SynthReID-IR: its ceiling and its baselines.

  python benchmarks/cross_modality_ceiling.py \
      --out benchmarks/results/cross_modality_ceiling_cpu.json

Every trained row is the AGW default (configs/agw_sysu.py, no variant: its network, recipe and
budget unless --epochs shrinks it), trained and tested through the library as `jreid.main` does
(`jreid.train.build_run` / `train`, the method's own evaluation, untrained numbers before training):

  default         infrared queries -> visible gallery, SYSU all-search single-shot, 10 trials
  visible_only    the same shots of the same identities, every one rendered by a visible camera
                  (cameras 3 and 6 in the visible look, still in the query role and in the
                  second stream): the same network trained and tested on visible images only,
                  i.e. the task without the modality gap
  luminance_ir    a diagnostic: the infrared shots drawn with the visible person (garment grey
                  levels = the visible luminance, patterns and logos) through the unchanged
                  thermal cameras (one grey channel, dark scene, soft optics, noise), so the
                  thermal person look is replaced while the thermal camera, the network, the
                  recipe and the evaluation stay
  single_stream   the default with one front shared by both modalities
                  (config.model.two_stream.single_stream=True)
  colour_histogram, grey_histogram   no learning, infrared -> visible under the same protocol:
                  HSV colour histograms over 3 stripes (the library's baseline) and 16-level
                  grey histograms over 6 stripes of grey-world-normalised luminance
  untrained       the default network at initialisation

For every trained row the test features are also ranked within each modality (infrared ->
infrared and visible -> visible, Market protocol: the same identity in the same camera removed),
which tells a network that learns identities but not across modalities from one that learns
nothing. `--rows` picks rows; `--label` names the section of --out the rows go to (an existing
record keeps its other sections), e.g. `--label=before_fix` and `--label=after_fix`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'benchmarks'))
import _bench_util  # pylint: disable=g-import-not-at-top,wrong-import-position

ROWS = ('default', 'visible_only', 'luminance_ir', 'single_stream', 'colour_histogram',
        'grey_histogram')
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'tensorflow')
MARKER = 'synthreid_ir_variant.json'
_LUMINANCE = 'visible_person_thermal_camera'


def variant_dataset(cache_dir: pathlib.Path, spec, variant: str) -> pathlib.Path:
  """SynthReID-IR of `spec` with its infrared shots drawn otherwise (same identities, poses,
  crops and file names; generated once under `cache_dir`): 'visible_only' by visible cameras 3
  and 6, 'luminance_ir' with the visible person through the thermal cameras."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from data_pipelines import synthreid  # pylint: disable=g-import-not-at-top
  from data_pipelines.synthreid import infrared  # pylint: disable=g-import-not-at-top
  from data_pipelines.synthreid import render  # pylint: disable=g-import-not-at-top
  root = cache_dir / (f'synthreid_ir_{variant}_v{infrared.SYNTHREID_IR_VERSION}_'
                      f'{synthreid.spec_hash(spec)}')
  if (root / MARKER).exists():
    return root
  modality = 'visible'
  if variant == 'luminance_ir':
    modality = _LUMINANCE
    if modality not in render._MODALITIES:  # pylint: disable=protected-access
      render.register_modality(modality, render.person_look,
                               infrared._thermal_camera_look)  # pylint: disable=protected-access
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=root.name + '.', dir=cache_dir))
  for shot in infrared.plan_ir_shots(spec):
    path = tmp / infrared.ir_filename(shot)
    path.parent.mkdir(parents=True, exist_ok=True)
    if shot.modality == 'infrared':
      shot = dataclasses.replace(shot, modality=modality)
    image = synthreid.render_shot(spec, shot)
    Image.fromarray(image).save(path, quality=spec.jpeg_quality)
  (tmp / 'exp').mkdir()
  for split, pids in infrared.ir_ids(spec).items():
    (tmp / 'exp' / f'{split}_id.txt').write_text(','.join(map(str, pids)) + '\n')
  (tmp / MARKER).write_text(json.dumps({'variant': variant,
                                        'spec': dataclasses.asdict(spec)}) + '\n')
  tmp.replace(root)
  return root


def base_config(epochs: int | None):
  from configs import agw_sysu  # pylint: disable=g-import-not-at-top
  config = agw_sysu.get_config()
  if epochs:
    scale = epochs / config.train.epochs
    config.optim.milestones = tuple(max(1, round(m * scale)) for m in config.optim.milestones)
    config.train.epochs = epochs
  return config


def within_modality(output) -> dict[str, dict[str, float]]:
  """Market-protocol ranking of the query set against itself and of the gallery against itself."""
  from jreid.evaluation import cross_modality as cm_eval  # pylint: disable=g-import-not-at-top
  out = {}
  for name, feats, split in (('query_to_query', output.query_features, output.query),
                             ('gallery_to_gallery', output.gallery_features, output.gallery)):
    result = cm_eval.evaluate_regdb(feats, feats, split.pids, split.pids, split.camids,
                                    split.camids, 'cosine', 20)
    out[name] = _short(cm_eval.rank_dict(result))
  return out


def _short(metrics: dict[str, float]) -> dict[str, float]:
  keys = ('rank1', 'rank10', 'rank20', 'mAP', 'mINP')
  return {k: round(float(metrics[k]), 4) for k in keys if k in metrics}


def train_row(config, workdir: pathlib.Path, with_untrained: bool) -> dict:
  """Trains `config` in `workdir` and evaluates it (and the untrained network)."""
  from jreid import train  # pylint: disable=g-import-not-at-top
  start = time.time()
  run = train.build_run(config, workdir)
  state = run.method.state
  row = {}
  if with_untrained:
    row['untrained'] = _short(run.method.evaluate(state, post=False).metrics)
  state = train.train(run, state, 0)
  output = run.method.evaluate(state)
  metrics = output.metrics
  row['trained'] = _short(metrics)
  row['visible_to_infrared_full'] = _short(
      {k[len('visible_to_infrared_'):]: v for k, v in metrics.items()
       if k.startswith('visible_to_infrared_')})
  row['within_modality'] = within_modality(output)
  row['steps'] = int(state.step)
  row['wall_time_s'] = round(time.time() - start, 1)
  run.checkpointer.close()
  return row


def histogram_row(config, grey: bool) -> dict:
  """A no-learning baseline infrared -> visible under the SYSU protocol of the default."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from data_pipelines import input_pipeline  # pylint: disable=g-import-not-at-top
  from data_pipelines import sysu_mm01  # pylint: disable=g-import-not-at-top
  from jreid import train  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import cross_modality as cm_eval  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import histogram  # pylint: disable=g-import-not-at-top
  data = train.load_data(config)
  feats = {}
  for name in ('query', 'gallery'):
    chunks = []
    for batch in input_pipeline.eval_iterator(data.splits[name], config.input,
                                              batch_size=config.eval.batch_size):
      images = batch['image'][batch['mask']]
      if grey:
        luma = np.round(images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        images = np.repeat(luma.clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)
        chunks.append(histogram.color_histogram_features(images, bins=(1, 1, 16), stripes=6))
      else:
        chunks.append(histogram.color_histogram_features(images))
    feats[name] = np.concatenate(chunks)
  query, gallery = data.splits['query'], data.splits['gallery']
  cm = config.cross_modality
  galleries = [sysu_mm01.sample_gallery(gallery, t, cm.search_modes[0], 1)
               for t in range(cm.num_trials)]
  trials = cm_eval.evaluate_sysu(feats['query'], feats['gallery'], query.pids, gallery.pids,
                                 query.camids, gallery.camids, galleries, 'cosine',
                                 config.eval.max_rank)
  return {'trained': _short(trials.metrics())}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', required=True, help='the JSON record to write (or update)')
  parser.add_argument('--rows', default=','.join(ROWS), help=f'comma-separated subset of {ROWS}')
  parser.add_argument('--label', default='rows', help='the section of --out the rows go to')
  parser.add_argument('--note', default='', help='one line on what this section measures')
  parser.add_argument('--epochs', type=int, default=0, help='shrink the budget (0: the default)')
  parser.add_argument('--steps_per_epoch', type=int, default=0,
                      help='a smoke test: this many steps per epoch (0: the sampler\'s)')
  parser.add_argument('--workdir', default='', help='parent of the runs\' workdirs (default tmp)')
  args = parser.parse_args()
  rows = [r for r in args.rows.split(',') if r]
  unknown = sorted(set(rows) - set(ROWS))
  if unknown:
    parser.error(f'--rows: unknown {unknown}; known: {ROWS}')
  out = pathlib.Path(args.out)
  if not out.parent.is_dir():
    parser.error(f'--out {out}: the folder {out.parent} does not exist.')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  from data_pipelines import synthreid  # pylint: disable=g-import-not-at-top
  from data_pipelines.synthreid import cache  # pylint: disable=g-import-not-at-top
  info = _bench_util.machine_info(PACKAGES)
  parent = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='jreid_ceiling_'))
  section = {'note': args.note,
             'command': 'python benchmarks/cross_modality_ceiling.py ' + ' '.join(sys.argv[1:]),
             'date': info['date'],
             'machine': {**info['machine'], 'device': 'CPU only'}, 'versions': info['versions'],
             'epochs': args.epochs or base_config(None).train.epochs, 'rows': {}}
  record = json.loads(out.read_text()) if out.exists() else {}
  record.update({
      'benchmark': 'Ceiling of the cross-modality (AGW) default on SynthReID-IR: the same '
                   'network visible-only and single-stream, no-learning baselines; SYSU '
                   'all-search single-shot, 10 trials, infrared -> visible unless said',
      'command': 'python benchmarks/cross_modality_ceiling.py --out '
                 'benchmarks/results/cross_modality_ceiling_cpu.json --label=LABEL',
  })

  def save():
    record[args.label] = section
    tmp = out.with_name(f'.{out.name}.tmp')
    tmp.write_text(json.dumps(record, indent=2) + '\n')
    tmp.replace(out)

  for name in rows:
    print(f'cross_modality_ceiling: row {name}...', flush=True)
    config = base_config(args.epochs or None)
    config.train.steps_per_epoch = args.steps_per_epoch
    if name == 'colour_histogram':
      row = histogram_row(config, grey=False)
    elif name == 'grey_histogram':
      row = histogram_row(config, grey=True)
    else:
      if name in ('visible_only', 'luminance_ir'):
        spec = synthreid.SynthReIDSpec(**config.dataset.synth.to_dict())
        config.dataset.name = 'sysu_mm01'
        config.dataset.root = str(variant_dataset(cache.default_cache_dir(), spec, name))
      elif name == 'single_stream':
        config.model.two_stream.single_stream = True
      row = train_row(config, parent / name, with_untrained=name == 'default')
    section['rows'][name] = row
    print(f'cross_modality_ceiling: {name}: {json.dumps(row)}', flush=True)
    save()
  print(f'cross_modality_ceiling: {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
