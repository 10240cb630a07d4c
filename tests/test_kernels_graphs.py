"""The kernel tool on real-world graphs: timm architectures exported with torch.onnx.export (random weights).

Each must read as one tower (a depthwise successor, a grouped block, a residual stem with max-pool, a patchify
stem with LayerNorm, SiLU as Sigmoid x Mul), with no traceback and nothing on stderr, and ``grouping`` must say
which rule decided.
"""
from __future__ import annotations

import json
import warnings

import pytest

pytestmark = pytest.mark.slow  # exports six timm models (about 30 s on 2 CPU cores)

torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')

from timm_alexnet_split import kernels as K  # noqa: E402

# name -> (phrase the grouping rule must give, phrase the latent entry must give)
CASES = {
    'mobilenetv3_small_050': ('one channel per group (depthwise)', 'depthwise'),     # depthwise stem successor
    'efficientnet_b0': ('one channel per group (depthwise)', 'depthwise'),           # SiLU = x * Sigmoid(x), then dw
    'resnext26ts': ('is not grouped', None),                                        # grouped blocks, SiLU stem
    'regnetx_002': ('is not grouped', None),                                        # grouped blocks
    'resnet18': ('is not grouped', None),                                           # 7x7 stem, max-pool, residual
    'convnext_atto': ('no Conv reached', 'no Conv reached'),                        # 4x4 patchify stem + LayerNorm
}


def export(name: str, path) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, torch.randn(1, 3, 64, 64), str(path), dynamo=False, opset_version=17)


@pytest.mark.parametrize('name', sorted(CASES))
def test_timm_graph_reads_as_one_tower(tmp_path, capsys, name):
    path = tmp_path / f'{name}.onnx'
    export(name, path)
    with warnings.catch_warnings():
        warnings.simplefilter('error')   # no RuntimeWarning or other noise from the tool
        rc = K.main([str(path), '--out', str(tmp_path / 'r'), '--permutations', '500', '--quiet'])
    out, err = capsys.readouterr()
    assert rc == 0 and err == '' and out == ''
    r = json.loads((tmp_path / 'r' / 'report.json').read_text())
    rule, latent = CASES[name]
    assert r['num_groups'] == 1 and r['layout'] == 'single' and not r['warnings']
    assert rule in r['grouping']
    assert r['verdict'].startswith('one tower only')
    if latent is None:
        assert r['latent']['applicable'] and r['latent']['scope'] == 'all of conv1'
        assert len(r['latent']['centred']) == 3 and 'latent colour axis:' not in r['latent']['summary']  # random weights
        assert (tmp_path / 'r' / 'latent.png').is_file()
    else:
        assert not r['latent']['applicable'] and latent in r['latent']['reason']
        assert not (tmp_path / 'r' / 'latent.png').exists()
    size = r['groups'][0]['kernel_shape'][-1]
    assert r['measure'] == ('band' if size >= 7 else 'plain') and r['measure_choice'].startswith('auto')
