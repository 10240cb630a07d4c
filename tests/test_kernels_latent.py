"""Latent branches in unsplit networks (Distill's SVD of conv1 -> conv2 connectivity), with known answers: a
one-tower net whose conv2 units are wired to either the grey or the colour kernels has a latent colour axis and
a latent split matching the kinds; the same conv1 with i.i.d. conv2 weights has none. From ONNX (Caffe style,
our export), from .safetensors and from a run folder; per tower in split networks; one line where it cannot apply."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from kernel_cli import report, run
from onnx import TensorProto, helper, numpy_helper
from onnx_graphs import IR_VERSION, OPSET, caffe_style_graph, colour_kernels, grey_kernels, save, tower_style_graph

from timm_alexnet_split.kernels.latent import connectivity, double_centre

FAST = ['--permutations', '2000', '--quiet']


def conv1_of_two_kinds(n: int = 24, seed: int = 0):
    """n grey and n colour kernels in a shuffled order, and which are colour."""
    w = np.concatenate([grey_kernels(n, seed=seed, colour=0.2), colour_kernels(n, seed=seed + 1, luminance=0.5)])
    order = np.random.default_rng(seed).permutation(2 * n)
    return w[order].astype(np.float32), (order >= n)


def wired_conv2(is_colour: np.ndarray, units: int = 64, seed: int = 0, strength: float = 8.0) -> np.ndarray:
    """conv2 whose first half of units draws on the grey kernels, the second half on the colour ones."""
    rng = np.random.default_rng(seed)
    w = 0.01 * rng.standard_normal((units, len(is_colour), 5, 5))
    gain = np.where(np.arange(units)[:, None] < units // 2, ~is_colour[None, :], is_colour[None, :])
    return (w * np.where(gain, strength, 1.0)[..., None, None]).astype(np.float32)


def iid_conv2(k: int, units: int = 64, seed: int = 0) -> np.ndarray:
    return (0.01 * np.random.default_rng(seed).standard_normal((units, k, 5, 5))).astype(np.float32)


def check_latent_colour_axis(entry: dict, is_colour: np.ndarray) -> None:
    first = entry['centred'][0]
    assert abs(first['spearman_chromatic']) >= 0.7 and first['p_chromatic'] < 0.01
    assert entry['summary'].startswith('latent colour axis: component 1 of conv1->conv2 connectivity')
    side = np.array(entry['split']['side'], bool)
    assert (side == is_colour).all()       # side 1 is the more chromatic side: exactly the colour kernels
    assert entry['split']['groups'] == [int((~is_colour).sum()), int(is_colour.sum())] and entry['split']['p_value'] < 0.01
    assert entry['split']['means'][1] > entry['split']['means'][0] + 0.4
    assert [len(entry[k]) for k in ('centred', 'uncentred')] == [3, 3]
    assert all(set(c) >= {'share', 'spearman_chromatic', 'p_chromatic', 'spearman_frequency', 'p_frequency'}
               for c in entry['centred'] + entry['uncentred'])
    assert sum(c['share'] for c in entry['centred']) <= 1 + 1e-9


def test_connectivity_and_double_centring():
    w2 = np.random.default_rng(0).standard_normal((5, 4, 3, 3))
    a = connectivity(w2)
    assert a.shape == (4, 5) and np.isclose(a[2, 3], np.abs(w2[3, 2]).sum())
    c = double_centre(a)
    assert np.allclose(c.mean(axis=0), 0) and np.allclose(c.mean(axis=1), 0)


def test_wired_one_tower_net_has_a_latent_colour_axis_and_split(tmp_path, capsys):
    w1, is_colour = conv1_of_two_kinds()
    path = save(caffe_style_graph(w1, groups=1, conv2_w=wired_conv2(is_colour)), tmp_path / 'wired.onnx')
    rc, out, err = run([path, '--out', tmp_path / 'r', '--permutations', '2000'], capsys)
    assert rc == 0 and err == ''
    r = report(tmp_path / 'r')
    assert r['num_groups'] == 1 and r['latent']['applicable'] and r['latent']['scope'] == 'all of conv1'
    assert r['latent']['conv2'].startswith('Conv #4 (output')   # unnamed nodes (as in bvlcalexnet): index and output
    check_latent_colour_axis(r['latent'], is_colour)
    assert 'latent: latent colour axis' in out and (tmp_path / 'r' / 'latent.png').is_file()


def test_the_same_conv1_with_iid_conv2_has_no_latent_axis(tmp_path, capsys):
    w1, _ = conv1_of_two_kinds()
    path = save(caffe_style_graph(w1, groups=1, conv2_w=iid_conv2(len(w1))), tmp_path / 'iid.onnx')
    assert run([path, '--out', tmp_path / 'r'] + FAST, capsys)[0] == 0
    lat = report(tmp_path / 'r')['latent']
    assert lat['applicable'] and lat['summary'].startswith('no latent colour axis')
    assert abs(lat['centred'][0]['spearman_chromatic']) < 0.5 and lat['split']['p_value'] > 0.01


def test_latent_from_safetensors_and_a_run_folder(tmp_path, capsys):
    from safetensors.numpy import save_file
    w1, is_colour = conv1_of_two_kinds(seed=3)
    w2 = wired_conv2(is_colour, seed=3)
    save_file({'towers.0.conv1.weight': w1, 'towers.0.conv2.weight': w2, 'fc8.weight': np.zeros((2, 4), np.float32)},
              str(tmp_path / 'one.safetensors'))
    assert run([tmp_path / 'one.safetensors', '--out', tmp_path / 'r1'] + FAST, capsys)[0] == 0
    lat = report(tmp_path / 'r1')['latent']
    assert lat['conv2'] == 'towers.0.conv2.weight'
    check_latent_colour_axis(lat, is_colour)
    run_dir = tmp_path / 'run'
    (run_dir / 'conv1').mkdir(parents=True)
    np.save(run_dir / 'conv1' / 'epoch_0000.npy', w1 * 0.5)
    np.save(run_dir / 'conv1' / 'epoch_0001.npy', w1)
    (run_dir / 'conv1' / 'towers.json').write_text(json.dumps({'num_towers': 1, 'kernels_per_tower': [48]}))
    save_file({'towers.0.conv1.weight': w1, 'towers.0.conv2.weight': w2}, str(run_dir / 'last.safetensors'))
    assert run([run_dir, '--out', tmp_path / 'r2'] + FAST, capsys)[0] == 0
    r = report(tmp_path / 'r2')
    assert r['latent']['conv2'] == 'towers.0.conv2.weight' and 'trained' in r['measures']
    check_latent_colour_axis(r['latent'], is_colour)


@pytest.mark.parametrize('style', ['towers', 'caffe'])
def test_split_network_is_analysed_within_each_tower(tmp_path, capsys, style):
    parts = [conv1_of_two_kinds(12, seed=s) for s in (0, 1)]
    w2s = [wired_conv2(c, units=32, seed=s) for s, (_, c) in enumerate(parts)]
    if style == 'towers':
        model = tower_style_graph([w for w, _ in parts], conv2_ws=w2s)
    else:
        model = caffe_style_graph(np.concatenate([w for w, _ in parts]), groups=2, conv2_w=np.concatenate(w2s))
    path = save(model, tmp_path / 'split.onnx')
    assert run([path, '--out', tmp_path / 'r'] + FAST, capsys)[0] == 0
    lat = report(tmp_path / 'r')['latent']
    assert lat['scope'].startswith('within each tower') and len(lat['parts']) == 2
    assert [p['kernels'] for p in lat['parts']] == ['kernels 0-23', 'kernels 24-47']
    for p, (_, is_colour) in zip(lat['parts'], parts):
        check_latent_colour_axis(p, is_colour)
    assert lat['summary'].startswith('kernels 0-23: latent colour axis')


def _graph_after_conv1(k: int, tail: str) -> 'onnx.ModelProto':  # noqa: F821
    """conv1 (k kernels) then Relu, then a depthwise Conv ('depthwise') or nothing ('none')."""
    w1 = grey_kernels(k)
    inits = [numpy_helper.from_array(w1, 'w1')]
    nodes = [helper.make_node('Conv', ['x', 'w1'], ['c1'], name='conv1', kernel_shape=[11, 11], strides=[4, 4]),
             helper.make_node('Relu', ['c1'], ['r1'], name='relu1')]
    out = 'r1'
    if tail == 'depthwise':
        inits.append(numpy_helper.from_array(np.ones((k, 1, 3, 3), np.float32), 'wdw'))
        nodes.append(helper.make_node('Conv', ['r1', 'wdw'], ['dw'], name='conv_dw', kernel_shape=[3, 3], group=k))
        out = 'dw'
    graph = helper.make_graph(nodes, tail, [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)])
    model.ir_version = IR_VERSION
    return model


@pytest.mark.parametrize('tail, reason', [('depthwise', 'depthwise'), ('none', 'no Conv reached')])
def test_where_it_cannot_apply_the_report_says_why_in_one_line(tmp_path, capsys, tail, reason):
    path = save(_graph_after_conv1(8, tail), tmp_path / f'{tail}.onnx')
    rc, out, err = run([path, '--out', tmp_path / 'r', '--permutations', '200'], capsys)
    assert rc == 0 and err == ''
    lat = report(tmp_path / 'r')['latent']
    assert lat['applicable'] is False and reason in lat['reason'] and '\n' not in lat['reason']
    assert 'latent: no latent analysis: ' in out and not (tmp_path / 'r' / 'latent.png').exists()


@pytest.mark.slow
@pytest.mark.parametrize('lrn', ['node', 'ops'])
def test_latent_from_our_alexnet_split_1_export(tmp_path, capsys, lrn):
    timm = pytest.importorskip('timm')
    torch = pytest.importorskip('torch')
    from timm_alexnet_split.export import export_onnx
    torch.manual_seed(0)
    model = timm.create_model('alexnet_split_1', num_classes=10, global_pool='avg').eval()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        export_onnx(model, tmp_path / 'a1.onnx', lrn_form=lrn)
    assert run([tmp_path / 'a1.onnx', '--out', tmp_path / 'r', '--permutations', '500', '--quiet'], capsys)[0] == 0
    lat = report(tmp_path / 'r')['latent']
    assert lat['applicable'] and lat['scope'] == 'all of conv1' and lat['conv2'] == '/towers.0/conv2/Conv'
    assert lat['conv2_units'] == 256 and lat['conv1_channels'] == 96
    assert lat['summary'].startswith('no latent colour axis')      # random init
