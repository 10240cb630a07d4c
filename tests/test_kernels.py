"""The kernel-inspection tool (timm_alexnet_split/kernels/) on ONNX graphs with known conv1 kernels."""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kernel_cli import report, run
from no_torch import env_without_torch
from onnx import TensorProto
from onnx_graphs import (
    caffe_style_graph,
    colour_kernels,
    grey_input_graph,
    grey_kernels,
    hostile_files,
    move_to_external,
    no_conv_graph,
    random_kernels,
    save,
    tower_metadata,
    tower_style_graph,
    with_initializer,
)

from timm_alexnet_split import kernels as K

KERNELS_DIR = Path(K.__file__).parent   # runs as a plain script: python timm_alexnet_split/kernels
PREFIX = 'timm-alexnet-split kernels: error: '
FAST = ['--permutations', '4000', '--quiet']  # p down to 2.5e-4: enough for the verdicts tested here


def grey(n: int, seed: int = 0) -> np.ndarray:
    return grey_kernels(n, seed=seed, colour=0.3)


def colour(n: int, seed: int = 1) -> np.ndarray:
    return colour_kernels(n, seed=seed, luminance=1.0)


def snapshot(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob('*')}


# ----------------------------------------------------------------------------------------------- measures

def test_chromatic_fraction_is_the_projection_definition():
    w = random_kernels(20, size=5, seed=3).astype(np.float64)
    pixels = w.transpose(0, 2, 3, 1)                         # (n, h, w, rgb)
    proj = pixels @ (np.ones((3, 3)) / 3)                    # P onto (1,1,1)/sqrt(3), per pixel
    expected = 1 - (proj ** 2).sum(axis=(1, 2, 3)) / (pixels ** 2).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(K.chromatic_fraction(w), expected, atol=1e-12)
    np.testing.assert_allclose(K.chromatic_fraction(w[:, ::-1]), expected, atol=1e-12)   # RGB vs BGR
    np.testing.assert_allclose(K.chromatic_fraction(7.5 * w), expected, atol=1e-12)


def test_chromatic_fraction_extremes():
    assert np.allclose(K.chromatic_fraction(grey_kernels(8)), 0, atol=1e-6)
    assert np.allclose(K.chromatic_fraction(colour_kernels(8)), 1, atol=1e-6)
    assert np.isnan(K.chromatic_fraction(np.zeros((1, 3, 11, 11))))[0]
    with pytest.raises(ValueError):
        K.chromatic_fraction(np.ones((2, 4, 3, 3)))


@pytest.mark.parametrize('wave, stripes', [((1, 0), 90.0), ((0, 1), 0.0), ((1, -1), 135.0), ((1, 1), 45.0)])
def test_luminance_orientation_and_frequency_of_gratings(wave, stripes):
    yy, xx = np.mgrid[:11, :11].astype(float)
    f = 0.25  # cycles per pixel along the wave vector
    ux, uy = np.array(wave) / math.hypot(*wave)
    g = np.cos(2 * np.pi * f * (ux * xx + uy * yy))
    w = np.repeat(g[None, None], 3, axis=1) + np.array([0.3, -0.1, -0.2])[None, :, None, None] * 0.2
    orient, freq = K.luminance_orientation_frequency(w)
    assert abs(freq[0] - f) < 1.5 / K.FFT_SIZE
    assert min(abs(orient[0] - stripes), 180 - abs(orient[0] - stripes)) < 8


def test_luminance_of_a_blob_has_no_orientation():
    yy, xx = np.mgrid[:11, :11] - 5.0
    blob = np.exp(-(xx ** 2 + yy ** 2) / 8)
    orient, freq = K.luminance_orientation_frequency(np.repeat(blob[None, None], 3, axis=1))
    assert freq[0] == 0 and np.isnan(orient[0])


def exact_p(values, stat) -> float:
    """Exact permutation p over all distinct assignments of the pooled values to groups of the same sizes."""
    pooled = np.concatenate(values)
    sizes = [len(v) for v in values]
    observed = stat(values)
    total = hits = 0
    for perm in set(itertools.permutations(range(len(pooled)))):
        groups, start = [], 0
        for s in sizes:
            groups.append(pooled[list(perm[start:start + s])])
            start += s
        total += 1
        hits += stat(groups) >= observed - 1e-12
    return hits / total


def test_permutation_test_two_sided_matches_exact_enumeration():
    values = [np.array([0.1, 0.2, 0.35]), np.array([0.3, 0.5, 0.6])]
    exact = exact_p(values, lambda g: abs(g[1].mean() - g[0].mean()))
    stat, p = K.permutation_test(values, permutations=40_000, seed=1)
    assert stat == pytest.approx(abs(values[1].mean() - values[0].mean()))
    assert p == pytest.approx(exact, abs=0.01)
    _, p_swapped = K.permutation_test(values[::-1], permutations=40_000, seed=1)
    assert p_swapped == pytest.approx(p, abs=0.01)   # two-sided: the order of the towers does not matter


def test_permutation_test_three_groups_matches_exact_enumeration():
    values = [np.array([0.1, 0.3]), np.array([0.2, 0.6]), np.array([0.5, 0.9])]

    def between(groups):
        pooled = np.concatenate(groups)
        return sum(len(g) * (g.mean() - pooled.mean()) ** 2 for g in groups) / len(pooled)
    _, p = K.permutation_test(values, permutations=40_000, seed=2)
    assert p == pytest.approx(exact_p(values, between), abs=0.01)


def test_permutation_test_reproducible_and_reports_below_1e_4():
    a, b = K.chromatic_fraction(grey(48)), K.chromatic_fraction(colour(48))
    assert K.permutation_test([a, b])[1] < 1e-4
    mixed = [np.r_[a[:24], b[:24]], np.r_[a[24:], b[24:]]]
    assert K.permutation_test(mixed, seed=5) == K.permutation_test(mixed, seed=5)
    assert K.permutation_test(mixed, seed=5)[1] > 0.01


def test_effect_sizes():
    a, b = np.array([0.1, 0.2, 0.3, 0.2]), np.array([0.5, 0.7, 0.6, 0.9])
    sp = math.sqrt((3 * a.var(ddof=1) + 3 * b.var(ddof=1)) / 6)
    d, measure = K.effect_size([a, b])
    assert d == pytest.approx((b.mean() - a.mean()) / sp) and 'Cohen' in measure
    c = np.array([0.4, 0.5])
    pooled = np.r_[a, b, c]
    eta = sum(len(g) * (g.mean() - pooled.mean()) ** 2 for g in (a, b, c)) / ((pooled - pooled.mean()) ** 2).sum()
    e, measure = K.effect_size([a, b, c])
    assert e == pytest.approx(eta) and 'eta' in measure


def test_verdict_wording():
    assert K.verdict([0.06, 0.74], 1e-5) == 'tower 1 colour-specific (mean 0.74), tower 0 colour-agnostic (0.06), p < 1e-4'
    assert K.verdict([0.40, 0.41], 0.62) == 'no split detected (p = 0.62)'
    assert K.verdict([0.7, 0.05, 0.1], 0.001).startswith('tower 0 colour-specific (mean 0.70), towers 1 and 2 colour-agnostic')
    assert K.verdict([0.5], None).startswith('one tower only')


# ----------------------------------------------------------------------------------------------- graphs

def check_split(out: Path, colour_tower: int, expected_groups) -> dict:
    r = report(out)
    assert r['num_groups'] == len(expected_groups)
    assert r['measure'] == 'band' and '0.25 cycles/px' in r['measure_label'] and r['measure_label'] in r['verdict']
    for g, w in zip(r['groups'], expected_groups):
        assert g['kernels'] == len(w)
        np.testing.assert_allclose(g['chromatic_fraction_plain'], K.chromatic_fraction(w), atol=1e-6)
        np.testing.assert_allclose(g['chromatic_fraction_lowpass'], K.chromatic_fraction(K.low_pass(w, 0.25)), atol=1e-6)
        cf = K.band_chromatic_fraction(w, 21)   # 11x11 kernels: 21 components at <= 0.25 cycles/px
        np.testing.assert_allclose(g['chromatic_fraction_band'], cf, atol=1e-6)
        np.testing.assert_allclose(g['chromatic_fraction'], cf, atol=1e-6)
        assert g['mean'] == pytest.approx(float(cf.mean()), abs=1e-6)
        assert g['fraction_above_0_3'] == pytest.approx(float((cf > 0.3).mean()))
    for m in ('plain', 'lowpass', 'band'):
        assert r['measures'][m]['p_value'] < 1e-3
        assert r['measures'][m]['towers'][colour_tower]['mean'] > 0.6
    assert r['p_value'] < 1e-3 and r['effect_size'] is not None
    assert r['verdict'].startswith('towers differ in colour')
    assert f'tower {colour_tower} colour-specific' in r['verdict'] and 'colour-agnostic' in r['verdict']
    return r


@pytest.mark.parametrize('n', [2, 3])
def test_caffe_style_split_found_from_conv2_group(tmp_path, capsys, n):
    parts = [grey(32, seed=i) for i in range(n)]
    parts[n - 1] = colour(32)
    path = save(caffe_style_graph(np.concatenate(parts), groups=n), tmp_path / 'bvlc.onnx')
    rc, out, err = run([path, '--out', tmp_path / 'r', '--permutations', '4000'], capsys)
    assert rc == 0, err
    r = check_split(tmp_path / 'r', n - 1, parts)
    assert r['layout'] == 'grouped' and f'group={n}' in r['grouping']
    assert 'verdict: tower' in out


@pytest.mark.parametrize('n', [2, 3])
def test_tower_style_split_found_from_convs_reading_the_image(tmp_path, capsys, n):
    parts = [grey(48 // n + 1, seed=i) for i in range(n)]
    parts[0] = colour(48 // n)  # unequal widths too
    path = save(tower_style_graph(parts), tmp_path / 'towers.onnx')
    rc, _, err = run([path, '--out', tmp_path / 'r'] + FAST, capsys)
    assert rc == 0, err
    r = check_split(tmp_path / 'r', 0, parts)
    assert r['layout'] == 'towers'
    assert [g['source'] for g in r['groups']] == [f'/towers.{i}/conv1/Conv' for i in range(n)]


@pytest.mark.parametrize('style, n', [('caffe', 2), ('caffe', 3), ('towers', 2), ('towers', 3)])
def test_control_both_kinds_in_every_tower_says_no_split(tmp_path, capsys, style, n):
    parts = [np.concatenate([grey(16, seed=10 + i), colour(16, seed=20 + i)]) for i in range(n)]
    model = caffe_style_graph(np.concatenate(parts), n) if style == 'caffe' else tower_style_graph(parts)
    path = save(model, tmp_path / 'control.onnx')
    rc, _, err = run([path, '--out', tmp_path / 'r', '--quiet'], capsys)
    assert rc == 0, err
    r = report(tmp_path / 'r')
    assert r['num_groups'] == n
    assert r['p_value'] > K.ALPHA and r['frequency_p_value'] > K.ALPHA
    assert r['verdict'].startswith(f'no split detected: not in colour (p = {r["p_value"]:.2g}), not in spatial frequency')
    assert r['verdict'].endswith(f'[measure: {r["measure_label"]}]')


def test_random_init_kernels_say_no_split(tmp_path, capsys):
    path = save(tower_style_graph([random_kernels(48, seed=3), random_kernels(48, seed=4)]), tmp_path / 'init.onnx')
    assert run([path, '--out', tmp_path / 'r'] + FAST, capsys)[0] == 0
    r = report(tmp_path / 'r')
    assert r['verdict'].startswith('no split detected')
    assert all(abs(t['mean'] - 2 / 3) < 0.03 for t in r['measures']['plain']['towers'])  # random kernels: 2/3
    assert all(abs(g['mean'] - 2 / 3) < 0.06 for g in r['groups'])  # low-pass: fewer components, the same 2/3


def test_metadata_sets_tower_order_when_consistent(tmp_path, capsys):
    g, c = grey(24), colour(24)
    model = tower_style_graph([g, c])
    meta = tower_metadata(model)
    meta['conv1_nodes'] = json.dumps(json.loads(meta['conv1_nodes'])[::-1])
    path = save(tower_style_graph([g, c], metadata=meta), tmp_path / 'm.onnx')
    assert run([path, '--out', tmp_path / 'r'] + FAST, capsys)[0] == 0
    r = report(tmp_path / 'r')
    assert r['groups'][0]['source'] == '/towers.1/conv1/Conv'
    assert 'tower 0 colour-specific' in r['verdict'] and 'metadata' in r['grouping'] and not r['warnings']


def test_inconsistent_metadata_is_ignored_with_a_warning(tmp_path, capsys):
    g, c = grey(24), colour(24)
    meta = {'num_towers': '3', 'conv1_nodes': json.dumps(['a', 'b']), 'channel_order': 'RGB'}
    path = save(tower_style_graph([g, c], metadata=meta), tmp_path / 'm.onnx')
    rc, _, err = run([path, '--out', tmp_path / 'r', '--permutations', '2000'], capsys)
    assert rc == 0
    r = report(tmp_path / 'r')
    assert r['num_groups'] == 2 and 'tower 1 colour-specific' in r['verdict']
    assert len(r['warnings']) == 2 and err.count('warning:') == 2


def test_metadata_splits_a_single_ungrouped_conv(tmp_path, capsys):
    w = np.concatenate([colour(24), grey(24)])
    plain = save(caffe_style_graph(w, groups=1), tmp_path / 'plain.onnx')
    assert run([plain, '--out', tmp_path / 'r1'] + FAST, capsys)[0] == 0
    assert report(tmp_path / 'r1')['num_groups'] == 1
    assert report(tmp_path / 'r1')['verdict'].startswith('one tower only')
    meta = save(caffe_style_graph(w, groups=1, metadata={'num_towers': '2', 'channel_order': 'BGR'}), tmp_path / 'meta.onnx')
    assert run([meta, '--out', tmp_path / 'r2'] + FAST, capsys)[0] == 0
    r = report(tmp_path / 'r2')
    assert r['num_groups'] == 2 and r['channel_order'] == 'BGR' and 'tower 0 colour-specific' in r['verdict']


def test_groups_option_overrides_the_graph(tmp_path, capsys):
    parts = [grey(24), colour(24), grey(24, seed=5), colour(24, seed=6)]
    path = save(caffe_style_graph(np.concatenate(parts), groups=2), tmp_path / 'g.onnx')
    assert run([path, '--out', tmp_path / 'r', '--groups', '4'] + FAST, capsys)[0] == 0
    r = report(tmp_path / 'r')
    assert r['num_groups'] == 4 and [g['kernels'] for g in r['groups']] == [24] * 4
    assert ': towers 1 and 3 colour-specific' in r['verdict'] and '--groups 4' in r['grouping']


def test_external_data_inside_the_model_folder_is_read(tmp_path, capsys):
    g, c = grey(24), colour(24)
    (tmp_path / 'data').mkdir()
    model = move_to_external(tower_style_graph([g, c]), 'towers.1.conv1.weight', 'data/w1.bin', tmp_path / 'data' / 'w1.bin')
    path = save(model, tmp_path / 'ext.onnx')
    assert run([path, '--out', tmp_path / 'r'] + FAST, capsys)[0] == 0
    check_split(tmp_path / 'r', 1, [g, c])


def test_safetensors_state_dict_and_single_conv1(tmp_path, capsys):
    from safetensors.numpy import save_file
    g, c = grey(24), colour(24)
    save_file({'towers.1.conv1.weight': c, 'towers.0.conv1.weight': g, 'fc8.weight': np.zeros((2, 4), np.float32)},
              str(tmp_path / 'sd.safetensors'))
    assert run([tmp_path / 'sd.safetensors', '--out', tmp_path / 'r1'] + FAST, capsys)[0] == 0
    check_split(tmp_path / 'r1', 1, [g, c])
    save_file({'conv1.weight': np.concatenate([c, g]), 'conv2.weight': np.zeros((8, 24, 5, 5), np.float32)},
              str(tmp_path / 'caffe.safetensors'))
    assert run([tmp_path / 'caffe.safetensors', '--out', tmp_path / 'r2', '--groups', '2'] + FAST, capsys)[0] == 0
    check_split(tmp_path / 'r2', 0, [c, g])


def test_report_and_figures(tmp_path, capsys):
    from PIL import Image
    g, c = grey(48), colour(48)
    path = save(tower_style_graph([g, c]), tmp_path / 'model.onnx')
    before = snapshot(tmp_path)
    rc, out, _ = run([path, '--sort'], capsys)
    assert rc == 0
    folder = tmp_path / 'model_kernels'   # the default --out
    assert {p.parts[0] for p in snapshot(tmp_path) - before} == {'model_kernels'}
    assert sorted(p.name for p in folder.iterdir()) == ['chromatic_fraction.png', 'colour_frequency.png', 'kernels.png',
                                                        'latent.png', 'report.json']
    r = report(folder)
    for key in ('num_groups', 'groups', 'p_value', 'effect_size', 'verdict'):
        assert key in r
    for g_ in r['groups']:
        assert {'index', 'kernels', 'chromatic_fraction', 'mean', 'median', 'fraction_above_0_3'} <= set(g_)
        assert len(g_['luminance_orientation_deg']) == len(g_['luminance_frequency']) == g_['kernels']
    assert r['p_value'] < 1e-4 and r['p_value_text'] == 'p < 1e-4'
    with Image.open(folder / 'kernels.png') as im:
        assert im.width > 16 * 11 * 4 and im.height > 6 * 11 * 4
    with Image.open(folder / 'chromatic_fraction.png') as im:
        assert im.width > 300
    assert r['verdict'] in out and str(folder / 'report.json') in out


def test_kernel_tiles_show_rgb_and_flip_bgr():
    w = np.zeros((2, 3, 5, 5))
    w[0, 0, 2, 2] = 1.0            # red dot on black (RGB)
    w[1] = 0.3                     # flat grey
    w[1, :, 2, 2] = [0.9, 0.9, 0.9]
    tiles = K.kernel_tiles(w)
    assert tiles.shape == (2, 5, 5, 3) and tiles.min() >= 0 and tiles.max() <= 1
    assert np.allclose(tiles[0, 2, 2], [1, 0, 0])
    assert np.allclose(K.kernel_tiles(w, bgr=True)[0, 2, 2], [0, 0, 1])
    assert np.allclose(tiles[1, ..., 0], tiles[1, ..., 1]) and np.allclose(tiles[1, ..., 1], tiles[1, ..., 2])
    grid = K.mosaic(tiles, cols=2)
    assert grid.shape == (1 * 6 + 1, 2 * 6 + 1, 3)


def test_sort_orders_greyest_first():
    cf = np.array([0.9, 0.1, np.nan, 0.5])
    assert K.display_order([cf], sort=True)[0].tolist() == [1, 3, 0, 2]
    assert K.display_order([cf], sort=False)[0].tolist() == [0, 1, 2, 3]


def test_existing_report_is_kept_unless_force(tmp_path, capsys):
    path = save(tower_style_graph([grey(8), colour(8)]), tmp_path / 'm.onnx')
    assert run([path, '--out', tmp_path / 'r'] + FAST, capsys)[0] == 0
    (tmp_path / 'r' / 'report.json').write_text('{"mine": 1}')
    rc, _, err = run([path, '--out', tmp_path / 'r'] + FAST, capsys)
    assert rc == 2 and err.startswith(PREFIX) and '--force' in err
    assert json.loads((tmp_path / 'r' / 'report.json').read_text()) == {'mine': 1}
    assert run([path, '--out', tmp_path / 'r', '--force'] + FAST, capsys)[0] == 0
    assert 'verdict' in report(tmp_path / 'r')


def test_cli_dispatches_to_kernels(tmp_path, capsys):
    from timm_alexnet_split.cli import main as cli_main
    path = save(tower_style_graph([grey(8), colour(8)]), tmp_path / 'm.onnx')
    assert cli_main(['kernels', str(path), '--out', str(tmp_path / 'r')] + FAST) == 0
    assert report(tmp_path / 'r')['num_groups'] == 2
    assert cli_main(['kernels', str(tmp_path / 'missing.onnx')]) == 2
    assert capsys.readouterr().err.count('\n') == 1


# ----------------------------------------------------------------------------------------------- bad input

def _bad_inputs(tmp: Path) -> dict:
    """name -> argv of an input the tool must refuse (files made under ``tmp``)."""
    good = tower_style_graph([grey(8), colour(8)])
    good_path = save(good, tmp / 'good.onnx')
    caffe = caffe_style_graph(np.concatenate([grey(8), colour(8)]), 2)
    (tmp / 'text.onnx').write_text('this is not an ONNX file\n')
    data = good.SerializeToString()
    (tmp / 'truncated.onnx').write_bytes(data[: len(data) * 2 // 3])
    (tmp / 'empty.onnx').write_bytes(b'')
    (tmp / 'folder.onnx').mkdir()
    save(no_conv_graph(), tmp / 'noconv.onnx')
    save(grey_input_graph(), tmp / 'onechannel.onnx')
    hostile = hostile_files(good, 'towers.0.conv1.weight', tmp)

    def int8(t):
        t.data_type = TensorProto.INT8
        t.raw_data = b'\0' * (t.raw_data and len(t.raw_data) // 4)
    save(with_initializer(caffe, 'conv1_w_0', int8), tmp / 'quantised.onnx')
    (tmp / 'bad.safetensors').write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": 1}')
    run_dir = tmp / 'run' / 'conv1'
    run_dir.mkdir(parents=True)
    np.save(run_dir / 'epoch_0000.npy', random_kernels(8))
    np.save(run_dir / 'epoch_0001.npy', random_kernels(6))
    (run_dir / 'towers.json').write_text(json.dumps({'num_towers': 2, 'kernels_per_tower': [4, 4], 'channel_order': 'RGB'}))
    norun = tmp / 'norun'
    norun.mkdir()
    return {
        'not_onnx': [tmp / 'text.onnx'], 'truncated': [tmp / 'truncated.onnx'], 'empty': [tmp / 'empty.onnx'],
        'missing': [tmp / 'nothere.onnx'], 'folder': [tmp / 'folder.onnx'], 'no_conv': [tmp / 'noconv.onnx'],
        'not_3_channel': [tmp / 'onechannel.onnx'], **{name: [path] for name, path in hostile.items()},
        'quantised': [tmp / 'quantised.onnx'], 'bad_safetensors': [tmp / 'bad.safetensors'],
        'groups_zero': [good_path, '--groups', '0'], 'groups_too_many': [good_path, '--groups', '17'],
        'groups_not_int': [good_path, '--groups', 'two'], 'no_input': [],
        'both_inputs': [good_path, '--evolution', tmp / 'run'], 'out_is_file': [good_path, '--out', tmp / 'text.onnx'],
        'run_shapes': ['--evolution', tmp / 'run'], 'run_missing_json': ['--evolution', norun],
    }


BAD = ['not_onnx', 'truncated', 'empty', 'missing', 'folder', 'no_conv', 'not_3_channel', 'traversal', 'absolute',
       'symlink', 'missing_data', 'short_data', 'length', 'absurd', 'raw_size', 'quantised', 'bad_safetensors',
       'groups_zero', 'groups_too_many', 'groups_not_int', 'no_input', 'both_inputs', 'out_is_file', 'run_shapes',
       'run_missing_json']


@pytest.mark.parametrize('case', BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case):
    argv = _bad_inputs(tmp_path)[case]
    before = snapshot(tmp_path)
    rc, out, err = run(argv, capsys)
    assert rc == 2
    assert err.startswith(PREFIX) and err.count('\n') == 1, err
    assert out == ''
    assert snapshot(tmp_path) == before


def test_traversal_is_refused_before_any_external_file_is_read(tmp_path, monkeypatch):
    case = _bad_inputs(tmp_path)['traversal'][0]
    opened = []
    real_open = open
    monkeypatch.setattr('builtins.open', lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    with pytest.raises(K.KernelsError, match='path traversal'):
        K.read_first_layer(case)
    assert not any('secret' in f for f in opened)


# ----------------------------------------------------------------------------------------------- evolution

def make_run(root: Path, epochs: int = 5) -> Path:
    """A training run folder: conv1/epoch_NNNN.npy drifting from random to a grey/colour split, towers.json."""
    folder = root / 'conv1'
    folder.mkdir(parents=True)
    start = random_kernels(32, seed=7) * 5
    end = np.concatenate([grey(16), colour(16)]) * 5
    for e in range(epochs):
        t = e / (epochs - 1)
        np.save(folder / f'epoch_{e:04d}.npy', ((1 - t) * start + t * end).astype(np.float32))
    (folder / 'towers.json').write_text(json.dumps({'num_towers': 2, 'kernels_per_tower': [16, 16],
                                                    'channel_order': 'RGB'}))
    return root


def test_evolution_gif_plot_and_json(tmp_path, capsys):
    from PIL import Image
    run_dir = make_run(tmp_path / 'run')
    rc, out, err = run(['--evolution', run_dir, '--sort'] + FAST, capsys)
    assert rc == 0, err
    folder = run_dir / 'kernel_evolution'
    ev = json.loads((folder / 'evolution.json').read_text())
    assert ev['epochs'] == [0, 1, 2, 3, 4]
    grey_mean, colour_mean = ev['towers'][0]['mean'], ev['towers'][1]['mean']
    assert abs(grey_mean[0] - colour_mean[0]) < 0.1 and grey_mean[-1] < 0.3 < colour_mean[-1]
    assert np.all(np.diff(grey_mean) < 0)
    assert ev['p_value'][0] > 0.01 and ev['p_value'][-1] < 1e-3
    assert ev['final_verdict'].startswith('towers differ in colour') and 'tower 1 colour-specific' in ev['final_verdict']
    with Image.open(folder / 'evolution.gif') as im:
        assert im.n_frames == 5 and im.is_animated
    with Image.open(folder / 'evolution.png') as im:
        assert im.width > 300
    rc, _, err = run(['--evolution', run_dir] + FAST, capsys)
    assert rc == 2 and '--force' in err


# ----------------------------------------------------------------------------------------------- no torch

def test_runs_as_a_script_without_torch(tmp_path):
    env = env_without_torch(tmp_path)
    from safetensors.numpy import save_file
    save_file({'towers.0.conv1.weight': grey(16), 'towers.1.conv1.weight': colour(16)}, str(tmp_path / 'w.safetensors'))
    path = save(tower_style_graph([grey(16), colour(16)]), tmp_path / 'data' / 'm.onnx')
    for target in (path, tmp_path / 'w.safetensors'):
        done = subprocess.run([sys.executable, str(KERNELS_DIR), str(target), '--out', str(tmp_path / target.stem),
                               '--permutations', '2000'], env=env, capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert 'verdict: towers differ in colour' in done.stdout and 'tower 1 colour-specific' in done.stdout
    bad = subprocess.run([sys.executable, str(KERNELS_DIR), str(tmp_path / 'nothere.onnx')], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith(PREFIX) and bad.stderr.count('\n') == 1


NO_ONNX = '''
import importlib.abc, sys
class _NoOnnx(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'onnx' or name.startswith('onnx.'):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)  # as where onnx is not installed
        return None
sys.meta_path.insert(0, _NoOnnx())
'''


def test_the_script_without_its_dependencies_says_which_in_one_line(tmp_path):
    block = tmp_path / 'block'
    block.mkdir()
    (block / 'sitecustomize.py').write_text(NO_ONNX)
    env = {**os.environ, 'PYTHONPATH': str(block)}
    done = subprocess.run([sys.executable, str(KERNELS_DIR), 'm.onnx'], env=env, capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith(PREFIX) and done.stderr.count('\n') == 1, done.stderr
    assert 'cannot import onnx' in done.stderr and 'Traceback' not in done.stderr


STUB_PARENT = '''
import importlib, sys, types
pkg = types.ModuleType('timm_alexnet_split')
pkg.__path__ = [{folder!r}]
sys.modules['timm_alexnet_split'] = pkg        # the package's __init__ (torch) is never executed
kernels = importlib.import_module('timm_alexnet_split.kernels')
rc = kernels.main(sys.argv[1:])
assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch was imported'
sys.exit(rc)
'''


def test_loads_under_a_stub_parent_package_without_torch(tmp_path):
    """As the command line loads it: timm_alexnet_split.kernels under a parent package whose __init__ never runs."""
    env = env_without_torch(tmp_path)
    path = save(tower_style_graph([grey(16), colour(16)]), tmp_path / 'm.onnx')
    code = STUB_PARENT.format(folder=str(KERNELS_DIR.parent))
    done = subprocess.run([sys.executable, '-c', code, str(path), '--out', str(tmp_path / 'r'), '--permutations', '500'],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'tower 1 colour-specific' in done.stdout and (tmp_path / 'r' / 'latent.png').is_file()


def test_a_pytorch_checkpoint_is_one_line_saying_what_to_give_instead(tmp_path, capsys):
    ckpt = tmp_path / 'model_best.pth.tar'
    ckpt.write_bytes(b'PK\x03\x04 a zip as torch.save writes it')
    assert K.main([str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert 'is a PyTorch checkpoint' in err and 'export --checkpoint' in err and err.count('\n') == 1
