"""Is a tower split more than chance, and did conv1 learn enough to ask? numpy only (no torch, no package imports).

- :func:`eta_squared`: the share of the variance of a per-kernel value (chromatic fraction, frequency) that lies
  between towers, SS_between / SS_total.
- :func:`partition_control`: the same for random partitions of a one-tower network's kernels into groups of the
  towers' sizes: what "towers don't matter" looks like (mean and a 95% interval).
- :func:`bootstrap_mean`: a mean over runs with a percentile-bootstrap 95% interval.
- :func:`conv1_from_random`: how far conv1 kernels are from random ones: the chromatic fraction's distribution
  (random kernels: ~2/3) and each kernel's share of power at low spatial frequency (random kernels:
  :func:`random_low_frequency_share`).

Numpy only: of the package it imports the kernel tool's ``measures`` (chromatic fraction, low-pass), so the
control and the kernel tool measure a kernel alike.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import numpy as np

from .measures import FFT_SIZE, LOW_PASS_CUTOFF, chromatic_fraction, low_pass  # the kernel tool's: both measure alike

__all__ = [
    'LOW_CUTOFF', 'FFT_SIZE', 'GREY_THRESHOLD', 'RANDOM_CHROMATIC_FRACTION', 'eta_squared', 'partition_control',
    'bootstrap_mean', 'chromatic_fraction', 'low_frequency_share', 'random_low_frequency_share', 'low_pass',
    'conv1_from_random',
]

LOW_CUTOFF = LOW_PASS_CUTOFF    # cycles per pixel: "low frequency" is at or below this radial frequency
GREY_THRESHOLD = 0.3            # a kernel with a chromatic fraction below this counts as grey
RANDOM_CHROMATIC_FRACTION = 2 / 3  # expected chromatic fraction of a kernel of independent random weights
PARTITIONS = 1000
LEVEL = 0.95

Values = Union[np.ndarray, Sequence[float]]


def _clean(values: Values, what: str) -> np.ndarray:
    v = np.asarray(values, np.float64).ravel()
    if not np.isfinite(v).all():
        raise ValueError(f'{what} holds NaN or infinite values; drop those kernels first')
    return v


def eta_squared(groups: Sequence[Values]) -> float:
    """SS_between / SS_total of the values in ``groups`` (one array per tower); NaN when all values are equal."""
    groups = [_clean(g, 'a group') for g in groups]
    if len(groups) < 2 or min(len(g) for g in groups) < 1:
        raise ValueError('eta squared needs at least two non-empty groups')
    pooled = np.concatenate(groups)
    grand = pooled.mean()
    total = float(np.square(pooled - grand).sum())
    between = float(sum(len(g) * (g.mean() - grand) ** 2 for g in groups))
    return between / total if total > 0 else float('nan')


def _interval(samples: np.ndarray, level: float) -> Dict[str, float]:
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return dict(mean=float(samples.mean()), low=float(low), high=float(high), level=level)


def _runs(values: Union[Values, Sequence[Values]]) -> list:
    """One array of values per run: a 1-D array or a list of numbers is one run; a 2-D array or a list of arrays, many."""
    if isinstance(values, np.ndarray):
        return [values] if values.ndim == 1 else list(values)
    items = list(values)
    if items and all(np.ndim(x) == 0 for x in items):
        return [np.asarray(items, np.float64)]
    return items


def partition_control(values: Union[Values, Sequence[Values]], sizes: Sequence[int], partitions: int = PARTITIONS,
                      seed: int = 0, level: float = LEVEL, return_samples: bool = False) -> Dict[str, object]:
    """Eta squared of random partitions of one-tower kernels into groups of ``sizes``: mean and ``level`` interval.

    ``values``: one value per conv1 kernel of a one-tower network, or a list of such arrays (one per one-tower
    run; the partitions are dealt over the runs in turn). Each array must hold exactly ``sum(sizes)`` values.
    Returns dict(mean, low, high, level, partitions, sizes) (+ ``samples`` if asked): a tower network's eta
    squared above ``high`` is a segregation random groups of the same sizes reach in < 2.5% of draws.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f'need at least two groups of at least one kernel, got sizes {sizes}')
    if partitions < 1:
        raise ValueError('partitions must be >= 1')
    runs = [_clean(r, 'values') for r in _runs(values)]
    for r in runs:
        if len(r) != sum(sizes):
            raise ValueError(f'a one-tower run has {len(r)} kernels but the groups {sizes} need {sum(sizes)}')
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(sizes[:-1])]).astype(np.intp)
    counts = np.asarray(sizes, np.float64)
    samples = np.empty(partitions)
    for i, r in enumerate(runs):
        rows = np.arange(i, partitions, len(runs))
        if not len(rows):
            continue
        perm = rng.permuted(np.broadcast_to(r, (len(rows), len(r))), axis=1)
        means = np.add.reduceat(perm, starts, axis=1) / counts
        total = np.square(r - r.mean()).sum()
        between = (counts * np.square(means - r.mean())).sum(axis=1)
        samples[rows] = between / total if total > 0 else np.nan
    out: Dict[str, object] = dict(_interval(samples, level), partitions=partitions, sizes=sizes)
    if return_samples:
        out['samples'] = samples
    return out


def bootstrap_mean(values: Values, resamples: int = 10_000, seed: int = 0, level: float = LEVEL) -> Dict[str, object]:
    """Mean of ``values`` (e.g. one effect size per run) with a percentile-bootstrap ``level`` interval.

    One value gives an interval of zero width (nothing to resample); ``n`` says how many there were.
    """
    v = _clean(values, 'values')
    if not len(v):
        raise ValueError('no values to average')
    idx = np.random.default_rng(seed).integers(0, len(v), (resamples, len(v)))
    boot = v[idx].mean(axis=1)
    return dict(mean=float(v.mean()), low=float(np.quantile(boot, (1 - level) / 2)),
                high=float(np.quantile(boot, 1 - (1 - level) / 2)), level=level, n=len(v))


# ---- how far conv1 is from random ------------------------------------------------------------------------------------

def _radius(size: int) -> np.ndarray:
    f = np.fft.fftfreq(size)
    return np.hypot(f[:, None], f[None, :])


def low_frequency_share(w: np.ndarray, cutoff: float = LOW_CUTOFF, size: int = FFT_SIZE) -> np.ndarray:
    """Share of each kernel's power (all channels, zero-padded spectrum) at radial frequency <= ``cutoff`` cycles/px.

    1 for a smooth blob, small for a fine grating or checkerboard; kernels of independent random weights give
    :func:`random_low_frequency_share` on average (their spectrum is flat).
    """
    w = np.asarray(w, np.float64)
    power = np.square(np.abs(np.fft.fft2(w, s=(size, size)))).sum(axis=-3)
    low = _radius(size) <= cutoff
    with np.errstate(invalid='ignore', divide='ignore'):
        return power[..., low].sum(axis=-1) / power.sum(axis=(-2, -1))


def random_low_frequency_share(cutoff: float = LOW_CUTOFF, size: int = FFT_SIZE) -> float:
    """The expected :func:`low_frequency_share` of white-noise kernels: the share of frequencies at or below
    ``cutoff`` (about pi * cutoff^2, 0.196 for 0.25 cycles/px)."""
    return float((_radius(size) <= cutoff).mean())


def _summary(values: np.ndarray) -> Dict[str, float]:
    v = values[np.isfinite(values)]
    if not len(v):
        return dict(n=0)
    q1, q2, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return dict(n=len(v), mean=float(v.mean()), q1=float(q1), median=float(q2), q3=float(q3))


def conv1_from_random(w: np.ndarray, w0: Optional[np.ndarray] = None, cutoff: float = LOW_CUTOFF,
                      size: int = FFT_SIZE) -> Dict[str, object]:
    """How far conv1 kernels ``w`` (k, 3, h, w) are from random ones, with the random baselines beside them.

    - ``chromatic``: chromatic fraction n, mean, quartiles, ``below_0_3`` (share of grey kernels);
      random kernels: mean ~2/3, none below 0.3.
    - ``chromatic_lowpass``: the same for each kernel's low-pass part (``measures.low_pass``, the kernel tool's
      lowpass measure; training noise pulls every chromatic fraction toward 2/3; the smooth part shows what was
      learned).
    - ``low_frequency_share``: each kernel's share of power at <= ``cutoff`` cycles/px (on a ``size`` x ``size``
      zero-padded DFT, the one measure here that ``size`` sets), summarised; ``random_baseline`` is white noise's.
    - with the initial weights ``w0``: ``relative_change`` ||W - W0|| / ||W0|| and ``chromatic_added``,
      the chromatic summary of what training added (W - W0).
    """
    w = np.asarray(w, np.float64)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f'expected conv1 kernels of shape (k, 3, h, w), got {w.shape}')

    def colour(x: np.ndarray) -> Dict[str, float]:
        cf = chromatic_fraction(x)
        out = _summary(cf)
        if out['n']:
            out['below_0_3'] = float((cf[np.isfinite(cf)] < GREY_THRESHOLD).mean())
        return out

    out: Dict[str, object] = dict(
        kernels=len(w), cutoff=cutoff,
        chromatic=colour(w), chromatic_lowpass=colour(low_pass(w, cutoff)),
        low_frequency_share=dict(_summary(low_frequency_share(w, cutoff, size)),
                                 random_baseline=random_low_frequency_share(cutoff, size)),
        random_chromatic_fraction=RANDOM_CHROMATIC_FRACTION)
    if w0 is not None:
        w0 = np.asarray(w0, np.float64)
        if w0.shape != w.shape:
            raise ValueError(f'initial weights have shape {w0.shape}, the kernels {w.shape}')
        out['relative_change'] = float(np.linalg.norm(w - w0) / np.linalg.norm(w0))
        out['chromatic_added'] = colour(w - w0)
    return out
