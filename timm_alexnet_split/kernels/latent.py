"""Latent branches in an unsplit network: does conv1 -> conv2 connectivity already divide colour from grey?

Distill's "Branch Specialization" (Voss et al. 2021): in unbranched networks the leading factor of an SVD of
the absolute weights between the first two conv layers separates colour from grey units. Here:
A[i, j] = sum over kh, kw of |W2[j, i, kh, kw]| (conv1 unit i, conv2 unit j), its SVD uncentred and
double-centred, the Spearman correlation of the first three conv1-side vectors with each kernel's chromatic
fraction and frequency (permutation p-values), and a 2-way split of conv1 units by the sign of the leading
centred vector, compared like towers. Torch-free (numpy only).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .measures import PERMUTATIONS, SEED, format_p, permutation_test, spearman_tests

COMPONENTS = 3


def connectivity(w2: np.ndarray) -> np.ndarray:
    """A[i, j] = sum over kh, kw of |W2[j, i, kh, kw]|: (conv1 channels, conv2 units)."""
    w2 = np.asarray(w2, np.float64)
    return np.abs(w2).sum(axis=(2, 3)).T


def double_centre(a: np.ndarray) -> np.ndarray:
    """``a`` minus its row means and column means, plus its grand mean."""
    return a - a.mean(axis=1, keepdims=True) - a.mean(axis=0, keepdims=True) + a.mean()


def _components(a: np.ndarray, cf: np.ndarray, freq: np.ndarray, permutations: int, seed: int) -> List[Dict[str, Any]]:
    """First components of ``a``: share of squared singular values, conv1-side vector, Spearman with cf and freq.

    Each vector's sign is chosen so that its Spearman correlation with the chromatic fraction is >= 0.
    """
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    energy = float(np.square(s).sum())
    vecs = [u[:, k] for k in range(min(COMPONENTS, len(s)))]
    with_cf = spearman_tests(vecs, cf, permutations, seed)
    with_freq = spearman_tests(vecs, freq, permutations, seed + 1)
    comps = []
    for k, vec in enumerate(vecs):
        (rc, pc), (rf, pf) = with_cf[k], with_freq[k]
        if rc is not None and rc < 0:
            vec, rc, rf = -vec, -rc, (None if rf is None else -rf)
        comps.append({'share': float(s[k] ** 2 / energy) if energy > 0 else None,
                      'spearman_chromatic': rc, 'p_chromatic': pc, 'spearman_frequency': rf, 'p_frequency': pf,
                      'vector': vec})
    return comps


def _split(vec: np.ndarray, cf: np.ndarray, permutations: int, seed: int) -> Dict[str, Any]:
    """conv1 channels divided by the sign of ``vec`` (side 1: positive, the more chromatic side), compared like towers."""
    side = (vec > 0).astype(int)
    groups = [cf[(side == g) & np.isfinite(cf)] for g in (0, 1)]
    out: Dict[str, Any] = {'side': side, 'groups': [int((side == g).sum()) for g in (0, 1)],
                           'means': [float(g.mean()) if len(g) else None for g in groups], 'p_value': None}
    if all(len(g) for g in groups):
        out['p_value'] = permutation_test(groups, permutations, seed)[1]
    return out


def analyse(w2: np.ndarray, cf: np.ndarray, freq: np.ndarray, conv2: str, permutations: int = PERMUTATIONS,
            seed: int = SEED, alpha: float = 0.01) -> Dict[str, Any]:
    """The latent analysis of one conv1 -> conv2 pair (``w2``: conv2's weights over exactly these conv1 channels)."""
    a = connectivity(w2)
    if a.shape[0] != len(cf):
        raise ValueError(f'conv2 reads {a.shape[0]} channels, conv1 has {len(cf)}')
    if not np.isfinite(a).all() or not a.any():
        return not_applicable(f'{conv2} has no finite non-zero weights: no connectivity to analyse', conv2)
    centred = _components(double_centre(a), cf, freq, permutations, seed)
    uncentred = _components(a, cf, freq, permutations, seed + 100)
    split = _split(centred[0]['vector'], cf, permutations, seed)
    result = {'applicable': True, 'reason': None, 'conv2': conv2, 'conv2_units': int(a.shape[1]),
              'conv1_channels': int(a.shape[0]), 'centred': centred, 'uncentred': uncentred, 'split': split}
    result['summary'] = summary(result, alpha)
    return result


def not_applicable(reason: str, conv2: Optional[str] = None) -> Dict[str, Any]:
    """The ``latent`` entry where the analysis cannot apply, with the reason in one line."""
    return {'applicable': False, 'reason': reason, 'conv2': conv2, 'summary': f'no latent analysis: {reason}'}


def summary(result: Dict[str, Any], alpha: float = 0.01) -> str:
    """One line: the first centred component correlated with chromatic fraction (and frequency), or none.

    A component counts when its p-value is below ``alpha`` divided by the number of components looked at
    (Bonferroni: three components tested per axis must not triple the false alarms).
    """
    comps = result['centred']
    parts = []
    level = alpha / max(1, len(comps))
    for axis, key in (('colour', 'chromatic'), ('frequency', 'frequency')):
        hit = next((i for i, c in enumerate(comps) if c[f'p_{key}'] is not None and c[f'p_{key}'] < level), None)
        what = 'chromatic fraction' if key == 'chromatic' else 'spatial frequency'
        if hit is None:
            best = max((abs(c[f'spearman_{key}']) for c in comps if c[f'spearman_{key}'] is not None), default=None)
            tail = '' if best is None else f' (components 1-{len(comps)}: |Spearman| <= {best:.2f})'
            parts.append(f'no latent {axis} axis{tail}')
        else:
            c = comps[hit]
            parts.append(f'latent {axis} axis: component {hit + 1} of conv1->conv2 connectivity '
                         f'({c["share"]:.0%} of the centred variance), Spearman {c[f"spearman_{key}"]:+.2f} with '
                         f'{what}, {format_p(c[f"p_{key}"])}')
    split = result['split']
    if split['p_value'] is not None:
        parts.append(f'split by its sign: {split["groups"][0]} kernels at mean chromatic fraction '
                     f'{split["means"][0]:.2f} vs {split["groups"][1]} at {split["means"][1]:.2f}, '
                     f'{format_p(split["p_value"])}')
    return '; '.join(parts)


def combined_summary(entries: Sequence[Dict[str, Any]], labels: Sequence[str]) -> str:
    """One line for several towers' analyses: each tower's summary prefixed with its label."""
    if len(entries) == 1:
        return entries[0]['summary']
    return ' | '.join(f'{label}: {e["summary"]}' for label, e in zip(labels, entries))
