"""The kernel tool's figures: Figure-3-style kernel grids, per-tower chromatic fraction, colour against
frequency, and conv1 ordered along the latent component. Torch-free (numpy, matplotlib).

Every figure is sized from its content so that it reads at any number of kernels: each kernel is drawn at
least TILE_PX pixels wide (nearest-neighbour upscaling), the canvas is at least MIN_WIDTH_PX wide, and titles
are wrapped to the canvas.
"""
from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .files import save_figure

TILE_PX = 44           # smallest drawn size of one kernel, in pixels
MIN_WIDTH_PX = 720     # narrowest canvas, so that a title of a few lines fits
DPI = 100
CHAR_PX = {10: 7.4, 9: 6.8, 8: 6.0}   # generous average glyph width of DejaVu Sans at 100 dpi, per font size
COLOURS = ['#4c72b0', '#dd8452', '#55a868', '#c44e52', '#8172b3', '#937860', '#da8bc3', '#8c8c8c']


def wrap(text: str, width: int) -> str:
    """Each line of ``text`` wrapped to ``width``, never breaking 'p < 1e-4' or 'p = 0.62'."""
    keep = re.sub(r'\bp ([<=]) ', 'p\u00a0\\1\u00a0', text)
    return '\n'.join(textwrap.fill(line, max(20, width)) for line in keep.split('\n')).replace('\u00a0', ' ')


def wrap_px(text: str, width_px: float, fontsize: int) -> str:
    """``text`` wrapped to fit ``width_px`` pixels at ``fontsize``."""
    return wrap(text, int(width_px / CHAR_PX.get(fontsize, 0.7 * fontsize)))


def kernel_tiles(w: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Kernels (n, 3, h, w) as RGB images (n, h, w, 3) in [0, 1], each contrast-normalised on its own.

    Min-max over all three channels of a kernel, so a grey kernel stays grey; ``bgr`` flips Caffe-order weights.
    """
    w = np.asarray(w, np.float64)
    if bgr:
        w = w[:, ::-1]
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    span = w.max(axis=(1, 2, 3), keepdims=True) - lo
    tiles = np.where(span > 0, (w - lo) / np.where(span > 0, span, 1), 0.5)
    return tiles.transpose(0, 2, 3, 1)


def mosaic(tiles: np.ndarray, cols: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """Tiles (n, h, w, 3) in a grid of ``cols`` columns with ``pad`` pixels of ``fill`` between them."""
    n, h, w, _ = tiles.shape
    rows = max(1, math.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), fill, np.float64)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = t
    return out


def columns(counts: Sequence[int]) -> int:
    """Kernels per row: all of them up to 16, else 16 (or sqrt(n) for very large towers)."""
    return max(1, min(max(counts), max(16, math.ceil(math.sqrt(max(counts))))))


def display_order(cfs: Sequence[np.ndarray], sort: bool) -> List[np.ndarray]:
    """Per tower the display order: by chromatic fraction (greyest first, NaN last) when ``sort``, else as stored."""
    return [np.argsort(np.nan_to_num(c, nan=2.0), kind='stable') if sort else np.arange(len(c)) for c in cfs]


def scale_for(kernel_width: int) -> int:
    """Screen pixels per kernel pixel so that a kernel is drawn at least TILE_PX wide (at least 4)."""
    return max(4, math.ceil(TILE_PX / max(1, kernel_width)))


def kernel_figure(groups: Sequence[np.ndarray], titles: Sequence[str], header: str, bgr: bool,
                  scale: Optional[int] = None, header_lines: Optional[int] = None):
    """Figure with one labelled kernel block per tower, each kernel upscaled (nearest neighbour).

    Titles are wrapped to the canvas. Returns (figure, images, columns, header width in characters) so that
    animation frames can update the images and the header.
    """
    from matplotlib.figure import Figure
    cols = columns([len(g) for g in groups])
    kw = max(g.shape[-1] for g in groups)
    # at least TILE_PX per kernel; few kernels grow (up to 8x) to fill the narrowest canvas
    scale = scale or max(scale_for(kw), min(8, MIN_WIDTH_PX // (cols * (kw + 1))))
    blocks = [mosaic(kernel_tiles(g, bgr), cols) for g in groups]
    margin_px = 14
    content_px = max(b.shape[1] for b in blocks) * scale
    fig_w = max(content_px, MIN_WIDTH_PX) + 2 * margin_px
    header_chars = int((fig_w - 2 * margin_px) / CHAR_PX[10])
    header = wrap(header, header_chars)
    lines = max(header.count('\n') + 1, header_lines or 0)
    titles = [wrap_px(t, fig_w - 2 * margin_px, 9) for t in titles]
    label_px = [15 * (t.count('\n') + 1) + 10 for t in titles]
    header_px = 17 * lines + 18
    heights = [b.shape[0] * scale for b in blocks]
    total_px = header_px + sum(heights) + sum(label_px) + margin_px
    fig = Figure(figsize=(fig_w / DPI, total_px / DPI), dpi=DPI)
    fig.text(margin_px / fig_w, 1 - 8 / total_px, header, va='top', ha='left', fontsize=10)
    images, y = [], total_px - header_px
    for block, h, title, lab in zip(blocks, heights, titles, label_px):
        y -= lab
        ax = fig.add_axes((margin_px / fig_w, (y - h) / total_px, block.shape[1] * scale / fig_w, h / total_px))
        images.append(ax.imshow(block, interpolation='nearest', aspect='auto'))
        ax.set_axis_off()
        ax.set_title(title, loc='left', fontsize=9, pad=4)
        y -= h
    return fig, images, cols, header_chars


def plot_kernels(groups: Sequence[np.ndarray], cfs: Sequence[np.ndarray], stats: Sequence[Dict[str, Any]],
                 header: str, path: Path, bgr: bool, sort: bool, measure: str) -> None:
    """Figure-3-style picture: kernels in a grid, one block per tower, labelled, optionally sorted."""
    orders = display_order(cfs, sort)
    titles = []
    for i, (g, s) in enumerate(zip(groups, stats)):
        m = 'n/a' if s['mean'] is None else f"{s['mean']:.2f}"
        above = '' if s['fraction_above_0_3'] is None else f", {s['fraction_above_0_3']:.0%} above 0.3"
        titles.append(f'tower {i}: {len(g)} kernels {g.shape[2]}x{g.shape[3]}, mean {measure} {m}{above}'
                      + (' (sorted, greyest first)' if sort else ''))
    fig = kernel_figure([g[o] for g, o in zip(groups, orders)], titles, header, bgr)[0]
    save_figure(fig, path)


def plot_chromatic_fraction(cfs: Sequence[np.ndarray], stats: Sequence[Dict[str, Any]], title: str, path: Path,
                            measure: str, threshold: float, seed: int = 0) -> None:
    """Strip plot of each kernel's chromatic fraction per tower, with box, mean and the 0.3 threshold."""
    from matplotlib.figure import Figure
    n = len(cfs)
    fig = Figure(figsize=(max(7.5, 1.3 * n + 3.0), 5.0), dpi=DPI)
    ax = fig.add_subplot()
    rng = np.random.default_rng(seed)
    data = [c[np.isfinite(c)] for c in cfs]
    ax.boxplot([d if len(d) else [np.nan] for d in data], positions=range(n), widths=0.5, showfliers=False,
               medianprops={'color': 'black'}, boxprops={'color': '0.5'}, whiskerprops={'color': '0.5'},
               capprops={'color': '0.5'})
    for i, d in enumerate(data):
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(d)), d, s=14, alpha=0.75, color=COLOURS[i % len(COLOURS)],
                   edgecolors='none', zorder=3)
        if stats[i]['mean'] is not None:
            ax.scatter([i], [stats[i]['mean']], marker='D', s=40, color='black', zorder=4,
                       label='tower mean' if i == 0 else None)
    ax.axhline(threshold, ls='--', lw=1, color='0.4', label=f'{threshold} threshold')
    ax.set_xticks(range(n), [f'tower {i}\n(n={len(c)})' for i, c in enumerate(cfs)])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel(wrap(f'{measure}  (0 grey, 1 no luminance)', 40), fontsize=9)
    ax.set_title(wrap_px(title, fig.get_figwidth() * DPI - 190, 9), fontsize=9)
    ax.legend(loc='upper left', fontsize=8, framealpha=0.8)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_colour_frequency(cfs: Sequence[np.ndarray], freqs: Sequence[np.ndarray], title: str, path: Path,
                          measure: str) -> None:
    """Each kernel's chromatic fraction against its luminance frequency, coloured by tower, tower means marked."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7.2, 5.4), dpi=DPI)
    ax = fig.add_subplot()
    for i, (c, f) in enumerate(zip(cfs, freqs)):
        colour = COLOURS[i % len(COLOURS)]
        ax.scatter(f, c, s=18, alpha=0.7, color=colour, edgecolors='none', label=f'tower {i} (n={len(c)})')
        ok = np.isfinite(c) & np.isfinite(f)
        if ok.any():
            ax.scatter([f[ok].mean()], [c[ok].mean()], marker='X', s=110, color=colour, edgecolors='black',
                       linewidths=0.8, zorder=4)
    ax.set_xlim(-0.02, 0.73)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel('luminance spatial frequency (cycles/px, power-spectrum peak)')
    ax.set_ylabel(wrap(measure, 45), fontsize=9)
    ax.set_title(wrap_px(title, fig.get_figwidth() * DPI - 190, 9), fontsize=9)
    ax.legend(fontsize=8, loc='upper right', framealpha=0.8, title='X: tower mean', title_fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_latent(entries: Sequence[Tuple[str, np.ndarray, np.ndarray, Dict[str, Any]]], title: str, path: Path,
                bgr: bool, measure: str) -> None:
    """Per analysed conv1 -> conv2 pair: its leading centred component against chromatic fraction (left) and
    the conv1 kernels ordered along that component (right, lowest first)."""
    from matplotlib.figure import Figure
    blocks = []
    for label, w, cf, res in entries:
        vec = np.asarray(res['centred'][0]['vector'])
        order = np.argsort(vec, kind='stable')
        cols = min(16, len(w))
        blocks.append((label, w, cf, vec, mosaic(kernel_tiles(w[order], bgr), cols)))
    width = 12.0
    heights = [max(3.0, 5.6 * b[4].shape[0] / b[4].shape[1] + 1.2) for b in blocks]
    fig = Figure(figsize=(width, sum(heights) + 0.9), dpi=DPI)
    grid = fig.add_gridspec(len(blocks), 2, width_ratios=[1, 1.25], height_ratios=heights)
    for row, (label, _w, cf, vec, image) in enumerate(blocks):
        ax = fig.add_subplot(grid[row, 0])
        ax.scatter(vec, cf, s=16, alpha=0.75, color=COLOURS[row % len(COLOURS)], edgecolors='none')
        ax.axvline(0, color='0.5', lw=1, ls='--')
        ax.set_xlabel('leading centred component (conv1 side)', fontsize=9)
        ax.set_ylabel(wrap(measure, 36), fontsize=8)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(wrap(label, 60), fontsize=9, loc='left')
        ax.grid(alpha=0.3)
        ax2 = fig.add_subplot(grid[row, 1])
        ax2.imshow(image, interpolation='nearest')
        ax2.set_axis_off()
        ax2.set_title('kernels along the component (lowest first, row by row)', fontsize=9, loc='left')
    fig.suptitle(wrap_px(title, width * DPI - 40, 9), fontsize=9, x=0.01, ha='left')
    fig.tight_layout()
    save_figure(fig, path)
