"""How often, with an interval; and a one-sided binomial test. Pure Python (math only; no scipy, no package imports).

- :func:`wilson`: the Wilson score interval of a proportion x / n (never outside [0, 1], sensible at 0 and n).
- :func:`clopper_pearson`: the exact (Clopper-Pearson) interval: the beta quantiles, found by bisection on the
  binomial tail (its coverage is at least the level for every true proportion).
- :func:`binomial_tail`: P(X >= x) for X ~ Binomial(n, p), the one-sided p-value of "more successes than p gives".
- :func:`proportion`: x of n with both intervals, as one dict; n = 0 gives no estimate (None), never 0 %.

Runs as a plain module too: it imports only the standard library.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

__all__ = ['LEVEL', 'normal_quantile', 'binomial_cdf', 'binomial_tail', 'wilson', 'clopper_pearson', 'proportion',
           'start_rank_test']

LEVEL = 0.95
_ITERATIONS = 200  # bisection steps: far below double precision (2**-200)


def _check(x: int, n: int) -> None:
    if int(x) != x or int(n) != n or not 0 <= x <= n:
        raise ValueError(f'a proportion needs whole numbers 0 <= x <= n, got x={x}, n={n}')


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f'level must be between 0 and 1, got {level}')


def _bisect(f, lo: float, hi: float) -> float:
    """The point in [lo, hi] where the increasing function f crosses 0 (f(lo) <= 0 <= f(hi))."""
    for _ in range(_ITERATIONS):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def normal_quantile(q: float) -> float:
    """z with P(Z <= z) = q for a standard normal Z (bisection on erf; 1.959964 for q = 0.975)."""
    if not 0 < q < 1:
        raise ValueError(f'a quantile needs 0 < q < 1, got {q}')
    return _bisect(lambda z: 0.5 * math.erfc(-z / math.sqrt(2)) - q, -40.0, 40.0)


def _log_pmf(i: int, n: int, p: float) -> float:
    if p <= 0:
        return 0.0 if i == 0 else -math.inf
    if p >= 1:
        return 0.0 if i == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p))


def binomial_cdf(x: int, n: int, p: float) -> float:
    """P(X <= x) for X ~ Binomial(n, p); 0 for x < 0, 1 for x >= n."""
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    return min(1.0, math.fsum(math.exp(_log_pmf(i, n, p)) for i in range(0, int(x) + 1)))


def binomial_tail(x: int, n: int, p: float) -> float:
    """P(X >= x) for X ~ Binomial(n, p): the one-sided p-value of x successes in n against success probability p."""
    _check(x, n)
    if not 0 <= p <= 1:
        raise ValueError(f'p must be in [0, 1], got {p}')
    return min(1.0, math.fsum(math.exp(_log_pmf(i, n, p)) for i in range(int(x), int(n) + 1)))


def wilson(x: int, n: int, level: float = LEVEL) -> Tuple[float, float]:
    """The Wilson score interval (low, high) of x / n at ``level`` (two-sided); n must be >= 1; low <= x / n <= high,
    low = 0 at x = 0 and high = 1 at x = n exactly."""
    _check(x, n)
    _check_level(level)
    if n == 0:
        raise ValueError('no interval for a proportion of 0 trials')
    z = normal_quantile(1 - (1 - level) / 2)
    centre = (x + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(x * (n - x) / n + z * z / 4)
    low = 0.0 if x == 0 else max(0.0, min(x / n, centre - half))  # exact at the ends, the estimate always inside
    high = 1.0 if x == n else min(1.0, max(x / n, centre + half))
    return low, high


def clopper_pearson(x: int, n: int, level: float = LEVEL) -> Tuple[float, float]:
    """The exact interval (low, high) of x / n: low solves P(X >= x | p) = a/2, high solves P(X <= x | p) = a/2,
    a = 1 - level (the beta quantiles Beta(a/2; x, n-x+1) and Beta(1-a/2; x+1, n-x)); low = 0 at x = 0, high = 1
    at x = n. n must be >= 1."""
    _check(x, n)
    _check_level(level)
    if n == 0:
        raise ValueError('no interval for a proportion of 0 trials')
    a = (1 - level) / 2
    low = 0.0 if x == 0 else _bisect(lambda p: binomial_tail(x, n, p) - a, 0.0, 1.0)
    high = 1.0 if x == n else _bisect(lambda p: a - binomial_cdf(x, n, p), 0.0, 1.0)
    return low, high


def proportion(x: int, n: int, level: float = LEVEL) -> Dict[str, Optional[float]]:
    """x of n with its estimate and both intervals at ``level``. With n = 0 the estimate and the intervals are None
    (no run to count: never a silent 0 %)."""
    _check(x, n)
    if n == 0:
        return {'x': 0, 'n': 0, 'estimate': None, 'wilson': None, 'clopper_pearson': None, 'level': level}
    return {'x': int(x), 'n': int(n), 'estimate': x / n, 'wilson': list(wilson(x, n, level)),
            'clopper_pearson': list(clopper_pearson(x, n, level)), 'level': level}


def start_rank_test(ranks, towers: int) -> Dict[str, Optional[float]]:
    """The pre-registered start-order test for ``towers`` towers: of the runs' ranks (1 = the tower that ended
    greyest started the most chromatic), x are rank 1; H0: each run is rank 1 with probability 1 / towers; one-sided
    p = P(X >= x | n, 1 / towers). No ranks: n = 0 and p None (nothing tested)."""
    if towers < 2:
        raise ValueError(f'the start-order test needs at least two towers, got {towers}')
    ranks = [int(r) for r in ranks]
    if any(not 1 <= r <= towers for r in ranks):
        raise ValueError(f'ranks must be 1..{towers}, got {ranks}')
    x, n, p0 = sum(1 for r in ranks if r == 1), len(ranks), 1 / towers
    return {'rank1': x, 'n': n, 'null_probability': p0, 'p_value': binomial_tail(x, n, p0) if n else None}
