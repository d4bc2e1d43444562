"""Progress display, the run report and the pages of `jreid search` / `jreid visualize`.

The run report is `report.md` (beside its PNG plots) and `report.html`, a self-contained page:
its plots are embedded as PNG data URIs and the Markdown of every section (tables, `code`,
**bold**, lists) is rendered, so the one file can be mailed or archived. The test metrics and the
rank-list image also go to TensorBoard (`<dir>/tensorboard`, tags `test/...`).
"""

from __future__ import annotations

import base64
import html
import io
import pathlib
import re
import sys
import time
from typing import Any

import numpy as np

from jreid import metric_writers
from jreid.evaluation import format_results_table


class Progress:
  """A tqdm bar with steps/s, ETA and the latest loss; sparse lines when not on a terminal."""

  def __init__(self, total: int, initial: int = 0):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    tty = sys.stderr.isatty()
    self._bar = tqdm(total=total, initial=initial, unit='step', dynamic_ncols=True,
                     mininterval=0.5 if tty else 30.0, disable=jax.process_index() != 0,
                     desc='train', smoothing=0.1)
    self._last = initial

  def update(self, step: int, scalars: dict[str, float]) -> None:
    self._bar.update(step - self._last)
    self._last = step
    self._bar.set_postfix({k: f'{scalars[k]:.3g}' for k in ('loss', 'accuracy', 'lr')
                           if k in scalars}, refresh=False)

  def set_total(self, total: int) -> None:
    """A method changed the length of the run (e.g. QAConv's adaptive schedule)."""
    self._bar.total = total
    self._bar.refresh()

  def close(self) -> None:
    self._bar.close()


def pyplot():
  """matplotlib.pyplot on the non-interactive Agg backend (imported on first use)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_training_curves(rows: list[dict[str, float]], path: pathlib.Path) -> bool:
  if not rows:
    return False
  plt = pyplot()
  steps = np.array([r['step'] for r in rows])
  loss_keys = [k for k in rows[-1] if k == 'loss' or k.startswith('loss_')]
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  for k in loss_keys:
    axes[0].plot(steps, [r.get(k, np.nan) for r in rows], label=k)
  axes[0].set_title('training loss'); axes[0].set_xlabel('step'); axes[0].legend()
  axes[1].plot(steps, [r.get('accuracy', np.nan) for r in rows])
  axes[1].set_title('training accuracy'); axes[1].set_xlabel('step')
  axes[2].plot(steps, [r.get('lr', np.nan) for r in rows])
  axes[2].set_title('learning rate'); axes[2].set_xlabel('step')
  for ax in axes:
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def plot_cmc(curves: dict[str, np.ndarray], path: pathlib.Path) -> None:
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for name, cmc in curves.items():
    ax.plot(np.arange(1, len(cmc) + 1), 100 * np.asarray(cmc), label=name)
  ax.set_xlabel('rank'); ax.set_ylabel('matching rate (%)'); ax.set_title('CMC')
  ax.set_ylim(0, 100); ax.grid(alpha=0.3); ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def ranked_gallery(dist: np.ndarray, q_pid: int, q_cam: int, g_pids: np.ndarray,
                   g_camids: np.ndarray, top_k: int) -> np.ndarray:
  """Gallery indices of one query's top-k under the Market protocol (same id+camera, junk out)."""
  order = np.argsort(dist, kind='stable')
  keep = ~((g_pids[order] == q_pid) & (g_camids[order] == q_cam)) & (g_pids[order] != -1)
  return order[keep][:top_k]


def decode_image(data: bytes, size: tuple[int, int]) -> np.ndarray:
  """Encoded image bytes -> RGB uint8 [height, width, 3] resized to `size` = (height, width)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  img = Image.open(io.BytesIO(data)).convert('RGB').resize((size[1], size[0]))
  return np.asarray(img)


def plot_rank_lists(query, gallery, query_distances, path: pathlib.Path, num_queries: int = 8,
                    top_k: int = 10) -> None:
  """Grid: each row a query and its top-k gallery matches, green border = same identity.

  `query_distances(i)` gives query i's distances to every gallery item, float [G].
  """
  plt = pyplot()
  rng = np.random.default_rng(0)
  rows = np.sort(rng.choice(len(query), size=min(num_queries, len(query)), replace=False))
  size = (128, 64)
  fig, axes = plt.subplots(len(rows), top_k + 1, figsize=(1.0 * (top_k + 1), 2.0 * len(rows)),
                           squeeze=False)
  for r, qi in enumerate(rows):
    ranked = ranked_gallery(query_distances(qi), query.pids[qi], query.camids[qi], gallery.pids,
                            gallery.camids, top_k)
    axes[r, 0].imshow(decode_image(query.images[qi], size))
    axes[r, 0].set_title(f'query {query.pids[qi]}', fontsize=7)
    for c in range(top_k):
      ax = axes[r, c + 1]
      if c < len(ranked):
        gi = ranked[c]
        ax.imshow(decode_image(gallery.images[gi], size))
        color = 'limegreen' if gallery.pids[gi] == query.pids[qi] else 'red'
        for spine in ax.spines.values():
          spine.set_edgecolor(color); spine.set_linewidth(3)
        ax.set_title(str(c + 1), fontsize=7)
    for ax in axes[r]:
      ax.set_xticks([]); ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


_INLINE = re.compile(r'`([^`]+)`|\*\*([^*]+)\*\*')


def markdown_inline(text: str) -> str:
  """HTML of one line of Markdown: `code` and **bold**, everything else escaped."""
  out, last = [], 0
  for match in _INLINE.finditer(text):
    out.append(html.escape(text[last:match.start()]))
    code, bold = match.groups()
    out.append(f'<code>{html.escape(code)}</code>' if code is not None
               else f'<strong>{html.escape(bold)}</strong>')
    last = match.end()
  out.append(html.escape(text[last:]))
  return ''.join(out)


def _md_table_to_html(table: str) -> str:
  lines = [l.strip() for l in table.strip().splitlines() if l.strip()]
  rows = [[c.strip() for c in l.strip('|').split('|')] for l in lines
          if not set(l.replace('|', '').strip()) <= set('-: ')]
  out = ['<table>']
  for i, row in enumerate(rows):
    tag = 'th' if i == 0 else 'td'
    out.append('<tr>' + ''.join(f'<{tag}>{markdown_inline(c)}</{tag}>' for c in row) + '</tr>')
  out.append('</table>')
  return '\n'.join(out)


def markdown_to_html(text: str) -> str:
  """HTML of the Markdown the report sections use: paragraphs, tables (lines starting with
  '|'), bullet lists ('- ' or '* ') and fenced code blocks, with inline `code` and **bold**."""
  out: list[str] = []
  lines = text.strip('\n').splitlines()
  i = 0
  while i < len(lines):
    line = lines[i].strip()
    if not line:
      i += 1
    elif line.startswith('```'):
      j = i + 1
      while j < len(lines) and not lines[j].strip().startswith('```'):
        j += 1
      out.append('<pre><code>' + html.escape('\n'.join(lines[i + 1:j])) + '</code></pre>')
      i = j + 1
    elif line.startswith('|'):
      j = i
      while j < len(lines) and lines[j].strip().startswith('|'):
        j += 1
      out.append(_md_table_to_html('\n'.join(lines[i:j])))
      i = j
    elif line.startswith(('- ', '* ')):
      items = []
      while i < len(lines) and lines[i].strip().startswith(('- ', '* ')):
        items.append(f'<li>{markdown_inline(lines[i].strip()[2:])}</li>')
        i += 1
      out.append('<ul>' + ''.join(items) + '</ul>')
    else:
      j = i
      while j < len(lines) and lines[j].strip() and not lines[j].strip().startswith(
          ('|', '- ', '* ', '```')):
        j += 1
      out.append('<p>' + markdown_inline(' '.join(l.strip() for l in lines[i:j])) + '</p>')
      i = j
  return '\n'.join(out)


def png_data_uri(path: pathlib.Path) -> str:
  """A PNG file as a data URI, for self-contained pages."""
  return 'data:image/png;base64,' + base64.b64encode(pathlib.Path(path).read_bytes()).decode()


def html_page(title: str, body: str, width: int = 1100) -> str:
  """A complete HTML page with the report style."""
  return ('<!doctype html><html><head><meta charset="utf-8"><title>' + html.escape(title) +
          f'</title><style>body{{font-family:sans-serif;max-width:{width}px;margin:auto}}'
          'table{border-collapse:collapse}td,th{border:1px solid #aaa;padding:3px 8px}'
          'code{background:#f2f2f2;padding:0 3px}img{max-width:100%}</style></head><body><h1>' +
          html.escape(title) + '</h1>\n' + body + '\n</body></html>\n')


def plot_roc(roc, path: pathlib.Path) -> None:
  """Verification ROC (TPR against FPR, log scale) with the reported operating points."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5, 4))
  keep = roc.fpr > 0
  ax.plot(roc.fpr[keep], 100 * roc.tpr[keep])
  for f, t in zip(roc.fpr_targets, roc.tpr_at_fpr):
    ax.plot([f], [100 * t], 'o', label=f'TPR@FPR={f:.0e}: {100 * t:.1f}%')
  ax.set_xscale('log'); ax.set_xlabel('false positive rate'); ax.set_ylabel('true positive rate (%)')
  ax.set_title(f'ROC ({roc.num_positive} positive, {roc.num_negative} negative pairs)')
  ax.grid(alpha=0.3); ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_distance_histograms(query, gallery, query_distances, path: pathlib.Path,
                             max_queries: int = 500) -> None:
  """Distances of positive (same identity) and negative pairs, for up to `max_queries` queries
  (junk gallery items left out)."""
  plt = pyplot()
  rng = np.random.default_rng(0)
  rows = np.sort(rng.choice(len(query), size=min(max_queries, len(query)), replace=False))
  pos, neg = [], []
  for qi in rows:
    d = np.asarray(query_distances(qi))
    valid = gallery.pids != -1
    same = gallery.pids == query.pids[qi]
    pos.append(d[valid & same & (gallery.camids != query.camids[qi])])
    neg.append(d[valid & ~same])
  pos, neg = np.concatenate(pos), np.concatenate(neg)
  fig, ax = plt.subplots(figsize=(5, 3.6))
  bins = np.linspace(min(pos.min(initial=np.inf), neg.min()), max(pos.max(initial=-np.inf),
                                                                   neg.max()), 60)
  ax.hist(neg, bins=bins, density=True, alpha=0.6, color='tab:red', label=f'negative ({len(neg)})')
  ax.hist(pos, bins=bins, density=True, alpha=0.6, color='tab:green', label=f'positive ({len(pos)})')
  ax.set_xlabel('distance'); ax.set_ylabel('density'); ax.legend()
  ax.set_title('query-gallery distances')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_report(workdir: pathlib.Path, config, splits, describe: str, output,
                 rows: dict[str, dict[str, Any]],
                 extra_sections: list[tuple[str, str, str | None]] = (),
                 curves_path: pathlib.Path | None = None, step: int | None = None) -> None:
  """Writes report.md, the self-contained report.html and the plots into `workdir`, and the test
  metrics and rank lists to its TensorBoard events.

  splits: the dataset's 'train', 'query', 'gallery' splits.
  describe: a paragraph on the model and recipe.
  output: the evaluation (jreid.evaluator.EvalOutput).
  rows: the results table (the trained model, its further rows, baselines, published numbers).
  extra_sections: a method's own (title, markdown text, PNG file name in the workdir or None).
  curves_path: the training scalars (metrics.jsonl; default: the workdir's).
  step: the TensorBoard step of the test metrics (default: rows['trained']['steps' or 'step']).
  """
  workdir = pathlib.Path(workdir)
  sections: list[tuple[str, str, str | None]] = []  # (title, markdown body, image file)
  table = format_results_table(rows)
  sections.append(('Results', table, None))
  data_lines = '\n'.join(f'| {name} | {s.summary()["ids"]} | {s.summary()["images"]} | '
                         f'{s.summary()["cameras"]} |' for name, s in splits.items())
  sections.append(('Data', f'Dataset `{config.dataset.name}`.\n\n| split | ids | images | cameras |\n'
                   f'|---|---|---|---|\n{data_lines}', None))
  sections.append(('Model', describe, None))
  curves = metric_writers.read_jsonl(curves_path or workdir / 'metrics.jsonl')
  train_rows = [r for r in curves if 'loss' in r]
  if plot_training_curves(train_rows, workdir / 'training_curves.png'):
    sections.append(('Training curves', '', 'training_curves.png'))
  plot_cmc({'trained': output.result.cmc}, workdir / 'cmc.png')
  sections.append(('CMC', '', 'cmc.png'))
  query = output.query if output.query is not None else splits['query']
  gallery = output.gallery if output.gallery is not None else splits['gallery']
  if getattr(output.result, 'roc', None) is not None:
    plot_roc(output.result.roc, workdir / 'roc.png')
    sections.append(('ROC', 'Verification over all query-gallery pairs (same identity = '
                     'positive; same-camera positives and junk excluded).', 'roc.png'))
  plot_distance_histograms(query, gallery, output.query_distances,
                           workdir / 'distances.png')
  sections.append(('Distance distributions', '', 'distances.png'))
  plot_rank_lists(query, gallery, output.query_distances,
                  workdir / 'rank_lists.png', num_queries=config.eval.rank_list_queries)
  sections.append(('Rank lists', 'Each row: a query, then its top-10 gallery matches (green: same '
                   'identity, red: different; same-camera matches and junk removed as in the '
                   'protocol).', 'rank_lists.png'))

  sections.extend(extra_sections)

  title = f'jreid run report: {workdir.name}'
  generated = f'Generated {time.strftime("%Y-%m-%d %H:%M:%S")}.'
  md = [f'# {title}', '', generated, '']
  body = [f'<p>{generated}</p>']
  for name, text, image in sections:
    md += [f'## {name}', '', text, '']
    body.append(f'<h2>{html.escape(name)}</h2>')
    if text:
      body.append(markdown_to_html(text))
    if image:
      md += [f'![{name}]({image})', '']
      body.append(f'<img src="{png_data_uri(workdir / image)}" alt="{html.escape(name)}" '
                  f'title="{html.escape(image)}">')
  (workdir / 'report.md').write_text('\n'.join(md))
  (workdir / 'report.html').write_text(html_page(title, '\n'.join(body)))
  write_test_summary(workdir, rows.get('trained', {}), workdir / 'rank_lists.png', step=step)


def write_test_summary(workdir: pathlib.Path, metrics: dict[str, Any],
                       rank_lists: pathlib.Path | None, step: int | None = None) -> None:
  """The test metrics (`test/<name>`) and the rank-list image (`test/rank_lists`) as TensorBoard
  events in `<workdir>/tensorboard`, at `step` (default: metrics' 'steps' or 'step')."""
  if step is None:
    step = metrics.get('steps', metrics.get('step', 0))
  scalars = {f'test/{k}': float(v) for k, v in metrics.items()
             if k not in ('steps', 'step', 'wall_time_s') and isinstance(v, (int, float))
             and not isinstance(v, bool)}
  images = {}
  if rank_lists is not None and pathlib.Path(rank_lists).exists():
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with Image.open(rank_lists) as image:
      images['test/rank_lists'] = np.asarray(image.convert('RGB'))
  metric_writers.write_summary(pathlib.Path(workdir) / 'tensorboard', int(step), scalars, images)



# `jreid visualize`: FastReID's visualize_result, one image per query.


def per_query_scores(output, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """(AP [Q], rank of the first correct match [Q]) of every query of an evaluation under the
  Market protocol (`jreid.evaluation.metrics`); NaN and 0 for queries without a valid match."""
  from jreid.evaluation import compute_distance  # pylint: disable=g-import-not-at-top
  from jreid.evaluation import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  query, gallery = output.query, output.gallery
  n = len(query)
  ap = np.full(n, np.nan)
  first = np.zeros(n, np.int64)
  for start in range(0, n, chunk):
    stop = min(n, start + chunk)
    if output.distmat is not None:
      block = np.asarray(output.distmat[start:stop])
    else:
      block = np.asarray(compute_distance(output.query_features[start:stop],
                                          output.gallery_features, output.metric))
    hits, kept = metrics_lib.sorted_hits(
        block, np.asarray(query.pids[start:stop]), np.asarray(query.camids[start:stop]),
        np.asarray(gallery.pids), np.asarray(gallery.camids))
    valid, first_rank, query_ap, _ = metrics_lib.query_scores(hits, kept)
    rows = np.flatnonzero(valid) + start
    ap[rows], first[rows] = query_ap, first_rank
  return ap, first


SORTS = ('ap', 'worst', 'random')


def query_order(ap: np.ndarray, sort: str, seed: int = 0) -> np.ndarray:
  """The queries with a valid match (finite AP) in the order `sort` shows them: 'ap' best AP
  first, 'worst' worst first (ties by query index), 'random' a seeded permutation."""
  valid = np.flatnonzero(np.isfinite(ap))
  if sort == 'ap':
    return valid[np.argsort(-ap[valid], kind='stable')]
  if sort == 'worst':
    return valid[np.argsort(ap[valid], kind='stable')]
  if sort == 'random':
    return np.random.default_rng(seed).permutation(valid)
  raise ValueError(f'unknown sort {sort!r}: use one of {", ".join(SORTS)}.')


def plot_query_ranking(query, gallery, qi: int, distances: np.ndarray, ap: float,
                       path: pathlib.Path, top_k: int = 10, size: tuple[int, int] = (128, 64)
                       ) -> list[int]:
  """One query (left, with its id and AP) and its top-k gallery matches under the Market
  protocol (same identity and camera, and junk, removed), green: same identity, red: another;
  each with its rank and distance. Returns the gallery indices shown."""
  plt = pyplot()
  ranked = ranked_gallery(distances, query.pids[qi], query.camids[qi], gallery.pids,
                          gallery.camids, top_k)
  fig, axes = plt.subplots(1, top_k + 1, figsize=(1.1 * (top_k + 1), 2.9), squeeze=False)
  axes = axes[0]
  axes[0].imshow(decode_image(query.images[qi], size))
  axes[0].set_title(f'query id {query.pids[qi]}\ncam {query.camids[qi]}  AP {ap:.2f}', fontsize=7)
  for c in range(top_k):
    ax = axes[c + 1]
    if c < len(ranked):
      gi = ranked[c]
      ax.imshow(decode_image(gallery.images[gi], size))
      color = 'limegreen' if gallery.pids[gi] == query.pids[qi] else 'red'
      for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(3)
      ax.set_title(f'{c + 1}: id {gallery.pids[gi]}\nd={distances[gi]:.3f}', fontsize=7)
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  name = pathlib.PurePath(query.filenames[qi]).name if query.filenames else str(qi)
  fig.suptitle(name, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return [int(g) for g in ranked]


def visualize_result(output, out_dir: pathlib.Path, sort: str = 'ap', num: int = 20,
                     top_k: int = 10, size: tuple[int, int] = (128, 64), seed: int = 0,
                     progress: bool = False) -> list[dict[str, Any]]:
  """FastReID's `visualize_result`: one PNG per query (`plot_query_ranking`) for `num` queries in
  `sort` order, named `<position>_<query file>.png`, and the verification ROC (`roc.png`), in
  `out_dir`.

  Args:
    output: an evaluation (`jreid.evaluator.EvalOutput`) with its query and gallery splits.

  Returns:
    One record per image: position, query index and file, id, camera, AP, first-hit rank, the
    PNG's name and the gallery files shown.
  """
  from jreid import evaluation  # pylint: disable=g-import-not-at-top
  query, gallery = output.query, output.gallery
  ap, first = per_query_scores(output)
  order = query_order(ap, sort, seed)[:num]
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  records = []
  bar = None
  if progress and sys.stderr.isatty():
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=len(order), desc='visualize', unit='query', leave=False)
  for position, qi in enumerate(order, 1):
    qname = pathlib.PurePath(query.filenames[qi]).name
    png = f'{position:03d}_{pathlib.PurePath(qname).stem}.png'
    shown = plot_query_ranking(query, gallery, int(qi), output.query_distances(int(qi)),
                               float(ap[qi]), out_dir / png, top_k=top_k, size=size)
    records.append({'position': position, 'query': int(qi), 'file': query.filenames[qi],
                    'pid': int(query.pids[qi]), 'camid': int(query.camids[qi]),
                    'AP': float(ap[qi]), 'first_hit_rank': int(first[qi]), 'image': png,
                    'gallery': [gallery.filenames[g] for g in shown]})
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  roc = getattr(output.result, 'roc', None)
  if roc is None:
    if output.distmat is not None:
      roc = evaluation.evaluate_rank(output.distmat, query.pids, gallery.pids, query.camids,
                                     gallery.camids, roc=True).roc
    else:
      roc = evaluation.evaluate_features(
          output.query_features, output.gallery_features, query.pids, gallery.pids,
          query.camids, gallery.camids, metric=output.metric, roc=True).roc
  plot_roc(roc, out_dir / 'roc.png')
  return records


# `jreid search`: the results page.


def thumbnail_uri(path: pathlib.Path | str, height: int = 128) -> str | None:
  """A JPEG data URI of the image file at `path`, `height` pixels high; None if it cannot be
  read."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image = image.convert('RGB')
      width = max(1, round(image.width * height / max(image.height, 1)))
      buffer = io.BytesIO()
      image.resize((width, height)).save(buffer, format='JPEG', quality=85)
  except (OSError, ValueError):
    return None
  return 'data:image/jpeg;base64,' + base64.b64encode(buffer.getvalue()).decode()


def _tile(uri: str | None, caption: str, color: str) -> str:
  image = (f'<img src="{uri}" alt="">' if uri else
           '<div class="missing">image not found</div>')
  return (f'<figure style="border-color:{color}">{image}<figcaption>{caption}</figcaption>'
          '</figure>')


def write_search_page(path: pathlib.Path, title: str, intro: str,
                      queries: list[dict[str, Any]]) -> None:
  """A self-contained HTML page (thumbnails embedded as JPEG data URIs) of each query's ranked
  gallery items.

  Args:
    intro: Markdown shown under the title.
    queries: {'name', 'path', 'pid', 'results': [{'rank', 'name', 'path', 'distance', 'pid'}]};
      a result is framed green when both ids are known (>= 0) and equal, red when known and
      different, grey otherwise.
  """
  cache: dict[str, str | None] = {}

  def uri(p):
    key = str(p)
    if key not in cache:
      cache[key] = thumbnail_uri(p) if p else None
    return cache[key]

  body = [markdown_to_html(intro)]
  for q in queries:
    qpid = q.get('pid', -1)
    tiles = [_tile(uri(q['path']), f'<b>query</b><br>{html.escape(q["name"])}' +
                   (f'<br>id {qpid}' if qpid >= 0 else ''), '#333')]
    for r in q['results']:
      if qpid >= 0 and r.get('pid', -1) >= 0:
        color = 'limegreen' if r['pid'] == qpid else 'red'
      else:
        color = '#bbb'
      caption = (f'<b>{r["rank"]}</b> d={r["distance"]:.4f}<br>{html.escape(r["name"])}' +
                 (f'<br>id {r["pid"]}' if r.get('pid', -1) >= 0 else ''))
      tiles.append(_tile(uri(r['path']), caption, color))
    body.append('<div class="row">' + ''.join(tiles) + '</div>')
  style = ('<style>.row{display:flex;gap:6px;margin:10px 0;overflow-x:auto}'
           'figure{margin:0;border:3px solid;padding:2px;font-size:11px;max-width:120px;'
           'word-break:break-all}figure img{height:128px;display:block}'
           '.missing{height:128px;width:64px;background:#eee;font-size:10px}</style>')
  page = html_page(title, style + '\n'.join(body), width=1600)
  pathlib.Path(path).write_text(page)
