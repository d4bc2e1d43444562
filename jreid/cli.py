"""The `jreid` command: train, evaluate and use a trained model.

  jreid train --config=configs/bagtricks.py --workdir=runs/bot      # python -m jreid.main
  jreid eval --config=configs/bagtricks.py --workdir=runs/bot       # ... --mode=eval
  jreid extract --workdir runs/bot --images gallery/ --out gallery.npz
  jreid index --features gallery.npz --out gallery.index [--kind auto|flat|ivfpq|hnsw]
  jreid search --workdir runs/bot --index gallery.index --query query/ --out results.html
  jreid visualize --workdir runs/bot [--sort ap|worst|random] [--num 20]
  jreid export --workdir runs/bot --format onnx --out bot.onnx

A subcommand is one function registered with `@command(name, help, description, arguments)`.
Every user's mistake (a missing workdir, a folder without images, an unknown index kind, ...)
ends with exit code 1 and one line `jreid: error: <what, where, fix>` on stderr, before anything
is written; outputs are written at the end, each through a temporary file renamed into place.
Set JREID_TRACEBACK=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from jreid import host_memory

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

PROG = 'jreid'


class UsageError(Exception):
  """A user's mistake found by the command line itself; its message is the one line shown."""


@dataclasses.dataclass(frozen=True)
class Command:
  name: str
  help: str  # One line for `jreid --help`.
  description: str  # The paragraph of `jreid NAME --help`.
  run: Callable[[argparse.Namespace], None]
  arguments: Sequence[tuple[tuple[str, ...], dict[str, Any]]]
  passthrough: bool = False  # Its arguments go to jreid.main as they are.


COMMANDS: dict[str, Command] = {}


def arg(*flags: str, **options) -> tuple[tuple[str, ...], dict[str, Any]]:
  """One argument of a command, as `argparse.ArgumentParser.add_argument` takes it."""
  return flags, options


def command(name: str, help: str, description: str = '',  # pylint: disable=redefined-builtin
            arguments: Sequence[tuple] = (), passthrough: bool = False):
  """Registers the decorated function `run(args)` as the subcommand `name`."""

  def register(run):
    COMMANDS[name] = Command(name, help, description or help, run, tuple(arguments),
                             passthrough)
    return run

  return register


class _Parser(argparse.ArgumentParser):
  """argparse with its errors as the one line `jreid: error: ...` and exit code 1."""

  def error(self, message: str):
    where = self.prog.split(' ', 1)[1] + ': ' if ' ' in self.prog else ''
    raise UsageError(f'{where}{message} (see {self.prog} --help).')


def _parser() -> argparse.ArgumentParser:
  parser = _Parser(prog=PROG, description='Object re-identification in JAX: train a model, '
                   'then embed, index, search and inspect with it.',
                   formatter_class=argparse.RawDescriptionHelpFormatter,
                   epilog='Run `jreid COMMAND --help` for the options of a command.')
  sub = parser.add_subparsers(dest='command', metavar='COMMAND', parser_class=_Parser)
  for cmd in COMMANDS.values():
    p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description,
                       add_help=not cmd.passthrough)
    for flags, options in cmd.arguments:
      p.add_argument(*flags, **options)
  return parser


# train / eval: jreid.main with the same flags.


def _run_main(argv: list[str], mode: str) -> None:
  if any(a in ('-h', '--help', '--helpshort', '--helpfull') for a in argv):
    from jreid import main as main_lib  # pylint: disable=g-import-not-at-top
    from absl import flags  # pylint: disable=g-import-not-at-top
    usage = (f'usage: jreid {mode} --config=configs/METHOD.py[:variant] --workdir=DIR '
             '[--config.KEY=VALUE ...]' + (' [--checkpoint=DIR/checkpoints/STEP]'
                                           if mode == 'eval' else ''))
    print(usage + '\n')
    print(('Trains (resuming from the workdir\'s last checkpoint), tests and writes the report.'
           if mode == 'train' else
           'Tests the latest checkpoint of --workdir (or --checkpoint) and writes eval-<step>/ '
           '(its metrics and report) in the workdir; the training run\'s files are untouched.'))
    print(f'The same as python -m jreid.main{" --mode=eval" if mode == "eval" else ""}:\n')
    print(flags.FLAGS.module_help(main_lib))
    return
  if any(a.startswith('--mode') for a in argv):
    raise UsageError(f'{mode}: --mode is set by the command (jreid train or jreid eval): leave it '
                     'out.')
  from absl import app  # pylint: disable=g-import-not-at-top
  from jreid import main as main_lib  # pylint: disable=g-import-not-at-top
  app.run(main_lib.main, argv=[f'{PROG} {mode}', *argv, f'--mode={mode}'],
          flags_parser=main_lib.parse_flags)


@command('train', 'train, test and report (python -m jreid.main)', passthrough=True)
def train(args: argparse.Namespace) -> None:
  _run_main(args.rest, 'train')


@command('eval', 'test a checkpoint (python -m jreid.main --mode=eval)', passthrough=True)
def evaluate(args: argparse.Namespace) -> None:
  _run_main(args.rest, 'eval')


# Using a trained model.

_WORKDIR = arg('--workdir', required=True, metavar='DIR',
               help='the workdir of a trained run (its config.json and checkpoints/)')
_STEP = arg('--step', type=int, default=None,
            help='the checkpoint step to use (default: the latest)')
_BATCH = arg('--batch-size', type=int, default=None,
             help='images per batch over all devices (default: the run\'s eval.batch_size)')


def _output_path(path: str, suffixes: tuple[str, ...], what: str) -> pathlib.Path:
  """The --out path, checked before any work: a known suffix and an existing folder."""
  out = pathlib.Path(path).expanduser()
  if not out.name.endswith(suffixes):
    raise UsageError(f'--out {path}: {what} is written as {" or ".join(suffixes)}; name the file '
                     f'so, e.g. --out {out.stem or "out"}{suffixes[0]}.')
  if not out.parent.is_dir():
    raise UsageError(f'--out {path}: the folder {out.parent} does not exist: create it first.')
  if out.is_dir():
    raise UsageError(f'--out {path} is a folder: pass a file name.')
  return out


def _atomic_write(path: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
  """write(tmp) then tmp renamed to `path` (a failed write leaves nothing)."""
  tmp = path.with_name(f'.{path.name}.tmp{path.suffix}')
  try:
    write(tmp)
    tmp.replace(path)
  finally:
    tmp.unlink(missing_ok=True)


def _extractor(workdir: str, step: int | None, **options):
  from jreid import inference  # pylint: disable=g-import-not-at-top
  inference.checkpoint_dir(workdir, step)  # A mistyped workdir fails before anything is built.
  return inference.FeatureExtractor.from_workdir(workdir, step, progress=True, **options)


def _modality(value: str | None):
  return None if value is None else {'visible': 0, 'infrared': 1}[value]


@command('extract', 'embed a folder of images with a trained model',
         'Embed the images of a folder with a trained model: FEATS.npz holds the features, the '
         'file names, and the person id and camera parsed from names of a known dataset layout '
         '(Market-1501, DukeMTMC-reID, MSMT17, VeRi-776, CUHK03-NP; -1 otherwise).', [
             _WORKDIR,
             arg('--images', required=True, metavar='DIR',
                 help='a folder of images (.jpg .jpeg .png .bmp .tif .tiff; sub-folders too)'),
             arg('--out', required=True, metavar='FEATS.npz', help='the features file to write'),
             _STEP, _BATCH,
             arg('--flip', action=argparse.BooleanOptionalAction, default=None,
                 help='average with the mirrored images (default: the run\'s eval.flip)'),
             arg('--raw', action='store_true',
                 help='keep the embeddings as the model gives them (default: L2-normalised)'),
             arg('--modality', choices=('visible', 'infrared'), default=None,
                 help='cross-modality models: the modality of the images'),
         ])
def extract(args: argparse.Namespace) -> None:
  from jreid import inference  # pylint: disable=g-import-not-at-top
  out = _output_path(args.out, ('.npz',), 'the features file')
  root = pathlib.Path(args.images).expanduser()
  files = inference.list_images(root)
  fx = _extractor(args.workdir, args.step, flip=args.flip, normalize=not args.raw,
                  batch_size=args.batch_size)
  features = fx(files, modality=_modality(args.modality))
  names = [f.relative_to(root).as_posix() for f in files]
  pids, camids, layouts = inference.ids_from_names(names)
  _save_features(out, features, names, pids, camids, layouts, root, fx.describe())
  known = sum(1 for x in layouts if x)
  print(f'{out}: {len(names)} images, features {list(features.shape[1:])} '
        f'({fx.describe()["outputs"]}, step {fx.step}); ids parsed from {known} file names.')


def _save_features(out, features, names, pids, camids, layouts, root, info) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top

  def write(tmp):
    np.savez(tmp, features=features, names=np.asarray(names, dtype=str), pids=pids,
             camids=camids, layouts=np.asarray(layouts, dtype=str),
             root=np.array(str(pathlib.Path(root).absolute())), info=np.array(json.dumps(info)))

  _atomic_write(out, write)


def load_features(path: str | os.PathLike) -> dict[str, Any]:
  """A features file of `jreid extract`: features, names, pids, camids, root, info (a dict)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise UsageError(f'features file {path} does not exist: write it with jreid extract '
                     f'--workdir DIR --images DIR --out {path.name}.')
  try:
    with np.load(path, allow_pickle=False) as data:
      out = {k: data[k] for k in ('features', 'names', 'pids', 'camids', 'root', 'info')}
  except (ValueError, KeyError, OSError) as e:
    raise UsageError(f'{path} is not a features file of jreid extract ({e}): write it with '
                     'jreid extract.') from None
  out['info'] = json.loads(str(out['info']))
  out['root'] = str(out['root'])
  return out


@command('index', 'build a search index of extracted features',
         'Build a search index of a features file and save it (the index, and its item names '
         'and ids beside it as INDEX.items.npz). auto: exact (flat) below one million items, '
         'IVF-PQ from there; faiss is used when installed, else an exact numpy index.', [
             arg('--features', required=True, metavar='FEATS.npz',
                 help='a features file of jreid extract'),
             arg('--out', required=True, metavar='INDEX', help='the index file to write'),
             arg('--kind', default='auto', choices=('auto', 'flat', 'ivfpq', 'hnsw'),
                 help='index kind (default: auto)'),
             arg('--nlist', type=int, default=None, help='ivfpq: inverted-file cells'),
             arg('--m', type=int, default=None, help='ivfpq: bytes (sub-quantizers) per vector'),
             arg('--nprobe', type=int, default=None, help='ivfpq: cells a query visits'),
             arg('--ef-search', type=int, default=None, help='hnsw: search breadth'),
         ])
def index(args: argparse.Namespace) -> None:
  from jreid import index as index_lib  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(args.out).expanduser()
  if not out.parent.is_dir():
    raise UsageError(f'--out {args.out}: the folder {out.parent} does not exist: create it first.')
  feats = load_features(args.features)
  features = feats['features']
  if features.ndim != 2:
    raise UsageError(f'{args.features} holds {feats["info"].get("method", "")} feature maps '
                     f'{list(features.shape)}, which a learned matcher compares pair by pair '
                     '(FeatureExtractor.scores), not vectors to index.')
  params = {k: v for k, v in (('nlist', args.nlist), ('m', args.m), ('nprobe', args.nprobe),
                              ('ef_search', args.ef_search)) if v is not None}
  info = {**feats['info'], 'features': str(pathlib.Path(args.features).absolute()),
          'root': feats['root']}
  built = index_lib.GalleryIndex.build(features, names=feats['names'], pids=feats['pids'],
                                       camids=feats['camids'], kind=args.kind,
                                       metric=feats['info'].get('metric', 'cosine'), info=info,
                                       progress=True, **params)
  built.save(out)
  extra = ', '.join(f'{k}={v}' for k, v in built.params.items())
  print(f'{out}: {built.kind} index ({built.backend}) of {len(built)} items, {built.dim}-d, '
        f'{built.metric}{"; " + extra if extra else ""}.')


@command('search', "search query images in an index: an HTML page of each query's top-k",
         'Search the query images in an index: a self-contained HTML page of each '
         "query's top-k (images embedded, distances, file names) and the results as JSON "
         'beside it.', [
             _WORKDIR,
             arg('--index', required=True, metavar='INDEX', help='an index of jreid index'),
             arg('--query', required=True, metavar='DIR', help='a folder of query images'),
             arg('--topk', type=int, default=10, help='gallery items per query (default 10)'),
             arg('--out', required=True, metavar='RESULTS.html', help='the page to write; the '
                 'JSON is written beside it (RESULTS.json)'),
             _STEP, _BATCH,
             arg('--modality', choices=('visible', 'infrared'), default=None,
                 help='cross-modality models: the modality of the query images'),
         ])
def search(args: argparse.Namespace) -> None:
  from jreid import index as index_lib  # pylint: disable=g-import-not-at-top
  from jreid import inference  # pylint: disable=g-import-not-at-top
  from jreid import report  # pylint: disable=g-import-not-at-top
  out = _output_path(args.out, ('.html', '.htm'), 'the results page')
  out_json = out.with_suffix('.json')
  if args.topk < 1:
    raise UsageError(f'--topk must be at least 1, got {args.topk}.')
  gallery = index_lib.GalleryIndex.load(args.index)
  root = pathlib.Path(args.query).expanduser()
  files = inference.list_images(root)
  inference.checkpoint_dir(args.workdir, args.step)
  info = gallery.info
  fx = _extractor(args.workdir, args.step, flip=info.get('flip'),
                  normalize=info.get('normalize', True), batch_size=args.batch_size)
  if info.get('model_id') and info['model_id'] != fx.model_id:
    raise UsageError(
        f'{args.index} holds features of another model ({info.get("method")} step '
        f'{info.get("step")} of {info.get("source")}) than {args.workdir} step {fx.step}: pass '
        'the --workdir and --step that computed them, or rebuild the index with jreid extract '
        'and jreid index.')
  topk = min(args.topk, len(gallery))
  query = fx(files, modality=_modality(args.modality))
  distances, rows = gallery.search(query, topk)
  names = [f.relative_to(root).as_posix() for f in files]
  pids, camids, _ = inference.ids_from_names(names)
  groot = pathlib.Path(info.get('root', ''))
  results = []
  for i, name in enumerate(names):
    hits = []
    for rank, (d, r) in enumerate(zip(distances[i], rows[i]), 1):
      if r < 0:
        continue
      hits.append({'rank': rank, 'name': str(gallery.names[r]), 'distance': float(d),
                   'pid': int(gallery.pids[r]), 'camid': int(gallery.camids[r])})
    results.append({'query': name, 'pid': int(pids[i]), 'camid': int(camids[i]), 'results': hits})
  payload = {'workdir': str(pathlib.Path(args.workdir).absolute()), 'step': fx.step,
             'index': str(pathlib.Path(args.index).absolute()), 'kind': gallery.kind,
             'metric': gallery.metric, 'topk': topk, 'gallery_root': str(groot),
             'query_root': str(root.absolute()), 'queries': results}
  pages = [{'name': q['query'], 'path': root / q['query'], 'pid': q['pid'],
            'results': [{**h, 'path': groot / h['name']} for h in q['results']]}
           for q in results]
  intro = (f'{len(names)} queries from `{root}` against {len(gallery)} gallery items of '
           f'`{args.index}` ({gallery.kind} index, {gallery.metric} distance, lower is closer); '
           f'model of `{args.workdir}` at step {fx.step}. Frames: green same identity, red '
           'another, grey unknown (ids are parsed from file names of known dataset layouts).')
  _atomic_write(out, lambda tmp: report.write_search_page(tmp, 'jreid search', intro, pages))
  _atomic_write(out_json, lambda tmp: tmp.write_text(json.dumps(payload, indent=1) + '\n'))
  print(f'{out}, {out_json}: top-{topk} of {len(names)} queries.')


@command('visualize', "one image per query of a run's test set (FastReID's visualize_result)",
         "FastReID's visualize_result: one image per query of a run's test set "
         '(the query, its top-k with distances, its id and AP; best, worst or random first) and '
         'the ROC. The evaluation is recomputed from the checkpoint with the method\'s own '
         'evaluation, on the run\'s dataset (it must be where config.json says).', [
             _WORKDIR, _STEP,
             arg('--sort', default='ap', choices=('ap', 'worst', 'random'),
                 help='ap: best AP first; worst: worst first; random (default: ap)'),
             arg('--num', type=int, default=20, help='queries to draw (default 20)'),
             arg('--topk', type=int, default=10, help='gallery items per query (default 10)'),
             arg('--out', default=None, metavar='DIR',
                 help='the folder to write (default: WORKDIR/visualize-<step>)'),
         ])
def visualize(args: argparse.Namespace) -> None:
  from jreid import inference  # pylint: disable=g-import-not-at-top
  if args.num < 1 or args.topk < 1:
    raise UsageError(f'--num and --topk must be at least 1, got {args.num} and {args.topk}.')
  path = inference.checkpoint_dir(args.workdir, args.step)
  workdir = pathlib.Path(args.workdir).expanduser().absolute()
  step = int(path.name)
  out_dir = pathlib.Path(args.out).expanduser() if args.out else workdir / f'visualize-{step}'
  if out_dir.exists() and not out_dir.is_dir():
    raise UsageError(f'--out {out_dir} is a file: pass a folder.')
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  from jreid import report  # pylint: disable=g-import-not-at-top
  from jreid import train as train_lib  # pylint: disable=g-import-not-at-top
  config = inference.load_config(workdir / 'config.json')
  run = train_lib.build_run(config, workdir, write_config=False)
  try:
    state = run.checkpointer.restore(run.method.state, step)
    output = run.method.evaluate(state)
  finally:
    run.checkpointer.close()
  if output.query is None or output.gallery is None:
    output.query, output.gallery = run.data.splits['query'], run.data.splits['gallery']
  height = 128
  size = (height, max(1, round(height * config.input.width / config.input.height)))
  tmp = out_dir.with_name(f'.{out_dir.name}.tmp')
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    records = report.visualize_result(output, tmp, sort=args.sort, num=args.num,
                                      top_k=args.topk, size=size, progress=True)
    summary = {'workdir': str(workdir), 'step': step, 'sort': args.sort,
               'metrics': output.metrics, 'queries': records}
    (tmp / 'visualize.json').write_text(json.dumps(summary, indent=1) + '\n')
    for item in tmp.iterdir():  # Into place file by file: a folder of earlier images is kept.
      out_dir.mkdir(parents=True, exist_ok=True)
      item.replace(out_dir / item.name)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  print(f'{out_dir}: {len(records)} queries ({args.sort} order) and roc.png; mAP '
        f'{100 * output.metrics["mAP"]:.2f}, Rank-1 {100 * output.metrics["rank1"]:.2f}.')


# The command.


_EXPORT_SUFFIXES = {'stablehlo': '.stablehlo', 'tflite': '.tflite', 'onnx': '.onnx',
                    'savedmodel': ''}


@command('export', 'write a trained model as a file that runs without jreid',
         'Write the model of a trained run as StableHLO (jax.export), a TensorFlow SavedModel, '
         'TFLite or ONNX: uint8 images [N, H, W, 3] at the run\'s input size, any N, give the '
         'embeddings `jreid extract` gives (L2-normalised unless --raw). QAConv runs also get '
         'their matcher, (query maps, gallery maps) -> scores, as NAME.matcher.SUFFIX. Load with '
         'jreid.export.load(PATH). SavedModel, TFLite and ONNX need `pip install "jreid[export]"`.',
         [
             _WORKDIR,
             arg('--format', required=True, choices=tuple(_EXPORT_SUFFIXES),
                 help='the file format'),
             arg('--out', required=True, metavar='PATH',
                 help='the file to write (NAME.stablehlo, NAME.tflite, NAME.onnx; a folder '
                      'for savedmodel)'),
             _STEP,
             arg('--flip', action=argparse.BooleanOptionalAction, default=None,
                 help='average with the mirrored images (default: the run\'s eval.flip)'),
             arg('--raw', action='store_true',
                 help='keep the embeddings as the model gives them (default: L2-normalised)'),
             arg('--modality', choices=('visible', 'infrared'), default=None,
                 help='cross-modality models: the modality the exported model embeds'),
             arg('--overwrite', action='store_true', help='replace an existing --out'),
         ])
def export(args: argparse.Namespace) -> None:
  suffix = _EXPORT_SUFFIXES[args.format]
  out = pathlib.Path(args.out).expanduser()
  if suffix and out.suffix != suffix:
    raise UsageError(f'--out {args.out}: --format {args.format} writes NAME{suffix}; '
                     f'name the file so, e.g. --out {out.stem or "model"}{suffix}.')
  if not suffix and out.suffix in ('.stablehlo', '.tflite', '.onnx'):
    raise UsageError(f'--out {args.out}: a savedmodel is a folder; name it without the '
                     f'{out.suffix} suffix, e.g. --out {out.stem}.')
  if not out.parent.is_dir():
    raise UsageError(f'--out {args.out}: the folder {out.parent} does not exist: create it first.')
  if (out.exists() or out.is_symlink()) and not args.overwrite:
    raise UsageError(f'--out {args.out} exists: pass --overwrite to replace it, or another path.')
  fx = _extractor(args.workdir, args.step, flip=args.flip, normalize=not args.raw)
  try:
    written = fx.export(out, args.format, modality=_modality(args.modality),
                        overwrite=args.overwrite)
  except ImportError as e:
    if 'jreid[export]' in str(e):  # An optional converter is not installed: say which.
      raise UsageError(str(e)) from e
    raise
  what = 'feature maps' if fx.is_matcher else ('raw embeddings' if args.raw else
                                                'L2-normalised embeddings')
  h, w = fx.input_size
  print(f'{written[0]}: {args.format}, uint8 images [N, {h}, {w}, 3] -> {what} '
        f'({fx.method}, step {fx.step}, flip={fx.flip}).')
  if len(written) > 1:
    print(f'{written[1]}: {args.format}, the matcher: (query maps, gallery maps) -> scores.')


def _user_errors() -> tuple[type[BaseException], ...]:
  """The exception types that are a user's mistake with a message naming the fix."""
  errors: list[type[BaseException]] = [UsageError, FileNotFoundError, FileExistsError,
                                         PermissionError]
  modules = (('jreid.inference', 'InputError'), ('jreid.index', 'GalleryIndexError'),
             ('jreid.checkpoint', 'CheckpointMismatchError'),
             ('jreid.config_checks', 'ConfigError'), ('data_pipelines.types', 'DatasetError'))
  for module, name in modules:
    loaded = sys.modules.get(module)
    if loaded is not None:
      errors.append(getattr(loaded, name))
  return tuple(errors)


def fail(message: Any) -> None:
  """Ends the process with one line `jreid: error: ...` on stderr and exit code 1."""
  print(f'{PROG}: error: ' + ' '.join(str(message).split()), file=sys.stderr, flush=True)
  sys.exit(1)


def main(argv: Sequence[str] | None = None) -> int:
  """The `jreid` console command."""
  if argv is None:  # the real command line (not a call from Python): it may re-run once
    host_memory.ensure_hugepage_malloc()
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = _parser()
  try:
    if argv and argv[0] in COMMANDS and COMMANDS[argv[0]].passthrough:
      args = argparse.Namespace(command=argv[0], rest=argv[1:])
    else:
      args = parser.parse_args(argv)
      if args.command is None:
        parser.print_help()
        return 0
    COMMANDS[args.command].run(args)
  except KeyboardInterrupt:
    print(f'{PROG}: interrupted; nothing was written.', file=sys.stderr, flush=True)
    return 130
  except Exception as e:  # pylint: disable=broad-except
    if os.environ.get('JREID_TRACEBACK') or not isinstance(e, _user_errors()):
      raise
    fail(e)
  return 0


if __name__ == '__main__':
  sys.exit(main())
