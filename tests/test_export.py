"""ONNX export (timm_alexnet_split.export) and checkpoint loading (timm_alexnet_split.checkpoint).

Full-size models have 61M parameters (a 233 MB ONNX file): the round trips export each variant
once; tests about other things use ``global_pool='avg'`` (fc6 sees 256 pooled features), which
leaves the towers as they are and makes a 24 MB file.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
import yaml
from onnx.helper import find_min_ir_version_for
from safetensors.torch import save_file
from unwritable import KEPT, KINDS, unwritable_folder

import timm_alexnet_split  # noqa: F401  (registers the models)
from timm_alexnet_split import cli
from timm_alexnet_split import export as export_module
from timm_alexnet_split.checkpoint import find_run_checkpoint, load_checkpoint_file, load_into, read_checkpoint, read_run
from timm_alexnet_split.errors import UserError
from timm_alexnet_split.export import DEFAULT_TOLERANCE, MIN_OPSET, export_onnx, ort_limits

REQUIRED_METADATA = ('architecture', 'num_towers', 'conv1_nodes', 'channel_order', 'mean', 'std', 'input_size',
                     'package_version', 'lrn')


def small(name: str = 'alexnet_split_2', **kwargs) -> torch.nn.Module:
    """A split AlexNet whose towers are full size but whose head is small (global average pool, 10 classes)."""
    kwargs = {'num_classes': 10, 'global_pool': 'avg', **kwargs}
    return timm.create_model(name, **kwargs).eval()


def images(batch: int, model: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    """Random 0-255 pixels minus the mean pixel, as real inputs are preprocessed."""
    cfg = model.pretrained_cfg
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, *cfg['input_size']), generator=g).float()
    return (x / 255 - torch.tensor(cfg['mean']).view(1, 3, 1, 1)) / torch.tensor(cfg['std']).view(1, 3, 1, 1)


def run_ort(path: Path, x: torch.Tensor) -> np.ndarray:
    sess = _session(str(path), path.stat().st_mtime_ns)
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


@functools.lru_cache(maxsize=2)
def _session(path: str, mtime_ns: int) -> ort.InferenceSession:
    return ort.InferenceSession(path, providers=['CPUExecutionProvider'])


def rel_err(a: np.ndarray, b: torch.Tensor) -> float:
    b = b.numpy()
    return float(np.abs(a - b).max() / np.abs(b).max())


def meta(model: onnx.ModelProto) -> dict:
    return {p.key: p.value for p in model.metadata_props}


def cli_run(capsys, *args: str):
    code = cli.main(['export', *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


# ---- round trips -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize('name,towers,full', [('alexnet_split_1', 1, False), ('alexnet_split_2', 2, True),
                                              ('alexnet_split_3', 3, False)])
def test_round_trip_through_onnxruntime(tmp_path, name, towers, full):
    model = timm.create_model(name).eval() if full else small(name)
    classes = model.num_classes
    path = tmp_path / f'{name}.onnx'
    report = export_onnx(model, path)
    assert report['max_rel_err'] <= DEFAULT_TOLERANCE and report['provider'] == 'CPUExecutionProvider'

    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    for batch in (1, 3):  # the batch axis is dynamic
        x = images(batch, model, seed=batch)
        with torch.inference_mode():
            ref = model(x)
        out = run_ort(path, x)
        assert out.shape == (batch, classes)
        assert rel_err(out, ref) <= DEFAULT_TOLERANCE

    ops = [n.op_type for n in m.graph.node]
    assert ops.count('LRN') == 2 * towers
    assert not {'Pow', 'AveragePool', 'ReduceSum', 'Div'} & set(ops), 'LRN was decomposed'
    image_convs = [n for n in m.graph.node if n.op_type == 'Conv' and n.input[0] == m.graph.input[0].name]
    assert len(image_convs) == towers
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    for t, node in enumerate(image_convs):
        assert node.input[1] == f'towers.{t}.conv1.weight'
        np.testing.assert_array_equal(inits[node.input[1]], model.towers[t].conv1.weight.detach().numpy())

    md = meta(m)
    assert set(REQUIRED_METADATA) <= set(md)
    assert int(md['num_towers']) == towers
    assert json.loads(md['conv1_nodes']) == [n.name for n in image_convs]
    assert md['channel_order'] == 'RGB' and md['architecture'] == name
    assert json.loads(md['input_size']) == [3, 224, 224]
    assert json.loads(md['lrn'])['scope'] == 'tower'
    assert m.ir_version == find_min_ir_version_for(list(m.opset_import), ignore_unknown=True) <= ort_limits()[0]


def test_caffe_scope_lrn_exports_one_lrn_per_layer_over_all_channels(tmp_path):
    model = small('alexnet_split_2.bvlc_in1k')
    path = tmp_path / 'bvlc.onnx'
    export_onnx(model, path)
    m = onnx.load(str(path))
    lrns = [n for n in m.graph.node if n.op_type == 'LRN']
    assert len(lrns) == 2
    assert {a.name: onnx.helper.get_attribute_value(a) for a in lrns[0].attribute}['bias'] == 1.0
    assert json.loads(meta(m)['input_size']) == [3, 227, 227]
    x = images(2, model)
    with torch.inference_mode():
        assert rel_err(run_ort(path, x), model(x)) <= DEFAULT_TOLERANCE


def test_lrn_as_elementary_ops_matches_and_the_kernel_tool_still_finds_the_towers(tmp_path, capsys):
    """--lrn ops: no LRN node, one Pow per tower and layer, the same outputs; the towers are still found from the
    graph alone (metadata removed), as the band Convs read x * x, not the image."""
    from timm_alexnet_split import kernels as K
    model = small('alexnet_split_3')
    path = tmp_path / 'ops.onnx'
    report = export_onnx(model, path, lrn_form='ops')
    assert report['lrn_form'] == 'ops' and report['lrn_nodes'] == [] and report['max_rel_err'] <= DEFAULT_TOLERANCE
    m = onnx.load(str(path))
    ops = [n.op_type for n in m.graph.node]
    assert 'LRN' not in ops and ops.count('Pow') == 2 * 3
    for batch in (1, 3):
        x = images(batch, model, seed=batch)
        with torch.inference_mode():
            assert rel_err(run_ort(path, x), model(x)) <= DEFAULT_TOLERANCE
    assert json.loads(meta(m)['lrn'])['onnx_form'] == 'ops'
    assert all(mod.onnx_form == 'node' for mod in model.modules() if hasattr(mod, 'onnx_form')), 'restored'

    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / 'bare.onnx'))
    layer = K.read_onnx_first_layer(tmp_path / 'bare.onnx')
    assert layer.layout == 'towers' and [len(g) for g in layer.groups] == [32, 32, 32]
    for t, g in enumerate(layer.groups):
        np.testing.assert_allclose(g, model.towers[t].conv1.weight.detach().double().numpy(), rtol=0, atol=0)

    with pytest.raises(UserError, match='lrn_form'):
        export_onnx(model, tmp_path / 'x.onnx', lrn_form='decomposed')
    code, out, _ = cli_run(capsys, '--model', 'alexnet_split_1', '--num-classes', 3, '--lrn', 'ops',
                           '--output', tmp_path / 'cli.onnx')
    assert code == 0 and 'LRN as elementary ops' in out
    assert 'LRN' not in [n.op_type for n in onnx.load(str(tmp_path / 'cli.onnx')).graph.node]


def test_every_opset_we_write_is_loaded_by_onnxruntime(tmp_path):
    max_ir, max_opset = ort_limits()
    assert ort_limits.__wrapped__() == (max_ir, max_opset)
    model = small('alexnet_split_3')
    with pytest.raises(UserError, match='opset'):
        export_onnx(model, tmp_path / 'too_new.onnx', opset=max_opset + 1)
    path = tmp_path / 'newest.onnx'
    report = export_onnx(model, path, opset=max_opset)
    m = onnx.load(str(path))
    assert report['opset'] == max_opset == next(o.version for o in m.opset_import if o.domain == '')
    assert m.ir_version == find_min_ir_version_for(list(m.opset_import), ignore_unknown=True) <= max_ir
    assert json.loads(meta(m)['conv1_nodes']) == [f'/towers.{t}/conv1/Conv' for t in range(3)]
    x = images(2, model)
    with torch.inference_mode():
        assert rel_err(run_ort(path, x), model(x)) <= DEFAULT_TOLERANCE


@pytest.fixture
def one_torch_export(monkeypatch):
    """torch.onnx's export (the slow part) once per model and input shape in a test; each export_onnx call still
    tidies, converts, checks, writes and verifies its own copy."""
    made = {}
    real = export_module._to_onnx

    def cached(model, x):
        key = (id(model), tuple(x.shape), tuple(m.onnx_form for m in model.modules() if hasattr(m, 'onnx_form')))
        if key not in made:
            made[key] = real(model, x)
        copy = onnx.ModelProto()
        copy.CopyFrom(made[key])
        return copy

    monkeypatch.setattr(export_module, '_to_onnx', cached)
    return made


@pytest.mark.slow  # 13 opsets: ~4 s each on 2 loaded cores, one torch export shared
def test_every_accepted_opset_exports_and_verifies_at_a_size_other_than_224(tmp_path, one_torch_export):
    """At 96 px pool5 is 2x2 and the adaptive pool to 6x6 exports a ReduceMean, whose opset-18 flag
    noop_with_empty_axes onnx's converter used to carry into opsets 14-17 (the checker then failed)."""
    max_ir, max_opset = ort_limits()
    model = small(fc_width=64, global_pool='', num_classes=3)
    x = images(2, model)[..., :96, :96]
    with torch.inference_mode():
        ref = model(x)
    for opset in range(MIN_OPSET, max_opset + 1):
        path = tmp_path / f'opset{opset}.onnx'
        report = export_onnx(model, path, opset=opset, input_size=(3, 96, 96))
        m = onnx.load(str(path))
        assert report['opset'] == opset == next(o.version for o in m.opset_import if o.domain == '')
        assert m.ir_version == report['ir_version'] == find_min_ir_version_for(list(m.opset_import)) <= max_ir
        assert report['max_rel_err'] <= DEFAULT_TOLERANCE and 'ReduceMean' in [n.op_type for n in m.graph.node]
        assert rel_err(run_ort(path, x), ref) <= DEFAULT_TOLERANCE
        path.unlink()
    assert len(one_torch_export) == 1


@pytest.mark.parametrize('opset', [7, MIN_OPSET - 1, 'newest + 1'])
def test_opsets_that_cannot_be_written_are_refused_before_the_export(tmp_path, capsys, monkeypatch, opset):
    opset = ort_limits()[1] + 1 if opset == 'newest + 1' else opset
    monkeypatch.setattr(export_module, 'create_split_model', lambda *a, **k: pytest.fail('built the model before refusing'))
    code, _, err = cli_run(capsys, '--model', 'alexnet_split_1', '--opset', opset, '--output', tmp_path / 'x.onnx')
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f'opset {opset}' in err and f'choose {MIN_OPSET}..{ort_limits()[1]}' in err
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(export_module, '_to_onnx', lambda *a: pytest.fail('exported before refusing the opset'))
    with pytest.raises(UserError, match=f'opset {opset} '):
        export_onnx(small(), tmp_path / 'x.onnx', opset=opset)


@pytest.mark.parametrize('name,kwargs,lrn_form,op', [
    ('alexnet_split_3', {}, 'ops', 'Pow'),  # no Pow 15 -> 14 adapter in onnx's converter
    # LRN over all towers: Concat, LRN, then Slice back into towers (static widths, fx-traceable)
    ('alexnet_split_2.bvlc_in1k', {'num_classes': 0}, 'node', 'Slice'),
])
def test_the_lowest_opset_holds_every_graph_form(tmp_path, name, kwargs, lrn_form, op):
    model = small(name, **{'fc_width': 64, 'global_pool': '', **kwargs})
    path = tmp_path / 'low.onnx'
    report = export_onnx(model, path, opset=MIN_OPSET, lrn_form=lrn_form, input_size=(3, 100, 100))
    m = onnx.load(str(path))
    assert report['opset'] == MIN_OPSET and op in [n.op_type for n in m.graph.node]
    assert report['max_rel_err'] <= DEFAULT_TOLERANCE


def test_a_one_channel_model_exports_from_a_plain_state_dict(tmp_path, capsys):
    """The pretrained_cfg says 3 channels and 3 means; the export follows the model's in_chans (timm's loader averages
    the means for one channel), instead of failing inside torch.export."""
    model = timm.create_model('alexnet_split_1', num_classes=2, fc_width=64, in_chans=1)
    torch.save(model.state_dict(), tmp_path / 'gray.pth')
    code, _, err = cli_run(capsys, '--model', 'alexnet_split_1', '--checkpoint', tmp_path / 'gray.pth',
                           '--output', tmp_path / 'gray.onnx')
    assert code == 0, err
    md = meta(onnx.load(str(tmp_path / 'gray.onnx')))
    assert json.loads(md['input_size']) == [1, 224, 224] and md['channel_order'] == 'L'
    assert json.loads(md['mean']) == pytest.approx([float(np.mean(model.pretrained_cfg['mean']))])
    with pytest.raises(UserError, match='the model takes 1'):
        export_onnx(model, tmp_path / 'x.onnx', input_size=(3, 224, 224))


def test_ir_limit_is_where_onnxruntime_stops_loading():
    from timm_alexnet_split.export_opset import _ort_loads
    max_ir, max_opset = ort_limits()
    assert _ort_loads(max_ir, 18)
    if max_ir < onnx.IR_VERSION:
        assert not _ort_loads(max_ir + 1, 18)
    assert not _ort_loads(find_min_ir_version_for([onnx.helper.make_opsetid('', max_opset + 1)]), max_opset + 1)


def test_failed_verification_leaves_no_file(tmp_path):
    path = tmp_path / 'out.onnx'
    with pytest.raises(UserError, match='tolerance'):
        export_onnx(small(), path, tolerance=1e-12)
    assert list(tmp_path.iterdir()) == []


def test_export_keeps_the_callers_model_and_refuses_to_overwrite(tmp_path):
    model = small().train()
    path = tmp_path / 'out.onnx'
    path.write_bytes(b'a file of the user')
    with pytest.raises(UserError, match='exists'):
        export_onnx(model, path)
    assert path.read_bytes() == b'a file of the user'
    export_onnx(model, path, overwrite=True, metadata={'class_names': [str(i) for i in range(10)]})
    assert model.training
    assert json.loads(meta(onnx.load(str(path), load_external_data=False))['class_names'])[3] == '3'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.onnx']


@pytest.mark.slow
def test_timm_onnx_export_works_on_our_models(tmp_path):
    from timm.utils.onnx import onnx_export
    model = small()
    x = images(2, model)
    path = tmp_path / 'timm.onnx'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        onnx_export(model, str(path), example_input=x, check=True, check_forward=True)
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    assert [n.op_type for n in m.graph.node].count('LRN') == 4
    x3 = images(3, model, seed=1)
    with torch.inference_mode():
        assert rel_err(run_ort(path, x3), model(x3)) <= DEFAULT_TOLERANCE


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.skipif('CUDAExecutionProvider' not in ort.get_available_providers(),
                    reason='needs onnxruntime-gpu (this onnxruntime has no CUDA provider)')
def test_verification_uses_cuda_when_present(tmp_path):
    report = export_onnx(small(), tmp_path / 'gpu.onnx')
    assert report['provider'] == 'CUDAExecutionProvider'
    assert report['max_rel_err'] <= DEFAULT_TOLERANCE


# ---- checkpoint formats ------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def trained():
    """A small model with non-default weights (as if trained), and its state_dict."""
    torch.manual_seed(0)
    model = small()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(sd, ref):
    assert sd.keys() == ref.keys()
    assert all(torch.equal(sd[k], ref[k]) for k in ref)


def test_plain_state_dict_with_module_prefix(tmp_path, trained):
    _, ref = trained
    torch.save({f'module.{k}': v for k, v in ref.items()}, tmp_path / 'w.pth')
    sd, _ = load_checkpoint_file(tmp_path / 'w.pth')
    _assert_same(sd, ref)


def test_timm_training_checkpoint_prefers_ema_and_allows_args(tmp_path, trained):
    _, ref = trained
    raw = {k: torch.zeros_like(v) for k, v in ref.items()}
    ckpt = {'epoch': 3, 'arch': 'alexnet_split_2', 'state_dict': raw, 'state_dict_ema': ref,
            'args': argparse.Namespace(model='alexnet_split_2', lr=0.01), 'version': 2}
    torch.save(ckpt, tmp_path / 'c.pth.tar')
    sd, source = load_checkpoint_file(tmp_path / 'c.pth.tar')
    assert source == 'state_dict_ema'
    _assert_same(sd, ref)
    sd, source = load_checkpoint_file(tmp_path / 'c.pth.tar', use_ema=False)
    assert source == 'state_dict'
    _assert_same(sd, raw)


def test_safetensors(tmp_path, trained):
    _, ref = trained
    save_file({k: v.contiguous() for k, v in ref.items()}, str(tmp_path / 'w.safetensors'))
    sd, source = load_checkpoint_file(tmp_path / 'w.safetensors')
    assert source == 'safetensors'
    _assert_same(sd, ref)


class NotATensor:
    """Any class: a pickle that needs it would run code from outside torch's allowlist."""


def test_pickled_objects_are_refused(tmp_path):
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'extra': NotATensor()}, tmp_path / 'evil.pth')
    with pytest.raises(UserError, match='NotATensor.*weights_only'):
        load_checkpoint_file(tmp_path / 'evil.pth')


def test_run_folder_prefers_best(tmp_path, trained):
    _, ref = trained
    run = tmp_path / 'run'
    run.mkdir()
    torch.save({'state_dict': {k: torch.zeros_like(v) for k, v in ref.items()}}, run / 'last.pth.tar')
    torch.save({'state_dict': ref}, run / 'model_best.pth.tar')
    (run / 'args.yaml').write_text(yaml.safe_dump({'model': 'alexnet_split_2', 'num_classes': 10,
                                                   'model_kwargs': {'global_pool': 'avg'}, 'img_size': 224}))
    (run / 'class_map.txt').write_text(''.join(f'class{i}\n' for i in range(10)))
    info = read_run(run)
    assert info.checkpoint == run / 'model_best.pth.tar' == find_run_checkpoint(run)
    assert (info.model, info.num_classes, info.model_kwargs) == ('alexnet_split_2', 10, {'global_pool': 'avg'})
    assert info.class_names[:2] == ['class0', 'class1'] and info.input_size == (3, 224, 224)
    sd, _ = load_checkpoint_file(info.checkpoint)
    _assert_same(sd, ref)
    (run / 'model_best.pth.tar').unlink()
    assert find_run_checkpoint(run) == run / 'last.pth.tar'


def test_safetensors_metadata_describes_the_model(tmp_path, trained):
    _, ref = trained
    meta_in = {'model': 'alexnet_split_2', 'num_classes': '10', 'model_kwargs': json.dumps({'global_pool': 'avg'}),
               'class_names': json.dumps(list('abcdefghij')),
               'data_config': json.dumps({'input_size': [3, 231, 231], 'mean': [0.5] * 3, 'std': [0.25] * 3})}
    save_file({k: v.contiguous() for k, v in ref.items()}, str(tmp_path / 'w.safetensors'), metadata=meta_in)
    info = read_checkpoint(tmp_path / 'w.safetensors').info
    assert (info.model, info.num_classes, info.model_kwargs) == ('alexnet_split_2', 10, {'global_pool': 'avg'})
    assert info.class_names[-1] == 'j' and info.input_size == (3, 231, 231) and info.mean == (0.5,) * 3


def test_mismatching_shapes_name_the_first_one(trained):
    _, ref = trained
    with pytest.raises(UserError, match=r"'fc8.weight' has shape \(10, 4096\)"):
        load_into(small(num_classes=5), ref, 'alexnet_split_2')


# ---- the command line ----------------------------------------------------------------------------------
def test_cli_exports_a_run_folder_with_class_names_and_checksum(tmp_path, trained, capsys):
    model, ref = trained
    run = tmp_path / 'run'
    run.mkdir()
    save_file({k: v.contiguous() for k, v in ref.items()}, str(run / 'model_best.safetensors'))
    (run / 'args.yaml').write_text(yaml.safe_dump({'model': 'alexnet_split_2', 'num_classes': 10,
                                                   'model_kwargs': {'global_pool': 'avg'}}))
    names = [f'c{i}' for i in range(10)]
    (run / 'class_map.json').write_text(json.dumps(names))
    out = tmp_path / 'exports' / 'run.onnx'
    out.parent.mkdir()
    out.write_bytes(b'an earlier export')
    code, _, err = cli_run(capsys, '--run', run, '--output', out)
    assert code == 2 and 'exists' in err and '--force' in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b'an earlier export'

    code, stdout, err = cli_run(capsys, '--run', run, '--output', out, '--force')
    assert code == 0, err
    assert 'max relative error' in stdout
    m = onnx.load(str(out))
    md = meta(m)
    assert json.loads(md['class_names']) == names
    assert md['checkpoint_sha256'] == hashlib.sha256((run / 'model_best.safetensors').read_bytes()).hexdigest()
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    np.testing.assert_array_equal(inits['towers.1.conv1.weight'], ref['towers.1.conv1.weight'].numpy())
    x = images(2, model)
    with torch.inference_mode():
        assert rel_err(run_ort(out, x), model(x)) <= DEFAULT_TOLERANCE


def test_cli_uses_what_a_training_checkpoint_says(tmp_path, trained, capsys):
    """Model name, LRN options, class names and preprocessing come from the checkpoint when not given."""
    _, ref = trained
    model = small(lrn_k=1.0)
    model.load_state_dict(ref)
    ckpt = {'epoch': 7, 'arch': 'alexnet_split_2', 'state_dict': ref, 'class_names': list('abcdefghij'),
            'args': {'model': 'alexnet_split_2', 'num_classes': 10, 'model_kwargs': {'global_pool': 'avg', 'lrn_k': 1.0}},
            'data_config': {'input_size': [3, 224, 224], 'mean': [0.5, 0.5, 0.5], 'std': [1 / 255] * 3}}
    torch.save(ckpt, tmp_path / 'model_best.pth.tar')
    code, _, err = cli_run(capsys, '--model', 'alexnet_split_3', '--checkpoint', tmp_path / 'model_best.pth.tar',
                           '--output', tmp_path / 'x.onnx')
    assert code == 2 and 'trained as alexnet_split_2' in err
    code, _, err = cli_run(capsys, '--checkpoint', tmp_path / 'model_best.pth.tar', '--output', tmp_path / 'x.onnx')
    assert code == 0, err
    m = onnx.load(str(tmp_path / 'x.onnx'))
    md = meta(m)
    assert json.loads(md['lrn'])['k'] == 1.0 and json.loads(md['mean']) == [0.5] * 3
    assert json.loads(md['class_names']) == list('abcdefghij')
    x = images(2, model)
    with torch.inference_mode():
        assert rel_err(run_ort(tmp_path / 'x.onnx', x), model(x)) <= DEFAULT_TOLERANCE


@pytest.mark.slow
def test_cli_plain_state_dict_infers_classes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = timm.create_model('alexnet_split_1', num_classes=2)
    torch.save({f'module.{k}': v for k, v in model.state_dict().items()}, tmp_path / 'w.pth')
    code, _, err = cli_run(capsys, '--model', 'alexnet_split_1', '--checkpoint', 'w.pth')
    assert code == 0, err
    out = tmp_path / 'exports' / 'alexnet_split_1.onnx'
    md = meta(onnx.load(str(out), load_external_data=False))
    assert md['num_classes'] == '2'
    assert md['checkpoint_sha256'] == hashlib.sha256((tmp_path / 'w.pth').read_bytes()).hexdigest()


@pytest.mark.parametrize('args,message', [
    (['--model', 'alexnet_split_9'], 'unknown model'),
    (['--model', 'hf-hub:someone/alexnet'], 'unknown model'),
    (['--model', 'alexnet_split_2.no_such_tag'], 'bvlc_in1k'),
    (['--model', 'resnet18'], 'not a split AlexNet'),
    (['--model', 'alexnet_split_2', '--checkpoint', 'missing.pth'], 'does not exist'),
    (['--run', 'no_such_run'], 'does not exist'),
    (['--model', 'alexnet_split_2', '--num-classes', '-1'], 'num-classes'),
    (['--model', 'alexnet_split_2', '--checkpoint', 'junk.pth'], 'not a readable'),
    (['--model', 'alexnet_split_2', '--checkpoint', 'junk.safetensors'], 'not a readable'),
    (['--model', 'alexnet_split_2', '--opset', '99'], 'opset'),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint' * 10)
    (tmp_path / 'junk.safetensors').write_bytes(b'\x10' + b'\x00' * 20)
    code, _, err = cli_run(capsys, *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'exports').exists()


@pytest.mark.parametrize('kind', KINDS)
def test_an_unwritable_output_is_one_line_before_the_export(tmp_path, capsys, monkeypatch, kind):
    """A read-only folder (for root too) or a path under a file: exit 2, one line, no traceback, no work done first."""
    monkeypatch.setattr(export_module, '_to_onnx', lambda *a: pytest.fail('exported before finding the output unwritable'))
    with unwritable_folder(tmp_path, kind) as folder:
        for out in (folder / 'model.onnx', folder / 'new' / 'model.onnx'):
            code, _, err = cli_run(capsys, '--model', 'alexnet_split_1', '--num-classes', 2, '--output', out, '--force')
            assert code == 2 and len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
            assert f'cannot write {out}' in err
        if kind == 'read-only':
            code, _, err = cli_run(capsys, '--model', 'alexnet_split_1', '--output', folder / KEPT, '--force')
            assert code == 2 and f'cannot write {folder / KEPT}' in err and len(err.strip().splitlines()) == 1


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys):
    """`echo hello > x.pth.tar`: torch.load's pickle reader fails with KeyError: 101 (the byte 'e')."""
    (tmp_path / 'x.pth.tar').write_text('hello\n')
    code, _, err = cli_run(capsys, '--checkpoint', tmp_path / 'x.pth.tar', '--output', tmp_path / 'x.onnx')
    assert code == 2 and len(err.strip().splitlines()) == 1 and 'x.pth.tar' in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['x.pth.tar']


def test_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    import torchvision
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / 'tv.pth')
    code, _, err = cli_run(capsys, '--model', 'alexnet_split_2', '--checkpoint', tmp_path / 'tv.pth',
                           '--output', tmp_path / 'x.onnx')
    assert code == 2
    assert "unexpected key 'features.0.weight'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'x.onnx').exists()
