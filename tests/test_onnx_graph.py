"""The one ONNX reader (onnx_graph.py): checks on hostile files, external data, the graph index; torch-free."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from no_torch import env_without_torch
from onnx import TensorProto, helper, numpy_helper
from onnx_graphs import IR_VERSION, OPSET, colour_kernels, grey_kernels, hostile_files, move_to_external, save, tower_style_graph

from timm_alexnet_split import onnx_graph
from timm_alexnet_split.errors import KernelsError

PACKAGE = Path(onnx_graph.__file__).parent
TORCH_FREE = ('onnx_graph', 'kernels.graph', 'contracts', 'kernels')


def test_torch_free_modules_import_without_torch(tmp_path):
    """The ONNX reader, the kernel tool's graph reading and the contracts never import torch (nor the package's
    __init__, which does)."""
    code = (f'import importlib, sys, types\n'
            f'pkg = types.ModuleType("timm_alexnet_split"); pkg.__path__ = [{str(PACKAGE)!r}]\n'
            f'sys.modules["timm_alexnet_split"] = pkg\n'
            f'for name in {TORCH_FREE!r}:\n'
            f'    importlib.import_module("timm_alexnet_split." + name)\n'
            f'assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"\n'
            f'print("ok")\n')
    done = subprocess.run([sys.executable, '-c', code], env=env_without_torch(tmp_path), capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == 'ok', done.stderr


@pytest.mark.parametrize('case', ['traversal', 'absolute', 'symlink', 'missing_data', 'short_data', 'length', 'absurd',
                                  'raw_size'])
def test_hostile_files_are_refused_in_one_line(tmp_path, case):
    path = hostile_files(tower_style_graph([grey_kernels(4), colour_kernels(4)]), 'towers.0.conv1.weight', tmp_path)[case]
    for external in (False, True):
        with pytest.raises(onnx_graph.OnnxFileError) as e:
            onnx_graph.load_onnx(path, external=external)
        assert isinstance(e.value, KernelsError) and '\n' not in str(e.value)


def test_external_data_inside_the_folder_is_read_into_the_model(tmp_path):
    w = grey_kernels(4)
    model = move_to_external(tower_style_graph([w, colour_kernels(4)]), 'towers.0.conv1.weight', 'w0.bin',
                             data_path=tmp_path / 'w0.bin')
    path = save(model, tmp_path / 'm.onnx')
    lazy = onnx_graph.load_onnx(path)
    t = next(t for t in lazy.graph.initializer if t.name == 'towers.0.conv1.weight')
    assert t.data_location == TensorProto.EXTERNAL                     # not read until asked for
    np.testing.assert_array_equal(onnx_graph.Graph(lazy, tmp_path).array('towers.0.conv1.weight'), w)
    whole = onnx_graph.load_onnx(path, external=True)
    t = next(t for t in whole.graph.initializer if t.name == 'towers.0.conv1.weight')
    assert t.data_location == TensorProto.DEFAULT and not t.external_data
    np.testing.assert_array_equal(numpy_helper.to_array(t), w)


def test_graph_index_constants_trace_and_attributes():
    """Constants through Identity and Constant nodes; trace follows data inputs back to a value."""
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), 'w')
    nodes = [helper.make_node('Identity', ['w'], ['w_id']),
             helper.make_node('Constant', [], ['shape'], value=numpy_helper.from_array(np.array([1, -1], np.int64))),
             helper.make_node('Conv', ['x', 'w_id'], ['c'], name='conv', kernel_shape=[1, 1], group=1),
             helper.make_node('Relu', ['c'], ['r']),
             helper.make_node('Reshape', ['r', 'shape'], ['y'])]
    graph = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 2, 2])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)])
    model.ir_version = IR_VERSION
    g = onnx_graph.Graph(model)
    assert g.inputs == ['x'] and g.outputs == ['y']
    assert g.constant('w_id') is w or g.constant('w_id').name == 'w'
    assert g.array('shape').tolist() == [1, -1] and g.array('c') is None
    assert [n.op_type for n in g.trace('y', 'x')] == ['Conv', 'Relu', 'Reshape']
    assert g.trace('y', 'nowhere') is None
    conv = g.nodes[2]
    assert onnx_graph.attr(conv, 'group') == 1 and onnx_graph.attr(conv, 'pads', 'none') == 'none'
    assert onnx_graph.attrs(conv)['kernel_shape'] == [1, 1] and g.label(conv) == 'conv'
    assert [n.op_type for n in g.consumers['c']] == ['Relu'] and g.producer['r'].op_type == 'Relu'
