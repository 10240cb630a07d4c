"""Towers compared on the two axes of conv1 (chromatic fraction and spatial frequency), and the verdict in words.

Torch-free (numpy only). The statistics are in measures; this module picks them per tower, tests the
towers against each other and says in one line in what they differ: colour, frequency, both, or nothing.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from .measures import PERMUTATIONS, SEED, effect_size, format_p, permutation_test

COLOUR_THRESHOLD = 0.3   # a kernel (tower) above this chromatic fraction counts as colour-specific
ALPHA = 0.01             # significance level of the verdict
MIN_COLOUR_DIFFERENCE = 0.05     # smaller differences of tower means are called negligible, however small p is
MIN_FREQUENCY_DIFFERENCE = 0.02  # cycles/px, the same for spatial frequency


def _towers(indices: Sequence[int]) -> str:
    if len(indices) == 1:
        return f'tower {indices[0]}'
    return 'towers ' + ', '.join(map(str, indices[:-1])) + f' and {indices[-1]}'


def verdict(means: Sequence[float], p: Optional[float], alpha: float = ALPHA) -> str:
    """Colour only, one line: which towers are colour-specific / colour-agnostic, or 'no split detected (p = ...)'."""
    if len(means) < 2 or p is None:
        m = f'{means[0]:.2f}' if len(means) and np.isfinite(means[0]) else 'n/a'
        return f'one tower only: no split to test (mean chromatic fraction {m}); pass --groups N to split conv1'
    if p >= alpha:
        return f'no split detected ({format_p(p)})'
    order = sorted(range(len(means)), key=lambda i: -means[i])
    specific = [i for i in range(len(means)) if means[i] >= COLOUR_THRESHOLD]
    agnostic = [i for i in range(len(means)) if means[i] < COLOUR_THRESHOLD]
    if specific and agnostic:
        hi = ', '.join(f'{means[i]:.2f}' for i in specific)
        lo = ', '.join(f'{means[i]:.2f}' for i in agnostic)
        return (f'{_towers(specific)} colour-specific (mean {hi}), {_towers(agnostic)} colour-agnostic ({lo}), '
                f'{format_p(p)}')
    top, bottom = order[0], order[-1]
    kind = 'colour-specific' if specific else 'colour-agnostic'
    return (f'towers differ but all are {kind}: tower {top} most chromatic (mean {means[top]:.2f}), '
            f'tower {bottom} least ({means[bottom]:.2f}), {format_p(p)}')


def _spread(means: Sequence[float]) -> float:
    finite = [m for m in means if np.isfinite(m)]
    return max(finite) - min(finite) if len(finite) >= 2 else 0.0


def split_verdict(cf_means: Sequence[float], cf_p: Optional[float], freq_means: Sequence[float],
                  freq_p: Optional[float], measure: str, alpha: float = ALPHA) -> str:
    """One line naming what the towers differ in (colour, spatial frequency, both, nothing) and the measure used.

    An axis counts when its p-value is below ``alpha`` and its tower means differ by at least
    MIN_COLOUR_DIFFERENCE (chromatic fraction) or MIN_FREQUENCY_DIFFERENCE (cycles/px); a significant but
    smaller difference is named as negligible. e.g. 'towers differ in spatial frequency (0.08 vs 0.33
    cycles/px, p < 1e-4), not in colour (p = 0.7, chromatic fraction of ...)'.
    """
    tag = f' [measure: {measure}]'
    if len(cf_means) < 2 or cf_p is None:
        return verdict(cf_means, cf_p, alpha) + tag
    colour = cf_p < alpha and _spread(cf_means) >= MIN_COLOUR_DIFFERENCE
    freq = freq_p is not None and freq_p < alpha and _spread(freq_means) >= MIN_FREQUENCY_DIFFERENCE
    fq = (' vs '.join('n/a' if not np.isfinite(m) else f'{m:.2f}' for m in freq_means)
          + f' cycles/px, {format_p(freq_p)}')
    not_colour = format_p(cf_p) if cf_p >= alpha else \
        f'{format_p(cf_p)} but means differ by only {_spread(cf_means):.3f} < {MIN_COLOUR_DIFFERENCE}'
    not_freq = format_p(freq_p) if freq_p is None or freq_p >= alpha else \
        f'{format_p(freq_p)} but means differ by only {_spread(freq_means):.3f} < {MIN_FREQUENCY_DIFFERENCE} cycles/px'
    if colour and freq:
        return f'towers differ in colour and in spatial frequency: {verdict(cf_means, cf_p, alpha)}; frequency {fq}{tag}'
    if colour and freq_p is None:  # a tower of pure colour kernels: no luminance part, no frequency to compare
        return (f'towers differ in colour (spatial frequency not compared: a tower has no luminance part): '
                f'{verdict(cf_means, cf_p, alpha)}{tag}')
    if colour:
        return f'towers differ in colour, not in spatial frequency ({not_freq}): {verdict(cf_means, cf_p, alpha)}{tag}'
    if freq:
        return f'towers differ in spatial frequency ({fq}), not in colour ({not_colour}){tag}'
    return f'no split detected: not in colour ({not_colour}), not in spatial frequency ({not_freq}){tag}'


def tower_stats(cf: np.ndarray) -> Dict[str, Any]:
    """Mean, median, standard deviation and fraction above 0.3 of one tower's chromatic fractions (NaN left out)."""
    ok = cf[np.isfinite(cf)]
    if not len(ok):
        return {'mean': None, 'median': None, 'std': None, 'fraction_above_0_3': None}
    return {'mean': float(ok.mean()), 'median': float(np.median(ok)), 'std': float(ok.std()),
            'fraction_above_0_3': float(np.mean(ok > COLOUR_THRESHOLD))}


def frequency_stats(freq: np.ndarray) -> Dict[str, Any]:
    """Mean and median luminance frequency (cycles/pixel) of one tower's kernels."""
    ok = freq[np.isfinite(freq)]
    return {'frequency_mean': float(ok.mean()) if len(ok) else None,
            'frequency_median': float(np.median(ok)) if len(ok) else None}


def compare_values(values: Sequence[np.ndarray], permutations: int = PERMUTATIONS,
                   seed: int = SEED) -> Dict[str, Any]:
    """Permutation test and effect size between towers' values (NaN left out); None-filled below two towers."""
    vals = [v[np.isfinite(v)] for v in values]
    means = [float(v.mean()) if len(v) else float('nan') for v in vals]
    out: Dict[str, Any] = {'means': means, 'test': None, 'statistic': None, 'difference_of_means': None,
                           'p_value': None, 'p_value_text': None, 'effect_size': None, 'effect_size_measure': None}
    if len(vals) >= 2 and all(len(v) for v in vals):
        stat, p = permutation_test(vals, permutations, seed)
        d, how = effect_size(vals)
        two = len(vals) == 2
        out.update(
            test=('two-sided permutation test, statistic |mean(tower 1) - mean(tower 0)|' if two else
                  'permutation test, statistic sum_g n_g (mean_g - mean)^2 / N (between-tower variance of means)')
            + f', {permutations} permutations, seed {seed}',
            statistic=stat, p_value=p, p_value_text=format_p(p), effect_size=d, effect_size_measure=how,
            difference_of_means=(means[1] - means[0]) if two else max(means) - min(means))
    return out


def compare_towers(cfs: Sequence[np.ndarray], permutations: int = PERMUTATIONS, seed: int = SEED,
                   alpha: float = ALPHA) -> Dict[str, Any]:
    """Between-tower test of chromatic fractions: statistic, p-value, effect size, colour verdict."""
    out = compare_values(cfs, permutations, seed)
    out['verdict'] = verdict(out.pop('means'), out['p_value'], alpha)
    return out


def compare_axes(cfs: Sequence[np.ndarray], freqs: Sequence[np.ndarray], measure: str,
                 permutations: int = PERMUTATIONS, seed: int = SEED, alpha: float = ALPHA) -> Dict[str, Any]:
    """Both axes between towers: the colour test's fields, ``frequency_*`` fields and the combined verdict."""
    colour = compare_values(cfs, permutations, seed)
    freq = compare_values(freqs, permutations, seed)
    out: Dict[str, Any] = {k: v for k, v in colour.items() if k != 'means'}
    out.update(frequency_p_value=freq['p_value'], frequency_p_value_text=freq['p_value_text'],
               frequency_effect_size=freq['effect_size'], frequency_difference_of_means=freq['difference_of_means'],
               colour_verdict=verdict(colour['means'], colour['p_value'], alpha),
               verdict=split_verdict(colour['means'], colour['p_value'], freq['means'], freq['p_value'], measure, alpha))
    return out


def by_measure(measures: Sequence[Dict[str, np.ndarray]], permutations: int = PERMUTATIONS,
               seed: int = SEED) -> Dict[str, Dict[str, Any]]:
    """Per measure name: each tower's statistics and the between-tower p-value and effect size."""
    out: Dict[str, Dict[str, Any]] = {}
    for name in measures[0]:
        cfs = [m[name] for m in measures]
        test = compare_values(cfs, permutations, seed)
        out[name] = {'towers': [tower_stats(c) for c in cfs], 'p_value': test['p_value'],
                     'p_value_text': test['p_value_text'], 'effect_size': test['effect_size'],
                     'difference_of_means': test['difference_of_means']}
    return out


