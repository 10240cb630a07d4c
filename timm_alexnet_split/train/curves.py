"""acc.png and loss.png of a run folder, drawn from its summary.csv (matplotlib's Figure: no pyplot, no backend)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .. import run_files as RF
from ..atomic import replace_when_done

# file, y label, series (summary.csv column, legend label, line style)
_FIGURES = [
    (RF.ACC_PNG, 'accuracy (%)', [('train_top1', 'train top-1', '-'), ('eval_top1', 'validation top-1', '-'),
                                 ('eval_top5', 'validation top-5', '--')]),
    (RF.LOSS_PNG, 'cross-entropy loss', [('train_loss', 'train', '-'), ('eval_loss', 'validation', '-')]),
]


def read_summary(path: Path) -> List[Dict[str, float]]:
    """summary.csv's rows as floats (NaN where a value is missing)."""
    rows = []
    if path.is_file():
        with open(path, newline='') as f:
            for r in csv.DictReader(f):
                rows.append({k: (float(v) if v not in ('', None) else math.nan) for k, v in r.items() if k})
    return rows


def plot_curves(run_dir: Path, title: str = '') -> None:
    """acc.png (top-1 train/validation, top-5) and loss.png from summary.csv, with the learning rate on a second
    axis when it changed (log scale unless it reaches 0); dotted lines mark the changes when they are few and far
    apart (steps, plateau decays), not the every-epoch changes of a cosine schedule."""
    rows = read_summary(run_dir / RF.SUMMARY)
    if not rows:
        return
    ep = [r['epoch'] + 1 for r in rows]
    lr_changes = [(ep[i], rows[i]['lr']) for i in range(1, len(rows))
                  if 'lr' in rows[i] and not math.isclose(rows[i]['lr'], rows[i - 1]['lr'], rel_tol=1e-6)]
    for fname, ylabel, series in _FIGURES:
        fig = Figure(figsize=(7, 4.2), dpi=110)
        ax = fig.subplots()
        _plot_series(ax, ep, rows, series)
        handles, labels = ax.get_legend_handles_labels()
        _plot_lr(ax, ep, rows, lr_changes, handles, labels)
        if fname == RF.ACC_PNG:
            ax.set_ylim(-2, 102)
        else:
            finite = [y for key, _, _ in series for y in (r.get(key, math.nan) for r in rows) if y > 0]
            if finite and max(finite) / min(finite) > 30:
                ax.set_yscale('log')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel('epoch (completed)')
        ax.set_ylabel(ylabel)
        ax.set_xlim(0.5, max(ep) + 0.5)
        ax.grid(alpha=0.3)
        ax.legend(handles, labels, loc='best', fontsize=8)
        if title:
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        with replace_when_done(run_dir / fname, True, 'while drawing') as tmp:
            fig.savefig(tmp, format='png')


def _plot_series(ax: Any, ep: List[float], rows: List[Dict[str, float]], series: Sequence[Tuple[str, str, str]]) -> None:
    for key, label, style in series:
        ys = [r.get(key, math.nan) for r in rows]
        if any(not math.isnan(y) for y in ys):
            ax.plot(ep, ys, style, marker='o' if len(ep) <= 30 else None, ms=3, label=label)


def _plot_lr(ax: Any, ep: List[float], rows: List[Dict[str, float]], lr_changes: List[Tuple[float, float]],
             handles: List[Any], labels: List[str]) -> None:
    """The learning rate on a second axis when it changed; its changes marked when they are few."""
    lrs = [r.get('lr', math.nan) for r in rows]
    if lr_changes and all(lr >= 0 for lr in lrs):
        ax2 = ax.twinx()
        line, = ax2.plot(ep, lrs, color='grey', lw=1, alpha=0.7, drawstyle='steps-mid')
        if min(lrs) > 0:
            ax2.set_yscale('log')
        else:
            ax2.set_ylim(bottom=0)
        ax2.set_ylabel('learning rate', color='grey', fontsize=8)
        ax2.tick_params(axis='y', colors='grey', labelsize=7)
        handles.append(line)
        labels.append('learning rate (right)')
    if len(lr_changes) <= 5 and 3 * len(lr_changes) <= len(rows):
        for x, lr in lr_changes:
            ax.axvline(x - 0.5, color='grey', ls=':', lw=1)
            ax.annotate(f'lr {lr:.0e}', (x - 0.5, 1.0), xycoords=('data', 'axes fraction'), fontsize=7,
                        color='grey', rotation=90, ha='right', va='top')
