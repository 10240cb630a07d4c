"""The control (random partitions of one-tower kernels), effect sizes, bootstrap intervals and how far conv1 is from
random, on planted kernels: towers that differ land above the control band, towers drawn from one pool inside it."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from timm_alexnet_split import kernels
from timm_alexnet_split.kernels import control
from timm_alexnet_split.kernels.control import (
    bootstrap_mean,
    chromatic_fraction,
    conv1_from_random,
    eta_squared,
    low_frequency_share,
    partition_control,
    random_low_frequency_share,
)

K = 11


def grey_gabors(rng, n, period=(3.0, 5.0)):
    """Fine achromatic gratings plus a little noise: chromatic fraction near 0, high frequency."""
    g = np.arange(K) - K // 2
    a = rng.uniform(0, np.pi, n)[:, None, None]
    p = rng.uniform(*period, n)[:, None, None]
    wave = np.cos(2 * np.pi * (g[None, :, None] * np.cos(a) + g[None, None, :] * np.sin(a)) / p)
    env = np.exp(-(g[:, None] ** 2 + g[None] ** 2) / 18.0)
    w = np.repeat((wave * env)[:, None], 3, 1)
    return w + rng.normal(0, 0.15, w.shape)


def colour_blobs(rng, n):
    """Smooth isoluminant blobs plus a little noise: chromatic fraction near 1, low frequency."""
    g = np.arange(K) - K // 2
    env = np.exp(-(g[:, None] ** 2 + g[None] ** 2) / 12.0)
    hue = rng.uniform(0, 2 * np.pi, n)
    opp = np.stack([np.array([2, -1, -1]) / np.sqrt(6), np.array([0, 1, -1]) / np.sqrt(2)])
    colour = np.cos(hue)[:, None] * opp[0] + np.sin(hue)[:, None] * opp[1]
    w = colour[:, :, None, None] * env
    return w + rng.normal(0, 0.15, w.shape)


def pool(rng, n):
    """One tower's worth of kernels of both kinds, mixed: what an unbranched network might learn."""
    kinds = rng.uniform(size=n) < 0.5
    w = np.empty((n, 3, K, K))
    w[kinds] = grey_gabors(rng, int(kinds.sum()))
    w[~kinds] = colour_blobs(rng, int((~kinds).sum()))
    return w


def measures(w):
    return {'colour': chromatic_fraction(w), 'frequency': kernels.luminance_orientation_frequency(w)[1]}


def test_eta_squared():
    assert eta_squared([[1, 1, 1], [2, 2, 2]]) == 1.0
    assert eta_squared([[1, 2, 3], [1, 2, 3]]) == 0.0
    a, b, c = [0.1, 0.3, 0.2], [0.5, 0.7], [0.9, 1.0, 0.8, 0.95]
    v = np.concatenate([a, b, c])
    between = sum(len(x) * (np.mean(x) - v.mean()) ** 2 for x in (a, b, c))
    assert eta_squared([a, b, c]) == pytest.approx(between / ((v - v.mean()) ** 2).sum())
    assert eta_squared([a, b, c]) == pytest.approx(kernels.effect_size([np.array(a), np.array(b), np.array(c)])[0])
    with pytest.raises(ValueError, match='NaN'):
        eta_squared([[1, np.nan], [2, 3]])
    with pytest.raises(ValueError):
        eta_squared([[1, 2]])


@pytest.mark.parametrize('sizes', [[48, 48], [32, 32, 32], [24, 24, 24, 24]])
@pytest.mark.parametrize('axis', ['colour', 'frequency'])
def test_planted_towers_land_above_the_control_band_one_pool_inside(sizes, axis):
    rng = np.random.default_rng(0)
    one_tower_runs = [measures(pool(rng, sum(sizes)))[axis] for _ in range(3)]
    band = partition_control(one_tower_runs, sizes, partitions=1000, seed=1)
    assert band['partitions'] == 1000 and band['sizes'] == sizes
    assert 0 <= band['low'] < band['mean'] < band['high'] < 1

    # towers that differ: the first tower grey gratings only, the others colour blobs only
    split = [grey_gabors(rng, sizes[0])] + [colour_blobs(rng, s) for s in sizes[1:]]
    assert eta_squared([measures(t)[axis] for t in split]) > band['high']

    # towers drawn from one pool: inside the band about 95% of the time
    inside = []
    for _ in range(100):
        w = pool(rng, sum(sizes))
        v = measures(w)[axis]
        groups = np.split(v, np.cumsum(sizes)[:-1])
        inside.append(band['low'] <= eta_squared(groups) <= band['high'])
    assert 0.85 <= np.mean(inside) <= 1.0


def test_partition_control_checks_and_reproduces():
    v = np.random.default_rng(0).uniform(size=96)
    a = partition_control(v, [48, 48], seed=3, return_samples=True)
    assert a == {**partition_control(list(v), [48, 48], seed=3, return_samples=True), 'samples': a['samples']}
    assert np.array_equal(a['samples'], partition_control(v, [48, 48], seed=3, return_samples=True)['samples'])
    assert len(a['samples']) == 1000 and a['level'] == 0.95
    assert a['low'] == pytest.approx(np.quantile(a['samples'], 0.025))
    with pytest.raises(ValueError, match='96 kernels'):
        partition_control(v, [32, 32])
    with pytest.raises(ValueError, match='NaN'):
        partition_control(np.r_[v[:-1], np.nan], [48, 48])
    with pytest.raises(ValueError):
        partition_control(v, [96])


def test_bootstrap_mean_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(0)
    hits = []
    for i in range(200):
        r = bootstrap_mean(rng.normal(1.0, 2.0, 30), resamples=2000, seed=i)
        hits.append(r['low'] <= 1.0 <= r['high'])
    assert 0.88 <= np.mean(hits) <= 0.99
    one = bootstrap_mean([0.4])
    assert one['mean'] == one['low'] == one['high'] == 0.4 and one['n'] == 1
    with pytest.raises(ValueError):
        bootstrap_mean([])


# ---- how far conv1 is from random --------------------------------------------------------------------------------
def test_random_kernels_give_the_random_baselines():
    w = np.random.default_rng(0).normal(size=(1000, 3, K, K))
    assert random_low_frequency_share() == pytest.approx(np.pi * 0.25 ** 2, abs=0.01)
    assert low_frequency_share(w).mean() == pytest.approx(random_low_frequency_share(), abs=0.005)
    assert chromatic_fraction(w).mean() == pytest.approx(control.RANDOM_CHROMATIC_FRACTION, abs=0.005)
    assert np.allclose(chromatic_fraction(w[:50]), kernels.chromatic_fraction(w[:50]))


def test_conv1_from_random_tells_learned_kernels_from_random_ones():
    rng = np.random.default_rng(0)
    w0 = rng.normal(0, 0.01, (96, 3, K, K))
    learned = np.concatenate([grey_gabors(rng, 48, period=(2.2, 3.0)), colour_blobs(rng, 48)]) * 0.05
    r0, r1 = conv1_from_random(w0), conv1_from_random(learned + w0, w0=w0)
    assert r0['chromatic']['mean'] == pytest.approx(2 / 3, abs=0.02) and r0['chromatic']['below_0_3'] == 0
    assert r1['chromatic']['below_0_3'] == pytest.approx(0.5, abs=0.05)
    assert r1['chromatic']['q1'] < 0.3 and r1['chromatic']['q3'] > 0.75
    base = r0['low_frequency_share']['random_baseline']
    assert abs(r0['low_frequency_share']['mean'] - base) < 0.02
    share = low_frequency_share(learned + w0)
    assert share[48:].mean() > 2 * base and share[:48].mean() < base  # smooth blobs above random, fine gratings below
    assert r1['low_frequency_share']['median'] == pytest.approx(np.median(share))
    assert r1['relative_change'] == pytest.approx(np.linalg.norm(learned) / np.linalg.norm(w0))
    assert r1['chromatic_added']['below_0_3'] == pytest.approx(0.5, abs=0.05)
    # the low-pass part drops the noise: a noisy blob is more chromatic low-passed than as it is
    noisy = colour_blobs(rng, 20) + rng.normal(0, 0.3, (20, 3, K, K))
    assert chromatic_fraction(control.low_pass(noisy)).mean() > chromatic_fraction(noisy).mean() + 0.05
    with pytest.raises(ValueError):
        conv1_from_random(w0[:, :2])


def test_control_imports_nothing_but_numpy(tmp_path):
    """control runs with torch, timm and onnx out of reach, under parent packages whose __init__ never runs: it
    needs numpy and the kernel tool's measures only."""
    block = tmp_path / 'sitecustomize.py'
    block.write_text(textwrap.dedent('''
        import importlib.abc, sys
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'timm', 'onnx', 'matplotlib'):
                    raise ImportError(name + ' is blocked in this test')
                return None
        sys.meta_path.insert(0, _Block())
    '''))
    folder = Path(control.__file__).parent
    code = ('import importlib, sys, types, numpy as np\n'
            'for name, path in (("timm_alexnet_split", %r), ("timm_alexnet_split.kernels", %r)):\n'
            '    pkg = types.ModuleType(name); pkg.__path__ = [path]; sys.modules[name] = pkg\n'
            'm = importlib.import_module("timm_alexnet_split.kernels.control")\n'
            'print(round(m.partition_control(np.arange(8.0), [4, 4], partitions=50)["mean"], 3))\n'
            % (str(folder.parent), str(folder)))
    env = {**os.environ, 'PYTHONPATH': str(tmp_path)}
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) > 0
