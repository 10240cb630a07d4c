"""The split rate's intervals and the start-order test (timm_alexnet_split.proportions) against values computed
independently: Wilson from its formula by hand, Clopper-Pearson from the beta distribution integrated numerically
and from its closed forms at 0 and n, the binomial tail summed by hand."""
import math

import numpy as np
import pytest

from timm_alexnet_split import proportions as pr


def _wilson_by_hand(x, n, z=1.959963984540054):
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _beta_cdf(q, a, b, points=200001):
    """The regularised incomplete beta I_q(a, b) by the trapezoid rule on the density (a, b >= 1 here)."""
    t = np.linspace(0, q, points)
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    with np.errstate(divide='ignore', invalid='ignore'):
        dens = np.exp(log_norm + (a - 1) * np.log(t) + (b - 1) * np.log1p(-t))
    return float(np.trapezoid(np.nan_to_num(dens), t))


@pytest.mark.parametrize('x, n, expected', [
    (7, 9, (0.4526, 0.9368)),   # docs/science.md's 7 of 9, by hand: centre 0.6947, half-width 0.2421
    (0, 10, (0.0, 0.2775)),     # no split in ten: z^2 / (n + z^2) = 0.2775
    (10, 10, (0.7225, 1.0)),
])
def test_wilson_matches_the_formula_and_hand_values(x, n, expected):
    low, high = pr.wilson(x, n)
    assert (low, high) == pytest.approx(expected, abs=5e-5)
    assert (low, high) == pytest.approx(_wilson_by_hand(x, n), abs=1e-12)


@pytest.mark.parametrize('x, n', [(7, 9), (14, 18), (1, 10), (9, 10), (3, 3)])
def test_clopper_pearson_bounds_are_the_beta_quantiles(x, n):
    low, high = pr.clopper_pearson(x, n)
    if x > 0:   # low = Beta(0.025; x, n - x + 1)
        assert _beta_cdf(low, x, n - x + 1) == pytest.approx(0.025, abs=1e-5)
    if x < n:   # high = Beta(0.975; x + 1, n - x)
        assert _beta_cdf(high, x + 1, n - x) == pytest.approx(0.975, abs=1e-5)
    assert low < x / n < high or (x == n and high == 1.0)


def test_clopper_pearson_at_the_ends_has_its_closed_form_and_7_of_9_its_reference():
    assert pr.clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)), abs=1e-12)   # 0.3085
    assert pr.clopper_pearson(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0), abs=1e-12)
    assert pr.clopper_pearson(7, 9) == pytest.approx((0.3999064, 0.9718550), abs=1e-6)  # R: binom.test(7, 9)
    w, cp = pr.wilson(7, 9), pr.clopper_pearson(7, 9)
    assert cp[0] < w[0] and w[1] < cp[1]  # the exact interval is the wider, here


def test_binomial_tail_is_the_one_sided_p_value():
    assert pr.binomial_tail(6, 6, 0.5) == pytest.approx(1 / 64)
    assert pr.binomial_tail(0, 3, 1 / 3) == 1.0
    by_hand = sum(math.comb(10, i) * 0.25 ** i * 0.75 ** (10 - i) for i in range(5, 11))
    assert pr.binomial_tail(5, 10, 0.25) == pytest.approx(by_hand, rel=1e-12)
    assert pr.binomial_cdf(4, 10, 0.25) + pr.binomial_tail(5, 10, 0.25) == pytest.approx(1.0, rel=1e-12)


def test_no_run_is_no_estimate_never_zero_percent():
    p = pr.proportion(0, 0)
    assert p['n'] == 0 and p['estimate'] is None and p['wilson'] is None and p['clopper_pearson'] is None
    with pytest.raises(ValueError):
        pr.wilson(0, 0)
    with pytest.raises(ValueError):
        pr.proportion(3, 2)
    full = pr.proportion(7, 9)
    assert full['estimate'] == pytest.approx(7 / 9) and full['wilson'][0] < 7 / 9 < full['wilson'][1]


def test_start_rank_test_counts_rank_one_against_one_in_k():
    t = pr.start_rank_test([1, 1, 1], 3)
    assert (t['rank1'], t['n'], t['null_probability']) == (3, 3, pytest.approx(1 / 3))
    assert t['p_value'] == pytest.approx(1 / 27)
    assert pr.start_rank_test([2, 3, 1, 2], 4)['p_value'] == pytest.approx(1 - 0.75 ** 4)  # P(X >= 1)
    assert pr.start_rank_test([], 2)['p_value'] is None
    with pytest.raises(ValueError):
        pr.start_rank_test([3], 2)
