"""The sweep's figure: each run's effect size (eta squared) against the control band, per tower count, for colour and
for frequency (matplotlib, Agg; numpy only besides)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from .atomic import replace_when_done

PANELS = (('colour', 'effect_size', 'p_value', 'colour: eta squared of the chromatic fraction'),
          ('frequency', 'frequency_effect_size', 'frequency_p_value', 'frequency: eta squared of the luminance frequency'))


def plot_sweep(runs: Sequence[Dict[str, Any]], summary: Sequence[Dict[str, Any]], path: Path, title: str,
               alpha: float, learned_top1: float = 90.0) -> None:
    """Three panels. Colour and frequency: x: tower count; a grey band: the control's 95% interval (line: its mean);
    dots: runs (filled: p < alpha on that axis), labelled with the seed and top-1; a black bar: the runs' mean with
    its 95% bootstrap interval. The split rate: per tower count the share of runs beyond the colour control, over
    all runs and over the runs that learned, each with its 95% Wilson interval and x/n; no bar where n = 0."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    counts = [s['towers'] for s in summary if s['towers'] >= 2]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), constrained_layout=True, width_ratios=[1, 1, 0.8])
    for ax, (axis, field, pfield, label) in zip(axes, PANELS):
        _panel(ax, runs, summary, counts, axis, field, pfield, alpha)
        ax.set_title(label, fontsize=10)
    _rate_panel(axes[2], summary, counts, learned_top1)
    n1 = sum(1 for r in runs if r['towers'] == 1)
    title = '\n'.join(textwrap.wrap(title, 150))
    fig.suptitle(f'{title}\ncontrol: random partitions of {n1} one-tower run(s)\' conv1 kernels into the towers\' '
                 f'sizes (grey: 95%, line: mean); runs labelled seed and validation top-1', fontsize=10)
    handles = [
        plt.Line2D([], [], marker='o', ls='', color='tab:red', label=f'run, p < {alpha:g} on this axis'),
        plt.Line2D([], [], marker='o', ls='', mfc='white', color='tab:blue', label=f'run, p >= {alpha:g}'),
        plt.Line2D([], [], marker='_', ms=14, mew=2, ls='', color='black', label='mean of runs, 95% bootstrap'),
        matplotlib.patches.Patch(color='0.85', label='control 95% interval')]
    fig.legend(handles=handles, loc='outside lower center', ncol=4, fontsize=8, frameon=False)
    try:
        with replace_when_done(path, True, 'while the sweep drew it') as tmp:  # per-process temporary name
            fig.savefig(tmp, dpi=110, format='png')
    finally:
        plt.close(fig)


def _panel(ax: Any, runs: Sequence[Dict[str, Any]], summary: Sequence[Dict[str, Any]], counts: List[int], axis: str,
           field: str, pfield: str, alpha: float) -> None:
    top = 0.0
    for x, n in enumerate(counts):
        s = next(s for s in summary if s['towers'] == n)
        c = s[axis]['control']
        if c is not None:
            ax.add_patch(_rect(x, c['low'], c['high']))
            ax.plot([x - 0.38, x + 0.38], [c['mean']] * 2, color='0.45', lw=1)
            top = max(top, c['high'])
        mine = [r for r in runs if r['towers'] == n and r[field] is not None]
        offsets = np.linspace(-0.32, -0.04, len(mine)) if len(mine) > 1 else [-0.15]
        for dx, r in zip(offsets, mine):
            hit = r[pfield] is not None and r[pfield] < alpha
            ax.plot(x + dx, r[field], 'o', ms=7, color='tab:red' if hit else 'tab:blue', mfc=None if hit else 'white')
            top1 = '' if r.get('val_top1') is None else f' {r["val_top1"]:.0f}%'
            ax.annotate(f's{r["seed"]}{top1}', (x + dx, r[field]), xytext=(5, 0), textcoords='offset points', fontsize=7,
                        va='center', color='0.3')
            top = max(top, r[field])
        e = s[axis]['effect_size']
        if e is not None:
            ax.errorbar(x + 0.3, e['mean'], yerr=[[e['mean'] - e['low']], [e['high'] - e['mean']]], fmt='_', ms=14,
                        mew=2, color='black', capsize=3)
            top = max(top, e['high'])
    labels = []
    for n in counts:
        s = next(s for s in summary if s['towers'] == n)
        labels.append(f'{n} towers\n{s[axis]["split_runs"]}/{s["runs"]} at p<{alpha:g}')
    ax.set_xticks(range(len(counts)), labels)
    ax.set_xlim(-0.6, len(counts) - 0.4)
    ax.set_ylim(0, max(top * 1.15, 0.02))
    ax.set_ylabel('eta squared (between towers / total)')
    ax.grid(axis='y', alpha=0.3)


def _rate_panel(ax: Any, summary: Sequence[Dict[str, Any]], counts: List[int], learned_top1: float) -> None:
    for x, n in enumerate(counts):
        rate = next(s for s in summary if s['towers'] == n).get('split_rate') or {}
        for dx, population, colour in ((-0.12, 'all', '0.55'), (0.12, 'learned', 'black')):
            p = rate.get(population)
            if not p or not p['n']:
                ax.annotate('no run' if population == 'all' else 'no learned run', (x + dx, 0.02), rotation=90,
                            fontsize=7, ha='center', va='bottom', color=colour)
                continue
            low, high = p['wilson']
            err = [[max(0.0, p['estimate'] - low)], [max(0.0, high - p['estimate'])]]
            ax.errorbar(x + dx, p['estimate'], yerr=err, fmt='o', ms=6, color=colour, capsize=3)
            ax.annotate(f'{p["x"]}/{p["n"]}', (x + dx, high), xytext=(0, 3), textcoords='offset points', fontsize=7,
                        ha='center', va='bottom', color=colour)
    learned = [next(s for s in summary if s['towers'] == n).get('learned_runs') or {'x': 0, 'n': 0} for n in counts]
    ax.set_xticks(range(len(counts)), [f'{n} towers\nlearned {p["x"]}/{p["n"]}' for n, p in zip(counts, learned)])
    ax.set_xlim(-0.6, len(counts) - 0.4)
    ax.set_ylim(0, 1.3)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel('share of runs beyond the colour control')
    ax.set_title('split rate, 95% Wilson interval', fontsize=10)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(handles=[ax.errorbar([], [], yerr=[], fmt='o', color='0.55', label='all runs'),
                       ax.errorbar([], [], yerr=[], fmt='o', color='black',
                                   label=f'runs that learned (top-1 >= {learned_top1:g} %)')],
              loc='upper center', fontsize=7, frameon=False, ncol=2)


def _rect(x: float, low: float, high: float) -> Any:
    import matplotlib.patches as patches
    return patches.Rectangle((x - 0.38, low), 0.76, high - low, color='0.85', zorder=0)


def plot_dose(rows: Sequence[Dict[str, Any]], path: Path, towers: int) -> None:
    """Two panels against epochs: the split rate over all runs and over the learned runs (95% Wilson) with the share
    that learned; conv1's relative change from its start (mean, min-max) and the mean colour eta squared."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)
    rows = [r for r in rows if r['epochs'] is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    x = [r['epochs'] for r in rows]
    for key, colour, dx, label in (('learned', 'tab:green', -0.09, 'learned'), ('split_all', '0.55', 0.0, 'split, all'),
                                   ('split_learned', 'black', 0.09, 'split, learned runs')):
        pts = [(e * (1 + dx), r[key]) for e, r in zip(x, rows) if r.get(key) and r[key]['n']]
        if not pts:
            continue
        xs, ps = zip(*pts)
        est = [p['estimate'] for p in ps]
        err = [[max(0.0, p['estimate'] - p['wilson'][0]) for p in ps], [max(0.0, p['wilson'][1] - p['estimate']) for p in ps]]
        left.errorbar(xs, est, yerr=err, fmt='o-', color=colour, capsize=3, label=label)
        for xi, p in zip(xs, ps):
            left.annotate(f'{p["x"]}/{p["n"]}', (xi, p['wilson'][1]), xytext=(0, 3), textcoords='offset points',
                          fontsize=7, ha='center', color=colour)
    left.set(xscale='log', ylim=(0, 1.12), xlabel='epochs', ylabel='share of runs',
             title=f'{towers} towers: learned, and split beyond the colour control (95% Wilson)')
    for ax in (left, right):
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    left.set_xticks(x, [str(e) for e in x])
    left.legend(fontsize=8, loc='lower right')
    changed = [r for r in rows if r['conv1_change_mean'] is not None]  # a sweep without W0 has no change to show
    mean = [r['conv1_change_mean'] for r in changed]
    err = [[max(0.0, m - r['conv1_change_min']) for m, r in zip(mean, changed)],
           [max(0.0, r['conv1_change_max'] - m) for m, r in zip(mean, changed)]]
    right.errorbar([r['epochs'] for r in changed], mean, yerr=err, fmt='o-', color='tab:blue', capsize=3,
                   label='conv1 change ||W - W0|| / ||W0||')
    right.set(xscale='log', xlabel='epochs', ylabel='relative change (mean, min-max)', title="conv1's distance from random")
    right.set_xticks(x, [str(e) for e in x])
    right.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    twin = right.twinx()
    with_eta = [r for r in rows if r['colour_eta2_mean'] is not None]
    twin.plot([r['epochs'] for r in with_eta], [r['colour_eta2_mean'] for r in with_eta], 's--', color='tab:red',
              label='colour eta squared (mean)')
    twin.set_ylabel('colour eta squared', color='tab:red')
    right.legend(handles=right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0], fontsize=8,
                 loc='upper left')
    try:
        with replace_when_done(path, True, 'while the sweep drew it') as tmp:
            fig.savefig(tmp, dpi=110, format='png')
    finally:
        plt.close(fig)
