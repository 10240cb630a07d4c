"""conv1 over a training run: read the per-epoch snapshots (conv1/epoch_NNNN.npy, conv1/towers.json) and show
both axes (chromatic fraction by each measure, luminance frequency) per epoch: evolution.json, .gif, .png.

Torch-free (numpy, matplotlib). W - W0 (what training added) is measured when the epoch-0 snapshot exists.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..atomic import replace_when_done
from ..errors import KernelsError, one_line
from .compare import ALPHA, COLOUR_THRESHOLD, by_measure, compare_axes, frequency_stats, tower_stats
from .figures import display_order, kernel_figure, kernel_tiles, mosaic, wrap
from .files import DURING, PROG, check_out, clean, make_out, progress, save_figure, write_json
from .measures import (
    DEFAULT_MEASURE,
    LOW_PASS_CUTOFF,
    PERMUTATIONS,
    SEED,
    SHORT,
    chromatic_measures,
    luminance_orientation_frequency,
    measure_label,
    resolve_measure,
)
from .snapshots import read_snapshots, split

MAX_GIF_FRAMES = 100
EVOLUTION_FILES = ('evolution.json', 'evolution.gif', 'evolution.png')


def _measure_epoch(w: np.ndarray, w0: Optional[np.ndarray], counts: Sequence[int], measure: str, cutoff: float,
                   permutations: int, seed: int, alpha: float) -> Dict[str, Any]:
    """Both axes of one epoch: per-tower measures and frequencies, the between-tower tests, the verdict."""
    groups = split(w, counts)
    inits = split(w0, counts) if w0 is not None else [None] * len(groups)
    measures = [chromatic_measures(g, g0, cutoff) for g, g0 in zip(groups, inits)]
    cfs = [m[measure] for m in measures]
    freqs = [luminance_orientation_frequency(g)[1] for g in groups]
    return {'cfs': cfs, 'stats': [tower_stats(c) for c in cfs], 'freq': [frequency_stats(f) for f in freqs],
            'test': compare_axes(cfs, freqs, measure_label(measure, cutoff), permutations, seed, alpha),
            'by_measure': by_measure(measures, permutations, seed)}


def evolution(run_dir: Path, out: Optional[Path] = None, bgr: bool = False, sort: bool = False, force: bool = False,
              permutations: int = PERMUTATIONS, seed: int = SEED, alpha: float = ALPHA, fps: float = 4.0,
              quiet: bool = False, measure: str = DEFAULT_MEASURE, cutoff: float = LOW_PASS_CUTOFF) -> Dict[str, Any]:
    """Animated GIF of conv1 across epochs, a plot of both axes per tower over epochs, evolution.json."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / 'kernel_evolution'
    check_out(out, EVOLUTION_FILES, force)
    epochs, arrays, meta = read_snapshots(run_dir)
    w0 = arrays[0] if epochs[0] == 0 else None
    requested = measure
    measure, choice, warning = resolve_measure(requested, arrays[0].shape, cutoff, w0 is not None)
    if warning:
        print(f'{PROG}: warning: {warning}', file=sys.stderr)
    counts = meta['kernels_per_tower']
    order = 'BGR' if bgr else meta['channel_order']
    per_epoch = []
    for i, w in enumerate(arrays, 1):
        per_epoch.append(_measure_epoch(w, w0, counts, measure, cutoff, permutations, seed, alpha))
        progress(i, len(arrays), 'measuring epochs')
    report = clean({**_evolution_report(run_dir, epochs, meta, order, counts, per_epoch, measure, cutoff, alpha,
                                        permutations), 'measure_requested': requested, 'measure_choice': choice})
    make_out(out)
    try:
        _evolution_gif(epochs, arrays, counts, per_epoch, out / 'evolution.gif', order == 'BGR', sort, fps,
                       run_dir.name, SHORT[measure])
        _evolution_plot(report, out / 'evolution.png', run_dir.name)
        write_json(report, out / 'evolution.json')
    except OSError as e:
        raise KernelsError(f'cannot write into {out} ({e.strerror or one_line(e)})') from None
    if not quiet:
        _print_evolution(report, out)
    return report


def _evolution_report(run_dir: Path, epochs: List[int], meta: Dict[str, Any], order: str, counts: Sequence[int],
                      per_epoch: List[Dict[str, Any]], measure: str, cutoff: float, alpha: float,
                      permutations: int) -> Dict[str, Any]:
    names = list(per_epoch[0]['by_measure'])
    towers = [{'index': t, 'kernels': counts[t],
               **{k: [s['stats'][t][k] for s in per_epoch] for k in ('mean', 'median', 'fraction_above_0_3')},
               'q25': [float(np.nanpercentile(s['cfs'][t], 25)) if np.isfinite(s['cfs'][t]).any() else None
                       for s in per_epoch],
               'q75': [float(np.nanpercentile(s['cfs'][t], 75)) if np.isfinite(s['cfs'][t]).any() else None
                       for s in per_epoch],
               **{k: [s['freq'][t][k] for s in per_epoch] for k in ('frequency_mean', 'frequency_median')},
               'mean_by_measure': {m: [s['by_measure'][m]['towers'][t]['mean'] for s in per_epoch] for m in names},
               'chromatic_fraction_final': per_epoch[-1]['cfs'][t]} for t in range(len(counts))]
    last = per_epoch[-1]['test']
    series = lambda key: [s['test'][key] for s in per_epoch]  # noqa: E731
    return {
        'tool': PROG, 'run_dir': str(run_dir), 'epochs': epochs, **meta, 'channel_order': order,
        'measure': measure, 'measure_label': measure_label(measure, cutoff), 'low_pass_cutoff': cutoff,
        'measures': {m: measure_label(m, cutoff) for m in names},
        'colour_threshold': COLOUR_THRESHOLD, 'alpha': alpha, 'towers': towers,
        'difference_of_means': series('difference_of_means'), 'p_value': series('p_value'),
        'effect_size': series('effect_size'), 'effect_size_measure': last['effect_size_measure'],
        'frequency_p_value': series('frequency_p_value'), 'frequency_effect_size': series('frequency_effect_size'),
        'p_value_by_measure': {m: [s['by_measure'][m]['p_value'] for s in per_epoch] for m in names},
        'test': last['test'], 'permutations': permutations,
        'verdict': series('verdict'), 'final_verdict': last['verdict'],
        'figures': {'animation': 'evolution.gif', 'plot': 'evolution.png'},
    }


def _print_evolution(report: Dict[str, Any], out: Path) -> None:
    epochs = report['epochs']
    fmt = lambda v: 'n/a' if v is None else f'{v:.3f}'  # noqa: E731
    print(f'{report["run_dir"]}: {len(epochs)} snapshots (epochs {epochs[0]}-{epochs[-1]}), towers of '
          f'{report["kernels_per_tower"]} kernels; measure: {report["measure_label"]}')
    for t in report['towers']:
        print(f'  tower {t["index"]}: mean {fmt(t["mean"][0])} (epoch {epochs[0]}) -> {fmt(t["mean"][-1])} '
              f'(epoch {epochs[-1]}), frequency {fmt(t["frequency_mean"][0])} -> {fmt(t["frequency_mean"][-1])} '
              'cycles/px')
    print(f'verdict at epoch {epochs[-1]}: {report["final_verdict"]}')
    print(f'wrote {out / "evolution.gif"}, evolution.png, evolution.json')


def _evolution_gif(epochs: Sequence[int], arrays: Sequence[np.ndarray], counts: Sequence[int], per_epoch: Sequence,
                   path: Path, bgr: bool, sort: bool, fps: float, name: str, short: str) -> None:
    from matplotlib.animation import PillowWriter
    orders = display_order(per_epoch[-1]['cfs'], sort)
    frames = list(range(len(epochs)))
    if len(frames) > MAX_GIF_FRAMES:
        frames = sorted(set(np.linspace(0, len(epochs) - 1, MAX_GIF_FRAMES).round().astype(int).tolist()))

    def content(i: int):
        groups = [g[o] for g, o in zip(split(arrays[i], counts), orders)]
        means = ', '.join(f'tower {t} {s["mean"]:.2f}' for t, s in enumerate(per_epoch[i]['stats'])
                          if s['mean'] is not None) or 'n/a'
        titles = [f'tower {t}: {len(g)} kernels' + (' (sorted by final chromatic fraction)' if sort else '')
                  for t, g in enumerate(groups)]
        return groups, titles, f'{name}: conv1 at epoch {epochs[i]}\nmean {short}: {means}'

    groups, titles, header = content(frames[0])
    fig, images, cols, chars = kernel_figure(groups, titles, header, bgr, header_lines=3)
    header_text = fig.texts[0]
    writer = PillowWriter(fps=fps)
    with replace_when_done(path, True, DURING, keep_suffix=True) as tmp:   # Pillow picks GIF from the name
        writer.setup(fig, str(tmp), dpi=fig.dpi)
        for n, i in enumerate(frames, 1):
            groups, _, header = content(i)
            for im, g in zip(images, groups):
                im.set_data(mosaic(kernel_tiles(g, bgr), cols))
            header_text.set_text(wrap(header, chars))
            for _ in range(1 if i != frames[-1] else max(1, int(fps * 2))):  # hold the last frame ~2 s
                writer.grab_frame()
            progress(n, len(frames), 'drawing frames')
        writer.finish()


def _series(values: Sequence[Optional[float]]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], float)


def _evolution_plot(report: Dict[str, Any], path: Path, name: str) -> None:
    """Per tower over epochs: mean chromatic fraction (chosen measure, band: quartiles; plain dotted), mean
    luminance frequency, and the permutation p-values of both axes."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    epochs = report['epochs']
    has_p = any(p is not None for p in report['p_value'])
    rows = 3 if has_p else 2
    fig = Figure(figsize=(8.0, 8.6 if has_p else 6.4), dpi=100)
    axes = fig.subplots(rows, 1, sharex=True, gridspec_kw={'height_ratios': [3, 1.6, 1.6][:rows]})
    marker = 'o' if len(epochs) <= 30 else None
    ax = axes[0]
    for t in report['towers']:
        line, = ax.plot(epochs, _series(t['mean']), marker=marker, ms=3, label=f'tower {t["index"]}')
        ax.fill_between(epochs, _series(t['q25']), _series(t['q75']), color=line.get_color(), alpha=0.15, lw=0)
        if report['measure'] != 'plain':
            ax.plot(epochs, _series(t['mean_by_measure']['plain']), ls=':', lw=1, color=line.get_color(),
                    label=f'tower {t["index"]}, whole kernel')
    ax.axhline(COLOUR_THRESHOLD, ls='--', lw=1, color='0.4', label=f'{COLOUR_THRESHOLD} threshold')
    ax.axhline(2 / 3, ls=':', lw=1, color='0.6', label='random kernels (2/3)')
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel(wrap(f'mean {SHORT[report["measure"]]} (band: quartiles)', 30), fontsize=9)
    ax.set_title(wrap(f'{name}, epoch {epochs[-1]}\n{report["final_verdict"]}', 100), fontsize=9)
    ax.legend(fontsize=7, loc='best', framealpha=0.8, ncol=2)
    ax.grid(alpha=0.3)
    axf = axes[1]
    for t in report['towers']:
        axf.plot(epochs, _series(t['frequency_mean']), marker=marker, ms=3, label=f'tower {t["index"]}')
    axf.set_ylabel('mean luminance\nfrequency (cycles/px)', fontsize=9)
    axf.grid(alpha=0.3)
    if has_p:
        ax2 = axes[2]
        ax2.semilogy(epochs, _series(report['p_value']), color='black', lw=1.2, marker=marker, ms=3,
                     label=f'colour ({SHORT[report["measure"]]})')
        for m, ps in report['p_value_by_measure'].items():
            if m != report['measure']:
                ax2.semilogy(epochs, _series(ps), lw=0.9, ls='--', label=f'colour ({SHORT[m]})')
        ax2.semilogy(epochs, _series(report['frequency_p_value']), color='tab:purple', lw=1.2, marker=marker, ms=3,
                     label='spatial frequency')
        ax2.axhline(report['alpha'], ls='--', lw=1, color='tab:red', label=f'alpha {report["alpha"]}')
        ax2.axhline(1 / (report['permutations'] + 1), ls=':', lw=1, color='0.5', label='smallest p this test can give')
        ax2.set_ylim(1e-5, 1.5)
        ax2.set_ylabel('permutation p', fontsize=9)
        ax2.legend(fontsize=7, loc='best', ncol=2, framealpha=0.8)
        ax2.grid(alpha=0.3)
    axes[-1].set_xlabel('epoch')
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    save_figure(fig, path)
