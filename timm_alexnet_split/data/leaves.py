"""The embedded "leaves" dataset: dead-leaves images whose class is four independent factors.

Each image is a stack of occluding discs with power-law radii (p(r) ~ r^-3, the scale-invariant
dead-leaves model of natural images). Every disc has a grey level, a colour and, often, an achromatic
grating texture; a smooth illumination field shades the whole picture. Colour varies coarsely (it is
blurred) and carries the colour layout, the hue family of the discs centred in a central region and of
those outside it; the fine luminance texture carries orientation and spatial frequency. The class is
the tuple (centre hue, surround hue, texture orientation, texture period): 3 x 3 x 4 x 2 = 72 classes.
Generated deterministically from a seed, chunk by chunk (numpy, chunks rendered in parallel threads).
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from . import generated
from .generated import OPPONENT as _OPPONENT

__all__ = [
    'LEAVES_VERSION', 'LEAVES_IMG_SIZE', 'LEAVES_CLASSES', 'LEAVES_HUES', 'LEAVES_ORIENTATIONS', 'LEAVES_PERIODS',
    'LEAVES_SPEC', 'class_factors', 'render_leaves_images', 'leaves_generated', 'make_leaves_dataset',
    'ensure_leaves_data', 'default_leaves_root', 'save_sample_grid',
]

LEAVES_VERSION = 1
LEAVES_IMG_SIZE = 64  # default size: AlexNet's smallest input is 63; lengths below are in pixels of a 64 px image
LEAVES_TRAIN_PER_CLASS = 64
LEAVES_VAL_PER_CLASS = 16
LEAVES_HUES = {'red': 0.0, 'green': 120.0, 'blue': 240.0}  # hue angle in the demo's opponent plane
LEAVES_ORIENTATIONS = (0, 45, 90, 135)  # texture stripe angle, degrees anticlockwise from horizontal (as the demo)
LEAVES_PERIODS = {'fine': 4.0, 'coarse': 8.0}  # texture period in pixels (0.25 and 0.125 cycles/px)
LEAVES_CLASSES: Tuple[str, ...] = tuple(sorted(
    f'{c}-{s}-{o:03d}-{p}' for c in LEAVES_HUES for s in LEAVES_HUES for o in LEAVES_ORIENTATIONS for p in LEAVES_PERIODS))
_CHUNK = 64  # images rendered per call; part of the generator's definition (seeds are per chunk)

LEAVES_SPEC: Dict[str, object] = dict(
    n_discs=128, radius=(2.0, 32.0), radius_power=3.0,   # discs per image (and a background), p(r) ~ r^-power
    grey_sd=35.0,                                         # each disc's grey level around mid-grey
    texture_prob=0.55, distractor_prob=0.2,               # discs with the class texture / with a random one
    texture_amp=(0.15, 0.5), orient_jitter=12.0, period_jitter=0.12,  # contrast, s.d. degrees, relative s.d.
    centre_radius=(13.0, 20.0), centre_shift=8.0,         # the central region: radius, s.d. of its centre's offset
    chroma_amp=(20.0, 40.0), hue_jitter=30.0,             # colour amplitude, +- hue jitter in degrees
    random_hue_prob=0.2, grey_disc_prob=0.15,             # discs of any hue / without colour
    chroma_blur=2.0,                                      # s.d. in pixels of the blur that makes colour coarse
    shading=0.35,                                         # illumination: 1 +- a linear ramp and a broad bump
    lum_noise=8.0, chroma_noise=3.0,                      # white noise (colour: less, as in natural images)
)


def class_factors(name: str) -> Tuple[str, str, int, str]:
    """(centre hue, surround hue, orientation in degrees, period name) of a class name."""
    centre, surround, angle, period = name.split('-')
    return centre, surround, int(angle), period


def _power_law(rng: np.random.Generator, shape: Tuple[int, ...], lo: float, hi: float, power: float) -> np.ndarray:
    """Samples of p(r) ~ r^-power on [lo, hi] (inverse CDF)."""
    a = 1.0 - power
    u = rng.uniform(0, 1, shape)
    return (lo ** a + u * (hi ** a - lo ** a)) ** (1.0 / a)


def _occlusion(rng: np.random.Generator, n: int, k: int, size: int, radius: Tuple[float, float], power: float):
    """Disc centres (n, k) y, x and the index of the visible disc at each pixel, (n, size, size); disc 0 is the
    background, later discs lie on top."""
    grid = np.arange(size, dtype=np.float32) + 0.5
    r = _power_law(rng, (n, k), *radius, power).astype(np.float32)
    cy, cx = (rng.uniform(0, size, (n, k)).astype(np.float32) for _ in range(2))
    top = np.zeros((n, size, size), np.int16)
    for j in range(1, k):
        dy = (grid - cy[:, j, None]) ** 2
        dx = (grid - cx[:, j, None]) ** 2
        top[dy[:, :, None] + dx[:, None, :] < (r[:, j] ** 2)[:, None, None]] = j
    return cy, cx, top


def _gather(values: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Per-disc ``values`` (n, k) at each pixel's visible disc: (n, size, size)."""
    n = top.shape[0]
    return np.take_along_axis(values, top.reshape(n, -1).astype(np.intp), 1).reshape(top.shape)


def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    grid = np.arange(size)
    g = np.exp(-0.5 * ((grid[:, None] - grid[None]) / sigma) ** 2)
    return (g / g.sum(1, keepdims=True)).astype(np.float32)


def render_leaves_images(
        rng: np.random.Generator,
        centre_hues: Sequence[float],
        surround_hues: Sequence[float],
        angles: Sequence[float],
        periods: Sequence[float],
        img_size: int = LEAVES_IMG_SIZE,
        spec: Optional[Dict[str, object]] = None,
) -> np.ndarray:
    """Draw one image per class tuple: (N, img_size, img_size, 3) uint8 RGB.

    Luminance: each disc's grey level times (1 + its texture): a grating at the class angle and period
    (+- jitter) on ``texture_prob`` of the discs, at a random angle and period on ``distractor_prob``,
    none on the rest; times a smooth illumination field; plus white noise. Colour, added along the two
    RGB directions orthogonal to grey (isoluminant): a disc centred in the central region takes the centre
    hue, one outside it the surround hue (+- jitter; some discs any hue, some none); blurred, shaded, plus
    white noise. Lengths scale with ``img_size / LEAVES_IMG_SIZE``.
    """
    sp = {**LEAVES_SPEC, **(spec or {})}
    n, size, k = len(angles), img_size, int(sp['n_discs']) + 1
    scale = size / LEAVES_IMG_SIZE
    f32 = np.float32
    cy, cx, top = _occlusion(rng, n, k, size, tuple(s * scale for s in sp['radius']), float(sp['radius_power']))

    # luminance: grey level x (1 + texture)
    grey = 128.0 + rng.normal(0, sp['grey_sd'], (n, k))
    kind = rng.uniform(0, 1, (n, k))
    textured = kind < sp['texture_prob'] + sp['distractor_prob']
    distractor = kind >= sp['texture_prob']
    angle = np.where(distractor, rng.uniform(0, 180, (n, k)), np.asarray(angles, float)[:, None])
    angle = np.deg2rad(angle + rng.normal(0, sp['orient_jitter'], (n, k)))
    period = np.where(distractor, rng.choice(list(LEAVES_PERIODS.values()), (n, k)), np.asarray(periods, float)[:, None])
    period = period * scale * np.exp(rng.normal(0, sp['period_jitter'], (n, k)))
    amp = np.where(textured, rng.uniform(*sp['texture_amp'], (n, k)), 0.0)
    phase = rng.uniform(0, 2 * np.pi, (n, k))
    # stripes at angle a have the wave vector (sin a, cos a) in (x, y-down) coordinates, as in the demo data
    wy, wx = (2 * np.pi * np.cos(angle) / period).astype(f32), (2 * np.pi * np.sin(angle) / period).astype(f32)
    grid = np.arange(size, dtype=f32) + f32(0.5)
    wave = _gather(wy, top) * grid[:, None] + _gather(wx, top) * grid[None, :] + _gather(phase.astype(f32), top)
    lum = _gather(grey.astype(f32), top) * (1 + _gather(amp.astype(f32), top) * np.cos(wave))

    # colour: hue family by where the disc's centre lies, blurred
    ry = size / 2 + rng.normal(0, sp['centre_shift'] * scale, (n, 1))
    rx = size / 2 + rng.normal(0, sp['centre_shift'] * scale, (n, 1))
    rad = rng.uniform(*sp['centre_radius'], (n, 1)) * scale
    inside = (cy - ry) ** 2 + (cx - rx) ** 2 < rad ** 2
    hue = np.where(inside, np.asarray(centre_hues, float)[:, None], np.asarray(surround_hues, float)[:, None])
    hue = hue + rng.uniform(-1, 1, (n, k)) * sp['hue_jitter']
    colour_kind = rng.uniform(0, 1, (n, k))
    hue = np.where(colour_kind < sp['random_hue_prob'], rng.uniform(0, 360, (n, k)), hue)
    chroma = np.where(colour_kind > 1 - sp['grey_disc_prob'], 0.0, rng.uniform(*sp['chroma_amp'], (n, k)))
    hue = np.deg2rad(hue)
    col = np.stack([_gather((chroma * np.cos(hue)).astype(f32), top), _gather((chroma * np.sin(hue)).astype(f32), top)], 1)
    blur = _blur_matrix(size, float(sp['chroma_blur']) * scale)
    col = blur @ col @ blur.T  # (n, 2, y, x)

    # illumination: a linear ramp in a random direction and one broad bump of random sign
    theta = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    u = (grid - size / 2) / size
    ramp = (np.cos(theta) * u[None, :, None] + np.sin(theta) * u[None, None, :]) * rng.uniform(-1, 1, (n, 1, 1))
    by, bx = (rng.uniform(0, size, (n, 1, 1)) for _ in range(2))
    bump = np.exp(-0.5 * (((grid[:, None] - by) ** 2 + (grid[None, :] - bx) ** 2) / (0.3 * size) ** 2))
    light = (1 + sp['shading'] * (ramp + bump * rng.uniform(-1, 1, (n, 1, 1)))).astype(f32)

    lum = lum * light + rng.standard_normal((n, size, size), dtype=f32) * f32(sp['lum_noise'])
    col = col.transpose(0, 2, 3, 1) * light[..., None]
    col += rng.standard_normal((n, size, size, 2), dtype=f32) * f32(sp['chroma_noise'])
    rgb = col @ _OPPONENT.astype(f32) + lum[..., None] + f32(0.5)
    np.clip(rgb, 0, 255.49, out=rgb)
    return rgb.astype(np.uint8)


def _chunk_images(seed: int, split_idx: int, c: int, chunk: Sequence[str], img_size: int,
                  spec: Dict[str, object]) -> np.ndarray:
    rng = np.random.default_rng([seed, split_idx, c])
    centre, surround, angle, period = zip(*(class_factors(name) for name in chunk))
    return render_leaves_images(rng, [LEAVES_HUES[h] for h in centre], [LEAVES_HUES[h] for h in surround], angle,
                                [LEAVES_PERIODS[p] for p in period], img_size, spec)


def _render_split(split_idx: int, per_class: int, img_size: int, seed: int,
                  spec: Dict[str, object]) -> Iterator[Tuple[str, int, np.ndarray]]:
    """Yield (class name, index in class, uint8 image) for one split; chunks are rendered in parallel threads."""
    names = [c for c in LEAVES_CLASSES for _ in range(per_class)]
    index = [i for _ in LEAVES_CLASSES for i in range(per_class)]
    starts = list(range(0, len(names), _CHUNK))
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        submit = lambda c: pool.submit(_chunk_images, seed, split_idx, c, names[starts[c]:starts[c] + _CHUNK], img_size, spec)
        pending = deque(submit(c) for c in range(min(2 * workers, len(starts))))  # a bounded window of chunks in flight
        for c, s in enumerate(starts):
            images = pending.popleft().result()
            if c + len(pending) + 1 < len(starts):
                pending.append(submit(c + len(pending) + 1))
            yield from zip(names[s:s + _CHUNK], index[s:s + _CHUNK], images)


def leaves_generated(*, img_size: int = LEAVES_IMG_SIZE, train_per_class: int = LEAVES_TRAIN_PER_CLASS,
                     val_per_class: int = LEAVES_VAL_PER_CLASS, seed: int = 0,
                     spec: Optional[Dict[str, object]] = None) -> generated.Generated:
    """The leaves dataset with these options as a :class:`generated.Generated`."""
    full = {**LEAVES_SPEC, **(spec or {})}
    params = dict(generator='timm_alexnet_split.leaves.render_leaves_images', version=LEAVES_VERSION,
                  img_size=img_size, train_per_class=train_per_class, val_per_class=val_per_class, seed=seed,
                  classes=list(LEAVES_CLASSES), hues=LEAVES_HUES, orientations=list(LEAVES_ORIENTATIONS),
                  periods=LEAVES_PERIODS, spec=full, chunk=_CHUNK)
    return generated.Generated(what='leaves', classes=LEAVES_CLASSES, per_class=(train_per_class, val_per_class),
                               img_size=img_size, params=params,
                               render=lambda s, n: _render_split(s, n, img_size, seed, full))


def make_leaves_dataset(out_dir: os.PathLike | str, *, overwrite: bool = False, progress: bool = True,
                        **options) -> Path:
    """Write the leaves dataset as ImageFolder + manifest.json (as make_demo_dataset); ``options``: leaves_generated's."""
    return generated.write(out_dir, leaves_generated(**options), overwrite=overwrite, progress=progress)


def default_leaves_root() -> Path:
    """``$TIMM_ALEXNET_SPLIT_CACHE/leaves-v<N>``, else ``~/.cache/timm_alexnet_split/leaves-v<N>``."""
    return generated.cache_dir() / f'leaves-v{LEAVES_VERSION}'


def ensure_leaves_data(root: Optional[os.PathLike | str] = None, *, force: bool = False, verify: bool = False,
                       progress: bool = True, **options) -> Path:
    """The leaves dataset's folder (default: the cache), reused if complete, else generated (as ensure_demo_data)."""
    gen = leaves_generated(**options)
    return generated.ensure(Path(root) if root is not None else default_leaves_root(), gen,
                            force=force, verify=verify, progress=progress)


def save_sample_grid(out: os.PathLike | str, img_size: int = LEAVES_IMG_SIZE, zoom: int = 2) -> None:
    """A look at what the generator draws: row 1 the hue pairs (centre-surround) with one texture, row 2 the eight
    textures (orientation x period) with one hue pair, row 3 the classes of row 1 again (other images)."""
    from PIL import Image
    pairs = [f'{c}-{s}' for c in LEAVES_HUES for s in LEAVES_HUES][:8]
    forms = [f'{o:03d}-{p}' for o in LEAVES_ORIENTATIONS for p in LEAVES_PERIODS]
    row = [f'{pair}-045-fine' for pair in pairs]
    names = row + [f'green-blue-{form}' for form in forms] + row
    images = _chunk_images(0, 0, 0, names, img_size, LEAVES_SPEC)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=255)
    grid = np.concatenate([np.concatenate(list(padded[i:i + 8]), 1) for i in range(0, len(names), 8)], 0)
    from ..atomic import replace_when_done
    with replace_when_done(Path(out), overwrite=True, during='drawing the samples', keep_suffix=True) as tmp:
        Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST).save(tmp, optimize=True)
