"""Progress display and the run report (`report.md`, `report.html` and PNG plots in the workdir)."""

from __future__ import annotations

import html
import io
import pathlib
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


def _md_table_to_html(table: str) -> str:
  lines = [l.strip() for l in table.strip().splitlines() if l.strip()]
  rows = [[c.strip() for c in l.strip('|').split('|')] for l in lines
          if not set(l.replace('|', '').strip()) <= set('-: ')]
  out = ['<table>']
  for i, row in enumerate(rows):
    tag = 'th' if i == 0 else 'td'
    out.append('<tr>' + ''.join(f'<{tag}>{html.escape(c)}</{tag}>' for c in row) + '</tr>')
  out.append('</table>')
  return '\n'.join(out)


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
                 curves_path: pathlib.Path | None = None) -> None:
  """Writes report.md and report.html with the results table and plots into `workdir`.

  splits: the dataset's 'train', 'query', 'gallery' splits.
  describe: a paragraph on the model and recipe.
  output: the evaluation (jreid.evaluator.EvalOutput).
  rows: the results table (the trained model, its further rows, baselines, published numbers).
  extra_sections: a method's own (title, markdown text, PNG file name in the workdir or None).
  curves_path: the training scalars (metrics.jsonl; default: the workdir's).
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
  md = [f'# {title}', '', f'Generated {time.strftime("%Y-%m-%d %H:%M:%S")}.', '']
  body = []
  for name, text, image in sections:
    md += [f'## {name}', '', text, '']
    body.append(f'<h2>{html.escape(name)}</h2>')
    if text.lstrip().startswith('|') or '\n|' in text:
      pre, _, tab = text.partition('|')
      if pre.strip():
        body.append(f'<p>{html.escape(pre.strip())}</p>')
      body.append(_md_table_to_html('|' + tab))
    elif text:
      body.append(f'<p>{html.escape(text)}</p>')
    if image:
      md += [f'![{name}]({image})', '']
      body.append(f'<img src="{image}" alt="{html.escape(name)}">')
  (workdir / 'report.md').write_text('\n'.join(md))
  (workdir / 'report.html').write_text(
      '<!doctype html><html><head><meta charset="utf-8"><title>' + html.escape(title) +
      '</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}'
      'table{border-collapse:collapse}td,th{border:1px solid #aaa;padding:3px 8px}'
      'img{max-width:100%}</style></head><body><h1>' + html.escape(title) + '</h1>' +
      '\n'.join(body) + '</body></html>\n')

