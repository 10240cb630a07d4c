"""import-onnx: Caffe's bvlc_alexnet (ONNX Model Zoo layout) into alexnet_split_2, on full-size random graphs.

About 45 s on 2 CPU cores: each import reads a ~244 MB graph and runs it in onnxruntime and in the model.
"""
from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from bvlc_graphs import bvlc_model, bvlc_weights, no_conv_model
from onnx_graphs import colour_kernels, grey_kernels, hostile_files, tower_style_graph
from safetensors import safe_open
from safetensors.torch import load_file
from unwritable import KINDS, unwritable_folder

import timm_alexnet_split  # noqa: F401  (registers the models)
from timm_alexnet_split import zoo
from timm_alexnet_split.cli import main
from timm_alexnet_split.errors import UserError

MEAN_BGR = np.array(zoo.CAFFE_MEAN_BGR, np.float32)[None, :, None, None]


@pytest.fixture(scope='module')
def weights():
    return bvlc_weights(seed=0)


def _remove_big_files(folder: Path) -> None:
    """pytest keeps the last runs' temporary folders; these graphs are 244 MB each."""
    for p in folder.glob('*'):
        if p.suffix in ('.onnx', '.safetensors'):
            p.unlink()


@pytest.fixture(autouse=True)
def _cleanup(tmp_path):
    yield
    _remove_big_files(tmp_path)


@pytest.fixture(scope='module')
def zoo12(tmp_path_factory, weights):
    path = tmp_path_factory.mktemp('zoo') / 'bvlcalexnet-12.onnx'
    onnx.save(bvlc_model(12, weights=weights), path)
    yield path
    _remove_big_files(path.parent)


@pytest.fixture(scope='module')
def imported12(zoo12, tmp_path_factory):
    out = tmp_path_factory.mktemp('out') / 'bvlc_alexnet.safetensors'
    assert main(['import-onnx', str(zoo12), '-o', str(out), '--samples', '2']) == 0
    yield out
    _remove_big_files(out.parent)


def _images(n: int, size: int = 224, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, (n, 3, size, size)).astype(np.float32) - MEAN_BGR).astype(np.float32)


def _assert_towers(sd, w) -> None:
    """Every tensor is where the tower layout says: output channels by tower / group, conv1 flipped to RGB."""
    halves = {'conv1': 48, 'conv2': 128, 'conv3': 192, 'conv4': 192, 'conv5': 128}
    for layer, half in halves.items():
        wt, bs = w[layer]
        if layer == 'conv1':
            wt = wt[:, ::-1]
        for t in range(2):
            np.testing.assert_array_equal(sd[f'towers.{t}.{layer}.weight'].numpy(), wt[t * half:(t + 1) * half])
            np.testing.assert_array_equal(sd[f'towers.{t}.{layer}.bias'].numpy(), bs[t * half:(t + 1) * half])
    for layer, key in (('fc6', 'pre_logits.fc6'), ('fc7', 'pre_logits.fc7'), ('fc8', 'fc8')):
        np.testing.assert_array_equal(sd[f'{key}.weight'].numpy(), w[layer][0])
        np.testing.assert_array_equal(sd[f'{key}.bias'].numpy(), w[layer][1])


def _printed_error(out: str) -> float:
    m = re.search(r'max relative error of the softmax ([0-9.e+-]+)', out)
    assert m, out
    return float(m.group(1))


def test_round_trip_opset9_with_flatten_and_misleading_names(tmp_path, weights, capsys):
    """Layers are found by structure: the Zoo's names on the wrong layers (conv1's weights called fc8_w_0)
    change nothing; --force replaces an older import."""
    src = tmp_path / 'bvlcalexnet-9.onnx'
    onnx.save(bvlc_model(9, names='misleading', flatten='flatten', weights=weights), src)
    out = tmp_path / 'w.safetensors'
    out.write_bytes(b'an older import')
    assert main(['import-onnx', str(src), '-o', str(out), '--force', '--samples', '1']) == 0
    printed = capsys.readouterr().out
    assert _printed_error(printed) <= zoo.MAX_REL_ERROR
    assert re.search(r'conv1 .*<- fc8_w_0, fc8_b_0', printed)
    _assert_towers(load_file(out), weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, out.name])


def test_api_reads_opset3_ir3(tmp_path, weights):
    """The Zoo's oldest file form: opset 3, IR 3 (initializers among the inputs), Reshape's shape attribute,
    Gemm's broadcast and Dropout's is_test, opaque names; onnxruntime runs it after the legacy attributes go."""
    src = tmp_path / 'bvlcalexnet-3.onnx'
    onnx.save(bvlc_model(3, names='opaque', weights=weights), src)
    sd, report = zoo.import_bvlc_onnx(str(src), samples=1)
    assert (report.opset, report.ir_version) == (3, 3)
    assert report.max_rel_error <= zoo.MAX_REL_ERROR
    _assert_towers(sd, weights)
    out = zoo.save_safetensors(sd, report, str(tmp_path / 'w.safetensors'))
    with safe_open(out, 'pt') as f:
        assert f.metadata()['source_opset'] == '3'


def test_cli_refuses_a_graph_that_is_not_alexnet(tmp_path, weights, capsys):
    src = tmp_path / 'no_fc7.onnx'
    onnx.save(bvlc_model(12, weights=weights, omit=('fc7',)), src)
    err = _run_bad([str(src), '-o', str(tmp_path / 'w.safetensors')], capsys)
    assert 'fc7' in err
    assert not (tmp_path / 'w.safetensors').exists()


# The tests above write their own 244 MB graphs and run before the first that needs zoo12 / imported12 (kept until
# the module ends): CI's disk is small.
def test_round_trip_opset12(zoo12, imported12, weights, capsys):
    sd = load_file(imported12)
    _assert_towers(sd, weights)
    with safe_open(imported12, 'pt') as f:
        meta = f.metadata()
    assert meta['source_sha256'] == hashlib.sha256(zoo12.read_bytes()).hexdigest()
    assert meta['source_opset'] == '12'
    assert 'BGR' in meta['flipped'] and 'RGB' in meta['flipped']
    assert float(meta['verified_max_rel_error']) <= zoo.MAX_REL_ERROR
    assert sorted(p.name for p in imported12.parent.iterdir()) == [imported12.name]  # no temporary left


def test_timm_tag_loads_the_file_and_matches_onnxruntime(zoo12, imported12):
    model = timm.create_model('alexnet_split_2.bvlc_in1k', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(imported12))).eval()
    sess = ort.InferenceSession(str(zoo12), providers=['CPUExecutionProvider'])
    for bgr in _images(2)[:, None]:
        ref = sess.run(None, {'data_0': bgr})[0]
        with torch.no_grad():
            ours = model(torch.from_numpy(np.ascontiguousarray(bgr[:, ::-1]))).softmax(-1).numpy()
        assert np.abs(ours - ref).max() / ref.max() <= zoo.MAX_REL_ERROR
        assert ours.argmax() == ref.argmax()


def test_refuses_to_write_when_the_model_does_not_reproduce_the_graph(zoo12, tmp_path, monkeypatch, capsys):
    """Left in BGR, conv1 sees the wrong colours: the check catches it and nothing is written."""
    real = zoo.to_state_dict
    monkeypatch.setattr(zoo, 'to_state_dict', lambda layers, flip_bgr=True: real(layers, flip_bgr=False))
    out = tmp_path / 'w.safetensors'
    assert main(['import-onnx', str(zoo12), '-o', str(out), '--samples', '1']) == 2
    err = capsys.readouterr().err.strip()
    assert 'relative error' in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def _mismatch(**kw):
    return kw


@pytest.mark.parametrize('variant,where,what', [
    (_mismatch(omit=('fc7',)), 'fc7', 'fc8_w_0'),
    (_mismatch(omit=('conv4',)), 'conv4', '[256, 192, 3, 3]'),
    (_mismatch(omit=('norm2',)), 'conv3', 'Relu, MaxPool'),
    (_mismatch(omit=('relu3',)), 'conv4', 'nothing'),
    (_mismatch(shapes={'conv1': (64, 3, 11, 11)}), 'conv1', '[64, 3, 11, 11]'),
    (_mismatch(shapes={'conv2': (256, 96, 5, 5)}), 'conv2', '[256, 96, 5, 5]'),
    (_mismatch(pool_pads=(0, 0, 0)), 'fc6', '5x5'),
    (_mismatch(flatten='none'), 'fc6', 'Reshape'),
    (None, 'conv1', 'no Conv'),
], ids=['no-fc7', 'no-conv4', 'no-norm2', 'no-relu3', 'conv1-64', 'conv2-ungrouped-in', 'floor-pads', 'no-flatten', 'no-conv'])
def test_names_the_first_mismatch(weights, variant, where, what):
    model = no_conv_model() if variant is None else bvlc_model(12, weights=weights, **variant)
    with pytest.raises(UserError) as e:
        zoo.locate_layers(model)
    msg = str(e.value)
    assert msg.startswith(where) and what in msg and '\n' not in msg, msg


def _run_bad(args, capsys) -> str:
    assert main(['import-onnx', *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'Traceback' not in err
    return err


def test_cli_refuses_files_that_are_not_onnx(tmp_path, zoo12, capsys):
    text = tmp_path / 'notes.onnx'
    text.write_text('not a model\n' * 1000)
    assert 'notes.onnx' in _run_bad([str(text), '-o', str(tmp_path / 'a.safetensors')], capsys)
    cut = tmp_path / 'cut.onnx'
    with open(zoo12, 'rb') as f:
        cut.write_bytes(f.read(zoo12.stat().st_size // 2))
    assert 'cut.onnx' in _run_bad([str(cut), '-o', str(tmp_path / 'b.safetensors')], capsys)
    assert 'does not exist' in _run_bad([str(tmp_path / 'missing.onnx'), '-o', str(tmp_path / 'c.safetensors')], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['cut.onnx', 'notes.onnx']


HOSTILE = {'traversal': 'path traversal', 'absolute': 'path traversal', 'symlink': 'path traversal',
           'missing_data': 'is missing from', 'short_data': 'too short', 'length': 'declares 100 bytes',
           'absurd': 'absurd size', 'raw_size': 'corrupt or truncated'}


@pytest.mark.parametrize('case', HOSTILE)
def test_cli_refuses_hostile_graphs_as_the_kernel_tool_does(tmp_path, capsys, monkeypatch, case):
    """External data outside the model's folder, declared sizes that do not fit or are absurd: one line, exit 2,
    nothing written, and no byte outside the model's folder read."""
    small = tower_style_graph([grey_kernels(4), colour_kernels(4)])
    path = hostile_files(small, 'towers.0.conv1.weight', tmp_path)[case]
    opened = []
    real_open = open
    monkeypatch.setattr('builtins.open', lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    before = sorted(tmp_path.rglob('*'))
    err = _run_bad([str(path), '-o', str(tmp_path / 'out.safetensors')], capsys)
    assert HOSTILE[case] in err
    assert sorted(tmp_path.rglob('*')) == before
    assert not any('secret' in f for f in opened)


def test_cli_never_overwrites_without_force(tmp_path, zoo12, capsys):
    out = tmp_path / 'mine.safetensors'
    out.write_bytes(b'precious')
    assert 'exists' in _run_bad([str(zoo12), '-o', str(out)], capsys)
    assert out.read_bytes() == b'precious'
    assert '.safetensors' in _run_bad([str(zoo12), '-o', str(tmp_path / 'w.pt')], capsys)
    copy = tmp_path / 'same.safetensors'
    shutil.copy(out, copy)
    assert 'overwrite the input' in _run_bad([str(copy), '-o', str(copy), '--force'], capsys)


@pytest.mark.parametrize('kind', KINDS)
def test_an_unwritable_output_is_one_line_before_the_import(tmp_path, capsys, monkeypatch, kind):
    """-o into a read-only folder (for root too) or under a file: exit 2, one line, before the graph is read."""
    src = tmp_path / 'bvlcalexnet-12.onnx'
    src.write_bytes(b'never read')
    monkeypatch.setattr(zoo, 'import_bvlc_onnx', lambda *a, **k: pytest.fail('imported before checking the output'))
    with unwritable_folder(tmp_path, kind) as folder:
        for out in (folder / 'w.safetensors', folder / 'new' / 'w.safetensors'):
            err = _run_bad([str(src), '-o', str(out), '--force'], capsys)
            assert f'cannot write {out}' in err or 'does not exist' in err


@pytest.mark.parametrize('kind', KINDS)
def test_save_safetensors_into_an_unwritable_place_is_a_user_error(tmp_path, kind):
    """safetensors' own save_file raised SafetensorError there (not an OSError): now one UserError."""
    class Report:
        def metadata(self):
            return {'source': 'test'}
    with unwritable_folder(tmp_path, kind) as folder:
        with pytest.raises(UserError, match='cannot write'):
            zoo.save_safetensors({'w': torch.zeros(2)}, Report(), str(folder / 'w.safetensors'), force=True)
    out = zoo.save_safetensors({'w': torch.ones(2)}, Report(), str(tmp_path / 'w.safetensors'))
    assert load_file(str(out))['w'].tolist() == [1.0, 1.0] and safe_open(str(out), 'pt').metadata()['source'] == 'test'
