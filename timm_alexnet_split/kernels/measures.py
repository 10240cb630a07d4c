"""Per-kernel measures of conv1 and the statistics that compare groups of kernels (torch-free, numpy only).

- chromatic fraction ``1 - ||P W||^2 / ||W||^2`` (P: each pixel's RGB triple projected on (1,1,1)/sqrt(3));
- the same of each kernel's low-pass part (its DFT components up to a cut-off frequency), of its strongest DFT
  components (its own band: as many components as the low-pass keeps, chosen by power, not by frequency) and
  of what training added (W - W0): ways to see a colour split through fitted noise;
- dominant orientation and spatial frequency of the luminance part;
- a vectorised permutation test between groups, Cohen's d / eta squared, and Spearman correlations with
  permutation p-values.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import KernelsError

PERMUTATIONS = 20_000    # smallest reportable p: 1 / 20,001 < 1e-4
SEED = 0
FFT_SIZE = 64            # zero-padded FFT of the luminance part: frequency resolution 1/64 cycles per pixel
LOW_PASS_CUTOFF = 0.25   # cycles per pixel kept by the low-pass measure
MIN_LUMINANCE_SHARE = 1e-3   # below this share of energy in the luminance part a kernel has no luminance frequency
DEFAULT_MEASURE = 'auto'   # band where the kernels are large enough for it, else plain
MIN_LOW_PASS_COMPONENTS = 9   # the low-pass part (and the band) must keep at least this many DFT components
# what each measure's chromatic fraction is computed on (the report and the verdicts use these words)
MEASURES = {
    'plain': 'chromatic fraction of the whole kernel',
    'lowpass': 'chromatic fraction of the low-pass part (<= {cutoff:g} cycles/px)',
    'band': 'chromatic fraction of the strongest DFT components (as many as a {cutoff:g} cycles/px low-pass keeps)',
    'trained': 'chromatic fraction of what training added (W - W0)',
}
SHORT = {'plain': 'chromatic fraction', 'lowpass': 'low-pass chromatic fraction', 'band': 'own-band chromatic fraction',
         'trained': 'chromatic fraction of W - W0'}


def chromatic_fraction(w: np.ndarray) -> np.ndarray:
    """``1 - ||P W||^2 / ||W||^2`` for kernels ``w`` of shape (..., 3, h, w); NaN for an all-zero kernel.

    P replaces each pixel's RGB triple by its projection on (1,1,1)/sqrt(3), i.e. by the channel mean
    repeated, so ``||P W||^2 = 3 * sum(mean_c(W)^2)``. 0: grey (colour-agnostic); 1: no luminance part.
    """
    w = np.asarray(w, np.float64)
    if w.ndim < 3 or w.shape[-3] != 3:
        raise ValueError(f'expected kernels of shape (..., 3, h, w), got {w.shape}')
    total = np.square(w).sum(axis=(-3, -2, -1))
    lum = 3.0 * np.square(w.mean(axis=-3)).sum(axis=(-2, -1))
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.clip(1.0 - lum / total, 0.0, 1.0)


def low_pass(w: np.ndarray, cutoff: float = LOW_PASS_CUTOFF) -> np.ndarray:
    """Each kernel's components of radial spatial frequency <= ``cutoff`` cycles/pixel, per channel.

    An orthogonal projection on the kernel's own discrete Fourier basis (h x w frequencies, periodic): energy
    splits exactly into the low- and high-pass parts, and white noise keeps the share of frequencies kept
    (about 17% for 11 x 11 kernels at 0.25). Grey stays grey: every channel is filtered alike.
    """
    w = np.asarray(w, np.float64)
    h, wd = w.shape[-2:]
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(wd)[None, :]
    keep = np.hypot(fy, fx) <= cutoff + 1e-12
    return np.real(np.fft.ifft2(np.fft.fft2(w, axes=(-2, -1)) * keep, axes=(-2, -1)))


def band_chromatic_fraction(w: np.ndarray, count: int) -> np.ndarray:
    """Chromatic fraction of each kernel's ``count`` DFT components with the most power (summed over channels).

    By Parseval the chromatic fraction splits over DFT components: per component f, total(f) = sum_c |F_c(f)|^2
    and grey(f) = |sum_c F_c(f)|^2 / 3. Picking components by power follows a kernel's own band (a fine grey
    grating keeps its high frequencies, a colour blob its low ones); for i.i.d. Gaussian noise the grey share of
    a component does not depend on its power, so random kernels still give 2/3. NaN for an all-zero kernel.
    """
    w = np.asarray(w, np.float64)
    spectrum = np.fft.fft2(w, axes=(-2, -1))
    total = np.square(np.abs(spectrum)).sum(axis=-3).reshape(*w.shape[:-3], -1)
    grey = (np.square(np.abs(spectrum.sum(axis=-3))) / 3.0).reshape(*w.shape[:-3], -1)
    top = np.argsort(-total, axis=-1, kind='stable')[..., :max(1, count)]
    kept_total = np.take_along_axis(total, top, -1).sum(axis=-1)
    kept_grey = np.take_along_axis(grey, top, -1).sum(axis=-1)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.clip(1.0 - kept_grey / kept_total, 0.0, 1.0)


def low_pass_components(h: int, w: int, cutoff: float = LOW_PASS_CUTOFF) -> int:
    """How many of an h x w kernel's DFT components the low-pass part keeps (3x3 at 0.25: 1, the mean colour)."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    return int(np.count_nonzero(np.hypot(fy, fx) <= cutoff + 1e-12))


def resolve_measure(requested: str, kernel_shape: Sequence[int], cutoff: float = LOW_PASS_CUTOFF,
                    has_initial: bool = False) -> Tuple[str, str, Optional[str]]:
    """(measure, why it was chosen, warning or None) for ``requested`` ('auto' or a name in MEASURES).

    auto: the band measure (it sees a planted split through strong i.i.d. noise best and, unlike the low-pass
    measure, does not make fine grey gratings look coloured; see docs/kernels.md) when it keeps at least
    MIN_LOW_PASS_COMPONENTS components, else the plain measure.
    """
    h, w = kernel_shape[-2:]
    kept = low_pass_components(h, w, cutoff)
    small = (f'{h}x{w} kernels keep only {kept} DFT component(s) at <= {cutoff:g} cycles/px (at least '
             f'{MIN_LOW_PASS_COMPONENTS} are needed to hold a shape; 1 is just the mean colour)')
    if requested == 'auto':
        if kept >= MIN_LOW_PASS_COMPONENTS:
            return 'band', f'auto: band ({h}x{w} kernels, the strongest {kept} of {h * w} DFT components)', None
        return 'plain', f'auto: plain, because {small}', None
    warning = f'--measure {requested}: {small}; this measure says little here' if (
        requested in ('lowpass', 'band') and kept < MIN_LOW_PASS_COMPONENTS) else None
    if requested == 'trained' and not has_initial:
        raise KernelsError('--measure trained needs the epoch-0 weights: give a training run folder with '
                           'conv1/epoch_0000.npy (to the file argument or --evolution)')
    return requested, f'--measure {requested}', warning


def measure_label(measure: str, cutoff: float = LOW_PASS_CUTOFF) -> str:
    """The measure in words, e.g. 'chromatic fraction of the low-pass part (<= 0.25 cycles/px)'."""
    return MEASURES[measure].format(cutoff=cutoff)


def chromatic_measures(w: np.ndarray, w0: Optional[np.ndarray] = None,
                       cutoff: float = LOW_PASS_CUTOFF) -> Dict[str, np.ndarray]:
    """Per-kernel chromatic fraction of ``w`` by each measure: plain, lowpass, band, and trained when ``w0`` is given."""
    count = low_pass_components(*np.shape(w)[-2:], cutoff)
    out = {'plain': chromatic_fraction(w), 'lowpass': chromatic_fraction(low_pass(w, cutoff)),
           'band': band_chromatic_fraction(w, count)}
    if w0 is not None:
        out['trained'] = chromatic_fraction(np.asarray(w, np.float64) - np.asarray(w0, np.float64))
    return out


def luminance_orientation_frequency(w: np.ndarray, size: int = FFT_SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """Dominant orientation (degrees) and spatial frequency (cycles/pixel) of each kernel's luminance part.

    The luminance part is the channel mean; its zero-padded power spectrum's peak gives the frequency.
    Orientation is that of the stripes as displayed, counter-clockwise from horizontal in [0, 180): 0 for
    horizontal stripes, 90 for vertical ones; NaN when the peak is at zero frequency (a blob). Both are NaN
    when the luminance part holds less than MIN_LUMINANCE_SHARE of the kernel's energy (a pure colour kernel:
    its "luminance frequency" would be that of rounding noise).
    """
    w = np.asarray(w, np.float64)
    lum = w.mean(axis=-3)
    power = np.abs(np.fft.rfft2(lum, s=(size, size))) ** 2
    flat = power.reshape(*power.shape[:-2], -1).argmax(axis=-1)
    iy, ix = np.unravel_index(flat, power.shape[-2:])
    fy, fx = np.fft.fftfreq(size)[iy], np.fft.rfftfreq(size)[ix]
    total = np.square(w).sum(axis=(-3, -2, -1))
    with np.errstate(invalid='ignore', divide='ignore'):
        share = 3.0 * np.square(lum).sum(axis=(-2, -1)) / total
    freq = np.where(share >= MIN_LUMINANCE_SHARE, np.hypot(fx, fy), np.nan)
    wave = np.degrees(np.arctan2(-fy, fx))  # image rows go down; angles as displayed
    orient = np.where(freq > 0, np.mod(wave + 90.0, 180.0), np.nan)
    return orient, freq


# ----------------------------------------------------------------------------------------------- group tests

def _group_stat(perm: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Test statistic of each row of ``perm``: |difference of means| for 2 groups, else between-group variance."""
    means = np.add.reduceat(perm, starts, axis=-1) / sizes
    if len(sizes) == 2:
        return np.abs(means[..., 1] - means[..., 0])
    grand = perm.mean(axis=-1, keepdims=True)
    return (sizes * np.square(means - grand)).sum(axis=-1) / sizes.sum()


def permutation_test(values: Sequence[np.ndarray], permutations: int = PERMUTATIONS, seed: int = SEED,
                     chunk: int = 2000) -> Tuple[float, float]:
    """Two-sided permutation test that the groups of ``values`` come from one distribution: (statistic, p).

    Statistic: |mean_1 - mean_0| for two groups; for more, the between-group variance of the means
    ``sum_g n_g (mean_g - grand mean)^2 / N`` (equivalent to one-way ANOVA's F under permutation).
    p = (1 + #{permuted statistic >= observed}) / (1 + permutations), with a fixed seed: reproducible.
    """
    values = [np.asarray(v, np.float64).ravel() for v in values]
    sizes = np.array([len(v) for v in values], np.float64)
    if len(values) < 2 or sizes.min() < 1:
        raise ValueError('need at least two non-empty groups')
    pooled = np.concatenate(values)
    starts = np.concatenate([[0], np.cumsum(sizes[:-1])]).astype(np.intp)
    observed = float(_group_stat(pooled, starts, sizes))
    rng = np.random.default_rng(seed)
    hits = 0
    for begin in range(0, permutations, chunk):
        rows = min(chunk, permutations - begin)
        perm = rng.permuted(np.broadcast_to(pooled, (rows, len(pooled))), axis=1)
        hits += int(np.count_nonzero(_group_stat(perm, starts, sizes) >= observed - 1e-12))
    return observed, (hits + 1) / (permutations + 1)


def effect_size(values: Sequence[np.ndarray]) -> Tuple[Optional[float], str]:
    """Cohen's d (group 1 minus group 0, pooled SD) for two groups; eta squared (SS_between / SS_total) for more.

    None when undefined (no spread within the groups).
    """
    values = [np.asarray(v, np.float64).ravel() for v in values]
    if len(values) == 2:
        a, b = values
        dof = len(a) + len(b) - 2
        pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1 if len(a) > 1 else 0) +
                            (len(b) - 1) * b.var(ddof=1 if len(b) > 1 else 0)) / dof) if dof > 0 else 0.0
        d = (b.mean() - a.mean()) / pooled if pooled > 1e-9 else None  # below: rounding noise, not spread
        return d, "Cohen's d (tower 1 minus tower 0, pooled SD)"
    return eta_squared(values), 'eta squared (between-tower / total sum of squares)'


def eta_squared(values: Sequence[np.ndarray]) -> Optional[float]:
    """Between-group / total sum of squares of the pooled values; None when there is no spread at all."""
    values = [np.asarray(v, np.float64).ravel() for v in values]
    pooled = np.concatenate(values)
    total = float(np.square(pooled - pooled.mean()).sum())
    between = float(sum(len(v) * (v.mean() - pooled.mean()) ** 2 for v in values))
    return between / total if total > 0 else None


# ----------------------------------------------------------------------------------------------- correlations

def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``x``, ties sharing their average rank (as Spearman's correlation needs)."""
    _, inverse, counts = np.unique(np.asarray(x, np.float64), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse.ravel()]


def _standardised(x: np.ndarray) -> Optional[np.ndarray]:
    z = x - x.mean()
    norm = math.sqrt(float(np.square(z).sum()))
    return z / norm if norm > 1e-12 else None


def spearman_tests(xs: Sequence[np.ndarray], y: np.ndarray, permutations: int = PERMUTATIONS, seed: int = SEED,
                   chunk: int = 2000) -> List[Tuple[Optional[float], Optional[float]]]:
    """Spearman correlation of each of ``xs`` with ``y`` and its two-sided permutation p-value: [(rho, p), ...].

    One set of permutations of ``y``'s ranks serves every x (one matrix product per chunk: fast). Kernels where
    ``y`` or an x is NaN are left out; (None, None) when fewer than 3 remain or a side is constant.
    """
    y = np.asarray(y, np.float64)
    xs = np.atleast_2d(np.asarray(xs, np.float64))
    ok = np.isfinite(y) & np.isfinite(xs).all(axis=0)
    zy = _standardised(rankdata(y[ok])) if ok.sum() >= 3 else None
    zx = [_standardised(rankdata(x[ok])) if ok.sum() >= 3 else None for x in xs]
    live = [i for i, z in enumerate(zx) if z is not None]
    results: List[Tuple[Optional[float], Optional[float]]] = [(None, None)] * len(xs)
    if zy is None or not live:
        return results
    zmat = np.stack([zx[i] for i in live], axis=1)            # (kernels, live xs)
    rho = zy @ zmat
    hits = np.zeros(len(live), np.int64)
    rng = np.random.default_rng(seed)
    for begin in range(0, permutations, chunk):
        rows = min(chunk, permutations - begin)
        perm = rng.permuted(np.broadcast_to(zy, (rows, len(zy))), axis=1)
        hits += np.count_nonzero(np.abs(perm @ zmat) >= np.abs(rho) - 1e-12, axis=0)
    for j, i in enumerate(live):
        results[i] = (float(rho[j]), float((hits[j] + 1) / (permutations + 1)))
    return results


def format_p(p: Optional[float]) -> str:
    """'p < 1e-4' or 'p = 0.62'."""
    if p is None:
        return 'p = n/a'
    return 'p < 1e-4' if p < 1e-4 else f'p = {p:.2g}'
