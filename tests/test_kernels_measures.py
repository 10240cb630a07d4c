"""The kernel tool's measures with known answers: low-pass and own-band chromatic fractions, W - W0, the spatial
frequency axis and its verdict, and which measure the default is (the one a planted split under strong i.i.d.
noise shows best)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kernel_cli import report, run
from onnx_graphs import colour_kernels, grey_kernels, random_kernels, save, tower_style_graph

from timm_alexnet_split import kernels as K
from timm_alexnet_split.kernels.measures import low_pass_components, resolve_measure

FAST = ['--permutations', '2000', '--quiet']


def noisy(w: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """``w`` plus i.i.d. Gaussian noise of ``noise`` times each kernel's RMS."""
    rms = np.sqrt(np.square(w).mean(axis=(1, 2, 3), keepdims=True))
    return w + noise * rms * np.random.default_rng(seed).standard_normal(w.shape)


# ----------------------------------------------------------------------------------------------- low-pass, band

def test_low_pass_is_an_energy_splitting_projection_that_keeps_grey_grey():
    w = random_kernels(10, seed=4).astype(np.float64)
    lo = K.low_pass(w, 0.25)
    hi = w - lo
    np.testing.assert_allclose((w ** 2).sum(), (lo ** 2).sum() + (hi ** 2).sum(), rtol=1e-10)
    np.testing.assert_allclose(K.low_pass(lo, 0.25), lo, atol=1e-12)          # a projection
    g = grey_kernels(4).astype(np.float64)
    assert np.allclose(K.chromatic_fraction(K.low_pass(g)), 0, atol=1e-9)     # grey stays grey
    assert low_pass_components(11, 11, 0.25) == 21 and low_pass_components(3, 3, 0.25) == 1
    assert low_pass_components(11, 11, 0.1) < 21 and low_pass_components(7, 7, 0.25) == 9


def test_band_measure_follows_each_kernels_own_band():
    rng = np.random.default_rng(0)
    r = rng.standard_normal((3000, 3, 11, 11))
    assert abs(np.nanmean(K.band_chromatic_fraction(r, 21)) - 2 / 3) < 0.01           # noise: 2/3, no bias
    fine = noisy(grey_kernels(32, seed=1, freq=(0.3, 0.4)).astype(np.float64), 0.3, seed=2)
    assert K.band_chromatic_fraction(fine, 21).mean() < 0.15                            # fine grey gratings: grey
    assert K.chromatic_fraction(K.low_pass(fine)).mean() > 0.4                          # the low-pass sees noise
    np.testing.assert_allclose(K.band_chromatic_fraction(r[:5], 121 * 3), K.chromatic_fraction(r[:5]), atol=1e-12)
    assert np.isnan(K.band_chromatic_fraction(np.zeros((1, 3, 5, 5)), 9))[0]


def test_auto_measure_is_band_for_large_kernels_and_plain_for_small_ones():
    assert resolve_measure('auto', (96, 3, 11, 11))[0] == 'band'
    measure, why, warning = resolve_measure('auto', (16, 3, 3, 3))
    assert measure == 'plain' and '3x3' in why and warning is None
    assert resolve_measure('lowpass', (16, 3, 3, 3))[2] is not None                      # asked for: a warning
    with pytest.raises(K.KernelsError, match='epoch-0'):
        resolve_measure('trained', (96, 3, 11, 11), has_initial=False)


def test_default_measure_reveals_a_planted_split_under_strong_noise_best():
    """Grey gratings in one tower, colour blobs in the other, buried in i.i.d. noise of 3x their RMS: over seeds,
    the default measure separates the towers with the largest effect size of all measures."""
    d = {m: [] for m in ('plain', 'lowpass', 'band')}
    for seed in range(4):
        g = noisy(grey_kernels(24, seed=seed).astype(np.float64), 3.0, seed=100 + seed)
        c = noisy(colour_kernels(24, seed=50 + seed).astype(np.float64), 3.0, seed=200 + seed)
        mg, mc = K.chromatic_measures(g), K.chromatic_measures(c)
        for m in d:
            d[m].append(K.effect_size([mg[m], mc[m]])[0])
    mean = {m: float(np.mean(v)) for m, v in d.items()}
    default = resolve_measure(K.DEFAULT_MEASURE, (48, 3, 11, 11))[0]
    assert default == max(mean, key=mean.get), mean
    assert mean[default] > mean['plain'] > mean['lowpass'], mean   # fine grey gratings: the low-pass sees noise


def test_noisy_planted_split_found_by_the_tool_with_the_default_measure(tmp_path, capsys):
    g = noisy(grey_kernels(24, seed=0).astype(np.float64), 3.0, seed=1)
    c = noisy(colour_kernels(24, seed=5).astype(np.float64), 3.0, seed=2)
    path = save(tower_style_graph([g, c]), tmp_path / 'noisy.onnx')
    assert run([path, '--out', tmp_path / 'r'] + FAST, capsys)[0] == 0
    r = report(tmp_path / 'r')
    assert r['measure'] == 'band' and r['measure_requested'] == 'auto' and r['measure_label'] in r['verdict']
    assert r['p_value'] < 1e-3 and r['verdict'].startswith('towers differ in colour')
    assert r['groups'][1]['mean'] > r['groups'][0]['mean'] + 0.1
    assert set(r['measures']) == {'plain', 'lowpass', 'band'}          # every measure reported beside it
    assert r['measures']['band']['p_value'] == r['p_value']
    np.testing.assert_allclose(r['groups'][0]['chromatic_fraction_plain'], K.chromatic_fraction(g), atol=1e-6)


def test_cutoff_option(tmp_path, capsys):
    path = save(tower_style_graph([grey_kernels(16), colour_kernels(16)]), tmp_path / 'm.onnx')
    assert run([path, '--out', tmp_path / 'r', '--cutoff', '0.15', '--measure', 'lowpass'] + FAST, capsys)[0] == 0
    r = report(tmp_path / 'r')
    assert r['low_pass_cutoff'] == 0.15 and '0.15 cycles/px' in r['verdict'] and r['measure'] == 'lowpass'
    np.testing.assert_allclose(r['groups'][1]['chromatic_fraction'],
                               K.chromatic_fraction(K.low_pass(colour_kernels(16), 0.15)), atol=1e-6)
    for bad in ('0', '-0.1', '0.8'):
        rc, _, err = run([path, '--out', tmp_path / 'x', '--cutoff', bad], capsys)
        assert rc == 2 and err.count('\n') == 1 and '--cutoff' in err


# ----------------------------------------------------------------------------------------------- frequency axis

def test_towers_that_differ_only_in_frequency_get_a_frequency_verdict(tmp_path, capsys):
    coarse = noisy(grey_kernels(32, seed=1, freq=(0.05, 0.1)).astype(np.float64), 0.1, seed=3)
    fine = noisy(grey_kernels(32, seed=2, freq=(0.3, 0.4)).astype(np.float64), 0.1, seed=4)
    path = save(tower_style_graph([coarse, fine]), tmp_path / 'freq.onnx')
    assert run([path, '--out', tmp_path / 'r'] + FAST, capsys)[0] == 0
    r = report(tmp_path / 'r')
    assert r['verdict'].startswith('towers differ in spatial frequency (0.0') and 'not in colour' in r['verdict']
    assert r['frequency_p_value'] < 1e-3 and r['frequency_effect_size'] > 2
    assert abs(r['difference_of_means']) < 0.01     # both grey: any colour difference is negligible
    low, high = r['groups'][0], r['groups'][1]
    assert 0.04 <= low['frequency_mean'] <= 0.11 and 0.29 <= high['frequency_mean'] <= 0.41
    assert low['frequency_median'] is not None and all(g['mean'] < 0.3 for g in r['groups'])
    assert (tmp_path / 'r' / 'colour_frequency.png').is_file()


def test_towers_that_differ_in_both_axes_name_both(tmp_path, capsys):
    blobs = colour_kernels(24, luminance=1.0)    # colour blobs with some luminance: luminance frequency ~0
    path = save(tower_style_graph([grey_kernels(24, freq=(0.25, 0.35)), blobs]), tmp_path / 'b.onnx')
    assert run([path, '--out', tmp_path / 'r'] + FAST, capsys)[0] == 0
    r = report(tmp_path / 'r')
    assert r['verdict'].startswith('towers differ in colour and in spatial frequency: tower 1 colour-specific')
    assert 'cycles/px' in r['verdict'] and r['frequency_p_value'] < 1e-3


def test_split_verdict_wording():
    from timm_alexnet_split.kernels.compare import split_verdict
    m = 'chromatic fraction of the whole kernel'
    assert split_verdict([0.1, 0.12], 0.7, [0.08, 0.33], 5e-5, m) == \
        f'towers differ in spatial frequency (0.08 vs 0.33 cycles/px, p < 1e-4), not in colour (p = 0.7) [measure: {m}]'
    assert split_verdict([0.1, 0.12], 0.7, [0.08, 0.09], 0.4, m).startswith('no split detected: not in colour (p = 0.7')
    assert split_verdict([0.06, 0.74], 1e-5, [0.2, 0.2], 0.5, m).startswith(
        'towers differ in colour, not in spatial frequency (p = 0.5): tower 1 colour-specific (mean 0.74)')
    tiny = split_verdict([0.0015, 0.0012], 0.003, [0.08, 0.33], 5e-5, m)
    assert tiny.startswith('towers differ in spatial frequency') and 'differ by only 0.000 < 0.05' in tiny


def test_pure_colour_kernels_have_no_luminance_frequency():
    orient, freq = K.luminance_orientation_frequency(colour_kernels(4).astype(np.float64))
    assert np.isnan(freq).all() and np.isnan(orient).all()
    assert np.isfinite(K.luminance_orientation_frequency(colour_kernels(4, luminance=1.0))[1]).all()


# ----------------------------------------------------------------------------------------------- W - W0

def make_run(root: Path, epochs: int = 4, weights: bool = False) -> Path:
    """A run folder whose conv1 starts as strong random noise W0 and gains a small planted grey/colour split."""
    folder = root / 'conv1'
    folder.mkdir(parents=True)
    w0 = random_kernels(48, seed=9).astype(np.float64) * 3
    planted = np.concatenate([grey_kernels(24, seed=3), colour_kernels(24, seed=4)]).astype(np.float64)
    for e in range(epochs + 1):
        np.save(folder / f'epoch_{e:04d}.npy', (w0 + e / epochs * planted).astype(np.float32))
    (folder / 'towers.json').write_text(json.dumps({'num_towers': 2, 'kernels_per_tower': [24, 24],
                                                    'channel_order': 'RGB'}))
    return root


def test_what_training_added_reveals_a_split_hidden_by_the_init(tmp_path, capsys):
    run_dir = make_run(tmp_path / 'run')
    assert run([run_dir, '--out', tmp_path / 'r'] + FAST, capsys)[0] == 0       # a run folder as FILE
    r = report(tmp_path / 'r')
    assert 'trained' in r['measures'] and r['measures']['trained']['p_value'] < 1e-3
    assert r['measures']['plain']['p_value'] > K.ALPHA                            # buried in the init noise
    t = r['measures']['trained']['towers']
    assert t[0]['mean'] < 0.1 and t[1]['mean'] > 0.9
    assert r['latent']['applicable'] is False and 'last.safetensors' in r['latent']['reason']
    assert run([run_dir, '--out', tmp_path / 'r2', '--measure', 'trained'] + FAST, capsys)[0] == 0
    r2 = report(tmp_path / 'r2')
    assert r2['measure'] == 'trained' and 'W - W0' in r2['verdict'] and 'tower 1 colour-specific' in r2['verdict']


def test_trained_measure_needs_epoch_0(tmp_path, capsys):
    path = save(tower_style_graph([grey_kernels(8), colour_kernels(8)]), tmp_path / 'm.onnx')
    rc, out, err = run([path, '--out', tmp_path / 'r', '--measure', 'trained'], capsys)
    assert rc == 2 and err.count('\n') == 1 and 'epoch-0' in err and not (tmp_path / 'r').exists()


def test_evolution_has_both_axes_and_every_measure_per_epoch(tmp_path, capsys):
    run_dir = make_run(tmp_path / 'run')
    rc, _, err = run(['--evolution', run_dir, '--measure', 'trained'] + FAST, capsys)
    assert rc == 0, err
    ev = json.loads((run_dir / 'kernel_evolution' / 'evolution.json').read_text())
    assert ev['epochs'] == [0, 1, 2, 3, 4] and ev['measure'] == 'trained'
    assert set(ev['p_value_by_measure']) == {'plain', 'lowpass', 'band', 'trained'}
    assert ev['p_value'][0] is None and ev['p_value'][-1] < 1e-3                  # W - W0 = 0 at epoch 0
    assert ev['p_value_by_measure']['plain'][-1] > K.ALPHA
    assert len(ev['frequency_p_value']) == 5 and len(ev['towers'][0]['frequency_mean']) == 5
    plain = [t['mean_by_measure']['plain'] for t in ev['towers']]
    assert plain[0][0] == pytest.approx(plain[1][0], abs=0.05)
    assert 'W - W0' in ev['final_verdict']
